//! Simulator of Titelive's MediaWeb order API (`/api/json/{domain}/...`):
//! tokens from `customer/token` bound to the SYSTEM user by `customer/login`
//! and expiring after `token_ttl`; every answer HTTP 200 in the
//! `{"response": {success, code, message, object}}` envelope with the
//! documented codes; collections that collapse to one object; the
//! misspelled address key; status transitions enforced; plus a driving API
//! for tests and the demo.

mod api;
mod model;
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
pub use model::StatusChange;
use model::{Order, Package};

/// Titelive's clock: Paris local time, no zone in the answers.
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::Paris;

#[derive(Clone, Debug)]
pub struct TiteliveOptions {
    pub domain_code: String,
    pub system_login: String,
    /// As the client sends it: already hashed the vendor's way (40 hex chars).
    pub system_password: String,
    /// A pre-issued SYSTEM token that never expires (the `token_file` mode).
    pub system_token: Option<String>,
    /// Lifetime of tokens from `customer/token`.
    pub token_ttl: Duration,
    /// Orders (status 5, confirmed) created at start.
    pub seed_orders: usize,
    pub seed: u64,
    /// Seeded creation dates are spread over this long before now.
    pub spread: Duration,
    pub faults: Faults,
    /// 0..1: answer HTTP 200 with success=false, code 2 or 99, before
    /// handling (nothing applied).
    pub code_fault_rate: f64,
    pub first_order_id: i64,
    /// Titelive documents its answers by the envelope's `success`/`code`,
    /// not by HTTP status. Off: every envelope comes with 200. On: a failure
    /// envelope comes with a status to match (codes 3–5: 401, 10: 404, 2 and
    /// 99: 500, any other: 400).
    pub error_statuses: bool,
    /// Code 13 is documented only as "order already confirmed", and the
    /// status write as reserved for shops that manage payment themselves.
    /// Off: code 13 answers a write of status 5 to an order already
    /// confirmed. On (the other reading): every status write to an order
    /// past the cart answers code 13 and changes nothing.
    pub closed_status_writes: bool,
    /// The login's documented shape is a query string
    /// (`customer/login?login=…&password=…`). Off: the login is read from a
    /// form body or the query. On: from the query only (a form body is not
    /// read, so a form login answers code 9, a parameter missing).
    pub login_query_only: bool,
}

impl Default for TiteliveOptions {
    fn default() -> Self {
        TiteliveOptions {
            domain_code: "00000".into(),
            system_login: "SYSTEM".into(),
            system_password: "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8".into(),
            system_token: None,
            token_ttl: Duration::from_secs(3600),
            seed_orders: 0,
            seed: 6,
            spread: Duration::from_secs(24 * 3600),
            faults: Faults::default(),
            code_fault_rate: 0.0,
            first_order_id: 70001,
            error_statuses: false,
            closed_status_writes: false,
            login_query_only: false,
        }
    }
}

/// What `add_order` creates; unset parts are generated.
#[derive(Clone, Debug)]
pub struct OrderSpec {
    pub status: i64,
    /// 0: one to three, at random.
    pub lines: usize,
    /// None: one of the simulator's country ids (`seed::COUNTRY_IDS`).
    pub country: Option<i64>,
    /// None: a third of orders use `deliveryAdressLine1`.
    pub misspelled: Option<bool>,
    /// Line vouchers and order reductions on some orders.
    pub vouchers: bool,
}

impl Default for OrderSpec {
    fn default() -> Self {
        OrderSpec {
            status: 5,
            lines: 0,
            country: None,
            misspelled: None,
            vouchers: true,
        }
    }
}

struct Token {
    expires: Option<Instant>,
    /// The login it is bound to (None until `customer/login`).
    user: Option<String>,
}

/// Cheap handle to one simulator instance.
#[derive(Clone)]
pub struct TiteliveSim {
    inner: Arc<Shared>,
}

struct Shared {
    opts: TiteliveOptions,
    state: Mutex<State>,
    faults: Arc<FaultState>,
    code_fault_rate: Mutex<f64>,
    background: CancellationToken,
}

struct State {
    orders: BTreeMap<i64, Order>,
    ids: seed::Ids,
    rng: StdRng,
    tokens: HashMap<String, Token>,
    issued: Vec<String>,
    token_requests: u64,
    logins: u64,
    /// Every login request, answered or refused.
    login_requests: u64,
    code_faults: u64,
}

