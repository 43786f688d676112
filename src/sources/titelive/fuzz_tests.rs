//! Titelive's envelope reader, list selection and order mapper under
//! hostile input (see [`crate::sources::fuzz_tests`] for the inputs and the
//! properties).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use super::map::{self, MapContext};
use super::wire::{self, CodeClass};
use super::{select, token_of};
use crate::http::Reply;
use crate::model::CountryMap;
use crate::sources::fuzz_tests::{self as fuzz, Node, Syntax};
use crate::sources::walk::WalkGuard;

const KIND: &str = "titelive";

/// The names `map.rs`, `wire.rs` and the walk read, and words they compare with.
const FIELDS: &[&str] = &[
    "id",
    "status",
    "creationDate",
    "lines",
    "line",
    "quantity",
    "price",
    "priceFull",
    "discount",
    "title",
    "voucherCode",
    "author",
    "giftwrap",
    "ean",
    "reduction",
    "shipping",
    "deliveryType",
    "totalPrice",
    "invoiceFirstName",
    "invoiceLastName",
    "email",
    "customer",
    "paymentMethod",
    "packages",
    "package",
    "cancels",
    "cancel",
    "returns",
    "return",
    "invoiceAddressLine1",
    "invoiceAdressLine1",
    "invoiceAddressLine2",
    "invoiceNumber",
    "invoicePostcode",
    "invoiceCity",
    "invoiceCountry",
    "deliveryFirstName",
    "deliveryLastName",
    "deliveryAddressLine1",
    "deliveryAdressLine1",
    "deliveryNumber",
    "deliveryPostcode",
    "deliveryCity",
    "deliveryCountry",
    "response",
    "success",
    "code",
    "message",
    "object",
    "orders",
    "order",
    "token",
    "value",
    "expirationDate",
    "-",
];

fn countries() -> CountryMap {
    CountryMap::new(
        "sources[0].country_map".into(),
        BTreeMap::from([
            ("231".to_string(), "US".to_string()),
            ("1".to_string(), "FR".to_string()),
        ]),
    )
    .unwrap()
}

fn reply(bytes: &[u8]) -> Reply {
    Reply {
        status: 200,
        headers: Default::default(),
        body: bytes.to_vec().into(),
        what: "GET shop.example/api/json/00000/customer/order".into(),
    }
}

/// Reads `bytes` as the walk does (the order list, the orders it selects),
/// as `recheck` does (one order) and as a token answer, and checks every
/// order that comes out.
fn read(bytes: &[u8], backfill: bool) -> Result<(), TestCaseError> {
    fuzz::bounded(bytes.len(), || read_unbounded(bytes, backfill))?
}

fn read_unbounded(bytes: &[u8], backfill: bool) -> Result<(), TestCaseError> {
    let countries = countries();
    let ctx = MapContext {
        source: "books",
        countries: &countries,
    };
    let reply = reply(bytes);
    // The list, as `next_page` reads it.
    if let Ok(answer) = wire::unwrap(&reply)
        && answer.class() != Some(CodeClass::NotFound)
        && let Ok(items) = answer.into_items("order list", "orders", "order")
    {
        let mut guard = WalkGuard::with_cap("books", 1);
        let window = backfill.then(|| ("2016-01-01T00:00:00Z".parse().unwrap_or_default(), None));
        for (id, item) in select(&items, window, &mut guard) {
            let order = match item.unreadable("Titelive", &id) {
                Some(parked) => parked,
                None => match map::incoming(&ctx, &item.value) {
                    Ok(o) => o,
                    Err(_) => continue,
                },
            };
            fuzz::check(&order, bytes.len())?;
        }
    }
    // One order, as `read_order` reads it; and a token answer.
    if let Ok(answer) = wire::unwrap(&reply) {
        let _ = answer.raw_member("order");
        let _ = token_of(&answer.object);
        if let Ok(Ok(object)) = answer.into_readable("order 5")
            && let order @ Value::Object(_) = &object["order"]
            && let Ok(o) = map::incoming(&ctx, order)
        {
            fuzz::check(&o, bytes.len())?;
        }
    }
    Ok(())
}

fn templates() -> Vec<Node> {
    let page = fuzz::seed_json(KIND, "list-page.json");
    page["response"]["object"]["orders"]["order"]
        .as_array()
        .expect("orders")
        .iter()
        .map(Node::from_json)
        .collect()
}

proptest! {
    #[test]
    fn hostile_orders(order in fuzz::json_order(templates(), FIELDS), backfill in any::<bool>()) {
        let list = format!(
            r#"{{"response":{{"success":true,"code":0,"object":{{"orders":{{"order":[{order},{order}]}}}}}}}}"#
        );
        read(list.as_bytes(), backfill)?;
        let one = format!(r#"{{"response":{{"success":true,"object":{{"order":{order},"token":{order}}}}}}}"#);
        read(one.as_bytes(), backfill)?;
    }

    #[test]
    fn mutated_and_arbitrary_bytes(bytes in fuzz::mutated(fuzz::bases(KIND), Syntax::Json)) {
        read(&bytes, false)?;
    }
}

#[test]
fn the_seed_files() {
    for (name, bytes) in fuzz::seeds(KIND) {
        read(&bytes, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        read(&bytes, false).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The mutations start from orders that map, so they reach the arithmetic.
#[test]
fn the_templates_map() {
    let countries = countries();
    let ctx = MapContext {
        source: "books",
        countries: &countries,
    };
    for t in templates() {
        let v: Value = serde_json::from_str(&t.json()).unwrap();
        let o = map::incoming(&ctx, &v).unwrap();
        assert!(o.mapped.is_ok(), "{:?}", o.mapped);
    }
}
