//! CloudSuite order detail → canonical order. CloudSuite sends decimals as
//! strings, prices excluding tax, and naive timestamps in the shop's local
//! time (Europe/Amsterdam unless configured otherwise).

use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::convert::{
    currency_code, json_decimal as decimal, json_text as text, naive_local_to_utc,
};
use crate::model::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};
use crate::model::{CountryMap, arith};
use crate::store::{Disposition, IncomingOrder, MappedOrder};

pub struct MapContext<'a> {
    pub source: &'a str,
    pub timezone: chrono_tz::Tz,
    pub payment_ok: &'a [String],
    /// The source's `country_map`.
    pub countries: &'a CountryMap,
}

/// Maps one detail answer. `Err` only when the order cannot even be keyed
/// (no id); any other problem makes an `IncomingOrder` whose mapping failed,
/// so the order is recorded and parked with the reason.
pub fn incoming(ctx: &MapContext<'_>, raw: &str, v: &Value) -> Result<IncomingOrder, String> {
    let id = text(&v["id"]).ok_or("order detail has no id")?;
    Ok(IncomingOrder {
        external_id: id.clone(),
        raw: raw.to_string(),
        version: text(&v["modified_date"]),
        mapped: map_order(ctx, &id, v)
            .map_err(|e| format!("cannot map CloudSuite order {id}: {e}")),
    })
}

/// `shipment_address` / `invoice_address`: the documents show an id (or a
/// `*_key {origin, key}` beside it); a tenant may also embed the object.
/// Only an embedded object says anything about the address: an id or a key
/// leaves it absent in the canonical order, never invented or `""`.
fn map_address(countries: &CountryMap, v: &Value, what: &str) -> Result<Option<Address>, String> {
    let a = &v[what];
    match a {
        Value::Null | Value::Number(_) | Value::String(_) => return Ok(None),
        Value::Object(_) => {}
        other => return Err(format!("{what} is neither an id nor an object: {other}")),
    }
    let house = [text(&a["house_number"]), text(&a["house_number_addition"])]
        .into_iter()
        .flatten()
        .collect::<String>();
    let street = match (text(&a["street"]), house.is_empty()) {
        (Some(s), false) => Some(format!("{s} {house}")),
        (Some(s), true) => Some(s),
        (None, _) => None,
    };
    let country = countries.iso(&format!("{what}.country"), text(&a["country"]).as_deref())?;
    let address = Address {
        name: text(&a["name"]),
        street,
        postcode: text(&a["postcode"]),
        city: text(&a["city"]),
        country,
    };
    Ok((address != Address::default()).then_some(address))
}

/// `customer`: an id in the documents (`"customer": 1324`), or an embedded
/// object. The id is always carried: it is how a B2B shop knows its buyer.
fn map_customer(v: &Value) -> Customer {
    let c = &v["customer"];
    match c {
        Value::Object(_) => Customer {
            name: text(&c["name"]),
            email: text(&c["email"]),
            phone: text(&c["phone"]),
            company: text(&c["company_name"]).or_else(|| text(&c["company"])),
            vat_number: text(&c["vat_number"]),
            source_customer_id: text(&c["id"]),
        },
        other => Customer {
            source_customer_id: text(other),
            ..Customer::default()
        },
    }
}

/// An optional decimal: absent or `null` is `None`, anything else must parse.
fn optional_decimal(v: &Value, what: &str) -> Result<Option<Decimal>, String> {
    match v {
        Value::Null => Ok(None),
        d => decimal(d, what).map(Some),
    }
}

