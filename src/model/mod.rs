//! The canonical order (SPEC §3): what every source is mapped to and what
//! every ERP receives. Money is `rust_decimal::Decimal`, never `f64`;
//! conversions from the sources' formats live in [`convert`].

pub mod arith;
pub mod convert;
pub mod order;

pub use order::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};
