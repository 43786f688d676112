//! Configuration: TOML file plus `ORDERSYNC__SECTION__KEY` environment
//! overrides, merged by the `config` crate, then checked here so that every
//! error names the key (`sources[1].page_size`) and unknown keys are refused.
//! Secrets are only referenced here (`X_file` / `X_env`); they are read when
//! a component is built, never stored in this struct.
//!
//! This file holds what every config has: `[daemon]`, `[erp]`, the keys
//! common to every `[[sources]]` table, and the checks they share. Each
//! source kind's own keys, defaults, validation and secret references live
//! next to its connector (`src/sources/<kind>/config.rs`); their types are
//! re-exported here, so `crate::config::CloudSuiteSettings` and the like
//! stay the names the rest of the code uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::model::CountryMap;
use crate::secret::{SecretRef, resolve_path};
use crate::sources;

pub use crate::sources::cloudsuite::config::{
    CLOUDSUITE_TOKEN_URL, CloudSuiteAuth, CloudSuiteSettings, DesadvTarget,
};
pub use crate::sources::mplus::config::{MplusSettings, MplusStart};
pub use crate::sources::retailys::config::{RetailysSettings, StatusRef};
pub use crate::sources::titelive::config::{TiteliveAuth, TiteliveSettings};
pub use crate::sources::vinou::config::VinouSettings;

mod secrets;
pub use secrets::SecretUse;

/// Default config path when neither `--config` nor `$ORDERSYNC_CONFIG` is set.
pub const DEFAULT_PATH: &str = "/etc/ordersync/ordersync.toml";

/// A configuration error: the message names the key, value or path.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was loaded from; relative paths inside are relative to its directory.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub erp: ErpConfig,
    pub sources: Vec<SourceConfig>,
    /// `[ledger]`: the ledger in PostgreSQL. `None`: SQLite in
    /// `daemon.state_dir`, as always.
    pub ledger: Option<LedgerConfig>,
}

/// `[ledger]`: where the ledger lives when it is not the SQLite file.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// `postgres://user@host:5432/db`, checked to carry no password (so it
    /// may be printed).
    pub url: String,
    /// `ledger.password_file` / `ledger.password_env`; none for servers
    /// that trust the connection (a local socket).
    pub password: Option<SecretRef>,
    /// `ledger.heartbeat` (default 5 s): how often a node says it is alive
    /// and renews its poll leases. A node silent for two heartbeats is dead
    /// to the others: they take over its sources and jobs.
    pub heartbeat: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    pub shipments_schedule: String,
    /// How long in-flight calls may run after SIGTERM before they are cut.
    pub shutdown_grace: Duration,
    pub request_timeout: Duration,
    /// Cap on any response body we read (SPEC guarantee 6).
    pub max_body_bytes: usize,
    /// Upper bound on attempts before a job is parked.
    pub max_attempts: u32,
    /// How long transient failures are retried, from the first failure.
    pub give_up_after: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Where `/metrics` and `/healthz` are served; off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Orders that ended (completed, cancelled, skipped) longer ago than
    /// this lose their raw payload, attempts and events
    /// ([`crate::store::Store::prune_ended`]); off when unset.
    pub retain: Option<Duration>,
}

impl DaemonConfig {
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("ordersync.db")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErpKind {
    Http,
    Tryton,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownProduct {
    #[default]
    Park,
    Create,
}

/// Which order-line field finds a Tryton product by its code, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductMatch {
    /// The source's SKU against `product.product.code`.
    Sku,
    /// The EAN against the product's identifiers.
    Ean,
}

#[derive(Clone, Debug)]
pub struct ErpConfig {
    pub kind: ErpKind,
    pub url: String,
    pub user: Option<String>,
    /// tryton: the password; http: the bearer token.
    pub credential: SecretRef,
    pub confirm: bool,
    pub unknown_product: UnknownProduct,
    /// tryton: how order lines find products (default SKU, then EAN).
    pub product_match: Vec<ProductMatch>,
    /// tryton: a line's tax rate (percent) → the name of the Tryton sale
    /// tax to give it, before any search by rate (`erp.tax_map`).
    pub tax_map: Vec<(rust_decimal::Decimal, String)>,
    pub max_in_flight: usize,
    /// tryton: orders pushed together, one call per step for all of them
    /// (`erp.batch_size`); 1 for http.
    pub batch_size: usize,
}

impl ErpConfig {
    /// How many pushes a source's worker runs at once: `max_in_flight`
    /// calls, each for up to `batch_size` orders.
    pub fn push_slots(&self) -> usize {
        self.max_in_flight * self.batch_size
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Cloudsuite,
    Mplus,
    Retailys,
    Titelive,
    Vinou,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Cloudsuite => "cloudsuite",
            SourceKind::Mplus => "mplus",
            SourceKind::Retailys => "retailys",
            SourceKind::Titelive => "titelive",
            SourceKind::Vinou => "vinou",
        }
    }

