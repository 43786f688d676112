//! The naive peer for Retailys (issue 13.1): what a plain script does against
//! the shop, up to the "accepted" write-back, with no ledger.
//!
//! The shop's statuses (`GET /System/Orders/Statuses`, every page), then one
//! walk of `GET /System/Orders?per_page=100&page=N&expanded=true` to the
//! paginator's last page, done before any write. Each order is mapped with
//! the connector's own mapping (`sources::retailys::canonical_json`, every
//! status that neither completes nor cancels an order imported, as
//! ordersync's default `import_statuses`); held and cancelled orders are
//! skipped. Then `workers` tasks share the orders and do, each in sequence:
//!
//! 1. `POST {erp}/orders` with `Idempotency-Key: bench:{id}`;
//! 2. the accepted write-back as `Retailys::write_accepted` sends it: read the
//!    order (`GET /System/Orders/{id}?expanded=true`); unless it is already in
//!    the processing status, `PATCH …/status` to it; then `POST …/history`
//!    with the ERP number (type `apps`).
//!
//! Every request to the shop goes through the same rate gate as ordersync's
//! (`rate_limit_per_sec`, burst 1): the API answers 429 beyond 100
//! requests/s. A 429 is retried after its `Retry-After`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use reqwest::Client;
use serde_json::{Value, json};

use super::naive::{Done, Gate, NaiveRun, client, gate, pool, send, send_text};

#[derive(Clone)]
pub struct Peer {
    pub retailys_url: String,
    pub token: String,
    pub erp_url: String,
    pub erp_token: String,
    /// Source name in the order keys (`bench:<id>`), as ordersync names it.
    pub source: String,
    /// The status set on the write-back, by name (as in the daemon's config).
    pub processing_status: String,
    pub workers: usize,
    pub page_size: u32,
    pub source_rate: Option<u32>,
}

struct Job {
    id: String,
    canonical: String,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

async fn get(
    p: &Peer,
    c: &Client,
    g: &Gate,
    url: &str,
    query: &[(&str, String)],
) -> Result<Value, String> {
    send(g, || c.get(url).header("token", &p.token).query(query)).await
}

async fn one_order(
    p: &Peer,
    c: &Client,
    g: &Gate,
    processing: i64,
    job: Job,
) -> Result<Done, String> {
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
    // 2. Read, status, history record.
    let base = format!("{}/System/Orders/{}", p.retailys_url, job.id);
    let current = get(p, c, g, &base, &[("expanded", "true".into())]).await?;
    if current["canceled"].as_bool() == Some(true) {
        return Err("cancelled at the shop after the push".into());
    }
    let status = current["status_id"]
        .as_i64()
        .or_else(|| current["status"]["id"].as_i64());
    if status != Some(processing) {
        let url = format!("{base}/status");
        let body = json!({ "status_id": processing });
        send_text(g, || c.patch(&url).header("token", &p.token).json(&body)).await?;
    }
    let url = format!("{base}/history");
    let body = json!({
        "type": "apps",
        "record": {"name": "ERP order number", "status": number},
    });
    send_text(g, || c.post(&url).header("token", &p.token).json(&body)).await?;
    Ok(Done::WrittenBack)
}

/// Runs the peer to the end: every listed order pushed and written back,
/// skipped (held, cancelled) or failed.
pub async fn run(p: Peer) -> NaiveRun {
    let c = client(p.workers);
    let g = gate(p.source_rate);
    let started = Instant::now();
    let mut statuses = Vec::new();
    for page in 1.. {
        let answer = get(
            &p,
            &c,
            &g,
            &format!("{}/System/Orders/Statuses", p.retailys_url),
            &[("per_page", "250".into()), ("page", page.to_string())],
        )
        .await
        .expect("statuses");
        statuses.extend(answer["statuses"].as_array().cloned().unwrap_or_default());
        if page >= answer["paginator"]["pages"].as_u64().unwrap_or(0) {
            break;
        }
    }
    let processing = statuses
        .iter()
        .find(|s| s["name"] == p.processing_status.as_str())
        .and_then(|s| s["id"].as_i64())
        .expect("the processing status");
    let statuses = Value::Array(statuses);

    let mut jobs = VecDeque::new();
    let (mut listed, mut skipped_at_list) = (0, 0);
    let url = format!("{}/System/Orders", p.retailys_url);
    for page in 1.. {
        let query = [
            ("per_page", p.page_size.to_string()),
            ("page", page.to_string()),
            ("expanded", "true".into()),
        ];
        let text = send_text(&g, || c.get(&url).header("token", &p.token).query(&query))
            .await
            .expect("order list page");
        // Each order mapped from its own text, as the connector does.
        #[derive(serde::Deserialize)]
        struct Page<'a> {
            paginator: Value,
            #[serde(borrow)]
            orders: Vec<&'a serde_json::value::RawValue>,
        }
        let answer: Page<'_> = serde_json::from_str(&text).expect("order list page");
        for raw in answer.orders {
            listed += 1;
            let raw = raw.get();
            let id = serde_json::from_str::<Value>(raw).expect("order")["id"].to_string();
            match ordersync::sources::retailys::canonical_json(
                &p.source,
                &statuses,
                &p.processing_status,
                raw,
            ) {
                Ok(Some(canonical)) => jobs.push_back(Job { id, canonical }),
                Ok(None) => skipped_at_list += 1,
                Err(e) => panic!("naive peer: order {id} cannot be mapped: {e}"),
            }
        }
        if page >= answer.paginator["pages"].as_u64().unwrap_or(0) {
            break;
        }
    }
    let workers = p.workers;
    let p = Arc::new(p);
    let (written_back, skipped, failed) = pool(jobs, workers, move |job: Job| {
        let (p, c, g) = (p.clone(), c.clone(), g.clone());
        async move { one_order(&p, &c, &g, processing, job).await }
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
