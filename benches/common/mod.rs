//! What the sync benchmarks share: a config around one source and the
//! sandbox's http ERP, the real release binary run until the work is done,
//! the daemon's own CPU and memory from /proc, and the report against the
//! latency bound `max_in_flight / (requests per order x latency)`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const LATENCY: Duration = Duration::from_millis(20);
pub const MAX_IN_FLIGHT: usize = 8;

pub fn orders_wanted() -> usize {
    std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// Writes `secrets` (file name, value) and a config: `[daemon]` polling
/// shipments every second, the http ERP at `erp_url`, and `source` as the one
/// `[[sources]]` table. The directory lives as long as the returned guard.
pub fn write_config(
    erp_url: &str,
    erp_token: &str,
    source: &str,
    secrets: &[(&str, &str)],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("erp"), erp_token).expect("write the ERP token");
    for (name, value) in secrets {
        std::fs::write(dir.path().join(name), value).expect("write a secret");
    }
    let text = format!(
        r#"
[daemon]
state_dir = "state"
shipments_schedule = "*/1 * * * * *"
[erp]
kind = "http"
url = "{erp_url}"
token_file = "erp"
max_in_flight = {MAX_IN_FLIGHT}
[[sources]]
name = "bench"
schedule = "*/1 * * * * *"
page_size = 100
max_in_flight = {MAX_IN_FLIGHT}
rate_limit_per_sec = 100000
{source}
"#
    );
    let path = dir.path().join("ordersync.toml");
    std::fs::write(&path, text).expect("write the config");
    (dir, path)
}

/// What the daemon used: CPU seconds (user + system), peak RSS in kB, and the
/// system part of the CPU.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    pub cpu: f64,
    pub rss_kb: u64,
    pub kernel: f64,
}

/// Reads a live process's usage from /proc.
fn proc_usage(pid: u32) -> Usage {
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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Usage {
        cpu: (ticks(11) + ticks(12)) / 100.0,
        rss_kb,
        kernel: ticks(12) / 100.0,
    }
}

/// Runs `ordersync run` with `config` until `done` (checked every 250 ms, at
/// most 30 minutes), then SIGTERM. Returns the wall time and the usage seen
/// just before the stop (CPU and peak RSS only grow).
pub async fn run_until(config: &PathBuf, done: impl Fn() -> bool) -> (Duration, Usage) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordersync"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ordersync");
    let pid = child.id();
    let mut usage;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        usage = proc_usage(pid);
        if done() {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            eprintln!("gave up after 30 minutes");
            break;
        }
    }
    let elapsed = started.elapsed();
    let last = proc_usage(pid);
    if last.cpu > 0.0 {
        usage = last;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    (elapsed, usage)
}

/// Prints the result lines recorded in docs/BENCHMARKS.md.
pub fn report(
    what: &str,
    orders: usize,
    elapsed: Duration,
    source_requests: u64,
    erp_requests: u64,
    usage: Usage,
) {
    let n = orders as f64;
    let per_order = source_requests as f64 / n;
    let rate = n / elapsed.as_secs_f64();
    let bound = MAX_IN_FLIGHT as f64 / (per_order * LATENCY.as_secs_f64());
    println!("{what}: {orders}");
    println!("wall time:                  {:.1} s", elapsed.as_secs_f64());
    println!("orders per second:          {rate:.1}");
    println!(
        "source requests per order:  {per_order:.2} (ERP requests per order {:.2})",
        erp_requests as f64 / n
    );
    println!(
        "latency bound:              {bound:.1} orders/s = {MAX_IN_FLIGHT} / ({per_order:.2} x 20 ms)"
    );
    println!("ratio to the bound:         {:.2}", rate / bound);
    println!(
        "peak RSS of the daemon:     {:.1} MB",
        usage.rss_kb as f64 / 1024.0
    );
    println!(
        "CPU time of the daemon:     {:.2} s = {:.0} us per order ({:.2} s of it in the kernel)",
        usage.cpu,
        usage.cpu / n * 1e6,
        usage.kernel
    );
    println!(
        "CPU per HTTP request:       {:.0} us ({} requests to the source and the ERP)",
        usage.cpu / (source_requests + erp_requests) as f64 * 1e6,
        source_requests + erp_requests
    );
}
