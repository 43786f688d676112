//! The canonical order (SPEC §3): what every source is mapped to and what
//! every ERP receives. Money is `rust_decimal::Decimal`, never `f64`;
//! conversions from the sources' formats live in [`convert`].

pub mod arith;
pub mod convert;
pub mod order;

pub use order::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};

/// Lower-case hex of `bytes` (hashes in the ledger). One allocation: a
/// `format!` per byte was most of the cost of hashing an order at ingest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hex(&bytes), expected);
        assert_eq!(super::hex(&[]), "");
    }
}
