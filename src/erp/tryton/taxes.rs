//! Sale taxes on Tryton sale lines. A server-side create skips Tryton's
//! on_change, so nothing fills taxes in for us: a line gets the company's
//! sale tax whose rate is its canonical `tax_rate` (or the tax `erp.tax_map`
//! names for that rate); a line without a rate gets its product's default
//! customer taxes (those of its account category). Shipping and discount
//! lines get the taxes the product lines share, or those with the highest
//! rate when the lines differ. With `prices_include_tax` the source's gross
//! prices become Tryton's tax-exclusive unit prices here; whether Tryton's
//! own total reproduces the source's gross is checked on the draft sale
//! (see `push::check_totals`).

use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::arith;

/// One of the company's sale taxes (no parent; no group, or a sale group).
#[derive(Clone, Debug, PartialEq)]
pub struct SaleTax {
    pub id: i64,
    pub name: String,
    /// As a fraction (0.21); `None` for a tax that is not a percentage.
    pub rate: Option<Decimal>,
}

#[derive(Debug, Default)]
pub struct TaxTable {
    pub taxes: Vec<SaleTax>,
}

/// Tryton's unit prices carry 4 decimals (`product.price_decimal`'s default).
pub const PRICE_DIGITS: u32 = 4;

impl TaxTable {
    /// From `account.tax` rows with `name`, `type` and `rate`; a row without
    /// an id is skipped (it cannot be put on a line anyway).
    pub fn from_rows(rows: &[Value]) -> TaxTable {
        let taxes = rows
            .iter()
            .filter_map(|r| {
                Some(SaleTax {
                    id: r["id"].as_i64()?,
                    name: r["name"].as_str().unwrap_or_default().to_string(),
                    rate: if r["type"] == "percentage" {
                        super::rpc::parse_decimal(&r["rate"]).map(|d| d.normalize())
                    } else {
                        None
                    },
                })
            })
            .collect();
        TaxTable { taxes }
    }

    pub fn by_id(&self, id: i64) -> Option<&SaleTax> {
        self.taxes.iter().find(|t| t.id == id)
    }

