//! Orders through the engine: once, to the cent, echoes ignored, real
//! changes recorded, the ORDER-HAS-CHANGED race, `start`, backfill.

use super::*;

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
            lookback: std::time::Duration::ZERO,
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

/// Issue 13: every write-back bumps the order's marker, so the till's feed
/// keeps handing back the echoes of our own writes. A live poll that reaches
/// the head of the feed with a short batch (fewer than `syncMarkerLimit`)
/// of nothing but those echoes stops there, instead of asking again until a
/// batch comes back empty; the next poll reads on from the stored cursor. A
/// short batch with anything new goes on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_stops_at_a_short_batch_of_our_own_echoes() {
    let mut o = options();
    o.erp.ship_after = None; // no deliveries: the reference write's echo only
    let app = spawn_mplus(o, "", 5).await;
    let till = &app.sandbox.mplus;
    let ids = till.seed_orders(12);
    let engine = app.engine();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    let stop = CancellationToken::new();
    let calls = || till.get_orders_calls();

    // New orders: batches of 5, 5 and 2, then an empty one.
    let before = calls();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(calls() - before, 4, "{:?}", till.requested_markers());
    engine.drain(TILL, None, 8, &stop).await.unwrap();
    for id in &ids {
        assert_eq!(till.updates(id), 1, "{id}: reference written once");
    }

    // Their twelve echoes: 5, 5, and a short batch of 2 that ends the walk.
    let before = calls();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(calls() - before, 3, "{:?}", till.requested_markers());
    assert_eq!(
        engine.store.cursor(TILL, "live").unwrap(),
        Some(till.current_marker().to_string()),
        "the cursor is at the head"
    );
    let before = calls();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(calls() - before, 1, "nothing new: one empty batch");

    // A short batch with a new order in it: the walk goes on to an empty one.
    let new = till.seed_orders(1);
    let before = calls();
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(calls() - before, 2);
    assert_eq!(app.state(&new[0]), "queued");
    app.sync_until(&engine, &new, false).await;
    let mut all = ids.clone();
    all.extend(new);
    let store = ordersync::store::Store::open_read_only(&app.db_path()).unwrap();
    for id in &all {
        let d = store.order_detail(&key(id)).unwrap().unwrap();
        assert!(
            d.changed_after_push_at.is_none(),
            "{id}: an echo was taken for a change"
        );
        assert_eq!(app.sandbox.erp.erp_orders_for(&key(id)).len(), 1, "{id}");
    }
}
