//! The poll: one page-walk loop for every source. It owns what a walk must
//! get right whatever the remote: pages are read with the jobs' retry table
//! (a failed page is read again, the walk does not move until it is read),
//! each page's orders and the cursor are recorded in ONE ledger transaction
//! (the cursor only where the connector says everything before it is in),
//! the ledger is asked once per page which listed orders it already has
//! ([`known::Known`], so connectors never query the ledger themselves), every
//! walk ends by the guard's rule ([`walk::WalkGuard`]: page caps, repeated
//! pages, unkeyed items), a source's run of failures is logged once, and
//! a remote that answers again pulls waiting jobs forward.
//!
//! Connectors supply the wire format: `begin` (the first request from a
//! cursor), `next_page` (fetch, map each item, say whether there is more),
//! `recheck` (one order again). Panics in one order's mapping are isolated
//! by [`crate::sources::list::isolated`]; a panic in a whole poll by the
//! daemon's trigger loop.

pub mod fresh;
pub mod known;
pub mod overlap;
pub mod walk;

use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::http::Failure;
use crate::model::order_key;
use crate::outbox::Engine;
use crate::outbox::policy::InPlace;
use crate::progress::Progress;
use crate::sources::{Connector, Page, Walk, Window};
use crate::store::OrderNote;

pub use known::Known;

/// What one poll did.
#[derive(Debug, Default, Clone)]
pub struct PollSummary {
    pub pages: usize,
    pub seen: usize,
    /// Every order key the walk listed, read again or not, and the keys it
    /// queued for the ERP: kept only where the caller asked for the keys
    /// ([`Keys::Keep`]: `backfill`, which pushes exactly those). A live poll
    /// only counts them: its first walk over a backlog of 100,000 orders
    /// would otherwise hold 200,000 keys (about 10 MB) until it ends.
    pub listed: Vec<String>,
    pub queued: Vec<String>,
    pub queued_count: usize,
    pub parked: usize,
}

/// Whether a poll keeps the keys it listed and queued ([`PollSummary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    Keep,
    Count,
}

/// How a walk runs for its caller: how long a failed page is retried,
/// who hears about each page, and whether the summary keeps the keys.
#[derive(Clone, Copy)]
pub struct PollAs<'a> {
    pub limits: InPlace,
    pub progress: Option<&'a Progress>,
    pub keys: Keys,
}

impl PollAs<'_> {
    /// A live poll: the poll's retry limits, keys counted only.
    pub const LIVE: PollAs<'static> = PollAs {
        limits: InPlace::POLL,
        progress: None,
        keys: Keys::Count,
    };
}

fn log_notes(source: &str, notes: &[OrderNote]) {
    for note in notes {
        match note {
            OrderNote::Queued(key) => {
                tracing::info!(source, order_key = %key, "order recorded; queued for the ERP")
            }
            OrderNote::Held { order_key, reason } => {
                tracing::info!(source, order_key = %order_key, reason = %reason, "order recorded; held")
            }
            OrderNote::Cancelled { order_key, reason } => {
                tracing::info!(source, order_key = %order_key, reason = %reason, "order cancelled at the source; not pushed")
            }
            OrderNote::Invalid { order_key, reason } => {
                tracing::error!(source, order_key = %order_key, reason = %reason, "order parked: it cannot be mapped")
            }
            OrderNote::ChangedAfterPush { order_key, what } => {
                tracing::warn!(source, order_key = %order_key, change = %what, "order changed at the source after it was pushed; not pushed again")
            }
            OrderNote::CancelledAfterPush { order_key, reason } => {
                tracing::warn!(source, order_key = %order_key, reason = %reason, "order cancelled at the source after it was pushed; cancelling it in the ERP")
            }
        }
    }
}

/// Walks one source's window page by page, recording each page (and the
/// cursor, when the connector gives one) in one transaction. `scope` is the
/// cursor's scope (`live` or `backfill:<run>`).
pub async fn poll_source(
    engine: &Engine,
    connector: &Connector,
    window: Window,
    scope: &str,
    shutdown: &CancellationToken,
) -> Result<PollSummary, Failure> {
    let how = PollAs {
        keys: Keys::Keep,
        ..PollAs::LIVE
    };
    poll_source_with(engine, connector, window, scope, shutdown, how).await
}

