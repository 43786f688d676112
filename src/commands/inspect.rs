//! `status`, `orders list|show`, `retry`: read (or re-queue) the ledger while
//! the daemon runs. They never need secrets.

use std::process::ExitCode;

use crate::config::Config;
use crate::store::{StatusReport, Store};

fn dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub fn status(config: &Config, json: bool, check: bool) -> anyhow::Result<ExitCode> {
    let store = Store::for_config_read_only(config)?;
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let report = store.status(&names)?;
    let stale = crate::health::stale_sources(&store, config, None)?;
    let failing = crate::health::failing_sources(&store, config)?;
    let nodes = if store.is_shared() {
        Some(store.fleet_view()?)
    } else {
        None
    };
    if json {
        let mut v = status_json(config, &report);
        v["ledger"] = serde_json::json!(store.describe());
        if let Some(nodes) = &nodes {
            v["nodes"] = serde_json::json!(nodes);
        }
        v["stale_sources"] = serde_json::json!(stale);
        v["failing_sources"] = serde_json::json!(failing);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_status(config, &report);
        if let Some(nodes) = &nodes {
            print_nodes(&store.describe(), nodes);
        }
        for s in &stale {
            println!("STALE: {s}");
        }
        for s in &failing {
            println!("FAILING: {s}");
        }
    }
    if check && (!report.parked.is_empty() || !stale.is_empty() || !failing.is_empty()) {
        eprintln!(
            "status --check: {} parked job(s), {} source(s) not polling, {} source(s) failing",
            report.parked.len(),
            stale.len(),
            failing.len()
        );
        return Ok(ExitCode::from(super::EXIT_RUNTIME));
    }
    Ok(ExitCode::SUCCESS)
}

