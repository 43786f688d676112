//! The rule that ends every page walk, whatever the remote answers (issue
//! 12.9). A walk reads at most [`WalkGuard::max_pages`] pages, and a page
//! that repeats one already read in this walk (the same order ids, or the
//! same `next` link) ends it. A walk ended so is incomplete: its cursor
//! stays, and the next poll reads the same window again, so nothing is lost.
//! The guard also counts list items that could not even be keyed, which
//! keep the cursor where it was too, and reports them once per walk.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A walk may read this many orders at the source's page size...
const ORDERS_PER_WALK: u64 = 1_000_000;
/// ...and never fewer pages than this, whatever the page size.
const MIN_PAGES: u64 = 10_000;

pub struct WalkGuard {
    source: String,
    max_pages: u64,
    pages: u64,
    /// One hash per page read (its ids) and per `next` link followed: a
    /// walk of a million orders keeps 10,000 of them, 80 KB.
    seen: HashSet<u64>,
    /// The hash of the page admitted last, for [`WalkGuard::retract_page`].
    last_page: Option<u64>,
    tripped: bool,
    unkeyed: usize,
    first_unkeyed: Option<String>,
    reported: bool,
}

impl WalkGuard {
    pub fn new(source: &str, page_size: u32) -> WalkGuard {
        let pages = ORDERS_PER_WALK.div_ceil(u64::from(page_size.max(1)));
        WalkGuard::with_cap(source, pages.max(MIN_PAGES))
    }

    pub fn with_cap(source: &str, max_pages: u64) -> WalkGuard {
        WalkGuard {
            source: source.to_string(),
            max_pages,
            pages: 0,
            seen: HashSet::new(),
            last_page: None,
            tripped: false,
            unkeyed: 0,
            first_unkeyed: None,
            reported: false,
        }
    }

