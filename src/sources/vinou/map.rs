//! Vinou order (as `getAll`/`get` return it with `include` client, billing,
//! delivery, items) → canonical order. Money comes as decimal strings;
//! `invoice_type` says whether prices include tax. Whether a position's
//! amounts are the line's total or one unit's price is open (the docs'
//! only sample has quantity 1): they are read as line totals, and as unit
//! prices only when the order's totals add up that way and not the other
//! ([`unit_amounts_if_they_add_up`]).

use rust_decimal::Decimal;
use serde_json::Value;

use crate::model::convert::{json_decimal as decimal, json_text as text, naive_local_to_utc};
use crate::model::{
    Address, Customer, Discount, Order, OrderLine, Payment, Shipping, Totals, order_key,
};
use crate::model::{CountryMap, arith};
use crate::store::{Disposition, IncomingOrder, MappedOrder};

/// Vinou is a German service; its naive timestamps are read as Berlin time
/// (an assumption: the docs name no zone).
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::Berlin;

/// Statuses that come before payment: such an order waits and is re-read.
const WAITING: &[&str] = &["new", "need_payment"];

pub struct MapContext<'a> {
    pub source: &'a str,
    pub import_statuses: &'a [String],
    /// The ERP already has it: moving on at Vinou (`in_delivery`, `closed`)
    /// is the normal life of the order, not a change to report.
    pub already_pushed: bool,
    /// We were watching when the order was placed (the ledger knows it, a
    /// cursor exists, or a backfill asks for history): an order that moved
    /// past the import statuses between two polls is still pushed. Without
    /// it (the very first poll), such an order is history the merchant
    /// handled without the ERP.
    pub watching: bool,
    /// The source's `country_map`.
    pub countries: &'a CountryMap,
}

/// The order's id as text, if it has one.
pub fn order_id(v: &Value) -> Option<String> {
    text(&v["id"])
}

/// Maps one order. `Err` only when it cannot even be keyed (no id); any
/// other problem makes an `IncomingOrder` whose mapping failed, so the order
/// is recorded and parked with the reason (the others keep flowing).
pub fn incoming(ctx: &MapContext<'_>, v: &Value) -> Result<IncomingOrder, String> {
    let id = order_id(v).ok_or("Vinou order without an id")?;
    Ok(IncomingOrder {
        external_id: id.clone(),
        raw: v.to_string(),
        version: Some(version(v)),
        mapped: map_order(ctx, &id, v).map_err(|e| format!("cannot map Vinou order {id}: {e}")),
    })
}

/// What the re-check compares: `chstamp` and `status`.
pub fn version(v: &Value) -> String {
    format!(
        "{}|{}",
        text(&v["chstamp"]).unwrap_or_default(),
        text(&v["status"]).unwrap_or_default()
    )
}

/// A client or address record (Vinou uses the same field names for both).
fn address(countries: &CountryMap, v: &Value, what: &str) -> Result<Option<Address>, String> {
    if !v.is_object() {
        return Ok(None);
    }
    let country = countries.iso(
        &format!("{what}.countrycode"),
        text(&v["countrycode"]).as_deref(),
    )?;
    let street = match (text(&v["address"]), text(&v["address_supplement"])) {
        (Some(a), Some(s)) => Some(format!("{a}, {s}")),
        (a, _) => a,
    };
    Ok(Some(Address {
        name: person_name(v).or_else(|| text(&v["company"])),
        street,
        postcode: text(&v["zip"]),
        city: text(&v["city"]),
        country,
    }))
}

fn person_name(v: &Value) -> Option<String> {
    let parts: Vec<String> = [text(&v["first_name"]), text(&v["last_name"])]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The record `billing_type`/`delivery_type` point at: the included one, or
/// the ordering client when the type is `client` and nothing else came.
fn party<'a>(v: &'a Value, kind: &str) -> &'a Value {
    let own = &v[kind];
    if own.is_object() {
        return own;
    }
    match v[format!("{kind}_type")].as_str() {
        Some("client") => &v["client"],
        _ => &Value::Null,
    }
}

/// "Weißburgunder 2019, 0.75 l": vintage and bottle size belong to the wine.
fn description(p: &Value) -> Option<String> {
    let item = &p["item"];
    let name = text(&p["name"]).or_else(|| text(&item["name"]))?;
    let mut extra = Vec::new();
    if let Some(v) = text(&item["vintage"]).filter(|v| v != "0") {
        extra.push(v);
    }
    if let Some(size) = item["bottlesize"]
        .as_str()
        .and_then(|s| s.parse::<Decimal>().ok())
        .filter(|d| !d.is_zero())
    {
        extra.push(format!("{} l", size.normalize()));
    }
    Some(if extra.is_empty() {
        name
    } else {
        format!("{name} {}", extra.join(", "))
    })
}

