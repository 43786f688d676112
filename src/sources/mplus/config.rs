//! The `kind = "mplus"` keys: the till's ident and secret (both go in the
//! SOAP endpoint's query string), where a new source starts reading, and
//! whether the ERP order number is written into the order's `reference`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, SourceContext, default_true, typed};
use crate::secret::SecretRef;

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

/// Checks the source's own keys (those not common to every kind).
pub(crate) fn build(
    source: &SourceContext<'_>,
    keys: serde_json::Value,
) -> Result<MplusSettings, ConfigError> {
    let prefix = source.prefix;
    let raw: RawMplus = typed(prefix, keys)?;
    if raw.ident.trim().is_empty() {
        return Err(ConfigError(format!("{prefix}.ident: must not be empty")));
    }
    let secret = SecretRef::from_pair(
        &format!("{prefix}.secret"),
        raw.secret_file,
        raw.secret_env,
        source.base_dir,
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

#[cfg(test)]
mod tests {
    use super::MplusStart;
    use crate::config::SourceSettings;
    use crate::config::test_support::{MINIMAL, parse};

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
}
