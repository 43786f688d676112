//! The `kind = "cloudsuite"` keys: OAuth2 client credentials (or the legacy
//! API token), the webshop filter, which payment states count as paid, and
//! the shop's time zone (CloudSuite's times carry none).

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, SourceContext, check_url, typed};
use crate::secret::SecretRef;

/// CloudSuite's identity provider, used when `token_url` is not set.
pub const CLOUDSUITE_TOKEN_URL: &str =
    "https://id.cloudsuite.io/realms/CloudSuite/protocol/openid-connect/token";

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

/// Checks the source's own keys (those not common to every kind).
pub(crate) fn build(
    source: &SourceContext<'_>,
    keys: serde_json::Value,
) -> Result<CloudSuiteSettings, ConfigError> {
    let prefix = source.prefix;
    let raw: RawCloudSuite = typed(prefix, keys)?;
    let secret = SecretRef::from_pair(
        &format!("{prefix}.client_secret"),
        raw.client_secret_file,
        raw.client_secret_env,
        source.base_dir,
    )?;
    let legacy = SecretRef::from_pair(
        &format!("{prefix}.api_token"),
        raw.api_token_file,
        raw.api_token_env,
        source.base_dir,
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
