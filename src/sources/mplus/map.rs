//! MplusKASSA order → canonical order. Prices are integer cents, quantities
//! integers shifted by `decimalPlaces`, times `SoapMplusDateTime` structs.
//!
//! Rules this module states (not all are confirmed by the vendor's docs):
//! - `prices_include_tax` is true for `VAT-METHOD-INCLUSIVE` (and for an
//!   absent `vatMethod`, the till default); `price` is the unit price in that
//!   basis. Under `EXCLUSIVE`, `priceExcl` is used when present.
//! - A line's quantity is `quantity - cancelledQuantity`; a line with nothing
//!   left is left out. Delivered quantities are not business content (our own
//!   deliverOrderV2 changes them) and are ignored.
//! - Nested `preparationList` lines and `LINE-TYPE-PREPARATION|COMPONENT`
//!   lines with price 0 belong to their parent article: their text is added
//!   to the parent's description. Priced ones become lines of their own, so no
//!   money disappears.
//! - A line total that differs from quantity × price by a cent or more is a
//!   line discount, sent as a discount entry.
//! - The canonical `reference` is the till's order number `{year}-{number}`,
//!   never the order's `reference` field: that is where we write the ERP
//!   number, and the echo must not look like a change.
//! - Currency is EUR: MplusKASSA orders carry no currency.
//! - `cancelState` COMPLETE means cancelled (never pushed if not yet pushed).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;

use super::{soap, wire};
use crate::model::convert::{from_cents, from_scaled};
use crate::model::{Address, Customer, Discount, Order, OrderLine, Payment, Totals, order_key};
use crate::model::{CountryMap, arith};
use crate::store::{Disposition, IncomingOrder, MappedOrder};

pub struct MapContext<'a> {
    pub source: &'a str,
    /// The source's `country_map`: a till's country is free text.
    pub countries: &'a CountryMap,
}

/// One `<order>` element as received. `Ok((marker, order))`, or `Err` when
/// it cannot even be keyed (no orderId or syncMarker): its marker, when
/// that much can be read, and why.
pub fn incoming(
    ctx: &MapContext<'_>,
    raw: &str,
) -> Result<(i64, IncomingOrder), (Option<i64>, String)> {
    let parsed = soap::check_depth(raw)
        .and_then(|()| quick_xml::de::from_str::<wire::Order>(raw).map_err(|e| e.to_string()));
    match parsed {
        Ok(o) if !o.order_id.trim().is_empty() => {
            let id = o.order_id.trim().to_string();
            let mapped = if crate::sources::list::has_escaped_bytes(raw) {
                Err(format!(
                    "cannot map MplusKASSA order {}: the till sent bytes that are not UTF-8 (shown as U+F780-U+F7FF); fix the text at the till",
                    id.escape_default()
                ))
            } else {
                map_order(ctx, &id, &o)
                    .map_err(|e| format!("cannot map MplusKASSA order {id}: {e}"))
            };
            Ok((
                o.sync_marker,
                IncomingOrder {
                    external_id: id,
                    raw: raw.to_string(),
                    version: Some(o.sync_marker.to_string()),
                    mapped,
                },
            ))
        }
        Ok(o) => Err((Some(o.sync_marker), "an order without orderId".into())),
        Err(e) => {
            // Keyable but malformed: recorded and parked, the others flow.
            // Its id is read from the raw text: the deserializer refuses the
            // whole element (an undefined entity anywhere, an unclosed tag).
            let who = soap::identity(raw);
            let reason = match &who.undefined_entity {
                Some(entity) => format!("{entity} ({e})"),
                None => e,
            };
            let (Some(id), Some(marker)) = (who.order_id, who.sync_marker) else {
                return Err((
                    who.sync_marker,
                    format!("an order that cannot be read at all: {reason}"),
                ));
            };
            Ok((
                marker,
                IncomingOrder {
                    external_id: id.clone(),
                    raw: raw.to_string(),
                    version: Some(marker.to_string()),
                    mapped: Err(format!("cannot read MplusKASSA order {id}: {reason}")),
                },
            ))
        }
    }
}

