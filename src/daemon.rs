//! The long-running process: a poller per source and one for ERP shipments,
//! fired by tokio-cron-scheduler (cron jobs only: its interval jobs can stop
//! firing under load, issue #113), and a job worker per source. Shutdown is
//! a `CancellationToken`: no new polls or jobs, in-flight calls get the grace
//! period, everything already committed stays committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::erp::Erp;
use crate::health;
use crate::outbox::Engine;
use crate::outbox::policy::RetryPolicy;
pub use crate::poll::{
    PollSummary, Polled, poll_cancellations, poll_live, poll_shipments, poll_source,
    poll_source_with, poll_trouble, read_page,
};
use crate::sources::{Connector, PrepareError};
use crate::store::{Store, lease_owner};

/// Builds the engine: opens the ledger, reads every secret, builds every
/// connector. Config problems come back as [`ConfigError`] (exit code 2).
pub fn build_engine(config: &Config, store: Arc<Store>) -> anyhow::Result<Arc<Engine>> {
    let erp = Erp::from_config(config)?;
    let mut connectors = HashMap::new();
    let mut wake = HashMap::new();
    let mut recheck_every = HashMap::new();
    let mut overlap = HashMap::new();
    for source in config.sources.iter().filter(|s| s.enabled) {
        let c = Connector::from_config(config, source)?;
        connectors.insert(source.name.clone(), Arc::new(c));
        wake.insert(source.name.clone(), Arc::new(Notify::new()));
        recheck_every.insert(source.name.clone(), source.recheck_every);
        overlap.insert(
            source.name.clone(),
            (source.lookback, source.lookback_every),
        );
    }
    let owner = lease_owner();
    Ok(Arc::new(Engine {
        store,
        erp: Arc::new(erp),
        connectors,
        policy: RetryPolicy {
            initial: config.daemon.retry_initial,
            max: config.daemon.retry_max,
            max_attempts: config.daemon.max_attempts,
            give_up_after: config.daemon.give_up_after,
        },
        settler: super::outbox::Settler::new(&owner),
        owner,
        // A job's calls are bounded by the request timeout; a few of them
        // (read, patch, put) plus slack.
        lease: config.daemon.request_timeout * 4 + Duration::from_secs(30),
        erp_slots: config.erp.push_slots(),
        wake,
        heartbeat: Arc::new(crate::health::Heartbeat::default()),
        poll_trouble: Default::default(),
        pulled_forward: Default::default(),
        fresh: Default::default(),
        recheck_every,
        overlap: crate::poll::overlap::Overlap::new(overlap),
        membership: Default::default(),
    }))
}

/// Runs every connector's start-up step (e.g. resolving per-shop status
/// names). A configuration that does not fit the remote is a [`ConfigError`]
/// (exit 2); a remote that cannot be reached is only logged: the connector
/// tries again on first use, so the daemon keeps going with backoff.
pub async fn prepare_connectors(engine: &Engine) -> Result<(), ConfigError> {
    let mut names: Vec<&String> = engine.connectors.keys().collect();
    names.sort();
    for name in names {
        let Some(connector) = engine.connectors.get(name) else {
            continue;
        };
        match connector.prepare().await {
            Ok(()) => {}
            Err(PrepareError::Config(e)) => return Err(e),
            Err(PrepareError::Remote(f)) => {
                tracing::warn!(source = %name, error = %f, "start-up step failed; the source tries again when it is first used")
            }
        }
    }
    Ok(())
}

/// A task that runs `work` each time `trigger` fires, one run at a time.
fn spawn_triggered<F, Fut>(
    trigger: Arc<Notify>,
    shutdown: CancellationToken,
    mut work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = trigger.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            // A panic in one run (remote data no check foresaw) ends that
            // run, never the task: the next trigger runs again (issue 12.5).
            let run = std::panic::AssertUnwindSafe(work());
            if let Err(panic) = futures_util::FutureExt::catch_unwind(run).await {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(error = %crate::secret::redact(&what), "internal error in a poll; it runs again at the next schedule");
            }
        }
    })
}

async fn cron(scheduler: &JobScheduler, expr: &str, trigger: Arc<Notify>) -> anyhow::Result<()> {
    let job = CronJob::new_async(expr, move |_, _| {
        let t = Arc::clone(&trigger);
        Box::pin(async move { t.notify_one() })
    })
    .map_err(|e| ConfigError(format!("invalid schedule {expr:?}: {e}")))?;
    scheduler.add(job).await?;
    Ok(())
}

