//! Validation of the canonical order JSON an ERP receives: every rule of the
//! contract gives a 422 message that says what is wrong and where (JSON path),
//! so a failing client test points at the offending field.

use serde_json::{Map, Value};

/// Paths whose values must be decimal strings when present.
const LINE_DECIMALS: [&str; 4] = ["quantity", "unit_price", "line_total", "tax_rate"];
const TOTALS_DECIMALS: [&str; 3] = ["net", "tax", "gross"];

pub(super) fn validate(
    body: &Value,
    idempotency_key: &str,
    unknown_skus: &[String],
) -> Result<(), String> {
    let Value::Object(order) = body else {
        return Err("body must be a JSON object".into());
    };
    find_null_or_empty(body, "$")?;

    match order.get("order_key") {
        None => return Err("$.order_key is required".into()),
        Some(Value::String(k))
            if k == idempotency_key || crate::http::header_safe(k) == idempotency_key => {}
        Some(Value::String(k)) => {
            return Err(format!(
                "$.order_key \"{k}\" does not match the Idempotency-Key \"{idempotency_key}\""
            ));
        }
        Some(_) => return Err("$.order_key must be a string".into()),
    }
    if let Some(v) = order.get("ordered_at") {
        let ok = v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
        if !ok {
            return Err(format!(
                "$.ordered_at must be an RFC 3339 timestamp, got {v}"
            ));
        }
    }
    if let Some(v) = order.get("currency") {
        let ok = v
            .as_str()
            .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()));
        if !ok {
            return Err(format!(
                "$.currency must be 3 uppercase letters (ISO 4217), got {v}"
            ));
        }
    }

    let lines = match order.get("lines") {
        None => return Err("$.lines is required".into()),
        Some(Value::Array(lines)) if lines.is_empty() => {
            return Err("$.lines must not be empty".into());
        }
        Some(Value::Array(lines)) => lines,
        Some(_) => return Err("$.lines must be an array".into()),
    };
    for (i, line) in lines.iter().enumerate() {
        let path = format!("$.lines[{i}]");
        let Value::Object(line) = line else {
            return Err(format!("{path} must be an object"));
        };
        for field in ["source_line_id", "quantity", "unit_price"] {
            if !line.contains_key(field) {
                return Err(format!("{path}.{field} is required"));
            }
        }
        if !line.get("source_line_id").is_some_and(Value::is_string) {
            return Err(format!("{path}.source_line_id must be a string"));
        }
        decimals(line, &path, &LINE_DECIMALS)?;
    }

    if let Some(shipping) = order.get("shipping") {
        object_decimals(shipping, "$.shipping", &["amount"])?;
    }
    if let Some(discounts) = order.get("discounts") {
        let Value::Array(discounts) = discounts else {
            return Err("$.discounts must be an array".into());
        };
        for (i, d) in discounts.iter().enumerate() {
            object_decimals(d, &format!("$.discounts[{i}]"), &["amount"])?;
        }
    }
    if let Some(totals) = order.get("totals") {
        object_decimals(totals, "$.totals", &TOTALS_DECIMALS)?;
    }
    if let Some(payment) = order.get("payment") {
        object_decimals(payment, "$.payment", &["amount"])?;
    }

    // Master-data check last: the ERP only looks products up for a sane order.
    for line in lines {
        if let Some(sku) = line.get("sku").and_then(Value::as_str)
            && unknown_skus.iter().any(|u| u == sku)
        {
            return Err(format!("product {sku} not found"));
        }
    }
    Ok(())
}

