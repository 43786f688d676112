//! CloudSuite simulator over HTTP: auth, list/filters/pagination, PATCH, PUT.

use std::collections::HashSet;
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::{access_token, client, start};
use crate::sandbox::cloudsuite::{CloudSuiteOptions, LineSpec, OrderSpec};
use crate::sandbox::erp_http::ErpOptions;

fn at(d: u32, h: u32, m: u32) -> chrono::NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 6, d)
        .and_then(|d| d.and_hms_opt(h, m, 0))
        .unwrap()
}

#[tokio::test]
async fn tokens_issue_expire_and_reject_bad_credentials() {
    let sb = start(
        CloudSuiteOptions {
            token_ttl: Duration::from_millis(300),
            legacy_token: Some("legacy-abc".into()),
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let c = client();
    let orders = format!("{}/api/order/", sb.cloudsuite_url);

    let resp = c
        .post(&sb.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ordersync"),
            ("client_secret", "sandbox-client-secret"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1);
    let token = body["access_token"].as_str().unwrap().to_string();

    let ok = c.get(&orders).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    let none = c.get(&orders).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.json::<Value>().await.unwrap(),
        json!({"detail": "Authentication credentials were not provided."})
    );
    let bogus = c.get(&orders).bearer_auth("nope").send().await.unwrap();
    assert_eq!(
        bogus.json::<Value>().await.unwrap(),
        json!({"detail": "Invalid token."})
    );
    let legacy = c
        .get(&orders)
        .header("Authorization", "Token legacy-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);

    let wrong = c
        .post(&sb.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ordersync"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    let no_grant = c
        .post(&sb.token_url)
        .form(&[
            ("client_id", "ordersync"),
            ("client_secret", "sandbox-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_grant.status(), 400);
    assert_eq!(
        no_grant.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );

    // HTTP Basic client authentication is accepted too.
    let basic = c
        .post(&sb.token_url)
        .basic_auth("ordersync", Some("sandbox-client-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);

    tokio::time::sleep(Duration::from_millis(350)).await;
    let expired = c.get(&orders).bearer_auth(&token).send().await.unwrap();
    assert_eq!(expired.status(), 401);
    assert_eq!(
        expired.json::<Value>().await.unwrap(),
        json!({"detail": "Invalid token."})
    );

    assert_eq!(sb.cloudsuite.token_requests(), 4);
    assert_eq!(sb.cloudsuite.issued_tokens().len(), 2);
    assert_eq!(sb.cloudsuite.issued_tokens()[0], token);
    sb.shutdown().await;
}

#[tokio::test]
async fn pagination_follows_next_and_sees_every_order_once() {
    let sb = start(
        CloudSuiteOptions {
            seed_orders: 250,
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let c = client();
    let token = access_token(&sb, &c).await;

    let mut url = format!("{}/api/order/?state=confirmed&limit=100", sb.cloudsuite_url);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page: Value = c
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["count"], 250);
        if pages == 1 {
            assert_eq!(
                page["previous"],
                format!("{}/api/order/?limit=100&state=confirmed", sb.cloudsuite_url)
            );
        }
        for r in page["results"].as_array().unwrap() {
            seen.push(r["id"].as_i64().unwrap());
            assert_eq!(r["reference"], format!("CS{}", r["id"]));
            assert!(r["confirm_date"].as_str().unwrap().len() == 26);
        }
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                if pages == 1 {
                    assert_eq!(
                        next,
                        format!(
                            "{}/api/order/?limit=100&offset=100&state=confirmed",
                            sb.cloudsuite_url
                        )
                    );
                }
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 250);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by id");
    assert_eq!(seen, sb.cloudsuite.order_ids());

    // limit is capped at 1000 and garbage falls back to the default.
    let capped: Value = c
        .get(format!("{}/api/order/?limit=5000", sb.cloudsuite_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(capped["results"].as_array().unwrap().len(), 250);
    assert_eq!(capped["next"], Value::Null);
    sb.shutdown().await;
}

#[tokio::test]
async fn filters_on_state_and_confirm_date() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let cs = &sb.cloudsuite;
    let early = cs.add_order(OrderSpec {
        confirm_date: Some(at(28, 23, 59)),
        ..Default::default()
    });
    let mid = cs.add_order(OrderSpec {
        confirm_date: Some(at(29, 10, 15)),
        ..Default::default()
    });
    let draft = cs.add_order(OrderSpec {
        state: "draft".into(),
        ..Default::default()
    });
    let c = client();
    let token = access_token(&sb, &c).await;
    let ids = |q: &'static str| {
        let c = c.clone();
        let url = format!("{}/api/order/{q}", sb.cloudsuite_url);
        let token = token.clone();
        async move {
            let page: Value = c
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("?state=draft").await, vec![draft]);
    assert_eq!(ids("?state=confirmed").await, vec![early, mid]);
    assert_eq!(
        ids("?confirm_date__gte=2024-06-29T00:00:00").await,
        vec![mid]
    );
    assert_eq!(ids("?confirm_date__gte=2024-06-29").await, vec![mid]);
    assert_eq!(
        ids("?confirm_date__gte=2024-06-29T10:15:00.000001").await,
        Vec::<i64>::new()
    );
    // A bare date as upper bound means midnight: the day itself is excluded.
    assert_eq!(ids("?confirm_date__lte=2024-06-29").await, vec![early]);
    assert_eq!(ids("?reference=CS1").await, Vec::<i64>::new());
    assert_eq!(
        ids("?unknown_param=1&state=confirmed").await,
        vec![early, mid]
    );

    let bad = c
        .get(format!(
            "{}/api/order/?confirm_date__gte=29-06-2024",
            sb.cloudsuite_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap(),
        json!({"confirm_date__gte": ["Enter a valid date/time."]})
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn detail_totals_add_up_and_poison_is_served() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let cs = &sb.cloudsuite;
    let id = cs.add_order(OrderSpec {
        lines: vec![LineSpec::new("124_STUK", Decimal::from(2))],
        discount: Some(Decimal::from(5)),
        ..Default::default()
    });
    let c = client();
    let token = access_token(&sb, &c).await;
    let url = format!("{}/api/order/{id}/", sb.cloudsuite_url);
    let d: Value = c
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["reference"], format!("CS{id}"));
    assert_eq!(d["order_lines"][0]["quantity"], "2.000");
    assert_eq!(d["order_lines"][0]["product"]["ean"], "9789462500877");
    assert_eq!(d["order_lines"][1]["type"], "discount");
    assert_eq!(d["order_lines"][1]["unit_price"], "-5.00");
    // 39.98 - 5.00 + 4.95 shipping; tax 3.60 (9%) - 1.05 + 1.04 (21% on shipping).
    assert_eq!(d["shipping_costs"], "4.95");
    assert_eq!(d["total_excl"], "39.93");
    assert_eq!(d["total_tax"], "3.59");
    assert_eq!(d["total_incl"], "43.52");
    assert_eq!(d, cs.order(id).unwrap());

    cs.poison_quantity(id);
    cs.poison_totals(id);
    let p = cs.order(id).unwrap();
    assert_eq!(p["order_lines"][0]["quantity"], "abc");
    assert_eq!(p["total_incl"], "53.52");

    let missing = c
        .get(format!("{}/api/order/999999/", sb.cloudsuite_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"detail": "Not found."})
    );
    let no_slash = c
        .get(format!("{}/api/order/{id}", sb.cloudsuite_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(no_slash.status(), 301);
    assert_eq!(no_slash.headers()["location"], format!("/api/order/{id}/"));
    sb.shutdown().await;
}

#[tokio::test]
async fn seeded_orders_are_consistent() {
    let sb = start(
        CloudSuiteOptions {
            seed_orders: 60,
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let dec = |v: &Value| v.as_str().unwrap().parse::<Decimal>().unwrap();
    for o in sb.cloudsuite.orders() {
        let lines = o["order_lines"].as_array().unwrap();
        assert!(!lines.is_empty() && lines.len() <= 6);
        let excl: Decimal = lines
            .iter()
            .map(|l| {
                (dec(&l["quantity"]) * dec(&l["unit_price"]))
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            })
            .sum::<Decimal>()
            + dec(&o["shipping_costs"]);
        assert_eq!(excl, dec(&o["total_excl"]), "{o}");
        assert_eq!(
            dec(&o["total_excl"]) + dec(&o["total_tax"]),
            dec(&o["total_incl"])
        );
        assert_eq!(o["state"], "confirmed");
        let pc = o["invoice_address"]["postcode"].as_str().unwrap();
        assert!(pc.len() == 7 && pc.as_bytes()[4] == b' ', "{pc}");
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn patch_enforces_transitions_and_records_history() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let cs = &sb.cloudsuite;
    let id = cs.add_order(OrderSpec::default());
    let c = client();
    let token = access_token(&sb, &c).await;
    let url = format!("{}/api/order/{id}/", sb.cloudsuite_url);
    let patch = |body: Value| c.patch(&url).bearer_auth(&token).json(&body).send();
    let before = cs.order(id).unwrap()["modified_date"].clone();

    let r = patch(json!({"erp_order_number": "SO000001", "state": "processing", "reference": "X"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["state"], "processing");
    assert_eq!(d["erp_order_number"], "SO000001");
    assert_eq!(
        d["reference"],
        format!("CS{id}"),
        "read-only fields are ignored"
    );
    assert!(d["modified_date"].as_str() > before.as_str());

    let r = patch(json!({"state": "confirmed"})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"state": ["Invalid state transition from processing to confirmed."]})
    );
    let r = patch(json!({"state": "foo"})).await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"state": ["\"foo\" is not a valid choice."]})
    );
    let r = patch(json!({"shipment_state": "sent"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = patch(json!({"state": "done"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = patch(json!({"state": "cancel"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = patch(json!({"state": "done"})).await.unwrap();
    assert_eq!(r.status(), 200, "same -> same is a no-op");

    let fields: Vec<(String, Option<String>, String)> = cs
        .history(id)
        .into_iter()
        .map(|c| (c.field, c.to, c.via))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("state".into(), Some("processing".into()), "PATCH".into()),
            (
                "erp_order_number".into(),
                Some("SO000001".into()),
                "PATCH".into()
            ),
            ("shipment_state".into(), Some("sent".into()), "PATCH".into()),
            ("state".into(), Some("done".into()), "PATCH".into()),
        ]
    );
    assert_eq!(cs.write_requests(id), 7);

    let other = cs.add_order(OrderSpec::default());
    let r = c
        .patch(format!("{}/api/order/{other}/", sb.cloudsuite_url))
        .bearer_auth(&token)
        .json(&json!({"shipment_state": "sent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["shipment_state"].is_array());
    sb.shutdown().await;
}

#[tokio::test]
async fn put_requires_fields_and_a_stale_put_moves_state_back() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let cs = &sb.cloudsuite;
    let id = cs.add_order(OrderSpec {
        lines: vec![
            LineSpec::new("201_STUK", Decimal::ONE),
            LineSpec::new("301_KG", Decimal::new(530, 3)),
        ],
        ..Default::default()
    });
    let c = client();
    let token = access_token(&sb, &c).await;
    let url = format!("{}/api/order/{id}/", sb.cloudsuite_url);

    let r = c
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"state": "confirmed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let errors = r.json::<Value>().await.unwrap();
    for f in [
        "currency",
        "order_date",
        "customer",
        "invoice_address",
        "shipment_address",
        "order_lines",
    ] {
        assert_eq!(errors[f], json!(["This field is required."]), "{f}");
    }
    assert!(errors.get("state").is_none());

    // A client reads the order, the shop moves it on, the client PUTs its stale copy.
    let stale = cs.order(id).unwrap();
    cs.set_state(id, "processing");
    let mut body = stale.clone();
    body["erp_order_number"] = json!("SO000042");
    body["order_lines"][0]["erp_line_number"] = json!(10);
    body["order_lines"][1]["erp_line_number"] = json!(20);
    let r = c
        .put(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["state"], "confirmed");
    assert_eq!(d["order_lines"][1]["erp_line_number"], 20);
    let history = cs.history(id);
    let state_changes: Vec<_> = history
        .iter()
        .filter(|c| c.field == "state")
        .map(|c| (c.from.clone(), c.to.clone(), c.via.as_str()))
        .collect();
    assert_eq!(
        state_changes,
        vec![
            (Some("confirmed".into()), Some("processing".into()), "ADMIN"),
            (Some("processing".into()), Some("confirmed".into()), "PUT"),
        ]
    );
    let line_id = stale["order_lines"][0]["id"].as_i64().unwrap();
    assert!(history.iter().any(
        |c| c.field == format!("order_lines[{line_id}].erp_line_number")
            && c.to.as_deref() == Some("10")
    ));

    // A line without id is rejected; lines left out are deleted; absent
    // erp_order_number becomes null (full replace).
    let mut no_id = body.clone();
    no_id["order_lines"] = json!([{"erp_line_number": 10}]);
    let r = c
        .put(&url)
        .bearer_auth(&token)
        .json(&no_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"order_lines": [{"id": ["This field is required."]}]})
    );
    let mut shorter = body.clone();
    shorter["order_lines"] = json!([body["order_lines"][0].clone()]);
    shorter.as_object_mut().unwrap().remove("erp_order_number");
    let r = c
        .put(&url)
        .bearer_auth(&token)
        .json(&shorter)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["order_lines"].as_array().unwrap().len(), 1);
    assert_eq!(d["erp_order_number"], Value::Null);
    assert_eq!(cs.write_requests(id), 4);
    sb.shutdown().await;
}

#[tokio::test]
async fn trickle_adds_confirmed_orders() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let handle = sb
        .cloudsuite
        .confirm_new_orders_every(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(110)).await;
    let n = sb.cloudsuite.order_ids().len();
    assert!((2..=7).contains(&n), "{n}");
    sb.shutdown().await;
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("trickle stops with the sandbox")
        .unwrap();
}
