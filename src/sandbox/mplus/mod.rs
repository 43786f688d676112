//! Simulator of MplusKASSA's MplusQapi (SOAP 1.1) for the order calls
//! ordersync uses, plus a driving API for tests and the demo. Like the real
//! till it keeps ONE order sync marker, bumped on every change (our own
//! updateOrder and deliveries included), answers getOrders unsorted, honours
//! `syncMarkerLimit`, checks `ident`/`secret` in the URL and applies
//! updateOrder's optimistic concurrency on `changeCounter`/`versionNumber`.

mod api;
mod seed;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::faults::{ErrorStyle, FaultState, Faults};
use super::lock;
use crate::sources::mplus::wire;

#[derive(Clone, Debug)]
pub struct MplusOptions {
    pub ident: String,
    pub secret: String,
    /// Orders created at start.
    pub seed_orders: usize,
    pub seed: u64,
    pub faults: Faults,
    /// `SoapMplusDateTime.timezone`'s unit is community inference (minutes
    /// east of UTC). Off: minutes (120 for Amsterdam in summer). On:
    /// seconds (7200), as C's `tm_gmtoff` counts them.
    pub timezone_in_seconds: bool,
    /// `Address.country` is a free string in the WSDL, and nothing says it
    /// holds a code. Off: "NL". On: the name a Dutch till's user types,
    /// "Nederland".
    pub country_names: bool,
}

impl Default for MplusOptions {
    fn default() -> Self {
        MplusOptions {
            ident: "ordersync".into(),
            secret: "sandbox-mplus-secret".into(),
            seed_orders: 0,
            seed: 7,
            faults: Faults::default(),
            timezone_in_seconds: false,
            country_names: false,
        }
    }
}

/// An order at the till plus what the simulator counts about it.
#[derive(Clone, Debug)]
pub(crate) struct SimOrder {
    pub(crate) order: wire::Order,
    /// updateOrder calls that changed the order.
    pub(crate) updates: u32,
    /// Delivery calls that delivered something.
    pub(crate) deliveries: u32,
}

/// Cheap handle to one simulator instance.
#[derive(Clone)]
pub struct MplusSim {
    inner: Arc<Shared>,
}

struct Shared {
    opts: MplusOptions,
    state: Mutex<State>,
    faults: Arc<FaultState>,
}

pub(crate) struct State {
    pub(crate) orders: BTreeMap<String, SimOrder>,
    /// The one order sync marker: the value of the latest change.
    pub(crate) marker: i64,
    pub(crate) rng: StdRng,
    pub(crate) next_number: i64,
    /// [`MplusOptions::timezone_in_seconds`].
    pub(crate) timezone_in_seconds: bool,
    /// [`MplusOptions::country_names`].
    pub(crate) country_names: bool,
    /// The next N updateOrder calls find the order edited at the till just
    /// before they arrive (between the client's read and its write).
    pub(crate) edits_before_update: u32,
    pub(crate) conflicts: u64,
    pub(crate) get_orders_calls: u64,
    /// `syncMarker` values getOrders was asked for, in order.
    pub(crate) requested_markers: Vec<i64>,
    /// cancelOrder calls that reached the till.
    pub(crate) cancel_requests: u64,
    /// cancelOrder calls for an order that was cancelled already (a client
    /// that cancels twice).
    pub(crate) cancel_repeats: u64,
}

impl State {
    /// Stamps a change on an order: the next marker, a new change counter.
    pub(crate) fn bump(&mut self, id: &str) {
        self.marker += 1;
        let marker = self.marker;
        if let Some(o) = self.orders.get_mut(id) {
            o.order.sync_marker = marker;
            o.order.change_counter += 1;
        }
    }

    /// An edit at the till that changes no business field ordersync maps.
    pub(crate) fn till_edit(&mut self, id: &str) -> bool {
        let Some(o) = self.orders.get_mut(id) else {
            return false;
        };
        o.order.order_category_number = Some(o.order.order_category_number.unwrap_or(0) + 1);
        self.bump(id);
        true
    }
}

impl MplusSim {
    pub fn new(opts: MplusOptions) -> Self {
        let state = State {
            orders: BTreeMap::new(),
            marker: 0,
            rng: StdRng::seed_from_u64(opts.seed),
            next_number: 1,
            timezone_in_seconds: opts.timezone_in_seconds,
            country_names: opts.country_names,
            edits_before_update: 0,
            conflicts: 0,
            get_orders_calls: 0,
            requested_markers: Vec::new(),
            cancel_requests: 0,
            cancel_repeats: 0,
        };
        let sim = MplusSim {
            inner: Arc::new(Shared {
                faults: FaultState::new(opts.faults.clone(), ErrorStyle::Plain),
                state: Mutex::new(state),
                opts,
            }),
        };
        if sim.inner.opts.seed_orders > 0 {
            sim.seed_orders(sim.inner.opts.seed_orders);
        }
        sim
    }

