//! The ledger: one SQLite file (`state_dir/ordersync.db`) holding orders,
//! cursors, jobs and their history. WAL mode with a busy timeout, so `status`,
//! `backfill` and `retry` can work beside the running daemon. Every method
//! is one short transaction; none is ever held across a network call. The
//! daemon's async code reaches them through [`Store::call`] (the ledger's own
//! thread) and [`Store::read_off`] (reports), never on a runtime worker.

#[cfg(test)]
mod both;
mod cancel;
pub mod copy;
pub mod fence;
mod ingest;
mod jobs;
mod migrations;
mod open;
pub use open::{check_ledger_tls, reach_ledger};
mod recheck;
mod retention;
mod sql;
mod status;
mod thread;

pub mod pg;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

use sql::{Conn, Dialect, Tx};

pub use cancel::{CancellationNote, ErpCancellation};
pub use ingest::{Disposition, IncomingOrder, IngestReport, MappedOrder, OrderNote, in_erp};
pub use jobs::{
    ClaimFilter, ErpAccepted, ErpShipment, Finish, Job, JobKind, LineNumber, OrderForJob, Remote,
    ShipmentProgress, ShippedLine, Uptake, lease_owner,
};
pub use recheck::RecheckBatch;
pub use status::{
    AttemptRow, EventRow, InErp, JobRow, OrderDetail, OrderRow, ParkedRow, PushOutcomes,
    SourceNumbers, SourceStatusRow, StatusReport,
};

pub struct Store {
    /// The writer connections: one for SQLite (one writer at a time is all
    /// it has); [`PG_CONNECTIONS`] for PostgreSQL, which takes writes from
    /// several at once (each ledger call is round trips to the server: one
    /// connection would make a node wait on them one by one).
    conns: Vec<Mutex<Conn>>,
    /// A second connection for `status`, `orders` and the health and
    /// metrics reports: it reads a snapshot beside the writer (SQLite's WAL,
    /// PostgreSQL's MVCC), so a full-table report never holds up the
    /// engine's ledger calls.
    reader: Mutex<Conn>,
    /// Which key set `temp.claim_keys` holds (see `claim` with a filter).
    claim_keys: Mutex<Option<(usize, String, String)>>,
    /// The poll leases this process holds on a shared ledger ([`fence`]).
    fences: Mutex<std::collections::HashMap<String, pg::PollLease>>,
    location: Location,
    /// The ledger thread that runs the engine's calls ([`Store::call`]).
    thread: OnceLock<thread::LedgerThread>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password: only where the ledger is.
        f.debug_struct("Store")
            .field("ledger", &self.describe())
            .finish_non_exhaustive()
    }
}

/// Where a ledger lives.
#[derive(Clone, Debug)]
enum Location {
    /// The embedded SQLite file.
    File(PathBuf),
    /// A PostgreSQL ledger: `host:port/db`, never a password.
    Postgres(String),
}

/// Writer connections (and ledger threads) of a PostgreSQL ledger per node.
pub const PG_CONNECTIONS: usize = 4;

/// Milliseconds since the epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored time for people: RFC 3339 UTC.
pub fn fmt_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        _ => ms.to_string(),
    }
}

pub fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

