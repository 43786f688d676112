//! Durable jobs: push to the ERP, write "accepted" back, write "shipped" back.
//! Retry state lives in the row (attempts, next_attempt_at, last_error); a
//! lease (owner + deadline) makes sure only one process works on a job at a
//! time, so the daemon, `backfill` and `retry` can run together (guarantee 9).

use crate::outbox::state::{JobState, OrderState};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::sql::{Conn, Dialect, ToParam, Tx};
use super::{Store, event, now_ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Push,
    WriteAccepted,
    WriteShipped,
    /// Cancel in the ERP an order the source cancelled after the push.
    CancelInErp,
    /// Write back to the source a sale the ERP cancelled.
    WriteCancelled,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Push => "push",
            JobKind::WriteAccepted => "write_accepted",
            JobKind::WriteShipped => "write_shipped",
            JobKind::CancelInErp => "cancel_in_erp",
            JobKind::WriteCancelled => "write_cancelled",
        }
    }

    /// Whether the job talks to the ERP (else to the source).
    pub fn talks_to_erp(self) -> bool {
        matches!(self, JobKind::Push | JobKind::CancelInErp)
    }

    pub(crate) fn parse(s: &str) -> Option<JobKind> {
        match s {
            "push" => Some(JobKind::Push),
            "write_accepted" => Some(JobKind::WriteAccepted),
            "write_shipped" => Some(JobKind::WriteShipped),
            "cancel_in_erp" => Some(JobKind::CancelInErp),
            "write_cancelled" => Some(JobKind::WriteCancelled),
            _ => None,
        }
    }
}

/// A claimed job: ours until the lease runs out.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: i64,
    pub source: String,
    pub kind: JobKind,
    pub order_key: String,
    pub job_ref: String,
    /// Including this one.
    pub attempts: u32,
    pub payload: Option<String>,
    /// When the current run of transient failures began (ms), if one has.
    pub first_failed_at: Option<i64>,
    /// The content hash an earlier push attempt sent without learning the
    /// outcome (a timeout after the request went out). For a write-back job:
    /// its progress marker (`set_write_step`, [`crate::sources::WriteStep`]).
    pub sent_hash: Option<String>,
    /// An earlier attempt of this job was started (claimed) and may have
    /// written before it ended unknown: a write-back reads the remote first.
    /// `false` on a job's very first attempt, which may write directly.
    pub in_doubt: bool,
    /// Its order, when read together with the claim ([`Store::read_orders`]):
    /// the worker reads every claimed job's order in the claim's own ledger
    /// call, so a job goes to its remote without a ledger call of its own.
    /// `None`: not read yet; the job reads it itself.
    pub order: Option<Arc<OrderForJob>>,
}

impl Job {
    /// How long this job has been failing, as of `now_ms`.
    pub fn failing_for(&self, now_ms: i64) -> Duration {
        self.first_failed_at
            .map(|t| Duration::from_millis(now_ms.saturating_sub(t).max(0) as u64))
            .unwrap_or_default()
    }
}

/// An ERP line number for a source line (ERPs use numbers or ids: kept as text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineNumber {
    pub source_line_id: String,
    pub erp_line_number: String,
}

/// What the ERP answered to a push.
#[derive(Clone, Debug, PartialEq)]
pub struct ErpAccepted {
    pub erp_order_number: String,
    pub lines: Vec<LineNumber>,
    /// `true` when this call created the ERP order; `false` when the ERP
    /// already had one for the key (an earlier attempt made it, perhaps
    /// from an earlier version of the order).
    pub created: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShippedLine {
    /// Empty when the ERP knows only its own line (see `erp_line_number`):
    /// the ledger fills it in from the line numbers it recorded at the push.
    #[serde(default)]
    pub source_line_id: String,
    pub quantity: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_line_number: Option<String>,
}

/// What a shipment write-back needs to know about the order's other
/// shipments (see [`Store::shipment_progress`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ShipmentProgress {
    /// With this one, every goods line is shipped in full.
    pub completes_order: bool,
    /// Every tracking number of the order so far, this shipment's last.
    pub tracking_numbers: Vec<String>,
}

impl Default for ShipmentProgress {
    /// A write-back that is not about a shipment: nothing waits.
    fn default() -> Self {
        ShipmentProgress {
            completes_order: true,
            tracking_numbers: Vec::new(),
        }
    }
}

/// A shipment the ERP reported (the http contract's shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErpShipment {
    pub order_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_order_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_url: Option<String>,
    #[serde(default)]
    pub lines: Vec<ShippedLine>,
    /// The ERP's own identity of the shipment, when it has one (Tryton:
    /// `stock.shipment.out,ID`): two shipments of one day stay two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_shipment_id: Option<String>,
}

impl ErpShipment {
    /// Tells two shipments of one order apart: the ERP's shipment id, else
    /// the tracking number, else the ship time, else the shipment's content
    /// (never one literal for all, which would merge them).
    pub fn job_ref(&self) -> String {
        if let Some(id) = &self.erp_shipment_id {
            return format!("erp:{id}");
        }
        self.legacy_ref().unwrap_or_else(|| {
            let text = serde_json::to_string(&(&self.carrier, &self.lines)).unwrap_or_default();
            let digest = sha2::Sha256::digest(text.as_bytes());
            format!("content:{}", crate::model::hex(&digest[..8]))
        })
    }

    /// The identity ledgers recorded before shipments carried the ERP's id:
    /// a shipment already recorded under it is not recorded again.
    fn legacy_ref(&self) -> Option<String> {
        self.tracking_number
            .clone()
            .or_else(|| self.shipped_at.map(|t| t.to_rfc3339()))
    }
}

/// What a source takes of an ERP shipment, as its connector says: a
/// "shipped" write-back at all, a tracking number with it, and whether
/// that write-back, run again once done, adds a number that came later and
/// repeats nothing else (it reads the order first and writes only what the
/// order lacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uptake {
    pub shipped: bool,
    pub tracking: bool,
    pub tracking_later: bool,
}

impl Uptake {
    pub const ALL: Uptake = Uptake {
        shipped: true,
        tracking: true,
        tracking_later: false,
    };
    pub const NOTHING: Uptake = Uptake {
        shipped: false,
        tracking: false,
        tracking_later: false,
    };
}

/// What a shipment seen again with a new tracking number led to.
enum Late {
    Nothing,
    /// Its done write-back runs again to add the number: wake the source.
    Requeued,
    /// The source was told without it: WARN after the commit.
    Untold(Untold),
}

/// A tracking number the source was not told, for the WARN
/// [`Store::record_shipments_with`] logs after its commit.
struct Untold {
    order_key: String,
    source: String,
    tracking: String,
    text: String,
}

/// A shipment the ledger already has (same ERP shipment id), seen again
/// with a tracking number it did not have: the ERP's carrier label came
/// after the shipment was done (Tryton allows `create_shipping` and a
/// hand-written `shipping_reference` on a done shipment), or was changed.
/// The recorded shipment takes the number (its quantities stay as first
/// recorded). While its "shipped" write-back has not run, that write-back
/// carries it. Once it ran, a source whose write-back adds a number without
/// repeating the rest (`tracking_later`: Retailys) gets the same job run
/// again, never a second job: `shipment_progress` would count a second
/// job's lines twice. For any other source (or while the write-back runs)
/// the source was told without it, and an operator is told (event and
/// WARN): a second "shipped" could repeat the shipment there.
fn late_tracking(
    tx: &mut super::sql::Tx<'_>,
    source: &str,
    seen: &ErpShipment,
    takes: Uptake,
    now: i64,
) -> anyhow::Result<Late> {
    let (Some(shipment_id), Some(number)) = (&seen.erp_shipment_id, &seen.tracking_number) else {
        return Ok(Late::Nothing);
    };
    let Some(r) = tx.query_opt(
        "SELECT id, state, payload, COALESCE(lease_until, 0) FROM jobs
         WHERE order_key = ?1 AND kind = 'write_shipped' AND ref = ?2",
        &[&seen.order_key, &seen.job_ref()],
    )?
    else {
        return Ok(Late::Nothing);
    };
    let (id, state, payload, lease_until): (i64, JobState, Option<String>, i64) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let Some(mut recorded) = payload.and_then(|p| serde_json::from_str::<ErpShipment>(&p).ok())
    else {
        return Ok(Late::Nothing);
    };
    if recorded.tracking_number.as_deref() == Some(number.as_str()) {
        return Ok(Late::Nothing);
    }
    let before = recorded.tracking_number.replace(number.clone());
    if seen.tracking_url.is_some() {
        recorded.tracking_url = seen.tracking_url.clone();
    }
    if recorded.carrier.is_none() {
        recorded.carrier = seen.carrier.clone();
    }
    tx.exec(
        "UPDATE jobs SET payload = ?2, updated_at = ?3 WHERE id = ?1",
        &[&id, &serde_json::to_string(&recorded)?, &now],
    )?;
    let was = match &before {
        Some(b) => format!("tracking {b}"),
        None => "no tracking number".to_string(),
    };
    let not_run = match state {
        JobState::Waiting | JobState::Parked => true,
        JobState::Pending => lease_until <= now,
        JobState::Done | JobState::Cancelled => false,
    };
    let (detail, late) = if !takes.shipped || !takes.tracking {
        (
            format!(
                "{shipment_id}: tracking {number} came later (was {was}; the source takes no tracking number: recorded here only)"
            ),
            Late::Nothing,
        )
    } else if not_run {
        (
            format!(
                "{shipment_id}: tracking {number} came later (was {was}); the shipped write-back, not run yet, carries it"
            ),
            Late::Nothing,
        )
    } else if takes.tracking_later && state == JobState::Done {
        tx.exec(
            "UPDATE jobs SET state = 'pending', next_attempt_at = ?2, last_error = NULL, updated_at = ?2
             WHERE id = ?1 AND state = 'done'",
            &[&id, &now],
        )?;
        (
            format!(
                "{shipment_id}: tracking {number} came later (was {was}); the shipped write-back runs again to add it (it writes only what the order lacks)"
            ),
            Late::Requeued,
        )
    } else {
        let text = format!(
            "the ERP's shipment {shipment_id} of order {} got tracking {number} after {source} was told it shipped with {was}; {source} was not told the new number (a second shipped write-back could repeat the shipment there): give it to the shop by hand",
            seen.order_key
        );
        (
            text.clone(),
            Late::Untold(Untold {
                order_key: seen.order_key.clone(),
                source: source.to_string(),
                tracking: number.clone(),
                text,
            }),
        )
    };
    super::event(tx, &seen.order_key, now, "shipment", &detail)?;
    Ok(late)
}

