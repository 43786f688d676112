//! Answers the documents do not promise (issue 12.9, 12.12): a till that
//! ignores `syncMarker` and answers its first batch forever, and one order
//! with an entity XML does not define. The walk stops on its own at what it
//! recorded; the bad order is parked with the element named while the
//! others reach the ERP.

use crate::common::capture_warnings;

use super::*;

fn recorded(app: &MplusApp, ids: &[String]) -> usize {
    let store = Store::open_read_only(&app.db_path()).unwrap();
    ids.iter()
        .filter(|id| store.order_detail(&key(id)).unwrap().is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_answering_its_first_batch_forever_stops_the_walk_at_what_it_recorded() {
    let app = spawn_mplus(options(), "", 10).await;
    let till = &app.sandbox.mplus;
    let ids = till.seed_orders(25);
    till.set_faults(Faults {
        repeat_page_forever: true,
        ..Faults::default()
    });
    let engine = app.engine();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    let stop = CancellationToken::new();
    let warnings = capture_warnings();
    tokio::time::timeout(
        Duration::from_secs(30),
        poll_live(&engine, &connector, &stop),
    )
    .await
    .expect("the poll ends on its own");
    assert_eq!(till.get_orders_calls(), 2, "{:?}", till.requested_markers());
    let warned = warnings.lines_with(&[TILL, "syncMarker 11", "same orders"]);
    assert_eq!(warned.len(), 1, "{}", warnings.text());
    // The first batch is recorded with its cursor (markers are ordered:
    // everything up to it is in the ledger); the repeat moved nothing.
    assert_eq!(recorded(&app, &ids), 10);
    assert_eq!(
        engine.store.cursor(TILL, "live").unwrap().as_deref(),
        Some("10")
    );

    till.set_faults(Faults::default());
    poll_live(&engine, &connector, &stop).await;
    assert_eq!(recorded(&app, &ids), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_order_with_an_undefined_entity_is_parked_and_the_others_flow() {
    let app = spawn_mplus(options(), "", 25).await;
    let till = &app.sandbox.mplus;
    let ids = till.seed_orders(10);
    let bad = ids[3].clone();
    till.edit_order(&bad, |o| o.ext_order_id = Some("ZZ-ENTITY".into()));
    till.set_faults(Faults {
        corrupt: vec![(b"ZZ-ENTITY".to_vec(), b"web &foo; 17".to_vec())],
        ..Faults::default()
    });
    let engine = app.engine();
    app.sync(&engine).await;
    let good: Vec<String> = ids.iter().filter(|id| **id != bad).cloned().collect();
    assert_till_converged(&app, &good);
    let status = engine.store.status(&[TILL.to_string()]).unwrap();
    assert_eq!(status.parked.len(), 1, "{:?}", status.parked);
    assert_eq!(status.parked[0].order_key, key(&bad));
    let reason = &status.parked[0].reason;
    assert!(
        reason.contains("extOrderId: undefined entity &foo;"),
        "{reason}"
    );
    assert!(app.sandbox.erp.erp_orders_for(&key(&bad)).is_empty());
    assert_eq!(crate::common::changes_noted(&engine, &key(&bad)), 0);
}

/// Issue 12.14: two order ids that differ only in a byte that is not UTF-8
/// (`ORD-\xff`, `ORD-\xfe`) stay two orders, each parked with the reason,
/// instead of both becoming `ORD-\u{FFFD}` with one replacing the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_differ_only_in_a_non_utf8_byte_stay_two_parked_orders() {
    let app = spawn_mplus(options(), "", 25).await;
    let till = &app.sandbox.mplus;
    let ids = till.seed_orders(8);
    let (a, b) = (ids[2].clone(), ids[5].clone());
    till.set_faults(Faults {
        corrupt: vec![
            (a.as_bytes().to_vec(), b"ORD-\xff".to_vec()),
            (b.as_bytes().to_vec(), b"ORD-\xfe".to_vec()),
        ],
        ..Faults::default()
    });
    let engine = app.engine();
    let connector = engine.connectors.get(TILL).unwrap().clone();
    let stop = CancellationToken::new();
    poll_live(&engine, &connector, &stop).await;
    engine.drain(TILL, None, 8, &stop).await.unwrap();
    let status = engine.store.status(&[TILL.to_string()]).unwrap();
    let mut parked: Vec<&str> = status.parked.iter().map(|p| p.order_key.as_str()).collect();
    parked.sort();
    assert_eq!(parked.len(), 2, "{:?}", status.parked);
    assert_ne!(parked[0], parked[1], "two keys, not one");
    for p in &status.parked {
        assert!(p.reason.contains("not UTF-8"), "{}", p.reason);
    }
    let good: Vec<String> = ids
        .iter()
        .filter(|id| **id != a && **id != b)
        .cloned()
        .collect();
    assert_eq!(recorded(&app, &good), good.len());
}
