//! Recording what a poll saw. The orders of a page and the cursor that covers
//! them commit in ONE transaction (SPEC guarantee 4); seeing an order again
//! never creates a second one, and a change after the push is recorded, not
//! pushed (guarantee 2).

use sha2::{Digest, Sha256};

use super::sql::Tx;
use super::{Store, event, now_ms};
use crate::model::{Order, order_key};
use crate::outbox::state::OrderState;

/// What the connector decided about an order it could map.
#[derive(Clone, Debug, PartialEq)]
pub enum Disposition {
    /// Goes to the ERP.
    Push,
    /// Not yet (e.g. payment still open); looked at again on later polls.
    Hold(String),
    /// Cancelled at the source before the push: never pushed.
    Cancel(String),
}

#[derive(Clone, Debug)]
pub struct MappedOrder {
    pub order: Order,
    pub disposition: Disposition,
    /// What the source shows that the canonical order cannot carry and an
    /// operator must act on once the ERP has the order (Titelive: quantities
    /// cancelled inside its packages). Part of the content: a new one after
    /// the push is recorded and logged as a change after the push. Empty for
    /// most orders, and then no part of the content hash.
    pub beyond_canonical: Vec<String>,
}

impl MappedOrder {
    pub fn new(order: Order, disposition: Disposition) -> MappedOrder {
        MappedOrder {
            order,
            disposition,
            beyond_canonical: Vec::new(),
        }
    }
}

/// One order as a poll saw it.
#[derive(Clone, Debug)]
pub struct IncomingOrder {
    pub external_id: String,
    /// The payload exactly as received, kept for operators and re-mapping.
    pub raw: String,
    /// The source's own change marker (modified date, sync marker...).
    pub version: Option<String>,
    /// The canonical order, or why it could not be mapped (the order is then
    /// recorded and parked: poison isolation, guarantee 5).
    pub mapped: Result<MappedOrder, String>,
}

