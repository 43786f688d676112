//! Schema migrations of the PostgreSQL ledger, numbered in
//! `schema_migrations`: append, never edit. Version 1 is the SQLite ledger's
//! schema as of its own version 5 (`../migrations.rs`), column for column
//! (times in milliseconds as `BIGINT`, ids as identity columns); version 2
//! adds what only a fleet needs: nodes and poll leases.
//!
//! PostgreSQL runs DDL inside transactions, so a migration and its version
//! row commit together or not at all. A transaction-scoped advisory lock
//! makes nodes that start at the same moment on an empty database migrate
//! one after the other: the second finds the work done.

use anyhow::Context;
use postgres::Client;

use super::error_text;

/// The advisory lock key of migrations (any constant the ledger alone uses:
/// "ordersyn" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f72_6465_7273_796e;

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the ledger, as SQLite has it at its version 5.
    r#"
CREATE TABLE orders (
    order_key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    -- held | queued | pushed | accepted | shipped | completed | cancelled | invalid | skipped
    state TEXT NOT NULL,
    canonical_json TEXT,
    raw_payload TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    pushed_hash TEXT,
    source_version TEXT,
    erp_order_number TEXT,
    note TEXT,
    recorded_by TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    pushed_at BIGINT,
    accepted_at BIGINT,
    shipped_at BIGINT,
    completed_at BIGINT,
    changed_after_push_at BIGINT,
    pruned_at BIGINT
);
CREATE INDEX orders_by_source_state ON orders(source, state);
CREATE INDEX orders_to_prune ON orders(completed_at) WHERE state = 'completed' AND pruned_at IS NULL;

CREATE TABLE order_lines (
    order_key TEXT NOT NULL REFERENCES orders(order_key),
    source_line_id TEXT NOT NULL,
    erp_line_number TEXT NOT NULL,
    -- SQLite reads lines back in rowid order: this keeps that order.
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (order_key, source_line_id)
);

CREATE TABLE cursors (
    source TEXT NOT NULL,
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source, scope)
);

CREATE TABLE source_status (
    source TEXT PRIMARY KEY,
    last_poll_at BIGINT,
    last_success_at BIGINT,
    last_error TEXT
);

CREATE TABLE jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,             -- push | write_accepted | write_shipped
    order_key TEXT NOT NULL REFERENCES orders(order_key),
    ref TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,            -- pending | waiting | done | parked | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    parked_reason TEXT,
    parked_at BIGINT,
    payload TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    first_failed_at BIGINT,
    sent_hash TEXT,
    started_at BIGINT,
    UNIQUE (order_key, kind, ref)
);
CREATE INDEX jobs_due ON jobs(source, state, next_attempt_at);

CREATE TABLE job_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    at BIGINT NOT NULL,
    outcome TEXT NOT NULL,          -- done | retry | parked
    error TEXT
);
CREATE INDEX job_attempts_by_job ON job_attempts(job_id);

CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_key TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX events_by_order ON events(order_key);

CREATE TABLE daemon_state (
    key TEXT PRIMARY KEY,
    value TEXT,
    updated_at BIGINT NOT NULL
);
"#,
    // 2: the fleet. A node is one `ordersync run` process; its heartbeat
    // says it is alive. A poll lease is held by one node at a time (one
    // poller per source, and one for the ERP's shipments); `epoch` grows by
    // one at every change of holder and never goes back: it is the fencing
    // token every write of the holder checks in its own transaction.
    r#"
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,            -- host/pid/nonce, as job leases name it
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
CREATE TABLE poll_leases (
    name TEXT PRIMARY KEY,          -- a source's name, or '_erp' for shipments
    holder TEXT,                    -- a node id; NULL once released or rescued
    epoch BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX jobs_by_lease_owner ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;
"#,
    // 3: the due jobs of each remote apart (SQLite's version 6): a claim of
    // write-backs no longer walks the pending pushes due before them.
    r#"
CREATE INDEX jobs_due_erp ON jobs(source, next_attempt_at, id)
    WHERE state = 'pending' AND kind IN ('push', 'cancel_in_erp');
CREATE INDEX jobs_due_source ON jobs(source, next_attempt_at, id)
    WHERE state = 'pending' AND kind NOT IN ('push', 'cancel_in_erp');
"#,
    // 4: an order's payloads in a table of their own (SQLite's version 7):
    // the statements that read and write them are shared by both ledgers.
    r#"
CREATE TABLE order_payloads (
    order_key TEXT PRIMARY KEY REFERENCES orders(order_key),
    canonical_json TEXT,
    raw_payload TEXT NOT NULL
);
INSERT INTO order_payloads (order_key, canonical_json, raw_payload)
    SELECT order_key, canonical_json, raw_payload FROM orders;
ALTER TABLE orders DROP COLUMN canonical_json, DROP COLUMN raw_payload;
"#,
    // 5: the pushed orders per source, for `/metrics` (SQLite's version 8).
    r#"
CREATE INDEX orders_pushed ON orders(source) WHERE pushed_at IS NOT NULL;
"#,
    // 6: retention of orders that ended without completing (SQLite's
    // version 9).
    r#"
CREATE INDEX orders_ended_to_prune ON orders(updated_at)
    WHERE state IN ('cancelled', 'skipped', 'cancelled_in_erp') AND pruned_at IS NULL;
"#,
    // 7: how far the poll under way and the last failed poll got (SQLite's
    // version 10).
    r#"
ALTER TABLE source_status ADD COLUMN pages_under_way BIGINT,
    ADD COLUMN failed_after_pages BIGINT;
"#,
];

pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema up to date, in one transaction under the migration
/// lock. Refuses a schema newer than this build knows.
pub fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let sql_error = |what: &'static str| {
        move |e: postgres::Error| anyhow::anyhow!("{what}: {}", error_text(&e))
    };
    let mut tx = client.transaction().map_err(sql_error("begin"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(sql_error("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .map_err(sql_error("creating schema_migrations"))?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(sql_error("reading the schema version"))?
        .get(0);
    if current > latest() {
        anyhow::bail!(
            "schema version {current} is newer than this ordersync knows ({}): refusing to touch it",
            latest()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql)
            .map_err(|e| anyhow::anyhow!("{}", error_text(&e)))
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .map_err(sql_error("recording the schema version"))?;
    }
    tx.commit().map_err(sql_error("commit"))?;
    Ok(())
}

/// The schema version recorded in the ledger (0 for an empty database).
pub fn current(client: &mut Client) -> anyhow::Result<i64> {
    let error =
        |e: postgres::Error| anyhow::anyhow!("reading the schema version: {}", error_text(&e));
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(error)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(error)?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestDb;
    use super::*;

    fn tables(client: &mut Client) -> Vec<String> {
        client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Against the real server: the first run builds every table, a second
    /// (and a third, on a new connection) changes nothing and keeps data.
    #[test]
    fn migrating_twice_is_a_no_op_on_a_real_server() {
        let db = TestDb::new();
        let mut client = db.raw();
        assert_eq!(current(&mut client).unwrap(), 0);
        migrate(&mut client).unwrap();
        assert_eq!(current(&mut client).unwrap(), latest());
        let after_first = tables(&mut client);
        for t in [
            "cursors",
            "daemon_state",
            "events",
            "job_attempts",
            "jobs",
            "nodes",
            "order_lines",
            "order_payloads",
            "orders",
            "poll_leases",
            "schema_migrations",
            "source_status",
        ] {
            assert!(after_first.iter().any(|x| x == t), "{t}: {after_first:?}");
        }
        client
            .execute(
                "INSERT INTO cursors (source, scope, value, updated_at) VALUES ('a', 'live', '1', 0)",
                &[],
            )
            .unwrap();
        migrate(&mut client).unwrap();
        let mut again = db.raw();
        migrate(&mut again).unwrap();
        assert_eq!(tables(&mut again), after_first);
        let versions: i64 = again
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(versions, latest(), "each version recorded once");
        let n: i64 = again
            .query_one("SELECT count(*) FROM cursors", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "data survives a second migration run");
    }

    /// Version 4 moves the payloads out of `orders` (SQLite's 7): a ledger
    /// written by version 3 keeps them, and the store reads them back.
    #[test]
    fn payloads_recorded_before_version_4_move_with_their_orders() {
        let db = TestDb::new();
        let mut client = db.raw();
        for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
            client.batch_execute(sql).unwrap();
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version BIGINT PRIMARY KEY,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                     );
                     INSERT INTO schema_migrations (version) VALUES ({})",
                    i + 1
                ))
                .unwrap();
        }
        client
            .batch_execute(
                r#"INSERT INTO orders (order_key, source, external_id, state, canonical_json, raw_payload,
                                       content_hash, recorded_by, first_seen_at, updated_at)
                   VALUES ('shop:1', 'shop', '1', 'queued', '{"a":1}', '{"id":1}', 'h', 'live', 0, 0)"#,
            )
            .unwrap();
        assert_eq!(current(&mut client).unwrap(), 3);
        let store = db.store();
        let order = store.order_for_job("shop:1").unwrap().unwrap();
        assert_eq!(order.canonical_json.as_deref(), Some(r#"{"a":1}"#));
        let raw: String = client
            .query_one(
                "SELECT raw_payload FROM order_payloads WHERE order_key = 'shop:1'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(raw, r#"{"id":1}"#);
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_name = 'orders' AND column_name IN ('raw_payload', 'canonical_json')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }

    /// Nodes starting at the same moment on an empty database: every one
    /// succeeds, the migrations run once (without the advisory lock, the
    /// losers fail on "relation already exists" or a duplicate version).
    #[test]
    fn nodes_migrating_an_empty_database_at_once_all_succeed() {
        let db = TestDb::new();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let mut client = db.raw();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    migrate(&mut client)
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap()
                .expect("every node migrates or finds it done");
        }
        let mut client = db.raw();
        let versions: i64 = client
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(versions, latest());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let db = TestDb::new();
        let mut client = db.raw();
        migrate(&mut client).unwrap();
        client
            .execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(latest() + 1)],
            )
            .unwrap();
        let e = migrate(&mut client).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }
}
