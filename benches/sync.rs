//! Benchmark (issue 2, issue 13): N CloudSuite orders (default 5,000) into
//! the http ERP simulator, every request at either simulator held
//! `BENCH_LATENCY_MS` (default 20 ms), `max_in_flight = 8`, run by two
//! clients one after the other in this one process, each against its own
//! identically seeded sandbox:
//!
//! - the naive peer (`common/naive.rs`): 8 workers, list → detail → push →
//!   accepted write-back (PATCH, PUT, as the connector's first attempt), no ledger;
//! - the real `ordersync run` release binary.
//!
//! Both are timed the same way: from the first request either simulator
//! sees until every pushable order is in the ERP with its "accepted"
//! write-back at CloudSuite (state processing, ERP order and line numbers).
//! The ERP reports no shipments during that time. Then, timed separately
//! and for ordersync only, the ERP ships every order and the daemon runs
//! until each "shipped" write-back is done.
//!
//!     cargo bench --bench sync                                  # 5,000 orders, 20 ms
//!     BENCH_ORDERS=2000 cargo bench --bench sync
//!     BENCH_ORDERS=2000 BENCH_LATENCY_MS=0 cargo bench --bench sync
//!     BENCH_DAEMON_LOG=/tmp/d.jsonl ...                         # the daemon's log, per order
//!     BENCH_SOURCE_RATE=100 ...              # both clients: 100 requests/s to CloudSuite
//!     BENCH_SHIPPED=0 ...                    # skip the timed "shipped" part
//!     BENCH_NAIVE=0 ...                      # ordersync only, no naive peer
//!     BENCH_MAX_STATE_MB=4096 ...            # stop when the ledger takes more on disk
//!     BENCH_FIRST_PUSH_ONLY=1 BENCH_ORDERS=100000 ...
//!         # ordersync only, until its first order is in the ERP and 10 s
//!         # more: time from start to the first push and RSS, at any backlog
//!
//! Not a test: nothing here asserts a speed. Results go to docs/BENCHMARKS.md.

mod common;

use std::time::Duration;

use common::naive::{self, Peer};
use common::{
    Daemon, MAX_IN_FLIGHT, Pending, Shipped, Side, Usage, cloudsuite_accepted, cloudsuite_source,
    daemon_side, latency, load, on, on_own_runtime, orders_wanted, print_comparison, print_shipped,
    print_start, self_cpu, source_rate, time_shipped, watch_daemon, write_config,
};
use ordersync::sandbox::{Sandbox, SandboxOptions};

const SOURCE: &str = "bench";

/// A sandbox with `n` seeded CloudSuite orders (same seed every time) and
/// the ids that pass the payment gate.
async fn sandbox(n: usize) -> (Sandbox, SandboxOptions, Vec<i64>) {
    let mut opts = SandboxOptions::default();
    opts.cloudsuite.faults.latency = latency();
    opts.erp.faults.latency = latency();
    opts.erp.ship_after = None; // shipments only when the bench says so
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb
        .cloudsuite
        .seed_orders(n, 2024, Duration::from_secs(6 * 3600));
    let pushable = ids
        .iter()
        .copied()
        .filter(|id| {
            let o = sb.cloudsuite.order(*id).unwrap_or_default();
            matches!(
                o["payment_status"].as_str(),
                Some("paid" | "closed_success" | "account" | "none")
            )
        })
        .collect();
    (sb, opts, pushable)
}

