//! Titelive's own order samples (seed 003, the old "v2" Orders page), run
//! through this connector's envelope reader, list selection and mapper.
//! The files are in `tests/fixtures/vendor/titelive/`; see the README there.
//!
//! The 2016 samples are copies of a browser JSON viewer's rendering: no
//! commas, and `"line": [3]` followed by `0: {…}` `1: {…}` `2: {…}` for an
//! array of three. As documented they are not JSON, and the tests show what
//! ordersync does with that. SOURCES.md ("Wire format evidence") reads them
//! as valid JSON with real arrays, as the 2022 voucher samples of the same
//! page are written; [`as_sources_md_reads_it`] applies exactly that reading
//! and nothing else, and the tests map the result.
//!
//! The samples use the page's old status numbers (1, 2, 3); ordersync
//! follows the current list (5 confirmed, 7 processing, ...), so none of
//! them is pushed as it stands.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;

use super::map::{self, MapContext};
use super::wire::{self, CodeClass};
use crate::http::{Failure, Reply};
use crate::model::CountryMap;
use crate::store::{Disposition, IncomingOrder};

const STATUS_UPDATE: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/status-update-response.json");
const ORDER_LIST: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/order-list-response.json");
const ORDER_LIST_ERROR: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/order-list-error.json");
const ORDER: &str = include_str!("../../../tests/fixtures/vendor/titelive/order-response.json");
const ORDER_ERROR: &str = include_str!("../../../tests/fixtures/vendor/titelive/order-error.json");
const VOUCHER_EAN: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/voucher-ean-cart.json");
const VOUCHER_SELECTION: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/voucher-selection-cart.json");
const VOUCHER_USER: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/voucher-user-cart.json");
const VOUCHER_AUTHOR: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/voucher-author-cart.json");
const VOUCHER_PRODUCTFORM: &str =
    include_str!("../../../tests/fixtures/vendor/titelive/voucher-productform-cart.json");

/// The 2016 samples, as the document shows them.
const VIEWER_RENDERINGS: [(&str, &str); 5] = [
    ("status-update-response.json", STATUS_UPDATE),
    ("order-list-response.json", ORDER_LIST),
    ("order-list-error.json", ORDER_LIST_ERROR),
    ("order-response.json", ORDER),
    ("order-error.json", ORDER_ERROR),
];

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn reply(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: Default::default(),
        body: body.to_string().into(),
        what: "GET wsmedia.tlsecure.com/api/json/00000/customer/order".into(),
    }
}

/// The mapping context an operator would configure: `231` is the United
/// States in the samples (NY, Queens); `1` is France, the example the
/// configuration's own error message gives.
fn countries() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("231".to_string(), "US".to_string()),
        ("1".to_string(), "FR".to_string()),
    ])
}

fn map_with(countries: &BTreeMap<String, String>, order: &Value) -> IncomingOrder {
    let countries = CountryMap::new("sources[0].country_map".into(), countries.clone()).unwrap();
    let ctx = MapContext {
        source: "books",
        countries: &countries,
    };
    map::incoming(&ctx, order).unwrap()
}

fn map(order: &Value) -> IncomingOrder {
    map_with(&countries(), order)
}

