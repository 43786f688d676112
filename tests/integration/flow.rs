//! The whole flow in-process: sandbox CloudSuite → ledger → http ERP →
//! write-backs, with faults, a poisoned order, a `next` link that never
//! ends and a list item the API could not serialize.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ordersync::daemon::poll_live;
use ordersync::sandbox::Faults;
use ordersync::sandbox::{CloudSuiteLineSpec as LineSpec, CloudSuiteOrderSpec as OrderSpec};
use rust_decimal::{Decimal, RoundingStrategy};
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_orders_reach_the_erp_once_and_every_write_back_lands() {
    let app = spawn_app(AppOptions::default()).await;
    app.sandbox
        .cloudsuite
        .seed_orders(240, 7, Duration::from_secs(3 * 3600));
    let ids = app.pushable_ids();
    assert!(
        ids.len() >= 200,
        "only {} pushable orders seeded",
        ids.len()
    );
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &ids);

    // Amounts arrive right to the cent: the ERP got what CloudSuite says.
    // Most details carry no totals (the documented shape): then the net is
    // what the lines and shipping add up to, and no gross is invented.
    let (mut stated, mut unstated) = (0, 0);
    for &id in ids.iter().take(50) {
        let cs = app.sandbox.cloudsuite.order(id).unwrap();
        let erp = &app.sandbox.erp.erp_orders_for(&key(id))[0].body;
        let dec = |v: &serde_json::Value| Decimal::from_str(v.as_str().unwrap()).unwrap();
        let lines: Decimal = cs["order_lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (dec(&l["quantity"]) * dec(&l["unit_price"]))
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            })
            .sum();
        let shipping = cs.get("shipping_costs").map_or(Decimal::ZERO, dec);
        assert_eq!(
            dec(&erp["totals"]["net"]),
            lines + shipping,
            "order {id} net"
        );
        if cs.get("total_excl").is_some() {
            stated += 1;
            assert_eq!(erp["totals"]["net"], cs["total_excl"], "order {id} net");
            assert_eq!(erp["totals"]["gross"], cs["total_incl"], "order {id} gross");
        } else {
            unstated += 1;
            assert!(erp["totals"].get("gross").is_none(), "order {id} gross");
        }
    }
    assert!(stated > 0 && unstated > 0, "{stated} {unstated}");
    // Held and cancelled orders stayed out of the ERP and are visible as such.
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    assert_eq!(
        status.orders.get("completed").copied().unwrap_or(0) as usize,
        ids.len()
    );
    assert!(status.parked.is_empty(), "{:?}", status.parked);
    // A second round changes nothing (echoes of our write-backs are not news).
    app.sync(&engine).await;
    assert_converged(&app, &ids);
}

/// The fault storm of issue 12: 20 % 5xx, 5 % 429 (Retry-After 1 s) and
/// 5 % dropped connections, on every request.
fn storm() -> Faults {
    Faults {
        error_5xx_rate: 0.2,
        rate_429: 0.05,
        retry_after_secs: 1,
        drop_rate: 0.05,
        ..Default::default()
    }
}

/// CloudSuite's pages show what a PATCH sends, never what it answers. With
/// the whole order, only the fields it set, or 204 and no body, every line
/// still gets its ERP line number, each field written once (before, an
/// answer without `order_lines` ended the write-back with no PUT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_numbers_reach_cloudsuite_whatever_a_patch_answers() {
    use ordersync::sandbox::CloudSuitePatchAnswer as Answer;
    for answer in [Answer::Whole, Answer::FieldsSet, Answer::NoContent] {
        let mut opts = AppOptions::default();
        opts.sandbox.cloudsuite.patch_answer = answer;
        let app = spawn_app(opts).await;
        app.sandbox
            .cloudsuite
            .seed_orders(12, 5, Duration::from_secs(3600));
        let ids = app.pushable_ids();
        assert!(ids.len() >= 5, "{answer:?}: {} pushable", ids.len());
        let engine = app.engine();
        app.sync(&engine).await;
        assert_converged(&app, &ids);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_converge_without_doubles_and_the_rate_limit_holds() {
    let mut opts = AppOptions {
        rate_limit_per_sec: 40,
        max_in_flight: 4,
        // About 30 % of requests fail here, so a three-request write-back
        // fails two times in three: the time budget (give_up_after) keeps
        // every job going however many attempts that takes.
        ..Default::default()
    };
    opts.sandbox.cloudsuite.faults = storm();
    opts.sandbox.erp.faults = storm();
    let app = spawn_app(opts).await;
    app.sandbox
        .cloudsuite
        .seed_orders(60, 11, Duration::from_secs(3600));
    let ids = app.pushable_ids();
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &ids);
    assert!(
        app.sandbox.cloudsuite.fault_count() > 10,
        "the faults were actually injected"
    );
    assert!(app.sandbox.erp.fault_count() > 0);
    let peak = app.sandbox.cloudsuite.peak_requests_per_sec();
    assert!(peak <= 41, "rate limit 40/s exceeded: peak {peak}/s");
    assert_waited_out_retry_after(&app);
}

