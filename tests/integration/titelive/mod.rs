//! Titelive MediaWeb end to end: the simulator (tokens that expire, HTTP
//! 200 answers with success=false, collapsed one-item lists, the misspelled
//! address key) → ledger → http ERP → status write-backs, in-process and
//! with the real binary (SIGKILL, secrets). The helpers live here (the
//! imports too: the test modules take them with `use super::*`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::daemon::{poll_live, poll_shipments};
use ordersync::outbox::Engine;
use ordersync::sandbox::SandboxOptions;
use ordersync::sandbox::TiteliveOrderSpec as OrderSpec;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use crate::common::{App, status_json};

mod flow;
mod parking;
mod process;

pub(super) const TL: &str = "boekhandel";

pub(super) fn tl_key(id: i64) -> String {
    format!("{TL}:{id}")
}

pub(super) struct TlOptions {
    pub sandbox: SandboxOptions,
    /// Use the given SYSTEM token (token_file) instead of logging in.
    pub given_token: bool,
    /// Extra keys for the [[sources]] table.
    pub source_extra: String,
}

impl Default for TlOptions {
    fn default() -> Self {
        let mut sandbox = SandboxOptions::default();
        sandbox.erp.ship_after = Some(Duration::ZERO);
        TlOptions {
            sandbox,
            given_token: false,
            source_extra: String::new(),
        }
    }
}

pub(super) async fn spawn_titelive(mut opts: TlOptions) -> App {
    if opts.given_token {
        opts.sandbox.titelive.system_token = Some("SYSTEMTOKEN0123456789abcde".into());
    }
    let tl = opts.sandbox.titelive.clone();
    let (auth, secret) = match &tl.system_token {
        Some(t) => (
            "token_file = \"tl-token\"".to_string(),
            ("tl-token", t.clone()),
        ),
        None => (
            format!(
                "system_login = \"{}\"\nsystem_password_file = \"tl-password\"",
                tl.system_login
            ),
            ("tl-password", tl.system_password.clone()),
        ),
    };
    let extra = opts.source_extra;
    crate::common::start_app(opts.sandbox, "", |sb| {
        let source = format!(
            r#"name = "{TL}"
kind = "titelive"
base_url = "{base}"
domain_code = "{domain}"
{auth}
schedule = "*/1 * * * * *"
max_in_flight = 8
rate_limit_per_sec = 2000
country_map = {{ "1" = "FR", "21" = "BE", "150" = "NL" }}
{extra}
"#,
            base = sb.titelive_url,
            domain = tl.domain_code,
        );
        (source, vec![secret])
    })
    .await
}

/// Ids of the simulator's orders that should reach the ERP (status 5 at
/// seeding, a country the test config maps).
pub(super) fn pushable(app: &App) -> Vec<i64> {
    app.sandbox
        .titelive
        .orders()
        .iter()
        .filter(|o| {
            o["status"] == 5 && [1, 21, 150].contains(&o["deliveryCountry"].as_i64().unwrap_or(0))
        })
        .filter_map(|o| o["id"].as_i64())
        .collect()
}

/// Polls, pushes, reads shipments and writes back until a round finds
/// nothing left to do (the daemon's work, without its clock).
pub(super) async fn sync(engine: &Arc<Engine>, ids: &[i64]) {
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TL).unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no convergence within 120 s");
        poll_live(engine, &connector, &stop).await;
        engine.drain(TL, None, 8, &stop).await.unwrap();
        let shipped = poll_shipments(engine, &stop).await.unwrap_or(1);
        engine.drain(TL, None, 8, &stop).await.unwrap();
        let status = engine.store.status(&[TL.to_string()]).unwrap();
        let busy = ["queued", "pushed", "accepted", "shipped"]
            .iter()
            .any(|s| status.orders.get(*s).copied().unwrap_or(0) > 0);
        let unseen = ids
            .iter()
            .any(|id| engine.store.order_detail(&tl_key(*id)).unwrap().is_none());
        if shipped == 0 && !busy && !unseen {
            return;
        }
    }
}

/// Every order of `ids` is in the ERP exactly once, Titelive shows status 7
/// then 8 each set exactly once through the API (7 carrying the ERP number),
/// and nothing else reached the ERP.
pub(super) fn assert_converged(app: &App, ids: &[i64]) {
    let tl = &app.sandbox.titelive;
    let erp = &app.sandbox.erp;
    assert!(!ids.is_empty());
    for &id in ids {
        let k = tl_key(id);
        let in_erp = erp.erp_orders_for(&k);
        assert_eq!(
            in_erp.len(),
            1,
            "{k}: expected one ERP order, found {}",
            in_erp.len()
        );
        let number = &in_erp[0].erp_order_number;
        assert_eq!(tl.status(id), Some(8), "{k}: status written back");
        let history = tl.history(id);
        let api = |to: i64| {
            history
                .iter()
                .filter(|c| c.via == "API" && c.to == to)
                .collect::<Vec<_>>()
        };
        assert_eq!(api(7).len(), 1, "{k}: status 7 once: {history:?}");
        assert_eq!(api(8).len(), 1, "{k}: status 8 once: {history:?}");
        assert!(
            api(7)[0].message.contains(number.as_str()),
            "{k}: {history:?}"
        );
        assert!(api(8)[0].message.contains("tracking"), "{k}: {history:?}");
        assert_eq!(history.len(), 2, "{k}: no other status change: {history:?}");
    }
    let expected: HashSet<String> = ids.iter().map(|i| tl_key(*i)).collect();
    for o in erp.orders() {
        assert!(
            expected.contains(&o.order_key),
            "{} reached the ERP but should not have",
            o.order_key
        );
    }
    assert_eq!(erp.orders().len(), ids.len(), "ERP order count");
}

pub(super) fn all_shipped(app: &App, ids: &[i64]) -> bool {
    ids.iter()
        .all(|id| app.sandbox.titelive.status(*id) == Some(8))
}
