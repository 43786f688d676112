//! Generated bookshop orders: a small catalogue of real-looking books
//! (EAN-13s from Titelive's own samples), one to three lines (so many orders
//! have a single, collapsed line), some line vouchers, order reductions,
//! gift wrap, and the misspelled address key on about a third of them.

use chrono::{Duration, NaiveDateTime};
use rand::Rng;
use rand::rngs::StdRng;

use super::OrderSpec;
use super::model::{Addr, Line, Order};

/// (EAN, title, author, price in cents incl. VAT, product form)
const BOOKS: [(u64, &str, &str, i64, &str); 10] = [
    (
        9789462500877,
        "Kip",
        "Marcus Bean & Ellen Hosmar",
        2250,
        "BB",
    ),
    (
        9789025762186,
        "Kaatje Kip",
        "Axel Scheffler & Bette Westera",
        895,
        "BB",
    ),
    (
        9789021560571,
        "Gouden Kip",
        "Diana Henry & Laura Edwards",
        1999,
        "BB",
    ),
    (
        9789462082977,
        "Adolf Loos Architectuur En Al Het Andere",
        "Ineke Van Der Burg",
        2495,
        "ED",
    ),
    (9789044629354, "Gij nu", "Griet Op de Beeck", 1995, "BB"),
    (9789400406865, "Troje", "Stephen Fry", 2599, "BC"),
    (
        9789463821261,
        "Een winter vol verhalen",
        "Frits Abrahams",
        1500,
        "BB",
    ),
    (
        9789000366095,
        "Er hangt een geheim in de lucht",
        "Anna Ruhe",
        1699,
        "BB",
    ),
    (9782070368228, "L'Etranger", "Albert Camus", 790, "BC"),
    (
        9782253006329,
        "Le Petit Prince",
        "Antoine de Saint-Exupery",
        699,
        "BC",
    ),
];

const FIRST: [&str; 8] = [
    "Anne", "Pierre", "Sophie", "Jan", "Marie", "Lucas", "Emma", "Thomas",
];
const LAST: [&str; 8] = [
    "Martin", "Dubois", "de Vries", "Peeters", "Janssens", "Bernard", "Leroy", "Bakker",
];
const STREETS: [(&str, &str, &str); 6] = [
    ("Rue de Rivoli", "75001", "Paris"),
    ("Avenue Jean Medecin", "06000", "Nice"),
    ("Meir", "2000", "Antwerpen"),
    ("Rue Neuve", "1000", "Bruxelles"),
    ("Keizersgracht", "1015 CJ", "Amsterdam"),
    ("Oudegracht", "3511 AB", "Utrecht"),
];

/// The simulator's country ids (Titelive's real numbering is not public).
pub const COUNTRY_IDS: [i64; 3] = [1, 21, 150];

pub(super) struct Ids {
    pub order: i64,
    pub line: i64,
    pub package: i64,
}

fn address(rng: &mut StdRng, country: i64) -> Addr {
    let (street, postcode, city) = STREETS[rng.random_range(0..STREETS.len())];
    Addr {
        first: FIRST[rng.random_range(0..FIRST.len())].into(),
        last: LAST[rng.random_range(0..LAST.len())].into(),
        line1: street.into(),
        number: rng.random_range(1..200),
        postcode: postcode.into(),
        city: city.into(),
        country,
    }
}

pub(super) fn order(
    rng: &mut StdRng,
    ids: &mut Ids,
    spec: &OrderSpec,
    created: NaiveDateTime,
) -> Order {
    let id = ids.order;
    ids.order += 1;
    let n_lines = match spec.lines {
        0 => rng.random_range(1..=3),
        n => n,
    };
    let mut lines: Vec<Line> = Vec::new();
    for _ in 0..n_lines {
        let (ean, title, author, cents, form) = BOOKS[rng.random_range(0..BOOKS.len())];
        let voucher = spec.vouchers && rng.random_bool(0.15);
        let off = if voucher {
            rng.random_range(1..=5) * 100
        } else {
            0
        };
        ids.line += 1;
        lines.push(Line {
            id: ids.line,
            ean,
            title: title.into(),
            author: author.into(),
            price_cents: cents - off,
            full_cents: voucher.then_some(cents),
            voucher_code: voucher.then(|| "DAVE04".into()),
            quantity: if rng.random_bool(0.2) {
                rng.random_range(2..=3)
            } else {
                1
            },
            product_form: form,
            giftwrap: rng.random_bool(0.15),
        });
    }
    let country = spec
        .country
        .unwrap_or_else(|| COUNTRY_IDS[rng.random_range(0..COUNTRY_IDS.len())]);
    let goods: i64 = lines.iter().map(|l| l.price_cents * l.quantity).sum();
    let reduction = if spec.vouchers && goods > 2500 && rng.random_bool(0.1) {
        500
    } else {
        0
    };
    let delivery = address(rng, country);
    let invoice = if rng.random_bool(0.8) {
        delivery.clone()
    } else {
        address(rng, country)
    };
    Order {
        id,
        customer: 5_000_000 + rng.random_range(0..100_000),
        status: spec.status,
        created,
        lines,
        shipping_cents: if goods >= 3000 { 0 } else { 395 },
        reduction_cents: reduction,
        voucher_code: (reduction > 0).then(|| "WELKOM5".into()),
        delivery_type: rng.random_range(1..=4),
        payment_method: rng.random_range(1..=3),
        delivery,
        invoice,
        misspelled: spec.misspelled.unwrap_or_else(|| rng.random_bool(0.3)),
        packages: Vec::new(),
        history: Vec::new(),
        status_posts: 0,
    }
}

/// Creation times spread over `[to - span, to)`, oldest first.
pub(super) fn times(
    rng: &mut StdRng,
    n: usize,
    to: NaiveDateTime,
    span: Duration,
) -> Vec<NaiveDateTime> {
    let secs = span.num_seconds().max(1);
    let mut t: Vec<NaiveDateTime> = (0..n)
        .map(|_| to - Duration::seconds(rng.random_range(0..secs)))
        .collect();
    t.sort();
    t
}
