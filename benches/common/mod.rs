//! What the sync benchmarks share: a config around one source and the
//! sandbox's http ERP, the real release binary run until the work is done,
//! the daemon's own CPU and memory from /proc, and the report against the
//! latency bound `max_in_flight / (requests per order x latency)`.

#![allow(dead_code)] // each bench uses its own part of this

pub mod naive;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MAX_IN_FLIGHT: usize = 8;

/// Added to every request at each simulator: `BENCH_LATENCY_MS`, default 20.
pub fn latency() -> Duration {
    Duration::from_millis(
        std::env::var("BENCH_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    )
}

pub fn orders_wanted() -> usize {
    std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// `BENCH_SOURCE_RATE`: the source's `rate_limit_per_sec`; unset, a value
/// high enough never to matter.
pub fn source_rate() -> Option<u32> {
    std::env::var("BENCH_SOURCE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
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
    let rate = source_rate().unwrap_or(100_000);
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
rate_limit_per_sec = {rate}
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

/// utime + stime (seconds) and the command name of one `stat` file.
fn stat_cpu(path: &Path) -> Option<(String, f64, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (which may contain spaces) is in parentheses.
    let open = stat.find('(')?;
    let (name, after) = stat[open + 1..].rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 here.
    let (user, system) = (ticks(11)?, ticks(12)?);
    Some((name.to_string(), (user + system) / 100.0, system / 100.0))
}

/// Reads a live process's usage from /proc.
pub fn proc_usage(pid: u32) -> Usage {
    let (_, cpu, kernel) = stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Usage {
        cpu,
        rss_kb,
        kernel,
    }
}

/// CPU seconds (user + system) of this process's live threads whose name
/// starts with `prefix` (a runtime's `thread_name`).
pub fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|t| stat_cpu(&t.path().join("stat")))
        .filter(|(name, _, _)| name.starts_with(prefix))
        .map(|(_, cpu, _)| cpu)
        .sum()
}

/// CPU seconds (user + system) of this whole process so far.
pub fn self_cpu() -> f64 {
    stat_cpu(Path::new("/proc/self/stat"))
        .map(|(_, cpu, _)| cpu)
        .unwrap_or(0.0)
}

/// `ordersync run` with a config, as a child process.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub spawned: Instant,
}

impl Daemon {
    /// `BENCH_DAEMON_LOG=<file>`: the daemon logs at info level, as JSON
    /// lines (each with its timestamp), into that file: when each order was
    /// recorded, pushed and written back.
    /// `BENCH_ORDERSYNC_BIN=<path>` runs that binary instead of this
    /// build's (to compare two builds under the same load).
    pub fn start(config: &PathBuf) -> Daemon {
        let bin = std::env::var_os("BENCH_ORDERSYNC_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_ordersync").into());
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null());
        match std::env::var_os("BENCH_DAEMON_LOG") {
            Some(path) => {
                let log = std::fs::File::create(&path).expect("create BENCH_DAEMON_LOG");
                cmd.env("RUST_LOG", "info")
                    .env("ORDERSYNC__DAEMON__LOG_FORMAT", "json")
                    .stderr(log);
            }
            None => {
                cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
            }
        }
        let spawned = Instant::now();
        let child = cmd.spawn().expect("start ordersync");
        let pid = child.id();
        Daemon {
            child,
            pid,
            spawned,
        }
    }

    pub fn usage(&self) -> Usage {
        proc_usage(self.pid)
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Polls `requests` (a simulator's request counter) every millisecond until
/// it moves past `before`: the moment the first request arrived, give or take
/// a millisecond.
pub async fn first_request(requests: impl Fn() -> u64, before: u64) -> Instant {
    let started = Instant::now();
    while requests() <= before {
        if started.elapsed() > Duration::from_secs(120) {
            panic!("no request within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Instant::now()
}

/// Polls `done` every `every` until it holds (at most 30 minutes); returns
/// when it was first seen to hold.
pub async fn wait_until(mut done: impl FnMut() -> bool, every: Duration) -> Instant {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > Duration::from_secs(1800) {
            eprintln!("gave up after 30 minutes");
            break;
        }
        tokio::time::sleep(every).await;
    }
    Instant::now()
}

/// Runs `ordersync run` with `config` until `done` (checked every 250 ms, at
/// most 30 minutes), then SIGTERM. Returns the wall time and the usage seen
/// just before the stop (CPU and peak RSS only grow).
pub async fn run_until(config: &PathBuf, done: impl Fn() -> bool) -> (Duration, Usage) {
    let daemon = Daemon::start(config);
    let finished = wait_until(done, Duration::from_millis(250)).await;
    let usage = daemon.usage();
    let elapsed = finished - daemon.spawned;
    daemon.stop();
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
    let latency = latency();
    let bound = MAX_IN_FLIGHT as f64 / (per_order * latency.as_secs_f64());
    println!("{what}: {orders}");
    println!("wall time:                  {:.1} s", elapsed.as_secs_f64());
    println!("orders per second:          {rate:.1}");
    println!(
        "source requests per order:  {per_order:.2} (ERP requests per order {:.2})",
        erp_requests as f64 / n
    );
    println!(
        "latency bound:              {bound:.1} orders/s = {MAX_IN_FLIGHT} / ({per_order:.2} x {} ms)",
        latency.as_millis()
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
