//! Vinou simulator over HTTP: login and JWT expiry, POST-only routes,
//! newest-first pages, includes, `get` and `touch`.

use std::time::Duration;

use serde_json::{Value, json};

use super::client;
use crate::sandbox::vinou::VinouOptions;
use crate::sandbox::{Sandbox, SandboxOptions};

async fn start(vinou: VinouOptions) -> Sandbox {
    Sandbox::start(SandboxOptions {
        vinou,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

async fn login(sb: &Sandbox, c: &reqwest::Client) -> String {
    let o = sb.vinou.options();
    let resp = c
        .post(format!("{}/service/login", sb.vinou_url))
        .json(&json!({"token": o.api_token, "authid": o.auth_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["refreshToken"].is_string());
    body["token"].as_str().unwrap().to_string()
}

async fn call(
    sb: &Sandbox,
    c: &reqwest::Client,
    jwt: &str,
    route: &str,
    body: Value,
) -> (u16, Value) {
    let resp = c
        .post(format!("{}/service/{route}", sb.vinou_url))
        .bearer_auth(jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn login_is_required_and_jwts_expire() {
    let sb = start(VinouOptions {
        jwt_ttl: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let c = client();
    let bad = c
        .post(format!("{}/service/login", sb.vinou_url))
        .json(&json!({"token": "wrong", "authid": "4711"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let (status, body) = call(&sb, &c, "nope", "orders/getAll", json!({})).await;
    assert_eq!(
        (status, body["errors"][0].as_str()),
        (401, Some("ERROR_TOKEN_INVALID"))
    );
    let jwt = login(&sb, &c).await;
    // The JWT carries its expiry, as the connector reads it.
    let claims = crate::sources::vinou::base64url_decode(jwt.split('.').nth(1).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp() - 1);
    assert_eq!(call(&sb, &c, &jwt, "orders/getAll", json!({})).await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(call(&sb, &c, &jwt, "orders/getAll", json!({})).await.0, 401);
    // Everything is a POST.
    let get = c
        .get(format!("{}/service/orders/getAll", sb.vinou_url))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn pages_are_newest_first_and_shift_when_orders_arrive() {
    let sb = start(VinouOptions::default()).await;
    let c = client();
    let jwt = login(&sb, &c).await;
    sb.vinou.seed_orders(25, 1, Duration::from_secs(3600));
    let page = |n: u64| {
        call(
            &sb,
            &c,
            &jwt,
            "orders/getAll",
            json!({"page": n, "pageSize": 10}),
        )
    };
    let (_, first) = page(1).await;
    assert_eq!(
        (first["totalCount"].as_u64(), first["pages"].as_u64()),
        (Some(25), Some(3))
    );
    let stamps: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["crstamp"].as_str().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {stamps:?}"
    );
    // Default include is billing,delivery: no positions, no client.
    assert!(
        first["data"][0].get("positions").is_none() && first["data"][0].get("client").is_none()
    );
    let last_on_page_1 = first["data"][9]["id"].clone();
    sb.vinou.place_order();
    let (_, second) = page(2).await;
    assert_eq!(
        second["data"][0]["id"], last_on_page_1,
        "one arrival shifts everything down by one"
    );
    let (_, full) = call(
        &sb,
        &c,
        &jwt,
        "orders/getAll",
        json!({"pageSize": 500, "include": "items,client"}),
    )
    .await;
    assert_eq!(
        full["data"].as_array().unwrap().len(),
        26,
        "pageSize is capped at 100, not refused"
    );
    assert!(full["data"][0]["positions"].is_array() && full["data"][0]["client"].is_object());
    assert_eq!(sb.vinou.max_page_size_asked(), 500);
}

#[tokio::test]
async fn get_sees_status_changes_and_touch_marks_once() {
    let sb = start(VinouOptions::default()).await;
    let c = client();
    let jwt = login(&sb, &c).await;
    let id = sb.vinou.add_order("need_payment", None);
    let (status, one) = call(&sb, &c, &jwt, "orders/get", json!({"id": id})).await;
    assert_eq!(status, 200);
    assert_eq!(one["info"], "success");
    assert_eq!(one["data"]["status"], "need_payment");
    assert!(
        one["data"]["positions"].is_array(),
        "get includes items by default"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sb.vinou.set_status(id, "payed");
    let (_, after) = call(&sb, &c, &jwt, "orders/get", json!({"id": id})).await;
    assert_eq!(after["data"]["status"], "payed");
    assert_ne!(
        after["data"]["chstamp"], one["data"]["chstamp"],
        "chstamp moves"
    );
    for _ in 0..2 {
        assert_eq!(
            call(&sb, &c, &jwt, "orders/touch", json!({"id": id}))
                .await
                .0,
            200
        );
    }
    assert_eq!(sb.vinou.touch_requests(id), 2);
    assert_eq!(
        sb.vinou
            .history(id)
            .iter()
            .filter(|h| h.field == "touched")
            .count(),
        1
    );
    assert_eq!(
        call(&sb, &c, &jwt, "orders/get", json!({"id": 1})).await.0,
        404
    );
}
