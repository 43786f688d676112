//! `reconcile --since WHEN [--source NAME]`: proof that nothing was lost or
//! doubled. Reads each source's window (read-only: nothing is recorded or
//! written) and asks the ERP, per order key, which ERP orders carry it.
//! Reports orders missing from the ERP, ERP orders whose key the source no
//! longer shows, and keys with more than one ERP order. Exit 1 when anything
//! is off.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::daemon::build_engine;
use crate::model::{Order, order_key};
use crate::sources::Window;
use crate::store::{Disposition, Store};

#[derive(Debug, Default, Serialize)]
struct SourceReport {
    source: String,
    checked: usize,
    /// Keys the source says should be in the ERP, and are not.
    missing: Vec<Finding>,
    /// Keys the ERP has (per the ledger) that the source no longer shows.
    orphaned: Vec<Finding>,
    /// Keys with more than one ERP order.
    doubled: Vec<Finding>,
}

#[derive(Debug, Serialize)]
struct Finding {
    order_key: String,
    erp_order_numbers: Vec<String>,
    ledger_state: Option<String>,
}

pub async fn reconcile(
    config: &Config,
    since: DateTime<Utc>,
    sources: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    for name in sources {
        if config.source(name).is_none() {
            return Err(ConfigError(format!("--source: no source named {name:?}")).into());
        }
    }
    let store = Arc::new(Store::open(&config.daemon.db_path())?);
    let engine = build_engine(config, Arc::clone(&store))?;
    let mut reports = Vec::new();
    for source in config
        .sources
        .iter()
        .filter(|s| s.enabled && (sources.is_empty() || sources.contains(&s.name)))
    {
        let Some(connector) = engine.connectors.get(&source.name) else {
            continue;
        };
        // key -> (listed by the source in the window, should be in the ERP)
        let mut expected: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut walk = connector.begin(Window::Backfill {
            since,
            until: None,
            cursor: None,
        });
        while let Some(page) = connector
            .next_page(&mut walk, &store)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", source.name))?
        {
            for o in page.orders {
                let should = matches!(&o.mapped, Ok(m) if m.disposition == Disposition::Push);
                expected.insert(order_key(&source.name, &o.external_id), (true, should));
            }
        }
        // Orders the ledger pushed in the window, even if the source no longer lists them.
        for row in store.list_orders(Some(&source.name), None, usize::MAX)? {
            if row.erp_order_number.is_none() || expected.contains_key(&row.order_key) {
                continue;
            }
            let in_window = store
                .order_detail(&row.order_key)?
                .and_then(|d| d.canonical)
                .and_then(|c| serde_json::from_value::<Order>(c).ok())
                .is_some_and(|o| o.ordered_at >= since);
            if in_window {
                expected.insert(row.order_key.clone(), (false, false));
            }
        }
        let mut report = SourceReport {
            source: source.name.clone(),
            ..Default::default()
        };
        for (key, (listed, should)) in &expected {
            let numbers = engine
                .erp
                .orders_for_key(key)
                .await
                .map_err(|e| anyhow::anyhow!("ERP: {e}"))?;
            report.checked += 1;
            let state = store.order_detail(key)?.map(|d| d.row.state);
            let finding = || Finding {
                order_key: key.clone(),
                erp_order_numbers: numbers.clone(),
                ledger_state: state.clone(),
            };
            if numbers.len() > 1 {
                report.doubled.push(finding());
            } else if *should && numbers.is_empty() {
                report.missing.push(finding());
            } else if !*listed && !numbers.is_empty() {
                report.orphaned.push(finding());
            }
        }
        reports.push(report);
    }
    let bad = reports
        .iter()
        .any(|r| !r.missing.is_empty() || !r.orphaned.is_empty() || !r.doubled.is_empty());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"since": since, "sources": reports, "ok": !bad})
            )?
        );
    } else {
        for r in &reports {
            println!(
                "{}: {} order key(s) checked since {}: {} missing from the ERP, {} orphaned in the ERP, {} doubled",
                r.source,
                r.checked,
                since.to_rfc3339(),
                r.missing.len(),
                r.orphaned.len(),
                r.doubled.len()
            );
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
    Ok(if bad {
        ExitCode::from(super::EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    })
}
