//! Deterministic winery orders: wines with vintage and bottle size, a food
//! product, a tasting bundle, a packaging position and rebates, priced net or
//! gross as `invoice_type` says. Every amount is a decimal string; the order
//! totals and `taxrates` are the sums of the positions, to the cent.
//!
//! The packaging position takes either shape the `get` documentation allows
//! (see `PackageShape`), by order id.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use rand::Rng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;
use serde_json::{Value, json};

pub(super) const STAMP: &str = "%Y-%m-%d %H:%M:%S";

struct Article {
    item_type: &'static str,
    name: &'static str,
    articlenumber: &'static str,
    gtin: Option<&'static str>,
    vintage: Option<i64>,
    bottlesize: Option<&'static str>,
    /// Unit price including tax, in cents.
    gross_cents: i64,
    taxrate: i64,
}

const ARTICLES: &[Article] = &[
    Article {
        item_type: "wine",
        name: "Weißburgunder Frühlingserwachen",
        articlenumber: "002",
        gtin: None,
        vintage: Some(2019),
        bottlesize: Some("0.750"),
        gross_cents: 700,
        taxrate: 19,
    },
    Article {
        item_type: "wine",
        name: "Riesling Kabinett trocken",
        articlenumber: "014",
        gtin: Some("4260123450014"),
        vintage: Some(2022),
        bottlesize: Some("0.750"),
        gross_cents: 990,
        taxrate: 19,
    },
    Article {
        item_type: "wine",
        name: "Spätburgunder Rotwein",
        articlenumber: "031",
        gtin: Some("4260123450311"),
        vintage: Some(2020),
        bottlesize: Some("0.750"),
        gross_cents: 1450,
        taxrate: 19,
    },
    Article {
        item_type: "wine",
        name: "Grauburgunder Magnum",
        articlenumber: "040M",
        gtin: None,
        vintage: Some(2021),
        bottlesize: Some("1.500"),
        gross_cents: 2390,
        taxrate: 19,
    },
    Article {
        item_type: "wine",
        name: "Secco Rosé",
        articlenumber: "077",
        gtin: Some("4260123450779"),
        vintage: None,
        bottlesize: Some("0.750"),
        gross_cents: 835,
        taxrate: 19,
    },
    Article {
        item_type: "product",
        name: "Haribo",
        articlenumber: "H12345",
        gtin: Some("4001686301265"),
        vintage: None,
        bottlesize: None,
        gross_cents: 214,
        taxrate: 7,
    },
    Article {
        item_type: "product",
        name: "Traubenkernöl 250 ml",
        articlenumber: "P-OIL",
        gtin: None,
        vintage: None,
        bottlesize: None,
        gross_cents: 1299,
        taxrate: 19,
    },
    Article {
        item_type: "bundle",
        name: "Probierpaket 6 Flaschen",
        articlenumber: "PP-6",
        gtin: None,
        vintage: None,
        bottlesize: None,
        gross_cents: 4990,
        taxrate: 19,
    },
];

const FIRST: &[&str] = &[
    "Hans", "Jutta", "Jörg", "Anke", "Lukas", "Marie", "Sören", "Zoë",
];
const LAST: &[&str] = &[
    "Hamster", "Müller", "Schäfer", "Weiß", "Becker", "Groß", "Ozdemir", "Klein",
];
const CITIES: &[(&str, &str)] = &[
    ("55122", "Mainz"),
    ("65183", "Wiesbaden"),
    ("67547", "Worms"),
    ("80331", "München"),
];

pub(super) fn money(d: Decimal) -> String {
    let mut v = d.round_dp(2);
    v.rescale(2);
    v.to_string()
}

/// net / tax / gross of `quantity` units. Gross invoices fix the gross line
/// total and derive net; net invoices fix the net unit price.
fn amounts(
    gross_cents: i64,
    quantity: i64,
    taxrate: i64,
    gross_invoice: bool,
) -> (Decimal, Decimal, Decimal) {
    let rate = Decimal::new(taxrate, 2);
    let unit_gross = Decimal::new(gross_cents, 2);
    if gross_invoice {
        let gross = unit_gross * Decimal::from(quantity);
        let net = (gross / (Decimal::ONE + rate)).round_dp(2);
        (net, gross - net, gross)
    } else {
        let unit_net = (unit_gross / (Decimal::ONE + rate)).round_dp(2);
        let net = unit_net * Decimal::from(quantity);
        let tax = (net * rate).round_dp(2);
        (net, tax, net + tax)
    }
}

