//! Issue 14's benchmark: a fleet on PostgreSQL against one node, and the
//! single node on SQLite against PostgreSQL, with the naive peer in the
//! same run (`cargo bench --bench fleet`).
//!
//! Workload: `BENCH_SOURCES` CloudSuite simulators (default 20), each with
//! `BENCH_ORDERS` seeded orders (default 500), every request to them and
//! to the http ERP held `BENCH_LATENCY_MS` (default 20); one config with one
//! source per simulator, `max_in_flight = 8` each. For each setup, fresh
//! simulators and a fresh ledger:
//!
//! - naive: one plain client per source (`common::naive`, 8 workers each),
//!   all at once, no ledger;
//! - ordersync on SQLite, 1 node; on PostgreSQL, 1 node; on PostgreSQL,
//!   `BENCH_NODES` nodes (default 3).
//!
//! The nodes reach PostgreSQL over TLS with the certificate checked
//! (`verify-full`); `BENCH_LEDGER_TLS=disable` (or `prefer`) compares.
//!
//! Printed per setup: orders/s until every order is in the ERP with its
//! "accepted" write-back; on PostgreSQL, ledger transactions (commits) per
//! order from `pg_stat_database`; then, with the backlog done, 200 new
//! orders added at 20/s over the sources: p50/p99 from the moment an order
//! appears at its source to its push (the ERP's receive time); and on the
//! fleet: SIGKILL of the node holding a source's poll lease, seconds until
//! another node holds it and until an order added at the kill is in the ERP.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::naive::{self, Peer};
use common::{Daemon, MAX_IN_FLIGHT, Pending, latency, load, on_own_runtime};
use ordersync::sandbox::{Sandbox, SandboxOptions};
use ordersync::store::Store;
use ordersync::store::pg::testing::TestDb;
use serde_json::Value;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pushable(o: &Value) -> bool {
    let ok = ["closed_success", "paid", "account", "none"];
    let state = o["state"].as_str().unwrap_or_default();
    matches!(state, "confirmed" | "processing" | "done")
        && ok.contains(&o["payment_status"].as_str().unwrap_or_default())
}

fn accepted(o: &Value) -> bool {
    o["state"] == "processing" && o["erp_order_number"].is_string()
}

/// Fresh simulators: one sandbox per source (its CloudSuite), the first
/// one's http ERP for all.
struct Fleet {
    sandboxes: Vec<Sandbox>,
    opts: SandboxOptions,
    /// (source index, id) of every order that must reach the ERP.
    work: Vec<(usize, i64)>,
}

impl Fleet {
    async fn start(sources: usize, per_source: usize) -> Fleet {
        let mut opts = SandboxOptions::default();
        opts.cloudsuite.faults.latency = latency();
        opts.erp.faults.latency = latency();
        opts.erp.ship_after = None; // measured: the push and "accepted"
        opts.cloudsuite.seed_orders = 0; // only the bench's own orders
        let mut sandboxes = Vec::new();
        let mut work = Vec::new();
        for i in 0..sources {
            let sb = Sandbox::start(opts.clone()).await.expect("sandbox");
            for id in sb.cloudsuite.seed_orders(
                per_source,
                1000 + i as u64,
                Duration::from_secs(6 * 3600),
            ) {
                if sb.cloudsuite.order(id).is_some_and(|o| pushable(&o)) {
                    work.push((i, id));
                }
            }
            sandboxes.push(sb);
        }
        Fleet {
            sandboxes,
            opts,
            work,
        }
    }

    /// Every order accepted at its source (the ERP has it, "processing"
    /// written back).
    fn all_accepted(&self, pending: &mut Pending<(usize, i64)>) -> bool {
        pending.all(|(i, id)| {
            self.sandboxes[*i]
                .cloudsuite
                .order(*id)
                .is_some_and(|o| accepted(&o))
        })
    }

