//! Deterministic generation of realistic Dutch B2B/B2C orders: the same seed
//! gives the same customers, lines and amounts (only absolute times follow the
//! clock). Data quirks are deliberate: optional fields, diacritics, odd phones.

use chrono::{Duration as ChronoDuration, NaiveDateTime};
use rand::Rng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;

use super::model::{Address, Customer, Line, Order, ProductRef, Shape};
use super::{LineSpec, OrderSpec};
use crate::sandbox::catalog;

/// Next ids per table; CloudSuite ids are database sequences, never reused.
#[derive(Clone, Debug)]
pub(super) struct Ids {
    pub order: i64,
    pub line: i64,
    pub customer: i64,
    pub address: i64,
}

impl Ids {
    pub(super) fn starting_at(first_order_id: i64) -> Self {
        Ids {
            order: first_order_id,
            line: 1,
            customer: 1001,
            address: 1,
        }
    }

    fn take(counter: &mut i64) -> i64 {
        let id = *counter;
        *counter += 1;
        id
    }
}

const FIRST_NAMES: &[&str] = &[
    "Jan",
    "Daan",
    "Sanne",
    "Emma",
    "Bram",
    "Lotte",
    "Sjoerd",
    "Fenna",
    "Pieter",
    "Anouk",
    "Daniëlle",
    "Zoë",
    "Ömer",
    "Noor",
    "Thijs",
    "Femke",
    "Koen",
    "Ilse",
    "Ruben",
    "Marloes",
];

const LAST_NAMES: &[&str] = &[
    "de Vries",
    "Jansen",
    "van den Berg",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van Leeuwen",
    "Dekker",
    "Brouwer",
    "de Wit",
    "Dijkstra",
    "van der Meer",
    "Yılmaz",
    "El Amrani",
];

const STREETS: &[&str] = &[
    "Keizersgracht",
    "Dorpsstraat",
    "Kerkstraat",
    "Stationsweg",
    "Molenweg",
    "Hoofdstraat",
    "Schoolstraat",
    "Julianastraat",
    "Wilhelminalaan",
    "Oranjestraat",
    "Industrieweg",
    "Burgemeester de Withstraat",
];

/// (city, first two postcode digits).
const CITIES: &[(&str, u32)] = &[
    ("Amsterdam", 10),
    ("Rotterdam", 30),
    ("Utrecht", 35),
    ("Den Haag", 25),
    ("Eindhoven", 56),
    ("Groningen", 97),
    ("Zwolle", 80),
    ("Haarlem", 20),
    ("'s-Hertogenbosch", 52),
    ("Leeuwarden", 89),
    ("Nijmegen", 65),
    ("Alkmaar", 18),
];

const COMPANY_PATTERNS: &[&str] = &[
    "{last} Installatietechniek BV",
    "Bouwbedrijf {last} B.V.",
    "Schildersbedrijf {last}",
    "{city} Techniek VOF",
    "Loodgietersbedrijf {last}",
];

const HOUSE_NUMBER_ADDITIONS: &[&str] = &["A", "B", "2", "bis", "-1", "III"];

/// Dutch postcodes never use these letters.
const POSTCODE_LETTERS: &[u8] = b"ABCDEGHJKLMNPRSTVWXZ";

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn digits(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn email_for(name: &str, domain: &str) -> String {
    let local: String = name
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('.'),
            'ë' => Some('e'),
            'ö' => Some('o'),
            'ı' => Some('i'),
            c if c.is_ascii_alphanumeric() => Some(c),
            _ => None,
        })
        .collect();
    // "Jan de Vries" -> "jan.devries": tussenvoegsels are glued on.
    let mut parts = local.split('.').filter(|s| !s.is_empty());
    let first = parts.next().unwrap_or("klant");
    let rest: String = parts.collect();
    format!("{first}.{rest}@{domain}")
}