/// What happened to an order in this ingest, for the log.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderNote {
    Queued(String),
    Held {
        order_key: String,
        reason: String,
    },
    Cancelled {
        order_key: String,
        reason: String,
    },
    Invalid {
        order_key: String,
        reason: String,
    },
    ChangedAfterPush {
        order_key: String,
        what: String,
    },
    /// Cancelled at the source after the push: the ERP cancel is queued.
    CancelledAfterPush {
        order_key: String,
        reason: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct IngestReport {
    pub notes: Vec<OrderNote>,
    pub unchanged: usize,
}

impl IngestReport {
    /// Notes that queued a job: a push, or the ERP cancel of a pushed order.
    pub fn new_jobs(&self) -> usize {
        self.notes
            .iter()
            .filter(|n| {
                matches!(
                    n,
                    OrderNote::Queued(_) | OrderNote::CancelledAfterPush { .. }
                )
            })
            .count()
    }

    pub fn queued(&self) -> usize {
        self.notes
            .iter()
            .filter(|n| matches!(n, OrderNote::Queued(_)))
            .count()
    }
}

fn sha256_hex(text: &str) -> String {
    crate::model::hex(&Sha256::digest(text.as_bytes()))
}

impl Store {
    /// Records a page of orders and, in the same transaction, the cursor that
    /// covers them (`scope` is `live` or `backfill:<run>`).
    pub fn ingest(
        &self,
        source: &str,
        recorded_by: &str,
        orders: &[IncomingOrder],
        cursor: Option<(&str, &str)>,
    ) -> anyhow::Result<IngestReport> {
        let fence = self.fence_for(source, cursor.map(|(scope, _)| scope))?;
        let result = self.lock().write(|tx| {
            if let Some(lease) = &fence {
                super::fence::check(tx, lease)?;
            }
            let now = now_ms();
            let mut report = IngestReport::default();
            for incoming in orders {
                ingest_one(tx, source, recorded_by, incoming, now, &mut report)?;
            }
            if let Some((scope, value)) = cursor {
                tx.exec(
                    "INSERT INTO cursors (source, scope, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(source, scope) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    &[&source, &scope, &value, &now],
                )?;
            }
            Ok(report)
        });
        self.forget_lost(source, result)
    }

    pub fn cursor(&self, source: &str, scope: &str) -> anyhow::Result<Option<String>> {
        self.lock().auto(|tx| {
            tx.query_opt(
                "SELECT value FROM cursors WHERE source = ?1 AND scope = ?2",
                &[&source, &scope],
            )?
            .map(|r| r.get(0))
            .transpose()
        })
    }

    /// The source version we last recorded for an order, if we know it: lets a
    /// connector skip fetching details that cannot have changed.
    pub fn known_version(&self, order_key: &str) -> anyhow::Result<Option<String>> {
        self.lock().auto(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT source_version FROM orders WHERE order_key = ?1",
                    &[&order_key],
                )?
                .map(|r| r.get::<Option<String>>(0))
                .transpose()?
                .flatten())
        })
    }

    /// Version marker and state of each of these orders that is recorded:
    /// one transaction for a whole page (the poll's [`crate::poll::Known`]).
    pub fn recorded(
        &self,
        order_keys: &[String],
    ) -> anyhow::Result<Vec<(String, Option<String>, OrderState)>> {
        self.lock().read(|tx| {
            let mut out = Vec::new();
            for key in order_keys {
                if let Some(r) = tx.query_opt(
                    "SELECT source_version, state FROM orders WHERE order_key = ?1",
                    &[key],
                )? {
                    out.push((key.clone(), r.get(0)?, r.get(1)?));
                }
            }
            Ok(out)
        })
    }

    /// The ledger state of an order, if recorded.
    pub fn order_state(&self, order_key: &str) -> anyhow::Result<Option<OrderState>> {
        self.lock().auto(|tx| {
            tx.query_opt(
                "SELECT state FROM orders WHERE order_key = ?1",
                &[&order_key],
            )?
            .map(|r| r.get(0))
            .transpose()
        })
    }

    /// Notes that a poll of `source` is under way, with the pages it has
    /// recorded so far (0 at its start): a first walk through a long
    /// backlog takes many schedule periods, and health must not take it
    /// for a source that stopped polling (the watchdog would restart the
    /// daemon mid-walk). The last error and last success are left as they
    /// are; a poll that gets further than the last failed one is past that
    /// failure ([`super::status::SourceStatusRow::past_last_failure`]).
    pub fn note_polling(&self, source: &str, pages: u64) -> anyhow::Result<()> {
        let pages = i64::try_from(pages).unwrap_or(i64::MAX);
        self.lock().auto(|tx| {
            tx.exec(
                "INSERT INTO source_status (source, last_poll_at, pages_under_way) VALUES (?1, ?2, ?3)
                 ON CONFLICT(source) DO UPDATE SET last_poll_at = excluded.last_poll_at,
                   pages_under_way = excluded.pages_under_way",
                &[&source, &now_ms(), &pages],
            )
        })?;
        Ok(())
    }

    /// Notes the outcome of a poll for `status` (last poll, last error). A
    /// failed poll keeps how many pages it recorded before it failed.
    pub fn record_poll(&self, source: &str, error: Option<&str>) -> anyhow::Result<()> {
        let error = error.map(crate::secret::redact);
        let error = error.as_deref();
        let now = now_ms();
        self.lock().auto(|tx| {
            tx.exec(
                "INSERT INTO source_status (source, last_poll_at, last_success_at, last_error, failed_after_pages)
                 VALUES (?1, ?2, CASE WHEN CAST(?3 AS TEXT) IS NULL THEN CAST(?2 AS BIGINT) END, ?3,
                   CASE WHEN CAST(?3 AS TEXT) IS NULL THEN NULL ELSE 0 END)
                 ON CONFLICT(source) DO UPDATE SET last_poll_at = excluded.last_poll_at,
                   last_success_at = COALESCE(excluded.last_success_at, source_status.last_success_at),
                   last_error = excluded.last_error,
                   failed_after_pages = CASE WHEN excluded.last_error IS NULL THEN NULL
                     ELSE COALESCE(source_status.pages_under_way, 0) END,
                   pages_under_way = NULL",
                &[&source, &now, &error],
            )
        })?;
        Ok(())
    }
}

