//! Retailys `OrderModel` (read with `expanded=true`) → canonical order.
//! Prices arrive as JSON floats in currency units: each is read from the
//! number's own text (`decimal_from_json`), never through f64 arithmetic.
//! `final_price` includes VAT, so the canonical order has
//! `prices_include_tax = true` and `money` is its gross total.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use super::statuses::StatusTable;
use crate::model::convert::{currency_code, json_decimal as decimal, json_text as text};
use crate::model::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};
use crate::model::{CountryMap, arith};
use crate::store::{Disposition, IncomingOrder, MappedOrder};

/// Why an open order without a status is held while `import_statuses` is
/// configured (the connector says it once at WARN too).
pub const NO_STATUS: &str = "the order carries no status_id, so import_statuses cannot tell whether to push it; remove import_statuses to push every open order";

/// The id of an order (or of anything with an `id`), as text.
pub fn id_of(v: &Value) -> Option<String> {
    text(&v["id"])
}

/// The order's status id: `status_id`, or `status.id` when the status is
/// inlined (expanded) or a stub.
pub fn status_id(v: &Value) -> Option<i64> {
    v["status_id"]
        .as_i64()
        .or_else(|| v["status"]["id"].as_i64())
}

/// Maps one order; `ours`: ordersync pushed it to the ERP. `Err` only when it
/// cannot be keyed (no id); any other problem gives an `IncomingOrder` whose
/// mapping failed (recorded, parked).
pub fn incoming(
    source: &str,
    statuses: &StatusTable,
    countries: &CountryMap,
    raw: &str,
    v: &Value,
    ours: bool,
) -> Result<IncomingOrder, String> {
    let id = id_of(v).ok_or("order has no id")?;
    Ok(IncomingOrder {
        external_id: id.clone(),
        raw: raw.to_string(),
        // No modification stamp in the API; the status is what changes.
        version: status_id(v).map(|s| format!("status {s}")),
        mapped: map_order(source, statuses, countries, &id, v, ours)
            .map_err(|e| format!("cannot map Retailys order {id}: {e}")),
    })
}

/// Invoice (`prefix = ""`) or delivery (`prefix = "delivery_"`) address.
fn address(countries: &CountryMap, v: &Value, prefix: &str) -> Result<Option<Address>, String> {
    let f = |k: &str| text(&v[format!("{prefix}{k}")]);
    let a = Address {
        name: f("name"),
        street: f("street"),
        postcode: f("zip"),
        city: f("city"),
        country: countries.iso(
            &format!("{prefix}state_code"),
            text(&v[format!("{prefix}state_code")]).as_deref(),
        )?,
    };
    Ok((a != Address::default()).then_some(a))
}

