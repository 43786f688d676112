//! Benchmark: the real `ordersync run` binary syncs N CloudSuite orders
//! (default 5,000) from the sandbox into the http ERP simulator, every
//! request delayed by 20 ms, `max_in_flight = 8`. Prints orders/s, the ratio
//! to the latency bound, the daemon's peak RSS and CPU time per order.
//!
//!     cargo bench --bench sync               # 5,000 orders
//!     BENCH_ORDERS=500 cargo bench --bench sync
//!
//! Not a test: nothing here asserts a speed. Results go to docs/BENCHMARKS.md.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ordersync::sandbox::{Sandbox, SandboxOptions};

const LATENCY: Duration = Duration::from_millis(20);
const MAX_IN_FLIGHT: usize = 8;

/// (user + system CPU seconds, peak RSS in kB, system CPU seconds) of a live process.
fn proc_usage(pid: u32) -> (f64, u64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 here.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm, ticks(12) / 100.0)
}

fn peak(a: (f64, u64, f64), b: (f64, u64, f64)) -> (f64, u64, f64) {
    (a.0.max(b.0), a.1.max(b.1), a.2.max(b.2))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests
    }
    let orders: usize = std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    ordersync::http::install_crypto();
    let mut opts = SandboxOptions::default();
    opts.cloudsuite.faults.latency = LATENCY;
    opts.erp.faults.latency = LATENCY;
    opts.erp.ship_after = Some(Duration::ZERO);
    let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
    let ids = sb
        .cloudsuite
        .seed_orders(orders, 2024, Duration::from_secs(6 * 3600));
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

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cs"), &opts.cloudsuite.client_secret).unwrap();
    std::fs::write(dir.path().join("erp"), &opts.erp.token).unwrap();
    let config = format!(
        r#"
[daemon]
state_dir = "state"
shipments_schedule = "*/1 * * * * *"
[erp]
kind = "http"
url = "{erp}"
token_file = "erp"
max_in_flight = {MAX_IN_FLIGHT}
[[sources]]
name = "bench"
kind = "cloudsuite"
base_url = "{cs}"
token_url = "{token}"
client_id = "ordersync"
client_secret_file = "cs"
schedule = "*/1 * * * * *"
page_size = 100
max_in_flight = {MAX_IN_FLIGHT}
rate_limit_per_sec = 100000
"#,
        erp = sb.erp_url,
        cs = sb.cloudsuite_url,
        token = sb.token_url,
    );
    let cfg = dir.path().join("ordersync.toml");
    std::fs::write(&cfg, config).unwrap();

    let cs_before = sb.cloudsuite.request_count();
    let erp_before = sb.erp.request_count();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordersync"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ordersync");
    let pid = child.id();
    let mut usage = (0.0, 0, 0.0);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        usage = peak(usage, proc_usage(pid));
        let done = pushable.iter().all(|id| {
            sb.cloudsuite
                .order(*id)
                .is_some_and(|o| o["shipment_state"] == "sent")
        });
        if done {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            eprintln!("gave up after 30 minutes");
            break;
        }
    }
    let elapsed = started.elapsed();
    usage = peak(usage, proc_usage(pid));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();

    let n = pushable.len() as f64;
    let cs_requests = (sb.cloudsuite.request_count() - cs_before) as f64;
    let erp_requests = (sb.erp.request_count() - erp_before) as f64;
    let per_order = cs_requests / n;
    let rate = n / elapsed.as_secs_f64();
    let bound = MAX_IN_FLIGHT as f64 / (per_order * LATENCY.as_secs_f64());
    println!(
        "orders synced (pushed, accepted, shipped written back): {}",
        pushable.len()
    );
    println!("wall time:                  {:.1} s", elapsed.as_secs_f64());
    println!("orders per second:          {rate:.1}");
    println!(
        "source requests per order:  {per_order:.2} (ERP requests per order {:.2})",
        erp_requests / n
    );
    println!(
        "latency bound:              {bound:.1} orders/s = {MAX_IN_FLIGHT} / ({per_order:.2} x 20 ms)"
    );
    println!("ratio to the bound:         {:.2}", rate / bound);
    println!(
        "peak RSS of the daemon:     {:.1} MB",
        usage.1 as f64 / 1024.0
    );
    println!(
        "CPU time of the daemon:     {:.2} s = {:.0} us per order ({:.2} s of it in the kernel)",
        usage.0,
        usage.0 / n * 1e6,
        usage.2
    );
    println!(
        "CPU per HTTP request:       {:.0} us ({} requests to the source and the ERP)",
        usage.0 / (cs_requests + erp_requests) * 1e6,
        cs_requests + erp_requests
    );
    sb.shutdown().await;
}