/// `skip KEY --reason`: the operator decides this order is not to be worked
/// on (handled by hand, a test order...). Recorded; `retry` does not undo it.
pub fn skip(config: &Config, key: &str, reason: &str) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        return Err(
            crate::config::ConfigError("--reason: say why the order is skipped".into()).into(),
        );
    }
    let store = Store::for_config(config)?;
    match store.skip_order(key, reason)? {
        None => {
            eprintln!("no order {key:?} in the ledger (keys look like SOURCE:EXTERNAL_ID)");
            Ok(ExitCode::from(super::EXIT_RUNTIME))
        }
        Some(n) => {
            println!("{key}: skipped ({n} open job(s) stopped): {reason}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn db(config: &Config, cmd: &crate::cli::DbCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        crate::cli::DbCommand::Backup { path } => {
            if path.exists() {
                return Err(crate::config::ConfigError(format!(
                    "db backup: {} already exists; choose a new path",
                    path.display()
                ))
                .into());
            }
            let store = Store::for_config_read_only(config)?;
            store.backup_to(path)?;
            println!("ledger copied to {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        crate::cli::DbCommand::Migrate {
            to,
            password_file,
            password_env,
            force,
        } => migrate_to(config, to, password_file, password_env, *force),
    }
}

/// `db migrate --to URL`: the SQLite ledger of `daemon.state_dir` into an
/// empty PostgreSQL ledger, verified (see `store::copy`).
fn migrate_to(
    config: &Config,
    to: &str,
    password_file: &Option<std::path::PathBuf>,
    password_env: &Option<String>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    use crate::config::ConfigError;
    let url = crate::config::check_ledger_url("--to", to)?;
    let here = std::env::current_dir().unwrap_or_default();
    let reference = match crate::secret::SecretRef::from_pair(
        "--password",
        password_file.clone(),
        password_env.clone(),
        &here,
    )
    .map_err(ConfigError)?
    {
        Some(r) => Some(r),
        None => config.ledger.as_ref().and_then(|l| l.password.clone()),
    };
    let password = reference
        .map(|r| r.load("--password").map_err(ConfigError))
        .transpose()?;
    let source = Store::open_read_only(&config.daemon.db_path())?;
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let alive = source.status(&names)?.daemon_alive_at;
    if let Some(at) = alive
        .as_deref()
        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        && chrono::Utc::now() - at < chrono::Duration::minutes(2)
        && !force
    {
        return Err(ConfigError(format!(
            "db migrate --to: a daemon wrote to {} at {at}; stop it first (systemctl stop ordersync), or pass --force",
            source.describe()
        ))
        .into());
    }
    let target = Store::connect(&url, password.as_ref())?;
    let copied = crate::store::copy::copy_ledger(&source, &target)?;
    println!("copied {} into {}:", source.describe(), target.describe());
    println!("{:<14} {:>9} SHA-256 (same on both sides)", "TABLE", "ROWS");
    for t in &copied {
        println!("{:<14} {:>9} {}", t.table, t.rows, t.hash);
    }
    println!(
        "next: set [ledger] url = \"{url}\" (and password_file) in {}, then start the nodes; keep {} as the fallback copy",
        config.path.display(),
        source.describe()
    );
    Ok(ExitCode::SUCCESS)
}

fn status_json(config: &Config, r: &StatusReport) -> serde_json::Value {
    let sources: Vec<serde_json::Value> = r
        .sources
        .iter()
        .map(|s| {
            let kind = config
                .source(&s.name)
                .map(|c| c.kind.as_str())
                .unwrap_or("?");
            serde_json::json!({
                "name": s.name, "kind": kind, "enabled": config.source(&s.name).map(|c| c.enabled),
                "cursor": shown_cursor(config, &s.name, s.cursor.as_deref()), "last_poll_at": s.last_poll_at,
                "last_success_at": s.last_success_at, "last_error": s.last_error,
                "past_last_error": s.past_last_failure(),
            })
        })
        .collect();
    serde_json::json!({
        "sources": sources,
        "orders": r.orders,
        "orders_by_source": r.orders_by_source,
        "parked": r.parked,
        "jobs_due": r.jobs_due,
        "shipments_cursor": r.shipments_cursor,
        "daemon_alive_at": r.daemon_alive_at,
    })
}

/// The cursor as `status` shows it: times in UTC with their zone.
fn shown_cursor(config: &Config, source: &str, cursor: Option<&str>) -> Option<String> {
    let cursor = cursor?;
    Some(match config.source(source) {
        Some(c) => crate::sources::cursor_for_display(c.kind, cursor),
        None => cursor.to_string(),
    })
}

fn print_nodes(ledger: &str, nodes: &[crate::store::pg::NodeView]) {
    println!();
    println!("FLEET on {ledger}: {} node(s)", nodes.len());
    println!(
        "{:<36} {:<16} {:>7} {:<21} {:>6} {:>5} SOURCES",
        "NODE", "HOST", "PID", "LAST HEARTBEAT", "AGE", "JOBS"
    );
    for n in nodes {
        let sources = if n.sources.is_empty() {
            "-".to_string()
        } else {
            n.sources.join(",")
        };
        println!(
            "{:<36} {:<16} {:>7} {:<21} {:>5}s {:>5} {}",
            n.id, n.host, n.pid, n.last_heartbeat_at, n.heartbeat_age_s, n.jobs_running, sources
        );
    }
}

fn print_status(config: &Config, r: &StatusReport) {
    println!(
        "{:<20} {:<11} {:<21} {:<30} LAST ERROR",
        "SOURCE", "KIND", "LAST POLL", "CURSOR"
    );
    for s in &r.sources {
        let kind = config
            .source(&s.name)
            .map(|c| c.kind.as_str())
            .unwrap_or("?");
        println!(
            "{:<20} {:<11} {:<21} {:<30} {}",
            s.name,
            kind,
            dash(&s.last_poll_at),
            dash(&shown_cursor(config, &s.name, s.cursor.as_deref())),
            match (&s.last_error, s.past_last_failure()) {
                (Some(e), true) => format!("(the poll under way got past it) {e}"),
                (e, _) => dash(e).to_string(),
            }
        );
    }
    for (source, states) in &r.orders_by_source {
        let counts: Vec<String> = states.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {source}: {}", counts.join(", "));
    }
    println!();
    println!("DAEMON LAST ALIVE: {}", dash(&r.daemon_alive_at));
    let counts: Vec<String> = r.orders.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "ORDERS: {}",
        if counts.is_empty() {
            "none yet".to_string()
        } else {
            counts.join(", ")
        }
    );
    println!(
        "JOBS DUE: {}    ERP SHIPMENTS CURSOR: {}",
        r.jobs_due,
        dash(&r.shipments_cursor)
    );
    if r.parked.is_empty() {
        println!("PARKED: none");
    } else {
        println!(
            "\nPARKED ({}): re-queue with `ordersync retry KEY` once the cause is fixed",
            r.parked.len()
        );
        println!(
            "{:<30} {:<15} {:>8} {:<21} REASON",
            "ORDER KEY", "JOB", "ATTEMPTS", "PARKED AT"
        );
        for p in &r.parked {
            println!(
                "{:<30} {:<15} {:>8} {:<21} {}",
                p.order_key,
                p.job,
                p.attempts,
                dash(&p.parked_at),
                p.reason
            );
        }
    }
}