/// SOURCES.md's reading of a 2016 sample, and nothing more:
/// - `"key": [N]` followed by `0: {…}` … `N-1: {…}` is an array of N objects;
/// - members and items stand on their own lines without commas: a comma goes
///   where a line ends a value and the next line starts a member or an item;
/// - a line of nothing but (non-breaking) space is not part of the answer.
fn as_sources_md_reads_it(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0usize;
    // Open viewer arrays: (depth their items open at, items still to close).
    let mut arrays: Vec<(usize, usize)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let t = line.trim();
        let indent = &line[..line.len() - line.trim_start().len()];
        let header = t
            .strip_suffix(']')
            .and_then(|r| r.rsplit_once(": ["))
            .and_then(|(key, n)| Some((key, n.parse::<usize>().ok()?)));
        if let Some((key, n)) = header {
            out.push(format!("{indent}{key}: ["));
            arrays.push((depth, n));
            continue;
        }
        let item = t
            .split_once(':')
            .is_some_and(|(i, rest)| i.bytes().all(|b| b.is_ascii_digit()) && rest.trim() == "{");
        if item && arrays.last().is_some_and(|(at, _)| *at == depth) {
            out.push(format!("{indent}{{"));
            depth += 1;
            continue;
        }
        depth += t.matches('{').count();
        depth -= t.matches('}').count();
        let mut line = line.to_string();
        if t == "}"
            && let Some((at, left)) = arrays.last_mut()
            && *at == depth
        {
            *left -= 1;
            if *left == 0 {
                line.push(']');
                arrays.pop();
            }
        }
        out.push(line);
    }
    assert!(arrays.is_empty(), "an array of the sample never closed");
    let mut json = String::new();
    for (i, line) in out.iter().enumerate() {
        json.push_str(line);
        let next = out.get(i + 1).map(|l| l.trim_start()).unwrap_or_default();
        if (next.starts_with('"') || next.starts_with('{'))
            && !line.trim_end().ends_with(['{', '[', ','])
        {
            json.push(',');
        }
        json.push('\n');
    }
    json
}

/// The `object` of a sample read as SOURCES.md reads it.
fn object_of(sample: &str) -> Value {
    wire::unwrap(&reply(&as_sources_md_reads_it(sample)))
        .unwrap()
        .into_readable("sample")
        .unwrap()
        .unwrap()
}

#[test]
fn the_2016_samples_as_documented_are_not_json_and_are_retried() {
    for (name, text) in VIEWER_RENDERINGS {
        assert!(
            serde_json::from_str::<Value>(text).is_err(),
            "{name} parses as JSON as it stands"
        );
        let failure = wire::unwrap(&reply(text)).unwrap_err();
        assert!(matches!(failure, Failure::Retryable { .. }), "{name}");
        assert!(
            failure
                .message()
                .starts_with("GET wsmedia.tlsecure.com/api/json/00000/customer/order answered with a body that is not the expected JSON: "),
            "{name}: {failure}"
        );
    }
}

#[test]
fn read_as_sources_md_says_the_2016_samples_are_json() {
    for (name, text) in VIEWER_RENDERINGS {
        let repaired = as_sources_md_reads_it(text);
        if let Err(e) = serde_json::from_str::<Value>(&repaired) {
            panic!("{name}: {e}\n{repaired}");
        }
    }
    // The viewer's "[3]" is the number of items, and nothing is lost.
    let order = &object_of(ORDER)["order"];
    assert_eq!(order["lines"]["line"].as_array().unwrap().len(), 3);
    assert_eq!(order["packages"]["package"].as_array().unwrap().len(), 3);
    let package_22 = &order["packages"]["package"][1];
    assert_eq!(package_22["lines"].as_array().unwrap().len(), 2);
    assert_eq!(package_22["tracking"], "321084351546850");
    assert_eq!(
        package_22["lines"][0]["cancels"]["cancel"][0]["date"],
        "2016-03-11 11:38:44"
    );
    assert_eq!(package_22["lines"][1]["quantityThatMayBeReturned"], 1);
}

