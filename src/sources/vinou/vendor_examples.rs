//! Vinou's own examples (seed 004, "API Resource – Orders"), run through
//! this connector's answer type and mapper. The files are in
//! `tests/fixtures/vendor/vinou/`; see the README there.
//!
//! The one order Vinou is shown sending is the `orders/get` answer (order
//! 6931, with `positions` and a top-level `package`). It is inconsistent in
//! itself: its header totals (and `taxrates`, `item_net`...) say net 79.01 /
//! gross 93.78, its positions and package add up to net 12.50 / gross 14.64.
//! ordersync parks it with the totals check. The two `orders/add` examples
//! are requests sent *to* Vinou, not orders as Vinou sends them; they are
//! kept because one of them is not JSON (a trailing comma).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::OneRaw;
use super::map::{self, MapContext};
use crate::http::{Failure, Reply};
use crate::model::CountryMap;
use crate::sources::list::Body;
use crate::store::{Disposition, IncomingOrder};

const GET_RESPONSE: &str = include_str!("../../../tests/fixtures/vendor/vinou/get-response.json");
const ADD_REQUEST_IDS: &str =
    include_str!("../../../tests/fixtures/vendor/vinou/add-request-ids.json");
const ADD_REQUEST_ADDRESSES: &str =
    include_str!("../../../tests/fixtures/vendor/vinou/add-request-addresses.json");

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn reply(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: Default::default(),
        body: body.to_string().into(),
        what: "POST api.vinou.de/service/orders/get".into(),
    }
}

/// The default configuration: import_statuses = ["payed", "need_package"],
/// on a shop ordersync is already watching.
fn map(order: &Value) -> IncomingOrder {
    let statuses = vec!["payed".to_string(), "need_package".to_string()];
    let ctx = MapContext {
        countries: CountryMap::none(),
        source: "weingut",
        import_statuses: &statuses,
        already_pushed: false,
        watching: true,
    };
    map::incoming(&ctx, order).unwrap()
}

/// The order of the `get` example, read as the connector reads the answer.
fn documented_order() -> Value {
    let r = reply(GET_RESPONSE);
    let body = Body::decode(&r.body);
    let answer: OneRaw = body.envelope(&r.what).unwrap();
    let item = body.item(&answer.data.unwrap());
    assert!(item.broken.is_none() && item.value.is_object());
    item.value
}

fn sum(values: &[&Value]) -> Decimal {
    values.iter().map(|v| d(v.as_str().unwrap())).sum()
}

#[test]
fn get_answer_positions_do_not_add_up_to_its_totals_and_it_parks() {
    let o = documented_order();
    let positions: Vec<&Value> = o["positions"].as_array().unwrap().iter().collect();
    assert_eq!(positions.len(), 2);
    let package = &o["package"];
    assert!(o["rebates"].as_array().unwrap().is_empty());
    // What the example itself says: its header agrees with its taxrates and
    // item_* figures...
    assert_eq!(
        (&o["net"], &o["tax"], &o["gross"]),
        (&json!("79.01"), &json!("14.77"), &json!("93.78"))
    );
    let rates: Vec<&Value> = o["taxrates"].as_object().unwrap().values().collect();
    let field = |k: &str| rates.iter().map(|r| &r[k]).collect::<Vec<_>>();
    assert_eq!(sum(&field("net")), d("79.01"));
    assert_eq!(sum(&field("tax")), d("14.77"));
    assert_eq!(sum(&field("gross")), d("93.78"));
    assert_eq!(o["item_net"], "79.01");
    // ...but its positions and package add up to far less.
    let with_package = |k: &str| {
        let mut all: Vec<&Value> = positions.iter().map(|p| &p[k]).collect();
        all.push(&package[k]);
        sum(&all)
    };
    assert_eq!(with_package("net"), d("12.50"));
    assert_eq!(with_package("gross"), d("14.64"));
    // What ordersync does: `invoice_type` is "gross", so the gross figures
    // are compared, and the order is parked with the difference.
    let inc = map(&o);
    assert_eq!(inc.external_id, "6931");
    assert_eq!(
        inc.version.as_deref(),
        Some("2020-05-04 12:57:52|need_package")
    );
    assert_eq!(
        inc.mapped.unwrap_err(),
        "cannot map Vinou order 6931: totals do not add up: lines 9.14 + shipping 5.50 - discounts 0 = 14.64, but the order's gross is 93.78 (difference 79.14)"
    );
}

