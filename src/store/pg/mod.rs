//! The ledger in PostgreSQL (issue 14): the one several `ordersync run`
//! nodes share. Here: the schema (versioned migrations, [`migrations`]), job
//! claims under leases with `FOR UPDATE SKIP LOCKED` ([`jobs`]), the fleet
//! primitives ([`fleet`]: a nodes table with heartbeats, a poll lease per
//! source with a fencing token (`epoch`) that every cursor commit checks in
//! its own transaction, and the rescue of what dead nodes held), and TLS to
//! the server ([`tls`]). The statements both ledgers share are in
//! `super::sql`; the engine above does not know which ledger it runs on.
//!
//! Times are milliseconds since the epoch in `BIGINT` columns, as in SQLite;
//! every lease deadline is computed from the database's clock (never a
//! node's), so clock skew between nodes cannot hand one lease to two.
//!
//! The client is the synchronous `postgres` crate: like rusqlite, it is
//! meant for the ledger thread (`thread.rs`), never a runtime worker. It
//! runs its own small runtime inside, so it must not be called from within
//! a tokio runtime's async context.

pub mod fleet;
pub mod jobs;
pub mod migrations;
/// A throwaway PostgreSQL server for tests (the integration tests use it
/// too, hence the `sandbox` feature that carries the simulators).
#[cfg(any(test, feature = "sandbox"))]
pub mod testing;
pub(crate) mod tls;

use std::sync::MutexGuard;
use std::time::Duration;

use anyhow::Context;
use postgres::Client;

use super::Store;
use super::sql::{Conn, Dialect};
use crate::secret::Secret;

pub use fleet::{NodeInfo, NodeView, PollLease, Rescued};

/// The database's clock in milliseconds since the epoch, as SQL (the time
/// unit of every column). `clock_timestamp()`, not `now()`: a lease is
/// measured from the moment the statement runs, not from its transaction's
/// start.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}
pub(crate) use now_ms;

/// Opens one connection to `url` (`postgres://user@host:5432/db`, no
/// password in it: the config refuses one) with `password`; `migrate` runs
/// pending migrations first, else the schema must be this build's. Errors
/// name the server, never the password. Returns the client and
/// `host:port/db (TLS state)` for messages.
pub(crate) fn connect_client(
    url: &str,
    password: Option<&Secret>,
    migrate: bool,
) -> anyhow::Result<(Client, String)> {
    let (mut client, target) = open(url, password)?;
    if migrate {
        migrations::migrate(&mut client)
            .with_context(|| format!("cannot migrate the PostgreSQL ledger at {target}"))?;
    } else {
        let version = migrations::current(&mut client)?;
        if version != migrations::latest() {
            anyhow::bail!("the PostgreSQL ledger at {target} {}", schema_says(version));
        }
    }
    Ok((client, target))
}

/// What a schema version other than this build's means, for people.
fn schema_says(version: i64) -> String {
    let latest = migrations::latest();
    match version {
        0 => "is empty: no node has run on it yet (the first `ordersync run` creates the ledger)"
            .to_string(),
        v if v < latest => format!(
            "has schema version {v}, this ordersync expects {latest}: the next `ordersync run` migrates it"
        ),
        v => format!(
            "has schema version {v}, newer than this ordersync's ({latest}): upgrade ordersync on this machine"
        ),
    }
}

/// `check-config`: logs in to the ledger `url` names and reads its schema
/// version, changing nothing. Says where it is, how the session is
/// protected and what the schema is.
pub(crate) fn reach(url: &str, password: Option<&Secret>) -> anyhow::Result<String> {
    let (mut client, target) = open(url, password)?;
    let version = migrations::current(&mut client)?;
    let latest = migrations::latest();
    match version {
        v if v == latest => Ok(format!(
            "postgres://{target}: reached; schema {v}, this ordersync's"
        )),
        v if v > latest => anyhow::bail!("postgres://{target} {}", schema_says(v)),
        v => Ok(format!(
            "postgres://{target}: reached; it {}",
            schema_says(v)
        )),
    }
}

