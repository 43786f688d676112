//! Simulator of the "http ERP contract": idempotent `POST /orders` keyed by the
//! `Idempotency-Key` header, `GET /orders?order_key=`, a cursor-paged
//! `GET /shipments` feed whose shipments appear `ship_after` an order's creation,
//! `POST /orders/cancel` (409 once shipped) and the cursor-paged
//! `GET /cancellations` feed of every cancelled order.

mod api;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::faults::{ErrorStyle, FaultState, Faults};
use super::lock;

#[derive(Clone, Debug)]
pub struct ErpOptions {
    /// Expected `Authorization: Bearer <token>`.
    pub token: String,
    /// Shipments appear this long after their order was created; None = only
    /// via `ship_now`.
    pub ship_after: Option<Duration>,
    /// SKUs the ERP does not know: POSTing a line with one gives 422.
    pub unknown_skus: Vec<String>,
    pub faults: Faults,
    /// Serve `GET /cancellations` (beyond SPEC §3's four endpoints); off:
    /// 404, as an ERP middleware built from SPEC alone answers.
    pub cancellations_feed: bool,
    /// Shipments carry the contract's optional `erp_shipment_id`.
    pub shipment_ids: bool,
    /// Shipments are reported without a tracking number (the field left
    /// out); [`ErpSim::label`] reports one later for the same shipment.
    pub tracking_later: bool,
}