/// Rewrites the goods positions of a generated order (line totals) to one
/// unit's amounts, computed as a unit's line would be; the order's totals
/// stay as they are (`VinouOptions::position_amounts_per_unit`).
pub(super) fn amounts_per_unit(order: &mut Value) {
    let gross_invoice = order["invoice_type"] == "gross";
    for p in order["positions"].as_array_mut().into_iter().flatten() {
        if !matches!(p["item_type"].as_str(), Some("wine" | "product" | "bundle")) {
            continue;
        }
        let unit_gross = p["item"]["gross"]
            .as_str()
            .and_then(|g| g.parse::<Decimal>().ok())
            .unwrap_or_default();
        let cents = rust_decimal::prelude::ToPrimitive::to_i64(
            &(unit_gross * Decimal::ONE_HUNDRED).round(),
        )
        .unwrap_or_default();
        let taxrate = p["taxrate"].as_i64().unwrap_or_default();
        let (net, tax, gross) = amounts(cents, 1, taxrate, gross_invoice);
        p["net"] = json!(money(net));
        p["tax"] = json!(money(tax));
        p["gross"] = json!(money(gross));
    }
}

/// Where an order's packaging (shipping) position is served. The documented
/// `get` sample has a top-level `package {…}` beside `positions[]`, and lists
/// `package` among the `item_type`s a position can have; which one a real
/// tenant sends is open, so each is served on different orders, never both
/// for the same cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageShape {
    /// `"package": {…, "item_type": "package"}` beside the positions.
    TopLevel,
    /// A position with `item_type: "package"` (last among the positions),
    /// and the top-level `package` null.
    PositionPackageNull,
    /// As `PositionPackageNull`, with no top-level `package` key at all.
    PositionPackageAbsent,
}

impl PackageShape {
    /// Even ids: top-level; `id % 4 == 1`: a position beside
    /// `"package": null`; `id % 4 == 3`: a position and no `package` key.
    pub fn for_order(id: i64) -> PackageShape {
        match id.rem_euclid(4) {
            1 => PackageShape::PositionPackageNull,
            3 => PackageShape::PositionPackageAbsent,
            _ => PackageShape::TopLevel,
        }
    }
}

pub(super) struct Ids {
    pub order: i64,
    pub position: i64,
    pub client: i64,
    pub address: i64,
}

fn take(c: &mut i64) -> i64 {
    *c += 1;
    *c - 1
}

fn person(rng: &mut StdRng, id: i64) -> Value {
    let (zip, city) = CITIES[rng.random_range(0..CITIES.len())];
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    let company = rng
        .random_bool(0.2)
        .then(|| format!("Weinhandel {last} GmbH"));
    json!({
        "id": id, "first_name": first, "last_name": last, "company": company,
        "address": format!("Weinbergstraße {}", rng.random_range(1..120)),
        "address_supplement": null, "zip": zip, "city": city, "countrycode": "de",
        "mail": format!("{}.{}@example.de", first.to_lowercase(), last.to_lowercase()),
        "phone": if rng.random_bool(0.5) { json!("06131-123456") } else { Value::Null },
        "taxid": company.as_ref().map(|_| "DE123456789"), "gender": "m",
    })
}

fn position(
    ids: &mut Ids,
    order_id: i64,
    a: &Article,
    quantity: i64,
    gross_invoice: bool,
    stamp: &str,
) -> Value {
    let (net, tax, gross) = amounts(a.gross_cents, quantity, a.taxrate, gross_invoice);
    json!({
        "id": take(&mut ids.position), "sorting": 0, "item_type": a.item_type, "name": a.name,
        "item_id": 3000 + i64::from(a.articlenumber.len() as u8), "quantity": quantity,
        "net": money(net), "tax": money(tax), "taxrate": a.taxrate, "gross": money(gross),
        "order_id": order_id, "crstamp": stamp, "chstamp": stamp,
        "item": {
            "name": a.name, "articlenumber": a.articlenumber, "gtin": a.gtin,
            "vintage": a.vintage, "bottlesize": a.bottlesize,
            "gross": money(Decimal::new(a.gross_cents, 2)), "taxrate": a.taxrate,
        },
    })
}

