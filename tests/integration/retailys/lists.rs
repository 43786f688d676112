//! Order lists the documents do not promise (issue 12.9, 12.12): a
//! paginator that repeats its first page forever, and orders the shop's API
//! could not serialize (`1e400`, a Latin-1 byte, a lone surrogate). The walk
//! stops on its own with the cursor kept; one bad order is parked with the
//! field named while the others reach the ERP.

use std::sync::Arc;
use std::time::Duration;

use ordersync::daemon::poll_live;
use ordersync::outbox::Engine;
use ordersync::sandbox::Faults;
use ordersync::sandbox::RetailysOrderSpec;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{RT, RtOptions, rkey, spawn_retailys, sync_until_sent};
use crate::common::*;

fn new_orders(app: &App, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| app.sandbox.retailys.add_order(RetailysOrderSpec::default()))
        .collect()
}

/// One live poll, which must end by itself.
async fn poll_once(engine: &Arc<Engine>) {
    let connector = engine.connectors.get(RT).unwrap().clone();
    let stop = CancellationToken::new();
    let poll = poll_live(engine, &connector, &stop);
    tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the poll ends on its own");
}

fn recorded(engine: &Arc<Engine>, ids: &[i64]) -> usize {
    ids.iter()
        .filter(|id| engine.store.order_detail(&rkey(**id)).unwrap().is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retailys_paginator_repeating_its_first_page_stops_the_walk_and_keeps_the_cursor() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    // Two pages of 50.
    let ids = new_orders(&app, 70);
    let engine = app.engine();
    rt.set_faults(Faults {
        repeat_page_forever: true,
        ..rt.faults()
    });
    let warnings = capture_warnings();
    let before = rt.request_count();
    poll_once(&engine).await;
    // Statuses, two list pages, and the first poll's re-check of the 50
    // orders it just recorded.
    let requests = rt.request_count() - before;
    assert!(requests < 60, "the walk went on for {requests} requests");
    let warned = warnings.lines_with(&[RT, "page 2", "same orders"]);
    assert_eq!(warned.len(), 1, "{}", warnings.text());
    assert_eq!(
        engine.store.cursor(RT, "live").unwrap(),
        None,
        "the cursor did not move"
    );
    assert_eq!(recorded(&engine, &ids), 50, "page 1 is recorded");

    // The shop heals: the next poll reads the window again; nothing is lost.
    rt.set_faults(Faults {
        repeat_page_forever: false,
        ..rt.faults()
    });
    poll_once(&engine).await;
    assert_eq!(recorded(&engine, &ids), ids.len());
    assert!(engine.store.cursor(RT, "live").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retailys_orders_the_api_cannot_serialize_are_parked_by_field_and_the_others_flow() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let ids = new_orders(&app, 12);
    let (price, name, line) = (ids[2], ids[5], ids[9]);
    // Plant markers, then let the API's serializer spoil exactly them.
    rt.edit_order(price, |o| {
        o["items"][0]["price"]["final_price"] = json!(1234.5678)
    });
    rt.edit_order(name, |o| o["name"] = json!("ZZ-LATIN1-NAME"));
    rt.edit_order(line, |o| o["items"][0]["id"] = json!("ZZ-SURROGATE-LINE"));
    rt.set_faults(Faults {
        corrupt: vec![
            (b"1234.5678".to_vec(), b"1e400".to_vec()),
            (b"ZZ-LATIN1-NAME".to_vec(), b"M\xfcller".to_vec()),
            (b"ZZ-SURROGATE-LINE".to_vec(), br"L\ud800".to_vec()),
        ],
        ..rt.faults()
    });
    let good: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| ![price, name, line].contains(id))
        .collect();
    let engine = app.engine();
    sync_until_sent(&app, &engine, &good).await;

    for id in &good {
        assert_eq!(app.sandbox.erp.erp_orders_for(&rkey(*id)).len(), 1);
    }
    let status = status_json(&app);
    let reason = |id: i64| {
        status["parked"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["order_key"] == rkey(id))
            .and_then(|p| p["reason"].as_str())
            .unwrap_or_else(|| panic!("{} is not parked: {status}", rkey(id)))
            .to_string()
    };
    let r = reason(price);
    assert!(
        r.contains("items[0].price.final_price: number out of range"),
        "{r}"
    );
    let r = reason(name);
    assert!(r.contains("name: not valid UTF-8"), "{r}");
    let r = reason(line);
    assert!(r.contains("items[0].id: "), "{r}");
    for bad in [price, name, line] {
        assert!(app.sandbox.erp.erp_orders_for(&rkey(bad)).is_empty());
    }
    assert!(
        engine.store.cursor(RT, "live").unwrap().is_some(),
        "every order was keyed: the cursor moves"
    );
    // Read again by the list and by the re-check (a round every poll with
    // `recheck_every = "0s"`): no news.
    for _ in 0..2 {
        poll_once(&engine).await;
    }
    for bad in [price, name, line] {
        assert_eq!(changes_noted(&engine, &rkey(bad)), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retailys_order_whose_id_cannot_be_read_keeps_the_cursor_and_the_others_flow() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let ids = new_orders(&app, 5);
    rt.edit_order(ids[1], |o| o["id"] = json!("ZZ-SURROGATE-ID"));
    rt.set_faults(Faults {
        corrupt: vec![(b"\"ZZ-SURROGATE-ID\"".to_vec(), br#""\ud800""#.to_vec())],
        ..rt.faults()
    });
    let engine = app.engine();
    let warnings = capture_warnings();
    poll_once(&engine).await;
    let others: Vec<i64> = ids.iter().copied().filter(|id| *id != ids[1]).collect();
    assert_eq!(recorded(&engine, &others), others.len());
    let warned = warnings.lines_with(&[RT, "without a readable id", "items=1"]);
    assert_eq!(warned.len(), 1, "{}", warnings.text());
    assert_eq!(
        engine.store.cursor(RT, "live").unwrap(),
        None,
        "the cursor stays before the order it could not record"
    );
    let status = engine.store.status(&[RT.to_string()]).unwrap();
    assert_eq!(status.orders.get("queued").copied(), Some(4));
}

/// A round reads 200 orders a poll, so one round spans polls: the orders
/// the walk read before it began must stay left out in the polls that go on
/// with it. They were forgotten at the first of them (the walks' reads were
/// dropped at every poll), so with 260 held orders the second poll read 60
/// of them one by one, each read by the first walk a second earlier, and a
/// shop behind a rate limit spent the requests the write-backs needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_over_several_polls_does_not_read_what_the_walk_read_before_it() {
    let mut o = RtOptions::default();
    o.source_keys.push_str("\nrecheck_every = \"10m\"");
    let app = spawn_retailys(o).await;
    let rt = &app.sandbox.retailys;
    // Held (awaiting payment) and older than the lookback: the first walk
    // (no cursor) lists them, the next ones do not.
    let held: Vec<i64> = (0..260)
        .map(|_| {
            rt.add_order(RetailysOrderSpec {
                status: "Awaiting payment".into(),
                date_order: Some(chrono::Utc::now() - chrono::Duration::hours(5)),
                ..Default::default()
            })
        })
        .collect();
    let engine = app.engine();
    let reads = || -> u64 { held.iter().map(|id| rt.detail_reads(*id)).sum() };
    poll_once(&engine).await;
    let status = engine.store.status(&[RT.to_string()]).unwrap();
    assert_eq!(
        status.orders.get("held").copied(),
        Some(260),
        "{:?}",
        status.orders
    );
    assert_eq!(reads(), 0, "the first round (200) read what the walk read");
    poll_once(&engine).await;
    assert_eq!(
        reads(),
        0,
        "the round went on with the other 60, read by the walk a poll ago"
    );
}

/// Issue 13: a recheck round does not read one by one the orders a walk has
/// read since the last round (the list with `expanded=true` carries the
/// whole order). The first poll's round reads none of the orders its walk
/// just listed; the next poll's round (`recheck_every = "0s"`) does not read
/// again the orders the walks keep listing (inside the lookback) either,
/// while a held order no list shows any more (done at the shop, so the
/// sweep of open orders leaves it out too) is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_round_does_not_read_again_what_the_walks_listed() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let recent = new_orders(&app, 60);
    let old_held = rt.add_order(RetailysOrderSpec {
        status: "Awaiting payment".into(),
        date_order: Some(chrono::Utc::now() - chrono::Duration::hours(5)),
        ..Default::default()
    });
    let engine = app.engine();
    let stop = CancellationToken::new();
    let reads = |ids: &[i64]| -> u64 { ids.iter().map(|id| rt.detail_reads(*id)).sum() };

    // Poll 1: the walk lists everything (no cursor yet); its round reads
    // nothing again.
    poll_once(&engine).await;
    assert_eq!(recorded(&engine, &recent), recent.len());
    assert_eq!(
        reads(&recent) + reads(&[old_held]),
        0,
        "orders read one by one"
    );
    // The write-backs (which read each order before writing), then poll 2
    // with the next round. The recent orders are listed again (lookback 15
    // minutes), the old held one is not: it is older than the window, and
    // done at the shop now.
    assert!(rt.edit_order(old_held, |o| o["done"] = json!(true)));
    engine.drain(RT, None, 8, &stop).await.unwrap();
    let status = engine.store.status(&[RT.to_string()]).unwrap();
    assert!(
        status.orders.get("accepted").copied().unwrap_or(0) > 0,
        "orders not yet final are in the round: {:?}",
        status.orders
    );
    let before = reads(&recent);
    poll_once(&engine).await;
    assert_eq!(reads(&recent) - before, 0, "listed since the last round");
    assert_eq!(rt.detail_reads(old_held), 1, "held, no longer listed: read");
}

/// Retailys' `from` filters on the order's date, and there is no "changed
/// since" filter: an open order dated before the window (entered late, or
/// backdated) was never listed by a live walk, so it never reached the ERP.
/// A live walk now ends with a sweep of the open orders
/// (`done=false&canceled=false`, as the API notes recommend), at most once
/// per `recheck_every`; the order is pushed once, and the sweep moves no
/// cursor. Orders done or cancelled at the shop are not swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_order_dated_before_the_window_is_found_by_the_sweep() {
    let app = spawn_retailys(RtOptions::default()).await;
    let rt = &app.sandbox.retailys;
    let recent = new_orders(&app, 3);
    let engine = app.engine();
    // Poll 1 has no cursor: it reads every order, and sweeps nothing.
    poll_once(&engine).await;
    assert_eq!(recorded(&engine, &recent), recent.len());
    let cursor = engine.store.cursor(RT, "live").unwrap();
    assert!(cursor.is_some());

    // Entered at the shop now, dated three days ago: outside the window.
    let three_days_ago = chrono::Utc::now() - chrono::Duration::days(3);
    let old = |app: &App| {
        app.sandbox.retailys.add_order(RetailysOrderSpec {
            date_order: Some(three_days_ago),
            ..Default::default()
        })
    };
    let late = old(&app);
    let done_late = old(&app);
    assert!(rt.edit_order(done_late, |o| o["done"] = json!(true)));
    let cancelled_late = old(&app);
    assert!(rt.edit_order(cancelled_late, |o| o["canceled"] = json!(true)));
    poll_once(&engine).await;
    assert_eq!(recorded(&engine, &[late]), 1, "the sweep records it");
    assert_eq!(
        recorded(&engine, &[done_late, cancelled_late]),
        0,
        "finished orders are not swept"
    );
    assert_eq!(
        engine.store.cursor(RT, "live").unwrap(),
        cursor,
        "the sweep moves no cursor"
    );
    let mut all = recent.clone();
    all.push(late);
    sync_until_sent(&app, &engine, &all).await;
    let erp = &app.sandbox.erp;
    for id in &all {
        assert_eq!(erp.erp_orders_for(&rkey(*id)).len(), 1, "order {id}");
    }
    assert_eq!(erp.orders().len(), all.len(), "nothing else pushed");
}
