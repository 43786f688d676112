//! Vinou end to end: the simulator (expiring JWTs, newest-first pages that
//! shift while we walk) → ledger → http ERP. Helpers here; the tests in
//! `flow` (mapping, write-back, parking, backfill), `walk` (page walk,
//! cursor, JWT, re-check), `lists` (a list that does not end, orders the
//! API cannot serialize) and `crash` (SIGKILL, secrets).

mod crash;
mod flow;
mod lists;
mod walk;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::daemon::{poll_live, poll_shipments};
use ordersync::outbox::Engine;
use ordersync::sandbox::SandboxOptions;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::App;

pub(crate) const VINOU: &str = "weingut";
pub(crate) const IMPORT: [&str; 2] = ["payed", "need_package"];

pub(crate) struct Setup {
    pub sandbox: SandboxOptions,
    pub page_size: u32,
    pub source_extra: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        let mut sandbox = SandboxOptions::default();
        sandbox.erp.ship_after = Some(Duration::ZERO);
        Setup {
            sandbox,
            page_size: 100,
            source_extra: "",
        }
    }
}

pub(crate) async fn spawn_vinou(setup: Setup) -> App {
    let api_token = setup.sandbox.vinou.api_token.clone();
    let auth_id = setup.sandbox.vinou.auth_id.clone();
    let (page_size, extra) = (setup.page_size, setup.source_extra);
    crate::common::start_app(setup.sandbox, "", |sb| {
        let source = format!(
            r#"name = "{VINOU}"
kind = "vinou"
base_url = "{vinou}"
auth_id = "{auth_id}"
api_token_file = "vinou-token"
schedule = "*/1 * * * * *"
page_size = {page_size}
max_in_flight = 4
rate_limit_per_sec = 2000
{extra}
"#,
            vinou = sb.vinou_url,
        );
        (source, vec![("vinou-token", api_token)])
    })
    .await
}

pub(crate) fn key(id: i64) -> String {
    format!("{VINOU}:{id}")
}

pub(crate) fn status_of(o: &Value) -> &str {
    o["status"].as_str().unwrap_or_default()
}

/// Ids of simulator orders in an import status.
pub(crate) fn pushable(app: &App) -> Vec<i64> {
    app.sandbox
        .vinou
        .orders()
        .iter()
        .filter(|o| IMPORT.contains(&status_of(o)))
        .filter_map(|o| o["id"].as_i64())
        .collect()
}

pub(crate) async fn poll(engine: &Arc<Engine>) {
    let connector = engine.connectors.get(VINOU).unwrap().clone();
    poll_live(engine, &connector, &CancellationToken::new()).await;
}

/// Polls, pushes, reads shipments and writes back until nothing is left.
pub(crate) async fn sync(app: &App, engine: &Arc<Engine>) {
    let stop = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no convergence within 120 s");
        poll(engine).await;
        engine.drain(VINOU, None, 8, &stop).await.unwrap();
        let shipped = poll_shipments(engine, &stop).await.unwrap_or(1);
        engine.drain(VINOU, None, 8, &stop).await.unwrap();
        let status = engine.store.status(&[VINOU.to_string()]).unwrap();
        let busy = ["queued", "pushed", "accepted", "shipped"]
            .iter()
            .any(|s| status.orders.get(*s).copied().unwrap_or(0) > 0);
        let unseen = pushable(app)
            .into_iter()
            .any(|id| engine.store.order_detail(&key(id)).unwrap().is_none());
        if shipped == 0 && !busy && !unseen {
            return;
        }
    }
}

/// Every id is in the ERP exactly once, touched at Vinou, and nothing else
/// reached the ERP.
pub(crate) fn assert_converged(app: &App, ids: &[i64], touched: bool) {
    let erp = &app.sandbox.erp;
    let vinou = &app.sandbox.vinou;
    assert!(!ids.is_empty());
    for &id in ids {
        let k = key(id);
        assert_eq!(erp.erp_orders_for(&k).len(), 1, "{k}: ERP orders");
        let o = vinou.order(id).unwrap();
        let touches = vinou
            .history(id)
            .iter()
            .filter(|c| c.field == "touched")
            .count();
        if touched {
            assert_eq!(o["touched"], 1, "{k}: touched at Vinou");
            assert_eq!(touches, 1, "{k}: marked as read once");
        } else {
            assert_eq!(vinou.touch_requests(id), 0, "{k}: touch_on_import = false");
        }
    }
    let expected: HashSet<String> = ids.iter().map(|i| key(*i)).collect();
    for o in erp.orders() {
        assert!(
            expected.contains(&o.order_key),
            "{} reached the ERP but should not have",
            o.order_key
        );
    }
    assert_eq!(erp.orders().len(), ids.len(), "ERP order count");
}

pub(crate) fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or("x")).unwrap_or_else(|_| panic!("not a decimal: {v}"))
}

pub(crate) fn cursor(engine: &Arc<Engine>) -> Option<String> {
    engine.store.cursor(VINOU, "live").unwrap()
}
