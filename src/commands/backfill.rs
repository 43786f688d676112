//! `backfill --since WHEN`: reads a window of each source's history with its
//! own cursor (the live cursor is never touched), records what is new, and
//! runs those orders' jobs to the end beside any running daemon (shared
//! leases). Exit 3 when some of them ended parked.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::cli::BackfillArgs;
use crate::config::{Config, ConfigError};
use crate::daemon::{build_engine, poll_source_with, read_page};
use crate::model::order_key;
use crate::outbox::policy::InPlace;
use crate::poll::{Keys, PollAs};
use crate::progress::Progress;
use crate::sources::Window;
use crate::store::{Disposition, Store};

pub async fn backfill(
    config: &Config,
    args: &BackfillArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    for name in &args.sources {
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
    let now = Utc::now();
    if args.since >= now {
        return Err(ConfigError(format!(
            "--since: {} is in the future",
            args.since.to_rfc3339()
        ))
        .into());
    }
    if let Some(u) = args.until
        && u <= args.since
    {
        return Err(ConfigError(format!(
            "--until: {} is not after --since {}",
            u.to_rfc3339(),
            args.since.to_rfc3339()
        ))
        .into());
    }
    let store = Arc::new(Store::for_config(config)?);
    let engine = build_engine(config, Arc::clone(&store))?;
    crate::daemon::prepare_connectors(&engine).await?;
    let scope = format!(
        "backfill:{}..{}",
        args.since.to_rfc3339_opts(SecondsFormat::Secs, true),
        args.until
            .map(|u| u.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "now".into())
    );
    let selected: Vec<_> = config
        .sources
        .iter()
        .filter(|s| s.enabled && (args.sources.is_empty() || args.sources.contains(&s.name)))
        .collect();
    let mut pushed_keys = Vec::new();
    let mut window_keys = Vec::new();
    let progress =
        (!args.dry_run).then(|| Progress::start(Arc::clone(&store), crate::progress::LINE_EVERY));
    for source in &selected {
        let Some(connector) = engine.connectors.get(&source.name) else {
            continue;
        };
        let cursor = store.cursor(&source.name, &scope)?;
        let window = Window::Backfill {
            since: args.since,
            until: args.until,
            cursor,
        };
        if args.dry_run {
            let mut walk = connector.begin(window);
            let mut n = 0;
            while let Some(page) =
                read_page(&engine, connector, &mut walk, InPlace::COMMAND, &shutdown)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", source.name))?
            {
                for id in &page.unchanged {
                    println!(
                        "{}: already recorded, unchanged; nothing to do",
                        order_key(&source.name, id)
                    );
                    n += 1;
                }
                for o in page.orders {
                    let key = order_key(&source.name, &o.external_id);
                    let known = store.order_for_job(&key)?.is_some();
                    let what = match (&o.mapped, known) {
                        (_, true) => "already recorded; nothing to do".to_string(),
                        (Ok(m), false) => match &m.disposition {
                            Disposition::Push => "would be recorded and pushed".into(),
                            Disposition::Hold(r) => format!("would be recorded and held: {r}"),
                            Disposition::Cancel(r) => format!("would be recorded, not pushed: {r}"),
                        },
                        (Err(e), false) => format!("would be recorded and parked: {e}"),
                    };
                    println!("{key}: {what}");
                    n += 1;
                }
            }
            println!(
                "{}: {n} order(s) in the window (dry run: nothing changed)",
                source.name
            );
            continue;
        }
        let summary = poll_source_with(
            &engine,
            connector,
            window,
            &scope,
            &shutdown,
            PollAs {
                limits: InPlace::COMMAND,
                progress: progress.as_ref(),
                keys: Keys::Keep,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", source.name))?;
        let line = format!(
            "{}: {} order(s) in the window, {} new to push",
            source.name,
            summary.listed.len(),
            summary.queued.len()
        );
        match &progress {
            Some(p) => p.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
        let keys = summary.queued;
        // Write-backs and pushes, as the daemon's worker runs them (requests
        // stay bounded by each remote's max_in_flight); enough pushes at
        // once to fill the ERP's batches.
        let slots = source.max_in_flight + engine.erp_slots;
        engine
            .drain(&source.name, Some(&keys), slots, &shutdown)
            .await?;
        pushed_keys.extend(keys);
        window_keys.extend(summary.listed);
    }
    let Some(progress) = progress else {
        return Ok(ExitCode::SUCCESS); // a dry run
    };
    let progress = progress.finish().await;
    // Every order of the window that is parked counts, whoever parked it
    // (this run, or the daemon before it): a script must be able to tell.
    window_keys.extend(pushed_keys.iter().cloned());
    window_keys.sort();
    window_keys.dedup();
    let parked = store.parked_among(&window_keys)?;
    let parked_now = parked
        .iter()
        .filter(|(k, _)| pushed_keys.contains(k))
        .count();
    println!(
        "backfill {}: {} order(s) pushed, {} parked ({} of them parked before this run)",
        if shutdown.is_cancelled() {
            "interrupted"
        } else {
            "done"
        },
        progress.pushed,
        parked.len(),
        parked.len() - parked_now
    );
    for (key, reason) in &parked {
        println!("  parked {key}: {reason}");
    }
    Ok(if parked.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_PARKED)
    })
}