impl Store {
    /// Opens (creating if needed) the ledger and runs pending migrations.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        // Two processes opening a brand-new ledger at the same moment (the
        // daemon and a backfill) can get SQLITE_BUSY without the busy
        // handler being asked, while both switch the file to WAL. That
        // passes in milliseconds: try again for up to ten seconds.
        let mut tries = 0;
        loop {
            match Self::open_once(path) {
                Err(e) if tries < 100 && is_busy(&e) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other.map_err(|e| explain_damage(path, e)),
            }
        }
    }

    fn open_once(path: &Path) -> anyhow::Result<Store> {
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open ledger {}", path.display()))?;
        configure(&conn).with_context(|| format!("cannot open ledger {}", path.display()))?;
        migrations::migrate(&mut conn)
            .with_context(|| format!("cannot migrate ledger {}", path.display()))?;
        Ok(Store::new(
            vec![Conn::Sqlite(conn)],
            Conn::Sqlite(read_connection(path)?),
            Location::File(path.to_path_buf()),
        ))
    }

    /// Opens an existing ledger for reading only (`status`, `orders`): never
    /// creates or migrates, so it cannot disturb a running daemon.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Store> {
        Self::open_read_only_once(path).map_err(|e| explain_damage(path, e))
    }

    fn open_read_only_once(path: &Path) -> anyhow::Result<Store> {
        if !path.exists() {
            anyhow::bail!(
                "no ledger at {} yet: the daemon has not run with this state_dir",
                path.display()
            );
        }
        let conn = read_connection(path)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .with_context(|| format!("cannot read ledger {}", path.display()))?;
        if version != migrations::latest() {
            anyhow::bail!(
                "ledger {} has schema version {version}, this ordersync expects {}: run the daemon once to migrate",
                path.display(),
                migrations::latest()
            );
        }
        Ok(Store::new(
            vec![Conn::Sqlite(conn)],
            Conn::Sqlite(read_connection(path)?),
            Location::File(path.to_path_buf()),
        ))
    }

    fn new(conns: Vec<Conn>, reader: Conn, location: Location) -> Store {
        Store {
            conns: conns.into_iter().map(Mutex::new).collect(),
            reader: Mutex::new(reader),
            claim_keys: Mutex::new(None),
            fences: Mutex::new(std::collections::HashMap::new()),
            location,
            thread: OnceLock::new(),
        }
    }

    /// Connects to a PostgreSQL ledger (`postgres://user@host:5432/db`, no
    /// password in it: the config refuses one) and runs pending migrations.
    /// Errors name the server, never the password.
    pub fn connect(url: &str, password: Option<&crate::secret::Secret>) -> anyhow::Result<Store> {
        Store::connect_with(url, password, true, PG_CONNECTIONS)
    }

    /// Connects to a PostgreSQL ledger that must already be at this
    /// build's schema version (reports: they never migrate). One writer and
    /// the reader, not the daemon's pool: a report asks one thing at a
    /// time, and each connection is a login and a schema check.
    pub fn connect_existing(
        url: &str,
        password: Option<&crate::secret::Secret>,
    ) -> anyhow::Result<Store> {
        Store::connect_with(url, password, false, 1)
    }

    /// `count` writer connections and a reader; the first migrates if asked.
    pub(crate) fn connect_with(
        url: &str,
        password: Option<&crate::secret::Secret>,
        migrate: bool,
        count: usize,
    ) -> anyhow::Result<Store> {
        let (first, target) = sql::off_runtime(|| pg::connect_client(url, password, migrate))?;
        let again = || -> sql::Reconnect {
            let (url, password) = (url.to_string(), password.cloned());
            Box::new(move || pg::connect_client(&url, password.as_ref(), false).map(|(c, _)| c))
        };
        let mut writers = vec![Conn::Postgres(Box::new(sql::PgConn::new(first, again())))];
        for _ in 1..count.max(1) {
            let (c, _) = sql::off_runtime(|| pg::connect_client(url, password, false))?;
            writers.push(Conn::Postgres(Box::new(sql::PgConn::new(c, again()))));
        }
        let (reader, _) = sql::off_runtime(|| pg::connect_client(url, password, false))?;
        Ok(Store::new(
            writers,
            Conn::Postgres(Box::new(sql::PgConn::new(reader, again()))),
            Location::Postgres(target),
        ))
    }

    /// How many ledger calls may run at once: the ledger threads
    /// ([`Store::call`]) and writer connections.
    pub(crate) fn writers(&self) -> usize {
        self.conns.len()
    }

    /// The SQLite file of an embedded ledger (`None` on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// Where the ledger is, for people: a file, or `postgres://host:port/db`.
    pub fn describe(&self) -> String {
        match &self.location {
            Location::File(p) => p.display().to_string(),
            Location::Postgres(t) => format!("postgres://{t}"),
        }
    }

    /// Whether several nodes may share this ledger (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.location, Location::Postgres(_))
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the database consistent (the
        // transaction rolls back on drop), so a poisoned lock is still usable.
        if self.conns.len() > 1 {
            for c in &self.conns {
                match c.try_lock() {
                    Ok(g) => return g,
                    Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                }
            }
        }
        // All busy (or only one): wait for the first.
        self.conns[0].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SQLite connection, for tests that write behind the store's back.
    #[cfg(test)]
    pub(crate) fn lock_for_tests(&self) -> LiteGuard<'_> {
        LiteGuard(self.lock())
    }

    fn read(&self) -> MutexGuard<'_, Conn> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the live database as one consistent snapshot (`VACUUM INTO`
    /// runs in a read transaction): unlike the page-by-page backup API, a
    /// busy daemon's writes cannot make it start over, so it always ends.
    pub fn backup_to(&self, dest: &Path) -> anyhow::Result<()> {
        if dest.exists() {
            anyhow::bail!("backup target {} already exists", dest.display());
        }
        let target = dest
            .to_str()
            .with_context(|| format!("backup path {} is not valid UTF-8", dest.display()))?;
        let mut conn = self.read();
        if conn.dialect() == Dialect::Postgres {
            anyhow::bail!(
                "the ledger is in PostgreSQL ({}): back it up with pg_dump (docs/OPERATIONS.md, \"Fleet\")",
                self.describe()
            );
        }
        conn.auto(|tx| tx.exec("VACUUM INTO ?1", &[&target]))
            .with_context(|| format!("cannot write backup {}", dest.display()))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) struct LiteGuard<'a>(MutexGuard<'a, Conn>);

