//! The `kind = "titelive"` keys (SPEC §6): the shop's domain code, the SYSTEM
//! user's token (given, or obtained by logging in), the status ids written
//! back, and the map from Titelive's numeric country ids to ISO codes.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, SourceContext, typed};
use crate::secret::SecretRef;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTitelive {
    domain_code: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    system_login: Option<String>,
    system_password_file: Option<PathBuf>,
    system_password_env: Option<String>,
    #[serde(default = "default_processing")]
    processing_status: i64,
    #[serde(default = "default_shipped")]
    shipped_status: i64,
}

fn default_processing() -> i64 {
    7
}
fn default_shipped() -> i64 {
    8
}

#[derive(Clone, Debug)]
pub enum TiteliveAuth {
    /// The SYSTEM user's 26-character token, given by the operator.
    Token(SecretRef),
    /// Obtain a token (`customer/token`) and bind it to the SYSTEM user
    /// (`customer/login`). The password is already hashed as Titelive requires.
    Login { login: String, password: SecretRef },
}

#[derive(Clone, Debug)]
pub struct TiteliveSettings {
    pub domain_code: String,
    pub auth: TiteliveAuth,
    pub processing_status: i64,
    pub shipped_status: i64,
}

/// Checks the source's own keys (those not common to every kind).
pub(crate) fn build(
    source: &SourceContext<'_>,
    keys: serde_json::Value,
) -> Result<TiteliveSettings, ConfigError> {
    let (prefix, base_dir) = (source.prefix, source.base_dir);
    let raw: RawTitelive = typed(prefix, keys)?;
    let domain_code = raw.domain_code.unwrap_or_default();
    // It becomes a path segment of every URL: no slashes, no escapes.
    if domain_code.is_empty() || !domain_code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ConfigError(format!(
            "{prefix}.domain_code: {domain_code:?} must be the shop's domain code (letters and digits, e.g. \"00000\")"
        )));
    }
    let token = SecretRef::from_pair(
        &format!("{prefix}.token"),
        raw.token_file,
        raw.token_env,
        base_dir,
    )?;
    let password = SecretRef::from_pair(
        &format!("{prefix}.system_password"),
        raw.system_password_file,
        raw.system_password_env,
        base_dir,
    )?;
    let auth = match (token, raw.system_login, password) {
        (Some(t), None, None) => TiteliveAuth::Token(t),
        (None, Some(login), Some(password)) if !login.trim().is_empty() => {
            TiteliveAuth::Login { login, password }
        }
        (None, Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{prefix}.system_login: must not be empty"
            )));
        }
        (None, None, None) => {
            return Err(ConfigError(format!(
                "{prefix}: titelive needs token_file / token_env (the SYSTEM user's token) or system_login + system_password_file"
            )));
        }
        (None, Some(_), None) => {
            return Err(ConfigError(format!(
                "{prefix}.system_password_file: system_login is set but no system_password_file / system_password_env"
            )));
        }
        (None, None, Some(_)) => {
            return Err(ConfigError(format!(
                "{prefix}.system_login: system_password is set but system_login is missing"
            )));
        }
        (Some(_), _, _) => {
            return Err(ConfigError(format!(
                "{prefix}.token_file: use either a given token (token_file / token_env) or system_login + system_password_*, not both"
            )));
        }
    };
    for (key, value) in [
        ("processing_status", raw.processing_status),
        ("shipped_status", raw.shipped_status),
    ] {
        if !(0..=99).contains(&value) {
            return Err(ConfigError(format!(
                "{prefix}.{key}: {value} is not a Titelive status id (0..99; e.g. 7 processing, 8 processed)"
            )));
        }
    }
    if raw.processing_status == raw.shipped_status {
        return Err(ConfigError(format!(
            "{prefix}.shipped_status: must differ from processing_status ({})",
            raw.processing_status
        )));
    }
    // The orders give countries as Titelive's numeric ids only: the map
    // (the common `country_map` key) is what makes them ISO codes.
    if source.country_map.is_empty() {
        return Err(ConfigError(format!(
            "{prefix}.country_map: map Titelive's country ids to ISO codes, e.g. country_map = {{ \"1\" = \"FR\" }}"
        )));
    }
    if let Some(id) = source
        .country_map
        .values()
        .find(|id| id.parse::<u32>().is_err())
    {
        return Err(ConfigError(format!(
            "{prefix}.country_map: key {id:?} is not a Titelive country id (a number)"
        )));
    }
    Ok(TiteliveSettings {
        domain_code,
        auth,
        processing_status: raw.processing_status,
        shipped_status: raw.shipped_status,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SourceSettings, TiteliveAuth};

    fn parse(source: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let text = format!(
            r#"
[daemon]
state_dir = "state"
[erp]
kind = "http"
url = "http://127.0.0.1:9/"
token_env = "X_TOKEN"
[[sources]]
name = "books"
kind = "titelive"
base_url = "https://wsmedia.tlsecure.com/"
{source}
"#
        );
        std::fs::write(&p, text).unwrap();
        Config::load(&p).map_err(|e| e.0)
    }

    const LOGIN: &str = r#"
domain_code = "00000"
system_login = "SYSTEM"
system_password_file = "pw"
country_map = { "1" = "fr", "231" = "US" }
"#;

    #[test]
    fn login_config_gets_defaults() {
        let c = parse(LOGIN).unwrap();
        let SourceSettings::Titelive(t) = &c.sources[0].settings else {
            panic!("not titelive");
        };
        assert_eq!((t.processing_status, t.shipped_status), (7, 8));
        assert_eq!(
            c.sources[0]
                .country_map
                .iso("c", Some("1"))
                .unwrap()
                .as_deref(),
            Some("FR"),
            "codes are upper-cased"
        );
        assert!(matches!(&t.auth, TiteliveAuth::Login { login, .. } if login == "SYSTEM"));
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            (
                LOGIN.replace("\"00000\"", "\"00/00\""),
                "sources[0].domain_code",
            ),
            (
                LOGIN.replace("system_login = \"SYSTEM\"\n", ""),
                "sources[0].system_login",
            ),
            (format!("{LOGIN}token_env = \"T\""), "sources[0].token_file"),
            (
                LOGIN.replace("\"231\" = \"US\"", "\"231\" = \"USA\""),
                "sources[0].country_map.\"231\"",
            ),
            (LOGIN.replace("\"231\"", "\"us\""), "sources[0].country_map"),
            (
                format!("{LOGIN}processing_status = 8"),
                "sources[0].shipped_status",
            ),
            (
                format!("{LOGIN}shipped_status = 100"),
                "sources[0].shipped_status",
            ),
            (format!("{LOGIN}client_id = \"x\""), "client_id"),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(key), "expected {key} in: {err}");
        }
        let err = parse("domain_code = \"1\"\ntoken_env = \"T\"").unwrap_err();
        assert!(err.contains("sources[0].country_map"), "{err}");
    }
}