fn phone(rng: &mut StdRng) -> String {
    match rng.random_range(0..4u8) {
        0 => format!("+31 6 {}", digits(rng, 8)),
        1 => format!("06-{}", digits(rng, 8)),
        2 => format!("020 {} {}", digits(rng, 3), digits(rng, 4)),
        _ => format!("+316{}", digits(rng, 8)),
    }
}

fn address(rng: &mut StdRng, ids: &mut Ids, name: &str) -> Address {
    let (city, pc) = *pick(rng, CITIES);
    let letters: String = (0..2)
        .map(|_| char::from(*pick(rng, POSTCODE_LETTERS)))
        .collect();
    Address {
        id: Ids::take(&mut ids.address),
        name: name.to_string(),
        street: pick(rng, STREETS).to_string(),
        house_number: rng.random_range(1..=240u32).to_string(),
        house_number_addition: rng
            .random_bool(0.2)
            .then(|| pick(rng, HOUSE_NUMBER_ADDITIONS).to_string()),
        postcode: format!("{pc}{:02} {letters}", rng.random_range(11..99u32)),
        city: city.to_string(),
        country: "NL".to_string(),
    }
}

/// Customer plus invoice and shipment address (separate rows, often equal).
fn customer(rng: &mut StdRng, ids: &mut Ids) -> (Customer, Address, Address) {
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    let name = format!("{first} {last}");
    let is_company = rng.random_bool(0.4);
    let company = is_company.then(|| {
        let (city, _) = *pick(rng, CITIES);
        let mut last_cap = last.to_string();
        if let Some(c) = last_cap.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        pick(rng, COMPANY_PATTERNS)
            .replace("{last}", &last_cap)
            .replace("{city}", city)
    });
    let customer = Customer {
        id: Ids::take(&mut ids.customer),
        email: email_for(
            &name,
            if is_company {
                "example.com"
            } else {
                "example.nl"
            },
        ),
        phone: rng.random_bool(0.8).then(|| phone(rng)),
        vat_number: company
            .as_ref()
            .filter(|_| rng.random_bool(0.85))
            .map(|_| format!("NL{}B01", digits(rng, 9))),
        company_name: company,
        name: name.clone(),
    };
    let invoice = address(rng, ids, &name);
    let shipment = if rng.random_bool(0.8) {
        Address {
            id: Ids::take(&mut ids.address),
            ..invoice.clone()
        }
    } else {
        address(rng, ids, &name)
    };
    (customer, invoice, shipment)
}

/// Fractional quantities for goods sold by weight, mostly 1 otherwise.
fn quantity(rng: &mut StdRng, product: &catalog::Product) -> Decimal {
    if product.unit.is_fractional() {
        Decimal::new(rng.random_range(150..=3500i64), 3)
    } else if rng.random_bool(0.7) {
        Decimal::ONE
    } else {
        Decimal::from(rng.random_range(2..=6i64))
    }
}

fn product_line(ids: &mut Ids, p: &catalog::Product, quantity: Decimal) -> Line {
    Line {
        id: Ids::take(&mut ids.line),
        kind: "line",
        product: Some(ProductRef {
            sku: p.sku.to_string(),
            ean: Some(p.ean.to_string()),
        }),
        description: p.description.to_string(),
        quantity,
        unit_price: p.price(),
        tax_rate: p.tax_rate(),
        erp_line_number: None,
    }
}

fn discount_line(ids: &mut Ids, amount: Decimal, code: &str) -> Line {
    Line {
        id: Ids::take(&mut ids.line),
        kind: "discount",
        product: None,
        description: format!("Kortingscode {code}"),
        quantity: Decimal::ONE,
        unit_price: -amount.abs(),
        tax_rate: Decimal::from(21),
        erp_line_number: None,
    }
}

/// Free shipping from 50 EUR of goods (excl. VAT), otherwise 4.95.
fn shipping_for(lines: &[Line]) -> Decimal {
    let goods: Decimal = lines.iter().map(Line::total_excl).sum();
    if goods > Decimal::from(50) {
        Decimal::ZERO
    } else {
        Decimal::new(495, 2)
    }
}