fn disposition_tag(d: &Disposition) -> &'static str {
    match d {
        Disposition::Push => "push",
        Disposition::Hold(_) => "hold",
        Disposition::Cancel(_) => "cancel",
    }
}

/// Queues (or re-queues) the push job of an order.
fn queue_push(tx: &mut Tx<'_>, source: &str, key: &str, now: i64) -> anyhow::Result<()> {
    tx.exec("INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, 'push', ?2, '', 'pending', 0, ?3, ?3, ?3)
         ON CONFLICT(order_key, kind, ref) DO UPDATE SET state = 'pending', attempts = 0,
           next_attempt_at = excluded.next_attempt_at, parked_reason = NULL, parked_at = NULL,
           last_error = NULL, first_failed_at = NULL, updated_at = excluded.updated_at
         WHERE jobs.state IN ('parked', 'cancelled')",
        &[&source, &key, &now],
    )?;
    Ok(())
}

/// Parks the push job of an order that cannot be mapped, so `status` shows it.
fn park_push(
    tx: &mut Tx<'_>,
    source: &str,
    key: &str,
    reason: &str,
    now: i64,
) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at,
                           parked_reason, parked_at, last_error, created_at, updated_at)
         VALUES (?1, 'push', ?2, '', 'parked', 0, ?3, ?4, ?3, ?4, ?3, ?3)
         ON CONFLICT(order_key, kind, ref) DO UPDATE SET state = 'parked',
           parked_reason = excluded.parked_reason, parked_at = excluded.parked_at,
           last_error = excluded.last_error, updated_at = excluded.updated_at
         WHERE jobs.state != 'done'",
        &[&source, &key, &now, &reason],
    )?;
    Ok(())
}

/// Stops a push that has not happened (held again, or cancelled).
///
/// A cancelled order's push that may have reached the ERP is not stopped:
/// an attempt was started (a runner that died, or is still under way,
/// never told the ledger how it ended) or one ended without an answer
/// (`sent_hash`). Its next attempt asks the ERP first; if the ERP has the
/// order, the push records it and the cancel follows it there
/// (`finish_push`), else it ends "not pushed". Stopping it would leave
/// the ERP with an order the source cancelled.
fn cancel_push(tx: &mut Tx<'_>, key: &str, now: i64, cancelled: bool) -> anyhow::Result<()> {
    if !cancelled {
        tx.exec(
            "UPDATE jobs SET state = 'cancelled', updated_at = ?2
             WHERE order_key = ?1 AND kind = 'push' AND state IN ('pending', 'parked')",
            &[&key, &now],
        )?;
        return Ok(());
    }
    tx.exec(
        "UPDATE jobs SET state = 'cancelled', updated_at = ?2
         WHERE order_key = ?1 AND kind = 'push'
           AND ((state = 'pending' AND started_at IS NULL)
                OR (state = 'parked' AND sent_hash IS NULL))",
        &[&key, &now],
    )?;
    // The rest look at the ERP now: a parked one is due again, a pending
    // one waiting out a backoff (and not leased to a runner) is due at once.
    tx.exec(
        "UPDATE jobs SET state = 'pending', next_attempt_at = ?2, parked_reason = NULL,
                         parked_at = NULL, first_failed_at = NULL, updated_at = ?2
         WHERE order_key = ?1 AND kind = 'push'
           AND (state = 'parked'
                OR (state = 'pending' AND (lease_until IS NULL OR lease_until < ?2)))",
        &[&key, &now],
    )?;
    Ok(())
}