/// One generated order placed at `crstamp` (local time) in `status`.
pub(super) fn order(
    rng: &mut StdRng,
    ids: &mut Ids,
    crstamp: NaiveDateTime,
    status: &str,
) -> Value {
    let id = take(&mut ids.order);
    let stamp = crstamp.format(STAMP).to_string();
    let gross_invoice = rng.random_bool(0.8);
    let mut positions = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let a = &ARTICLES[rng.random_range(0..ARTICLES.len())];
        let qty = if a.item_type == "wine" {
            rng.random_range(1..=12)
        } else {
            rng.random_range(1..=3)
        };
        positions.push(position(ids, id, a, qty, gross_invoice, &stamp));
    }
    let package = rng.random_bool(0.7).then(|| {
        let a = Article {
            item_type: "package",
            name: "Versandkarton 6er",
            articlenumber: "PK6",
            gtin: None,
            vintage: None,
            bottlesize: None,
            gross_cents: 590,
            taxrate: 19,
        };
        position(ids, id, &a, 1, gross_invoice, &stamp)
    });
    let rebates: Vec<Value> = if rng.random_bool(0.15) {
        let a = Article {
            item_type: "rebate",
            name: "Pauschaler Rabatt",
            articlenumber: "",
            gtin: None,
            vintage: None,
            bottlesize: None,
            gross_cents: -589,
            taxrate: 19,
        };
        vec![position(ids, id, &a, 1, gross_invoice, &stamp)]
    } else {
        Vec::new()
    };
    let mut rates: BTreeMap<i64, [Decimal; 3]> = BTreeMap::new();
    for p in positions.iter().chain(package.iter()).chain(rebates.iter()) {
        let r = rates.entry(p["taxrate"].as_i64().unwrap_or(0)).or_default();
        for (i, k) in ["net", "tax", "gross"].iter().enumerate() {
            r[i] += p[*k]
                .as_str()
                .and_then(|s| s.parse::<Decimal>().ok())
                .unwrap_or_default();
        }
    }
    let sum = |i: usize| rates.values().map(|r| r[i]).sum::<Decimal>();
    let taxrates: serde_json::Map<String, Value> = rates
        .iter()
        .map(|(k, r)| {
            (
                k.to_string(),
                json!({"net": money(r[0]), "tax": money(r[1]), "gross": money(r[2])}),
            )
        })
        .collect();
    let client_id = take(&mut ids.client);
    let client = person(rng, client_id);
    let billing_type = if rng.random_bool(0.7) {
        "client"
    } else {
        "address"
    };
    let billing = if billing_type == "client" {
        client.clone()
    } else {
        person(rng, take(&mut ids.address))
    };
    let delivery_type = ["none", "none", "none", "client", "address"][rng.random_range(0..5)];
    let delivery = match delivery_type {
        "client" => client.clone(),
        "address" => person(rng, take(&mut ids.address)),
        _ => Value::Null,
    };
    let payment_type = ["paypal", "prepaid", "invoice", "debit"][rng.random_range(0..4)];
    let mut order = json!({
        "id": id, "uuid": format!("{:08x}-0d49-5c54-b37a-51b6c71843bf", id),
        "number": format!("BE{id:010}"),
        "billing_type": billing_type, "billing_id": billing["id"],
        "delivery_type": delivery_type, "delivery_id": delivery.get("id").cloned().unwrap_or(Value::Null),
        "delivery_note_remark": null,
        "payment_type": payment_type,
        "status": status,
        "net": money(sum(0)), "tax": money(sum(1)), "gross": money(sum(2)),
        "taxrates": taxrates, "payment_period": 14,
        "invoice_type": if gross_invoice { "gross" } else { "net" }, "tax_free": 0,
        "source": "shop", "crstamp": stamp, "chstamp": stamp, "cruser_id": 303,
        "customers_id": 289, "client_id": client_id, "client_remark": null,
        "touched": 0, "fixed": false, "note": null,
        "client": client, "billing": billing, "delivery": delivery,
        "positions": positions, "package": null, "rebates": rebates,
        "paid": status == "payed",
    });
    let shape = PackageShape::for_order(id);
    match (shape, package) {
        (PackageShape::TopLevel, package) => order["package"] = json!(package),
        (_, Some(package)) => {
            if let Some(positions) = order["positions"].as_array_mut() {
                positions.push(package);
            }
        }
        (_, None) => {}
    }
    if shape == PackageShape::PositionPackageAbsent
        && let Some(map) = order.as_object_mut()
    {
        map.remove("package");
    }
    rebate_shape(id, &mut order);
    order
}

