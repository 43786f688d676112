//! Runs jobs: per source, a few more write-backs than its `max_in_flight`
//! (requests stay bounded by it) and the ERP's pushes. A job's network
//! call happens with no transaction open; its result is settled in one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::lease::{self, LeaseClock};
use super::policy::{Decision, RetryPolicy};
use super::state::OrderState;
use crate::erp::Erp;
use crate::http::Failure;
use crate::sources::{Connector, WriteBack};
use crate::store::{
    ClaimFilter, ErpAccepted, ErpShipment, Finish, Job, JobKind, Remote, Store, now_ms,
};

/// Everything a job needs, shared by the workers, the pollers and the CLI.
pub struct Engine {
    pub store: Arc<Store>,
    pub erp: Arc<Erp>,
    pub connectors: HashMap<String, Arc<Connector>>,
    pub policy: RetryPolicy,
    /// Our lease identity (host/pid/nonce).
    pub owner: String,
    /// How long a claimed job stays ours; longer than any call can take.
    pub lease: Duration,
    /// How many pushes (and ERP cancels) a source's worker runs besides its
    /// write-backs: the ERP's `max_in_flight` times its `batch_size`
    /// (requests stay bounded by `max_in_flight` in the ERP's endpoint).
    pub erp_slots: usize,
    /// Poked when new work is queued for a source.
    pub wake: HashMap<String, Arc<Notify>>,
    /// Turned by every worker loop: proof for the watchdog that the engine runs.
    pub heartbeat: Arc<crate::health::Heartbeat>,
    /// Per source: a run of failed polls is logged once, then once a minute.
    pub poll_trouble: std::sync::Mutex<HashMap<String, crate::throttle::FailureStreak>>,
    /// When jobs waiting on a backoff were last pulled forward, per source
    /// and class (pushes / write-backs): at most every couple of seconds.
    pub pulled_forward: std::sync::Mutex<HashMap<(String, bool), std::time::Instant>>,
    /// Per source: the orders live walks read in its recheck round under
    /// way and the one before ([`crate::poll::fresh`]).
    pub fresh: std::sync::Mutex<HashMap<String, crate::poll::fresh::Rounds>>,
    /// Per source: a new recheck round begins at most this often
    /// (`recheck_every`).
    pub recheck_every: HashMap<String, Duration>,
    /// Per source: how much of the past a live poll reads again.
    pub overlap: crate::poll::overlap::Overlap,
    /// This node's place in the fleet (renewed by [`crate::fleet`]); a job
    /// sends nothing once it has lapsed since the claim.
    pub membership: lease::Membership,
    /// Records finished jobs several to a transaction.
    pub settler: super::batch::Settler,
}

/// A successful job.
pub enum Outcome {
    Pushed {
        accepted: ErpAccepted,
        hash: String,
    },
    /// A write-back took effect (or a push turned out not to be needed).
    Done {
        detail: String,
        erp_order_number: Option<String>,
    },
}

/// What one claim gave the worker: the jobs, and when work is next due
/// for the slots they left free (`None`: no slot left free, or nothing
/// queued for them).
struct Claimed {
    jobs: Vec<Job>,
    next_due: Option<i64>,
}

/// One of a worker's slots (pushes or write-backs), held by a running job
/// until it has heard from its remote; giving it back wakes the worker.
struct Slot {
    busy: Arc<AtomicUsize>,
    freed: Arc<Notify>,
}

impl Slot {
    fn take(busy: &Arc<AtomicUsize>, freed: &Arc<Notify>) -> Slot {
        busy.fetch_add(1, Ordering::AcqRel);
        Slot {
            busy: Arc::clone(busy),
            freed: Arc::clone(freed),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }
}

/// How long a result the ledger could not take waits before it is offered
/// again ([`Engine::settle`]), doubling up to [`SETTLE_RETRY_MAX`]
/// (`throttle::FailureStreak`).
const SETTLE_RETRY_FIRST: Duration = Duration::from_millis(200);
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(5);

/// How long an idle worker sleeps: until the next job is due (epoch ms),
/// at least 5 ms and at most a second (another process may queue work
/// meanwhile, and a new job of this one wakes it sooner).
fn until_due(due: Option<i64>) -> Duration {
    match due {
        Some(at) => Duration::from_millis((at - now_ms()).clamp(5, 1000) as u64),
        None => Duration::from_secs(1),
    }
}

impl Engine {
    pub fn wake(&self, source: &str) {
        if let Some(n) = self.wake.get(source) {
            n.notify_one();
        }
    }