/// (payment_status, payment_method), weighted like a real shop.
fn payment(rng: &mut StdRng) -> (&'static str, &'static str) {
    let status = match rng.random_range(0..100u32) {
        0..55 => "paid",
        55..75 => "closed_success",
        75..90 => "account",
        90..96 => "started",
        _ => "closed_canceled",
    };
    let method = if status == "account" {
        "invoice"
    } else {
        *pick(
            rng,
            &[
                "ideal",
                "ideal",
                "ideal",
                "creditcard",
                "bancontact",
                "paypal",
            ],
        )
    };
    (status, method)
}

fn bare_order(
    rng: &mut StdRng,
    ids: &mut Ids,
    create_date: NaiveDateTime,
    confirm_date: Option<NaiveDateTime>,
) -> Order {
    let (customer, invoice_address, shipment_address) = customer(rng, ids);
    let id = Ids::take(&mut ids.order);
    Order {
        id,
        key: rng.random_bool(0.2).then(|| {
            (0..32)
                .map(|_| char::from(*pick(rng, b"0123456789abcdef")))
                .collect()
        }),
        customer_order_number: rng
            .random_bool(0.4)
            .then(|| format!("PO-{}", rng.random_range(1000..99999u32))),
        erp_order_number: None,
        state: "confirmed".into(),
        payment_status: "paid".into(),
        payment_method: "ideal".into(),
        shipment_state: None,
        order_date: create_date.date(),
        confirm_date,
        create_date,
        modified_date: confirm_date.unwrap_or(create_date),
        currency: "EUR".into(),
        description: "Webshop order".into(),
        webshop: 1,
        offline: false,
        shape: Shape::for_order(id),
        customer,
        invoice_address,
        shipment_address,
        shipping_method: if rng.random_bool(0.85) {
            "PostNL"
        } else {
            "DHL"
        }
        .into(),
        shipping_costs: Decimal::ZERO,
        lines: Vec::new(),
        poison_quantity: false,
        poison_totals: false,
        history: Vec::new(),
        write_requests: 0,
        detail_reads: 0,
    }
}

/// A confirmed order as the shop produces them on its own.
pub(super) fn random_order(
    rng: &mut StdRng,
    ids: &mut Ids,
    confirm_date: NaiveDateTime,
    webshops: &[i64],
) -> Order {
    // Customers take a few minutes between cart and confirmation.
    let create_date =
        confirm_date - ChronoDuration::microseconds(rng.random_range(30_000_000..1_800_000_000));
    let mut order = bare_order(rng, ids, create_date, Some(confirm_date));
    if !webshops.is_empty() {
        order.webshop = *pick(rng, webshops);
    }
    let (status, method) = payment(rng);
    order.payment_status = status.into();
    order.payment_method = method.into();

    let n_lines = rng.random_range(1..=5usize);
    let mut chosen: Vec<&catalog::Product> = Vec::new();
    while chosen.len() < n_lines {
        let p = pick(rng, catalog::products());
        if !chosen.iter().any(|c| c.sku == p.sku) {
            chosen.push(p);
        }
    }
    for p in chosen {
        let q = quantity(rng, p);
        order.lines.push(product_line(ids, p, q));
    }
    if order.shape.extras {
        order.shipping_costs = shipping_for(&order.lines);
    }
    if rng.random_bool(0.1) {
        let (code, amount) = *pick(
            rng,
            &[("ZOMER", 500i64), ("WELKOM10", 1000), ("TROUWEKLANT", 250)],
        );
        order
            .lines
            .push(discount_line(ids, Decimal::new(amount, 2), code));
    }
    order
}

