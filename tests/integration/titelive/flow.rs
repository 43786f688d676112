//! Orders flowing: 200+ orders, tokens replaced mid-run, HTTP 200 failures,
//! collapsed one-item lists, backfill.

use super::*;

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

/// Titelive documents its answers by the envelope, not by HTTP status: with
/// every answer 200, and with failure envelopes sent as 401/404/400/500.
/// And the login both ways: a shop that reads it as a form, and one that
/// reads only the documented query string (the form gets code 9 once; every
/// login after that goes as the query string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_replaced_mid_run() {
    for error_statuses in [false, true] {
        for login_query_only in [false, true] {
            tokens_are_replaced_mid_run(error_statuses, login_query_only).await;
        }
    }
}

async fn tokens_are_replaced_mid_run(error_statuses: bool, login_query_only: bool) {
    let mut opts = TlOptions::default();
    opts.sandbox.titelive.error_statuses = error_statuses;
    opts.sandbox.titelive.login_query_only = login_query_only;
    let app = spawn_titelive(opts).await;
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
        tl.login_requests(),
        3 + u64::from(login_query_only),
        "one form login refused, then the query string only"
    );
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

/// Issue 15.4: a sale the ERP cancels becomes status 99 at Titelive, once;
/// the re-read that then sees 99 is not taken for a new cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_cancelled_in_the_erp_is_set_to_status_99_once() {
    let mut opts = TlOptions::default();
    opts.sandbox.erp.ship_after = None;
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    let ids: Vec<i64> = (0..2).map(|_| tl.add_order(OrderSpec::default())).collect();
    let engine = app.engine();
    crate::cancel::rounds(&engine, TL, 2).await;
    assert_eq!(tl.status(ids[0]), Some(7));
    assert!(app.sandbox.erp.cancel_by_hand(&tl_key(ids[0]), "no stock"));
    crate::cancel::rounds(&engine, TL, 3).await;
    assert_eq!(tl.status(ids[0]), Some(99));
    assert_eq!(tl.status_posts(ids[0]), 2, "processing, then cancelled");
    assert_eq!(
        crate::cancel::state(&engine, &tl_key(ids[0])),
        "cancelled_in_erp"
    );
    assert_eq!(app.sandbox.erp.cancel_requests(&tl_key(ids[0])), 0);
    assert_eq!(tl.status(ids[1]), Some(7));
}

/// A write-back reads the order's status first: after the push, Titelive
/// starts serving the order's delivery city with a Latin-1 byte, and a
/// cancel from the ERP still sets status 99 (before, the read failed on
/// every attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_titelive_cannot_serialize_does_not_stop_a_cancel_from_the_erp() {
    let mut opts = TlOptions::default();
    opts.sandbox.erp.ship_after = None;
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    let id = tl.add_order(OrderSpec::default());
    tl.set_delivery_city(id, "ZZ-LATIN1-CITY");
    let engine = app.engine();
    crate::cancel::rounds(&engine, TL, 2).await;
    assert_eq!(tl.status(id), Some(7));
    tl.set_faults(ordersync::sandbox::Faults {
        corrupt: vec![(b"ZZ-LATIN1-CITY".to_vec(), b"Li\xe8ge".to_vec())],
        ..Default::default()
    });
    assert!(app.sandbox.erp.cancel_by_hand(&tl_key(id), "no stock"));
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        crate::cancel::rounds(&engine, TL, 3),
    )
    .await;
    assert!(done.is_ok(), "the cancel's write-back kept failing");
    assert_eq!(tl.status(id), Some(99));
    assert_eq!(
        crate::cancel::state(&engine, &tl_key(id)),
        "cancelled_in_erp"
    );
}

