//! Retailys (Czech omnichannel e-commerce platform), REST JSON with the API
//! key in the `token` header.
//! Read: `GET /System/Orders?from=<cursor - lookback>&per_page=..&page=N&expanded=true`
//! to the paginator's last page (or until [`WalkGuard`] stops a list that
//! does not end); the cursor is the newest `date_order` seen, written only
//! at the end of a walk in which every order could be keyed. Each order of
//! a page is read on its own: a bad one is parked, the others flow.
//! Retailys has no "changed since" filter, and `from` filters on the order's
//! date. So a live walk ends, at most once per `recheck_every` (default ten
//! minutes here), with a sweep of every open order
//! (`done=false&canceled=false`, as the API notes recommend): an open order
//! dated before the window is recorded too. Ledger orders that are not
//! final are read again each on its own in recheck rounds, except those a
//! walk (or sweep) listed since the last such round ([`crate::poll::fresh`]).
//! Write-back: status, then the ERP number as a history record (at most
//! once) when the ERP accepts;
//! tracking (read first), `sent` and the shipped status when it ships.

pub(crate) mod config;

#[cfg(test)]
mod fuzz_tests;
mod map;
mod statuses;
#[cfg(test)]
mod vendor_examples;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use super::list::{self, Body, Listing};
use super::walk::WalkGuard;
use super::{Page, PrepareError, Window};
use crate::config::{Config, ConfigError, RetailysSettings, SourceConfig, StatusRef};
use crate::http::{Endpoint, Failure, Reply, path_segment};
use crate::model::CountryMap;
use crate::outbox::state::OrderState;
use crate::poll::Known;
use crate::secret::Secret;
use crate::store::IncomingOrder;
use statuses::{Status, StatusTable, Wanted};

/// States of ledger orders worth reading again: not yet pushed (a status
/// change may release, hold or cancel them) and pushed but not shipped (a
/// cancellation at the shop must reach an operator).
const RECHECK_STATES: &[OrderState] = &[
    OrderState::Held,
    OrderState::Invalid,
    OrderState::Queued,
    OrderState::Pushed,
    OrderState::Accepted,
];

pub struct Retailys {
    name: String,
    /// Config key prefix for messages (`sources[2]`).
    key: String,
    base: String,
    pub(super) endpoint: Endpoint,
    token: Secret,
    channel_id: Option<i64>,
    import_statuses: Option<Vec<StatusRef>>,
    countries: CountryMap,
    processing_status: StatusRef,
    shipped_status: Option<StatusRef>,
    cancelled_status: Option<StatusRef>,
    shipper_id: Option<i64>,
    page_size: u32,
    lookback: Duration,
    /// A live walk ends with a sweep of the shop's open orders at most
    /// this often (`recheck_every`, the one pacing rule for looking again).
    recheck_every: Duration,
    /// When this process last swept the open orders to the end.
    last_sweep: std::sync::Mutex<Option<std::time::Instant>>,
    statuses: Mutex<Option<Arc<StatusTable>>>,
    /// `(id, name)` of the shop's shippings, read once when a carrier must
    /// be matched by name.
    shippings: Mutex<Option<Vec<(i64, String)>>>,
    /// Said once at WARN: orders come without a status while
    /// `import_statuses` is configured, so open orders are held.
    statusless_said: std::sync::atomic::AtomicBool,
}

/// Where a walk is: page numbers of one `from`/`to` query, then (a live
/// walk, at most once per `recheck_every`) of the sweep of open orders.
pub struct Walk {
    /// A complete listing (`reconcile`): orders finished at the shop before
    /// ordersync saw them are listed too.
    listing: bool,
    query: Vec<(&'static str, String)>,
    page: u32,
    old_cursor: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
    /// Ends a paginator that does not; counts orders that could not even
    /// be keyed (either keeps the cursor where it was).
    pub(super) guard: WalkGuard,
    done: bool,
    sweep: Sweep,
}

/// Retailys has no "changed since" filter, and `from` filters on the
/// order's date: an open order dated before the window (entered late, or
/// backdated) is never listed by a live walk. The API notes recommend
/// polling `done=false&canceled=false` separately at a slower cadence; a
/// live walk does that after its window, at most once per `recheck_every`.
/// Its pages move no cursor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sweep {
    /// Not this walk (a backfill, a listing, not due, or a first walk,
    /// which has no `from` and so reads every order anyway).
    No,
    /// After the window's last page.
    Next,
    /// The walk is in it.
    Running,
}