/// "Status update" success answer: the order it returns (id 3) is held as a
/// cart, because 2 is "in payment procedure" in the current status list
/// (the old page's message says it was set to "confirmerd").
#[test]
fn status_update_answer_order_3_is_held_in_status_2() {
    let object = object_of(STATUS_UPDATE);
    let inc = map(&object["order"]);
    assert_eq!(inc.external_id, "3");
    assert_eq!(
        inc.version.as_deref(),
        Some("status 2; packages 0; cancelled 0; returned 0")
    );
    let m = inc.mapped.unwrap();
    assert_eq!(
        m.disposition,
        Disposition::Hold("still a cart at Titelive (status 2)".into())
    );
    let o = &m.order;
    assert_eq!(o.order_key, "books:3");
    assert_eq!(o.ordered_at.to_rfc3339(), "2016-02-29T14:43:21+00:00");
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("2"));
    // "-" is the sample's placeholder for "nothing", as in deliveryLastName.
    assert_eq!(o.customer.name.as_deref(), Some("Thor"));
    assert_eq!(o.lines.len(), 1);
    let l = &o.lines[0];
    assert_eq!(l.source_line_id, "7");
    assert_eq!(l.ean.as_deref(), Some("9789462500877"));
    assert_eq!(
        l.description.as_deref(),
        Some("Kip / Marcus Bean & Ellen Hosmar")
    );
    assert_eq!(
        (l.quantity, l.unit_price, l.line_total),
        (d("1"), d("22.5"), d("22.5"))
    );
    // No `shipping` amount in this sample: a shipping entry for the
    // deliveryType, at zero.
    let ship = o.shipping.as_ref().unwrap();
    assert_eq!(ship.method.as_deref(), Some("deliveryType 3"));
    assert_eq!(ship.amount, Decimal::ZERO);
    assert_eq!(o.totals.gross, Some(d("22.5")));
    assert_eq!((o.totals.net, o.totals.tax), (None, None));
    // The misspelled deliveryAdressLine1 is read; here it only holds "-".
    let to = o.shipping_address.as_ref().unwrap();
    assert_eq!(
        (
            to.name.as_deref(),
            to.street.as_deref(),
            to.postcode.as_deref(),
            to.city.as_deref(),
            to.country.as_deref()
        ),
        (Some("Thor"), None, None, Some("Asgard"), Some("FR"))
    );
    assert_eq!(o.billing_address, o.shipping_address);
}

/// "Get orders list": one order (id 5, status 1). A live poll keeps only
/// status 5, so it is not even read; mapped, it is held as a cart.
#[test]
fn order_list_answer_order_5_is_a_cart_and_not_selected() {
    let object = object_of(ORDER_LIST);
    let items = wire::collection(&object, "orders", "order");
    assert_eq!(items.len(), 1);
    let listed: Vec<_> = items
        .iter()
        .map(|v| crate::sources::list::item(&v.to_string(), false))
        .collect();
    let mut guard = crate::sources::walk::WalkGuard::with_cap("shop", 1);
    assert!(
        super::select(&listed, None, &mut guard).is_empty(),
        "status 1 is not 5"
    );
    let inc = map(items[0]);
    let m = inc.mapped.unwrap();
    assert_eq!(
        m.disposition,
        Disposition::Hold("still a cart at Titelive (status 1)".into())
    );
    let o = &m.order;
    assert_eq!(o.order_key, "books:5");
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("10"));
    assert_eq!(o.customer.name.as_deref(), Some("Peter Parker"));
    let lines: Vec<(&str, Option<&str>, Decimal, Decimal)> = o
        .lines
        .iter()
        .map(|l| {
            (
                l.source_line_id.as_str(),
                l.ean.as_deref(),
                l.quantity,
                l.unit_price,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("3", Some("9789025762186"), d("1"), d("8.95")),
            ("4", Some("9789021560571"), d("1"), d("19.99")),
            ("5", Some("9789462500877"), d("1"), d("22.5")),
        ]
    );
    // price 51.44 = totalPrice 51.44 = the lines, shipping 0.
    assert_eq!(o.totals.gross, Some(d("51.44")));
    assert_eq!(o.shipping.as_ref().unwrap().amount, Decimal::ZERO);
    assert!(o.discounts.is_empty());
    let to = o.shipping_address.as_ref().unwrap();
    assert_eq!(to.name.as_deref(), Some("Uncle Ben"));
    assert_eq!(to.street.as_deref(), Some("Ingram St. 20"));
    assert_eq!(to.postcode.as_deref(), Some("11375"));
    assert_eq!(to.country.as_deref(), Some("US"));
    assert_eq!(
        o.billing_address.as_ref().unwrap().name.as_deref(),
        Some("Peter Parker")
    );
}

