//! Retailys as the documents show it, run through this connector's list
//! reader and mapper. The files are in `tests/fixtures/vendor/retailys/`;
//! see the README there.
//!
//! Seed 001 shows no payload at all. SOURCES.md gives the `OrderModel` as a
//! field list (from Retailys' generated PHP SDK), and the list answer as a
//! schematic. `order-model.json` is one order carrying exactly the listed
//! fields (the values are placeholders of the documented types; `customer`,
//! `company`, `channel`, `shipping`, `payment` as the `{id, api_link}` stubs
//! of `expanded=false`, since the expanded objects' fields are not listed).
//!
//! The field list has no status field. The mapper reads `status_id` (or
//! `status.id`) when a tenant sends it and otherwise decides by the order's
//! documented flags (`canceled`, `done`, `sent`, `delivered`).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::OrdersPage;
use super::map;
use super::statuses::{Status, StatusTable, Wanted};
use crate::config::StatusRef;
use crate::http::{Failure, Reply};
use crate::model::CountryMap;
use crate::store::{Disposition, IncomingOrder};

const ORDER_MODEL: &str = include_str!("../../../tests/fixtures/vendor/retailys/order-model.json");
const LIST_ENVELOPE: &str =
    include_str!("../../../tests/fixtures/vendor/retailys/orders-list-envelope.json");

/// `OrderModel`'s fields as SOURCES.md lists them ("Order fields
/// (`OrderModel`, wire names)"), in its order.
const DOCUMENTED_FIELDS: [&str; 47] = [
    "id",
    "customer",
    "company",
    "channel",
    "shipping",
    "payment",
    "date_order",
    "date_maturity",
    "date_paid",
    "email",
    "phone",
    "name",
    "street",
    "city",
    "zip",
    "state_code",
    "company_nr",
    "company_vat",
    "delivery_email",
    "delivery_phone",
    "delivery_name",
    "delivery_street",
    "delivery_city",
    "delivery_zip",
    "delivery_state_code",
    "note",
    "our_note",
    "hash",
    "main_currency_code",
    "order_currency_code",
    "currency_rate",
    "money",
    "paid",
    "items",
    "weight",
    "trackings",
    "sent",
    "delivered",
    "done",
    "canceled",
    "order_url",
    "invoice_url",
    "ip",
    "external_order_prefix",
    "external_order_id",
    "external_payment_id",
    "external_payment_url",
];

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn documented() -> Value {
    serde_json::from_str(ORDER_MODEL).unwrap()
}

/// A shop's status table (the documents give the model, not a shop's
/// values), with the default import: every status that neither completes
/// nor cancels an order.
fn table() -> StatusTable {
    let s = |id, name: &str, complete_order, cancel_order| Status {
        id,
        name: name.into(),
        complete_order,
        cancel_order,
    };
    StatusTable::resolve(
        vec![
            s(101, "New", false, false),
            s(104, "Processing", false, false),
            s(117, "Shipped", true, false),
            s(120, "Cancelled", false, true),
        ],
        &Wanted {
            import: None,
            processing: &StatusRef::Name("Processing".into()),
            shipped: Some(&StatusRef::Name("Shipped".into())),
            cancelled: None,
        },
        "sources[0]",
    )
    .unwrap()
}

fn incoming(v: &Value) -> IncomingOrder {
    map::incoming(
        "eshop-cz",
        &table(),
        CountryMap::none(),
        &v.to_string(),
        v,
        false,
    )
    .unwrap()
}

/// The key fields every mapping of the documented order must give.
fn assert_documented_fields(o: &crate::model::Order) {
    assert_eq!(o.order_key, "eshop-cz:1001");
    assert_eq!(o.external_id, "1001");
    assert_eq!(o.reference, None, "no external_order_id");
    assert_eq!(o.ordered_at.to_rfc3339(), "2019-12-01T07:15:30+00:00");
    assert_eq!(o.currency, "CZK");
    assert!(o.prices_include_tax, "final_price includes VAT");
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("501"));
    assert_eq!(o.customer.name.as_deref(), Some("Jan Novák"));
    assert_eq!(o.customer.email.as_deref(), Some("jan.novak@example.cz"));
    assert_eq!(o.lines.len(), 1);
    let l = &o.lines[0];
    assert_eq!(l.source_line_id, "1");
    assert_eq!(
        l.sku.as_deref(),
        Some("44"),
        "article id: no code in the stub"
    );
    assert_eq!(l.description.as_deref(), Some("Hrnek"));
    assert_eq!(
        (l.quantity, l.unit_price, l.line_total, l.tax_rate),
        (d("2"), d("121.0"), d("242.0"), Some(d("21")))
    );
    // The shipping stub has no name and no price: no shipping entry.
    assert!(o.shipping.is_none() && o.discounts.is_empty());
    assert_eq!(
        (o.totals.net, o.totals.tax, o.totals.gross),
        (Some(d("200.0")), Some(d("42.0")), Some(d("242.0")))
    );
    let to = o.shipping_address.as_ref().unwrap();
    assert_eq!(
        (
            to.name.as_deref(),
            to.street.as_deref(),
            to.postcode.as_deref(),
            to.city.as_deref(),
            to.country.as_deref()
        ),
        (
            Some("Jan Novák"),
            Some("Vinohradská 12"),
            Some("120 00"),
            Some("Praha"),
            Some("CZ")
        )
    );
    assert_eq!(o.billing_address, o.shipping_address);
    let pay = o.payment.as_ref().unwrap();
    assert_eq!(
        (pay.method.as_deref(), pay.status.as_deref()),
        (None, Some("unpaid"))
    );
}

