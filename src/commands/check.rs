//! `check-config`: the config parses, every secret can be read, and every
//! remote answers an authenticated read. Changes nothing anywhere.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;

pub async fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    // Builds every component, which reads every secret: a missing secret
    // file is a configuration error (exit 2) naming the key and path.
    let scratch = tempfile_dir()?;
    let store = Arc::new(Store::open(&scratch.join("check.db"))?);
    let engine = crate::daemon::build_engine(config, store)?;
    crate::daemon::prepare_connectors(&engine).await?;
    println!(
        "config {}: ok ({} source(s))",
        config.path.display(),
        config.sources.len()
    );
    let mut failed = false;
    match engine.erp.check().await {
        Ok(msg) => println!("erp: {msg}"),
        Err(e) => {
            failed = true;
            println!("erp: FAILED: {e}");
        }
    }
    for source in &config.sources {
        let Some(c) = engine.connectors.get(&source.name) else {
            println!("{}: disabled", source.name);
            continue;
        };
        match c.check().await {
            Ok(msg) => println!("{}: {msg}", source.name),
            Err(e) => {
                failed = true;
                println!("{}: FAILED: {e}", source.name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(if failed {
        ExitCode::from(super::EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    })
}

/// A private scratch directory, so checking never touches the real ledger.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ordersync-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