/// A recheck round can be long (up to 200 reads a poll, behind the
/// source's rate limit, each as slow as the source is): its poll notes
/// every 5 s that it is still under way, even while no read ends, so health
/// does not take a long round for a stopped source. Seen on the demo: a
/// Titelive poll's round took over a minute at 20 requests/s shared with
/// the write-backs, and the source showed as not polling (the watchdog
/// would have restarted the daemon).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recheck_round_keeps_its_poll_noted_as_under_way() {
    let opts = TlOptions {
        source_extra: "recheck_every = \"0s\"\n".into(),
        ..TlOptions::default()
    };
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    tl.seed_orders(30, 5, Duration::from_secs(3600));
    let engine = app.engine();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    engine.drain(TL, None, 8, &stop).await.unwrap();
    let accepted = engine.store.status(&[TL.to_string()]).unwrap().orders["accepted"];
    assert!(accepted >= 20, "{accepted} accepted orders to read again");

    // Each request now takes 3 s: the round (8 reads at a time, 20 or
    // more of them) takes over 10 s, with gaps of 3 s where no read ends.
    tl.set_faults(ordersync::sandbox::Faults {
        latency: Duration::from_secs(3),
        ..Default::default()
    });
    let poll = {
        let (engine, connector, stop) = (engine.clone(), connector.clone(), stop.clone());
        tokio::spawn(async move { poll_live(&engine, &connector, &stop).await })
    };
    let started = Instant::now();
    let mut oldest_note = 0;
    while !poll.is_finished() {
        let row = engine
            .store
            .source_rows(&[TL.to_string()])
            .unwrap()
            .remove(0);
        let age = ordersync::store::now_ms() - row.last_poll_ms.unwrap();
        oldest_note = oldest_note.max(age);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    poll.await.unwrap();
    assert!(
        took > Duration::from_secs(10),
        "the round must span two notes to prove anything: {took:?}"
    );
    assert!(
        oldest_note < 7_000,
        "the poll went {oldest_note} ms without a note in a {took:?} poll"
    );
    let row = engine
        .store
        .source_rows(&[TL.to_string()])
        .unwrap()
        .remove(0);
    assert!(row.last_error.is_none(), "{:?}", row.last_error);
}

/// A quantity the shop cancels inside a package after the push is not in
/// the canonical order (the line and the totals keep the ordered quantity,
/// as the seed's sample shows) and the ERP contract has no partial cancel:
/// it is recorded as a change after the push, naming the line, the
/// quantity and the package, for an operator; nothing new reaches the ERP,
/// and reading the order again records nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantity_cancelled_in_a_package_after_the_push_is_recorded_for_an_operator() {
    let mut opts = TlOptions::default();
    opts.sandbox.erp.ship_after = None;
    opts.source_extra = "recheck_every = \"0s\"".into();
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    let id = tl.add_order(OrderSpec::default());
    let engine = app.engine();
    crate::cancel::rounds(&engine, TL, 2).await;
    assert_eq!(tl.status(id), Some(7), "pushed and accepted");
    let order = tl.orders().into_iter().find(|o| o["id"] == id).unwrap();
    let first = &order["lines"]["line"];
    let line = first[0]["id"]
        .as_i64()
        .or_else(|| first["id"].as_i64())
        .unwrap();
    assert!(tl.add_package(id, "3SPACKAGE01"));
    crate::cancel::rounds(&engine, TL, 2).await;
    let changes = |engine: &Arc<Engine>| {
        let d = engine.store.order_detail(&tl_key(id)).unwrap().unwrap();
        d.events
            .into_iter()
            .filter(|e| e.kind == "changed_after_push")
            .map(|e| e.detail.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert!(changes(&engine).is_empty(), "a package alone is no change");
    assert!(tl.cancel_in_package(id, line, 1));
    crate::cancel::rounds(&engine, TL, 2).await;
    let recorded = changes(&engine);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0].contains(&format!("line {line}: 1 cancelled at Titelive in package"))
            && recorded[0].contains("adjust the ERP's sale by hand"),
        "{recorded:?}"
    );
    crate::cancel::rounds(&engine, TL, 2).await;
    assert_eq!(changes(&engine).len(), 1, "recorded once");
    let d = engine.store.order_detail(&tl_key(id)).unwrap().unwrap();
    assert_eq!(
        d.source_version.as_deref(),
        Some("status 7; packages 1; cancelled 1; returned 0"),
        "what orders show prints as `at source`"
    );
    assert_eq!(app.sandbox.erp.post_requests(&tl_key(id)), 1);
    assert_eq!(app.sandbox.erp.erp_orders_for(&tl_key(id)).len(), 1);
}