/// [`poll_source`] as `how` says: for a command (`backfill`) a failed page
/// is retried within its limits and its progress hears about every page.
pub async fn poll_source_with(
    engine: &Engine,
    connector: &Connector,
    window: Window,
    scope: &str,
    shutdown: &CancellationToken,
    how: PollAs<'_>,
) -> Result<PollSummary, Failure> {
    let PollAs {
        limits,
        progress,
        keys,
    } = how;
    let source = connector.name();
    let store = &engine.store;
    let live = matches!(window, Window::Live { .. });
    let mut walk = connector.begin(window);
    let mut summary = PollSummary::default();
    let ledger = |e: anyhow::Error| Failure::retry(format!("ledger: {e:#}"));
    if live {
        // Under way, with no page yet: the pages a failed poll got through
        // are counted against this one's (`SourceStatusRow::past_last_failure`).
        let src = source.to_string();
        store
            .call(move |s| s.note_polling(&src, 0))
            .await
            .map_err(ledger)?;
    }
    loop {
        // A failed page is read again a few times before the poll gives up;
        // the walk does not move until a page has been read.
        let page = read_page(engine, connector, &mut walk, limits, shutdown).await?;
        let Some(page) = page else { break };
        summary.pages += 1;
        summary.seen += page.orders.len();
        if keys == Keys::Keep {
            summary.listed.extend(
                page.orders
                    .iter()
                    .map(|o| &o.external_id)
                    .chain(&page.unchanged)
                    .map(|id| order_key(source, id)),
            );
        }
        let listed = page.orders.len() + page.unchanged.len();
        let read = page.orders.len();
        // What this page shows of each order, for the next recheck round
        // once the page is recorded (see [`fresh`]).
        let fresh = (live && connector.walk_reads_as_recheck()).then(|| {
            let read: Vec<String> = page.orders.iter().map(|o| o.external_id.clone()).collect();
            (read, page.unchanged.clone())
        });
        let Page { orders, cursor, .. } = page;
        let (src, sc) = (source.to_string(), scope.to_string());
        let report = store
            .call(move |s| {
                s.ingest(
                    &src,
                    &sc,
                    &orders,
                    cursor.as_deref().map(|c| (sc.as_str(), c)),
                )
            })
            .await
            .map_err(ledger)?;
        if let Some((read, unchanged)) = fresh {
            let mut all = engine.fresh.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(source.to_string()).or_default().note(
                read.iter().map(String::as_str),
                unchanged.iter().map(String::as_str),
            );
        }
        if let Some(p) = progress {
            p.page(listed, &report);
        }
        log_notes(source, &report.notes);
        for note in &report.notes {
            match note {
                OrderNote::Queued(k) => {
                    summary.queued_count += 1;
                    if keys == Keys::Keep {
                        summary.queued.push(k.clone());
                    }
                }
                OrderNote::Invalid { .. } => summary.parked += 1,
                _ => {}
            }
        }
        if report.new_jobs() > 0 {
            engine.wake(source);
        }
        // A change feed read to its head whose last batch held nothing new
        // (only the echoes of our own write-backs): stop here rather than
        // chase the next echoes; the next poll reads on from the cursor
        // just stored (issue 13).
        let at_head_with_nothing_new =
            walk.at_head() && read > 0 && report.notes.is_empty() && report.unchanged == read;
        if live {
            // Under way: health must not take a long walk for a stopped one.
            let (src, pages) = (source.to_string(), summary.pages as u64);
            store
                .call(move |s| s.note_polling(&src, pages))
                .await
                .map_err(ledger)?;
        }
        if shutdown.is_cancelled() || at_head_with_nothing_new {
            break;
        }
    }
    walk.finish();
    if live {
        recheck(engine, connector, &mut summary, shutdown).await?;
    }
    Ok(summary)
}

/// The walk's next page, a failed read retried in place by the jobs' retry
/// table (`limits` bounds it); the walk does not move until a page is read.
pub async fn read_page(
    engine: &Engine,
    connector: &Connector,
    walk: &mut Walk,
    limits: InPlace,
    shutdown: &CancellationToken,
) -> Result<Option<Page>, Failure> {
    let source = connector.name();
    let mut retry = engine.policy.in_place(limits);
    let known = Known::new(std::sync::Arc::clone(&engine.store), source);
    loop {
        match connector.next_page(walk, &known).await {
            Ok(page) => return Ok(page),
            Err(failure) => {
                retry
                    .wait(failure, shutdown, |attempt, wait, failure| {
                        tracing::warn!(source, attempt, retry_in = %format_args!("{:.1}s", wait.as_secs_f32()), error = %failure, "reading the order list failed; will retry")
                    })
                    .await?
            }
        }
    }
}