/// Where a client's CloudSuite requests went (`requests` in all, for
/// `orders` pushable orders): detail reads, PATCH/PUT writes and token
/// requests as the simulator counts them; the rest are list pages.
fn source_breakdown(sb: &Sandbox, who: &str, requests: u64, orders: usize) {
    let ids = sb.cloudsuite.order_ids();
    let details: u64 = ids.iter().map(|id| sb.cloudsuite.detail_reads(*id)).sum();
    let writes: u64 = ids.iter().map(|id| sb.cloudsuite.write_requests(*id)).sum();
    let tokens = sb.cloudsuite.token_requests();
    let lists = requests.saturating_sub(details + writes + tokens);
    let per = |n: u64| n as f64 / orders.max(1) as f64;
    println!(
        "{who}: source requests per order: detail reads {:.3}, writes {:.3}, list pages and other {:.3}, tokens {tokens}",
        per(details),
        per(writes),
        per(lists)
    );
    // Which orders were read more than once: those still `confirmed`
    // (held: the recheck reads them) or those that moved on.
    let (mut again_held, mut again_moved) = ((0u64, 0u64), (0u64, 0u64));
    for id in &ids {
        let n = sb.cloudsuite.detail_reads(*id);
        if n > 1 {
            let held = sb
                .cloudsuite
                .order(*id)
                .is_some_and(|o| o["state"] == "confirmed");
            let slot = if held {
                &mut again_held
            } else {
                &mut again_moved
            };
            slot.0 += 1;
            slot.1 += n - 1;
        }
    }
    println!(
        "{who}: detail reads beyond the first: {} on {} orders still confirmed (held), {} on {} that moved on",
        again_held.1, again_held.0, again_moved.1, again_moved.0
    );
}

/// `BENCH_SHIP_DURING=1`: the ERP ships each order as soon as it has it, so
/// ordersync's "shipped" write-backs run during the timed part too (as in
/// the first version of this benchmark); the naive peer does none.
fn ship_during() -> bool {
    std::env::var("BENCH_SHIP_DURING").is_ok_and(|v| v == "1")
}

async fn naive_side(n: usize) -> (Side, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let (cs0, erp0, cpu0) = (
        sb.cloudsuite.request_count(),
        sb.erp.request_count(),
        self_cpu(),
    );
    let peer = Peer::for_sandbox(&sb, &opts, SOURCE, source_rate());
    let (run, cpu) = on_own_runtime(move || naive::run(peer)).await;
    let sims_cpu = self_cpu() - cpu0 - cpu;
    let mut pending = Pending::new(&pushable);
    let all_done = pending.all(|id| {
        sb.cloudsuite
            .order(*id)
            .is_some_and(|o| cloudsuite_accepted(&o))
    });
    let in_erp = sb.erp.orders().len();
    assert!(
        all_done && in_erp == pushable.len() && run.failed == 0,
        "naive peer: {} of {} pushable orders written back, {in_erp} in the ERP, {} failed",
        run.written_back,
        pushable.len(),
        run.failed
    );
    println!(
        "naive peer: listed {}, written back {}, skipped {} (held or cancelled)",
        run.listed, run.written_back, run.skipped
    );
    source_breakdown(
        &sb,
        "naive peer",
        sb.cloudsuite.request_count() - cs0,
        pushable.len(),
    );
    let side = Side {
        elapsed: run.elapsed(),
        orders: pushable.len(),
        source_requests: sb.cloudsuite.request_count() - cs0,
        erp_requests: sb.erp.request_count() - erp0,
        cpu,
    };
    sb.shutdown().await;
    (side, sims_cpu)
}

async fn ordersync_side(n: usize) -> (Side, Option<Shipped>, Usage, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let source = cloudsuite_source(&sb.cloudsuite_url, &sb.token_url);
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("cs", &opts.cloudsuite.client_secret)],
        source_rate().unwrap_or(100_000),
    );
    if ship_during() {
        sb.erp.set_ship_after(Some(Duration::ZERO));
    }
    let requests = || sb.cloudsuite.request_count() + sb.erp.request_count();
    let (cs0, erp0) = (sb.cloudsuite.request_count(), sb.erp.request_count());
    let cpu0 = self_cpu();
    let daemon = Daemon::start(&cfg);
    let mut pending = Pending::new(&pushable);
    let timeline = watch_daemon(
        &daemon,
        requests,
        cs0 + erp0,
        || !sb.erp.orders().is_empty(),
        || {
            pending.all(|id| {
                sb.cloudsuite
                    .order(*id)
                    .is_some_and(|o| cloudsuite_accepted(&o))
            })
        },
    )
    .await;
    let usage = daemon.usage();
    print_start(&daemon, &timeline);
    let (cs1, erp1) = (sb.cloudsuite.request_count(), sb.erp.request_count());
    let sims_cpu = self_cpu() - cpu0;
    assert_eq!(
        sb.erp.orders().len(),
        pushable.len(),
        "ordersync: ERP orders"
    );
    source_breakdown(&sb, "ordersync", cs1 - cs0, pushable.len());
    let accepted_side = daemon_side(&timeline, &usage, pushable.len(), cs1 - cs0, erp1 - erp0);

    if !on("BENCH_SHIPPED") {
        daemon.stop();
        sb.shutdown().await;
        return (accepted_side, None, usage, sims_cpu);
    }
    // The "shipped" write-back, timed on its own: the ERP ships everything now.
    let shipped = time_shipped(
        &sb,
        &pushable,
        |id| {
            sb.cloudsuite
                .order(*id)
                .is_some_and(|o| o["shipment_state"] == "sent")
        },
        || (sb.cloudsuite.request_count(), sb.erp.request_count()),
    )
    .await;
    let total = daemon.usage();
    daemon.stop();
    let shipped = Some(shipped);
    sb.shutdown().await;
    (accepted_side, shipped, total, sims_cpu)
}

