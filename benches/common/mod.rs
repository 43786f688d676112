//! What the sync benchmarks share: a config around one source and the
//! sandbox's http ERP, the real release binary run until the work is done,
//! the daemon's own CPU and memory from /proc, a naive peer per source kind
//! run on its own runtime, and the side-by-side report against the latency
//! bound `max_in_flight / (requests per order x latency)`.

#![allow(dead_code)] // each bench uses its own part of this

pub mod naive;
pub mod naive_mplus;
pub mod naive_retailys;

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordersync::sandbox::Sandbox;

pub const MAX_IN_FLIGHT: usize = 8;

/// What every bench does first: false when `cargo test --benches` only asks
/// for the list of tests (then nothing runs); otherwise installs the crypto
/// provider the HTTP clients need.
pub fn start() -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    ordersync::http::install_crypto();
    true
}

/// Added to every request at each simulator: `BENCH_LATENCY_MS`, default 20.
pub fn latency() -> Duration {
    Duration::from_millis(
        std::env::var("BENCH_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    )
}

/// `BENCH_ORDERS`, default 5,000.
pub fn orders_wanted() -> usize {
    orders_wanted_or(5000)
}

/// `BENCH_ORDERS`, or `default` when unset.
pub fn orders_wanted_or(default: usize) -> usize {
    std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `BENCH_SOURCE_RATE`: the source's `rate_limit_per_sec`; unset, a value
/// high enough never to matter.
pub fn source_rate() -> Option<u32> {
    std::env::var("BENCH_SOURCE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// `BENCH_<name>=0` turns a part off; anything else (or unset) leaves it on.
pub fn on(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v != "0")
}

/// `BENCH_SCHEDULE`: the source's poll schedule (cron with seconds);
/// default every second. The first poll runs at startup either way.
pub fn schedule() -> String {
    std::env::var("BENCH_SCHEDULE").unwrap_or_else(|_| "*/1 * * * * *".into())
}

/// Writes `secrets` (file name, value) and a config: `[daemon]` polling
/// shipments every second, the http ERP at `erp_url`, and `source` as the one
/// `[[sources]]` table with `rate_limit_per_sec = rate` and the
/// [`schedule`]. The directory lives as long as the returned guard.
pub fn write_config(
    erp_url: &str,
    erp_token: &str,
    source: &str,
    secrets: &[(&str, &str)],
    rate: u32,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("erp"), erp_token).expect("write the ERP token");
    for (name, value) in secrets {
        std::fs::write(dir.path().join(name), value).expect("write a secret");
    }
    let schedule = schedule();
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
schedule = "{schedule}"
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

/// The `[[sources]]` keys of the sandbox's CloudSuite (secret in file `cs`).
pub fn cloudsuite_source(base_url: &str, token_url: &str) -> String {
    format!(
        "kind = \"cloudsuite\"\nbase_url = \"{base_url}\"\ntoken_url = \"{token_url}\"\nclient_id = \"ordersync\"\nclient_secret_file = \"cs\"\n"
    )
}

/// A CloudSuite order in the ERP and written back as accepted:
/// `state=processing`, the ERP order number, and an `erp_line_number` on
/// every goods line.
pub fn cloudsuite_accepted(o: &serde_json::Value) -> bool {
    o["state"] == "processing"
        && o["erp_order_number"].is_string()
        && o["order_lines"].as_array().is_some_and(|lines| {
            lines
                .iter()
                .filter(|l| l["type"] == "line")
                .all(|l| !l["erp_line_number"].is_null())
        })
}

/// What the daemon used: CPU seconds (user + system), peak RSS in kB, the
/// system part of the CPU, and the part of its ledger thread (SQLite's one
/// writer, `ordersync-ledger`; its name in /proc is cut to 15 bytes).
#[derive(Clone, Copy, Default)]
pub struct Usage {
    pub cpu: f64,
    pub rss_kb: u64,
    pub kernel: f64,
    pub ledger: f64,
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
    // Linux keeps a thread's name to 15 bytes: "ordersync-ledge".
    let ledger_name = &LEDGER_THREAD[..LEDGER_THREAD.len().min(15)];
    let ledger = tasks_cpu(&format!("/proc/{pid}/task"), |name| name == ledger_name);
    Usage {
        cpu,
        rss_kb,
        kernel,
        ledger,
    }
}

/// The daemon's ledger thread (`src/store/thread.rs`).
const LEDGER_THREAD: &str = "ordersync-ledger";

/// CPU seconds (user + system) of the live threads in `task_dir` (a
/// process's `/proc/<pid>/task`) whose name `wanted` accepts.
fn tasks_cpu(task_dir: &str, wanted: impl Fn(&str) -> bool) -> f64 {
    let Ok(dir) = std::fs::read_dir(task_dir) else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|t| stat_cpu(&t.path().join("stat")))
        .filter(|(name, _, _)| wanted(name))
        .map(|(_, cpu, _)| cpu)
        .sum()
}

/// CPU seconds (user + system) of this process's live threads whose name
/// starts with `prefix` (a runtime's `thread_name`).
pub fn threads_cpu(prefix: &str) -> f64 {
    tasks_cpu("/proc/self/task", |name| name.starts_with(prefix))
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
    /// The ledger's directory (`state_dir = "state"` next to the config).
    pub state_dir: PathBuf,
    stopped: bool,
}

/// `BENCH_MAX_STATE_MB`: the run stops (and the bench fails) when the
/// daemon's state directory (ledger, WAL, shm) grows past this; default
/// 4096. The ledger lives in a temporary directory on the same disk as
/// everyone's builds.
pub fn max_state_bytes() -> u64 {
    std::env::var("BENCH_MAX_STATE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096u64)
        * 1024
        * 1024
}

/// Bytes in the files of `dir` (not recursive).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Daemon {
    /// `BENCH_DAEMON_LOG=<file>`: the daemon logs at info level, as JSON
    /// lines (each with its timestamp), into that file: when each order was
    /// recorded, pushed and written back (`BENCH_DAEMON_LOG_LEVEL`, a
    /// `RUST_LOG` filter, for another level).
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
                let level =
                    std::env::var("BENCH_DAEMON_LOG_LEVEL").unwrap_or_else(|_| "info".into());
                cmd.env("RUST_LOG", level)
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
        let state_dir = config
            .parent()
            .map_or_else(|| PathBuf::from("state"), |d| d.join("state"));
        Daemon {
            child,
            pid,
            spawned,
            state_dir,
            stopped: false,
        }
    }

    /// Bytes the ledger takes on disk now (database, WAL, shm).
    pub fn state_bytes(&self) -> u64 {
        dir_bytes(&self.state_dir)
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
        self.stopped = true;
    }
}

/// A bench that fails (panics) must not leave its daemon running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

/// The load average (1, 5, 15 minutes), as /proc/loadavg shows it.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Orders not yet seen done, checked from the front and dropped once done
/// (no end state checked here is ever undone), so a check usually looks at
/// one order and the poll can be frequent without eating the CPU it measures.
pub struct Pending<T>(pub VecDeque<T>);

impl<T: Clone> Pending<T> {
    pub fn new(ids: &[T]) -> Self {
        Pending(ids.iter().cloned().collect())
    }

    pub fn all(&mut self, done: impl Fn(&T) -> bool) -> bool {
        while let Some(id) = self.0.front() {
            if !done(id) {
                return false;
            }
            self.0.pop_front();
        }
        true
    }
}

/// Runs a client on a runtime of its own (2 threads, like the daemon's on
/// this machine, named `naive-peer`), so that its CPU can be told apart from
/// the simulators' in /proc/self/task. Returns what it returned and its
/// CPU seconds.
pub async fn on_own_runtime<T, F, Fut>(make: F) -> (T, f64)
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("naive-peer")
            .enable_all()
            .build()
            .expect("runtime");
        let out = rt.block_on(make());
        let cpu = threads_cpu("naive-peer");
        drop(rt);
        (out, cpu)
    })
    .await
    .expect("naive peer")
}