fn map_order(ctx: &MapContext<'_>, id: &str, v: &Value) -> Result<MappedOrder, String> {
    let crstamp = text(&v["crstamp"]).ok_or("crstamp is missing")?;
    let ordered_at = naive_local_to_utc(&crstamp, TIMEZONE)?;
    let prices_include_tax = match v["invoice_type"].as_str() {
        Some("gross") => true,
        Some("net") => false,
        other => {
            return Err(format!(
                "invoice_type {other:?} is neither \"net\" nor \"gross\""
            ));
        }
    };
    // The price basis the totals check compares against.
    let basis = if prices_include_tax { "gross" } else { "net" };
    let Some(positions) = v["positions"].as_array() else {
        return Err("positions are missing (was `items` included?)".into());
    };
    let mut lines = Vec::new();
    let mut discounts = Vec::new();
    let mut shipping: Option<Shipping> = None;
    let mut seen = std::collections::HashSet::new();
    // `package` and `rebates` may come beside the positions or among them;
    // a position id is counted once either way. Beside them they need no id
    // (no document shows one: `orders/add`'s rebate item has none) and
    // their kind is where they came from unless they say.
    let extra = v["package"]
        .as_object()
        .map(|_| (&v["package"], "package"))
        .into_iter()
        .chain(
            v["rebates"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (r, "rebate")),
        );
    let all = positions
        .iter()
        .map(|p| (p, None))
        .chain(extra.map(|(p, kind)| (p, Some(kind))));
    for (n, (p, beside)) in all.enumerate() {
        let pid = text(&p["id"]);
        if let Some(id) = &pid
            && !seen.insert(id.clone())
        {
            continue;
        }
        let kind = p["item_type"]
            .as_str()
            .filter(|t| !t.is_empty())
            .or(beside)
            .unwrap_or_default();
        let what = match (&pid, beside) {
            (Some(id), _) => format!("position {id}"),
            (None, Some(_)) if matches!(kind, "package" | "rebate") => {
                format!("{kind} #{n} (no id)")
            }
            _ => return Err("a position has no id".into()),
        };
        let pid = pid.unwrap_or_default();
        let amount = decimal(&p[basis], &format!("{what}: {basis}"))?;
        match kind {
            "wine" | "product" | "bundle" => {
                let qty = p["quantity"]
                    .as_i64()
                    .or_else(|| p["quantity"].as_str().and_then(|q| q.parse().ok()))
                    .filter(|q| *q > 0)
                    .ok_or_else(|| {
                        format!(
                            "{what}: quantity {} is not a positive whole number",
                            p["quantity"]
                        )
                    })?;
                let quantity = Decimal::from(qty);
                let item = &p["item"];
                let tax_rate = match &p["taxrate"] {
                    Value::Null => None,
                    t => Some(decimal(t, &format!("{what}: taxrate"))?),
                };
                lines.push(OrderLine {
                    source_line_id: pid,
                    sku: text(&item["articlenumber"]),
                    ean: text(&item["gtin"]),
                    description: description(p),
                    quantity,
                    unit_price: (amount / quantity).round_dp(4).normalize(),
                    tax_rate,
                    line_total: amount,
                });
            }
            "package" => {
                let s = shipping.get_or_insert(Shipping {
                    method: text(&p["name"]),
                    amount: Decimal::ZERO,
                });
                s.amount = arith::add(s.amount, amount, &what)?;
            }
            "rebate" => discounts.push(Discount {
                description: text(&p["name"]),
                // Vinou writes rebates as negative amounts.
                amount: -amount,
            }),
            other => return Err(format!("{what}: unknown item_type {other:?}")),
        }
    }
    // A rebate stated only in the header (`rebate_net` / `rebate_gross`,
    // in the `get` sample beside `rebates: []`): one discount of that size.
    if discounts.is_empty()
        && let Some(header) = v.get(format!("rebate_{basis}")).filter(|r| !r.is_null())
    {
        let amount = decimal(header, &format!("rebate_{basis}"))?.abs();
        if !amount.is_zero() {
            discounts.push(Discount {
                description: Some("rebate".into()),
                amount,
            });
        }
    }
    let (net, tax, gross) = (
        decimal(&v["net"], "net")?,
        decimal(&v["tax"], "tax")?,
        decimal(&v["gross"], "gross")?,
    );
    check_taxrates(v, net, tax, gross)?;
    let totals = Totals::stated(net, tax, gross);
    let client = &v["client"];
    let billing = party(v, "billing");
    let customer = Customer {
        name: person_name(client).or_else(|| person_name(billing)),
        email: text(&client["mail"]).or_else(|| text(&billing["mail"])),
        phone: text(&client["phone"]).or_else(|| text(&billing["phone"])),
        company: text(&client["company"]).or_else(|| text(&billing["company"])),
        vat_number: text(&client["taxid"]),
        source_customer_id: text(&v["client_id"]).or_else(|| text(&client["id"])),
    };
    let shipping_address = match v["delivery_type"].as_str() {
        // No separate delivery: the goods go to the billing address.
        Some("none") | None => None,
        _ => address(ctx.countries, party(v, "delivery"), "delivery")?,
    };
    let paid = v["paid"].as_bool().unwrap_or(false);
    let order = Order {
        order_key: order_key(ctx.source, id),
        source: ctx.source.to_string(),
        source_kind: "vinou".into(),
        external_id: id.to_string(),
        reference: text(&v["number"]),
        ordered_at,
        // The API has no currency field; Vinou shops sell in euro.
        currency: "EUR".into(),
        prices_include_tax,
        customer,
        billing_address: address(ctx.countries, billing, "billing")?,
        shipping_address,
        lines,
        shipping,
        discounts,
        totals,
        payment: Some(Payment {
            method: text(&v["payment_type"]),
            status: Some(if paid { "paid" } else { "open" }.into()),
        }),
    };
    let order = unit_amounts_if_they_add_up(order, basis)?;
    Ok(MappedOrder::new(order, disposition(ctx, v)))
}

