//! Fault knobs seen from a client: what was applied, what the client heard.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{access_token, canonical_order, client, start};
use crate::sandbox::Faults;
use crate::sandbox::cloudsuite::{CloudSuiteOptions, OrderSpec};
use crate::sandbox::erp_http::ErpOptions;

const TOKEN: &str = "sandbox-erp-token";

#[tokio::test]
async fn server_errors_apply_nothing() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let c = client();
    let token = access_token(&sb, &c).await;
    let id = sb.cloudsuite.add_order(OrderSpec::default());
    let always_5xx = Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    };
    sb.cloudsuite.set_faults(always_5xx.clone());
    sb.erp.set_faults(always_5xx);

    for _ in 0..5 {
        let r = c
            .patch(format!("{}/api/order/{id}/", sb.cloudsuite_url))
            .bearer_auth(&token)
            .json(&json!({"state": "processing"}))
            .send()
            .await
            .unwrap();
        assert!([500, 502, 503].contains(&r.status().as_u16()));
        let r = c
            .post(format!("{}/orders", sb.erp_url))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "k:1")
            .json(&canonical_order("k:1"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_server_error());
    }
    assert_eq!(sb.cloudsuite.order(id).unwrap()["state"], "confirmed");
    assert_eq!(sb.cloudsuite.write_requests(id), 0);
    assert!(sb.erp.orders().is_empty());
    assert_eq!(sb.erp.post_requests("k:1"), 0);
    assert_eq!(sb.erp.fault_count(), 5);
    assert_eq!(sb.erp.request_count(), 5);
    assert_eq!(sb.cloudsuite.fault_count(), 5);
    sb.shutdown().await;
}

#[tokio::test]
async fn dropped_response_was_applied() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let c = client();
    sb.erp.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let post = || {
        c.post(format!("{}/orders", sb.erp_url))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "k:1")
            .json(&canonical_order("k:1"))
            .send()
    };
    let outcome = async { post().await?.bytes().await }.await;
    assert!(outcome.is_err(), "client must not get a complete answer");
    assert_eq!(sb.erp.orders().len(), 1, "but the order was created");

    // The retry with the same key learns the outcome.
    sb.erp.set_faults(Faults::none());
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["erp_order_number"],
        "SO000001"
    );
    assert_eq!(sb.erp.orders().len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn malformed_body_after_applied_patch() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let c = client();
    let token = access_token(&sb, &c).await;
    let id = sb.cloudsuite.add_order(OrderSpec::default());
    sb.cloudsuite.set_faults(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    });
    let r = c
        .patch(format!("{}/api/order/{id}/", sb.cloudsuite_url))
        .bearer_auth(&token)
        .json(&json!({"erp_order_number": "SO9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(sb.cloudsuite.order(id).unwrap()["erp_order_number"], "SO9");
    sb.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let c = client();
    sb.erp.set_faults(Faults {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    });
    let r = c
        .get(format!("{}/shipments", sb.erp_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    sb.erp.set_faults(Faults {
        max_requests_per_sec: Some(3),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = c
            .get(format!("{}/shipments", sb.erp_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        statuses.push(r.status().as_u16());
    }
    // The window also holds the 429 request above; 8 quick requests span
    // at most two one-second windows of 3 each.
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((2..=6).contains(&ok), "{statuses:?}");
    assert!(sb.erp.peak_requests_per_sec() >= 4);
    assert_eq!(sb.erp.request_count(), 9);
    sb.shutdown().await;
}

#[tokio::test]
async fn latency_and_slow_body_delay_but_deliver() {
    let sb = start(
        CloudSuiteOptions {
            seed_orders: 30,
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let c = client();
    let token = access_token(&sb, &c).await;
    let url = format!("{}/api/order/", sb.cloudsuite_url);

    sb.cloudsuite.set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    });
    let t = Instant::now();
    let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    sb.cloudsuite.set_faults(Faults {
        slow_body: Some(Duration::from_millis(400)),
        ..Faults::default()
    });
    let t = Instant::now();
    let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
    let headers_after = t.elapsed();
    let body: Value = r.json().await.unwrap();
    let total = t.elapsed();
    assert_eq!(body["count"], 30);
    assert!(
        headers_after < Duration::from_millis(300),
        "{headers_after:?}"
    );
    assert!(total >= Duration::from_millis(350), "{total:?}");

    // The connection stays usable and unthrottled afterwards.
    sb.cloudsuite.set_faults(Faults::none());
    let t = Instant::now();
    let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["count"], 30);
    assert!(t.elapsed() < Duration::from_millis(300));
    sb.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_both_servers() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let c = client();
    let (cs, erp) = (sb.cloudsuite_url.clone(), sb.erp_url.clone());
    assert_eq!(
        c.get(format!("{erp}/shipments"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let t = Instant::now();
    sb.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(2));
    let fresh = client();
    assert!(fresh.get(format!("{cs}/api/order/")).send().await.is_err());
    assert!(fresh.get(format!("{erp}/shipments")).send().await.is_err());
}
