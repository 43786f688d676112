//! `ordersync db migrate --to postgres://…`: moving an SQLite ledger into an
//! empty PostgreSQL ledger (the daemon stopped), table by table in one
//! snapshot of the source and one transaction on the target, then
//! verified: the same number of rows and the same content hash per table,
//! read back from PostgreSQL after the commit.
//!
//! Job ids are kept (attempts refer to them) and the target's id sequences
//! moved past them; leases are not copied (no job is running).

use sha2::{Digest, Sha256};

use super::Store;
use super::sql::{Param, ToParam, Tx, Value};

/// The tables of the ledger with their columns, in an order that satisfies
/// the foreign keys, and the column that orders their rows.
const TABLES: &[(&str, &[&str], &str)] = &[
    (
        "orders",
        &[
            "order_key",
            "source",
            "external_id",
            "state",
            "content_hash",
            "pushed_hash",
            "source_version",
            "erp_order_number",
            "note",
            "recorded_by",
            "first_seen_at",
            "updated_at",
            "pushed_at",
            "accepted_at",
            "shipped_at",
            "completed_at",
            "changed_after_push_at",
            "pruned_at",
        ],
        "order_key",
    ),
    (
        "order_payloads",
        &["order_key", "canonical_json", "raw_payload"],
        "order_key",
    ),
    (
        "order_lines",
        &["order_key", "source_line_id", "erp_line_number"],
        "order_key, source_line_id",
    ),
    (
        "cursors",
        &["source", "scope", "value", "updated_at"],
        "source, scope",
    ),
    (
        "source_status",
        &[
            "source",
            "last_poll_at",
            "last_success_at",
            "last_error",
            "pages_under_way",
            "failed_after_pages",
        ],
        "source",
    ),
    (
        "jobs",
        &[
            "id",
            "source",
            "kind",
            "order_key",
            "ref",
            "state",
            "attempts",
            "next_attempt_at",
            "last_error",
            "parked_reason",
            "parked_at",
            "payload",
            "created_at",
            "updated_at",
            "first_failed_at",
            "sent_hash",
            "started_at",
        ],
        "id",
    ),
    (
        "job_attempts",
        &["id", "job_id", "attempt", "at", "outcome", "error"],
        "id",
    ),
    ("events", &["id", "order_key", "at", "kind", "detail"], "id"),
    ("daemon_state", &["key", "value", "updated_at"], "key"),
];

/// Tables whose `id` is an identity column on PostgreSQL.
const WITH_IDS: &[&str] = &["jobs", "job_attempts", "events"];

impl ToParam for Value {
    fn to_param(&self) -> Param<'_> {
        match self {
            Value::Null => Param::Null,
            Value::Int(i) => Param::Int(*i),
            Value::Real(f) => Param::Real(*f),
            Value::Text(s) => Param::Text(s),
        }
    }
}

/// What one table held, on each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    pub rows: usize,
    /// SHA-256 over every row's values, in key order.
    pub hash: String,
}

/// Copies the SQLite ledger `from` into the empty PostgreSQL ledger `to`
/// and checks what arrived. Refuses a target that holds anything.
pub fn copy_ledger(from: &Store, to: &Store) -> anyhow::Result<Vec<TableCopy>> {
    if from.is_shared() {
        anyhow::bail!("db migrate --to: the ledger to copy must be the SQLite file");
    }
    if !to.is_shared() {
        anyhow::bail!("db migrate --to: the target must be a PostgreSQL ledger");
    }
    let held: Vec<(String, i64)> = to.lock().read(|tx| {
        let mut held = Vec::new();
        for (table, _, _) in TABLES {
            let n: i64 = tx.value(&format!("SELECT count(*) FROM {table}"), &[])?;
            if n > 0 {
                held.push((table.to_string(), n));
            }
        }
        Ok(held)
    })?;
    if !held.is_empty() {
        let what: Vec<String> = held.iter().map(|(t, n)| format!("{t}: {n} rows")).collect();
        anyhow::bail!(
            "db migrate --to: {} is not empty ({}); copy only into a new, empty ledger",
            to.describe(),
            what.join(", ")
        );
    }
    // One snapshot of the source for the whole copy.
    let source: Vec<(&'static str, Vec<Vec<Value>>)> = from.read().read(|tx| {
        TABLES
            .iter()
            .map(|(table, columns, order)| Ok((*table, rows(tx, table, columns, order)?)))
            .collect()
    })?;
    let expected: Vec<TableCopy> = source
        .iter()
        .map(|(table, rows)| summary(table, rows))
        .collect();
    to.lock().write(|tx| {
        for ((table, rows), (_, columns, _)) in source.iter().zip(TABLES) {
            insert_all(tx, table, columns, rows)?;
        }
        for table in WITH_IDS {
            tx.query(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))"
                ),
                &[],
            )?;
        }
        Ok(())
    })?;
    // Read back what PostgreSQL holds now and compare.
    let arrived: Vec<TableCopy> = to.lock().read(|tx| {
        TABLES
            .iter()
            .map(|(table, columns, order)| Ok(summary(table, &rows(tx, table, columns, order)?)))
            .collect()
    })?;
    for (want, got) in expected.iter().zip(&arrived) {
        if want != got {
            anyhow::bail!(
                "db migrate --to: table {} differs after the copy ({} rows, hash {} in SQLite; {} rows, hash {} in PostgreSQL); the PostgreSQL ledger is not to be used",
                want.table,
                want.rows,
                want.hash,
                got.rows,
                got.hash
            );
        }
    }
    Ok(arrived)
}