    pub fn router(&self) -> Router {
        api::router(self.clone())
    }

    pub fn options(&self) -> &MplusOptions {
        &self.inner.opts
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.faults.set(faults);
    }

    /// The most requests the till was answering at one time.
    pub fn peak_in_flight(&self) -> u64 {
        self.inner.faults.peak_in_flight()
    }

    pub fn request_count(&self) -> u64 {
        self.inner.faults.request_count()
    }

    /// Answers replaced by an injected fault (`Faults`).
    pub fn fault_count(&self) -> u64 {
        self.inner.faults.fault_count()
    }

    /// `n` generated orders (a third sold by weight), each a change of its
    /// own. Returns their order ids.
    pub fn seed_orders(&self, n: usize) -> Vec<String> {
        let mut st = self.state();
        (0..n).map(|_| seed::add_random_order(&mut st)).collect()
    }

    pub fn add_order(&self) -> String {
        seed::add_random_order(&mut self.state())
    }

    pub fn order(&self, id: &str) -> Option<wire::Order> {
        self.state().orders.get(id).map(|o| o.order.clone())
    }

    pub fn order_ids(&self) -> Vec<String> {
        self.state().orders.keys().cloned().collect()
    }

    pub fn current_marker(&self) -> i64 {
        self.state().marker
    }

    /// updateOrder calls that changed this order.
    pub fn updates(&self, id: &str) -> u32 {
        self.state().orders.get(id).map_or(0, |o| o.updates)
    }

    /// Delivery calls that delivered something on this order.
    pub fn deliveries(&self, id: &str) -> u32 {
        self.state().orders.get(id).map_or(0, |o| o.deliveries)
    }

    /// ORDER-HAS-CHANGED answers given so far.
    pub fn conflicts(&self) -> u64 {
        self.state().conflicts
    }

    pub fn get_orders_calls(&self) -> u64 {
        self.state().get_orders_calls
    }

    pub fn requested_markers(&self) -> Vec<i64> {
        self.state().requested_markers.clone()
    }

    /// The till edits the order (no business field ordersync maps).
    pub fn till_edit(&self, id: &str) -> bool {
        self.state().till_edit(id)
    }

    /// The next `n` updateOrder calls race a till edit and lose.
    pub fn edit_before_next_updates(&self, n: u32) {
        self.state().edits_before_update = n;
    }

    /// A real change at the till: one more of the first line, totals updated.
    pub fn add_one_to_first_line(&self, id: &str) -> bool {
        let mut st = self.state();
        let Some(o) = st.orders.get_mut(id) else {
            return false;
        };
        seed::add_one_to_first_line(&mut o.order);
        st.bump(id);
        true
    }

    /// cancelOrder calls that reached the till (any order).
    pub fn cancel_requests(&self) -> u64 {
        self.state().cancel_requests
    }

    /// cancelOrder calls that found the order cancelled already.
    pub fn cancel_repeats(&self) -> u64 {
        self.state().cancel_repeats
    }

    /// The till cancels the whole order.
    pub fn cancel(&self, id: &str) -> bool {
        let mut st = self.state();
        let Some(o) = st.orders.get_mut(id) else {
            return false;
        };
        o.order.cancel_state = Some("ORDER-CANCEL-STATE-COMPLETE".into());
        st.bump(id);
        true
    }

    /// Changes an order at the till (bumping its marker), as a till could;
    /// tests use it to plant values a fault then corrupts. False if the
    /// order is unknown.
    pub fn edit_order(&self, id: &str, edit: impl FnOnce(&mut wire::Order)) -> bool {
        let mut st = self.state();
        let Some(o) = st.orders.get_mut(id) else {
            return false;
        };
        edit(&mut o.order);
        st.bump(id);
        true
    }

    /// The first line's quantity becomes unreadable ("2,5"): a poison order.
    pub fn poison(&self, id: &str) -> bool {
        let mut st = self.state();
        let Some(o) = st.orders.get_mut(id) else {
            return false;
        };
        o.order.order_type = Some("POISON".into());
        st.bump(id);
        true
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}