    /// Every call to a remote below is boxed: unboxed, the largest of them
    /// made this future 27 KB, inlined into every job's
    /// task, copied whole each time the task is spawned, stored and
    /// finished (about 15 % of the daemon's instructions under callgrind,
    /// 1.4 % of its CPU time under perf; see docs/BENCHMARKS.md). Boxed, a
    /// job's task is about 2 KB and holds only the call it makes.
    async fn execute(&self, job: &Job) -> Result<Outcome, Failure> {
        let ledger = |e: anyhow::Error| Failure::retry(format!("ledger: {e:#}"));
        let order = match &job.order {
            Some(order) => Arc::clone(order),
            None => {
                let (key, payload) = (job.order_key.clone(), job.kind == JobKind::Push);
                let read = self.store.call(move |s| s.order_for(&key, payload)).await;
                Arc::new(
                    read.map_err(ledger)?
                        .ok_or_else(|| Failure::permanent("the order is not in the ledger"))?,
                )
            }
        };
        let connector = self.connectors.get(&job.source).ok_or_else(|| {
            Failure::retry(format!(
                "source {} is not configured or not enabled",
                job.source
            ))
        })?;
        match job.kind {
            JobKind::CancelInErp => {
                let reason = job
                    .payload
                    .clone()
                    .unwrap_or_else(|| "cancelled at the source".into());
                let done = Box::pin(self.erp.cancel(&job.order_key, &reason)).await;
                done.map(|detail| Outcome::Done {
                    detail,
                    erp_order_number: order.erp_order_number.clone(),
                })
                .map_err(|f| f.context("ERP cancel"))
            }
            JobKind::Push => {
                // An earlier attempt may have reached the ERP before the
                // source cancelled the order (it ended without an answer, or
                // its runner died): then the ERP holds it, and the push
                // below (idempotent) records it so its cancel follows.
                let maybe_in_erp = order.state == OrderState::Cancelled
                    && (job.sent_hash.is_some() || job.in_doubt)
                    && !Box::pin(self.erp.orders_for_key(&job.order_key))
                        .await
                        .map_err(|f| f.context("ERP look-up"))?
                        .is_empty();
                if order.state == OrderState::Cancelled && !maybe_in_erp {
                    return Ok(Outcome::Done {
                        detail: "cancelled at the source before the push; not pushed".into(),
                        erp_order_number: None,
                    });
                }
                let Some(canonical) = order.canonical_json.as_deref() else {
                    return Err(Failure::permanent(
                        order
                            .note
                            .clone()
                            .unwrap_or_else(|| "the order could not be mapped".into()),
                    ));
                };
                let started = std::time::Instant::now();
                let pushed = Box::pin(self.erp.push(&job.order_key, canonical)).await;
                crate::metrics::global().erp_push(started.elapsed());
                if let Err(Failure::Retryable { .. }) = &pushed {
                    // The ERP may have taken it before the answer was lost:
                    // remember which version went out (see finish_push).
                    let (j, owner, hash) =
                        (job.clone(), self.owner.clone(), order.content_hash.clone());
                    self.store
                        .call(move |s| s.remember_sent(&j, &owner, &hash))
                        .await
                        .map_err(ledger)?;
                }
                let accepted = pushed.map_err(|f| f.context("ERP push"))?;
                Ok(Outcome::Pushed {
                    accepted,
                    hash: order.content_hash.clone(),
                })
            }
            JobKind::WriteAccepted | JobKind::WriteShipped | JobKind::WriteCancelled => {
                let Some(erp_order_number) = order.erp_order_number.clone() else {
                    return Err(Failure::permanent(
                        "no ERP order number recorded for this order",
                    ));
                };
                let progress = if job.kind == JobKind::WriteShipped {
                    match job
                        .payload
                        .as_deref()
                        .and_then(|p| serde_json::from_str::<ErpShipment>(p).ok())
                    {
                        Some(shipment) => {
                            let (key, id) = (job.order_key.clone(), job.id);
                            self.store
                                .call(move |s| s.shipment_progress(&key, id, &shipment))
                                .await
                                .map_err(ledger)?
                        }
                        None => Default::default(),
                    }
                } else {
                    Default::default()
                };
                let wb = WriteBack {
                    progress,
                    order_key: job.order_key.clone(),
                    external_id: order.external_id.clone(),
                    erp_order_number,
                    lines: order.lines.clone(),
                    in_doubt: job.in_doubt,
                    shipped_before: if job.kind == JobKind::WriteShipped {
                        let (key, id) = (job.order_key.clone(), job.id);
                        self.store
                            .call(move |s| s.shipped_before(&key, id))
                            .await
                            .map_err(ledger)?
                    } else {
                        Vec::new()
                    },
                    step: {
                        let (store, job, owner) =
                            (Arc::clone(&self.store), job.clone(), self.owner.clone());
                        crate::sources::WriteStep::new(job.sent_hash.clone(), move |step| {
                            let (store, job, owner) =
                                (Arc::clone(&store), job.clone(), owner.clone());
                            Box::pin(async move {
                                store
                                    .call(move |s| s.set_write_step(&job, &owner, step.as_deref()))
                                    .await
                            })
                        })
                    },
                };
                let detail = if job.kind == JobKind::WriteAccepted {
                    Box::pin(connector.write_accepted(&wb)).await
                } else if job.kind == JobKind::WriteCancelled {
                    let cancellation: crate::store::ErpCancellation = job
                        .payload
                        .as_deref()
                        .and_then(|p| serde_json::from_str(p).ok())
                        .ok_or_else(|| {
                            Failure::permanent("cancel job without a readable cancellation")
                        })?;
                    Box::pin(connector.write_cancelled(&wb, &cancellation)).await
                } else {
                    let shipment: ErpShipment = job
                        .payload
                        .as_deref()
                        .and_then(|p| serde_json::from_str(p).ok())
                        .ok_or_else(|| {
                            Failure::permanent("shipment job without a readable shipment")
                        })?;
                    Box::pin(connector.write_shipped(&wb, &shipment)).await
                };
                detail
                    .map(|detail| Outcome::Done {
                        detail,
                        erp_order_number: Some(wb.erp_order_number.clone()),
                    })
                    .map_err(|f| f.context(&format!("write-back to {}", job.source)))
            }
        }
    }