impl TiteliveSim {
    pub fn new(opts: TiteliveOptions) -> Self {
        let mut tokens = HashMap::new();
        if let Some(t) = &opts.system_token {
            tokens.insert(
                t.clone(),
                Token {
                    expires: None,
                    user: Some(opts.system_login.clone()),
                },
            );
        }
        let state = State {
            orders: BTreeMap::new(),
            ids: seed::Ids {
                order: opts.first_order_id,
                line: 100_000,
                package: 500,
            },
            rng: StdRng::seed_from_u64(opts.seed ^ 0x7171_e1e0),
            tokens,
            issued: Vec::new(),
            token_requests: 0,
            logins: 0,
            login_requests: 0,
            code_faults: 0,
        };
        let sim = TiteliveSim {
            inner: Arc::new(Shared {
                faults: FaultState::new(opts.faults.clone(), ErrorStyle::Plain),
                code_fault_rate: Mutex::new(opts.code_fault_rate),
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

    pub fn options(&self) -> &TiteliveOptions {
        &self.inner.opts
    }

    pub fn now_local(&self) -> NaiveDateTime {
        Utc::now().with_timezone(&TIMEZONE).naive_local()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.faults.set(faults);
    }

    /// Share of answers that are HTTP 200 + success=false, code 2 or 99.
    pub fn set_code_fault_rate(&self, rate: f64) {
        *lock(&self.inner.code_fault_rate) = rate;
    }

    pub fn request_count(&self) -> u64 {
        self.inner.faults.request_count()
    }

    /// Answers replaced by an injected fault (`Faults`).
    pub fn fault_count(&self) -> u64 {
        self.inner.faults.fault_count()
    }

    /// Answers injected by `code_fault_rate`.
    pub fn code_fault_count(&self) -> u64 {
        self.state().code_faults
    }

    /// Every token `customer/token` issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    pub fn token_requests(&self) -> u64 {
        self.state().token_requests
    }

    /// Successful SYSTEM logins.
    pub fn logins(&self) -> u64 {
        self.state().logins
    }

    /// Login requests, successful or not.
    pub fn login_requests(&self) -> u64 {
        self.state().login_requests
    }

    /// Forgets every issued token (answers then say code 4).
    pub fn revoke_tokens(&self) {
        let keep = self.inner.opts.system_token.clone();
        self.state().tokens.retain(|k, _| Some(k) == keep.as_ref());
    }

    /// Every issued token expires now (answers then say code 5), as if
    /// `token_ttl` had passed.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.state().tokens.values_mut() {
            if t.expires.is_some() {
                t.expires = Some(now);
            }
        }
    }

    /// The order exactly as `customer/order/{id}` shows it.
    pub fn order(&self, id: i64) -> Option<Value> {
        self.state().orders.get(&id).map(Order::json)
    }

    pub fn orders(&self) -> Vec<Value> {
        self.state().orders.values().map(Order::json).collect()
    }

    pub fn status(&self, id: i64) -> Option<i64> {
        self.state().orders.get(&id).map(|o| o.status)
    }

    pub fn history(&self, id: i64) -> Vec<StatusChange> {
        self.with_order(id, |o| o.history.clone())
            .unwrap_or_default()
    }

    /// Status POSTs that reached this order, accepted or refused.
    pub fn status_posts(&self, id: i64) -> u64 {
        self.with_order(id, |o| o.status_posts).unwrap_or(0)
    }

    pub fn add_order(&self, spec: OrderSpec) -> i64 {
        let now = self.now_local();
        let mut st = self.state();
        let State { rng, ids, .. } = &mut *st;
        let order = seed::order(rng, ids, &spec, now);
        let id = order.id;
        st.orders.insert(id, order);
        id
    }

    /// `n` generated confirmed orders, deterministic for `seed`, created
    /// within the last `spread`. Returns their ids.
    pub fn seed_orders(&self, n: usize, seed: u64, spread: Duration) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let span = chrono::Duration::from_std(spread).unwrap_or(chrono::Duration::days(1));
        let times = seed::times(&mut rng, n, self.now_local(), span);
        let mut st = self.state();
        times
            .into_iter()
            .map(|t| {
                let order = seed::order(&mut rng, &mut st.ids, &OrderSpec::default(), t);
                let id = order.id;
                st.orders.insert(id, order);
                id
            })
            .collect()
    }

    /// A new confirmed order every `every` until the sandbox stops.
    pub fn confirm_new_orders_every(&self, every: Duration) -> JoinHandle<()> {
        let sim = self.clone();
        let stop = self.inner.background.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => { sim.add_order(OrderSpec::default()); }
                }
            }
        })
    }

    pub fn stop_background(&self) {
        self.inner.background.cancel();
    }

    /// Back-office status change, no rules (recorded with via "ADMIN").
    pub fn set_status(&self, id: i64, status: i64) -> bool {
        let now = self.now_local();
        self.with_order(id, |o| o.change_status(status, "back office", now, "ADMIN"))
            .is_some()
    }

    /// The shop prepares a package with every line (carrier 1, sendcloud).
    pub fn add_package(&self, id: i64, tracking: &str) -> bool {
        let mut st = self.state();
        st.ids.package += 1;
        let pid = st.ids.package;
        st.orders
            .get_mut(&id)
            .map(|o| {
                let line_ids = o.lines.iter().map(|l| l.id).collect();
                o.packages.push(Package {
                    id: pid,
                    carrier: 1,
                    tracking: tracking.into(),
                    line_ids,
                    cancels: Vec::new(),
                });
            })
            .is_some()
    }

    /// The shop cancels `quantity` of line `line_id` in the order's last
    /// package; false if there is no such order, package or line.
    pub fn cancel_in_package(&self, id: i64, line_id: i64, quantity: i64) -> bool {
        let at = self.now_local().format("%Y-%m-%d %H:%M:%S").to_string();
        self.with_order(id, |o| match o.packages.last_mut() {
            Some(p) if p.line_ids.contains(&line_id) => {
                p.cancels.push((line_id, quantity, at));
                true
            }
            _ => false,
        })
        .unwrap_or(false)
    }

    /// The back office changes the delivery city (tests plant values a
    /// fault then corrupts); false if the order is unknown.
    pub fn set_delivery_city(&self, id: i64, city: &str) -> bool {
        self.with_order(id, |o| o.delivery.city = city.to_string())
            .is_some()
    }

    /// The order disappears (answers then say code 10).
    pub fn remove_order(&self, id: i64) -> bool {
        self.state().orders.remove(&id).is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn with_order<R>(&self, id: i64, f: impl FnOnce(&mut Order) -> R) -> Option<R> {
        self.state().orders.get_mut(&id).map(f)
    }
}

impl Order {
    fn change_status(&mut self, to: i64, message: &str, at: NaiveDateTime, via: &str) {
        self.history.push(StatusChange {
            at,
            from: self.status,
            to,
            message: message.into(),
            via: via.into(),
        });
        self.status = to;
    }
}