/// How long a connection to the ledger may take to open, and the server to
/// give its first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the server answers at all: the client's `connect_timeout` bounds
/// only the TCP connect, and its handshake then waits for the server
/// without end. Something that accepts connections and says nothing (a
/// load balancer without a live backend, a wrong port, a stopped server
/// behind a proxy) hung `status` and `run` for good. So before the real
/// connect, one connection of ours asks for GSS encryption, the first
/// message of PostgreSQL's own negotiation, and waits `timeout` for any
/// byte back: PostgreSQL answers `N` (or `G`), a pooler an answer or an
/// error, and the connection is closed unused, which the server does not
/// log. A connect that fails here is left to the real connect to report.
fn answers_within(config: &postgres::Config, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    for host in config.get_hosts() {
        let postgres::config::Host::Tcp(name) = host else {
            continue; // a Unix socket: a local server, nothing in between
        };
        let Ok(addrs) = (name.as_str(), port).to_socket_addrs() else {
            continue;
        };
        for addr in addrs {
            let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
                continue;
            };
            // GSSENCRequest: length 8, code 80877104.
            let request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
            let mut first = [0u8; 1];
            let answered = stream
                .set_read_timeout(Some(timeout))
                .and_then(|()| stream.set_write_timeout(Some(timeout)))
                .and_then(|()| stream.write_all(&request))
                .and_then(|()| stream.read(&mut first));
            match answered {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!(
                        "{addr} took the connection but gave no answer within {} s (is PostgreSQL there, or a proxy with no server behind it?)",
                        timeout.as_secs()
                    ));
                }
                _ => return Ok(()),
            }
        }
    }
    Ok(())
}

/// The client's settings for a session on the ledger `url` names.
fn client_config(
    url: &str,
    password: Option<&Secret>,
) -> anyhow::Result<(postgres::Config, tls::Tls)> {
    let (url, tls) = tls::Tls::split(url).map_err(|e| anyhow::anyhow!("ledger.url: {e}"))?;
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("ledger.url: not a PostgreSQL URL ({e})"))?;
    config.ssl_mode(tls.ssl_mode());
    if let Some(p) = password {
        config.password(p.expose());
    }
    // A node frozen mid-transaction (SIGSTOP, a stalled VM) must not hold
    // its row locks, the lease rows above all, until it wakes: the server
    // ends a session idle inside a transaction after 5 s (the node
    // reconnects when it wakes), and no statement waits more than 5 s for
    // a lock (it fails and is run again).
    config
        .application_name("ordersync")
        .options("-c idle_in_transaction_session_timeout=5000 -c lock_timeout=5000")
        .connect_timeout(CONNECT_TIMEOUT);
    // A server gone without a word (its machine died, a failover moved its
    // address elsewhere): with the kernel's defaults a session notices
    // after two hours idle, or some 15 minutes of unanswered retransmits,
    // and a ledger call hangs that long. Here: data unacknowledged for
    // 30 s, or an idle session unanswered for 30 s + 3 x 10 s, ends the
    // session, and the next call opens a new one (to wherever the address
    // now leads). A URL that sets these (`tcp_user_timeout`,
    // `keepalives_idle`, `keepalives_interval`, `keepalives_retries`)
    // keeps its own.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60)
        && config.get_keepalives_interval().is_none()
        && config.get_keepalives_retries().is_none()
    {
        config
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
    }
    Ok((config, tls))
}

