//! Simulator of the CloudSuite webshop order API (Keycloak client-credentials
//! auth, DRF-style order list/detail/PATCH/PUT) plus a driving API for tests and
//! the demo. It mirrors the documented behaviour, quirks and hazards included.

mod api;
mod desadv;
mod model;
mod seed;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use chrono::{NaiveDateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::faults::{ErrorStyle, FaultState, Faults};
use super::lock;
pub use desadv::Desadv;
#[cfg(test)]
pub(crate) use desadv::parse_desadv;
use model::Order;
pub use model::Shape;
#[cfg(test)]
pub(crate) use model::{AddressShape, CustomerShape};
use seed::Ids;

pub const TOKEN_PATH: &str = "/realms/CloudSuite/protocol/openid-connect/token";

#[derive(Clone, Debug)]
pub struct CloudSuiteOptions {
    pub client_id: String,
    pub client_secret: String,
    /// Deprecated `Authorization: Token <legacy_token>`, still served when set.
    pub legacy_token: Option<String>,
    /// Lifetime of issued access tokens; `expires_in` reports it rounded up to
    /// whole seconds, so sub-second values keep tests fast.
    pub token_ttl: Duration,
    /// Confirmed orders created at start.
    pub seed_orders: usize,
    pub seed: u64,
    /// Seeded confirm dates are spread over this long before now.
    pub spread: Duration,
    pub faults: Faults,
    /// All timestamps are naive local times in this zone.
    pub timezone: chrono_tz::Tz,
    /// Webshop ids seeded orders are spread over.
    pub webshops: Vec<i64>,
    pub first_order_id: i64,
    /// The customer-specific `shop` and `user` its proxy endpoints (DESADV)
    /// demand.
    pub proxy_shop: u64,
    pub proxy_user: u64,
    /// What a PATCH that took effect answers. CloudSuite's pages show the
    /// PATCH bodies, never the answer; DRF's default is the whole order.
    pub patch_answer: PatchAnswer,
}

/// The shapes a PATCH's answer may plausibly take (the documents show none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatchAnswer {
    /// 200 with the whole order as it now stands (DRF's `UpdateModelMixin`).
    #[default]
    Whole,
    /// 200 with `id` and the fields the PATCH set.
    FieldsSet,
    /// 204 with no body.
    NoContent,
}

impl Default for CloudSuiteOptions {
    fn default() -> Self {
        CloudSuiteOptions {
            client_id: "ordersync".into(),
            client_secret: "sandbox-client-secret".into(),
            legacy_token: None,
            token_ttl: Duration::from_secs(300),
            seed_orders: 0,
            seed: 42,
            spread: Duration::from_secs(2 * 24 * 3600),
            faults: Faults::default(),
            timezone: chrono_tz::Europe::Amsterdam,
            webshops: vec![1],
            first_order_id: 48001,
            proxy_shop: 1,
            proxy_user: 1260,
            patch_answer: PatchAnswer::Whole,
        }
    }
}

/// One field change on an order, as the audit trail shows it. `field` is e.g.
/// "state", "erp_order_number", "shipment_state",
/// "order_lines[<id>].erp_line_number", or "order_lines[<id>]" (line deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Local (Europe/Amsterdam) time, like `modified_date`.
    pub at: NaiveDateTime,
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// "PATCH", "PUT" or "ADMIN".
    pub via: String,
}

/// What `add_order` creates. Unset details (customer, addresses) are generated.
#[derive(Clone, Debug)]
pub struct OrderSpec {
    pub state: String,
    /// Local time. None: now for confirmed/processing/done, else not confirmed.
    pub confirm_date: Option<NaiveDateTime>,
    pub payment_status: String,
    pub payment_method: String,
    /// Empty: one random catalogue line.
    pub lines: Vec<LineSpec>,
    /// Adds a discount line of this (positive) amount, excl. VAT.
    pub discount: Option<Decimal>,
    /// None: 4.95, free above 50 EUR of goods. Shipping exists only in
    /// shapes with the shipping fields (`Shape::extras`); setting this picks
    /// such a shape unless `shape` says otherwise.
    pub shipping_costs: Option<Decimal>,
    pub webshop: i64,
    /// An offline order (entered outside the webshop, e.g. posted by the ERP).
    pub offline: bool,
    pub customer_order_number: Option<String>,
    /// None: the order's id decides (`Shape::for_order`).
    pub shape: Option<Shape>,
}

impl Default for OrderSpec {
    fn default() -> Self {
        OrderSpec {
            state: "confirmed".into(),
            confirm_date: None,
            payment_status: "paid".into(),
            payment_method: "ideal".into(),
            lines: Vec::new(),
            discount: None,
            shipping_costs: None,
            webshop: 1,
            offline: false,
            customer_order_number: None,
            shape: None,
        }
    }
}

