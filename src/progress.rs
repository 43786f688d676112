//! `backfill`'s progress: how many orders of the window were read, recorded,
//! pushed and parked, with a rate and an ETA. On a terminal it is a live bar
//! (indicatif) under the log lines; elsewhere (journald, a file) it is an
//! INFO line every [`LINE_EVERY`] and one at the end, for whoever tails it.
//!
//! Read and recorded are counted as pages are ingested; pushed and parked are
//! read from the ledger (so orders a running daemon pushes count too), for
//! the orders this run queued.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::store::{IngestReport, OrderNote, Store};

/// How often the INFO line is written when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(10);
/// How often the bar's counts are refreshed from the ledger.
const BAR_EVERY: Duration = Duration::from_secs(1);

/// The bar on screen, if any: log lines are written above it (see [`Stderr`]).
static ACTIVE_BAR: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// The counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Orders the walks listed (read again or known unchanged).
    pub read: usize,
    /// Orders this run wrote to the ledger (new, or changed at the source).
    pub recorded: usize,
    /// Orders this run queued for the ERP.
    pub to_push: usize,
    /// Of those, in the ERP by now.
    pub pushed: usize,
    /// Parked: recorded unmappable, or queued with a job parked since.
    pub parked: usize,
    /// Queued orders pushed or parked: the ones the rate and ETA count.
    pub settled: usize,
    /// Jobs of those orders still to run (pushes, "accepted" write-backs).
    pub jobs_open: usize,
    /// Since the first order was queued.
    pub pushing_for: Duration,
}

impl Snapshot {
    /// Orders settled per second since the first was queued.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.pushing_for.as_secs_f64();
        (secs > 0.0 && self.settled > 0).then(|| self.settled as f64 / secs)
    }

    /// At the current rate, how long until every queued order is settled.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.to_push.saturating_sub(self.settled);
        self.rate()
            .map(|r| Duration::from_secs_f64((left as f64 / r).min(30.0 * 86_400.0)))
    }

    fn rate_text(&self) -> String {
        self.rate()
            .map_or_else(|| "-".into(), |r| format!("{r:.1}/s"))
    }

    fn eta_text(&self) -> String {
        if self.to_push > 0 && self.settled >= self.to_push {
            return "0s".into();
        }
        match self.eta() {
            Some(d) => crate::config::format_duration(Duration::from_secs(d.as_secs().max(1))),
            None => "-".into(),
        }
    }
}

#[derive(Default)]
struct Counts {
    read: AtomicUsize,
    recorded: AtomicUsize,
    invalid: AtomicUsize,
    queued: Mutex<Vec<String>>,
    first_queued: Mutex<Option<Instant>>,
}

/// The progress of one backfill run; cheap to clone into the walk.
#[derive(Clone)]
pub struct Progress {
    counts: Arc<Counts>,
    store: Arc<Store>,
    bar: Option<ProgressBar>,
    stop: CancellationToken,
    reporter: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Progress {
    /// Starts reporting: a bar when stderr is a terminal, else INFO lines
    /// every `line_every`.
    pub fn start(store: Arc<Store>, line_every: Duration) -> Progress {
        let bar = std::io::stderr().is_terminal().then(new_bar);
        let progress = Progress {
            counts: Arc::default(),
            store,
            bar: bar.clone(),
            stop: CancellationToken::new(),
            reporter: Arc::default(),
        };
        if let Some(b) = &bar {
            *ACTIVE_BAR.write().unwrap_or_else(|p| p.into_inner()) = Some(b.clone());
        }
        let every = if bar.is_some() { BAR_EVERY } else { line_every };
        let me = progress.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is now: nothing to say yet
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = me.stop.cancelled() => break,
                }
                me.report().await;
            }
        });
        *progress.reporter.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        progress
    }

    /// A page was read and ingested: `listed` orders, `report` what the
    /// ledger made of them.
    pub fn page(&self, listed: usize, report: &IngestReport) {
        let c = &self.counts;
        c.read.fetch_add(listed, Ordering::Relaxed);
        c.recorded.fetch_add(report.notes.len(), Ordering::Relaxed);
        let mut queued = Vec::new();
        for note in &report.notes {
            match note {
                OrderNote::Queued(key) => queued.push(key.clone()),
                OrderNote::Invalid { .. } => {
                    c.invalid.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if !queued.is_empty() {
            c.first_queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(Instant::now);
            c.queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(queued);
        }
    }

    /// The counts now; pushed and parked come from the ledger.
    pub async fn snapshot(&self) -> Snapshot {
        let c = &self.counts;
        let keys = c.queued.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let store = Arc::clone(&self.store);
        let outcomes = tokio::task::spawn_blocking(move || store.push_outcomes(&keys))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let to_push = c.queued.lock().unwrap_or_else(|p| p.into_inner()).len();
        let pushing_for = c
            .first_queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
            .unwrap_or_default();
        Snapshot {
            read: c.read.load(Ordering::Relaxed),
            recorded: c.recorded.load(Ordering::Relaxed),
            to_push,
            pushed: outcomes.pushed,
            parked: outcomes.parked + c.invalid.load(Ordering::Relaxed),
            settled: outcomes.settled,
            jobs_open: outcomes.open_jobs,
            pushing_for,
        }
    }

    async fn report(&self) {
        let s = self.snapshot().await;
        match &self.bar {
            Some(bar) => {
                bar.set_length(s.to_push as u64);
                bar.set_position(s.settled as u64);
                bar.set_message(format!(
                    "read {} · recorded {} · pushed {} · parked {} · {} · ETA {} · {} job(s) open",
                    s.read,
                    s.recorded,
                    s.pushed,
                    s.parked,
                    s.rate_text(),
                    s.eta_text(),
                    s.jobs_open
                ));
            }
            None => tracing::info!(
                read = s.read,
                recorded = s.recorded,
                to_push = s.to_push,
                pushed = s.pushed,
                parked = s.parked,
                rate = %s.rate_text(),
                eta = %s.eta_text(),
                jobs_open = s.jobs_open,
                "backfill progress"
            ),
        }
    }

    /// Runs `f` (e.g. a `println!`) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Stops reporting after a last report with the final counts.
    pub async fn finish(&self) -> Snapshot {
        self.stop.cancel();
        let handle = self
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        self.report().await;
        if let Some(bar) = &self.bar {
            // Left as it stands (`finish` would fill the bar, done or not).
            bar.abandon();
            *ACTIVE_BAR.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.snapshot().await
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} backfill [{wide_bar}] {pos}/{len} pushed or parked\n  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Log output to stderr, written above the progress bar while one is shown
/// (the bar is cleared, the line written, the bar drawn again).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.read().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_follow_the_settled_orders() {
        let s = Snapshot {
            read: 120,
            recorded: 100,
            to_push: 100,
            pushed: 38,
            parked: 2,
            settled: 40,
            jobs_open: 60,
            pushing_for: Duration::from_secs(20),
        };
        assert_eq!(s.rate(), Some(2.0));
        assert_eq!(s.eta(), Some(Duration::from_secs(30)));
        assert_eq!(
            (s.rate_text(), s.eta_text()),
            ("2.0/s".into(), "30s".into())
        );
        let none_yet = Snapshot { settled: 0, ..s };
        assert_eq!((none_yet.rate(), none_yet.eta_text()), (None, "-".into()));
        let done = Snapshot { settled: 100, ..s };
        assert_eq!(done.eta_text(), "0s");
    }
}