#[derive(Deserialize)]
struct Paginator {
    #[serde(default)]
    pages: u32,
}

/// The orders stay raw: each is parsed on its own ([`super::list`]).
#[derive(Deserialize)]
struct OrdersPage {
    paginator: Paginator,
    #[serde(default)]
    orders: Vec<Box<RawValue>>,
}

impl list::Envelope for OrdersPage {
    fn items(&self) -> &[Box<RawValue>] {
        &self.orders
    }
}

/// A list page read order by order, each keyed by its id.
fn read_list(body: &[u8], what: &str) -> Result<Listing<OrdersPage>, Failure> {
    Listing::read(body, what, map::id_of)
}

/// Maps one order (listed or re-read as `id`), a panic in it contained by
/// [`list::isolated`]: that order is parked.
fn map_one(
    source: &str,
    table: &StatusTable,
    countries: &CountryMap,
    id: &str,
    raw: &str,
    v: &Value,
    ours: bool,
) -> Result<IncomingOrder, String> {
    list::isolated(
        || map::incoming(source, table, countries, raw, v, ours),
        |why| Ok(list::parked(id, raw, why)),
    )
}

/// The connector's mapping for a client outside the engine (the benchmarks'
/// naive peer): one order as `expanded=true` shows it → its canonical JSON,
/// `None` when it is not to be pushed (held, cancelled), `Err` when it cannot
/// be mapped. `statuses` is the `statuses` array of
/// `/System/Orders/Statuses`; imported are the statuses that neither
/// complete nor cancel an order (the default `import_statuses`).
pub fn canonical_json(
    source: &str,
    statuses: &Value,
    processing_status: &str,
    raw: &str,
) -> Result<Option<String>, String> {
    let all: Vec<Status> = serde_json::from_value(statuses.clone()).map_err(|e| e.to_string())?;
    let processing = StatusRef::Name(processing_status.into());
    let wanted = Wanted {
        import: None,
        processing: &processing,
        shipped: None,
        cancelled: None,
    };
    let table = StatusTable::resolve(all, &wanted, source)?;
    let value: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let mapped = map::incoming(source, &table, CountryMap::none(), raw, &value, false)?.mapped?;
    Ok(
        matches!(mapped.disposition, crate::store::Disposition::Push)
            .then(|| mapped.order.to_json()),
    )
}

#[derive(Deserialize)]
struct StatusesPage {
    paginator: Paginator,
    #[serde(default)]
    statuses: Vec<Status>,
}

