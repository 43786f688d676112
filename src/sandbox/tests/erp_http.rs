//! http ERP simulator over HTTP: idempotent POST, validation, shipments feed.

use std::time::Duration;

use serde_json::{Value, json};

use super::{canonical_order, client, start};
use crate::sandbox::cloudsuite::CloudSuiteOptions;
use crate::sandbox::erp_http::ErpOptions;

const TOKEN: &str = "sandbox-erp-token";

#[tokio::test]
async fn post_is_idempotent_per_key() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let c = client();
    let url = format!("{}/orders", sb.erp_url);
    let key = "webshop-nl:48193";
    let post = |body: Value| {
        c.post(&url)
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    let first = post(canonical_order(key)).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        first,
        json!({"erp_order_number": "SO000001", "lines": [
            {"source_line_id": "11", "erp_line_number": 10},
            {"source_line_id": "12", "erp_line_number": 20}]})
    );
    let mut changed = canonical_order(key);
    changed["currency"] = json!("USD");
    let again = post(changed).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    assert_eq!(sb.erp.post_requests(key), 2);
    assert_eq!(sb.erp.orders().len(), 1);
    let stored = sb.erp.erp_orders_for(key);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body["currency"], "EUR", "the first body is kept");

    let found: Value = c
        .get(&url)
        .bearer_auth(TOKEN)
        .query(&[("order_key", key)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        found,
        json!({"orders": [{"order_key": key, "erp_order_number": "SO000001"}]})
    );
    sb.shutdown().await;
}

/// An order key a header cannot carry as is arrives percent-encoded: the
/// ERP knows the order by its decoded key everywhere (a repeat, the look-up,
/// the shipments feed, a cancel), as the body's `order_key` says.
#[tokio::test]
async fn an_encoded_key_is_known_by_its_decoded_form() {
    let sb = start(
        CloudSuiteOptions::default(),
        ErpOptions {
            ship_after: None,
            ..Default::default()
        },
    )
    .await;
    let c = client();
    let key = "till:ORD-é";
    let header = crate::http::header_safe(key);
    assert_eq!(header, "till:ORD-%C3%A9");
    for expected in [201, 200] {
        let r = c
            .post(format!("{}/orders", sb.erp_url))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", &header)
            .json(&canonical_order(key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    assert_eq!(sb.erp.orders().len(), 1);
    assert_eq!(sb.erp.orders()[0].order_key, key);
    let get = |path: &str, query: &[(&str, &str)]| {
        c.get(format!("{}{path}", sb.erp_url))
            .bearer_auth(TOKEN)
            .query(query)
            .send()
    };
    let found: Value = get("/orders", &[("order_key", key)])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["orders"][0]["order_key"], key);
    assert!(sb.erp.ship_now(key));
    let feed: Value = get("/shipments", &[]).await.unwrap().json().await.unwrap();
    assert_eq!(feed["shipments"][0]["order_key"], key);
    sb.shutdown().await;
}

#[tokio::test]
async fn post_rejects_contract_violations() {
    let sb = start(
        CloudSuiteOptions::default(),
        ErpOptions {
            unknown_skus: vec!["301_KG".into()],
            ..Default::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/orders", sb.erp_url);
    let key = "webshop-nl:1";

    let no_key = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&canonical_order(key))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 400);
    assert_eq!(
        no_key.json::<Value>().await.unwrap(),
        json!({"error": "Idempotency-Key header is required"})
    );
    let no_auth = c
        .post(&url)
        .header("Idempotency-Key", key)
        .json(&canonical_order(key))
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
    assert_eq!(
        no_auth.json::<Value>().await.unwrap(),
        json!({"error": "unauthorized"})
    );

    let mut with_null = canonical_order(key);
    with_null["customer"]["phone"] = Value::Null;
    let mut with_empty = canonical_order(key);
    with_empty["lines"][0]["ean"] = json!("");
    let mut bad_decimal = canonical_order(key);
    bad_decimal["totals"]["gross"] = json!(57.30);
    let mut bad_time = canonical_order(key);
    bad_time["ordered_at"] = json!("2024-06-29T10:15:00.123456");
    let cases = [
        (with_null, "$.customer.phone"),
        (with_empty, "$.lines[0].ean"),
        (bad_decimal, "$.totals.gross"),
        (bad_time, "$.ordered_at"),
        (canonical_order(key), "product 301_KG not found"),
    ];
    for (body, expected) in cases {
        let r = c
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let msg = r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(expected), "{msg} / {expected}");
    }
    assert!(sb.erp.orders().is_empty());
    assert_eq!(sb.erp.post_requests(key), 5);
    sb.shutdown().await;
}

#[tokio::test]
async fn shipments_feed_follows_the_cursor() {
    let sb = start(
        CloudSuiteOptions::default(),
        ErpOptions {
            ship_after: Some(Duration::from_millis(150)),
            ..Default::default()
        },
    )
    .await;
    let c = client();
    let feed = |query: &'static str| {
        let req = c
            .get(format!("{}/shipments{query}", sb.erp_url))
            .bearer_auth(TOKEN);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(feed("").await, json!({"shipments": [], "next": "0"}));

    for key in ["shop:1", "shop:2"] {
        let r = c
            .post(format!("{}/orders", sb.erp_url))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&canonical_order(key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(
        feed("?after=0").await,
        json!({"shipments": [], "next": "0"})
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let page = feed("?after=0&limit=1").await;
    assert_eq!(page["next"], "1");
    let s = &page["shipments"][0];
    assert_eq!(s["order_key"], "shop:1");
    assert_eq!(s["erp_order_number"], "SO000001");
    assert_eq!(s["carrier"], "PostNL");
    let tracking = s["tracking_number"].as_str().unwrap();
    assert!(tracking.starts_with("3SORD") && tracking.len() == 14);
    assert_eq!(
        s["tracking_url"],
        format!("https://jouw.postnl.nl/track-and-trace/{tracking}")
    );
    assert_eq!(
        s["lines"],
        json!([{"source_line_id": "11", "quantity": "2"}, {"source_line_id": "12", "quantity": "0.530"}])
    );
    assert!(s["shipped_at"].as_str().unwrap().ends_with('Z'));

    let page = feed("?after=1").await;
    assert_eq!(page["next"], "2");
    assert_eq!(page["shipments"][0]["order_key"], "shop:2");
    assert_eq!(
        feed("?after=2").await,
        json!({"shipments": [], "next": "2"})
    );

    // Shipped later, seen later: the cursor never skips it.
    sb.erp.set_ship_after(None);
    let r = c
        .post(format!("{}/orders", sb.erp_url))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "shop:3")
        .json(&canonical_order("shop:3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(feed("?after=2").await["next"], "2");
    assert!(sb.erp.ship_now("shop:3"));
    assert!(!sb.erp.ship_now("shop:3"), "ships once");
    let page = feed("?after=2").await;
    assert_eq!(page["next"], "3");
    assert_eq!(page["shipments"][0]["order_key"], "shop:3");
    assert_eq!(sb.erp.shipments().len(), 3);

    let before = sb.erp.request_count();
    let r = c.get(format!("{}/nope", sb.erp_url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        sb.erp.request_count(),
        before + 1,
        "unrouted requests count too"
    );

    for bad in ["?limit=0", "?limit=501", "?limit=x", "?after=abc"] {
        let r = c
            .get(format!("{}/shipments{bad}", sb.erp_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    sb.shutdown().await;
}
