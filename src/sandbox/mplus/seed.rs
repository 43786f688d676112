//! Generated till orders: catalogue articles with VAT-inclusive cent prices,
//! goods sold by weight as `quantity` + `decimalPlaces = 3`, totals the way a
//! till computes them (each line rounded to the cent, then summed).

use chrono::{Datelike, Timelike, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::{SimOrder, State};
use crate::sandbox::catalog;
use crate::sources::mplus::wire;

const RELATIONS: [(&str, &str, &str, &str); 4] = [
    ("Bakkerij De Korf", "Dorpsstraat 1", "3511 AB", "Utrecht"),
    ("Café Het Hoekje", "Markt 12", "5211 JX", "'s-Hertogenbosch"),
    ("J. de Vries", "Kerkweg 8a", "9711 LM", "Groningen"),
    ("Lunchroom Zoet", "Havenkade 3", "1013 BA", "Amsterdam"),
];

/// Cents, rounded half away from zero.
fn cents(d: Decimal) -> i64 {
    (d * Decimal::from(100)).round().to_i64().unwrap_or(0)
}

fn incl_price_cents(p: &catalog::Product) -> i64 {
    let incl = Decimal::from(p.price_cents) * Decimal::from(100 + p.tax_rate) / Decimal::from(100);
    incl.round().to_i64().unwrap_or(0)
}

/// Line totals and the order's totals from the lines as they stand.
pub(crate) fn recompute(order: &mut wire::Order) {
    let (mut incl, mut excl) = (0, 0);
    for line in &mut order.line_list.line {
        let d = &mut line.data;
        let qty = Decimal::new(d.quantity, d.decimal_places);
        let line_incl = cents(qty * Decimal::new(d.price, 2));
        let rate = Decimal::from(d.vat_percentage.unwrap_or(0));
        let line_excl =
            cents(Decimal::new(line_incl, 2) * Decimal::from(100) / (Decimal::from(100) + rate));
        d.total_incl_amount = Some(line_incl);
        d.total_excl_amount = Some(line_excl);
        incl += line_incl;
        excl += line_excl;
    }
    order.total_incl_amount = incl;
    order.total_excl_amount = excl;
}

pub(crate) fn add_one_to_first_line(order: &mut wire::Order) {
    if let Some(l) = order.line_list.line.first_mut() {
        l.data.quantity += 10i64.pow(l.data.decimal_places);
    }
    recompute(order);
}

pub(crate) fn add_random_order(st: &mut State) -> String {
    let number = st.next_number;
    st.next_number += 1;
    let rng = &mut st.rng;
    let products = catalog::products();
    let n_lines = rng.random_range(1..=4);
    let mut lines = Vec::new();
    for i in 0..n_lines {
        let p = &products[rng.random_range(0..products.len())];
        let (quantity, decimal_places) = if p.unit.is_fractional() {
            (rng.random_range(100..=2500), 3)
        } else {
            (rng.random_range(1..=5), 0)
        };
        let article_number = p
            .sku
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        lines.push(wire::Line {
            line_id: format!("{number:06}-{}", i + 1),
            article_number,
            plu_number: Some(p.sku.to_string()),
            text: Some(p.description.to_string()),
            line_type: Some("LINE-TYPE-NONE".into()),
            data: wire::LineData {
                quantity,
                decimal_places,
                price: incl_price_cents(p),
                vat_percentage: Some(p.tax_rate as i64),
                ..Default::default()
            },
            preparation_list: None,
        });
    }
    let (name, street, zip, city) = RELATIONS[rng.random_range(0..RELATIONS.len())];
    let relation_number = 1000 + rng.random_range(0..RELATIONS.len() as i64);
    let now = Utc::now().with_timezone(&chrono_tz::Europe::Amsterdam);
    let offset_minutes = {
        use chrono::Offset;
        now.offset().fix().local_minus_utc() / 60
    };
    let id = format!("{:08X}-{number:04X}", 0x5F3A_0000u32 + number as u32);
    let mut order = wire::Order {
        order_id: id.clone(),
        ext_order_id: None,
        sync_marker: 0,
        order_type: Some("ORDER-TYPE-SALES".into()),
        entry_branch_number: Some(1),
        employee_number: Some(rng.random_range(1..=5)),
        entry_timestamp: Some(wire::SoapDateTime {
            sec: now.second(),
            min: now.minute(),
            hour: now.hour(),
            day: now.day(),
            mon: now.month(),
            year: now.year(),
            isdst: Some(offset_minutes == 120),
            timezone: Some(if st.timezone_in_seconds {
                offset_minutes * 60
            } else {
                offset_minutes
            }),
        }),
        relation_number: Some(relation_number),
        relation_name: Some(name.into()),
        invoice_address: Some(wire::Address {
            name: Some(name.into()),
            address: Some(street.into()),
            zipcode: Some(zip.into()),
            city: Some(city.into()),
            country: Some(if st.country_names { "Nederland" } else { "NL" }.into()),
            ..Default::default()
        }),
        financial_date: Some(wire::SoapDate {
            day: now.day(),
            mon: now.month(),
            year: now.year(),
        }),
        vat_method: Some("VAT-METHOD-INCLUSIVE".into()),
        payment_method: Some(
            if rng.random_bool(0.5) {
                "PIN"
            } else {
                "CONTANT"
            }
            .into(),
        ),
        fully_paid: Some(true),
        delivery_state: Some("ORDER-DELIVERY-STATE-NOTHING".into()),
        cancel_state: Some("ORDER-CANCEL-STATE-NOTHING".into()),
        order_number: Some(wire::YearNumber {
            year: now.year(),
            number,
        }),
        line_list: wire::LineList { line: lines },
        ..Default::default()
    };
    recompute(&mut order);
    st.orders.insert(
        id.clone(),
        SimOrder {
            order,
            updates: 0,
            deliveries: 0,
        },
    );
    // Creation is a change like any other; change_counter starts at 1.
    st.bump(&id);
    id
}
