//! CloudSuite order detail → canonical order. CloudSuite sends decimals as
//! strings, prices excluding tax, and naive timestamps in the shop's local
//! time (Europe/Amsterdam unless configured otherwise).

use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::convert::{decimal_from_json, naive_local_to_utc};
use crate::model::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};
use crate::store::{Disposition, IncomingOrder, MappedOrder};

pub struct MapContext<'a> {
    pub source: &'a str,
    pub timezone: chrono_tz::Tz,
    pub payment_ok: &'a [String],
}

/// Maps one detail answer. `Err` only when the order cannot even be keyed
/// (no id); any other problem makes an `IncomingOrder` whose mapping failed,
/// so the order is recorded and parked with the reason.
pub fn incoming(ctx: &MapContext<'_>, raw: &str, v: &Value) -> Result<IncomingOrder, String> {
    let id = match &v["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => return Err("order detail has no id".into()),
    };
    Ok(IncomingOrder {
        external_id: id.clone(),
        raw: raw.to_string(),
        version: text(&v["modified_date"]),
        mapped: map_order(ctx, &id, v)
            .map_err(|e| format!("cannot map CloudSuite order {id}: {e}")),
    })
}

/// A string field, with `null` and `""` both meaning absent.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn decimal(v: &Value, what: &str) -> Result<Decimal, String> {
    decimal_from_json(v).map_err(|e| format!("{what}: {e}"))
}

fn map_address(v: &Value, what: &str) -> Result<Option<Address>, String> {
    if v.is_null() {
        return Ok(None);
    }
    if !v.is_object() {
        return Err(format!("{what} is not an object"));
    }
    let house = [text(&v["house_number"]), text(&v["house_number_addition"])]
        .into_iter()
        .flatten()
        .collect::<String>();
    let street = match (text(&v["street"]), house.is_empty()) {
        (Some(s), false) => Some(format!("{s} {house}")),
        (Some(s), true) => Some(s),
        (None, _) => None,
    };
    let country = match text(&v["country"]) {
        Some(c) if c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(c) => {
            return Err(format!(
                "{what}.country {c:?} is not an ISO 3166-1 alpha-2 code"
            ));
        }
        None => None,
    };
    Ok(Some(Address {
        name: text(&v["name"]),
        street,
        postcode: text(&v["postcode"]),
        city: text(&v["city"]),
        country,
    }))
}

fn map_order(ctx: &MapContext<'_>, id: &str, v: &Value) -> Result<MappedOrder, String> {
    let when = text(&v["confirm_date"])
        .or_else(|| text(&v["create_date"]))
        .ok_or("neither confirm_date nor create_date is set")?;
    let ordered_at = naive_local_to_utc(&when, ctx.timezone)?;
    let currency = text(&v["currency"]).ok_or("currency is missing")?;
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(format!("currency {currency:?} is not an ISO 4217 code"));
    }
    let c = &v["customer"];
    let customer = Customer {
        name: text(&c["name"]),
        email: text(&c["email"]),
        phone: text(&c["phone"]),
        company: text(&c["company_name"]),
        vat_number: text(&c["vat_number"]),
        source_customer_id: text(&c["id"]),
    };
    let mut lines = Vec::new();
    let mut discounts = Vec::new();
    let Some(order_lines) = v["order_lines"].as_array() else {
        return Err("order_lines is missing".into());
    };
    for line in order_lines {
        let line_id = text(&line["id"]).ok_or("an order line has no id")?;
        let what = format!("order line {line_id}");
        let quantity = decimal(&line["quantity"], &format!("{what}: quantity"))?;
        let unit_price = decimal(&line["unit_price"], &format!("{what}: unit_price"))?;
        let description = text(&line["description"]);
        match text(&line["type"]).as_deref().unwrap_or("line") {
            "line" => {
                let product = &line["product"];
                let tax_rate = match &line["tax_rate"] {
                    Value::Null => None,
                    t => Some(decimal(t, &format!("{what}: tax_rate"))?),
                };
                lines.push(OrderLine {
                    source_line_id: line_id,
                    sku: text(&product["sku"]).or_else(|| text(&product["key"])),
                    ean: text(&product["ean"]),
                    description,
                    quantity,
                    unit_price,
                    tax_rate,
                    line_total: (quantity * unit_price).round_dp(2),
                });
            }
            "discount" => discounts.push(Discount {
                description,
                amount: -(quantity * unit_price).round_dp(2),
            }),
            other => return Err(format!("{what}: unknown line type {other:?}")),
        }
    }
    let shipping_amount = match &v["shipping_costs"] {
        Value::Null => None,
        s => Some(decimal(s, "shipping_costs")?),
    };
    let shipping_method = text(&v["shipping_method"]);
    let shipping = if shipping_amount.is_some() || shipping_method.is_some() {
        Some(Shipping {
            method: shipping_method,
            amount: shipping_amount.unwrap_or_default(),
        })
    } else {
        None
    };
    let totals = Totals {
        net: decimal(&v["total_excl"], "total_excl")?,
        tax: decimal(&v["total_tax"], "total_tax")?,
        gross: decimal(&v["total_incl"], "total_incl")?,
    };
    let payment_status = text(&v["payment_status"]);
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
        billing_address: map_address(&v["invoice_address"], "invoice_address")?,
        shipping_address: map_address(&v["shipment_address"], "shipment_address")?,
        lines,
        shipping,
        discounts,
        totals,
        payment: Some(Payment {
            method: text(&v["payment_method"]),
            status: payment_status.clone(),
        }),
    };
    order.check_totals()?;
    let state = text(&v["state"]).unwrap_or_default();
    let disposition = if state == "cancel" {
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
            payment_status.as_deref().unwrap_or("missing"),
            ctx.payment_ok.join(", ")
        ))
    };
    Ok(MappedOrder { order, disposition })
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

    #[test]
    fn without_id_it_cannot_be_keyed() {
        let (ok, tz) = ctx();
        let c = MapContext {
            source: "s",
            timezone: tz,
            payment_ok: &ok,
        };
        assert!(incoming(&c, "{}", &json!({})).is_err());
    }
}
