//! Backoff and log throttling for loops that can fail over and over (a full
//! disk, a listener out of file descriptors). A [`FailureStreak`] answers two
//! questions after each failure: how long to wait before the next try
//! (exponential, capped, back to the start after a success) and whether to
//! log this failure (the first one, then at most once per interval, telling
//! how many repeats were not logged in between).
//!
//! ```
//! # use ordersync::throttle::FailureStreak;
//! # async fn read_jobs() -> Result<(), String> { Ok(()) }
//! # async fn example() {
//! let mut streak = FailureStreak::new();
//! loop {
//!     match read_jobs().await {
//!         Ok(()) => {
//!             if let Some(failures) = streak.success() {
//!                 tracing::info!(failures, "reading jobs works again");
//!             }
//!             break;
//!         }
//!         Err(e) => {
//!             let next = streak.failure();
//!             if next.log {
//!                 tracing::error!(error = %e, suppressed = next.suppressed, retry_in_ms = next.delay.as_millis() as u64, "cannot read jobs from the ledger");
//!             }
//!             tokio::time::sleep(next.delay).await;
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! Time is passed in ([`FailureStreak::failure_at`]) so tests need no sleeping.

use std::time::{Duration, Instant};

/// The first delay after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two tries.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// A repeated failure is logged at most once per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// What to do after one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// Wait this long before trying again.
    pub delay: Duration,
    /// Log this failure now (the first of a streak, or the interval passed).
    pub log: bool,
    /// When `log`: how many failures since the last logged one were not
    /// logged. Zero otherwise.
    pub suppressed: u64,
    /// Failures in this streak, this one included.
    pub failures: u64,
}

/// Consecutive failures of one loop; see the module documentation.
#[derive(Debug, Clone)]
pub struct FailureStreak {
    first_delay: Duration,
    max_delay: Duration,
    log_every: Duration,
    failures: u64,
    suppressed: u64,
    last_logged: Option<Instant>,
}

impl Default for FailureStreak {
    fn default() -> Self {
        Self::new()
    }
}

impl FailureStreak {
    /// 100 ms doubling up to 30 s; a repeat logged at most once a minute.
    pub fn new() -> Self {
        Self::with(FIRST_DELAY, MAX_DELAY, LOG_EVERY)
    }

    pub fn with(first_delay: Duration, max_delay: Duration, log_every: Duration) -> Self {
        FailureStreak {
            first_delay,
            max_delay: max_delay.max(first_delay),
            log_every,
            failures: 0,
            suppressed: 0,
            last_logged: None,
        }
    }

    /// One more failure, now.
    pub fn failure(&mut self) -> Next {
        self.failure_at(Instant::now())
    }

    /// One more failure at `now`.
    pub fn failure_at(&mut self, now: Instant) -> Next {
        self.failures = self.failures.saturating_add(1);
        let log = match self.last_logged {
            None => true,
            Some(at) => now.saturating_duration_since(at) >= self.log_every,
        };
        let suppressed = if log {
            self.last_logged = Some(now);
            std::mem::take(&mut self.suppressed)
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            0
        };
        Next {
            delay: self.delay(),
            log,
            suppressed,
            failures: self.failures,
        }
    }

    /// The loop worked. Returns the length of the streak that just ended
    /// (for a "works again" line), or None when there was none.
    pub fn success(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        self.suppressed = 0;
        self.last_logged = None;
        (failures > 0).then_some(failures)
    }

    /// Failures in the current streak (0 after a success).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// first_delay × 2^(failures-1), capped.
    fn delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(31) as u32;
        self.first_delay
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_from_100ms_up_to_30s_and_restart_after_success() {
        let t0 = Instant::now();
        let mut s = FailureStreak::new();
        let delays: Vec<Duration> = (0..12).map(|_| s.failure_at(t0).delay).collect();
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(12800),
                ms(25600),
                ms(30000),
                ms(30000),
                ms(30000)
            ]
        );
        // A very long streak does not overflow.
        for _ in 0..1000 {
            assert_eq!(s.failure_at(t0).delay, MAX_DELAY);
        }
        assert_eq!(s.success(), Some(1012));
        assert_eq!(s.failures(), 0);
        assert_eq!(s.failure_at(t0).delay, ms(100));
        assert_eq!(s.success(), Some(1));
        assert_eq!(s.success(), None);
    }

    #[test]
    fn logs_the_first_failure_then_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut s = FailureStreak::new();
        let first = s.failure_at(t0);
        assert!(first.log);
        assert_eq!(first.suppressed, 0);
        assert_eq!(first.failures, 1);
        // 316 a second for the rest of the minute: none logged.
        let mut logged = 0;
        for i in 1..(316 * 60) {
            let n = s.failure_at(t0 + Duration::from_micros(i * 1_000_000 / 316));
            if n.log {
                logged += 1;
            }
            assert_eq!(n.suppressed, 0);
        }
        assert_eq!(logged, 0);
        // The minute is over: one line, counting what was left out.
        let n = s.failure_at(t0 + Duration::from_secs(60));
        assert!(n.log);
        assert_eq!(n.suppressed, 316 * 60 - 1);
        assert_eq!(n.failures, 316 * 60 + 1);
        // And the count starts again.
        let n = s.failure_at(t0 + Duration::from_secs(61));
        assert!(!n.log);
        let n = s.failure_at(t0 + Duration::from_secs(120));
        assert!(n.log);
        assert_eq!(n.suppressed, 1);
    }

    #[test]
    fn a_new_streak_logs_its_first_failure_at_once() {
        let t0 = Instant::now();
        let mut s = FailureStreak::new();
        assert!(s.failure_at(t0).log);
        assert!(!s.failure_at(t0 + ms(10)).log);
        s.success();
        let n = s.failure_at(t0 + ms(20));
        assert!(n.log, "a failure after a success is news");
        assert_eq!(n.suppressed, 0);
        assert_eq!(n.failures, 1);
    }

    #[test]
    fn custom_bounds() {
        let t0 = Instant::now();
        let mut s = FailureStreak::with(ms(10), ms(35), Duration::from_secs(1));
        let d: Vec<Duration> = (0..4).map(|_| s.failure_at(t0).delay).collect();
        assert_eq!(d, [ms(10), ms(20), ms(35), ms(35)]);
        assert!(s.failure_at(t0 + Duration::from_secs(1)).log);
        // A cap below the first delay is raised to it.
        let mut s = FailureStreak::with(ms(50), ms(10), LOG_EVERY);
        assert_eq!(s.failure_at(t0).delay, ms(50));
    }
}