#[test]
fn the_fixture_has_exactly_the_documented_order_model_fields() {
    let v = documented();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut documented_sorted = DOCUMENTED_FIELDS.to_vec();
    documented_sorted.sort_unstable();
    assert_eq!(keys, documented_sorted);
    assert!(v.get("status_id").is_none() && v.get("status").is_none());
    let item = &v["items"][0];
    for field in [
        "id",
        "article",
        "name",
        "count",
        "ordered",
        "waiting_count",
        "note",
        "price",
        "price_original",
    ] {
        assert!(item.get(field).is_some(), "items[].{field}");
    }
    assert_eq!(item.as_object().unwrap().len(), 9);
}

/// The documented order maps (it used to park with "status_id is
/// missing": a field no document shows). Without a status its flags decide:
/// open (not cancelled, done, sent or delivered) is imported.
#[test]
fn the_documented_order_model_maps() {
    let m = incoming(&documented()).mapped.unwrap();
    assert_documented_fields(&m.order);
    assert_eq!(m.disposition, Disposition::Push);
    let mut done = documented();
    done["done"] = json!(true);
    assert!(matches!(
        incoming(&done).mapped.unwrap().disposition,
        Disposition::Hold(r) if r.contains("`done` is set")
    ));
    let mut cancelled = documented();
    cancelled["canceled"] = json!(true);
    assert!(matches!(
        incoming(&cancelled).mapped.unwrap().disposition,
        Disposition::Cancel(_)
    ));
}

/// With a `status_id` (the name the status PATCH body and the list filter
/// use), the documented order maps: the missing status is the only reason
/// it does not.
#[test]
fn the_documented_order_model_with_a_status_id_maps() {
    let mut v = documented();
    v["status_id"] = json!(101);
    let inc = incoming(&v);
    assert_eq!(inc.version.as_deref(), Some("status 101"));
    let m = inc.mapped.unwrap();
    assert_eq!(m.disposition, Disposition::Push, "New is imported");
    assert_documented_fields(&m.order);
}

/// SOURCES.md's `OrdersModel` is a schematic (`{page, per_page, pages,
/// total}`, `[OrderModel…]`), not JSON: an answer like it is retried.
#[test]
fn list_envelope_as_documented_is_not_json_and_is_retried() {
    assert!(serde_json::from_str::<Value>(LIST_ENVELOPE).is_err());
    let reply = Reply {
        status: 200,
        headers: Default::default(),
        body: LIST_ENVELOPE.to_string().into(),
        what: "GET api.retailys.com/v1/System/Orders".into(),
    };
    let failure = reply.json::<OrdersPage>().err().unwrap();
    assert!(matches!(failure, Failure::Retryable { .. }));
    assert!(
        failure.message().starts_with(
            "GET api.retailys.com/v1/System/Orders answered with a body that is not the expected JSON: "
        ),
        "{failure}"
    );
}

/// `canonical_json` (the benchmarks' naive peer uses it) gives what the
/// connector's own mapping gives, and nothing for an order not to push.
#[test]
fn canonical_json_is_the_connectors_mapping() {
    let statuses = json!([
        {"id": 101, "name": "New"},
        {"id": 104, "name": "Processing"},
        {"id": 117, "name": "Shipped", "complete_order": true},
        {"id": 120, "name": "Cancelled", "cancel_order": true},
    ]);
    let map =
        |v: &Value| super::canonical_json("eshop-cz", &statuses, "Processing", &v.to_string());
    let mut v = documented();
    v["status_id"] = json!(101);
    let expected = incoming(&v).mapped.unwrap().order.to_json();
    assert_eq!(map(&v).unwrap(), Some(expected));
    v["status_id"] = json!(120);
    assert_eq!(map(&v).unwrap(), None, "a cancelling status");
    v["status_id"] = json!(117);
    assert_eq!(
        map(&v).unwrap(),
        None,
        "a completing status is not imported"
    );
}
