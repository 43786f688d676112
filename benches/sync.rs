//! Benchmark: the real `ordersync run` binary syncs N CloudSuite orders
//! (default 5,000) from the sandbox into the http ERP simulator, every
//! request delayed by 20 ms, `max_in_flight = 8`. Prints orders/s, the ratio
//! to the latency bound, the daemon's peak RSS and CPU time per order.
//!
//!     cargo bench --bench sync               # 5,000 orders
//!     BENCH_ORDERS=500 cargo bench --bench sync
//!
//! Not a test: nothing here asserts a speed. Results go to docs/BENCHMARKS.md.

mod common;

use std::time::Duration;

use common::{LATENCY, orders_wanted, report, run_until, write_config};
use ordersync::sandbox::{Sandbox, SandboxOptions};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests
    }
    ordersync::http::install_crypto();
    let mut opts = SandboxOptions::default();
    opts.cloudsuite.faults.latency = LATENCY;
    opts.erp.faults.latency = LATENCY;
    opts.erp.ship_after = Some(Duration::ZERO);
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb
        .cloudsuite
        .seed_orders(orders_wanted(), 2024, Duration::from_secs(6 * 3600));
    let pushable: Vec<i64> = ids
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
    let (cs_before, erp_before) = (sb.cloudsuite.request_count(), sb.erp.request_count());
    let (elapsed, usage) = run_until(&cfg, || {
        pushable.iter().all(|id| {
            sb.cloudsuite
                .order(*id)
                .is_some_and(|o| o["shipment_state"] == "sent")
        })
    })
    .await;
    report(
        "orders synced (pushed, accepted, shipped written back)",
        pushable.len(),
        elapsed,
        sb.cloudsuite.request_count() - cs_before,
        sb.erp.request_count() - erp_before,
        usage,
    );
    sb.shutdown().await;
}
