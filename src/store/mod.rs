//! The ledger: one SQLite file (`state_dir/ordersync.db`) holding orders,
//! cursors, jobs and their history. WAL mode with a busy timeout, so `status`,
//! `backfill` and `retry` can work beside the running daemon. Every method
//! is one short transaction; none is ever held across a network call. The
//! daemon's async code reaches them through [`Store::call`] (the ledger's own
//! thread) and [`Store::read_off`] (reports), never on a runtime worker.

mod cancel;
mod ingest;
mod jobs;
mod migrations;
mod recheck;
mod retention;
mod status;
mod thread;

pub mod pg;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

pub use cancel::{CancellationNote, ErpCancellation};
pub use ingest::{Disposition, IncomingOrder, IngestReport, MappedOrder, OrderNote, in_erp};
pub use jobs::{
    ClaimFilter, ErpAccepted, ErpShipment, Job, JobKind, LineNumber, OrderForJob, ShipmentProgress,
    ShippedLine, lease_owner,
};
pub use status::{
    AttemptRow, EventRow, InErp, JobRow, OrderDetail, OrderRow, ParkedRow, PushOutcomes,
    SourceNumbers, SourceStatusRow, StatusReport,
};

pub struct Store {
    conn: Mutex<Connection>,
    /// A read-only connection for `status`, `orders` and the health and
    /// metrics reports: in WAL mode it reads a snapshot beside the writer, so
    /// a full-table report never holds up the engine's ledger calls.
    reader: Mutex<Connection>,
    /// Which key set `temp.claim_keys` holds (see `claim` with a filter).
    claim_keys: Mutex<Option<(usize, String, String)>>,
    path: PathBuf,
    /// The ledger thread that runs the engine's calls ([`Store::call`]).
    thread: OnceLock<thread::LedgerThread>,
}

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
        Ok(Store {
            conn: Mutex::new(conn),
            reader: Mutex::new(read_connection(path)?),
            claim_keys: Mutex::new(None),
            path: path.to_path_buf(),
            thread: OnceLock::new(),
        })
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
        Ok(Store {
            conn: Mutex::new(conn),
            reader: Mutex::new(read_connection(path)?),
            claim_keys: Mutex::new(None),
            path: path.to_path_buf(),
            thread: OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the
        // transaction rolls back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn lock_for_tests(&self) -> MutexGuard<'_, Connection> {
        self.lock()
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
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
        let conn = self.read();
        conn.execute("VACUUM INTO ?1", [target])
            .with_context(|| format!("cannot write backup {}", dest.display()))?;
        Ok(())
    }
}

/// Runs a statement through the connection's statement cache: the daemon
/// runs the same few statements for every order.
pub(crate) fn exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Adds a line to an order's history (`orders show`).
pub(crate) fn event(
    conn: &Connection,
    key: &str,
    at: i64,
    kind: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    exec(
        conn,
        "INSERT INTO events (order_key, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![key, at, kind, detail],
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
    use super::*;
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ordersync.db")).unwrap();
        (dir, store)
    }
}
