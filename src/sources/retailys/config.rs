//! The `kind = "retailys"` keys: the API key, the sales channel, which order
//! statuses are imported, and the statuses written back (ids or names, which
//! are resolved against the shop's own list at startup). The API's limits on
//! page size and request rate are checked here too.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, SourceContext, typed};
use crate::secret::SecretRef;

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
    /// Set when the ERP cancels a sale before shipping; None: such a cancel
    /// is not written back (parked, for the operator to do by hand).
    pub cancelled_status: Option<StatusRef>,
    /// None: matched by the ERP carrier's name among the shop's shippings.
    pub shipper_id: Option<i64>,
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
    cancelled_status: Option<StatusRef>,
    shipper_id: Option<i64>,
}

/// Checks the source's own keys (those not common to every kind) and the
/// common ones the API limits.
pub(crate) fn build(
    source: &SourceContext<'_>,
    keys: serde_json::Value,
) -> Result<RetailysSettings, ConfigError> {
    let prefix = source.prefix;
    let raw: RawRetailys = typed(prefix, keys)?;
    // The API refuses per_page outside 10..=250 with a 400.
    if !(10..=250).contains(&source.page_size) {
        return Err(ConfigError(format!(
            "{prefix}.page_size: retailys accepts 10 to 250 orders per page, got {}",
            source.page_size
        )));
    }
    // Beyond its documented 100 requests/s the API only answers 429.
    if source.rate_limit_per_sec > 100 {
        return Err(ConfigError(format!(
            "{prefix}.rate_limit_per_sec: retailys allows at most 100 requests per second, got {}",
            source.rate_limit_per_sec
        )));
    }
    let token = SecretRef::from_pair(
        &format!("{prefix}.token"),
        raw.token_file,
        raw.token_env,
        source.base_dir,
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
        cancelled_status: raw.cancelled_status,
        shipper_id: raw.shipper_id,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::StatusRef;
    use crate::config::SourceSettings;
    use crate::config::test_support::{MINIMAL, parse};

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
        // One pacing rule for recheck rounds, `recheck_every`: ten minutes
        // here by default (every order not final is in a round), a minute
        // elsewhere, and what the config says wins.
        assert_eq!(ok.sources[0].recheck_every, Duration::from_secs(600));
        assert_eq!(
            parse(MINIMAL).unwrap().sources[0].recheck_every,
            Duration::from_secs(60)
        );
        let set = parse(&rt("processing_status = 3\nrecheck_every = \"0s\"")).unwrap();
        assert_eq!(set.sources[0].recheck_every, Duration::ZERO);
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
}