/// One session on the ledger, nothing read yet but its TLS state.
fn open(url: &str, password: Option<&Secret>) -> anyhow::Result<(Client, String)> {
    let (config, tls) = client_config(url, password)?;
    let target = describe(&config);
    answers_within(&config, CONNECT_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("cannot connect to the PostgreSQL ledger at {target}: {e}"))?;
    let connector = tls
        .connector()
        .map_err(|e| anyhow::anyhow!("ledger.url: {e}"))?;
    if tls.unverified_require() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                ledger = %target,
                "the PostgreSQL ledger's connections are encrypted, but the server's certificate is not checked (sslmode=require without sslrootcert); use sslmode=verify-full with sslrootcert"
            )
        });
    }
    let mut client = config.connect(connector).map_err(|e| {
        let text = error_text(&e);
        let hint = if text.contains("invalid peer certificate") {
            " (the server's certificate must be signed by a CA in the URL's sslrootcert, and for sslmode=verify-full be made out to the URL's host)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "cannot connect to the PostgreSQL ledger at {target}: {}{hint}",
            crate::secret::redact(&text)
        )
    })?;
    // For people (`status`, the start-up line): whether this session is
    // encrypted, as the server sees it (`prefer` may have gone without).
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map_err(sql("reading the session's TLS state"))?
        .get(0);
    Ok((client, format!("{target} ({})", tls.describe(encrypted))))
}

/// The writer connection of a PostgreSQL ledger, for the statements only
/// PostgreSQL has (claims with `SKIP LOCKED`, leases on the database's
/// clock, the fleet's tables).
pub(crate) struct PgGuard<'a>(MutexGuard<'a, Conn>);

impl std::ops::Deref for PgGuard<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match &*self.0 {
            Conn::Postgres(pg) => &pg.client,
            Conn::Sqlite(_) => unreachable!("PgGuard is only made for PostgreSQL"),
        }
    }
}

impl std::ops::DerefMut for PgGuard<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut *self.0 {
            Conn::Postgres(pg) => &mut pg.client,
            Conn::Sqlite(_) => unreachable!("PgGuard is only made for PostgreSQL"),
        }
    }
}

impl Store {
    /// The PostgreSQL writer connection; an error on an SQLite ledger (the
    /// fleet's operations need a shared ledger).
    pub(crate) fn pg(&self) -> anyhow::Result<PgGuard<'_>> {
        let guard = self.lock();
        match &*guard {
            Conn::Postgres(_) => Ok(PgGuard(guard)),
            Conn::Sqlite(_) => anyhow::bail!(
                "this needs the ledger in PostgreSQL ([ledger] url); {} is an SQLite file",
                self.describe()
            ),
        }
    }

    /// Runs `f` on the PostgreSQL writer connection, off any tokio runtime
    /// thread (see [`super::sql::off_runtime`]); an error on SQLite.
    pub(crate) fn with_pg<R: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        let mut guard = self.pg()?;
        let Conn::Postgres(pg) = &mut *guard.0 else {
            unreachable!("pg() hands out PostgreSQL connections only")
        };
        // `f` may do anything, so it never runs twice (see `on_pg`).
        let mut f = Some(f);
        super::sql::off_runtime(move || {
            super::sql::on_pg(pg, |pg| match f.take() {
                Some(f) => f(&mut pg.client).map_err(|error| super::sql::PgCallError {
                    error,
                    may_have_taken_effect: true,
                }),
                None => unreachable!("a call that may have taken effect is not run again"),
            })
        })
    }

    /// Whether this ledger is the PostgreSQL one (then `pg()` succeeds).
    pub(crate) fn on_postgres(&self) -> bool {
        self.lock().dialect() == Dialect::Postgres
    }
}

/// The server's own words: `Display` of a `postgres::Error` says only
/// "db error"; its source holds the message (and the SQLSTATE).
pub(crate) fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}

fn describe(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("?");
    format!("{host}:{port}/{db}")
}

