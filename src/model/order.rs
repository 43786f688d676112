//! The canonical order and its JSON (SPEC §3). Absent optional fields are
//! omitted, never `null` or `""`; decimals are strings; times RFC 3339 UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::arith;

/// `SOURCE_NAME:EXTERNAL_ID`, the identity of an order everywhere.
pub fn order_key(source: &str, external_id: &str) -> String {
    format!("{source}:{external_id}")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_key: String,
    pub source: String,
    pub source_kind: String,
    pub external_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub ordered_at: DateTime<Utc>,
    pub currency: String,
    pub prices_include_tax: bool,
    pub customer: Customer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
    pub lines: Vec<OrderLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Shipping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discounts: Vec<Discount>,
    pub totals: Totals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_customer_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub source_line_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ean: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(serialize_with = "ser_plain")]
    pub quantity: Decimal,
    #[serde(serialize_with = "ser_money")]
    pub unit_price: Decimal,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_plain"
    )]
    pub tax_rate: Option<Decimal>,
    #[serde(serialize_with = "ser_money")]
    pub line_total: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shipping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Positive: the amount taken off.
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
}

/// The order's totals, as far as the source states them (or, for a source
/// that sends none, as its lines add up). A figure nobody gave is absent,
/// never invented: CloudSuite documents no totals and no tax rates, so its
/// orders carry `net` only; Titelive states amounts with VAT only, so `gross`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_money"
    )]
    pub net: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_money"
    )]
    pub tax: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_money"
    )]
    pub gross: Option<Decimal>,
}

impl Totals {
    /// The headline figure for a log line: gross when known, else net.
    pub fn headline(&self) -> String {
        match (self.gross, self.net) {
            (Some(g), _) => format!("gross {g}"),
            (None, Some(n)) => format!("net {n}"),
            (None, None) => "no totals".into(),
        }
    }

    /// Totals a source states in full.
    pub fn stated(net: Decimal, tax: Decimal, gross: Decimal) -> Self {
        Totals {
            net: Some(net),
            tax: Some(tax),
            gross: Some(gross),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Quantities and rates: no trailing zeros ("2", "0.53", "21").
fn ser_plain<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.normalize().to_string())
}

fn ser_opt_plain<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_plain(d, s),
        None => s.serialize_none(),
    }
}

fn ser_opt_money<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_money(d, s),
        None => s.serialize_none(),
    }
}

/// Money: at least two decimals ("5.00", "19.99", "0.1234" stays as is).
fn ser_money<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut v = d.normalize();
    if v.scale() < 2 {
        v.rescale(2);
    }
    s.serialize_str(&v.to_string())
}

impl Order {
    /// The canonical JSON text sent to the ERP and stored in the ledger.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and decimals cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hash of the business content, used to tell a real change at the source
    /// from an echo of our own write-back (which changes no business field).
    pub fn content_hash(&self) -> String {
        self.json_and_hash().1
    }

    /// [`Order::to_json`] and [`Order::content_hash`], serializing once.
    pub fn json_and_hash(&self) -> (String, String) {
        let json = self.to_json();
        let hash = super::hex(&Sha256::digest(json.as_bytes()));
        (json, hash)
    }

