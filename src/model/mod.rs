//! The canonical order (SPEC §3): what every source is mapped to and what
//! every ERP receives. Money is `rust_decimal::Decimal`, never `f64`;
//! conversions from the sources' formats live in [`convert`].

pub mod arith;
pub mod convert;
pub mod country;
pub mod order;

pub use country::CountryMap;
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

/// `bytes` as text, each byte that is not UTF-8 as U+FFFD, like
/// `String::from_utf8_lossy`, but valid text (nearly all of it) goes
/// through `str::from_utf8`, which checks ASCII a word at a time where the
/// lossy decoder goes byte by byte: that was 2.7 % of the daemon's
/// instructions (every text column the ledger reads, every order body).
pub fn utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utf8_lossy_borrows_valid_text_and_replaces_what_is_not() {
        use std::borrow::Cow;
        assert!(matches!(
            super::utf8_lossy("Straße 1".as_bytes()),
            Cow::Borrowed("Straße 1")
        ));
        assert_eq!(super::utf8_lossy(b"ORD-\xff\xfe"), "ORD-\u{FFFD}\u{FFFD}");
        assert_eq!(super::utf8_lossy(b""), "");
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hex(&bytes), expected);
        assert_eq!(super::hex(&[]), "");
    }
}
