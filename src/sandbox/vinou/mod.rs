//! Simulator of Vinou's `service` API for orders: login returning expiring
//! JWTs (short in tests), `orders/getAll` newest first whose pages shift
//! when orders arrive during a walk, `orders/get` with `chstamp`, `orders/touch`,
//! latency and fault knobs, and a driving API for tests and the demo.

mod api;
mod seed;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use chrono::{NaiveDateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::faults::{ErrorStyle, FaultState, Faults};
use super::lock;

#[derive(Clone, Debug)]
pub struct VinouOptions {
    pub auth_id: String,
    pub api_token: String,
    /// Lifetime of issued JWTs (their `exp` says so, rounded up to seconds).
    pub jwt_ttl: Duration,
    /// A JWT is refused after this many uses, before its `exp` (Vinou says
    /// lifetimes "may get shorter"): forces the re-login on 401.
    pub jwt_max_uses: Option<u64>,
    pub seed_orders: usize,
    pub seed: u64,
    /// Seeded orders are placed within this long before now.
    pub spread: Duration,
    /// Orders placed while a walk is under way: this many before each answer
    /// to a `getAll` page after the first.
    pub arrivals_per_page: usize,
    pub faults: Faults,
    pub first_order_id: i64,
    /// The documents' only order sample has quantity 1, so whether a
    /// position's `net`/`tax`/`gross` are the line's total or one unit's
    /// price is open. Off: line totals. On: one unit's amounts (the order's
    /// totals are the same either way).
    pub position_amounts_per_unit: bool,
}

impl Default for VinouOptions {
    fn default() -> Self {
        VinouOptions {
            auth_id: "4711".into(),
            api_token: "sandbox-vinou-api-token".into(),
            jwt_ttl: Duration::from_secs(12 * 3600),
            jwt_max_uses: None,
            seed_orders: 0,
            seed: 7,
            spread: Duration::from_secs(2 * 24 * 3600),
            arrivals_per_page: 0,
            faults: Faults::default(),
            position_amounts_per_unit: false,
            first_order_id: 6901,
        }
    }
}

/// A change to an order, for tests that check write-backs took effect once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    pub from: String,
    pub to: String,
}

struct SimOrder {
    /// Full record with every include; `getAll`/`get` strip what was not asked.
    json: Value,
    history: Vec<Change>,
    touch_requests: u64,
    cancel_requests: u64,
    get_requests: u64,
    /// The first position's real quantity while it is served as "zwei".
    poisoned: Option<Value>,
}

#[derive(Clone)]
pub struct VinouSim {
    inner: Arc<Shared>,
}

struct Shared {
    opts: VinouOptions,
    state: Mutex<State>,
    faults: Arc<FaultState>,
    background: CancellationToken,
}

struct State {
    orders: BTreeMap<i64, SimOrder>,
    ids: seed::Ids,
    rng: StdRng,
    arrivals_per_page: usize,
    /// [`VinouOptions::position_amounts_per_unit`].
    per_unit: bool,
    /// `getAll` answers 500 for this page (a walk cut in the middle).
    failing_list_page: Option<u64>,
    /// JWT -> (expiry, uses).
    tokens: HashMap<String, (Instant, u64)>,
    issued: Vec<String>,
    logins: u64,
    list_requests: u64,
    max_page_size_asked: u64,
}