impl Retailys {
    pub fn new(
        config: &Config,
        source: &SourceConfig,
        settings: &RetailysSettings,
    ) -> Result<Retailys, ConfigError> {
        let index = config
            .sources
            .iter()
            .position(|s| s.name == source.name)
            .unwrap_or_default();
        let key = format!("sources[{index}]");
        let token = settings
            .token
            .load(&format!("{key}.token"))
            .map_err(|e| ConfigError(format!("source {}: {e}", source.name)))?;
        let endpoint = Endpoint::for_source(config, source)?;
        Ok(Retailys {
            name: source.name.clone(),
            key,
            base: source.base_url.clone(),
            endpoint,
            token,
            channel_id: settings.channel_id,
            import_statuses: settings.import_statuses.clone(),
            countries: source.country_map.clone(),
            processing_status: settings.processing_status.clone(),
            shipped_status: settings.shipped_status.clone(),
            cancelled_status: settings.cancelled_status.clone(),
            shipper_id: settings.shipper_id,
            page_size: source.page_size,
            lookback: source.lookback,
            recheck_every: source.recheck_every,
            last_sweep: std::sync::Mutex::new(None),
            statuses: Mutex::new(None),
            shippings: Mutex::new(None),
            statusless_said: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Reply, Failure> {
        self.endpoint
            .send(build().header("token", self.token.expose()))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/System/Orders/{id}{rest}`, the id encoded as one path segment.
    fn order_url(&self, id: &str, rest: &str) -> Result<String, Failure> {
        Ok(self.url(&format!("/System/Orders/{}{rest}", path_segment(id)?)))
    }

    // --- statuses ---------------------------------------------------------

    /// Reads every page of the shop's statuses and resolves the configured ones.
    async fn load_statuses(&self) -> Result<StatusTable, PrepareError> {
        let url = self.url("/System/Orders/Statuses");
        let mut all = Vec::new();
        let mut page = 1u32;
        loop {
            let query = [("per_page", "250".to_string()), ("page", page.to_string())];
            let answer: StatusesPage = self
                .send(|| self.endpoint.client().get(&url).query(&query))
                .await
                .and_then(|r| r.json())
                .map_err(|f| PrepareError::Remote(f.context("reading order statuses")))?;
            all.extend(answer.statuses);
            // Bounded: a paginator that never ends must not loop forever.
            if page >= answer.paginator.pages || page >= 100 {
                break;
            }
            page += 1;
        }
        let wanted = Wanted {
            import: self.import_statuses.as_deref(),
            processing: &self.processing_status,
            shipped: self.shipped_status.as_ref(),
            cancelled: self.cancelled_status.as_ref(),
        };
        StatusTable::resolve(all, &wanted, &self.key)
            .map_err(|e| PrepareError::Config(ConfigError(format!("source {}: {e}", self.name))))
    }

    /// The status table, read on first use.
    async fn statuses(&self) -> Result<Arc<StatusTable>, Failure> {
        let mut cached = self.statuses.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(Arc::clone(t));
        }
        let table = Arc::new(
            self.load_statuses()
                .await
                .map_err(PrepareError::into_failure)?,
        );
        *cached = Some(Arc::clone(&table));
        Ok(table)
    }

    /// Reads the table again because an order carries a status id it does not
    /// know (the shop added a status since startup).
    async fn refresh_statuses(&self, unknown: i64) -> Result<Arc<StatusTable>, Failure> {
        tracing::info!(source = %self.name, status_id = unknown, "order with an unknown status id; reading the shop's statuses again");
        let table = Arc::new(
            self.load_statuses()
                .await
                .map_err(PrepareError::into_failure)?,
        );
        *self.statuses.lock().await = Some(Arc::clone(&table));
        Ok(table)
    }

    /// The table, refreshed once if any of `orders` has a status it lacks.
    async fn statuses_for(&self, orders: &[&Value]) -> Result<Arc<StatusTable>, Failure> {
        let table = self.statuses().await?;
        match orders
            .iter()
            .filter_map(|v| map::status_id(v))
            .find(|id| table.get(*id).is_none())
        {
            Some(unknown) => self.refresh_statuses(unknown).await,
            None => Ok(table),
        }
    }

    pub async fn prepare(&self) -> Result<(), PrepareError> {
        let table = Arc::new(self.load_statuses().await?);
        tracing::info!(source = %self.name, processing = %table.name(table.processing), import = %table.import_names(), "order statuses resolved");
        *self.statuses.lock().await = Some(table);
        Ok(())
    }

    // --- reading ----------------------------------------------------------

    pub fn begin(&self, window: Window) -> Walk {
        let lookback = chrono::Duration::from_std(self.lookback).unwrap_or_default();
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
        let mut query = Vec::new();
        let mut sweep = Sweep::No;
        let old_cursor = match &window {
            Window::Live {
                cursor,
                lookback: reread,
            } => {
                let cursor = cursor
                    .as_deref()
                    .and_then(|c| c.parse::<DateTime<Utc>>().ok());
                if let Some(c) = cursor {
                    let reread = chrono::Duration::from_std(*reread).unwrap_or_default();
                    query.push(("from", stamp(c - reread)));
                    if self.sweep_due() {
                        sweep = Sweep::Next;
                    }
                }
                cursor
            }
            Window::Listing { since, until } => {
                query.push(("from", stamp(*since)));
                if let Some(u) = until {
                    query.push(("to", stamp(*u)));
                }
                None
            }
            Window::Backfill { since, until, .. } => {
                let (from, resume) = window.backfill_from(lookback).unwrap_or((*since, None));
                query.push(("from", stamp(from)));
                if let Some(u) = until {
                    query.push(("to", stamp(*u)));
                }
                resume
            }
        };
        query.extend(self.common_query());
        Walk {
            listing: window.is_listing(),
            query,
            page: 1,
            old_cursor,
            newest: None,
            guard: WalkGuard::new(&self.name, self.page_size),
            done: false,
            sweep,
        }
    }

    /// What every list query of a walk carries: the channel, the page size,
    /// whole orders.
    fn common_query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(ch) = self.channel_id {
            query.push(("channel_id", ch.to_string()));
        }
        query.push(("per_page", self.page_size.to_string()));
        query.push(("expanded", "true".into()));
        query
    }

    fn sweep_due(&self) -> bool {
        let last = *self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.recheck_every)
    }

    pub async fn next_page(&self, walk: &mut Walk, known: &Known) -> Result<Option<Page>, Failure> {
        if walk.done {
            return Ok(None);
        }
        let url = self.url("/System/Orders");
        let mut query = walk.query.clone();
        query.push(("page", walk.page.to_string()));
        let reply = self
            .send(|| self.endpoint.client().get(&url).query(&query))
            .await?;
        let listing = read_list(&reply.body, &reply.what)?;
        if !walk
            .guard
            .admit_page(&format!("page {}", walk.page), listing.listed())
        {
            walk.done = true;
            return Ok(None);
        }
        let Listing {
            page: answer,
            items,
            ids,
        } = listing;
        let values: Vec<&Value> = items.iter().map(|i| &i.value).collect();
        let table = match self.statuses_for(&values).await {
            Ok(table) => table,
            Err(f) => {
                // The page is read again (the caller retries): not a repeat.
                walk.guard.retract_page();
                return Err(f);
            }
        };
        let seen = known.look_up(ids.iter().flatten()).await;
        // From here on the walk moves: nothing below returns early.
        let mut orders = Vec::new();
        for (item, id) in items.iter().zip(ids) {
            let v = &item.value;
            if let Some(t) = v["date_order"]
                .as_str()
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            {
                walk.newest = walk.newest.max(Some(t.with_timezone(&Utc)));
            }
            let Some(id) = id else {
                let why = item.broken.as_deref().unwrap_or("no id");
                walk.guard.unkeyed(format!("page {}: {why}", walk.page));
                continue;
            };
            if !walk.listing
                && seen.state(&id).is_none()
                && map::status_id(v).is_some_and(|s| table.finished_elsewhere(s))
            {
                // Completed at the shop before we ever saw it: not ours to import.
                continue;
            }
            if let Some(parked) = item.unreadable("Retailys", &id) {
                orders.push(parked);
                continue;
            }
            // Only an order ordersync pushed may be followed through the
            // processing and shipped statuses; a held one is not ours.
            let ours = seen.ours(&id);
            self.note_statusless(&table, v, ours);
            match map_one(&self.name, &table, &self.countries, &id, &item.raw, v, ours) {
                Ok(o) => orders.push(o),
                Err(e) => walk.guard.unkeyed(format!("page {}: {e}", walk.page)),
            }
        }
        let mut cursor = None;
        if walk.page < answer.paginator.pages {
            walk.page += 1;
        } else if walk.sweep == Sweep::Running {
            walk.done = true;
            *self.last_sweep.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        } else {
            if !walk.guard.complete() {
                tracing::debug!(source = %self.name, "an order could not be keyed; the cursor stays where it was");
            } else {
                cursor = walk
                    .old_cursor
                    .max(walk.newest)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
            }
            if walk.sweep == Sweep::Next {
                // The window is through (its cursor goes with this page):
                // on to every open order, from the first page.
                walk.sweep = Sweep::Running;
                walk.query = vec![("done", "false".into()), ("canceled", "false".into())];
                walk.query.extend(self.common_query());
                walk.page = 1;
                walk.guard.finish();
                walk.guard = WalkGuard::new(&self.name, self.page_size);
            } else {
                walk.done = true;
            }
        }
        Ok(Some(Page {
            orders,
            cursor,
            unchanged: Vec::new(),
        }))
    }

    /// One order as the shop has it now, read like a list item: a value
    /// that cannot be read is named, not a failure of the request.
    async fn read_order(&self, id: &str) -> Result<list::Item, Failure> {
        let url = self.order_url(id, "")?;
        let reply = self
            .send(|| {
                self.endpoint
                    .client()
                    .get(&url)
                    .query(&[("expanded", "true")])
            })
            .await?;
        Ok(Body::decode(&reply.body).whole())
    }

    /// One order for a write-back (which reads before it writes), as
    /// [`list::Item::readable_for`] the fields the write-backs decide by.
    async fn get_order(&self, id: &str) -> Result<Value, Failure> {
        let item = self.read_order(id).await?;
        match item.readable_for(&DECIDED_BY) {
            Ok(order) => Ok(order),
            Err(reason) => Err(Failure::retry(format!(
                "Retailys order {id} cannot be read: {reason}"
            ))),
        }
    }

    pub async fn recheck(
        &self,
        external_id: &str,
        known: &Known,
    ) -> Result<IncomingOrder, Failure> {
        let item = self.read_order(external_id).await?;
        if let Some(parked) = item.unreadable("Retailys", external_id) {
            return Ok(parked);
        }
        let table = self.statuses_for(&[&item.value]).await?;
        // Held orders are re-checked too: being in the ledger is not being ours.
        let ours = known
            .one(external_id)
            .await
            .is_some_and(|r| r.state.in_erp());
        self.note_statusless(&table, &item.value, ours);
        map_one(
            &self.name,
            &table,
            &self.countries,
            external_id,
            &item.raw,
            &item.value,
            ours,
        )
        .map_err(Failure::retry)
    }

    /// Says once, at WARN, that the shop sends orders without a status while
    /// `import_statuses` is configured: open orders are then held
    /// ([`map::NO_STATUS`]), which an operator must hear about.
    fn note_statusless(&self, table: &StatusTable, v: &Value, ours: bool) {
        use std::sync::atomic::Ordering;
        if table.import_given
            && !ours
            && map::status_id(v).is_none()
            && !self.statusless_said.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(source = %self.name, key = %format!("{}.import_statuses", self.key), "Retailys orders arrive without a status_id: open orders are held, since import_statuses cannot be checked; remove import_statuses to push every open order");
        }
    }

    /// How often a round begins is `recheck_every`'s alone
    /// ([`crate::store::Store::recheck_batch`]).
    pub fn recheck_states(&self) -> &'static [OrderState] {
        RECHECK_STATES
    }

    pub async fn check(&self) -> Result<String, Failure> {
        let table = Arc::new(
            self.load_statuses()
                .await
                .map_err(PrepareError::into_failure)?,
        );
        let host = reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let text = format!(
            "Retailys at {host} answered; {} order statuses; processing = {:?}, importing {}",
            table.all.len(),
            table.name(table.processing),
            table.import_names()
        );
        *self.statuses.lock().await = Some(table);
        Ok(text)
    }
}

/// The fields of an order the write-backs decide by.
const DECIDED_BY: [&str; 5] = ["canceled", "status_id", "status", "sent", "trackings"];
