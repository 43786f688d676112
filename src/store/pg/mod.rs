//! The ledger in PostgreSQL (issue 14, in progress): the foundation several
//! `ordersync run` nodes will share work on. What is here: the schema
//! (versioned migrations, [`migrations`]), job claims under leases with
//! `FOR UPDATE SKIP LOCKED` ([`jobs`]), and the fleet primitives
//! ([`fleet`]): a nodes table with heartbeats, a poll lease per source with
//! a fencing token (`epoch`) that every cursor commit checks in its own
//! transaction, and the rescue of what dead nodes held. What is not here
//! yet: order ingest, the status reports, and the engine on top (the daemon
//! refuses `[ledger] url` until then, see `Config::sqlite_ledger_only`).
//!
//! The methods are shaped like the SQLite [`Store`](super::Store)'s where
//! they overlap (`claim`, `renew_lease`, `retry_later`, `park`,
//! `finish_job`, `release_leases`), with the same [`Job`](super::Job) and
//! [`ClaimFilter`](super::ClaimFilter), so one storage trait can cover both.
//! Not here yet: ingest (orders, pages), `finish_push`, shipments, status
//! and the other reports.
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
#[cfg(test)]
pub(crate) mod testing;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use postgres::{Client, NoTls};

use crate::secret::Secret;

pub use fleet::{NodeInfo, PollLease, Rescued};

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

/// One connection to the PostgreSQL ledger. Every method is one short
/// transaction, never held across a network call to a remote.
pub struct PgStore {
    client: Mutex<Client>,
    /// `host:port/db` for messages: never the password.
    target: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:5432/db`, no password in it:
    /// the config refuses one) with `password`, and runs pending migrations.
    /// Errors name the server, never the password.
    pub fn connect(url: &str, password: Option<&Secret>) -> anyhow::Result<PgStore> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("ledger.url: not a PostgreSQL URL ({e})"))?;
        if let Some(p) = password {
            config.password(p.expose());
        }
        config
            .application_name("ordersync")
            .connect_timeout(Duration::from_secs(10));
        let target = describe(&config);
        let mut client = config.connect(NoTls).map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the PostgreSQL ledger at {target}: {}",
                crate::secret::redact(&error_text(&e))
            )
        })?;
        migrations::migrate(&mut client)
            .with_context(|| format!("cannot migrate the PostgreSQL ledger at {target}"))?;
        Ok(PgStore {
            client: Mutex::new(client),
            target,
        })
    }

    /// `host:port/db` of this ledger, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn lock(&self) -> MutexGuard<'_, Client> {
        // A panic while holding the lock leaves no transaction open (a
        // dropped `Transaction` rolls back), so a poisoned lock is usable.
        self.client.lock().unwrap_or_else(|p| p.into_inner())
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
pub(crate) fn sql(what: &'static str) -> impl Fn(postgres::Error) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {}", error_text(&e))
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

    #[test]
    fn connects_with_the_password_and_never_shows_it() {
        let db = TestDb::new();
        let store = db.store();
        assert!(
            store.target().starts_with("127.0.0.1:"),
            "{}",
            store.target()
        );
        let shown = format!("{store:?}");
        assert!(!shown.contains(db.password.expose()), "{shown}");

        let wrong = Secret::new("wrong-password-for-the-test");
        let e = PgStore::connect(&db.url, Some(&wrong)).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("password authentication failed"), "{text}");
        assert!(text.contains(store.target()), "{text}");
        assert!(!text.contains("wrong-password-for-the-test"), "{text}");
        let e = PgStore::connect(&db.url, None).unwrap_err();
        assert!(format!("{e:#}").contains("password"), "{e:#}");
    }
}
