//! The command line (SPEC §4). Parsing only; the work is in `commands`.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ordersync",
    version,
    about = "Moves shop and till orders into the ERP and writes the ERP's answer back"
)]
pub struct Cli {
    /// Config file [default: $ORDERSYNC_CONFIG, else /etc/ordersync/ordersync.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon; stops cleanly on SIGTERM/SIGINT
    Run,
    /// Replay a window of source history into the ERP (may run beside the daemon)
    Backfill(BackfillArgs),
    /// Cursors, last poll, counts per state, parked jobs
    Status {
        #[arg(long)]
        json: bool,
        /// Exit 1 when a job is parked or a source has not polled for three
        /// schedule periods (for cron and monitoring)
        #[arg(long)]
        check: bool,
    },
    /// Inspect recorded orders and their jobs
    #[command(subcommand)]
    Orders(OrdersCommand),
    /// Re-queue parked work
    Retry(RetryArgs),
    /// Stop working on an order on purpose (recorded with the reason)
    Skip {
        order_key: String,
        #[arg(long)]
        reason: String,
    },
    /// The ledger
    #[command(subcommand)]
    Db(DbCommand),
    /// Validate the configuration and secrets, and reach every remote, without side effects
    CheckConfig(CheckConfigArgs),
    /// Sources vs ERP for a window: missing, orphaned and doubled orders (read-only)
    Reconcile {
        /// Start of the window: 2024-06-29, 2024-06-29T00:00:00Z or a duration like 7d
        #[arg(long, value_parser = parse_when)]
        since: DateTime<Utc>,
        /// Only these sources (repeatable)
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Serve the simulators on loopback: CloudSuite, Titelive MediaWeb, Retailys,
    /// MplusKASSA, Vinou and the http ERP (ports below; config/demo.toml points at them)
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Sandbox + daemon on a throwaway ledger: watch orders flow
    #[cfg(feature = "sandbox")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Read each secret the config names in /run/credentials/ordersync.service/
    /// (or $CREDENTIALS_DIRECTORY/) from the file the installed unit's
    /// LoadCredential= line loads it from, as the service will get it; a
    /// credential the unit does not load is a problem. For root, before the
    /// first start.
    #[arg(long)]
    pub credentials_from_unit: bool,
    /// With --credentials-from-unit: find the unit, its drop-ins and the
    /// credential files under this directory instead of /
    #[arg(long, value_name = "DIR", requires = "credentials_from_unit")]
    pub root: Option<PathBuf>,
    /// Print the unit drop-in that loads every credential the config names
    /// (one LoadCredential= line each; names and paths only) and check nothing
    #[arg(long, conflicts_with_all = ["credentials_from_unit", "offline"])]
    pub unit_credentials: bool,
    /// Check the config and read every secret, but contact no remote
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Start of the window: 2024-06-29, 2024-06-29T00:00:00Z or a duration like 7d
    #[arg(long, value_parser = parse_when)]
    pub since: DateTime<Utc>,
    /// End of the window (same forms); default: now
    #[arg(long, value_parser = parse_when)]
    pub until: Option<DateTime<Utc>>,
    /// Only these sources (repeatable); default: every enabled source
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// List what would be recorded and pushed; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Recorded orders, newest first
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One order: its version at the source, canonical form, ERP numbers, jobs and their attempts, events
    Show {
        order_key: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the ledger with SQLite's online backup (safe while the daemon runs)
    Backup { path: std::path::PathBuf },
    /// Copy the SQLite ledger into an empty PostgreSQL ledger (daemon stopped), verified row by row
    Migrate {
        /// The PostgreSQL ledger: postgres://user@host:5432/db (no password in it)
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file holding its password (default: the config's ledger.password_file / _env)
        #[arg(long, value_name = "PATH")]
        password_file: Option<std::path::PathBuf>,
        /// An environment variable holding its password
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Copy although a daemon wrote to the SQLite ledger in the last two minutes
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RetryArgs {
    /// The order key (SOURCE:EXTERNAL_ID) whose parked jobs to re-queue
    pub order_key: Option<String>,
    /// Re-queue every parked job
    #[arg(long)]
    pub parked: bool,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args, Clone)]
pub struct SandboxArgs {
    /// Address for the CloudSuite simulator
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub cloudsuite_listen: std::net::SocketAddr,
    /// Address for the http ERP simulator
    #[arg(long, default_value = "127.0.0.1:7402")]
    pub erp_listen: std::net::SocketAddr,
    /// Address for the Titelive MediaWeb simulator
    #[arg(long, default_value = "127.0.0.1:7403")]
    pub titelive_listen: std::net::SocketAddr,
    /// Address for the Retailys simulator
    #[arg(long, default_value = "127.0.0.1:7404")]
    pub retailys_listen: std::net::SocketAddr,
    /// Address for the MplusKASSA (SOAP) simulator
    #[arg(long, default_value = "127.0.0.1:7405")]
    pub mplus_listen: std::net::SocketAddr,
    /// Address for the Vinou simulator
    #[arg(long, default_value = "127.0.0.1:7406")]
    pub vinou_listen: std::net::SocketAddr,
    /// Orders to seed
    #[arg(long, default_value_t = 50)]
    pub orders: usize,
    /// Latency added to every request, like "20ms"
    #[arg(long, value_parser = parse_duration_arg, default_value = "0ms")]
    pub latency: std::time::Duration,
    /// Share of requests answered 5xx (0..1)
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Share of requests answered 429 with Retry-After (0..1)
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    /// Share of requests whose connection drops after the change is applied (0..1)
    #[arg(long, default_value_t = 0.0)]
    pub fault_drop: f64,
    /// Seconds after an ERP order is created before it ships
    #[arg(long, default_value_t = 5)]
    pub ship_after_secs: u64,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its config, secrets and ledger
    #[arg(long, default_value = ".ordersync-demo")]
    pub dir: PathBuf,
    /// Orders in the sandbox at the start (more arrive while it runs)
    #[arg(long, default_value_t = 30)]
    pub orders: usize,
    /// Push into this Tryton (server + database, e.g. from
    /// tests/tryton/serve.sh: http://127.0.0.1:8000/demo) instead of the http ERP simulator
    #[arg(long, value_name = "URL")]
    pub tryton: Option<String>,
}

#[cfg(feature = "sandbox")]
fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

/// `WHEN`: a date (midnight UTC), an RFC 3339 time, or a duration back from now.
pub fn parse_when(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
        return Ok(ts.with_timezone(&Utc));
    }
    if t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && let Ok(d) = crate::config::parse_duration(t)
        && let Ok(d) = chrono::Duration::from_std(d)
    {
        return Ok(Utc::now() - d);
    }
    Err(format!(
        "{s:?} is not a date (2024-06-29), an RFC 3339 time (2024-06-29T00:00:00Z) or a duration (7d, 12h)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_forms() {
        assert_eq!(
            parse_when("2024-06-29").unwrap().to_rfc3339(),
            "2024-06-29T00:00:00+00:00"
        );
        assert_eq!(
            parse_when("2024-06-29T10:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2024-06-29T08:00:00+00:00"
        );
        let week = parse_when("7d").unwrap();
        let expect = Utc::now() - chrono::Duration::days(7);
        assert!((week - expect).num_seconds().abs() < 5);
        for bad in ["yesterday", "2024-13-45", "7 days", ""] {
            let err = parse_when(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