/// The order as read (position amounts as line totals) if its totals add
/// up; else, if some line has more than one unit and the amounts read as
/// one unit's price add up, the order read that way; else the line-total
/// reading's error.
fn unit_amounts_if_they_add_up(order: Order, basis: &str) -> Result<Order, String> {
    let as_totals = match order.check_totals(basis) {
        Ok(()) => return Ok(order),
        Err(e) => e,
    };
    if !order.lines.iter().any(|l| l.quantity > Decimal::ONE) {
        return Err(as_totals);
    }
    let mut per_unit = order;
    for line in &mut per_unit.lines {
        let amount = line.line_total;
        let what = format!("position {}", line.source_line_id);
        line.line_total = arith::line_total(line.quantity, amount, &what)?;
        line.unit_price = amount;
    }
    match per_unit.check_totals(basis) {
        Ok(()) => Ok(per_unit),
        Err(_) => Err(as_totals),
    }
}

/// `taxrates` must add up to the order's totals: a sanity check on what
/// we are about to book (the canonical order has no per-rate breakdown).
fn check_taxrates(
    v: &Value,
    net_total: Decimal,
    tax_total: Decimal,
    gross_total: Decimal,
) -> Result<(), String> {
    let Some(rates) = v["taxrates"].as_object() else {
        return Ok(());
    };
    let (mut net, mut tax, mut gross) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for (rate, r) in rates {
        net = arith::add(
            net,
            decimal(&r["net"], &format!("taxrates.{rate}.net"))?,
            "taxrates net",
        )?;
        tax = arith::add(
            tax,
            decimal(&r["tax"], &format!("taxrates.{rate}.tax"))?,
            "taxrates tax",
        )?;
        gross = arith::add(
            gross,
            decimal(&r["gross"], &format!("taxrates.{rate}.gross"))?,
            "taxrates gross",
        )?;
    }
    let cent = Decimal::new(1, 2) * Decimal::from(rates.len().max(1) as u64);
    for (label, sum, total) in [
        ("net", net, net_total),
        ("tax", tax, tax_total),
        ("gross", gross, gross_total),
    ] {
        let difference = arith::sub(total, sum, &format!("taxrates {label}"))?;
        if difference.abs() > cent {
            return Err(format!(
                "taxrates add up to {label} {sum}, but the order's {label} is {total} (difference {difference})"
            ));
        }
    }
    Ok(())
}

fn disposition(ctx: &MapContext<'_>, v: &Value) -> Disposition {
    let status = v["status"].as_str().unwrap_or_default();
    if status == "cancelled" {
        return Disposition::Cancel("cancelled at Vinou (status cancelled)".into());
    }
    if ctx.already_pushed || ctx.import_statuses.iter().any(|s| s == status) {
        return Disposition::Push;
    }
    if WAITING.contains(&status) || status.is_empty() {
        return Disposition::Hold(format!(
            "status is {status:?}; waiting for one of {}",
            ctx.import_statuses.join(", ")
        ));
    }
    // Past the import point (in_delivery, closed, or a later status this
    // version does not know): it went through an import status unseen.
    if ctx.watching {
        Disposition::Push
    } else {
        Disposition::Cancel(format!(
            "first seen in status {status:?}, before ordersync watched this shop: handled without the ERP; not pushed (backfill --since pushes history)"
        ))
    }
}

#[cfg(test)]
mod tests;
