//! How much of the past a live poll reads again (issue 13).
//!
//! A timestamp cursor (CloudSuite's `confirm_date`, Retailys's order date,
//! Vinou's newest-first walk) is read from `cursor − lookback`, so that an
//! order that shows up in the list later than its timestamp says is still
//! found. That window holds every order of the last `lookback` the list
//! still shows: at CloudSuite every order read but not yet written back.
//! On a schedule of seconds, reading it whole on every poll re-listed
//! thousands of known orders a second while a backlog drained (4,700 list
//! requests for 100,000 orders against the naive peer's 990,
//! docs/BENCHMARKS.md).
//!
//! So a poll reads the whole window only when it was last read whole
//! `lookback_every` ago or more (by default a minute, or a tenth of
//! `lookback` when that is shorter), and
//! always on the first poll after the daemon starts or takes a source over;
//! the polls in between read from the cursor on. An order that shows up
//! late is then found by the next whole read, at most `lookback_every`
//! later, as long as it is no later than `lookback − lookback_every`: the
//! same bound a schedule of `lookback_every` would give. On the default
//! schedule (every two minutes) every poll reads the whole window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per source: its window and pace, and when its window was last read whole.
#[derive(Debug, Default)]
pub struct Overlap {
    /// `(lookback, lookback_every)` per source.
    pace: HashMap<String, (Duration, Duration)>,
    read_whole: Mutex<HashMap<String, Instant>>,
}

/// What one live poll reads: the lookback to apply to its cursor, and, for a
/// poll that reads the whole window, when it began (for [`Overlap::read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    pub lookback: Duration,
    pub whole_since: Option<Instant>,
}

impl Overlap {
    pub fn new(pace: HashMap<String, (Duration, Duration)>) -> Overlap {
        Overlap {
            pace,
            read_whole: Mutex::default(),
        }
    }

    /// What the poll of `source` beginning `now` reads.
    pub fn reach(&self, source: &str, now: Instant) -> Reach {
        let (lookback, every) = self.pace.get(source).copied().unwrap_or_default();
        let last = self.last(source);
        let due = last.is_none_or(|t| now.saturating_duration_since(t) >= every);
        if due {
            Reach {
                lookback,
                whole_since: Some(now),
            }
        } else {
            Reach {
                lookback: Duration::ZERO,
                whole_since: None,
            }
        }
    }

    /// The poll that got `reach` walked its window to the end; a whole
    /// window counts from when that poll began. A poll that failed reports
    /// nothing, so the next one reads the whole window again.
    pub fn read(&self, source: &str, reach: Reach) {
        if let Some(began) = reach.whole_since {
            let mut all = self.read_whole.lock().unwrap_or_else(|p| p.into_inner());
            let at = all.entry(source.to_string()).or_insert(began);
            *at = (*at).max(began);
        }
    }

    fn last(&self, source: &str) -> Option<Instant> {
        let all = self.read_whole.lock().unwrap_or_else(|p| p.into_inner());
        all.get(source).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(lookback: u64, every: u64) -> Overlap {
        let pace = [(
            "shop".to_string(),
            (Duration::from_secs(lookback), Duration::from_secs(every)),
        )];
        Overlap::new(pace.into_iter().collect())
    }

    #[test]
    fn the_window_is_read_whole_first_then_at_most_once_per_lookback_every() {
        let o = overlap(900, 90);
        let t0 = Instant::now();
        let first = o.reach("shop", t0);
        assert_eq!(first.lookback, Duration::from_secs(900), "first poll");
        // Until the first whole read is done, every poll reads whole.
        assert_eq!(
            o.reach("shop", t0 + Duration::from_secs(5)).lookback,
            first.lookback
        );
        o.read("shop", first);
        let narrow = o.reach("shop", t0 + Duration::from_secs(89));
        assert_eq!(narrow.lookback, Duration::ZERO, "from the cursor on");
        o.read("shop", narrow);
        // Counted from when the whole read began, not when it ended.
        let again = o.reach("shop", t0 + Duration::from_secs(90));
        assert_eq!(again.lookback, Duration::from_secs(900));
        o.read("shop", again);
        assert_eq!(
            o.reach("shop", t0 + Duration::from_secs(91)).lookback,
            Duration::ZERO
        );
    }

    /// A whole read that ended after a later one began does not move the
    /// mark back.
    #[test]
    fn whole_reads_that_overlap_keep_the_later_start() {
        let o = overlap(900, 90);
        let t0 = Instant::now();
        let early = o.reach("shop", t0);
        let late = o.reach("shop", t0 + Duration::from_secs(30));
        o.read("shop", late);
        o.read("shop", early);
        assert_eq!(
            o.reach("shop", t0 + Duration::from_secs(119)).lookback,
            Duration::ZERO
        );
        assert_eq!(
            o.reach("shop", t0 + Duration::from_secs(120)).lookback,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn lookback_every_zero_reads_whole_on_every_poll_and_unknown_sources_read_nothing_extra() {
        let o = overlap(900, 0);
        let t0 = Instant::now();
        let r = o.reach("shop", t0);
        o.read("shop", r);
        assert_eq!(o.reach("shop", t0).lookback, Duration::from_secs(900));
        assert_eq!(o.reach("other", t0).lookback, Duration::ZERO);
    }
}
