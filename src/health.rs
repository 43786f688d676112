//! Is the daemon doing its job? One answer for systemd's watchdog, `/healthz`
//! and `status --check`: the engine loop is turning, the ledger takes writes,
//! and every enabled source has polled within three of its schedule periods
//! (a scheduler that silently stops firing is caught here, whatever its cause).
//! `/healthz` and `status --check` also name sources whose polls keep failing
//! ([`failing_sources`]); the watchdog does not, as a restart cannot heal a
//! remote.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;

use crate::config::{Config, SourceConfig};
use crate::store::{Store, now_ms};

/// How long the engine loop may go without a turn before it counts as stuck.
/// Every worker turns at least once a second, even when idle.
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// The time between two runs of a cron schedule (seconds first).
pub fn schedule_period(expr: &str) -> Option<Duration> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .ok()?;
    let first = cron.find_next_occurrence(&Utc::now(), false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    (second - first).to_std().ok()
}

/// Sources that have not polled successfully-or-not within three periods.
/// `since_ms`: when the daemon started (a fresh start gets three periods of grace).
pub fn stale_sources(
    store: &Store,
    config: &Config,
    since_ms: Option<i64>,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let rows = store.source_rows(&names)?;
    let now = now_ms();
    let mut stale = Vec::new();
    for s in config.sources.iter().filter(|s| s.enabled) {
        let allowed = allowed_gap(s);
        if let Some(start) = since_ms
            && now - start < allowed
        {
            continue;
        }
        let last = rows
            .iter()
            .find(|r| r.name == s.name)
            .and_then(|r| r.last_poll_ms);
        match last {
            Some(t) if now - t <= allowed => {}
            Some(t) => stale.push(format!(
                "{} last polled {}s ago (schedule {:?}, allowed {}s)",
                s.name,
                (now - t) / 1000,
                s.schedule,
                allowed / 1000
            )),
            None => stale.push(format!("{} has never polled", s.name)),
        }
    }
    Ok(stale)
}

/// Sources whose polls keep failing: the last one failed, none has
/// succeeded within three schedule periods, and no poll under way has got
/// further than the failed one. They still poll, so they are not
/// stale, yet nothing of theirs is recorded (one bad order in a list used to
/// do this, issue 12.12).
pub fn failing_sources(store: &Store, config: &Config) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let rows = store.source_rows(&names)?;
    let now = now_ms();
    let mut failing = Vec::new();
    for s in config.sources.iter().filter(|s| s.enabled) {
        let Some(row) = rows.iter().find(|r| r.name == s.name) else {
            continue;
        };
        let Some(error) = &row.last_error else {
            continue;
        };
        let allowed = allowed_gap(s);
        if row.past_last_failure() && row.last_poll_ms.is_some_and(|t| now - t <= allowed) {
            // A poll under way got further than the failed one: a long
            // walk after a full disk or an outage is draining, not failing.
            continue;
        }
        let since = match row.last_success_ms {
            Some(t) if now - t <= allowed => continue,
            Some(t) => format!("last success {}s ago", (now - t) / 1000),
            None => "no poll has succeeded yet".to_string(),
        };
        let error: String = error.chars().take(300).collect();
        failing.push(format!(
            "{}: polls keep failing ({since}, allowed {}s): {error}",
            s.name,
            allowed / 1000
        ));
    }
    Ok(failing)
}

fn allowed_gap(s: &SourceConfig) -> i64 {
    let period = schedule_period(&s.schedule).unwrap_or(Duration::from_secs(60));
    // Three periods, plus room for one slow poll.
    (period * 3 + Duration::from_secs(30)).as_millis() as i64
}

/// The daemon's own liveness, shared by its loops.
#[derive(Default)]
pub struct Heartbeat(AtomicI64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        let last = self.0.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(last).max(0) as u64)
    }
}

/// The full check: engine loop, ledger writable, sources fresh.
pub fn check(
    heartbeat: &Heartbeat,
    store: &Store,
    config: &Config,
    started_ms: i64,
) -> Result<(), String> {
    let any_source = config.sources.iter().any(|s| s.enabled);
    if any_source && heartbeat.age() > STUCK_AFTER {
        return Err(format!(
            "engine loop stuck for {}s",
            heartbeat.age().as_secs()
        ));
    }
    store
        .write_heartbeat()
        .map_err(|e| format!("ledger not writable: {e:#}"))?;
    let stale = stale_sources(store, config, Some(started_ms))
        .map_err(|e| format!("ledger not readable: {e:#}"))?;
    if !stale.is_empty() {
        return Err(format!("sources not polling: {}", stale.join("; ")));
    }
    Ok(())
}

/// What `/healthz` reports: [`check`], and sources whose polls keep failing.
pub fn report(
    heartbeat: &Heartbeat,
    store: &Store,
    config: &Config,
    started_ms: i64,
) -> Result<(), String> {
    check(heartbeat, store, config, started_ms)?;
    let failing =
        failing_sources(store, config).map_err(|e| format!("ledger not readable: {e:#}"))?;
    if !failing.is_empty() {
        return Err(format!("sources failing: {}", failing.join("; ")));
    }
    Ok(())
}

/// systemd notifications; all no-ops when not started by systemd.
pub mod notify {
    use sd_notify::NotifyState;

    pub fn ready() {
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }

    pub fn stopping() {
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
    }

    pub fn watchdog() {
        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
    }

    pub fn status(line: &str) {
        let _ = sd_notify::notify(&[NotifyState::Status(line)]);
    }

    pub fn watchdog_interval() -> Option<std::time::Duration> {
        sd_notify::watchdog_enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_of_common_schedules() {
        assert_eq!(
            schedule_period("0 */2 * * * *"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            schedule_period("*/5 * * * * *"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            schedule_period("0 * * * * *"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(schedule_period("every minute"), None);
    }
}