    /// The sale tax for a rate in percent: the one `map` names for it, else
    /// the only sale tax with that rate. The error says what to change.
    pub fn for_rate(
        &self,
        percent: Decimal,
        map: &[(Decimal, String)],
    ) -> Result<&SaleTax, String> {
        let percent = percent.normalize();
        if let Some((_, name)) = map.iter().find(|(r, _)| *r == percent) {
            return self.taxes.iter().find(|t| &t.name == name).ok_or_else(|| {
                format!(
                    "erp.tax_map names the tax {name:?} for {percent}%, but the company has no sale tax of that name (its sale taxes: {})",
                    self.names()
                )
            });
        }
        let fraction = arith::div(percent, Decimal::ONE_HUNDRED, "tax rate")?.normalize();
        let matching: Vec<&SaleTax> = self
            .taxes
            .iter()
            .filter(|t| t.rate == Some(fraction))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "no Tryton sale tax has the rate {percent}% (the company's sale taxes: {}); add one in Tryton or map the rate in erp.tax_map",
                self.names()
            )),
            several => Err(format!(
                "{} Tryton sale taxes have the rate {percent}% ({}); choose one with erp.tax_map = {{ \"{percent}\" = \"<name>\" }}",
                several.len(),
                several
                    .iter()
                    .map(|t| format!("{:?}", t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The combined rate (a fraction) of `ids`, or an error naming a tax
    /// that is not a percentage or not a sale tax of the company.
    pub fn rate_of(&self, ids: &[i64]) -> Result<Decimal, String> {
        let mut total = Decimal::ZERO;
        for id in ids {
            let tax = self
                .by_id(*id)
                .ok_or_else(|| format!("tax id {id} is not one of the company's sale taxes"))?;
            let rate = tax.rate.ok_or_else(|| {
                format!(
                    "tax {:?} is not a percentage, so a price with tax cannot be converted",
                    tax.name
                )
            })?;
            total = arith::add(total, rate, "tax rates")?;
        }
        Ok(total)
    }

    fn names(&self) -> String {
        if self.taxes.is_empty() {
            return "none".into();
        }
        self.taxes
            .iter()
            .map(|t| match t.rate {
                Some(r) => format!("{:?} {}%", t.name, (r * Decimal::ONE_HUNDRED).normalize()),
                None => format!("{:?}", t.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A gross amount without its tax, to the cent: `gross / (1 + rate)`.
pub fn net_of(gross: Decimal, rate: Decimal, what: &str) -> Result<Decimal, String> {
    let divisor = arith::add(Decimal::ONE, rate, what)?;
    Ok(arith::div(gross, divisor, what)?.round_dp(2))
}

/// The tax-exclusive unit price that makes `quantity` × it come to the
/// line's gross total without tax, to Tryton's price digits.
pub fn net_unit_price(
    line_total: Decimal,
    quantity: Decimal,
    rate: Decimal,
    what: &str,
) -> Result<Decimal, String> {
    let net_total = net_of(line_total, rate, what)?;
    Ok(arith::div(net_total, quantity, what)?.round_dp(PRICE_DIGITS))
}

/// The taxes shipping and discounts get: those every product line has, or
/// when they differ, the set with the highest combined rate.
pub fn order_level_taxes(lines: &[Vec<i64>], table: &TaxTable) -> Vec<i64> {
    let mut best: Option<(&Vec<i64>, Decimal)> = None;
    for taxes in lines {
        let rate = table.rate_of(taxes).unwrap_or(Decimal::ZERO);
        if best.is_none_or(|(_, r)| rate > r) {
            best = Some((taxes, rate));
        }
    }
    best.map(|(t, _)| t.clone()).unwrap_or_default()
}

/// The taxes a source's shipping costs get, with net prices and a stated
/// gross: `default` (the lines' taxes, [`order_level_taxes`]) when the
/// stated gross comes out with them, else the one sale tax rate with which
/// the lines (each net amount with its combined rate) plus the shipping
/// come to the gross within a cent per line. Shops differ on whether
/// shipping follows the goods' rate or the standard rate; the stated gross
/// says which this one charged. `default` when no rate, or more than one,
/// fits.
pub fn shipping_taxes(
    gross: Decimal,
    lines: &[(Decimal, Decimal)],
    shipping: Decimal,
    default: &[i64],
    table: &TaxTable,
    map: &[(Decimal, String)],
) -> Result<Vec<i64>, String> {
    let what = "shipping tax";
    let mut lines_gross = Decimal::ZERO;
    for (net, rate) in lines {
        let with_tax = arith::mul(*net, arith::add(Decimal::ONE, *rate, what)?, what)?;
        lines_gross = arith::add(lines_gross, with_tax, what)?;
    }
    let count = i64::try_from(lines.len() + 1).unwrap_or(i64::MAX);
    let tolerance = Decimal::new(count, 2);
    let fits = |rate: Decimal| -> Result<bool, String> {
        let on_shipping = arith::mul(shipping, arith::add(Decimal::ONE, rate, what)?, what)?;
        let total = arith::add(lines_gross, on_shipping, what)?;
        Ok(arith::sub(total, gross, what)?.abs() <= tolerance)
    };
    if let Ok(rate) = table.rate_of(default)
        && fits(rate)?
    {
        return Ok(default.to_vec());
    }
    let mut rates: Vec<Decimal> = table.taxes.iter().filter_map(|t| t.rate).collect();
    rates.sort();
    rates.dedup();
    let mut fitting = Vec::new();
    for rate in rates {
        if fits(rate)? {
            fitting.push(rate);
        }
    }
    let [rate] = fitting.as_slice() else {
        return Ok(default.to_vec());
    };
    let percent = arith::mul(*rate, Decimal::ONE_HUNDRED, what)?;
    Ok(table
        .for_rate(percent, map)
        .map_or_else(|_| default.to_vec(), |t| vec![t.id]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn table() -> TaxTable {
        TaxTable::from_rows(&[
            json!({"id": 1, "name": "NL 21% verkoop", "type": "percentage", "rate": {"__class__": "Decimal", "decimal": "0.2100000000"}}),
            json!({"id": 2, "name": "NL 9% verkoop", "type": "percentage", "rate": {"__class__": "Decimal", "decimal": "0.09"}}),
            json!({"id": 3, "name": "NL 21% diensten", "type": "percentage", "rate": {"__class__": "Decimal", "decimal": "0.21"}}),
            json!({"id": 4, "name": "Recupel", "type": "fixed", "rate": null}),
            json!({"name": "no id"}),
        ])
    }

    #[test]
    fn a_rate_finds_its_one_tax_or_says_what_to_configure() {
        let t = table();
        assert_eq!(t.taxes.len(), 4);
        assert_eq!(t.for_rate(d("9.0"), &[]).unwrap().id, 2);
        let e = t.for_rate(d("21"), &[]).unwrap_err();
        assert!(
            e.contains("2 Tryton sale taxes")
                && e.contains("NL 21% diensten")
                && e.contains("erp.tax_map"),
            "{e}"
        );
        let map = vec![(d("21"), "NL 21% verkoop".to_string())];
        assert_eq!(t.for_rate(d("21.00"), &map).unwrap().id, 1);
        let e = t.for_rate(d("6"), &map).unwrap_err();
        assert!(
            e.contains("6%") && e.contains("\"NL 9% verkoop\" 9%"),
            "{e}"
        );
        let wrong = vec![(d("21"), "BE 21%".to_string())];
        assert!(
            t.for_rate(d("21"), &wrong)
                .unwrap_err()
                .contains("\"BE 21%\"")
        );
    }

    #[test]
    fn combined_rates_and_their_errors() {
        let t = table();
        assert_eq!(t.rate_of(&[1, 2]).unwrap(), d("0.30"));
        assert_eq!(t.rate_of(&[]).unwrap(), Decimal::ZERO);
        assert!(t.rate_of(&[4]).unwrap_err().contains("Recupel"));
        assert!(t.rate_of(&[99]).unwrap_err().contains("99"));
    }

    #[test]
    fn gross_prices_become_net_unit_prices() {
        // 2 × 12.10 with 21%: 24.20 gross, 20.00 net.
        assert_eq!(
            net_unit_price(d("24.20"), d("2"), d("0.21"), "l").unwrap(),
            d("10")
        );
        // 0.530 kg at 12.99 (9%): 6.88 gross → 6.31 net → 11.9057 per kg.
        assert_eq!(
            net_unit_price(d("6.88"), d("0.530"), d("0.09"), "l").unwrap(),
            d("11.9057")
        );
        assert!(
            net_unit_price(d("1"), Decimal::ZERO, d("0.21"), "line 7")
                .unwrap_err()
                .contains("line 7")
        );
        assert!(net_unit_price(Decimal::MAX, d("1"), d("-1"), "line 8").is_err());
    }

    #[test]
    fn shipping_follows_the_lines_or_their_highest_rate() {
        let t = table();
        assert_eq!(order_level_taxes(&[vec![2], vec![2]], &t), vec![2]);
        assert_eq!(order_level_taxes(&[vec![2], vec![1], vec![]], &t), vec![1]);
        assert!(order_level_taxes(&[], &t).is_empty());
    }

    #[test]
    fn shipping_takes_the_rate_the_stated_gross_was_charged_at() {
        let t = table();
        let map = [(d("21"), "NL 21% verkoop".to_string())];
        // A book at 9% (19.99) and shipping 5.00: at 9% the gross would be
        // 27.24, at 21% it is 27.84.
        let book = [(d("19.99"), d("0.09"))];
        let shipping = |gross: &str| shipping_taxes(d(gross), &book, d("5.00"), &[2], &t, &map);
        assert_eq!(shipping("27.84").unwrap(), vec![1], "charged at 21%");
        assert_eq!(shipping("27.24").unwrap(), vec![2], "the lines' rate fits");
        assert_eq!(
            shipping("30.00").unwrap(),
            vec![2],
            "no rate fits: the default"
        );
        // Two taxes at 21% and no tax_map entry: not one tax, the default.
        let unmapped = shipping_taxes(d("27.84"), &book, d("5.00"), &[2], &t, &[]).unwrap();
        assert_eq!(unmapped, vec![2]);
        // Remote numbers that overflow are an error, not a panic.
        let huge = [(Decimal::MAX, d("0.21"))];
        assert!(shipping_taxes(d("1"), &huge, d("1"), &[2], &t, &map).is_err());
    }
}
