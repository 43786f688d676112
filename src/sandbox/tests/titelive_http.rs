//! The Titelive simulator over real HTTP: the envelope on every answer, the
//! token codes, collapsed lists, and the status rules.

use serde_json::Value;

use super::client;
use crate::sandbox::titelive::{OrderSpec, TiteliveOptions};
use crate::sandbox::{Sandbox, SandboxOptions};

async fn start(opts: TiteliveOptions) -> (Sandbox, String) {
    let sb = Sandbox::start(SandboxOptions {
        titelive: opts,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let api = format!("{}/api/json/00000", sb.titelive_url);
    (sb, api)
}

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let mut req = c.get(url);
    if let Some(t) = token {
        req = req.header("token", t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "Titelive answers 200 even for failures");
    let v: Value = resp.json().await.unwrap();
    v["response"].clone()
}

async fn system_token(c: &reqwest::Client, api: &str) -> String {
    let r = get(c, &format!("{api}/customer/token"), None).await;
    let token = r["object"]["token"]["value"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 26);
    let resp = c
        .post(format!("{api}/customer/login"))
        .header("token", &token)
        .form(&[
            ("login", "SYSTEM"),
            (
                "password",
                TiteliveOptions::default().system_password.as_str(),
            ),
        ])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["response"]["success"], true, "{v}");
    assert!(
        v["response"].get("code").is_none(),
        "the login sample has no code"
    );
    token
}

async fn post_status(c: &reqwest::Client, api: &str, token: &str, id: i64, status: &str) -> Value {
    let resp = c
        .post(format!("{api}/admin/order/{id}/status"))
        .header("token", token)
        .form(&[("status", status), ("message", "test")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["response"].clone()
}

#[tokio::test]
async fn tokens_lists_and_the_envelope() {
    let (sb, api) = start(TiteliveOptions::default()).await;
    let c = client();
    let r = get(&c, &format!("{api}/customer/order"), None).await;
    assert_eq!(
        (r["success"].clone(), r["code"].clone()),
        (false.into(), 3.into())
    );
    let r = get(&c, &format!("{api}/customer/order"), Some("nope")).await;
    assert_eq!(r["code"], 4);
    let token = system_token(&c, &api).await;
    let r = get(&c, &format!("{api}/customer/order"), Some(&token)).await;
    assert_eq!(
        (r["code"].clone(), r["message"].clone()),
        (10.into(), "no orders".into())
    );
    let id = sb.titelive.add_order(OrderSpec {
        lines: 1,
        ..Default::default()
    });
    let r = get(&c, &format!("{api}/customer/order"), Some(&token)).await;
    let order = &r["object"]["orders"]["order"];
    assert!(order.is_object(), "one order collapses: {r}");
    assert!(
        order["lines"]["line"].is_object(),
        "one line collapses: {r}"
    );
    assert!(order["ean"].is_null() && order["lines"]["line"]["ean"].is_u64());
    sb.titelive.add_order(OrderSpec::default());
    let r = get(&c, &format!("{api}/customer/order"), Some(&token)).await;
    assert_eq!(r["object"]["orders"]["order"].as_array().unwrap().len(), 2);
    let r = get(&c, &format!("{api}/customer/order/{id}"), Some(&token)).await;
    assert_eq!(r["object"]["order"]["id"], id);
    let r = get(&c, &format!("{api}/customer/order/1"), Some(&token)).await;
    assert_eq!(r["code"], 10);
    let r = get(
        &c,
        &format!("{}/api/json/99999/customer/order", sb.titelive_url),
        Some(&token),
    )
    .await;
    assert_eq!(r["code"], 1);
    sb.titelive.expire_tokens();
    let r = get(&c, &format!("{api}/customer/order"), Some(&token)).await;
    assert_eq!(r["code"], 5);
}

#[tokio::test]
async fn status_changes_follow_the_rules() {
    let (sb, api) = start(TiteliveOptions::default()).await;
    let c = client();
    let token = system_token(&c, &api).await;
    let id = sb.titelive.add_order(OrderSpec::default());
    assert_eq!(post_status(&c, &api, &token, id, "6").await["code"], 12);
    assert_eq!(post_status(&c, &api, &token, id, "5").await["code"], 13);
    assert_eq!(post_status(&c, &api, &token, id, "8").await["code"], 14);
    assert_eq!(post_status(&c, &api, &token, id, "x").await["code"], 9);
    let r = post_status(&c, &api, &token, id, "7").await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["object"]["order"]["status"], 7);
    assert_eq!(
        post_status(&c, &api, &token, id, "8").await["success"],
        true
    );
    assert_eq!(
        post_status(&c, &api, &token, id, "7").await["code"],
        14,
        "no way back"
    );
    assert_eq!(post_status(&c, &api, &token, 1, "7").await["code"], 10);
    let h = sb.titelive.history(id);
    assert_eq!(h.iter().map(|c| c.to).collect::<Vec<_>>(), vec![7, 8]);
    // "x" is refused before the order is looked at.
    assert_eq!(sb.titelive.status_posts(id), 6);
    // An anonymous token may not write.
    let r = get(&c, &format!("{api}/customer/token"), None).await;
    let anon = r["object"]["token"]["value"].as_str().unwrap().to_string();
    assert_eq!(post_status(&c, &api, &anon, id, "10").await["code"], 5);
}

#[tokio::test]
async fn prices_are_floats_that_add_up() {
    let opts = TiteliveOptions {
        seed_orders: 100,
        ..Default::default()
    };
    let (sb, _api) = start(opts).await;
    for o in sb.titelive.orders() {
        let cents = |v: &Value| (v.as_f64().unwrap() * 100.0).round() as i64;
        let lines: Vec<&Value> = match &o["lines"]["line"] {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        let goods: i64 = lines
            .iter()
            .map(|l| cents(&l["price"]) * l["quantity"].as_i64().unwrap())
            .sum();
        let reduction = o.get("reduction").map_or(0, cents);
        assert_eq!(
            goods - reduction + cents(&o["shipping"]),
            cents(&o["totalPrice"]),
            "{o}"
        );
    }
}
