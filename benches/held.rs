//! Benchmark (issue 13, "no per-order stalls"): held CloudSuite orders that
//! are paid all at once, long after the list's window has moved past them.
//!
//! `BENCH_ORDERS` orders (default 1,000) wait for payment
//! (`payment_status=started`), confirmed five hours ago; one recent paid
//! order moves ordersync's cursor past them. Every request at either
//! simulator is held `BENCH_LATENCY_MS` (default 20 ms); `max_in_flight = 8`.
//! Each client first sees every held order once (not timed). Then the shop
//! marks them all paid, and the time runs until every one of them is in the
//! ERP with its accepted write-back. Two clients, one after the other, each
//! against its own identically seeded sandbox:
//!
//! - the naive peer (`common/naive.rs`) simply runs again: it walks the
//!   `confirmed` queue, reads each detail, pushes and writes back;
//! - the real `ordersync run` release binary, polling every second with
//!   `recheck_every = "0s"`: the list's window no longer shows these
//!   orders, so only its recheck rounds (200 orders a poll) see the payment.
//!
//! ```text
//! cargo bench --bench held                    # 1,000 held orders, 20 ms
//! BENCH_ORDERS=200 BENCH_LATENCY_MS=100 cargo bench --bench held
//! BENCH_ORDERSYNC_BIN=<path> ...              # another build of the daemon
//! ```
//!
//! Not a test: nothing here asserts a speed. Results go to docs/BENCHMARKS.md.

mod common;

use std::time::{Duration, Instant};

use common::naive::{self, Peer};
use common::{
    Daemon, MAX_IN_FLIGHT, Pending, Side, cloudsuite_accepted, cloudsuite_source, latency, load,
    on_own_runtime, orders_wanted_or, print_comparison, self_cpu, wait_until, write_config,
};
use ordersync::sandbox::{CloudSuiteOrderSpec as OrderSpec, Sandbox, SandboxOptions};

const SOURCE: &str = "bench";

/// A sandbox with `n` held orders confirmed five hours ago (returned) and
/// one recent paid order (the last id returned separately).
async fn sandbox(n: usize) -> (Sandbox, SandboxOptions, Vec<i64>, i64) {
    let mut opts = SandboxOptions::default();
    opts.cloudsuite.faults.latency = latency();
    opts.erp.faults.latency = latency();
    opts.erp.ship_after = None;
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let cs = &sb.cloudsuite;
    let long_ago = cs.now_local() - chrono::Duration::hours(5);
    let held = (0..n)
        .map(|_| {
            cs.add_order(OrderSpec {
                payment_status: "started".into(),
                confirm_date: Some(long_ago),
                ..Default::default()
            })
        })
        .collect();
    let recent = cs.add_order(OrderSpec::default());
    (sb, opts, held, recent)
}

/// The shop marks every held order paid; returns when it did.
fn pay_all(sb: &Sandbox, held: &[i64]) -> Instant {
    for id in held {
        assert!(sb.cloudsuite.set_payment_status(*id, "paid"), "order {id}");
    }
    Instant::now()
}

fn all_accepted(sb: &Sandbox, pending: &mut Pending<i64>) -> bool {
    pending.all(|id| {
        sb.cloudsuite
            .order(*id)
            .is_some_and(|o| cloudsuite_accepted(&o))
    })
}

async fn naive_side(n: usize) -> (Side, f64) {
    let (sb, opts, held, _recent) = sandbox(n).await;
    let peer = Peer::for_sandbox(&sb, &opts, SOURCE, None);
    // Its first run pushes the recent order and skips the held ones.
    let first = peer.clone();
    let (run, _) = on_own_runtime(move || naive::run(first)).await;
    assert_eq!(
        (run.written_back, run.skipped, run.failed),
        (1, n, 0),
        "naive peer, first run"
    );
    pay_all(&sb, &held);
    let (cs0, erp0, cpu0) = (
        sb.cloudsuite.request_count(),
        sb.erp.request_count(),
        self_cpu(),
    );
    let (run, cpu) = on_own_runtime(move || naive::run(peer)).await;
    let sims_cpu = self_cpu() - cpu0 - cpu;
    let mut pending = Pending::new(&held);
    assert!(
        all_accepted(&sb, &mut pending) && run.failed == 0,
        "naive peer: {} of {n} held orders written back, {} failed",
        run.written_back,
        run.failed
    );
    let side = Side {
        elapsed: run.elapsed(),
        orders: n,
        source_requests: sb.cloudsuite.request_count() - cs0,
        erp_requests: sb.erp.request_count() - erp0,
        cpu,
    };
    sb.shutdown().await;
    (side, sims_cpu)
}

async fn ordersync_side(n: usize) -> (Side, f64) {
    let (sb, opts, held, recent) = sandbox(n).await;
    let source = format!(
        "{}recheck_every = \"0s\"\n",
        cloudsuite_source(&sb.cloudsuite_url, &sb.token_url)
    );
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("cs", &opts.cloudsuite.client_secret)],
        100_000,
    );
    let daemon = Daemon::start(&cfg);
    // Not timed: the first walk reads every order (held ones are recorded
    // held) and the recent one goes through, which moves the cursor.
    let cs = &sb.cloudsuite;
    wait_until(
        || {
            held.iter().all(|id| cs.detail_reads(*id) >= 1)
                && cs.order(recent).is_some_and(|o| cloudsuite_accepted(&o))
        },
        Duration::from_millis(10),
    )
    .await;
    // Two polls more: the cursor is stored and the window has moved on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = daemon.usage();
    let (cs0, erp0, cpu0) = (cs.request_count(), sb.erp.request_count(), self_cpu());
    let paid = pay_all(&sb, &held);
    let mut pending = Pending::new(&held);
    let done = wait_until(
        || all_accepted(&sb, &mut pending),
        Duration::from_millis(10),
    )
    .await;
    let after = daemon.usage();
    let sims_cpu = self_cpu() - cpu0;
    assert!(
        pending.0.is_empty(),
        "ordersync: {} held orders not written back",
        pending.0.len()
    );
    let side = Side {
        elapsed: done - paid,
        orders: n,
        source_requests: cs.request_count() - cs0,
        erp_requests: sb.erp.request_count() - erp0,
        cpu: after.cpu - before.cpu,
    };
    daemon.stop();
    sb.shutdown().await;
    (side, sims_cpu)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !common::start() {
        return;
    }
    let n = orders_wanted_or(1000);
    println!(
        "{n} held CloudSuite orders paid at once, {} ms per request at each simulator, max_in_flight = {MAX_IN_FLIGHT}, load average before: {}",
        latency().as_millis(),
        load()
    );
    let (naive, naive_sims) = naive_side(n).await;
    println!("load average after the naive peer: {}", load());
    let (ours, ours_sims) = ordersync_side(n).await;
    println!("load average after ordersync: {}", load());
    println!(
        "(timed from the payment, not from a first request: ordersync's next poll comes within a second)"
    );
    print_comparison(&naive, &ours, (naive_sims, ours_sims), None);
}
