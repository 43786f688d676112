//! CloudSuite simulator over HTTP: auth, list/filters/pagination, PATCH, PUT.

use std::collections::HashSet;
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::{access_token, client, start};
use crate::sandbox::cloudsuite::{
    AddressShape, CloudSuiteOptions, CustomerShape, LineSpec, OrderSpec, Shape,
};
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
    // Offline orders (entered outside the webshop): `offline=false` leaves
    // them out, `offline=true` lists only them.
    let offline = cs.add_order(OrderSpec {
        confirm_date: Some(at(29, 9, 0)),
        offline: true,
        ..Default::default()
    });
    assert_eq!(ids("?state=confirmed").await, vec![early, mid, offline]);
    assert_eq!(
        ids("?state=confirmed&offline=false").await,
        vec![early, mid]
    );
    assert_eq!(ids("?offline=True").await, vec![offline]);
    assert_eq!(cs.order(offline).unwrap()["offline"], true);

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

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .and_then(|s| s.parse::<Decimal>().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Every shape, for tests that pick one explicitly.
const EVERYTHING: Shape = Shape {
    customer: CustomerShape::Object,
    addresses: AddressShape::Object,
    totals: true,
    line_tax_rate: true,
    extras: true,
};

#[tokio::test]
async fn detail_follows_the_documents_by_default() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let cs = &sb.cloudsuite;
    let id = cs.add_order(OrderSpec {
        lines: vec![LineSpec::new("124_STUK", Decimal::from(2))],
        discount: Some(Decimal::from(5)),
        ..Default::default()
    });
    assert_eq!(id % 10, 1, "a documented-shape id");
    assert_eq!(id % 3, 1, "an id without the undocumented extras");
    let c = client();
    let token = access_token(&sb, &c).await;
    let d: Value = c
        .get(format!("{}/api/order/{id}/", sb.cloudsuite_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d, cs.order(id).unwrap());
    assert!(d["customer"].is_i64(), "{d}");
    assert!(d["invoice_address"].is_i64() && d["shipment_address"].is_i64());
    for absent in [
        "total_excl",
        "total_tax",
        "total_incl",
        "shipping_costs",
        "shipping_method",
        "payment_method",
        "invoice_address_key",
        "shipment_address_key",
    ] {
        assert!(d.get(absent).is_none(), "{absent} served: {d}");
    }
    let line = &d["order_lines"][0];
    assert_eq!(
        line["product"],
        json!({"origin": "cloudsuite", "key": "124_STUK"})
    );
    assert_eq!(line["quantity"], "2.000");
    assert_eq!(line["unit_price"], "19.99");
    assert_eq!(line["type"], "line");
    assert!(line["erp_line_number"].is_null() && line["id"].is_i64());
    assert!(line.get("tax_rate").is_none());
    assert_eq!(d["order_lines"][1]["unit_price"], "-5.00");
    // Paid: 39.98 - 5.00, tax 3.60 (9 %) - 1.05 (21 %); no shipping.
    assert_eq!(d["paid_amount"], "37.53");

    cs.set_payment_status(id, "started");
    assert_eq!(cs.order(id).unwrap()["paid_amount"], "0.00");
    sb.shutdown().await;
}

#[tokio::test]
async fn detail_totals_add_up_and_poison_is_served() {
    let sb = start(CloudSuiteOptions::default(), ErpOptions::default()).await;
    let cs = &sb.cloudsuite;
    let id = cs.add_order(OrderSpec {
        lines: vec![LineSpec::new("124_STUK", Decimal::from(2))],
        discount: Some(Decimal::from(5)),
        shape: Some(EVERYTHING),
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
    assert_eq!(d["order_lines"][0]["tax_rate"], "9.00");
    assert_eq!(d["order_lines"][1]["type"], "discount");
    assert_eq!(d["order_lines"][1]["unit_price"], "-5.00");
    // 39.98 - 5.00 + 4.95 shipping; tax 3.60 (9%) - 1.05 + 1.04 (21% on shipping).
    assert_eq!(d["shipping_costs"], "4.95");
    assert_eq!(d["total_excl"], "39.93");
    assert_eq!(d["total_tax"], "3.59");
    assert_eq!(d["total_incl"], "43.52");
    assert_eq!(d["paid_amount"], "43.52");
    assert!(d["customer"]["name"].is_string());
    assert!(d["invoice_address"]["house_number"].is_string());
    assert_eq!(d, cs.order(id).unwrap());

    cs.poison_quantity(id);
    cs.poison_totals(id);
    let p = cs.order(id).unwrap();
    assert_eq!(p["order_lines"][0]["quantity"], "abc");
    assert_eq!(p["total_incl"], "53.52");
    assert_eq!(p["paid_amount"], "43.52", "the payment is not poisoned");

    // Poisoned totals are served even where the shape has none.
    let plain = cs.add_order(OrderSpec {
        shape: Some(Shape::DOCUMENTED),
        ..Default::default()
    });
    assert!(cs.order(plain).unwrap().get("total_incl").is_none());
    cs.poison_totals(plain);
    let p = cs.order(plain).unwrap();
    assert_eq!(
        dec(&p["total_excl"]) + dec(&p["total_tax"]) + Decimal::TEN,
        dec(&p["total_incl"])
    );
    cs.unpoison(plain);
    assert!(cs.order(plain).unwrap().get("total_incl").is_none());

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

/// The shape classes one served detail belongs to.
#[derive(Debug, Default)]
struct Seen {
    customer_id: usize,
    customer_object: usize,
    address_id: usize,
    address_id_and_key: usize,
    address_object: usize,
    address_house_number_fields: usize,
    address_street_only: usize,
    totals: usize,
    no_totals: usize,
    line_tax_rate: usize,
    no_line_tax_rate: usize,
    extras: usize,
    no_extras: usize,
    documented: usize,
}

impl Seen {
    fn count(&mut self, o: &Value) {
        let customer_id = o["customer"].is_i64();
        if customer_id {
            self.customer_id += 1;
        } else {
            assert!(o["customer"]["email"].is_string(), "{o}");
            self.customer_object += 1;
        }
        let addresses: Vec<&Value> = [&o["invoice_address"], &o["shipment_address"]].into();
        let has_key = o.get("invoice_address_key").is_some();
        assert_eq!(has_key, o.get("shipment_address_key").is_some(), "{o}");
        let address_id = addresses.iter().all(|a| a.is_i64());
        if address_id && has_key {
            self.address_id_and_key += 1;
            assert_eq!(o["invoice_address_key"]["origin"], "erp");
            assert!(o["shipment_address_key"]["key"].is_string());
        } else if address_id {
            self.address_id += 1;
        } else {
            assert!(addresses.iter().all(|a| a["postcode"].is_string()), "{o}");
            assert!(!has_key);
            self.address_object += 1;
            if addresses.iter().all(|a| a.get("house_number").is_some()) {
                self.address_house_number_fields += 1;
            } else {
                assert!(addresses.iter().all(|a| a.get("house_number").is_none()));
                self.address_street_only += 1;
            }
        }
        let totals = ["total_excl", "total_tax", "total_incl"].map(|k| o.get(k).is_some());
        assert!(totals.iter().all(|t| *t == totals[0]), "all or none: {o}");
        if totals[0] {
            self.totals += 1;
        } else {
            self.no_totals += 1;
        }
        let lines = o["order_lines"].as_array().unwrap();
        let tax_rates = lines.iter().filter(|l| l.get("tax_rate").is_some()).count();
        assert!(tax_rates == 0 || tax_rates == lines.len(), "{o}");
        if tax_rates > 0 {
            self.line_tax_rate += 1;
        } else {
            self.no_line_tax_rate += 1;
        }
        let extras =
            ["shipping_costs", "shipping_method", "payment_method"].map(|k| o.get(k).is_some());
        assert!(extras.iter().all(|e| *e == extras[0]), "{o}");
        let goods = lines.iter().filter(|l| l["type"] == "line");
        for l in goods {
            assert_eq!(l["product"].get("sku").is_some(), extras[0], "{o}");
        }
        if extras[0] {
            self.extras += 1;
        } else {
            self.no_extras += 1;
        }
        assert!(o["paid_amount"].is_string(), "paid_amount is always served");
        if customer_id && address_id && !has_key && !totals[0] && tax_rates == 0 {
            self.documented += 1;
        }
    }
}

#[tokio::test]
async fn every_shape_class_is_served_in_a_seed_of_thirty() {
    let sb = start(
        CloudSuiteOptions {
            seed_orders: 30,
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let mut seen = Seen::default();
    for o in sb.cloudsuite.orders() {
        seen.count(&o);
    }
    let s = &seen;
    for (class, n) in [
        ("customer id", s.customer_id),
        ("customer object", s.customer_object),
        ("address id", s.address_id),
        ("address id + key", s.address_id_and_key),
        ("address object", s.address_object),
        (
            "address object with house_number",
            s.address_house_number_fields,
        ),
        ("address object, number in street", s.address_street_only),
        ("totals", s.totals),
        ("no totals", s.no_totals),
        ("line tax_rate", s.line_tax_rate),
        ("no line tax_rate", s.no_line_tax_rate),
        ("extras", s.extras),
        ("no extras", s.no_extras),
    ] {
        assert!(n > 0, "{class} never served: {seen:?}");
    }
    assert_eq!(s.documented, 18, "most follow the documents: {seen:?}");

    // The rule is the id's, not the generator's: the same ids, the same shapes.
    for o in sb.cloudsuite.orders() {
        let id = o["id"].as_i64().unwrap();
        let shape = Shape::for_order(id);
        assert_eq!(o["customer"].is_i64(), shape.customer == CustomerShape::Id);
        assert_eq!(o.get("total_incl").is_some(), shape.totals);
        assert_eq!(o.get("shipping_costs").is_some(), shape.extras);
    }
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
    let mut with_totals = 0;
    for o in sb.cloudsuite.orders() {
        let lines = o["order_lines"].as_array().unwrap();
        assert!(!lines.is_empty() && lines.len() <= 6);
        let shipping = o.get("shipping_costs").map_or(Decimal::ZERO, dec);
        let excl: Decimal = lines
            .iter()
            .map(|l| round2(dec(&l["quantity"]) * dec(&l["unit_price"])))
            .sum::<Decimal>()
            + shipping;
        if o.get("total_excl").is_some() {
            with_totals += 1;
            assert_eq!(excl, dec(&o["total_excl"]), "{o}");
            assert_eq!(
                dec(&o["total_excl"]) + dec(&o["total_tax"]),
                dec(&o["total_incl"])
            );
        }
        let paid = dec(&o["paid_amount"]);
        if matches!(
            o["payment_status"].as_str(),
            Some("paid" | "closed_success")
        ) {
            // Paid in full: the net amount plus at most 21 % VAT, rounded
            // per line (a cent per line at most).
            let most = excl * Decimal::new(121, 2) + Decimal::new(lines.len() as i64 + 1, 2);
            assert!(paid >= excl && paid <= most, "{o}");
            if let Some(incl) = o.get("total_incl") {
                assert_eq!(paid, dec(incl), "{o}");
            }
        } else {
            assert!(paid.is_zero(), "{o}");
        }
        assert_eq!(o["state"], "confirmed");
        for a in [&o["invoice_address"], &o["shipment_address"]] {
            if let Some(pc) = a["postcode"].as_str() {
                assert!(pc.len() == 7 && pc.as_bytes()[4] == b' ', "{pc}");
            }
        }
    }
    assert!(with_totals > 0);
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

/// A PUT takes the order as served with its related records named by pk,
/// as CloudSuite's 3c body does; an embedded record where a pk belongs is
/// refused as DRF's `PrimaryKeyRelatedField` refuses it.
#[tokio::test]
async fn put_accepts_the_order_as_served_with_related_records_by_pk() {
    let sb = start(
        CloudSuiteOptions {
            seed_orders: 10,
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let cs = &sb.cloudsuite;
    let c = client();
    let token = access_token(&sb, &c).await;
    let put = |id: i64, body: Value| {
        c.put(format!("{}/api/order/{id}/", sb.cloudsuite_url))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    // Ten consecutive ids cover every row of the rule.
    for id in cs.order_ids() {
        let mut body = cs.order(id).unwrap();
        body["erp_order_number"] = json!(format!("SO{id}"));
        for (i, line) in body["order_lines"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            line["erp_line_number"] = json!(10 * (i + 1));
        }
        let served = body.clone();
        let embedded: Vec<&str> = ["customer", "invoice_address", "shipment_address"]
            .into_iter()
            .filter(|f| body[*f].is_object())
            .collect();
        if !embedded.is_empty() {
            let r = put(id, body.clone()).await.unwrap();
            assert_eq!(r.status(), 400, "{id}");
            let errors: Value = r.json().await.unwrap();
            for f in &embedded {
                assert_eq!(
                    errors[*f],
                    json!(["Incorrect type. Expected pk value, received dict."]),
                    "{id}"
                );
                body[*f] = body[*f]["id"].clone();
            }
        }
        let r = put(id, body.clone()).await.unwrap();
        assert_eq!(r.status(), 200, "{id}: {}", r.text().await.unwrap());
        let d = cs.order(id).unwrap();
        assert_eq!(d["erp_order_number"], format!("SO{id}"));
        assert_eq!(d["order_lines"][0]["erp_line_number"], 10);
        assert_eq!(
            d["customer"], served["customer"],
            "{id}: a PUT keeps the shape the detail serves"
        );
    }

    // An address given by its key only, as the offline-order page allows.
    let id = cs.order_ids()[0];
    let mut by_key = cs.order(id).unwrap();
    let obj = by_key.as_object_mut().unwrap();
    obj.remove("shipment_address");
    obj.insert(
        "shipment_address_key".into(),
        json!({"origin": "erp", "key": "ADR-000002"}),
    );
    assert_eq!(put(id, by_key.clone()).await.unwrap().status(), 200);
    by_key["shipment_address_key"] = json!({"origin": "erp"});
    let r = put(id, by_key).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"shipment_address_key": {"key": ["This field is required."]}})
    );

    let mut wrong = cs.order(id).unwrap();
    wrong["customer"] = json!("Jan de Vries");
    wrong["invoice_address"] = Value::Null;
    let r = put(id, wrong).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({
            "customer": ["Incorrect type. Expected pk value, received str."],
            "invoice_address": ["This field may not be null."],
        })
    );
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
