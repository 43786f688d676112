//! `backfill --since/--until` through the real binary: exactly the orders in
//! the window, the live cursor untouched, a second run adds nothing.

use chrono::Duration as Days;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pushes_exactly_the_window_and_leaves_the_live_cursor() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let now = cs.now_local();
    let old = cs.seed_orders_between(15, 1, now - Days::days(10), now - Days::days(8));
    let window = cs.seed_orders_between(25, 2, now - Days::days(5), now - Days::days(3));
    let recent = cs.seed_orders_between(10, 3, now - Days::minutes(20), now - Days::minutes(1));
    let pushable = |ids: &[i64]| -> Vec<i64> {
        ids.iter()
            .copied()
            .filter(|id| pushable(&cs.order(*id).unwrap()))
            .collect()
    };

    // The daemon started recently: its live cursor is half an hour ago, so
    // it only sees the recent orders (lookback 15 m).
    let engine = app.engine();
    let cursor = (chrono::Utc::now() - Days::minutes(30)).to_rfc3339();
    engine
        .store
        .ingest(SOURCE, "live", &[], Some(("live", &cursor)))
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    ordersync::daemon::poll_live(&engine, &connector, &stop).await;
    engine.drain(SOURCE, None, 8, &stop).await.unwrap();
    let live_cursor = engine.store.cursor(SOURCE, "live").unwrap();
    let recent_ok = pushable(&recent);
    assert_eq!(app.sandbox.erp.orders().len(), recent_ok.len());

    let run = |args: &[&str]| {
        let out = app
            .run_binary()
            .arg("backfill")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&["--since", "6d", "--until", "2d", "--dry-run"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        app.sandbox.erp.orders().len(),
        recent_ok.len(),
        "a dry run changes nothing"
    );
    assert!(stdout.contains("would be recorded and pushed"), "{stdout}");

    let (code, stdout, stderr) = run(&["--since", "6d", "--until", "2d"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let window_ok = pushable(&window);
    assert!(
        stdout.contains(&format!("{} new to push", window_ok.len())),
        "{stdout}"
    );
    for id in &window_ok {
        assert_eq!(
            app.sandbox.erp.erp_orders_for(&key(*id)).len(),
            1,
            "window order {id} pushed once"
        );
        assert_eq!(
            cs.order(*id).unwrap()["state"],
            "processing",
            "accepted written back for {id}"
        );
    }
    for id in &old {
        assert!(
            app.sandbox.erp.erp_orders_for(&key(*id)).is_empty(),
            "order {id} is outside the window"
        );
    }
    assert_eq!(
        app.sandbox.erp.orders().len(),
        recent_ok.len() + window_ok.len()
    );
    assert_eq!(
        engine.store.cursor(SOURCE, "live").unwrap(),
        live_cursor,
        "live cursor untouched"
    );

    let (code, stdout, _) = run(&["--since", "6d", "--until", "2d"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(" 0 new to push"),
        "a second run adds nothing: {stdout}"
    );
    assert_eq!(
        app.sandbox.erp.orders().len(),
        recent_ok.len() + window_ok.len()
    );
}

/// Guarantee 9: the daemon and a backfill over the same orders share the job
/// leases, so nothing is pushed or written back twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_the_running_daemon_doubles_nothing() {
    let mut opts = AppOptions::default();
    opts.sandbox.cloudsuite.faults.latency = std::time::Duration::from_millis(5);
    opts.sandbox.erp.faults.latency = std::time::Duration::from_millis(5);
    let app = spawn_app(opts).await;
    let cs = &app.sandbox.cloudsuite;
    let now = cs.now_local();
    let ids = cs.seed_orders_between(120, 4, now - Days::days(3), now - Days::hours(1));
    let ids: Vec<i64> = ids
        .into_iter()
        .filter(|id| pushable(&cs.order(*id).unwrap()))
        .collect();
    let (status, log) = tokio::task::block_in_place(|| {
        let mut backfill = None;
        let result = crate::binary::run_daemon_until(&app, &[], || {
            if backfill.is_none() {
                backfill = Some(
                    app.run_binary()
                        .args(["backfill", "--since", "4d"])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap(),
                );
            }
            ids.iter()
                .all(|id| cs.order(*id).is_some_and(|o| o["shipment_state"] == "sent"))
        });
        let code = backfill.unwrap().wait().unwrap().code();
        assert_eq!(code, Some(0), "backfill beside the daemon");
        result
    });
    assert_eq!(status, Some(0), "{log}");
    assert_converged(&app, &ids);
}

/// Issue 11, SPEC §4: `backfill` exits 3 when any order of its window is
/// parked, whoever parked it. Here the daemon parked it first; the backfill
/// finds nothing new to push, and must still say so and list it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_exits_3_for_an_order_the_daemon_parked_before() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let when = cs.now_local() - Days::hours(2);
    let good = cs.add_order(ordersync::sandbox::CloudSuiteOrderSpec {
        confirm_date: Some(when),
        ..Default::default()
    });
    let bad = cs.add_order(ordersync::sandbox::CloudSuiteOrderSpec {
        confirm_date: Some(when),
        ..Default::default()
    });
    assert!(cs.poison_quantity(bad));
    let engine = app.engine();
    let stop = tokio_util::sync::CancellationToken::new();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    ordersync::daemon::poll_live(&engine, &connector, &stop).await;
    engine.drain(SOURCE, None, 8, &stop).await.unwrap();
    assert_eq!(app.sandbox.erp.erp_orders_for(&key(good)).len(), 1);
    let parked = engine.store.status(&[SOURCE.to_string()]).unwrap().parked;
    assert_eq!(parked.len(), 1, "{parked:?}");

    let out = app
        .run_binary()
        .args(["backfill", "--since", "1d"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("parked {}", key(bad))) && stdout.contains("quantity"),
        "the summary lists it with its reason: {stdout}"
    );
    assert!(
        stdout.contains("1 parked (1 of them parked before this run)"),
        "{stdout}"
    );
    assert_eq!(app.sandbox.erp.erp_orders_for(&key(good)).len(), 1);

    // A dry run counts the orders it did not need to read again.
    let out = app
        .run_binary()
        .args(["backfill", "--since", "1d", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 order(s) in the window"), "{stdout}");
}

/// Issue 16.2: with stderr not a terminal (journald, a file), backfill says
/// how far it got in INFO lines: read, recorded, pushed and parked of the
/// window, with a rate and an ETA; the last one carries the final counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reports_its_progress_in_info_lines_off_a_terminal() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let when = cs.now_local() - Days::hours(2);
    let spec = || ordersync::sandbox::CloudSuiteOrderSpec {
        confirm_date: Some(when),
        ..Default::default()
    };
    let ids: Vec<i64> = (0..10).map(|_| cs.add_order(spec())).collect();
    for bad in &ids[..2] {
        assert!(cs.poison_quantity(*bad));
    }
    let out = tokio::task::block_in_place(|| {
        app.run_binary()
            .args(["backfill", "--since", "1d"])
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("backfill progress"))
        .collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert!(last.contains("INFO"), "{last}");
    let field = |name: &str| -> String {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {last}"))
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(field("read"), "10", "{last}");
    assert_eq!(field("recorded"), "10", "{last}");
    assert_eq!(field("to_push"), "8", "{last}");
    assert_eq!(field("pushed"), "8", "{last}");
    assert_eq!(field("parked"), "2", "{last}");
    assert_eq!(field("eta"), "0s", "{last}");
    assert!(field("rate").ends_with("/s"), "{last}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no bar or colour off a terminal"
    );
}