pub fn orders(config: &Config, cmd: &crate::cli::OrdersCommand) -> anyhow::Result<ExitCode> {
    let store = Store::for_config_read_only(config)?;
    match cmd {
        crate::cli::OrdersCommand::List {
            source,
            state,
            limit,
            json,
        } => {
            let rows = store.list_orders(source.as_deref(), state.as_deref(), *limit)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<30} {:<10} {:<14} {:<21} NOTE",
                    "ORDER KEY", "STATE", "ERP ORDER", "FIRST SEEN"
                );
                for o in rows {
                    println!(
                        "{:<30} {:<10} {:<14} {:<21} {}",
                        o.order_key,
                        o.state,
                        dash(&o.erp_order_number),
                        o.first_seen_at,
                        dash(&o.note)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        crate::cli::OrdersCommand::Show { order_key, json } => {
            let Some(d) = store.order_detail(order_key)? else {
                eprintln!(
                    "no order {order_key:?} in the ledger (keys look like SOURCE:EXTERNAL_ID)"
                );
                return Ok(ExitCode::from(super::EXIT_RUNTIME));
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&d)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("order        {}", d.row.order_key);
            println!("state        {}", d.row.state);
            println!("erp order    {}", dash(&d.row.erp_order_number));
            println!("recorded     {} by {}", d.row.first_seen_at, d.recorded_by);
            if let Some(v) = &d.source_version {
                println!("at source    {v}");
            }
            if let Some(n) = &d.row.note {
                println!("note         {n}");
            }
            if let Some(c) = &d.changed_after_push_at {
                println!("CHANGED AT THE SOURCE AFTER THE PUSH: {c} (see events)");
            }
            match &d.canonical {
                Some(order) => {
                    println!("\ncanonical order (what the ERP gets, or got):");
                    for line in serde_json::to_string_pretty(order)?.lines() {
                        println!("  {line}");
                    }
                    println!();
                }
                None => println!("canonical    - (the order could not be mapped; see note)"),
            }
            for l in &d.erp_lines {
                println!(
                    "line         {} -> ERP line {}",
                    l.source_line_id, l.erp_line_number
                );
            }
            println!("\njobs:");
            for j in &d.jobs {
                println!(
                    "  {} {} [{}] attempts {} next {}{}",
                    j.kind,
                    j.job_ref,
                    j.state,
                    j.attempts,
                    j.next_attempt_at,
                    j.parked_reason
                        .as_deref()
                        .map(|r| format!(" parked: {r}"))
                        .unwrap_or_default()
                );
                for a in &j.history {
                    println!(
                        "    #{} {} {} {}",
                        a.attempt,
                        a.at,
                        a.outcome,
                        dash(&a.error)
                    );
                }
            }
            println!("\nevents:");
            for e in &d.events {
                println!("  {} {} {}", e.at, e.kind, dash(&e.detail));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn retry(config: &Config, args: &crate::cli::RetryArgs) -> anyhow::Result<ExitCode> {
    let store = Store::for_config(config)?;
    if args.parked {
        let n = store.requeue_all_parked()?;
        println!("re-queued {n} parked job(s)");
        return Ok(ExitCode::SUCCESS);
    }
    let key = args.order_key.as_deref().unwrap_or_default();
    if store.order_for_job(key)?.is_none() {
        eprintln!("no order {key:?} in the ledger (keys look like SOURCE:EXTERNAL_ID)");
        return Ok(ExitCode::from(super::EXIT_RUNTIME));
    }
    let n = store.requeue_order(key)?;
    if n == 0 {
        println!("{key}: nothing parked");
    } else {
        println!("{key}: re-queued {n} job(s); a running daemon picks them up within a second");
    }
    Ok(ExitCode::SUCCESS)
}