impl VinouSim {
    pub fn new(opts: VinouOptions) -> Self {
        let state = State {
            orders: BTreeMap::new(),
            ids: seed::Ids {
                order: opts.first_order_id,
                position: 26901,
                client: 1370,
                address: 800,
            },
            rng: StdRng::seed_from_u64(opts.seed ^ 0x0f1e_e0a5),
            arrivals_per_page: opts.arrivals_per_page,
            per_unit: opts.position_amounts_per_unit,
            failing_list_page: None,
            tokens: HashMap::new(),
            issued: Vec::new(),
            logins: 0,
            list_requests: 0,
            max_page_size_asked: 0,
        };
        let sim = VinouSim {
            inner: Arc::new(Shared {
                faults: FaultState::new(opts.faults.clone(), ErrorStyle::Plain),
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

    pub fn router(&self) -> Router {
        api::router(self.clone())
    }

    pub fn options(&self) -> &VinouOptions {
        &self.inner.opts
    }

    /// Vinou's clock: naive local time in Berlin.
    pub fn now_local(&self) -> NaiveDateTime {
        Utc::now()
            .with_timezone(&chrono_tz::Europe::Berlin)
            .naive_local()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.faults.set(faults);
    }

    pub fn request_count(&self) -> u64 {
        self.inner.faults.request_count()
    }

    pub fn fault_count(&self) -> u64 {
        self.inner.faults.fault_count()
    }

    pub fn set_arrivals_per_page(&self, n: usize) {
        self.state().arrivals_per_page = n;
    }

    /// `getAll` for `page` answers 500 until set back to `None`.
    pub fn fail_list_page(&self, page: Option<u64>) {
        self.state().failing_list_page = page;
    }

    pub fn logins(&self) -> u64 {
        self.state().logins
    }

    /// Every JWT ever issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// Forgets every JWT at once (a server restart): the next call gets 401.
    pub fn expire_tokens(&self) {
        self.state().tokens.clear();
    }

    pub fn list_requests(&self) -> u64 {
        self.state().list_requests
    }

    pub fn max_page_size_asked(&self) -> u64 {
        self.state().max_page_size_asked
    }

    /// The full record (every include) of one order.
    pub fn order(&self, id: i64) -> Option<Value> {
        self.state().orders.get(&id).map(|o| o.json.clone())
    }

    pub fn orders(&self) -> Vec<Value> {
        self.state()
            .orders
            .values()
            .map(|o| o.json.clone())
            .collect()
    }

    pub fn history(&self, id: i64) -> Vec<Change> {
        self.with_order(id, |o| o.history.clone())
            .unwrap_or_default()
    }

    pub fn touch_requests(&self, id: i64) -> u64 {
        self.with_order(id, |o| o.touch_requests).unwrap_or(0)
    }

    /// `orders/checkout/cancel` requests that named this order.
    pub fn cancel_requests(&self, id: i64) -> u64 {
        self.with_order(id, |o| o.cancel_requests).unwrap_or(0)
    }

    pub fn get_requests(&self, id: i64) -> u64 {
        self.with_order(id, |o| o.get_requests).unwrap_or(0)
    }

    /// `n` generated orders, deterministic for `seed`, placed within `spread`
    /// before now, ids ascending with time (like a database sequence).
    pub fn seed_orders(&self, n: usize, seed: u64, spread: Duration) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = self.now_local();
        let span = chrono::Duration::from_std(spread).unwrap_or(chrono::Duration::days(2));
        let secs = span.num_seconds().max(1);
        let mut times: Vec<NaiveDateTime> = (0..n)
            .map(|_| now - chrono::Duration::seconds(rand::Rng::random_range(&mut rng, 1..=secs)))
            .collect();
        times.sort();
        let mut st = self.state();
        times
            .into_iter()
            .map(|t| {
                let status = seed::random_status(&mut rng);
                let o = seed::order(&mut rng, &mut st.ids, t, status);
                insert(&mut st, o)
            })
            .collect()
    }

    /// A new order in `status`, placed now (or at `crstamp`, local time).
    pub fn add_order(&self, status: &str, crstamp: Option<NaiveDateTime>) -> i64 {
        let at = crstamp.unwrap_or_else(|| self.now_local());
        let mut st = self.state();
        let State { rng, ids, .. } = &mut *st;
        let o = seed::order(rng, ids, at, status);
        insert(&mut st, o)
    }

    /// A customer places a paid order now.
    pub fn place_order(&self) -> i64 {
        self.add_order("payed", None)
    }

    /// Back-office status change: bumps `chstamp` (and `paid` for `payed`).
    pub fn set_status(&self, id: i64, status: &str) -> bool {
        let now = self.now_local().format(seed::STAMP).to_string();
        self.with_order(id, |o| {
            let from = o.json["status"].as_str().unwrap_or_default().to_string();
            o.json["status"] = status.into();
            if status == "payed" {
                o.json["paid"] = true.into();
            }
            o.json["chstamp"] = now.into();
            o.history.push(Change {
                field: "status".into(),
                from,
                to: status.into(),
            });
        })
        .is_some()
    }

    /// Changes an order's JSON in place, as a merchant's import could
    /// (tests use it to plant values a fault then corrupts); false if the
    /// order is unknown.
    pub fn edit_order(&self, id: i64, edit: impl FnOnce(&mut Value)) -> bool {
        self.with_order(id, |o| edit(&mut o.json)).is_some()
    }

    /// The first position's `quantity` is served as "zwei" (a data error at
    /// the source); bumps `chstamp`.
    pub fn poison_quantity(&self, id: i64) -> bool {
        let now = self.now_local().format(seed::STAMP).to_string();
        self.with_order(id, |o| {
            let q = std::mem::replace(&mut o.json["positions"][0]["quantity"], "zwei".into());
            o.poisoned.get_or_insert(q);
            o.json["chstamp"] = now.into();
        })
        .is_some()
    }

    /// The merchant fixes the poisoned quantity; bumps `chstamp`.
    pub fn unpoison(&self, id: i64) -> bool {
        let now = self.now_local().format(seed::STAMP).to_string();
        self.with_order(id, |o| {
            if let Some(q) = o.poisoned.take() {
                o.json["positions"][0]["quantity"] = q;
                o.json["chstamp"] = now.into();
            }
        })
        .is_some()
    }

    /// Places a paid order every `every` until the sandbox stops.
    pub fn place_orders_every(&self, every: Duration) -> JoinHandle<()> {
        let sim = self.clone();
        let stop = self.inner.background.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => { sim.place_order(); }
                }
            }
        })
    }

    pub fn stop_background(&self) {
        self.inner.background.cancel();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn with_order<R>(&self, id: i64, f: impl FnOnce(&mut SimOrder) -> R) -> Option<R> {
        self.state().orders.get_mut(&id).map(f)
    }
}

fn insert(st: &mut State, mut json: Value) -> i64 {
    if st.per_unit {
        seed::amounts_per_unit(&mut json);
    }
    let id = json["id"].as_i64().unwrap_or_default();
    st.orders.insert(
        id,
        SimOrder {
            json,
            history: Vec::new(),
            touch_requests: 0,
            cancel_requests: 0,
            get_requests: 0,
            poisoned: None,
        },
    );
    id
}

/// Unpadded base64url, as JWTs use it.
pub fn base64url_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