fn ingest_one(
    tx: &mut Tx<'_>,
    source: &str,
    recorded_by: &str,
    incoming: &IncomingOrder,
    now: i64,
    report: &mut IngestReport,
) -> anyhow::Result<()> {
    let key = order_key(source, &incoming.external_id);
    let (hash, canonical) = match &incoming.mapped {
        // The disposition is part of the content: a cancellation may change
        // nothing in the canonical order but the source's state.
        Ok(m) => {
            let (json, hash) = m.order.json_and_hash();
            let tag = disposition_tag(&m.disposition);
            let hash = if m.beyond_canonical.is_empty() {
                format!("{tag}:{hash}")
            } else {
                let beyond = sha256_hex(&m.beyond_canonical.join("\n"));
                format!("{tag}:{hash}:{beyond}")
            };
            (hash, Some(json))
        }
        Err(_) => (format!("raw:{}", sha256_hex(&incoming.raw)), None),
    };
    let existing = match tx.query_opt(
        "SELECT state, content_hash, pushed_hash FROM orders WHERE order_key = ?1",
        &[&key],
    )? {
        Some(r) => Some((
            r.get::<OrderState>(0)?,
            r.get::<String>(1)?,
            r.get::<Option<String>>(2)?,
        )),
        None => None,
    };
    let Some((state, old_hash, pushed_hash)) = existing else {
        let (state, note) = pre_push_state(&key, &incoming.mapped);
        tx.exec("INSERT INTO orders (order_key, source, external_id, state,
                                 content_hash, source_version, note, recorded_by, first_seen_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            &[&key, &source, &incoming.external_id, &state, &hash, &incoming.version, &note_reason(&note), &recorded_by, &now],
        )?;
        tx.exec(
            "INSERT INTO order_payloads (order_key, canonical_json, raw_payload) VALUES (?1, ?2, ?3)",
            &[&key, &canonical, &incoming.raw],
        )?;
        event(
            tx,
            &key,
            now,
            "recorded",
            &format!("state {state}; by {recorded_by}"),
        )?;
        apply_pre_push_jobs(tx, source, &key, &note, now)?;
        report.notes.push(note);
        return Ok(());
    };

    if old_hash == hash {
        // Same business content: an echo of our own write-back, or nothing new.
        tx.exec(
            "UPDATE orders SET source_version = ?2 WHERE order_key = ?1",
            &[&key, &incoming.version],
        )?;
        report.unchanged += 1;
        return Ok(());
    }

    if state == OrderState::Skipped {
        // An operator's skip is final until `retry KEY` (SPEC §5.11): a later
        // change at the source (the payment clearing) is recorded, not queued.
        tx.exec(
            "UPDATE orders SET content_hash = ?2, source_version = ?3, updated_at = ?4
             WHERE order_key = ?1",
            &[&key, &hash, &incoming.version, &now],
        )?;
        set_payloads(tx, &key, canonical.as_deref(), &incoming.raw, true)?;
        event(
            tx,
            &key,
            now,
            "changed",
            "changed at the source while skipped; stays skipped (ordersync retry KEY to push it)",
        )?;
        report.unchanged += 1;
        return Ok(());
    }
    if !state.in_erp() {
        // Not in the ERP yet: the latest version is the one to push.
        let (new_state, note) = pre_push_state(&key, &incoming.mapped);
        debug_assert!(state.may_become(new_state), "{state} -> {new_state}");
        tx.exec("UPDATE orders SET state = ?2, content_hash = ?3, source_version = ?4, note = ?5, updated_at = ?6
             WHERE order_key = ?1",
            &[&key, &new_state, &hash, &incoming.version, &note_reason(&note), &now],
        )?;
        set_payloads(tx, &key, canonical.as_deref(), &incoming.raw, false)?;
        event(tx, &key, now, "changed", &format!("{state} -> {new_state}"))?;
        apply_pre_push_jobs(tx, source, &key, &note, now)?;
        report.notes.push(note);
        return Ok(());
    }

    if pushed_hash.as_deref() == Some(hash.as_str()) {
        // Back to exactly what the ERP has.
        tx.exec("UPDATE orders SET content_hash = ?2, source_version = ?3, updated_at = ?4 WHERE order_key = ?1",
            &[&key, &hash, &incoming.version, &now],
        )?;
        set_raw_payload(tx, &key, &incoming.raw)?;
        report.unchanged += 1;
        return Ok(());
    }
    if let Ok(MappedOrder {
        disposition: Disposition::Cancel(reason),
        ..
    }) = &incoming.mapped
        && matches!(
            state,
            OrderState::Pushed | OrderState::Accepted | OrderState::Shipped | OrderState::Completed
        )
    {
        // Cancelled at the source after the push: the ERP is asked to cancel
        // it too (a job; the ERP decides whether it still can).
        tx.exec(
            "UPDATE orders SET content_hash = ?2, source_version = ?3,
                               changed_after_push_at = ?4, updated_at = ?4
             WHERE order_key = ?1",
            &[&key, &hash, &incoming.version, &now],
        )?;
        set_raw_payload(tx, &key, &incoming.raw)?;
        super::cancel::queue_erp_cancel(tx, source, &key, reason, now)?;
        report.notes.push(OrderNote::CancelledAfterPush {
            order_key: key,
            reason: reason.clone(),
        });
        return Ok(());
    }
    if matches!(
        &incoming.mapped,
        Ok(MappedOrder {
            disposition: Disposition::Cancel(_),
            ..
        })
    ) && matches!(
        state,
        OrderState::Cancelling | OrderState::CancelRefused | OrderState::CancelledInErp
    ) {
        // Cancelled on both sides (our own cancel write-back's echo, or a
        // second look at the source's cancel): recorded, nothing more to do.
        tx.exec(
            "UPDATE orders SET content_hash = ?2, source_version = ?3, updated_at = ?4
             WHERE order_key = ?1",
            &[&key, &hash, &incoming.version, &now],
        )?;
        set_raw_payload(tx, &key, &incoming.raw)?;
        event(tx, &key, now, "changed", "cancelled at the source")?;
        report.unchanged += 1;
        return Ok(());
    }
    // A real change of an order the ERP already has: record, warn, never push again.
    let old_canonical: Option<String> = tx
        .query_opt(
            "SELECT canonical_json FROM order_payloads WHERE order_key = ?1",
            &[&key],
        )?
        .map(|r| r.get::<Option<String>>(0))
        .transpose()?
        .flatten();
    let what = describe_change(old_canonical.as_deref(), &incoming.mapped);
    tx.exec(
        "UPDATE orders SET content_hash = ?2, source_version = ?3,
                           changed_after_push_at = ?4, updated_at = ?4
         WHERE order_key = ?1",
        &[&key, &hash, &incoming.version, &now],
    )?;
    set_raw_payload(tx, &key, &incoming.raw)?;
    event(tx, &key, now, "changed_after_push", &what)?;
    report.notes.push(OrderNote::ChangedAfterPush {
        order_key: key,
        what,
    });
    Ok(())
}

