//! Which ledger a config names: the SQLite file in `daemon.state_dir`, or
//! the PostgreSQL server of `[ledger] url` (its password read from
//! `ledger.password_file` / `ledger.password_env`). Every command opens the
//! ledger here, so they all work against the same one.

use super::Store;
use crate::config::{Config, ConfigError};

impl Store {
    /// Opens (creating and migrating if needed) the ledger `config` names.
    pub fn for_config(config: &Config) -> anyhow::Result<Store> {
        match &config.ledger {
            None => Store::open(&config.daemon.db_path()),
            Some(ledger) => {
                let password = ledger_password(config)?;
                Store::connect(&ledger.url, password.as_ref())
            }
        }
    }

    /// A second, small handle on the shared ledger `config` names (one
    /// writer connection): the fleet task's own, so that a busy engine
    /// never delays a heartbeat. `None` on SQLite.
    pub fn for_fleet(config: &Config) -> anyhow::Result<Option<Store>> {
        match &config.ledger {
            None => Ok(None),
            Some(ledger) => {
                let password = ledger_password(config)?;
                Store::connect_with(&ledger.url, password.as_ref(), false, 1).map(Some)
            }
        }
    }

    /// Opens the ledger for reports (`status`, `orders`): never creates or
    /// migrates it, so a report cannot disturb the running daemons.
    pub fn for_config_read_only(config: &Config) -> anyhow::Result<Store> {
        match &config.ledger {
            None => Store::open_read_only(&config.daemon.db_path()),
            Some(ledger) => {
                let password = ledger_password(config)?;
                Store::connect_existing(&ledger.url, password.as_ref())
            }
        }
    }
}

/// `check-config`: whether the shared ledger `config` names can be
/// reached (login, TLS, schema version), changing nothing. `None` on the
/// embedded SQLite ledger.
pub fn reach_ledger(config: &Config) -> Option<anyhow::Result<String>> {
    let ledger = config.ledger.as_ref()?;
    Some(ledger_password(config).and_then(|password| {
        super::sql::off_runtime(|| super::pg::reach(&ledger.url, password.as_ref()))
    }))
}

/// `check-config`, offline too: the shared ledger's TLS settings with its
/// CA file read (`None` on the embedded SQLite ledger).
pub fn check_ledger_tls(config: &Config) -> Option<Result<String, String>> {
    let ledger = config.ledger.as_ref()?;
    Some(super::pg::tls::check(&ledger.url))
}

fn ledger_password(config: &Config) -> anyhow::Result<Option<crate::secret::Secret>> {
    let Some(reference) = config.ledger.as_ref().and_then(|l| l.password.as_ref()) else {
        return Ok(None);
    };
    reference
        .load("ledger.password")
        .map(Some)
        .map_err(|e| ConfigError(e).into())
}
