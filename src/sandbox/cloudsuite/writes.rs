//! PATCH and PUT on an order, with DRF's validation semantics: field errors
//! are collected into `{"field": ["message"]}`, nothing is applied when any
//! field fails, read-only fields are ignored, and PUT replaces (stale PUTs win).

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::model::{Order, STATES, fixed};

const CURRENCIES: [&str; 6] = ["EUR", "USD", "GBP", "CHF", "DKK", "SEK"];
const SHIPMENT_STATES: [&str; 1] = ["sent"];
const ERP_ORDER_NUMBER_MAX: usize = 50;
/// `max_digits` of the line DecimalFields.
const MAX_DIGITS: u32 = 12;
const REQUIRED_ON_PUT: [&str; 5] = ["state", "currency", "order_date", "customer", "order_lines"];
/// Required on PUT too, each given as an id (or an object) or by its
/// `<field>_key {origin, key}`, as the offline-order POST page allows.
const ADDRESSES: [&str; 2] = ["invoice_address", "shipment_address"];

type Errors = Map<String, Value>;

fn add(errors: &mut Errors, field: &str, msg: impl Into<String>) {
    errors.insert(field.to_string(), json!([msg.into()]));
}

/// How Python's `str()` shows a JSON value inside DRF messages.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn choice(v: &Value, choices: &[&str]) -> Result<Option<String>, String> {
    match v {
        Value::Null => Err("This field may not be null.".into()),
        _ => {
            let s = py_str(v);
            if choices.contains(&s.as_str()) {
                Ok(Some(s))
            } else {
                Err(format!("\"{s}\" is not a valid choice."))
            }
        }
    }
}

fn nullable_choice(v: &Value, choices: &[&str]) -> Result<Option<String>, String> {
    if v.is_null() {
        Ok(None)
    } else {
        choice(v, choices)
    }
}

/// DRF CharField(allow_null=True, max_length): numbers are coerced, whitespace trimmed.
fn nullable_char(v: &Value, max_len: usize) -> Result<Option<String>, String> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err("Not a valid string.".into()),
    };
    if s.is_empty() {
        Err("This field may not be blank.".into())
    } else if s.chars().count() > max_len {
        Err(format!(
            "Ensure this field has no more than {max_len} characters."
        ))
    } else {
        Ok(Some(s))
    }
}

fn integer(v: &Value) -> Result<i64, String> {
    let bad = || "A valid integer is required.".to_string();
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(bad),
        Value::String(s) => s.trim().parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn decimal(v: &Value, places: u32) -> Result<Decimal, String> {
    let bad = || "A valid number is required.".to_string();
    let d = match v {
        Value::Number(n) => Decimal::from_str(&n.to_string()).map_err(|_| bad())?,
        Value::String(s) => Decimal::from_str(s.trim()).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let n = d.normalize();
    if n.scale() > places {
        return Err(format!(
            "Ensure that there are no more than {places} decimal places."
        ));
    }
    // DRF counts max(significant digits, decimal places); the cap also keeps
    // quantity x price far from Decimal overflow when totals are computed.
    let digits = (n.mantissa().unsigned_abs().to_string().len() as u32).max(n.scale());
    if digits > MAX_DIGITS {
        return Err(format!(
            "Ensure that there are no more than {MAX_DIGITS} digits in total."
        ));
    }
    Ok(d)
}

fn date(v: &Value) -> Result<NaiveDate, String> {
    v.as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.".to_string()
        })
}