/// An order exactly as a test describes it; unspecified details are generated.
pub(super) fn order_from_spec(
    rng: &mut StdRng,
    ids: &mut Ids,
    spec: &OrderSpec,
    now: NaiveDateTime,
) -> Order {
    let confirmed = matches!(spec.state.as_str(), "confirmed" | "processing" | "done");
    let confirm_date = spec.confirm_date.or(confirmed.then_some(now));
    let create_date = confirm_date.unwrap_or(now) - ChronoDuration::minutes(3);
    let mut order = bare_order(rng, ids, create_date, confirm_date);
    order.state = spec.state.clone();
    order.payment_status = spec.payment_status.clone();
    order.payment_method = spec.payment_method.clone();
    order.webshop = spec.webshop;
    order.offline = spec.offline;
    if spec.offline {
        // The ERP posted it, with its own number.
        order.erp_order_number = Some(format!("ERP-OFF-{}", order.id));
    }
    order.shape = match spec.shape {
        Some(shape) => shape,
        // A test that names shipping costs gets the shape that shows them.
        None if spec.shipping_costs.is_some() => Shape {
            extras: true,
            ..order.shape
        },
        None => order.shape,
    };
    if spec.customer_order_number.is_some() {
        order.customer_order_number = spec.customer_order_number.clone();
    }
    if spec.lines.is_empty() {
        let p = pick(rng, catalog::products());
        let q = quantity(rng, p);
        order.lines.push(product_line(ids, p, q));
    }
    for l in &spec.lines {
        order.lines.push(line_from_spec(ids, l));
    }
    if order.shape.extras {
        order.shipping_costs = spec
            .shipping_costs
            .unwrap_or_else(|| shipping_for(&order.lines));
    }
    if let Some(amount) = spec.discount {
        order.lines.push(discount_line(ids, amount, "TEST"));
    }
    order
}

fn line_from_spec(ids: &mut Ids, spec: &LineSpec) -> Line {
    let known = catalog::product(&spec.sku);
    Line {
        id: Ids::take(&mut ids.line),
        kind: "line",
        product: Some(ProductRef {
            sku: spec.sku.clone(),
            ean: known.map(|p| p.ean.to_string()),
        }),
        description: spec
            .description
            .clone()
            .or_else(|| known.map(|p| p.description.to_string()))
            .unwrap_or_else(|| spec.sku.clone()),
        quantity: spec.quantity,
        unit_price: spec
            .unit_price
            .or_else(|| known.map(catalog::Product::price))
            .unwrap_or_default(),
        tax_rate: spec
            .tax_rate
            .or_else(|| known.map(catalog::Product::tax_rate))
            .unwrap_or(Decimal::from(21)),
        erp_line_number: None,
    }
}

/// `n` confirm times in [from, to): sorted, then a few neighbours swapped,
/// because a quotation confirmed late keeps its low id.
pub(super) fn confirm_times(
    rng: &mut StdRng,
    n: usize,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Vec<NaiveDateTime> {
    let span = (to - from).num_microseconds().unwrap_or(0).max(1);
    let mut times: Vec<NaiveDateTime> = (0..n)
        .map(|_| from + ChronoDuration::microseconds(rng.random_range(0..span)))
        .collect();
    times.sort();
    for i in 1..times.len() {
        if rng.random_bool(0.05) {
            times.swap(i - 1, i);
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_orders() {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 6, 29)
            .and_then(|d| d.and_hms_opt(10, 15, 0))
            .unwrap();
        let gen_all = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut ids = Ids::starting_at(48001);
            (0..20)
                .map(|_| random_order(&mut rng, &mut ids, t, &[1]).detail_json())
                .collect::<Vec<_>>()
        };
        assert_eq!(gen_all(7), gen_all(7));
        assert_ne!(gen_all(7), gen_all(8));
    }

    #[test]
    fn emails_are_ascii() {
        assert_eq!(
            email_for("Jan de Vries", "example.nl"),
            "jan.devries@example.nl"
        );
        assert_eq!(
            email_for("Zoë Yılmaz", "example.nl"),
            "zoe.yilmaz@example.nl"
        );
    }
}
