//! CloudSuite's own examples, run through this connector's mapper, list
//! reader and line-number write-back. The files are in
//! `tests/fixtures/vendor/cloudsuite/`; see the README there.
//!
//! The one order the documents show as CloudSuite holds it is the body of
//! step "3c" of seed 002 (`PUT /api/order/12345/`). It is a request body, so
//! it leaves out what CloudSuite fills in itself: the order's `id` (it is in
//! the URL) and the lines' `id` (both "Readonly" in the field list SOURCES.md
//! quotes). It also shows no `order_date` and no `unit_price`, both
//! documented fields. Each test below shows where ordersync stops, naming
//! the field, and what it makes of the order once those documented fields
//! are there.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::ListPage;
use super::map::{self, MapContext};
use crate::http::{Failure, Reply};
use crate::sources::WriteBack;
use crate::store::{Disposition, IncomingOrder, LineNumber};

const PUT_3C: &str = include_str!("../../../tests/fixtures/vendor/cloudsuite/order-put-3c.json");
const LIST_ENVELOPE: &str =
    include_str!("../../../tests/fixtures/vendor/cloudsuite/order-list-envelope.json");

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn documented() -> Value {
    serde_json::from_str(PUT_3C).unwrap()
}

/// The default configuration (payment_ok, Europe/Amsterdam).
fn incoming(v: &Value) -> Result<IncomingOrder, String> {
    let payment_ok: Vec<String> = ["closed_success", "paid", "account", "none"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ctx = MapContext {
        source: "webshop-nl",
        timezone: chrono_tz::Europe::Amsterdam,
        payment_ok: &payment_ok,
        countries: crate::model::CountryMap::none(),
    };
    map::incoming(&ctx, &v.to_string(), v)
}

/// The 3c body with the documented read-only ids CloudSuite adds itself:
/// 12345 from the URL, and line ids chosen here (the example shows none).
fn with_readonly_ids() -> Value {
    let mut v = documented();
    v["id"] = json!(12345);
    v["order_lines"][0]["id"] = json!(101);
    v["order_lines"][1]["id"] = json!(102);
    v
}

#[test]
fn put_3c_as_documented_has_no_id_and_cannot_be_keyed() {
    assert_eq!(
        incoming(&documented()).unwrap_err(),
        "order detail has no id"
    );
}

#[test]
fn put_3c_with_its_urls_id_parks_naming_the_date_fields() {
    let mut v = documented();
    v["id"] = json!(12345);
    let inc = incoming(&v).unwrap();
    assert_eq!(inc.external_id, "12345");
    assert_eq!(inc.version, None, "no modified_date");
    assert_eq!(
        inc.mapped.unwrap_err(),
        "cannot map CloudSuite order 12345: none of confirm_date, create_date or order_date is set"
    );
    // With the documented order_date, the next documented field the body
    // leaves out is the line id...
    v["order_date"] = json!("2021-06-29");
    assert_eq!(
        incoming(&v).unwrap().mapped.unwrap_err(),
        "cannot map CloudSuite order 12345: order_lines[0] has no id"
    );
    // ...and, with line ids, the unit price.
    let mut v = with_readonly_ids();
    v["order_date"] = json!("2021-06-29");
    assert_eq!(
        incoming(&v).unwrap().mapped.unwrap_err(),
        "cannot map CloudSuite order 12345: order line 101: unit_price: expected a decimal, got null"
    );
}

/// With the documented fields the body leaves out (ids, `order_date`,
/// `unit_price`; the values are this test's), the rest of 3c maps as it
/// stands: `customer` as an id, both addresses as ids, no totals (net from
/// the lines). The body has no `payment_status`: read as `none` (no
/// payment option in the site), which the default `payment_ok` pushes.
#[test]
fn put_3c_completed_with_documented_fields_maps_and_reads_no_payment_status_as_none() {
    let mut v = with_readonly_ids();
    v["order_date"] = json!("2021-06-29");
    v["order_lines"][0]["unit_price"] = json!("10.00");
    v["order_lines"][1]["unit_price"] = json!("4.50");
    let m = incoming(&v).unwrap().mapped.unwrap();
    assert_eq!(m.disposition, Disposition::Push);
    let o = &m.order;
    assert_eq!(o.order_key, "webshop-nl:12345");
    assert_eq!(o.reference.as_deref(), Some("CS48193"));
    assert_eq!(o.currency, "EUR");
    assert!(!o.prices_include_tax);
    assert_eq!(o.ordered_at.to_rfc3339(), "2021-06-28T22:00:00+00:00");
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("1324"));
    assert_eq!(o.customer.name, None);
    // shipment_address 1695 and invoice_address 1652 are ids: no address.
    assert_eq!((&o.billing_address, &o.shipping_address), (&None, &None));
    let lines: Vec<_> = o
        .lines
        .iter()
        .map(|l| {
            (
                l.source_line_id.as_str(),
                l.sku.as_deref(),
                l.description.as_deref(),
                l.quantity,
                l.unit_price,
                l.line_total,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                "101",
                Some("124_STUK"),
                Some("My description"),
                d("1"),
                d("10.00"),
                d("10.00")
            ),
            (
                "102",
                Some("123_KG"),
                Some("My description 2"),
                d("2"),
                d("4.50"),
                d("9.00")
            ),
        ]
    );
    assert!(o.discounts.is_empty() && o.shipping.is_none());
    assert_eq!(
        (o.totals.net, o.totals.tax, o.totals.gross),
        (Some(d("19.00")), None, None),
        "net from the lines; tax and gross are not stated"
    );
    let pay = o.payment.as_ref().unwrap();
    assert_eq!(
        (pay.method.as_deref(), pay.status.as_deref()),
        (None, Some("none"))
    );
}