    /// SPEC §3: lines + shipping − discounts must equal gross (prices with tax)
    /// or net (without), within one cent per line. `total_field` is the
    /// source's own name for the total compared (`total_excl`, `money`...),
    /// so the reason quotes figures an operator finds in the vendor's back
    /// office. Sums are checked: remote numbers can overflow.
    pub fn check_totals(&self, total_field: &str) -> Result<(), String> {
        if self.lines.is_empty() {
            return Err("order has no lines".into());
        }
        for line in &self.lines {
            let what = format!("line {}", line.source_line_id);
            let expect = arith::line_total(line.quantity, line.unit_price, &what)?;
            if arith::sub(expect, line.line_total, &what)?.abs() > Decimal::new(1, 2) {
                return Err(format!(
                    "line {}: quantity {} x unit price {} = {}, but line total is {}",
                    line.source_line_id, line.quantity, line.unit_price, expect, line.line_total
                ));
            }
        }
        let expected = if self.prices_include_tax {
            self.totals.gross
        } else {
            self.totals.net
        };
        let Some(expected) = expected else {
            return Ok(());
        };
        let lines = arith::sum(self.lines.iter().map(|l| l.line_total), "line totals")?;
        let shipping = self.shipping.as_ref().map(|s| s.amount).unwrap_or_default();
        let discounts = arith::sum(self.discounts.iter().map(|d| d.amount), "discounts")?;
        let computed = arith::sub(
            arith::add(lines, shipping, "lines + shipping")?,
            discounts,
            "discounts",
        )?;
        let tolerance = Decimal::new(1, 2) * Decimal::from(self.lines.len() as u64);
        let diff = arith::sub(expected, computed, total_field)?;
        if diff.abs() > tolerance {
            return Err(format!(
                "totals do not add up: lines {lines} + shipping {shipping} - discounts {discounts} = {computed}, but the order's {total_field} is {expected} (difference {diff})"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    pub(crate) fn sample() -> Order {
        Order {
            order_key: order_key("webshop-nl", "48193"),
            source: "webshop-nl".into(),
            source_kind: "cloudsuite".into(),
            external_id: "48193".into(),
            reference: Some("CS48193".into()),
            ordered_at: "2024-06-29T08:15:00Z".parse().unwrap(),
            currency: "EUR".into(),
            prices_include_tax: false,
            customer: Customer {
                name: Some("Jan de Vries".into()),
                source_customer_id: Some("1324".into()),
                ..Default::default()
            },
            billing_address: None,
            shipping_address: Some(Address {
                country: Some("NL".into()),
                ..Default::default()
            }),
            lines: vec![OrderLine {
                source_line_id: "11".into(),
                sku: Some("124_STUK".into()),
                ean: None,
                description: None,
                quantity: d("2.000"),
                unit_price: d("19.99"),
                tax_rate: Some(d("21.00")),
                line_total: d("39.98"),
            }],
            shipping: Some(Shipping {
                method: None,
                amount: d("4.95"),
            }),
            discounts: vec![Discount {
                description: None,
                amount: d("5"),
            }],
            totals: Totals::stated(d("39.93"), d("8.39"), d("48.32")),
            payment: None,
        }
    }

    #[test]
    fn json_matches_the_contract_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["order_key"], "webshop-nl:48193");
        assert_eq!(v["ordered_at"], "2024-06-29T08:15:00Z");
        assert_eq!(v["lines"][0]["quantity"], "2");
        assert_eq!(v["lines"][0]["unit_price"], "19.99");
        assert_eq!(v["lines"][0]["tax_rate"], "21");
        assert_eq!(v["discounts"][0]["amount"], "5.00");
        assert_eq!(v["shipping"]["amount"], "4.95");
        // Absent optional fields are omitted, never null.
        assert!(v.get("billing_address").is_none());
        assert!(v["customer"].get("email").is_none());
        assert!(v["lines"][0].get("ean").is_none());
        assert!(!sample().to_json().contains("null"));
        assert!(!sample().to_json().contains("\"\""));
    }

    #[test]
    fn round_trips_through_json() {
        let o = sample();
        let back: Order = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(back.to_json(), o.to_json());
    }

    #[test]
    fn totals_check_names_the_difference() {
        let mut o = sample();
        assert!(o.check_totals("total_excl").is_ok());
        o.totals.net = Some(d("49.93"));
        let err = o.check_totals("total_excl").unwrap_err();
        assert!(
            err.contains("the order's total_excl is 49.93 (difference 10.00)"),
            "{err}"
        );
    }

    /// A stated line total at the far end of `Decimal` from what quantity
    /// x unit price gives: the difference is out of range, an error, not
    /// a panic (no mapper states such a line today; the check is for all).
    #[test]
    fn a_line_total_beyond_decimal_from_its_product_is_an_error() {
        let mut o = sample();
        o.lines[0].line_total = Decimal::MIN;
        let err = o.check_totals("total_excl").unwrap_err();
        assert!(
            err.contains("line 11") && err.contains("out of range"),
            "{err}"
        );
    }

    #[test]
    fn content_hash_changes_with_business_fields_only() {
        let a = sample();
        let mut b = sample();
        assert_eq!(a.content_hash(), b.content_hash());
        b.lines[0].quantity = d("3");
        assert_ne!(a.content_hash(), b.content_hash());
    }
}
