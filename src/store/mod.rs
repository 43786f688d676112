//! The ledger: one SQLite file (`state_dir/ordersync.db`) holding orders,
//! cursors, jobs and their history. WAL mode with a busy timeout, so `status`,
//! `backfill` and `retry` can work beside the running daemon. Every method
//! is one short transaction; none is ever held across a network call.

mod ingest;
mod jobs;
mod migrations;
mod recheck;
mod status;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

pub use ingest::{Disposition, IncomingOrder, IngestReport, MappedOrder, OrderNote, in_erp};
pub use jobs::{
    ClaimFilter, ErpAccepted, ErpShipment, Job, JobKind, LineNumber, OrderForJob, ShippedLine,
    lease_owner,
};
pub use status::{
    AttemptRow, EventRow, JobRow, OrderDetail, OrderRow, ParkedRow, SourceNumbers, SourceStatusRow,
    StatusReport,
};

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
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
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> anyhow::Result<Store> {
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open ledger {}", path.display()))?;
        configure(&conn)?;
        migrations::migrate(&mut conn)
            .with_context(|| format!("cannot migrate ledger {}", path.display()))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing ledger for reading only (`status`, `orders`): never
    /// creates or migrates, so it cannot disturb a running daemon.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Store> {
        if !path.exists() {
            anyhow::bail!(
                "no ledger at {} yet: the daemon has not run with this state_dir",
                path.display()
            );
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open ledger {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(64);
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != migrations::latest() {
            anyhow::bail!(
                "ledger {} has schema version {version}, this ordersync expects {}: run the daemon once to migrate",
                path.display(),
                migrations::latest()
            );
        }
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
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

    /// Copies the live database with SQLite's online backup API.
    pub fn backup_to(&self, dest: &Path) -> anyhow::Result<()> {
        let conn = self.lock();
        let mut out = Connection::open(dest)
            .with_context(|| format!("cannot create backup {}", dest.display()))?;
        let backup = rusqlite::backup::Backup::new(&conn, &mut out)?;
        backup.run_to_completion(256, Duration::from_millis(5), None)?;
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

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
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
