//! Titelive order → canonical order. Prices are floats in euros including
//! VAT (converted from their shortest text, never with f64 arithmetic),
//! EANs are JSON numbers, collections may collapse to one object, the
//! address key is sometimes spelled `deliveryAdressLine1`, and countries are
//! numeric ids mapped through the configured `country_map`.

use rust_decimal::Decimal;
use serde_json::Value;

use super::wire::collection;
use crate::model::convert::{
    decimal_from_json, json_decimal as decimal, json_text, naive_local_to_utc,
};
use crate::model::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};
use crate::model::{CountryMap, arith};
use crate::store::{Disposition, IncomingOrder, MappedOrder};

/// Titelive is a French company and its samples carry no zone: creation
/// dates are read as Paris time (an assumption, see README).
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::Paris;

/// The documented order statuses (current list).
pub const CONFIRMED: i64 = 5;
pub const DONE: i64 = 10;
pub const ERROR: i64 = 98;
pub const CANCELLED: i64 = 99;

pub struct MapContext<'a> {
    pub source: &'a str,
    /// The source's `country_map`: Titelive's country ids → ISO codes.
    pub countries: &'a CountryMap,
}

/// The order's id as text, if it has one.
pub fn order_id(v: &Value) -> Option<String> {
    json_text(&v["id"])
}

pub fn status(v: &Value) -> Option<i64> {
    match &v["status"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Maps one order object. `Err` only when it cannot even be keyed (no id);
/// any other problem gives an order whose mapping failed, recorded and parked.
pub fn incoming(ctx: &MapContext<'_>, v: &Value) -> Result<IncomingOrder, String> {
    let id = order_id(v).ok_or("order without an id")?;
    Ok(IncomingOrder {
        external_id: id.clone(),
        raw: v.to_string(),
        version: Some(version(v)),
        mapped: map_order(ctx, &id, v).map_err(|e| format!("cannot map Titelive order {id}: {e}")),
    })
}

/// What a re-read can show that the canonical order does not: the status,
/// packages, cancelled and returned quantities. Kept as the order's source
/// version in the ledger, so an operator can see where the shop stands.
fn version(v: &Value) -> String {
    let packages = collection(v, "packages", "package");
    let (mut cancelled, mut returned) = (Decimal::ZERO, Decimal::ZERO);
    for p in &packages {
        for line in collection(p, "lines", "line") {
            for c in collection(line, "cancels", "cancel") {
                cancelled =
                    cancelled.saturating_add(decimal_from_json(&c["quantity"]).unwrap_or_default());
            }
            for r in collection(line, "returns", "return") {
                returned =
                    returned.saturating_add(decimal_from_json(&r["quantity"]).unwrap_or_default());
            }
        }
    }
    format!(
        "status {}; packages {}; cancelled {cancelled}; returned {returned}",
        status(v).map_or_else(|| "?".into(), |s| s.to_string()),
        packages.len()
    )
}

/// A text field; `null`, `""` and the samples' `"-"` placeholder are absent.
fn text(v: &Value) -> Option<String> {
    json_text(v).filter(|s| s != "-")
}

fn optional_decimal(v: &Value, what: &str) -> Result<Option<Decimal>, String> {
    match v {
        Value::Null => Ok(None),
        v => decimal(v, what).map(Some),
    }
}

/// EAN-13 from a JSON number (or text). A number loses leading zeros, so
/// shorter ones are padded back to 13 digits.
fn ean(v: &Value) -> Result<Option<String>, String> {
    let digits = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(u) => u.to_string(),
            // 9.789462500877e12: an integer written as a float; exact below 2^53.
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && (1.0..1e13).contains(&f) => format!("{f:.0}"),
                _ => return Err(format!("ean {n} is not an EAN-13")),
            },
        },
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().to_string(),
        other => return Err(format!("ean {other} is not an EAN-13")),
    };
    if digits.is_empty() || digits.len() > 13 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("ean {digits:?} is not an EAN-13"));
    }
    Ok(Some(format!("{digits:0>13}")))
}