/// Checks health on the watchdog's beat: WATCHDOG=1 only while healthy, so
/// systemd restarts a daemon whose engine is stuck or whose sources stopped
/// polling. Also keeps `STATUS=` current and the ledger heartbeat fresh.
fn spawn_watchdog(
    engine: Arc<Engine>,
    config: Config,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let started = crate::store::now_ms();
    let every = health::notify::watchdog_interval()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(10))
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    tokio::spawn(async move {
        // Checks keep the watchdog's pace; the streak only spaces the log
        // lines of a lasting problem (the first, then one a minute).
        let mut unhealthy = crate::throttle::FailureStreak::new();
        loop {
            let (e, c) = (Arc::clone(&engine), config.clone());
            let verdict = tokio::task::spawn_blocking(move || {
                health::check(&e.heartbeat, &e.store, &c, started).map(|_| status_line(&e, &c))
            })
            .await
            .unwrap_or_else(|e| Err(format!("health check failed: {e}")));
            match verdict {
                Ok(line) => {
                    health::notify::watchdog();
                    health::notify::status(&line);
                    if let Some(checks) = unhealthy.success() {
                        tracing::info!(failed_checks = checks, "healthy again");
                    }
                }
                Err(reason) => {
                    health::notify::status(&format!("UNHEALTHY: {reason}"));
                    let next = unhealthy.failure();
                    if next.log {
                        tracing::error!(reason = %reason, failed_checks = next.failures, "unhealthy; the systemd watchdog will restart the daemon if this lasts");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    })
}

/// Completed orders pruned per transaction: short, so the ledger stays
/// free for the workers between batches.
const PRUNE_BATCH: usize = 200;

/// Prunes orders that ended longer ago than `retain` (`daemon.retain`), at
/// start and then once an hour, in small batches.
fn spawn_retention(
    engine: Arc<Engine>,
    retain: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let age = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
            let cutoff = crate::store::now_ms().saturating_sub(age);
            let mut pruned = 0;
            while !shutdown.is_cancelled() {
                let store = Arc::clone(&engine.store);
                match tokio::task::spawn_blocking(move || store.prune_ended(cutoff, PRUNE_BATCH))
                    .await
                {
                    Ok(Ok(n)) => {
                        pruned += n;
                        if n < PRUNE_BATCH {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %format!("{e:#}"), "pruning old ended orders failed; next hour tries again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning old ended orders failed; next hour tries again");
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::info!(orders = pruned, retain = %crate::config::format_duration(retain), "pruned the raw payload, attempts and events of orders that ended longer ago than daemon.retain");
            }
        }
    })
}

/// One line for `systemctl status`: queue and parked counts.
fn status_line(engine: &Engine, config: &Config) -> String {
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    match engine.store.status(&names) {
        Ok(r) => {
            let get = |k: &str| r.orders.get(k).copied().unwrap_or(0);
            format!(
                "{} source(s); {} queued, {} in flight to the source, {} completed, {} parked",
                engine.connectors.len(),
                get("queued"),
                get("pushed") + get("accepted") + get("shipped"),
                get("completed"),
                r.parked.len()
            )
        }
        Err(e) => format!("status unavailable: {e:#}"),
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Arc::new(Store::for_config(&config)?);
    let freed = store.release_dead_leases()?;
    if freed > 0 {
        tracing::info!(
            jobs = freed,
            "released leases of a previous run that did not stop cleanly"
        );
    }
    let engine = build_engine(&config, Arc::clone(&store))?;
    prepare_connectors(&engine).await?;
    // A shared ledger: this process is one node of a fleet (crate::fleet).
    let mut pollers: HashMap<String, Arc<Notify>> = HashMap::new();
    let mut scheduler = JobScheduler::new().await?;
    let mut tasks = Vec::new();
    let grace = config.daemon.shutdown_grace;
    let work_stop = CancellationToken::new();

    for source in config.sources.iter().filter(|s| s.enabled) {
        let Some(connector) = engine.connectors.get(&source.name).cloned() else {
            continue;
        };
        let trigger = Arc::new(Notify::new());
        cron(&scheduler, &source.schedule, Arc::clone(&trigger)).await?;
        let (e, sd) = (Arc::clone(&engine), shutdown.clone());
        tasks.push(spawn_triggered(
            Arc::clone(&trigger),
            shutdown.clone(),
            move || {
                let (e, c, sd) = (Arc::clone(&e), Arc::clone(&connector), sd.clone());
                async move {
                    // On a fleet, only the node holding the poll lease polls.
                    if crate::fleet::may_poll(&e.store, c.name()) {
                        poll_live(&e, &c, &sd).await
                    }
                }
            },
        ));
        pollers.insert(source.name.clone(), Arc::clone(&trigger));
        trigger.notify_one(); // first poll at startup, not at the first tick
        tasks.push(tokio::spawn(Arc::clone(&engine).work(
            source.name.clone(),
            source.max_in_flight,
            work_stop.clone(),
            grace,
        )));
        tracing::info!(source = %source.name, kind = source.kind.as_str(), schedule = %source.schedule, "source enabled");
    }
    let ship_trigger = Arc::new(Notify::new());
    cron(
        &scheduler,
        &config.daemon.shipments_schedule,
        Arc::clone(&ship_trigger),
    )
    .await?;
    {
        let (e, sd) = (Arc::clone(&engine), shutdown.clone());
        tasks.push(spawn_triggered(Arc::clone(&ship_trigger), shutdown.clone(), move || {
            let (e, sd) = (Arc::clone(&e), sd.clone());
            async move {
                if !crate::fleet::may_poll(&e.store, crate::store::fence::ERP_FEED) {
                    return;
                }
                // Logged as a source's failing polls are: when the trouble
                // starts, then once a minute with the count.
                let shipments = poll_shipments(&e, &sd).await;
                if let Some(n) = poll_trouble(&e, Polled::ErpFeed("shipments"), shipments.is_err()).filter(|n| n.log)
                    && let Err(error) = &shipments
                {
                    tracing::warn!(error = %error, failures = n.failures, suppressed = n.suppressed, "reading ERP shipments failed; the next scheduled poll tries again");
                }
                let cancellations = poll_cancellations(&e, &sd).await;
                if let Some(n) = poll_trouble(&e, Polled::ErpFeed("cancellations"), cancellations.is_err()).filter(|n| n.log)
                    && let Err(error) = &cancellations
                {
                    tracing::warn!(error = %error, failures = n.failures, suppressed = n.suppressed, "reading ERP cancellations failed; the next scheduled poll tries again");
                }
            }
        }));
    }
    pollers.insert(
        crate::store::fence::ERP_FEED.to_string(),
        Arc::clone(&ship_trigger),
    );
    if let Some(ledger) = config.ledger.as_ref().filter(|_| store.is_shared()) {
        // The fleet's own connection: a busy engine never delays a heartbeat.
        let own = Store::for_fleet(&config)?
            .map(Arc::new)
            .ok_or_else(|| anyhow::anyhow!("the fleet needs the PostgreSQL ledger"))?;
        tasks.push(crate::fleet::spawn(
            engine.owner.clone(),
            engine.membership.clone(),
            Arc::clone(&store),
            own,
            pollers,
            crate::fleet::FleetTiming::from_heartbeat(ledger.heartbeat),
            shutdown.clone(),
        ));
    }
    scheduler.start().await?;
    engine.heartbeat.beat();
    if let Some(addr) = config.daemon.metrics_listen {
        let (bound, handle) = crate::metrics::serve(
            addr,
            Arc::clone(&engine),
            Arc::new(config.clone()),
            shutdown.clone(),
        )
        .await?;
        tracing::info!(listen = %bound, "serving /metrics and /healthz");
        tasks.push(handle);
    }
    tasks.push(spawn_watchdog(
        Arc::clone(&engine),
        config.clone(),
        shutdown.clone(),
    ));
    if let Some(retain) = config.daemon.retain {
        tasks.push(spawn_retention(
            Arc::clone(&engine),
            retain,
            shutdown.clone(),
        ));
    }
    // Config loaded, ledger open and migrated, every secret read: ready.
    health::notify::ready();
    tracing::info!(ledger = %store.describe(), sources = engine.connectors.len(), "ordersync running");

    shutdown.cancelled().await;
    health::notify::stopping();
    tracing::info!(
        grace_s = grace.as_secs(),
        "shutting down: no new polls or jobs; letting in-flight work finish"
    );
    let _ = scheduler.shutdown().await;
    work_stop.cancel();
    let all = futures_util::future::join_all(tasks);
    if tokio::time::timeout(grace + Duration::from_secs(1), all)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within the grace period");
    }
    // The work stopped cleanly either way: leases the ledger cannot take
    // back now end on their own, and their jobs run again then.
    match store.release_leases(&engine.owner) {
        Ok(released) => tracing::info!(released_leases = released, "ordersync stopped"),
        Err(e) => tracing::warn!(
            error = %format!("{e:#}"),
            lease_s = engine.lease.as_secs(),
            "ordersync stopped; cannot give its job leases back to the ledger, so they end on their own"
        ),
    }
    Ok(())
}
