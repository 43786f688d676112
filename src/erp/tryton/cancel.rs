//! Cancellations in Tryton, both ways.
//!
//! Cancel ([`cancel`]): the sale with `reference = <order key>` is cancelled
//! while Tryton's sale workflow allows it: `draft` and `quotation` take the
//! `cancel` button, `confirmed` goes back to `draft` first. A sale that is
//! `processing` or `done` (shipments or invoices exist: with `confirm = true`
//! and no queue worker Tryton processes at once) has no cancel in Tryton's
//! workflow; that is a refusal, parked and flagged for an operator. A sale
//! already cancelled is done (a repeat after a crash).
//! Cancelled sales ([`cancellations`]): `sale.sale` in state `cancelled` by
//! `write_date`, read with the shipments' overlap; repeats are harmless (the
//! ledger dedupes them).

use serde_json::json;

use super::TrytonErp;
use super::rpc::{datetime, parse_datetime};
use super::shipments::{CURSOR_FORMAT, OVERLAP};
use crate::erp::CancellationPage;
use crate::http::Failure;
use crate::store::ErpCancellation;

const PAGE: u32 = 1000;
const MAX_PAGES: u32 = 100;

pub async fn cancel(erp: &TrytonErp, order_key: &str) -> Result<String, Failure> {
    let sales = erp
        .search_read(
            "sale.sale",
            json!([["reference", "=", order_key]]),
            &["number", "state", "shipment_state", "invoice_state"],
            None,
        )
        .await?;
    if sales.is_empty() {
        return Err(Failure::permanent(format!(
            "Tryton has no sale with reference {order_key}: nothing to cancel there; check the order by hand"
        )));
    }
    let mut done = Vec::new();
    for sale in sales.iter() {
        let Some(id) = sale["id"].as_i64() else {
            continue;
        };
        let label = super::sale_label(sale);
        match sale["state"].as_str().unwrap_or_default() {
            "cancelled" => done.push(format!("{label} was cancelled already")),
            "draft" | "quotation" => {
                erp.button("sale.sale", "cancel", &[id]).await?;
                done.push(format!("{label} cancelled"));
            }
            "confirmed" => {
                erp.button("sale.sale", "draft", &[id]).await?;
                erp.button("sale.sale", "cancel", &[id]).await?;
                done.push(format!("{label} reset to draft and cancelled"));
            }
            other => {
                return Err(Failure::permanent(format!(
                    "Tryton cannot cancel sale {label}: it is {other} (shipment {}, invoice {}) and Tryton's sale workflow cancels only draft, quotation and confirmed sales; cancel its shipment or credit it in Tryton by hand",
                    sale["shipment_state"].as_str().unwrap_or("?"),
                    sale["invoice_state"].as_str().unwrap_or("?"),
                )));
            }
        }
    }
    Ok(format!("Tryton: {}", done.join("; ")))
}

pub async fn cancellations(
    erp: &TrytonErp,
    after: Option<&str>,
    limit: u32,
) -> Result<CancellationPage, Failure> {
    let cursor = super::shipments::parse_cursor(after, "cancellations")?;
    let mut domain = vec![json!(["state", "=", "cancelled"])];
    if let Some(c) = cursor {
        domain.push(json!(["write_date", ">=", datetime(c - OVERLAP)]));
    }
    let page = PAGE.max(limit);
    let mut next = cursor;
    let mut cancellations = Vec::new();
    for page_no in 0..MAX_PAGES {
        let rows = erp
            .rpc
            .model(
                "sale.sale",
                "search_read",
                vec![
                    json!(domain),
                    json!(page_no * page),
                    json!(page),
                    json!([["write_date", "ASC"], ["id", "ASC"]]),
                    json!(["number", "reference", "write_date"]),
                ],
            )
            .await?;
        let rows = rows.as_array().cloned().unwrap_or_default();
        for r in &rows {
            let written = parse_datetime(&r["write_date"]);
            if let Some(t) = written {
                next = next.max(Some(t));
            }
            // Only sales that carry an order key can be ours.
            let Some(reference) = r["reference"].as_str().filter(|s| s.contains(':')) else {
                continue;
            };
            cancellations.push(ErpCancellation {
                order_key: reference.to_string(),
                erp_order_number: r["number"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                cancelled_at: written.map(|t| t.and_utc()),
                reason: Some(format!("sale {} cancelled in Tryton", super::sale_label(r))),
            });
        }
        if (rows.len() as u32) < page {
            break;
        }
    }
    Ok(CancellationPage {
        cancellations,
        next: next
            .map(|t| t.format(CURSOR_FORMAT).to_string())
            .unwrap_or_default(),
    })
}
