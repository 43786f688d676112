//! The simulator's order records and how CloudSuite renders them: DRF-style
//! JSON with decimals as strings, naive Europe/Amsterdam timestamps with
//! microseconds. Which of the plausible shapes an order's detail takes
//! (customer and addresses as ids, keys or objects, totals or none, ...) is
//! its `Shape`; see `Shape::for_order` for the rule.

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

/// How `customer` is served. The documents show an id (`"customer": 1324`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CustomerShape {
    /// `"customer": 1001` (documented).
    Id,
    /// `"customer": {"id", "name", "email", ...}` (an embedded record).
    Object,
}

/// How `invoice_address` / `shipment_address` are served. The documents show
/// ids; the offline-order POST page also names `*_address_key {origin, key}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressShape {
    /// `"shipment_address": 17` (documented).
    Id,
    /// The id plus `"shipment_address_key": {"origin", "key"}` beside it.
    IdAndKey,
    /// `"shipment_address": {"id", "name", "street", ...}` (an embedded record).
    Object,
}

/// Which of the plausible shapes one order's detail takes. The documents
/// leave these open; a simulator serves each of them on different orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub customer: CustomerShape,
    pub addresses: AddressShape,
    /// `total_excl` / `total_tax` / `total_incl` (no document shows them).
    pub totals: bool,
    /// `order_lines[].tax_rate` (no document shows it).
    pub line_tax_rate: bool,
    /// Fields no document shows but this simulator has always served:
    /// `shipping_method`, `shipping_costs`, `payment_method`, `product.sku`
    /// and `product.ean`, and in address objects `house_number` /
    /// `house_number_addition` (without them the number is part of `street`).
    /// Without these fields an order has no visible shipping charge, so it
    /// has none: its totals and `paid_amount` are the lines alone.
    pub extras: bool,
}

impl Shape {
    /// What the documents show: customer and addresses as ids, no totals,
    /// no line `tax_rate`, none of the undocumented extras.
    pub const DOCUMENTED: Shape = Shape {
        customer: CustomerShape::Id,
        addresses: AddressShape::Id,
        totals: false,
        line_tax_rate: false,
        extras: false,
    };

    /// The shape of order `id`, deterministic so seeds are reproducible.
    /// By `id % 10`:
    ///
    /// | id % 10 | customer | addresses  | totals | line tax_rate |
    /// |---------|----------|------------|--------|---------------|
    /// | 0..=5   | id       | id         | no     | no            |
    /// | 6       | object   | object     | yes    | yes           |
    /// | 7       | id       | id + key   | yes    | no            |
    /// | 8       | object   | id + key   | no     | yes           |
    /// | 9       | id       | object     | yes    | yes           |
    ///
    /// and independently the undocumented extras are absent when
    /// `id % 3 == 1` and present otherwise. Any 30 consecutive ids thus hold
    /// every row with and without the extras.
    pub fn for_order(id: i64) -> Shape {
        use AddressShape as A;
        use CustomerShape as C;
        let (customer, addresses, totals, line_tax_rate) = match id.rem_euclid(10) {
            6 => (C::Object, A::Object, true, true),
            7 => (C::Id, A::IdAndKey, true, false),
            8 => (C::Object, A::IdAndKey, false, true),
            9 => (C::Id, A::Object, true, true),
            _ => (C::Id, A::Id, false, false),
        };
        Shape {
            customer,
            addresses,
            totals,
            line_tax_rate,
            extras: id.rem_euclid(3) != 1,
        }
    }
}

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
    /// An offline order: entered outside the webshop (the ERP posts them,
    /// "Orders POST offline orders"); the list filter `offline=false`
    /// leaves them out.
    pub offline: bool,
    pub shape: Shape,
    pub customer: Customer,
    pub invoice_address: Address,
    pub shipment_address: Address,
    pub shipping_method: String,
    /// Zero when the shape has no shipping fields (see `Shape::extras`).
    pub shipping_costs: Decimal,
    pub lines: Vec<Line>,
    pub poison_quantity: bool,
    pub poison_totals: bool,
    pub history: Vec<Change>,
    pub write_requests: u64,
    /// Authenticated GETs of this order's detail.
    pub detail_reads: u64,
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

    fn to_json(&self, poison_quantity: bool, shape: &Shape) -> Value {
        // The documents show `product {origin, key}`; `sku`/`ean` are extras.
        let product = self.product.as_ref().map(|p| {
            if shape.extras {
                json!({"origin": "cloudsuite", "key": p.sku, "sku": p.sku, "ean": p.ean})
            } else {
                json!({"origin": "cloudsuite", "key": p.sku})
            }
        });
        let quantity = if poison_quantity {
            "abc".to_string()
        } else {
            fixed(self.quantity, 3)
        };
        let mut line = json!({
            "id": self.id,
            "type": self.kind,
            "product": product,
            "description": self.description,
            "quantity": quantity,
            "unit_price": fixed(self.unit_price, 2),
            "erp_line_number": self.erp_line_number,
        });
        if shape.line_tax_rate {
            line["tax_rate"] = json!(fixed(self.tax_rate, 2));
        }
        line
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
    /// An embedded address record. Without the house-number fields the
    /// number is written into `street`, as many shops store it.
    fn to_json(&self, house_number_fields: bool) -> Value {
        let mut a = json!({
            "id": self.id,
            "name": self.name,
            "postcode": self.postcode,
            "city": self.city,
            "country": self.country,
        });
        if house_number_fields {
            a["street"] = json!(self.street);
            a["house_number"] = json!(self.house_number);
            a["house_number_addition"] = json!(self.house_number_addition);
        } else {
            a["street"] = json!(self.street_with_number());
        }
        a
    }

    /// "Keizersgracht 12A", "Kerkstraat 7-1", "Molenweg 3 bis".
    fn street_with_number(&self) -> String {
        match &self.house_number_addition {
            None => format!("{} {}", self.street, self.house_number),
            Some(a) if a.starts_with('-') || a.chars().count() == 1 => {
                format!("{} {}{a}", self.street, self.house_number)
            }
            Some(a) => format!("{} {} {a}", self.street, self.house_number),
        }
    }

    /// The `{origin, key}` an external system gave the address.
    fn key_json(&self) -> Value {
        json!({"origin": "erp", "key": format!("ADR-{:06}", self.id)})
    }
}

