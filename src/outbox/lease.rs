//! How long this process may still act for a job it claimed, by its own
//! clocks, checked by the HTTP layer right before each request goes out.
//!
//! The ledger fences what a job *records* (a settle names the lease owner
//! and attempt). It cannot fence what a job *sends*: a node frozen (SIGSTOP,
//! a VM paused, a long GC-like stall) after it checked its lease and before
//! its request left would, on waking, send a write built from an old read
//! over what the job's new runner wrote meanwhile (found by the fleet's
//! frozen-node test at CloudSuite's whole-order PUT). None of the documented
//! source APIs offers a conditional write (If-Match, a version) to put the
//! fence at the remote, so the fence is put as close to the wire as we can:
//! [`crate::http::Endpoint`] calls [`check`] after every wait (pause,
//! permit, rate limit) and immediately before the request is handed to the
//! client. What is left is the time from that check to the socket write.
//!
//! In a fleet a job has a second, shorter bound: the others free what a node
//! held once its heartbeat is two beats old, whatever its job leases say.
//! So a job may send only while this node's [`Membership`] has run without
//! a gap since the job was claimed.
//!
//! The lease is counted from the moment the claim (or renewal) was *asked*,
//! so every delay before the ledger granted it shortens it, and it ends a
//! tenth early (clock rate differences). Both the monotonic clock (which a
//! stopped process does not stop) and the wall clock (which, unlike it,
//! also moves over a suspended machine) must agree the lease still runs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The end of a job's lease as this process counts it. Cloned into the
/// job's task; renewed by the runner.
#[derive(Clone, Debug)]
pub struct LeaseClock {
    until: Arc<Mutex<(Instant, SystemTime)>>,
}

/// The part of a lease this process relies on: nine tenths.
fn relied_on(lease: Duration) -> Duration {
    lease.saturating_sub(lease / 10)
}

impl LeaseClock {
    /// A lease of `lease` granted by a claim asked for at `asked` (the
    /// monotonic and wall clocks read together before the claim).
    pub fn new(asked: (Instant, SystemTime), lease: Duration) -> Self {
        let d = relied_on(lease);
        LeaseClock {
            until: Arc::new(Mutex::new((asked.0 + d, asked.1 + d))),
        }
    }

    /// Both clocks, read now.
    pub fn now() -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::now())
    }

    /// The ledger renewed the lease; the renewal was asked for at `asked`.
    pub fn renewed(&self, asked: (Instant, SystemTime), lease: Duration) {
        let d = relied_on(lease);
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.0 = until.0.max(asked.0 + d);
        until.1 = until.1.max(asked.1 + d);
    }

    /// `Err(by how much)` once either clock says the lease has run out.
    pub fn check(&self) -> Result<(), Duration> {
        let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        over(until, Self::now())
    }
}

/// How far `now` is past `until` on either clock; `Ok` while both run.
fn over(until: (Instant, SystemTime), now: (Instant, SystemTime)) -> Result<(), Duration> {
    let over_mono = now.0.checked_duration_since(until.0).unwrap_or_default();
    let over_wall = now.1.duration_since(until.1).unwrap_or_default();
    if now.0 < until.0 && now.1 < until.1 {
        Ok(())
    } else {
        Err(over_mono.max(over_wall))
    }
}

/// This node's place in the fleet as its own clocks see it, renewed by each
/// heartbeat the ledger took. Outside a fleet (SQLite, no `[ledger]`) it
/// never bounds anything.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    state: Arc<Mutex<Member>>,
}

#[derive(Clone, Copy, Debug, Default)]
enum Member {
    /// Not in a fleet (or not yet joined): only job leases count.
    #[default]
    Solo,
    /// Alive until `until`; `gap_at`: when it last came back after a gap
    /// (a late heartbeat, or declared dead), so what it claimed before
    /// may have been freed and taken by another node.
    Alive {
        until: (Instant, SystemTime),
        gap_at: Option<Instant>,
    },
    /// Declared dead by the fleet at `at`; not yet beating again.
    Dead { at: Instant },
}