#[cfg(test)]
impl std::ops::Deref for LiteGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match &*self.0 {
            Conn::Sqlite(c) => c,
            Conn::Postgres(_) => panic!("an SQLite test helper on a PostgreSQL ledger"),
        }
    }
}

/// Adds a line to an order's history (`orders show`).
pub(crate) fn event(
    tx: &mut Tx<'_>,
    key: &str,
    at: i64,
    kind: &str,
    detail: &str,
) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO events (order_key, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        &[&key, &at, &kind, &detail],
    )?;
    Ok(())
}

/// Whether an error is SQLite's "database is busy/locked".
fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    })
}

fn read_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open ledger {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// SQLite's own words for a file that is not a ledger ("file is not a
/// database") name neither the file nor a way out; this does both.
fn explain_damage(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let failure = e
        .chain()
        .find_map(|c| match c.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(f, msg)) => Some((*f, msg.clone())),
            _ => None,
        });
    let Some((failure, msg)) = failure else {
        return e;
    };
    let what = match failure.code {
        rusqlite::ErrorCode::NotADatabase => "is not a valid SQLite database",
        rusqlite::ErrorCode::DatabaseCorrupt => "is damaged",
        _ => return e,
    };
    let detail =
        msg.unwrap_or_else(|| rusqlite::ffi::code_to_str(failure.extended_code).to_string());
    anyhow::anyhow!(
        "ledger {} {what} ({detail}); restore it from a backup (see docs/OPERATIONS.md, \"The ledger is damaged\") or move it away",
        path.display()
    )
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    // This connection's own list of orders a filtered claim may take
    // (backfill); it must exist before the claim statement is prepared.
    conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS claim_keys (order_key TEXT PRIMARY KEY);")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only
    // an OS crash or power loss can lose the last commits.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // One plan per statement, whatever is bound to it. Without this, SQLite
    // compiles a cached statement again on the first step after a new value
    // is bound to a parameter the planner looked at (`LIMIT ?`, a range on
    // an indexed column under ORDER BY): the job claim, run after every job,
    // was compiled again on every run, a tenth of the daemon's CPU (issue
    // 13). Our plans do not depend on the values (no ANALYZE, no bound LIKE).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::ingest::{Disposition, IncomingOrder};
    use super::*;
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ordersync.db")).unwrap();
        (dir, store)
    }

    /// One pushable order `shop:<ext>` recorded by the live poll.
    pub fn seed(store: &Store, ext: &str) {
        store
            .ingest("shop", "live", &[incoming_with_qty(ext, "1")], None)
            .unwrap();
    }

    /// Every due job of `shop` (up to 10), leased to `owner` for `lease`.
    pub fn claim_as(store: &Store, owner: &str, lease: std::time::Duration) -> Vec<Job> {
        store
            .claim("shop", owner, lease, 10, ClaimFilter::All)
            .unwrap()
    }

    pub fn incoming_with_qty(ext: &str, qty: &str) -> IncomingOrder {
        super::ingest::tests::incoming(ext, Disposition::Push, qty)
    }

    /// The first column of every row `sql` returns, as text.
    pub fn texts(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}
