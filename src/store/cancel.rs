//! Cancellations after the push, both ways, as jobs of the one jobs table
//! (same leases, retries, parking and crash safety as every other job):
//! - the source cancelled an order the ERP has: a `cancel_in_erp` job asks
//!   the ERP to cancel it; a refusal parks the job and the order becomes
//!   `cancel_refused` (flagged for an operator);
//! - the ERP reports a sale cancelled before shipping: a `write_cancelled`
//!   job writes it back to the source (or parks, naming why it cannot).

use serde::{Deserialize, Serialize};

use super::sql::Tx;
use super::{Store, event, now_ms};
use crate::outbox::state::OrderState;

/// A sale the ERP reports cancelled (the http contract's shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErpCancellation {
    pub order_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_order_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What recording a page of ERP cancellations did to one order.
#[derive(Clone, Debug, PartialEq)]
pub enum CancellationNote {
    /// Queued for write-back to its source.
    Queued { source: String, order_key: String },
    /// The ERP cancelled an order we had asked it to cancel (or one an
    /// operator cancelled by hand after a refusal): nothing to write back.
    Settled { order_key: String },
    /// Reported cancelled after it shipped, or in a state that takes no
    /// write-back: recorded as an event only.
    Ignored {
        order_key: String,
        state: OrderState,
    },
}

/// Queues the ERP cancel of an order the ERP has (inside the caller's
/// transaction) and moves it to `cancelling`. An accepted write-back still
/// waiting is stopped: the source has cancelled the order, "processing"
/// must not be written over that.
pub(crate) fn queue_erp_cancel(
    tx: &mut Tx<'_>,
    source: &str,
    key: &str,
    reason: &str,
    now: i64,
) -> anyhow::Result<()> {
    tx.exec(
        "UPDATE orders SET state = ?2, updated_at = ?3 WHERE order_key = ?1",
        &[&key, &OrderState::Cancelling, &now],
    )?;
    tx.exec("INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, payload, created_at, updated_at)
         VALUES (?1, 'cancel_in_erp', ?2, '', 'pending', 0, ?3, ?4, ?3, ?3)
         ON CONFLICT(order_key, kind, ref) DO NOTHING",
        &[&source, &key, &now, &reason],
    )?;
    tx.exec("UPDATE jobs SET state = 'cancelled', last_error = 'cancelled at the source', updated_at = ?2
         WHERE order_key = ?1 AND kind = 'write_accepted' AND state IN ('pending', 'parked')
           AND (lease_until IS NULL OR lease_until < ?2)",
        &[&key, &now],
    )?;
    event(
        tx,
        key,
        now,
        "cancel_queued",
        &format!("cancelled at the source after the push ({reason}); the ERP cancel is queued"),
    )
}

/// After a `cancel_in_erp` job settled as done.
pub(crate) fn erp_cancel_done(tx: &mut Tx<'_>, key: &str, now: i64) -> anyhow::Result<()> {
    tx.exec(
        "UPDATE orders SET state = 'cancelled_in_erp', updated_at = ?2
         WHERE order_key = ?1 AND state IN ('cancelling', 'cancel_refused')",
        &[&key, &now],
    )?;
    Ok(())
}

/// After a `cancel_in_erp` job was parked: the order is flagged.
pub(crate) fn erp_cancel_refused(tx: &mut Tx<'_>, key: &str, now: i64) -> anyhow::Result<()> {
    tx.exec(
        "UPDATE orders SET state = 'cancel_refused', updated_at = ?2
         WHERE order_key = ?1 AND state = 'cancelling'",
        &[&key, &now],
    )?;
    Ok(())
}

/// `retry KEY` on a refused cancel: the order is cancelling again.
pub(crate) fn erp_cancel_retried(tx: &mut Tx<'_>, key: &str, now: i64) -> anyhow::Result<()> {
    tx.exec(
        "UPDATE orders SET state = 'cancelling', updated_at = ?2
         WHERE order_key = ?1 AND state = 'cancel_refused'
           AND EXISTS (SELECT 1 FROM jobs WHERE order_key = ?1 AND kind = 'cancel_in_erp'
                       AND state = 'pending')",
        &[&key, &now],
    )?;
    Ok(())
}