/// Orders a poll reads again, at most (`max_in_flight` of them at a time).
const RECHECK_BATCH: usize = 200;

/// How often a recheck round notes that its poll is still under way: well
/// inside the shortest gap health allows (three periods of a one-second
/// schedule, plus 30 s).
const NOTE_RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Looks again at orders the list will not show us again (held ones, and
/// at some sources every order not yet final), leaving out those a walk has
/// read since the last round ([`fresh`]).
async fn recheck(
    engine: &Engine,
    connector: &Connector,
    summary: &mut PollSummary,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let source = connector.name();
    let states = connector.recheck_states();
    if states.is_empty() {
        // No round this poll: what the walks read counts for the next one.
        return Ok(());
    }
    let src = source.to_string();
    let every = engine
        .recheck_every
        .get(source)
        .copied()
        .unwrap_or(std::time::Duration::ZERO);
    let round = engine
        .store
        .call(move |s| s.recheck_batch(&src, states, RECHECK_BATCH, every))
        .await
        .map_err(|e| Failure::retry(format!("ledger: {e:#}")))?;
    // What the walks read stays known through the round and the one after
    // it (`fresh::Rounds`), not only until the next poll.
    let (total, ids, unchanged) = {
        let mut all = engine.fresh.lock().unwrap_or_else(|p| p.into_inner());
        let rounds = all.entry(source.to_string()).or_default();
        if round.new_round {
            rounds.begin_round();
        }
        let total = round.ids.len();
        let ids: Vec<String> = round
            .ids
            .into_iter()
            .filter(|id| !rounds.was_read(id))
            .collect();
        let unchanged: Vec<String> = ids
            .iter()
            .filter(|id| rounds.was_listed_unchanged(id))
            .cloned()
            .collect();
        (total, ids, unchanged)
    };
    let known = Known::new(std::sync::Arc::clone(&engine.store), source);
    let ids = leave_out_unchanged(total, ids, unchanged, &known).await;
    // As many reads at a time as the source allows requests (its endpoint's
    // permits bound them, shared with the write-backs, as a walk's detail
    // reads are): 200 held orders at 100 ms are 2.5 s, not 20 s.
    let at_once = connector.max_in_flight();
    let mut reads = stream::iter(ids)
        .map(|id| {
            let known = &known;
            async move {
                let read = connector.recheck(&id, known).await;
                (id, read)
            }
        })
        .buffered(at_once);
    let mut batch = Vec::new();
    let mut noted = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            // Reads under way are dropped: each is only a read.
            _ = shutdown.cancelled() => break,
            // Up to 200 reads, behind the write-backs' share of the
            // source's rate limit, or held by a pause the source asked
            // for: still under way, as a long walk is.
            _ = tokio::time::sleep_until(noted + NOTE_RECHECK_EVERY) => {
                let (src, pages) = (source.to_string(), summary.pages as u64);
                engine
                    .store
                    .call(move |s| s.note_polling(&src, pages))
                    .await
                    .map_err(|e| Failure::retry(format!("ledger: {e:#}")))?;
                noted = tokio::time::Instant::now();
                continue;
            }
            next = reads.next() => next,
        };
        let Some((id, read)) = next else { break };
        match read {
            Ok(order) => batch.push(order),
            Err(e) => {
                tracing::warn!(source, external_id = %id, error = %e, "re-reading an order failed; its next recheck round tries again")
            }
        }
    }
    drop(reads);
    if !batch.is_empty() {
        let src = source.to_string();
        let report = engine
            .store
            .call(move |s| s.ingest(&src, "live", &batch, None))
            .await
            .map_err(|e| Failure::retry(format!("ledger: {e:#}")))?;
        log_notes(source, &report.notes);
        let queued = report.notes.iter().filter_map(|n| match n {
            OrderNote::Queued(k) => Some(k.clone()),
            _ => None,
        });
        summary.queued_count += queued.clone().count();
        summary.queued.extend(queued);
        if report.new_jobs() > 0 {
            engine.wake(source);
        }
    }
    Ok(())
}

