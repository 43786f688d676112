//! Titelive MediaWeb end to end: the simulator (tokens that expire, HTTP 200
//! answers with success=false, collapsed one-item lists, the misspelled
//! address key) → ledger → http ERP → status write-backs, in-process and
//! with the real binary (SIGKILL, secrets).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::config::Config;
use ordersync::daemon::{poll_live, poll_shipments};
use ordersync::outbox::Engine;
use ordersync::sandbox::titelive::OrderSpec;
use ordersync::sandbox::{Sandbox, SandboxOptions};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::binary::run_daemon_until;
use crate::common::{App, status_json};

const TL: &str = "boekhandel";

fn tl_key(id: i64) -> String {
    format!("{TL}:{id}")
}

struct TlOptions {
    sandbox: SandboxOptions,
    /// Use the given SYSTEM token (token_file) instead of logging in.
    given_token: bool,
    /// Extra keys for the [[sources]] table.
    source_extra: String,
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

async fn spawn_titelive(mut opts: TlOptions) -> App {
    ordersync::http::install_crypto();
    if opts.given_token {
        opts.sandbox.titelive.system_token = Some("SYSTEMTOKEN0123456789abcde".into());
    }
    let tl = opts.sandbox.titelive.clone();
    let erp_token = opts.sandbox.erp.token.clone();
    let sandbox = Sandbox::start(opts.sandbox).await.expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erp-token"), format!("{erp_token}\n")).unwrap();
    let auth = match &tl.system_token {
        Some(t) => {
            std::fs::write(dir.path().join("tl-token"), format!("{t}\n")).unwrap();
            "token_file = \"tl-token\"".to_string()
        }
        None => {
            std::fs::write(dir.path().join("tl-password"), &tl.system_password).unwrap();
            format!(
                "system_login = \"{}\"\nsystem_password_file = \"tl-password\"",
                tl.system_login
            )
        }
    };
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
name = "{TL}"
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
        erp = sandbox.erp_url,
        base = sandbox.titelive_url,
        domain = tl.domain_code,
        extra = opts.source_extra,
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

/// Ids of the simulator's orders that should reach the ERP (status 5 at
/// seeding, a country the test config maps).
fn pushable(app: &App) -> Vec<i64> {
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
async fn sync(engine: &Arc<Engine>, ids: &[i64]) {
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
fn assert_converged(app: &App, ids: &[i64]) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_orders_reach_the_erp_once_with_status_written_back() {
    let app = spawn_titelive(TlOptions::default()).await;
    let tl = &app.sandbox.titelive;
    tl.seed_orders(220, 11, Duration::from_secs(6 * 3600));
    // Orders the list must leave alone: a cart and a cancelled order.
    let cart = tl.add_order(OrderSpec {
        status: 1,
        ..Default::default()
    });
    let cancelled = tl.add_order(OrderSpec {
        status: 99,
        ..Default::default()
    });
    let ids = pushable(&app);
    assert!(ids.len() >= 200, "{} pushable", ids.len());
    let engine = app.engine();
    sync(&engine, &ids).await;
    assert_converged(&app, &ids);
    for id in [cart, cancelled] {
        assert!(app.sandbox.erp.erp_orders_for(&tl_key(id)).is_empty());
        assert!(tl.history(id).is_empty(), "order {id} was left alone");
    }

    // Money arrives to the cent, from floats; the quirks were met on the way.
    let (mut single, mut misspelled, mut vouchers) = (0, 0, 0);
    for &id in &ids {
        let src = tl.order(id).unwrap();
        let body = &app.sandbox.erp.erp_orders_for(&tl_key(id))[0].body;
        assert_eq!(
            body["totals"]["gross"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap(),
            src["totalPrice"].as_f64().unwrap(),
            "order {id} gross"
        );
        assert_eq!(body["prices_include_tax"], true);
        let street = body["shipping_address"]["street"]
            .as_str()
            .unwrap_or_default();
        assert!(
            street.ends_with(&src["deliveryNumber"].to_string()),
            "order {id}: {street}"
        );
        if src["lines"]["line"].is_object() {
            single += 1;
            assert_eq!(body["lines"].as_array().unwrap().len(), 1);
        }
        if src.get("deliveryAdressLine1").is_some() {
            misspelled += 1;
        }
        if body.get("discounts").is_some() {
            vouchers += 1;
        }
        let ean = body["lines"][0]["ean"].as_str().unwrap();
        assert_eq!(ean.len(), 13, "order {id}: {ean}");
    }
    assert!(
        single > 20 && misspelled > 20 && vouchers > 5,
        "{single} {misspelled} {vouchers}"
    );
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
    assert_eq!(
        status.orders.get("completed").copied().unwrap_or(0) as usize,
        ids.len()
    );
    // A second round changes nothing: status 7/8 echoes are not news.
    sync(&engine, &ids).await;
    assert_converged(&app, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_replaced_mid_run() {
    let app = spawn_titelive(TlOptions::default()).await;
    let tl = &app.sandbox.titelive;
    tl.seed_orders(60, 3, Duration::from_secs(3600));
    let ids = pushable(&app);
    let engine = app.engine();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(tl.logins(), 1);
    // Titelive forgets the token (code 4) while pushes and write-backs run...
    tl.revoke_tokens();
    engine.drain(TL, None, 8, &stop).await.unwrap();
    assert_eq!(tl.logins(), 2, "one new token for all concurrent calls");
    // ...then the new one expires (code 5).
    tl.expire_tokens();
    sync(&engine, &ids).await;
    assert_converged(&app, &ids);
    assert_eq!(tl.logins(), 3, "each rejected token was replaced once");
    assert_eq!(
        tl.token_requests(),
        3,
        "each new token was logged in as SYSTEM"
    );
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_200_failures_are_retried_by_their_code_without_doubles() {
    let mut opts = TlOptions::default();
    // One answer in five is HTTP 200 with success=false, code 2 or 99;
    // some answers are lost after the change was applied.
    opts.sandbox.titelive.code_fault_rate = 0.2;
    opts.sandbox.titelive.faults.drop_rate = 0.03;
    let app = spawn_titelive(opts).await;
    app.sandbox
        .titelive
        .seed_orders(50, 8, Duration::from_secs(3600));
    let ids = pushable(&app);
    let engine = app.engine();
    sync(&engine, &ids).await;
    assert!(app.sandbox.titelive.code_fault_count() > 10);
    assert_converged(&app, &ids);
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_with_one_line_arrives_through_both_collapsed_lists() {
    let opts = TlOptions {
        given_token: true,
        ..Default::default()
    };
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    let id = tl.add_order(OrderSpec {
        lines: 1,
        ..Default::default()
    });
    let src = tl.order(id).unwrap();
    assert!(
        src["lines"]["line"].is_object(),
        "the simulator collapses one line: {src}"
    );
    let engine = app.engine();
    sync(&engine, &[id]).await;
    assert_converged(&app, &[id]);
    let body = &app.sandbox.erp.erp_orders_for(&tl_key(id))[0].body;
    assert_eq!(body["lines"].as_array().unwrap().len(), 1);
    assert_eq!(tl.token_requests(), 0, "the given SYSTEM token was used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_country_parks_only_that_order() {
    let app = spawn_titelive(TlOptions::default()).await;
    let tl = &app.sandbox.titelive;
    tl.seed_orders(20, 4, Duration::from_secs(3600));
    let odd = tl.add_order(OrderSpec {
        country: Some(999),
        ..Default::default()
    });
    let ids = pushable(&app);
    let engine = app.engine();
    sync(&engine, &ids).await;
    assert_converged(&app, &ids);
    assert!(app.sandbox.erp.erp_orders_for(&tl_key(odd)).is_empty());
    assert_eq!(tl.status(odd), Some(5), "nothing was written back");
    let status = status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{status}");
    assert_eq!(parked[0]["order_key"], tl_key(odd));
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("Country 999") && reason.contains("sources[0].country_map"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_10_and_12_and_a_late_cancellation_park_the_write_back_naming_the_cause() {
    // 6 is not a Titelive status: code 12 is a configuration error.
    let opts = TlOptions {
        source_extra: "processing_status = 6".into(),
        ..Default::default()
    };
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    let a = tl.add_order(OrderSpec::default());
    let b = tl.add_order(OrderSpec::default());
    let c = tl.add_order(OrderSpec::default());
    let engine = app.engine();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    // Between the poll and the write-back, b disappears (code 10) and c is
    // cancelled in the shop's back office.
    tl.remove_order(b);
    tl.set_status(c, 99);
    engine.drain(TL, None, 4, &stop).await.unwrap();
    assert_eq!(app.sandbox.erp.orders().len(), 3, "all were pushed");
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    let reason = |id: i64| {
        status
            .parked
            .iter()
            .find(|p| p.order_key == tl_key(id))
            .map(|p| p.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason(a).contains("code 12") && reason(a).contains("processing_status"),
        "{:?}",
        status.parked
    );
    assert!(
        reason(b).contains("code 10") && reason(b).contains("does not exist"),
        "{:?}",
        status.parked
    );
    let erp_c = &app.sandbox.erp.erp_orders_for(&tl_key(c))[0].erp_order_number;
    assert!(
        reason(c).contains("cancelled") && reason(c).contains(erp_c.as_str()),
        "{:?}",
        status.parked
    );
    assert_eq!(tl.status(a), Some(5));
    assert_eq!(tl.status_posts(a), 1, "a permanent refusal is not repeated");
    assert_eq!(
        tl.status_posts(c),
        0,
        "nothing is written to a cancelled order"
    );
    // The next poll re-reads the pushed order and records the cancellation.
    poll_live(&engine, &connector, &stop).await;
    let detail = engine.store.order_detail(&tl_key(c)).unwrap().unwrap();
    assert!(
        detail.events.iter().any(|e| e.kind == "changed_after_push"),
        "{:?}",
        detail.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_replays_the_window_including_orders_processed_before() {
    let app = spawn_titelive(TlOptions::default()).await;
    let tl = &app.sandbox.titelive;
    let ids = tl.seed_orders(40, 12, Duration::from_secs(10 * 86_400));
    // The shop processed some orders by hand before ordersync existed.
    let by_hand: Vec<i64> = ids.iter().copied().step_by(4).collect();
    for &id in &by_hand {
        tl.set_status(id, 7);
        tl.set_status(id, 8);
    }
    let since = chrono::Utc::now() - chrono::Duration::days(5);
    let in_window: HashSet<i64> = ids
        .iter()
        .copied()
        .filter(|id| {
            let created = tl.order(*id).unwrap()["creationDate"]
                .as_str()
                .unwrap()
                .to_string();
            let naive =
                chrono::NaiveDateTime::parse_from_str(&created, "%Y-%m-%d %H:%M:%S").unwrap();
            use chrono::TimeZone;
            chrono_tz::Europe::Paris
                .from_local_datetime(&naive)
                .earliest()
                .unwrap()
                >= since
        })
        .collect();
    assert!(!in_window.is_empty() && in_window.len() < ids.len());
    let out = app
        .run_binary()
        .args(["backfill", "--since", "5d"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let in_erp: HashSet<i64> = app
        .sandbox
        .erp
        .orders()
        .iter()
        .map(|o| {
            o.order_key
                .trim_start_matches("boekhandel:")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(in_erp, in_window, "exactly the orders of the window");
    for &id in &in_window {
        let api = tl.history(id).iter().filter(|c| c.via == "API").count();
        if by_hand.contains(&id) {
            assert_eq!(
                tl.status_posts(id),
                0,
                "order {id} was already past 7: nothing written"
            );
        } else {
            assert_eq!(
                (tl.status(id), api),
                (Some(7), 1),
                "order {id}: processing written once"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reaches_titelive_and_names_a_wrong_login_without_the_password() {
    let app = spawn_titelive(TlOptions::default()).await;
    app.sandbox
        .titelive
        .seed_orders(3, 1, Duration::from_secs(600));
    let run =
        || tokio::task::block_in_place(|| app.run_binary().arg("check-config").output().unwrap());
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("boekhandel: Titelive at 127.0.0.1 answered; 3 confirmed"),
        "{text}"
    );
    let wrong = "0000000000000000000000000000000000000bad";
    std::fs::write(app.dir.path().join("tl-password"), wrong).unwrap();
    let out = run();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("check system_login and system_password_file"),
        "{text}"
    );
    assert!(
        !text.contains(wrong),
        "the password is never printed: {text}"
    );
}

fn all_shipped(app: &App, ids: &[i64]) -> bool {
    ids.iter()
        .all(|id| app.sandbox.titelive.status(*id) == Some(8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_titelive_sync_loses_and_doubles_nothing() {
    let mut opts = TlOptions::default();
    opts.sandbox.titelive.faults.latency = Duration::from_millis(8);
    opts.sandbox.erp.faults.latency = Duration::from_millis(8);
    opts.sandbox.erp.faults.drop_rate = 0.02;
    opts.sandbox.titelive.faults.drop_rate = 0.02;
    let app = spawn_titelive(opts).await;
    app.sandbox
        .titelive
        .seed_orders(250, 21, Duration::from_secs(3600));
    let ids = pushable(&app);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("titelive crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut mid_sync_kills = 0;
    tokio::task::block_in_place(|| {
        for round in 0..40 {
            if mid_sync_kills >= 10 {
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
            std::thread::sleep(Duration::from_millis(rng.random_range(100..700)));
            if !all_shipped(&app, &ids) {
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
    let (status, log) =
        tokio::task::block_in_place(|| run_daemon_until(&app, &[], || all_shipped(&app, &ids)));
    assert_eq!(status, Some(0), "{log}");
    assert_converged(&app, &ids);
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titelive_secrets_never_reach_logs_or_status() {
    let mut opts = TlOptions::default();
    // Short-lived tokens: several are issued during the run, all stay hidden.
    opts.sandbox.titelive.token_ttl = Duration::from_secs(1);
    opts.sandbox.titelive.system_password = "7c4a8d09ca3762af61e59520943dc26494f8941b".into();
    opts.sandbox.titelive.faults.latency = Duration::from_millis(20);
    opts.sandbox.titelive.code_fault_rate = 0.1;
    opts.sandbox.erp.token = "erp-token-9e1f-do-not-print".into();
    let app = spawn_titelive(opts).await;
    app.sandbox
        .titelive
        .seed_orders(40, 9, Duration::from_secs(3600));
    let ids = pushable(&app);
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[("RUST_LOG", "debug")], || all_shipped(&app, &ids))
    });
    assert_eq!(status, Some(0), "clean exit; log:\n{log}");
    assert!(
        log.contains("order pushed to ERP"),
        "the run did work:\n{log}"
    );
    let status_text = {
        let out = app.run_binary().arg("status").output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let status_json = status_json(&app).to_string();
    let mut secrets = app.sandbox.titelive.issued_tokens();
    assert!(secrets.len() >= 2, "tokens were renewed during the run");
    secrets.push("7c4a8d09ca3762af61e59520943dc26494f8941b".into());
    secrets.push("erp-token-9e1f-do-not-print".into());
    for s in &secrets {
        for (name, text) in [
            ("log", &log),
            ("status", &status_text),
            ("status --json", &status_json),
        ] {
            assert!(
                !text.contains(s.as_str()),
                "a secret appears in the {name} output"
            );
        }
    }
    assert_converged(&app, &ids);
}