/// Maps a client error to one that carries the server's own words (and
/// what we were doing), never a connection string or a password.
///
/// The `postgres::Error` stays in the chain: a connection the server
/// closed (a restart, a failover) is told apart by it and opened again
/// (`sql::on_pg`). Without it the fleet heartbeat went on failing with
/// "connection closed" after the ledger came back, and every job stopped
/// at the fence.
pub(crate) fn sql(what: &'static str) -> impl Fn(postgres::Error) -> anyhow::Error {
    move |e| {
        let text = format!("{what}: {}", error_text(&e));
        anyhow::Error::new(super::sql::PgFailure { text, error: e })
    }
}

/// A job settlement or lease operation, in milliseconds: a `Duration` that
/// does not fit is capped (a lease of 292 million years is no lease).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::testing::TestDb;
    use super::*;

    /// A dead server is noticed in about a minute, not two hours; what the
    /// URL says of it wins.
    #[test]
    fn a_dead_server_is_noticed_unless_the_url_says_otherwise() {
        let (c, _) = client_config("postgres://u@db.internal/ledger", None).unwrap();
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(c.get_keepalives_retries(), Some(3));
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));

        let (c, _) = client_config(
            "postgres://u@db.internal/ledger?tcp_user_timeout=5&keepalives_idle=300&sslmode=disable",
            None,
        )
        .unwrap();
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(300));
        assert_eq!(c.get_keepalives_interval(), None);
        assert_eq!(c.get_ssl_mode(), postgres::config::SslMode::Disable);
    }

    #[test]
    fn connects_with_the_password_and_never_shows_it() {
        let db = TestDb::new();
        let store = db.store();
        let shown = store.describe();
        assert!(shown.starts_with("postgres://127.0.0.1:"), "{shown}");
        assert!(!shown.contains(db.password.expose()), "{shown}");
        // `host:port/db`, without the TLS state (" (TLS, …)") after it.
        let target = shown.trim_start_matches("postgres://");
        let target = target.split(" (").next().unwrap_or(target);

        let wrong = Secret::new("wrong-password-for-the-test");
        let e = Store::connect(&db.url, Some(&wrong)).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("password authentication failed"), "{text}");
        assert!(text.contains(target), "{text}");
        assert!(!text.contains("wrong-password-for-the-test"), "{text}");
        let e = Store::connect(&db.url, None).unwrap_err();
        assert!(format!("{e:#}").contains("password"), "{e:#}");
    }

    /// A report (`status`, `orders`) logs in twice, one writer and the
    /// reader, not as often as the daemon's pool of writers.
    #[test]
    fn a_report_opens_one_writer_and_the_reader() {
        let db = TestDb::new();
        let sessions = || -> i64 {
            db.raw()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = 'ordersync'",
                    &[],
                )
                .unwrap()
                .get(0)
        };
        let daemon = db.store();
        assert_eq!(sessions(), PG_CONNECTIONS_OF_A_NODE);
        let report = Store::connect_existing(&db.url, Some(&db.password)).unwrap();
        assert_eq!(report.writers(), 1);
        assert_eq!(sessions(), PG_CONNECTIONS_OF_A_NODE + 2);
        drop((daemon, report));
    }

    /// Ends every session of the store's database but the caller's, as a
    /// restart or failover does.
    fn end_sessions(raw: &mut postgres::Client) {
        raw.batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    }

    /// The server ends every session at once. Each connection works on its
    /// next use: the call that finds its connection closed runs again on a
    /// new one (nothing of it took effect), and the connections of the same
    /// process are checked before their next use, even a statement they had
    /// prepared before, which would otherwise fail once each.
    #[test]
    fn after_the_server_ends_every_session_each_connection_works_on_its_next_use() {
        let db = TestDb::new();
        let store = db.store();
        let count = "SELECT count(*) FROM jobs";
        for c in store.conns.iter().chain([&store.reader]) {
            let mut c = c.lock().unwrap();
            assert_eq!(c.auto(|tx| tx.value::<i64>(count, &[])).unwrap(), 0);
        }
        end_sessions(&mut db.raw());
        let mut conns = store.conns.iter().map(|c| c.lock().unwrap());
        let (mut first, mut second, mut third) = (
            conns.next().unwrap(),
            conns.next().unwrap(),
            conns.next().unwrap(),
        );
        // A transaction finds its connection closed: run again.
        let n = first.write(|tx| tx.value::<i64>(count, &[]));
        assert_eq!(n.map_err(|e| format!("{e:#}")), Ok(0));
        // A statement prepared before the sessions ended: checked first.
        let n = second.auto(|tx| tx.value::<i64>(count, &[]));
        assert_eq!(n.map_err(|e| format!("{e:#}")), Ok(0));
        // What the daemon runs as it stops.
        let n = third.auto(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_owner = NULL WHERE lease_owner = ?1",
                &[&"gone"],
            )
        });
        assert_eq!(n.map_err(|e| format!("{e:#}")), Ok(0));
        let n = store
            .reader
            .lock()
            .unwrap()
            .read(|tx| tx.value::<i64>(count, &[]));
        assert_eq!(n.map_err(|e| format!("{e:#}")), Ok(0));
    }

    /// A call is run again only when nothing of it can have taken effect:
    /// a transaction whose session ended before its COMMIT runs again once,
    /// and so does a statement outside a transaction that was only being
    /// prepared; statements outside a transaction, of which one ran, do not.
    #[test]
    fn a_call_runs_again_only_if_nothing_of_it_took_effect() {
        let db = TestDb::new();
        let store = db.store();
        let mut raw = db.raw();
        raw.batch_execute("CREATE TABLE calls (n int)").unwrap();
        let rows = |raw: &mut postgres::Client| -> i64 {
            raw.query_one("SELECT count(*) FROM calls", &[])
                .unwrap()
                .get(0)
        };
        let mut conn = store.conns[0].lock().unwrap();
        let end_own = "SELECT pg_terminate_backend(pg_backend_pid())";

        let mut runs = 0;
        let done = conn.write(|tx| {
            runs += 1;
            tx.exec("INSERT INTO calls VALUES (1)", &[])?;
            if runs == 1 {
                tx.query(end_own, &[])?;
            }
            Ok(())
        });
        assert!(done.is_ok(), "{done:?}");
        assert_eq!((runs, rows(&mut raw)), (2, 1), "the first run rolled back");

        let mut runs = 0;
        let done = conn.auto(|tx| {
            runs += 1;
            tx.exec("INSERT INTO calls VALUES (2)", &[])?;
            tx.query(end_own, &[])?;
            Ok(())
        });
        // The server's word, or (if the socket closed first) the client's.
        let e = format!("{:#}", done.unwrap_err());
        assert!(
            e.contains("57P01") || e.contains("connection closed"),
            "{e}"
        );
        assert_eq!((runs, rows(&mut raw)), (1, 2), "the insert committed once");
        // The connection was opened again for the next call.
        assert_eq!(
            conn.auto(|tx| tx.value::<i64>("SELECT count(*) FROM calls", &[]))
                .map_err(|e| format!("{e:#}")),
            Ok(2)
        );

        // The session ends while idle; the next call's first statement is
        // new to this connection, so it fails while being prepared (no
        // check first: that would open the connection again before it).
        let Conn::Postgres(pg) = &mut *conn else {
            unreachable!()
        };
        pg.skip_checks();
        end_sessions(&mut raw);
        let mut runs = 0;
        let done = conn.auto(|tx| {
            runs += 1;
            tx.exec("INSERT INTO calls VALUES (3)", &[])
        });
        assert_eq!(done.map_err(|e| format!("{e:#}")), Ok(1));
        assert_eq!((runs, rows(&mut raw)), (2, 3), "prepared, then run once");
    }

    /// The daemon's writers and its reader.
    const PG_CONNECTIONS_OF_A_NODE: i64 = crate::store::PG_CONNECTIONS as i64 + 1;
}