    pub fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// A page just read, by the ids it lists, in any order (`page` names it
    /// in the warning: "page 7"). `false`: the walk has read too many pages or
    /// read this one before; it must end now, without this page's orders
    /// and without moving its cursor.
    pub fn admit_page<'a>(&mut self, page: &str, ids: impl IntoIterator<Item = &'a str>) -> bool {
        if self.tripped {
            return false;
        }
        self.pages += 1;
        if self.pages > self.max_pages {
            let max = self.max_pages;
            return self.trip(format_args!(
                "the walk reached {max} pages; stopping at {page}"
            ));
        }
        // Sorted: a remote that answers unsorted (MplusKASSA) repeats a page
        // in any order.
        let mut ids: Vec<&str> = ids.into_iter().collect();
        ids.sort_unstable();
        let mut h = DefaultHasher::new();
        "ids".hash(&mut h);
        ids.hash(&mut h);
        let h = h.finish();
        self.last_page = Some(h);
        if !self.seen.insert(h) {
            self.last_page = None;
            return self.trip(format_args!(
                "{page} lists the same orders as a page already read in this walk"
            ));
        }
        true
    }

    /// A `next` link about to be followed. `false`: it was followed before
    /// in this walk; the walk must end now.
    pub fn follow(&mut self, link: &str) -> bool {
        if self.tripped {
            return false;
        }
        let mut h = DefaultHasher::new();
        "link".hash(&mut h);
        link.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return self.trip(format_args!(
                "the next link {link:?} was already followed in this walk"
            ));
        }
        true
    }

    /// A list item that could not be keyed: it cannot be recorded, so the
    /// cursor must not move past it.
    pub fn unkeyed(&mut self, reason: impl Into<String>) {
        self.unkeyed += 1;
        if self.first_unkeyed.is_none() {
            self.first_unkeyed = Some(reason.into());
        }
    }

    /// Whether the walk may move its cursor: it was not cut short and every
    /// item it listed could be keyed.
    pub fn complete(&self) -> bool {
        !self.tripped && self.unkeyed == 0
    }

    /// What keeps the walk from being complete, in words; `None`: complete.
    pub fn incomplete(&self) -> Option<String> {
        if self.tripped {
            Some(
                "the list did not end (a page repeated or too many pages); the walk stopped".into(),
            )
        } else if self.unkeyed > 0 {
            Some(format!(
                "{} listed item(s) could not be keyed (first: {})",
                self.unkeyed,
                self.first_unkeyed.as_deref().unwrap_or_default()
            ))
        } else {
            None
        }
    }

    /// Takes back the page just admitted: it could not be read whole and
    /// will be read again (a complete listing does not skip a page).
    pub fn retract_page(&mut self) {
        if let Some(h) = self.last_page.take() {
            self.seen.remove(&h);
            self.pages = self.pages.saturating_sub(1);
        }
    }

    pub fn tripped(&self) -> bool {
        self.tripped
    }

    /// When the walk is over (the daemon calls it once per poll): one WARN
    /// for all the items that could not be keyed, whatever their number.
    pub fn finish(&mut self) {
        if self.unkeyed > 0 && !self.reported {
            self.reported = true;
            let first = self.first_unkeyed.as_deref().unwrap_or_default();
            tracing::warn!(source = %self.source, items = self.unkeyed, first = %first, "order list item(s) without a readable id were skipped; the cursor stays where it was");
        }
    }

    fn trip(&mut self, what: std::fmt::Arguments<'_>) -> bool {
        self.tripped = true;
        tracing::warn!(source = %self.source, repeated = %what, "the source's order list does not end; this walk stops here and the cursor stays where it was (the next poll reads the window again)");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page taken back (it could not be read whole) may be read again
    /// without looking like a list that repeats; a real repeat still trips.
    #[test]
    fn a_retracted_page_is_no_repeat() {
        let mut g = WalkGuard::new("shop", 50);
        assert!(g.admit_page("page 1", ["1", "2"]));
        assert!(g.admit_page("page 2", ["3", "4"]));
        g.retract_page();
        assert!(
            g.admit_page("page 2", ["3", "4"]),
            "read again after a failure"
        );
        assert!(!g.admit_page("page 2", ["4", "3"]), "a repeat");
        assert!(g.incomplete().is_some());
    }

    #[test]
    fn a_repeated_page_or_link_ends_the_walk() {
        let mut g = WalkGuard::new("s", 100);
        assert_eq!(g.max_pages(), 10_000);
        assert!(g.admit_page("page 1", ["1", "2"]));
        assert!(g.admit_page("page 2", ["3", "4"]));
        assert!(g.complete());
        assert!(
            !g.admit_page("page 3", ["2", "1"]),
            "page 1 again, unsorted"
        );
        assert!(g.tripped() && !g.complete());
        assert!(!g.admit_page("page 4", ["5"]), "a tripped walk stays ended");

        let mut g = WalkGuard::new("s", 100);
        assert!(g.follow("/api/order/?offset=100"));
        assert!(g.follow("/api/order/?offset=200"));
        assert!(!g.follow("/api/order/?offset=100"));
        // An empty page once is fine; the same empty page twice is a loop.
        let mut g = WalkGuard::new("s", 100);
        assert!(g.admit_page("page 1", []));
        assert!(!g.admit_page("page 2", []));
        // Ids and links are told apart.
        let mut g = WalkGuard::new("s", 100);
        assert!(g.follow("x") && g.admit_page("page 1", ["x"]));
    }

    #[test]
    fn the_cap_ends_a_walk_of_ever_new_pages() {
        let mut g = WalkGuard::with_cap("s", 3);
        for n in 1..=3 {
            assert!(g.admit_page(&format!("page {n}"), [n.to_string().as_str()]));
        }
        assert!(!g.admit_page("page 4", ["4"]));
        assert!(!g.complete());
        // A small page size still lets a million orders through.
        assert_eq!(WalkGuard::new("s", 10).max_pages(), 100_000);
        assert_eq!(WalkGuard::new("s", 0).max_pages(), 1_000_000);
    }

    #[test]
    fn an_unkeyed_item_keeps_the_cursor() {
        let mut g = WalkGuard::new("s", 100);
        g.unkeyed("no id");
        g.unkeyed("no id either");
        assert!(!g.complete() && !g.tripped());
        g.finish();
        assert!(!g.complete(), "reporting does not make the walk complete");
    }
}
