//! Tests against a real trytond: `tests/tryton/setup.sh` prepares (once per
//! machine, cached, under a lock) a venv with the pinned modules and a
//! template database with master data; each test clones that database with
//! SQLite's backup API, starts its own trytond on a free loopback port and
//! kills it by PID when dropped.

mod batch;
mod bench;
mod cancel;
mod check;
mod crash;
mod flow;
mod taxes;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ordersync::daemon::{build_engine, poll_live, poll_shipments};
use ordersync::erp::tryton::rpc::Rpc;
use ordersync::http::{Endpoint, Failure};
use ordersync::outbox::Engine;
use ordersync::sandbox::{Sandbox, SandboxOptions};
use ordersync::secret::Secret;
use ordersync::store::Store;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{App, SOURCE};

/// The test database's admin password (a loopback-only throwaway database).
pub const PASSWORD: &str = "admin-secret";
const DB: &str = "ordersync";

/// Runs the project's setup once per test binary; returns the cache dir.
fn setup_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tryton/setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs tests/tryton/setup.sh");
        assert!(
            out.status.success(),
            "tests/tryton/setup.sh failed (it needs python3 with venv and PyPI access; see its output above)"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

pub struct TrytonServer {
    /// `http://127.0.0.1:<port>/ordersync`: what `erp.url` holds.
    pub url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl TrytonServer {
    pub async fn start() -> TrytonServer {
        ordersync::http::install_crypto();
        let cache = tokio::task::spawn_blocking(setup_dir).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        std::fs::create_dir_all(&db_dir).unwrap();
        let status = Command::new(cache.join("venv/bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tryton/clone_db.py"))
            .arg(cache.join("template").join(format!("{DB}.sqlite")))
            .arg(db_dir.join(format!("{DB}.sqlite")))
            .status()
            .unwrap();
        assert!(status.success(), "cloning the template database failed");
        let (conf, port) = write_conf(
            &dir,
            &format!("uri = sqlite://\npath = {}", db_dir.display()),
        );
        launch(cache, dir, &conf, port, DB).await
    }

    /// A trytond whose own database is PostgreSQL (a fresh database on the
    /// tests' throwaway cluster, initialised and loaded with the fixture's
    /// master data here, a few minutes): where Tryton takes more than one
    /// writer at a time. For the benchmark.
    pub async fn start_postgres() -> TrytonServer {
        ordersync::http::install_crypto();
        let cache = tokio::task::spawn_blocking(setup_dir).await.unwrap();
        let db = tokio::task::spawn_blocking(ordersync::store::pg::testing::TestDb::new)
            .await
            .unwrap();
        let url = reqwest::Url::parse(&db.url).unwrap();
        let name = url.path().trim_start_matches('/').to_string();
        let dir = tempfile::tempdir().unwrap();
        let (conf, port) = write_conf(
            &dir,
            &format!(
                "uri = postgresql://{}:{}@{}:{}/",
                url.username(),
                db.password.expose(),
                url.host_str().unwrap(),
                url.port().unwrap()
            ),
        );
        let pass = dir.path().join("admin.pass");
        std::fs::write(&pass, format!("{PASSWORD}\n")).unwrap();
        let status = Command::new(cache.join("venv/bin/trytond-admin"))
            .env("TRYTONPASSFILE", &pass)
            .arg("-c")
            .arg(&conf)
            .args(["-d", &name, "--email", "admin@example.com", "-u", "sale"])
            .args(["stock_package_shipping", "--activate-dependencies"])
            .stdout(Stdio::null())
            .status()
            .expect("trytond-admin runs");
        assert!(status.success(), "initialising Tryton on PostgreSQL failed");
        let server = launch(cache, dir, &conf, port, &name).await;
        let status = Command::new(cache.join("venv/bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tryton/fixture.py"))
            .arg(format!("http://127.0.0.1:{port}"))
            .args([&name, "admin", PASSWORD])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "loading the fixture into Tryton on PostgreSQL failed"
        );
        server
    }

    async fn wait_ready(&self, port: u16) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let answer = client
                .post(format!("http://127.0.0.1:{port}/rpc/"))
                .header("Content-Type", "application/json")
                .body(r#"{"id":0,"method":"common.server.version","params":[]}"#)
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("trytond.log")).unwrap_or_default();
        panic!("trytond did not answer within 60 s; log:\n{log}");
    }

    /// A JSON-RPC client as the admin, for the test's side (warehouse, checks).
    pub fn rpc(&self) -> Rpc {
        let ep = Endpoint::new("tryton-test", Duration::from_secs(60), 4, None, 64 << 20).unwrap();
        Rpc::new(&self.url, "admin", Secret::new(PASSWORD), ep)
    }
}

