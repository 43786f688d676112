//! When to try a failed job again. The delay policy (exponential, jitter,
//! capped) comes from the `backoff` crate, kept behind this one module so a
//! move to `backon` touches only this file (see README, dependency notes).
//! The delay derives from the attempt counter stored in the job row, so it
//! survives restarts. The budget is time (SPEC §1): a transient failure is
//! retried until `give_up_after` has passed since the first failure of the
//! run, so an outage shorter than that parks nothing; `max_attempts` is only
//! an upper bound.
//!
//! A read that someone is waiting for (a poll's page, `reconcile`'s listing
//! and ERP look-ups) is retried in place with the same table and delays
//! ([`RetryPolicy::retry_in_place`]), a few times and briefly: the caller
//! either tries again later (the next poll) or reports the failure.

use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::http::Failure;

/// How long a read retried in place may keep its caller waiting.
#[derive(Clone, Copy, Debug)]
pub struct InPlace {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// No single wait is longer than this, whatever the delay or a
    /// `Retry-After` asks for.
    pub max_wait: Duration,
}

impl InPlace {
    /// A poll's page: the next scheduled poll tries again anyway.
    pub const POLL: InPlace = InPlace {
        attempts: 4,
        max_wait: Duration::from_secs(10),
    };
    /// A one-shot command (`reconcile`, `backfill --dry-run`): nobody tries
    /// again for it, so it rides out a short outage before it gives up.
    pub const COMMAND: InPlace = InPlace {
        attempts: 8,
        max_wait: Duration::from_secs(30),
    };
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub give_up_after: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    RetryIn(Duration),
    Park(String),
}

impl RetryPolicy {
    /// Delay after failed attempt `attempt` (1-based): initial × 2^(n-1),
    /// ±30 % jitter, never above `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let mut b = backoff::ExponentialBackoff {
            current_interval: base,
            initial_interval: self.initial,
            randomization_factor: 0.3,
            multiplier: 2.0,
            max_interval: self.max,
            max_elapsed_time: None,
            ..Default::default()
        };
        b.next_backoff().unwrap_or(base).min(self.max)
    }

    /// Retry or park, after `attempts` attempts (including the failed one)
    /// and `failing_for` since the first failure of this run of failures.
    /// A server's `Retry-After` wins when it asks for longer than our delay.
    pub fn decide(&self, attempts: u32, failing_for: Duration, failure: &Failure) -> Decision {
        match failure {
            Failure::Permanent { message, .. } => Decision::Park(message.clone()),
            Failure::Retryable { message, .. } if failing_for >= self.give_up_after => {
                Decision::Park(format!(
                    "gave up after failing for {} ({attempts} attempts; daemon.give_up_after = {}); last error: {message}",
                    crate::config::format_duration(failing_for),
                    crate::config::format_duration(self.give_up_after),
                ))
            }
            Failure::Retryable { message, .. } if attempts >= self.max_attempts => {
                Decision::Park(format!(
                    "gave up after {attempts} attempts (daemon.max_attempts); last error: {message}"
                ))
            }
            Failure::Retryable { retry_after, .. } => {
                let ours = self.delay(attempts);
                let theirs = retry_after
                    .unwrap_or_default()
                    .min(Duration::from_secs(3600));
                Decision::RetryIn(ours.max(theirs))
            }
        }
    }
}

impl RetryPolicy {
    /// The retry state of one read retried in place (see [`InPlaceRetry`]).
    pub fn in_place(&self, limits: InPlace) -> InPlaceRetry {
        InPlaceRetry {
            policy: *self,
            limits,
            started: Instant::now(),
            attempts: 0,
        }
    }
}

/// One read retried in place. The caller's loop is
/// `loop { match read().await { Ok(v) => break v, Err(f) => retry.wait(f, ..).await? } }`:
/// the decision (retry or give up, and how long to wait) is the jobs' one.
pub struct InPlaceRetry {
    policy: RetryPolicy,
    limits: InPlace,
    started: Instant,
    attempts: u32,
}

impl InPlaceRetry {
    /// After a failed attempt: waits what [`RetryPolicy::decide`] says (a
    /// `Retry-After` included), at most `limits.max_wait`, telling
    /// `on_retry` (attempt, wait, failure) first so the caller can log it.
    /// `Err(failure)` when there is no retry: a permanent failure, one
    /// `decide` would park, the attempts spent, or `shutdown` cancelled.
    pub async fn wait(
        &mut self,
        failure: Failure,
        shutdown: &CancellationToken,
        on_retry: impl FnOnce(u32, Duration, &Failure),
    ) -> Result<(), Failure> {
        self.attempts += 1;
        let wait = match self
            .policy
            .decide(self.attempts, self.started.elapsed(), &failure)
        {
            Decision::RetryIn(wait)
                if self.attempts < self.limits.attempts && !shutdown.is_cancelled() =>
            {
                wait.min(self.limits.max_wait)
            }
            _ => return Err(failure),
        };
        on_retry(self.attempts, wait, &failure);
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = shutdown.cancelled() => Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
            max_attempts: 5,
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }

    /// Issue 12.4: an hour's outage spends no budget that parks: with the
    /// default settings every transient failure within 24 h is retried,
    /// however many attempts it takes; past 24 h it parks, naming both.
    #[test]
    fn the_budget_is_time_not_attempts() {
        let p = RetryPolicy {
            max_attempts: 10_000,
            max: Duration::from_secs(15 * 60),
            ..policy()
        };
        let hour = Duration::from_secs(3600);
        for attempts in [1, 12, 50, 200] {
            assert!(
                matches!(
                    p.decide(attempts, hour, &Failure::retry("503")),
                    Decision::RetryIn(_)
                ),
                "attempt {attempts} after an hour"
            );
        }
        match p.decide(97, 24 * hour, &Failure::retry("503")) {
            Decision::Park(reason) => assert!(
                reason.contains("failing for 24h") && reason.contains("give_up_after = 24h"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// Runs `read` retried in place, as the callers do.
    async fn in_place<T>(
        p: &RetryPolicy,
        mut read: impl FnMut() -> Result<T, Failure>,
        waits: &mut Vec<Duration>,
    ) -> Result<T, Failure> {
        let stop = CancellationToken::new();
        let limits = InPlace {
            attempts: 4,
            max_wait: Duration::from_secs(10),
        };
        let mut retry = p.in_place(limits);
        loop {
            match read() {
                Ok(v) => return Ok(v),
                Err(f) => retry.wait(f, &stop, |_, w, _| waits.push(w)).await?,
            }
        }
    }

    /// A read retried in place: transient failures are retried with the
    /// jobs' delays, a permanent one is not, and the attempts are bounded.
    #[tokio::test]
    async fn retry_in_place_follows_the_table() {
        // The jobs' table at a thousandth of the time.
        let p = RetryPolicy {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(60),
            ..policy()
        };
        let (mut calls, mut waits) = (0, Vec::new());
        let got = in_place(
            &p,
            || {
                calls += 1;
                if calls < 3 {
                    Err(Failure::retry("503"))
                } else {
                    Ok(calls)
                }
            },
            &mut waits,
        )
        .await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(waits.len(), 2);
        assert!(waits[0] >= Duration::from_micros(1300) && waits[1] <= Duration::from_millis(6));

        let (mut calls, mut waits) = (0, Vec::new());
        let got: Result<(), _> = in_place(
            &p,
            || {
                calls += 1;
                Err(Failure::permanent("422"))
            },
            &mut waits,
        )
        .await;
        assert!(got.is_err());
        assert_eq!(calls, 1, "a permanent failure is not retried");

        let (mut calls, mut waits) = (0, Vec::new());
        let got: Result<(), _> = in_place(
            &p,
            || {
                calls += 1;
                Err(Failure::retry("503"))
            },
            &mut waits,
        )
        .await;
        assert!(got.is_err());
        assert_eq!(calls, 4, "the attempts are bounded");
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(60)));
    }

    #[test]
    fn grows_exponentially_with_jitter_and_a_cap() {
        let p = policy();
        for (attempt, base) in [(1u32, 2.0f64), (2, 4.0), (3, 8.0), (4, 16.0)] {
            for _ in 0..50 {
                let d = p.delay(attempt).as_secs_f64();
                assert!(
                    d >= base * 0.69 && d <= base * 1.31,
                    "attempt {attempt}: {d}"
                );
            }
        }
        for _ in 0..50 {
            assert!(p.delay(30) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let f = Failure::Retryable {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(30)),
            status: Some(429),
        };
        assert_eq!(
            policy().decide(1, Duration::ZERO, &f),
            Decision::RetryIn(Duration::from_secs(30))
        );
    }

    #[test]
    fn permanent_parks_at_once_and_attempts_run_out() {
        let p = policy();
        assert!(matches!(
            p.decide(1, Duration::ZERO, &Failure::permanent("422")),
            Decision::Park(_)
        ));
        assert!(matches!(
            p.decide(4, Duration::ZERO, &Failure::retry("503")),
            Decision::RetryIn(_)
        ));
        match p.decide(5, Duration::ZERO, &Failure::retry("503")) {
            Decision::Park(reason) => {
                assert!(reason.contains("after 5 attempts") && reason.contains("503"))
            }
            other => panic!("{other:?}"),
        }
    }
}
