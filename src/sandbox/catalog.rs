//! The fixed product catalogue the CloudSuite simulator sells from.
//! Later ERP tests load these same products as master data, so entries are
//! append-only: changing a SKU, EAN or price silently breaks those fixtures.

use rust_decimal::Decimal;

/// How a product is sold; the SKU suffix mirrors it ("124_STUK", "301_KG").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SalesUnit {
    Piece,
    Box,
    Kilogram,
}

impl SalesUnit {
    /// Goods sold by weight get fractional quantities ("0.530").
    pub fn is_fractional(self) -> bool {
        matches!(self, SalesUnit::Kilogram)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub sku: &'static str,
    /// GS1 EAN-13 with a valid check digit.
    pub ean: &'static str,
    pub description: &'static str,
    /// Price per sales unit, excluding VAT, in euro cents.
    pub price_cents: i64,
    /// Dutch VAT percentage: 21 (standard) or 9 (books, food, seeds).
    pub tax_rate: u32,
    pub unit: SalesUnit,
}

impl Product {
    pub fn price(&self) -> Decimal {
        Decimal::new(self.price_cents, 2)
    }

    pub fn tax_rate(&self) -> Decimal {
        Decimal::from(self.tax_rate)
    }
}

const fn p(
    sku: &'static str,
    ean: &'static str,
    description: &'static str,
    price_cents: i64,
    tax_rate: u32,
    unit: SalesUnit,
) -> Product {
    Product {
        sku,
        ean,
        description,
        price_cents,
        tax_rate,
        unit,
    }
}

use SalesUnit::{Box as Doos, Kilogram as Kg, Piece as Stuk};

static PRODUCTS: [Product; 25] = [
    p(
        "124_STUK",
        "9789462500877",
        "Vakboek Installatietechniek, 3e druk",
        1999,
        9,
        Stuk,
    ),
    p(
        "201_STUK",
        "8712345424459",
        "Kogelkraan 1/2\" messing",
        1245,
        21,
        Stuk,
    ),
    p(
        "202_STUK",
        "8712345197728",
        "PVC bocht 90° 40 mm",
        189,
        21,
        Stuk,
    ),
    p(
        "203_STUK",
        "8712345517502",
        "Koperen knel T-stuk 15 mm",
        425,
        21,
        Stuk,
    ),
    p(
        "204_STUK",
        "8712345853198",
        "Thermostaatkraan Danfoss RA-N 15",
        3450,
        21,
        Stuk,
    ),
    p(
        "205_STUK",
        "8712345063283",
        "Radiatorsleutel",
        395,
        21,
        Stuk,
    ),
    p(
        "206_STUK",
        "8712345094942",
        "Teflontape 12 mm x 12 m",
        149,
        21,
        Stuk,
    ),
    p(
        "207_STUK",
        "8712345702397",
        "Siliconenkit sanitair wit 300 ml",
        695,
        21,
        Stuk,
    ),
    p(
        "208_STUK",
        "8712345123376",
        "Montagekit 290 ml",
        549,
        21,
        Stuk,
    ),
    p(
        "209_STUK",
        "8712345479312",
        "Accuboormachine 18 V incl. 2 accu's",
        18900,
        21,
        Stuk,
    ),
    p(
        "210_STUK",
        "8712345763879",
        "Bitset 32-delig",
        1495,
        21,
        Stuk,
    ),
    p(
        "211_STUK",
        "8712345076023",
        "Waterpomptang 250 mm",
        2275,
        21,
        Stuk,
    ),
    p("212_STUK", "8712345665104", "Rolmaat 5 m", 799, 21, Stuk),
    p(
        "213_STUK",
        "8712345281403",
        "Werkhandschoenen maat 9 (paar)",
        450,
        21,
        Stuk,
    ),
    p(
        "214_STUK",
        "8712345049140",
        "Veiligheidsbril helder",
        625,
        21,
        Stuk,
    ),
    p(
        "215_DOOS",
        "8712345112653",
        "Kabelbinders 200 x 4,8 mm (100 st.)",
        575,
        21,
        Doos,
    ),
    p(
        "216_DOOS",
        "8712345568382",
        "Spaanplaatschroeven 4 x 40 mm (200 st.)",
        895,
        21,
        Doos,
    ),
    p(
        "217_DOOS",
        "8712345548100",
        "Nylon pluggen 8 mm (100 st.)",
        649,
        21,
        Doos,
    ),
    p(
        "218_STUK",
        "8712345091569",
        "LED-lamp E27 8,5 W 2700 K",
        499,
        21,
        Stuk,
    ),
    p(
        "219_STUK",
        "8712345315443",
        "Verlengkabel 10 m rubber",
        2495,
        21,
        Stuk,
    ),
    p(
        "220_STUK",
        "8712345118891",
        "Cv-vulslang 1,5 m",
        1150,
        21,
        Stuk,
    ),
    p(
        "301_KG",
        "8712345722265",
        "Koffiebonen espresso (per kg)",
        2450,
        9,
        Kg,
    ),
    p(
        "302_KG",
        "8712345556426",
        "Graszaad sport & speel (per kg)",
        895,
        9,
        Kg,
    ),
    p(
        "303_KG",
        "8712345077471",
        "Strooizout (per kg)",
        119,
        21,
        Kg,
    ),
    p(
        "304_KG",
        "8712345741150",
        "Messing draadeinden los (per kg)",
        1875,
        21,
        Kg,
    ),
];

pub fn products() -> &'static [Product] {
    &PRODUCTS
}

pub fn product(sku: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.sku == sku)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ean_check_ok(ean: &str) -> bool {
        let digits: Vec<u32> = ean.chars().filter_map(|c| c.to_digit(10)).collect();
        if digits.len() != 13 || ean.len() != 13 {
            return false;
        }
        let sum: u32 = digits[..12]
            .iter()
            .enumerate()
            .map(|(i, d)| if i % 2 == 1 { d * 3 } else { *d })
            .sum();
        (10 - sum % 10) % 10 == digits[12]
    }

    #[test]
    fn catalogue_is_well_formed() {
        let all = products();
        assert_eq!(all.len(), 25);
        for (i, p) in all.iter().enumerate() {
            assert!(ean_check_ok(p.ean), "bad EAN {}", p.ean);
            assert!(p.price_cents > 0);
            assert!(p.tax_rate == 21 || p.tax_rate == 9);
            assert!(
                all[i + 1..]
                    .iter()
                    .all(|q| q.sku != p.sku && q.ean != p.ean),
                "duplicate {}",
                p.sku
            );
            let suffix = match p.unit {
                SalesUnit::Piece => "_STUK",
                SalesUnit::Box => "_DOOS",
                SalesUnit::Kilogram => "_KG",
            };
            assert!(p.sku.ends_with(suffix));
        }
        assert_eq!(product("124_STUK").map(|p| p.ean), Some("9789462500877"));
    }
}