fn text(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub fn map_order(ctx: &MapContext<'_>, id: &str, o: &wire::Order) -> Result<MappedOrder, String> {
    let prices_include_tax = match o.vat_method.as_deref() {
        None | Some("VAT-METHOD-INCLUSIVE") => true,
        Some("VAT-METHOD-EXCLUSIVE") | Some("VAT-METHOD-SHIFTED") | Some("VAT-METHOD-NONE") => {
            false
        }
        Some(other) => return Err(format!("vatMethod {other:?} is not known")),
    };
    let ordered_at = match (&o.entry_timestamp, &o.financial_date) {
        (Some(t), _) => date_time(t)?,
        (None, Some(d)) => date(d)?,
        (None, None) => return Err("neither entryTimestamp nor financialDate is set".into()),
    };
    let cancelled = o.cancel_state.as_deref() == Some("ORDER-CANCEL-STATE-COMPLETE");
    let mut lines = Vec::new();
    let mut discounts = Vec::new();
    // The last top-level article: where an unpriced component folds into.
    let mut article = None;
    // What the till's own line totals add up to: the figure an operator
    // sees beside the header total in the back office.
    let mut till_lines = Decimal::ZERO;
    for line in &o.line_list.line {
        article = add_line(
            line,
            article,
            prices_include_tax,
            &mut lines,
            &mut discounts,
            &mut till_lines,
        )?;
    }
    if lines.is_empty() && !cancelled {
        return Err("the order has no lines left to deliver".into());
    }
    let gross = from_cents(o.total_incl_amount);
    let net = from_cents(o.total_excl_amount);
    let totals = Totals::stated(
        net,
        arith::sub(gross, net, "totalInclAmount - totalExclAmount")?,
        gross,
    );
    // The till's own numbers must add up (SPEC §3). The reason quotes the
    // till's figures (header total, the sum of its lines' own totals, the
    // difference), not a recomputation an operator cannot find.
    let (field, expected) = if prices_include_tax {
        ("totalInclAmount", gross)
    } else {
        ("totalExclAmount", net)
    };
    let tolerance = Decimal::new(lines.len() as i64, 2);
    let difference = arith::sub(expected, till_lines, field)?;
    if !cancelled && difference.abs() > tolerance {
        return Err(format!(
            "the order's {field} is {expected}, but its lines' {field} add up to {till_lines} (difference {difference})"
        ));
    }
    let invoice = o
        .invoice_address
        .as_ref()
        .map(|a| address(ctx.countries, a, "invoiceAddress"))
        .transpose()?;
    let delivery = o
        .delivery_address
        .as_ref()
        .map(|a| address(ctx.countries, a, "deliveryAddress"))
        .transpose()?;
    let customer = Customer {
        name: text(&o.relation_name),
        company: o
            .invoice_address
            .as_ref()
            .and_then(|a| text(&a.company_name)),
        source_customer_id: o.relation_number.map(|n| n.to_string()),
        ..Customer::default()
    };
    let reference = match (&o.order_number, text(&o.ext_order_id)) {
        (Some(n), _) => Some(format!("{}-{}", n.year, n.number)),
        (None, ext) => ext,
    };
    let payment = match (text(&o.payment_method), o.fully_paid) {
        (None, None) => None,
        (method, paid) => Some(Payment {
            method,
            status: paid.map(|p| if p { "paid" } else { "open" }.to_string()),
        }),
    };
    let order = Order {
        order_key: order_key(ctx.source, id),
        source: ctx.source.to_string(),
        source_kind: "mplus".into(),
        external_id: id.to_string(),
        reference,
        ordered_at,
        currency: "EUR".into(),
        prices_include_tax,
        customer,
        billing_address: invoice,
        shipping_address: delivery,
        lines,
        shipping: None,
        discounts,
        totals,
        payment,
    };
    let disposition = if cancelled {
        Disposition::Cancel("cancelState ORDER-CANCEL-STATE-COMPLETE".into())
    } else {
        Disposition::Push
    };
    Ok(MappedOrder::new(order, disposition))
}

/// Adds one line (and its preparations); returns the index of the canonical
/// line that later unpriced components belong to.
fn add_line(
    line: &wire::Line,
    parent: Option<usize>,
    prices_include_tax: bool,
    lines: &mut Vec<OrderLine>,
    discounts: &mut Vec<Discount>,
    till_lines: &mut Decimal,
) -> Result<Option<usize>, String> {
    let what = format!("line {}", line.line_id);
    let d = &line.data;
    let ordered = from_scaled(d.quantity, d.decimal_places).map_err(|e| format!("{what}: {e}"))?;
    let cancelled = from_scaled(d.cancelled_quantity, d.cancelled_decimal_places)
        .map_err(|e| format!("{what}: cancelled {e}"))?;
    let quantity = arith::sub(ordered, cancelled, &what)?;
    let price_cents = if prices_include_tax {
        d.price
    } else {
        d.price_excl.unwrap_or(d.price)
    };
    let unit_price = from_cents(price_cents);
    let sub = matches!(
        line.line_type.as_deref(),
        Some("LINE-TYPE-PREPARATION" | "LINE-TYPE-COMPONENT")
    );
    if sub && price_cents == 0 {
        if let (Some(p), Some(t)) = (parent.and_then(|i| lines.get_mut(i)), text(&line.text)) {
            let base = p.description.take().unwrap_or_default();
            p.description = Some(format!("{base} + {t}").trim().to_string());
        }
        return Ok(parent);
    }
    if quantity < Decimal::ZERO {
        return Err(format!(
            "{what}: cancelled more than ordered ({cancelled} of {ordered})"
        ));
    }
    let mut this = parent;
    if !quantity.is_zero() {
        if line.line_id.trim().is_empty() {
            // The line is the key of the shipped write-back: it must have one.
            return Err(format!(
                "a line of article {} has no lineId",
                line.article_number
            ));
        }
        let line_total = arith::line_total(quantity, unit_price, &what)?;
        let own_total = if prices_include_tax {
            d.total_incl_amount
        } else {
            d.total_excl_amount
        };
        // Only when nothing was cancelled does the till's own line total
        // describe the same quantity we send.
        match (own_total, cancelled.is_zero()) {
            (Some(own), true) => {
                let own = from_cents(own);
                *till_lines = arith::add(*till_lines, own, &what)?;
                let discount = arith::sub(line_total, own, &what)?;
                if discount.abs() >= Decimal::new(1, 2) {
                    discounts.push(Discount {
                        description: Some(format!("{what} discount")),
                        amount: discount,
                    });
                }
            }
            _ => *till_lines = arith::add(*till_lines, line_total, &what)?,
        }
        lines.push(OrderLine {
            source_line_id: line.line_id.clone(),
            sku: Some(line.article_number.to_string()),
            ean: None,
            description: text(&line.text),
            quantity,
            unit_price,
            tax_rate: d.vat_percentage.map(Decimal::from),
            line_total,
        });
        if !sub {
            this = Some(lines.len() - 1);
        }
    }
    if let Some(preparations) = &line.preparation_list {
        for p in &preparation_lines(preparations) {
            add_line(p, this, prices_include_tax, lines, discounts, till_lines)?;
        }
    }
    Ok(this)
}

/// Nested lines are treated as preparations of their parent whatever their
/// own `lineType` says.
fn preparation_lines(list: &wire::LineList) -> Vec<wire::Line> {
    list.line
        .iter()
        .map(|l| wire::Line {
            line_type: Some(
                l.line_type
                    .clone()
                    .filter(|t| t != "LINE-TYPE-NONE")
                    .unwrap_or_else(|| "LINE-TYPE-PREPARATION".into()),
            ),
            ..l.clone()
        })
        .collect()
}

fn address(countries: &CountryMap, a: &wire::Address, what: &str) -> Result<Address, String> {
    let country = countries.iso(&format!("{what}.country"), text(&a.country).as_deref())?;
    Ok(Address {
        name: text(&a.name).or_else(|| text(&a.contact)),
        street: text(&a.address),
        postcode: text(&a.zipcode),
        city: text(&a.city),
        country,
    })
}

/// `SoapMplusDateTime` → UTC. `timezone` is the offset east of UTC when
/// given, in minutes or in seconds ([`offset_seconds`]); without it the
/// till's wall clock is read as Europe/Amsterdam.
pub fn date_time(t: &wire::SoapDateTime) -> Result<DateTime<Utc>, String> {
    let naive = NaiveDate::from_ymd_opt(t.year, t.mon, t.day)
        .and_then(|d| d.and_hms_opt(t.hour, t.min, t.sec))
        .ok_or_else(|| {
            format!(
                "entryTimestamp {}-{}-{} {}:{}:{} is not a valid time",
                t.year, t.mon, t.day, t.hour, t.min, t.sec
            )
        })?;
    match t.timezone {
        Some(zone) => {
            let offset = offset_seconds(zone)
                .and_then(chrono::FixedOffset::east_opt)
                .ok_or_else(|| format!("entryTimestamp timezone {zone} is out of range"))?;
            offset
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| "entryTimestamp cannot be placed in time".to_string())
        }
        None => crate::model::convert::naive_local_to_utc(
            &naive.format("%Y-%m-%dT%H:%M:%S").to_string(),
            chrono_tz::Europe::Amsterdam,
        ),
    }
}

/// `timezone` in seconds east of UTC. Its unit is community inference: the
/// community client reads minutes, C's `tm_gmtoff` counts seconds. No
/// offset on Earth is more than 14 hours (840 minutes) from UTC, and every
/// one in seconds other than 0 is at least 15 minutes (900): a value up to
/// 840 either way is minutes, a larger one whole minutes in seconds.
fn offset_seconds(zone: i32) -> Option<i32> {
    if zone.unsigned_abs() <= 840 {
        zone.checked_mul(60)
    } else if zone % 60 == 0 {
        Some(zone)
    } else {
        None
    }
}

fn date(d: &wire::SoapDate) -> Result<DateTime<Utc>, String> {
    date_time(&wire::SoapDateTime {
        day: d.day,
        mon: d.mon,
        year: d.year,
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
