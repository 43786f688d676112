//! Conversions at the edge: the sources' money and time formats into
//! `Decimal` and UTC. Each one is tested; none goes through `f64` arithmetic.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;

/// A decimal from JSON: a string (`"19.99"`) or a number (`19.99`). Numbers are
/// read from their shortest text form, so `0.1` is exactly 0.1, not
/// 0.1000000000000000055511151231257827.
pub fn decimal_from_json(v: &serde_json::Value) -> Result<Decimal, String> {
    match v {
        serde_json::Value::String(s) => parse_decimal(s),
        serde_json::Value::Number(n) => parse_decimal(&n.to_string()),
        other => Err(format!("expected a decimal, got {other}")),
    }
}

/// A JSON field as text, one rule for every JSON source: a string (without
/// blanks around it) or a number's own text; `null`, a missing field, `""`
/// and blanks are absent.
pub fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// [`decimal_from_json`] with the field named in the error.
pub fn json_decimal(v: &serde_json::Value, what: &str) -> Result<Decimal, String> {
    decimal_from_json(v).map_err(|e| format!("{what}: {e}"))
}

/// An ISO 4217 currency code as the canonical order carries it (three
/// capital letters).
pub fn currency_code(code: &str) -> Result<String, String> {
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code.to_string())
    } else {
        Err(format!("currency {code:?} is not an ISO 4217 code"))
    }
}

/// A decimal from text, plain (`"2.000"`) or scientific (`"1e-7"`).
pub fn parse_decimal(s: &str) -> Result<Decimal, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("expected a decimal, got an empty string".into());
    }
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| format!("{s:?} is not a decimal number"))
}

/// Integer cents (MplusKASSA prices) into currency units.
pub fn from_cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// An integer with an implied decimal shift (MplusKASSA quantities:
/// 0.530 kg is `530` with `decimalPlaces = 3`).
pub fn from_scaled(value: i64, decimal_places: u32) -> Result<Decimal, String> {
    Decimal::try_new(value, decimal_places)
        .map_err(|_| format!("decimalPlaces {decimal_places} out of range"))
}

/// A naive local timestamp (no zone) read in `tz`, as UTC. In the autumn
/// overlap the earlier instant is taken; a time inside the spring-forward gap
/// does not exist on a wall clock and is moved forward by the gap.
pub fn naive_local_to_utc(text: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    let naive = parse_naive(text)?;
    local_to_utc(naive, tz).ok_or_else(|| format!("{text:?} cannot be placed in time zone {tz}"))
}

fn local_to_utc(naive: NaiveDateTime, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earliest, _) => Some(earliest.with_timezone(&Utc)),
        LocalResult::None => {
            // Spring-forward gap: the wall clock skipped this hour.
            let later = naive + chrono::Duration::hours(1);
            match tz.from_local_datetime(&later) {
                LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
                LocalResult::None => None,
            }
        }
    }
}

/// Parses `2024-06-29T10:15:00.123456`, `2024-06-29 10:15:00` or `2024-06-29`.
pub fn parse_naive(text: &str) -> Result<NaiveDateTime, String> {
    let t = text.trim();
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(v) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(v);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default());
    }
    Err(format!(
        "{text:?} is not a timestamp like 2024-06-29T10:15:00"
    ))
}

/// UTC as a naive local timestamp in `tz` (for APIs that filter in local time).
pub fn utc_to_naive_local(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .naive_local()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_is_absent_for_null_missing_and_blank() {
        let v = json!({"a": null, "b": "", "c": "  ", "d": " Keizersgracht 12 ", "e": 150});
        for k in ["a", "b", "c", "missing"] {
            assert_eq!(json_text(&v[k]), None, "{k}");
        }
        assert_eq!(json_text(&v["d"]).as_deref(), Some("Keizersgracht 12"));
        assert_eq!(json_text(&v["e"]).as_deref(), Some("150"));
        assert_eq!(
            json_decimal(&v["d"], "price").unwrap_err(),
            "price: \" Keizersgracht 12 \" is not a decimal number"
        );
    }

    #[test]
    fn currency_codes_are_three_capitals() {
        assert_eq!(currency_code("EUR").unwrap(), "EUR");
        for bad in ["eur", "EURO", "€", "E1R"] {
            let err = currency_code(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn floats_convert_exactly_from_their_text() {
        assert_eq!(
            decimal_from_json(&json!(19.99)).unwrap().to_string(),
            "19.99"
        );
        assert_eq!(decimal_from_json(&json!(0.1)).unwrap().to_string(), "0.1");
        assert_eq!(
            decimal_from_json(&json!(1234.5)).unwrap().to_string(),
            "1234.5"
        );
        // 0.1 + 0.2 in f64 is 0.30000000000000004; we never add floats.
        let sum = decimal_from_json(&json!(0.1)).unwrap() + decimal_from_json(&json!(0.2)).unwrap();
        assert_eq!(sum.to_string(), "0.3");
        assert_eq!(decimal_from_json(&json!(7)).unwrap().to_string(), "7");
    }

    #[test]
    fn decimal_strings_keep_their_scale() {
        assert_eq!(
            decimal_from_json(&json!("2.000")).unwrap().to_string(),
            "2.000"
        );
        assert_eq!(
            decimal_from_json(&json!("-5.00")).unwrap().to_string(),
            "-5.00"
        );
        assert!(decimal_from_json(&json!("abc")).is_err());
        assert!(decimal_from_json(&json!("")).is_err());
        assert!(decimal_from_json(&json!(null)).is_err());
        assert_eq!(parse_decimal("1e-2").unwrap().to_string(), "0.01");
    }

    #[test]
    fn cents_and_scaled_quantities() {
        assert_eq!(from_cents(995).to_string(), "9.95");
        assert_eq!(from_cents(-5).to_string(), "-0.05");
        assert_eq!(from_scaled(530, 3).unwrap().to_string(), "0.530");
        assert_eq!(from_scaled(2, 0).unwrap().to_string(), "2");
    }

    #[test]
    fn naive_amsterdam_times_become_utc() {
        let tz = chrono_tz::Europe::Amsterdam;
        // Summer: UTC+2.
        let t = naive_local_to_utc("2024-06-29T10:15:00.123456", tz).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-06-29T08:15:00.123456+00:00");
        // Winter: UTC+1.
        let t = naive_local_to_utc("2024-01-15 09:00:00", tz).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-15T08:00:00+00:00");
        // Autumn overlap (02:30 happens twice on 2024-10-27): the earlier one.
        let t = naive_local_to_utc("2024-10-27T02:30:00", tz).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-10-27T00:30:00+00:00");
        // Spring gap (02:30 does not exist on 2024-03-31): moved forward.
        let t = naive_local_to_utc("2024-03-31T02:30:00", tz).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-31T01:30:00+00:00");
        assert!(naive_local_to_utc("yesterday", tz).is_err());
    }

    #[test]
    fn utc_back_to_local_text() {
        let tz = chrono_tz::Europe::Amsterdam;
        let t: DateTime<Utc> = "2024-06-29T08:15:00Z".parse().unwrap();
        assert_eq!(utc_to_naive_local(t, tz), "2024-06-29T10:15:00.000000");
    }
}