impl Membership {
    /// The ledger took a heartbeat asked for at `asked`; the fleet frees a
    /// node's work after `dead_after` of silence.
    pub fn beat(&self, asked: (Instant, SystemTime), dead_after: Duration) {
        let d = relied_on(dead_after);
        let fresh = (asked.0 + d, asked.1 + d);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = match *state {
            Member::Solo => Member::Alive {
                until: fresh,
                gap_at: None,
            },
            Member::Alive { until, gap_at } => Member::Alive {
                until: (until.0.max(fresh.0), until.1.max(fresh.1)),
                // Asked after the last beat's bound ran out: the others may
                // have freed our work in between.
                gap_at: if over(until, asked).is_err() {
                    Some(asked.0)
                } else {
                    gap_at
                },
            },
            Member::Dead { .. } => Member::Alive {
                until: fresh,
                gap_at: Some(asked.0),
            },
        };
    }

    /// The fleet declared this node dead and freed what it held.
    pub fn declared_dead(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Member::Dead { at: Instant::now() };
    }

    /// Whether work claimed at `claimed` may still be done by this node.
    fn check(&self, claimed: Instant) -> Result<(), String> {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            Member::Solo => Ok(()),
            Member::Dead { at } => Err(format!(
                "this node was declared dead by the fleet {:.1}s ago",
                at.elapsed().as_secs_f64()
            )),
            Member::Alive { until, gap_at } => {
                if let Err(by) = over(until, LeaseClock::now()) {
                    Err(format!(
                        "this node's heartbeat is {:.1}s overdue, the fleet may have freed its work",
                        by.as_secs_f64()
                    ))
                } else if gap_at.is_some_and(|g| g > claimed) {
                    Err("this node's heartbeat lapsed after the job was claimed, the fleet may have freed it".into())
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// What a running job holds: its lease, and its node's place in the fleet
/// since the claim.
#[derive(Clone, Debug)]
pub struct Held {
    pub lease: LeaseClock,
    pub node: Membership,
    /// When the claim was asked for (monotonic clock).
    pub claimed: Instant,
}

impl Held {
    /// `Err(why)` once this process may no longer act for the job.
    pub fn check(&self) -> Result<(), String> {
        self.lease.check().map_err(|by| {
            format!(
                "the job's lease ran out {:.1}s ago by this process's clocks (it stalled)",
                by.as_secs_f64()
            )
        })?;
        self.node.check(self.claimed)
    }
}

tokio::task_local! {
    /// What the requests sent from this task are made for: one job, or the
    /// jobs of a batch sent together (an ERP's batched push).
    static HELD: Arc<[Held]>;
}

/// Runs `job` (a job's whole task) with what it holds in scope.
pub async fn holding<F: Future>(held: Held, job: F) -> F::Output {
    HELD.scope(Arc::from([held]), job).await
}

/// Runs `call`, made for every job of `held` at once (one batched request
/// for several jobs), with their leases in scope instead of the calling
/// task's: it may send only while each of them may.
pub async fn holding_all<F: Future>(held: Vec<Held>, call: F) -> F::Output {
    HELD.scope(Arc::from(held), call).await
}

/// What the calling task holds (empty outside a job): a job handing its
/// request to another task's batch passes it along.
pub fn current() -> Vec<Held> {
    HELD.try_with(|h| h.to_vec()).unwrap_or_default()
}

/// Whether the calling task may still send for the job(s) it runs: `Ok`
/// when it runs no job (polls, commands) or may still act for every one of
/// them, else why not.
pub fn check() -> Result<(), String> {
    HELD.try_with(|held| held.iter().try_for_each(Held::check))
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(secs: u64) -> (Instant, SystemTime) {
        let (mono, wall) = LeaseClock::now();
        (
            mono - Duration::from_secs(secs),
            wall - Duration::from_secs(secs),
        )
    }

    fn held(lease: LeaseClock, node: &Membership, claimed: Instant) -> Held {
        Held {
            lease,
            node: node.clone(),
            claimed,
        }
    }

    #[test]
    fn a_lease_is_relied_on_for_nine_tenths_counted_from_the_ask() {
        let clock = LeaseClock::new(ago(0), Duration::from_secs(30));
        assert!(clock.check().is_ok());
        // Asked 28 s ago: 27 s were relied on, so it ran out a second ago.
        let clock = LeaseClock::new(ago(28), Duration::from_secs(30));
        let over = clock.check().unwrap_err();
        assert!(over >= Duration::from_millis(900), "{over:?}");
        clock.renewed(LeaseClock::now(), Duration::from_secs(30));
        assert!(clock.check().is_ok());
    }

    #[test]
    fn either_clock_ends_the_lease() {
        let (mono, wall) = LeaseClock::now();
        let lease = Duration::from_secs(30);
        // The wall clock moved on (a suspended machine) but not the
        // monotonic one, and the other way round.
        assert!(LeaseClock::new((mono, ago(60).1), lease).check().is_err());
        assert!(LeaseClock::new((ago(60).0, wall), lease).check().is_err());
        // A renewal asked for earlier than what is held shortens nothing.
        let clock = LeaseClock::new((mono, wall), lease);
        clock.renewed(ago(60), lease);
        assert!(clock.check().is_ok());
    }

    #[tokio::test]
    async fn only_a_task_running_a_job_is_checked() {
        assert!(check().is_ok());
        let lease = Duration::from_secs(30);
        let solo = Membership::default();
        let gone = held(LeaseClock::new(ago(60), lease), &solo, ago(60).0);
        assert!(holding(gone, async { check() }).await.is_err());
        let fine = held(LeaseClock::new(ago(0), lease), &solo, ago(0).0);
        assert!(holding(fine.clone(), async { check() }).await.is_ok());
        // A batch sends for several jobs: every one of them must still run,
        // whatever the task that sends it holds itself.
        let gone = held(LeaseClock::new(ago(60), lease), &solo, ago(60).0);
        let passed = holding(fine.clone(), async { current() }).await;
        assert_eq!(passed.len(), 1);
        let batch = vec![fine.clone(), gone.clone()];
        let outcome = holding(fine.clone(), holding_all(batch, async { check() })).await;
        assert!(outcome.unwrap_err().contains("lease ran out"));
        let outcome = holding(gone, holding_all(passed, async { check() })).await;
        assert!(outcome.is_ok());
        assert!(current().is_empty());
    }

    #[test]
    fn in_a_fleet_a_job_may_send_only_while_its_node_beat_without_a_gap() {
        let lease = Duration::from_secs(30);
        let dead_after = Duration::from_secs(10);
        let node = Membership::default();
        let claimed = ago(1);
        let job = held(LeaseClock::new(claimed, lease), &node, claimed.0);
        // Not in a fleet yet: the job's lease alone.
        assert!(job.check().is_ok());
        node.beat(ago(2), dead_after);
        assert!(job.check().is_ok());
        // The last heartbeat was asked 20 s ago: overdue.
        let late = Membership::default();
        late.beat(ago(20), dead_after);
        let job_late = held(LeaseClock::new(claimed, lease), &late, claimed.0);
        assert!(job_late.check().unwrap_err().contains("overdue"));
        // It beats again: the gap stays against what was claimed before.
        late.beat(ago(0), dead_after);
        assert!(job_late.check().unwrap_err().contains("lapsed"));
        let after = LeaseClock::now();
        let new_job = held(LeaseClock::new(after, lease), &late, after.0);
        assert!(new_job.check().is_ok());
        // Declared dead: nothing may send until it beats again, and then
        // only what it claims from then on.
        node.declared_dead();
        assert!(job.check().unwrap_err().contains("declared dead"));
        node.beat(LeaseClock::now(), dead_after);
        assert!(job.check().is_err());
        let later = LeaseClock::now();
        assert!(
            held(LeaseClock::new(later, lease), &node, later.0)
                .check()
                .is_ok()
        );
    }
}
