//! The rule that ends every page walk, whatever the remote answers (issue
//! 12.9). A walk reads at most [`WalkGuard::max_pages`] pages, and a page
//! that repeats one already read in this walk (the same order ids, or the
//! same `next` link) ends it. A walk ended so is incomplete: its cursor
//! stays, and the next poll reads the same window again, so nothing is lost.
//! The guard also counts list items that could not even be keyed, which
//! keep the cursor where it was too, and reports them once per walk.

use std::collections::HashSet;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};

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
    /// Pages in a row of a steered walk that listed no order not read before.
    stale: u32,
    /// `stale` before the page admitted last, for [`WalkGuard::retract_page`].
    stale_before: Option<u32>,
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
            stale: 0,
            stale_before: None,
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
        if !self.count_page(page) {
            return false;
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
        self.stale_before = None;
        if !self.seen.insert(h) {
            self.last_page = None;
            return self.trip(format_args!(
                "{page} lists the same orders as a page already read in this walk"
            ));
        }
        true
    }

    /// A page of a walk that picks its own offsets ([`OffsetSteer`]) by the
    /// number of orders on it that the walk had not read before. Such a walk
    /// reads orders again on purpose, so a page it read before does not end
    /// it; [`MAX_STALE`] pages in a row with nothing new do (a remote that
    /// answers the same page whatever is asked).
    pub fn admit_steered_page(&mut self, page: &str, new_orders: usize) -> bool {
        if !self.count_page(page) {
            return false;
        }
        self.last_page = None;
        self.stale_before = Some(self.stale);
        self.stale = if new_orders == 0 { self.stale + 1 } else { 0 };
        if self.stale >= MAX_STALE {
            return self.trip(format_args!(
                "{page} is the {MAX_STALE}th page in a row that lists no order not read before"
            ));
        }
        true
    }

    /// One more page read; `false`: the walk has ended (now or before).
    fn count_page(&mut self, page: &str) -> bool {
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
        true
    }

    /// A `next` link that pages back to the page just read or before it
    /// (`offset` ≤ the page's own): the remote's paging is broken; the walk
    /// ends now. Always `false`.
    pub fn backwards(&mut self, link: &str) -> bool {
        if self.tripped {
            return false;
        }
        self.trip(format_args!(
            "the next link {link:?} goes back to a page already read (it would list the same orders again)"
        ))
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
        } else if let Some(stale) = self.stale_before.take() {
            self.stale = stale;
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

/// Order ids a walk has read, 8 bytes each: a hash keyed afresh for every
/// set, so a remote cannot make one id pass for another.
#[derive(Debug, Default)]
pub struct IdSet {
    keys: RandomState,
    set: HashSet<u64>,
}

impl IdSet {
    pub fn insert(&mut self, id: &str) -> bool {
        self.set.insert(self.keys.hash_one(id))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(&self.keys.hash_one(id))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Pages in a row with no order not read before that end a steered walk:
/// more than the misses in a row [`OffsetSteer`] steps back over.
const MAX_STALE: u32 = MAX_MISSES + 2;

/// How many times in a row a page may fail to join the pages before it
/// (see [`OffsetSteer`]) before the walk stops trying to close the gap.
const MAX_MISSES: u32 = 6;

/// Steers a limit/offset walk over a list that shrinks while it is walked.
///
/// CloudSuite's `state=confirmed` list is a work queue: every order our
/// write-backs move on leaves it, and those are orders the walk has already
/// read, so the orders not yet read shift towards the front while the walk
/// pages on. Following the remote's `next` link (offset + limit) then
/// skips as many orders as left in between. A walk that noticed it only
/// afterwards had to keep its cursor and walk the whole queue again on the
/// next poll, and at a backlog of 100,000 orders those re-walks were most of
/// the list requests (docs/BENCHMARKS.md, issue 13).
///
/// Instead, each next page starts earlier than the remote's link by one and
/// a half times what the list lost while the last page was read, and two
/// items more (never before the last page's start), so that it starts with an order of the walk's unbroken run: read on the
/// first page, or on a page that itself started with such an order. That
/// first item is the proof: the list keeps its order (offset paging needs
/// that anyway), so every order that was in the list when the walk began and
/// comes before an order of the run was read too. A page that does not start
/// with an order of the run may sit behind a gap (the list shrank faster
/// than foreseen, or grew and shrank at once): its orders are recorded, but
/// they do not join the run, and the walk steps back, further each time,
/// until a page joins. Orders added during the walk in front of it are not
/// the walk's to find: they carry a recent `confirm_date`, inside the next
/// walk's overlap window. Re-reading an order is harmless (orders are
/// deduplicated by id).
#[derive(Debug, Default)]
pub struct OffsetSteer {
    /// The offset of the page being read.
    at: u64,
    /// The list's size as the last page reported it.
    count: Option<u64>,
    /// The list's size changed between two pages of this walk.
    changed: bool,
    /// The orders of the unbroken run.
    run: IdSet,
    /// Pages in a row that did not join the run.
    misses: u32,
    /// A page was left unjoined: the walk may have skipped orders.
    gap: bool,
    /// Pages read again to close a gap, for the logs.
    steps_back: u64,
    /// Pages read, and how many the walk may steer through: three times
    /// what the list held at the first page, so that a queue refilled as
    /// fast as it is read does not keep one walk going for ever.
    pages: u64,
    budget: u64,
}

impl OffsetSteer {
    /// The offset of the page to read now.
    pub fn offset(&self) -> u64 {
        self.at
    }

    /// The page at [`OffsetSteer::offset`] has been read: the list's size
    /// it reported (`count`), the ids it listed in its order (`None`: an
    /// item without one) and whether the remote offers a next page
    /// (`more`). Returns the offset of the next page to read, `None` when
    /// the walk is over.
    pub fn read<'a>(
        &mut self,
        count: u64,
        ids: impl ExactSizeIterator<Item = Option<&'a str>>,
        more: bool,
    ) -> Option<u64> {
        let shrunk = self.count.map_or(0, |c| c.saturating_sub(count));
        self.changed |= self.count.is_some_and(|c| c != count);
        self.count = Some(count);
        let len = ids.len() as u64;
        self.pages += 1;
        if self.pages == 1 {
            self.budget = 3 * count.div_ceil(len.max(1)) + 16;
        } else if self.pages > self.budget && !self.gap {
            // Steered long enough: read on to the end without the proof.
            tracing::debug!(
                pages = self.pages,
                "a walk steered through three times its list; reading on to the end"
            );
            self.gap = true;
        }
        let mut ids = ids.peekable();
        let joined = self.at == 0
            || self.gap
            || ids
                .peek()
                .copied()
                .flatten()
                .is_some_and(|id| self.run.contains(id));
        if joined {
            for id in ids.flatten() {
                self.run.insert(id);
            }
        } else if self.misses < MAX_MISSES {
            // Back by what the list lost since the last page, and by more
            // on every miss in a row.
            self.misses += 1;
            self.steps_back += 1;
            self.at = self.at.saturating_sub(shrunk + (1 << self.misses));
            return Some(self.at);
        } else {
            // Given up: from here on the walk just reads on.
            self.gap = true;
        }
        self.misses = 0;
        if !more {
            return None;
        }
        // One item before this page's end, and further back by what the
        // list lost while this page was read, expecting it to lose as much
        // again, and half as much more: a miss costs a whole page, going
        // back too far only the orders read twice. Never before this
        // page's start, which a burst of departures could otherwise send
        // the walk far back over orders it has read.
        let end = self.at.saturating_add(len);
        let back = if self.gap {
            1
        } else {
            (shrunk + shrunk / 2 + 2).min(len)
        };
        self.at = end.saturating_sub(back);
        Some(self.at)
    }

    /// Whether the walk read, at least once, every order that was in the
    /// list from its start to its end. A list that never changed size must
    /// have listed as many orders as it counts (a remote that pages out of
    /// order repeats some and skips others); one that did is judged by its
    /// joins.
    pub fn saw_everything(&self) -> bool {
        !self.gap && (self.changed || self.count.is_none_or(|c| c == self.run.len() as u64))
    }

    /// Pages read in this walk.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    pub fn steps_back(&self) -> u64 {
        self.steps_back
    }
}

/// `path` (`/api/order/?…`) with its `offset` query parameter set to `offset`
/// (added when it has none); every other parameter stays as it was written.
pub fn with_offset(path: &str, offset: u64) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && *p != "offset" && !p.starts_with("offset="))
        .map(str::to_string)
        .collect();
    parts.push(format!("offset={offset}"));
    format!("{base}?{}", parts.join("&"))
}