/// A trytond config in `dir` with this `[database]` section and a free
/// loopback port: the file and the port.
fn write_conf(dir: &tempfile::TempDir, database: &str) -> (PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("trytond.conf");
    std::fs::write(
        &conf,
        format!("[database]\n{database}\nlanguage = en\n\n[web]\nlisten = 127.0.0.1:{port}\n"),
    )
    .unwrap();
    (conf, port)
}

/// Starts trytond on database `name` and waits until it answers.
async fn launch(
    cache: &Path,
    dir: tempfile::TempDir,
    conf: &Path,
    port: u16,
    name: &str,
) -> TrytonServer {
    let log = std::fs::File::create(dir.path().join("trytond.log")).unwrap();
    // -d preloads the pool: trytond 8.2.1 fails every login without it.
    let child = Command::new(cache.join("venv/bin/trytond"))
        .arg("-c")
        .arg(conf)
        .args(["-d", name])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("trytond starts");
    let server = TrytonServer {
        url: format!("http://127.0.0.1:{port}/{name}"),
        dir,
        child,
    };
    server.wait_ready(port).await;
    server
}

impl Drop for TrytonServer {
    fn drop(&mut self) {
        // Our own child, by PID; its database is a throwaway clone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sandbox (CloudSuite) plus a config whose ERP is this Tryton server.
pub async fn spawn_tryton_app(server: &TrytonServer, erp_extra: &str) -> App {
    spawn_tryton_app_with(server, erp_extra, SandboxOptions::default()).await
}

/// As [`spawn_tryton_app`], with the ERP reached at `url` (a proxy in
/// front of a server).
pub async fn spawn_tryton_app_via(url: &str, erp_extra: &str) -> App {
    spawn_app(url, erp_extra, SandboxOptions::default()).await
}

pub async fn spawn_tryton_app_with(
    server: &TrytonServer,
    erp_extra: &str,
    opts: SandboxOptions,
) -> App {
    spawn_app(&server.url, erp_extra, opts).await
}

async fn spawn_app(url: &str, erp_extra: &str, opts: SandboxOptions) -> App {
    ordersync::http::install_crypto();
    let secret = opts.cloudsuite.client_secret.clone();
    let sandbox = Sandbox::start(opts).await.expect("sandbox starts");
    let erp = format!(
        "kind = \"tryton\"\nurl = \"{url}\"\nuser = \"admin\"\npassword_file = \"erp-pass\"\n{erp_extra}"
    );
    let source = format!(
        r#"name = "{SOURCE}"
kind = "cloudsuite"
base_url = "{cs}"
token_url = "{token_url}"
client_id = "ordersync"
client_secret_file = "cs-secret"
schedule = "*/1 * * * * *"
max_in_flight = 4
# The simulator is local: its limit must not be what tests (and the
# benchmark) measure.
rate_limit_per_sec = 1000
"#,
        cs = sandbox.cloudsuite_url,
        token_url = sandbox.token_url,
    );
    let secrets = [("cs-secret", secret), ("erp-pass", PASSWORD.to_string())];
    crate::common::app_from_config(sandbox, "", &erp, &source, &secrets)
}

pub fn engine(app: &App) -> Arc<Engine> {
    let store = Arc::new(Store::open(&app.db_path()).unwrap());
    build_engine(&app.config, store).unwrap()
}

/// Polls, pushes, reads shipments and writes back until nothing is in
/// flight. Unlike `App::sync` it does not wait for shipments: in Tryton a
/// person (the test) ships.
pub async fn sync(engine: &Arc<Engine>) {
    let stop = CancellationToken::new();
    let connector = engine.connectors.get(SOURCE).unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "no convergence within 90 s");
        poll_live(engine, &connector, &stop).await;
        engine.drain(SOURCE, None, 4, &stop).await.unwrap();
        let shipped = poll_shipments(engine, &stop).await.unwrap();
        engine.drain(SOURCE, None, 4, &stop).await.unwrap();
        let status = engine.store.status(&[SOURCE.to_string()]).unwrap();
        let busy = ["queued", "pushed", "shipped"]
            .iter()
            .any(|s| status.orders.get(*s).copied().unwrap_or(0) > 0);
        if shipped == 0 && !busy {
            return;
        }
    }
}

