//! Configuration: TOML file plus `ORDERSYNC__SECTION__KEY` environment
//! overrides, merged by the `config` crate, then checked here so that every
//! error names the key (`sources[1].page_size`) and unknown keys are refused.
//! Secrets are only referenced here (`X_file` / `X_env`); they are read when
//! a component is built, never stored in this struct.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::secret::{SecretRef, resolve_path};

mod titelive;
pub use titelive::{TiteliveAuth, TiteliveSettings};

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
    /// Completed orders older than this lose their raw payload, attempts
    /// and events ([`crate::store::Store::prune_completed`]); off when unset.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
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
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    pub base_url: String,
    pub schedule: String,
    pub lookback: Duration,
    pub page_size: u32,
    pub max_in_flight: usize,
    pub rate_limit_per_sec: u32,
    pub enabled: bool,
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

/// Where a new MplusKASSA source starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MplusStart {
    /// Sync marker 1: every order the till has.
    Beginning,
    /// The till's current order marker: only orders added or changed from now on.
    Now,
}

#[derive(Clone, Debug)]
pub struct MplusSettings {
    pub ident: String,
    pub secret: SecretRef,
    pub start: MplusStart,
    /// Write the ERP order number into the order's `reference`.
    pub write_reference: bool,
}

#[derive(Clone, Debug)]
pub struct VinouSettings {
    /// The AuthID from the Vinou app's settings (not a secret by itself).
    pub auth_id: String,
    pub api_token: SecretRef,
    /// Order `status` values that are pushed; `need_payment`/`new` wait.
    pub import_statuses: Vec<String>,
    /// `orders/touch` ("mark as read") after the ERP accepted the order.
    pub touch_on_import: bool,
}

#[derive(Clone, Debug)]
pub enum CloudSuiteAuth {
    /// OAuth2 client credentials (the current method).
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
    },
    /// `Authorization: Token …` (deprecated by CloudSuite since 2024-02-01).
    LegacyToken(SecretRef),
}

#[derive(Clone, Debug)]
pub struct CloudSuiteSettings {
    pub auth: CloudSuiteAuth,
    pub webshop: Option<i64>,
    pub payment_ok: Vec<String>,
    pub timezone: chrono_tz::Tz,
    /// `desadv = true`: each shipment goes out as a DESADV message to
    /// `/proxy/des_adv_xml/delivery/?shop=&user=` instead of
    /// `shipment_state=sent`.
    pub desadv: Option<DesadvTarget>,
}

/// The customer-specific `shop` and `user` of CloudSuite's proxy endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesadvTarget {
    pub shop: u64,
    pub user: u64,
}

/// A Retailys order status as configured: its numeric id or its name
/// (statuses are defined per shop; names are resolved at startup).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusRef {
    Id(i64),
    Name(String),
}

impl std::fmt::Display for StatusRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusRef::Id(id) => write!(f, "{id}"),
            StatusRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RetailysSettings {
    pub token: SecretRef,
    pub channel_id: Option<i64>,
    /// None: every status that neither completes nor cancels an order.
    pub import_statuses: Option<Vec<StatusRef>>,
    pub processing_status: StatusRef,
    pub shipped_status: Option<StatusRef>,
    /// None: matched by the ERP carrier's name among the shop's shippings.
    pub shipper_id: Option<i64>,
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
}

fn default_erp_in_flight() -> usize {
    4
}

const COMMON_SOURCE_KEYS: &[&str] = &[
    "name",
    "kind",
    "base_url",
    "schedule",
    "lookback",
    "page_size",
    "max_in_flight",
    "rate_limit_per_sec",
    "enabled",
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
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_source_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_rate")]
    rate_limit_per_sec: u32,
    #[serde(default = "default_true")]
    enabled: bool,
}

fn default_schedule() -> String {
    "0 */2 * * * *".into()
}
fn default_lookback() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
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
fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudSuite {
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
    webshop: Option<i64>,
    #[serde(default = "default_payment_ok")]
    payment_ok: Vec<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default)]
    desadv: bool,
    desadv_shop: Option<u64>,
    desadv_user: Option<u64>,
}