/// What a job needs to know about its order.
#[derive(Clone, Debug)]
pub struct OrderForJob {
    pub state: OrderState,
    /// The mapped order; `None` when it could not be mapped, or when not
    /// asked for ([`Store::order_for`]).
    pub canonical_json: Option<String>,
    pub content_hash: String,
    pub external_id: String,
    pub erp_order_number: Option<String>,
    pub note: Option<String>,
    pub lines: Vec<LineNumber>,
}

/// Which jobs a worker may take.
#[derive(Clone, Copy, Debug)]
pub enum ClaimFilter<'a> {
    All,
    /// Only these orders (a backfill run works on what it recorded).
    Orders(&'a [String]),
    /// Only jobs that talk to this remote: the daemon's worker keeps the
    /// source's slots for write-backs and the ERP's for pushes, so pushes
    /// waiting on the ERP never hold a slot a write-back could use.
    Talking(Remote),
}

/// The remote a job talks to ([`JobKind::talks_to_erp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    Erp,
    Source,
}

impl ClaimFilter<'_> {
    /// Which claim statement: 0 any kind, 1 the ERP's, 2 the source's.
    pub(crate) fn class(&self) -> usize {
        match self {
            ClaimFilter::Talking(Remote::Erp) => 1,
            ClaimFilter::Talking(Remote::Source) => 2,
            _ => 0,
        }
    }
}

/// This process's identity for leases: host, pid and a random nonce.
pub fn lease_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn attempt_row(
    tx: &mut Tx<'_>,
    job: &Job,
    outcome: &str,
    error: Option<&str>,
    now: i64,
) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO job_attempts (job_id, attempt, at, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5)",
        &[&job.id, &job.attempts, &now, &outcome, &error],
    )?;
    Ok(())
}

/// A job's successful end, to be settled with others in one transaction
/// ([`Store::finish_many`]).
#[derive(Clone, Debug)]
pub enum Finish {
    /// The ERP accepted the order (see [`Store::finish_push`]).
    Pushed {
        job: Job,
        accepted: ErpAccepted,
        hash: String,
        write_back: bool,
    },
    /// A write-back (or a push not needed) is done (see [`Store::finish_job`]).
    Done { job: Job, detail: String },
}

fn finish_push_in(
    tx: &mut Tx<'_>,
    job: &Job,
    owner: &str,
    accepted: &ErpAccepted,
    pushed_hash: &str,
    write_back: bool,
) -> anyhow::Result<bool> {
    let now = now_ms();
    if !settle_done(tx, job, owner, now)? {
        return Ok(false);
    }
    let new_state = if write_back {
        OrderState::Pushed
    } else {
        OrderState::Accepted
    };
    // The ERP already had an order for this key, and an earlier attempt
    // whose outcome we never learned sent another version: what the ERP
    // holds is that version, not this one (issue 12.3). Record that, and
    // flag the difference for an operator instead of claiming otherwise.
    let earlier = job
        .sent_hash
        .as_deref()
        .filter(|sent| !accepted.created && *sent != pushed_hash);
    let holds = earlier.unwrap_or(pushed_hash);
    // The source cancelled the order while this push was under way: the
    // ERP has it now, so the cancel follows it there (never lost).
    let cancelled_meanwhile: Option<Option<String>> = tx
        .query_opt(
            "SELECT note FROM orders WHERE order_key = ?1 AND state = 'cancelled'",
            &[&job.order_key],
        )?
        .map(|r| r.get(0))
        .transpose()?;
    tx.exec(
                "UPDATE orders SET state = CASE WHEN state IN ('queued', 'held', 'invalid', 'cancelled') THEN ?2 ELSE state END,
                                   erp_order_number = ?3, pushed_at = ?4, pushed_hash = ?5, updated_at = ?4,
                                   accepted_at = CASE WHEN ?6 THEN accepted_at ELSE ?4 END,
                                   changed_after_push_at = CASE WHEN ?7 THEN ?4 ELSE changed_after_push_at END
                 WHERE order_key = ?1",
                &[
                    &job.order_key,
                    &new_state,
                    &accepted.erp_order_number,
                    &now,
                    &holds,
                    &write_back,
                    &earlier.is_some(),
                ],
            )?;
    if earlier.is_some() {
        event(
            tx,
            &job.order_key,
            now,
            "changed_after_push",
            "the ERP already held this order from an earlier attempt, made from an earlier version; the source changed since: compare them by hand",
        )?;
    }
    for line in &accepted.lines {
        tx.exec(
                    "INSERT INTO order_lines (order_key, source_line_id, erp_line_number) VALUES (?1, ?2, ?3)
                     ON CONFLICT(order_key, source_line_id) DO UPDATE SET erp_line_number = excluded.erp_line_number",
                    &[&job.order_key, &line.source_line_id, &line.erp_line_number],
                )?;
    }
    if let Some(note) = &cancelled_meanwhile {
        let reason = note.as_deref().unwrap_or("cancelled at the source");
        super::cancel::queue_erp_cancel(tx, &job.source, &job.order_key, reason, now)?;
    } else if write_back {
        tx.exec(
                    "INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, created_at, updated_at)
                     VALUES (?1, 'write_accepted', ?2, '', 'pending', 0, ?3, ?3, ?3)
                     ON CONFLICT(order_key, kind, ref) DO NOTHING",
                    &[&job.source, &job.order_key, &now],
                )?;
    } else {
        release_waiting(tx, &job.order_key, now)?;
        complete_if_shipped_without_write_back(tx, &job.order_key, now)?;
    }
    attempt_row(tx, job, "done", None, now)?;
    event(
        tx,
        &job.order_key,
        now,
        "pushed",
        &format!("ERP order {}", accepted.erp_order_number),
    )?;
    Ok(true)
}

/// Marks the job done if it is still this claim's (the fence).
fn settle_done(tx: &mut Tx<'_>, job: &Job, owner: &str, now: i64) -> anyhow::Result<bool> {
    settle(
        tx,
        job,
        owner,
        now,
        "state = 'done', last_error = NULL",
        &[],
    )
}

/// When an accepted order (`?1` its key) is complete at once: the ERP
/// shipped it already and no "shipped" write-back is left to send (a source
/// that takes none; a 'done' write_shipped row is only a marker). The one
/// statement of this rule, in SQL, for each UPDATE that applies it.
macro_rules! shipped_nothing_to_send {
    () => {
        "shipped_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE order_key = ?1 AND kind = 'write_shipped'
                           AND state != 'done')"
    };
}

fn finish_job_in(tx: &mut Tx<'_>, job: &Job, owner: &str, detail: &str) -> anyhow::Result<bool> {
    let now = now_ms();
    if !settle_done(tx, job, owner, now)? {
        return Ok(false);
    }
    match job.kind {
        JobKind::Push => {}
        JobKind::WriteAccepted => {
            release_waiting(tx, &job.order_key, now)?;
            // Shipments to write back now (those just released among them;
            // a 'done' write_shipped row without a write-back is only a
            // marker, see record_shipments_with: nothing left to send).
            let shipped = tx.value::<i64>(
                "SELECT count(*) FROM jobs WHERE order_key = ?1 AND kind = 'write_shipped'
                         AND state != 'done'",
                &[&job.order_key],
            )? > 0;
            if shipped {
                tx.exec(
                    "UPDATE orders SET state = CASE WHEN state = 'pushed' THEN 'shipped' ELSE state END,
                                       accepted_at = ?2, updated_at = ?2 WHERE order_key = ?1",
                    &[&job.order_key, &now],
                )?;
            } else {
                // Accepted, and complete at once by the rule of
                // `complete_if_shipped_without_write_back`, in the same
                // statement (one fewer per order).
                tx.exec(
                    concat!(
                        "UPDATE orders SET
                        state = CASE WHEN state IN ('pushed', 'accepted') AND ",
                        shipped_nothing_to_send!(),
                        " THEN 'completed'
                                     WHEN state = 'pushed' THEN 'accepted' ELSE state END,
                        completed_at = CASE WHEN state IN ('pushed', 'accepted') AND ",
                        shipped_nothing_to_send!(),
                        " THEN ?2 ELSE completed_at END,
                        accepted_at = ?2, updated_at = ?2
                     WHERE order_key = ?1"
                    ),
                    &[&job.order_key, &now],
                )?;
            }
        }
        JobKind::CancelInErp => super::cancel::erp_cancel_done(tx, &job.order_key, now)?,
        JobKind::WriteCancelled => {}
        JobKind::WriteShipped => {
            let open: i64 = tx.value(
                "SELECT count(*) FROM jobs WHERE order_key = ?1 AND kind = 'write_shipped'
                         AND state IN ('pending', 'waiting')",
                &[&job.order_key],
            )?;
            if open == 0 {
                tx.exec(
                            "UPDATE orders SET state = 'completed', completed_at = ?2, updated_at = ?2 WHERE order_key = ?1",
                            &[&job.order_key, &now],
                        )?;
            }
        }
    }
    attempt_row(tx, job, "done", None, now)?;
    event(tx, &job.order_key, now, job.kind.as_str(), detail)?;
    Ok(true)
}

/// Ends our lease on a job with a new state. False when the lease is no
/// longer ours: it expired and another process took the job, or (the
/// attempt number is the claim's fencing token) this very process claimed
/// it again since. `sql_set` numbers its own parameters from `?5`.
fn settle(
    tx: &mut Tx<'_>,
    job: &Job,
    owner: &str,
    now: i64,
    sql_set: &str,
    args: &[&dyn ToParam],
) -> anyhow::Result<bool> {
    let sql = format!(
        "UPDATE jobs SET {sql_set}, lease_owner = NULL, lease_until = NULL, updated_at = ?1
         WHERE id = ?2 AND lease_owner = ?3 AND attempts = ?4"
    );
    let mut all: Vec<&dyn ToParam> = vec![&now, &job.id, &owner, &job.attempts];
    all.extend_from_slice(args);
    Ok(tx.exec(&sql, &all)? == 1)
}

