//! Schema migrations keyed by `PRAGMA user_version`: append, never edit.

use rusqlite::Connection;

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial ledger.
    r#"
CREATE TABLE orders (
    order_key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    -- held | queued | pushed | accepted | shipped | completed | cancelled | invalid | skipped
    state TEXT NOT NULL,
    canonical_json TEXT,            -- NULL while the order cannot be mapped
    raw_payload TEXT NOT NULL,      -- latest payload seen at the source
    content_hash TEXT NOT NULL,     -- business content of the latest payload
    pushed_hash TEXT,               -- business content that went to the ERP
    source_version TEXT,            -- the source's own change marker, if any
    erp_order_number TEXT,
    note TEXT,                      -- why held / invalid / skipped
    recorded_by TEXT NOT NULL,      -- 'live' or 'backfill:<run>'
    first_seen_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    pushed_at INTEGER,
    accepted_at INTEGER,
    shipped_at INTEGER,
    completed_at INTEGER,
    changed_after_push_at INTEGER
);
CREATE INDEX orders_by_source_state ON orders(source, state);

CREATE TABLE order_lines (
    order_key TEXT NOT NULL REFERENCES orders(order_key),
    source_line_id TEXT NOT NULL,
    erp_line_number TEXT NOT NULL,
    PRIMARY KEY (order_key, source_line_id)
);

CREATE TABLE cursors (
    source TEXT NOT NULL,
    scope TEXT NOT NULL,            -- 'live' or 'backfill:<run>'
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, scope)
);

CREATE TABLE source_status (
    source TEXT PRIMARY KEY,
    last_poll_at INTEGER,
    last_success_at INTEGER,
    last_error TEXT
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,             -- push | write_accepted | write_shipped
    order_key TEXT NOT NULL REFERENCES orders(order_key),
    ref TEXT NOT NULL DEFAULT '',   -- tells several jobs of one kind apart (shipments)
    state TEXT NOT NULL,            -- pending | waiting | done | parked | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_error TEXT,
    parked_reason TEXT,
    parked_at INTEGER,
    payload TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (order_key, kind, ref)
);
CREATE INDEX jobs_due ON jobs(source, state, next_attempt_at);

CREATE TABLE job_attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    outcome TEXT NOT NULL,          -- done | retry | parked
    error TEXT
);
CREATE INDEX job_attempts_by_job ON job_attempts(job_id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    order_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX events_by_order ON events(order_key);
"#,
    // 2: the daemon's own heartbeat (health checks prove the ledger takes writes).
    r#"
CREATE TABLE daemon_state (
    key TEXT PRIMARY KEY,
    value TEXT,
    updated_at INTEGER NOT NULL
);
"#,
    // 3: the retry budget is time (daemon.give_up_after), counted from the
    // first failure of the current run of failures.
    r#"
ALTER TABLE jobs ADD COLUMN first_failed_at INTEGER;
-- The content hash of the first push attempt whose outcome is unknown: if
-- the ERP turns out to hold an order already, it may be this version.
ALTER TABLE jobs ADD COLUMN sent_hash TEXT;
"#,
    // 4: retention (daemon.retain): when a completed order's payload,
    // attempts and events were pruned; the index finds the next batch.
    r#"
ALTER TABLE orders ADD COLUMN pruned_at INTEGER;
CREATE INDEX orders_to_prune ON orders(completed_at) WHERE state = 'completed' AND pruned_at IS NULL;
"#,
    // 5: when a job's first attempt was claimed ("attempt started"), never
    // reset: a write-back whose earlier attempt may have written reads the
    // remote first; a first attempt writes directly (issue 13.4). Jobs
    // claimed before this migration count as started.
    r#"
ALTER TABLE jobs ADD COLUMN started_at INTEGER;
UPDATE jobs SET started_at = updated_at WHERE attempts > 0;
"#,
    // 6: the due jobs of each remote apart. The worker claims pushes (the
    // ERP's) and write-backs (the source's) separately; on `jobs_due` a
    // write-back claim walked every pending push due before it, the whole
    // backlog on each claim (issue 13). The claim statements name these
    // indexes (`INDEXED BY`): SQLite's planner prefers `jobs_due`, which
    // matches one more column.
    r#"
CREATE INDEX jobs_due_erp ON jobs(source, next_attempt_at)
    WHERE state = 'pending' AND kind IN ('push', 'cancel_in_erp');
CREATE INDEX jobs_due_source ON jobs(source, next_attempt_at)
    WHERE state = 'pending' AND kind NOT IN ('push', 'cancel_in_erp');
"#,
    // 7: an order's payloads (the source's raw payload and the canonical
    // JSON) in a table of their own. SQLite writes a
    // changed row whole: with the payloads in `orders`, every state change
    // (queued, pushed, accepted, an echo's new version) wrote them again
    // through the WAL (issue 13). They change only when the order does.
    r#"
CREATE TABLE order_payloads (
    order_key TEXT PRIMARY KEY REFERENCES orders(order_key),
    canonical_json TEXT,            -- NULL while the order cannot be mapped
    raw_payload TEXT NOT NULL       -- latest payload seen at the source; '' once pruned
);
INSERT INTO order_payloads (order_key, canonical_json, raw_payload)
    SELECT order_key, canonical_json, raw_payload FROM orders;
ALTER TABLE orders DROP COLUMN canonical_json;
ALTER TABLE orders DROP COLUMN raw_payload;
"#,
    // 8: the pushed orders per source, for `/metrics`: counted from this
    // index instead of reading every order row (120 ms at 100,000 orders,
    // at every scrape; about 10 ms from the index).
    r#"
CREATE INDEX orders_pushed ON orders(source) WHERE pushed_at IS NOT NULL;
"#,
    // 9: retention (daemon.retain) also prunes orders that ended without
    // completing (cancelled, cancelled in the ERP, skipped), counted from
    // their last change; the index finds the next batch.
    r#"
CREATE INDEX orders_ended_to_prune ON orders(updated_at)
    WHERE state IN ('cancelled', 'skipped', 'cancelled_in_erp') AND pruned_at IS NULL;
"#,
    // 10: how far the poll under way got (pages recorded) and how far the
    // last failed poll got before it failed. A poll that has recorded more
    // pages than the failed one is past that failure: health does not call
    // its source failing while a long walk after a failed poll drains a
    // backlog (a full disk, an outage), and `status` says the error is
    // behind it.
    r#"
ALTER TABLE source_status ADD COLUMN pages_under_way INTEGER;
ALTER TABLE source_status ADD COLUMN failed_after_pages INTEGER;
"#,
];

pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema up to date. The version is read inside a write
/// transaction, so two processes starting at once on a new ledger (the
/// daemon and a backfill) cannot both apply the same migration.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > latest() {
        anyhow::bail!(
            "schema version {current} is newer than this ordersync knows ({}): refusing to touch it",
            latest()
        );
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", latest())?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO cursors (source, scope, value, updated_at) VALUES ('a','live','1',0)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        drop(conn);
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM cursors", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "data survives a second migration run");
    }

    #[test]
    fn two_processes_migrating_a_new_ledger_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || crate::store::Store::open(&p).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap()
                .expect("every opener migrates or finds it done");
        }
    }

    /// Version 7 moves the payloads out of `orders`: a ledger written by
    /// version 6 keeps every order's raw payload and canonical JSON, and the
    /// daemon reads them where they are now.
    #[test]
    fn payloads_recorded_before_version_7_move_with_their_orders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute_batch(
                r#"INSERT INTO orders (order_key, source, external_id, state, canonical_json, raw_payload,
                                       content_hash, recorded_by, first_seen_at, updated_at)
                   VALUES ('shop:1', 'shop', '1', 'held', NULL, '{"id":1}', 'raw:x', 'live', 0, 0),
                          ('shop:2', 'shop', '2', 'queued', '{"ordered_at":"2026-01-02T00:00:00Z"}',
                           '{"id":2}', 'h', 'live', 0, 0);"#,
            )
            .unwrap();
        }
        let store = crate::store::Store::open(&path).unwrap();
        let one = store.order_for_job("shop:1").unwrap().unwrap();
        assert_eq!(one.canonical_json, None);
        let two = store.order_for_job("shop:2").unwrap().unwrap();
        assert_eq!(
            two.canonical_json.as_deref(),
            Some(r#"{"ordered_at":"2026-01-02T00:00:00Z"}"#)
        );
        let conn = store.lock_for_tests();
        let raw = |key: &str| -> String {
            conn.query_row(
                "SELECT raw_payload FROM order_payloads WHERE order_key = ?1",
                [key],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(raw("shop:1"), r#"{"id":1}"#);
        assert_eq!(raw("shop:2"), r#"{"id":2}"#);
        let columns =
            crate::store::testutil::texts(&conn, "SELECT name FROM pragma_table_info('orders')");
        assert!(
            !columns
                .iter()
                .any(|c| c == "raw_payload" || c == "canonical_json"),
            "{columns:?}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db")).unwrap();
        conn.pragma_update(None, "user_version", latest() + 1)
            .unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
