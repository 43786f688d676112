//! One order into Tryton as a `sale.sale`, idempotently.
//!
//! Order of calls, and why: the sale is searched by `reference = order key`
//! before anything is created. Found in draft or quotation: resume it (a
//! crash hit between create and confirm). Found further on: reuse it. Only
//! when none exists are party, addresses, products and the sale resolved and
//! created. Unmappable data (unknown product, country, currency or tax
//! rate) is a permanent failure naming the value: the order is parked, the
//! others go on. Lines carry sale taxes (see [`super::taxes`]); before a
//! draft is quoted, Tryton's own total must reproduce the source's gross
//! within one cent per line, or the draft is removed and the order parked
//! with both figures.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

use super::parties::{self, Parties};
use super::rpc::{date, decimal, parse_decimal};
use super::taxes::{self, TaxTable};
use super::{TrytonErp, sale_label};
use crate::config::{ProductMatch, UnknownProduct};
use crate::http::Failure;
use crate::model::{Order, OrderLine, arith};
use crate::store::{ErpAccepted, LineNumber};

pub async fn push(
    erp: &TrytonErp,
    order_key: &str,
    canonical_json: &str,
) -> Result<ErpAccepted, Failure> {
    push_order(erp, &parse(order_key, canonical_json)?).await
}

/// The canonical order stored in the ledger.
pub(super) fn parse(order_key: &str, canonical_json: &str) -> Result<Order, Failure> {
    serde_json::from_str(canonical_json).map_err(|e| {
        Failure::permanent(format!(
            "order {order_key}: stored order is not canonical JSON: {e}"
        ))
    })
}

/// One order on its own: `erp.batch_size = 1`, and each order of a batch
/// whose list call Tryton refused (so the bad one fails alone).
pub(super) async fn push_order(erp: &TrytonErp, order: &Order) -> Result<ErpAccepted, Failure> {
    let order_key = order.order_key.as_str();
    let found = erp
        .search_read(
            "sale.sale",
            json!([["reference", "=", order_key], ["state", "!=", "cancelled"]]),
            &["state"],
            None,
        )
        .await?;
    if found.len() > 1 {
        // Only possible if someone else created one by hand; use the first
        // and say so, rather than creating a third.
        tracing::warn!(
            order_key,
            sales = found.len(),
            "Tryton holds more than one sale with this reference; using the first"
        );
    }
    let (sale, state, created) = match found.first().and_then(|r| Some((r["id"].as_i64()?, r))) {
        Some((id, row)) => (
            id,
            row["state"].as_str().unwrap_or_default().to_string(),
            false,
        ),
        None => {
            let values = {
                let _master_data = erp.master_data.lock().await;
                sale_values(
                    erp,
                    order,
                    &mut Products::default(),
                    &mut Parties::default(),
                )
                .await?
            };
            (
                erp.create("sale.sale", values).await?,
                "draft".to_string(),
                true,
            )
        }
    };
    if state == "draft" {
        check_totals(erp, order, sale).await?;
    }
    advance(erp, sale, &state).await?;
    let lines = product_lines(erp, &[sale]).await?;
    let mine = lines.get(&sale).map_or(&[][..], Vec::as_slice);
    let mut accepted = accepted(order, sale, mine)?;
    accepted.created = created;
    Ok(accepted)
}

/// Moves the sale on from wherever a previous attempt left it.
async fn advance(erp: &TrytonErp, sale: i64, state: &str) -> Result<(), Failure> {
    if state == "draft" {
        erp.button("sale.sale", "quote", &[sale]).await?;
    }
    if erp.confirm && matches!(state, "draft" | "quotation") {
        erp.button("sale.sale", "confirm", &[sale]).await?;
    }
    Ok(())
}

