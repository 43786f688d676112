//! Retailys' list-page reader and order mapper under hostile input (see
//! [`crate::sources::fuzz_tests`] for the inputs and the properties).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::map;
use super::read_list;
use super::statuses::{Status, StatusTable, Wanted};
use crate::config::StatusRef;
use crate::model::CountryMap;
use crate::sources::fuzz_tests::{self as fuzz, Node, Syntax};
use crate::sources::list::Body;
use crate::sources::walk::WalkGuard;

const KIND: &str = "retailys";

/// The names `map.rs` and the walk read, and words they compare with.
const FIELDS: &[&str] = &[
    "id",
    "status_id",
    "status",
    "date_order",
    "order_currency_code",
    "main_currency_code",
    "company",
    "name",
    "email",
    "phone",
    "company_vat",
    "customer",
    "items",
    "count",
    "price",
    "final_price",
    "base_price",
    "vat",
    "article",
    "code",
    "ean",
    "shipping",
    "money",
    "paid",
    "external_order_prefix",
    "external_order_id",
    "street",
    "zip",
    "city",
    "state_code",
    "delivery_name",
    "delivery_street",
    "delivery_zip",
    "delivery_city",
    "delivery_state_code",
    "payment",
    "canceled",
    "done",
    "sent",
    "delivered",
    "paginator",
    "pages",
    "orders",
    "CZK",
];

/// A shop's status table: 101 imported, 104 ours, 117 shipped, 120 cancels.
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
            import: Some(&[StatusRef::Name("New".into())]),
            processing: &StatusRef::Name("Processing".into()),
            shipped: Some(&StatusRef::Name("Shipped".into())),
            cancelled: None,
        },
        "s",
    )
    .expect("the table resolves")
}

/// Reads `bytes` as the walk does, as a list page and as one order (what
/// `recheck` reads), and checks every order that comes out.
fn read(bytes: &[u8], ours: bool) -> Result<(), TestCaseError> {
    fuzz::bounded(bytes.len(), || read_unbounded(bytes, ours))?
}

fn read_unbounded(bytes: &[u8], ours: bool) -> Result<(), TestCaseError> {
    let table = table();
    let mut items = Vec::new();
    if let Ok(listing) = read_list(bytes, "GET shop.example/System/Orders") {
        let mut guard = WalkGuard::new("eshop-cz", 100);
        guard.admit_page("page 1", listing.listed());
        for (item, id) in listing.items.into_iter().zip(listing.ids) {
            let _ = map::status_id(&item.value).map(|s| table.finished_elsewhere(s));
            if let Some(id) = id {
                items.push((id, item));
            }
        }
    }
    let whole = Body::decode(bytes).whole();
    if let Some(id) = map::id_of(&whole.value) {
        items.push((id, whole));
    }
    for (id, item) in items {
        // As `next_page` and `recheck` do, without the panic isolation.
        let order = match item.unreadable("Retailys", &id) {
            Some(parked) => parked,
            None => match map::incoming(
                "eshop-cz",
                &table,
                CountryMap::none(),
                &item.raw,
                &item.value,
                ours,
            ) {
                Ok(o) => o,
                Err(_) => continue,
            },
        };
        fuzz::check(&order, bytes.len())?;
    }
    Ok(())
}

fn templates() -> Vec<Node> {
    let page = fuzz::seed_json(KIND, "list-page.json");
    page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(Node::from_json)
        .collect()
}

proptest! {
    #[test]
    fn hostile_orders(order in fuzz::json_order(templates(), FIELDS), ours in any::<bool>()) {
        read(order.as_bytes(), ours)?;
        let page = format!(r#"{{"paginator":{{"pages":1}},"orders":[{order},{order}]}}"#);
        read(page.as_bytes(), ours)?;
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
    }
}

/// The mutations start from orders that map, so they reach the arithmetic.
#[test]
fn the_templates_map() {
    for t in templates() {
        let v: serde_json::Value = serde_json::from_str(&t.json()).unwrap();
        let o = map::incoming("s", &table(), CountryMap::none(), &t.json(), &v, false).unwrap();
        assert!(o.mapped.is_ok(), "{:?}", o.mapped);
    }
}
