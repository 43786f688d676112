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
//! `write_date`, the feed walk shipments use too ([`super::feed`]); repeats
//! are harmless (the ledger dedupes them).

use serde_json::json;

use super::TrytonErp;
use super::feed::Feed;
use super::rpc::parse_datetime;
use crate::erp::CancellationPage;
use crate::http::Failure;
use crate::store::ErpCancellation;

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
    let mut feed = Feed::new(
        &erp.rpc,
        "cancellations",
        "sale.sale",
        json!(["state", "=", "cancelled"]),
        vec!["number", "reference", "write_date"],
        after,
        limit,
    )?;
    let mut cancellations = Vec::new();
    while let Some(rows) = feed.next_page().await? {
        for r in &rows {
            let written = parse_datetime(&r["write_date"]);
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
    }
    Ok(CancellationPage {
        cancellations,
        next: feed.cursor(),
    })
}