fn map_order(
    source: &str,
    st: &StatusTable,
    countries: &CountryMap,
    id: &str,
    v: &Value,
    ours: bool,
) -> Result<MappedOrder, String> {
    let when = text(&v["date_order"]).ok_or("date_order is missing")?;
    let ordered_at = DateTime::parse_from_rfc3339(&when)
        .map_err(|e| format!("date_order {when:?} is not a date-time with offset: {e}"))?
        .with_timezone(&Utc);
    let currency = text(&v["order_currency_code"])
        .or_else(|| text(&v["main_currency_code"]))
        .ok_or("order_currency_code is missing")?;
    let currency = currency_code(&currency)?;
    let company = &v["company"];
    let customer = Customer {
        name: text(&v["name"]),
        email: text(&v["email"]),
        phone: text(&v["phone"]),
        company: text(&company["name"]),
        vat_number: text(&v["company_vat"]),
        source_customer_id: text(&v["customer"]["id"]),
    };
    let Some(items) = v["items"].as_array() else {
        return Err("items is missing".into());
    };
    let mut lines = Vec::new();
    let mut discounts = Vec::new();
    let mut tax = Decimal::ZERO;
    for item in items {
        let line_id = id_of(item).ok_or("an item has no id")?;
        let what = format!("item {line_id}");
        let count = item["count"]
            .as_i64()
            .ok_or_else(|| format!("{what}: count {} is not a whole number", item["count"]))?;
        let quantity = Decimal::from(count);
        let price = &item["price"];
        let unit_price = decimal(&price["final_price"], &format!("{what}: price.final_price"))?;
        let base_price = decimal(&price["base_price"], &format!("{what}: price.base_price"))?;
        let vat = match &price["vat"] {
            Value::Null => None,
            r => Some(decimal(r, &format!("{what}: price.vat"))?),
        };
        let line_tax =
            arith::line_total(arith::sub(unit_price, base_price, &what)?, quantity, &what)?;
        tax = arith::add(tax, line_tax, &what)?;
        let line_total = arith::line_total(quantity, unit_price, &what)?;
        if line_total.is_sign_negative() {
            // A negative line is how the shop grants a discount (voucher).
            discounts.push(Discount {
                description: text(&item["name"]),
                amount: -line_total,
            });
            continue;
        }
        let article = &item["article"];
        lines.push(OrderLine {
            source_line_id: line_id,
            sku: text(&article["code"]).or_else(|| text(&article["id"])),
            ean: text(&article["ean"]),
            description: text(&item["name"]),
            quantity,
            unit_price,
            tax_rate: vat,
            line_total,
        });
    }
    // [inf] The expanded shipping object's price is not in the public models;
    // read `price` (with VAT) when present.
    let shipping = match &v["shipping"] {
        s if s.is_object() && (s.get("name").is_some() || s.get("price").is_some()) => {
            let amount = match &s["price"] {
                Value::Null => Decimal::ZERO,
                p => decimal(p, "shipping.price")?,
            };
            if let (Some(base), false) = (s.get("base_price"), amount.is_zero()) {
                let shipping_tax =
                    arith::sub(amount, decimal(base, "shipping.base_price")?, "shipping")?;
                tax = arith::add(tax, shipping_tax, "shipping")?;
            }
            Some(Shipping {
                method: text(&s["name"]),
                amount,
            })
        }
        _ => None,
    };
    let gross = decimal(&v["money"], "money")?;
    let paid = match &v["paid"] {
        Value::Null => Decimal::ZERO,
        p => decimal(p, "paid")?,
    };
    let payment_status = if !paid.is_zero() && paid >= gross {
        "paid"
    } else if !paid.is_zero() {
        "partially_paid"
    } else {
        "unpaid"
    };
    let reference = match (
        text(&v["external_order_prefix"]),
        text(&v["external_order_id"]),
    ) {
        (Some(p), Some(e)) => Some(format!("{p}{e}")),
        (None, Some(e)) => Some(e),
        _ => None,
    };
    let order = Order {
        order_key: order_key(source, id),
        source: source.to_string(),
        source_kind: "retailys".into(),
        external_id: id.to_string(),
        reference,
        ordered_at,
        currency,
        prices_include_tax: true,
        customer,
        billing_address: address(countries, v, "")?,
        shipping_address: address(countries, v, "delivery_")?,
        lines,
        shipping,
        discounts,
        totals: Totals::stated(arith::sub(gross, tax, "money - VAT")?, tax, gross),
        payment: Some(Payment {
            method: text(&v["payment"]["name"]),
            status: Some(payment_status.into()),
        }),
    };
    order.check_totals("money")?;
    let flag = |f: &str| v[f].as_bool() == Some(true);
    // The documented `OrderModel` carries no status (the list filter and the
    // PATCH body do): without one, the order's own flags decide. An open
    // order (not cancelled, done, sent or delivered) is importable, unless
    // `import_statuses` is configured: a gate we cannot read stays shut.
    let Some(status) = status_id(v) else {
        let finished = ["done", "sent", "delivered"].into_iter().find(|f| flag(f));
        let disposition = match finished {
            _ if flag("canceled") => Disposition::Cancel("cancelled at Retailys".into()),
            // Our own write-backs set `sent`: reading that back is not news.
            Some(_) if ours => Disposition::Push,
            Some(f) => Disposition::Hold(format!(
                "no status_id, and `{f}` is set: handled at Retailys without ordersync"
            )),
            None if ours || !st.import_given => Disposition::Push,
            None => Disposition::Hold(format!(
                "{NO_STATUS} (import_statuses: {})",
                st.import_names()
            )),
        };
        return Ok(MappedOrder::new(order, disposition));
    };
    let name = st.name(status);
    let disposition = if flag("canceled") {
        Disposition::Cancel("cancelled at Retailys".into())
    } else if st.get(status).is_some_and(|s| s.cancel_order) {
        Disposition::Cancel(format!("status {name:?} cancels the order"))
    } else if st.pushes(status, ours) {
        Disposition::Push
    } else {
        Disposition::Hold(format!(
            "status {name:?} is not imported (import_statuses: {})",
            st.import_names()
        ))
    };
    Ok(MappedOrder::new(order, disposition))
}

