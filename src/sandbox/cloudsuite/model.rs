//! The simulator's order records and how CloudSuite renders them: DRF-style
//! JSON with decimals as strings, naive Europe/Amsterdam timestamps with
//! microseconds, and totals derived from the lines (unless poisoned).

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::Change;

pub(super) const STATES: [&str; 6] = [
    "draft",
    "quotation",
    "confirmed",
    "processing",
    "done",
    "cancel",
];

/// Dutch VAT on shipping; CloudSuite always charges the standard rate on it.
const SHIPPING_TAX_RATE: i64 = 21;

#[derive(Clone, Debug)]
pub(super) struct Customer {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub company_name: Option<String>,
    pub vat_number: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) struct Address {
    pub id: i64,
    pub name: String,
    pub street: String,
    pub house_number: String,
    pub house_number_addition: Option<String>,
    pub postcode: String,
    pub city: String,
    pub country: String,
}

#[derive(Clone, Debug)]
pub(super) struct ProductRef {
    pub sku: String,
    pub ean: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) struct Line {
    pub id: i64,
    /// "line" or "discount".
    pub kind: &'static str,
    pub product: Option<ProductRef>,
    pub description: String,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub tax_rate: Decimal,
    pub erp_line_number: Option<i64>,
}

#[derive(Clone, Debug)]
pub(super) struct Order {
    pub id: i64,
    pub key: Option<String>,
    pub customer_order_number: Option<String>,
    pub erp_order_number: Option<String>,
    pub state: String,
    pub payment_status: String,
    pub payment_method: String,
    pub shipment_state: Option<String>,
    pub order_date: NaiveDate,
    pub confirm_date: Option<NaiveDateTime>,
    pub create_date: NaiveDateTime,
    pub modified_date: NaiveDateTime,
    pub currency: String,
    pub description: String,
    pub webshop: i64,
    pub customer: Customer,
    pub invoice_address: Address,
    pub shipment_address: Address,
    pub shipping_method: String,
    pub shipping_costs: Decimal,
    pub lines: Vec<Line>,
    pub poison_quantity: bool,
    pub poison_totals: bool,
    pub history: Vec<Change>,
    pub write_requests: u64,
}

/// Half away from zero, as on Dutch invoices.
pub(super) fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// DRF renders a DecimalField with exactly `decimal_places` digits.
pub(super) fn fixed(d: Decimal, places: u32) -> String {
    let mut d = d.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(places);
    d.to_string()
}

pub(super) fn fmt_datetime(dt: NaiveDateTime) -> String {
    dt.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn fmt_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

impl Line {
    pub(super) fn total_excl(&self) -> Decimal {
        round2(self.quantity * self.unit_price)
    }

    fn to_json(&self, poison_quantity: bool) -> Value {
        let product = self
            .product
            .as_ref()
            .map(|p| json!({"origin": "cloudsuite", "key": p.sku, "sku": p.sku, "ean": p.ean}));
        let quantity = if poison_quantity {
            "abc".to_string()
        } else {
            fixed(self.quantity, 3)
        };
        json!({
            "id": self.id,
            "type": self.kind,
            "product": product,
            "description": self.description,
            "quantity": quantity,
            "unit_price": fixed(self.unit_price, 2),
            "tax_rate": fixed(self.tax_rate, 2),
            "erp_line_number": self.erp_line_number,
        })
    }
}

impl Customer {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "company_name": self.company_name,
            "vat_number": self.vat_number,
        })
    }
}

impl Address {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "street": self.street,
            "house_number": self.house_number,
            "house_number_addition": self.house_number_addition,
            "postcode": self.postcode,
            "city": self.city,
            "country": self.country,
        })
    }
}

impl Order {
    /// (excl, tax, incl): tax is rounded per line, then summed.
    pub(super) fn totals(&self) -> (Decimal, Decimal, Decimal) {
        let rate = |r: Decimal| r / Decimal::ONE_HUNDRED;
        let mut excl = self.shipping_costs;
        let mut tax = round2(self.shipping_costs * rate(Decimal::from(SHIPPING_TAX_RATE)));
        for line in &self.lines {
            let line_excl = line.total_excl();
            excl += line_excl;
            tax += round2(line_excl * rate(line.tax_rate));
        }
        (excl, tax, excl + tax)
    }