/// Replaces an order's payloads (`order_payloads`, one row per order,
/// written with the order). `keep_canonical`: an unmappable new version
/// keeps the canonical JSON of the last mappable one (a skipped order's).
fn set_payloads(
    tx: &mut Tx<'_>,
    key: &str,
    canonical: Option<&str>,
    raw: &str,
    keep_canonical: bool,
) -> anyhow::Result<()> {
    let sql = if keep_canonical {
        "INSERT INTO order_payloads (order_key, canonical_json, raw_payload) VALUES (?1, ?2, ?3)
         ON CONFLICT (order_key) DO UPDATE
         SET canonical_json = COALESCE(excluded.canonical_json, order_payloads.canonical_json),
             raw_payload = excluded.raw_payload"
    } else {
        "INSERT INTO order_payloads (order_key, canonical_json, raw_payload) VALUES (?1, ?2, ?3)
         ON CONFLICT (order_key) DO UPDATE
         SET canonical_json = excluded.canonical_json, raw_payload = excluded.raw_payload"
    };
    tx.exec(sql, &[&key, &canonical, &raw])?;
    Ok(())
}

/// Replaces the raw payload only: the ERP has the order, and the canonical
/// JSON stays what was pushed.
fn set_raw_payload(tx: &mut Tx<'_>, key: &str, raw: &str) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO order_payloads (order_key, raw_payload) VALUES (?1, ?2)
         ON CONFLICT (order_key) DO UPDATE SET raw_payload = excluded.raw_payload",
        &[&key, &raw],
    )?;
    Ok(())
}