/// No request went out before a `Retry-After` it was given: each simulator
/// counts requests that arrive inside a pause it asked for (past a grace
/// for those already under way when it answered 429).
fn assert_waited_out_retry_after(app: &App) {
    let cs = app.sandbox.cloudsuite.early_after_retry_after();
    let erp = app.sandbox.erp.early_after_retry_after();
    assert_eq!(
        (cs, erp),
        (0, 0),
        "requests sent inside a Retry-After pause (CloudSuite, ERP)"
    );
}

/// Issue 12.4 with the production retry settings (2 s doubling up to
/// 15 min): a stretch of 20 % 5xx + 5 % 429 + 5 % dropped connections parks
/// nothing, and once the faults stop everything converges within a minute
/// (jobs waiting out long backoffs are pulled forward when the remote
/// answers again). The bound is the issue's acceptance criterion, generous
/// against what it measures (a backoff of minutes would miss it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_stretch_of_faults_everything_converges_within_a_minute() {
    // Not beside the fleet test's three daemons: the bound is wall-clock.
    let _heavy = crate::common::heavy().await;
    let mut opts = AppOptions {
        rate_limit_per_sec: 40,
        max_in_flight: 4,
        daemon_extra: "retry_initial = \"2s\"\nretry_max = \"15m\"".into(),
        ..Default::default()
    };
    let calm_cs = opts.sandbox.cloudsuite.faults.clone();
    let calm_erp = opts.sandbox.erp.faults.clone();
    opts.sandbox.cloudsuite.faults = storm();
    opts.sandbox.erp.faults = storm();
    let app = spawn_app(opts).await;
    app.sandbox
        .cloudsuite
        .seed_orders(40, 12, Duration::from_secs(3600));
    let ids = app.pushable_ids();
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    // 20 s of work against the faults (bounded), the way the daemon runs.
    let stormy = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < stormy {
        let stop = tokio_util::sync::CancellationToken::new();
        let cut = stop.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cut.cancel();
        });
        ordersync::daemon::poll_live(&engine, &connector, &stop).await;
        engine.drain(SOURCE, None, 4, &stop).await.unwrap();
        let _ = ordersync::daemon::poll_shipments(&engine, &stop).await;
        timer.abort();
    }
    assert!(
        app.sandbox.cloudsuite.fault_count() > 10,
        "faults were injected"
    );
    app.sandbox.cloudsuite.set_faults(calm_cs);
    app.sandbox.erp.set_faults(calm_erp);
    let calm_since = std::time::Instant::now();
    app.sync(&engine).await;
    let took = calm_since.elapsed();
    assert_converged(&app, &ids);
    assert!(
        took < Duration::from_secs(60),
        "converged {took:?} after the last fault"
    );
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
    assert_waited_out_retry_after(&app);
}