/// The ids of a recheck batch worth reading, of `total` handed out: those a
/// walk read recently are already left out; of those it listed unchanged
/// (`unchanged`), the ones the ledger has unmappable stay in (one ledger
/// call for those, if any).
async fn leave_out_unchanged(
    total: usize,
    mut ids: Vec<String>,
    unchanged: Vec<String>,
    known: &Known,
) -> Vec<String> {
    if !unchanged.is_empty() {
        let seen = known.look_up(&unchanged).await;
        let unchanged: std::collections::HashSet<&String> = unchanged.iter().collect();
        ids.retain(|id| !(unchanged.contains(id) && fresh::unchanged_is_enough(seen.state(id))));
    }
    if ids.len() < total {
        tracing::debug!(
            source = %known.source(),
            skipped = total - ids.len(),
            reading = ids.len(),
            "recheck: orders a walk read since the last round are not read again"
        );
    }
    ids
}

/// What a poll reads: a source's orders, or one of the ERP's feeds
/// (`"shipments"`, `"cancellations"`).
#[derive(Debug, Clone, Copy)]
pub enum Polled<'a> {
    Source(&'a str),
    ErpFeed(&'static str),
}

/// Notes a poll's outcome in its failure streak: a poll that keeps failing
/// is logged when the trouble starts, then once a minute with the count,
/// not at every schedule tick. Returns what to do about a failure
/// (`Next::log`), None after a success (logging that polling works again
/// if a streak just ended).
pub fn poll_trouble(
    engine: &Engine,
    polled: Polled<'_>,
    failed: bool,
) -> Option<crate::throttle::Next> {
    let key = match polled {
        Polled::Source(name) => name.to_string(),
        // Not a source name: those never start with '_' (config).
        Polled::ErpFeed(feed) => format!("{}:{feed}", crate::store::fence::ERP_FEED),
    };
    let mut all = engine
        .poll_trouble
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let streak = all.entry(key).or_default();
    if failed {
        return Some(streak.failure());
    }
    if let Some(failures) = streak.success() {
        match polled {
            Polled::Source(source) => tracing::info!(source, failures, "polling works again"),
            Polled::ErpFeed(feed) => {
                tracing::info!(feed, failures, "reading the ERP's {feed} works again")
            }
        }
    }
    None
}

/// One live poll of a source, with its outcome noted for `status`.
pub async fn poll_live(engine: &Engine, connector: &Connector, shutdown: &CancellationToken) {
    let source = connector.name();
    let trouble = |failed: bool| poll_trouble(engine, Polled::Source(source), failed);
    let src = source.to_string();
    let cursor = match engine.store.call(move |s| s.cursor(&src, "live")).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(n) = trouble(true).filter(|n| n.log) {
                tracing::error!(source, error = %format!("{e:#}"), failures = n.failures, suppressed = n.suppressed, "cannot read the cursor from the ledger");
            }
            return;
        }
    };
    let reach = engine.overlap.reach(source, std::time::Instant::now());
    let window = Window::Live {
        cursor,
        lookback: reach.lookback,
    };
    let result = poll_source_with(engine, connector, window, "live", shutdown, PollAs::LIVE).await;
    if result.is_ok() {
        engine.overlap.read(source, reach);
    }
    if result.is_err() && !crate::fleet::may_poll(&engine.store, source) {
        // A fleet node whose poll lease went to another node mid-poll:
        // nothing of the page was recorded; that node polls it now.
        tracing::info!(
            source,
            "stopped polling: another node holds the poll lease now"
        );
        return;
    }
    let error = result
        .as_ref()
        .err()
        .map(|e| crate::secret::redact(&e.to_string()));
    let src = source.to_string();
    let recorded = engine
        .store
        .call(move |s| s.record_poll(&src, error.as_deref()))
        .await;
    match (&result, recorded) {
        (_, Err(e)) => {
            if let Some(n) = trouble(true).filter(|n| n.log) {
                tracing::error!(source, error = %format!("{e:#}"), failures = n.failures, suppressed = n.suppressed, "cannot record the poll in the ledger");
            }
        }
        (Ok(s), Ok(())) => {
            trouble(false);
            engine.remote_answered(source, false).await;
            tracing::debug!(
                source,
                pages = s.pages,
                seen = s.seen,
                queued = s.queued_count,
                whole_lookback = reach.whole_since.is_some(),
                "poll done"
            )
        }
        (Err(e), Ok(())) => {
            if let Some(n) = trouble(true).filter(|n| n.log) {
                tracing::warn!(source, error = %crate::secret::redact(&e.to_string()), failures = n.failures, suppressed = n.suppressed, "poll failed; the next scheduled poll tries again")
            }
        }
    }
}