    /// Renews the lease of a running job, on the ledger thread: when it was
    /// asked for if it was renewed, `None` if the lease is no longer ours.
    async fn renew(&self, job: &Job) -> anyhow::Result<Option<(Instant, SystemTime)>> {
        let (j, owner, lease) = (job.clone(), self.owner.clone(), self.lease);
        let asked = LeaseClock::now();
        let renewed = self
            .store
            .call(move |s| s.renew_lease(&j, &owner, lease))
            .await?;
        Ok(renewed.then_some(asked))
    }

    /// Claims up to `free` due jobs of `source`, on the ledger thread.
    /// Claims up to `free_erp` jobs that talk to the ERP and `free_source`
    /// that talk to the source.
    async fn claim(
        &self,
        source: &str,
        free_erp: usize,
        free_source: usize,
    ) -> anyhow::Result<Claimed> {
        let (src, owner, lease) = (source.to_string(), self.owner.clone(), self.lease);
        self.store
            .call(move |s| {
                // With their orders (`claim_each` reads them): a job then
                // goes to its remote without waiting on the ledger again.
                let jobs = s.claim_each(
                    &src,
                    &owner,
                    lease,
                    &[
                        (ClaimFilter::Talking(Remote::Erp), free_erp),
                        (ClaimFilter::Talking(Remote::Source), free_source),
                    ],
                )?;
                // Slots this claim could not fill stay free: when is work
                // for them next due? Asked in the same ledger call, so an
                // idle worker does not come back for it (nor claim again
                // only to find nothing: the claim took every due job it had
                // room for).
                let erp_jobs = jobs.iter().filter(|j| j.kind.talks_to_erp()).count();
                let class = match (erp_jobs < free_erp, jobs.len() - erp_jobs < free_source) {
                    (false, false) => None,
                    (true, false) => Some(ClaimFilter::Talking(Remote::Erp)),
                    (false, true) => Some(ClaimFilter::Talking(Remote::Source)),
                    (true, true) => Some(ClaimFilter::All),
                };
                let next_due = match class {
                    // A failed look-up only costs a wake-up: wait the most.
                    Some(class) => s.next_due_ms(&src, class).ok().flatten(),
                    None => None,
                };
                Ok(Claimed { jobs, next_due })
            })
            .await
    }

    /// How long one job may run: shorter than its lease, so no other runner
    /// can claim a job whose holder is alive (SPEC §5.9).
    pub fn job_deadline(&self) -> Duration {
        self.lease * 2 / 3
    }

    /// Runs one claimed job and settles it. A panic counts as a failure.
    /// While it runs its lease is renewed; it is cut at its deadline; if the
    /// lease is lost anyway (the process stalled), the job stops and leaves
    /// the result to whoever holds it now. Dropping this future (shutdown's
    /// abort) aborts the job's own task too, so no call outlives its lease.
    /// `asked`: when the claim that granted the lease was asked for
    /// ([`LeaseClock::now`]); no request of the job goes out once the lease
    /// has run out by this process's clocks ([`crate::outbox::lease`]).
    pub async fn run_job(self: &Arc<Self>, job: Job, asked: (Instant, SystemTime)) {
        self.run_job_in(job, asked, None).await
    }