/// Makes the write-backs that waited for the accepted one runnable: its
/// order's shipments, and a cancel write-back (see `record_cancellations`).
/// One statement: they are found by the order's key and kind.
fn release_waiting(tx: &mut Tx<'_>, key: &str, now: i64) -> anyhow::Result<()> {
    tx.exec(
        "UPDATE jobs SET state = 'pending', next_attempt_at = ?2, updated_at = ?2
         WHERE order_key = ?1 AND kind IN ('write_cancelled', 'write_shipped') AND state = 'waiting'",
        &[&key, &now],
    )?;
    Ok(())
}

/// For sources that take no "shipped" write-back: an order the ERP already
/// shipped is complete as soon as it is accepted (nothing is left to send).
fn complete_if_shipped_without_write_back(
    tx: &mut Tx<'_>,
    key: &str,
    now: i64,
) -> anyhow::Result<usize> {
    tx.exec(
        concat!(
            "UPDATE orders SET state = 'completed', completed_at = ?2, updated_at = ?2
         WHERE order_key = ?1 AND state = 'accepted' AND ",
            shipped_nothing_to_send!()
        ),
        &[&key, &now],
    )
}

/// The `payload` of the done shipment write-backs of an order before job `job_id`.
fn earlier_payloads(tx: &mut Tx<'_>, order_key: &str, job_id: i64) -> anyhow::Result<Vec<String>> {
    let rows = tx.query(
        "SELECT payload FROM jobs WHERE order_key = ?1 AND kind = 'write_shipped'
           AND state = 'done' AND id < ?2 ORDER BY id",
        &[&order_key, &job_id],
    )?;
    let mut out = Vec::new();
    for r in rows {
        if let Some(p) = r.get::<Option<String>>(0)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Due jobs of a source (`?1`) at `?2`, earliest first, at most `?3`,
/// walking `$index`, of the kinds `$kinds` allows.
macro_rules! sqlite_claim {
    ($index:literal, $kinds:literal) => {
        concat!(
            "SELECT id, kind, order_key, ref, attempts, payload, first_failed_at, sent_hash, started_at
     FROM jobs j INDEXED BY ",
            $index,
            "
     WHERE source = ?1 AND state = 'pending' AND next_attempt_at <= ?2",
            $kinds,
            "
       AND (lease_until IS NULL OR lease_until < ?2)
       -- backfill: only its own orders, chosen in SQL through a temp table
       -- filled once per key set (no scan of other orders' jobs inside the
       -- write transaction).
       AND (?4 = 0 OR order_key IN (SELECT order_key FROM temp.claim_keys))
       -- Shipments of one order are written back one at a time, in
       -- the order the ERP reported them: each knows what the
       -- earlier ones delivered (see `shipped_before`).
       AND NOT (kind = 'write_shipped' AND EXISTS (
           SELECT 1 FROM jobs p WHERE p.order_key = j.order_key
              AND p.kind = 'write_shipped' AND p.id < j.id
              AND p.state IN ('pending', 'waiting', 'parked')))
     ORDER BY next_attempt_at LIMIT ?3"
        )
    };
}

/// The claim statement of each class of kinds ([`ClaimFilter::class`]):
/// any kind; the worker's pushes (the ERP's kinds); its write-backs (the
/// source's). Each class walks its own index (SQLite migration 6), so a
/// claim of write-backs never steps over the backlog of pending pushes.
const CLAIM_SQL: [&str; 3] = [
    sqlite_claim!("jobs_due", ""),
    sqlite_claim!("jobs_due_erp", " AND kind IN ('push', 'cancel_in_erp')"),
    sqlite_claim!(
        "jobs_due_source",
        " AND kind NOT IN ('push', 'cancel_in_erp')"
    ),
];

/// When the next job of a class that nobody holds is due: `$index` the
/// index to walk (SQLite's planner keeps `jobs_due` unless told), `$kinds`
/// the class's kinds, as in the claim statements.
macro_rules! next_due {
    ($index:literal, $kinds:literal) => {
        concat!(
            "SELECT next_attempt_at FROM jobs ",
            $index,
            " WHERE source = ?1 AND state = 'pending'",
            $kinds,
            " AND (lease_until IS NULL OR lease_until < ?2) ORDER BY next_attempt_at LIMIT 1"
        )
    };
}

/// [`Store::next_due_ms`]'s statement by dialect (SQLite, PostgreSQL) and
/// class ([`ClaimFilter::class`]).
const NEXT_DUE_SQL: [[&str; 3]; 2] = [
    [
        next_due!("INDEXED BY jobs_due", ""),
        next_due!(
            "INDEXED BY jobs_due_erp",
            " AND kind IN ('push', 'cancel_in_erp')"
        ),
        next_due!(
            "INDEXED BY jobs_due_source",
            " AND kind NOT IN ('push', 'cancel_in_erp')"
        ),
    ],
    [
        next_due!("", ""),
        next_due!("", " AND kind IN ('push', 'cancel_in_erp')"),
        next_due!("", " AND kind NOT IN ('push', 'cancel_in_erp')"),
    ],
];

/// One claim on SQLite inside the caller's transaction: picks up to
/// `limit` due jobs the filter allows and leases them.
fn claim_sqlite(
    tx: &rusqlite::Transaction<'_>,
    source: &str,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
    filter: ClaimFilter<'_>,
) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    {
        let mut stmt = tx.prepare_cached(CLAIM_SQL[filter.class()])?;
        let filtered = matches!(filter, ClaimFilter::Orders(_));
        let rows = stmt.query_map(
            rusqlite::params![source, now, limit as i64, filtered],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            },
        )?;
        for row in rows {
            let (
                id,
                kind,
                order_key,
                job_ref,
                attempts,
                payload,
                first_failed_at,
                sent_hash,
                started_at,
            ) = row?;
            let Some(kind) = JobKind::parse(&kind) else {
                continue;
            };
            jobs.push(Job {
                id,
                source: source.to_string(),
                kind,
                order_key,
                job_ref,
                attempts: attempts + 1,
                payload,
                first_failed_at,
                sent_hash,
                in_doubt: started_at.is_some(),
                order: None,
            });
            if jobs.len() == limit {
                break;
            }
        }
    }
    let mut stmt = tx.prepare_cached(
        "UPDATE jobs SET lease_owner = ?2, lease_until = ?3, attempts = attempts + 1, updated_at = ?4,
                started_at = COALESCE(started_at, ?4)
         WHERE id = ?1",
    )?;
    for job in &jobs {
        // The attempt counts from the claim: a job that crashes the
        // process every time still runs out of attempts and is parked.
        stmt.execute(rusqlite::params![job.id, owner, lease_until, now])?;
    }
    Ok(jobs)
}

impl Store {
    /// Leases up to `limit` due jobs of `source`. On PostgreSQL the claim is
    /// one statement with `FOR UPDATE SKIP LOCKED` on the database's clock
    /// (several nodes claim at once, see `pg::jobs`); on SQLite it is one
    /// `IMMEDIATE` transaction.
    pub fn claim(
        &self,
        source: &str,
        owner: &str,
        lease: Duration,
        limit: usize,
        filter: ClaimFilter<'_>,
    ) -> anyhow::Result<Vec<Job>> {
        self.claim_each(source, owner, lease, &[(filter, limit)])
    }