impl Store {
    /// Records sales the ERP reports cancelled and the cancellations cursor
    /// in one transaction. An order in the ERP that has not shipped gets a
    /// `write_cancelled` job (once: the job's key dedupes repeats), waiting
    /// while its accepted write-back is in flight.
    pub fn record_cancellations(
        &self,
        cancellations: &[ErpCancellation],
        cursor: &str,
    ) -> anyhow::Result<Vec<CancellationNote>> {
        let fence = self.fence_for(super::fence::ERP_FEED, Some("live"))?;
        let result = self.lock().write(|tx| {
            if let Some(lease) = &fence {
                super::fence::check(tx, lease)?;
            }
            let now = now_ms();
            let mut notes = Vec::new();
            for c in cancellations {
                let Some(r) = tx.query_opt(
                    "SELECT source, state FROM orders WHERE order_key = ?1",
                    &[&c.order_key],
                )?
                else {
                    continue;
                };
                let (source, state): (String, OrderState) = (r.get(0)?, r.get(1)?);
                let reason = c.reason.as_deref().unwrap_or("no reason given");
                match state {
                    OrderState::Cancelling | OrderState::CancelRefused => {
                        // Ours (the cancel job may not have settled yet), or done
                        // by hand after a refusal: either way it is cancelled.
                        tx.exec("UPDATE jobs SET state = 'done', last_error = NULL, parked_reason = NULL, updated_at = ?2
                             WHERE order_key = ?1 AND kind = 'cancel_in_erp' AND state IN ('pending', 'parked')
                               AND (lease_until IS NULL OR lease_until < ?2)",
                            &[&c.order_key, &now],
                        )?;
                        erp_cancel_done(tx, &c.order_key, now)?;
                        if state == OrderState::CancelRefused {
                            event(
                                tx,
                                &c.order_key,
                                now,
                                "cancelled_in_erp",
                                &format!("the ERP reports the sale cancelled ({reason})"),
                            )?;
                        }
                        notes.push(CancellationNote::Settled {
                            order_key: c.order_key.clone(),
                        });
                    }
                    OrderState::Pushed | OrderState::Accepted => {
                        let accepted_in_flight: bool = tx.value(
                            "SELECT EXISTS (SELECT 1 FROM jobs WHERE order_key = ?1 AND kind = 'write_accepted'
                               AND state = 'pending' AND lease_until >= ?2)",
                            &[&c.order_key, &now],
                        )?;
                        // Not yet started: writing "processing" to the source
                        // is moot now. In flight: the cancel waits for it.
                        tx.exec("UPDATE jobs SET state = 'cancelled', last_error = 'cancelled in the ERP', updated_at = ?2
                             WHERE order_key = ?1 AND kind = 'write_accepted' AND state IN ('pending', 'parked')
                               AND (lease_until IS NULL OR lease_until < ?2)",
                            &[&c.order_key, &now],
                        )?;
                        let job_state = if accepted_in_flight {
                            crate::outbox::state::JobState::Waiting
                        } else {
                            crate::outbox::state::JobState::Pending
                        };
                        let payload = serde_json::to_string(c)?;
                        let inserted = tx.exec("INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, payload, created_at, updated_at)
                             VALUES (?1, 'write_cancelled', ?2, '', ?3, 0, ?4, ?5, ?4, ?4)
                             ON CONFLICT(order_key, kind, ref) DO NOTHING",
                            &[&source, &c.order_key, &job_state, &now, &payload],
                        )?;
                        tx.exec("UPDATE orders SET state = 'cancelled_in_erp', updated_at = ?2 WHERE order_key = ?1",
                            &[&c.order_key, &now],
                        )?;
                        event(
                            tx,
                            &c.order_key,
                            now,
                            "cancelled_in_erp",
                            &format!(
                                "the ERP reports the sale {} cancelled ({reason}); written back to the source next",
                                c.erp_order_number.as_deref().unwrap_or("-")
                            ),
                        )?;
                        if inserted == 1 {
                            notes.push(CancellationNote::Queued {
                                source,
                                order_key: c.order_key.clone(),
                            });
                        }
                    }
                    OrderState::CancelledInErp => {}
                    other => {
                        let seen: bool = tx.value(
                            "SELECT EXISTS (SELECT 1 FROM events WHERE order_key = ?1 AND kind = 'erp_cancel_ignored')",
                            &[&c.order_key],
                        )?;
                        if !seen {
                            event(
                                tx,
                                &c.order_key,
                                now,
                                "erp_cancel_ignored",
                                &format!(
                                    "the ERP reports the sale cancelled ({reason}) while the order is {other}: not written back"
                                ),
                            )?;
                            notes.push(CancellationNote::Ignored {
                                order_key: c.order_key.clone(),
                                state: other,
                            });
                        }
                    }
                }
            }
            tx.exec("INSERT INTO cursors (source, scope, value, updated_at) VALUES ('_erp', 'cancellations', ?1, ?2)
                 ON CONFLICT(source, scope) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&cursor, &now],
            )?;
            Ok(notes)
        });
        self.forget_lost(super::fence::ERP_FEED, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::temp_store;
    use crate::store::{ClaimFilter, Disposition, ErpAccepted, JobKind};
    use std::time::Duration;

    fn incoming(ext: &str, disposition: Disposition) -> crate::store::IncomingOrder {
        crate::store::ingest::tests::incoming(ext, disposition, "1")
    }

    use crate::store::ingest::tests::state_of;

    fn jobs(store: &Store, key: &str) -> Vec<(String, String)> {
        let conn = store.lock_for_tests();
        let mut stmt = conn
            .prepare("SELECT kind, state FROM jobs WHERE order_key = ?1 ORDER BY id")
            .unwrap();
        stmt.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn claim_one(store: &Store, kind: JobKind) -> crate::store::Job {
        let jobs = store
            .claim("shop", "me", Duration::from_secs(60), 10, ClaimFilter::All)
            .unwrap();
        jobs.into_iter()
            .find(|j| j.kind == kind)
            .unwrap_or_else(|| panic!("no {} job to claim", kind.as_str()))
    }

    fn accepted() -> ErpAccepted {
        ErpAccepted {
            erp_order_number: "SO1".into(),
            lines: Vec::new(),
            created: true,
        }
    }

    /// Pushes shop:EXT and writes "accepted" back.
    fn pushed_and_accepted(store: &Store, ext: &str) {
        store
            .ingest("shop", "live", &[incoming(ext, Disposition::Push)], None)
            .unwrap();
        let push = claim_one(store, JobKind::Push);
        let hash = store
            .order_for_job(&push.order_key)
            .unwrap()
            .unwrap()
            .content_hash;
        assert!(
            store
                .finish_push(&push, "me", &accepted(), &hash, true)
                .unwrap()
        );
        let wa = claim_one(store, JobKind::WriteAccepted);
        assert!(store.finish_job(&wa, "me", "ok").unwrap());
    }

    #[test]
    fn a_cancel_after_the_push_queues_one_erp_cancel_and_settles_it() {
        let (_d, store) = temp_store();
        pushed_and_accepted(&store, "1");
        let cancel = incoming("1", Disposition::Cancel("state cancel".into()));
        let r = store
            .ingest("shop", "live", std::slice::from_ref(&cancel), None)
            .unwrap();
        assert!(matches!(
            &r.notes[..],
            [crate::store::OrderNote::CancelledAfterPush { .. }]
        ));
        assert_eq!(state_of(&store, "shop:1"), "cancelling");
        // Seen again: no second job.
        store.ingest("shop", "live", &[cancel], None).unwrap();
        let cancels: Vec<_> = jobs(&store, "shop:1")
            .into_iter()
            .filter(|(k, _)| k == "cancel_in_erp")
            .collect();
        assert_eq!(cancels, vec![("cancel_in_erp".into(), "pending".into())]);
        let job = claim_one(&store, JobKind::CancelInErp);
        assert_eq!(job.payload.as_deref(), Some("state cancel"));
        assert!(store.finish_job(&job, "me", "cancelled").unwrap());
        assert_eq!(state_of(&store, "shop:1"), "cancelled_in_erp");
        // The ERP's feed reports our own cancel: nothing to write back.
        let notes = store
            .record_cancellations(
                &[ErpCancellation {
                    order_key: "shop:1".into(),
                    erp_order_number: Some("SO1".into()),
                    cancelled_at: None,
                    reason: None,
                }],
                "c1",
            )
            .unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert!(
            !jobs(&store, "shop:1")
                .iter()
                .any(|(k, _)| k == "write_cancelled")
        );
    }

    #[test]
    fn a_refused_cancel_flags_the_order_until_retry() {
        let (_d, store) = temp_store();
        pushed_and_accepted(&store, "2");
        store
            .ingest(
                "shop",
                "live",
                &[incoming("2", Disposition::Cancel("cancelled".into()))],
                None,
            )
            .unwrap();
        let job = claim_one(&store, JobKind::CancelInErp);
        assert!(store.park(&job, "me", "the ERP refuses: shipped").unwrap());
        assert_eq!(state_of(&store, "shop:2"), "cancel_refused");
        let report = store.status(&["shop".to_string()]).unwrap();
        assert!(
            report
                .parked
                .iter()
                .any(|p| p.order_key == "shop:2" && p.job == "cancel_in_erp"),
            "{:?}",
            report.parked
        );
        assert_eq!(store.requeue_order("shop:2").unwrap(), 1);
        assert_eq!(state_of(&store, "shop:2"), "cancelling");
    }

    #[test]
    fn a_push_that_lands_after_the_cancel_is_cancelled_in_the_erp() {
        let (_d, store) = temp_store();
        store
            .ingest("shop", "live", &[incoming("3", Disposition::Push)], None)
            .unwrap();
        let push = claim_one(&store, JobKind::Push);
        let hash = store.order_for_job("shop:3").unwrap().unwrap().content_hash;
        // The cancellation is recorded while the push is under way.
        store
            .ingest(
                "shop",
                "live",
                &[incoming("3", Disposition::Cancel("cancelled".into()))],
                None,
            )
            .unwrap();
        assert_eq!(state_of(&store, "shop:3"), "cancelled");
        assert!(
            store
                .finish_push(&push, "me", &accepted(), &hash, true)
                .unwrap()
        );
        assert_eq!(state_of(&store, "shop:3"), "cancelling");
        let kinds: Vec<_> = jobs(&store, "shop:3");
        assert!(
            kinds.contains(&("cancel_in_erp".into(), "pending".into())),
            "{kinds:?}"
        );
        assert!(
            !kinds.contains(&("write_accepted".into(), "pending".into())),
            "{kinds:?}"
        );
    }

    #[test]
    fn an_erp_cancel_is_written_back_once_after_the_accepted_write_back() {
        let (_d, store) = temp_store();
        store
            .ingest("shop", "live", &[incoming("4", Disposition::Push)], None)
            .unwrap();
        let push = claim_one(&store, JobKind::Push);
        let hash = store.order_for_job("shop:4").unwrap().unwrap().content_hash;
        assert!(
            store
                .finish_push(&push, "me", &accepted(), &hash, true)
                .unwrap()
        );
        // The accepted write-back is running when the ERP cancel is reported.
        let wa = claim_one(&store, JobKind::WriteAccepted);
        let c = ErpCancellation {
            order_key: "shop:4".into(),
            erp_order_number: Some("SO1".into()),
            cancelled_at: None,
            reason: Some("customer called".into()),
        };
        let notes = store
            .record_cancellations(std::slice::from_ref(&c), "c1")
            .unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(state_of(&store, "shop:4"), "cancelled_in_erp");
        assert!(
            jobs(&store, "shop:4").contains(&("write_cancelled".into(), "waiting".into())),
            "waits for the accepted write-back in flight"
        );
        assert!(store.finish_job(&wa, "me", "ok").unwrap());
        assert_eq!(state_of(&store, "shop:4"), "cancelled_in_erp");
        let wc = claim_one(&store, JobKind::WriteCancelled);
        // Reported again (overlap window): not queued again.
        assert!(store.record_cancellations(&[c], "c2").unwrap().is_empty());
        assert!(
            store
                .finish_job(&wc, "me", "cancelled at the source")
                .unwrap()
        );
        assert_eq!(
            store.cursor("_erp", "cancellations").unwrap().as_deref(),
            Some("c2")
        );
        let wcs: Vec<_> = jobs(&store, "shop:4")
            .into_iter()
            .filter(|(k, _)| k == "write_cancelled")
            .collect();
        assert_eq!(wcs, vec![("write_cancelled".into(), "done".into())]);
    }

    #[test]
    fn an_erp_cancel_of_a_shipped_order_is_recorded_not_written_back() {
        let (_d, store) = temp_store();
        pushed_and_accepted(&store, "5");
        store
            .lock_for_tests()
            .execute(
                "UPDATE orders SET state = 'completed' WHERE order_key = 'shop:5'",
                [],
            )
            .unwrap();
        let c = ErpCancellation {
            order_key: "shop:5".into(),
            erp_order_number: None,
            cancelled_at: None,
            reason: None,
        };
        let notes = store
            .record_cancellations(std::slice::from_ref(&c), "c1")
            .unwrap();
        assert!(matches!(&notes[..], [CancellationNote::Ignored { .. }]));
        assert!(
            store.record_cancellations(&[c], "c2").unwrap().is_empty(),
            "noted once"
        );
        assert_eq!(state_of(&store, "shop:5"), "completed");
    }
}
