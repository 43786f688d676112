//! Benchmark (issue 13): N Retailys orders (default 1,000) into the http ERP
//! simulator, every request at either simulator held `BENCH_LATENCY_MS`
//! (default 20 ms), `max_in_flight = 8`, page size 100, run by two clients
//! one after the other in this one process, each against its own
//! identically seeded sandbox:
//!
//! - the naive peer (`common/naive_retailys.rs`): statuses, the list
//!   (expanded), then 8 workers: push, read + status PATCH + history POST,
//!   no ledger;
//! - the real `ordersync run` release binary.
//!
//! The Retailys API allows 100 requests per second and its simulator answers
//! 429 beyond that (as documented). Both clients are limited to the same
//! rate at the shop: `BENCH_SOURCE_RATE`, default 90 (ordersync's
//! `rate_limit_per_sec`; its config refuses more than 100). So besides the
//! latency bound the report gives the rate bound
//! `rate / source requests per order`, which is what limits both here.
//!
//! Both are timed as in `benches/sync.rs`: from the first request either
//! simulator sees until every pushable order is in the ERP with its accepted
//! write-back at the shop (status Processing and the ERP-number history
//! record). The ERP ships nothing during that time. Then, timed separately
//! and for ordersync only, the ERP ships every order and the daemon runs
//! until each is marked sent and Shipped (tracking, `sent`, status).
//!
//!     cargo bench --bench retailys                          # 1,000 orders, 20 ms, 90 req/s
//!     BENCH_ORDERS=300 cargo bench --bench retailys
//!     BENCH_SHIPPED=0 ... ; BENCH_SCHEDULE="0 */2 * * * *" ...
//!
//! Not a test: nothing here asserts a speed. Results go to docs/BENCHMARKS.md.

mod common;

use std::time::Duration;

use common::naive_retailys::{self, Peer};
use common::{
    Daemon, MAX_IN_FLIGHT, Pending, Shipped, Side, Usage, daemon_side, latency, load, on,
    on_own_runtime, orders_wanted_or, print_comparison, print_shipped, print_start, schedule,
    self_cpu, source_rate, time_shipped, watch_daemon, write_config,
};
use ordersync::sandbox::{Sandbox, SandboxOptions};

const SOURCE: &str = "bench";
const PROCESSING: &str = "Processing";
const SHIPPED: &str = "Shipped";

fn rate() -> u32 {
    source_rate().unwrap_or(90)
}

/// A sandbox with `n` seeded Retailys orders (same seed every time) and the
/// ids of those to be pushed: not cancelled, in a status that neither
/// completes nor cancels an order (ordersync's default `import_statuses`).
async fn sandbox(n: usize) -> (Sandbox, SandboxOptions, Vec<i64>) {
    let mut opts = SandboxOptions::default();
    opts.retailys.faults.latency = latency();
    opts.erp.faults.latency = latency();
    opts.erp.ship_after = None; // shipments only when the bench says so
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb
        .retailys
        .seed_orders(n, 42, Duration::from_secs(2 * 24 * 3600));
    let not_imported: Vec<i64> = [
        "Returned",
        "Delivered",
        "Cancelled",
        "Cancelled by customer",
        "Shipped",
    ]
    .iter()
    .filter_map(|name| sb.retailys.status_id(name))
    .collect();
    let pushable = ids
        .into_iter()
        .filter(|id| {
            sb.retailys.order(*id).is_some_and(|o| {
                o["canceled"] != true
                    && o["status_id"]
                        .as_i64()
                        .is_some_and(|s| !not_imported.contains(&s))
            })
        })
        .collect();
    (sb, opts, pushable)
}

/// Where a client's requests to the shop went (`requests` in all, for
/// `orders` pushable orders): single-order reads and accepted writes as the
/// simulator counts them; the rest are list and status pages.
fn source_breakdown(sb: &Sandbox, who: &str, requests: u64, orders: usize) {
    let ids: Vec<i64> = sb
        .retailys
        .orders()
        .iter()
        .filter_map(|o| o["id"].as_i64())
        .collect();
    let reads: u64 = ids.iter().map(|id| sb.retailys.detail_reads(*id)).sum();
    let writes: u64 = ids
        .iter()
        .map(|id| sb.retailys.writes(*id).len() as u64)
        .sum();
    let rest = requests.saturating_sub(reads + writes);
    let per = |n: u64| n as f64 / orders.max(1) as f64;
    println!(
        "{who}: shop requests per order: single-order reads {:.3}, writes {:.3}, list and status pages and other {:.3}",
        per(reads),
        per(writes),
        per(rest)
    );
}

/// Status Processing and the ERP-number history record written.
fn written_back(sb: &Sandbox, processing: i64, id: i64) -> bool {
    sb.retailys
        .order(id)
        .is_some_and(|o| o["status_id"] == processing)
        && sb
            .retailys
            .history(id)
            .iter()
            .any(|h| h["type"] == "apps" && h["record"]["name"] == "ERP order number")
}