    /// [`Engine::run_job`] holding one of its worker's `slot`s, given back
    /// as soon as the job has heard from its remote: settling the result
    /// is ledger work only, and the next job need not wait for it (while
    /// it waits, results queue up for the settle loop and go into the
    /// ledger several to a transaction).
    async fn run_job_in(
        self: &Arc<Self>,
        job: Job,
        asked: (Instant, SystemTime),
        slot: Option<Slot>,
    ) {
        let me = Arc::clone(self);
        let j = job.clone();
        let clock = LeaseClock::new(asked, self.lease);
        let held = lease::Held {
            lease: clock.clone(),
            node: self.membership.clone(),
            claimed: asked.0,
        };
        let mut task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            lease::holding(held, me.execute(&j)).await
        }));
        let mut renew = tokio::time::interval(self.lease / 4);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let deadline = tokio::time::sleep(self.job_deadline());
        tokio::pin!(deadline);
        let result = loop {
            tokio::select! {
                joined = &mut task => break match joined {
                    Ok(r) => r,
                    Err(e) => Err(Failure::retry(format!(
                        "internal error while running the job: {e}"
                    ))),
                },
                _ = &mut deadline => {
                    task.abort();
                    if job.kind == JobKind::Push {
                        // The push may have reached the ERP before the cut.
                        let (j, owner) = (job.clone(), self.owner.clone());
                        let _ = self
                            .store
                            .call(move |s| match s.order_for(&j.order_key, false) {
                                Ok(Some(order)) => s.remember_sent(&j, &owner, &order.content_hash),
                                Ok(None) => Ok(()),
                                Err(e) => Err(e),
                            })
                            .await;
                    }
                    break Err(Failure::retry(format!(
                        "the job did not finish within its deadline of {}s; cut (the next attempt looks the order up first)",
                        self.job_deadline().as_secs()
                    )));
                }
                _ = renew.tick() => match self.renew(&job).await {
                    Ok(Some(asked)) => clock.renewed(asked, self.lease),
                    Ok(None) => {
                        task.abort();
                        tracing::warn!(
                            source = %job.source, order_key = %job.order_key, job = job.kind.as_str(),
                            "lost the job's lease while running it; stopped, another runner has it"
                        );
                        return;
                    }
                    Err(e) => tracing::warn!(
                        source = %job.source, order_key = %job.order_key, error = %format!("{e:#}"),
                        "cannot renew the job's lease; the deadline still bounds it"
                    ),
                },
            }
        };
        drop(slot);
        self.settle(&job, result, &clock).await;
    }

    /// A remote answered (a job, a poll, a shipments read succeeded): jobs of
    /// `source` that talk to it (`pushes`: the ERP; else the source) and
    /// back off after transient failures need not wait on.
    pub async fn remote_answered(&self, source: &str, pushes: bool) {
        let class = (source.to_string(), pushes);
        {
            let mut last = self
                .pulled_forward
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if last
                .get(&class)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(2))
            {
                return;
            }
            last.insert(class.clone(), now);
        }
        let (src, class_pushes) = class;
        match self
            .store
            .call(move |s| s.pull_forward(&src, class_pushes))
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    source,
                    jobs = n,
                    "the remote answers again; jobs waiting on a backoff are due now"
                );
                self.wake(source);
            }
            Err(e) => {
                tracing::warn!(source, error = %format!("{e:#}"), "cannot pull waiting jobs forward")
            }
        }
    }

    /// Records a job's result. A ledger that cannot take it now (a
    /// PostgreSQL restart or failover, a locked SQLite file) is asked again,
    /// backing off, while the job's lease lasts: the result of a remote call
    /// is not thrown away for a blip, which would leave the job to wait out
    /// its whole lease and then repeat the call. Each try is fenced by the
    /// ledger as the first (lease owner and attempt).
    async fn settle(&self, job: &Job, result: Result<Outcome, Failure>, lease: &LeaseClock) {
        if result.is_ok() {
            self.remote_answered(&job.source, job.kind.talks_to_erp())
                .await;
        }
        // The ledger-failure back-off every loop here uses, with this
        // job's own first and longest wait.
        let mut streak = crate::throttle::FailureStreak::with(
            SETTLE_RETRY_FIRST,
            SETTLE_RETRY_MAX,
            Duration::from_secs(60),
        );
        let mut tries = 1u64;
        let kept = loop {
            match self.record(job, &result).await {
                // At shutdown the grace period bounds this too: the daemon
                // aborts what is still running when it ends.
                Err(e) if lease.check().is_ok() => {
                    let next = streak.failure();
                    if next.log {
                        tracing::warn!(
                            source = %job.source, order_key = %job.order_key, job = job.kind.as_str(), error = %format!("{e:#}"),
                            failures = next.failures, suppressed = next.suppressed,
                            "cannot record the job's result in the ledger yet; trying again while its lease lasts"
                        );
                    }
                    tries = next.failures + 1;
                    tokio::time::sleep(next.delay).await;
                }
                other => break other,
            }
        };
        match kept {
            Ok(true) if tries > 1 => tracing::info!(
                source = %job.source, order_key = %job.order_key, job = job.kind.as_str(), tries,
                "the ledger took the job's result"
            ),
            Ok(true) => {}
            Ok(false) if tries > 1 => tracing::warn!(
                source = %job.source, order_key = %job.order_key, job = job.kind.as_str(),
                "the job's result was recorded by an earlier try whose answer was lost, or its lease was taken over meanwhile"
            ),
            Ok(false) => tracing::warn!(
                source = %job.source, order_key = %job.order_key, job = job.kind.as_str(),
                "lease expired before the job finished; another process has it now"
            ),
            Err(e) => tracing::error!(
                source = %job.source, order_key = %job.order_key, job = job.kind.as_str(), error = %format!("{e:#}"), tries,
                "cannot record the job's result in the ledger; it will run again when its lease expires"
            ),
        }
    }

    /// One try at recording a job's result ([`Engine::settle`]): whether
    /// the job was still this claim's.
    async fn record(&self, job: &Job, result: &Result<Outcome, Failure>) -> anyhow::Result<bool> {
        let store = &self.store;
        match result {
            Ok(Outcome::Pushed { accepted, hash }) => {
                let connector_writes = self
                    .connectors
                    .get(&job.source)
                    .map(|c| c.writes_accepted())
                    .unwrap_or(true);
                let finish = Finish::Pushed {
                    job: job.clone(),
                    accepted: accepted.clone(),
                    hash: hash.clone(),
                    write_back: connector_writes,
                };
                let r = self.settler.finish(store, finish).await;
                if matches!(r, Ok(true)) {
                    tracing::info!(
                        source = %job.source, order_key = %job.order_key,
                        erp_order_number = %accepted.erp_order_number,
                        lines = accepted.lines.len(), attempt = job.attempts,
                        "order pushed to ERP"
                    );
                    self.wake(&job.source);
                }
                r
            }
            Ok(Outcome::Done {
                detail,
                erp_order_number,
            }) => {
                let finish = Finish::Done {
                    job: job.clone(),
                    detail: detail.clone(),
                };
                let r = self.settler.finish(store, finish).await;
                if matches!(r, Ok(true)) {
                    let what = match job.kind {
                        JobKind::Push => "order not pushed",
                        JobKind::WriteAccepted => "accepted written back to source",
                        JobKind::WriteShipped => "shipped written back to source",
                        JobKind::CancelInErp => "order cancelled in the ERP",
                        JobKind::WriteCancelled => "ERP cancel written back to source",
                    };
                    tracing::info!(
                        source = %job.source, order_key = %job.order_key,
                        erp_order_number = erp_order_number.as_deref().unwrap_or("-"),
                        detail = %detail, "{what}"
                    );
                    self.wake(&job.source);
                }
                r
            }
            Err(failure) => {
                // A remote may echo a token in its error text: scrubbed once
                // here, for the log lines and the ledger alike.
                let failure = failure.clone().redacted();
                match self
                    .policy
                    .decide(job.attempts, job.failing_for(now_ms()), &failure)
                {
                    Decision::RetryIn(delay) => {
                        let (j, owner, message) = (
                            job.clone(),
                            self.owner.clone(),
                            failure.message().to_string(),
                        );
                        let at = now_ms() + delay.as_millis() as i64;
                        let r = store
                            .call(move |s| s.retry_later(&j, &owner, &message, at))
                            .await;
                        if matches!(r, Ok(true)) {
                            crate::metrics::global().retry(&job.source, job.kind.as_str());
                            tracing::warn!(
                                source = %job.source, order_key = %job.order_key, job = job.kind.as_str(),
                                attempt = job.attempts, retry_in = %format_args!("{:.1}s", delay.as_secs_f32()), error = %failure,
                                "job failed; will retry"
                            );
                        }
                        r
                    }
                    Decision::Park(reason) => {
                        let (j, owner, why) = (job.clone(), self.owner.clone(), reason.clone());
                        let r = store.call(move |s| s.park(&j, &owner, &why)).await;
                        if matches!(r, Ok(true)) {
                            tracing::error!(
                                source = %job.source, order_key = %job.order_key, job = job.kind.as_str(),
                                attempts = job.attempts, reason = %reason,
                                "job parked; an operator must look at it (ordersync retry {})", job.order_key
                            );
                        }
                        r
                    }
                }
            }
        }
    }

    /// The daemon's worker for one source: keeps up to
    /// [`write_back_slots`]`(slots)` write-backs (`slots`: the source's
    /// `max_in_flight`) and up to `erp_slots` pushes running
    /// until shutdown, then gives in-flight jobs `grace` to finish. Pushes
    /// wait on the ERP, write-backs on the source: neither kind holds a slot
    /// the other could use.
    pub async fn work(
        self: Arc<Self>,
        source: String,
        slots: usize,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let wake = self.wake.get(&source).cloned().unwrap_or_default();
        let erp_slots = self.erp_slots.max(1);
        let slots = write_back_slots(slots);
        let mut tasks = JoinSet::new();
        let freed = Arc::new(Notify::new());
        let busy_erp = Arc::new(AtomicUsize::new(0));
        let busy_source = Arc::new(AtomicUsize::new(0));
        // A ledger that refuses (full disk, locked file) must not make this
        // loop spin and flood the log: back off, log a repeat once a minute.
        let mut ledger_trouble = crate::throttle::FailureStreak::new();
        // Whether to claim on this turn: not when the turn only reaped a
        // job whose slot was given back (and claimed for) already.
        let mut claim = true;
        let mut idle_until = tokio::time::Instant::now();
        // The jobs this worker has running (until their task is reaped),
        // and whether a claim failed since the last that worked: a claim
        // the ledger committed as its session ended leased jobs to us that
        // we never heard of, freed again by the next claim that works.
        let mut running: HashSet<i64> = HashSet::new();
        let mut claim_in_doubt = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            self.heartbeat.beat();
            if claim {
                let free_erp = erp_slots.saturating_sub(busy_erp.load(Ordering::Acquire));
                let free_source = slots.saturating_sub(busy_source.load(Ordering::Acquire));
                let asked = LeaseClock::now();
                let Claimed {
                    jobs: claimed,
                    next_due,
                } = match self.claim(&source, free_erp, free_source).await {
                    Ok(claimed) => {
                        if let Some(failures) = ledger_trouble.success() {
                            tracing::info!(source = %source, failures, "the ledger gives out jobs again");
                        }
                        claimed
                    }
                    Err(e) => {
                        claim_in_doubt = true;
                        let next = ledger_trouble.failure();
                        if next.log {
                            tracing::error!(
                                source = %source, error = %format!("{e:#}"), failures = next.failures,
                                suppressed = next.suppressed, retry_in = %format_args!("{:.1}s", next.delay.as_secs_f32()),
                                "cannot read jobs from the ledger"
                            );
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(next.delay) => {}
                            _ = shutdown.cancelled() => break,
                        }
                        continue;
                    }
                };
                for job in claimed {
                    let busy = if job.kind.talks_to_erp() {
                        &busy_erp
                    } else {
                        &busy_source
                    };
                    let slot = Slot::take(busy, &freed);
                    let me = Arc::clone(&self);
                    let id = job.id;
                    running.insert(id);
                    tasks.spawn(async move {
                        me.run_job_in(job, asked, Some(slot)).await;
                        id
                    });
                }
                // With every slot busy, the next thing worth doing comes
                // when one frees up. Otherwise the claim took every due job
                // it had room for and said when the next one for the free
                // slots is due (only the kinds there is a free slot for:
                // with every push slot busy and a backlog of due pushes,
                // the worker woke every 5 ms to find them still due, a
                // third of the daemon's CPU per order with a 200 ms remote,
                // see docs/BENCHMARKS.md).
                idle_until = tokio::time::Instant::now() + until_due(next_due);
                if claim_in_doubt {
                    let ids: Vec<i64> = running.iter().copied().collect();
                    let (src, owner) = (source.clone(), self.owner.clone());
                    match self
                        .store
                        .call(move |s| s.release_unrun(&src, &owner, &ids))
                        .await
                    {
                        Ok(freed) => {
                            claim_in_doubt = false;
                            if freed > 0 {
                                tracing::warn!(source = %source, jobs = freed, "freed jobs a failed claim had leased to this worker unheard; they run now");
                                idle_until = tokio::time::Instant::now();
                            }
                        }
                        Err(e) => {
                            tracing::debug!(source = %source, error = %format!("{e:#}"), "could not look for jobs a failed claim leased; trying after the next claim")
                        }
                    }
                }
            }
            claim = true;
            tokio::select! {
                _ = freed.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                    claim = false;
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(idle_until) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if !tasks.is_empty() {
            tracing::info!(source = %source, in_flight = tasks.len(), "waiting for in-flight jobs to finish");
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                tracing::warn!(source = %source, "in-flight jobs cut after the shutdown grace period; they run again at the next start");
                // Aborting a runner aborts its job's task (AbortOnDropHandle);
                // wait until they are gone before the caller releases leases.
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
    }

    /// How long to sleep when there is nothing to do: until the next job of
    /// `class` is due, at most a second (another process may queue work
    /// meanwhile).
    async fn idle_wait(&self, source: &str, class: ClaimFilter<'static>) -> Duration {
        let src = source.to_string();
        let due = self
            .store
            .call(move |s| s.next_due_ms(&src, class))
            .await
            .ok()
            .flatten();
        until_due(due)
    }

    /// Runs jobs to the end (done or parked) — those of `keys`, or all of the
    /// source's when `None` — sharing leases with any running daemon.
    /// `backfill` and the tests use it; the daemon uses [`Engine::work`].
    pub async fn drain(
        self: &Arc<Self>,
        source: &str,
        keys: Option<&[String]>,
        slots: usize,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let keys: Option<Arc<Vec<String>>> = keys.map(|k| Arc::new(k.to_vec()));
        let mut tasks = JoinSet::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = slots.saturating_sub(tasks.len());
            let (src, owner, lease, k) = (
                source.to_string(),
                self.owner.clone(),
                self.lease,
                keys.clone(),
            );
            let asked = LeaseClock::now();
            let claimed = self
                .store
                .call(move |s| {
                    let filter = match k.as_deref() {
                        Some(k) => ClaimFilter::Orders(k),
                        None => ClaimFilter::All,
                    };
                    s.claim(&src, &owner, lease, free, filter)
                })
                .await?;
            for job in claimed {
                let me = Arc::clone(self);
                tasks.spawn(async move { me.run_job(job, asked).await });
            }
            if tasks.is_empty() {
                let (src, k) = (source.to_string(), keys.clone());
                let open = self
                    .store
                    .call(move |s| match k.as_deref() {
                        Some(k) => s.open_jobs_for(k),
                        None => s.open_jobs(&src),
                    })
                    .await?;
                if open == 0 {
                    break;
                }
                let idle = self.idle_wait(source, ClaimFilter::All).await;
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.cancelled() => break,
                }
            } else {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// How many write-backs a source's worker runs at once for a source with
/// `max_in_flight` requests: a quarter more (at least one), so the next
/// write-back has read its order from the ledger and waits at the source's
/// request limit when a request slot frees, instead of being claimed then.
/// Requests stay bounded by `max_in_flight` ([`crate::http::Endpoint`]).
fn write_back_slots(max_in_flight: usize) -> usize {
    let max_in_flight = max_in_flight.max(1);
    max_in_flight + max_in_flight.div_ceil(4)
}

#[cfg(all(test, feature = "sandbox"))]
mod tests {
    use super::*;
    use crate::daemon::{build_engine, poll_live};
    use crate::sandbox::{Faults, MplusApp, SandboxOptions, mplus_app};

    const SOURCE: &str = "till";

    /// One till order, recorded; its push claimed; the ERP holding every
    /// request 300 ms, long enough to stop the ledger after the push went
    /// out and before its answer comes.
    struct Scene {
        app: MplusApp,
        store: Arc<Store>,
        engine: Arc<Engine>,
        key: String,
        job: Job,
        asked: (Instant, SystemTime),
    }

    impl Scene {
        async fn new() -> Scene {
            let mut opts = SandboxOptions::default();
            opts.mplus.seed_orders = 1;
            let app = mplus_app(opts, "").await;
            let store = Arc::new(Store::open(&app.config.daemon.db_path()).unwrap());
            let engine = build_engine(&app.config, Arc::clone(&store)).unwrap();
            let connector = engine.connectors.get(SOURCE).unwrap().clone();
            poll_live(&engine, &connector, &CancellationToken::new()).await;
            let [id] = &app.sandbox.mplus.order_ids()[..] else {
                panic!("one order seeded")
            };
            let key = format!("{SOURCE}:{id}");
            app.sandbox.erp.set_faults(Faults {
                latency: Duration::from_millis(300),
                ..Faults::none()
            });
            let asked = LeaseClock::now();
            let [job] = &store
                .claim(SOURCE, &engine.owner, engine.lease, 1, ClaimFilter::All)
                .unwrap()[..]
            else {
                panic!("the push is due")
            };
            assert_eq!(job.kind, JobKind::Push);
            let job = job.clone();
            Scene {
                app,
                store,
                engine,
                key,
                job,
                asked,
            }
        }

        /// Whether the ledger's connection takes writes: without, every
        /// write fails as on a full disk (`PRAGMA query_only`).
        fn ledger_takes_writes(&self, yes: bool) {
            let pragma = if yes { "OFF" } else { "ON" };
            self.store
                .lock_for_tests()
                .execute_batch(&format!("PRAGMA query_only = {pragma}"))
                .unwrap();
        }

        /// The order's state, read from the ledger file by another handle.
        fn state(&self) -> Option<String> {
            Store::open_read_only(&self.app.config.daemon.db_path())
                .unwrap()
                .order_state(&self.key)
                .unwrap()
                .map(|s| s.to_string())
        }

        fn in_erp(&self) -> usize {
            self.app.sandbox.erp.erp_orders_for(&self.key).len()
        }

        /// Runs the push holding a slot; once it is at the ERP, holds the
        /// ledger until the test lets go (the sender) and waits for the slot
        /// to come back. Returns the runner, still settling.
        async fn push_until_the_slot_is_back(
            &self,
        ) -> (tokio::task::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
            let erp = self.app.sandbox.erp.clone();
            let held = self
                .until_the_slot_is_back(self.job.clone(), self.asked, move || erp.request_count())
                .await;
            assert_eq!(self.in_erp(), 1);
            held
        }

        /// Runs `job` holding a slot; once `sent` counts its request, holds
        /// the ledger until the test lets go (the sender) and waits for the
        /// slot to come back. Returns the runner, still settling.
        async fn until_the_slot_is_back(
            &self,
            job: Job,
            asked: (Instant, SystemTime),
            sent: impl Fn() -> u64,
        ) -> (tokio::task::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
            let state = self.state();
            let (busy, freed) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
            let slot = Slot::take(&busy, &freed);
            assert_eq!(busy.load(Ordering::Acquire), 1);
            let before = sent();
            let runner = {
                let engine = Arc::clone(&self.engine);
                tokio::spawn(async move { engine.run_job_in(job, asked, Some(slot)).await })
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while sent() == before {
                assert!(
                    Instant::now() < deadline,
                    "the job's request never went out"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (release, held) = std::sync::mpsc::channel::<()>();
            let store = Arc::clone(&self.store);
            tokio::spawn(async move { store.call(move |_| held.recv().is_ok()).await });
            tokio::time::timeout(Duration::from_secs(10), freed.notified())
                .await
                .expect("the slot came back while the result waited for the ledger");
            assert_eq!(busy.load(Ordering::Acquire), 0);
            assert!(!runner.is_finished(), "the result cannot be settled yet");
            assert_eq!(self.state(), state, "not settled yet");
            (runner, release)
        }

        /// What a killed process leaves: the runner and its result gone,
        /// nothing settled, then (once the ledger is free) its lease run
        /// out. The next runner then drains the source.
        async fn kill_and_recover(
            &self,
            runner: tokio::task::JoinHandle<()>,
            release: std::sync::mpsc::Sender<()>,
            job: &Job,
        ) {
            runner.abort();
            let _ = runner.await;
            release.send(()).unwrap();
            self.store
                .lock_for_tests()
                .execute("UPDATE jobs SET lease_until = 0 WHERE id = ?1", [job.id])
                .unwrap();
            self.app.sandbox.erp.set_faults(Faults::none());
            self.app.sandbox.mplus.set_faults(Faults::none());
            let next = build_engine(&self.app.config, Arc::clone(&self.store)).unwrap();
            next.drain(SOURCE, None, 4, &CancellationToken::new())
                .await
                .unwrap();
        }
    }

    /// A push whose ERP answer has come gives its slot back at once, while
    /// its result still waits for the ledger: the worker can start the
    /// next job meanwhile, and results queue up to be settled together.
    /// The result is recorded once the ledger is free, and the ERP holds
    /// the order exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_gives_its_slot_back_when_its_remote_answered_before_its_result_is_settled() {
        let scene = Scene::new().await;
        let (runner, release) = scene.push_until_the_slot_is_back().await;
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .expect("the job ends once the ledger is free")
            .unwrap();
        assert_eq!(scene.state().as_deref(), Some("pushed"));
        assert_eq!(scene.in_erp(), 1, "pushed once");
    }

    /// A claim the ledger committed while the worker heard only an error
    /// (the session ended as it committed) leased a job to this worker
    /// that it never ran. The next claim that works frees it, and it runs
    /// at once instead of after its lease (150 s here): pushed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_a_failed_claim_leased_unheard_is_freed_by_the_next_claim_and_runs() {
        // The scene's own claim is the one whose answer was lost: the push
        // is leased to the engine, and nothing runs it.
        let scene = Scene::new().await;
        scene.app.sandbox.erp.set_faults(Faults::none());
        // The worker's first claims fail: the ledger takes no writes.
        scene.ledger_takes_writes(false);
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(Arc::clone(&scene.engine).work(
            SOURCE.to_string(),
            2,
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(scene.state().as_deref(), Some("queued"));
        scene.ledger_takes_writes(true);
        let deadline = Instant::now() + Duration::from_secs(20);
        while scene.state().as_deref() == Some("queued") {
            assert!(
                Instant::now() < deadline,
                "the job leased unheard was not freed: it waits for its lease"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        worker.await.unwrap();
        assert_ne!(scene.state().as_deref(), Some("queued"));
        assert_eq!(scene.in_erp(), 1, "pushed once");
    }

    /// A result the ledger refuses for a moment (here it takes no writes,
    /// as on a full disk or while PostgreSQL restarts) is offered again
    /// while the job's lease lasts, and lands once the ledger takes writes
    /// again: the order does not wait out its lease (150 s here) and the
    /// push is not repeated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_the_ledger_refuses_for_a_moment_lands_when_it_takes_writes_again() {
        let scene = Scene::new().await;
        let erp = scene.app.sandbox.erp.clone();
        let before = erp.request_count();
        let runner = {
            let (engine, job, asked) = (Arc::clone(&scene.engine), scene.job.clone(), scene.asked);
            tokio::spawn(async move { engine.run_job(job, asked).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while erp.request_count() == before {
            assert!(Instant::now() < deadline, "the push never went out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The ERP holds the push 300 ms; meanwhile the ledger stops taking
        // writes, and its result is refused (more than once).
        scene.ledger_takes_writes(false);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(scene.state().as_deref(), Some("queued"), "not recorded yet");
        assert!(!runner.is_finished(), "the result is still offered");
        scene.ledger_takes_writes(true);
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .expect("the result lands once the ledger takes writes")
            .unwrap();
        assert_eq!(scene.state().as_deref(), Some("pushed"));
        assert_eq!(scene.in_erp(), 1, "one ERP order");
        assert_eq!(erp.request_count() - before, 1, "pushed once");
    }

    /// The process dies while a result waits for the ledger (the slot is
    /// free, the ERP has the order, the ledger does not know): once the
    /// lease has run out, the next runner (its attempt in doubt) pushes
    /// again under the same order key, which the ERP contract answers with
    /// the order it holds: recorded, its write-back done, one ERP order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_lost_while_it_waited_for_the_ledger_is_found_again_and_not_doubled() {
        let scene = Scene::new().await;
        let (runner, release) = scene.push_until_the_slot_is_back().await;
        scene.kill_and_recover(runner, release, &scene.job).await;
        assert_eq!(scene.in_erp(), 1, "never pushed twice");
        assert!(
            matches!(scene.state().as_deref(), Some("accepted" | "completed")),
            "{:?}",
            scene.state()
        );
    }

    /// The same for a write-back: the till has the ERP number, the slot is
    /// free, the process dies before the ledger records it. After the lease
    /// runs out the next runner claims the write-back again (in doubt),
    /// reads the till, finds the reference there and records it: the job
    /// does not stay stuck at "pushed" and the till's order changed once.
    /// (MplusKASSA's updateOrder would answer NO-CHANGES to a repeat, so
    /// what this guards is the recovery, not the till's own idempotency.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_back_lost_while_it_waited_for_the_ledger_is_found_again() {
        let scene = Scene::new().await;
        scene.engine.run_job(scene.job.clone(), scene.asked).await;
        assert_eq!(scene.state().as_deref(), Some("pushed"));
        let id = scene
            .key
            .trim_start_matches(&format!("{SOURCE}:"))
            .to_string();
        let till = scene.app.sandbox.mplus.clone();
        till.set_faults(Faults {
            latency: Duration::from_millis(300),
            ..Faults::none()
        });
        let asked = LeaseClock::now();
        let [job] = &scene
            .store
            .claim(
                SOURCE,
                &scene.engine.owner,
                scene.engine.lease,
                1,
                ClaimFilter::All,
            )
            .unwrap()[..]
        else {
            panic!("the write-back is due")
        };
        assert_eq!(job.kind, JobKind::WriteAccepted);
        let counted = till.clone();
        let (runner, release) = scene
            .until_the_slot_is_back(job.clone(), asked, move || counted.request_count())
            .await;
        assert_eq!(till.updates(&id), 1, "the write-back reached the till");
        scene.kill_and_recover(runner, release, job).await;
        assert_eq!(till.updates(&id), 1, "never written twice");
        assert!(
            matches!(scene.state().as_deref(), Some("accepted" | "completed")),
            "{:?}",
            scene.state()
        );
    }
}