/// A related record on a write: its primary key, as CloudSuite documents the
/// PUT body (3c: `"customer": 1324`); DRF's `PrimaryKeyRelatedField` also
/// takes it as a string, and refuses the embedded record a detail may serve
/// (a nested serializer for reading, the pk for writing). The pk itself is
/// not resolved: the simulator keeps no customer or address tables, and a
/// PUT does not change the relation.
fn relation(v: &Value) -> Result<(), Value> {
    let pk = match v {
        Value::Null => return Err(json!(["This field may not be null."])),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match pk {
        Some(pk) if pk > 0 => Ok(()),
        Some(pk) => Err(json!([format!(
            "Invalid pk \"{pk}\" - object does not exist."
        )])),
        None => Err(json!([format!(
            "Incorrect type. Expected pk value, received {}.",
            py_type(v)
        )])),
    }
}

/// `{origin, key}` naming a record by an external system's key.
fn external_key(v: &Value) -> Result<(), Value> {
    let Value::Object(obj) = v else {
        return Err(json!({"non_field_errors": [format!(
            "Invalid data. Expected a dictionary, but got {}.",
            py_type(v)
        )]}));
    };
    let mut errors = Errors::new();
    for field in ["origin", "key"] {
        match obj.get(field) {
            None => add(&mut errors, field, "This field is required."),
            Some(Value::Null) => add(&mut errors, field, "This field may not be null."),
            Some(v) => {
                if let Err(e) = nullable_char(v, 255) {
                    add(&mut errors, field, e);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Value::Object(errors))
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

pub(super) fn transition_allowed(from: &str, to: &str) -> bool {
    from == to
        || matches!(
            (from, to),
            ("draft", "quotation")
                | ("quotation", "confirmed")
                | ("confirmed", "processing")
                | ("processing", "done")
        )
        || (to == "cancel" && from != "done")
}

fn check_shipment(errors: &mut Errors, shipment: &Option<String>, state: &str) {
    if shipment.is_some() && !matches!(state, "processing" | "done") {
        add(
            errors,
            "shipment_state",
            format!(
                "Shipment can only be marked as sent when the order is processing or done, not {state}."
            ),
        );
    }
}

fn apply_header_fields(
    order: &mut Order,
    state: Option<String>,
    erp_order_number: Option<Option<String>>,
    shipment_state: Option<Option<String>>,
    now: NaiveDateTime,
    via: &str,
) {
    if let Some(s) = state.filter(|s| *s != order.state) {
        order.set_state(&s, now, via);
    }
    if let Some(v) = erp_order_number {
        let from = std::mem::replace(&mut order.erp_order_number, v.clone());
        order.record(now, "erp_order_number".into(), from, v, via);
    }
    if let Some(v) = shipment_state {
        let from = std::mem::replace(&mut order.shipment_state, v.clone());
        order.record(now, "shipment_state".into(), from, v, via);
    }
}

/// Partial update of `state`, `erp_order_number`, `shipment_state`; every
/// other key (including `order_lines`) is read-only here and ignored.
pub(super) fn patch(
    order: &mut Order,
    body: &Map<String, Value>,
    now: NaiveDateTime,
) -> Result<(), Value> {
    let mut errors = Errors::new();
    let mut state = None;
    if let Some(v) = body.get("state") {
        match choice(v, &STATES) {
            Ok(Some(s)) if !transition_allowed(&order.state, &s) => add(
                &mut errors,
                "state",
                format!("Invalid state transition from {} to {s}.", order.state),
            ),
            Ok(s) => state = s,
            Err(e) => add(&mut errors, "state", e),
        }
    }
    let erp_order_number = body.get("erp_order_number").and_then(|v| {
        nullable_char(v, ERP_ORDER_NUMBER_MAX)
            .map_err(|e| add(&mut errors, "erp_order_number", e))
            .ok()
    });
    let shipment_state = body.get("shipment_state").and_then(|v| {
        nullable_choice(v, &SHIPMENT_STATES)
            .map_err(|e| add(&mut errors, "shipment_state", e))
            .ok()
    });
    // Object-level validation only runs once every field is valid (DRF order).
    if errors.is_empty()
        && let Some(shipment) = &shipment_state
    {
        let effective = state.as_deref().unwrap_or(&order.state).to_string();
        check_shipment(&mut errors, shipment, &effective);
    }
    if !errors.is_empty() {
        return Err(Value::Object(errors));
    }
    apply_header_fields(order, state, erp_order_number, shipment_state, now, "PATCH");
    order.touch(now);
    Ok(())
}

/// One validated line of a PUT body.
struct LineUpdate {
    erp_line_number: Option<i64>,
    description: Option<String>,
    quantity: Option<Decimal>,
    unit_price: Option<Decimal>,
}

fn validate_line(order: &Order, item: &Value) -> Result<(i64, LineUpdate), Value> {
    let Value::Object(obj) = item else {
        return Err(json!({"non_field_errors": [format!(
            "Invalid data. Expected a dictionary, but got {}.",
            py_type(item)
        )]}));
    };
    let mut errors = Errors::new();
    let id = match obj.get("id") {
        None => {
            add(&mut errors, "id", "This field is required.");
            None
        }
        Some(v) => match integer(v) {
            Ok(id) if order.lines.iter().any(|l| l.id == id) => Some(id),
            Ok(id) => {
                add(
                    &mut errors,
                    "id",
                    format!("Invalid pk \"{id}\" - object does not exist."),
                );
                None
            }
            Err(e) => {
                add(&mut errors, "id", e);
                None
            }
        },
    };
    let erp_line_number = match obj.get("erp_line_number") {
        None | Some(Value::Null) => None,
        Some(v) => integer(v)
            .map_err(|e| add(&mut errors, "erp_line_number", e))
            .ok(),
    };
    let description = match obj.get("description") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => {
            add(&mut errors, "description", "This field may not be null.");
            None
        }
        Some(_) => {
            add(&mut errors, "description", "Not a valid string.");
            None
        }
    };
    let mut dec = |field: &str, places| {
        obj.get(field).and_then(|v| {
            decimal(v, places)
                .map_err(|e| add(&mut errors, field, e))
                .ok()
        })
    };
    let quantity = dec("quantity", 3);
    let unit_price = dec("unit_price", 2);
    match id {
        Some(id) if errors.is_empty() => Ok((
            id,
            LineUpdate {
                erp_line_number,
                description,
                quantity,
                unit_price,
            },
        )),
        _ => Err(Value::Object(errors)),
    }
}

/// Full replace. `state` is taken as given (no transition check: the
/// documented hazard of a stale PUT), absent nullable fields become null and
/// lines missing from the body are deleted.
pub(super) fn put(
    order: &mut Order,
    body: &Map<String, Value>,
    now: NaiveDateTime,
) -> Result<(), Value> {
    let mut errors = Errors::new();
    for field in REQUIRED_ON_PUT {
        if !body.contains_key(field) {
            add(&mut errors, field, "This field is required.");
        }
    }
    let state = body
        .get("state")
        .and_then(|v| {
            choice(v, &STATES)
                .map_err(|e| add(&mut errors, "state", e))
                .ok()
        })
        .flatten();
    if let Some(v) = body.get("currency")
        && let Err(e) = choice(v, &CURRENCIES)
    {
        add(&mut errors, "currency", e);
    }
    if let Some(v) = body.get("order_date")
        && let Err(e) = date(v)
    {
        add(&mut errors, "order_date", e);
    }
    if let Some(v) = body.get("customer")
        && let Err(e) = relation(v)
    {
        errors.insert("customer".into(), e);
    }
    for field in ADDRESSES {
        let key_field = format!("{field}_key");
        let (by_id, by_key) = (body.get(field), body.get(&key_field));
        if by_id.is_none() && by_key.is_none() {
            add(&mut errors, field, "This field is required.");
        }
        if let Some(v) = by_id
            && let Err(e) = relation(v)
        {
            errors.insert(field.to_string(), e);
        }
        // A null key beside an id is "no key", as the detail may serve it.
        if let Some(v) = by_key.filter(|v| !v.is_null())
            && let Err(e) = external_key(v)
        {
            errors.insert(key_field, e);
        }
    }
    let erp_order_number = match body.get("erp_order_number") {
        None => Some(None),
        Some(v) => nullable_char(v, ERP_ORDER_NUMBER_MAX)
            .map_err(|e| add(&mut errors, "erp_order_number", e))
            .ok(),
    };
    let shipment_state = match body.get("shipment_state") {
        None => Some(None),
        Some(v) => nullable_choice(v, &SHIPMENT_STATES)
            .map_err(|e| add(&mut errors, "shipment_state", e))
            .ok(),
    };

    let mut updates: HashMap<i64, LineUpdate> = HashMap::new();
    match body.get("order_lines") {
        None => {}
        Some(Value::Array(items)) => {
            let mut line_errors = Vec::with_capacity(items.len());
            let mut any_error = false;
            for item in items {
                match validate_line(order, item) {
                    Ok((id, update)) => {
                        updates.insert(id, update);
                        line_errors.push(json!({}));
                    }
                    Err(e) => {
                        any_error = true;
                        line_errors.push(e);
                    }
                }
            }
            if any_error {
                errors.insert("order_lines".into(), Value::Array(line_errors));
            }
        }
        Some(Value::Null) => add(&mut errors, "order_lines", "This field may not be null."),
        Some(other) => {
            errors.insert(
                "order_lines".into(),
                json!({"non_field_errors": [format!(
                    "Expected a list of items but got type \"{}\".",
                    py_type(other)
                )]}),
            );
        }
    }

    if errors.is_empty()
        && let (Some(shipment), Some(state)) = (&shipment_state, &state)
    {
        check_shipment(&mut errors, shipment, state);
    }
    if !errors.is_empty() {
        return Err(Value::Object(errors));
    }

    apply_header_fields(order, state, erp_order_number, shipment_state, now, "PUT");
    apply_lines(order, updates, now);
    order.touch(now);
    Ok(())
}

fn apply_lines(order: &mut Order, mut updates: HashMap<i64, LineUpdate>, now: NaiveDateTime) {
    let mut changes = Vec::new();
    let mut kept = Vec::with_capacity(order.lines.len());
    for mut line in std::mem::take(&mut order.lines) {
        let Some(u) = updates.remove(&line.id) else {
            changes.push((
                format!("order_lines[{}]", line.id),
                Some(line.description),
                None,
            ));
            continue;
        };
        let field = |name: &str| format!("order_lines[{}].{name}", line.id);
        changes.push((
            field("erp_line_number"),
            line.erp_line_number.map(|n| n.to_string()),
            u.erp_line_number.map(|n| n.to_string()),
        ));
        line.erp_line_number = u.erp_line_number;
        if let Some(d) = u.description {
            changes.push((
                field("description"),
                Some(line.description.clone()),
                Some(d.clone()),
            ));
            line.description = d;
        }
        if let Some(q) = u.quantity {
            changes.push((
                field("quantity"),
                Some(fixed(line.quantity, 3)),
                Some(fixed(q, 3)),
            ));
            line.quantity = q;
        }
        if let Some(p) = u.unit_price {
            changes.push((
                field("unit_price"),
                Some(fixed(line.unit_price, 2)),
                Some(fixed(p, 2)),
            ));
            line.unit_price = p;
        }
        kept.push(line);
    }
    order.lines = kept;
    for (field, from, to) in changes {
        order.record(now, field, from, to, "PUT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        assert!(transition_allowed("draft", "quotation"));
        assert!(transition_allowed("quotation", "confirmed"));
        assert!(transition_allowed("confirmed", "processing"));
        assert!(transition_allowed("processing", "done"));
        assert!(transition_allowed("processing", "cancel"));
        assert!(transition_allowed("done", "done"));
        assert!(!transition_allowed("done", "cancel"));
        assert!(!transition_allowed("confirmed", "done"));
        assert!(!transition_allowed("draft", "confirmed"));
        assert!(!transition_allowed("processing", "confirmed"));
        assert!(!transition_allowed("cancel", "confirmed"));
    }

    #[test]
    fn field_parsers_follow_drf() {
        assert_eq!(
            choice(&json!("foo"), &STATES),
            Err("\"foo\" is not a valid choice.".into())
        );
        assert_eq!(
            choice(&json!(true), &STATES),
            Err("\"True\" is not a valid choice.".into())
        );
        assert_eq!(nullable_char(&json!(" SO1 "), 50), Ok(Some("SO1".into())));
        assert_eq!(nullable_char(&json!(123), 50), Ok(Some("123".into())));
        assert!(nullable_char(&json!(""), 50).is_err());
        assert_eq!(integer(&json!("10")), Ok(10));
        assert!(decimal(&json!("1.0001"), 3).is_err());
        assert_eq!(decimal(&json!("2.500"), 3), Ok(Decimal::new(25, 1)));
        assert!(decimal(&json!("12345678901234"), 3).is_err());
        assert!(decimal(&json!(1.5), 3).is_ok());
    }

    #[test]
    fn relations_are_pks_not_records() {
        assert!(relation(&json!(1324)).is_ok());
        assert!(relation(&json!("1324")).is_ok());
        assert_eq!(
            relation(&json!({"id": 1324, "name": "Jan"})),
            Err(json!(["Incorrect type. Expected pk value, received dict."]))
        );
        assert_eq!(
            relation(&json!(true)),
            Err(json!(["Incorrect type. Expected pk value, received bool."]))
        );
        assert_eq!(
            relation(&json!(0)),
            Err(json!(["Invalid pk \"0\" - object does not exist."]))
        );
        assert!(relation(&Value::Null).is_err());
        assert!(external_key(&json!({"origin": "erp", "key": "ADR-1"})).is_ok());
        assert_eq!(
            external_key(&json!({"origin": "erp"})),
            Err(json!({"key": ["This field is required."]}))
        );
        assert!(external_key(&json!(17)).is_err());
    }
}