/// A product line; SKUs not in the catalogue are allowed (e.g. to test an
/// ERP that does not know them) and then need their own price.
#[derive(Clone, Debug)]
pub struct LineSpec {
    pub sku: String,
    pub quantity: Decimal,
    /// None: catalogue price (0 for unknown SKUs).
    pub unit_price: Option<Decimal>,
    pub description: Option<String>,
    pub tax_rate: Option<Decimal>,
}

impl LineSpec {
    pub fn new(sku: &str, quantity: Decimal) -> Self {
        LineSpec {
            sku: sku.to_string(),
            quantity,
            unit_price: None,
            description: None,
            tax_rate: None,
        }
    }
}

/// Cheap handle to one simulator instance.
#[derive(Clone)]
pub struct CloudSuiteSim {
    inner: Arc<Shared>,
}

struct Shared {
    opts: CloudSuiteOptions,
    state: Mutex<State>,
    faults: Arc<FaultState>,
    background: CancellationToken,
}

struct State {
    orders: BTreeMap<i64, Order>,
    ids: Ids,
    /// Drives orders created after start, so a given sequence of calls is
    /// reproducible too.
    rng: StdRng,
    /// Access token -> expiry.
    tokens: HashMap<String, Instant>,
    issued: Vec<String>,
    token_requests: u64,
    /// DESADV messages received, in order.
    desadvs: Vec<Desadv>,
    /// DESADV messages refused because their number was already received.
    desadv_repeats: u64,
}

impl CloudSuiteSim {
    pub fn new(opts: CloudSuiteOptions) -> Self {
        let state = State {
            orders: BTreeMap::new(),
            ids: Ids::starting_at(opts.first_order_id),
            rng: StdRng::seed_from_u64(opts.seed ^ 0x05ee_d0c5),
            tokens: HashMap::new(),
            issued: Vec::new(),
            token_requests: 0,
            desadvs: Vec::new(),
            desadv_repeats: 0,
        };
        let sim = CloudSuiteSim {
            inner: Arc::new(Shared {
                faults: FaultState::new(opts.faults.clone(), ErrorStyle::Drf),
                state: Mutex::new(state),
                background: CancellationToken::new(),
                opts,
            }),
        };
        let o = &sim.inner.opts;
        if o.seed_orders > 0 {
            sim.seed_orders(o.seed_orders, o.seed, o.spread);
        }
        sim
    }

    /// The HTTP API with the fault layer, for serving on any listener.
    /// (`Faults::slow_body` needs `Sandbox`'s listener.)
    pub fn router(&self) -> Router {
        api::router(self.clone())
    }

    pub fn options(&self) -> &CloudSuiteOptions {
        &self.inner.opts
    }

    /// Current local (Europe/Amsterdam) time as the API would stamp it.
    pub fn now_local(&self) -> NaiveDateTime {
        Utc::now()
            .with_timezone(&self.inner.opts.timezone)
            .naive_local()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.faults.set(faults);
    }

    pub fn faults(&self) -> Faults {
        self.inner.faults.get()
    }

    pub fn request_count(&self) -> u64 {
        self.inner.faults.request_count()
    }

    /// The most requests the shop was answering at one time (since
    /// [`CloudSuiteSim::restart_peak_in_flight`]).
    pub fn peak_in_flight(&self) -> u64 {
        self.inner.faults.peak_in_flight()
    }

    pub fn restart_peak_in_flight(&self) {
        self.inner.faults.restart_peak_in_flight()
    }

    pub fn fault_count(&self) -> u64 {
        self.inner.faults.fault_count()
    }

    /// Requests that came in while a `Retry-After` this server gave was running.
    pub fn early_after_retry_after(&self) -> u64 {
        self.inner.faults.early_count()
    }

    pub fn peak_requests_per_sec(&self) -> u32 {
        self.inner.faults.peak_requests_per_sec()
    }