/// The rest of the example, with only its header totals and taxrates set to
/// what its positions say (every other field as documented): it maps, so
/// the totals are the only reason the example parks.
#[test]
fn get_answer_with_totals_that_add_up_maps_every_other_field() {
    let mut o = documented_order();
    o["net"] = json!("12.50");
    o["tax"] = json!("2.14");
    o["gross"] = json!("14.64");
    o["taxrates"] = json!({"19": {"net": "10.50", "tax": "2.00", "gross": "12.50"},
                           "7": {"net": "2.00", "tax": "0.14", "gross": "2.14"}});
    let m = map(&o).mapped.unwrap();
    assert_eq!(m.disposition, Disposition::Push, "need_package is imported");
    let o = &m.order;
    assert_eq!(o.order_key, "weingut:6931");
    assert_eq!(o.reference.as_deref(), Some("BE0000000142"));
    assert!(o.prices_include_tax, "invoice_type gross");
    assert_eq!(o.ordered_at.to_rfc3339(), "2020-05-04T10:57:45+00:00");
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("1370"));
    assert_eq!(o.customer.name.as_deref(), Some("Hans Hamster"));
    assert_eq!(o.customer.phone.as_deref(), Some("0123456789"));
    let lines: Vec<_> = o
        .lines
        .iter()
        .map(|l| {
            (
                l.source_line_id.as_str(),
                l.sku.as_deref(),
                l.quantity,
                l.unit_price,
                l.tax_rate,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("26941", Some("002"), d("1"), d("7.00"), Some(d("19"))),
            ("26944", Some("H12345"), d("1"), d("2.14"), Some(d("7"))),
        ]
    );
    assert_eq!(
        o.lines[0].description.as_deref(),
        Some("Weißburgunder Frühlingserwachen 2019, 0.75 l")
    );
    // The top-level `package` is the shipping.
    let ship = o.shipping.as_ref().unwrap();
    assert_eq!(ship.method.as_deref(), Some("Packaging"));
    assert_eq!(ship.amount, d("5.50"));
    assert_eq!(o.totals.gross, Some(d("14.64")));
    // delivery_type "client": the client record is the delivery address.
    let to = o.shipping_address.as_ref().unwrap();
    assert_eq!(to.street.as_deref(), Some("Musterstr. 6"));
    assert_eq!(to.country.as_deref(), Some("DE"));
    assert_eq!(o.billing_address, o.shipping_address);
    let pay = o.payment.as_ref().unwrap();
    assert_eq!(
        (pay.method.as_deref(), pay.status.as_deref()),
        (Some("invoice"), Some("open"))
    );
}

/// `orders/add`, first example: a request body (`data` with `items`, no id,
/// no `crstamp`). Read as an order it cannot even be keyed.
#[test]
fn add_request_with_ids_is_no_order_vinou_sends() {
    let v: Value = serde_json::from_str(ADD_REQUEST_IDS).unwrap();
    assert_eq!(v["data"]["items"].as_array().unwrap().len(), 3);
    let ctx_statuses = vec!["payed".to_string()];
    let ctx = MapContext {
        countries: CountryMap::none(),
        source: "weingut",
        import_statuses: &ctx_statuses,
        already_pushed: false,
        watching: true,
    };
    assert_eq!(
        map::incoming(&ctx, &v["data"]).unwrap_err(),
        "Vinou order without an id"
    );
}

/// `orders/add`, second example: as documented it ends `"cancel_url": "", }`
/// (a trailing comma), which is not JSON; an answer like it is retried.
#[test]
fn add_request_with_addresses_has_a_trailing_comma_and_is_not_json() {
    assert!(ADD_REQUEST_ADDRESSES.contains(r#""cancel_url": "", }"#));
    let e = serde_json::from_str::<Value>(ADD_REQUEST_ADDRESSES).unwrap_err();
    assert!(e.to_string().starts_with("trailing comma at line 1"), "{e}");
    let r = reply(ADD_REQUEST_ADDRESSES);
    let failure = Body::decode(&r.body)
        .envelope::<OneRaw>(&r.what)
        .err()
        .unwrap();
    assert!(matches!(failure, Failure::Retryable { .. }));
    // Read as an envelope, serde_json words the same fault as "key must be
    // a string" (it expects the next key), at the same place.
    let at = e.to_string().split(" at ").nth(1).unwrap().to_string();
    assert!(
        failure
            .message()
            .starts_with("POST api.vinou.de/service/orders/get answered with a body that is not the expected JSON: ")
            && failure.message().ends_with(&at),
        "{failure}"
    );
}
