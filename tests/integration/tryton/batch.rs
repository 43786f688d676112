//! Batched pushes (`erp.batch_size`) against a real trytond, seen through a
//! recording proxy: orders pushed together share one `create`, `quote` and
//! `confirm`; a sale Tryton refuses inside a batch fails alone, the others
//! are pushed once each.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ordersync::sandbox::{CloudSuiteLineSpec as LineSpec, CloudSuiteOrderSpec as OrderSpec};
use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::common::key;

/// A JSON-RPC call that went through the proxy: method and how many
/// records (or ids) its first parameter held.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    records: usize,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// Forwards every request to trytond unchanged and records what it was.
async fn forward(
    State(proxy): State<Proxy>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    if let Ok(call) = serde_json::from_slice::<Value>(&body) {
        proxy.calls.lock().unwrap().push(Call {
            method: call["method"].as_str().unwrap_or_default().to_string(),
            records: call["params"][0].as_array().map_or(0, Vec::len),
        });
    }
    let mut request = proxy
        .client
        .post(format!("{}{}", proxy.upstream, uri.path()))
        .body(body);
    for name in ["authorization", "content-type"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.as_bytes());
        }
    }
    match request.send().await {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status().as_u16()).unwrap();
            (status, reply.bytes().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
    }
}

/// Starts the proxy in front of `server`; its URL (same database path).
async fn proxy(server: &TrytonServer) -> (String, Arc<Mutex<Vec<Call>>>) {
    let url = reqwest::Url::parse(&server.url).unwrap();
    let upstream = format!("http://{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let state = Proxy {
        upstream,
        client: reqwest::Client::new(),
        calls: Arc::clone(&calls),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}{}", url.path()), calls)
}

/// The calls of `method` so far, as their record counts.
fn sizes(calls: &Mutex<Vec<Call>>, method: &str) -> Vec<usize> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == method)
        .map(|c| c.records)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_pushed_together_share_each_call_and_a_refused_sale_fails_alone() {
    let server = TrytonServer::start().await;
    let rpc = server.rpc();
    let (url, calls) = proxy(&server).await;
    let app = spawn_tryton_app_via(&url, "confirm = true\nbatch_size = 4\nmax_in_flight = 1").await;
    let cs = &app.sandbox.cloudsuite;
    // No shipping costs: which rate a source's shipping carries is not what
    // this test is about (tests/integration/tryton/taxes.rs is).
    let spec = |sku: &str| OrderSpec {
        lines: vec![LineSpec::new(sku, Decimal::ONE)],
        shipping_costs: Some(Decimal::ZERO),
        ..Default::default()
    };
    let first: Vec<i64> = (0..8).map(|_| cs.add_order(spec("124_STUK"))).collect();
    let engine = engine(&app);
    sync(&engine).await;
    let creates = sizes(&calls, "model.sale.sale.create");
    let confirms = sizes(&calls, "model.sale.sale.confirm");
    assert!(
        creates.iter().all(|n| *n <= 4) && creates.iter().sum::<usize>() == 8,
        "8 sales created, at most 4 per call: {creates:?}"
    );
    assert!(
        creates.len() < 8 && confirms.len() < 8,
        "some sales shared a create and a confirm: creates {creates:?}, confirms {confirms:?}"
    );

    // Tryton refuses a sale of a product no longer salable (the line's
    // domain): the create that holds it is rolled back as a whole.
    let product = rpc
        .model(
            "product.product",
            "search_read",
            vec![
                json!([["code", "=", "201_STUK"]]),
                json!(0),
                json!(1),
                json!(null),
                json!(["template"]),
            ],
        )
        .await
        .unwrap();
    rpc.model(
        "product.template",
        "write",
        vec![json!([product[0]["template"]]), json!({"salable": false})],
    )
    .await
    .unwrap();
    let refused = cs.add_order(spec("201_STUK"));
    let second: Vec<i64> = (0..3).map(|_| cs.add_order(spec("124_STUK"))).collect();
    calls.lock().unwrap().clear();
    sync(&engine).await;
    let creates = sizes(&calls, "model.sale.sale.create");
    assert!(
        creates.iter().any(|n| *n > 1),
        "the refused sale was in a batched create: {creates:?}"
    );

    for id in first.iter().chain(&second) {
        let k = key(*id);
        let sales = sales_for(&rpc, &k).await;
        assert_eq!(
            sales.len(),
            1,
            "{k}: exactly one sale: {sales:?}; {}",
            crate::common::status_json(&app)
        );
        assert_eq!(sales[0]["state"], "processing", "{k}");
        let source = cs.order(*id).unwrap();
        assert_eq!(source["erp_order_number"], sales[0]["number"], "{k}");
    }
    let k = key(refused);
    assert!(sales_for(&rpc, &k).await.is_empty(), "{k}: no sale");
    let status = crate::common::status_json(&app);
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(
        parked.len(),
        1,
        "only the refused order is parked: {status}"
    );
    assert_eq!(parked[0]["order_key"], k.as_str());
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(reason.contains("Tryton"), "{k}: Tryton's reason: {reason}");
}