fn map_order(ctx: &MapContext<'_>, id: &str, v: &Value) -> Result<MappedOrder, String> {
    let when = text(&v["confirm_date"])
        .or_else(|| text(&v["create_date"]))
        .or_else(|| text(&v["order_date"]))
        .ok_or("none of confirm_date, create_date or order_date is set")?;
    let ordered_at = naive_local_to_utc(&when, ctx.timezone)?;
    let currency = currency_code(&text(&v["currency"]).ok_or("currency is missing")?)?;
    let customer = map_customer(v);
    let mut lines = Vec::new();
    let mut discounts = Vec::new();
    let Some(order_lines) = v["order_lines"].as_array() else {
        return Err("order_lines is missing".into());
    };
    for (i, line) in order_lines.iter().enumerate() {
        let line_id = text(&line["id"]).ok_or_else(|| format!("order_lines[{i}] has no id"))?;
        let what = format!("order line {line_id}");
        let quantity = decimal(&line["quantity"], &format!("{what}: quantity"))?;
        let unit_price = decimal(&line["unit_price"], &format!("{what}: unit_price"))?;
        let description = text(&line["description"]);
        let amount = arith::line_total(quantity, unit_price, &what)?;
        match text(&line["type"]).as_deref().unwrap_or("line") {
            "line" => {
                let product = &line["product"];
                lines.push(OrderLine {
                    source_line_id: line_id,
                    sku: text(&product["sku"]).or_else(|| text(&product["key"])),
                    ean: text(&product["ean"]),
                    description,
                    quantity,
                    unit_price,
                    tax_rate: optional_decimal(&line["tax_rate"], &format!("{what}: tax_rate"))?,
                    line_total: amount,
                });
            }
            "discount" => discounts.push(Discount {
                description,
                amount: -amount,
            }),
            other => return Err(format!("{what}: unknown line type {other:?}")),
        }
    }
    let shipping_amount = optional_decimal(&v["shipping_costs"], "shipping_costs")?;
    let shipping_method = text(&v["shipping_method"]);
    let shipping = if shipping_amount.is_some() || shipping_method.is_some() {
        Some(Shipping {
            method: shipping_method,
            amount: shipping_amount.unwrap_or_default(),
        })
    } else {
        None
    };
    // The documents show no totals: when the detail has none, the net total
    // is what the lines add up to; when it has them, they are checked.
    let stated_net = optional_decimal(&v["total_excl"], "total_excl")?;
    let net = match stated_net {
        Some(n) => n,
        None => {
            let lines_sum = arith::sum(lines.iter().map(|l| l.line_total), "line totals")?;
            let discount_sum = arith::sum(discounts.iter().map(|d| d.amount), "discounts")?;
            let with_shipping = arith::add(
                lines_sum,
                shipping.as_ref().map(|s| s.amount).unwrap_or_default(),
                "lines + shipping_costs",
            )?;
            arith::sub(with_shipping, discount_sum, "discounts")?
        }
    };
    let totals = Totals {
        net: Some(net),
        tax: optional_decimal(&v["total_tax"], "total_tax")?,
        gross: optional_decimal(&v["total_incl"], "total_incl")?,
    };
    // "Check the payment status if there is a payment option in the site":
    // a site without one need not send the field; missing or null then
    // reads as `none` ("no payment"), which `payment_ok` decides on.
    let payment_status = text(&v["payment_status"]).or_else(|| Some("none".into()));
    let order = Order {
        order_key: order_key(ctx.source, id),
        source: ctx.source.to_string(),
        source_kind: "cloudsuite".into(),
        external_id: id.to_string(),
        reference: text(&v["reference"]),
        ordered_at,
        currency,
        prices_include_tax: false,
        customer,
        billing_address: map_address(ctx.countries, v, "invoice_address")?,
        shipping_address: map_address(ctx.countries, v, "shipment_address")?,
        lines,
        shipping,
        discounts,
        totals,
        payment: Some(Payment {
            method: text(&v["payment_method"]),
            status: payment_status.clone(),
        }),
    };
    order.check_totals("total_excl")?;
    cross_check_paid_amount(&order, v);
    let state = text(&v["state"]).unwrap_or_default();
    let disposition = if v["offline"] == Value::Bool(true) {
        Disposition::Cancel(
            "an offline order (entered outside the webshop, e.g. posted by the ERP): not imported"
                .into(),
        )
    } else if state == "cancel" {
        Disposition::Cancel("cancelled at CloudSuite (state cancel)".into())
    } else if payment_status.as_deref() == Some("closed_canceled") {
        Disposition::Cancel("payment closed_canceled: no payment will come".into())
    } else if matches!(state.as_str(), "draft" | "quotation") {
        Disposition::Hold(format!("state is {state}, not confirmed"))
    } else if payment_status
        .as_ref()
        .is_some_and(|p| ctx.payment_ok.iter().any(|ok| ok == p))
    {
        Disposition::Push
    } else {
        Disposition::Hold(format!(
            "payment_status is {}; waiting for one of {}",
            payment_status.as_deref().unwrap_or("none"),
            ctx.payment_ok.join(", ")
        ))
    };
    Ok(MappedOrder::new(order, disposition))
}