    /// Every access token ever issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    pub fn token_requests(&self) -> u64 {
        self.state().token_requests
    }

    /// Invalidates all issued tokens at once (Keycloak key rotation / restart).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Detail JSON exactly as `GET /api/order/{id}/` would return it.
    pub fn order(&self, id: i64) -> Option<Value> {
        self.state().orders.get(&id).map(Order::detail_json)
    }

    pub fn orders(&self) -> Vec<Value> {
        self.state()
            .orders
            .values()
            .map(Order::detail_json)
            .collect()
    }

    pub fn order_ids(&self) -> Vec<i64> {
        self.state().orders.keys().copied().collect()
    }

    pub fn history(&self, id: i64) -> Vec<Change> {
        self.with_order(id, |o| o.history.clone())
            .unwrap_or_default()
    }

    /// Authenticated PATCH/PUT requests that reached this order, valid or not
    /// (injected 5xx/429 never get there; dropped responses do count).
    pub fn write_requests(&self, id: i64) -> u64 {
        self.with_order(id, |o| o.write_requests).unwrap_or(0)
    }

    /// Authenticated GETs of this order's detail.
    pub fn detail_reads(&self, id: i64) -> u64 {
        self.with_order(id, |o| o.detail_reads).unwrap_or(0)
    }

    /// DESADV messages received for this order, in order.
    pub fn desadvs(&self, id: i64) -> Vec<Desadv> {
        self.state()
            .desadvs
            .iter()
            .filter(|d| d.order_id == Some(id))
            .cloned()
            .collect()
    }

    /// How many DESADV messages were refused as repeats of a number.
    pub fn desadv_repeats(&self) -> u64 {
        self.state().desadv_repeats
    }

    pub fn add_order(&self, spec: OrderSpec) -> i64 {
        let now = self.now_local();
        let mut st = self.state();
        let State { rng, ids, .. } = &mut *st;
        let order = seed::order_from_spec(rng, ids, &spec, now);
        let id = order.id;
        st.orders.insert(id, order);
        id
    }

    /// `n` generated confirmed orders, deterministic for `seed`, confirmed
    /// within the last `spread`. Returns their ids.
    pub fn seed_orders(&self, n: usize, seed: u64, spread: Duration) -> Vec<i64> {
        let to = self.now_local();
        let span = chrono::Duration::from_std(spread).unwrap_or(chrono::Duration::days(2));
        self.seed_orders_between(n, seed, to - span, to)
    }

    /// Like `seed_orders` with confirm dates (local time) in `[from, to)`,
    /// for backfill tests that need orders at known times.
    pub fn seed_orders_between(
        &self,
        n: usize,
        seed: u64,
        from: NaiveDateTime,
        to: NaiveDateTime,
    ) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let times = seed::confirm_times(&mut rng, n, from, to);
        let mut st = self.state();
        let webshops = self.inner.opts.webshops.clone();
        times
            .into_iter()
            .map(|t| {
                let order = seed::random_order(&mut rng, &mut st.ids, t, &webshops);
                let id = order.id;
                st.orders.insert(id, order);
                id
            })
            .collect()
    }

    /// One generated order, confirmed now, as a customer would place it.
    pub fn add_confirmed_order(&self) -> i64 {
        let now = self.now_local();
        let mut st = self.state();
        let State { rng, ids, .. } = &mut *st;
        let order = seed::random_order(rng, ids, now, &self.inner.opts.webshops);
        let id = order.id;
        st.orders.insert(id, order);
        id
    }

    /// Trickles in a new confirmed order every `every` until the sandbox stops
    /// (or the handle is aborted). Needs a Tokio runtime.
    pub fn confirm_new_orders_every(&self, every: Duration) -> JoinHandle<()> {
        let sim = self.clone();
        let stop = self.inner.background.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => { sim.add_confirmed_order(); }
                }
            }
        })
    }

    /// Stops background tasks started by `confirm_new_orders_every`.
    pub fn stop_background(&self) {
        self.inner.background.cancel();
    }

    /// Back-office change of the payment status; bumps `modified_date`.
    pub fn set_payment_status(&self, id: i64, status: &str) -> bool {
        let now = self.now_local();
        self.with_order(id, |o| {
            let from = std::mem::replace(&mut o.payment_status, status.to_string());
            o.record(
                now,
                "payment_status".into(),
                Some(from),
                Some(status.into()),
                "ADMIN",
            );
            o.touch(now);
        })
        .is_some()
    }

    /// Back-office state change: no transition rules, recorded with via "ADMIN".
    pub fn set_state(&self, id: i64, state: &str) -> bool {
        let now = self.now_local();
        self.with_order(id, |o| {
            o.set_state(state, now, "ADMIN");
            o.touch(now);
        })
        .is_some()
    }

    /// The first goods line's `quantity` is served as "abc".
    pub fn poison_quantity(&self, id: i64) -> bool {
        self.with_order(id, |o| o.poison_quantity = true).is_some()
    }

    /// `total_incl` is served 10.00 higher than excl + tax; the totals are
    /// then served whatever the order's shape.
    pub fn poison_totals(&self, id: i64) -> bool {
        self.with_order(id, |o| o.poison_totals = true).is_some()
    }

    pub fn unpoison(&self, id: i64) -> bool {
        self.with_order(id, |o| {
            o.poison_quantity = false;
            o.poison_totals = false;
        })
        .is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn with_order<R>(&self, id: i64, f: impl FnOnce(&mut Order) -> R) -> Option<R> {
        self.state().orders.get_mut(&id).map(f)
    }
}