/// Whether an order in this ledger state (a word as stored) has been pushed
/// to the ERP by us; see [`OrderState::in_erp`].
pub fn in_erp(state: &str) -> bool {
    OrderState::parse(state).is_some_and(OrderState::in_erp)
}

fn pre_push_state(key: &str, mapped: &Result<MappedOrder, String>) -> (OrderState, OrderNote) {
    match mapped {
        Ok(m) => match &m.disposition {
            Disposition::Push => (OrderState::Queued, OrderNote::Queued(key.to_string())),
            Disposition::Hold(reason) => (
                OrderState::Held,
                OrderNote::Held {
                    order_key: key.to_string(),
                    reason: reason.clone(),
                },
            ),
            Disposition::Cancel(reason) => (
                OrderState::Cancelled,
                OrderNote::Cancelled {
                    order_key: key.to_string(),
                    reason: reason.clone(),
                },
            ),
        },
        Err(reason) => (
            OrderState::Invalid,
            OrderNote::Invalid {
                order_key: key.to_string(),
                reason: reason.clone(),
            },
        ),
    }
}

fn note_reason(note: &OrderNote) -> Option<&str> {
    match note {
        OrderNote::Held { reason, .. }
        | OrderNote::Cancelled { reason, .. }
        | OrderNote::Invalid { reason, .. } => Some(reason),
        _ => None,
    }
}

fn apply_pre_push_jobs(
    tx: &mut Tx<'_>,
    source: &str,
    key: &str,
    note: &OrderNote,
    now: i64,
) -> anyhow::Result<()> {
    match note {
        OrderNote::Queued(_) => queue_push(tx, source, key, now),
        OrderNote::Invalid { reason, .. } => park_push(tx, source, key, reason, now),
        OrderNote::Held { .. } => cancel_push(tx, key, now, false),
        OrderNote::Cancelled { .. } => cancel_push(tx, key, now, true),
        OrderNote::ChangedAfterPush { .. } | OrderNote::CancelledAfterPush { .. } => Ok(()),
    }
}

