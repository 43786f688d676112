//! MplusKASSA end to end: the SOAP simulator, the engine, real SQLite and
//! the http ERP simulator; the real binary for SIGKILL and for secrets.
//! `flow`: orders, echoes, changes, races, start and backfill; `safety`:
//! secrets and SIGKILL; `quirks`: the simulator and the example config;
//! `lists`: a batch that repeats, an order the till could not serialize.

mod flow;
mod lists;
mod quirks;
mod safety;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::config::Config;
use ordersync::daemon::{poll_live, poll_shipments, poll_source};
use ordersync::outbox::Engine;
use ordersync::sandbox::{Faults, Sandbox, SandboxOptions};
use ordersync::sources::Window;
use ordersync::store::Store;
use rand::SeedableRng;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use crate::binary::run_daemon_until;
use crate::common::App;

pub const TILL: &str = "till";

pub fn key(id: &str) -> String {
    format!("{TILL}:{id}")
}

pub struct MplusApp {
    app: App,
}

impl std::ops::Deref for MplusApp {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

/// A sandbox and a config with one `mplus` source named "till".
pub async fn spawn_mplus(sandbox: SandboxOptions, source_extra: &str, page_size: u32) -> MplusApp {
    let secret = sandbox.mplus.secret.clone();
    // `source_extra` may set its own `max_in_flight`.
    let in_flight = if source_extra.contains("max_in_flight") {
        ""
    } else {
        "max_in_flight = 8"
    };
    let app = crate::common::start_app(sandbox, "max_attempts = 5", |sb| {
        let source = format!(
            r#"name = "{TILL}"
kind = "mplus"
base_url = "{mplus}"
ident = "ordersync"
secret_file = "mplus-secret"
schedule = "*/1 * * * * *"
page_size = {page_size}
{in_flight}
rate_limit_per_sec = 2000
{source_extra}
"#,
            mplus = sb.mplus_url,
        );
        (source, vec![("mplus-secret", secret)])
    })
    .await;
    MplusApp { app }
}

pub fn options() -> SandboxOptions {
    let mut o = SandboxOptions::default();
    o.erp.ship_after = Some(Duration::ZERO);
    o
}

impl MplusApp {
    /// Polls, pushes, reads shipments and writes back until nothing is left
    /// and every till order in `wanted` is in the ledger. Without ERP
    /// shipments (`ship_after = None`) "accepted" is where orders rest.
    pub async fn sync_until(&self, engine: &Arc<Engine>, wanted: &[String], shipments: bool) {
        let stop = CancellationToken::new();
        let connector = engine.connectors.get(TILL).unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "no convergence within 120 s");
            poll_live(engine, &connector, &stop).await;
            engine.drain(TILL, None, 8, &stop).await.unwrap();
            let shipped = poll_shipments(engine, &stop).await.unwrap_or(1);
            engine.drain(TILL, None, 8, &stop).await.unwrap();
            let status = engine.store.status(&[TILL.to_string()]).unwrap();
            let busy_states: &[&str] = if shipments {
                &["queued", "pushed", "accepted", "shipped"]
            } else {
                &["queued", "pushed"]
            };
            let busy = busy_states
                .iter()
                .any(|s| status.orders.get(*s).copied().unwrap_or(0) > 0);
            let all_seen = wanted
                .iter()
                .all(|id| engine.store.order_detail(&key(id)).unwrap().is_some());
            if shipped == 0 && !busy && all_seen {
                return;
            }
        }
    }

    pub async fn sync(&self, engine: &Arc<Engine>) {
        let all = self.sandbox.mplus.order_ids();
        self.sync_until(engine, &all, true).await;
    }

    pub fn state(&self, id: &str) -> String {
        let store = Store::open_read_only(&self.db_path()).unwrap();
        store.order_detail(&key(id)).unwrap().unwrap().row.state
    }
}

/// In the ERP once, amounts to the cent, reference written once, every line
/// delivered by exactly one delivery call.
pub fn assert_till_converged(app: &MplusApp, ids: &[String]) {
    let till = &app.sandbox.mplus;
    let erp = &app.sandbox.erp;
    for id in ids {
        let k = key(id);
        let in_erp = erp.erp_orders_for(&k);
        assert_eq!(in_erp.len(), 1, "{k}: ERP orders");
        let order = till.order(id).unwrap();
        let body = &in_erp[0].body;
        assert_eq!(
            body["totals"]["gross"].as_str().unwrap(),
            Decimal::new(order.total_incl_amount, 2).to_string(),
            "{k}: gross to the cent"
        );
        assert_eq!(
            body["totals"]["net"].as_str().unwrap(),
            Decimal::new(order.total_excl_amount, 2).to_string(),
            "{k}: net to the cent"
        );
        for (sent, line) in body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&order.line_list.line)
        {
            let q = Decimal::new(line.data.quantity, line.data.decimal_places);
            assert_eq!(
                sent["quantity"].as_str().unwrap(),
                q.normalize().to_string(),
                "{k}"
            );
            let delivered = Decimal::new(
                line.data.delivered_quantity,
                line.data.delivered_decimal_places,
            );
            assert_eq!(delivered, q, "{k}: line {} delivered in full", line.line_id);
        }
        assert_eq!(
            order.reference.as_deref(),
            Some(in_erp[0].erp_order_number.as_str()),
            "{k}: reference"
        );
        assert_eq!(till.updates(id), 1, "{k}: reference written once");
        assert_eq!(till.deliveries(id), 1, "{k}: delivered once");
        assert_eq!(
            order.delivery_state.as_deref(),
            Some("ORDER-DELIVERY-STATE-COMPLETE"),
            "{k}"
        );
    }
    assert_eq!(erp.orders().len(), ids.len(), "ERP order count");
}