/// SOURCES.md's list envelope is a schematic (`N`, `<url …>`, `[ … ]`), not
/// JSON: an answer like it is retried, never read as "no orders".
#[test]
fn list_envelope_as_documented_is_not_json_and_is_retried() {
    assert!(serde_json::from_str::<Value>(LIST_ENVELOPE).is_err());
    let reply = Reply {
        status: 200,
        headers: Default::default(),
        body: LIST_ENVELOPE.to_string().into(),
        what: "GET api.cloudsuite.io/api/order/".into(),
    };
    let failure = reply.json::<ListPage>().err().unwrap();
    assert!(matches!(failure, Failure::Retryable { .. }));
    assert!(
        failure.message().starts_with(
            "GET api.cloudsuite.io/api/order/ answered with a body that is not the expected JSON: "
        ),
        "{failure}"
    );
}

fn write_back() -> WriteBack {
    WriteBack {
        order_key: "webshop-nl:12345".into(),
        external_id: "12345".into(),
        erp_order_number: "123456789".into(),
        shipped_before: Vec::new(),
        in_doubt: true,
        progress: Default::default(),
        step: Default::default(),
        lines: vec![
            LineNumber {
                source_line_id: "101".into(),
                erp_line_number: "11".into(),
            },
            LineNumber {
                source_line_id: "102".into(),
                erp_line_number: "22".into(),
            },
        ],
    }
}

/// The PUT ordersync sends is the order as read with `erp_line_number` set
/// on each line, matched by the line's `id`. From the order as CloudSuite
/// holds it (3c plus its read-only line ids) that is the documented 3c body.
#[test]
fn line_numbers_put_has_the_documented_3c_shape() {
    let mut read = with_readonly_ids();
    for line in read["order_lines"].as_array_mut().unwrap() {
        line["erp_line_number"] = Value::Null;
    }
    let mut raw = super::raw_order(&read);
    assert!(super::set_line_numbers(&mut raw, &write_back()));
    let mut current = super::order_value(&raw);
    // Read-only fields aside, what is sent is 3c field for field.
    current.as_object_mut().unwrap().remove("id");
    for line in current["order_lines"].as_array_mut().unwrap() {
        line.as_object_mut().unwrap().remove("id");
    }
    assert_eq!(current, documented());
}

/// Lines without an `id` (as the 3c body shows them) cannot be matched:
/// nothing is set, and no PUT is sent.
#[test]
fn line_numbers_need_the_line_ids_3c_does_not_show() {
    let mut read = documented();
    for line in read["order_lines"].as_array_mut().unwrap() {
        line["erp_line_number"] = Value::Null;
    }
    let mut raw = super::raw_order(&read);
    assert!(!super::set_line_numbers(&mut raw, &write_back()));
    let current = super::order_value(&raw);
    assert!(
        current["order_lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["erp_line_number"].is_null())
    );
}
