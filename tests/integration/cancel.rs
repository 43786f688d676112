//! Cancellations after the push, both ways, against the simulators: a
//! cancel at the source cancels the ERP order once (or, when the ERP
//! refuses, flags the order: status, /metrics, an ERROR line); a sale the
//! ERP cancels is written back to the source once. SIGKILLs in the middle
//! lose no cancellation and apply none twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::daemon::{poll_cancellations, poll_live, poll_shipments};
use ordersync::outbox::Engine;
use ordersync::sandbox::CloudSuiteOrderSpec as OrderSpec;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use crate::binary::run_daemon_until;
use crate::common::*;
use crate::crash::kill_at_random_moments;
use crate::mplus::{TILL, key as till_key, options as till_options, spawn_mplus};

/// A few rounds of everything the daemon does on its schedules: polls,
/// jobs, the ERP's shipments and cancellations.
pub(crate) async fn rounds(engine: &Arc<Engine>, source: &str, n: usize) {
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(source).unwrap().clone();
    for _ in 0..n {
        poll_live(engine, &connector, &stop).await;
        engine.drain(source, None, 8, &stop).await.unwrap();
        poll_shipments(engine, &stop).await.unwrap();
        poll_cancellations(engine, &stop).await.unwrap();
        engine.drain(source, None, 8, &stop).await.unwrap();
    }
}

