//! Retention (`daemon.retain`): an order that has ended (completed, or
//! cancelled, cancelled in the ERP or skipped with no job left open) longer
//! ago than that loses what only an investigation needs (its raw payload,
//! its job attempts and its events), in small batches, each its own short
//! transaction. What keeps an order from being pushed twice stays: the key,
//! the state, the content hash, the ERP number and line mapping, the job
//! rows.

use super::sql::Tx;
use super::{Store, event, now_ms};

impl Store {
    /// Prunes at most `batch` ended orders older than `cutoff_ms`; returns
    /// how many. Call it until it returns less than `batch`. A completed
    /// order counts from its completion; a cancelled or skipped one from
    /// its last change, and only once none of its jobs is pending, waiting
    /// or parked (a cancel still to be written back keeps its history).
    pub fn prune_ended(&self, cutoff_ms: i64, batch: usize) -> anyhow::Result<usize> {
        self.lock().write(|tx| {
            let mut keys = ended_keys(
                tx,
                "SELECT order_key FROM orders
                 WHERE state = 'completed' AND pruned_at IS NULL AND completed_at < ?1
                 ORDER BY completed_at LIMIT ?2",
                cutoff_ms,
                batch,
            )?;
            if keys.len() < batch {
                keys.extend(ended_keys(
                    tx,
                    "SELECT o.order_key FROM orders o
                     WHERE o.state IN ('cancelled', 'skipped', 'cancelled_in_erp')
                       AND o.pruned_at IS NULL AND o.updated_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.order_key = o.order_key
                                       AND j.state IN ('pending', 'waiting', 'parked'))
                     ORDER BY o.updated_at LIMIT ?2",
                    cutoff_ms,
                    batch - keys.len(),
                )?);
            }
            let now = now_ms();
            for key in &keys {
                tx.exec(
                    "DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM jobs WHERE order_key = ?1)",
                    &[key],
                )?;
                tx.exec("DELETE FROM events WHERE order_key = ?1", &[key])?;
                tx.exec(
                    "UPDATE orders SET pruned_at = ?2 WHERE order_key = ?1",
                    &[key, &now],
                )?;
                tx.exec(
                    "UPDATE order_payloads SET raw_payload = '' WHERE order_key = ?1",
                    &[key],
                )?;
                event(
                    tx,
                    key,
                    now,
                    "pruned",
                    "raw payload, job attempts and events removed (daemon.retain)",
                )?;
            }
            Ok(keys.len())
        })
    }
}

