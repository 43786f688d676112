//! The `kind = "vinou"` keys: the app's AuthID and API token, which order
//! statuses are pushed, and whether an accepted order is marked as read.
//! Vinou's cap of 100 orders per page is checked here too.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, SourceContext, default_true, typed};
use crate::secret::SecretRef;

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

/// Checks the common key the API limits, then the source's own keys.
pub(crate) fn build(
    source: &SourceContext<'_>,
    keys: serde_json::Value,
) -> Result<VinouSettings, ConfigError> {
    let prefix = source.prefix;
    if source.page_size > 100 {
        return Err(ConfigError(format!(
            "{prefix}.page_size: {} is more than Vinou allows (at most 100 orders per page)",
            source.page_size
        )));
    }
    let raw: RawVinou = typed(prefix, keys)?;
    if raw.auth_id.trim().is_empty() {
        return Err(ConfigError(format!(
            "{prefix}.auth_id: must not be empty (the AuthID from the Vinou app's settings)"
        )));
    }
    let api_token = SecretRef::from_pair(
        &format!("{prefix}.api_token"),
        raw.api_token_file,
        raw.api_token_env,
        source.base_dir,
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
    use crate::config::SourceSettings;
    use crate::config::test_support::{MINIMAL, parse};

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
}
