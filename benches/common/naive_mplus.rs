//! The naive peer for MplusKASSA (issue 13.1): what a plain script does
//! against the till, up to the "accepted" write-back, with no ledger.
//!
//! One walk of `getOrders` by sync marker (from `syncMarker = cursor + 1`,
//! `syncMarkerLimit = page_size`, with lines; the cursor is the largest
//! marker of the answer; until an empty answer), done before any write: the
//! reference write-backs bump each order's marker, so a walk read while
//! writing would see its own writes come back. Each answer is mapped with
//! the connector's own parser and mapping (`sources::mplus::parse_orders`);
//! cancelled orders are skipped. Then `workers` tasks share the orders and
//! do, each in sequence:
//!
//! 1. `POST {erp}/orders` with `Idempotency-Key: bench:{orderId}`;
//! 2. the reference write-back exactly as `Mplus::write_accepted` does it:
//!    `getOrder`, then `updateOrder` built from that answer by the
//!    connector's own `soap::update_order_body` (the counters just read),
//!    read and written again on ORDER-HAS-CHANGED.
//!
//! Retries and the rate gate are `naive.rs`'s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ordersync::sources::mplus::{parse_orders, soap, wire};
use ordersync::store::Disposition;
use reqwest::Client;
use serde_json::Value;

use super::naive::{Done, Gate, NaiveRun, client, gate, pool, send, send_text};

#[derive(Clone)]
pub struct Peer {
    /// The SOAP endpoint, without the credentials.
    pub mplus_url: String,
    pub ident: String,
    pub secret: String,
    pub erp_url: String,
    pub erp_token: String,
    /// Source name in the order keys (`bench:<orderId>`), as ordersync names it.
    pub source: String,
    pub workers: usize,
    pub page_size: u32,
    pub source_rate: Option<u32>,
}

/// One till order to push: its id and canonical JSON.
struct Job {
    id: String,
    canonical: String,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// One SOAP call; the answer's body. A SOAP fault comes with HTTP 500 and is
/// retried like any 5xx.
async fn call(
    p: &Peer,
    c: &Client,
    g: &Gate,
    operation: &str,
    envelope: String,
) -> Result<String, String> {
    let url = format!("{}/", p.mplus_url);
    let query = [("ident", p.ident.as_str()), ("secret", p.secret.as_str())];
    send_text(g, || {
        c.post(&url)
            .query(&query)
            .header("SOAPAction", operation)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(envelope.clone())
    })
    .await
    .map_err(|e| format!("{operation}: {e}"))
}

async fn one_order(p: &Peer, c: &Client, g: &Gate, job: Job) -> Result<Done, String> {
    // 1. The push.
    let key = ordersync::model::order_key(&p.source, &job.id);
    let erp_url = format!("{}/orders", p.erp_url);
    let accepted: Value = send(&None, || {
        c.post(&erp_url)
            .bearer_auth(&p.erp_token)
            .header("Idempotency-Key", &key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(job.canonical.clone())
    })
    .await?;
    let number = accepted["erp_order_number"]
        .as_str()
        .ok_or("ERP answer without erp_order_number")?
        .to_string();
    // 2. The reference: getOrder, updateOrder with the counters just read.
    for _ in 0..5 {
        let op = wire::GetOrder {
            xmlns: wire::NAMESPACE.into(),
            order_id: job.id.clone(),
        };
        let envelope = soap::envelope("getOrder", &op).map_err(|e| e.message().to_string())?;
        let body = call(p, c, g, "getOrder", envelope).await?;
        let answer: wire::GetOrderResponse =
            soap::parse_answer("getOrder", &body).map_err(|e| e.message().to_string())?;
        let order = answer
            .order
            .ok_or_else(|| format!("getOrder: {}", answer.result))?;
        if order.reference.as_deref().map(str::trim) == Some(number.as_str()) {
            return Ok(Done::WrittenBack);
        }
        let update = soap::update_order_body(&body, &number)?;
        let answer = call(p, c, g, "updateOrder", soap::wrap(&update)).await?;
        let result: wire::ResultResponse =
            soap::parse_answer("updateOrder", &answer).map_err(|e| e.message().to_string())?;
        match result.result.as_str() {
            "UPDATE-ORDER-RESULT-OK" | "UPDATE-ORDER-RESULT-NO-CHANGES" => {
                return Ok(Done::WrittenBack);
            }
            "UPDATE-ORDER-RESULT-ORDER-HAS-CHANGED" => continue,
            other => return Err(format!("updateOrder answered {other}")),
        }
    }
    Err("the till kept changing the order".into())
}

/// Runs the peer to the end: every listed order pushed and written back,
/// skipped (cancelled) or failed.
pub async fn run(p: Peer) -> NaiveRun {
    let c = client(p.workers);
    let g = gate(p.source_rate);
    let started = Instant::now();
    let mut jobs = VecDeque::new();
    let (mut listed, mut skipped_at_list) = (0, 0);
    let mut cursor = 0i64;
    loop {
        let op = wire::GetOrders {
            xmlns: wire::NAMESPACE.into(),
            request: wire::GetOrdersRequest {
                sync_marker: cursor + 1,
                sync_marker_limit: Some(p.page_size),
                from_financial_date: None,
                through_financial_date: None,
                article_plu_numbers: Some(wire::Empty {}),
                article_barcodes: Some(wire::Empty {}),
                include_line_list: Some(true),
            },
        };
        let envelope = soap::envelope("getOrders", &op).expect("getOrders envelope");
        let body = call(&p, &c, &g, "getOrders", envelope)
            .await
            .expect("getOrders");
        let batch = parse_orders(&p.source, &body).expect("getOrders answer");
        if batch.orders.is_empty() {
            break;
        }
        for o in batch.orders {
            listed += 1;
            match o.mapped {
                Ok(m) if matches!(m.disposition, Disposition::Push) => jobs.push_back(Job {
                    id: o.external_id,
                    canonical: m.order.to_json(),
                }),
                Ok(_) => skipped_at_list += 1,
                Err(e) => panic!("naive peer: order {} cannot be mapped: {e}", o.external_id),
            }
        }
        cursor = cursor.max(batch.max);
    }
    let workers = p.workers;
    let p = Arc::new(p);
    let (written_back, skipped, failed) = pool(jobs, workers, move |job: Job| {
        let (p, c, g) = (p.clone(), c.clone(), g.clone());
        async move { one_order(&p, &c, &g, job).await }
    })
    .await;
    NaiveRun {
        started,
        finished: Instant::now(),
        listed,
        written_back,
        skipped: skipped + skipped_at_list,
        failed,
    }
}