async fn naive_side(n: usize) -> (Side, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let processing = sb.retailys.status_id(PROCESSING).expect("Processing");
    let (shop0, erp0, cpu0) = (
        sb.retailys.request_count(),
        sb.erp.request_count(),
        self_cpu(),
    );
    let peer = Peer {
        retailys_url: sb.retailys_url.clone(),
        token: opts.retailys.token.clone(),
        erp_url: sb.erp_url.clone(),
        erp_token: opts.erp.token.clone(),
        source: SOURCE.into(),
        processing_status: PROCESSING.into(),
        workers: MAX_IN_FLIGHT,
        page_size: 100,
        source_rate: Some(rate()),
    };
    let (run, cpu) = on_own_runtime(move || naive_retailys::run(peer)).await;
    let sims_cpu = self_cpu() - cpu0 - cpu;
    let all_done = Pending::new(&pushable).all(|id| written_back(&sb, processing, *id));
    let in_erp = sb.erp.orders().len();
    assert!(
        all_done && in_erp == pushable.len() && run.failed == 0,
        "naive peer: {} of {} pushable orders written back, {in_erp} in the ERP, {} failed",
        run.written_back,
        pushable.len(),
        run.failed
    );
    println!(
        "naive peer: listed {}, written back {}, skipped {} (held, cancelled, shipped); {} answers 429 from the shop",
        run.listed,
        run.written_back,
        run.skipped,
        sb.retailys.fault_count()
    );
    source_breakdown(
        &sb,
        "naive peer",
        sb.retailys.request_count() - shop0,
        pushable.len(),
    );
    let side = Side {
        elapsed: run.elapsed(),
        orders: pushable.len(),
        source_requests: sb.retailys.request_count() - shop0,
        erp_requests: sb.erp.request_count() - erp0,
        cpu,
    };
    sb.shutdown().await;
    (side, sims_cpu)
}

async fn ordersync_side(n: usize) -> (Side, Option<Shipped>, Usage, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let processing = sb.retailys.status_id(PROCESSING).expect("Processing");
    let shipped_id = sb.retailys.status_id(SHIPPED).expect("Shipped");
    let source = format!(
        "kind = \"retailys\"\nbase_url = \"{}\"\ntoken_file = \"rt\"\nprocessing_status = \"{PROCESSING}\"\nshipped_status = \"{SHIPPED}\"\n",
        sb.retailys_url
    );
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("rt", &opts.retailys.token)],
        rate(),
    );
    let requests = || sb.retailys.request_count() + sb.erp.request_count();
    let (shop0, erp0) = (sb.retailys.request_count(), sb.erp.request_count());
    let cpu0 = self_cpu();
    let daemon = Daemon::start(&cfg);
    let mut pending = Pending::new(&pushable);
    let timeline = watch_daemon(
        &daemon,
        requests,
        shop0 + erp0,
        || !sb.erp.orders().is_empty(),
        || pending.all(|id| written_back(&sb, processing, *id)),
    )
    .await;
    let usage = daemon.usage();
    print_start(&daemon, &timeline);
    let (shop1, erp1) = (sb.retailys.request_count(), sb.erp.request_count());
    let sims_cpu = self_cpu() - cpu0;
    assert_eq!(
        sb.erp.orders().len(),
        pushable.len(),
        "ordersync: ERP orders"
    );
    println!(
        "ordersync: {} answers 429 from the shop, busiest second {} requests",
        sb.retailys.fault_count(),
        sb.retailys.peak_requests_per_sec()
    );
    source_breakdown(&sb, "ordersync", shop1 - shop0, pushable.len());
    let accepted = daemon_side(
        &timeline,
        &usage,
        pushable.len(),
        shop1 - shop0,
        erp1 - erp0,
    );
    if !on("BENCH_SHIPPED") {
        daemon.stop();
        sb.shutdown().await;
        return (accepted, None, usage, sims_cpu);
    }
    // The "shipped" write-back, timed on its own: the ERP ships everything now.
    let shipped = time_shipped(
        &sb,
        &pushable,
        |id| {
            sb.retailys
                .order(*id)
                .is_some_and(|o| o["sent"] == true && o["status_id"] == shipped_id)
        },
        || (sb.retailys.request_count(), sb.erp.request_count()),
    )
    .await;
    let total = daemon.usage();
    daemon.stop();
    sb.shutdown().await;
    (accepted, Some(shipped), total, sims_cpu)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !common::start() {
        return;
    }
    let n = orders_wanted_or(1000);
    println!(
        "{n} seeded Retailys orders, {} ms per request at each simulator, max_in_flight = {MAX_IN_FLIGHT}, both clients at most {} requests/s to the shop, poll schedule {:?}, load average before: {}",
        latency().as_millis(),
        rate(),
        schedule(),
        load()
    );
    let (naive, naive_sims) = naive_side(n).await;
    println!("load average after the naive peer: {}", load());
    let (ours, shipped, total, ours_sims) = ordersync_side(n).await;
    println!("load average after ordersync: {}", load());
    print_comparison(&naive, &ours, (naive_sims, ours_sims), Some(rate()));
    println!();
    print_shipped(
        shipped.as_ref(),
        "shipped written back",
        ours.orders,
        &total,
    );
}