#[cfg(test)]
mod tests {
    use super::super::statuses::{Status, StatusTable, Wanted};
    use super::*;
    use crate::config::StatusRef;
    use serde_json::json;

    fn table() -> StatusTable {
        let s = |id, name: &str, c, x| Status {
            id,
            name: name.into(),
            complete_order: c,
            cancel_order: x,
        };
        StatusTable::resolve(
            vec![
                s(101, "New", false, false),
                s(102, "Awaiting payment", false, false),
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
        .unwrap()
    }

    // The floats are chosen so that f64 arithmetic would be off by a cent
    // or show binary noise: 3 x 0.1 and 1.005 are not what they look like.
    pub(crate) fn order() -> Value {
        json!({
            "id": 90017, "status_id": 101, "date_order": "2024-06-29T10:15:30+02:00",
            "customer": {"id": 5512, "name": "Jana Nováková"}, "company": {"id": 8, "name": "Nováková s.r.o."},
            "channel": {"id": 1, "name": "E-shop"}, "payment": {"id": 3, "name": "Card"},
            "shipping": {"id": 7, "name": "PPL", "price": 99.0, "base_price": 81.82, "vat": 21},
            "email": "jana@example.cz", "phone": "+420 777 000 111", "name": "Jana Nováková",
            "street": "Vinohradská 12", "city": "Praha", "zip": "120 00", "state_code": "cz",
            "company_nr": "27074358", "company_vat": "CZ27074358",
            "delivery_name": "", "delivery_street": null,
            "order_currency_code": "CZK", "main_currency_code": "CZK", "currency_rate": 1.0,
            "money": 1420.3, "paid": 1420.3,
            "items": [
                {"id": 1, "article": {"id": 44, "code": "TEA-01", "ean": "8594000000015"}, "name": "Čaj", "count": 3,
                 "price": {"base_price": 0.08, "final_price": 0.1, "vat": 21}},
                {"id": 2, "article": {"id": 45, "code": "MUG-02"}, "name": "Hrnek", "count": 2,
                 "price": {"base_price": 549.59, "final_price": 665.0, "vat": 21}},
                {"id": 3, "article": {"id": 46, "code": "SPOON"}, "name": "Lžička", "count": 1,
                 "price": {"base_price": 0.83, "final_price": 1.005, "vat": 21}},
                {"id": 4, "article": null, "name": "Sleva", "count": 1,
                 "price": {"base_price": -8.27, "final_price": -10.0, "vat": 21}}
            ],
            "trackings": [], "sent": false, "done": false, "canceled": false,
            "external_order_prefix": "EB-", "external_order_id": "5531"
        })
    }

    fn map(v: &Value) -> IncomingOrder {
        incoming(
            "eshop-cz",
            &table(),
            CountryMap::none(),
            &v.to_string(),
            v,
            true,
        )
        .unwrap()
    }

    #[test]
    fn floats_arrive_to_the_cent() {
        let m = map(&order()).mapped.unwrap();
        let o = &m.order;
        assert_eq!(m.disposition, Disposition::Push);
        assert!(o.prices_include_tax);
        assert_eq!(o.lines[0].unit_price.to_string(), "0.1");
        assert_eq!(
            o.lines[0].line_total.to_string(),
            "0.3",
            "3 x 0.1, not 0.30000000000000004"
        );
        assert_eq!(o.lines[1].line_total.to_string(), "1330.0");
        assert_eq!(
            o.lines[2].unit_price.to_string(),
            "1.005",
            "not 1.00499999999999989"
        );
        assert_eq!(
            o.lines[2].line_total.to_string(),
            "1.00",
            "banker's rounding of 1.005"
        );
        assert_eq!(o.discounts[0].amount.to_string(), "10.0");
        assert_eq!(o.shipping.as_ref().unwrap().amount.to_string(), "99.0");
        assert_eq!(o.totals.gross.unwrap().to_string(), "1420.3");
        let v: Value = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(v["totals"]["gross"], "1420.30");
        assert_eq!(v["lines"][0]["unit_price"], "0.10");
        assert_eq!(v["lines"][0]["line_total"], "0.30");
        assert_eq!(v["lines"][1]["tax_rate"], "21");
    }

    #[test]
    fn contacts_company_and_reference() {
        let o = map(&order()).mapped.unwrap().order;
        assert_eq!(o.ordered_at.to_rfc3339(), "2024-06-29T08:15:30+00:00");
        assert_eq!(o.currency, "CZK");
        assert_eq!(o.reference.as_deref(), Some("EB-5531"));
        assert_eq!(o.customer.vat_number.as_deref(), Some("CZ27074358"));
        assert_eq!(o.customer.company.as_deref(), Some("Nováková s.r.o."));
        assert_eq!(o.customer.source_customer_id.as_deref(), Some("5512"));
        let bill = o.billing_address.as_ref().unwrap();
        assert_eq!(bill.postcode.as_deref(), Some("120 00"));
        assert_eq!(bill.country.as_deref(), Some("CZ"));
        assert!(
            o.shipping_address.is_none(),
            "empty delivery fields are no address"
        );
        assert_eq!(o.lines[0].sku.as_deref(), Some("TEA-01"));
        assert_eq!(o.payment.as_ref().unwrap().status.as_deref(), Some("paid"));
    }

    #[test]
    fn statuses_decide_the_disposition() {
        let mut v = order();
        v["status_id"] = json!(102);
        assert!(
            matches!(map(&v).mapped.unwrap().disposition, Disposition::Hold(r) if r.contains("Awaiting payment"))
        );
        v["status_id"] = json!(104);
        assert_eq!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Push,
            "our own processing status"
        );
        v["status_id"] = json!(120);
        assert!(matches!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Cancel(_)
        ));
        v["status_id"] = json!(101);
        v["canceled"] = json!(true);
        assert!(matches!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Cancel(_)
        ));
    }

    #[test]
    fn bad_data_names_the_order_and_field() {
        let mut v = order();
        v["items"][1]["price"]["final_price"] = json!("abc");
        let err = map(&v).mapped.unwrap_err();
        assert!(
            err.contains("90017") && err.contains("item 2") && err.contains("final_price"),
            "{err}"
        );
        let mut v = order();
        v["money"] = json!(1500.0);
        let err = map(&v).mapped.unwrap_err();
        assert!(err.contains("difference"), "{err}");
        let mut v = order();
        v["items"][0]["count"] = json!(1.5);
        assert!(map(&v).mapped.unwrap_err().contains("count"));
        assert!(incoming("s", &table(), CountryMap::none(), "{}", &json!({}), false).is_err());
    }
}