/// The same order without a country map entry parks, naming the vendor
/// field and the configuration key.
#[test]
fn order_list_answer_without_a_country_mapping_parks_naming_the_field() {
    let object = object_of(ORDER_LIST);
    let order = wire::collection(&object, "orders", "order")[0].clone();
    let err = map_with(&BTreeMap::new(), &order).mapped.unwrap_err();
    assert_eq!(
        err,
        "cannot map Titelive order 5: invoiceCountry \"231\" is not an ISO 3166-1 alpha-2 code; add \"231\" = \"<ISO code>\" to sources[0].country_map"
    );
}

/// "Get orders list" error: "no orders" (code 10) is an empty list to the
/// poll, not a failure.
#[test]
fn order_list_error_no_orders_is_an_empty_list() {
    let answer = wire::unwrap(&reply(&as_sources_md_reads_it(ORDER_LIST_ERROR))).unwrap();
    assert!(!answer.success);
    assert_eq!(answer.code, Some(10));
    assert_eq!(answer.message, "no orders");
    assert_eq!(answer.class(), Some(CodeClass::NotFound));
}

/// "Get order" (detail of order 5): inconsistent in itself. Its lines add up
/// to its `price` (104.87), but `totalPrice` is 113.82 with `shipping` 0: the
/// difference, 8.95, is "Kaatje Kip" (line 167), which appears only inside
/// package 22, not among the order's lines. ordersync maps the lines and
/// parks the order with the totals check, quoting `totalPrice`.
#[test]
fn order_detail_is_inconsistent_in_itself_and_parks_on_total_price() {
    let object = object_of(ORDER);
    let order = &object["order"];
    // What the sample itself says.
    let lines = wire::collection(order, "lines", "line");
    let sum: Decimal = lines
        .iter()
        .map(|l| d(&l["price"].to_string()) * d(&l["quantity"].to_string()))
        .sum();
    assert_eq!(sum, d("104.87"));
    assert_eq!(order["price"].to_string(), "104.87");
    assert_eq!(order["totalPrice"].to_string(), "113.82");
    assert_eq!(order["shipping"], 0);
    let package_only: Vec<&Value> = wire::collection(order, "packages", "package")
        .into_iter()
        .flat_map(|p| wire::collection(p, "lines", "line"))
        .filter(|pl| !lines.iter().any(|l| l["id"] == pl["id"]))
        .collect();
    assert_eq!(package_only.len(), 1);
    assert_eq!(package_only[0]["id"], 167);
    assert_eq!(package_only[0]["price"].to_string(), "8.95");
    // What ordersync does with it.
    let inc = map(order);
    assert_eq!(inc.external_id, "5");
    assert_eq!(
        inc.version.as_deref(),
        Some("status 3; packages 3; cancelled 1; returned 1")
    );
    assert_eq!(
        inc.mapped.unwrap_err(),
        "cannot map Titelive order 5: totals do not add up: lines 104.87 + shipping 0 - discounts 0 = 104.87, but the order's totalPrice is 113.82 (difference 8.95)"
    );
}

/// "Get order" error: "order not exist" (code 10) is permanent: the order
/// (or its write-back) is parked.
#[test]
fn order_error_order_not_exist_is_permanent() {
    let answer = wire::unwrap(&reply(&as_sources_md_reads_it(ORDER_ERROR))).unwrap();
    assert_eq!(answer.class(), Some(CodeClass::NotFound));
    let failure = answer.into_readable("order 5").unwrap_err();
    assert!(matches!(failure, Failure::Permanent { .. }));
    assert_eq!(
        failure.message(),
        "order 5: GET wsmedia.tlsecure.com/api/json/00000/customer/order answered success=false (code 10: \"order not exist\"): the order does not exist at Titelive"
    );
}