fn default_payment_ok() -> Vec<String> {
    ["closed_success", "paid", "account", "none"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_timezone() -> String {
    "Europe/Amsterdam".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetailys {
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    channel_id: Option<i64>,
    import_statuses: Option<Vec<StatusRef>>,
    processing_status: Option<StatusRef>,
    shipped_status: Option<StatusRef>,
    shipper_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMplus {
    ident: String,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    #[serde(default = "default_mplus_start")]
    start: MplusStart,
    #[serde(default = "default_true")]
    write_reference: bool,
}

fn default_mplus_start() -> MplusStart {
    MplusStart::Beginning
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVinou {
    auth_id: String,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
    #[serde(default = "default_import_statuses")]
    import_statuses: Vec<String>,
    #[serde(default = "default_true")]
    touch_on_import: bool,
}

fn default_import_statuses() -> Vec<String> {
    vec!["payed".into(), "need_package".into()]
}

pub const CLOUDSUITE_TOKEN_URL: &str =
    "https://id.cloudsuite.io/realms/CloudSuite/protocol/openid-connect/token";

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
fn typed<T: DeserializeOwned>(prefix: &str, value: serde_json::Value) -> Result<T, ConfigError> {
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
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
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
        })
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
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

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(ConfigError(format!(
            "{key}: {url:?} is not an http(s) URL with a host"
        ))),
        Err(e) => Err(ConfigError(format!(
            "{key}: {url:?} is not a valid URL: {e}"
        ))),
    }
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
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.')
    {
        return Err(ConfigError(format!(
            "{prefix}.name: {:?} must be non-empty and use only letters, digits, '-', '_' or '.' (it is part of every order key)",
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
    let settings = match c.kind {
        SourceKind::Cloudsuite => {
            let raw: RawCloudSuite = typed(&prefix, serde_json::Value::Object(specific))?;
            SourceSettings::CloudSuite(build_cloudsuite(&prefix, raw, base_dir)?)
        }
        SourceKind::Titelive => {
            let raw: titelive::RawTitelive = typed(&prefix, serde_json::Value::Object(specific))?;
            SourceSettings::Titelive(titelive::build(&prefix, raw, base_dir)?)
        }
        SourceKind::Retailys => {
            let raw: RawRetailys = typed(&prefix, serde_json::Value::Object(specific))?;
            // The API refuses per_page outside 10..=250 with a 400.
            if !(10..=250).contains(&c.page_size) {
                return Err(ConfigError(format!(
                    "{prefix}.page_size: retailys accepts 10 to 250 orders per page, got {}",
                    c.page_size
                )));
            }
            // Beyond its documented 100 requests/s the API only answers 429.
            if c.rate_limit_per_sec > 100 {
                return Err(ConfigError(format!(
                    "{prefix}.rate_limit_per_sec: retailys allows at most 100 requests per second, got {}",
                    c.rate_limit_per_sec
                )));
            }
            SourceSettings::Retailys(build_retailys(&prefix, raw, base_dir)?)
        }
        SourceKind::Mplus => {
            let raw: RawMplus = typed(&prefix, serde_json::Value::Object(specific))?;
            SourceSettings::Mplus(build_mplus(&prefix, raw, base_dir)?)
        }
        SourceKind::Vinou => {
            if c.page_size > 100 {
                return Err(ConfigError(format!(
                    "{prefix}.page_size: {} is more than Vinou allows (at most 100 orders per page)",
                    c.page_size
                )));
            }
            let raw: RawVinou = typed(&prefix, serde_json::Value::Object(specific))?;
            SourceSettings::Vinou(build_vinou(&prefix, raw, base_dir)?)
        }
    };
    Ok(SourceConfig {
        name: c.name,
        kind: c.kind,
        base_url: c.base_url.trim_end_matches('/').to_string(),
        schedule: c.schedule,
        lookback: c.lookback.0,
        page_size: c.page_size,
        max_in_flight: c.max_in_flight,
        rate_limit_per_sec: c.rate_limit_per_sec,
        enabled: c.enabled,
        settings,
    })
}

fn build_mplus(prefix: &str, raw: RawMplus, base_dir: &Path) -> Result<MplusSettings, ConfigError> {
    if raw.ident.trim().is_empty() {
        return Err(ConfigError(format!("{prefix}.ident: must not be empty")));
    }
    let secret = SecretRef::from_pair(
        &format!("{prefix}.secret"),
        raw.secret_file,
        raw.secret_env,
        base_dir,
    )?
    .ok_or_else(|| {
        ConfigError(format!(
            "{prefix}.secret_file: mplus needs secret_file or secret_env"
        ))
    })?;
    Ok(MplusSettings {
        ident: raw.ident,
        secret,
        start: raw.start,
        write_reference: raw.write_reference,
    })
}

fn build_cloudsuite(
    prefix: &str,
    raw: RawCloudSuite,
    base_dir: &Path,
) -> Result<CloudSuiteSettings, ConfigError> {
    let secret = SecretRef::from_pair(
        &format!("{prefix}.client_secret"),
        raw.client_secret_file,
        raw.client_secret_env,
        base_dir,
    )?;
    let legacy = SecretRef::from_pair(
        &format!("{prefix}.api_token"),
        raw.api_token_file,
        raw.api_token_env,
        base_dir,
    )?;
    let auth = match (raw.client_id, secret, legacy) {
        (Some(client_id), Some(client_secret), None) => {
            let token_url = raw
                .token_url
                .unwrap_or_else(|| CLOUDSUITE_TOKEN_URL.to_string());
            check_url(&format!("{prefix}.token_url"), &token_url)?;
            CloudSuiteAuth::OAuth2 {
                token_url,
                client_id,
                client_secret,
            }
        }
        (None, None, Some(token)) if raw.token_url.is_none() => CloudSuiteAuth::LegacyToken(token),
        (None, None, None) => {
            return Err(ConfigError(format!(
                "{prefix}: cloudsuite needs client_id + client_secret_file (OAuth2) or api_token_file (legacy)"
            )));
        }
        (Some(_), None, _) => {
            return Err(ConfigError(format!(
                "{prefix}.client_secret_file: client_id is set but no client_secret_file / client_secret_env"
            )));
        }
        (None, Some(_), _) => {
            return Err(ConfigError(format!(
                "{prefix}.client_id: client_secret is set but client_id is missing"
            )));
        }
        _ => {
            return Err(ConfigError(format!(
                "{prefix}.api_token_file: use either OAuth2 (token_url, client_id, client_secret_*) or the legacy api_token_*, not both"
            )));
        }
    };
    if raw.payment_ok.is_empty() {
        return Err(ConfigError(format!(
            "{prefix}.payment_ok: must list at least one payment_status"
        )));
    }
    let timezone: chrono_tz::Tz = raw.timezone.parse().map_err(|_| {
        ConfigError(format!(
            "{prefix}.timezone: {:?} is not an IANA time zone (e.g. \"Europe/Amsterdam\")",
            raw.timezone
        ))
    })?;
    let desadv = match (raw.desadv, raw.desadv_shop, raw.desadv_user) {
        (true, Some(shop), Some(user)) => Some(DesadvTarget { shop, user }),
        (true, None, _) => {
            return Err(ConfigError(format!(
                "{prefix}.desadv_shop: desadv = true needs the shop number CloudSuite gave you for its proxy endpoints"
            )));
        }
        (true, _, None) => {
            return Err(ConfigError(format!(
                "{prefix}.desadv_user: desadv = true needs the user number CloudSuite gave you for its proxy endpoints"
            )));
        }
        (false, None, None) => None,
        (false, _, _) => {
            return Err(ConfigError(format!(
                "{prefix}.desadv: desadv_shop / desadv_user are set but desadv is not true"
            )));
        }
    };
    Ok(CloudSuiteSettings {
        auth,
        webshop: raw.webshop,
        payment_ok: raw.payment_ok,
        timezone,
        desadv,
    })
}

fn build_retailys(
    prefix: &str,
    raw: RawRetailys,
    base_dir: &Path,
) -> Result<RetailysSettings, ConfigError> {
    let token = SecretRef::from_pair(
        &format!("{prefix}.token"),
        raw.token_file,
        raw.token_env,
        base_dir,
    )?
    .ok_or_else(|| ConfigError(format!("{prefix}.token_file: retailys needs token_file or token_env (the API key sent in the `token` header)")))?;
    // The status is also the marker that the ERP-number history record was
    // written (the API cannot read history back), so it is required.
    let processing_status = raw.processing_status.ok_or_else(|| {
        ConfigError(format!(
            "{prefix}.processing_status: required for retailys (the status set when the ERP accepts an order; an id or a name from /System/Orders/Statuses)"
        ))
    })?;
    if raw.import_statuses.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError(format!(
            "{prefix}.import_statuses: must list at least one status (or leave it out for every status that neither completes nor cancels an order)"
        )));
    }
    Ok(RetailysSettings {
        token,
        channel_id: raw.channel_id,
        import_statuses: raw.import_statuses,
        processing_status,
        shipped_status: raw.shipped_status,
        shipper_id: raw.shipper_id,
    })
}

fn build_vinou(prefix: &str, raw: RawVinou, base_dir: &Path) -> Result<VinouSettings, ConfigError> {
    if raw.auth_id.trim().is_empty() {
        return Err(ConfigError(format!(
            "{prefix}.auth_id: must not be empty (the AuthID from the Vinou app's settings)"
        )));
    }
    let api_token = SecretRef::from_pair(
        &format!("{prefix}.api_token"),
        raw.api_token_file,
        raw.api_token_env,
        base_dir,
    )?
    .ok_or_else(|| {
        ConfigError(format!(
            "{prefix}.api_token_file: vinou needs api_token_file or api_token_env (a token from the Vinou app's Tokens module)"
        ))
    })?;
    if raw.import_statuses.is_empty() {
        return Err(ConfigError(format!(
            "{prefix}.import_statuses: must list at least one order status (e.g. [\"payed\", \"need_package\"])"
        )));
    }
    if let Some(bad) = raw
        .import_statuses
        .iter()
        .find(|s| s.as_str() == "cancelled")
    {
        return Err(ConfigError(format!(
            "{prefix}.import_statuses: {bad:?} orders are never pushed"
        )));
    }
    Ok(VinouSettings {
        auth_id: raw.auth_id,
        api_token,
        import_statuses: raw.import_statuses,
        touch_on_import: raw.touch_on_import,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml_text).unwrap();
        Config::load(&p)
    }

    const MINIMAL: &str = r#"
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

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.daemon.shipments_schedule, "0 * * * * *");
        assert_eq!(c.sources[0].page_size, 100);
        assert_eq!(c.sources[0].lookback, Duration::from_secs(900));
        assert!(c.daemon.state_dir.is_absolute());
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
    fn vinou_keys_and_defaults() {
        let text = MINIMAL
            .replace("kind = \"cloudsuite\"", "kind = \"vinou\"")
            .replace(
                "client_id = \"ordersync\"\nclient_secret_env = \"X_SECRET\"",
                "auth_id = \"4711\"\napi_token_env = \"X_VINOU\"",
            );
        let c = parse(&text).unwrap();
        let SourceSettings::Vinou(v) = &c.sources[0].settings else {
            panic!("not vinou")
        };
        assert_eq!(v.import_statuses, ["payed", "need_package"]);
        assert!(v.touch_on_import);
        let err = parse(&text.replace("api_token_env = \"X_VINOU\"", ""))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[0].api_token_file"), "{err}");
        let err = parse(&format!("{text}\nclient_id = \"x\"\n"))
            .unwrap_err()
            .0;
        assert!(err.contains("client_id"), "{err}");
        let err = parse(&format!("{text}\npage_size = 250\n")).unwrap_err().0;
        assert!(
            err.contains("sources[0].page_size") && err.contains("250"),
            "{err}"
        );
        let err = parse(&format!("{text}\nimport_statuses = []\n"))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[0].import_statuses"), "{err}");
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
    fn retailys_keys_are_checked() {
        let rt = |extra: &str| {
            MINIMAL.replace(
                "kind = \"cloudsuite\"\nbase_url = \"http://127.0.0.1:8/\"\nclient_id = \"ordersync\"\nclient_secret_env = \"X_SECRET\"",
                &format!("kind = \"retailys\"\nbase_url = \"http://127.0.0.1:8/\"\ntoken_env = \"RT\"\n{extra}"),
            )
        };
        let ok = parse(&rt(
            "processing_status = \"Processing\"\nimport_statuses = [\"New\", 303]\npage_size = 250",
        ))
        .unwrap();
        let SourceSettings::Retailys(s) = &ok.sources[0].settings else {
            panic!("not retailys")
        };
        assert_eq!(
            s.import_statuses.as_deref(),
            Some(&[StatusRef::Name("New".into()), StatusRef::Id(303)][..])
        );
        let err = parse(&rt("")).unwrap_err().0;
        assert!(err.contains("sources[0].processing_status"), "{err}");
        let err = parse(&rt("processing_status = 3\npage_size = 500"))
            .unwrap_err()
            .0;
        assert!(
            err.contains("sources[0].page_size") && err.contains("500"),
            "{err}"
        );
        let err = parse(&rt("processing_status = 3\nclient_id = \"x\""))
            .unwrap_err()
            .0;
        assert!(err.contains("client_id"), "{err}");
    }

    #[test]
    fn mplus_source_parses_and_names_its_keys() {
        let mplus = MINIMAL.replace(
            "kind = \"cloudsuite\"\nbase_url = \"http://127.0.0.1:8/\"\nclient_id = \"ordersync\"\nclient_secret_env = \"X_SECRET\"",
            "kind = \"mplus\"\nbase_url = \"http://127.0.0.1:8/\"\nident = \"till\"\nsecret_env = \"X_SECRET\"",
        );
        let c = parse(&format!(
            "{mplus}start = \"now\"\nwrite_reference = false\n"
        ))
        .unwrap();
        let SourceSettings::Mplus(m) = &c.sources[0].settings else {
            panic!("not mplus");
        };
        assert_eq!(m.start, MplusStart::Now);
        assert!(!m.write_reference);
        let err = parse(&format!("{mplus}start = \"yesterday\"\n"))
            .unwrap_err()
            .0;
        assert!(
            err.contains("sources[0]") && err.contains("yesterday"),
            "{err}"
        );
        let err = parse(&mplus.replace("secret_env = \"X_SECRET\"", ""))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[0].secret_file"), "{err}");
        let err = parse(&format!("{mplus}client_id = \"x\"\n")).unwrap_err().0;
        assert!(err.contains("client_id"), "{err}");
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
    fn duplicate_source_names_are_refused() {
        let second = MINIMAL.split("[[sources]]").nth(1).unwrap();
        let err = parse(&format!("{MINIMAL}[[sources]]{second}"))
            .unwrap_err()
            .0;
        assert!(err.contains("sources[1].name"), "{err}");
    }
}