/// The order keys `sql` selects (bound: the cutoff, then the limit).
fn ended_keys(
    tx: &mut Tx<'_>,
    sql: &str,
    cutoff_ms: i64,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    tx.query(sql, &[&cutoff_ms, &limit])?
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use crate::store::testutil::temp_store;
    use crate::store::{Disposition, IncomingOrder, MappedOrder};

    fn incoming(ext: &str) -> IncomingOrder {
        let order: crate::model::Order = serde_json::from_value(serde_json::json!({
            "order_key": format!("shop:{ext}"), "source": "shop", "source_kind": "cloudsuite",
            "external_id": ext, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
            "prices_include_tax": false, "customer": {},
            "lines": [{"source_line_id": "1", "quantity": "1", "unit_price": "10.00", "line_total": "10.00"}],
            "totals": {"net": "10.00", "tax": "2.10", "gross": "12.10"}
        }))
        .unwrap();
        IncomingOrder {
            external_id: ext.into(),
            raw: format!("{{\"id\": \"{ext}\", \"big\": \"payload\"}}"),
            version: Some("v1".into()),
            mapped: Ok(MappedOrder::new(order, Disposition::Push)),
        }
    }

    /// Issue 16.5: old completed orders lose payload, attempts and events;
    /// keys, ERP numbers and lines stay, so a re-read pushes nothing.
    #[test]
    fn pruning_keeps_what_prevents_a_second_push() {
        let (_dir, store) = temp_store();
        for ext in ["old", "young", "open"] {
            store
                .ingest("shop", "live", &[incoming(ext)], None)
                .unwrap();
        }
        {
            let conn = store.lock_for_tests();
            for (ext, state, completed) in [
                ("old", "completed", 1_000),
                ("young", "completed", i64::MAX / 2),
                ("open", "accepted", 1_000),
            ] {
                let key = format!("shop:{ext}");
                conn.execute(
                    "UPDATE orders SET state = ?2, completed_at = ?3, erp_order_number = 'SO1', pushed_hash = content_hash
                     WHERE order_key = ?1",
                    params![key, state, completed],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO order_lines (order_key, source_line_id, erp_line_number) VALUES (?1, '1', '10')",
                    [&key],
                )
                .unwrap();
                conn.execute(
                    "UPDATE jobs SET state = 'done' WHERE order_key = ?1",
                    [&key],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO job_attempts (job_id, attempt, at, outcome) SELECT id, 1, 0, 'done' FROM jobs WHERE order_key = ?1",
                    [&key],
                )
                .unwrap();
            }
        }
        assert_eq!(store.prune_ended(10_000, 100).unwrap(), 1);
        assert_eq!(store.prune_ended(10_000, 100).unwrap(), 0, "once");

        let old = store.order_detail("shop:old").unwrap().unwrap();
        assert_eq!(old.row.state, "completed");
        assert_eq!(old.row.erp_order_number.as_deref(), Some("SO1"));
        assert_eq!(old.erp_lines.len(), 1, "line mapping kept");
        assert!(old.canonical.is_some());
        assert!(
            old.jobs.iter().all(|j| j.history.is_empty()),
            "attempts gone"
        );
        let kinds: Vec<&str> = old.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["pruned"]);
        let raw: String = store
            .lock_for_tests()
            .query_row(
                "SELECT raw_payload FROM order_payloads WHERE order_key = 'shop:old'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(raw, "");
        for kept in ["shop:young", "shop:open"] {
            let d = store.order_detail(kept).unwrap().unwrap();
            assert!(d.events.iter().all(|e| e.kind != "pruned"), "{kept}");
            assert!(d.jobs.iter().any(|j| !j.history.is_empty()), "{kept}");
        }

        // Read again from the source, unchanged: nothing is queued.
        let report = store
            .ingest("shop", "live", &[incoming("old")], None)
            .unwrap();
        assert_eq!(report.queued(), 0);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(
            store.order_state("shop:old").unwrap(),
            Some(crate::outbox::state::OrderState::Completed)
        );
    }

    /// Orders that ended without completing are pruned too, counted from
    /// their last change, once none of their jobs is open; a re-read of one
    /// queues nothing.
    #[test]
    fn cancelled_and_skipped_orders_are_pruned_once_nothing_is_left_to_do() {
        let (_dir, store) = temp_store();
        // (order, state, last change, its push job's state)
        let orders = [
            ("cancelled", "cancelled", 1_000, "cancelled"),
            ("skipped", "skipped", 1_000, "cancelled"),
            ("in-erp", "cancelled_in_erp", 1_000, "done"),
            ("young", "cancelled", i64::MAX / 2, "cancelled"),
            ("refused", "cancel_refused", 1_000, "done"),
            ("to-write", "cancelled_in_erp", 1_000, "pending"),
            ("parked", "cancelled_in_erp", 1_000, "parked"),
            ("waiting", "cancelled_in_erp", 1_000, "waiting"),
            ("held", "held", 1_000, "cancelled"),
        ];
        for (ext, ..) in orders {
            store
                .ingest("shop", "live", &[incoming(ext)], None)
                .unwrap();
        }
        {
            let conn = store.lock_for_tests();
            for (ext, state, changed, job) in orders {
                let key = format!("shop:{ext}");
                conn.execute(
                    "UPDATE orders SET state = ?2, updated_at = ?3 WHERE order_key = ?1",
                    params![key, state, changed],
                )
                .unwrap();
                conn.execute(
                    "UPDATE jobs SET state = ?2 WHERE order_key = ?1",
                    params![key, job],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO job_attempts (job_id, attempt, at, outcome) SELECT id, 1, 0, 'retry' FROM jobs WHERE order_key = ?1",
                    [&key],
                )
                .unwrap();
            }
        }
        // A batch of two takes two, and the next batch the rest.
        assert_eq!(store.prune_ended(10_000, 2).unwrap(), 2);
        assert_eq!(store.prune_ended(10_000, 2).unwrap(), 1);
        assert_eq!(store.prune_ended(10_000, 2).unwrap(), 0, "once");

        let pruned = |ext: &str| {
            let d = store.order_detail(&format!("shop:{ext}")).unwrap().unwrap();
            let kinds: Vec<&str> = d.events.iter().map(|e| e.kind.as_str()).collect();
            if kinds == ["pruned"] {
                assert!(d.jobs.iter().all(|j| j.history.is_empty()), "{ext}");
                assert!(d.canonical.is_some(), "{ext}: the canonical order stays");
                true
            } else {
                assert!(!kinds.contains(&"pruned"), "{ext}: {kinds:?}");
                assert!(d.jobs.iter().all(|j| !j.history.is_empty()), "{ext}");
                false
            }
        };
        for (ext, _, _, _) in orders {
            let expected = matches!(ext, "cancelled" | "skipped" | "in-erp");
            assert_eq!(pruned(ext), expected, "{ext}");
        }

        // Read again from the source, unchanged: nothing is queued.
        let report = store
            .ingest("shop", "live", &[incoming("in-erp")], None)
            .unwrap();
        assert_eq!(report.queued(), 0);
        assert_eq!(
            store.order_state("shop:in-erp").unwrap(),
            Some(crate::outbox::state::OrderState::CancelledInErp)
        );
    }

    /// Issue 16.5: `db backup` ends while a writer keeps writing.
    #[test]
    fn a_backup_completes_while_the_ledger_is_written() {
        let (dir, store) = temp_store();
        let store = std::sync::Arc::new(store);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (std::sync::Arc::clone(&store), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store
                        .ingest("shop", "live", &[incoming(&format!("w{n}"))], None)
                        .unwrap();
                    n += 1;
                }
                n
            })
        };
        // Let the writer get going, then copy a few times while it writes.
        while store.order_state("shop:w50").unwrap().is_none() {
            assert!(!writer.is_finished(), "the writer stopped");
            std::thread::yield_now();
        }
        for i in 0..3 {
            let dest = dir.path().join(format!("backup-{i}.db"));
            store.backup_to(&dest).unwrap();
            let copy = crate::store::Store::open_read_only(&dest).unwrap();
            assert!(copy.order_state("shop:w50").unwrap().is_some());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(written > 50, "{written}");
    }
}