/// When the ERP answers again (here: a shipments read succeeds), pushes
/// that wait out a long backoff are due at once instead of a minute later.
/// With `retry_initial = "1m"` every push that failed once waits at least
/// 42 s (60 s − 30 % jitter); converging well within that shows the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_waiting_on_a_long_backoff_go_when_the_erp_answers_again() {
    let mut opts = AppOptions {
        daemon_extra: "retry_initial = \"1m\"\nretry_max = \"15m\"".into(),
        ..Default::default()
    };
    let calm = opts.sandbox.erp.faults.clone();
    opts.sandbox.erp.faults.error_5xx_rate = 1.0;
    let app = spawn_app(opts).await;
    for _ in 0..6 {
        app.sandbox.cloudsuite.add_order(OrderSpec::default());
    }
    let ids = app.pushable_ids();
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let round = |secs: u64| {
        let engine = Arc::clone(&engine);
        let connector = connector.clone();
        async move {
            let stop = tokio_util::sync::CancellationToken::new();
            let cut = stop.clone();
            let timer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                cut.cancel();
            });
            ordersync::daemon::poll_live(&engine, &connector, &stop).await;
            let _ = ordersync::daemon::poll_shipments(&engine, &stop).await;
            engine.drain(SOURCE, None, 8, &stop).await.unwrap();
            timer.abort();
        }
    };
    round(2).await;
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    assert_eq!(
        status.orders.get("queued").copied().unwrap_or(0) as usize,
        ids.len(),
        "{:?}",
        status.orders
    );
    app.sandbox.erp.set_faults(calm);
    let back = std::time::Instant::now();
    while app.sandbox.erp.orders().len() < ids.len() {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "pushes still waiting on their backoff {:?} after the ERP came back",
            back.elapsed()
        );
        round(1).await;
    }
    assert_eq!(app.sandbox.erp.orders().len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_order_is_parked_with_its_reason_and_the_others_flow() {
    // The fix is seen by the next recheck round: let every poll begin one.
    let app = spawn_app(AppOptions {
        source_extra: "recheck_every = \"0s\"".into(),
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(cs.add_order(OrderSpec::default()));
    }
    let poisoned = ids[4];
    cs.poison_quantity(poisoned);
    let engine = app.engine();
    app.sync(&engine).await;
    let good: Vec<i64> = ids.iter().copied().filter(|i| *i != poisoned).collect();
    assert_converged(&app, &good);
    let status = status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{status}");
    assert_eq!(parked[0]["order_key"], key(poisoned));
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("quantity") && reason.contains("abc"),
        "reason should say what is wrong: {reason}"
    );
    assert_eq!(status["orders"]["parked"], 1);

    // Fixed at the source: the next poll sees the change and pushes it.
    cs.unpoison(poisoned);
    app.sync(&engine).await;
    assert_converged(&app, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_orders_wait_for_payment_and_cancelled_ones_never_go() {
    // The payment is seen by the next poll that reads the whole window.
    let app = spawn_app(AppOptions {
        source_extra: "lookback_every = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let paid = cs.add_order(OrderSpec::default());
    let started = cs.add_order(OrderSpec {
        payment_status: "started".into(),
        ..Default::default()
    });
    let cancelled = cs.add_order(OrderSpec {
        payment_status: "closed_canceled".into(),
        ..Default::default()
    });
    // An offline order (the ERP posted it, with its own number) is never
    // read, let alone pushed back into the ERP.
    let offline = cs.add_order(OrderSpec {
        offline: true,
        ..Default::default()
    });
    // A site with no payment option sends no payment_status: `none`.
    let no_payment_option = cs.add_order(OrderSpec {
        payment_status: String::new(),
        ..Default::default()
    });
    assert!(
        cs.order(no_payment_option)
            .unwrap()
            .get("payment_status")
            .is_none()
    );
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &[paid, no_payment_option]);
    assert!(engine.store.order_detail(&key(offline)).unwrap().is_none());
    assert_eq!(cs.detail_reads(offline), 0);
    let detail = engine.store.order_detail(&key(started)).unwrap().unwrap();
    assert_eq!(detail.row.state, "held");
    assert!(detail.row.note.unwrap().contains("started"));
    assert_eq!(
        engine
            .store
            .order_detail(&key(cancelled))
            .unwrap()
            .unwrap()
            .row
            .state,
        "cancelled"
    );

    cs.set_payment_status(started, "paid");
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.sync(&engine).await;
    assert_converged(&app, &[paid, no_payment_option, started]);
}

/// Issue 13: the recheck round after a walk does not read again what that
/// walk has just read (a held or unmappable order's detail), nor a held
/// order the list shows with its `modified_date` unchanged. An unmappable
/// order listed unchanged, and a held order the list no longer shows (aged
/// out of the window), are still read again, and a payment still releases
/// a held order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recheck_does_not_read_again_what_the_walk_just_read() {
    // Every poll begins a recheck round (the pacing has its own test below)
    // and reads the whole window (that pacing has its own test too).
    let app = spawn_app(AppOptions {
        source_extra: "recheck_every = \"0s\"\nlookback_every = \"0s\"".into(),
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let paid: Vec<i64> = (0..3).map(|_| cs.add_order(OrderSpec::default())).collect();
    let unpaid = || OrderSpec {
        payment_status: "started".into(),
        ..Default::default()
    };
    let held_new = cs.add_order(unpaid());
    let held_old = cs.add_order(OrderSpec {
        confirm_date: Some(cs.now_local() - chrono::Duration::hours(5)),
        ..unpaid()
    });
    let poisoned = cs.add_order(OrderSpec::default());
    cs.poison_quantity(poisoned);
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    let reads = |id: i64| cs.detail_reads(id);

    // The first walk reads every detail once; its recheck round (held and
    // unmappable orders) reads none of them again.
    poll_live(&engine, &connector, &stop).await;
    for id in paid.iter().chain(&[held_new, held_old, poisoned]) {
        assert_eq!(reads(*id), 1, "order {id}: detail reads after one poll");
    }
    let state = |id: i64| {
        engine
            .store
            .order_detail(&key(id))
            .unwrap()
            .unwrap()
            .row
            .state
    };
    assert_eq!(
        (state(held_new), state(held_old)),
        ("held".into(), "held".into())
    );
    assert_eq!(state(poisoned), "invalid");
    assert!(
        engine.store.cursor(SOURCE, "live").unwrap().is_some(),
        "a clean walk moves the cursor"
    );

    // The next poll lists only the last 15 minutes: the recent held order
    // unchanged (not read again), the unmappable one unchanged (read again:
    // a fix need not touch modified_date), and not the old held one (read
    // again by the recheck).
    engine.drain(SOURCE, None, 8, &stop).await.unwrap();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(reads(held_new), 1, "held, listed unchanged");
    assert_eq!(reads(poisoned), 2, "unmappable, listed unchanged");
    assert_eq!(reads(held_old), 2, "held, no longer listed");

    // Paid: the walk reads it (modified_date moved), the recheck does not.
    cs.set_payment_status(held_new, "paid");
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(reads(held_new), 2, "read once by the walk");
    assert_eq!(state(held_new), "queued");
    cs.set_payment_status(held_old, "paid");
    cs.unpoison(poisoned);
    app.sync(&engine).await;
    let mut all = paid.clone();
    all.extend([held_new, held_old, poisoned]);
    assert_converged(&app, &all);
}

/// A held order the list no longer shows is read again by the recheck, but
/// a new round through held orders begins at most once per
/// `recheck_every`: polls in between do not read it again, and a payment
/// is seen by the first round after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_recheck_round_begins_at_most_once_per_recheck_every() {
    let app = spawn_app(AppOptions {
        source_extra: "recheck_every = \"3s\"".into(),
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let held_old = cs.add_order(OrderSpec {
        payment_status: "started".into(),
        confirm_date: Some(cs.now_local() - chrono::Duration::hours(5)),
        ..Default::default()
    });
    // A recent order: the cursor moves past the held one's window.
    let recent = cs.add_order(OrderSpec::default());
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    let reads = || cs.detail_reads(held_old);
    // First poll: the walk reads it; the round that begins leaves it out.
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(reads(), 1);
    let began = std::time::Instant::now();
    // Out of the list's window now; the round is through.
    for _ in 0..3 {
        poll_live(&engine, &connector, &stop).await;
    }
    if began.elapsed() < Duration::from_secs(2) {
        assert_eq!(reads(), 1, "polls within recheck_every read it again");
    }
    cs.set_payment_status(held_old, "paid");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(began.elapsed())).await;
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(reads(), 2, "the next round reads it once");
    app.sync(&engine).await;
    assert_converged(&app, &[recent, held_old]);
}

/// Issue 13 ("no per-order stalls"): a recheck round reads its orders as
/// many at a time as the source takes requests (`max_in_flight`), never
/// more. It read them one by one: 200 held orders at 100 ms were a 20 s
/// poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_round_reads_max_in_flight_orders_at_a_time() {
    let app = spawn_app(AppOptions {
        source_extra: "recheck_every = \"0s\"".into(),
        max_in_flight: 4,
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    // Held and older than the window: only the recheck reads them again.
    let held: Vec<i64> = (0..12)
        .map(|_| {
            cs.add_order(OrderSpec {
                payment_status: "started".into(),
                confirm_date: Some(cs.now_local() - chrono::Duration::hours(5)),
                ..Default::default()
            })
        })
        .collect();
    let recent = cs.add_order(OrderSpec::default());
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    poll_live(&engine, &connector, &stop).await;
    engine.drain(SOURCE, None, 8, &stop).await.unwrap();

    // Every request now takes 100 ms: reads that overlap show as a peak.
    cs.set_faults(Faults {
        latency: Duration::from_millis(100),
        ..Default::default()
    });
    cs.restart_peak_in_flight();
    poll_live(&engine, &connector, &stop).await;
    for id in &held {
        assert_eq!(cs.detail_reads(*id), 2, "held order {id}: read again once");
    }
    assert_eq!(
        cs.peak_in_flight(),
        4,
        "the round reads max_in_flight orders at a time"
    );
    cs.set_faults(Faults::default());
    for id in &held {
        cs.set_payment_status(*id, "paid");
    }
    app.sync(&engine).await;
    let mut all = held.clone();
    all.push(recent);
    assert_converged(&app, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_the_push_is_recorded_and_never_pushed_again() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let id = cs.add_order(OrderSpec {
        lines: vec![LineSpec::new("301_KG", Decimal::from_str("0.530").unwrap())],
        ..Default::default()
    });
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &[id]);
    let erp = &app.sandbox.erp.erp_orders_for(&key(id))[0].body;
    assert_eq!(
        erp["lines"][0]["quantity"], "0.53",
        "decimal quantities survive"
    );

    // The shop edits the order after it went to the ERP (back office).
    cs.set_payment_status(id, "closed_success");
    cs.set_state(id, "confirmed");
    app.sync(&engine).await;
    assert_eq!(
        app.sandbox.erp.erp_orders_for(&key(id)).len(),
        1,
        "not pushed twice"
    );
    let detail = engine.store.order_detail(&key(id)).unwrap().unwrap();
    assert!(
        detail.changed_after_push_at.is_some(),
        "the change is recorded"
    );
    assert!(detail.events.iter().any(|e| e.kind == "changed_after_push"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudsuite_next_link_back_to_its_own_page_stops_the_walk_and_keeps_the_cursor() {
    let app = spawn_app(AppOptions {
        page_size: 20,
        ..AppOptions::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let ids: Vec<i64> = (0..30)
        .map(|_| cs.add_order(OrderSpec::default()))
        .collect();
    cs.set_faults(Faults {
        repeat_page_forever: true,
        ..Faults::default()
    });
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let recorded = || {
        ids.iter()
            .filter(|id| engine.store.order_detail(&key(**id)).unwrap().is_some())
            .count()
    };
    let warnings = capture_warnings();
    let stop = CancellationToken::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        poll_live(&engine, &connector, &stop),
    )
    .await
    .expect("the poll ends on its own");
    let warned = warnings.lines_with(&[SOURCE, "same orders"]);
    assert_eq!(warned.len(), 1, "{}", warnings.text());
    assert_eq!(engine.store.cursor(SOURCE, "live").unwrap(), None);
    assert_eq!(recorded(), 20, "the first page is recorded");

    // CloudSuite heals: the next poll reads the window again.
    cs.set_faults(Faults::default());
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(recorded(), ids.len());
    assert!(engine.store.cursor(SOURCE, "live").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudsuite_order_the_api_cannot_serialize_is_parked_by_field_and_the_others_flow() {
    let app = spawn_app(AppOptions::default()).await;
    let cs = &app.sandbox.cloudsuite;
    let mut ids: Vec<i64> = (0..8).map(|_| cs.add_order(OrderSpec::default())).collect();
    // In the list's summary and in the detail alike.
    let bad = cs.add_order(OrderSpec {
        customer_order_number: Some("ZZ-LATIN1-PO".into()),
        ..OrderSpec::default()
    });
    ids.extend((0..4).map(|_| cs.add_order(OrderSpec::default())));
    cs.set_faults(Faults {
        corrupt: vec![(b"ZZ-LATIN1-PO".to_vec(), b"PO M\xfcller".to_vec())],
        ..Faults::default()
    });
    let engine = app.engine();
    app.sync(&engine).await;
    assert_converged(&app, &ids);
    let status = status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{status}");
    assert_eq!(parked[0]["order_key"], key(bad));
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("customer_order_number: not valid UTF-8"),
        "{reason}"
    );
    // Read again by the list and by the re-check: no news.
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    poll_live(&engine, &connector, &CancellationToken::new()).await;
    assert_eq!(changes_noted(&engine, &key(bad)), 0);
}

/// A server that accepts and then never answers (`headers = false`), or
/// sends headers and half a body and then stalls (`headers = true`).
async fn hanging_server(headers: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            if headers {
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"count\": 1, \"resu")
                    .await;
            }
            held.push(sock); // never answered, never closed
            if held.len() > 200 {
                return;
            }
        }
    });
    url
}

/// Issue 12: a remote that accepts and never answers, or stalls mid-body,
/// costs one request_timeout per call and never slows another source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_remote_costs_its_timeouts_and_never_slows_another_source() {
    let silent = hanging_server(false).await;
    let stalled = hanging_server(true).await;
    let extra = format!(
        r#"
[[sources]]
name = "silent-shop"
kind = "cloudsuite"
base_url = "{silent}"
api_token_file = "cs-secret"
schedule = "*/1 * * * * *"

[[sources]]
name = "stalled-shop"
kind = "cloudsuite"
base_url = "{stalled}"
api_token_file = "cs-secret"
schedule = "*/1 * * * * *"
"#
    );
    let app = spawn_app(AppOptions {
        source_extra: extra,
        daemon_extra: "request_timeout = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    for _ in 0..10 {
        app.sandbox.cloudsuite.add_order(OrderSpec::default());
    }
    let ids = app.pushable_ids();
    let engine = app.engine();
    let stop = tokio_util::sync::CancellationToken::new();
    let hung: Vec<_> = ["silent-shop", "stalled-shop"]
        .into_iter()
        .map(|name| {
            let engine = Arc::clone(&engine);
            let connector = engine.connectors.get(name).unwrap().clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                ordersync::daemon::poll_live(&engine, &connector, &stop).await;
                started.elapsed()
            })
        })
        .collect();
    // The healthy source converges while the other two hang.
    let healthy = std::time::Instant::now();
    app.sync(&engine).await;
    assert_converged(&app, &ids);
    let healthy_took = healthy.elapsed();
    for h in hung {
        let took = h.await.unwrap();
        // A poll reads a page at most 4 times, each bounded by the 2 s
        // request timeout, with short waits between: far below a minute.
        assert!(
            took < Duration::from_secs(30),
            "a hanging poll took {took:?}"
        );
    }
    let status = engine
        .store
        .status(&["silent-shop".to_string(), "stalled-shop".to_string()])
        .unwrap();
    for s in &status.sources {
        let error = s.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("timed out") || error.contains("broke while reading"),
            "{}: {error}",
            s.name
        );
    }
    assert!(
        healthy_took < Duration::from_secs(30),
        "the healthy source was held up: {healthy_took:?}"
    );
}

/// Issue 12.16: an ERP whose error body repeats the bearer token it was sent.
/// The token reaches neither the log nor the parked reason (`status`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_that_echoes_the_token_has_it_redacted_everywhere() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let erp_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let auth = request
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .unwrap_or("")
                    .to_string();
                let body = format!("{{\"error\": \"refused, you sent {auth}\"}}");
                let answer = format!(
                    "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    let opts = AppOptions::default();
    let token = opts.sandbox.erp.token.clone();
    let secret = opts.sandbox.cloudsuite.client_secret.clone();
    let sandbox = ordersync::sandbox::Sandbox::start(opts.sandbox)
        .await
        .unwrap();
    let source = format!(
        "name = \"{SOURCE}\"\nkind = \"cloudsuite\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"ordersync\"\nclient_secret_file = \"cs-secret\"\n",
        sandbox.cloudsuite_url, sandbox.token_url
    );
    let erp = format!("kind = \"http\"\nurl = \"{erp_url}\"\ntoken_file = \"erp-token\"\n");
    let app = app_from_config(
        sandbox,
        "",
        &erp,
        &source,
        &[("cs-secret", secret), ("erp-token", token.clone())],
    );
    let id = app.sandbox.cloudsuite.add_order(OrderSpec::default());
    let engine = app.engine();
    let warnings = capture_warnings();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    ordersync::daemon::poll_live(&engine, &connector, &stop).await;
    engine.drain(SOURCE, None, 8, &stop).await.unwrap();
    let status = status_json(&app).to_string();
    assert!(status.contains(&key(id)), "the order is parked: {status}");
    assert!(status.contains("[redacted]"), "{status}");
    assert!(!status.contains(&token), "token in status: {status}");
    assert!(!warnings.text().contains(&token), "token in the log");
}

/// Issue 13.4: a write-back's first attempt writes without reading first
/// (PATCH, then PUT of the line numbers); an attempt after one that was
/// started and never settled reads first. Two kills are simulated exactly as
/// a SIGKILL leaves the ledger: jobs claimed by a runner that is gone, whose
/// leases run out, once before the write went out and once after it did.
/// Every write-back takes effect once, and the in-doubt attempts write
/// nothing that was already written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_write_back_writes_directly_and_one_after_a_kill_reads_first() {
    use ordersync::sources::WriteBack;
    use ordersync::store::{ClaimFilter, JobKind};

    let app = spawn_app(AppOptions::default()).await;
    app.sandbox
        .cloudsuite
        .seed_orders(40, 31, Duration::from_secs(3600));
    let ids = app.pushable_ids();
    assert!(ids.len() >= 9, "{} pushable", ids.len());
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    poll_live(&engine, &connector, &stop).await;
    // Every push, and nothing else yet: one claim takes them all.
    let asked = ordersync::outbox::lease::LeaseClock::now();
    let jobs = engine
        .store
        .claim(SOURCE, &engine.owner, engine.lease, 256, ClaimFilter::All)
        .unwrap();
    assert_eq!(jobs.len(), ids.len());
    for job in jobs {
        assert_eq!(job.kind, JobKind::Push, "{job:?}");
        assert!(!job.in_doubt, "a first attempt is not in doubt");
        engine.run_job(job, asked).await;
    }
    let third = ids.len() / 3;
    let (direct, rest) = ids.split_at(third);
    let (killed_before, killed_after) = rest.split_at(third);
    let keys = |ids: &[i64]| ids.iter().map(|i| key(*i)).collect::<Vec<_>>();
    let dead = "dead-node/1/x";
    // Runner "dead" claims the write-backs of two groups (attempt started),
    // then dies: for one group before it wrote, for the other after.
    let before_keys = keys(killed_before);
    let claimed = engine
        .store
        .claim(
            SOURCE,
            dead,
            Duration::from_millis(1),
            64,
            ClaimFilter::Orders(&before_keys),
        )
        .unwrap();
    assert_eq!(claimed.len(), killed_before.len());
    let after_keys = keys(killed_after);
    let claimed = engine
        .store
        .claim(
            SOURCE,
            dead,
            Duration::from_millis(1),
            64,
            ClaimFilter::Orders(&after_keys),
        )
        .unwrap();
    assert_eq!(claimed.len(), killed_after.len());
    for job in claimed {
        assert_eq!(job.kind, JobKind::WriteAccepted);
        assert!(!job.in_doubt);
        let order = engine.store.order_for_job(&job.order_key).unwrap().unwrap();
        let wb = WriteBack {
            order_key: job.order_key.clone(),
            external_id: order.external_id.clone(),
            erp_order_number: order.erp_order_number.clone().unwrap(),
            lines: order.lines.clone(),
            shipped_before: Vec::new(),
            in_doubt: job.in_doubt,
            progress: Default::default(),
            step: Default::default(),
        };
        connector.write_accepted(&wb).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cs = &app.sandbox.cloudsuite;
    let reads_before: Vec<u64> = ids.iter().map(|i| cs.detail_reads(*i)).collect();
    engine.drain(SOURCE, None, 8, &stop).await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        let reads = cs.detail_reads(*id) - reads_before[n];
        let writes = cs.write_requests(*id);
        let order = cs.order(*id).unwrap();
        assert_eq!(order["state"], "processing", "{id}");
        assert!(order["erp_order_number"].is_string(), "{id}");
        let history = cs.history(*id);
        for field in ["state", "erp_order_number"] {
            assert_eq!(
                history.iter().filter(|c| c.field == field).count(),
                1,
                "{id}: {field} written once: {history:?}"
            );
        }
        if direct.contains(id) {
            assert_eq!(reads, 0, "{id}: a first attempt reads nothing");
            assert_eq!(writes, 2, "{id}: PATCH + PUT");
        } else {
            assert!(reads >= 1, "{id}: an attempt in doubt reads first");
            assert_eq!(writes, 2, "{id}: nothing written twice");
        }
    }
    // And the rest of the way: everything exactly once.
    app.sync(&engine).await;
    assert_converged(&app, &ids);
}

/// Issue 14 (a frozen node): a process that stalls after its claim, past
/// the job's lease, sends nothing for that job when it runs on, though the
/// ledger still shows the lease as its own (nobody else claimed it yet):
/// neither the push nor the write-back. Both go out later, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_ran_out_while_the_process_stalled_sends_nothing() {
    use ordersync::outbox::lease::LeaseClock;
    use ordersync::store::{ClaimFilter, JobKind};

    let app = spawn_app(AppOptions::default()).await;
    app.sandbox
        .cloudsuite
        .seed_orders(12, 41, Duration::from_secs(3600));
    let ids = app.pushable_ids();
    assert!(!ids.is_empty());
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    poll_live(&engine, &connector, &stop).await;
    // Claimed a whole lease ago by this process's clocks: the stall.
    let stalled = |asked: (std::time::Instant, std::time::SystemTime)| {
        (asked.0 - engine.lease, asked.1 - engine.lease)
    };
    let asked = stalled(LeaseClock::now());
    let jobs = engine
        .store
        .claim(SOURCE, &engine.owner, engine.lease, 256, ClaimFilter::All)
        .unwrap();
    assert_eq!(jobs.len(), ids.len());
    for job in jobs {
        assert_eq!(job.kind, JobKind::Push);
        engine.run_job(job, asked).await;
    }
    assert!(
        app.sandbox.erp.orders().is_empty(),
        "a push went out after its lease ran out"
    );
    // The pushes again, with their lease; then the write-backs, stalled.
    engine.store.pull_forward(SOURCE, true).unwrap();
    let asked = LeaseClock::now();
    let jobs = engine
        .store
        .claim(SOURCE, &engine.owner, engine.lease, 256, ClaimFilter::All)
        .unwrap();
    assert_eq!(jobs.len(), ids.len());
    for job in jobs {
        assert_eq!(job.kind, JobKind::Push);
        engine.run_job(job, asked).await;
    }
    assert_eq!(app.sandbox.erp.orders().len(), ids.len());
    let asked = stalled(LeaseClock::now());
    let jobs = engine
        .store
        .claim(SOURCE, &engine.owner, engine.lease, 256, ClaimFilter::All)
        .unwrap();
    assert_eq!(jobs.len(), ids.len());
    for job in jobs {
        assert_eq!(job.kind, JobKind::WriteAccepted);
        engine.run_job(job, asked).await;
    }
    let cs = &app.sandbox.cloudsuite;
    for id in &ids {
        assert_eq!(
            cs.write_requests(*id),
            0,
            "{id}: written after the lease ran out"
        );
    }
    app.sync(&engine).await;
    assert_converged(&app, &ids);
}

/// Issue 15.2: CloudSuite's `shipment_state` is per order. An order shipped
/// in two parts is marked sent only when its last line ships, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shipment_marks_the_order_sent_only_with_its_last_line() {
    let mut opts = AppOptions::default();
    opts.sandbox.erp.ship_after = None; // the test ships by hand
    let app = spawn_app(opts).await;
    let cs = &app.sandbox.cloudsuite;
    let id = cs.add_order(OrderSpec {
        lines: vec![
            LineSpec::new("124_STUK", Decimal::from(2)),
            LineSpec::new("301_KG", Decimal::from_str("0.530").unwrap()),
        ],
        ..Default::default()
    });
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    let round = || async {
        poll_live(&engine, &connector, &stop).await;
        engine.drain(SOURCE, None, 4, &stop).await.unwrap();
        ordersync::daemon::poll_shipments(&engine, &stop)
            .await
            .unwrap();
        engine.drain(SOURCE, None, 4, &stop).await.unwrap();
    };
    round().await;
    assert_eq!(cs.order(id).unwrap()["state"], "processing");
    let first_line = cs.order(id).unwrap()["order_lines"][0]["id"].to_string();
    assert!(app.sandbox.erp.ship_part(&key(id), &[first_line.as_str()]));
    round().await;
    let order = cs.order(id).unwrap();
    assert_ne!(order["shipment_state"], "sent", "one of two lines shipped");
    let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
    assert!(status.parked.is_empty(), "{:?}", status.parked);
    assert!(app.sandbox.erp.ship_now(&key(id)), "the rest ships");
    round().await;
    round().await;
    let order = cs.order(id).unwrap();
    assert_eq!(order["shipment_state"], "sent");
    let history = cs.history(id);
    assert_eq!(
        history
            .iter()
            .filter(|c| c.field == "shipment_state")
            .count(),
        1,
        "{history:?}"
    );
    assert_eq!(app.sandbox.erp.shipments().len(), 2);
}

/// Issue 13: a live poll reads the whole lookback window at most once per
/// `lookback_every`; the polls in between list from the cursor on, so a
/// schedule of seconds does not list every known order of the window again
/// on each poll. An order that shows up late (its `confirm_date` before
/// the cursor) is still found: by the next whole read, and by the first
/// poll of a restarted daemon, which knows of no whole read. Each reaches
/// the ERP once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_between_whole_reads_list_from_the_cursor_and_a_late_order_is_still_found() {
    let app = spawn_app(AppOptions {
        page_size: 5,
        source_extra: "lookback_every = \"3s\"".into(),
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let mut ids: Vec<i64> = (0..20)
        .map(|_| cs.add_order(OrderSpec::default()))
        .collect();
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    let recorded = |engine: &ordersync::outbox::Engine, id: i64| {
        engine.store.order_detail(&key(id)).unwrap().is_some()
    };

    // The first poll reads the whole window: 20 orders, 5 a page.
    let began = std::time::Instant::now();
    let before = cs.request_count();
    poll_live(&engine, &connector, &stop).await;
    // The whole read counts from when the poll began: after `began`, and
    // before now.
    let first_done = std::time::Instant::now();
    let whole = cs.request_count() - before;
    assert!(ids.iter().all(|id| recorded(&engine, *id)));
    assert!(engine.store.cursor(SOURCE, "live").unwrap().is_some());
    assert!(whole >= 24, "4 pages and 20 details: {whole} requests");

    // The orders are still confirmed (nothing pushed yet) and inside the
    // window, but the next poll lists only from the cursor on: one page.
    let late = |minutes: i64| {
        cs.add_order(OrderSpec {
            confirm_date: Some(cs.now_local() - chrono::Duration::minutes(minutes)),
            ..Default::default()
        })
    };
    let late_a = late(5);
    let before = cs.request_count();
    poll_live(&engine, &connector, &stop).await;
    let narrow = cs.request_count() - before;
    if began.elapsed() < Duration::from_secs(3) {
        assert_eq!(narrow, 1, "one list page from the cursor on");
        assert!(
            !recorded(&engine, late_a),
            "a late order waits for a whole read"
        );
    }

    // A restarted daemon knows of no whole read: its first poll reads the
    // whole window and finds the late order.
    let restarted = app.engine();
    let connector2 = restarted.connectors.get(SOURCE).unwrap().clone();
    poll_live(&restarted, &connector2, &stop).await;
    assert!(
        recorded(&restarted, late_a),
        "found by the first poll after a restart"
    );

    // The first engine reads the whole window again once lookback_every
    // has passed since its last whole read began.
    let late_b = late(7);
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(first_done.elapsed())).await;
    poll_live(&engine, &connector, &stop).await;
    assert!(recorded(&engine, late_b), "found by the next whole read");

    ids.extend([late_a, late_b]);
    app.sync(&engine).await;
    assert_converged(&app, &ids);
}

/// CloudSuite's confirmed list shrinks while a walk reads it by offset (here
/// the shop moves orders on mid-walk, as our own write-backs do), so later
/// pages shift: the walk steers its offsets so that it still reads every
/// order still confirmed, in this one walk, and so may move its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_shrank_under_its_walk_is_read_whole_in_one_walk() {
    let app = spawn_app(AppOptions {
        page_size: 5,
        max_in_flight: 2,
        ..Default::default()
    })
    .await;
    let cs = &app.sandbox.cloudsuite;
    let ids: Vec<i64> = (0..30).map(|_| cs.add_confirmed_order()).collect();
    cs.set_faults(Faults {
        latency: Duration::from_millis(30),
        ..Default::default()
    });
    let engine = app.engine();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let stop = CancellationToken::new();
    // As soon as the walk has read a few details (its first page), the
    // shop moves those orders on: every later page shifts.
    let moved = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let read: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| cs.detail_reads(*id) > 0)
                .collect();
            if read.len() >= 3 {
                for id in &read {
                    assert!(cs.set_state(*id, "processing"));
                }
                return read;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the walk read no detail"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let ((), moved) = tokio::join!(poll_live(&engine, &connector, &stop), moved);
    let cursor = engine.store.cursor(SOURCE, "live").unwrap();
    assert!(
        cursor.is_some(),
        "the walk saw every order: the cursor moves"
    );
    for id in ids.iter().filter(|id| !moved.contains(id)) {
        assert!(
            engine.store.order_detail(&key(*id)).unwrap().is_some(),
            "order {id}, still confirmed, is recorded"
        );
    }
}
