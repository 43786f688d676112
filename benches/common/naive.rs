//! The naive peer (issue 13.1): a plain client that does what ordersync does
//! for a CloudSuite order up to the "accepted" write-back, with no ledger.
//!
//! One OAuth2 token. One walk of `GET /api/order/?state=confirmed&limit=100`
//! following `next`, done before any write (the list is a work queue that our
//! own `state=processing` shrinks: offset pages read while writing would skip
//! orders). Then `workers` tasks share the ids and do, each in sequence:
//!
//! 1. `GET /api/order/{id}/`, mapped with the connector's own mapping
//!    (`sources::cloudsuite::canonical_json`); held or cancelled orders are
//!    skipped, as ordersync skips them;
//! 2. `POST {erp}/orders` with `Idempotency-Key: bench:{id}`;
//! 3. the accepted write-back exactly as `CloudSuite::write_accepted` sends
//!    it on a first attempt: PATCH `erp_order_number` + `state=processing`,
//!    then PUT the order as the PATCH returned it with `erp_line_number` set
//!    on each line the ERP numbered (related records the detail embeds
//!    named by their pk, as the documented 3c body does).
//!
//! Until commit 902dece the connector (and so this peer) read the order
//! before the PATCH; since then only an attempt after one that started and
//! never settled reads first, which a run without crashes never has, so
//! the peer no longer reads either. Retries: a failed request is
//! sent again a few times after a short pause (connect errors, 408, 429, 5xx);
//! anything else counts the order as failed. Nothing is persisted. With
//! `source_rate` its requests to CloudSuite are spaced like ordersync's
//! (`rate_limit_per_sec`, burst 1), so both can be compared under one limit.
//!
//! The request helpers and the worker pool here are shared with the
//! MplusKASSA and Retailys peers (`naive_mplus.rs`, `naive_retailys.rs`).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};

/// Where the peer talks to, and how.
#[derive(Clone)]
pub struct Peer {
    pub cloudsuite_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub erp_url: String,
    pub erp_token: String,
    /// Source name in the order keys (`bench:<id>`), as ordersync names it.
    pub source: String,
    pub workers: usize,
    pub page_size: usize,
    /// Requests per second to CloudSuite, spaced as ordersync's own limiter
    /// spaces them (burst 1); None: no limit.
    pub source_rate: Option<u32>,
}

impl Peer {
    /// The peer for a sandbox's CloudSuite and its ERP: ordersync's
    /// `max_in_flight` workers, pages of 100, `source` in the order keys.
    pub fn for_sandbox(
        sb: &ordersync::sandbox::Sandbox,
        opts: &ordersync::sandbox::SandboxOptions,
        source: &str,
        source_rate: Option<u32>,
    ) -> Peer {
        Peer {
            cloudsuite_url: sb.cloudsuite_url.clone(),
            token_url: sb.token_url.clone(),
            client_id: opts.cloudsuite.client_id.clone(),
            client_secret: opts.cloudsuite.client_secret.clone(),
            erp_url: sb.erp_url.clone(),
            erp_token: opts.erp.token.clone(),
            source: source.into(),
            workers: super::MAX_IN_FLIGHT,
            page_size: 100,
            source_rate,
        }
    }
}

/// What a request waits for before it goes out: the source's rate limit,
/// or nothing (the ERP).
pub type Gate = Option<Arc<DefaultDirectRateLimiter>>;

/// `rate` requests per second, spaced as ordersync's `Endpoint` spaces them
/// (burst 1); None: no limit.
pub fn gate(rate: Option<u32>) -> Gate {
    rate.and_then(NonZeroU32::new).map(|r| {
        Arc::new(RateLimiter::direct(
            Quota::per_second(r).allow_burst(NonZeroU32::MIN),
        ))
    })
}

/// One HTTP client for all of a peer's workers.
pub fn client(workers: usize) -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(workers * 2)
        .build()
        .expect("reqwest client")
}

/// What a run did. `started` is just before the first request, `finished`
/// when the last worker is done.
pub struct NaiveRun {
    pub started: Instant,
    pub finished: Instant,
    pub listed: usize,
    pub written_back: usize,
    pub skipped: usize,
    pub failed: usize,
}

impl NaiveRun {
    pub fn elapsed(&self) -> Duration {
        self.finished - self.started
    }
}