pub(crate) fn state(engine: &Engine, order_key: &str) -> String {
    engine
        .store
        .order_detail(order_key)
        .unwrap()
        .unwrap()
        .row
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_at_the_till_after_the_push_cancels_the_erp_order_once() {
    let mut o = till_options();
    o.erp.ship_after = None;
    let app = spawn_mplus(o, "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(3);
    let engine = app.engine();
    rounds(&engine, TILL, 2).await;
    for id in &ids {
        assert_eq!(state(&engine, &till_key(id)), "accepted", "{id}");
    }
    assert!(app.sandbox.mplus.cancel(&ids[0]));
    rounds(&engine, TILL, 3).await;
    let k = till_key(&ids[0]);
    assert_eq!(state(&engine, &k), "cancelled_in_erp");
    assert!(app.sandbox.erp.is_cancelled(&k));
    assert_eq!(app.sandbox.erp.cancel_requests(&k), 1, "asked once");
    // The ERP's feed reports our own cancel: nothing goes back to the till,
    // which cancelled it itself; the others are untouched.
    assert_eq!(app.sandbox.erp.cancellations().len(), 1);
    assert_eq!(app.sandbox.mplus.cancel_requests(), 0);
    for id in &ids[1..] {
        assert!(!app.sandbox.erp.is_cancelled(&till_key(id)));
        assert_eq!(state(&engine, &till_key(id)), "accepted");
    }
    assert_eq!(app.sandbox.erp.orders().len(), 3, "never pushed again");
}

/// The ERP shipped it already: the cancel is refused (409), and the order
/// is flagged for an operator in `status`, `/metrics` and at ERROR, never
/// silently left. Current-thread: the jobs' log lines land in this test.
#[tokio::test]
async fn a_cancel_the_erp_refuses_is_flagged_for_an_operator() {
    let app = spawn_mplus(till_options(), "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(2);
    let engine = app.engine();
    rounds(&engine, TILL, 3).await;
    let k = till_key(&ids[0]);
    assert_eq!(state(&engine, &k), "completed");
    let warnings = capture_warnings();
    assert!(app.sandbox.mplus.cancel(&ids[0]));
    rounds(&engine, TILL, 2).await;
    assert_eq!(state(&engine, &k), "cancel_refused");
    assert!(!app.sandbox.erp.is_cancelled(&k));
    let errors = warnings.lines_with(&["ERROR", "job parked", "cancel_in_erp", &k]);
    assert_eq!(errors.len(), 1, "{}", warnings.text());
    assert!(errors[0].contains("refuses to cancel"), "{}", errors[0]);
    drop(warnings);
    let status = status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert!(
        parked
            .iter()
            .any(|p| p["order_key"] == k.as_str() && p["job"] == "cancel_in_erp"),
        "{status}"
    );
    let stop = CancellationToken::new();
    let (addr, _h) = ordersync::metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        Arc::new(app.config.clone()),
        stop.clone(),
    )
    .await
    .unwrap();
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("ordersync_orders_parked{{source=\"{TILL}\"}} 1")),
        "{metrics}"
    );
    stop.cancel();
    assert!(app.sandbox.erp.cancellations().is_empty());
    // Other orders flow on.
    assert_eq!(state(&engine, &till_key(&ids[1])), "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_cancelled_in_the_erp_is_cancelled_at_cloudsuite_once() {
    let mut opts = AppOptions::default();
    opts.sandbox.erp.ship_after = None;
    let app = spawn_app(opts).await;
    let ids: Vec<i64> = (0..2)
        .map(|_| app.sandbox.cloudsuite.add_order(OrderSpec::default()))
        .collect();
    let engine = app.engine();
    rounds(&engine, SOURCE, 2).await;
    assert_eq!(state(&engine, &key(ids[0])), "accepted");
    assert!(
        app.sandbox
            .erp
            .cancel_by_hand(&key(ids[0]), "customer called")
    );
    rounds(&engine, SOURCE, 3).await;
    assert_eq!(state(&engine, &key(ids[0])), "cancelled_in_erp");
    let order = app.sandbox.cloudsuite.order(ids[0]).unwrap();
    assert_eq!(order["state"], "cancel");
    let history = app.sandbox.cloudsuite.history(ids[0]);
    let states: Vec<_> = history
        .iter()
        .filter(|c| c.field == "state")
        .map(|c| c.to.clone())
        .collect();
    assert_eq!(
        states,
        vec![Some("processing".to_string()), Some("cancel".to_string())],
        "{history:?}"
    );
    assert_eq!(
        app.sandbox.cloudsuite.order(ids[1]).unwrap()["state"],
        "processing"
    );
    assert_eq!(app.sandbox.erp.cancel_requests(&key(ids[0])), 0);
}

/// A write-back that reads first looks only at the fields it needs: after
/// the push, CloudSuite starts serving the order with a byte that is not
/// UTF-8 in one field and a number no `f64` holds in another, and a cancel
/// in the ERP still reaches it (before, the read of the whole order failed
/// on every attempt and the cancel never went out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_cloudsuite_cannot_serialize_does_not_stop_a_cancel_from_the_erp() {
    let mut opts = AppOptions::default();
    opts.sandbox.erp.ship_after = None;
    let app = spawn_app(opts).await;
    let cs = &app.sandbox.cloudsuite;
    let id = cs.add_order(OrderSpec {
        customer_order_number: Some("ZZ-BROKEN-PO".into()),
        ..OrderSpec::default()
    });
    let engine = app.engine();
    rounds(&engine, SOURCE, 2).await;
    assert_eq!(state(&engine, &key(id)), "accepted");
    cs.set_faults(ordersync::sandbox::Faults {
        corrupt: vec![(
            b"\"ZZ-BROKEN-PO\"".to_vec(),
            b"\"PO M\xfcller\", \"weight\": 1e400".to_vec(),
        )],
        ..Default::default()
    });
    assert!(app.sandbox.erp.cancel_by_hand(&key(id), "customer called"));
    // Bounded: a write-back that cannot read the order retries, backing
    // off, and the rounds would wait for it for a long time.
    let done = tokio::time::timeout(Duration::from_secs(60), rounds(&engine, SOURCE, 3)).await;
    assert!(done.is_ok(), "the cancel's write-back kept failing");
    assert_eq!(cs.order(id).unwrap()["state"], "cancel");
    assert_eq!(state(&engine, &key(id)), "cancelled_in_erp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_cancelled_in_the_erp_is_cancelled_at_the_till_once() {
    let mut o = till_options();
    o.erp.ship_after = None;
    let app = spawn_mplus(o, "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(2);
    let engine = app.engine();
    rounds(&engine, TILL, 2).await;
    let k = till_key(&ids[0]);
    assert!(app.sandbox.erp.cancel_by_hand(&k, "out of stock"));
    rounds(&engine, TILL, 3).await;
    assert_eq!(state(&engine, &k), "cancelled_in_erp");
    assert_eq!(
        app.sandbox
            .mplus
            .order(&ids[0])
            .unwrap()
            .cancel_state
            .as_deref(),
        Some("ORDER-CANCEL-STATE-COMPLETE")
    );
    assert_eq!(app.sandbox.mplus.cancel_requests(), 1);
    // The till's echo of our cancel is not taken for a cancel to send back.
    assert_eq!(app.sandbox.erp.cancel_requests(&k), 0);
    let detail = engine.store.order_detail(&k).unwrap().unwrap();
    assert!(
        detail.jobs.iter().all(|j| j.kind != "cancel_in_erp"),
        "{:?}",
        detail.jobs
    );
    assert_eq!(state(&engine, &till_key(&ids[1])), "accepted");
}

/// SIGKILL at random moments while cancellations run both ways: every
/// till cancel reaches the ERP, every ERP cancel reaches the till, none is
/// applied twice (the till counts a cancel of an already cancelled order),
/// and nothing else is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_cancellations_loses_and_doubles_nothing() {
    let mut o = till_options();
    o.erp.ship_after = None;
    o.mplus.faults.latency = Duration::from_millis(15);
    o.erp.faults.latency = Duration::from_millis(15);
    let app = spawn_mplus(o, "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(60);
    let erp = &app.sandbox.erp;
    let till = &app.sandbox.mplus;
    // First everything is pushed and written back, by a clean run.
    let (status, log) = tokio::task::block_in_place(|| {
        run_daemon_until(&app, &[], || {
            erp.orders().len() == ids.len()
                && ids.iter().all(|id| {
                    till.order(id)
                        .is_some_and(|o| o.reference.is_some_and(|r| !r.is_empty()))
                })
        })
    });
    assert_eq!(status, Some(0), "{log}");
    assert_eq!(erp.orders().len(), ids.len(), "{log}");
    // 20 cancelled at the till, 20 in the ERP, 20 left alone.
    let (at_till, rest) = ids.split_at(20);
    let (in_erp, untouched) = rest.split_at(20);
    for id in at_till {
        assert!(till.cancel(id));
    }
    for id in in_erp {
        assert!(erp.cancel_by_hand(&till_key(id), "cancelled in the ERP"));
    }
    let cancelled_at_till = |id: &String| {
        till.order(id).and_then(|o| o.cancel_state).as_deref()
            == Some("ORDER-CANCEL-STATE-COMPLETE")
    };
    let finished = || {
        at_till.iter().all(|id| erp.is_cancelled(&till_key(id)))
            && in_erp.iter().all(cancelled_at_till)
    };
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("cancel crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let kills = tokio::task::block_in_place(|| {
        kill_at_random_moments(&app, &mut rng, 8, 30, 900, finished)
    });
    eprintln!("{kills} kills landed while cancellations were left");
    if !finished() {
        // One last run finishes the work (a run started with nothing left
        // would be stopped before it installs its signal handlers).
        let started = Instant::now();
        let (status, log) = tokio::task::block_in_place(|| run_daemon_until(&app, &[], finished));
        assert_eq!(status, Some(0), "seed {seed}: {log}");
        eprintln!("final run converged in {:?}", started.elapsed());
    }
    assert!(finished(), "seed {seed}: cancellations lost");
    assert_eq!(
        till.cancel_repeats(),
        0,
        "seed {seed}: a till cancel was applied twice"
    );
    assert_eq!(
        till.cancel_requests(),
        in_erp.len() as u64,
        "one cancelOrder per ERP cancel, none for the till's own"
    );
    // Each ERP order cancelled once (the feed holds one entry per order),
    // and only those.
    let feed = erp.cancellations();
    assert_eq!(feed.len(), at_till.len() + in_erp.len());
    for id in untouched {
        assert!(!erp.is_cancelled(&till_key(id)), "{id}");
        assert!(!cancelled_at_till(id), "{id}");
    }
    assert_eq!(erp.orders().len(), ids.len(), "nothing pushed twice");
    let store = ordersync::store::Store::open_read_only(&app.db_path()).unwrap();
    for id in at_till.iter().chain(in_erp) {
        let detail = store.order_detail(&till_key(id)).unwrap().unwrap();
        assert_eq!(detail.row.state, "cancelled_in_erp", "{id}");
    }
    let status = status_json(&app);
    assert!(status["parked"].as_array().unwrap().is_empty(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_cancelled_in_the_erp_is_cancelled_at_vinou_once() {
    use crate::vinou::{Setup, VINOU, key as vkey, spawn_vinou};
    let mut setup = Setup::default();
    setup.sandbox.erp.ship_after = None;
    let app = spawn_vinou(setup).await;
    let engine = app.engine();
    // The first poll only sets the cursor (history is not pushed).
    rounds(&engine, VINOU, 1).await;
    let ids: Vec<i64> = (0..2).map(|_| app.sandbox.vinou.place_order()).collect();
    rounds(&engine, VINOU, 2).await;
    assert_eq!(state(&engine, &vkey(ids[0])), "accepted");
    assert!(app.sandbox.erp.cancel_by_hand(&vkey(ids[0]), "no stock"));
    rounds(&engine, VINOU, 3).await;
    assert_eq!(state(&engine, &vkey(ids[0])), "cancelled_in_erp");
    let order = app
        .sandbox
        .vinou
        .orders()
        .into_iter()
        .find(|o| o["id"] == ids[0])
        .unwrap();
    assert_eq!(order["status"], "cancelled");
    assert_eq!(app.sandbox.vinou.cancel_requests(ids[0]), 1);
    assert_eq!(app.sandbox.vinou.cancel_requests(ids[1]), 0);
    assert_eq!(state(&engine, &vkey(ids[1])), "accepted");
}

/// SPEC: Vinou's open orders are re-checked with `get`. An order cancelled
/// at Vinou long after its push, far below where a walk with a cursor
/// stops, is cancelled in the ERP once; one that moved on to `in_delivery`
/// stays as it is (a status past the import point is no cancel for an
/// order already in the ERP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_at_vinou_long_after_the_push_cancels_the_erp_order_once() {
    use crate::vinou::{Setup, VINOU, key as vkey, spawn_vinou};
    let mut setup = Setup {
        page_size: 5,
        // Every poll begins a recheck round; the walks stop on page 1.
        source_extra: "lookback = \"1s\"\nrecheck_every = \"0s\"",
        ..Default::default()
    };
    setup.sandbox.erp.ship_after = None;
    let app = spawn_vinou(setup).await;
    let vinou = &app.sandbox.vinou;
    let old = vinou.now_local() - chrono::Duration::hours(5);
    let (cancelled, delivered) = (
        vinou.add_order("payed", Some(old)),
        vinou.add_order("payed", Some(old)),
    );
    vinou.seed_orders(40, 4, Duration::from_secs(3600));
    let engine = app.engine();
    rounds(&engine, VINOU, 2).await;
    for id in [cancelled, delivered] {
        assert_eq!(state(&engine, &vkey(id)), "accepted", "{id}");
    }
    let lists = vinou.list_requests();
    assert!(vinou.set_status(cancelled, "cancelled"));
    assert!(vinou.set_status(delivered, "in_delivery"));
    rounds(&engine, VINOU, 3).await;
    assert!(
        vinou.list_requests() - lists <= 3,
        "each walk stopped on page 1, above both orders"
    );
    assert_eq!(state(&engine, &vkey(cancelled)), "cancelled_in_erp");
    assert!(app.sandbox.erp.is_cancelled(&vkey(cancelled)));
    assert_eq!(
        app.sandbox.erp.cancel_requests(&vkey(cancelled)),
        1,
        "asked once"
    );
    assert_eq!(
        vinou.cancel_requests(cancelled),
        0,
        "Vinou cancelled it itself"
    );
    assert_eq!(state(&engine, &vkey(delivered)), "accepted");
    assert!(!app.sandbox.erp.is_cancelled(&vkey(delivered)));
    // Moving on at Vinou (in_delivery) is the merchant's own workflow, not
    // a change to the order the ERP has: nothing to flag.
    assert_eq!(changes_noted(&engine, &vkey(delivered)), 0);
    assert_eq!(
        app.sandbox.erp.erp_orders_for(&vkey(cancelled)).len(),
        1,
        "never pushed again"
    );
}

/// A push whose outcome nobody learned (its runner died after the ERP took
/// the order, before the ledger heard of it), then a cancel at the till
/// before the push is tried again: the next attempt finds the ERP's order
/// and the cancel follows it there, once. A never-started push of another
/// cancelled order is stopped without asking the ERP. (Before, the cancel
/// stopped both push jobs, and the ERP kept an order the till cancelled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_a_push_of_unknown_outcome_cancels_the_erp_order() {
    use ordersync::store::{ClaimFilter, JobKind};
    let mut o = till_options();
    o.erp.ship_after = None;
    let app = spawn_mplus(o, "", 10).await;
    let ids = app.sandbox.mplus.seed_orders(3);
    let (landed, never_tried, other) = (till_key(&ids[0]), till_key(&ids[1]), till_key(&ids[2]));
    let engine = app.engine();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    let stop = CancellationToken::new();
    poll_live(&engine, &connector, &stop).await;
    // A runner claims the first push, the ERP takes the order, and the
    // runner dies before it tells the ledger.
    let claimed = engine
        .store
        .claim(
            TILL,
            "dead-node/1/x",
            Duration::from_millis(1),
            8,
            ClaimFilter::Orders(std::slice::from_ref(&landed)),
        )
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].kind, JobKind::Push);
    let order = engine.store.order_for_job(&landed).unwrap().unwrap();
    engine
        .erp
        .push(&landed, order.canonical_json.as_deref().unwrap())
        .await
        .unwrap();
    // The till cancels both before anything else runs.
    for id in &ids[..2] {
        assert!(app.sandbox.mplus.cancel(id));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    rounds(&engine, TILL, 3).await;
    assert_eq!(state(&engine, &landed), "cancelled_in_erp");
    assert!(app.sandbox.erp.is_cancelled(&landed));
    assert_eq!(app.sandbox.erp.cancel_requests(&landed), 1, "asked once");
    assert_eq!(
        app.sandbox.erp.erp_orders_for(&landed).len(),
        1,
        "never doubled"
    );
    assert_eq!(state(&engine, &never_tried), "cancelled");
    assert!(app.sandbox.erp.erp_orders_for(&never_tried).is_empty());
    assert_eq!(app.sandbox.erp.cancel_requests(&never_tried), 0);
    assert_ne!(state(&engine, &other), "cancelled");
    assert_eq!(app.sandbox.erp.orders().len(), 2);
    assert_eq!(
        app.sandbox.mplus.cancel_requests(),
        0,
        "the till cancelled them itself"
    );
}

/// An ERP middleware built from SPEC §3 alone serves no cancellations feed
/// and answers 404: orders flow as before, each feed poll succeeds with
/// nothing to record, and no warning repeats for it. Current-thread: the
/// warnings land in this test.
#[tokio::test]
async fn an_erp_without_a_cancellations_feed_is_no_failure() {
    let warnings = capture_warnings();
    let mut opts = AppOptions::default();
    opts.sandbox.erp.cancellations_feed = false;
    opts.sandbox.erp.ship_after = None;
    let app = spawn_app(opts).await;
    let ids: Vec<i64> = (0..2)
        .map(|_| app.sandbox.cloudsuite.add_order(OrderSpec::default()))
        .collect();
    let engine = app.engine();
    rounds(&engine, SOURCE, 3).await;
    for id in &ids {
        assert_eq!(state(&engine, &key(*id)), "accepted");
    }
    let stop = CancellationToken::new();
    for _ in 0..3 {
        assert_eq!(poll_cancellations(&engine, &stop).await.unwrap(), 0);
    }
    let text = warnings.text();
    assert!(!text.contains("cancellations"), "{text}");
}