/// No document shows a rebate of `orders/get` but as `"rebates": []` beside
/// the header's `rebate_net/tax/gross`, and `orders/add`'s rebate item has no
/// id: a third of the orders with a rebate serve it as a position with an
/// id, a third without one, a third in the header only.
fn rebate_shape(id: i64, order: &mut Value) {
    let Some(rebate) = order["rebates"].get(0).cloned() else {
        return;
    };
    match id % 3 {
        1 => {
            if let Some(r) = order["rebates"][0].as_object_mut() {
                r.remove("id");
            }
        }
        2 => {
            order["rebates"] = json!([]);
            for k in ["net", "tax", "gross"] {
                let amount = rebate[k]
                    .as_str()
                    .and_then(|s| s.parse::<Decimal>().ok())
                    .unwrap_or_default();
                order[format!("rebate_{k}")] = json!(money(amount.abs()));
            }
        }
        _ => {}
    }
}

/// A status as a shop would show it, weighted toward orders ready to import.
pub(super) fn random_status(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..100) {
        0..70 => "payed",
        70..82 => "need_package",
        82..94 => "need_payment",
        _ => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn totals_are_the_sum_of_positions_to_the_cent() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut ids = Ids {
            order: 1,
            position: 1,
            client: 1,
            address: 1,
        };
        let t = NaiveDateTime::parse_from_str("2024-06-29 10:00:00", STAMP).unwrap();
        for _ in 0..50 {
            let o = order(&mut rng, &mut ids, t, "payed");
            let d = |v: &Value| v.as_str().unwrap().parse::<Decimal>().unwrap();
            assert_eq!(d(&o["net"]) + d(&o["tax"]), d(&o["gross"]), "{o}");
        }
        // 3 x 7.00 gross at 19 %: 21.00 gross, 17.65 net.
        let (n, t, g) = amounts(700, 3, 19, true);
        assert_eq!(
            (money(n), money(t), money(g)),
            ("17.65".into(), "3.35".into(), "21.00".into())
        );
    }

    #[test]
    fn the_package_is_served_beside_or_among_the_positions_never_both() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut ids = Ids {
            order: 6901,
            position: 1,
            client: 1,
            address: 1,
        };
        let t = NaiveDateTime::parse_from_str("2024-06-29 10:00:00", STAMP).unwrap();
        let d = |v: &Value| v.as_str().unwrap().parse::<Decimal>().unwrap();
        let (mut top_level, mut as_position, mut null, mut absent) = (0, 0, 0, 0);
        for _ in 0..40 {
            let o = order(&mut rng, &mut ids, t, "payed");
            let id = o["id"].as_i64().unwrap();
            let positions = o["positions"].as_array().unwrap();
            let in_positions: Vec<&Value> = positions
                .iter()
                .filter(|p| p["item_type"] == "package")
                .collect();
            match o.get("package") {
                Some(p) if p.is_object() => {
                    assert_eq!(p["item_type"], "package");
                    assert!(in_positions.is_empty(), "both shapes on {o}");
                    assert_eq!(PackageShape::for_order(id), PackageShape::TopLevel);
                    top_level += 1;
                }
                Some(p) => {
                    assert!(p.is_null());
                    if PackageShape::for_order(id) == PackageShape::PositionPackageNull {
                        null += 1;
                    }
                }
                None => {
                    assert_eq!(
                        PackageShape::for_order(id),
                        PackageShape::PositionPackageAbsent
                    );
                    absent += 1;
                }
            }
            assert!(in_positions.len() <= 1);
            if let Some(p) = in_positions.first() {
                assert_ne!(PackageShape::for_order(id), PackageShape::TopLevel);
                assert_eq!(p["order_id"], id);
                as_position += 1;
            }
            // The totals count the package once, wherever it is served.
            let sum = |k: &str| {
                positions
                    .iter()
                    .chain(o.get("package").filter(|p| p.is_object()))
                    .chain(o["rebates"].as_array().unwrap())
                    .map(|p| d(&p[k]))
                    .sum::<Decimal>()
            };
            for k in ["net", "tax", "gross"] {
                assert_eq!(sum(k), d(&o[k]), "{k} of {o}");
            }
        }
        assert!(
            top_level > 0 && as_position > 0 && null > 0 && absent > 0,
            "{top_level} {as_position} {null} {absent}"
        );
    }
}