/// `paid_amount` is only a cross-check: it may include tax the order does
/// not state, or be a part payment. A paid order whose `paid_amount` is not
/// its gross total (or, without one, is below its net total) is logged,
/// never parked.
fn cross_check_paid_amount(order: &Order, v: &Value) {
    let Ok(Some(paid)) = optional_decimal(&v["paid_amount"], "paid_amount") else {
        return;
    };
    let paid_status = order
        .payment
        .as_ref()
        .and_then(|p| p.status.as_deref())
        .is_some_and(|s| matches!(s, "paid" | "closed_success"));
    if !paid_status {
        return;
    }
    let odd = match (order.totals.gross, order.totals.net) {
        // Remote numbers: a difference beyond `Decimal` is odd too.
        (Some(gross), _) => arith::sub(paid, gross, "paid_amount")
            .map_or(true, |diff| diff.abs() > Decimal::new(1, 2)),
        (None, Some(net)) => paid < net,
        (None, None) => false,
    };
    if odd {
        tracing::info!(
            order_key = %order.order_key,
            paid_amount = %paid,
            totals = %order.totals.headline(),
            "CloudSuite paid_amount does not match the order's totals (cross-check only; the order flows)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn detail() -> Value {
        json!({
            "id": 48193, "reference": "CS48193", "key": null, "customer_order_number": "PO-7781",
            "erp_order_number": null, "state": "confirmed", "payment_status": "paid", "payment_method": "ideal",
            "shipment_state": null, "order_date": "2024-06-29", "confirm_date": "2024-06-29T10:15:00.123456",
            "create_date": "2024-06-29T10:11:02.000000", "modified_date": "2024-06-29T10:15:00.123456",
            "currency": "EUR", "description": "Webshop order", "webshop": 1,
            "customer": {"id": 1324, "name": "Jan de Vries", "email": "jan@example.nl", "phone": null,
                         "company_name": "", "vat_number": null},
            "invoice_address": {"id": 77, "name": "Jan de Vries", "street": "Keizersgracht", "house_number": "12",
                                "house_number_addition": "A", "postcode": "1015 CJ", "city": "Amsterdam", "country": "NL"},
            "shipment_address": null,
            "shipping_method": "PostNL", "shipping_costs": "4.95",
            "order_lines": [
              {"id": 11, "type": "line", "product": {"origin": "cloudsuite", "key": "124_STUK", "sku": "124_STUK", "ean": "9789462500877"},
               "description": "Boek", "quantity": "2.000", "unit_price": "19.99", "tax_rate": "21.00", "erp_line_number": null},
              {"id": 13, "type": "line", "product": {"origin": "cloudsuite", "key": "KAAS-KG", "sku": null, "ean": null},
               "description": "Kaas per kg", "quantity": "0.530", "unit_price": "12.99", "tax_rate": "9.00", "erp_line_number": null},
              {"id": 12, "type": "discount", "product": null, "description": "Kortingscode ZOMER", "quantity": "1.000",
               "unit_price": "-5.00", "tax_rate": "21.00", "erp_line_number": null}],
            "total_excl": "46.81", "total_tax": "8.93", "total_incl": "55.74"
        })
    }

    fn ctx() -> (Vec<String>, chrono_tz::Tz) {
        (
            vec!["paid".into(), "closed_success".into()],
            chrono_tz::Europe::Amsterdam,
        )
    }

    fn map(v: &Value) -> IncomingOrder {
        let (ok, tz) = ctx();
        let c = MapContext {
            source: "webshop-nl",
            timezone: tz,
            payment_ok: &ok,
            countries: &CountryMap::default(),
        };
        incoming(&c, &v.to_string(), v).unwrap()
    }

    #[test]
    fn maps_a_full_order() {
        let inc = map(&detail());
        let m = inc.mapped.unwrap();
        let o = &m.order;
        assert_eq!(m.disposition, Disposition::Push);
        assert_eq!(o.order_key, "webshop-nl:48193");
        assert_eq!(
            o.ordered_at.to_rfc3339(),
            "2024-06-29T08:15:00.123456+00:00"
        );
        assert_eq!(o.lines.len(), 2);
        assert_eq!(o.lines[0].line_total.to_string(), "39.98");
        // 0.530 kg x 12.99 = 6.8847 -> 6.88
        assert_eq!(o.lines[1].line_total.to_string(), "6.88");
        assert_eq!(
            o.lines[1].sku.as_deref(),
            Some("KAAS-KG"),
            "falls back to the product key"
        );
        assert_eq!(o.discounts[0].amount.to_string(), "5.00");
        assert_eq!(o.shipping.as_ref().unwrap().amount.to_string(), "4.95");
        let addr = o.billing_address.as_ref().unwrap();
        assert_eq!(addr.street.as_deref(), Some("Keizersgracht 12A"));
        assert!(o.shipping_address.is_none());
        assert_eq!(
            o.customer.company, None,
            "empty strings are absent, not \"\""
        );
        assert_eq!(o.customer.source_customer_id.as_deref(), Some("1324"));
        assert_eq!(inc.version.as_deref(), Some("2024-06-29T10:15:00.123456"));
    }

    #[test]
    fn an_offline_order_is_never_imported() {
        let mut v = detail();
        v["offline"] = json!(false);
        assert_eq!(map(&v).mapped.unwrap().disposition, Disposition::Push);
        v["offline"] = json!(true);
        assert!(matches!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Cancel(r) if r.contains("offline")
        ));
    }

    #[test]
    fn payment_gate() {
        let mut v = detail();
        v["payment_status"] = json!("started");
        assert!(
            matches!(map(&v).mapped.unwrap().disposition, Disposition::Hold(r) if r.contains("started"))
        );
        v["payment_status"] = json!("closed_canceled");
        assert!(matches!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Cancel(_)
        ));
        // No payment option in the site: no field, or null, reads as `none`.
        for absent in [None, Some(Value::Null)] {
            match absent {
                None => drop(v.as_object_mut().unwrap().remove("payment_status")),
                Some(null) => v["payment_status"] = null,
            }
            // This context's `payment_ok` leaves `none` out: held as `none`.
            let mapped = map(&v).mapped.unwrap();
            assert!(
                matches!(&mapped.disposition, Disposition::Hold(r) if r.starts_with("payment_status is none;")),
                "{:?}",
                mapped.disposition
            );
            assert_eq!(
                mapped.order.payment.unwrap().status.as_deref(),
                Some("none")
            );
        }
        v["payment_status"] = json!("paid");
        v["state"] = json!("cancel");
        assert!(matches!(
            map(&v).mapped.unwrap().disposition,
            Disposition::Cancel(_)
        ));
    }

    #[test]
    fn a_bad_quantity_names_the_line() {
        let mut v = detail();
        v["order_lines"][1]["quantity"] = json!("abc");
        let err = map(&v).mapped.unwrap_err();
        assert!(
            err.contains("48193") && err.contains("order line 13") && err.contains("abc"),
            "{err}"
        );
    }

    #[test]
    fn totals_that_do_not_add_up_are_refused() {
        let mut v = detail();
        v["total_excl"] = json!("50.00");
        let err = map(&v).mapped.unwrap_err();
        assert!(err.contains("difference 3.19"), "{err}");
    }

    /// The shape the documents show: customer and addresses as ids (or
    /// `*_key`), no totals, no tax rates, `paid_amount`.
    fn documented() -> Value {
        json!({
            "id": 12345, "reference": "CS48193", "customer": 1324, "erp_order_number": null,
            "state": "confirmed", "payment_status": "paid", "currency": "EUR",
            "confirm_date": "2024-06-29T10:15:00.123456", "modified_date": "2024-06-29T10:15:00.123456",
            "order_lines": [
              {"id": 11, "product": {"key": "124_STUK", "origin": "myorigin"}, "description": "My description",
               "type": "line", "quantity": 1.0, "unit_price": "19.99", "erp_line_number": null},
              {"id": 12, "product": {"key": "123_KG", "origin": "myorigin"}, "description": "My description 2",
               "type": "line", "quantity": 2.0, "unit_price": "3.50", "erp_line_number": null}],
            "shipment_address": 1695, "invoice_address": 1652,
            "shipment_address_key": {"origin": "myorigin", "key": "ADR-1695"},
            "paid_amount": "32.21", "webshop": 1, "user": 1260
        })
    }

    #[test]
    fn the_documented_shape_maps_without_totals_or_embedded_objects() {
        let inc = map(&documented());
        let m = inc.mapped.unwrap();
        let o = &m.order;
        assert_eq!(m.disposition, Disposition::Push);
        assert_eq!(o.customer.source_customer_id.as_deref(), Some("1324"));
        assert_eq!(o.customer.name, None, "nothing invented");
        assert!(o.billing_address.is_none() && o.shipping_address.is_none());
        assert_eq!(o.lines[0].sku.as_deref(), Some("124_STUK"));
        assert_eq!(o.lines[1].line_total.to_string(), "7.00");
        assert_eq!(o.totals.net.unwrap().to_string(), "26.99");
        assert_eq!((o.totals.tax, o.totals.gross), (None, None));
        let json = o.to_json();
        assert!(!json.contains("null") && !json.contains("\"\""), "{json}");
        assert!(
            !json.contains("\"tax\"") && !json.contains("billing_address"),
            "{json}"
        );
    }

    #[test]
    fn customer_and_addresses_may_be_ids_keys_or_objects() {
        let mut v = documented();
        v["customer"] = json!("C-7781");
        v["invoice_address"] = Value::Null;
        v["invoice_address_key"] = json!({"origin": "erp", "key": "A-1"});
        let o = map(&v).mapped.unwrap().order;
        assert_eq!(o.customer.source_customer_id.as_deref(), Some("C-7781"));
        assert!(o.billing_address.is_none());

        v["customer"] = json!({"id": 1324, "name": "Jan de Vries", "company_name": "De Vries BV"});
        v["shipment_address"] = json!({"id": 1695, "name": "Magazijn", "street": "Kade", "house_number": "3",
                                       "postcode": "1011 AA", "city": "Amsterdam", "country": "nl"});
        let o = map(&v).mapped.unwrap().order;
        assert_eq!(o.customer.source_customer_id.as_deref(), Some("1324"));
        assert_eq!(o.customer.company.as_deref(), Some("De Vries BV"));
        let a = o.shipping_address.unwrap();
        assert_eq!(a.street.as_deref(), Some("Kade 3"));
        assert_eq!(a.country.as_deref(), Some("NL"));

        // An embedded address that says nothing is absent, not empty.
        v["shipment_address"] = json!({"id": 1695, "street": "", "city": null});
        assert!(map(&v).mapped.unwrap().order.shipping_address.is_none());

        v["shipment_address"] = json!([1695]);
        let err = map(&v).mapped.unwrap_err();
        assert!(
            err.contains("shipment_address is neither an id nor an object"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_unit_price_names_the_vendor_field() {
        let mut v = documented();
        v["order_lines"][1]["unit_price"] = Value::Null;
        let err = map(&v).mapped.unwrap_err();
        assert!(err.contains("order line 12: unit_price"), "{err}");
    }

    #[test]
    fn a_price_that_overflows_parks_the_order_instead_of_panicking() {
        let mut v = documented();
        v["order_lines"][0]["quantity"] = json!("79228162514264337593543950335");
        v["order_lines"][0]["unit_price"] = json!("2");
        let err = map(&v).mapped.unwrap_err();
        assert!(
            err.contains("order line 11") && err.contains("out of range"),
            "{err}"
        );
    }

    /// Found by `fuzz_tests`: `paid_amount` minus a `total_incl` near
    /// `Decimal::MIN` overflowed in the paid-amount cross-check.
    #[test]
    fn a_paid_amount_far_from_a_huge_gross_total_is_only_logged() {
        let mut v = detail();
        v["total_incl"] = json!("-79228162514264337593543950335");
        v["paid_amount"] = json!("55.74");
        let m = map(&v).mapped.unwrap();
        assert_eq!(m.disposition, Disposition::Push, "a cross-check only");
    }

    #[test]
    fn stated_totals_are_checked_in_the_vendors_names() {
        let mut v = documented();
        v["total_excl"] = json!("30.00");
        let err = map(&v).mapped.unwrap_err();
        assert!(
            err.contains("the order's total_excl is 30.00 (difference 3.01)"),
            "{err}"
        );
        v["total_excl"] = json!("26.99");
        v["total_tax"] = json!("5.67");
        v["total_incl"] = json!("32.66");
        let o = map(&v).mapped.unwrap().order;
        assert_eq!(o.totals.gross.unwrap().to_string(), "32.66");
    }

    #[test]
    fn without_id_it_cannot_be_keyed() {
        let (ok, tz) = ctx();
        let c = MapContext {
            source: "s",
            timezone: tz,
            payment_ok: &ok,
            countries: &CountryMap::default(),
        };
        assert!(incoming(&c, "{}", &json!({})).is_err());
    }
}
