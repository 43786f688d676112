//! A real PostgreSQL server for the tests: one throwaway cluster per test
//! process (`tests/postgres/cluster.sh`: initdb + pg_ctl on a temporary
//! directory and a free port), a fresh database per test. The cluster
//! stops and its directory goes when this process ends, however it ends:
//! the script waits for its standard input, which only this process holds.
//!
//! Never skipped: when the server cannot start, the test fails and says why
//! (`cargo test` and CI need Debian's `postgresql` package).

use std::io::{BufRead, BufReader};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::secret::Secret;

use crate::store::Store;

struct Cluster {
    /// `postgres://ordersync@127.0.0.1:PORT/` (no database).
    base: String,
    password: String,
    /// The cluster's directory: `ca.crt` (signed the server's certificate,
    /// made out to `localhost`) and `other-ca.crt` (signed nothing here).
    dir: std::path::PathBuf,
    /// Held open until the process ends: closing it stops the cluster.
    _keep: Mutex<ChildStdin>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn start() -> Result<Cluster, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres/cluster.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading {}: {e}", script.display()))?;
    let mut parts = line.split_whitespace();
    let (Some(url), Some(password_file)) = (parts.next(), parts.next()) else {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(format!(
            "{} did not start a PostgreSQL server ({status}; its messages are above)",
            script.display()
        ));
    };
    let password = std::fs::read_to_string(password_file)
        .map_err(|e| format!("cannot read {password_file}: {e}"))?
        .trim()
        .to_string();
    let base = url
        .strip_suffix("postgres")
        .ok_or_else(|| format!("unexpected URL from the script: {url}"))?
        .to_string();
    let dir = std::path::Path::new(password_file)
        .parent()
        .ok_or_else(|| format!("unexpected password file from the script: {password_file}"))?
        .to_path_buf();
    Ok(Cluster {
        base,
        password,
        dir,
        _keep: Mutex::new(stdin),
    })
}

fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!(
            "the PostgreSQL tests need a real server and could not start one: {e}\n\
             install Debian's postgresql package (apt-get install postgresql; .ci/run does)"
        ),
    }
}

/// A fresh, empty database on the test cluster.
pub struct TestDb {
    /// `postgres://ordersync@127.0.0.1:PORT/t_N`: no password, as the config has it.
    pub url: String,
    pub password: Secret,
    /// The CA that signed the server's certificate (made out to
    /// `localhost` only), and one that signed nothing the server has.
    pub ca_file: std::path::PathBuf,
    pub other_ca_file: std::path::PathBuf,
}

impl TestDb {
    #[allow(clippy::new_without_default)]
    pub fn new() -> TestDb {
        let c = cluster();
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let admin_url = format!("{}postgres", c.base);
        let password = c.password.clone();
        let db = name.clone();
        // Callable from async tests too: the sync client stays off the runtime.
        crate::store::sql::off_runtime(move || {
            let mut admin: postgres::Config = admin_url.parse().expect("the cluster's URL parses");
            admin.password(&password);
            let mut client = admin.connect(postgres::NoTls).unwrap_or_else(|e| {
                panic!("cannot reach the test cluster: {}", super::error_text(&e))
            });
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {}", super::error_text(&e)));
        });
        TestDb {
            url: format!("{}{name}", c.base),
            password: Secret::new(c.password.clone()),
            ca_file: c.dir.join("ca.crt"),
            other_ca_file: c.dir.join("other-ca.crt"),
        }
    }

    /// [`TestDb::url`] as a careful deployment writes it: TLS with the
    /// server's certificate checked against the cluster's CA, and the host
    /// by the name on that certificate (`localhost`).
    pub fn verified_url(&self) -> String {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.url.replace("@127.0.0.1:", "@localhost:"),
            self.ca_file.display()
        )
    }

    /// Sessions of this database opened by ordersync (`application_name`):
    /// (encrypted, not encrypted), as the server sees them.
    pub fn ordersync_sessions(&self) -> (i64, i64) {
        let row = self
            .raw()
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = current_database() AND a.application_name = 'ordersync'",
                &[],
            )
            .unwrap_or_else(|e| panic!("pg_stat_ssl: {}", super::error_text(&e)));
        (row.get(0), row.get(1))
    }

    /// A new connection (a node of its own), migrated.
    pub fn store(&self) -> Store {
        Store::connect(&self.url, Some(&self.password))
            .unwrap_or_else(|e| panic!("cannot open the test ledger: {e:#}"))
    }

    /// A plain client on this database, for what the tests do behind the
    /// store's back (hold a row lock, age a heartbeat).
    pub fn raw(&self) -> postgres::Client {
        let mut config: postgres::Config = self.url.parse().expect("test URL parses");
        config.password(self.password.expose());
        config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect: {}", super::error_text(&e)))
    }

    /// A plain client on the cluster's `postgres` database, for what is
    /// done to this database from outside it (let no one in, and back).
    pub fn raw_admin(&self) -> postgres::Client {
        let base = self.url.rsplit_once('/').map_or("", |(base, _)| base);
        let mut config: postgres::Config =
            format!("{base}/postgres").parse().expect("test URL parses");
        config.password(self.password.expose());
        config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect: {}", super::error_text(&e)))
    }
}