    /// A config with one source per simulator, and `[ledger]` when given.
    fn config(&self, ledger: Option<&TestDb>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("erp"), &self.opts.erp.token).unwrap();
        std::fs::write(dir.path().join("cs"), &self.opts.cloudsuite.client_secret).unwrap();
        let mut text = format!(
            "[daemon]\nstate_dir = \"state\"\nshipments_schedule = \"*/1 * * * * *\"\n\n[erp]\nkind = \"http\"\nurl = \"{}\"\ntoken_file = \"erp\"\nmax_in_flight = {MAX_IN_FLIGHT}\n",
            self.sandboxes[0].erp_url
        );
        for (i, sb) in self.sandboxes.iter().enumerate() {
            text.push_str(&format!(
                "\n[[sources]]\nname = \"s{i}\"\nkind = \"cloudsuite\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"cs\"\nschedule = \"*/1 * * * * *\"\npage_size = 100\nmax_in_flight = {MAX_IN_FLIGHT}\nrate_limit_per_sec = 100000\n",
                sb.cloudsuite_url, sb.token_url, self.opts.cloudsuite.client_id
            ));
        }
        if let Some(db) = ledger {
            std::fs::write(dir.path().join("pg"), db.password.expose()).unwrap();
            text.push_str(&format!(
                "\n[ledger]\nurl = \"{}\"\npassword_file = \"pg\"\n",
                ledger_url(db)
            ));
        }
        let path = dir.path().join("ordersync.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }
}

/// The nodes' ledger URL: `BENCH_LEDGER_TLS` = `verify-full` (the
/// default: what a careful deployment runs), `prefer` (the URL without
/// `sslmode`: encrypted, certificate not checked) or `disable`.
fn ledger_url(db: &TestDb) -> String {
    match std::env::var("BENCH_LEDGER_TLS").as_deref() {
        Ok("disable") => format!("{}?sslmode=disable", db.url),
        Ok("prefer") => db.url.clone(),
        _ => db.verified_url(),
    }
}

/// Commits in the benchmark's database so far.
fn commits(db: &TestDb) -> i64 {
    let mut c = db.raw();
    c.query_one(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .map(|r| r.get(0))
    .unwrap_or(0)
}

struct Outcome {
    name: String,
    orders: usize,
    secs: f64,
    commits_per_order: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    takeover_s: Option<f64>,
    failover_push_s: Option<f64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.orders as f64 / self.secs
    }
}

async fn naive_run(sources: usize, per_source: usize) -> Outcome {
    let fleet = Fleet::start(sources, per_source).await;
    let peers: Vec<Peer> = fleet
        .sandboxes
        .iter()
        .enumerate()
        .map(|(i, sb)| Peer {
            // One ERP for the whole fleet: the first sandbox's.
            erp_url: fleet.sandboxes[0].erp_url.clone(),
            ..Peer::for_sandbox(sb, &fleet.opts, &format!("s{i}"), None)
        })
        .collect();
    let started = Instant::now();
    let (runs, _cpu) = on_own_runtime(move || async move {
        let all = peers.into_iter().map(|p| tokio::spawn(naive::run(p)));
        futures_util::future::join_all(all).await
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let failed: usize = runs
        .iter()
        .map(|r| r.as_ref().map_or(1, |r| r.failed))
        .sum();
    let mut pending = Pending::new(&fleet.work);
    assert!(
        failed == 0 && fleet.all_accepted(&mut pending),
        "naive peers: {failed} failed, {} not accepted",
        pending.0.len()
    );
    Outcome {
        name: format!("naive peers ({sources} at once, no ledger)"),
        orders: fleet.work.len(),
        secs,
        commits_per_order: None,
        p50_ms: None,
        p99_ms: None,
        takeover_s: None,
        failover_push_s: None,
    }
}

async fn ordersync_run(sources: usize, per_source: usize, nodes: usize, postgres: bool) -> Outcome {
    let fleet = Fleet::start(sources, per_source).await;
    let db = if postgres {
        Some(tokio::task::spawn_blocking(TestDb::new).await.unwrap())
    } else {
        None
    };
    let (_dir, config) = fleet.config(db.as_ref());
    let db = db.map(Arc::new);
    let commits_before = match &db {
        Some(db) => {
            let db = Arc::clone(db);
            Some(
                tokio::task::spawn_blocking(move || commits(&db))
                    .await
                    .unwrap(),
            )
        }
        None => None,
    };
    let started = Instant::now();
    let mut daemons: Vec<Daemon> = (0..nodes).map(|_| Daemon::start(&config)).collect();
    let mut pending = Pending::new(&fleet.work);
    common::wait_until(
        || fleet.all_accepted(&mut pending),
        Duration::from_millis(100),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let orders = fleet.work.len();
    let commits_per_order = match (&db, commits_before) {
        (Some(db), Some(before)) => {
            let db = Arc::clone(db);
            let after = tokio::task::spawn_blocking(move || commits(&db))
                .await
                .unwrap();
            Some((after - before) as f64 / orders as f64)
        }
        _ => None,
    };

    // Latency: 200 new orders at 20/s over the sources (those that pass
    // the payment gate count), the backlog done.
    let mut added: Vec<(String, DateTime<Utc>)> = Vec::new();
    for k in 0..200 {
        let i = k % sources;
        let cs = &fleet.sandboxes[i].cloudsuite;
        let id = cs.add_confirmed_order();
        // A generated order may wait for its payment: only those the ERP
        // gets count.
        if cs.order(id).is_some_and(|o| pushable(&o)) {
            added.push((format!("s{i}:{id}"), Utc::now()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let erp = &fleet.sandboxes[0].erp;
    common::wait_until(
        || added.iter().all(|(k, _)| !erp.erp_orders_for(k).is_empty()),
        Duration::from_millis(100),
    )
    .await;
    let mut ms: Vec<f64> = added
        .iter()
        .filter_map(|(k, at)| {
            erp.erp_orders_for(k)
                .first()
                .map(|o| (o.created_at - *at).num_milliseconds() as f64)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p99) = (pct(0.5), pct(0.99));

    // Failover: kill the node holding s0's poll lease.
    let mut takeover_s = None;
    let mut failover_push_s = None;
    if let (Some(db), true) = (&db, nodes > 1) {
        let (url, pw) = (ledger_url(db), db.password.clone());
        let store = tokio::task::spawn_blocking(move || Store::connect(&url, Some(&pw)))
            .await
            .unwrap()
            .expect("connect");
        let store = Arc::new(store);
        let holder = |store: Arc<Store>| async move {
            tokio::task::spawn_blocking(move || {
                store
                    .fleet_view()
                    .ok()
                    .and_then(|v| v.into_iter().find(|n| n.sources.iter().any(|s| s == "s0")))
                    .map(|n| n.pid)
            })
            .await
            .unwrap()
        };
        let pid = holder(Arc::clone(&store)).await.expect("a node polls s0");
        let victim = daemons
            .iter()
            .position(|d| d.pid == pid)
            .expect("the holder is one of ours");
        let killed = Instant::now();
        // Dropping a running daemon SIGKILLs it.
        drop(daemons.remove(victim));
        let cs = &fleet.sandboxes[0].cloudsuite;
        let id = loop {
            let id = cs.add_confirmed_order();
            if cs.order(id).is_some_and(|o| pushable(&o)) {
                break id;
            }
        };
        let key = format!("s0:{id}");
        loop {
            if let Some(p) = holder(Arc::clone(&store)).await
                && p != pid
            {
                takeover_s = Some(killed.elapsed().as_secs_f64());
                break;
            }
            if killed.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        common::wait_until(
            || !erp.erp_orders_for(&key).is_empty(),
            Duration::from_millis(50),
        )
        .await;
        failover_push_s = Some(killed.elapsed().as_secs_f64());
    }
    for d in daemons {
        d.stop();
    }
    let ledger = if postgres {
        let tls = std::env::var("BENCH_LEDGER_TLS").unwrap_or_else(|_| "verify-full".into());
        format!("PostgreSQL (sslmode {tls})")
    } else {
        "SQLite".to_string()
    };
    Outcome {
        name: format!("ordersync, {nodes} node(s) on {ledger}"),
        orders,
        secs,
        commits_per_order,
        p50_ms: Some(p50),
        p99_ms: Some(p99),
        takeover_s,
        failover_push_s,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !common::start() {
        return;
    }
    let sources = env_or("BENCH_SOURCES", 20);
    let per_source = env_or("BENCH_ORDERS", 500);
    let nodes = env_or("BENCH_NODES", 3);
    println!(
        "fleet bench: {sources} sources x {per_source} orders, {} ms per request, max_in_flight {MAX_IN_FLIGHT}; load {}",
        latency().as_millis(),
        load()
    );
    let mut outcomes = vec![naive_run(sources, per_source).await];
    println!("  done: {} (load {})", outcomes[0].name, load());
    for (n, pg) in [(1, false), (1, true), (nodes, true)] {
        let o = ordersync_run(sources, per_source, n, pg).await;
        println!("  done: {} (load {})", o.name, load());
        outcomes.push(o);
    }
    let naive_rate = outcomes[0].rate();
    let show = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1}{unit}"));
    println!();
    println!(
        "| setup | orders | orders/s | x naive | commits/order | push p50 | push p99 | lease taken over | pushed after kill |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {:.1} | {:.2} | {} | {} | {} | {} | {} |",
            o.name,
            o.orders,
            o.rate(),
            o.rate() / naive_rate,
            show(o.commits_per_order, ""),
            show(o.p50_ms, " ms"),
            show(o.p99_ms, " ms"),
            show(o.takeover_s, " s"),
            show(o.failover_push_s, " s"),
        );
    }
    println!("load at the end: {}", load());
}