/// One ERP feed read from its stored cursor (`_erp`, `scope`), page by
/// page: `fetch` reads the page after a cursor (its items and the next
/// cursor), `record` stores the items with the next cursor in one ledger
/// transaction, and `each` hears what was recorded. The walk ends at an
/// empty page, a cursor that does not move, shutdown, or after 1000 pages
/// (the next poll goes on from the stored cursor). Answers whether the ERP
/// answered at all.
async fn walk_erp_feed<T, N, F, Fut, R>(
    engine: &Engine,
    shutdown: &CancellationToken,
    scope: &'static str,
    fetch: F,
    record: R,
    mut each: impl FnMut(Vec<N>),
) -> Result<bool, Failure>
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Failure>>,
    T: Send + 'static,
    N: Send + 'static,
    R: Fn(&crate::store::Store, &[T], &str) -> anyhow::Result<Vec<N>> + Clone + Send + 'static,
{
    let ledger = |e: anyhow::Error| Failure::retry(format!("ledger: {e:#}"));
    let mut answered = false;
    for _ in 0..1000 {
        if shutdown.is_cancelled() {
            break;
        }
        let after = engine
            .store
            .call(move |s| s.cursor("_erp", scope))
            .await
            .map_err(ledger)?;
        let (items, next) = fetch(after.clone()).await?;
        answered = true;
        let done = items.is_empty() || Some(next.as_str()) == after.as_deref();
        let record = record.clone();
        let notes = engine
            .store
            .call(move |s| record(s, &items, &next))
            .await
            .map_err(ledger)?;
        each(notes);
        if done {
            break;
        }
    }
    Ok(answered)
}

/// Reads new ERP shipments and queues the "shipped" write-backs.
pub async fn poll_shipments(
    engine: &Engine,
    shutdown: &CancellationToken,
) -> Result<usize, Failure> {
    let uptake: std::sync::Arc<std::collections::HashMap<String, crate::store::Uptake>> =
        std::sync::Arc::new(
            engine
                .connectors
                .iter()
                .map(|(name, c)| (name.clone(), c.shipment_uptake()))
                .collect(),
        );
    let mut total = 0;
    let answered = walk_erp_feed(
        engine,
        shutdown,
        "shipments",
        |after| async move {
            let page = engine.erp.shipments(after.as_deref(), 100).await?;
            Ok((page.shipments, page.next))
        },
        move |s, shipments, next| {
            s.record_shipments_with(shipments, next, |source| {
                // A source not configured here (disabled): as before, a
                // write-back that waits for it.
                uptake.get(source).copied().unwrap_or(crate::store::Uptake::ALL)
            })
        },
        |queued: Vec<(String, String)>| {
            for (source, key) in &queued {
                tracing::info!(source = %source, order_key = %key, "shipment reported by the ERP; queued for write-back");
                engine.wake(source);
            }
            total += queued.len();
        },
    )
    .await?;
    if answered {
        // The ERP answers: pushes waiting on a backoff may go now.
        for source in engine.connectors.keys() {
            engine.remote_answered(source, true).await;
        }
    }
    Ok(total)
}

/// Reads the sales the ERP cancelled since the stored cursor and queues
/// their write-backs to the sources (the same feed walk as shipments).
pub async fn poll_cancellations(
    engine: &Engine,
    shutdown: &CancellationToken,
) -> Result<usize, Failure> {
    let mut total = 0;
    walk_erp_feed(
        engine,
        shutdown,
        "cancellations",
        |after| async move {
            let page = engine.erp.cancellations(after.as_deref(), 100).await?;
            Ok((page.cancellations, page.next))
        },
        |s, cancellations, next| s.record_cancellations(cancellations, next),
        |notes: Vec<crate::store::CancellationNote>| {
            for note in &notes {
                match note {
                    crate::store::CancellationNote::Queued { source, order_key } => {
                        tracing::warn!(source = %source, order_key = %order_key, "sale cancelled in the ERP; queued for write-back to the source");
                        engine.wake(source);
                        total += 1;
                    }
                    crate::store::CancellationNote::Settled { order_key } => {
                        tracing::info!(order_key = %order_key, "the ERP reports the sale cancelled");
                    }
                    crate::store::CancellationNote::Ignored { order_key, state } => {
                        tracing::warn!(order_key = %order_key, state = %state, "the ERP reports the sale cancelled after the order went further; not written back (orders show)");
                    }
                }
            }
        },
    )
    .await?;
    Ok(total)
}
