//! `spawn_app()`: a sandbox on port 0, a config pointing at it, and helpers
//! to run the engine synchronously until the work is done (no sleeps in
//! place of waiting for a condition).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordersync::config::Config;
use ordersync::daemon::{build_engine, poll_live, poll_shipments};
use ordersync::outbox::Engine;
use ordersync::sandbox::{Sandbox, SandboxOptions};
use ordersync::store::Store;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const SOURCE: &str = "webshop-nl";

/// Held by the tests that load the machine most (three daemons and a
/// PostgreSQL server) and by the one that measures a time bound, so that
/// they do not run at the same time on a small CI machine.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes [`HEAVY`] (a test that panicked while holding it releases it).
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

pub struct App {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub config_path: PathBuf,
    pub config: Config,
}

pub struct AppOptions {
    pub sandbox: SandboxOptions,
    /// Extra keys for the [[sources]] table.
    pub source_extra: String,
    /// Extra keys for [daemon].
    pub daemon_extra: String,
    pub max_in_flight: usize,
    pub rate_limit_per_sec: u32,
    pub page_size: u32,
}

impl Default for AppOptions {
    fn default() -> Self {
        let mut sandbox = SandboxOptions::default();
        // Shipments become visible as soon as the ERP has the order.
        sandbox.erp.ship_after = Some(Duration::ZERO);
        AppOptions {
            sandbox,
            source_extra: String::new(),
            daemon_extra: String::new(),
            max_in_flight: 8,
            rate_limit_per_sec: 2000,
            page_size: 50,
        }
    }
}

pub async fn spawn_app(opts: AppOptions) -> App {
    let secret = opts.sandbox.cloudsuite.client_secret.clone();
    let AppOptions {
        sandbox,
        source_extra,
        daemon_extra,
        max_in_flight,
        rate_limit_per_sec,
        page_size,
    } = opts;
    start_app(sandbox, &daemon_extra, |sb| {
        let source = format!(
            r#"name = "{SOURCE}"
kind = "cloudsuite"
base_url = "{cs}"
token_url = "{token_url}"
client_id = "ordersync"
client_secret_file = "cs-secret"
schedule = "*/1 * * * * *"
page_size = {page_size}
max_in_flight = {max_in_flight}
rate_limit_per_sec = {rate_limit_per_sec}
{source_extra}
"#,
            cs = sb.cloudsuite_url,
            token_url = sb.token_url,
        );
        (source, vec![("cs-secret", secret)])
    })
    .await
}

