//! CloudSuite's list-page reader and detail mapper under hostile input (see
//! [`crate::sources::fuzz_tests`] for the inputs and the properties).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use super::map::{self, MapContext};
use super::{path_of, read_list};
use crate::model::CountryMap;
use crate::model::convert::naive_local_to_utc;
use crate::sources::fuzz_tests::{self as fuzz, Node, Syntax};
use crate::sources::list::Body;
use crate::sources::walk::WalkGuard;

const KIND: &str = "cloudsuite";

/// The names `map.rs` and the walk read, and words they compare with.
const FIELDS: &[&str] = &[
    "id",
    "reference",
    "state",
    "payment_status",
    "payment_method",
    "confirm_date",
    "create_date",
    "order_date",
    "modified_date",
    "currency",
    "customer",
    "name",
    "email",
    "phone",
    "company_name",
    "company",
    "vat_number",
    "invoice_address",
    "shipment_address",
    "street",
    "house_number",
    "house_number_addition",
    "postcode",
    "city",
    "country",
    "shipping_method",
    "shipping_costs",
    "order_lines",
    "type",
    "product",
    "sku",
    "key",
    "ean",
    "description",
    "quantity",
    "unit_price",
    "tax_rate",
    "total_excl",
    "total_tax",
    "total_incl",
    "paid_amount",
    "count",
    "next",
    "results",
    "line",
    "discount",
    "confirmed",
    "cancel",
    "draft",
    "paid",
    "closed_canceled",
    "closed_success",
];

/// Reads `bytes` as the walk does, as a list page and as an order detail,
/// and checks every order that comes out.
fn read(bytes: &[u8]) -> Result<(), TestCaseError> {
    fuzz::bounded(bytes.len(), || read_unbounded(bytes))?
}

fn read_unbounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    let payment_ok = ["paid".to_string(), "closed_success".to_string()];
    let ctx = MapContext {
        source: "webshop-nl",
        timezone: chrono_tz::Europe::Amsterdam,
        payment_ok: &payment_ok,
        countries: &CountryMap::default(),
    };
    if let Ok(listing) = read_list(bytes, "GET shop.example/api/order/") {
        let mut guard = WalkGuard::new(ctx.source, 100);
        guard.admit_page("the page", listing.listed());
        if let Some(next) = &listing.page.next {
            guard.follow(&path_of(next));
        }
        for item in &listing.items {
            let _ = item.value["confirm_date"]
                .as_str()
                .map(|c| naive_local_to_utc(c, ctx.timezone));
            // A summary is no detail, but it is an object like one.
            detail(
                &ctx,
                &item.raw,
                &item.value,
                item.broken.is_some(),
                bytes.len(),
            )?;
        }
    }
    let whole = Body::decode(bytes).whole();
    detail(
        &ctx,
        &whole.raw,
        &whole.value,
        whole.broken.is_some(),
        bytes.len(),
    )
}

/// An order detail as `next_page` and `recheck` map it (without the panic
/// isolation, so that a panic shows).
fn detail(
    ctx: &MapContext<'_>,
    raw: &str,
    value: &Value,
    broken: bool,
    len: usize,
) -> Result<(), TestCaseError> {
    if broken || !value.is_object() {
        return Ok(()); // parked under the list's id, unmapped
    }
    if let Ok(order) = map::incoming(ctx, raw, value) {
        fuzz::check(&order, len)?;
    }
    Ok(())
}

fn templates() -> Vec<Node> {
    vec![Node::from_json(&fuzz::seed_json(KIND, "detail.json"))]
}

proptest! {
    #[test]
    fn hostile_orders(order in fuzz::json_order(templates(), FIELDS)) {
        read(order.as_bytes())?;
        let page = format!(r#"{{"count":2,"next":null,"results":[{order},{order}]}}"#);
        read(page.as_bytes())?;
    }

    #[test]
    fn mutated_and_arbitrary_bytes(bytes in fuzz::mutated(fuzz::bases(KIND), Syntax::Json)) {
        read(&bytes)?;
    }
}

#[test]
fn the_seed_files() {
    for (name, bytes) in fuzz::seeds(KIND) {
        read(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The mutations start from orders that map, so they reach the arithmetic.
#[test]
fn the_templates_map() {
    let payment_ok = ["paid".to_string()];
    let ctx = MapContext {
        source: "s",
        timezone: chrono_tz::Europe::Amsterdam,
        payment_ok: &payment_ok,
        countries: &CountryMap::default(),
    };
    for t in templates() {
        let v: Value = serde_json::from_str(&t.json()).unwrap();
        let o = map::incoming(&ctx, &t.json(), &v).unwrap();
        assert!(o.mapped.is_ok(), "{:?}", o.mapped);
    }
    let listing = read_list(
        &std::fs::read(format!(
            "{}/tests/fixtures/fuzz/{KIND}/list-page.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
        "GET x",
    )
    .unwrap();
    assert_eq!(
        listing.ids,
        [Some("48193".to_string()), Some("48194".to_string())]
    );
}