fn address(ctx: &MapContext<'_>, v: &Value, prefix: &str) -> Result<Option<Address>, String> {
    let field = |name: &str| text(&v[format!("{prefix}{name}")]);
    let name = [field("FirstName"), field("LastName")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    // Both spellings occur in Titelive's own samples.
    let line1 = field("AddressLine1").or_else(|| field("AdressLine1"));
    let line2 = field("AddressLine2").or_else(|| field("AdressLine2"));
    let street = line1.map(|l| {
        let mut s = match field("Number") {
            Some(n) => format!("{l} {n}"),
            None => l,
        };
        if let Some(l2) = line2 {
            s = format!("{s}, {l2}");
        }
        s
    });
    let country_key = format!("{prefix}Country");
    let country = ctx
        .countries
        .iso(&country_key, text(&v[&country_key]).as_deref())?;
    let a = Address {
        name: (!name.is_empty()).then_some(name),
        street,
        postcode: field("Postcode"),
        city: field("City"),
        country,
    };
    Ok((a != Address::default()).then_some(a))
}

fn map_order(ctx: &MapContext<'_>, id: &str, v: &Value) -> Result<MappedOrder, String> {
    let status = status(v).ok_or("status is missing")?;
    let created = text(&v["creationDate"]).ok_or("creationDate is missing")?;
    let ordered_at = naive_local_to_utc(&created, TIMEZONE)?;
    let mut lines = Vec::new();
    let mut discounts = Vec::new();
    for line in collection(v, "lines", "line") {
        let line_id = text(&line["id"]).ok_or("an order line has no id")?;
        let what = format!("line {line_id}");
        let quantity = decimal(&line["quantity"], &format!("{what}: quantity"))?;
        let price = decimal(&line["price"], &format!("{what}: price"))?;
        // A line voucher shows the price before it as priceFull (and the
        // amount off as discount): the line keeps its full price and the
        // voucher becomes a discount, so the ERP sees both.
        let full = match optional_decimal(&line["priceFull"], &format!("{what}: priceFull"))? {
            Some(f) => f,
            None => arith::add(
                price,
                optional_decimal(&line["discount"], &format!("{what}: discount"))?
                    .unwrap_or_default(),
                &what,
            )?,
        };
        if full < price {
            return Err(format!("{what}: priceFull {full} is below price {price}"));
        }
        let title = text(&line["title"]);
        if full > price {
            let voucher = text(&line["voucherCode"])
                .map_or_else(|| "voucher".into(), |c| format!("voucher {c}"));
            discounts.push(Discount {
                description: Some(match &title {
                    Some(t) => format!("{voucher} on {t}"),
                    None => voucher,
                }),
                amount: arith::line_total(arith::sub(full, price, &what)?, quantity, &what)?,
            });
        }
        let mut description = match (title, text(&line["author"])) {
            (Some(t), Some(a)) => Some(format!("{t} / {a}")),
            (t, a) => t.or(a),
        };
        // The canonical line has no note field: gift wrap travels in the description.
        if line["giftwrap"].as_i64().is_some_and(|g| g != 0)
            || line["giftwrap"] == Value::Bool(true)
        {
            description = Some(
                format!("{} [gift wrap]", description.unwrap_or_default())
                    .trim_start()
                    .to_string(),
            );
        }
        let ean = ean(&line["ean"]).map_err(|e| format!("{what}: {e}"))?;
        lines.push(OrderLine {
            source_line_id: line_id,
            // In the book trade the EAN is the article number.
            sku: ean.clone(),
            ean,
            description,
            quantity,
            unit_price: full,
            tax_rate: None,
            line_total: arith::line_total(quantity, full, &what)?,
        });
    }
    if let Some(r) = optional_decimal(&v["reduction"], "reduction")?
        && !r.is_zero()
    {
        discounts.push(Discount {
            description: Some(
                text(&v["voucherCode"])
                    .map_or_else(|| "order reduction".into(), |c| format!("voucher {c}")),
            ),
            amount: r,
        });
    }
    let shipping_amount = optional_decimal(&v["shipping"], "shipping")?;
    let method = text(&v["deliveryType"]).map(|t| format!("deliveryType {t}"));
    let shipping = (shipping_amount.is_some() || method.is_some()).then(|| Shipping {
        method,
        amount: shipping_amount.unwrap_or_default(),
    });
    let gross = decimal(&v["totalPrice"], "totalPrice")?;
    let order = Order {
        order_key: order_key(ctx.source, id),
        source: ctx.source.to_string(),
        source_kind: "titelive".into(),
        external_id: id.to_string(),
        reference: None,
        ordered_at,
        currency: "EUR".into(),
        prices_include_tax: true,
        customer: Customer {
            name: [text(&v["invoiceFirstName"]), text(&v["invoiceLastName"])]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a} {b}")),
            email: text(&v["email"]),
            source_customer_id: text(&v["customer"]),
            ..Default::default()
        },
        billing_address: address(ctx, v, "invoice")?,
        shipping_address: address(ctx, v, "delivery")?,
        lines,
        shipping,
        discounts,
        // Titelive gives only amounts including VAT, no tax split: the ERP
        // derives tax from its own product data (see README).
        totals: Totals {
            gross: Some(gross),
            ..Totals::default()
        },
        payment: text(&v["paymentMethod"]).map(|m| Payment {
            method: Some(format!("paymentMethod {m}")),
            status: None,
        }),
    };
    order.check_totals("totalPrice")?;
    let disposition = match status {
        CANCELLED => Disposition::Cancel("cancelled at Titelive (status 99)".into()),
        ERROR => Disposition::Hold("status 98 (error) at Titelive".into()),
        s if s < CONFIRMED => Disposition::Hold(format!("still a cart at Titelive (status {s})")),
        s if s <= DONE => Disposition::Push,
        s => Disposition::Hold(format!("unknown Titelive status {s}")),
    };
    Ok(MappedOrder {
        order,
        disposition,
        beyond_canonical: package_cancels(v),
    })
}