/// Starts the sandbox and builds an app whose ERP is the sandbox's http ERP
/// and whose one source is what `source` returns: the body of its
/// `[[sources]]` table and the secret files it names, given the running
/// sandbox (for its URLs). Every source's tests start here.
pub async fn start_app(
    opts: SandboxOptions,
    daemon_extra: &str,
    source: impl FnOnce(&Sandbox) -> (String, Vec<(&'static str, String)>),
) -> App {
    ordersync::http::install_crypto();
    let erp_token = opts.erp.token.clone();
    let sandbox = Sandbox::start(opts).await.expect("sandbox starts");
    let (source_toml, mut secrets) = source(&sandbox);
    secrets.push(("erp-token", erp_token));
    let erp = format!(
        "kind = \"http\"\nurl = \"{}\"\ntoken_file = \"erp-token\"\n",
        sandbox.erp_url
    );
    app_from_config(sandbox, daemon_extra, &erp, &source_toml, &secrets)
}

/// Writes `secrets` (file name, value) and a config into a fresh directory and
/// loads it. `[daemon]` gets fast retries and a shipments poll every second,
/// plus `daemon_extra`; `erp` and `source` are the bodies of `[erp]` and the
/// one `[[sources]]` table.
pub fn app_from_config(
    sandbox: Sandbox,
    daemon_extra: &str,
    erp: &str,
    source: &str,
    secrets: &[(&str, String)],
) -> App {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in secrets {
        std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
    }
    // Fast retries unless the test sets its own.
    let retries = if daemon_extra.contains("retry_") {
        ""
    } else {
        "retry_initial = \"100ms\"\nretry_max = \"2s\""
    };
    let text = format!(
        r#"
[daemon]
state_dir = "state"
shipments_schedule = "*/1 * * * * *"
{retries}
{daemon_extra}

[erp]
{erp}

[[sources]]
{source}
"#
    );
    let config_path = dir.path().join("ordersync.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).expect("test config loads");
    App {
        dir,
        sandbox,
        config_path,
        config,
    }
}

impl App {
    pub fn db_path(&self) -> PathBuf {
        self.config.daemon.db_path()
    }

    pub fn engine(&self) -> Arc<Engine> {
        let store = Arc::new(Store::open(&self.db_path()).unwrap());
        build_engine(&self.config, store).unwrap()
    }

    /// Polls, pushes, reads shipments and writes back until a round finds
    /// nothing left to do, the way the daemon would but without its clock.
    pub async fn sync(&self, engine: &Arc<Engine>) {
        let stop = CancellationToken::new();
        let connector = engine.connectors.get(SOURCE).unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "no convergence within 120 s");
            poll_live(engine, &connector, &stop).await;
            engine.drain(SOURCE, None, 8, &stop).await.unwrap();
            let shipped = poll_shipments(engine, &stop).await.unwrap_or(1);
            engine.drain(SOURCE, None, 8, &stop).await.unwrap();
            let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
            let busy = ["queued", "pushed", "accepted", "shipped"]
                .iter()
                .any(|s| status.orders.get(*s).copied().unwrap_or(0) > 0);
            if shipped == 0 && !busy && self.unseen_pushable().is_empty() {
                return;
            }
        }
    }

    /// Sandbox orders that should reach the ERP but are not in the ledger.
    fn unseen_pushable(&self) -> Vec<i64> {
        let store = Store::open_read_only(&self.db_path()).unwrap();
        self.pushable_ids()
            .into_iter()
            .filter(|id| store.order_detail(&key(*id)).unwrap().is_none())
            .collect()
    }

    /// Ids of sandbox orders the payment gate lets through.
    pub fn pushable_ids(&self) -> Vec<i64> {
        self.sandbox
            .cloudsuite
            .orders()
            .iter()
            .filter(|o| pushable(o))
            .filter_map(|o| o["id"].as_i64())
            .collect()
    }

    pub fn run_binary(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ordersync"));
        cmd.arg("--config").arg(&self.config_path);
        cmd.env_remove("ORDERSYNC_CONFIG");
        cmd
    }
}

pub fn key(id: i64) -> String {
    format!("{SOURCE}:{id}")
}

pub fn pushable(o: &Value) -> bool {
    let ok = ["closed_success", "paid", "account", "none"];
    let state = o["state"].as_str().unwrap_or_default();
    matches!(state, "confirmed" | "processing" | "done")
        && o["offline"] != true
        && ok.contains(&o["payment_status"].as_str().unwrap_or("none"))
}

/// Every pushable order is in the ERP exactly once, with the source showing
/// every write-back exactly once; nothing else reached the ERP.
pub fn assert_converged(app: &App, ids: &[i64]) {
    let cs = &app.sandbox.cloudsuite;
    let erp = &app.sandbox.erp;
    assert!(!ids.is_empty());
    for &id in ids {
        let k = key(id);
        let in_erp = erp.erp_orders_for(&k);
        assert_eq!(
            in_erp.len(),
            1,
            "{k}: expected exactly one ERP order, found {}",
            in_erp.len()
        );
        let number = in_erp[0].erp_order_number.clone();
        let order = cs.order(id).unwrap();
        assert_eq!(order["state"], "processing", "{k}: state written back");
        assert_eq!(
            order["erp_order_number"],
            number.as_str(),
            "{k}: ERP number written back"
        );
        assert_eq!(
            order["shipment_state"], "sent",
            "{k}: shipment written back"
        );
        for line in order["order_lines"].as_array().unwrap() {
            if line["type"] == "line" {
                assert!(
                    line["erp_line_number"].is_i64(),
                    "{k}: line {} has no ERP line number",
                    line["id"]
                );
            }
        }
        // Each write-back took effect once: one change per field, no state going back.
        let history = cs.history(id);
        let changes = |field: &str| history.iter().filter(|c| c.field == field).count();
        assert_eq!(
            changes("state"),
            1,
            "{k}: state changed more than once: {history:?}"
        );
        assert_eq!(changes("erp_order_number"), 1, "{k}: {history:?}");
        assert_eq!(changes("shipment_state"), 1, "{k}: {history:?}");
        for c in history
            .iter()
            .filter(|c| c.field.ends_with(".erp_line_number"))
        {
            assert_eq!(
                changes(&c.field),
                1,
                "{k}: {} written more than once",
                c.field
            );
        }
    }
    let expected: std::collections::HashSet<String> = ids.iter().map(|i| key(*i)).collect();
    for o in erp.orders() {
        assert!(
            expected.contains(&o.order_key),
            "{} reached the ERP but should not have",
            o.order_key
        );
    }
    assert_eq!(erp.orders().len(), ids.len(), "ERP order count");
}

/// Status as the CLI prints it (JSON), through the real binary.
pub fn status_json(app: &App) -> Value {
    let out = app
        .run_binary()
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How often the ledger noted a change of this order at the source: reading
/// an unreadable order again is no news.
pub fn changes_noted(engine: &Engine, order_key: &str) -> usize {
    engine
        .store
        .order_detail(order_key)
        .unwrap()
        .map_or(0, |d| {
            d.events
                .iter()
                .filter(|e| e.kind.starts_with("changed"))
                .count()
        })
}

/// What the current thread logs at WARN and above while this lives. The
/// engine's calls in a test run on the test's own thread (its future is
/// polled there), so their warnings land here.
pub struct Warnings {
    buf: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_warnings() -> Warnings {
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || Sink(Arc::clone(&sink)))
        .finish();
    Warnings {
        buf,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Warnings {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// The lines that contain every one of `words`.
    pub fn lines_with(&self, words: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_string)
            .collect()
    }
}
