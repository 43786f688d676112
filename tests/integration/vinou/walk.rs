//! The newest-first walk: shifting pages, a walk cut short, a JWT that
//! expires mid-walk, and the re-check of held orders.

use super::*;

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
        // Every poll begins a recheck round.
        source_extra: "lookback = \"1s\"\nrecheck_every = \"0s\"",
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

/// Issue 13: between two whole reads of the lookback window, a poll walks
/// only down to the cursor, not `lookback` below it; an order that shows
/// up late (its `crstamp` below the cursor) is found by the next whole
/// read, which a restarted daemon's first poll always is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_between_whole_reads_stop_at_the_cursor_and_a_restart_reads_the_window_whole() {
    let app = spawn_vinou(Setup {
        page_size: 5,
        source_extra: "lookback_every = \"10m\"",
        ..Default::default()
    })
    .await;
    let vinou = &app.sandbox.vinou;
    // 40 orders of the last ten minutes: all inside the 15-minute window.
    vinou.seed_orders(40, 5, Duration::from_secs(600));
    let engine = app.engine();
    let lists = vinou.list_requests();
    poll(&engine).await;
    let whole = vinou.list_requests() - lists;
    assert!(whole >= 8, "the whole window is 8 pages: {whole} read");

    let late = vinou.add_order(
        "payed",
        Some(vinou.now_local() - chrono::Duration::minutes(5)),
    );
    let lists = vinou.list_requests();
    poll(&engine).await;
    assert_eq!(
        vinou.list_requests() - lists,
        1,
        "a poll between whole reads stops at the cursor, on page 1"
    );
    assert!(
        engine.store.order_detail(&key(late)).unwrap().is_none(),
        "the late order waits for a whole read"
    );

    let restarted = app.engine();
    poll(&restarted).await;
    assert!(
        restarted.store.order_detail(&key(late)).unwrap().is_some(),
        "the first poll after a restart reads the whole window"
    );
    sync(&app, &restarted).await;
    assert_converged(&app, &pushable(&app), true);
}