/// When the daemon's run reached each point: its first request to either
/// simulator, the first order in the ERP, and the end condition.
pub struct Timeline {
    pub first_request: Instant,
    pub first_push: Instant,
    pub finished: Instant,
    /// The daemon's usage when the first push was seen.
    pub at_first_push: Usage,
    /// The most the ledger's files (database + WAL + shm) took on disk.
    pub peak_state_bytes: u64,
}

/// Watches a started daemon: `requests` (both simulators' counters, which
/// stood at `before` when it started) every millisecond until it moves, then
/// `pushed` (is any order in the ERP?) every millisecond, then `done` every
/// 10 ms (at most 30 minutes). The ledger's size on disk is read at every
/// check; past [`max_state_bytes`] the bench stops with a panic.
pub async fn watch_daemon(
    daemon: &Daemon,
    requests: impl Fn() -> u64,
    before: u64,
    pushed: impl Fn() -> bool,
    mut done: impl FnMut() -> bool,
) -> Timeline {
    let limit = max_state_bytes();
    let peak = std::cell::Cell::new(0u64);
    let check_disk = || {
        let now = daemon.state_bytes();
        peak.set(peak.get().max(now));
        if now > limit {
            panic!(
                "the daemon's ledger takes {} MB on disk ({}), past BENCH_MAX_STATE_MB = {}; stopped",
                now / (1024 * 1024),
                daemon.state_dir.display(),
                limit / (1024 * 1024)
            );
        }
    };
    let first_request = first_request(requests, before).await;
    let started = Instant::now();
    while !pushed() {
        if started.elapsed() > Duration::from_secs(600) {
            panic!("no order in the ERP within ten minutes");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first_push = Instant::now();
    let at_first_push = daemon.usage();
    let finished = wait_until(
        || {
            check_disk();
            done()
        },
        Duration::from_millis(10),
    )
    .await;
    check_disk();
    Timeline {
        first_request,
        first_push,
        finished,
        at_first_push,
        peak_state_bytes: peak.get(),
    }
}

/// Prints when the daemon started working, counted from its spawn.
pub fn print_start(daemon: &Daemon, t: &Timeline) {
    println!(
        "ordersync from its start: first request {:.3} s, first order in the ERP {:.3} s (RSS then {:.1} MB)",
        (t.first_request - daemon.spawned).as_secs_f64(),
        (t.first_push - daemon.spawned).as_secs_f64(),
        t.at_first_push.rss_kb as f64 / 1024.0
    );
    println!(
        "ordersync's ledger on disk: at most {:.1} MB (database + WAL + shm, checked every 10 ms), {:.1} MB at the end",
        t.peak_state_bytes as f64 / (1024.0 * 1024.0),
        daemon.state_bytes() as f64 / (1024.0 * 1024.0)
    );
}

/// One client's run up to the last accepted write-back.
pub struct Side {
    pub elapsed: Duration,
    pub orders: usize,
    pub source_requests: u64,
    pub erp_requests: u64,
    /// CPU seconds of the client alone.
    pub cpu: f64,
}

impl Side {
    pub fn rate(&self) -> f64 {
        self.orders as f64 / self.elapsed.as_secs_f64()
    }
    pub fn per_order(&self) -> f64 {
        (self.source_requests + self.erp_requests) as f64 / self.orders as f64
    }
    pub fn source_per_order(&self) -> f64 {
        self.source_requests as f64 / self.orders as f64
    }
    /// `max_in_flight / (requests per order x latency)`: all of a client's
    /// requests counted against the 8 it may have in flight.
    pub fn bound(&self) -> Option<f64> {
        let l = latency().as_secs_f64();
        (l > 0.0).then(|| MAX_IN_FLIGHT as f64 / (self.per_order() * l))
    }
}

/// The side-by-side table of both clients, up to the accepted write-back.
/// `sims`: CPU seconds of both simulators (and the checks) during each run.
/// `source_rate`: when both clients were limited to that many requests per
/// second at the source, the bound it sets (`rate / source requests per
/// order`) is printed too.
pub fn print_comparison(naive: &Side, ours: &Side, sims: (f64, f64), source_rate: Option<u32>) {
    let ms = latency().as_millis();
    let row = |what: &str, a: String, b: String| println!("{what:<34} {a:>12} {b:>12}");
    println!();
    println!("until every pushable order is in the ERP with its accepted write-back:");
    row("", "naive peer".into(), "ordersync".into());
    row("orders", naive.orders.to_string(), ours.orders.to_string());
    let both = |f: &dyn Fn(&Side) -> String| (f(naive), f(ours));
    let (a, b) = both(&|s| format!("{:.1} s", s.elapsed.as_secs_f64()));
    row("wall time (first request to last)", a, b);
    let (a, b) = both(&|s| format!("{:.1}", s.rate()));
    row("orders per second", a, b);
    let (a, b) = both(&|s| format!("{:.2}", s.per_order()));
    row("requests per order (source + ERP)", a, b);
    let (a, b) = both(&|s| format!("{:.2}", s.source_per_order()));
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
    if let Some(r) = source_rate {
        let (a, b) = both(&|s| format!("{:.1}", r as f64 / s.source_per_order()));
        row(&format!("rate bound {r}/(source req)"), a, b);
        let (a, b) = both(&|s| format!("{:.2}", s.rate() / (r as f64 / s.source_per_order())));
        row("ratio to the rate bound", a, b);
    }
    let (a, b) = both(&|s| format!("{:.2} s", s.cpu));
    row("CPU of the client", a, b);
    let (a, b) = both(&|s| format!("{:.0} us", s.cpu / s.orders as f64 * 1e6));
    row("  per order", a, b);
    row(
        "CPU of both simulators (+ checks)",
        format!("{:.2} s", sims.0),
        format!("{:.2} s", sims.1),
    );
    println!(
        "ordersync / naive peer:            {:.2} (orders per second)",
        ours.rate() / naive.rate()
    );
}

/// ordersync's side of the table: from its first request until the last
/// order had its accepted write-back (`timeline.finished`).
pub fn daemon_side(
    timeline: &Timeline,
    usage: &Usage,
    orders: usize,
    source_requests: u64,
    erp_requests: u64,
) -> Side {
    Side {
        elapsed: timeline.finished - timeline.first_request,
        orders,
        source_requests,
        erp_requests,
        cpu: usage.cpu,
    }
}

/// The part timed after the table, ordersync alone: the ERP ships every
/// order at once, until the source shows each one shipped.
pub struct Shipped {
    pub elapsed: Duration,
    pub source_requests: u64,
    pub erp_requests: u64,
}

/// Times the shipped part ([`Shipped`]): has the ERP ship everything now
/// and waits until `shown` holds for every one of `ids`. `requests`: the
/// source's and the ERP's request counters now.
pub async fn time_shipped<T: Clone>(
    sb: &Sandbox,
    ids: &[T],
    shown: impl Fn(&T) -> bool,
    requests: impl Fn() -> (u64, u64),
) -> Shipped {
    let (source0, erp0) = requests();
    sb.erp.set_ship_after(Some(Duration::ZERO));
    let started = Instant::now();
    let mut pending = Pending::new(ids);
    let done = wait_until(|| pending.all(&shown), Duration::from_millis(50)).await;
    let (source1, erp1) = requests();
    Shipped {
        elapsed: done - started,
        source_requests: source1 - source0,
        erp_requests: erp1 - erp0,
    }
}

/// The shipped part's line (`shown`: what the source shows, such as
/// "delivered at the till"), or that `BENCH_SHIPPED=0` left it out, then
/// the daemon's memory and CPU over what ran.
pub fn print_shipped(shipped: Option<&Shipped>, shown: &str, orders: usize, total: &Usage) {
    let Some(s) = shipped else {
        println!("BENCH_SHIPPED=0: no shipped part");
        print_daemon_total("daemon up to the last accepted write-back:", total, orders);
        return;
    };
    println!("then, timed separately (ordersync only): the ERP ships all {orders} orders");
    println!(
        "{:<34} {:.1} s = {:.1} orders/s, {:.2} source requests per order (ERP {:.2})",
        format!("{shown}:"),
        s.elapsed.as_secs_f64(),
        orders as f64 / s.elapsed.as_secs_f64(),
        s.source_requests as f64 / orders as f64,
        s.erp_requests as f64 / orders as f64
    );
    print_daemon_total("daemon over both parts:", total, orders);
}

/// The daemon's memory and CPU, `what` naming the span.
pub fn print_daemon_total(what: &str, total: &Usage, orders: usize) {
    println!(
        "{what:<34} peak RSS {:.1} MB, CPU {:.2} s = {:.0} us per order ({:.2} s in the kernel; on the ledger thread {:.2} s = {:.0} us per order)",
        total.rss_kb as f64 / 1024.0,
        total.cpu,
        total.cpu / orders as f64 * 1e6,
        total.kernel,
        total.ledger,
        total.ledger / orders as f64 * 1e6
    );
}
