//! Simulator of the Retailys `/System/Orders` REST API: API key in the
//! `token` header, tenant-defined statuses (ids that differ per shop),
//! `expanded=false` stubs vs `expanded=true` objects, the paginator,
//! `per_page` bounds (10..=250, else 400 with an ErrorModel body), prices as
//! JSON floats, the write endpoints with their bodies validated, and 429 with
//! `Retry-After` above 100 requests/s (via [`Faults`]). Plus a driving API
//! for tests and the demo.

mod api;
mod seed;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::faults::{ErrorStyle, FaultState, Faults};
use super::lock;

/// The API's documented limit.
pub const MAX_REQUESTS_PER_SEC: u32 = 100;

#[derive(Clone, Debug)]
pub struct SimStatus {
    pub id: i64,
    pub name: String,
    pub complete_order: bool,
    pub cancel_order: bool,
}

impl SimStatus {
    fn new(id: i64, name: &str, complete_order: bool, cancel_order: bool) -> Self {
        SimStatus {
            id,
            name: name.into(),
            complete_order,
            cancel_order,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RetailysOptions {
    /// The API key the `token` header must carry.
    pub token: String,
    pub seed_orders: usize,
    pub seed: u64,
    /// Seeded order dates are spread over this long before now.
    pub spread: Duration,
    /// Defaults to the API's own limit: 429 beyond 100 requests/s.
    pub faults: Faults,
    pub first_order_id: i64,
    pub statuses: Vec<SimStatus>,
    /// `(id, name)` of the shop's shippings (carriers) for tracking numbers.
    pub shippings: Vec<(i64, String)>,
    /// The SDK's `OrderModel` has no status field (the seed says an order
    /// carries its status). Off: orders carry `status_id` and `status`. On:
    /// every order answer leaves both out, as that model reads.
    pub orders_without_status: bool,
}

/// A shop's statuses: ids are the tenant's own, and there are more than the
/// API's default page of 10, so a client that ignores the paginator misses some.
pub fn default_statuses() -> Vec<SimStatus> {
    vec![
        SimStatus::new(301, "New", false, false),
        SimStatus::new(302, "Awaiting payment", false, false),
        SimStatus::new(303, "Paid", false, false),
        SimStatus::new(305, "Processing", false, false),
        SimStatus::new(308, "Ready for pickup", false, false),
        SimStatus::new(310, "On hold", false, false),
        SimStatus::new(311, "Awaiting stock", false, false),
        SimStatus::new(312, "Returned", true, false),
        SimStatus::new(313, "Delivered", true, false),
        SimStatus::new(315, "Cancelled", false, true),
        SimStatus::new(316, "Cancelled by customer", false, true),
        SimStatus::new(319, "Shipped", true, false),
    ]
}

impl Default for RetailysOptions {
    fn default() -> Self {
        RetailysOptions {
            token: "sandbox-retailys-api-key".into(),
            seed_orders: 0,
            seed: 42,
            spread: Duration::from_secs(2 * 24 * 3600),
            faults: Faults {
                max_requests_per_sec: Some(MAX_REQUESTS_PER_SEC),
                ..Faults::default()
            },
            first_order_id: 90001,
            statuses: default_statuses(),
            shippings: vec![
                (7, "PPL".into()),
                (9, "Zásilkovna".into()),
                (12, "PostNL".into()),
                (14, "DPD".into()),
            ],
            orders_without_status: false,
        }
    }
}

/// One accepted write request, as the tests inspect it.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// e.g. "PATCH status", "POST tracking", "PATCH sent".
    pub what: String,
    pub body: Value,
}

pub(crate) struct SimOrder {
    /// The expanded `OrderModel`.
    pub json: Value,
    pub history: Vec<Value>,
    pub writes: Vec<Write>,
    /// Authenticated `GET /System/Orders/{id}` that found this order.
    pub detail_reads: u64,
}

pub(crate) struct State {
    pub orders: BTreeMap<i64, SimOrder>,
    pub statuses: Vec<SimStatus>,
    pub next_id: i64,
    pub next_record: i64,
    /// History POSTs still to be refused with a 503 (nothing recorded).
    pub refuse_history: u32,
}

struct Shared {
    opts: RetailysOptions,
    state: Mutex<State>,
    faults: Arc<FaultState>,
}

#[derive(Clone)]
pub struct RetailysSim {
    inner: Arc<Shared>,
}

/// What `add_order` creates; unset parts are generated.
#[derive(Clone, Debug)]
pub struct RetailysOrderSpec {
    pub status: String,
    pub date_order: Option<DateTime<Utc>>,
    /// `(code, count, final_price, base_price, vat)`; empty: random catalogue lines.
    pub items: Vec<(String, i64, f64, f64, u32)>,
    pub channel_id: i64,
}

impl Default for RetailysOrderSpec {
    fn default() -> Self {
        RetailysOrderSpec {
            status: "New".into(),
            date_order: None,
            items: Vec::new(),
            channel_id: 1,
        }
    }
}

impl RetailysSim {
    pub fn new(opts: RetailysOptions) -> Self {
        let sim = RetailysSim {
            inner: Arc::new(Shared {
                faults: FaultState::new(opts.faults.clone(), ErrorStyle::Retailys),
                state: Mutex::new(State {
                    orders: BTreeMap::new(),
                    statuses: opts.statuses.clone(),
                    next_id: opts.first_order_id,
                    next_record: 1,
                    refuse_history: 0,
                }),
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

    pub fn options(&self) -> &RetailysOptions {
        &self.inner.opts
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Answers the next `n` history POSTs with a 503 and records nothing: a
    /// test's way to stop the accepted write-back between its status PATCH
    /// and its history record.
    pub fn refuse_history_posts(&self, n: u32) {
        self.state().refuse_history = n;
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

    /// The expanded order as the API would show it.
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

    /// History records of an order (those we post and the shop's own).
    pub fn history(&self, id: i64) -> Vec<Value> {
        self.state()
            .orders
            .get(&id)
            .map(|o| o.history.clone())
            .unwrap_or_default()
    }

    pub fn writes(&self, id: i64) -> Vec<Write> {
        self.state()
            .orders
            .get(&id)
            .map(|o| o.writes.clone())
            .unwrap_or_default()
    }

    /// Authenticated reads of this one order (`GET /System/Orders/{id}`);
    /// list pages do not count.
    pub fn detail_reads(&self, id: i64) -> u64 {
        self.state().orders.get(&id).map_or(0, |o| o.detail_reads)
    }

    pub fn status_id(&self, name: &str) -> Option<i64> {
        self.state()
            .statuses
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.id)
    }

    /// The shop adds a status (e.g. while the daemon runs); returns its id.
    pub fn add_status(&self, name: &str, complete_order: bool, cancel_order: bool) -> i64 {
        let mut st = self.state();
        let id = st.statuses.iter().map(|s| s.id).max().unwrap_or(300) + 1;
        st.statuses
            .push(SimStatus::new(id, name, complete_order, cancel_order));
        id
    }

    /// A shop employee sets a status by name; false if order or status is unknown.
    pub fn set_status(&self, id: i64, name: &str) -> bool {
        let mut st = self.state();
        let Some(status) = st.statuses.iter().find(|s| s.name == name).cloned() else {
            return false;
        };
        let Some(order) = st.orders.get_mut(&id) else {
            return false;
        };
        api::apply_status(order, &status);
        true
    }

    /// Changes an order's JSON in place, as a shop's own import or admin
    /// could (tests use it to plant values a fault then corrupts); false if
    /// the order is unknown.
    pub fn edit_order(&self, id: i64, edit: impl FnOnce(&mut Value)) -> bool {
        match self.state().orders.get_mut(&id) {
            Some(o) => {
                edit(&mut o.json);
                true
            }
            None => false,
        }
    }

    pub fn add_order(&self, spec: RetailysOrderSpec) -> i64 {
        let mut st = self.state();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(st.next_id as u64);
        let when = spec.date_order.unwrap_or_else(Utc::now);
        seed::insert(&mut st, &mut rng, &spec, when)
    }

    /// `n` orders spread over `spread` before now, statuses drawn from a
    /// realistic mix (most new or paid, some unpaid, cancelled, shipped).
    pub fn seed_orders(&self, n: usize, seed: u64, spread: Duration) -> Vec<i64> {
        let mut st = self.state();
        seed::seed(&mut st, n, seed, spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Sandbox, SandboxOptions};

    async fn start(seed_orders: usize) -> (Sandbox, reqwest::Client, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut opts = SandboxOptions::default();
        opts.retailys.seed_orders = seed_orders;
        let sb = Sandbox::start(opts).await.expect("sandbox starts");
        let key = sb.retailys.options().token.clone();
        (sb, reqwest::Client::new(), key)
    }

    #[tokio::test]
    async fn per_page_bounds_stubs_and_the_paginator() {
        let (sb, c, key) = start(30).await;
        let url = format!("{}/System/Orders", sb.retailys_url);
        for bad in ["9", "251", "x"] {
            let r = c
                .get(&url)
                .header("token", &key)
                .query(&[("per_page", bad)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "per_page={bad}");
            let body: Value = r.json().await.unwrap();
            assert!(
                body["message"].is_string()
                    && body["detail"].as_str().unwrap().contains("per_page")
            );
        }
        let r = c.get(&url).header("token", "wrong").send().await.unwrap();
        assert_eq!(r.status(), 401);
        // Default page: 10 stubs; expanded: the full objects.
        let page: Value = c
            .get(&url)
            .header("token", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["paginator"]["pages"], 3);
        assert_eq!(page["orders"].as_array().unwrap().len(), 10);
        assert!(page["orders"][0]["customer"]["api_link"].is_string());
        assert!(page["orders"][0]["customer"].get("name").is_none());
        let page: Value = c
            .get(&url)
            .header("token", &key)
            .query(&[("expanded", "true"), ("per_page", "25"), ("page", "2")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["orders"].as_array().unwrap().len(), 5);
        assert!(page["orders"][0]["customer"]["name"].is_string());
        assert!(page["orders"][0]["money"].is_f64(), "money is a float");
        // Statuses are paged too: 12 of them, 10 by default.
        let st: Value = c
            .get(format!("{}/System/Orders/Statuses", sb.retailys_url))
            .header("token", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(st["paginator"]["total"], 12);
        assert_eq!(st["statuses"].as_array().unwrap().len(), 10);
    }

    #[tokio::test]
    async fn write_bodies_are_validated() {
        let (sb, c, key) = start(1).await;
        let id = sb.retailys.orders()[0]["id"].as_i64().unwrap();
        let base = format!("{}/System/Orders/{id}", sb.retailys_url);
        let send = |method: reqwest::Method, path: &str, body: Value| {
            c.request(method, format!("{base}/{path}"))
                .header("token", &key)
                .json(&body)
                .send()
        };
        use reqwest::Method;
        let r = send(
            Method::PATCH,
            "status",
            serde_json::json!({"status_id": 999}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400);
        let r = send(
            Method::PATCH,
            "status",
            serde_json::json!({"status": "Processing"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400);
        let r = send(
            Method::POST,
            "tracking",
            serde_json::json!({"shipper_id": 1, "tracking_number": "X"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "unknown shipper");
        let r = send(
            Method::POST,
            "history",
            serde_json::json!({"type": "note", "record": {"name": "x"}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "unknown history type");
        assert!(
            sb.retailys.writes(id).is_empty(),
            "refused writes change nothing"
        );
        let r = send(
            Method::POST,
            "tracking",
            serde_json::json!({"shipper_id": 7, "tracking_number": "X1"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let r = send(
            Method::PATCH,
            "status",
            serde_json::json!({"status_id": 315}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let o = sb.retailys.order(id).unwrap();
        assert_eq!(o["canceled"], true, "a cancelling status cancels");
        assert_eq!(o["trackings"][0]["tracking_number"], "X1");
    }
}
