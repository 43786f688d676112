//! Vinou's list-page reader and order mapper under hostile input (see
//! [`crate::sources::fuzz_tests`] for the inputs and the properties).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::map::{self, MapContext};
use super::read_list;
use crate::model::CountryMap;
use crate::model::convert::parse_naive;
use crate::sources::fuzz_tests::{self as fuzz, Node, Syntax};
use crate::sources::list::Body;
use crate::sources::walk::WalkGuard;

const KIND: &str = "vinou";

/// The names `map.rs` and the walk read, and words they compare with.
const FIELDS: &[&str] = &[
    "id",
    "chstamp",
    "status",
    "crstamp",
    "invoice_type",
    "positions",
    "package",
    "rebates",
    "item_type",
    "quantity",
    "item",
    "name",
    "vintage",
    "bottlesize",
    "articlenumber",
    "gtin",
    "taxrate",
    "net",
    "tax",
    "gross",
    "taxrates",
    "client",
    "billing",
    "delivery",
    "billing_type",
    "delivery_type",
    "first_name",
    "last_name",
    "company",
    "mail",
    "phone",
    "taxid",
    "client_id",
    "address",
    "address_supplement",
    "zip",
    "city",
    "countrycode",
    "number",
    "paid",
    "payment_type",
    "data",
    "pages",
    "totalCount",
    "wine",
    "product",
    "bundle",
    "rebate",
    "client",
    "none",
    "need_payment",
    "cancelled",
];

/// Reads `bytes` as the walk does, as an `orders/getAll` page and as one
/// order (what `orders/get` gives `recheck`), and checks every order.
fn read(bytes: &[u8], ctx: &MapContext<'_>) -> Result<(), TestCaseError> {
    fuzz::bounded(bytes.len(), || read_unbounded(bytes, ctx))?
}

fn read_unbounded(bytes: &[u8], ctx: &MapContext<'_>) -> Result<(), TestCaseError> {
    let mut items = Vec::new();
    if let Ok(listing) = read_list(bytes, "POST shop.example/service/orders/getAll") {
        let mut guard = WalkGuard::new("weingut", 100);
        guard.admit_page("page 1", listing.listed());
        let _ = listing.page.pages.as_u64();
        for (item, id) in listing.items.into_iter().zip(listing.ids) {
            let _ = item.value["crstamp"].as_str().map(parse_naive);
            let _ = map::version(&item.value);
            if let Some(id) = id {
                items.push((id, item));
            }
        }
    }
    let whole = Body::decode(bytes).whole();
    if let Some(id) = map::order_id(&whole.value) {
        items.push((id, whole));
    }
    for (id, item) in items {
        // As `next_page` and `recheck` do, without the panic isolation.
        let order = match item.unreadable("Vinou", &id) {
            Some(parked) => parked,
            None => match map::incoming(ctx, &item.value) {
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
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(Node::from_json)
        .collect()
}

fn statuses() -> Vec<String> {
    vec!["payed".into(), "need_package".into()]
}

proptest! {
    #[test]
    fn hostile_orders(
        order in fuzz::json_order(templates(), FIELDS),
        already_pushed in any::<bool>(),
        watching in any::<bool>(),
    ) {
        let st = statuses();
        let ctx = MapContext { countries: CountryMap::none(), source: "weingut", import_statuses: &st, already_pushed, watching };
        read(order.as_bytes(), &ctx)?;
        let page = format!(r#"{{"data":[{order},{order}],"pages":1}}"#);
        read(page.as_bytes(), &ctx)?;
    }

    #[test]
    fn mutated_and_arbitrary_bytes(bytes in fuzz::mutated(fuzz::bases(KIND), Syntax::Json)) {
        let st = statuses();
        let ctx = MapContext { countries: CountryMap::none(), source: "weingut", import_statuses: &st, already_pushed: false, watching: true };
        read(&bytes, &ctx)?;
    }
}

#[test]
fn the_seed_files() {
    let st = statuses();
    let ctx = MapContext {
        countries: CountryMap::none(),
        source: "weingut",
        import_statuses: &st,
        already_pushed: false,
        watching: true,
    };
    for (name, bytes) in fuzz::seeds(KIND) {
        read(&bytes, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The mutations start from orders that map, so they reach the arithmetic.
#[test]
fn the_templates_map() {
    let st = statuses();
    let ctx = MapContext {
        countries: CountryMap::none(),
        source: "weingut",
        import_statuses: &st,
        already_pushed: false,
        watching: true,
    };
    for t in templates() {
        let v: serde_json::Value = serde_json::from_str(&t.json()).unwrap();
        let o = map::incoming(&ctx, &v).unwrap();
        assert!(o.mapped.is_ok(), "{:?}", o.mapped);
    }
}
