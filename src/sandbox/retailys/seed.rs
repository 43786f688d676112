//! Generated Retailys orders: Czech customers, catalogue articles priced with
//! VAT, shipping, the odd voucher, and every amount a JSON float computed in
//! decimals first (so the text the client reads is exactly the shop's amount).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{RetailysOrderSpec, SimOrder, State, api};
use crate::sandbox::catalog;

const PEOPLE: [(&str, &str, &str, &str, &str); 5] = [
    (
        "Jana Nováková",
        "Vinohradská 12",
        "Praha",
        "120 00",
        "jana.novakova@example.cz",
    ),
    (
        "Petr Svoboda",
        "Masarykova 4",
        "Brno",
        "602 00",
        "petr.svoboda@example.cz",
    ),
    (
        "Lucie Dvořáková",
        "Nádražní 88",
        "Ostrava",
        "702 00",
        "lucie@example.cz",
    ),
    (
        "Tomáš Černý",
        "Husova 3",
        "Plzeň",
        "301 00",
        "t.cerny@example.cz",
    ),
    (
        "Eva Procházková",
        "Palackého 17",
        "Olomouc",
        "779 00",
        "eva.p@example.cz",
    ),
];

/// A decimal as the JSON float whose shortest text is that decimal.
pub(super) fn float(d: Decimal) -> Value {
    d.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn dec(f: f64) -> Decimal {
    f.to_string().parse().unwrap_or_default()
}

/// Creates one order in `st` and returns its id.
pub(super) fn insert(
    st: &mut State,
    rng: &mut StdRng,
    spec: &RetailysOrderSpec,
    when: DateTime<Utc>,
) -> i64 {
    let id = st.next_id;
    st.next_id += 1;
    let status = st
        .statuses
        .iter()
        .find(|s| s.name == spec.status)
        .or_else(|| st.statuses.first())
        .cloned();
    let mut items = Vec::new();
    let mut gross = Decimal::ZERO;
    let lines: Vec<(String, String, i64, Decimal, Decimal, u32)> = if spec.items.is_empty() {
        let products = catalog::products();
        (0..rng.random_range(1..=4))
            .map(|_| {
                let p = &products[rng.random_range(0..products.len())];
                let base = p.price();
                let final_price =
                    (base * Decimal::from(100 + p.tax_rate) / Decimal::from(100)).round_dp(2);
                (
                    p.sku.to_string(),
                    p.description.to_string(),
                    rng.random_range(1..=3),
                    final_price,
                    base,
                    p.tax_rate,
                )
            })
            .collect()
    } else {
        spec.items
            .iter()
            .map(|(code, count, fin, base, vat)| {
                (
                    code.clone(),
                    code.clone(),
                    *count,
                    dec(*fin),
                    dec(*base),
                    *vat,
                )
            })
            .collect()
    };
    for (n, (code, name, count, final_price, base, vat)) in lines.into_iter().enumerate() {
        gross += final_price * Decimal::from(count);
        items.push(json!({
            "id": id * 10 + n as i64,
            "article": {"id": 1000 + n as i64, "code": code, "ean": catalog::product(&code).map(|p| p.ean)},
            "name": name, "count": count, "ordered": count, "waiting_count": 0, "note": null,
            "price": {"base_price": float(base), "final_price": float(final_price), "vat": vat,
                      "vat_value": float(final_price - base), "currency": "CZK"},
        }));
    }
    // The odd voucher: a negative line, as the shop records discounts.
    if spec.items.is_empty() && rng.random_bool(0.1) {
        let amount = Decimal::new(rng.random_range(50..500), 1);
        gross -= amount;
        let base = (amount * Decimal::from(100) / Decimal::from(121)).round_dp(2);
        items.push(json!({
            "id": id * 10 + 9, "article": null, "name": "Sleva (voucher)", "count": 1, "ordered": 1,
            "waiting_count": 0, "note": null,
            "price": {"base_price": float(-base), "final_price": float(-amount), "vat": 21,
                      "vat_value": float(base - amount), "currency": "CZK"},
        }));
    }
    let shipping_price = if spec.items.is_empty() && gross < Decimal::from(100) {
        Decimal::new(990, 1)
    } else {
        Decimal::ZERO
    };
    gross += shipping_price;
    let person = PEOPLE[rng.random_range(0..PEOPLE.len())];
    let company = rng.random_bool(0.3);
    let paid = spec.status != "New" && spec.status != "Awaiting payment";
    let date = when
        .with_timezone(&chrono_tz::Europe::Prague)
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    let mut json = json!({
        "id": id, "status_id": null,
        "customer": {"id": 5000 + rng.random_range(0..400), "name": person.0, "email": person.4},
        "company": if company { json!({"id": 77, "name": "Obchod s.r.o."}) } else { Value::Null },
        "channel": {"id": spec.channel_id, "name": "E-shop"},
        "shipping": {"id": 7, "name": "PPL", "price": float(shipping_price),
                     "base_price": float((shipping_price * Decimal::from(100) / Decimal::from(121)).round_dp(2)), "vat": 21},
        "payment": {"id": 3, "name": if paid { "Card" } else { "Bank transfer" }},
        "date_order": date, "date_maturity": null, "date_paid": if paid { json!(date) } else { Value::Null },
    });
    // Two halves: one json! of this size exceeds the macro recursion limit.
    let contact = json!({
        "email": person.4, "phone": "+420 777 123 456", "name": person.0, "street": person.1,
        "city": person.2, "zip": person.3, "state_code": "CZ",
        "company_nr": if company { json!("27074358") } else { Value::Null },
        "company_vat": if company { json!("CZ27074358") } else { Value::Null },
        "delivery_email": null, "delivery_phone": null,
        "delivery_name": person.0, "delivery_street": person.1, "delivery_city": person.2,
        "delivery_zip": person.3, "delivery_state_code": "CZ",
        "note": null, "our_note": null, "hash": format!("{:016x}", rng.random::<u64>()),
        "main_currency_code": "CZK", "order_currency_code": "CZK", "currency_rate": 1.0,
        "money": float(gross), "paid": if paid { float(gross) } else { json!(0.0) },
        "items": items, "weight": 1.25, "trackings": [],
        "sent": false, "delivered": false, "done": false, "canceled": false,
        "order_url": format!("https://shop.example.cz/order/{id}"), "invoice_url": null, "ip": "192.0.2.10",
        "external_order_prefix": null, "external_order_id": null,
        "external_payment_id": null, "external_payment_url": null,
    });
    if let (Some(obj), Value::Object(more)) = (json.as_object_mut(), contact) {
        obj.extend(more);
    }
    if rng.random_bool(0.2) {
        json["external_order_prefix"] = json!("MP-");
        json["external_order_id"] = json!(format!("{}", 700000 + id));
    }
    let mut order = SimOrder {
        json,
        history: Vec::new(),
        writes: Vec::new(),
        detail_reads: 0,
    };
    if let Some(s) = status {
        api::apply_status(&mut order, &s);
    }
    // Seeded history is the shop's own (type "order"), not ours.
    order.history.push(json!({"id": st.next_record, "type": "order", "record": {"name": "created", "status": "ok"}}));
    st.next_record += 1;
    st.orders.insert(id, order);
    id
}

pub(super) fn seed(st: &mut State, n: usize, seed: u64, spread: Duration) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Utc::now();
    let span = spread.as_secs().max(1) as i64;
    let mut times: Vec<DateTime<Utc>> = (0..n)
        .map(|_| now - chrono::Duration::seconds(rng.random_range(0..span)))
        .collect();
    times.sort();
    times
        .into_iter()
        .map(|when| {
            let roll = rng.random_range(0..100);
            let status = match roll {
                0..45 => "New",
                45..77 => "Paid",
                77..87 => "Awaiting payment",
                87..92 => "Cancelled",
                92..96 => "Shipped",
                _ => "On hold",
            };
            let spec = RetailysOrderSpec {
                status: status.into(),
                ..Default::default()
            };
            insert(st, &mut rng, &spec, when)
        })
        .collect()
}