/// `BENCH_FIRST_PUSH_ONLY=1`: ordersync alone, until its first order is in
/// the ERP and 10 s more; prints when it started working and its memory.
async fn first_push_only(n: usize) {
    let (sb, opts, pushable) = sandbox(n).await;
    println!(
        "{} pushable orders seeded, load average {}",
        pushable.len(),
        load()
    );
    let source = cloudsuite_source(&sb.cloudsuite_url, &sb.token_url);
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("cs", &opts.cloudsuite.client_secret)],
        source_rate().unwrap_or(100_000),
    );
    let requests = || sb.cloudsuite.request_count() + sb.erp.request_count();
    let before = requests();
    let daemon = Daemon::start(&cfg);
    let timeline = watch_daemon(
        &daemon,
        requests,
        before,
        || !sb.erp.orders().is_empty(),
        || true,
    )
    .await;
    print_start(&daemon, &timeline);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let usage = daemon.usage();
    println!(
        "10 s after the first push: {} orders in the ERP, peak RSS {:.1} MB, CPU {:.2} s, ledger {:.1} MB on disk",
        sb.erp.orders().len(),
        usage.rss_kb as f64 / 1024.0,
        usage.cpu,
        daemon.state_bytes() as f64 / (1024.0 * 1024.0)
    );
    daemon.stop();
    println!("load average after: {}", load());
    sb.shutdown().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !common::start() {
        return;
    }
    let n = orders_wanted();
    let ms = latency().as_millis();
    println!(
        "{n} seeded CloudSuite orders, {ms} ms per request at each simulator, max_in_flight = {MAX_IN_FLIGHT}, load average before: {}",
        load()
    );
    if let Some(rate) = source_rate() {
        println!("both clients limited to {rate} requests per second to CloudSuite (burst 1)");
    }
    if std::env::var("BENCH_FIRST_PUSH_ONLY").is_ok_and(|v| v == "1") {
        first_push_only(n).await;
        return;
    }
    let naive = if on("BENCH_NAIVE") {
        let naive = naive_side(n).await;
        println!("load average after the naive peer: {}", load());
        Some(naive)
    } else {
        None
    };
    let (ours, shipped, total, ours_sims) = ordersync_side(n).await;
    println!("load average after ordersync: {}", load());

    match &naive {
        Some((naive, naive_sims)) => print_comparison(naive, &ours, (*naive_sims, ours_sims), None),
        None => {
            // The same table with ordersync on both sides: no naive peer ran.
            println!("(BENCH_NAIVE=0: no naive peer; ordersync in both columns)");
            print_comparison(&ours, &ours, (ours_sims, ours_sims), None);
        }
    }
    println!();
    if ship_during() {
        println!(
            "BENCH_SHIP_DURING=1: the ERP shipped each order at once; shipped write-backs ran during the timed part"
        );
    }
    print_shipped(
        shipped.as_ref(),
        "shipped written back",
        ours.orders,
        &total,
    );
}