/// Quantities the shop cancelled inside its packages (`cancels.cancel[]`
/// of a package line), one entry per package line. The order's own lines
/// and totals keep the ordered quantities (the seed's sample: line 116
/// still 3 with 1 of them cancelled in package 22), so the canonical order
/// cannot show them; the ERP has no partial cancel either. They are part of
/// the order's content, so one that comes after the push is recorded and
/// logged for an operator.
fn package_cancels(v: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for p in collection(v, "packages", "package") {
        let package = text(&p["id"]).unwrap_or_else(|| "?".into());
        for line in collection(p, "lines", "line") {
            let cancelled = collection(line, "cancels", "cancel")
                .iter()
                .filter_map(|c| decimal_from_json(&c["quantity"]).ok())
                .fold(Decimal::ZERO, Decimal::saturating_add);
            if cancelled > Decimal::ZERO {
                let id = text(&line["id"]).unwrap_or_else(|| "?".into());
                found.push(format!(
                    "line {id}: {} cancelled at Titelive in package {package}",
                    cancelled.normalize()
                ));
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The seed's "Get order" sample, made into valid JSON, with a voucher line.
    pub(crate) fn sample() -> Value {
        json!({
            "id": 5, "customer": 10, "price": 99.87, "shipping": 0, "totalPrice": 99.87,
            "status": 5, "creationDate": "2016-03-10 13:45:20", "deliveryType": 4, "paymentMethod": 2,
            "lines": {"line": [
                {"id": 164, "ean": 9789462082977u64, "title": "Adolf Loos Architectuur En Al Het Andere ",
                 "author": "Ineke Van Der Burg", "price": 24.95, "quantity": 1, "productForm": "ED", "giftwrap": 1},
                {"id": 116, "ean": 9789021560571u64, "title": "Gouden Kip", "author": "Diana Henry",
                 "price": 19.99, "quantity": 3, "productForm": "BB"},
                {"id": 166, "ean": 9789044629354u64, "title": "Gij nu", "author": "Griet Op de Beeck",
                 "price": 14.95, "quantity": 1, "productForm": "BB", "voucher": 199, "voucherCode": "DAVE04",
                 "priceFull": 19.95, "discount": 5}
            ]},
            "packages": {"package": {"id": 22, "status": 4, "carrier": 1, "tracking": "321084351546850",
                "lines": [{"id": 116, "quantity": 3, "cancels": {"cancel": {"quantity": 1, "date": "2016-03-11 11:38:44"}}}]}},
            "deliveryFirstName": "Uncle", "deliveryLastName": "Ben", "deliveryAdressLine1": "Ingram St.",
            "deliveryNumber": 20, "deliveryPostcode": "11375", "deliveryCity": "NY (Queens)", "deliveryCountry": 231,
            "invoiceFirstName": "Peter", "invoiceLastName": "Parker", "invoiceAddressLine1": "Ingram St.",
            "invoiceNumber": 20, "invoicePostcode": "11375", "invoiceCity": "NY (Queens)", "invoiceCountry": 231
        })
    }

    fn map(v: &Value) -> IncomingOrder {
        let countries = CountryMap::new(
            "sources[0].country_map".into(),
            BTreeMap::from([
                ("231".to_string(), "US".to_string()),
                ("1".to_string(), "FR".to_string()),
            ]),
        )
        .unwrap();
        let ctx = MapContext {
            source: "books",
            countries: &countries,
        };
        incoming(&ctx, v).unwrap()
    }

    #[test]
    fn maps_the_vendor_sample() {
        let inc = map(&sample());
        assert_eq!(
            inc.version.as_deref(),
            Some("status 5; packages 1; cancelled 1; returned 0")
        );
        let m = inc.mapped.unwrap();
        assert_eq!(m.disposition, Disposition::Push);
        let o = &m.order;
        assert_eq!(o.order_key, "books:5");
        assert!(o.prices_include_tax);
        assert_eq!(o.ordered_at.to_rfc3339(), "2016-03-10T12:45:20+00:00");
        assert_eq!(o.lines.len(), 3);
        assert_eq!(o.lines[0].ean.as_deref(), Some("9789462082977"));
        assert_eq!(
            o.lines[0].description.as_deref(),
            Some("Adolf Loos Architectuur En Al Het Andere / Ineke Van Der Burg [gift wrap]")
        );
        assert_eq!(o.lines[1].line_total.to_string(), "59.97");
        // The voucher line keeps its full price; the voucher is a discount.
        assert_eq!(o.lines[2].unit_price.to_string(), "19.95");
        assert_eq!(o.discounts.len(), 1);
        assert_eq!(o.discounts[0].amount.to_string(), "5.00");
        assert!(
            o.discounts[0]
                .description
                .as_deref()
                .unwrap()
                .contains("DAVE04")
        );
        let ship = o.shipping_address.as_ref().unwrap();
        assert_eq!(
            ship.street.as_deref(),
            Some("Ingram St. 20"),
            "misspelled key + house number"
        );
        assert_eq!(ship.country.as_deref(), Some("US"));
        assert_eq!(
            o.billing_address.as_ref().unwrap().name.as_deref(),
            Some("Peter Parker")
        );
        assert_eq!(o.totals.gross.unwrap().to_string(), "99.87");
        assert!(!o.to_json().contains("null"));
        // The package's cancel leaves the line at 3 (as the sample's totals
        // do) and is kept beside the canonical order.
        assert_eq!(o.lines[1].quantity.to_string(), "3");
        assert_eq!(
            m.beyond_canonical,
            vec!["line 116: 1 cancelled at Titelive in package 22".to_string()]
        );
    }

    #[test]
    fn one_line_collapsed_and_an_order_reduction() {
        let v = json!({
            "id": 58127, "customer": 5389662, "price": 11.99, "priceFull": 16.99, "reduction": 5,
            "voucherCode": "DAVE04", "shipping": 0, "totalPrice": 11.99, "status": 5,
            "creationDate": "2022-06-01 17:08:30",
            "lines": {"line": {"id": 126858, "ean": 9789000366095u64, "title": "Er hangt een geheim in de lucht",
                               "price": 16.99, "quantity": 1, "productForm": "BB"}},
            "deliveryCountry": 1
        });
        let o = map(&v).mapped.unwrap().order;
        assert_eq!(o.lines.len(), 1);
        assert_eq!(o.discounts[0].amount.to_string(), "5");
        assert_eq!(
            o.discounts[0].description.as_deref(),
            Some("voucher DAVE04")
        );
        assert_eq!(o.shipping_address.unwrap().country.as_deref(), Some("FR"));
    }

    #[test]
    fn an_unmapped_country_names_the_id_and_the_key() {
        let mut v = sample();
        v["deliveryCountry"] = json!(44);
        let err = map(&v).mapped.unwrap_err();
        assert!(
            err.contains("deliveryCountry \"44\"") && err.contains("sources[0].country_map"),
            "{err}"
        );
        assert!(err.contains("order 5"), "{err}");
    }

    #[test]
    fn totals_that_do_not_add_up_are_refused() {
        let mut v = sample();
        v["totalPrice"] = json!(110.0);
        let err = map(&v).mapped.unwrap_err();
        assert!(err.contains("difference 10.13"), "{err}");
    }

    #[test]
    fn eans_from_numbers() {
        assert_eq!(
            ean(&json!(9789462500877u64)).unwrap().as_deref(),
            Some("9789462500877")
        );
        assert_eq!(
            ean(&json!(12345678905u64)).unwrap().as_deref(),
            Some("0012345678905")
        );
        assert_eq!(
            ean(&json!(9.789462500877e12)).unwrap().as_deref(),
            Some("9789462500877")
        );
        assert_eq!(
            ean(&json!("9789462500877")).unwrap().as_deref(),
            Some("9789462500877")
        );
        assert!(ean(&json!(97894625008770u64)).is_err());
        assert!(ean(&json!("97-89")).is_err());
        assert_eq!(ean(&json!(null)).unwrap(), None);
    }

    #[test]
    fn statuses_decide() {
        let mut v = sample();
        for (s, push) in [
            (5, true),
            (7, true),
            (8, true),
            (10, true),
            (1, false),
            (98, false),
        ] {
            v["status"] = json!(s);
            let d = map(&v).mapped.unwrap().disposition;
            assert_eq!(d == Disposition::Push, push, "status {s}: {d:?}");
        }
        v["status"] = json!(99);
        assert!(matches!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Cancel(_)
        ));
    }
}