/// The `offset` a link asks for, when it has exactly one that is a number.
pub fn offset_of(path: &str) -> Option<u64> {
    let (_, query) = path.split_once('?')?;
    let mut found = query.split('&').filter_map(|p| p.strip_prefix("offset="));
    let first = found.next()?;
    match found.next() {
        Some(_) => None,
        None => first.parse().ok(),
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
        // A link back to the page just read (a steered walk checks it).
        let mut g = WalkGuard::new("s", 100);
        assert!(!g.backwards("/api/order/?offset=0"));
        assert!(g.tripped() && !g.complete());
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

    /// A steered walk may read a page again, but not nothing new forever.
    #[test]
    fn a_steered_walk_ends_after_pages_with_nothing_new() {
        let mut g = WalkGuard::new("s", 100);
        assert!(g.admit_page("page 1", ["1", "2"]));
        for n in 1..MAX_STALE {
            assert!(g.admit_steered_page("again", 0), "stale page {n}");
        }
        g.retract_page();
        assert!(
            g.admit_steered_page("again", 0),
            "a retracted page is not counted"
        );
        assert!(
            g.admit_steered_page("new", 1),
            "something new starts the count again"
        );
        for _ in 1..MAX_STALE {
            assert!(g.admit_steered_page("again", 0));
        }
        assert!(g.complete());
        assert!(!g.admit_steered_page("again", 0));
        assert!(g.tripped() && !g.complete());
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

#[cfg(test)]
mod steer_tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    /// How the list changes before each page after the first.
    #[derive(Clone, Copy)]
    struct Churn {
        /// Orders the walk has read that leave the list (our write-backs).
        read_leave: usize,
        /// Orders the walk has not read that leave it (cancelled at the shop).
        unread_leave: usize,
        /// New orders, anywhere in the list.
        added: usize,
    }

    struct Outcome {
        requests: u64,
        saw_everything: bool,
        /// Orders in the list from start to end that the walk never read.
        missed: usize,
    }

    /// A list in a fixed order, walked by offset through [`OffsetSteer`]
    /// while it churns.
    fn walk(
        rng: &mut StdRng,
        orders: u64,
        limit: usize,
        steered: bool,
        churn: impl Fn(u64) -> Churn,
    ) -> Outcome {
        let mut list: Vec<u64> = (0..orders).collect();
        let mut next_id = orders;
        let mut left: HashSet<u64> = HashSet::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut steer = OffsetSteer::default();
        let mut requests = 0u64;
        loop {
            if requests > 0 {
                let c = churn(requests);
                for (read, n) in [(true, c.read_leave), (false, c.unread_leave)] {
                    let mut at: Vec<usize> = (0..list.len())
                        .filter(|i| seen.contains(&list[*i]) == read)
                        .collect();
                    let n = n.min(at.len());
                    // n of them at random, removed from the back.
                    for k in 0..n {
                        let j = rng.random_range(k..at.len());
                        at.swap(k, j);
                    }
                    let mut gone: Vec<usize> = at[..n].to_vec();
                    gone.sort_unstable();
                    for i in gone.into_iter().rev() {
                        left.insert(list.remove(i));
                    }
                }
                for _ in 0..c.added {
                    let at = rng.random_range(0..=list.len());
                    list.insert(at, next_id);
                    next_id += 1;
                }
            }
            requests += 1;
            assert!(requests < 100_000, "the walk does not end");
            let at = if steered {
                usize::try_from(steer.offset()).unwrap()
            } else {
                limit * (requests as usize - 1)
            };
            let page: Vec<u64> = list.iter().skip(at).take(limit).copied().collect();
            seen.extend(&page);
            let more = at + limit < list.len();
            let count = list.len() as u64;
            let ids: Vec<String> = page.iter().map(u64::to_string).collect();
            let next = steer.read(count, ids.iter().map(|id| Some(id.as_str())), more);
            if next.is_none() || (!steered && !more) {
                break;
            }
        }
        let missed = (0..orders)
            .filter(|id| !left.contains(id) && !seen.contains(id))
            .count();
        Outcome {
            requests,
            saw_everything: steer.saw_everything(),
            missed,
        }
    }

    /// The queue drains behind the walk at any pace, up to faster than
    /// the walk reads it: every order stays read, the walk says it saw
    /// everything, and it costs few more requests than a still list.
    #[test]
    fn a_queue_drained_behind_the_walk_is_read_whole() {
        let mut rng = StdRng::seed_from_u64(7);
        for pace in [0, 1, 10, 50, 99, 100, 150] {
            let o = walk(&mut rng, 5_000, 100, true, |_| Churn {
                read_leave: pace,
                unread_leave: 0,
                added: 0,
            });
            eprintln!("pace {pace}: {} requests", o.requests);
            assert_eq!(o.missed, 0, "pace {pace}");
            assert!(o.saw_everything, "pace {pace}");
            // A still list takes 51 pages (one item of overlap each).
            if pace <= 50 {
                assert!(o.requests <= 130, "pace {pace}: {} requests", o.requests);
            }
        }
    }

    /// Orders leaving unread and new ones arriving anywhere, at random:
    /// whenever the walk says it saw everything, it missed nothing that was
    /// in the list all along.
    #[test]
    fn a_walk_that_says_it_saw_everything_missed_nothing() {
        let mut claimed = 0;
        for seed in 0..400 {
            let mut rng = StdRng::seed_from_u64(seed);
            let churn = Churn {
                read_leave: rng.random_range(0..120),
                unread_leave: rng.random_range(0..3),
                added: rng.random_range(0..3),
            };
            let limit = rng.random_range(2..120);
            // Steady, or in bursts (write-backs finishing together): the
            // list shrinks by more than foreseen, and steps back land
            // inside the page that did not join.
            let burst = rng.random_range(1..6);
            let o = walk(&mut rng, 1_000, limit, true, move |n| {
                if n % burst == 0 {
                    Churn {
                        read_leave: churn.read_leave * burst as usize,
                        ..churn
                    }
                } else {
                    Churn {
                        read_leave: 0,
                        ..churn
                    }
                }
            });
            if o.saw_everything {
                claimed += 1;
                assert_eq!(o.missed, 0, "seed {seed}");
            }
        }
        eprintln!("{claimed} of 400 walks saw everything");
        assert!(
            claimed > 40,
            "the walk hardly ever trusts itself: {claimed} of 400"
        );
    }

    /// Without the steering (following the remote's offset + limit), the
    /// same draining queue loses orders: the tests above would fail.
    #[test]
    fn following_the_remote_link_skips_orders_of_a_draining_queue() {
        let mut rng = StdRng::seed_from_u64(7);
        let o = walk(&mut rng, 5_000, 100, false, |_| Churn {
            read_leave: 10,
            unread_leave: 0,
            added: 0,
        });
        assert!(o.missed > 100, "{} missed", o.missed);
    }

    #[test]
    fn links_get_their_offset_set() {
        assert_eq!(
            with_offset("/api/order/?limit=100&offset=200&state=confirmed", 150),
            "/api/order/?limit=100&state=confirmed&offset=150"
        );
        assert_eq!(
            with_offset("/api/order/?limit=5", 3),
            "/api/order/?limit=5&offset=3"
        );
        assert_eq!(with_offset("/api/order/", 0), "/api/order/?offset=0");
        assert_eq!(offset_of("/api/order/?limit=5&offset=10"), Some(10));
        assert_eq!(offset_of("/api/order/?limit=5&page=2"), None);
        assert_eq!(offset_of("/api/order/?offset=1&offset=2"), None);
        assert_eq!(offset_of("/api/order/?offset=-1"), None);
        assert_eq!(offset_of("/api/order/?xoffset=7"), None);
    }
}