impl Default for ErpOptions {
    fn default() -> Self {
        ErpOptions {
            token: "sandbox-erp-token".into(),
            ship_after: None,
            unknown_skus: Vec::new(),
            faults: Faults::default(),
            cancellations_feed: true,
            shipment_ids: false,
            tracking_later: false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ErpOrder {
    /// The body's `order_key` (always equal to the Idempotency-Key it came with).
    pub order_key: String,
    pub erp_order_number: String,
    /// The canonical order JSON as received on the first successful POST.
    pub body: Value,
    pub created_at: DateTime<Utc>,
    /// What the 201 (and every idempotent repeat) answered.
    pub response: Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShipmentLine {
    pub source_line_id: String,
    pub quantity: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shipment {
    /// Cursor position; `next` in the feed is this as decimal text.
    pub seq: u64,
    pub order_key: String,
    pub erp_order_number: String,
    pub shipped_at: DateTime<Utc>,
    pub carrier: String,
    /// Empty: not reported (`tracking_later`).
    pub tracking_number: String,
    pub tracking_url: String,
    pub lines: Vec<ShipmentLine>,
    /// The contract's optional `erp_shipment_id` (`shipment_ids`).
    pub erp_shipment_id: Option<String>,
}

/// Cheap handle to one simulator instance.
#[derive(Clone)]
pub struct ErpSim {
    inner: Arc<Shared>,
}

struct Shared {
    faults: Arc<FaultState>,
    state: Mutex<State>,
}

struct Stored {
    order: ErpOrder,
    created: Instant,
    shipped: bool,
    /// Set once, when the order is cancelled (by `POST /orders/cancel` or
    /// by hand in the ERP): its position in the cancellations feed.
    cancelled: Option<u64>,
    /// Lines already sent in a partial shipment ([`ErpSim::ship_part`]).
    shipped_lines: Vec<String>,
}

/// An entry of the cancellations feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cancellation {
    pub seq: u64,
    pub order_key: String,
    pub erp_order_number: String,
    pub cancelled_at: DateTime<Utc>,
    pub reason: String,
}

struct State {
    token: String,
    ship_after: Option<Duration>,
    unknown_skus: Vec<String>,
    cancellations_feed: bool,
    shipment_ids: bool,
    tracking_later: bool,
    orders: Vec<Stored>,
    by_key: HashMap<String, usize>,
    posts: HashMap<String, u64>,
    shipments: Vec<Shipment>,
    cancellations: Vec<Cancellation>,
    /// `POST /orders/cancel` requests per order key that reached the handler.
    cancel_posts: HashMap<String, u64>,
    /// Orders before this index have all shipped.
    first_unshipped: usize,
}

impl State {
    /// Makes due shipments visible. Doing this lazily under the lock
    /// guarantees a shipment gets a higher seq than anything a client has
    /// already been shown, so following `next` never misses one. Orders are
    /// stored in creation order, so due ones form a prefix of the unshipped.
    fn release_due_shipments(&mut self) {
        let Some(after) = self.ship_after else { return };
        let now = Instant::now();
        while self
            .orders
            .get(self.first_unshipped)
            .is_some_and(|s| s.shipped)
        {
            self.first_unshipped += 1;
        }
        let delay = chrono::Duration::from_std(after).unwrap_or_default();
        let mut i = self.first_unshipped;
        while i < self.orders.len() && self.orders[i].created + after <= now {
            if !self.orders[i].shipped && self.orders[i].cancelled.is_none() {
                let at = self.orders[i].order.created_at + delay;
                self.ship(i, at);
            }
            i += 1;
        }
    }

    /// Cancels the order at `index` unless it shipped: `Ok(false)` when it
    /// was cancelled already, `Err` with the refusal when it shipped.
    pub(super) fn cancel(&mut self, index: usize, reason: &str) -> Result<bool, String> {
        self.release_due_shipments();
        let stored = &self.orders[index];
        if stored.cancelled.is_some() {
            return Ok(false);
        }
        if stored.shipped || !stored.shipped_lines.is_empty() {
            return Err(format!(
                "order {} has shipped (in part or in full); it can no longer be cancelled",
                stored.order.erp_order_number
            ));
        }
        let seq = self.cancellations.len() as u64 + 1;
        self.cancellations.push(Cancellation {
            seq,
            order_key: stored.order.order_key.clone(),
            erp_order_number: stored.order.erp_order_number.clone(),
            cancelled_at: Utc::now(),
            reason: reason.to_string(),
        });
        self.orders[index].cancelled = Some(seq);
        Ok(true)
    }

    /// Ships what is left of the order (every line not yet shipped in a
    /// partial shipment) and marks it shipped.
    fn ship(&mut self, index: usize, at: DateTime<Utc>) {
        self.orders[index].shipped = true;
        let done = self.orders[index].shipped_lines.clone();
        self.ship_lines(index, at, |id| !done.iter().any(|d| d == id));
    }

    /// One shipment of the order's lines that `pick` chooses, in full.
    fn ship_lines(&mut self, index: usize, at: DateTime<Utc>, pick: impl Fn(&str) -> bool) {
        let seq = self.shipments.len() as u64 + 1;
        let stored = &mut self.orders[index];
        let lines: Vec<ShipmentLine> = stored
            .order
            .body
            .get("lines")
            .and_then(Value::as_array)
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| ShipmentLine {
                        source_line_id: text(l.get("source_line_id")),
                        quantity: text(l.get("quantity")),
                    })
                    .filter(|l| pick(&l.source_line_id))
                    .collect()
            })
            .unwrap_or_default();
        stored
            .shipped_lines
            .extend(lines.iter().map(|l| l.source_line_id.clone()));
        let order = &stored.order;
        let (tracking_number, tracking_url) = if self.tracking_later {
            (String::new(), String::new())
        } else {
            tracking(seq)
        };
        self.shipments.push(Shipment {
            seq,
            order_key: order.order_key.clone(),
            erp_order_number: order.erp_order_number.clone(),
            shipped_at: at,
            carrier: "PostNL".into(),
            tracking_url,
            tracking_number,
            lines,
            erp_shipment_id: self.shipment_ids.then(|| format!("SHP-{seq}")),
        });
    }
}

/// A tracking number and its URL: deterministic but scattered, like real
/// barcodes.
fn tracking(seq: u64) -> (String, String) {
    let number = format!("3SORD{:09}", (seq * 7_919_113 + 104_729) % 1_000_000_000);
    let url = format!("https://jouw.postnl.nl/track-and-trace/{number}");
    (number, url)
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

impl ErpSim {
    pub fn new(opts: ErpOptions) -> Self {
        ErpSim {
            inner: Arc::new(Shared {
                faults: FaultState::new(opts.faults, ErrorStyle::Plain),
                state: Mutex::new(State {
                    token: opts.token,
                    ship_after: opts.ship_after,
                    unknown_skus: opts.unknown_skus,
                    cancellations_feed: opts.cancellations_feed,
                    shipment_ids: opts.shipment_ids,
                    tracking_later: opts.tracking_later,
                    orders: Vec::new(),
                    by_key: HashMap::new(),
                    posts: HashMap::new(),
                    shipments: Vec::new(),
                    cancellations: Vec::new(),
                    cancel_posts: HashMap::new(),
                    first_unshipped: 0,
                }),
            }),
        }
    }

    /// The HTTP API with the fault layer, for serving on any listener.
    /// (`Faults::slow_body` needs `Sandbox`'s listener.)
    pub fn router(&self) -> Router {
        api::router(self.clone())
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

    pub fn set_ship_after(&self, ship_after: Option<Duration>) {
        self.state().ship_after = ship_after;
    }

    pub fn set_unknown_skus(&self, skus: Vec<String>) {
        self.state().unknown_skus = skus;
    }

    /// All created ERP orders, oldest first.
    pub fn orders(&self) -> Vec<ErpOrder> {
        self.state()
            .orders
            .iter()
            .map(|s| s.order.clone())
            .collect()
    }

    /// ERP orders whose body `order_key` is `order_key` (tests expect one).
    pub fn erp_orders_for(&self, order_key: &str) -> Vec<ErpOrder> {
        self.state()
            .orders
            .iter()
            .filter(|s| s.order.order_key == order_key)
            .map(|s| s.order.clone())
            .collect()
    }

    /// A second ERP order for `order_key`, as if someone entered it again by
    /// hand (what `reconcile` reports as doubled). Returns its number, or
    /// `None` when the ERP has no order for that key to copy.
    pub fn enter_again_by_hand(&self, order_key: &str) -> Option<String> {
        let mut st = self.state();
        let first = st
            .orders
            .iter()
            .find(|s| s.order.order_key == order_key)?
            .order
            .clone();
        let erp_order_number = format!("SO{:06}", st.orders.len() + 1);
        st.orders.push(Stored {
            order: ErpOrder {
                erp_order_number: erp_order_number.clone(),
                created_at: Utc::now(),
                ..first
            },
            created: Instant::now(),
            // Never shipped: the copy is an operator's mistake, not a sale.
            shipped: true,
            cancelled: None,
            shipped_lines: Vec::new(),
        });
        Some(erp_order_number)
    }

    /// POSTs with this Idempotency-Key that reached the handler (valid or
    /// not; injected 5xx/429 never get there).
    pub fn post_requests(&self, key: &str) -> u64 {
        self.state().posts.get(key).copied().unwrap_or(0)
    }

    /// Cancels the order by hand in the ERP (it appears in the
    /// cancellations feed); false when it is unknown, shipped or cancelled.
    pub fn cancel_by_hand(&self, order_key: &str, reason: &str) -> bool {
        let mut st = self.state();
        let Some(&i) = st.by_key.get(order_key) else {
            return false;
        };
        matches!(st.cancel(i, reason), Ok(true))
    }

    /// Whether the ERP order for this key is cancelled.
    pub fn is_cancelled(&self, order_key: &str) -> bool {
        let st = self.state();
        st.by_key
            .get(order_key)
            .is_some_and(|&i| st.orders[i].cancelled.is_some())
    }

    /// `POST /orders/cancel` requests for this key that reached the handler.
    pub fn cancel_requests(&self, order_key: &str) -> u64 {
        self.state()
            .cancel_posts
            .get(order_key)
            .copied()
            .unwrap_or(0)
    }

    /// Every entry of the cancellations feed, in feed order.
    pub fn cancellations(&self) -> Vec<Cancellation> {
        self.state().cancellations.clone()
    }

    /// Ships the order now (if it exists and has not shipped yet).
    pub fn ship_now(&self, order_key: &str) -> bool {
        let mut st = self.state();
        st.release_due_shipments();
        let index = st
            .orders
            .iter()
            .position(|s| s.order.order_key == order_key && !s.shipped && s.cancelled.is_none());
        match index {
            Some(i) => {
                st.ship(i, Utc::now());
                true
            }
            None => false,
        }
    }

    /// Ships these lines of the order, in full, as one shipment of their own
    /// (a warehouse that sends part of an order first); `ship_now` or the
    /// timer ships the rest later. False if the order is unknown or shipped.
    pub fn ship_part(&self, order_key: &str, source_line_ids: &[&str]) -> bool {
        let mut st = self.state();
        let index = st
            .orders
            .iter()
            .position(|s| s.order.order_key == order_key && !s.shipped && s.cancelled.is_none());
        match index {
            Some(i) => {
                st.ship_lines(i, Utc::now(), |id| source_line_ids.contains(&id));
                true
            }
            None => false,
        }
    }

    /// The warehouse prints the label of the order's last shipment after it
    /// was reported: the same shipment (its `erp_shipment_id`) is reported
    /// again, now with a tracking number, at the end of the feed. Returns
    /// the number; `None` without `shipment_ids` (the contract then reads a
    /// new number as another shipment) or without a shipment.
    pub fn label(&self, order_key: &str) -> Option<String> {
        let mut st = self.state();
        st.release_due_shipments();
        if !st.shipment_ids {
            return None;
        }
        let last = st
            .shipments
            .iter()
            .rev()
            .find(|s| s.order_key == order_key)?
            .clone();
        let seq = st.shipments.len() as u64 + 1;
        let (tracking_number, tracking_url) = tracking(seq);
        st.shipments.push(Shipment {
            seq,
            tracking_number: tracking_number.clone(),
            tracking_url,
            ..last
        });
        Some(tracking_number)
    }

    /// Every visible shipment, in feed order.
    pub fn shipments(&self) -> Vec<Shipment> {
        let mut st = self.state();
        st.release_due_shipments();
        st.shipments.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}
