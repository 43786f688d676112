//! `reconcile --since WHEN [--source NAME] [--json]`: proof that nothing was
//! lost or doubled. Reads each source's complete listing of the window
//! ([`Window::Listing`]: read-only, nothing is recorded or written back,
//! orders the ledger has unchanged are listed too) and asks the ERP, per
//! order key, which ERP orders carry it. Reports per source the orders
//! missing from the ERP, ERP orders whose key the source no longer lists,
//! and keys with more than one ERP order, with how many keys were checked.
//! Transient failures (source pages, ERP look-ups) are retried in place by
//! the jobs' retry table. Exit 0 clean, 1 when something was found or a
//! source could not be reconciled, 2 usage.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::daemon::{build_engine, prepare_connectors, read_page};
use crate::http::Failure;
use crate::model::order_key;
use crate::outbox::Engine;
use crate::outbox::policy::InPlace;
use crate::outbox::state::OrderState;
use crate::sources::{Connector, Window};
use crate::store::Disposition;

/// ERP look-ups under way at once, per request the ERP may have in flight
/// (`erp.max_in_flight`): the endpoint's permits bound the requests, and a
/// look-up waiting out a retry's backoff holds none, so under faults the
/// others keep the ERP busy.
const LOOKUPS_PER_REQUEST_SLOT: usize = 4;

#[derive(Debug, Default, Serialize)]
struct SourceReport {
    source: String,
    kind: &'static str,
    /// Orders the source listed in the window (read again or unchanged).
    listed: usize,
    /// Order keys looked up in the ERP: the listed ones, plus the ones the
    /// ledger pushed in the window that the source did not list.
    checked: usize,
    /// Why this source could not be reconciled (fully); `None`: it was.
    error: Option<String>,
    /// Keys the source says should be in the ERP, and are not.
    missing: Vec<Finding>,
    /// Keys the ERP has (per the ledger) that the source no longer lists.
    orphaned: Vec<Finding>,
    /// Keys with more than one ERP order.
    doubled: Vec<Finding>,
}

impl SourceReport {
    fn clean(&self) -> bool {
        self.error.is_none()
            && self.missing.is_empty()
            && self.orphaned.is_empty()
            && self.doubled.is_empty()
    }
}

#[derive(Debug, Serialize)]
struct Finding {
    order_key: String,
    erp_order_numbers: Vec<String>,
    ledger_state: Option<String>,
}

/// What reconcile knows about one key before asking the ERP.
struct Expected {
    /// The source lists it in the window.
    listed: bool,
    /// It should be in the ERP.
    should: bool,
    ledger_state: Option<String>,
}

pub async fn reconcile(
    config: &Config,
    since: DateTime<Utc>,
    sources: &[String],
    json: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    for name in sources {
        if config.source(name).is_none() {
            let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(ConfigError(format!(
                "--source: no source named {name:?} in {} (configured: {})",
                config.path.display(),
                known.join(", ")
            ))
            .into());
        }
    }
    if since >= Utc::now() {
        return Err(
            ConfigError(format!("--since: {} is in the future", since.to_rfc3339())).into(),
        );
    }
    let store = Arc::new(crate::store::Store::for_config(config)?);
    let engine = build_engine(config, store)?;
    prepare_connectors(&engine).await?;
    let mut reports = Vec::new();
    for source in config
        .sources
        .iter()
        .filter(|s| s.enabled && (sources.is_empty() || sources.contains(&s.name)))
    {
        let Some(connector) = engine.connectors.get(&source.name) else {
            continue;
        };
        let mut report = SourceReport {
            source: source.name.clone(),
            kind: connector.kind(),
            ..Default::default()
        };
        let lookups = config.erp.max_in_flight.max(1) * LOOKUPS_PER_REQUEST_SLOT;
        if let Err(e) =
            reconcile_source(&engine, connector, since, lookups, &mut report, &shutdown).await
        {
            report.error = Some(e);
        }
        reports.push(report);
    }
    let ok = reports.iter().all(SourceReport::clean);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"since": since, "sources": reports, "ok": ok})
            )?
        );
    } else {
        print_text(&reports, since);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_RUNTIME)
    })
}