/// Sends a request built by `build`, again after a short pause when the
/// failure is passing (transport error, 408, 429, 5xx); returns the body of a
/// 2xx answer. A 429's `Retry-After` (seconds) is waited out.
pub async fn send_text(gate: &Gate, build: impl Fn() -> RequestBuilder) -> Result<String, String> {
    let mut last = String::new();
    let mut pause = Duration::ZERO;
    for attempt in 0..5u64 {
        if attempt > 0 {
            tokio::time::sleep(pause.max(Duration::from_millis(100 * attempt))).await;
        }
        if let Some(limiter) = gate {
            limiter.until_ready().await;
        }
        match build().send().await {
            Ok(r) if r.status().is_success() => return r.text().await.map_err(|e| e.to_string()),
            Ok(r) => {
                let s = r.status().as_u16();
                pause = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(Duration::ZERO, Duration::from_secs);
                last = format!("HTTP {s}");
                if !(s == 408 || s == 429 || s >= 500) {
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

pub async fn send(gate: &Gate, build: impl Fn() -> RequestBuilder) -> Result<Value, String> {
    let text = send_text(gate, build).await?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

pub enum Done {
    WrittenBack,
    Skipped,
}

/// `workers` tasks share `jobs`, each doing `one` for a job after the other
/// until none is left. Returns (written back, skipped, failed).
pub async fn pool<J, F, Fut>(jobs: VecDeque<J>, workers: usize, one: F) -> (usize, usize, usize)
where
    J: std::fmt::Display + Send + 'static,
    F: Fn(J) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Done, String>> + Send,
{
    let queue = Arc::new(Mutex::new(jobs));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (queue, one) = (queue.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            let (mut written, mut skipped, mut failed) = (0, 0, 0);
            loop {
                let Some(job) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let what = job.to_string();
                match one(job).await {
                    Ok(Done::WrittenBack) => written += 1,
                    Ok(Done::Skipped) => skipped += 1,
                    Err(e) => {
                        eprintln!("naive peer: order {what}: {e}");
                        failed += 1;
                    }
                }
            }
            (written, skipped, failed)
        }));
    }
    let mut total = (0, 0, 0);
    for t in tasks {
        let (w, s, f) = t.await.expect("naive worker");
        total = (total.0 + w, total.1 + s, total.2 + f);
    }
    total
}

async fn one_order(
    p: &Peer,
    c: &Client,
    cs: &Gate,
    bearer: &str,
    id: &str,
) -> Result<Done, String> {
    let url = format!("{}/api/order/{id}/", p.cloudsuite_url);
    // 1. The detail, mapped.
    let raw = send_text(cs, || c.get(&url).bearer_auth(bearer)).await?;
    let payment_ok: Vec<String> = ["closed_success", "paid", "account", "none"]
        .map(String::from)
        .to_vec();
    let Some(canonical) = ordersync::sources::cloudsuite::canonical_json(
        &p.source,
        chrono_tz::Europe::Amsterdam,
        &payment_ok,
        &raw,
    )?
    else {
        return Ok(Done::Skipped);
    };
    // 2. The push.
    let key = format!("{}:{id}", p.source);
    let erp_url = format!("{}/orders", p.erp_url);
    let accepted = send(&None, || {
        c.post(&erp_url)
            .bearer_auth(&p.erp_token)
            .header("Idempotency-Key", &key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(canonical.clone())
    })
    .await?;
    let number = accepted["erp_order_number"]
        .as_str()
        .ok_or("ERP answer without erp_order_number")?
        .to_string();
    // 3. The accepted write-back: PATCH, PUT (as write_accepted's first attempt).
    let body = json!({ "erp_order_number": number, "state": "processing" });
    let mut current = send(cs, || c.patch(&url).bearer_auth(bearer).json(&body)).await?;
    let mut changed = false;
    let numbers = accepted["lines"].as_array().cloned().unwrap_or_default();
    if let Some(lines) = current["order_lines"].as_array_mut() {
        for line in lines {
            let line_id = match &line["id"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => continue,
            };
            if let Some(n) = numbers
                .iter()
                .find(|n| n["source_line_id"].as_str() == Some(line_id.as_str()))
                && line["erp_line_number"] != n["erp_line_number"]
            {
                line["erp_line_number"] = n["erp_line_number"].clone();
                changed = true;
            }
        }
    }
    if changed {
        // Related records by pk, as CloudSuite's documented PUT (3c) names them.
        for field in [
            "customer",
            "invoice_address",
            "shipment_address",
            "webshop",
            "user",
        ] {
            if let Some(pk) = current[field].get("id").cloned() {
                current[field] = pk;
            }
        }
        send(cs, || c.put(&url).bearer_auth(bearer).json(&current)).await?;
    }
    Ok(Done::WrittenBack)
}

/// Runs the peer to the end: every listed order pushed and written back,
/// skipped (not pushable) or failed.
pub async fn run(p: Peer) -> NaiveRun {
    let c = client(p.workers);
    let cs = gate(p.source_rate);
    let started = Instant::now();
    let token = send(&cs, || {
        c.post(&p.token_url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", p.client_id.as_str()),
            ("client_secret", p.client_secret.as_str()),
            ("scope", "openid"),
        ])
    })
    .await
    .expect("token");
    let bearer = token["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();

    let mut ids = VecDeque::new();
    let mut next = Some(format!(
        "{}/api/order/?state=confirmed&limit={}",
        p.cloudsuite_url, p.page_size
    ));
    while let Some(url) = next.take() {
        let page = send(&cs, || c.get(&url).bearer_auth(&bearer))
            .await
            .expect("order list page");
        for o in page["results"].as_array().into_iter().flatten() {
            match &o["id"] {
                Value::Number(n) => ids.push_back(n.to_string()),
                Value::String(s) => ids.push_back(s.clone()),
                _ => {}
            }
        }
        next = page["next"].as_str().map(String::from);
    }
    let listed = ids.len();

    let workers = p.workers;
    let p = Arc::new(p);
    let (written_back, skipped, failed) = pool(ids, workers, move |id: String| {
        let (p, c, cs, bearer) = (p.clone(), c.clone(), cs.clone(), bearer.clone());
        async move { one_order(&p, &c, &cs, &bearer, &id).await }
    })
    .await;
    NaiveRun {
        started,
        finished: Instant::now(),
        listed,
        written_back,
        skipped,
        failed,
    }
}