/// The product lines of `sales` in one read, per sale, in the order they
/// were created, each with `sale.number` read along.
pub(super) async fn product_lines(
    erp: &TrytonErp,
    sales: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<Value>>, Failure> {
    let rows = erp
        .search_read(
            "sale.line",
            json!([["sale", "in", sales], ["product", "!=", null]]),
            &["sale", "sale.number"],
            None,
        )
        .await?;
    let mut lines: std::collections::HashMap<i64, Vec<Value>> = Default::default();
    for row in rows {
        if let Some(sale) = row["sale"].as_i64() {
            lines.entry(sale).or_default().push(row);
        }
    }
    Ok(lines)
}

/// The sale number and one line id per source line, from the sale's
/// product lines ([`product_lines`]) in the order they were created.
pub(super) fn accepted(order: &Order, sale: i64, lines: &[Value]) -> Result<ErpAccepted, Failure> {
    // Product lines were created first and in the order's order; shipping
    // and discount lines carry no product.
    let number = sale_label(
        &json!({"id": sale, "number": lines.first().map(|l| l["sale."]["number"].clone())}),
    );
    if lines.len() != order.lines.len() {
        return Err(Failure::permanent(format!(
            "order {}: Tryton sale {number} has {} product lines, the order has {}; check the sale in Tryton",
            order.order_key,
            lines.len(),
            order.lines.len()
        )));
    }
    Ok(ErpAccepted {
        created: true,
        erp_order_number: number,
        lines: order
            .lines
            .iter()
            .zip(lines)
            .map(|(l, row)| LineNumber {
                source_line_id: l.source_line_id.clone(),
                erp_line_number: row["id"].to_string(),
            })
            .collect(),
    })
}

/// Products found during one push (or one batch), by rule and code.
#[derive(Default)]
pub(super) struct Products(std::collections::HashMap<(ProductMatch, String), Product>);

impl Products {
    /// Looks every SKU of `orders` up in one search (when SKUs are matched
    /// first), so a batch pays one call for its products instead of one per
    /// line. What is not found here goes the per-line way.
    pub(super) async fn prefetch(erp: &TrytonErp, orders: &[&Order]) -> Result<Products, Failure> {
        let mut found = Products::default();
        if erp.product_match.first() != Some(&ProductMatch::Sku) {
            return Ok(found);
        }
        let mut skus: Vec<&String> = orders
            .iter()
            .flat_map(|o| o.lines.iter().filter_map(|l| l.sku.as_ref()))
            .collect();
        skus.sort();
        skus.dedup();
        if skus.is_empty() {
            return Ok(found);
        }
        let rows = erp
            .search_read(
                "product.product",
                json!([["code", "in", skus]]),
                &[
                    "code",
                    "sale_uom",
                    "default_uom",
                    "account_category.customer_taxes_used",
                ],
                None,
            )
            .await?;
        // By id ascending, as the per-line search: the first of a code wins.
        for row in &rows {
            let Some(code) = row["code"].as_str() else {
                continue;
            };
            let key = (ProductMatch::Sku, code.to_string());
            if found.0.contains_key(&key) {
                continue;
            }
            if let Ok(product) = product_and_unit(row, "batch") {
                found.0.insert(key, product);
            }
        }
        Ok(found)
    }
}

/// The values of a new `sale.sale` for `order`: its customer's party and
/// addresses found or created, its products and taxes found. The caller
/// holds `erp.master_data`, so one new customer (or product) of two orders
/// pushed at once is created once.
pub(super) async fn sale_values(
    erp: &TrytonErp,
    order: &Order,
    products: &mut Products,
    parties: &mut Parties,
) -> Result<Value, Failure> {
    let key = &order.order_key;
    let currency = erp
        .id_by_code("currency.currency", &order.currency)
        .await?
        .ok_or_else(|| {
            Failure::permanent(format!(
                "order {key}: currency {} not found in Tryton",
                order.currency
            ))
        })?;
    let mut table = erp.sale_taxes(false).await?;
    let mut lines = Vec::new();
    let mut line_taxes = Vec::new();
    for line in &order.lines {
        let what = format!("order {key}: line {}", line.source_line_id);
        let product = find_product(erp, order, line, products).await?;
        let tax_ids = match line.tax_rate {
            Some(rate) => vec![tax_for_rate(erp, &mut table, rate, &what).await?],
            None => product.default_taxes,
        };
        let unit_price = if order.prices_include_tax {
            let rate = table
                .rate_of(&tax_ids)
                .map_err(|e| Failure::permanent(format!("{what}: {e}")))?;
            taxes::net_unit_price(line.line_total, line.quantity, rate, &what)
                .map_err(Failure::permanent)?
        } else {
            line.unit_price
        };
        lines.push(json!({
            "type": "line", "product": product.id, "unit": product.unit,
            "quantity": float(line.quantity, key)?,
            "unit_price": decimal(unit_price),
            "description": line.description.clone().unwrap_or_default(),
            "taxes": [["add", tax_ids]],
        }));
        line_taxes.push(tax_ids);
    }
    // Shipping and discounts carry the lines' taxes (the highest rate when
    // the lines differ); with prices including tax, their amounts do too.
    let order_taxes = taxes::order_level_taxes(&line_taxes, &table);
    let without_tax = |amount: Decimal, what: &str| -> Result<Decimal, Failure> {
        if !order.prices_include_tax {
            return Ok(amount);
        }
        let rate = table
            .rate_of(&order_taxes)
            .map_err(|e| Failure::permanent(format!("order {key}: {what}: {e}")))?;
        taxes::net_of(amount, rate, &format!("order {key}: {what}")).map_err(Failure::permanent)
    };
    if let Some(shipping) = order.shipping.as_ref().filter(|s| !s.amount.is_zero()) {
        let what = shipping.method.as_deref().unwrap_or("shipping");
        let shipping_taxes = match expected_gross(order).map_err(Failure::permanent)? {
            // With net prices the stated gross tells which rate the shop
            // charged on shipping; with gross prices the rate does not
            // change what the customer paid.
            Some(gross) if !order.prices_include_tax && order.discounts.is_empty() => {
                let mut nets = Vec::with_capacity(order.lines.len());
                for (line, taxes) in order.lines.iter().zip(&line_taxes) {
                    let what = format!("order {key}: line {}", line.source_line_id);
                    let net = arith::line_total(line.quantity, line.unit_price, &what)
                        .map_err(Failure::permanent)?;
                    let rate = table
                        .rate_of(taxes)
                        .map_err(|e| Failure::permanent(format!("{what}: {e}")))?;
                    nets.push((net, rate));
                }
                taxes::shipping_taxes(
                    gross,
                    &nets,
                    shipping.amount,
                    &order_taxes,
                    &table,
                    &erp.tax_map,
                )
                .map_err(|e| Failure::permanent(format!("order {key}: {e}")))?
            }
            _ => order_taxes.clone(),
        };
        lines.push(json!({
            "type": "line", "quantity": 1.0,
            "unit_price": decimal(without_tax(shipping.amount, "shipping")?),
            "description": format!("Shipping costs ({what})"),
            "taxes": [["add", shipping_taxes]],
        }));
    }
    for d in &order.discounts {
        lines.push(json!({
            "type": "line", "quantity": 1.0,
            "unit_price": decimal(-without_tax(d.amount, "discount")?),
            "description": d.description.clone().unwrap_or_else(|| "Discount".into()),
            "taxes": [["add", order_taxes]],
        }));
    }
    let party = parties::find_or_create(erp, order, parties).await?;
    let (billing, shipping) = parties::addresses_of(order);
    let invoice_address = parties::address(erp, order, party, billing, parties).await?;
    let shipment_address = if shipping == billing {
        invoice_address
    } else {
        parties::address(erp, order, party, shipping, parties).await?
    };
    let party = party.0;
    let shown = order.reference.as_deref().unwrap_or(&order.external_id);
    // The day the order was placed where the company is (a sale at 00:30
    // in Amsterdam is that day's, not the day before in UTC).
    let tz = erp.company_tz().await?;
    let sale_date: NaiveDate = order.ordered_at.with_timezone(&tz).date_naive();
    Ok(json!({
            "party": party, "reference": key, "currency": currency,
            "invoice_address": invoice_address, "shipment_address": shipment_address,
            "sale_date": date(sale_date),
            "description": format!("{} order {shown}", order.source_kind),
            "comment": format!(
                "Pushed by ordersync from source {} ({}), order {} (id {}), key {key}",
                order.source, order.source_kind, shown, order.external_id
            ),
            "lines": [["create", lines]],
    }))
}

/// The sale tax for a line's rate; a miss reads the company's taxes again
/// once (someone may have added the tax since) before the order is parked.
async fn tax_for_rate(
    erp: &TrytonErp,
    table: &mut std::sync::Arc<TaxTable>,
    rate: Decimal,
    what: &str,
) -> Result<i64, Failure> {
    if let Ok(tax) = table.for_rate(rate, &erp.tax_map) {
        return Ok(tax.id);
    }
    *table = erp.sale_taxes(true).await?;
    table
        .for_rate(rate, &erp.tax_map)
        .map(|t| t.id)
        .map_err(|e| Failure::permanent(format!("{what}: {e}")))
}

/// What the source says the order comes to with tax: its stated gross, or
/// with prices including tax, its lines + shipping − discounts. `None`:
/// the source states no gross (net prices, no gross total).
fn expected_gross(order: &Order) -> Result<Option<Decimal>, String> {
    if let Some(gross) = order.totals.gross {
        return Ok(Some(gross));
    }
    if !order.prices_include_tax {
        return Ok(None);
    }
    let what = format!("order {}: gross", order.order_key);
    let lines = arith::sum(order.lines.iter().map(|l| l.line_total), &what)?;
    let shipping = order.shipping.as_ref().map_or(Decimal::ZERO, |s| s.amount);
    let discounts = arith::sum(order.discounts.iter().map(|d| d.amount), &what)?;
    Ok(Some(arith::sub(
        arith::add(lines, shipping, &what)?,
        discounts,
        &what,
    )?))
}

/// The `sale.sale` fields [`totals_differ`] reads.
pub(super) const TOTAL_FIELDS: &[&str] = &["total_amount", "tax_amount", "untaxed_amount", "lines"];

/// Before a draft is quoted: Tryton's own total must reproduce the source's
/// gross within one cent per sale line. If it does not, the draft is
/// removed (so no later attempt quotes it) and the order is parked naming
/// both figures.
async fn check_totals(erp: &TrytonErp, order: &Order, sale: i64) -> Result<(), Failure> {
    if expected_gross(order).map_err(Failure::permanent)?.is_none() {
        return Ok(());
    }
    let rows = erp
        .search_read(
            "sale.sale",
            json!([["id", "=", sale]]),
            TOTAL_FIELDS,
            Some(1),
        )
        .await?;
    let Some(why) = totals_differ(order, sale, rows.first())? else {
        return Ok(());
    };
    remove_drafts(erp, &[sale]).await.map_err(|e| {
        e.context(&format!(
            "order {}: removing draft sale {sale} whose total is wrong",
            order.order_key
        ))
    })?;
    Err(Failure::permanent(why))
}

/// Deletes draft sales whose totals are wrong, in one call.
pub(super) async fn remove_drafts(erp: &TrytonErp, sales: &[i64]) -> Result<(), Failure> {
    erp.rpc
        .model("sale.sale", "delete", vec![json!(sales)])
        .await
        .map(drop)
}

/// Whether the draft `sale` (its [`TOTAL_FIELDS`] in `row`) misses the
/// source's gross by more than a cent per line: `Some(why)`, the reason the
/// order is parked once the draft is removed. An unreadable row is worth
/// another try.
pub(super) fn totals_differ(
    order: &Order,
    sale: i64,
    row: Option<&Value>,
) -> Result<Option<String>, Failure> {
    let key = &order.order_key;
    let Some(expected) = expected_gross(order).map_err(Failure::permanent)? else {
        return Ok(None);
    };
    let row = row.ok_or_else(|| {
        Failure::retry(format!(
            "order {key}: Tryton sale {sale} vanished while it was checked"
        ))
    })?;
    let amount = |field: &str| {
        parse_decimal(&row[field]).ok_or_else(|| {
            Failure::retry(format!(
                "order {key}: Tryton sale {sale} has no readable {field} ({})",
                row[field]
            ))
        })
    };
    let (total, tax) = (amount("total_amount")?, amount("tax_amount")?);
    let lines = row["lines"].as_array().map_or(0, Vec::len).max(1);
    let tolerance = Decimal::new(i64::try_from(lines).unwrap_or(i64::MAX), 2);
    let difference = arith::sub(total, expected, &format!("order {key}: total"))
        .map_err(Failure::permanent)?
        .abs();
    if difference <= tolerance {
        return Ok(None);
    }
    Ok(Some(format!(
        "order {key}: Tryton's total {total} (tax {tax}) differs from the source's gross {expected} by {difference}, more than one cent per line ({lines} lines); the draft sale was removed. Check the lines' tax rates and erp.tax_map"
    )))
}

/// Tryton quantities are Float fields; decimals from sources fit easily.
fn float(d: Decimal, key: &str) -> Result<f64, Failure> {
    d.to_f64()
        .ok_or_else(|| Failure::permanent(format!("order {key}: quantity {d} is not a number")))
}

/// A line's Tryton product.
#[derive(Clone)]
pub(super) struct Product {
    id: i64,
    /// Its sale unit.
    unit: i64,
    /// Its account category's customer taxes: what a line without a rate gets.
    default_taxes: Vec<i64>,
}

/// The product for a line by the configured codes, with its sale unit.
async fn find_product(
    erp: &TrytonErp,
    order: &Order,
    line: &OrderLine,
    products: &mut Products,
) -> Result<Product, Failure> {
    let mut tried = Vec::new();
    for rule in &erp.product_match {
        let (code, domain) = match rule {
            ProductMatch::Sku => match &line.sku {
                Some(s) => (s, json!([["code", "=", s]])),
                None => continue,
            },
            ProductMatch::Ean => match &line.ean {
                Some(e) => (e, json!([["identifiers.code", "=", e]])),
                None => continue,
            },
        };
        tried.push(code.clone());
        let known = (*rule, code.clone());
        if let Some(product) = products.0.get(&known) {
            return Ok(product.clone());
        }
        let rows = erp
            .search_read(
                "product.product",
                domain,
                &[
                    "sale_uom",
                    "default_uom",
                    "account_category.customer_taxes_used",
                ],
                Some(1),
            )
            .await?;
        if let Some(row) = rows.first() {
            let product = product_and_unit(row, &order.order_key)?;
            products.0.insert(known, product.clone());
            return Ok(product);
        }
    }
    let Some(code) = tried.first() else {
        return Err(Failure::permanent(format!(
            "order {}: line {} has no SKU or EAN to find a Tryton product by",
            order.order_key, line.source_line_id
        )));
    };
    match erp.unknown_product {
        UnknownProduct::Park => Err(Failure::permanent(format!(
            "order {}: product {} not found in Tryton (line {})",
            order.order_key,
            tried.join(" / "),
            line.source_line_id
        ))),
        UnknownProduct::Create => create_product(erp, order, line, code).await,
    }
}

fn product_and_unit(row: &Value, key: &str) -> Result<Product, Failure> {
    let id = row["id"].as_i64();
    let unit = row["sale_uom"].as_i64().or(row["default_uom"].as_i64());
    let default_taxes = row["account_category."]["customer_taxes_used"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    match (id, unit) {
        (Some(id), Some(unit)) => Ok(Product {
            id,
            unit,
            default_taxes,
        }),
        _ => Err(Failure::permanent(format!(
            "order {key}: Tryton product {} has no unit",
            row["id"]
        ))),
    }
}

/// `unknown_product = "create"`: a salable goods product with the line's
/// code, description and price; weighed goods get kilograms.
async fn create_product(
    erp: &TrytonErp,
    order: &Order,
    line: &OrderLine,
    code: &str,
) -> Result<Product, Failure> {
    let unit_name = if line.quantity.fract().is_zero() {
        "Unit"
    } else {
        "Kilogram"
    };
    let unit = erp
        .search("product.uom", json!([["name", "=", unit_name]]), Some(1))
        .await?
        .first()
        .copied()
        .ok_or_else(|| {
            Failure::permanent(format!("Tryton has no unit of measure {unit_name:?}"))
        })?;
    let mut variant = json!({"suffix_code": code});
    if let Some(ean) = &line.ean {
        variant["identifiers"] = json!([["create", [{"type": "ean", "code": ean}]]]);
    }
    let template = erp
        .create(
            "product.template",
            json!({
                "name": line.description.clone().unwrap_or_else(|| code.to_string()),
                "type": "goods", "salable": true,
                "default_uom": unit, "sale_uom": unit,
                "list_price": decimal(line.unit_price),
                "products": [["create", [variant]]],
            }),
        )
        .await?;
    tracing::info!(order_key = %order.order_key, code, "created product in Tryton (unknown_product = \"create\")");
    let product = erp
        .search(
            "product.product",
            json!([["template", "=", template]]),
            Some(1),
        )
        .await?
        .first()
        .copied()
        .ok_or_else(|| Failure::retry(format!("Tryton: product {code} created but not found")))?;
    Ok(Product {
        id: product,
        unit,
        default_taxes: Vec::new(),
    })
}