fn describe_change(old_canonical: Option<&str>, new: &Result<MappedOrder, String>) -> String {
    let new = match new {
        Err(reason) => return format!("the source's new version cannot be mapped: {reason}"),
        Ok(m) => m,
    };
    if let Disposition::Cancel(reason) = &new.disposition {
        return format!("cancelled at the source after the push ({reason})");
    }
    let Some(old) = old_canonical.and_then(|t| serde_json::from_str::<Order>(t).ok()) else {
        return "the order changed at the source after the push".into();
    };
    let mut parts = Vec::new();
    if old.lines != new.order.lines {
        parts.push(format!(
            "lines changed ({} -> {} lines)",
            old.lines.len(),
            new.order.lines.len()
        ));
    }
    if old.totals != new.order.totals {
        parts.push(format!(
            "totals changed ({} -> {})",
            old.totals.headline(),
            new.order.totals.headline()
        ));
    }
    if parts.is_empty() && !new.beyond_canonical.is_empty() {
        parts.push(format!(
            "{} (not in the canonical order: adjust the ERP's sale by hand)",
            new.beyond_canonical.join("; ")
        ));
    }
    if parts.is_empty() {
        parts.push("other fields changed".into());
    }
    format!(
        "{} after the push; the ERP keeps the pushed version",
        parts.join(", ")
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::testutil::temp_store;

    pub(crate) fn incoming(ext: &str, disposition: Disposition, qty: &str) -> IncomingOrder {
        let mut order: Order = serde_json::from_value(serde_json::json!({
            "order_key": format!("shop:{ext}"), "source": "shop", "source_kind": "cloudsuite",
            "external_id": ext, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
            "prices_include_tax": false, "customer": {},
            "lines": [{"source_line_id": "1", "quantity": qty, "unit_price": "10.00", "line_total": "10.00"}],
            "totals": {"net": "10.00", "tax": "2.10", "gross": "12.10"}
        }))
        .unwrap();
        order.lines[0].line_total = order.lines[0].quantity * order.lines[0].unit_price;
        IncomingOrder {
            external_id: ext.into(),
            raw: format!("{{\"id\":{ext},\"q\":\"{qty}\"}}"),
            version: Some("v1".into()),
            mapped: Ok(MappedOrder::new(order, disposition)),
        }
    }

    pub(crate) fn state_of(store: &Store, key: &str) -> String {
        store
            .lock_for_tests()
            .query_row(
                "SELECT state FROM orders WHERE order_key = ?1",
                [key],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn push_jobs(store: &Store, key: &str) -> Vec<String> {
        let conn = store.lock_for_tests();
        let mut stmt = conn
            .prepare("SELECT state FROM jobs WHERE order_key = ?1 AND kind = 'push'")
            .unwrap();
        stmt.query_map([key], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn seeing_an_order_twice_records_it_once() {
        let (_d, store) = temp_store();
        let o = incoming("1", Disposition::Push, "1");
        let r = store
            .ingest(
                "shop",
                "live",
                std::slice::from_ref(&o),
                Some(("live", "c1")),
            )
            .unwrap();
        assert_eq!(r.queued(), 1);
        let r = store
            .ingest("shop", "live", &[o], Some(("live", "c2")))
            .unwrap();
        assert_eq!(r.queued(), 0);
        assert_eq!(r.unchanged, 1);
        assert_eq!(push_jobs(&store, "shop:1"), vec!["pending"]);
        assert_eq!(store.cursor("shop", "live").unwrap().as_deref(), Some("c2"));
    }

    #[test]
    fn held_order_is_queued_when_it_becomes_pushable() {
        let (_d, store) = temp_store();
        let mut held = incoming("2", Disposition::Hold("payment started".into()), "1");
        if let Ok(m) = &mut held.mapped {
            m.order.payment = Some(crate::model::Payment {
                method: None,
                status: Some("started".into()),
            });
        }
        store.ingest("shop", "live", &[held], None).unwrap();
        assert_eq!(state_of(&store, "shop:2"), "held");
        assert!(push_jobs(&store, "shop:2").is_empty());
        let paid = incoming("2", Disposition::Push, "1");
        let r = store.ingest("shop", "live", &[paid], None).unwrap();
        assert_eq!(r.queued(), 1);
        assert_eq!(state_of(&store, "shop:2"), "queued");
    }

    /// Issue 12.2, SPEC §5.11: `skip` is final. A skipped order whose
    /// payment clears later is recorded, not queued, until `retry KEY`.
    #[test]
    fn a_skipped_order_stays_skipped_when_its_payment_clears() {
        let (_d, store) = temp_store();
        let held = incoming("5", Disposition::Hold("payment started".into()), "1");
        store.ingest("shop", "live", &[held], None).unwrap();
        assert_eq!(
            store.skip_order("shop:5", "sold by phone").unwrap(),
            Some(0)
        );
        let paid = incoming("5", Disposition::Push, "1");
        let r = store.ingest("shop", "live", &[paid], None).unwrap();
        assert_eq!(r.queued(), 0);
        assert_eq!(state_of(&store, "shop:5"), "skipped");
        assert!(push_jobs(&store, "shop:5").is_empty());
        // Seen again and again: still skipped.
        let paid = incoming("5", Disposition::Push, "2");
        store.ingest("shop", "live", &[paid], None).unwrap();
        assert_eq!(state_of(&store, "shop:5"), "skipped");
        // Only the operator's retry brings it back, with the latest content.
        assert_eq!(store.requeue_order("shop:5").unwrap(), 1);
        assert_eq!(state_of(&store, "shop:5"), "queued");
        assert_eq!(push_jobs(&store, "shop:5"), vec!["pending"]);
    }

    /// A full disk (SQLite's `max_page_count` gives the same SQLITE_FULL a
    /// full file system does): the error names the ledger file and what to
    /// do, not SQLite's words twice over; the page that did not fit left
    /// nothing behind, what was recorded before is kept, and the same page
    /// records once there is room again.
    #[test]
    fn a_full_disk_names_the_ledger_and_loses_nothing() {
        let (_d, store) = temp_store();
        store
            .ingest(
                "shop",
                "live",
                &[incoming("1", Disposition::Push, "1")],
                None,
            )
            .unwrap();
        {
            let conn = store.lock_for_tests();
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
                .unwrap();
        }
        let page: Vec<IncomingOrder> = (2..40)
            .map(|i| IncomingOrder {
                raw: "x".repeat(8_000),
                ..incoming(&i.to_string(), Disposition::Push, "1")
            })
            .collect();
        let err = store.ingest("shop", "live", &page, None).unwrap_err();
        let msg = format!("{err:#}");
        let path = store.path().unwrap().display().to_string();
        assert!(
            msg.contains(&format!("the disk holding {path} is full")),
            "{msg}"
        );
        assert!(
            msg.contains("The disk is full") && !msg.contains("Error code"),
            "{msg}"
        );
        assert_eq!(state_of(&store, "shop:1"), "queued");
        assert_eq!(store.order_state("shop:2").unwrap(), None);

        store
            .lock_for_tests()
            .execute_batch("PRAGMA max_page_count = 1073741823")
            .unwrap();
        store.ingest("shop", "live", &page, None).unwrap();
        for i in 1..40 {
            assert_eq!(state_of(&store, &format!("shop:{i}")), "queued");
        }
        assert_eq!(push_jobs(&store, "shop:39"), vec!["pending"]);
    }

    #[test]
    fn invalid_order_is_parked_and_others_flow() {
        let (_d, store) = temp_store();
        let bad = IncomingOrder {
            external_id: "3".into(),
            raw: "{}".into(),
            version: None,
            mapped: Err("line 7: quantity \"abc\" is not a decimal".into()),
        };
        let good = incoming("4", Disposition::Push, "1");
        let r = store.ingest("shop", "live", &[bad, good], None).unwrap();
        assert_eq!(r.queued(), 1);
        assert_eq!(push_jobs(&store, "shop:3"), vec!["parked"]);
        assert_eq!(push_jobs(&store, "shop:4"), vec!["pending"]);
    }

    #[test]
    fn change_after_push_is_recorded_not_queued() {
        let (_d, store) = temp_store();
        store
            .ingest(
                "shop",
                "live",
                &[incoming("5", Disposition::Push, "1")],
                None,
            )
            .unwrap();
        store
            .lock_for_tests()
            .execute(
                "UPDATE orders SET state = 'pushed', pushed_hash = content_hash WHERE order_key = 'shop:5'",
                [],
            )
            .unwrap();
        store
            .lock_for_tests()
            .execute("UPDATE jobs SET state = 'done'", [])
            .unwrap();
        let r = store
            .ingest(
                "shop",
                "live",
                &[incoming("5", Disposition::Push, "2")],
                None,
            )
            .unwrap();
        assert!(
            matches!(&r.notes[..], [OrderNote::ChangedAfterPush { what, .. }] if what.contains("lines changed"))
        );
        assert_eq!(push_jobs(&store, "shop:5"), vec!["done"]);
        assert_eq!(state_of(&store, "shop:5"), "pushed");
        // The same change seen again is not reported again.
        let r = store
            .ingest(
                "shop",
                "live",
                &[incoming("5", Disposition::Push, "2")],
                None,
            )
            .unwrap();
        assert!(r.notes.is_empty());
    }

    #[test]
    fn cancelled_before_push_is_never_pushed() {
        let (_d, store) = temp_store();
        store
            .ingest(
                "shop",
                "live",
                &[incoming("6", Disposition::Push, "1")],
                None,
            )
            .unwrap();
        store
            .ingest(
                "shop",
                "live",
                &[incoming(
                    "6",
                    Disposition::Cancel("state cancel".into()),
                    "1",
                )],
                None,
            )
            .unwrap();
        assert_eq!(state_of(&store, "shop:6"), "cancelled");
        assert_eq!(push_jobs(&store, "shop:6"), vec!["cancelled"]);
    }
}
