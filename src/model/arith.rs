//! Arithmetic on numbers that came from a remote. `rust_decimal`'s operators
//! panic on overflow, and a source can send `1e27` as a price: every sum and
//! product of remote values goes through here and fails with the values
//! named instead, so the order is parked and its poller keeps running.

use rust_decimal::Decimal;

/// `a × b`, or an error naming both factors.
pub fn mul(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, String> {
    a.checked_mul(b)
        .ok_or_else(|| format!("{what}: {a} x {b} is out of range"))
}

/// `a + b`, or an error naming both terms.
pub fn add(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, String> {
    a.checked_add(b)
        .ok_or_else(|| format!("{what}: {a} + {b} is out of range"))
}

/// `a − b`, or an error naming both terms.
pub fn sub(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, String> {
    a.checked_sub(b)
        .ok_or_else(|| format!("{what}: {a} - {b} is out of range"))
}

/// `a ÷ b`, or an error naming both (division by zero included).
pub fn div(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, String> {
    a.checked_div(b)
        .ok_or_else(|| format!("{what}: {a} / {b} is out of range or divides by zero"))
}

/// The sum of `values`, or an error naming what was being added up.
pub fn sum(values: impl IntoIterator<Item = Decimal>, what: &str) -> Result<Decimal, String> {
    values
        .into_iter()
        .try_fold(Decimal::ZERO, |acc, v| acc.checked_add(v))
        .ok_or_else(|| format!("{what}: the sum is out of range"))
}

/// `quantity × unit_price` rounded to cents: a line total.
pub fn line_total(quantity: Decimal, unit_price: Decimal, what: &str) -> Result<Decimal, String> {
    Ok(mul(quantity, unit_price, what)?.round_dp(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_an_error_that_names_the_values() {
        let big = Decimal::MAX;
        let err = mul(big, Decimal::TWO, "order line 7").unwrap_err();
        assert!(
            err.contains("order line 7") && err.contains(&big.to_string()),
            "{err}"
        );
        assert!(add(big, Decimal::ONE, "x").is_err());
        assert!(sub(Decimal::MIN, Decimal::ONE, "x").is_err());
        assert!(sum([big, big], "lines").unwrap_err().contains("lines"));
        assert!(
            div(Decimal::ONE, Decimal::ZERO, "line 3")
                .unwrap_err()
                .contains("line 3")
        );
        assert_eq!(
            div(Decimal::TEN, Decimal::TWO, "x").unwrap(),
            Decimal::new(5, 0)
        );
        assert_eq!(
            line_total(Decimal::new(530, 3), Decimal::new(1299, 2), "l").unwrap(),
            Decimal::new(688, 2)
        );
    }
}
