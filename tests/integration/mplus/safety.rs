//! Secrets never printed; SIGKILL at random moments loses and doubles nothing.

use super::*;

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
    let kills = tokio::task::block_in_place(|| {
        crate::crash::kill_at_random_moments(&app, &mut rng, 12, 40, 300, finished)
    });
    assert!(kills >= 12, "only {kills} kills landed while work was left");
    let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
    assert_eq!(status, Some(0), "{log}");
    assert_till_converged(&app, &ids);
    let status = crate::common::status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

/// The daemon runs more write-backs than `max_in_flight` (the next ones
/// wait at the request limit, their order already read): the till must
/// still never answer more than `max_in_flight` requests at once, and
/// every order goes through once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_till_never_sees_more_requests_at_once_than_max_in_flight() {
    for max_in_flight in [1u64, 3] {
        let mut o = options();
        o.erp.ship_after = None;
        o.mplus.faults.latency = Duration::from_millis(15);
        let app = spawn_mplus(o, &format!("max_in_flight = {max_in_flight}"), 20).await;
        let ids = app.sandbox.mplus.seed_orders(60);
        let till = app.sandbox.mplus.clone();
        let done = || ids.iter().all(|id| till.updates(id) >= 1);
        let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], done));
        assert_eq!(status, Some(0), "{log}");
        assert!(done(), "max_in_flight = {max_in_flight}: not synced: {log}");
        let peak = till.peak_in_flight();
        assert_eq!(
            peak, max_in_flight,
            "max_in_flight = {max_in_flight}: the till saw up to {peak} requests at once"
        );
        for id in &ids {
            let in_erp = app.sandbox.erp.erp_orders_for(&key(id)).len();
            assert_eq!(in_erp, 1, "order {id} in the ERP {in_erp} times");
            assert_eq!(till.updates(id), 1, "order {id}: reference written again");
        }
    }
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