impl Order {
    /// Shipping as charged: nothing when the shape has no shipping fields.
    fn shipping(&self) -> Decimal {
        if self.shape.extras {
            self.shipping_costs
        } else {
            Decimal::ZERO
        }
    }

    /// (excl, tax, incl): tax is rounded per line, then summed.
    pub(super) fn totals(&self) -> (Decimal, Decimal, Decimal) {
        let rate = |r: Decimal| r / Decimal::ONE_HUNDRED;
        let shipping = self.shipping();
        let mut excl = shipping;
        let mut tax = round2(shipping * rate(Decimal::from(SHIPPING_TAX_RATE)));
        for line in &self.lines {
            let line_excl = line.total_excl();
            excl += line_excl;
            tax += round2(line_excl * rate(line.tax_rate));
        }
        (excl, tax, excl + tax)
    }

    /// What the customer paid: the whole amount incl. VAT once the payment
    /// succeeded, nothing before (or on account, or cancelled).
    pub(super) fn paid_amount(&self) -> Decimal {
        if matches!(self.payment_status.as_str(), "paid" | "closed_success") {
            self.totals().2
        } else {
            Decimal::ZERO
        }
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

    /// The detail in this order's `shape`. Poisoned totals are served even
    /// when the shape has none: that is what the poison is.
    pub(super) fn detail_json(&self) -> Value {
        let shape = &self.shape;
        let first_goods_line = self.lines.iter().position(|l| l.kind == "line");
        let lines: Vec<Value> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| l.to_json(self.poison_quantity && Some(i) == first_goods_line, shape))
            .collect();
        let mut d = json!({
            "id": self.id,
            "reference": self.reference(),
            "key": self.key,
            "customer_order_number": self.customer_order_number,
            "erp_order_number": self.erp_order_number,
            "state": self.state,
            "payment_status": self.payment_status,
            "paid_amount": fixed(self.paid_amount(), 2),
            "shipment_state": self.shipment_state,
            "order_date": fmt_date(self.order_date),
            "confirm_date": self.confirm_date.map(fmt_datetime),
            "create_date": fmt_datetime(self.create_date),
            "modified_date": fmt_datetime(self.modified_date),
            "currency": self.currency,
            "description": self.description,
            "webshop": self.webshop,
            "offline": self.offline,
            "order_lines": lines,
        });
        // A site with no payment option: CloudSuite's page says to check the
        // field only "if there is a payment option in the site". Served
        // without it.
        if self.payment_status.is_empty()
            && let Some(map) = d.as_object_mut()
        {
            map.remove("payment_status");
        }
        d["customer"] = match shape.customer {
            CustomerShape::Id => json!(self.customer.id),
            CustomerShape::Object => self.customer.to_json(),
        };
        for (field, address) in [
            ("invoice_address", &self.invoice_address),
            ("shipment_address", &self.shipment_address),
        ] {
            match shape.addresses {
                AddressShape::Id => d[field] = json!(address.id),
                AddressShape::IdAndKey => {
                    d[field] = json!(address.id);
                    d[format!("{field}_key")] = address.key_json();
                }
                AddressShape::Object => d[field] = address.to_json(shape.extras),
            }
        }
        if shape.extras {
            d["payment_method"] = json!(self.payment_method);
            d["shipping_method"] = json!(self.shipping_method);
            d["shipping_costs"] = json!(fixed(self.shipping_costs, 2));
        }
        if shape.totals || self.poison_totals {
            let (excl, tax, mut incl) = self.totals();
            if self.poison_totals {
                incl += Decimal::TEN;
            }
            d["total_excl"] = json!(fixed(excl, 2));
            d["total_tax"] = json!(fixed(tax, 2));
            d["total_incl"] = json!(fixed(incl, 2));
        }
        d
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