    /// Claims for several filters at once (the worker's pushes and
    /// write-backs, each up to its free slots), each job with its order
    /// read ([`Job::order`]; see [`job_order_in`]): on SQLite all in one
    /// transaction. At most one of them may be `ClaimFilter::Orders`.
    pub fn claim_each(
        &self,
        source: &str,
        owner: &str,
        lease: Duration,
        wanted: &[(ClaimFilter<'_>, usize)],
    ) -> anyhow::Result<Vec<Job>> {
        let wanted: Vec<&(ClaimFilter<'_>, usize)> =
            wanted.iter().filter(|(_, limit)| *limit > 0).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut guard = self.lock();
        let conn = match &mut *guard {
            Conn::Sqlite(conn) => conn,
            Conn::Postgres(_) => {
                drop(guard);
                // One transaction per filter. When a later one fails, the
                // claim fails as a whole, though an earlier one committed:
                // the worker then frees, at its next claim that works, every
                // lease of its own on a job it is not running
                // (`release_unrun`), which also covers a commit whose answer
                // was lost.
                let mut jobs = Vec::new();
                for (filter, limit) in wanted {
                    jobs.extend(self.pg_claim(source, owner, lease, *limit, *filter)?);
                }
                if let Err(e) = self.read_orders(&mut jobs) {
                    tracing::debug!(source, error = %format!("{e:#}"), "could not read the claimed jobs' orders together; each job reads its own");
                }
                return Ok(jobs);
            }
        };
        for (filter, _) in &wanted {
            if let ClaimFilter::Orders(keys) = filter {
                self.fill_claim_keys(conn, keys)?;
            }
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let lease_until =
            now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2));
        let mut jobs = Vec::new();
        for (filter, limit) in wanted {
            jobs.extend(claim_sqlite(
                &tx,
                source,
                owner,
                now,
                lease_until,
                *limit,
                *filter,
            )?);
        }
        // Their orders in the same transaction: a job then goes to its
        // remote without waiting on the ledger again. One that cannot be
        // read here is read by its job (which reports what fails).
        for job in &mut jobs {
            match job_order_in(&mut Tx::Sqlite(&tx), Dialect::Sqlite, job) {
                Ok(order) => job.order = order.map(Arc::new),
                Err(e) => {
                    tracing::debug!(source, order = %job.order_key, error = %format!("{e:#}"), "could not read a claimed job's order with its claim; the job reads it")
                }
            }
        }
        tx.commit()?;
        Ok(jobs)
    }

    /// An order as a job sees it, with its mapped payload.
    pub fn order_for_job(&self, order_key: &str) -> anyhow::Result<Option<OrderForJob>> {
        self.order_for(order_key, true)
    }

    /// An order as a job sees it; its mapped payload (`canonical_json`) only
    /// when `payload` (a push needs it, a write-back or cancel does not,
    /// and it is most of the order's bytes).
    pub fn order_for(&self, order_key: &str, payload: bool) -> anyhow::Result<Option<OrderForJob>> {
        let mut conn = self.lock();
        let dialect = conn.dialect();
        conn.read(|tx| order_in(tx, dialect, order_key, payload, true))
    }

    /// Reads each job's order into [`Job::order`], all in one read
    /// transaction. A job whose order is not in the ledger keeps `None` and
    /// finds that out itself.
    pub fn read_orders(&self, jobs: &mut [Job]) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let dialect = conn.dialect();
        let orders = conn.read(|tx| {
            jobs.iter()
                .map(|j| job_order_in(tx, dialect, j))
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        for (job, order) in jobs.iter_mut().zip(orders) {
            job.order = order.map(Arc::new);
        }
        Ok(())
    }

    /// The ERP accepted the order: record its number and line numbers and
    /// queue the accepted write-back, all in one transaction. (The worker
    /// settles through [`Store::finish_many`]; this is one item of it.)
    #[cfg(test)]
    pub fn finish_push(
        &self,
        job: &Job,
        owner: &str,
        accepted: &ErpAccepted,
        pushed_hash: &str,
        write_back: bool,
    ) -> anyhow::Result<bool> {
        self.lock()
            .write(|tx| finish_push_in(tx, job, owner, accepted, pushed_hash, write_back))
    }

    /// A write-back (or a push that turned out not to be needed) is done.
    #[cfg(test)]
    pub fn finish_job(&self, job: &Job, owner: &str, detail: &str) -> anyhow::Result<bool> {
        self.lock()
            .write(|tx| finish_job_in(tx, job, owner, detail))
    }

    /// Several jobs' successful ends in one transaction (issue 13.5): what
    /// [`Store::finish_push`] and [`Store::finish_job`] each do, in order,
    /// with one commit. Per item: whether it was still this claim's.
    pub fn finish_many(&self, owner: &str, items: &[Finish]) -> anyhow::Result<Vec<bool>> {
        self.lock().write(|tx| {
            items
                .iter()
                .map(|item| match item {
                    Finish::Pushed {
                        job,
                        accepted,
                        hash,
                        write_back,
                    } => finish_push_in(tx, job, owner, accepted, hash, *write_back),
                    Finish::Done { job, detail } => finish_job_in(tx, job, owner, detail),
                })
                .collect()
        })
    }

    /// Makes `temp.claim_keys` (this connection's own) hold exactly `keys`,
    /// refilling it only when the key set changed since the last claim.
    fn fill_claim_keys(&self, conn: &rusqlite::Connection, keys: &[String]) -> anyhow::Result<()> {
        let fingerprint = (
            keys.len(),
            keys.first().cloned().unwrap_or_default(),
            keys.last().cloned().unwrap_or_default(),
        );
        let mut memo = self.claim_keys.lock().unwrap_or_else(|p| p.into_inner());
        if memo.as_ref() == Some(&fingerprint) {
            return Ok(());
        }
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS claim_keys (order_key TEXT PRIMARY KEY);
             DELETE FROM temp.claim_keys;",
        )?;
        let mut insert =
            conn.prepare_cached("INSERT OR IGNORE INTO temp.claim_keys (order_key) VALUES (?1)")?;
        for k in keys {
            insert.execute([k])?;
        }
        *memo = Some(fingerprint);
        Ok(())
    }

    /// A remote answered again: jobs of this source and class (pushes, which
    /// talk to the ERP, or write-backs, which talk to the source) that wait
    /// out a backoff after transient failures are due now, so an outage
    /// ends for every job when it ends for one (SPEC: converge soon after).
    /// The remote's own pause (`Retry-After`) still holds every request.
    pub fn pull_forward(&self, source: &str, pushes: bool) -> anyhow::Result<usize> {
        let now = now_ms();
        self.lock().auto(|tx| {
            tx.exec(
                "UPDATE jobs SET next_attempt_at = ?2
                 WHERE source = ?1 AND state = 'pending' AND next_attempt_at > ?2
                   AND first_failed_at IS NOT NULL AND (lease_until IS NULL OR lease_until < ?2)
                   AND ((?3 AND kind = 'push') OR (NOT ?3 AND kind != 'push'))",
                &[&source, &now, &pushes],
            )
        })
    }

    /// Extends the lease of a job we are still running. `false` when the job
    /// is no longer ours (its lease lapsed and another runner took it): the
    /// caller must stop and leave the result to that runner.
    pub fn renew_lease(&self, job: &Job, owner: &str, lease: Duration) -> anyhow::Result<bool> {
        if self.on_postgres() {
            return self.pg_renew_lease(job, owner, lease);
        }
        let until =
            now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2));
        Ok(self.lock().auto(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_until = ?3
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?4 AND state = 'pending'",
                &[&job.id, &owner, &until, &job.attempts],
            )
        })? == 1)
    }

    /// Notes the content a push attempt sent when its outcome is unknown
    /// (the first such attempt wins: that is what the ERP may hold).
    pub fn remember_sent(&self, job: &Job, owner: &str, hash: &str) -> anyhow::Result<()> {
        self.lock().auto(|tx| {
            tx.exec(
                "UPDATE jobs SET sent_hash = COALESCE(sent_hash, ?3)
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?4",
                &[&job.id, &owner, &hash, &job.attempts],
            )
        })?;
        Ok(())
    }

    /// Stores a write-back job's progress marker (in `sent_hash`, which only
    /// push jobs use otherwise). False when the lease is no longer `owner`'s.
    pub fn set_write_step(
        &self,
        job: &Job,
        owner: &str,
        step: Option<&str>,
    ) -> anyhow::Result<bool> {
        Ok(self.lock().auto(|tx| {
            tx.exec(
                "UPDATE jobs SET sent_hash = ?3
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?4 AND kind != 'push'",
                &[&job.id, &owner, &step, &job.attempts],
            )
        })? == 1)
    }

    /// A retryable failure: try again at `next_at_ms`.
    pub fn retry_later(
        &self,
        job: &Job,
        owner: &str,
        error: &str,
        next_at_ms: i64,
    ) -> anyhow::Result<bool> {
        // The last line of defence: nothing a remote echoed of our secrets is stored.
        let error = crate::secret::redact(error);
        let error = error.as_str();
        self.lock().write(|tx| {
            let now = now_ms();
            if !settle(
                tx,
                job,
                owner,
                now,
                "last_error = ?5, next_attempt_at = ?6, first_failed_at = COALESCE(first_failed_at, ?1)",
                &[&error, &next_at_ms],
            )? {
                return Ok(false);
            }
            attempt_row(tx, job, "retry", Some(error), now)?;
            Ok(true)
        })
    }

    /// A permanent failure, or attempts exhausted: only an operator retries it.
    pub fn park(&self, job: &Job, owner: &str, reason: &str) -> anyhow::Result<bool> {
        let reason = crate::secret::redact(reason);
        let reason = reason.as_str();
        self.lock().write(|tx| {
            let now = now_ms();
            if !settle(
                tx,
                job,
                owner,
                now,
                "state = 'parked', last_error = ?5, parked_reason = ?5, parked_at = ?1",
                &[&reason],
            )? {
                return Ok(false);
            }
            attempt_row(tx, job, "parked", Some(reason), now)?;
            if job.kind == JobKind::CancelInErp {
                super::cancel::erp_cancel_refused(tx, &job.order_key, now)?;
            }
            event(
                tx,
                &job.order_key,
                now,
                "parked",
                &format!("{}: {reason}", job.kind.as_str()),
            )?;
            Ok(true)
        })
    }

    /// Records shipments the ERP reported and the shipments cursor in one
    /// transaction; queues a "shipped" write-back per new shipment of an order
    /// we know. Returns the sources that got new work.
    pub fn record_shipments(
        &self,
        shipments: &[ErpShipment],
        cursor: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        self.record_shipments_with(shipments, cursor, |_| Uptake::ALL)
    }

    /// Like [`Store::record_shipments`]; `uptake(source).shipped` says
    /// whether that source takes a "shipped" write-back at all. For one that
    /// does not (Vinou), the shipment is recorded as an event, the job row is
    /// written already `done` (it dedupes repeats of the same shipment) and
    /// the order completes once it is accepted.
    pub fn record_shipments_with(
        &self,
        shipments: &[ErpShipment],
        cursor: &str,
        uptake: impl Fn(&str) -> Uptake + Sync,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let fence = self.fence_for(super::fence::ERP_FEED, Some("live"))?;
        let result = self.lock().write(|tx| {
            if let Some(lease) = &fence {
                super::fence::check(tx, lease)?;
            }
            let now = now_ms();
            let mut queued = Vec::new();
            let mut untold = Vec::new();
            for s in shipments {
                let Some(r) = tx.query_opt(
                    "SELECT source, state FROM orders WHERE order_key = ?1",
                    &[&s.order_key],
                )?
                else {
                    continue;
                };
                let (source, state): (String, OrderState) = (r.get(0)?, r.get(1)?);
                if s.erp_shipment_id.is_some()
                    && let Some(legacy) = s.legacy_ref()
                    && tx
                        .query_opt(
                            "SELECT 1 FROM jobs WHERE order_key = ?1 AND kind = 'write_shipped' AND ref = ?2",
                            &[&s.order_key, &legacy],
                        )?
                        .is_some()
                {
                    continue;
                }
                let mut s = s.clone();
                for line in s.lines.iter_mut().filter(|l| l.source_line_id.is_empty()) {
                    if let Some(erp_line) = &line.erp_line_number
                        && let Some(r) = tx.query_opt(
                            "SELECT source_line_id FROM order_lines WHERE order_key = ?1 AND erp_line_number = ?2",
                            &[&s.order_key, &erp_line],
                        )?
                    {
                        line.source_line_id = r.get(0)?;
                    }
                }
                // A line the ledger cannot place keeps its empty source id: the
                // write-back then refuses it by name (parked), never delivering
                // the whole order in its place.
                let s = &s;
                let ready = matches!(
                    state,
                    OrderState::Accepted | OrderState::Shipped | OrderState::Completed
                );
                let takes = uptake(&source);
                let writes = takes.shipped;
                let job_state = match (writes, ready) {
                    (false, _) => JobState::Done,
                    (true, true) => JobState::Pending,
                    (true, false) => JobState::Waiting,
                };
                let payload = serde_json::to_string(s)?;
                let inserted = tx.exec(
                    "INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, payload, created_at, updated_at)
                     VALUES (?1, 'write_shipped', ?2, ?3, ?4, 0, ?5, ?6, ?5, ?5)
                     ON CONFLICT(order_key, kind, ref) DO NOTHING",
                    &[&source, &s.order_key, &s.job_ref(), &job_state, &now, &payload],
                )?;
                if inserted == 1 {
                    let update = if writes {
                        "UPDATE orders SET shipped_at = ?2, updated_at = ?2,
                           state = CASE WHEN state IN ('accepted', 'completed') THEN 'shipped' ELSE state END
                         WHERE order_key = ?1"
                    } else {
                        "UPDATE orders SET shipped_at = ?2, updated_at = ?2,
                           completed_at = CASE WHEN state IN ('accepted', 'shipped', 'completed') THEN ?2 ELSE completed_at END,
                           state = CASE WHEN state IN ('accepted', 'shipped', 'completed') THEN 'completed' ELSE state END
                         WHERE order_key = ?1"
                    };
                    tx.exec(update, &[&s.order_key, &now])?;
                    event(
                        tx,
                        &s.order_key,
                        now,
                        "shipment",
                        &format!(
                            "carrier {}, tracking {}{}",
                            s.carrier.as_deref().unwrap_or("-"),
                            s.tracking_number.as_deref().unwrap_or("-"),
                            if writes {
                                ""
                            } else {
                                " (the source takes no shipped write-back: recorded here only)"
                            }
                        ),
                    )?;
                    if writes {
                        queued.push((source, s.order_key.clone()));
                    }
                } else {
                    match late_tracking(tx, &source, s, takes, now)? {
                        Late::Nothing => {}
                        Late::Requeued => queued.push((source, s.order_key.clone())),
                        Late::Untold(said) => untold.push(said),
                    }
                }
            }
            tx.exec(
                "INSERT INTO cursors (source, scope, value, updated_at) VALUES ('_erp', 'shipments', ?1, ?2)
                 ON CONFLICT(source, scope) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&cursor, &now],
            )?;
            Ok((queued, untold))
        });
        let (queued, untold) = self.forget_lost(super::fence::ERP_FEED, result)?;
        for said in untold {
            tracing::warn!(
                order_key = %said.order_key,
                source = %said.source,
                tracking = %said.tracking,
                "{}",
                said.text
            );
        }
        Ok(queued)
    }

    /// `retry KEY`: parked jobs of one order go back in the queue. A skipped
    /// order is un-skipped: the jobs the skip stopped are due again and the
    /// order is back where they leave it (queued before its push, else pushed).
    pub fn requeue_order(&self, order_key: &str) -> anyhow::Result<usize> {
        self.lock().write(|tx| {
            let now = now_ms();
            let skipped = tx.exec(
                "UPDATE orders SET state = CASE WHEN erp_order_number IS NULL THEN 'queued' ELSE 'pushed' END,
                                   note = NULL, updated_at = ?2
                 WHERE order_key = ?1 AND state = 'skipped'",
                &[&order_key, &now],
            )?;
            let mut revived = 0;
            if skipped > 0 {
                // A skipped order that never had a push job (held when skipped)
                // gets one now: the operator asked for it.
                tx.exec(
                    "INSERT INTO jobs (source, kind, order_key, ref, state, attempts, next_attempt_at, created_at, updated_at)
                     SELECT source, 'push', order_key, '', 'cancelled', 0, ?2, ?2, ?2 FROM orders
                     WHERE order_key = ?1 AND erp_order_number IS NULL
                       AND EXISTS (SELECT 1 FROM order_payloads p
                                   WHERE p.order_key = orders.order_key AND p.canonical_json IS NOT NULL)
                     ON CONFLICT(order_key, kind, ref) DO NOTHING",
                    &[&order_key, &now],
                )?;
                revived = tx.exec(
                    "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?2, last_error = NULL,
                                     first_failed_at = NULL, updated_at = ?2
                     WHERE order_key = ?1 AND state = 'cancelled'
                       AND (kind = 'push' OR last_error LIKE 'skipped:%')",
                    &[&order_key, &now],
                )?;
                event(tx, order_key, now, "unskipped", "retry by an operator")?;
            }
            let requeued = tx.exec(
                "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?2, parked_reason = NULL,
                                 parked_at = NULL, first_failed_at = NULL, updated_at = ?2
                 WHERE order_key = ?1 AND state = 'parked'",
                &[&order_key, &now],
            )?;
            super::cancel::erp_cancel_retried(tx, order_key, now)?;
            Ok(requeued + revived)
        })
    }

    /// `skip KEY --reason`: stops every open job of the order on purpose.
    /// `None` when there is no such order.
    pub fn skip_order(&self, order_key: &str, reason: &str) -> anyhow::Result<Option<usize>> {
        self.lock().write(|tx| {
            let now = now_ms();
            let found = tx.exec(
                "UPDATE orders SET state = 'skipped', note = ?2, updated_at = ?3 WHERE order_key = ?1",
                &[&order_key, &format!("skipped by an operator: {reason}"), &now],
            )?;
            if found == 0 {
                return Ok(None);
            }
            let stopped = tx.exec(
                "UPDATE jobs SET state = 'cancelled', parked_reason = NULL, lease_owner = NULL, lease_until = NULL,
                                 last_error = ?2, updated_at = ?3
                 WHERE order_key = ?1 AND state IN ('pending', 'waiting', 'parked')",
                &[&order_key, &format!("skipped: {reason}"), &now],
            )?;
            event(tx, order_key, now, "skipped", reason)?;
            Ok(Some(stopped))
        })
    }

    /// `retry --parked`: every parked job goes back in the queue.
    pub fn requeue_all_parked(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        self.lock().write(|tx| {
            let requeued = tx.exec(
                "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?1, parked_reason = NULL,
                                 parked_at = NULL, first_failed_at = NULL, updated_at = ?1
                 WHERE state = 'parked'",
                &[&now],
            )?;
            // Refused cancels are being asked again.
            tx.exec(
                "UPDATE orders SET state = 'cancelling', updated_at = ?1 WHERE state = 'cancel_refused'",
                &[&now],
            )?;
            Ok(requeued)
        })
    }

    /// Gives up our own leases (clean shutdown): the jobs are due again at once.
    /// Frees `owner`'s leases on pending jobs of `source` except those in
    /// `running`: what a claim committed whose answer never reached the
    /// worker (the session ended as it committed), which would otherwise
    /// sit out its whole lease unrun. Returns how many were freed.
    pub fn release_unrun(
        &self,
        source: &str,
        owner: &str,
        running: &[i64],
    ) -> anyhow::Result<usize> {
        self.lock().write(|tx| {
            let held: Vec<i64> = tx
                .query(
                    "SELECT id FROM jobs WHERE source = ?1 AND state = 'pending' AND lease_owner = ?2",
                    &[&source, &owner],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<anyhow::Result<_>>()?;
            let mut freed = 0;
            for id in held.into_iter().filter(|id| !running.contains(id)) {
                freed += tx.exec(
                    "UPDATE jobs SET lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2",
                    &[&id, &owner],
                )?;
            }
            Ok(freed)
        })
    }

    pub fn release_leases(&self, owner: &str) -> anyhow::Result<usize> {
        self.lock().auto(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
                &[&owner],
            )
        })
    }

    /// Frees leases held by processes of this host that no longer exist
    /// (killed with SIGKILL), so a restart does not wait for them to expire.
    /// On a shared ledger this frees only this host's dead processes; other
    /// hosts' are the fleet rescue's (dead heartbeats).
    pub fn release_dead_leases(&self) -> anyhow::Result<usize> {
        let me = lease_owner();
        let host = me.split('/').next().unwrap_or_default().to_string();
        self.lock().auto(|tx| {
            let owners: Vec<String> = tx
                .query(
                    "SELECT DISTINCT lease_owner FROM jobs WHERE lease_owner IS NOT NULL",
                    &[],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<anyhow::Result<_>>()?;
            let mut freed = 0;
            for owner in owners {
                let mut parts = owner.split('/');
                let (Some(h), Some(pid)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if h != host {
                    continue;
                }
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    freed += tx.exec(
                        "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
                        &[&owner],
                    )?;
                }
            }
            Ok(freed)
        })
    }

    /// When the next job of `source` that nobody holds is due, among the
    /// kinds `filter`'s class may take (for the worker's sleep: a worker
    /// whose push slots are all busy waits for write-backs only). Walks the
    /// class's index from the earliest, so it costs the same with ten jobs
    /// queued or ten thousand.
    pub fn next_due_ms(
        &self,
        source: &str,
        filter: ClaimFilter<'_>,
    ) -> anyhow::Result<Option<i64>> {
        let now = now_ms();
        let mut conn = self.lock();
        let sql = match conn.dialect() {
            Dialect::Sqlite => NEXT_DUE_SQL[0][filter.class()],
            Dialect::Postgres => NEXT_DUE_SQL[1][filter.class()],
        };
        conn.auto(|tx| {
            tx.query_opt(sql, &[&source, &now])?
                .map(|r| r.get(0))
                .transpose()
        })
    }

    /// How many jobs of these orders are still to do (pending or waiting).
    pub fn open_jobs_for(&self, keys: &[String]) -> anyhow::Result<usize> {
        self.lock().read(|tx| {
            let mut n = 0usize;
            for k in keys {
                n += tx.value::<usize>(
                    "SELECT count(*) FROM jobs WHERE order_key = ?1 AND state = 'pending' AND kind != 'write_shipped'",
                    &[k],
                )?;
            }
            Ok(n)
        })
    }

    /// What the earlier, completed shipment write-backs of an order
    /// delivered, per source line: a later shipment of the same line adds to
    /// it, so a repeat after a crash can tell what is still owed.
    pub fn shipped_before(&self, order_key: &str, job_id: i64) -> anyhow::Result<Vec<ShippedLine>> {
        let payloads = self
            .lock()
            .auto(|tx| earlier_payloads(tx, order_key, job_id))?;
        let mut total: Vec<ShippedLine> = Vec::new();
        for payload in payloads {
            let Ok(shipment) = serde_json::from_str::<ErpShipment>(&payload) else {
                continue;
            };
            for line in shipment.lines {
                match total
                    .iter_mut()
                    .find(|t| t.source_line_id == line.source_line_id)
                {
                    // A remote's numbers: checked (an absurd sum saturates
                    // and the write-back refuses it by name).
                    Some(t) => {
                        t.quantity = t
                            .quantity
                            .checked_add(line.quantity)
                            .unwrap_or(Decimal::MAX)
                    }
                    None => total.push(line),
                }
            }
        }
        Ok(total)
    }

    /// Where a shipment leaves its order: whether, with the shipments
    /// written back before it, every goods line of the order is shipped in
    /// full, and the tracking numbers of those earlier shipments. Sources
    /// that take no per-line delivery are told "sent" only with the last
    /// line (issue 15.2). A shipment without lines is the whole order, and
    /// an order whose lines cannot be read counts as complete (never stuck).
    pub fn shipment_progress(
        &self,
        order_key: &str,
        job_id: i64,
        this: &ErpShipment,
    ) -> anyhow::Result<ShipmentProgress> {
        let earlier = self.earlier_shipments(order_key, job_id)?;
        let mut tracking: Vec<String> = earlier
            .iter()
            .filter_map(|s| s.tracking_number.clone())
            .collect();
        if let Some(t) = &this.tracking_number
            && !tracking.contains(t)
        {
            tracking.push(t.clone());
        }
        if this.lines.is_empty() || earlier.iter().any(|s| s.lines.is_empty()) {
            return Ok(ShipmentProgress {
                completes_order: true,
                tracking_numbers: tracking,
            });
        }
        let canonical: Option<String> = self.lock().auto(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT canonical_json FROM order_payloads WHERE order_key = ?1",
                    &[&order_key],
                )?
                .map(|r| r.get::<Option<String>>(0))
                .transpose()?
                .flatten())
        })?;
        let ordered: Vec<(String, Decimal)> = canonical
            .and_then(|c| serde_json::from_str::<crate::model::Order>(&c).ok())
            .map(|o| {
                o.lines
                    .into_iter()
                    .map(|l| (l.source_line_id, l.quantity))
                    .collect()
            })
            .unwrap_or_default();
        let shipped = |line: &str| -> Decimal {
            earlier
                .iter()
                .chain(std::iter::once(this))
                .flat_map(|s| s.lines.iter())
                .filter(|l| l.source_line_id == line)
                .fold(Decimal::ZERO, |sum, l| {
                    sum.checked_add(l.quantity).unwrap_or(Decimal::MAX)
                })
        };
        let completes_order = ordered.iter().all(|(line, qty)| shipped(line) >= *qty);
        Ok(ShipmentProgress {
            completes_order,
            tracking_numbers: tracking,
        })
    }

    /// The shipments of this order written back before job `job_id`.
    fn earlier_shipments(&self, order_key: &str, job_id: i64) -> anyhow::Result<Vec<ErpShipment>> {
        let payloads = self
            .lock()
            .auto(|tx| earlier_payloads(tx, order_key, job_id))?;
        Ok(payloads
            .into_iter()
            .filter_map(|p| serde_json::from_str::<ErpShipment>(&p).ok())
            .collect())
    }

    /// Pending jobs of a source, due now or later.
    pub fn open_jobs(&self, source: &str) -> anyhow::Result<usize> {
        self.lock().auto(|tx| {
            tx.value(
                "SELECT count(*) FROM jobs WHERE source = ?1 AND state = 'pending'",
                &[&source],
            )
        })
    }

    /// Parked jobs among these orders.
    pub fn parked_among(&self, keys: &[String]) -> anyhow::Result<Vec<(String, String)>> {
        self.lock().read(|tx| {
            let mut out = Vec::new();
            for k in keys {
                for r in tx.query(
                    "SELECT order_key, COALESCE(parked_reason, '') FROM jobs WHERE order_key = ?1 AND state = 'parked'",
                    &[k],
                )? {
                    out.push((r.get(0)?, r.get(1)?));
                }
            }
            Ok(out)
        })
    }
}

