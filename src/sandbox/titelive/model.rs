//! The simulator's orders and how they look on the wire: money in cents
//! inside, floats in euros outside; collections wrapped XML-style and
//! collapsed to one object when there is one; the address key misspelled on
//! some orders, as in Titelive's own samples.

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Euros as the JSON float Titelive sends (`1999` -> `19.99`). Dividing an
/// integer by 100 gives the double nearest the decimal, which prints as it.
pub(super) fn euros(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

#[derive(Clone, Debug)]
pub(super) struct Line {
    pub id: i64,
    pub ean: u64,
    pub title: String,
    pub author: String,
    /// Per unit, after a line voucher.
    pub price_cents: i64,
    /// Per unit before the voucher, when there is one.
    pub full_cents: Option<i64>,
    pub voucher_code: Option<String>,
    pub quantity: i64,
    pub product_form: &'static str,
    pub giftwrap: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Addr {
    pub first: String,
    pub last: String,
    pub line1: String,
    pub number: i64,
    pub postcode: String,
    pub city: String,
    pub country: i64,
}

#[derive(Clone, Debug)]
pub(super) struct Package {
    pub id: i64,
    pub carrier: i64,
    pub tracking: String,
    pub line_ids: Vec<i64>,
    /// `(line id, quantity, date)`: quantities the shop cancelled in this
    /// package (`cancels.cancel[]` of the package line, as the seed's
    /// sample shows; the order's own line keeps its quantity).
    pub cancels: Vec<(i64, i64, String)>,
}

/// One status change, as the simulator's history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    pub at: NaiveDateTime,
    pub from: i64,
    pub to: i64,
    pub message: String,
    /// "API" (admin/order/{id}/status) or "ADMIN" (the test's back office).
    pub via: String,
}

#[derive(Clone, Debug)]
pub(super) struct Order {
    pub id: i64,
    pub customer: i64,
    pub status: i64,
    pub created: NaiveDateTime,
    pub lines: Vec<Line>,
    pub shipping_cents: i64,
    pub reduction_cents: i64,
    pub voucher_code: Option<String>,
    pub delivery_type: i64,
    pub payment_method: i64,
    pub delivery: Addr,
    pub invoice: Addr,
    /// Served as `deliveryAdressLine1` / `invoiceAdressLine1`.
    pub misspelled: bool,
    pub packages: Vec<Package>,
    pub history: Vec<StatusChange>,
    /// Every status POST that reached this order, accepted or not.
    pub status_posts: u64,
}

/// `{"line": [..]}`, or `{"line": {..}}` when there is exactly one.
fn wrapped(singular: &str, mut items: Vec<Value>) -> Value {
    let inner = if items.len() == 1 {
        items.remove(0)
    } else {
        Value::Array(items)
    };
    json!({ singular: inner })
}

impl Order {
    pub fn lines_cents(&self) -> i64 {
        self.lines.iter().map(|l| l.price_cents * l.quantity).sum()
    }

    pub fn full_cents(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| l.full_cents.unwrap_or(l.price_cents) * l.quantity)
            .sum()
    }

    /// What the customer pays: lines after vouchers, minus the order
    /// reduction, plus shipping.
    pub fn total_cents(&self) -> i64 {
        self.lines_cents() - self.reduction_cents + self.shipping_cents
    }

    fn line_json(l: &Line) -> Value {
        let mut v = json!({
            "id": l.id, "ean": l.ean, "title": l.title, "author": l.author,
            "price": euros(l.price_cents), "quantity": l.quantity, "productForm": l.product_form,
            "dbs": 40, "dbp": 40,
        });
        if let Some(full) = l.full_cents {
            v["voucher"] = json!(199);
            v["voucherCode"] = json!(l.voucher_code.clone().unwrap_or_default());
            v["priceFull"] = euros(full);
            v["discount"] = euros(full - l.price_cents);
        }
        if l.giftwrap {
            v["giftwrap"] = json!(1);
        }
        v
    }

    fn address_into(&self, out: &mut Map<String, Value>, prefix: &str, a: &Addr) {
        let line_key = if self.misspelled {
            "AdressLine1"
        } else {
            "AddressLine1"
        };
        out.insert(format!("{prefix}FirstName"), json!(a.first));
        out.insert(format!("{prefix}LastName"), json!(a.last));
        out.insert(format!("{prefix}{line_key}"), json!(a.line1));
        out.insert(format!("{prefix}Number"), json!(a.number));
        out.insert(format!("{prefix}Postcode"), json!(a.postcode));
        out.insert(format!("{prefix}City"), json!(a.city));
        out.insert(format!("{prefix}Country"), json!(a.country));
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id, "customer": self.customer,
            "price": euros(self.lines_cents() - self.reduction_cents),
            "shipping": euros(self.shipping_cents),
            "totalPrice": euros(self.total_cents()),
            "status": self.status,
            "creationDate": self.created.format("%Y-%m-%d %H:%M:%S").to_string(),
            "deliveryType": self.delivery_type, "paymentMethod": self.payment_method,
            "lines": wrapped("line", self.lines.iter().map(Self::line_json).collect()),
        });
        if self.full_cents() != self.lines_cents() || self.reduction_cents > 0 {
            v["priceFull"] = euros(self.full_cents());
        }
        if self.reduction_cents > 0 {
            v["reduction"] = euros(self.reduction_cents);
        }
        if let Some(code) = &self.voucher_code {
            v["voucherCode"] = json!(code);
        }
        if !self.packages.is_empty() {
            let packages = self
                .packages
                .iter()
                .map(|p| {
                    let lines: Vec<Value> = self
                        .lines
                        .iter()
                        .filter(|l| p.line_ids.contains(&l.id))
                        .map(|l| {
                            let mut v = Self::line_json(l);
                            let cancels: Vec<Value> = p
                                .cancels
                                .iter()
                                .filter(|(line, _, _)| *line == l.id)
                                .map(|(_, q, at)| json!({"quantity": q, "date": at}))
                                .collect();
                            if !cancels.is_empty() {
                                v["cancels"] = wrapped("cancel", cancels);
                            }
                            v
                        })
                        .collect();
                    json!({"id": p.id, "processType": 2, "deliveryType": self.delivery_type, "status": 4,
                           "carrier": p.carrier, "tracking": p.tracking,
                           "trackingLink": format!("http://www.sendcloud.nl/tracking/{}", p.tracking),
                           // Inside packages the lines come as a bare array.
                           "lines": lines})
                })
                .collect();
            v["packages"] = wrapped("package", packages);
        }
        if let Value::Object(map) = &mut v {
            self.address_into(map, "delivery", &self.delivery);
            self.address_into(map, "invoice", &self.invoice);
        }
        v
    }
}