fn rows(
    tx: &mut Tx<'_>,
    table: &str,
    columns: &[&str],
    order: &str,
) -> anyhow::Result<Vec<Vec<Value>>> {
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY {order}",
        columns.join(", ")
    );
    Ok(tx
        .query(&sql, &[])?
        .into_iter()
        .map(|r| r.into_values())
        .collect())
}

fn insert_all(
    tx: &mut Tx<'_>,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
) -> anyhow::Result<()> {
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let overriding = if WITH_IDS.contains(&table) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {table} ({}){overriding} VALUES ({})",
        columns.join(", "),
        placeholders.join(", ")
    );
    for row in rows {
        let params: Vec<&dyn ToParam> = row.iter().map(|v| v as &dyn ToParam).collect();
        tx.exec(&sql, &params)?;
    }
    Ok(())
}

fn summary(table: &'static str, rows: &[Vec<Value>]) -> TableCopy {
    let mut hash = Sha256::new();
    for row in rows {
        for v in row {
            match v {
                Value::Null => hash.update(b"N"),
                Value::Int(i) => {
                    hash.update(b"I");
                    hash.update(i.to_le_bytes());
                }
                Value::Real(f) => {
                    hash.update(b"R");
                    hash.update(f.to_le_bytes());
                }
                Value::Text(s) => {
                    hash.update(b"T");
                    hash.update((s.len() as u64).to_le_bytes());
                    hash.update(s.as_bytes());
                }
            }
        }
        hash.update(b"\n");
    }
    TableCopy {
        table,
        rows: rows.len(),
        hash: crate::model::hex(&hash.finalize()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::both::seeded_life;
    use crate::store::pg::testing::TestDb;
    use crate::store::testutil::{temp_store, texts};

    #[test]
    fn an_sqlite_ledger_moves_into_postgresql_whole_and_verified() {
        let (_dir, sqlite) = temp_store();
        seeded_life(&sqlite);
        // And orders still on their way (their events are not pruned).
        sqlite
            .ingest(
                "shop",
                "live",
                &[
                    crate::store::ingest::tests::incoming(
                        "2",
                        crate::store::Disposition::Push,
                        "1",
                    ),
                    crate::store::ingest::tests::incoming(
                        "3",
                        crate::store::Disposition::Hold("payment open".into()),
                        "1",
                    ),
                ],
                None,
            )
            .unwrap();
        let db = TestDb::new();
        let pg = db.store();
        let copied = copy_ledger(&sqlite, &pg).unwrap();
        let rows = |t: &str| copied.iter().find(|c| c.table == t).unwrap().rows;
        assert_eq!(
            (
                rows("orders"),
                rows("order_payloads"),
                rows("jobs"),
                rows("cursors"),
                rows("events")
            ),
            (3, 3, 5, 2, 3),
            "{copied:?}"
        );
        // The moved ledger works: the same status, and new jobs get new ids.
        let names = ["shop".to_string()];
        let (a, b) = (sqlite.status(&names).unwrap(), pg.status(&names).unwrap());
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.sources[0].cursor, b.sources[0].cursor);
        assert_eq!(
            sqlite.order_detail("shop:1").unwrap().unwrap().jobs.len(),
            pg.order_detail("shop:1").unwrap().unwrap().jobs.len()
        );
        let lease = pg
            .acquire_poll_lease("shop", "n", std::time::Duration::from_secs(60))
            .unwrap()
            .unwrap();
        pg.hold_fence(lease);
        pg.ingest(
            "shop",
            "live",
            &[crate::store::ingest::tests::incoming(
                "99",
                crate::store::Disposition::Push,
                "1",
            )],
            None,
        )
        .unwrap();
        // A second copy into the now non-empty ledger is refused.
        let e = copy_ledger(&sqlite, &pg).unwrap_err().to_string();
        assert!(e.contains("is not empty"), "{e}");
    }

    /// Every table and column of the SQLite ledger is copied (a migration
    /// that adds one must add it here, or `db migrate --to` drops it).
    #[test]
    fn the_copy_names_every_table_and_column_of_the_ledger() {
        let (_dir, sqlite) = temp_store();
        let conn = sqlite.lock_for_tests();
        let tables = texts(
            &conn,
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        );
        let mut copied: Vec<&str> = TABLES.iter().map(|(t, _, _)| *t).collect();
        copied.sort();
        assert_eq!(tables, copied);
        for (table, columns, _) in TABLES {
            let mut have = texts(
                &conn,
                &format!("SELECT name FROM pragma_table_info('{table}')"),
            );
            // Leases are not copied: no job is running during the copy.
            have.retain(|c| !(*table == "jobs" && c.starts_with("lease_")));
            have.sort();
            let mut want: Vec<&str> = columns.to_vec();
            want.sort();
            assert_eq!(have, want, "{table}");
        }
    }
}
