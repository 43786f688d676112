//! Injected latency holds each request for the full latency *concurrently*:
//! the simulators must not serialize the wait (a lock held across the sleep,
//! one request at a time per server, a request cap). Benchmarks compare
//! clients against the latency bound `in flight / (requests x latency)`, which
//! means nothing if the server itself queues them.
//!
//! Not a speed test: 64 requests at 20 ms would take 1.28 s one after the
//! other; the bound below (half of that) only proves that they overlap.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use super::{access_token, canonical_order, client, start};
use crate::sandbox::Faults;
use crate::sandbox::cloudsuite::CloudSuiteOptions;
use crate::sandbox::erp_http::ErpOptions;

const TOKEN: &str = "sandbox-erp-token";
const PARALLEL: usize = 64;
const LATENCY: Duration = Duration::from_millis(20);
/// Half of what 64 requests one after the other would take.
const OVERLAP_BOUND: Duration = Duration::from_millis(640);

fn latency() -> Faults {
    Faults {
        latency: LATENCY,
        ..Faults::default()
    }
}

/// Runs the requests all at once; returns the wall time of the whole batch
/// and the shortest single request (which must have been held).
async fn batch<F, Fut>(requests: Vec<F>) -> (Duration, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = Instant::now();
    let timed = requests.into_iter().map(|r| async move {
        let t = Instant::now();
        let status = r().await;
        (status, t.elapsed())
    });
    let results = join_all(timed).await;
    let total = started.elapsed();
    for (status, _) in &results {
        assert!((200..300).contains(status), "status {status}");
    }
    let shortest = results.iter().map(|(_, d)| *d).min().unwrap_or_default();
    (total, shortest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_holds_requests_concurrently() {
    let sb = start(
        CloudSuiteOptions {
            seed_orders: PARALLEL,
            ..Default::default()
        },
        ErpOptions::default(),
    )
    .await;
    let c = client();
    let token = access_token(&sb, &c).await;
    let ids = sb.cloudsuite.order_ids();
    assert_eq!(ids.len(), PARALLEL);
    // Open the connections first, so the batches time requests, not handshakes.
    let warm = (0..PARALLEL).map(|_| {
        c.get(format!("{}/api/order/?limit=1", sb.cloudsuite_url))
            .bearer_auth(&token)
            .send()
    });
    for r in join_all(warm).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    sb.cloudsuite.set_faults(latency());
    sb.erp.set_faults(latency());

    // Reads: 64 order details at once.
    let reads = ids
        .iter()
        .map(|id| {
            let (c, token) = (c.clone(), token.clone());
            let url = format!("{}/api/order/{id}/", sb.cloudsuite_url);
            move || async move {
                let r = c.get(url).bearer_auth(token).send().await.unwrap();
                let status = r.status().as_u16();
                r.bytes().await.unwrap();
                status
            }
        })
        .collect();
    let (total, shortest) = batch(reads).await;
    println!("64 parallel detail reads at 20 ms: {total:?}");
    assert!(
        shortest >= LATENCY,
        "a detail read was not held: {shortest:?}"
    );
    assert!(
        total < OVERLAP_BOUND,
        "64 detail reads at 20 ms took {total:?}: the simulator serializes them"
    );

    // Writes: 64 PATCHes at once (they change state under the simulator's lock).
    let writes = ids
        .iter()
        .map(|id| {
            let (c, token) = (c.clone(), token.clone());
            let url = format!("{}/api/order/{id}/", sb.cloudsuite_url);
            move || async move {
                let r = c
                    .patch(url)
                    .bearer_auth(token)
                    .json(&json!({"erp_order_number": format!("SO{id}")}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                r.bytes().await.unwrap();
                status
            }
        })
        .collect();
    let (total, shortest) = batch(writes).await;
    println!("64 parallel PATCHes at 20 ms: {total:?}");
    assert!(shortest >= LATENCY, "a PATCH was not held: {shortest:?}");
    assert!(
        total < OVERLAP_BOUND,
        "64 PATCHes at 20 ms took {total:?}: the simulator serializes them"
    );

    // The ERP: 64 pushes of different orders at once.
    let pushes = (0..PARALLEL)
        .map(|i| {
            let c = c.clone();
            let url = format!("{}/orders", sb.erp_url);
            let key = format!("webshop-nl:{}", 90_000 + i);
            move || async move {
                let r = c
                    .post(url)
                    .bearer_auth(TOKEN)
                    .header("Idempotency-Key", &key)
                    .json(&canonical_order(&key))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                r.bytes().await.unwrap();
                status
            }
        })
        .collect();
    let (total, shortest) = batch(pushes).await;
    println!("64 parallel ERP pushes at 20 ms: {total:?}");
    assert!(
        shortest >= LATENCY,
        "an ERP push was not held: {shortest:?}"
    );
    assert!(
        total < OVERLAP_BOUND,
        "64 ERP pushes at 20 ms took {total:?}: the simulator serializes them"
    );
    assert_eq!(sb.erp.orders().len(), PARALLEL);
    sb.shutdown().await;
}
