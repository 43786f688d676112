//! Benchmark (issue 2, issue 13): N CloudSuite orders (default 5,000) into
//! the http ERP simulator, every request at either simulator held
//! `BENCH_LATENCY_MS` (default 20 ms), `max_in_flight = 8`, run by two
//! clients one after the other in this one process, each against its own
//! identically seeded sandbox:
//!
//! - the naive peer (`common/naive.rs`): 8 workers, list → detail → push →
//!   accepted write-back (read, PATCH, PUT), no ledger;
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
//!
//! Not a test: nothing here asserts a speed. Results go to docs/BENCHMARKS.md.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::naive::{self, Peer};
use common::{
    Daemon, MAX_IN_FLIGHT, Usage, first_request, latency, orders_wanted, self_cpu, source_rate,
    threads_cpu, wait_until, write_config,
};
use ordersync::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;

const SOURCE: &str = "bench";

/// In the ERP and written back as accepted: `state=processing`, the ERP
/// order number, and an `erp_line_number` on every goods line.
fn accepted(o: &Value) -> bool {
    o["state"] == "processing"
        && o["erp_order_number"].is_string()
        && o["order_lines"].as_array().is_some_and(|lines| {
            lines
                .iter()
                .filter(|l| l["type"] == "line")
                .all(|l| !l["erp_line_number"].is_null())
        })
}

/// Orders not yet seen done, checked from the front and dropped once done
/// (neither end state is ever undone), so a check usually looks at one
/// order and the poll can be frequent without eating the CPU it measures.
struct Pending(VecDeque<i64>);

impl Pending {
    fn all(&mut self, done: impl Fn(i64) -> bool) -> bool {
        while let Some(&id) = self.0.front() {
            if !done(id) {
                return false;
            }
            self.0.pop_front();
        }
        true
    }
}

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

/// `BENCH_SHIP_DURING=1`: the ERP ships each order as soon as it has it, so
/// ordersync's "shipped" write-backs run during the timed part too (as in
/// the first version of this benchmark); the naive peer does none.
fn ship_during() -> bool {
    std::env::var("BENCH_SHIP_DURING").is_ok_and(|v| v == "1")
}

/// One client's run up to the last accepted write-back.
struct Side {
    elapsed: Duration,
    orders: usize,
    source_requests: u64,
    erp_requests: u64,
    /// CPU seconds of the client alone.
    cpu: f64,
}

impl Side {
    fn rate(&self) -> f64 {
        self.orders as f64 / self.elapsed.as_secs_f64()
    }
    fn per_order(&self) -> f64 {
        (self.source_requests + self.erp_requests) as f64 / self.orders as f64
    }
    /// `max_in_flight / (requests per order x latency)`: all of a client's
    /// requests counted against the 8 it may have in flight.
    fn bound(&self) -> Option<f64> {
        let l = latency().as_secs_f64();
        (l > 0.0).then(|| MAX_IN_FLIGHT as f64 / (self.per_order() * l))
    }
}

async fn naive_side(n: usize) -> (Side, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let (cs0, erp0, cpu0) = (
        sb.cloudsuite.request_count(),
        sb.erp.request_count(),
        self_cpu(),
    );
    let peer = Peer {
        cloudsuite_url: sb.cloudsuite_url.clone(),
        token_url: sb.token_url.clone(),
        client_id: opts.cloudsuite.client_id.clone(),
        client_secret: opts.cloudsuite.client_secret.clone(),
        erp_url: sb.erp_url.clone(),
        erp_token: opts.erp.token.clone(),
        source: SOURCE.into(),
        workers: MAX_IN_FLIGHT,
        page_size: 100,
        source_rate: source_rate(),
    };
    // Its own runtime (2 threads, like the daemon's on this machine), so its
    // CPU can be told apart from the simulators' in /proc/self/task.
    let (run, cpu) = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("naive-peer")
            .enable_all()
            .build()
            .expect("runtime");
        let run = rt.block_on(naive::run(peer));
        (run, threads_cpu("naive-peer"))
    })
    .await
    .expect("naive peer");
    let sims_cpu = self_cpu() - cpu0 - cpu;
    let mut pending = Pending(pushable.iter().copied().collect());
    let all_done = pending.all(|id| sb.cloudsuite.order(id).is_some_and(|o| accepted(&o)));
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

struct Shipped {
    elapsed: Duration,
    source_requests: u64,
    erp_requests: u64,
}

