//! MplusKASSA end to end: the SOAP simulator, the engine, real SQLite and
//! the http ERP simulator; the real binary for SIGKILL and for secrets.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::config::Config;
use ordersync::daemon::{poll_live, poll_shipments, poll_source};
use ordersync::outbox::Engine;
use ordersync::sandbox::{Faults, Sandbox, SandboxOptions};
use ordersync::sources::Window;
use ordersync::store::Store;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use crate::binary::run_daemon_until;
use crate::common::App;

const TILL: &str = "till";

fn key(id: &str) -> String {
    format!("{TILL}:{id}")
}

struct MplusApp {
    app: App,
}

impl std::ops::Deref for MplusApp {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

/// A sandbox and a config with one `mplus` source named "till".
async fn spawn_mplus(sandbox: SandboxOptions, source_extra: &str, page_size: u32) -> MplusApp {
    ordersync::http::install_crypto();
    let secret = sandbox.mplus.secret.clone();
    let erp_token = sandbox.erp.token.clone();
    let sandbox = Sandbox::start(sandbox).await.expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mplus-secret"), format!("{secret}\n")).unwrap();
    std::fs::write(dir.path().join("erp-token"), format!("{erp_token}\n")).unwrap();
    let text = format!(
        r#"
[daemon]
state_dir = "state"
shipments_schedule = "*/1 * * * * *"
retry_initial = "100ms"
retry_max = "2s"
request_timeout = "10s"
max_attempts = 5

[erp]
kind = "http"
url = "{erp}"
token_file = "erp-token"

[[sources]]
name = "{TILL}"
kind = "mplus"
base_url = "{mplus}"
ident = "ordersync"
secret_file = "mplus-secret"
schedule = "*/1 * * * * *"
page_size = {page_size}
max_in_flight = 8
rate_limit_per_sec = 2000
{source_extra}
"#,
        erp = sandbox.erp_url,
        mplus = sandbox.mplus_url,
    );
    let config_path = dir.path().join("ordersync.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).expect("test config loads");
    MplusApp {
        app: App {
            dir,
            sandbox,
            config_path,
            config,
        },
    }
}

fn options() -> SandboxOptions {
    let mut o = SandboxOptions::default();
    o.erp.ship_after = Some(Duration::ZERO);
    o
}

impl MplusApp {
    /// Polls, pushes, reads shipments and writes back until nothing is left
    /// and every till order in `wanted` is in the ledger. Without ERP
    /// shipments (`ship_after = None`) "accepted" is where orders rest.
    async fn sync_until(&self, engine: &Arc<Engine>, wanted: &[String], shipments: bool) {
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

    async fn sync(&self, engine: &Arc<Engine>) {
        let all = self.sandbox.mplus.order_ids();
        self.sync_until(engine, &all, true).await;
    }

    fn state(&self, id: &str) -> String {
        let store = Store::open_read_only(&self.db_path()).unwrap();
        store.order_detail(&key(id)).unwrap().unwrap().row.state
    }
}

/// In the ERP once, amounts to the cent, reference written once, every line
/// delivered by exactly one delivery call.
fn assert_till_converged(app: &MplusApp, ids: &[String]) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_till_orders_sync_once_with_reference_and_delivery() {
    let mut o = options();
    o.mplus.faults = Faults {
        error_5xx_rate: 0.03,
        ..Faults::default()
    };
    let app = spawn_mplus(o, "", 25).await;
    let ids = app.sandbox.mplus.seed_orders(220);
    let weighed = ids
        .iter()
        .filter(|id| {
            let o = app.sandbox.mplus.order(id).unwrap();
            o.line_list.line.iter().any(|l| l.data.decimal_places == 3)
        })
        .count();
    assert!(
        weighed > 20,
        "only {weighed} orders with decimal quantities"
    );
    let engine = app.engine();
    app.sync(&engine).await;
    assert_till_converged(&app, &ids);
    // The first read starts at marker 1 (the inclusive lower bound).
    assert_eq!(app.sandbox.mplus.requested_markers()[0], 1);
    // Our own write-backs bumped every marker: the echoes came back, and
    // another poll pushes and writes nothing.
    let posts: Vec<u64> = ids
        .iter()
        .map(|i| app.sandbox.erp.post_requests(&key(i)))
        .collect();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    let summary = poll_source(
        &engine,
        &connector,
        Window::Live {
            cursor: Some("0".into()),
        },
        "live",
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(summary.seen, 220, "a full re-read sees every order");
    assert!(
        summary.queued.is_empty(),
        "echoes were queued: {:?}",
        summary.queued
    );
    engine.drain(TILL, None, 8, &stop).await.unwrap();
    let again: Vec<u64> = ids
        .iter()
        .map(|i| app.sandbox.erp.post_requests(&key(i)))
        .collect();
    assert_eq!(posts, again);
    assert_till_converged(&app, &ids);
    for id in &ids {
        assert_eq!(app.state(id), "completed");
        let d = engine.store.order_detail(&key(id)).unwrap().unwrap();
        assert!(
            d.changed_after_push_at.is_none(),
            "{id}: an echo was taken for a change"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_changes_are_recorded_and_cancellations_never_pushed() {
    let mut o = options();
    o.erp.ship_after = None; // no shipments: orders stay "accepted"
    let app = spawn_mplus(o, "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(6);
    let till = &app.sandbox.mplus;
    // Cancelled at the till before we ever saw it, and a poison order.
    assert!(till.cancel(&ids[0]));
    assert!(till.poison(&ids[1]));
    let engine = app.engine();
    app.sync_until(&engine, &ids, false).await;
    assert_eq!(app.state(&ids[0]), "cancelled");
    assert!(app.sandbox.erp.erp_orders_for(&key(&ids[0])).is_empty());
    assert_eq!(app.state(&ids[1]), "invalid");
    let parked = engine.store.order_detail(&key(&ids[1])).unwrap().unwrap();
    let reason = parked.jobs[0].parked_reason.clone().unwrap_or_default();
    assert!(reason.contains(&ids[1]), "{reason}");
    for id in &ids[2..] {
        assert_eq!(app.state(id), "accepted", "{id}");
    }
    // An edit at the till that touches no business field: nothing happens.
    till.till_edit(&ids[2]);
    // Real changes after the push: more goods, a cancellation.
    till.add_one_to_first_line(&ids[3]);
    till.cancel(&ids[4]);
    app.sync_until(&engine, &ids, false).await;
    let detail = |id: &str| engine.store.order_detail(&key(id)).unwrap().unwrap();
    assert!(detail(&ids[2]).changed_after_push_at.is_none());
    let changed = detail(&ids[3]);
    assert!(changed.changed_after_push_at.is_some());
    assert!(
        changed.events.iter().any(|e| e.kind == "changed_after_push"
            && e.detail
                .as_deref()
                .unwrap_or_default()
                .contains("lines changed")),
        "{:?}",
        changed.events
    );
    let cancelled = detail(&ids[4]);
    assert!(
        cancelled.events.iter().any(|e| e
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("cancelled at the source after the push")),
        "{:?}",
        cancelled.events
    );
    // Never pushed twice.
    assert_eq!(app.sandbox.erp.orders().len(), 4);
    for id in &ids[2..] {
        assert_eq!(app.sandbox.erp.erp_orders_for(&key(id)).len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_has_changed_is_read_again_and_the_till_edit_survives() {
    let mut o = options();
    o.erp.ship_after = None;
    let app = spawn_mplus(o, "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(1);
    let till = &app.sandbox.mplus;
    // The till edits the order between our getOrder and our updateOrder, twice.
    till.edit_before_next_updates(2);
    let engine = app.engine();
    app.sync_until(&engine, &ids, false).await;
    let order = till.order(&ids[0]).unwrap();
    let number = app.sandbox.erp.erp_orders_for(&key(&ids[0]))[0]
        .erp_order_number
        .clone();
    assert_eq!(order.reference.as_deref(), Some(number.as_str()));
    assert_eq!(till.conflicts(), 2);
    assert_eq!(till.updates(&ids[0]), 1);
    // Our write started from the till's latest version, so its edits stay.
    assert_eq!(order.order_category_number, Some(2));
    let d = engine.store.order_detail(&key(&ids[0])).unwrap().unwrap();
    assert!(d.changed_after_push_at.is_none());

    // A till that never stops editing: the write-back is retried with
    // backoff, then parked with the reason, never reported done.
    let more = till.seed_orders(1);
    till.edit_before_next_updates(1000);
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    engine.drain(TILL, None, 8, &stop).await.unwrap();
    let d = engine.store.order_detail(&key(&more[0])).unwrap().unwrap();
    let job = d.jobs.iter().find(|j| j.kind == "write_accepted").unwrap();
    assert_eq!(job.state, "parked", "{job:?}");
    assert!(job.attempts > 1, "{job:?}");
    assert!(
        job.parked_reason
            .as_deref()
            .unwrap_or_default()
            .contains("ORDER-HAS-CHANGED"),
        "{job:?}"
    );
    assert_eq!(till.updates(&more[0]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_reference_false_still_delivers_and_start_now_skips_history() {
    let app = spawn_mplus(options(), "write_reference = false\nstart = \"now\"", 10).await;
    let till = &app.sandbox.mplus;
    let history = till.seed_orders(5);
    let engine = app.engine();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(
        engine.store.cursor(TILL, "live").unwrap(),
        Some(till.current_marker().to_string()),
        "start = now stores the head marker"
    );
    let new = till.seed_orders(3);
    app.sync_until(&engine, &new, true).await;
    for id in &history {
        assert!(
            engine.store.order_detail(&key(id)).unwrap().is_none(),
            "{id} is history"
        );
    }
    for id in &new {
        assert_eq!(app.sandbox.erp.erp_orders_for(&key(id)).len(), 1);
        assert_eq!(till.updates(id), 0, "write_reference = false");
        assert_eq!(till.deliveries(id), 1);
        assert!(till.order(id).unwrap().reference.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_from_the_start_with_its_own_cursor() {
    let app = spawn_mplus(options(), "start = \"now\"", 10).await;
    let ids = app.sandbox.mplus.seed_orders(12);
    let engine = app.engine();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    let live = engine.store.cursor(TILL, "live").unwrap();
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let summary = poll_source(
        &engine,
        &connector,
        Window::Backfill {
            since,
            until: None,
            cursor: None,
        },
        "backfill:t",
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(summary.queued.len(), 12);
    assert_eq!(
        engine.store.cursor(TILL, "live").unwrap(),
        live,
        "live cursor untouched"
    );
    assert!(engine.store.cursor(TILL, "backfill:t").unwrap().is_some());
    // A window that ends before the orders' financial date reads none.
    let summary = poll_source(
        &engine,
        &connector,
        Window::Backfill {
            since: since - chrono::Duration::days(9),
            until: Some(since - chrono::Duration::days(2)),
            cursor: None,
        },
        "backfill:u",
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(summary.seen, 0);
    assert_eq!(ids.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_never_reaches_logs_errors_or_status() {
    let app = spawn_mplus(options(), "", 20).await;
    let secret = app.sandbox.mplus.options().secret.clone();
    let ids = app.sandbox.mplus.seed_orders(15);
    let till = app.sandbox.mplus.clone();
    let done = || ids.iter().all(|id| till.deliveries(id) == 1);
    let (status, log) =
        tokio::task::block_in_place(|| run_daemon_until(&app, &[("RUST_LOG", "debug")], done));
    assert_eq!(status, Some(0), "{log}");
    assert!(done(), "the daemon synced: {log}");
    assert!(
        log.contains("getOrders") || log.contains(TILL),
        "debug log is there"
    );
    assert!(!log.contains(&secret), "secret in the debug log");
    assert!(!log.contains("secret="), "a URL with its query in the log");
    let status = crate::common::status_json(&app);
    assert!(!status.to_string().contains(&secret));
    let out = app.run_binary().arg("check-config").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("till: MplusKASSA at 127.0.0.1 answered"),
        "{text}"
    );
    assert!(!text.contains(&secret), "{text}");

    // Wrong secret: a clear error naming the source, not the secret.
    std::fs::write(app.dir.path().join("mplus-secret"), "wrong-s3cret-value\n").unwrap();
    let mut calls = 0;
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[("RUST_LOG", "debug")], || {
            calls += 1;
            calls > 15
        })
    });
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("Authentication failed"), "{log}");
    assert!(log.contains("check ident and secret_file"), "{log}");
    assert!(log.contains(TILL), "{log}");
    assert!(!log.contains("wrong-s3cret-value"), "{log}");
    let status = crate::common::status_json(&app);
    let text = status.to_string();
    assert!(text.contains("Authentication failed"), "{text}");
    assert!(
        !text.contains("wrong-s3cret-value") && !text.contains(&secret),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_with_the_till_loses_and_doubles_nothing() {
    let mut o = options();
    o.mplus.faults.latency = Duration::from_millis(8);
    o.erp.faults.latency = Duration::from_millis(8);
    o.erp.faults.drop_rate = 0.02;
    // Dropped answers at the till too: the write-back happened, we never heard.
    o.mplus.faults.drop_rate = 0.02;
    let app = spawn_mplus(o, "", 40).await;
    let ids = app.sandbox.mplus.seed_orders(300);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("mplus crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let till = app.sandbox.mplus.clone();
    let finished = || ids.iter().all(|id| till.deliveries(id) >= 1);
    let mut kills = 0;
    tokio::task::block_in_place(|| {
        for round in 0..40 {
            if kills >= 12 {
                break;
            }
            let log =
                std::fs::File::create(app.dir.path().join(format!("kill-{round}.log"))).unwrap();
            let mut child = app
                .run_binary()
                .arg("run")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.random_range(80..500)));
            if !finished() {
                kills += 1;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    });
    assert!(kills >= 12, "only {kills} kills landed while work was left");
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    assert_till_converged(&app, &ids);
    let status = crate::common::status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

#[test]
fn the_example_mplus_source_parses_when_uncommented() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ordersync.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let block: String = text
        .lines()
        .skip_while(|l| *l != "# BEGIN mplus")
        .skip(1)
        .take_while(|l| *l != "# END mplus")
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    assert!(block.contains("kind = \"mplus\""), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, format!("{text}\n{block}")).unwrap();
    let config = Config::load(&p).expect("example with the mplus source parses");
    let till = &config.sources[1];
    assert_eq!(till.kind.as_str(), "mplus");
    let ordersync::config::SourceSettings::Mplus(m) = &till.settings else {
        panic!("not mplus");
    };
    assert!(m.write_reference);
    assert_eq!(m.start, ordersync::config::MplusStart::Beginning);
}

/// The simulator itself, over plain HTTP: the quirks the connector relies on.
#[tokio::test]
async fn the_simulator_behaves_like_the_documented_api() {
    ordersync::http::install_crypto();
    let sb = Sandbox::start(options()).await.unwrap();
    sb.mplus.seed_orders(30);
    let client = reqwest::Client::new();
    let url = |secret: &str| format!("{}/?ident=ordersync&secret={secret}", sb.mplus_url);
    let secret = sb.mplus.options().secret.clone();
    // A plain GET is 405 (the liveness check of the old PHP client).
    let r = client.get(url(&secret)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let get_orders = |marker: i64, limit: u32, empties: bool| {
        let extra = if empties {
            "<articlePluNumbers/><articleBarcodes/>"
        } else {
            ""
        };
        format!(
            r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:mplusqapi"><SOAP-ENV:Body><urn:getOrders><urn:request><urn:syncMarker>{marker}</urn:syncMarker><urn:syncMarkerLimit>{limit}</urn:syncMarkerLimit>{extra}</urn:request></urn:getOrders></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        )
    };
    let post = |secret: String, body: String| {
        let client = client.clone();
        let u = url(&secret);
        async move {
            let r = client
                .post(u)
                .header("SOAPAction", "getOrders")
                .header("Content-Type", "text/xml; charset=utf-8")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = post("nope".into(), get_orders(1, 5, true)).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("faultcode") && body.contains("Authentication failed"),
        "{body}"
    );
    let (status, body) = post(secret.clone(), get_orders(1, 5, false)).await;
    assert_eq!(status, 500);
    assert!(body.contains("articlePluNumbers"), "{body}");
    // The limit is honoured, the batch holds the lowest markers from the
    // inclusive bound, and it comes unsorted.
    let mut sorted_every_time = true;
    for _ in 0..3 {
        let (status, body) = post(secret.clone(), get_orders(3, 5, true)).await;
        assert_eq!(status, 200, "{body}");
        let (orders, max) = ordersync::sources::mplus::parse_orders("t", &body).unwrap();
        let markers: Vec<i64> = orders
            .iter()
            .map(|o| o.version.as_deref().unwrap().parse().unwrap())
            .collect();
        let mut s = markers.clone();
        s.sort();
        assert_eq!(s, vec![3, 4, 5, 6, 7]);
        assert_eq!(max, 7);
        sorted_every_time &= s == markers;
    }
    assert!(!sorted_every_time, "the simulator always answered sorted");
    sb.shutdown().await;
}

/// reqwest prints a failed request's URL, query string included: the
/// secret must not come out that way either.
#[test]
fn an_unreachable_till_is_named_without_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[daemon]
state_dir = "state"
request_timeout = "2s"
[erp]
kind = "http"
url = "http://127.0.0.1:9"
token_env = "ORDERSYNC_TEST_ERP_TOKEN"
[[sources]]
name = "till"
kind = "mplus"
base_url = "http://127.0.0.1:9"
ident = "ordersync"
secret_env = "ORDERSYNC_TEST_MPLUS_SECRET"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordersync"))
        .env_remove("ORDERSYNC_CONFIG")
        .env("ORDERSYNC_TEST_ERP_TOKEN", "t")
        .env("ORDERSYNC_TEST_MPLUS_SECRET", "hunter2-mplus-secret")
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("till: FAILED"), "{text}");
    assert!(text.contains("getCurrentSyncMarkersV2"), "{text}");
    assert!(text.contains("127.0.0.1:9/ could not connect"), "{text}");
    assert!(!text.contains("hunter2-mplus-secret"), "{text}");
    assert!(!text.contains("secret="), "{text}");
}
