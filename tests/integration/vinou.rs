//! Vinou end to end: the simulator (expiring JWTs, newest-first pages that
//! shift while we walk) → ledger → http ERP, including SIGKILL and secrets.

use std::collections::HashSet;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::config::Config;
use ordersync::daemon::{poll_live, poll_shipments};
use ordersync::outbox::Engine;
use ordersync::sandbox::{Sandbox, SandboxOptions};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::binary::run_daemon_until;
use crate::common::{App, status_json};

const VINOU: &str = "weingut";
const IMPORT: [&str; 2] = ["payed", "need_package"];

struct Setup {
    sandbox: SandboxOptions,
    page_size: u32,
    source_extra: &'static str,
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

async fn spawn_vinou(setup: Setup) -> App {
    ordersync::http::install_crypto();
    let api_token = setup.sandbox.vinou.api_token.clone();
    let auth_id = setup.sandbox.vinou.auth_id.clone();
    let erp_token = setup.sandbox.erp.token.clone();
    let sandbox = Sandbox::start(setup.sandbox).await.expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vinou-token"), format!("{api_token}\n")).unwrap();
    std::fs::write(dir.path().join("erp-token"), format!("{erp_token}\n")).unwrap();
    let text = format!(
        r#"
[daemon]
state_dir = "state"
shipments_schedule = "*/1 * * * * *"
retry_initial = "100ms"
retry_max = "2s"
request_timeout = "10s"

[erp]
kind = "http"
url = "{erp}"
token_file = "erp-token"

[[sources]]
name = "{VINOU}"
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
        erp = sandbox.erp_url,
        vinou = sandbox.vinou_url,
        page_size = setup.page_size,
        extra = setup.source_extra,
    );
    let config_path = dir.path().join("ordersync.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).expect("test config loads");
    App {
        dir,
        sandbox,
        config_path,
        config,
    }
}

fn key(id: i64) -> String {
    format!("{VINOU}:{id}")
}

fn status_of(o: &Value) -> &str {
    o["status"].as_str().unwrap_or_default()
}

/// Ids of simulator orders in an import status.
fn pushable(app: &App) -> Vec<i64> {
    app.sandbox
        .vinou
        .orders()
        .iter()
        .filter(|o| IMPORT.contains(&status_of(o)))
        .filter_map(|o| o["id"].as_i64())
        .collect()
}

async fn poll(engine: &Arc<Engine>) {
    let connector = engine.connectors.get(VINOU).unwrap().clone();
    poll_live(engine, &connector, &CancellationToken::new()).await;
}

/// Polls, pushes, reads shipments and writes back until nothing is left.
async fn sync(app: &App, engine: &Arc<Engine>) {
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
fn assert_converged(app: &App, ids: &[i64], touched: bool) {
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

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or("x")).unwrap_or_else(|_| panic!("not a decimal: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vinou_orders_reach_the_erp_once_to_the_cent() {
    let app = spawn_vinou(Setup::default()).await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(280, 5, Duration::from_secs(6 * 3600));
    let ids = pushable(&app);
    assert!(ids.len() >= 200, "only {} pushable", ids.len());
    let engine = app.engine();
    sync(&app, &engine).await;
    assert_converged(&app, &ids, true);
    assert_eq!(
        vinou.max_page_size_asked(),
        100,
        "full pages, within Vinou's maximum"
    );

    let (mut packages, mut rebates, mut net_invoices) = (0, 0, 0);
    for &id in &ids {
        let v = vinou.order(id).unwrap();
        let sent = &app.sandbox.erp.erp_orders_for(&key(id))[0].body;
        assert_eq!(sent["totals"]["net"], v["net"], "order {id} net");
        assert_eq!(sent["totals"]["tax"], v["tax"], "order {id} tax");
        assert_eq!(sent["totals"]["gross"], v["gross"], "order {id} gross");
        let basis = v["invoice_type"].as_str().unwrap();
        assert_eq!(sent["prices_include_tax"], basis == "gross", "order {id}");
        if basis == "net" {
            net_invoices += 1;
        }
        let positions = v["positions"].as_array().unwrap();
        assert_eq!(sent["lines"].as_array().unwrap().len(), positions.len());
        for (line, p) in sent["lines"].as_array().unwrap().iter().zip(positions) {
            assert_eq!(dec(&line["line_total"]), dec(&p[basis]), "order {id} line");
            assert_eq!(line["sku"], p["item"]["articlenumber"]);
        }
        if v["package"].is_object() {
            packages += 1;
            assert_eq!(
                dec(&sent["shipping"]["amount"]),
                dec(&v["package"][basis]),
                "order {id} package"
            );
        } else {
            assert!(
                sent.get("shipping").is_none(),
                "order {id}: no package, no shipping"
            );
        }
        let rebate: Decimal = v["rebates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| -dec(&r[basis]))
            .sum();
        let discounts: Decimal = sent["discounts"]
            .as_array()
            .map(|d| d.iter().map(|x| dec(&x["amount"])).sum())
            .unwrap_or_default();
        if !rebate.is_zero() {
            rebates += 1;
        }
        assert_eq!(discounts, rebate, "order {id} rebates");
    }
    assert!(
        packages > 50 && rebates > 10 && net_invoices > 10,
        "{packages} {rebates} {net_invoices}"
    );

    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    assert_eq!(
        status.orders.get("completed").copied().unwrap_or(0) as usize,
        ids.len()
    );
    let waiting = vinou
        .orders()
        .iter()
        .filter(|o| status_of(o) == "need_payment")
        .count();
    assert_eq!(
        status.orders.get("held").copied().unwrap_or(0) as usize,
        waiting
    );
    assert!(status.parked.is_empty(), "{:?}", status.parked);
    // A second round changes nothing and touches nothing again.
    sync(&app, &engine).await;
    assert_converged(&app, &ids, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_while_orders_arrive_misses_and_doubles_nothing() {
    let app = spawn_vinou(Setup {
        page_size: 20,
        ..Default::default()
    })
    .await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(300, 9, Duration::from_secs(6 * 3600));
    let before: Vec<i64> = vinou
        .orders()
        .iter()
        .filter_map(|o| o["id"].as_i64())
        .collect();
    // Three new orders before every page after the first: each page starts
    // with three orders of the page before.
    vinou.set_arrivals_per_page(3);
    let engine = app.engine();
    poll(&engine).await;
    let arrived = vinou.orders().len() - before.len();
    assert!(
        arrived >= 3 * 14,
        "the pages shifted during the walk ({arrived} arrivals)"
    );
    // Every order that existed when the walk began is recorded, once.
    for id in &before {
        assert!(
            engine.store.order_detail(&key(*id)).unwrap().is_some(),
            "order {id} was skipped by the shifting walk"
        );
    }
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    assert!(
        status.sources[0].cursor.is_some(),
        "the walk reached the end: cursor set"
    );
    assert!(
        status.sources[0].last_error.is_none(),
        "{:?}",
        status.sources[0].last_error
    );

    // The orders that arrived during the walk are newer than its cursor:
    // the next poll gets them.
    vinou.set_arrivals_per_page(0);
    sync(&app, &engine).await;
    let ids = pushable(&app);
    assert_converged(&app, &ids, true);
}

fn cursor(engine: &Arc<Engine>) -> Option<String> {
    engine.store.cursor(VINOU, "live").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_cut_short_keeps_the_cursor_and_the_next_walk_fills_the_gap() {
    let app = spawn_vinou(Setup {
        page_size: 10,
        ..Default::default()
    })
    .await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(50, 12, Duration::from_secs(6 * 3600));
    let engine = app.engine();
    let recorded = |ids: &[i64]| {
        ids.iter()
            .filter(|id| engine.store.order_detail(&key(**id)).unwrap().is_some())
            .count()
    };
    // First walk dies on page 3: pages 1-2 are recorded, the cursor is not set.
    vinou.fail_list_page(Some(3));
    poll(&engine).await;
    let all: Vec<i64> = vinou
        .orders()
        .iter()
        .filter_map(|o| o["id"].as_i64())
        .collect();
    assert_eq!(recorded(&all), 20);
    assert_eq!(cursor(&engine), None);
    vinou.fail_list_page(None);
    poll(&engine).await;
    assert_eq!(recorded(&all), 50);
    let first = cursor(&engine).expect("a complete walk sets the cursor");

    // 25 new orders; the walk dies on page 2 after recording page 1. The
    // next walk starts at known orders on page 1 and must not stop there.
    let new: Vec<i64> = (0..25).map(|_| vinou.place_order()).collect();
    vinou.fail_list_page(Some(2));
    poll(&engine).await;
    assert_eq!(recorded(&new), 10);
    assert_eq!(
        cursor(&engine).as_deref(),
        Some(first.as_str()),
        "cursor stays"
    );
    vinou.fail_list_page(None);
    poll(&engine).await;
    assert_eq!(
        recorded(&new),
        25,
        "the gap below the known orders was read"
    );
    assert!(cursor(&engine).unwrap() >= first);
    sync(&app, &engine).await;
    assert_converged(&app, &pushable(&app), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_expires_mid_walk_and_login_happens_again() {
    let mut setup = Setup {
        page_size: 10,
        ..Default::default()
    };
    // Short JWTs, and the server drops each after a few uses, well before
    // its `exp`: both the early renewal and the re-login on 401 are needed.
    setup.sandbox.vinou.jwt_ttl = Duration::from_secs(1);
    setup.sandbox.vinou.jwt_max_uses = Some(4);
    setup.sandbox.vinou.faults.latency = Duration::from_millis(20);
    let app = spawn_vinou(setup).await;
    app.sandbox
        .vinou
        .seed_orders(90, 3, Duration::from_secs(3600));
    let engine = app.engine();
    poll(&engine).await;
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    assert!(
        status.sources[0].last_error.is_none(),
        "poll failed: {:?}",
        status.sources[0].last_error
    );
    assert!(
        app.sandbox.vinou.logins() >= 3,
        "logged in {} times",
        app.sandbox.vinou.logins()
    );
    sync(&app, &engine).await;
    assert_converged(&app, &pushable(&app), true);
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_caught_by_the_recheck_not_the_list() {
    let app = spawn_vinou(Setup {
        page_size: 5,
        source_extra: "lookback = \"1s\"",
        ..Default::default()
    })
    .await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(40, 4, Duration::from_secs(3600));
    // An old order waiting for payment: deep down the list, far below where
    // a walk with a cursor stops.
    let waiting = vinou.add_order(
        "need_payment",
        Some(vinou.now_local() - chrono::Duration::hours(5)),
    );
    let engine = app.engine();
    sync(&app, &engine).await;
    let detail = engine.store.order_detail(&key(waiting)).unwrap().unwrap();
    assert_eq!(detail.row.state, "held");
    assert!(app.sandbox.erp.erp_orders_for(&key(waiting)).is_empty());

    vinou.set_status(waiting, "payed");
    let (lists, gets) = (vinou.list_requests(), vinou.get_requests(waiting));
    poll(&engine).await;
    assert_eq!(
        vinou.list_requests() - lists,
        1,
        "the walk stopped at old ground on page 1"
    );
    assert_eq!(
        vinou.get_requests(waiting) - gets,
        1,
        "orders/get re-read the held order"
    );
    sync(&app, &engine).await;
    assert_eq!(app.sandbox.erp.erp_orders_for(&key(waiting)).len(), 1);
    assert_converged(&app, &pushable(&app), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_touch_orders_complete_on_shipment_and_vinou_is_not_written() {
    let app = spawn_vinou(Setup {
        source_extra: "touch_on_import = false",
        ..Default::default()
    })
    .await;
    app.sandbox
        .vinou
        .seed_orders(30, 8, Duration::from_secs(3600));
    let engine = app.engine();
    sync(&app, &engine).await;
    let ids = pushable(&app);
    assert_converged(&app, &ids, false);
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    assert_eq!(
        status.orders.get("completed").copied().unwrap_or(0) as usize,
        ids.len()
    );
    assert_eq!(status.jobs_due, 0);
    let shown = engine.store.order_detail(&key(ids[0])).unwrap().unwrap();
    let text = format!("{shown:?}");
    assert!(
        text.contains("no shipped write-back"),
        "shipment recorded as an event: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vinou_sigkill_loses_and_doubles_nothing_and_keeps_secrets() {
    let mut setup = Setup {
        page_size: 20,
        ..Default::default()
    };
    // Latency so kills land in the middle of calls (and there is work left
    // to kill), and dropped ERP answers: applied, but the daemon never heard.
    setup.sandbox.vinou.faults.latency = Duration::from_millis(20);
    setup.sandbox.vinou.jwt_ttl = Duration::from_secs(2);
    setup.sandbox.vinou.api_token = "vinou-api-token-9c41e7-do-not-print".into();
    setup.sandbox.erp.faults.latency = Duration::from_millis(20);
    setup.sandbox.erp.faults.drop_rate = 0.02;
    let app = spawn_vinou(setup).await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(400, 21, Duration::from_secs(6 * 3600));
    let ids = pushable(&app);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("vinou crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let finished = || {
        ids.iter().all(|id| {
            vinou.order(*id).is_some_and(|o| o["touched"] == 1)
                && app.sandbox.erp.erp_orders_for(&key(*id)).len() == 1
        })
    };
    let mut mid_sync_kills = 0;
    tokio::task::block_in_place(|| {
        for round in 0..40 {
            if mid_sync_kills >= 10 {
                break;
            }
            let log =
                std::fs::File::create(app.dir.path().join(format!("crash-{round}.log"))).unwrap();
            let mut child = app
                .run_binary()
                .arg("run")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.random_range(80..500)));
            if !finished() {
                mid_sync_kills += 1;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    });
    assert!(
        mid_sync_kills >= 10,
        "only {mid_sync_kills} kills landed while work was left"
    );
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    assert_converged(&app, &ids, true);
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");

    // No log line of any run, nor `status`, shows the API token or a JWT.
    let mut secrets = vinou.issued_tokens();
    assert!(secrets.len() >= 2, "JWTs were issued and renewed");
    secrets.push(vinou.options().api_token.clone());
    let mut texts = vec![status.to_string()];
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            texts.push(std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(texts.len() >= 11, "logs of every run were read");
    assert!(
        texts.iter().any(|t| t.contains("order pushed to ERP")),
        "the logs hold the runs' work (else this check proves nothing)"
    );
    for text in &texts {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret reached the output");
        }
        // Not even the signature part of a JWT.
        for s in vinou.issued_tokens() {
            let sig = s.rsplit('.').next().unwrap();
            assert!(!text.contains(sig), "a JWT signature reached the output");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_order_is_parked_the_others_flow_and_a_fix_is_picked_up() {
    let app = spawn_vinou(Setup {
        page_size: 10,
        source_extra: "lookback = \"1s\"",
        ..Default::default()
    })
    .await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(40, 14, Duration::from_secs(3600));
    let bad = vinou.add_order(
        "payed",
        Some(vinou.now_local() - chrono::Duration::hours(3)),
    );
    vinou.poison_quantity(bad);
    let engine = app.engine();
    sync(&app, &engine).await;
    let others: Vec<i64> = pushable(&app).into_iter().filter(|id| *id != bad).collect();
    assert_converged(&app, &others, true);
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    assert_eq!(status.parked.len(), 1, "{:?}", status.parked);
    let reason = &status.parked[0].reason;
    assert!(
        status.parked[0].order_key == key(bad)
            && reason.contains("zwei")
            && reason.contains("position"),
        "{reason}"
    );
    // Fixed at Vinou: deep below where the walk stops, so the re-check of
    // unmappable orders must find it.
    vinou.unpoison(bad);
    sync(&app, &engine).await;
    assert_converged(&app, &pushable(&app), true);
    assert!(
        engine
            .store
            .status(&[VINOU.to_string()])
            .unwrap()
            .parked
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_exactly_its_window_and_leaves_the_live_cursor() {
    let app = spawn_vinou(Setup::default()).await;
    let vinou = &app.sandbox.vinou;
    vinou.seed_orders(60, 15, Duration::from_secs(4 * 24 * 3600));
    // The daemon started half an hour ago.
    let engine = app.engine();
    let live = (vinou.now_local() - chrono::Duration::minutes(30))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    engine
        .store
        .ingest(VINOU, "live", &[], Some(("live", &live)))
        .unwrap();
    poll(&engine).await;
    let stop = CancellationToken::new();
    engine.drain(VINOU, None, 8, &stop).await.unwrap();
    let live_cursor = cursor(&engine);

    let since = vinou.now_local() - chrono::Duration::days(2);
    let in_window: Vec<i64> = vinou
        .orders()
        .iter()
        .filter(|o| IMPORT.contains(&status_of(o)))
        .filter(|o| {
            o["crstamp"].as_str().unwrap() >= since.format("%Y-%m-%d %H:%M:%S").to_string().as_str()
        })
        .filter_map(|o| o["id"].as_i64())
        .collect();
    assert!(in_window.len() >= 10 && in_window.len() < pushable(&app).len());
    let run = || {
        let out = app
            .run_binary()
            .args(["backfill", "--since", "2d", "--source", VINOU])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = tokio::task::block_in_place(run);
    assert_eq!(code, Some(0), "{text}");
    let in_erp: HashSet<String> = app
        .sandbox
        .erp
        .orders()
        .into_iter()
        .map(|o| o.order_key)
        .collect();
    let expected: HashSet<String> = in_window.iter().map(|id| key(*id)).collect();
    assert_eq!(in_erp, expected, "exactly the window reached the ERP");
    assert_eq!(
        cursor(&engine),
        live_cursor,
        "backfill leaves the live cursor alone"
    );
    let (code, text) = tokio::task::block_in_place(run);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        app.sandbox.erp.orders().len(),
        expected.len(),
        "a second run adds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_token_is_a_clear_error_without_the_token() {
    let app = spawn_vinou(Setup::default()).await;
    app.sandbox
        .vinou
        .seed_orders(5, 2, Duration::from_secs(3600));
    std::fs::write(app.dir.path().join("vinou-token"), "wrong-token-3b7d\n").unwrap();
    let engine = app.engine();
    poll(&engine).await;
    let status = engine.store.status(&[VINOU.to_string()]).unwrap();
    let error = status.sources[0]
        .last_error
        .clone()
        .expect("the poll failed");
    assert!(
        error.contains("Vinou login failed")
            && error.contains("check auth_id")
            && error.contains("127.0.0.1"),
        "{error}"
    );
    assert!(!error.contains("wrong-token-3b7d"), "{error}");
    assert!(app.sandbox.erp.orders().is_empty());
}