    pub(super) fn reference(&self) -> String {
        format!("CS{}", self.id)
    }

    pub(super) fn summary_json(&self) -> Value {
        json!({
            "id": self.id,
            "reference": self.reference(),
            "customer_order_number": self.customer_order_number,
            "erp_order_number": self.erp_order_number,
            "state": self.state,
            "payment_status": self.payment_status,
            "order_date": fmt_date(self.order_date),
            "confirm_date": self.confirm_date.map(fmt_datetime),
            "create_date": fmt_datetime(self.create_date),
            "modified_date": fmt_datetime(self.modified_date),
        })
    }

    pub(super) fn detail_json(&self) -> Value {
        let (excl, tax, mut incl) = self.totals();
        if self.poison_totals {
            incl += Decimal::TEN;
        }
        let first_goods_line = self.lines.iter().position(|l| l.kind == "line");
        let lines: Vec<Value> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| l.to_json(self.poison_quantity && Some(i) == first_goods_line))
            .collect();
        json!({
            "id": self.id,
            "reference": self.reference(),
            "key": self.key,
            "customer_order_number": self.customer_order_number,
            "erp_order_number": self.erp_order_number,
            "state": self.state,
            "payment_status": self.payment_status,
            "payment_method": self.payment_method,
            "shipment_state": self.shipment_state,
            "order_date": fmt_date(self.order_date),
            "confirm_date": self.confirm_date.map(fmt_datetime),
            "create_date": fmt_datetime(self.create_date),
            "modified_date": fmt_datetime(self.modified_date),
            "currency": self.currency,
            "description": self.description,
            "webshop": self.webshop,
            "customer": self.customer.to_json(),
            "invoice_address": self.invoice_address.to_json(),
            "shipment_address": self.shipment_address.to_json(),
            "shipping_method": self.shipping_method,
            "shipping_costs": fixed(self.shipping_costs, 2),
            "order_lines": lines,
            "total_excl": fixed(excl, 2),
            "total_tax": fixed(tax, 2),
            "total_incl": fixed(incl, 2),
        })
    }

    /// Records a change when the value really changed, as the platform's audit
    /// log does; no-op writes leave no trace.
    pub(super) fn record(
        &mut self,
        at: NaiveDateTime,
        field: String,
        from: Option<String>,
        to: Option<String>,
        via: &str,
    ) {
        if from != to {
            self.history.push(Change {
                at,
                field,
                from,
                to,
                via: via.to_string(),
            });
        }
    }

    /// Every successful save bumps `modified_date` (Django `auto_now`), even
    /// when nothing changed; kept strictly increasing so clients can use it as
    /// a cursor.
    pub(super) fn touch(&mut self, now: NaiveDateTime) {
        let min_next = self.modified_date + chrono::Duration::microseconds(1);
        self.modified_date = now.max(min_next);
    }

    pub(super) fn set_state(&mut self, to: &str, now: NaiveDateTime, via: &str) {
        let from = std::mem::replace(&mut self.state, to.to_string());
        if self.confirm_date.is_none() && matches!(to, "confirmed" | "processing" | "done") {
            self.confirm_date = Some(now);
        }
        self.record(now, "state".into(), Some(from), Some(to.to_string()), via);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_pads_and_rounds_half_away_from_zero() {
        assert_eq!(fixed(Decimal::new(2, 0), 3), "2.000");
        assert_eq!(fixed(Decimal::new(-5, 0), 2), "-5.00");
        assert_eq!(fixed(Decimal::new(6_8635, 4), 2), "6.86");
        assert_eq!(fixed(Decimal::new(1_005, 3), 2), "1.01");
        assert_eq!(round2(Decimal::new(-1_005, 3)), Decimal::new(-101, 2));
    }
}