/// Fills `report` for one source; `Err`: why it could not be reconciled.
async fn reconcile_source(
    engine: &Arc<Engine>,
    connector: &Connector,
    since: DateTime<Utc>,
    lookups: usize,
    report: &mut SourceReport,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let source = connector.name();
    let store = &engine.store;
    let ledger = |e: anyhow::Error| format!("ledger: {e:#}");
    let state_of = |key: &str| store.order_state(key).map_err(ledger);
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut walk = connector.begin(Window::Listing { since, until: None });
    loop {
        let page = read_page(engine, connector, &mut walk, InPlace::COMMAND, shutdown)
            .await
            .map_err(|f| format!("reading the order list failed: {f}"))?;
        let Some(page) = page else { break };
        for o in page.orders {
            let key = order_key(source, &o.external_id);
            let state = state_of(&key)?;
            // Read again: the mapping says where it stands at the source now;
            // the ledger what ordersync already did (or an operator skipped).
            let pushes = matches!(&o.mapped, Ok(m) if m.disposition == Disposition::Push);
            let should = match state {
                // Cancelled in the ERP: whether the ERP still lists a
                // cancelled order (Tryton does not) says nothing.
                Some(OrderState::CancelledInErp) => false,
                Some(s) if s.in_erp() => true,
                Some(OrderState::Skipped) => false,
                _ => pushes,
            };
            expected.insert(key, listed(should, state.map(|s| s.to_string())));
        }
        for id in page.unchanged {
            // Unchanged since recorded: the ledger's state is where it stands.
            let key = order_key(source, &id);
            let state = state_of(&key)?;
            let should = state.is_some_and(|s| {
                (s.in_erp() && s != OrderState::CancelledInErp) || s == OrderState::Queued
            });
            expected.insert(key, listed(should, state.map(|s| s.to_string())));
        }
        if shutdown.is_cancelled() {
            return Err("interrupted".into());
        }
    }
    walk.finish();
    report.listed = expected.len();
    if let Some(why) = walk.incomplete() {
        // Orders the walk could not list would look orphaned: say so instead.
        return Err(format!("the source's listing is incomplete: {why}"));
    }
    // Orders the ledger pushed in the window that the source no longer lists.
    for o in store.orders_in_erp(source).map_err(ledger)? {
        if o.ordered_at.is_some_and(|t| t >= since)
            && !expected.contains_key(&o.order_key)
            && o.state != OrderState::CancelledInErp.as_str()
        {
            expected.insert(
                o.order_key,
                Expected {
                    listed: false,
                    should: false,
                    ledger_state: Some(o.state),
                },
            );
        }
    }
    let answers: Vec<(String, Result<Vec<String>, Failure>)> = stream::iter(expected.keys())
        .map(|key| async move {
            let answer = erp_orders_for(engine, source, key, shutdown).await;
            (key.clone(), answer)
        })
        .buffered(lookups)
        .collect()
        .await;
    for (key, answer) in answers {
        let numbers = answer.map_err(|f| format!("asking the ERP about {key} failed: {f}"))?;
        report.checked += 1;
        let Some(e) = expected.get(&key) else {
            continue;
        };
        let finding = || Finding {
            order_key: key.clone(),
            erp_order_numbers: numbers.clone(),
            ledger_state: e.ledger_state.clone(),
        };
        if numbers.len() > 1 {
            report.doubled.push(finding());
        } else if e.should && numbers.is_empty() {
            report.missing.push(finding());
        } else if !e.listed && !numbers.is_empty() {
            report.orphaned.push(finding());
        }
    }
    Ok(())
}

fn listed(should: bool, ledger_state: Option<String>) -> Expected {
    Expected {
        listed: true,
        should,
        ledger_state,
    }
}

/// The ERP orders carrying `key`, a transient failure retried in place.
async fn erp_orders_for(
    engine: &Engine,
    source: &str,
    key: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<String>, Failure> {
    let mut retry = engine.policy.in_place(InPlace::COMMAND);
    loop {
        match engine.erp.orders_for_key(key).await {
            Ok(numbers) => return Ok(numbers),
            Err(failure) => {
                retry
                    .wait(failure, shutdown, |attempt, wait, failure| {
                        tracing::warn!(source, order_key = %key, attempt, retry_in = %format_args!("{:.1}s", wait.as_secs_f32()), error = %failure, "asking the ERP failed; will retry")
                    })
                    .await?
            }
        }
    }
}

fn print_text(reports: &[SourceReport], since: DateTime<Utc>) {
    for r in reports {
        println!(
            "{}: {} order(s) listed since {}, {} order key(s) checked: {} missing from the ERP, {} orphaned in the ERP, {} doubled",
            r.source,
            r.listed,
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.checked,
            r.missing.len(),
            r.orphaned.len(),
            r.doubled.len()
        );
        if let Some(e) = &r.error {
            println!("  NOT RECONCILED: {e}");
        }
        for (what, list) in [
            ("MISSING", &r.missing),
            ("ORPHANED", &r.orphaned),
            ("DOUBLED", &r.doubled),
        ] {
            for f in list {
                println!(
                    "  {what:<9} {:<30} ERP {:<20} ledger {}",
                    f.order_key,
                    if f.erp_order_numbers.is_empty() {
                        "-".to_string()
                    } else {
                        f.erp_order_numbers.join(",")
                    },
                    f.ledger_state.as_deref().unwrap_or("not recorded")
                );
            }
        }
    }
}
