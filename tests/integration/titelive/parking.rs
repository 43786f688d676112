//! What parks, and only that: an unmapped country id, codes 10 and 12, a
//! code 13 that changed nothing, a cancellation between poll and
//! write-back, an order in the list that the API could not serialize.

use super::*;
use ordersync::sandbox::Faults;

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
        reason.contains("Country \"999\"") && reason.contains("sources[0].country_map"),
        "{reason}"
    );
}

/// With every answer 200, and with failure envelopes sent as 404/400
/// (Titelive documents the envelope's code, not the HTTP status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_10_and_12_and_a_late_cancellation_park_the_write_back_naming_the_cause() {
    for error_statuses in [false, true] {
        codes_park_naming_the_cause(error_statuses).await;
    }
}

async fn codes_park_naming_the_cause(error_statuses: bool) {
    // 6 is not a Titelive status: code 12 is a configuration error.
    let mut opts = TlOptions {
        source_extra: "processing_status = 6".into(),
        ..Default::default()
    };
    opts.sandbox.titelive.error_statuses = error_statuses;
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
    // The next poll re-reads the pushed order, records the cancellation
    // and asks the ERP to cancel it too (issue 15.4); the parked write-back
    // is moot and stops. This ERP shipped it already: it refuses, and the
    // order is flagged for an operator instead.
    poll_live(&engine, &connector, &stop).await;
    let detail = engine.store.order_detail(&tl_key(c)).unwrap().unwrap();
    assert!(
        detail.events.iter().any(|e| e.kind == "cancel_queued"),
        "{:?}",
        detail.events
    );
    engine.drain(TL, None, 4, &stop).await.unwrap();
    assert_eq!(app.sandbox.erp.cancel_requests(&tl_key(c)), 1);
    let detail = engine.store.order_detail(&tl_key(c)).unwrap().unwrap();
    assert_eq!(detail.row.state, "cancel_refused");
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    let refused: Vec<_> = status
        .parked
        .iter()
        .filter(|p| p.order_key == tl_key(c))
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", status.parked);
    assert_eq!(refused[0].job, "cancel_in_erp");
    assert!(refused[0].reason.contains("shipped"), "{:?}", refused[0]);
    assert_eq!(
        tl.status_posts(c),
        0,
        "nothing written to Titelive's cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_the_api_cannot_serialize_parks_only_that_order() {
    let app = spawn_titelive(TlOptions::default()).await;
    let tl = &app.sandbox.titelive;
    tl.seed_orders(10, 5, Duration::from_secs(3600));
    let (latin1, surrogate) = (
        tl.add_order(OrderSpec::default()),
        tl.add_order(OrderSpec::default()),
    );
    tl.set_delivery_city(latin1, "ZZ-LATIN1-CITY");
    tl.set_delivery_city(surrogate, "ZZ-SURROGATE-CITY");
    tl.set_faults(Faults {
        corrupt: vec![
            (b"ZZ-LATIN1-CITY".to_vec(), b"Li\xe8ge".to_vec()),
            (b"ZZ-SURROGATE-CITY".to_vec(), br"Gent \udc00".to_vec()),
        ],
        ..Faults::default()
    });
    let ids: Vec<i64> = pushable(&app)
        .into_iter()
        .filter(|id| ![latin1, surrogate].contains(id))
        .collect();
    let engine = app.engine();
    sync(&engine, &ids).await;
    assert_converged(&app, &ids);
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    assert_eq!(status.parked.len(), 2, "{:?}", status.parked);
    let reason = |id: i64| {
        status
            .parked
            .iter()
            .find(|p| p.order_key == tl_key(id))
            .map(|p| p.reason.clone())
            .unwrap_or_else(|| panic!("{} is not parked", tl_key(id)))
    };
    let r = reason(latin1);
    assert!(r.contains("deliveryCity: not valid UTF-8"), "{r}");
    let r = reason(surrogate);
    assert!(r.contains("deliveryCity: "), "{r}");
    // Read again by the list and by the re-check: no news.
    let connector = engine.connectors.get(TL).unwrap().clone();
    poll_live(&engine, &connector, &CancellationToken::new()).await;
    for bad in [latin1, surrogate] {
        assert_eq!(crate::common::changes_noted(&engine, &tl_key(bad)), 0);
    }
}

/// Code 13 is documented only as "order already confirmed", and Titelive
/// reserves its status write for shops that manage payment themselves. A
/// shop that answers every status write with code 13 and changes nothing
/// must not have its write-backs counted as done: the order is read again,
/// and a status that did not move parks the write-back, naming code 13 and
/// the status the order stays in. (It was recorded as done.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_answered_with_code_13_that_changed_nothing_is_parked() {
    let mut opts = TlOptions::default();
    opts.sandbox.titelive.closed_status_writes = true;
    let app = spawn_titelive(opts).await;
    let tl = &app.sandbox.titelive;
    let id = tl.add_order(OrderSpec::default());
    let engine = app.engine();
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(TL).unwrap().clone();
    poll_live(&engine, &connector, &stop).await;
    engine.drain(TL, None, 4, &stop).await.unwrap();
    assert_eq!(app.sandbox.erp.orders().len(), 1, "pushed once");
    assert_eq!(tl.status_posts(id), 1, "one status write, refused");
    assert_eq!(tl.status(id), Some(5));
    let status = engine.store.status(&[TL.to_string()]).unwrap();
    let parked: Vec<_> = status
        .parked
        .iter()
        .filter(|p| p.order_key == tl_key(id))
        .collect();
    assert_eq!(parked.len(), 1, "{:?}", status.parked);
    assert!(
        parked[0].reason.contains("code 13") && parked[0].reason.contains("status 5"),
        "{:?}",
        parked[0]
    );
}