/// The rows of `model` matching `domain`, with `fields`, in id order.
pub async fn search_read(rpc: &Rpc, model: &str, domain: Value, fields: Value) -> Vec<Value> {
    let rows = rpc
        .model(
            model,
            "search_read",
            vec![
                domain,
                json!(0),
                json!(null),
                json!([["id", "ASC"]]),
                fields,
            ],
        )
        .await
        .unwrap();
    rows.as_array().unwrap().clone()
}

/// Every sale (any state) whose reference is this order key.
pub async fn sales_for(rpc: &Rpc, order_key: &str) -> Vec<Value> {
    search_read(
        rpc,
        "sale.sale",
        json!([["reference", "=", order_key]]),
        json!([
            "state",
            "number",
            "total_amount",
            "untaxed_amount",
            "shipments",
            "lines"
        ]),
    )
    .await
}

/// What a warehouse person does in Tryton: assign, pick, pack, enter the
/// carrier's tracking number, done, for every shipment of the sale.
pub async fn ship(rpc: &Rpc, sale: &Value, carrier: i64, tracking: &str) {
    for shipment in sale["shipments"].as_array().unwrap() {
        let id = shipment.as_i64().unwrap();
        rpc.model(
            "stock.shipment.out",
            "write",
            vec![json!([id]), json!({"carrier": carrier})],
        )
        .await
        .unwrap();
        for _ in 0..6 {
            let rows = rpc
                .model(
                    "stock.shipment.out",
                    "read",
                    vec![json!([id]), json!(["state"])],
                )
                .await
                .unwrap();
            let button = match rows[0]["state"].as_str().unwrap() {
                "waiting" => "assign_try",
                "assigned" => "pick",
                "picked" => "pack",
                "packed" => {
                    rpc.model(
                        "stock.shipment.out",
                        "write",
                        vec![json!([id]), json!({"shipping_reference": tracking})],
                    )
                    .await
                    .unwrap();
                    "do"
                }
                _ => break,
            };
            rpc.model("stock.shipment.out", button, vec![json!([id])])
                .await
                .unwrap_or_else(|e: Failure| panic!("{button} on shipment {id}: {e}"));
        }
    }
}

/// A carrier as a Tryton user would set one up: a party and a service product.
pub async fn make_carrier(rpc: &Rpc, name: &str) -> i64 {
    let create = |model: &'static str, values: Value| async move {
        rpc.model(model, "create", vec![json!([values])])
            .await
            .unwrap()[0]
            .as_i64()
            .unwrap()
    };
    let party = create("party.party", json!({"name": name})).await;
    let unit = rpc
        .model(
            "product.uom",
            "search",
            vec![
                json!([["name", "=", "Unit"]]),
                json!(0),
                json!(1),
                json!(null),
            ],
        )
        .await
        .unwrap()[0]
        .as_i64()
        .unwrap();
    let template = create(
        "product.template",
        json!({"name": format!("{name} parcel"), "type": "service", "default_uom": unit,
               "products": [["create", [{"suffix_code": format!("SHIP-{name}")}]]]}),
    )
    .await;
    let product = rpc
        .model(
            "product.product",
            "search",
            vec![
                json!([["template", "=", template]]),
                json!(0),
                json!(1),
                json!(null),
            ],
        )
        .await
        .unwrap()[0]
        .as_i64()
        .unwrap();
    create(
        "carrier",
        json!({"party": party, "carrier_product": product}),
    )
    .await
}
