//! What a source's live walks have already looked at since its last recheck
//! round, so that the round does not read those orders again (issue 13).
//!
//! A recheck round reads ledger orders each on its own to see changes the list
//! will not show: held orders that aged out of the list's window, orders not
//! yet final at a source without a "changed since" filter (Retailys). An
//! order a live walk has just read whole, as the recheck would read it, is
//! not such an order: reading it again a moment later costs one request and
//! tells nothing new. So each round leaves out ([`Rounds`]):
//!
//! - orders a walk read whole since the previous round began (`Page::orders`);
//! - orders a walk listed with their version marker unchanged
//!   (`Page::unchanged`), unless the ledger has them unmappable: the walk
//!   trusts that marker to skip the read, and a hold is decided by the
//!   order's own fields, which the marker covers; a fix to an unmappable
//!   order need not touch it, so those are read again as before.
//!
//! The round still takes its batch as before (the rotation through the
//! ledger moves past the orders it leaves out), so every order the list no
//! longer shows is read again at most two rounds after a walk last
//! read it. Only connectors whose
//! walk reads an order as whole as their recheck does take part
//! ([`crate::sources::Connector::walk_reads_as_recheck`]).
//!
//! The ids are kept as 64-bit hashes (keyed per process), so a walk of
//! 100,000 orders costs about a megabyte. Two ids with the same hash would
//! only put one order's recheck off to the next rotation.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use crate::outbox::state::OrderState;

/// One source's orders looked at by live walks since its last recheck round.
#[derive(Default)]
pub struct Fresh {
    hasher: RandomState,
    read: HashSet<u64>,
    unchanged: HashSet<u64>,
}

impl Fresh {
    /// A page a live walk recorded: `read` whole, `unchanged` listed with
    /// the version the ledger has.
    pub fn note<'a>(
        &mut self,
        read: impl IntoIterator<Item = &'a str>,
        unchanged: impl IntoIterator<Item = &'a str>,
    ) {
        for id in read {
            self.read.insert(self.hasher.hash_one(id));
        }
        for id in unchanged {
            self.unchanged.insert(self.hasher.hash_one(id));
        }
    }

    /// Read whole by a walk since the last round.
    pub fn was_read(&self, id: &str) -> bool {
        self.read.contains(&self.hasher.hash_one(id))
    }

    /// Listed unchanged by a walk since the last round (and not read).
    pub fn was_listed_unchanged(&self, id: &str) -> bool {
        !self.was_read(id) && self.unchanged.contains(&self.hasher.hash_one(id))
    }
}

/// One source's walk reads by recheck round: since the round under way
/// began, and in the round before it. A round leaves out what walks read
/// in either: a round reaches most orders only polls after it began (200 a
/// poll), and the orders a walk read just before it began are as fresh as
/// those read after. So an order that drops out of the list is read one by
/// one at most two rounds after a walk last read it; `recheck_every` paces
/// both. Reads older than that are forgotten, which keeps this bounded.
#[derive(Default)]
pub struct Rounds {
    current: Fresh,
    previous: Fresh,
}

impl Rounds {
    /// A page a live walk recorded (see [`Fresh::note`]).
    pub fn note<'a>(
        &mut self,
        read: impl IntoIterator<Item = &'a str>,
        unchanged: impl IntoIterator<Item = &'a str>,
    ) {
        self.current.note(read, unchanged);
    }

    /// A new round begins: reads of the round before last are forgotten.
    pub fn begin_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Read whole by a walk in this round or the one before.
    pub fn was_read(&self, id: &str) -> bool {
        self.current.was_read(id) || self.previous.was_read(id)
    }

    /// Listed unchanged by a walk in this round or the one before, and not
    /// read in either.
    pub fn was_listed_unchanged(&self, id: &str) -> bool {
        !self.was_read(id)
            && (self.current.was_listed_unchanged(id) || self.previous.was_listed_unchanged(id))
    }
}

/// Whether a recheck round may leave out an order a walk listed unchanged,
/// given its ledger state (`None`: the ledger could not say).
pub fn unchanged_is_enough(state: Option<OrderState>) -> bool {
    state.is_some_and(|s| s != OrderState::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_unchanged_ids_are_told_apart() {
        let mut f = Fresh::default();
        assert!(!f.was_read("1") && !f.was_listed_unchanged("3"));
        f.note(["1", "2"], ["3"]);
        assert!(f.was_read("1") && f.was_read("2"));
        assert!(!f.was_read("3") && f.was_listed_unchanged("3"));
        assert!(!f.was_listed_unchanged("1"), "read beats unchanged");
        assert!(!f.was_read("4") && !f.was_listed_unchanged("4"));
        // Listed unchanged on one page, read on a later one: read.
        f.note(["3"], []);
        assert!(f.was_read("3") && !f.was_listed_unchanged("3"));
    }

    #[test]
    fn reads_are_kept_through_the_round_after_and_forgotten_then() {
        let mut r = Rounds::default();
        assert!(!r.was_read("1") && !r.was_listed_unchanged("2"));
        r.note(["1"], ["2"]);
        // Polls without a new round keep every read (the old set was
        // dropped at every poll, so a round began with only the last
        // walk's reads).
        assert!(r.was_read("1") && r.was_listed_unchanged("2"));
        r.begin_round();
        r.note(["3"], []);
        assert!(
            r.was_read("1") && r.was_read("3"),
            "the round before counts"
        );
        assert!(r.was_listed_unchanged("2"));
        r.note(["2"], []);
        assert!(r.was_read("2") && !r.was_listed_unchanged("2"), "read wins");
        r.begin_round();
        assert!(!r.was_read("1"), "two rounds ago: forgotten");
        assert!(r.was_read("3") && r.was_read("2"));
        r.begin_round();
        r.begin_round();
        assert!(!r.was_read("2") && !r.was_read("3"), "all forgotten");
    }

    #[test]
    fn only_an_unmappable_order_is_read_again_when_listed_unchanged() {
        assert!(unchanged_is_enough(Some(OrderState::Held)));
        assert!(unchanged_is_enough(Some(OrderState::Queued)));
        assert!(!unchanged_is_enough(Some(OrderState::Invalid)));
        assert!(!unchanged_is_enough(None), "the ledger could not say");
    }
}