    /// `recheck_every` when the config names none: a minute, except at
    /// Retailys, whose rounds read every order not yet final (it has no
    /// "changed since" filter) under a shop-wide rate limit: ten minutes,
    /// every fifth poll on the default two-minute schedule.
    pub fn default_recheck_every(self) -> Duration {
        match self {
            SourceKind::Retailys => Duration::from_secs(10 * 60),
            _ => Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    pub base_url: String,
    pub schedule: String,
    pub lookback: Duration,
    /// A live poll reads the whole `lookback` window at most this often; the
    /// polls in between read from the cursor on ([`crate::poll::overlap`]).
    pub lookback_every: Duration,
    /// Orders the list no longer shows (held, unmappable, not final) are
    /// read again each on its own, `max_in_flight` at a time; a new round
    /// through them (and at Retailys the sweep of open orders) begins at
    /// most this often.
    pub recheck_every: Duration,
    pub page_size: u32,
    pub max_in_flight: usize,
    pub rate_limit_per_sec: u32,
    pub enabled: bool,
    /// The source's country values (names, ids, codes that are not ISO)
    /// → ISO 3166-1 alpha-2; two-letter values need no entry.
    pub country_map: CountryMap,
    pub settings: SourceSettings,
}

/// The kind-specific part of a source, chosen by `kind`.
#[derive(Clone, Debug)]
pub enum SourceSettings {
    CloudSuite(CloudSuiteSettings),
    Titelive(TiteliveSettings),
    Retailys(RetailysSettings),
    Mplus(MplusSettings),
    Vinou(VinouSettings),
}

/// What a kind's builder (`sources::<kind>::config::build`) gets from the
/// common part of its `[[sources]]` table, already checked.
pub(crate) struct SourceContext<'a> {
    /// `sources[i]`: every error message starts with it.
    pub prefix: &'a str,
    /// Secret file paths are relative to the config file's directory.
    pub base_dir: &'a Path,
    /// Some APIs cap these two; their builders check them.
    pub page_size: u32,
    pub rate_limit_per_sec: u32,
    /// Titelive needs one (its countries are numeric ids).
    pub country_map: &'a CountryMap,
}

// ---------------------------------------------------------------------------
// Raw, serde-facing shapes. `deny_unknown_fields` everywhere.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: RawDaemon,
    erp: RawErp,
    #[serde(default)]
    sources: Vec<serde_json::Value>,
    ledger: Option<RawLedger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    url: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    #[serde(default = "default_heartbeat")]
    heartbeat: HumanDuration,
}

fn default_heartbeat() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: PathBuf,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default = "default_shipments_schedule")]
    shipments_schedule: String,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace: HumanDuration,
    #[serde(default = "default_request_timeout")]
    request_timeout: HumanDuration,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: u64,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_give_up_after")]
    give_up_after: HumanDuration,
    #[serde(default = "default_retry_initial")]
    retry_initial: HumanDuration,
    #[serde(default = "default_retry_max")]
    retry_max: HumanDuration,
    metrics_listen: Option<String>,
    retain: Option<HumanDuration>,
}

fn default_shipments_schedule() -> String {
    "0 * * * * *".into()
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_body_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_max_attempts() -> u32 {
    // An upper bound only: 24 h of retries at the 15 min cap is about 110.
    1000
}
fn default_give_up_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_retry_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErp {
    kind: ErpKind,
    url: String,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    confirm: Option<bool>,
    unknown_product: Option<UnknownProduct>,
    product_match: Option<Vec<ProductMatch>>,
    tax_map: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default = "default_erp_in_flight")]
    max_in_flight: usize,
    batch_size: Option<usize>,
}

fn default_erp_in_flight() -> usize {
    4
}

/// Tryton: sales per batched push (docs/BENCHMARKS.md: 10 per call pushed
/// 5×, 50 per call 9.5× the sales per second of one per call).
const DEFAULT_TRYTON_BATCH: usize = 20;

const COMMON_SOURCE_KEYS: &[&str] = &[
    "name",
    "kind",
    "base_url",
    "schedule",
    "lookback",
    "lookback_every",
    "recheck_every",
    "page_size",
    "max_in_flight",
    "rate_limit_per_sec",
    "enabled",
    "country_map",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommonSource {
    name: String,
    kind: SourceKind,
    base_url: String,
    #[serde(default = "default_schedule")]
    schedule: String,
    #[serde(default = "default_lookback")]
    lookback: HumanDuration,
    /// Default: [`default_lookback_every`].
    #[serde(default)]
    lookback_every: Option<HumanDuration>,
    /// Default per kind: [`SourceKind::default_recheck_every`].
    #[serde(default)]
    recheck_every: Option<HumanDuration>,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_source_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_rate")]
    rate_limit_per_sec: u32,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    country_map: BTreeMap<String, String>,
}

fn default_schedule() -> String {
    "0 */2 * * * *".into()
}
fn default_lookback() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}
/// A minute, or a tenth of `lookback` when that is shorter: on the default
/// two-minute schedule every poll still reads the whole window, whatever
/// `lookback` is; on a schedule of seconds, once a minute.
fn default_lookback_every(lookback: Duration) -> Duration {
    (lookback / 10).min(Duration::from_secs(60))
}
fn default_page_size() -> u32 {
    100
}
fn default_source_in_flight() -> usize {
    4
}
fn default_rate() -> u32 {
    10
}
pub(crate) fn default_true() -> bool {
    true
}

/// `"90s"`, `"15m"`, `"2h"`, `"7d"`, `"500ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a duration like `90s`, `15m`, `2h`, `7d`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("invalid duration {text:?}: missing unit (ms, s, m, h, d)"))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a whole number and a unit, like \"90s\"")
    })?;
    let per_unit: u64 = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    n.checked_mul(per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// A duration as a person writes it in the config: `24h`, `90s`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    // Days only from two on: "24h" reads better than "1d" for a budget.
    for (unit, per) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs.is_multiple_of(per) && (unit != "d" || secs >= 2 * 86_400) {
            return format!("{}{unit}", secs / per);
        }
    }
    format!("{secs}s")
}

/// A configured duration outside `min..=max` is a config error naming the key.
fn bounded(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError(format!(
            "{key}: {} is out of range ({} to {})",
            format_duration(value),
            format_duration(min),
            format_duration(max)
        )));
    }
    Ok(())
}