async fn ordersync_side(n: usize) -> (Side, Shipped, Usage, f64) {
    let (sb, opts, pushable) = sandbox(n).await;
    let source = format!(
        "kind = \"cloudsuite\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"ordersync\"\nclient_secret_file = \"cs\"\n",
        sb.cloudsuite_url, sb.token_url
    );
    let (_dir, cfg) = write_config(
        &sb.erp_url,
        &opts.erp.token,
        &source,
        &[("cs", &opts.cloudsuite.client_secret)],
    );
    if ship_during() {
        sb.erp.set_ship_after(Some(Duration::ZERO));
    }
    let requests = || sb.cloudsuite.request_count() + sb.erp.request_count();
    let (cs0, erp0) = (sb.cloudsuite.request_count(), sb.erp.request_count());
    let cpu0 = self_cpu();
    let daemon = Daemon::start(&cfg);
    let started = first_request(requests, cs0 + erp0).await;
    let mut pending = Pending(pushable.iter().copied().collect());
    let finished = wait_until(
        || pending.all(|id| sb.cloudsuite.order(id).is_some_and(|o| accepted(&o))),
        Duration::from_millis(10),
    )
    .await;
    let usage = daemon.usage();
    let (cs1, erp1) = (sb.cloudsuite.request_count(), sb.erp.request_count());
    let sims_cpu = self_cpu() - cpu0;
    assert_eq!(
        sb.erp.orders().len(),
        pushable.len(),
        "ordersync: ERP orders"
    );
    let accepted_side = Side {
        elapsed: finished - started,
        orders: pushable.len(),
        source_requests: cs1 - cs0,
        erp_requests: erp1 - erp0,
        cpu: usage.cpu,
    };

    // The "shipped" write-back, timed on its own: the ERP ships everything now.
    sb.erp.set_ship_after(Some(Duration::ZERO));
    let ship_started = Instant::now();
    let mut pending = Pending(pushable.iter().copied().collect());
    let shipped_at = wait_until(
        || {
            pending.all(|id| {
                sb.cloudsuite
                    .order(id)
                    .is_some_and(|o| o["shipment_state"] == "sent")
            })
        },
        Duration::from_millis(50),
    )
    .await;
    let total = daemon.usage();
    daemon.stop();
    let shipped = Shipped {
        elapsed: shipped_at - ship_started,
        source_requests: sb.cloudsuite.request_count() - cs1,
        erp_requests: sb.erp.request_count() - erp1,
    };
    sb.shutdown().await;
    (accepted_side, shipped, total, sims_cpu)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests
    }
    ordersync::http::install_crypto();
    let n = orders_wanted();
    let ms = latency().as_millis();
    println!(
        "{n} seeded CloudSuite orders, {ms} ms per request at each simulator, max_in_flight = {MAX_IN_FLIGHT}, load average before: {}",
        load()
    );
    if let Some(rate) = source_rate() {
        println!("both clients limited to {rate} requests per second to CloudSuite (burst 1)");
    }
    let (naive, naive_sims) = naive_side(n).await;
    println!("load average after the naive peer: {}", load());
    let (ours, shipped, total, ours_sims) = ordersync_side(n).await;
    println!("load average after ordersync: {}", load());

    let row = |what: &str, a: String, b: String| println!("{what:<34} {a:>12} {b:>12}");
    println!();
    println!("until every pushable order is in the ERP with its accepted write-back:");
    row("", "naive peer".into(), "ordersync".into());
    row("orders", naive.orders.to_string(), ours.orders.to_string());
    let both = |f: &dyn Fn(&Side) -> String| (f(&naive), f(&ours));
    let (a, b) = both(&|s| format!("{:.1} s", s.elapsed.as_secs_f64()));
    row("wall time (first request to last)", a, b);
    let (a, b) = both(&|s| format!("{:.1}", s.rate()));
    row("orders per second", a, b);
    let (a, b) = both(&|s| format!("{:.2}", s.per_order()));
    row("requests per order (source + ERP)", a, b);
    let (a, b) = both(&|s| format!("{:.2}", s.source_requests as f64 / s.orders as f64));
    row("  of them to the source", a, b);
    let (a, b) = both(&|s| match s.bound() {
        Some(b) => format!("{b:.1}"),
        None => "-".into(),
    });
    row(&format!("latency bound 8/(req x {ms} ms)"), a, b);
    let (a, b) = both(&|s| match s.bound() {
        Some(b) => format!("{:.2}", s.rate() / b),
        None => "-".into(),
    });
    row("ratio to the bound", a, b);
    let (a, b) = both(&|s| format!("{:.2} s", s.cpu));
    row("CPU of the client", a, b);
    let (a, b) = both(&|s| format!("{:.0} us", s.cpu / s.orders as f64 * 1e6));
    row("  per order", a, b);
    row(
        "CPU of both simulators (+ checks)",
        format!("{naive_sims:.2} s"),
        format!("{ours_sims:.2} s"),
    );
    println!(
        "ordersync / naive peer:            {:.2} (orders per second)",
        ours.rate() / naive.rate()
    );
    println!();
    if ship_during() {
        println!(
            "BENCH_SHIP_DURING=1: the ERP shipped each order at once; shipped write-backs ran during the timed part"
        );
    }
    println!(
        "then, timed separately (ordersync only): the ERP ships all {} orders",
        ours.orders
    );
    println!(
        "shipped written back:              {:.1} s = {:.1} orders/s, {:.2} source requests per order (ERP {:.2})",
        shipped.elapsed.as_secs_f64(),
        ours.orders as f64 / shipped.elapsed.as_secs_f64(),
        shipped.source_requests as f64 / ours.orders as f64,
        shipped.erp_requests as f64 / ours.orders as f64
    );
    println!(
        "daemon over both parts:            peak RSS {:.1} MB, CPU {:.2} s = {:.0} us per order ({:.2} s in the kernel)",
        total.rss_kb as f64 / 1024.0,
        total.cpu,
        total.cpu / ours.orders as f64 * 1e6,
        total.kernel
    );
}
