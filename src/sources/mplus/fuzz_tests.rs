//! The SOAP reader and the MplusKASSA order mapper under hostile input (see
//! [`crate::sources::fuzz_tests`] for the inputs and the properties).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::map::{self, MapContext};
use super::{Batch, parse_orders, soap, wire};
use crate::sources::fuzz_tests::{self as fuzz, Node, Syntax};
use crate::sources::walk::WalkGuard;

const KIND: &str = "mplus";

/// The element names of `wire.rs` that the mapper reads, and words it
/// compares with.
const FIELDS: &[&str] = &[
    "order",
    "orderId",
    "extOrderId",
    "syncMarker",
    "entryTimestamp",
    "sec",
    "min",
    "hour",
    "day",
    "mon",
    "year",
    "isdst",
    "timezone",
    "relationNumber",
    "relationName",
    "deliveryAddress",
    "invoiceAddress",
    "name",
    "contact",
    "address",
    "zipcode",
    "city",
    "country",
    "companyName",
    "financialDate",
    "reference",
    "totalInclAmount",
    "totalExclAmount",
    "vatMethod",
    "paymentMethod",
    "fullyPaid",
    "cancelState",
    "orderNumber",
    "number",
    "lineList",
    "line",
    "lineId",
    "articleNumber",
    "text",
    "lineType",
    "data",
    "quantity",
    "decimalPlaces",
    "cancelledQuantity",
    "cancelledDecimalPlaces",
    "deliveredQuantity",
    "price",
    "priceExcl",
    "vatPercentage",
    "preparationList",
    "changeCounter",
    "versionNumber",
    "result",
    "Fault",
    "faultcode",
    "faultstring",
];

/// Reads `bytes` as the connector does: a getOrders answer order by order
/// (with the panic isolation, whose reason must then not show), each order
/// mapped as `recheck` does (without it), a getOrder answer, a fault, and
/// the updateOrder copy; checks every order that comes out.
fn read(bytes: &[u8]) -> Result<(), TestCaseError> {
    fuzz::bounded(bytes.len(), || read_unbounded(bytes))?
}

fn read_unbounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    let body = String::from_utf8_lossy(bytes);
    let ctx = MapContext {
        source: "till",
        countries: crate::model::CountryMap::none(),
    };
    if let Ok(Batch {
        orders, unkeyed, ..
    }) = parse_orders("till", &body)
    {
        let mut guard = WalkGuard::new("till", 100);
        let listed: Vec<String> = orders
            .iter()
            .map(|o| format!("{}@{:?}", o.external_id, o.version))
            .chain(unkeyed.iter().map(|(_, why)| why.clone()))
            .collect();
        guard.admit_page("the batch", listed.iter().map(String::as_str));
        for o in &orders {
            fuzz::check(o, bytes.len())?;
        }
        for (_, why) in &unkeyed {
            prop_assert!(!why.contains("ordersync could not map"), "{why}");
        }
    }
    for response in ["getOrdersResponse", "getOrderResponse"] {
        for raw in soap::order_elements(&body, response).unwrap_or_default() {
            let _ = soap::identity(raw);
            if let Ok((_, o)) = map::incoming(&ctx, raw) {
                fuzz::check(&o, bytes.len())?;
            }
        }
    }
    let _ = soap::parse_answer::<wire::GetOrderResponse>("getOrder", &body);
    let _ = soap::update_order_body(&body, "SO-10042 &<>\"");
    Ok(())
}

/// The seed answer as a tree, to edit.
fn templates() -> Vec<Node> {
    let path = format!(
        "{}/tests/fixtures/fuzz/{KIND}/getOrders-answer.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let xml = std::fs::read_to_string(&path).expect("the seed answer");
    vec![Node::from_xml(&xml)]
}

/// A hostile getOrders answer: the seed answer with 1 to 4 edits.
fn answer() -> BoxedStrategy<String> {
    fuzz::edited(templates(), fuzz::xml_content(FIELDS), FIELDS)
        .prop_map(|n| format!("<?xml version=\"1.0\"?>{}", n.xml("ns1:")))
        .boxed()
}

proptest! {
    #[test]
    fn hostile_answers(answer in answer()) {
        read(answer.as_bytes())?;
    }

    #[test]
    fn mutated_and_arbitrary_bytes(bytes in fuzz::mutated(fuzz::bases(KIND), Syntax::Xml)) {
        read(&bytes)?;
    }
}

#[test]
fn the_seed_files() {
    for (name, bytes) in fuzz::seeds(KIND) {
        read(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The edits start from orders that map, so they reach the arithmetic.
#[test]
fn the_template_maps() {
    for t in templates() {
        let xml = t.xml("ns1:");
        let batch = parse_orders("till", &xml).unwrap();
        assert_eq!(batch.orders.len(), 2);
        assert!(batch.unkeyed.is_empty());
        for o in batch.orders {
            assert!(o.mapped.is_ok(), "{:?}", o.mapped);
        }
    }
}

/// `deep-preparations.xml`: an order nested 2,000 elements deep aborted the
/// process with a stack overflow; now it is parked and the other flows.
#[test]
fn a_batch_with_an_order_nested_too_deep() {
    let path = format!(
        "{}/tests/fixtures/fuzz/{KIND}/deep-preparations.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read_to_string(path).unwrap();
    let batch = parse_orders("till", &body).unwrap();
    assert_eq!(batch.max, 901);
    let [deep, flat] = &batch.orders[..] else {
        panic!("{batch:?}")
    };
    assert_eq!(deep.external_id, "DEEP-1");
    let why = deep.mapped.as_ref().unwrap_err();
    assert!(why.contains("nest deeper than 64 levels"), "{why}");
    assert!(flat.mapped.is_ok(), "{:?}", flat.mapped);
}
