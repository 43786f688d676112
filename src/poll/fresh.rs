//! What a source's live walks have already looked at since its last recheck
//! round, so that the round does not read those orders again (issue 13).
//!
//! A recheck round reads ledger orders one by one to see changes the list
//! will not show: held orders that aged out of the list's window, orders not
//! yet final at a source without a "changed since" filter (Retailys). An
//! order a live walk has just read whole, as the recheck would read it, is
//! not such an order: reading it again a moment later costs one request and
//! tells nothing new. So each round leaves out:
//!
//! - orders a walk read whole since the previous round (`Page::orders`);
//! - orders a walk listed with their version marker unchanged
//!   (`Page::unchanged`), unless the ledger has them unmappable: the walk
//!   trusts that marker to skip the read, and a hold is decided by the
//!   order's own fields, which the marker covers; a fix to an unmappable
//!   order need not touch it, so those are read again as before.
//!
//! The round still takes its batch as before (the rotation through the
//! ledger moves past the orders it leaves out), so every order the list no
//! longer shows is read within one rotation, as before. Only connectors whose
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

    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.unchanged.is_empty()
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
        assert!(f.is_empty());
        f.note(["1", "2"], ["3"]);
        assert!(!f.is_empty());
        assert!(f.was_read("1") && f.was_read("2"));
        assert!(!f.was_read("3") && f.was_listed_unchanged("3"));
        assert!(!f.was_listed_unchanged("1"), "read beats unchanged");
        assert!(!f.was_read("4") && !f.was_listed_unchanged("4"));
        // Listed unchanged on one page, read on a later one: read.
        f.note(["3"], []);
        assert!(f.was_read("3") && !f.was_listed_unchanged("3"));
    }

    #[test]
    fn only_an_unmappable_order_is_read_again_when_listed_unchanged() {
        assert!(unchanged_is_enough(Some(OrderState::Held)));
        assert!(unchanged_is_enough(Some(OrderState::Queued)));
        assert!(!unchanged_is_enough(Some(OrderState::Invalid)));
        assert!(!unchanged_is_enough(None), "the ledger could not say");
    }
}
