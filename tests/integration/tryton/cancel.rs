//! Cancellations against a real trytond: a sale is cancelled while Tryton's
//! workflow allows it (a repeat is done, a processing sale is refused with
//! the reason), and a sale cancelled in Tryton is written back to the
//! source once, through the cancellations poll and its job.

use ordersync::daemon::poll_cancellations;
use ordersync::http::Failure;
use ordersync::sandbox::CloudSuiteOrderSpec as OrderSpec;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::common::key;

fn order(id: &str) -> String {
    json!({
        "order_key": format!("{SOURCE}:{id}"), "source": SOURCE, "source_kind": "cloudsuite",
        "external_id": id, "ordered_at": "2024-06-29T08:15:00Z", "currency": "EUR",
        "prices_include_tax": false, "customer": {"source_customer_id": "4711"},
        "lines": [{"source_line_id": "1", "sku": "124_STUK", "quantity": "2",
                   "unit_price": "19.99", "line_total": "39.98"}],
        "totals": {"net": "39.98"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tryton_cancels_what_its_workflow_allows_and_refuses_the_rest() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    // confirm = false: the sale rests as a quotation, which Tryton cancels.
    let quoting = spawn_tryton_app(&server, "confirm = false").await;
    let engine = engine(&quoting);
    let k = format!("{SOURCE}:9101");
    engine.erp.push(&k, &order("9101")).await.unwrap();
    assert_eq!(sales_for(&rpc, &k).await[0]["state"], "quotation");
    let done = engine
        .erp
        .cancel(&k, "cancelled at the shop")
        .await
        .unwrap();
    assert!(done.contains("cancelled"), "{done}");
    let sales = sales_for(&rpc, &k).await;
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0]["state"], "cancelled");
    // A repeat after a crash is done, and touches nothing.
    let again = engine
        .erp
        .cancel(&k, "cancelled at the shop")
        .await
        .unwrap();
    assert!(again.contains("already"), "{again}");
    // An order key Tryton never saw: refused, naming it.
    match engine.erp.cancel(&format!("{SOURCE}:nope"), "x").await {
        Err(Failure::Permanent { message, .. }) => assert!(message.contains("nope"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // confirm = true: Tryton processes the sale at once (shipment created);
    // its workflow has no cancel from there: refused, with the reason.
    let confirming = spawn_tryton_app(&server, "confirm = true").await;
    let engine = super::engine(&confirming);
    let k = format!("{SOURCE}:9102");
    engine.erp.push(&k, &order("9102")).await.unwrap();
    assert_eq!(sales_for(&rpc, &k).await[0]["state"], "processing");
    match engine.erp.cancel(&k, "cancelled at the shop").await {
        Err(Failure::Permanent { message, .. }) => {
            assert!(
                message.contains("processing") && message.contains("by hand"),
                "{message}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(sales_for(&rpc, &k).await[0]["state"], "processing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_cancelled_in_tryton_is_cancelled_at_the_source_once() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let app = spawn_tryton_app(&server, "confirm = false").await;
    let ids: Vec<i64> = (0..2)
        .map(|_| app.sandbox.cloudsuite.add_order(OrderSpec::default()))
        .collect();
    let engine = engine(&app);
    sync(&engine).await;
    for id in &ids {
        assert_eq!(
            app.sandbox.cloudsuite.order(*id).unwrap()["state"],
            "processing"
        );
    }
    let sale = sales_for(&rpc, &key(ids[0])).await[0]["id"]
        .as_i64()
        .unwrap();
    rpc.model("sale.sale", "cancel", vec![json!([sale])])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    for _ in 0..2 {
        poll_cancellations(&engine, &stop).await.unwrap();
        engine.drain(SOURCE, None, 4, &stop).await.unwrap();
    }
    let detail = engine.store.order_detail(&key(ids[0])).unwrap().unwrap();
    assert_eq!(detail.row.state, "cancelled_in_erp", "{:?}", detail.events);
    assert_eq!(
        app.sandbox.cloudsuite.order(ids[0]).unwrap()["state"],
        "cancel"
    );
    let cancels = app
        .sandbox
        .cloudsuite
        .history(ids[0])
        .iter()
        .filter(|c| c.field == "state" && c.to.as_deref() == Some("cancel"))
        .count();
    assert_eq!(cancels, 1, "written back once");
    assert_eq!(
        app.sandbox.cloudsuite.order(ids[1]).unwrap()["state"],
        "processing"
    );
    // Tryton lists no cancelled sale for the key: reconcile does not call
    // the cancelled order missing.
    let out = tokio::task::block_in_place(|| {
        app.run_binary()
            .args(["reconcile", "--since", "2d", "--json"])
            .output()
            .unwrap()
    });
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["sources"][0]["missing"], json!([]), "{report}");
    assert_eq!(report["sources"][0]["doubled"], json!([]), "{report}");
}