/// The "Apply a voucher" answers are carts (status 0), well-formed JSON.
/// The connector never reads carts (the poll keeps status 5); an order
/// confirmed from such a cart carries the same voucher fields, so the
/// mapper's reading of them is shown here: each is held as a cart, and its
/// voucher becomes a discount, so lines − discounts = totalPrice.
fn voucher_cart(text: &str) -> (crate::model::Order, Disposition) {
    let object = object_of(text);
    let m = map(&object["cart"]).mapped.unwrap();
    (m.order, m.disposition)
}

#[test]
fn voucher_ean_cart_line_voucher_becomes_a_discount() {
    let (o, disposition) = voucher_cart(VOUCHER_EAN);
    assert_eq!(
        disposition,
        Disposition::Hold("still a cart at Titelive (status 0)".into())
    );
    assert_eq!(o.order_key, "books:58128");
    assert_eq!(o.customer.source_customer_id.as_deref(), Some("5393280"));
    // Line 126889: price 20.99 after the voucher, priceFull 25.99.
    assert_eq!(o.lines.len(), 2);
    assert_eq!(o.lines[0].source_line_id, "126889");
    assert_eq!(o.lines[0].unit_price, d("25.99"));
    assert_eq!(o.lines[1].source_line_id, "126890");
    assert_eq!(o.lines[1].unit_price, d("15"));
    assert_eq!(o.discounts.len(), 1);
    assert_eq!(
        o.discounts[0].description.as_deref(),
        Some("voucher DAVE04 on Troje")
    );
    assert_eq!(o.discounts[0].amount, d("5"));
    assert_eq!(o.totals.gross, Some(d("35.99")));
    assert!(o.shipping.is_none(), "no shipping, no deliveryType");
    assert!(o.shipping_address.is_none() && o.billing_address.is_none());
}

#[test]
fn voucher_selection_and_author_carts_line_voucher_becomes_a_discount() {
    for (name, text, shipping) in [
        ("selection", VOUCHER_SELECTION, false),
        ("author", VOUCHER_AUTHOR, true),
    ] {
        let (o, disposition) = voucher_cart(text);
        assert_eq!(
            disposition,
            Disposition::Hold("still a cart at Titelive (status 0)".into()),
            "{name}"
        );
        assert_eq!(o.order_key, "books:58125", "{name}");
        assert_eq!(o.lines.len(), 1, "{name}");
        assert_eq!(o.lines[0].source_line_id, "126855", "{name}");
        assert_eq!(o.lines[0].ean.as_deref(), Some("9789000366095"), "{name}");
        assert_eq!(o.lines[0].unit_price, d("16.99"), "{name}: priceFull");
        assert_eq!(o.discounts.len(), 1, "{name}");
        assert_eq!(o.discounts[0].amount, d("5"), "{name}");
        assert_eq!(o.totals.gross, Some(d("11.99")), "{name}");
        assert_eq!(o.shipping.is_some(), shipping, "{name}: \"shipping\": 0");
    }
}

#[test]
fn voucher_user_and_productform_carts_order_reduction_becomes_a_discount() {
    for (name, text) in [("user", VOUCHER_USER), ("productform", VOUCHER_PRODUCTFORM)] {
        let (o, disposition) = voucher_cart(text);
        assert_eq!(
            disposition,
            Disposition::Hold("still a cart at Titelive (status 0)".into()),
            "{name}"
        );
        assert_eq!(o.order_key, "books:58127", "{name}");
        assert_eq!(o.customer.source_customer_id.as_deref(), Some("5389662"));
        // The line keeps 16.99; the order-level `reduction` is the discount.
        assert_eq!(o.lines.len(), 1, "{name}");
        assert_eq!(o.lines[0].unit_price, d("16.99"), "{name}");
        assert_eq!(o.discounts.len(), 1, "{name}");
        assert_eq!(
            o.discounts[0].description.as_deref(),
            Some("voucher DAVE04"),
            "{name}"
        );
        assert_eq!(o.discounts[0].amount, d("5"), "{name}");
        assert_eq!(o.totals.gross, Some(d("11.99")), "{name}");
    }
}