/// Deserializes `value` into `T`, prefixing any error with the key path.
pub(crate) fn typed<T: DeserializeOwned>(
    prefix: &str,
    value: serde_json::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let key = match (prefix.is_empty(), inner.as_str()) {
            (true, ".") => String::new(),
            (true, p) => p.to_string(),
            (false, ".") => prefix.to_string(),
            (false, p) => format!("{prefix}.{p}"),
        };
        let msg = e.into_inner().to_string();
        if key.is_empty() {
            ConfigError(msg)
        } else {
            ConfigError(format!("{key}: {msg}"))
        }
    })
}

/// Picks the config path: `--config`, else `$ORDERSYNC_CONFIG`, else the default.
pub fn choose_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("ORDERSYNC_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

impl Config {
    /// Loads, merges environment overrides and validates. Does not read secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist (set --config or ORDERSYNC_CONFIG)",
                path.display()
            )));
        }
        let merged = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("ORDERSYNC")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| {
                // The message starts with the file; the config crate ends it
                // with "in <the file, relative to the working directory>".
                let text = without_quoted_source(&e.to_string());
                let text = match text.rsplit_once("; in ") {
                    Some((reason, file)) if !file.contains("; ") => reason,
                    _ => &text,
                };
                ConfigError(format!("{}: {text}", path.display()))
            })?;
        let value: serde_json::Value = merged
            .try_deserialize()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_value(path, &base_dir, value)
    }

    pub fn from_value(
        path: &Path,
        base_dir: &Path,
        value: serde_json::Value,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = typed("", value)?;
        let daemon = build_daemon(raw.daemon, base_dir)?;
        let erp = build_erp(raw.erp, base_dir)?;
        let ledger = raw.ledger.map(|l| build_ledger(l, base_dir)).transpose()?;
        let mut sources = Vec::new();
        for (i, v) in raw.sources.into_iter().enumerate() {
            sources.push(build_source(i, v, base_dir)?);
        }
        for (i, s) in sources.iter().enumerate() {
            if sources[..i].iter().any(|o| o.name == s.name) {
                return Err(ConfigError(format!(
                    "sources[{i}].name: {:?} is used by another source; names must be unique",
                    s.name
                )));
            }
        }
        Ok(Config {
            path: path.to_path_buf(),
            daemon,
            erp,
            sources,
            ledger,
        })
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// A TOML parse error quotes the offending line, and that line may hold a
/// secret written inline. Keep the position and the reason, drop the quote
/// (the gutter lines `  |`, `3 | …` and the caret under them).
fn without_quoted_source(msg: &str) -> String {
    msg.lines()
        .filter(|line| {
            let rest = line
                .trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit());
            !rest.trim_start().starts_with('|')
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_schedule(key: &str, expr: &str) -> Result<(), ConfigError> {
    // The same parser the scheduler uses, so what passes here runs there.
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| {
            ConfigError(format!(
                "{key}: invalid cron expression {expr:?} (six fields, seconds first, e.g. \"0 */2 * * * *\"): {e}"
            ))
        })
}

/// A remote's base URL (`erp.url`, a source's `base_url`, `token_url`):
/// http(s) with a host, and nothing that could be a secret. Credentials
/// before the host (`user:password@`) and a query string are refused:
/// reqwest would send the first as Basic auth behind the connector's back,
/// and either would be printed wherever the URL is. Each connector adds
/// its paths (and MplusKASSA its query) to the base, and its credentials
/// come from its own `*_file` / `*_env` settings. No error repeats the URL.
pub(crate) fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let err = |what: &str| ConfigError(format!("{key}: {what} (the URL is not repeated here)"));
    let u = reqwest::Url::parse(url).map_err(|e| err(&format!("not a valid URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(err(&format!(
            "scheme {:?} is not http or https",
            u.scheme()
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(err("names no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(err(
            "carries credentials before the host (user:password@); give them in this \
             section's token/secret/password _file or _env setting instead",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(err(
            "has a query string or fragment; give the bare base URL (ordersync adds the \
             paths and parameters, and credentials go in _file or _env settings)",
        ));
    }
    Ok(())
}

/// `[ledger] url`: a `postgres://` URL naming user, host and database, with
/// no password in it (that comes from `password_file` / `password_env`).
/// No error repeats the URL: whatever it carries stays out of logs.
fn build_ledger(raw: RawLedger, base_dir: &Path) -> Result<LedgerConfig, ConfigError> {
    let url = check_ledger_url("ledger.url", &raw.url)?;
    let password = SecretRef::from_pair(
        "ledger.password",
        raw.password_file,
        raw.password_env,
        base_dir,
    )?;
    let heartbeat = raw.heartbeat.0;
    if heartbeat < Duration::from_secs(1) || heartbeat > Duration::from_secs(300) {
        return Err(ConfigError(format!(
            "ledger.heartbeat: {}s is outside 1s..300s",
            heartbeat.as_secs_f64()
        )));
    }
    Ok(LedgerConfig {
        url,
        password,
        heartbeat,
    })
}

/// A PostgreSQL ledger URL (`key` names where it came from, for errors):
/// `postgres://user@host:5432/db` with user, host and database, and no
/// password in it (that comes from `password_file` / `password_env`). No
/// error repeats the URL: whatever it carries stays out of logs.
pub fn check_ledger_url(key: &str, raw: &str) -> Result<String, ConfigError> {
    let err = |what: &str| ConfigError(format!("{key}: {what} (the URL is not repeated here)"));
    let url =
        reqwest::Url::parse(raw.trim()).map_err(|e| err(&format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(err(
            "must start with postgres:// (like postgres://user@host:5432/db)",
        ));
    }
    if url.password().is_some()
        || url
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        return Err(err(
            "carries a password; put it in ledger.password_file or ledger.password_env",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("names no host (like postgres://user@host:5432/db)"));
    }
    if url.username().is_empty() {
        return Err(err("names no user (like postgres://user@host:5432/db)"));
    }
    if url.path().trim_start_matches('/').is_empty() {
        return Err(err("names no database (like postgres://user@host:5432/db)"));
    }
    // TLS (`sslmode`, `sslrootcert`): checked here so that a wrong value
    // stops the config, not the first connect.
    crate::store::pg::tls::Tls::split(raw).map_err(|e| err(&e))?;
    Ok(raw.trim().to_string())
}

fn build_daemon(raw: RawDaemon, base_dir: &Path) -> Result<DaemonConfig, ConfigError> {
    check_schedule("daemon.shipments_schedule", &raw.shipments_schedule)?;
    if raw.max_attempts == 0 {
        return Err(ConfigError(
            "daemon.max_attempts: must be at least 1".into(),
        ));
    }
    if raw.retry_initial.0 > raw.retry_max.0 {
        return Err(ConfigError(
            "daemon.retry_initial: must not be larger than daemon.retry_max".into(),
        ));
    }
    if raw.request_timeout.0.is_zero() {
        return Err(ConfigError(
            "daemon.request_timeout: must be more than 0".into(),
        ));
    }
    if let Some(retain) = &raw.retain {
        bounded(
            "daemon.retain",
            retain.0,
            Duration::from_secs(24 * 3600),
            Duration::from_secs(100 * 365 * 24 * 3600),
        )?;
    }
    bounded(
        "daemon.give_up_after",
        raw.give_up_after.0,
        Duration::from_secs(60),
        Duration::from_secs(90 * 24 * 3600),
    )?;
    bounded(
        "daemon.request_timeout",
        raw.request_timeout.0,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    bounded(
        "daemon.retry_max",
        raw.retry_max.0,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
    )?;
    bounded(
        "daemon.shutdown_grace",
        raw.shutdown_grace.0,
        Duration::ZERO,
        Duration::from_secs(3600),
    )?;
    Ok(DaemonConfig {
        state_dir: resolve_path(&raw.state_dir, base_dir),
        log_format: raw.log_format,
        shipments_schedule: raw.shipments_schedule,
        shutdown_grace: raw.shutdown_grace.0,
        request_timeout: raw.request_timeout.0,
        max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
        max_attempts: raw.max_attempts,
        give_up_after: raw.give_up_after.0,
        retry_initial: raw.retry_initial.0,
        retry_max: raw.retry_max.0,
        metrics_listen: match raw.metrics_listen.as_deref() {
            None => None,
            Some(text) => Some(
                crate::metrics::parse_listen(text)
                    .map_err(|e| ConfigError(format!("daemon.metrics_listen: {e}")))?,
            ),
        },
        retain: raw.retain.map(|r| r.0),
    })
}

fn build_erp(raw: RawErp, base_dir: &Path) -> Result<ErpConfig, ConfigError> {
    check_url("erp.url", &raw.url)?;
    if raw.max_in_flight == 0 || raw.max_in_flight > 64 {
        return Err(ConfigError(
            "erp.max_in_flight: must be between 1 and 64".into(),
        ));
    }
    let password = SecretRef::from_pair(
        "erp.password",
        raw.password_file,
        raw.password_env,
        base_dir,
    )?;
    let token = SecretRef::from_pair("erp.token", raw.token_file, raw.token_env, base_dir)?;
    let only_tryton = |key: &str| {
        ConfigError(format!(
            "erp.{key}: only used with erp.kind = \"tryton\" (this ERP is kind = \"http\")"
        ))
    };
    let credential = match raw.kind {
        ErpKind::Http => {
            if raw.user.is_some() {
                return Err(only_tryton("user"));
            }
            if password.is_some() {
                return Err(only_tryton("password_file / password_env"));
            }
            if raw.confirm.is_some() {
                return Err(only_tryton("confirm"));
            }
            if raw.unknown_product.is_some() {
                return Err(only_tryton("unknown_product"));
            }
            if raw.product_match.is_some() {
                return Err(only_tryton("product_match"));
            }
            if raw.tax_map.is_some() {
                return Err(only_tryton("tax_map"));
            }
            if raw.batch_size.is_some() {
                return Err(only_tryton("batch_size"));
            }
            token.ok_or_else(|| {
                ConfigError("erp.token_file: the http ERP needs token_file or token_env".into())
            })?
        }
        ErpKind::Tryton => {
            if token.is_some() {
                return Err(ConfigError(
                    "erp.token_file / erp.token_env: only used with erp.kind = \"http\"; tryton uses user + password_file".into(),
                ));
            }
            if raw.user.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError(
                    "erp.user: required for erp.kind = \"tryton\"".into(),
                ));
            }
            password.ok_or_else(|| {
                ConfigError("erp.password_file: tryton needs password_file or password_env".into())
            })?
        }
    };
    let product_match = raw
        .product_match
        .unwrap_or_else(|| vec![ProductMatch::Sku, ProductMatch::Ean]);
    if product_match.is_empty() {
        return Err(ConfigError(
            "erp.product_match: list at least one of \"sku\", \"ean\"".into(),
        ));
    }
    let tax_map = tax_map(raw.tax_map.unwrap_or_default())?;
    let batch_size = match raw.kind {
        ErpKind::Http => 1,
        ErpKind::Tryton => raw.batch_size.unwrap_or(DEFAULT_TRYTON_BATCH),
    };
    if !(1..=100).contains(&batch_size) {
        return Err(ConfigError(format!(
            "erp.batch_size: must be between 1 and 100 (got {batch_size})"
        )));
    }
    Ok(ErpConfig {
        kind: raw.kind,
        url: raw.url,
        user: raw.user,
        credential,
        confirm: raw.confirm.unwrap_or(true),
        unknown_product: raw.unknown_product.unwrap_or_default(),
        product_match,
        tax_map,
        max_in_flight: raw.max_in_flight,
        batch_size,
    })
}

/// `erp.tax_map = { "21" = "NL 21% verkoop" }`: rates are percentages
/// (0 to 100), names are not empty, and no rate is given twice ("9" and
/// "9.0" are one rate).
fn tax_map(
    raw: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(rust_decimal::Decimal, String)>, ConfigError> {
    let mut map: Vec<(rust_decimal::Decimal, String)> = Vec::new();
    for (rate, name) in raw {
        let parsed = rate
            .trim()
            .parse::<rust_decimal::Decimal>()
            .ok()
            .filter(|r| {
                *r >= rust_decimal::Decimal::ZERO && *r <= rust_decimal::Decimal::ONE_HUNDRED
            })
            .ok_or_else(|| {
                ConfigError(format!(
                    "erp.tax_map: {rate:?} is not a tax rate in percent (e.g. \"21\" or \"5.5\")"
                ))
            })?
            .normalize();
        if name.trim().is_empty() {
            return Err(ConfigError(format!(
                "erp.tax_map.{rate:?}: the Tryton tax name is empty"
            )));
        }
        if map.iter().any(|(r, _)| *r == parsed) {
            return Err(ConfigError(format!(
                "erp.tax_map: the rate {parsed}% is given twice"
            )));
        }
        map.push((parsed, name.trim().to_string()));
    }
    Ok(map)
}

fn build_source(
    index: usize,
    value: serde_json::Value,
    base_dir: &Path,
) -> Result<SourceConfig, ConfigError> {
    let prefix = format!("sources[{index}]");
    let serde_json::Value::Object(map) = value else {
        return Err(ConfigError(format!(
            "{prefix}: must be a table ([[sources]])"
        )));
    };
    let (common, specific): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
        .into_iter()
        .partition(|(k, _)| COMMON_SOURCE_KEYS.contains(&k.as_str()));
    let c: RawCommonSource = typed(&prefix, serde_json::Value::Object(common))?;
    if c.name.is_empty()
        || c.name.starts_with('_')
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.')
    {
        return Err(ConfigError(format!(
            "{prefix}.name: {:?} must be non-empty, use only letters, digits, '-', '_' or '.' (it is part of every order key) and not start with '_' (kept for the ERP's feeds)",
            c.name
        )));
    }
    check_url(&format!("{prefix}.base_url"), &c.base_url)?;
    check_schedule(&format!("{prefix}.schedule"), &c.schedule)?;
    if !(1..=1000).contains(&c.page_size) {
        return Err(ConfigError(format!(
            "{prefix}.page_size: must be between 1 and 1000"
        )));
    }
    if !(1..=64).contains(&c.max_in_flight) {
        return Err(ConfigError(format!(
            "{prefix}.max_in_flight: must be between 1 and 64"
        )));
    }
    if c.rate_limit_per_sec == 0 {
        return Err(ConfigError(format!(
            "{prefix}.rate_limit_per_sec: must be at least 1"
        )));
    }
    let lookback = c.lookback.0;
    let lookback_every = c
        .lookback_every
        .map_or_else(|| default_lookback_every(lookback), |d| d.0);
    if !lookback.is_zero() && lookback_every >= lookback {
        return Err(ConfigError(format!(
            "{prefix}.lookback_every: {} must be shorter than lookback ({}): the polls between two reads of the whole window start at the cursor, so an order that shows up late is found only while it is still inside the window",
            format_duration(lookback_every),
            format_duration(lookback)
        )));
    }
    let country_map =
        CountryMap::new(format!("{prefix}.country_map"), c.country_map).map_err(ConfigError)?;
    let context = SourceContext {
        prefix: &prefix,
        base_dir,
        page_size: c.page_size,
        rate_limit_per_sec: c.rate_limit_per_sec,
        country_map: &country_map,
    };
    let keys = serde_json::Value::Object(specific);
    let settings = match c.kind {
        SourceKind::Cloudsuite => {
            SourceSettings::CloudSuite(sources::cloudsuite::config::build(&context, keys)?)
        }
        SourceKind::Titelive => {
            SourceSettings::Titelive(sources::titelive::config::build(&context, keys)?)
        }
        SourceKind::Retailys => {
            SourceSettings::Retailys(sources::retailys::config::build(&context, keys)?)
        }
        SourceKind::Mplus => SourceSettings::Mplus(sources::mplus::config::build(&context, keys)?),
        SourceKind::Vinou => SourceSettings::Vinou(sources::vinou::config::build(&context, keys)?),
    };
    Ok(SourceConfig {
        name: c.name,
        kind: c.kind,
        base_url: c.base_url.trim_end_matches('/').to_string(),
        schedule: c.schedule,
        lookback,
        lookback_every,
        recheck_every: c
            .recheck_every
            .map_or_else(|| c.kind.default_recheck_every(), |d| d.0),
        page_size: c.page_size,
        max_in_flight: c.max_in_flight,
        rate_limit_per_sec: c.rate_limit_per_sec,
        enabled: c.enabled,
        country_map,
        settings,
    })
}

/// A config file's text parsed as `Config::load` would, and a minimal
/// valid file to vary: shared by these tests and the kinds' own.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Config, ConfigError};

    pub(crate) fn parse(toml_text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml_text).unwrap();
        Config::load(&p)
    }

    pub(crate) const MINIMAL: &str = r#"
[daemon]
state_dir = "state"
[erp]
kind = "http"
url = "http://127.0.0.1:9/"
token_env = "X_TOKEN"
[[sources]]
name = "webshop-nl"
kind = "cloudsuite"
base_url = "http://127.0.0.1:8/"
client_id = "ordersync"
client_secret_env = "X_SECRET"
"#;
}

#[cfg(test)]
mod tests {
    use super::test_support::{MINIMAL, parse};
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.daemon.shipments_schedule, "0 * * * * *");
        assert_eq!(c.sources[0].page_size, 100);
        assert_eq!(c.sources[0].lookback, Duration::from_secs(900));
        assert_eq!(c.sources[0].lookback_every, Duration::from_secs(60));
        assert!(c.daemon.state_dir.is_absolute());
    }

    /// The window is read whole at least once within itself, or an order
    /// that shows up late could fall out of it unread.
    #[test]
    fn lookback_every_must_be_shorter_than_lookback() {
        let set = |extra: &str| parse(&format!("{MINIMAL}\n{extra}\n"));
        let c = set("lookback = \"2h\"\nlookback_every = \"0s\"").unwrap();
        assert_eq!(c.sources[0].lookback_every, Duration::ZERO);
        let c = set("lookback = \"2h\"").unwrap();
        assert_eq!(c.sources[0].lookback_every, Duration::from_secs(60));
        let c = set("lookback = \"5m\"").unwrap();
        assert_eq!(c.sources[0].lookback_every, Duration::from_secs(30));
        let err = set("lookback_every = \"15m\"").unwrap_err().0;
        assert!(err.contains("sources[0].lookback_every"), "{err}");
        assert!(
            err.contains("15m") && err.contains("shorter than lookback"),
            "{err}"
        );
        // No window at all: nothing to pace.
        let c = set("lookback = \"0s\"\nlookback_every = \"1m\"").unwrap();
        assert_eq!(c.sources[0].lookback, Duration::ZERO);
    }

    #[test]
    fn cloudsuite_desadv_needs_shop_and_user() {
        let SourceSettings::CloudSuite(cs) = &parse(MINIMAL).unwrap().sources[0].settings else {
            panic!("not cloudsuite");
        };
        assert_eq!(cs.desadv, None, "off by default");
        let on = parse(&format!(
            "{MINIMAL}desadv = true\ndesadv_shop = 12\ndesadv_user = 1260\n"
        ))
        .unwrap();
        let SourceSettings::CloudSuite(cs) = &on.sources[0].settings else {
            panic!("not cloudsuite");
        };
        assert_eq!(
            cs.desadv,
            Some(DesadvTarget {
                shop: 12,
                user: 1260
            })
        );
        for (extra, named) in [
            ("desadv = true\ndesadv_user = 1\n", "sources[0].desadv_shop"),
            ("desadv = true\ndesadv_shop = 1\n", "sources[0].desadv_user"),
            ("desadv_shop = 1\ndesadv_user = 1\n", "sources[0].desadv"),
            (
                "desadv = true\ndesadv_shop = -1\ndesadv_user = 1\n",
                "desadv_shop",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err().0;
            assert!(err.contains(named), "{extra}: {err}");
        }
    }

    #[test]
    fn unknown_source_key_is_named() {
        let err = parse(&format!("{MINIMAL}\npagesize = 5\n")).unwrap_err().0;
        assert!(err.contains("sources[0]"), "{err}");
        assert!(err.contains("pagesize"), "{err}");
    }

    #[test]
    fn unknown_daemon_key_is_named() {
        let text = MINIMAL.replace("[daemon]\n", "[daemon]\nstate_dri = \"x\"\n");
        let err = parse(&text).unwrap_err().0;
        assert!(err.contains("state_dri"), "{err}");
    }

    #[test]
    fn bad_duration_names_key_and_value() {
        let err = parse(&format!("{MINIMAL}\nlookback = \"15 minutes\"\n"))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[0].lookback"), "{err}");
        assert!(err.contains("15 minutes"), "{err}");
    }

    #[test]
    fn retain_is_off_by_default_and_at_least_a_day() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.daemon.retain, None);
        let with = |line: &str| MINIMAL.replace("[daemon]\n", &format!("[daemon]\n{line}\n"));
        let c = parse(&with("retain = \"90d\"")).unwrap();
        assert_eq!(c.daemon.retain, Some(Duration::from_secs(90 * 24 * 3600)));
        let err = parse(&with("retain = \"2h\"")).unwrap_err().0;
        assert!(err.contains("daemon.retain"), "{err}");
    }

    #[test]
    fn give_up_after_defaults_to_a_day_and_absurd_durations_are_refused() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.daemon.give_up_after, Duration::from_secs(24 * 3600));
        let with = |line: &str| MINIMAL.replace("[daemon]\n", &format!("[daemon]\n{line}\n"));
        let err = parse(&with("give_up_after = \"400d\"")).unwrap_err().0;
        assert!(
            err.contains("daemon.give_up_after: 400d is out of range (1m to 90d)"),
            "{err}"
        );
        let err = parse(&with("request_timeout = \"0ms\"")).unwrap_err().0;
        assert!(err.contains("daemon.request_timeout"), "{err}");
        // A number that overflows is a clear error, not a panic.
        let err = parse(&with("retry_max = \"999999999999999999d\""))
            .unwrap_err()
            .0;
        assert!(
            err.contains("daemon.retry_max") && err.contains("too large"),
            "{err}"
        );
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn bad_cron_is_named() {
        let err = parse(&format!("{MINIMAL}\nschedule = \"every minute\"\n"))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[0].schedule"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("2 hours").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn http_erp_rejects_tryton_keys() {
        let text = MINIMAL.replace(
            "token_env = \"X_TOKEN\"",
            "token_env = \"X_TOKEN\"\nuser = \"admin\"",
        );
        let err = parse(&text).unwrap_err().0;
        assert!(err.contains("erp.user"), "{err}");
    }

    #[test]
    fn tryton_erp_keys() {
        let tryton = MINIMAL.replace(
            "kind = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntoken_env = \"X_TOKEN\"",
            "kind = \"tryton\"\nurl = \"http://127.0.0.1:9/shop\"\nuser = \"ordersync\"\npassword_env = \"X_PW\"\nproduct_match = [\"ean\"]",
        );
        let c = parse(&tryton).unwrap();
        assert_eq!(c.erp.product_match, vec![ProductMatch::Ean]);
        assert!(c.erp.confirm);
        assert_eq!((c.erp.batch_size, c.erp.push_slots()), (20, 80));
        let batched = |n: &str| {
            parse(&tryton.replace("product_match", &format!("batch_size = {n}\nproduct_match")))
        };
        assert_eq!(batched("1").unwrap().erp.push_slots(), 4);
        for bad in ["0", "101"] {
            let e = batched(bad).unwrap_err().0;
            assert!(e.contains("erp.batch_size") && e.contains(bad), "{e}");
        }
        let http_batch = MINIMAL.replace(
            "token_env = \"X_TOKEN\"",
            "token_env = \"X_TOKEN\"\nbatch_size = 5",
        );
        assert!(parse(&http_batch).unwrap_err().0.contains("erp.batch_size"));
        assert_eq!(
            parse(MINIMAL).unwrap().erp.push_slots(),
            4,
            "http: one order per call"
        );
        let no_user = tryton.replace("user = \"ordersync\"\n", "");
        assert!(parse(&no_user).unwrap_err().0.contains("erp.user"));
        let http = MINIMAL.replace(
            "token_env = \"X_TOKEN\"",
            "token_env = \"X_TOKEN\"\nproduct_match = [\"sku\"]",
        );
        assert!(parse(&http).unwrap_err().0.contains("erp.product_match"));
        let with_map = |map: &str| {
            parse(&MINIMAL.replace(
                "kind = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntoken_env = \"X_TOKEN\"",
                &format!("kind = \"tryton\"\nurl = \"http://127.0.0.1:9/shop\"\nuser = \"ordersync\"\npassword_env = \"X_PW\"\ntax_map = {map}"),
            ))
        };
        let c = with_map(r#"{ "21" = "NL 21% verkoop", "5.50" = "FR 5,5%" }"#).unwrap();
        assert_eq!(
            c.erp.tax_map,
            vec![
                (
                    rust_decimal::Decimal::from(21),
                    "NL 21% verkoop".to_string()
                ),
                (rust_decimal::Decimal::new(55, 1), "FR 5,5%".to_string()),
            ]
        );
        for (bad, named) in [
            (r#"{ "21%" = "x" }"#, "\"21%\""),
            (r#"{ "101" = "x" }"#, "\"101\""),
            (r#"{ "21" = " " }"#, "empty"),
            (r#"{ "9" = "a", "9.0" = "b" }"#, "twice"),
        ] {
            let e = with_map(bad).unwrap_err().0;
            assert!(e.contains("erp.tax_map") && e.contains(named), "{bad}: {e}");
        }
        let http_map = MINIMAL.replace(
            "token_env = \"X_TOKEN\"",
            "token_env = \"X_TOKEN\"\ntax_map = { \"21\" = \"x\" }",
        );
        assert!(parse(&http_map).unwrap_err().0.contains("erp.tax_map"));
    }

    #[test]
    fn no_ledger_table_means_sqlite() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.ledger.is_none());
    }

    #[test]
    fn ledger_url_and_password_reference() {
        let with = |table: &str| parse(&format!("{MINIMAL}\n[ledger]\n{table}\n"));
        let c =
            with("url = \"postgres://ordersync@db.example:5432/ledger\"\npassword_env = \"PG_PW\"")
                .unwrap();
        let ledger = c.ledger.as_ref().unwrap();
        assert_eq!(ledger.url, "postgres://ordersync@db.example:5432/ledger");
        assert_eq!(ledger.password, Some(SecretRef::Env("PG_PW".into())));
        let c =
            with("url = \"postgresql://ordersync@127.0.0.1/ledger\"\npassword_file = \"pg.pw\"")
                .unwrap();
        let Some(SecretRef::File(p)) = &c.ledger.as_ref().unwrap().password else {
            panic!("password_file");
        };
        assert!(p.is_absolute() && p.ends_with("pg.pw"));
        let e = with("url = \"postgres://u@h/d\"\npassword_env = \"A\"\npassword_file = \"b\"")
            .unwrap_err()
            .0;
        assert!(e.contains("ledger.password"), "{e}");
        let e = with("url = \"postgres://u@h/d\"\npasword_env = \"A\"")
            .unwrap_err()
            .0;
        assert!(e.contains("pasword_env"), "{e}");
    }

    /// A TOML syntax error says where and why, but does not quote the line:
    /// an operator who wrote a secret inline must not find it in the journal.
    #[test]
    fn a_toml_syntax_error_names_the_place_without_quoting_the_line() {
        for broken in [
            "token = \"Hunter2-secret\n",
            "token = \"Hunter2-secret\" x\n",
            "token = Hunter2-secret\n",
        ] {
            let text = format!("{MINIMAL}\n[extra]\n{broken}");
            let line = text.lines().count();
            let err = parse(&text).unwrap_err().0;
            assert!(!err.contains("Hunter2"), "{err}");
            assert!(err.contains(&format!("line {line}")), "{err}");
            assert!(err.contains("c.toml"), "{err}");
            assert_eq!(err.matches("c.toml").count(), 1, "named once: {err}");
            assert!(!err.contains('\n'), "one line for the journal: {err}");
        }
    }

    /// A remote's URL with credentials or a query in it is refused, for the
    /// ERP, a source's base and a token URL alike, and no error repeats the
    /// URL (nor anything in it).
    #[test]
    fn a_remote_url_with_credentials_or_a_query_is_refused_without_echoing_it() {
        let erp = |url: &str| {
            MINIMAL.replace("url = \"http://127.0.0.1:9/\"", &format!("url = \"{url}\""))
        };
        let base = |url: &str| {
            MINIMAL.replace(
                "base_url = \"http://127.0.0.1:8/\"",
                &format!("base_url = \"{url}\""),
            )
        };
        let token = |url: &str| format!("{}\ntoken_url = \"{url}\"\n", MINIMAL.trim_end());
        let cases: [(&str, &str, &str); 8] = [
            (
                "http://ops:Hunter2-secret@erp.example/",
                "credentials",
                "erp.url",
            ),
            (
                "http://Hunter2-secret@erp.example/",
                "credentials",
                "erp.url",
            ),
            (
                "https://erp.example/x?token=Hunter2-secret",
                "query",
                "erp.url",
            ),
            (
                "https://erp.example/x#Hunter2-secret",
                "fragment",
                "erp.url",
            ),
            ("ftp://erp.example/Hunter2-secret", "scheme", "erp.url"),
            ("http://:8/Hunter2-secret", "not a valid URL", "erp.url"),
            ("not a url Hunter2-secret", "not a valid URL", "erp.url"),
            (
                "https://u:Hunter2-secret@shop.example/",
                "credentials",
                "base_url",
            ),
        ];
        for (url, named, key) in cases {
            let text = if key == "erp.url" {
                erp(url)
            } else {
                base(url)
            };
            assert_ne!(text, MINIMAL, "the test did not put {url} in");
            let e = parse(&text).unwrap_err().0;
            assert!(e.contains(key) && e.contains(named), "{url}: {e}");
            assert!(
                !e.contains("Hunter2") && !e.contains(".example"),
                "{url} echoed: {e}"
            );
        }
        let e = parse(&token("https://id.example/t?secret=Hunter2-secret"))
            .unwrap_err()
            .0;
        assert!(e.contains("token_url") && e.contains("query"), "{e}");
        assert!(!e.contains("Hunter2"), "{e}");
        // A plain base with a path still passes.
        parse(&erp("https://erp.example:8443/tryton/db")).unwrap();
        parse(&base("https://shop.example/api/")).unwrap();
    }

    /// A password in the URL is a config error, and no error about the URL
    /// repeats it (nor the rest of the URL).
    #[test]
    fn a_ledger_url_with_a_password_is_refused_without_echoing_it() {
        for url in [
            "postgres://ordersync:Hunter2-secret@db.example:5432/ledger",
            "postgres://ordersync@db.example/ledger?password=Hunter2-secret",
            "postgres://ordersync@db.example/ledger?PASSWORD=Hunter2-secret",
        ] {
            let e = parse(&format!("{MINIMAL}\n[ledger]\nurl = \"{url}\"\n"))
                .unwrap_err()
                .0;
            assert!(e.contains("ledger.url") && e.contains("password"), "{e}");
            assert!(!e.contains("Hunter2"), "the password leaked: {e}");
            assert!(!e.contains("db.example"), "the URL was echoed: {e}");
        }
        for (url, named) in [
            ("mysql://u@h/d", "postgres://"),
            ("postgres://u@/d", "host"),
            ("postgres://h:5432/d", "user"),
            ("postgres://u@h:5432", "database"),
            ("postgres://u@h/d?sslmode=verify-full", "sslrootcert"),
            ("postgres://u@h/d?sslmode=on", "sslmode must be one of"),
            (
                "postgres://u@h/d?sslcert=/etc/c.pem",
                "sslcert is not supported",
            ),
            ("not a url Hunter2-secret", "not a valid URL"),
        ] {
            let e = parse(&format!("{MINIMAL}\n[ledger]\nurl = \"{url}\"\n"))
                .unwrap_err()
                .0;
            assert!(e.contains("ledger.url") && e.contains(named), "{url}: {e}");
            assert!(!e.contains("Hunter2"), "{e}");
        }
        // Merged values (an ORDERSYNC__LEDGER__URL override arrives so) go
        // through the same check.
        let dir = tempfile::tempdir().unwrap();
        let value = serde_json::json!({
            "daemon": {"state_dir": "s"},
            "erp": {"kind": "http", "url": "http://127.0.0.1:9/", "token_env": "T"},
            "ledger": {"url": "postgres://u:Hunter2-secret@h/d"},
        });
        let e = Config::from_value(&dir.path().join("c.toml"), dir.path(), value)
            .unwrap_err()
            .0;
        assert!(e.contains("password") && !e.contains("Hunter2"), "{e}");
    }

    #[test]
    fn duplicate_source_names_are_refused() {
        let second = MINIMAL.split("[[sources]]").nth(1).unwrap();
        let err = parse(&format!("{MINIMAL}[[sources]]{second}"))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[1].name"), "{err}");
    }

    /// `_erp` names the ERP's feeds in the ledger (their poll lease on a
    /// fleet): a source of that name would share it.
    #[test]
    fn a_source_name_may_not_start_with_an_underscore() {
        let name = MINIMAL.lines().find(|l| l.starts_with("name = ")).unwrap();
        for bad in ["_erp", "_shop", "shop/1", ""] {
            let err = parse(&MINIMAL.replace(name, &format!("name = {bad:?}")))
                .unwrap_err()
                .0;
            assert!(
                err.contains("sources[0].name") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
        parse(&MINIMAL.replace(name, "name = \"shop_1.nl\"")).unwrap();
    }
}