/// What `job` needs of its order, inside `tx`: a push its mapped payload,
/// a write-back the ERP's line numbers (neither needs the other's).
fn job_order_in(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    job: &Job,
) -> anyhow::Result<Option<OrderForJob>> {
    let push = job.kind == JobKind::Push;
    order_in(tx, dialect, &job.order_key, push, !job.kind.talks_to_erp())
}

/// An order as a job sees it ([`Store::order_for`]), inside `tx`: with its
/// mapped payload when `payload`, with its line numbers when `lines`.
fn order_in(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    order_key: &str,
    payload: bool,
    lines: bool,
) -> anyhow::Result<Option<OrderForJob>> {
    const ORDER: [&str; 2] = [
        "SELECT o.state, NULL, o.content_hash, o.external_id, o.erp_order_number, o.note
         FROM orders o WHERE o.order_key = ?1",
        "SELECT o.state, p.canonical_json, o.content_hash, o.external_id, o.erp_order_number, o.note
         FROM orders o LEFT JOIN order_payloads p ON p.order_key = o.order_key
         WHERE o.order_key = ?1",
    ];
    let lines_sql = match dialect {
        Dialect::Sqlite => {
            "SELECT source_line_id, erp_line_number FROM order_lines WHERE order_key = ?1 ORDER BY rowid"
        }
        Dialect::Postgres => {
            "SELECT source_line_id, erp_line_number FROM order_lines WHERE order_key = ?1 ORDER BY seq"
        }
    };
    let Some(r) = tx.query_opt(ORDER[usize::from(payload)], &[&order_key])? else {
        return Ok(None);
    };
    let mut order = OrderForJob {
        state: r.get(0)?,
        canonical_json: r.get(1)?,
        content_hash: r.get(2)?,
        external_id: r.get(3)?,
        erp_order_number: r.get(4)?,
        note: r.get(5)?,
        lines: Vec::new(),
    };
    if !lines {
        return Ok(Some(order));
    }
    for r in tx.query(lines_sql, &[&order_key])? {
        order.lines.push(LineNumber {
            source_line_id: r.get(0)?,
            erp_line_number: r.get(1)?,
        });
    }
    Ok(Some(order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{claim_as, incoming_with_qty, seed, temp_store};

    /// The claim statements list the kinds that talk to the ERP as SQL;
    /// they must be exactly the kinds `talks_to_erp` names.
    #[test]
    fn the_claim_statements_know_which_kinds_talk_to_the_erp() {
        let kinds = [
            "push",
            "write_accepted",
            "write_shipped",
            "cancel_in_erp",
            "write_cancelled",
        ];
        let erp: Vec<String> = kinds
            .iter()
            .filter_map(|w| JobKind::parse(w))
            .filter(|k| k.talks_to_erp())
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        let list = format!("kind IN ({})", erp.join(", "));
        let pg = crate::store::pg::jobs::CLAIM_SQL;
        let not = list.replace("kind IN", "kind NOT IN");
        for (class, sql) in [(1, &list), (2, &not)] {
            assert!(CLAIM_SQL[class].contains(sql.as_str()), "{sql}");
            assert!(pg[class].contains(sql.as_str()), "{sql}");
        }
        // The indexes each class walks hold exactly its kinds.
        for migrations in [
            crate::store::migrations::MIGRATIONS,
            crate::store::pg::migrations::MIGRATIONS,
        ] {
            let all = migrations.concat();
            for sql in [&list, &not] {
                assert!(all.contains(&format!("'pending' AND {sql};")), "{sql}");
            }
        }
        assert_eq!(CLAIM_SQL[0].matches("'push', 'cancel_in_erp'").count(), 0);
    }

    fn accepted() -> ErpAccepted {
        ErpAccepted {
            erp_order_number: "SO1".into(),
            lines: vec![LineNumber {
                source_line_id: "1".into(),
                erp_line_number: "10".into(),
            }],
            created: true,
        }
    }

    /// A claim hands out each job with its order, read in the claim's own
    /// transaction: a push with its mapped payload (not the line numbers it
    /// has no use for), a write-back with the ERP's number and line numbers
    /// (not the payload). `read_orders` reads the same for jobs that lack
    /// theirs, and a job whose order is missing gets none while the rest
    /// are read all the same.
    #[test]
    fn claimed_jobs_come_with_their_orders() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        seed(&store, "2");
        let pushes = runnable(&store);
        assert_eq!(pushes.len(), 2);
        for (job, ext) in pushes.iter().zip(["1", "2"]) {
            let order = job.order.as_deref().expect("read with the claim");
            assert_eq!(order.external_id, ext);
            assert!(order.canonical_json.is_some(), "a push gets its payload");
            assert_eq!(order.state, OrderState::Queued);
        }
        store
            .finish_push(&pushes[0], "o", &accepted(), "h", true)
            .unwrap();
        let mut jobs = runnable(&store);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].kind, JobKind::WriteAccepted);
        let check = |order: &OrderForJob| {
            assert!(
                order.canonical_json.is_none(),
                "a write-back needs no payload"
            );
            assert_eq!(order.erp_order_number.as_deref(), Some("SO1"));
            assert_eq!(order.lines.len(), 1);
            assert_eq!(order.lines[0].erp_line_number, "10");
        };
        check(jobs[0].order.as_deref().expect("read with the claim"));
        // The push of order 1 is done; a push of it read now gets no lines.
        let mut push = pushes[0].clone();
        push.order = None;
        store.read_orders(std::slice::from_mut(&mut push)).unwrap();
        let pushed = push.order.as_deref().expect("read");
        assert!(pushed.canonical_json.is_some());
        assert!(pushed.lines.is_empty(), "a push reads no line numbers");
        let mut lost = jobs[0].clone();
        lost.order_key = "shop:not-in-the-ledger".into();
        jobs[0].order = None;
        jobs.insert(0, lost);
        store.read_orders(&mut jobs).unwrap();
        assert!(jobs[0].order.is_none(), "no such order");
        check(jobs[1].order.as_deref().expect("read by read_orders"));
    }

    /// Issue 13: a claim of write-backs walks the write-backs' own index,
    /// not every pending push due before them (on `jobs_due` it stepped
    /// over the whole backlog on every claim).
    #[test]
    fn a_write_back_claim_does_not_walk_the_backlog_of_pushes() {
        let (_d, store) = temp_store();
        for i in 0..1000 {
            seed(&store, &i.to_string());
        }
        let lease = Duration::from_secs(60);
        let pushes = store
            .claim("shop", "me", lease, 1, ClaimFilter::Talking(Remote::Erp))
            .unwrap();
        assert_eq!(pushes.len(), 1);
        assert!(
            store
                .finish_push(&pushes[0], "me", &accepted(), "h", true)
                .unwrap()
        );
        let claim = || {
            store
                .claim("shop", "me", lease, 8, ClaimFilter::Talking(Remote::Source))
                .unwrap()
        };
        let steps = |class: usize| {
            let conn = store.lock_for_tests();
            let stmt = conn.prepare_cached(CLAIM_SQL[class]).unwrap();
            stmt.get_status(rusqlite::StatementStatus::VmStep)
        };
        let got = claim();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, JobKind::WriteAccepted);
        // 999 pushes are pending and due before the write-back: walking
        // them costs thousands of steps; the write-backs' index a few dozen.
        let walked = steps(2);
        assert!(walked < 300, "{walked} VM steps for one write-back");
        let pushes = store
            .claim("shop", "me", lease, 8, ClaimFilter::Talking(Remote::Erp))
            .unwrap();
        assert_eq!(pushes.len(), 8);
        assert!(pushes.iter().all(|j| j.kind == JobKind::Push));
    }

    #[test]
    fn claim_statement_is_compiled_once() {
        let (_d, store) = temp_store();
        for i in 0..5 {
            seed(&store, &i.to_string());
        }
        // A new `now` every time, and a different number of free slots, as
        // a busy worker claims.
        for limit in [1, 3, 2, 1] {
            store
                .claim(
                    "shop",
                    "me",
                    Duration::from_secs(60),
                    limit,
                    ClaimFilter::All,
                )
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let conn = store.lock_for_tests();
        // The very statement the claims ran, back from the cache.
        let stmt = conn.prepare_cached(CLAIM_SQL[0]).unwrap();
        use rusqlite::StatementStatus::{RePrepare, Run, Sort};
        assert_eq!(stmt.get_status(Run), 4, "the claims ran this statement");
        assert_eq!(stmt.get_status(RePrepare), 0, "compiled again");
        assert_eq!(
            stmt.get_status(Sort),
            0,
            "sorted instead of walking the index"
        );
    }

    #[test]
    fn a_leased_job_is_not_claimed_twice() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let a = claim_as(&store, "a/1/x", Duration::from_secs(60));
        let b = claim_as(&store, "b/2/y", Duration::from_secs(60));
        assert_eq!(a.len(), 1);
        assert!(b.is_empty(), "a second worker must not get a leased job");
        // The other worker cannot settle a job it does not hold.
        assert!(
            !store
                .finish_push(&a[0], "b/2/y", &accepted(), "h", true)
                .unwrap()
        );
        assert!(
            store
                .finish_push(&a[0], "a/1/x", &accepted(), "h", true)
                .unwrap()
        );
        let next = claim_as(&store, "b/2/y", Duration::from_secs(60));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].kind, JobKind::WriteAccepted);
    }

    /// Issue 13.5: several jobs settled in one transaction, each fenced on
    /// its own: a job another runner holds is not settled, the others are,
    /// and each ends as the one-at-a-time calls would leave it.
    #[test]
    fn several_jobs_settle_in_one_transaction_each_fenced_on_its_own() {
        let (_d, store) = temp_store();
        for ext in ["1", "2", "3"] {
            seed(&store, ext);
        }
        let lease = Duration::from_secs(60);
        let mine = store
            .claim("shop", "a/1/x", lease, 2, ClaimFilter::All)
            .unwrap();
        let theirs = store
            .claim("shop", "b/2/y", lease, 5, ClaimFilter::All)
            .unwrap();
        assert_eq!((mine.len(), theirs.len()), (2, 1));
        let pushed = |job: &Job| Finish::Pushed {
            job: job.clone(),
            accepted: accepted(),
            hash: "h".into(),
            write_back: true,
        };
        let done = store
            .finish_many(
                "a/1/x",
                &[pushed(&mine[0]), pushed(&theirs[0]), pushed(&mine[1])],
            )
            .unwrap();
        assert_eq!(done, vec![true, false, true]);
        // Their write-backs are next; the fenced one is still b's push.
        let next = claim_as(&store, "a/1/x", lease);
        assert_eq!(next.len(), 2, "{next:?}");
        assert!(next.iter().all(|j| j.kind == JobKind::WriteAccepted));
        let finished: Vec<Finish> = next
            .iter()
            .map(|j| Finish::Done {
                job: j.clone(),
                detail: "written".into(),
            })
            .collect();
        assert_eq!(
            store.finish_many("a/1/x", &finished).unwrap(),
            vec![true, true]
        );
        // Settled once: the same results again change nothing.
        assert_eq!(
            store.finish_many("a/1/x", &finished).unwrap(),
            vec![false, false]
        );
        for j in &next {
            let detail = store.order_detail(&j.order_key).unwrap().unwrap();
            assert_eq!(detail.row.state, "accepted", "{}", j.order_key);
        }
        let b = store.order_detail(&theirs[0].order_key).unwrap().unwrap();
        assert_eq!(b.row.state, "queued");
    }

    #[test]
    fn an_expired_lease_can_be_taken_over() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let a = claim_as(&store, "a/1/x", Duration::from_millis(0));
        std::thread::sleep(Duration::from_millis(5));
        let b = claim_as(&store, "b/2/y", Duration::from_secs(60));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].attempts, 2);
        assert!(
            !store.retry_later(&a[0], "a/1/x", "late", 0).unwrap(),
            "the old owner lost it"
        );
    }

    #[test]
    fn dead_owners_leases_are_released() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let host = lease_owner().split('/').next().unwrap().to_string();
        // PID 0 never names a live process in /proc.
        let dead = format!("{host}/999999999/dead");
        claim_as(&store, &dead, Duration::from_secs(600));
        assert!(claim_as(&store, "x", Duration::from_secs(60)).is_empty());
        assert_eq!(store.release_dead_leases().unwrap(), 1);
        assert_eq!(claim_as(&store, "x", Duration::from_secs(60)).len(), 1);
    }

    #[test]
    fn shipment_waits_for_the_accepted_write_back() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = claim_as(&store, "o", Duration::from_secs(60));
        store
            .finish_push(&j[0], "o", &accepted(), "h", true)
            .unwrap();
        let ship = ErpShipment {
            order_key: "shop:1".into(),
            erp_order_number: Some("SO1".into()),
            shipped_at: None,
            carrier: Some("PostNL".into()),
            tracking_number: Some("3S1".into()),
            tracking_url: None,
            erp_shipment_id: None,
            lines: vec![],
        };
        assert_eq!(
            store
                .record_shipments(std::slice::from_ref(&ship), "5")
                .unwrap()
                .len(),
            1
        );
        // Seen again: nothing new.
        assert!(store.record_shipments(&[ship], "5").unwrap().is_empty());
        let j = claim_as(&store, "o", Duration::from_secs(60));
        assert_eq!(j.len(), 1, "only the accepted write-back is runnable");
        assert_eq!(j[0].kind, JobKind::WriteAccepted);
        store.finish_job(&j[0], "o", "ok").unwrap();
        let j = claim_as(&store, "o", Duration::from_secs(60));
        assert_eq!(j[0].kind, JobKind::WriteShipped);
        store.finish_job(&j[0], "o", "ok").unwrap();
        assert_eq!(
            store.order_for_job("shop:1").unwrap().unwrap().state,
            OrderState::Completed
        );
    }

    fn shipment(key: &str) -> ErpShipment {
        ErpShipment {
            order_key: key.into(),
            erp_order_number: Some("SO1".into()),
            shipped_at: None,
            carrier: Some("DHL".into()),
            tracking_number: Some("JJD1".into()),
            tracking_url: None,
            erp_shipment_id: None,
            lines: vec![],
        }
    }

    fn runnable(store: &Store) -> Vec<Job> {
        claim_as(store, "o", Duration::from_secs(60))
    }

    #[test]
    fn a_source_without_write_backs_completes_on_shipment() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = runnable(&store);
        // No "accepted" write-back: straight to accepted.
        store
            .finish_push(&j[0], "o", &accepted(), "h", false)
            .unwrap();
        assert_eq!(
            store.order_for_job("shop:1").unwrap().unwrap().state,
            OrderState::Accepted
        );
        assert!(runnable(&store).is_empty(), "no write-back job was queued");
        let ship = shipment("shop:1");
        let queued = store
            .record_shipments_with(std::slice::from_ref(&ship), "5", |_| Uptake::NOTHING)
            .unwrap();
        assert!(queued.is_empty(), "nothing to write back");
        assert!(
            runnable(&store).is_empty(),
            "no shipped write-back job is runnable"
        );
        assert_eq!(
            store.order_for_job("shop:1").unwrap().unwrap().state,
            OrderState::Completed
        );
        // The same shipment again records nothing new (one event, not two).
        store
            .record_shipments_with(&[ship], "5", |_| Uptake::NOTHING)
            .unwrap();
        let conn = store.lock_for_tests();
        let events: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE order_key = 'shop:1' AND kind = 'shipment'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(events, 1);
    }

    #[test]
    fn a_shipment_before_the_touch_completes_after_it() {
        // Accepted write-back (Vinou's touch) but no shipped write-back.
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = runnable(&store);
        store
            .finish_push(&j[0], "o", &accepted(), "h", true)
            .unwrap();
        store
            .record_shipments_with(&[shipment("shop:1")], "5", |_| Uptake::NOTHING)
            .unwrap();
        assert_eq!(
            store.order_for_job("shop:1").unwrap().unwrap().state,
            OrderState::Pushed
        );
        let j = runnable(&store);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].kind, JobKind::WriteAccepted);
        store.finish_job(&j[0], "o", "touched").unwrap();
        assert_eq!(
            store.order_for_job("shop:1").unwrap().unwrap().state,
            OrderState::Completed,
            "not left in 'shipped' waiting for a write-back that never comes"
        );
        assert!(runnable(&store).is_empty());
    }

    #[test]
    fn shipments_of_one_order_are_written_back_one_at_a_time() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = claim_as(&store, "o", Duration::from_secs(60));
        store
            .finish_push(&j[0], "o", &accepted(), "h", true)
            .unwrap();
        let j = claim_as(&store, "o", Duration::from_secs(60));
        store.finish_job(&j[0], "o", "accepted").unwrap();
        let ship = |tracking: &str, qty: i64| ErpShipment {
            order_key: "shop:1".into(),
            erp_order_number: None,
            shipped_at: None,
            carrier: None,
            tracking_number: Some(tracking.into()),
            tracking_url: None,
            erp_shipment_id: None,
            lines: vec![ShippedLine {
                source_line_id: "1".into(),
                quantity: Decimal::from(qty),
                erp_line_number: None,
            }],
        };
        store
            .record_shipments(&[ship("A", 2), ship("B", 1)], "2")
            .unwrap();
        let first = claim_as(&store, "o", Duration::from_secs(60));
        assert_eq!(first.len(), 1, "the second shipment waits for the first");
        assert_eq!(first[0].job_ref, "A");
        assert!(
            store
                .shipped_before("shop:1", first[0].id)
                .unwrap()
                .is_empty()
        );
        store.finish_job(&first[0], "o", "delivered").unwrap();
        let second = claim_as(&store, "o", Duration::from_secs(60));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].job_ref, "B");
        let before = store.shipped_before("shop:1", second[0].id).unwrap();
        assert_eq!(
            before,
            vec![ShippedLine {
                source_line_id: "1".into(),
                quantity: Decimal::from(2),
                erp_line_number: None,
            }]
        );
    }

    #[test]
    fn parked_jobs_come_back_with_retry() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = claim_as(&store, "o", Duration::from_secs(60));
        store.park(&j[0], "o", "422 unknown product").unwrap();
        assert!(claim_as(&store, "o", Duration::from_secs(60)).is_empty());
        assert_eq!(store.requeue_order("shop:1").unwrap(), 1);
        let j = claim_as(&store, "o", Duration::from_secs(60));
        assert_eq!(j[0].attempts, 1);
    }

    /// Issue 13.4: "attempt started" is recorded by the claim, before any
    /// write: the first attempt is not in doubt; any later one is (a lease
    /// that ran out, a retry, an operator's retry after parking).
    #[test]
    fn only_a_jobs_first_attempt_is_free_of_doubt() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = claim_as(&store, "dead", Duration::from_millis(1));
        assert!(!j[0].in_doubt);
        std::thread::sleep(Duration::from_millis(5));
        let j = claim_as(&store, "o", Duration::from_secs(60));
        assert!(j[0].in_doubt, "claimed again after the lease ran out");
        store.park(&j[0], "o", "422").unwrap();
        assert_eq!(store.requeue_order("shop:1").unwrap(), 1);
        let j = claim_as(&store, "o", Duration::from_secs(60));
        assert_eq!(j[0].attempts, 1, "the operator's retry resets the count");
        assert!(j[0].in_doubt, "but not what may have been written");
    }

    /// The time budget counts from the first failure of a run of failures,
    /// survives further failures, and starts afresh on an operator's retry.
    #[test]
    fn the_first_failure_is_remembered_until_an_operator_retries() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let claim = || claim_as(&store, "o", Duration::from_secs(60));
        let j = claim();
        assert_eq!(j[0].first_failed_at, None);
        store.retry_later(&j[0], "o", "503", 0).unwrap();
        let j = claim();
        let first = j[0].first_failed_at.expect("set at the first failure");
        std::thread::sleep(Duration::from_millis(5));
        store.retry_later(&j[0], "o", "503 again", 0).unwrap();
        let j = claim();
        assert_eq!(
            j[0].first_failed_at,
            Some(first),
            "not moved by later failures"
        );
        assert!(j[0].failing_for(first + 3_600_000) >= Duration::from_secs(3600));
        store.park(&j[0], "o", "gave up").unwrap();
        store.requeue_order("shop:1").unwrap();
        assert_eq!(
            claim()[0].first_failed_at,
            None,
            "an operator's retry starts afresh"
        );
    }

    /// Issue 12.3: an attempt whose outcome was lost sent version 1; the
    /// source then changed (version 2); the retry finds the ERP order the
    /// first attempt made. The ledger must not claim the ERP holds version 2.
    #[test]
    fn a_repeat_after_a_lost_answer_records_what_the_erp_holds() {
        let (_d, store) = temp_store();
        let hash_of = |store: &Store| -> String {
            store
                .lock_for_tests()
                .query_row(
                    "SELECT content_hash FROM orders WHERE order_key = 'shop:1'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let column = |store: &Store, c: &str| -> Option<String> {
            store
                .lock_for_tests()
                .query_row(
                    &format!("SELECT CAST({c} AS TEXT) FROM orders WHERE order_key = 'shop:1'"),
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let lease = Duration::from_secs(60);
        seed(&store, "1");
        let v1 = hash_of(&store);
        let j = claim_as(&store, "o", lease);
        store.remember_sent(&j[0], "o", &v1).unwrap();
        store.retry_later(&j[0], "o", "timed out", 0).unwrap();
        // The shop changes the order before the retry.
        let mut changed = incoming_with_qty("1", "3");
        changed.version = Some("v2".into());
        store.ingest("shop", "live", &[changed], None).unwrap();
        let v2 = hash_of(&store);
        assert_ne!(v1, v2);
        let j = claim_as(&store, "o", lease);
        assert_eq!(j[0].sent_hash.as_deref(), Some(v1.as_str()));
        let mut repeat = accepted();
        repeat.created = false;
        assert!(store.finish_push(&j[0], "o", &repeat, &v2, true).unwrap());
        assert_eq!(column(&store, "pushed_hash").as_deref(), Some(v1.as_str()));
        assert!(
            column(&store, "changed_after_push_at").is_some(),
            "flagged for an operator"
        );

        // Had the retry created the ERP order, it holds version 2: no flag.
        let (_d2, other) = temp_store();
        seed(&other, "1");
        let j = claim_as(&other, "o", lease);
        other.remember_sent(&j[0], "o", "an-earlier-hash").unwrap();
        other.retry_later(&j[0], "o", "timed out", 0).unwrap();
        let j = claim_as(&other, "o", lease);
        let now_hash = hash_of(&other);
        assert!(
            other
                .finish_push(&j[0], "o", &accepted(), &now_hash, true)
                .unwrap()
        );
        assert_eq!(column(&other, "pushed_hash"), Some(now_hash));
        assert!(column(&other, "changed_after_push_at").is_none());
    }

    /// Issue 12.7: two shipments of one order on one day, without tracking
    /// numbers, are two shipments (by the ERP's id), each with its lines
    /// placed by the ERP line numbers recorded at the push.
    #[test]
    fn shipments_are_told_apart_by_the_erps_id_and_lines_are_placed() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = runnable(&store);
        store
            .finish_push(&j[0], "o", &accepted(), "h", true)
            .unwrap();
        let day = "2026-11-22T00:00:00Z".parse().ok();
        let part = |id: &str, qty: i64| ErpShipment {
            order_key: "shop:1".into(),
            erp_order_number: Some("SO1".into()),
            shipped_at: day,
            carrier: None,
            tracking_number: None,
            tracking_url: None,
            erp_shipment_id: Some(format!("stock.shipment.out,{id}")),
            lines: vec![ShippedLine {
                source_line_id: String::new(),
                quantity: Decimal::from(qty),
                erp_line_number: Some("10".into()),
            }],
        };
        let queued = store
            .record_shipments(&[part("7", 1), part("8", 2)], "c")
            .unwrap();
        assert_eq!(queued.len(), 2, "two shipments of one day stay two");
        // Read again (the overlap window): nothing new.
        assert!(
            store
                .record_shipments(&[part("7", 1), part("8", 2)], "c")
                .unwrap()
                .is_empty()
        );
        let conn = store.lock_for_tests();
        let payloads = crate::store::testutil::texts(
            &conn,
            "SELECT payload FROM jobs WHERE kind = 'write_shipped' ORDER BY id",
        );
        for p in payloads {
            let s: ErpShipment = serde_json::from_str(&p).unwrap();
            assert_eq!(
                s.lines[0].source_line_id, "1",
                "placed through order_lines: {p}"
            );
        }
    }

    /// A ledger that recorded a shipment under its tracking number before
    /// shipments carried the ERP's id does not record it a second time.
    #[test]
    fn a_shipment_recorded_under_the_old_identity_is_not_recorded_again() {
        let (_d, store) = temp_store();
        seed(&store, "1");
        let j = runnable(&store);
        store
            .finish_push(&j[0], "o", &accepted(), "h", true)
            .unwrap();
        assert_eq!(
            store
                .record_shipments(&[shipment("shop:1")], "c")
                .unwrap()
                .len(),
            1
        );
        let mut again = shipment("shop:1");
        again.erp_shipment_id = Some("stock.shipment.out,7".into());
        assert!(store.record_shipments(&[again], "c").unwrap().is_empty());
    }
}