/// The contract says absent optionals are omitted, so null and "" are errors.
fn find_null_or_empty(v: &Value, path: &str) -> Result<(), String> {
    match v {
        Value::Null => Err(format!(
            "{path} is null; omit absent optional fields instead"
        )),
        Value::String(s) if s.is_empty() => Err(format!(
            "{path} is an empty string; omit absent optional fields instead"
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| find_null_or_empty(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, item)| find_null_or_empty(item, &format!("{path}.{k}"))),
        _ => Ok(()),
    }
}

fn object_decimals(v: &Value, path: &str, fields: &[&str]) -> Result<(), String> {
    match v {
        Value::Object(map) => decimals(map, path, fields),
        _ => Err(format!("{path} must be an object")),
    }
}

fn decimals(map: &Map<String, Value>, path: &str, fields: &[&str]) -> Result<(), String> {
    for field in fields {
        match map.get(*field) {
            None => {}
            Some(Value::String(s)) if is_decimal(s) => {}
            Some(Value::String(s)) => {
                return Err(format!(
                    "{path}.{field} must be a decimal string, got \"{s}\""
                ));
            }
            Some(other) => {
                return Err(format!(
                    "{path}.{field} must be a decimal string (e.g. \"19.99\"), got {other}"
                ));
            }
        }
    }
    Ok(())
}

/// Plain `-?digits[.digits]`: no exponent, no separators, no spaces.
fn is_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits) && s.parse::<rust_decimal::Decimal>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Value {
        json!({
            "order_key": "webshop-nl:1", "currency": "EUR", "ordered_at": "2024-06-29T08:15:00Z",
            "lines": [{"source_line_id": "11", "sku": "124_STUK", "quantity": "2", "unit_price": "19.99"}],
            "totals": {"net": "39.98", "tax": "8.40", "gross": "48.38"},
        })
    }

    #[test]
    fn accepts_the_canonical_shape() {
        assert_eq!(validate(&order(), "webshop-nl:1", &[]), Ok(()));
    }

    /// A B2B order: the customer known only by the source's id, no
    /// addresses, and only the net total (CloudSuite states no tax).
    #[test]
    fn accepts_a_customer_known_only_by_id_and_a_net_total_only() {
        let mut o = order();
        o["customer"] = json!({"source_customer_id": "1324"});
        o["totals"] = json!({"net": "39.98"});
        assert_eq!(validate(&o, "webshop-nl:1", &[]), Ok(()));
    }

    /// Issue 12.14: a key a header cannot carry as is arrives encoded.
    #[test]
    fn an_encoded_idempotency_key_matches_its_order_key() {
        let mut o = order();
        o["order_key"] = json!("till:ORD-é");
        assert_eq!(validate(&o, "till:ORD-%C3%A9", &[]), Ok(()));
        assert!(validate(&o, "till:ORD-%C3%A8", &[]).is_err());
    }

    #[test]
    fn rejects_contract_violations_with_a_path() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"customer": {"phone": null}}),
                "$.customer.phone is null",
            ),
            (
                json!({"lines": [{"source_line_id": "11", "quantity": "2", "unit_price": "19.99", "ean": ""}]}),
                "$.lines[0].ean is an empty string",
            ),
            (
                json!({"lines": [{"source_line_id": "11", "quantity": "1e3", "unit_price": "1"}]}),
                "$.lines[0].quantity",
            ),
            (
                json!({"lines": [{"source_line_id": "11", "quantity": 2, "unit_price": "1"}]}),
                "$.lines[0].quantity",
            ),
            (json!({"lines": []}), "must not be empty"),
            (
                json!({"lines": [{"quantity": "1", "unit_price": "1"}]}),
                "source_line_id is required",
            ),
            (json!({"currency": "eur"}), "$.currency"),
            (json!({"ordered_at": "2024-06-29 08:15"}), "$.ordered_at"),
            (json!({"order_key": "other"}), "does not match"),
            (json!({"totals": {"net": "1,00"}}), "$.totals.net"),
        ];
        for (patch, expected) in cases {
            let mut body = order();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let err = validate(&body, "webshop-nl:1", &[]).unwrap_err();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        assert_eq!(
            validate(&order(), "webshop-nl:1", &["124_STUK".into()]),
            Err("product 124_STUK not found".into())
        );
        assert!(validate(&json!([1]), "k", &[]).is_err());
    }

    #[test]
    fn decimal_strings() {
        for ok in ["2", "19.99", "-5.00", "0.530"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "abc", "1e3", "1_000", " 1", "1.", ".5", "+1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
