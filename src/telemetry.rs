//! Logs: human text without colour when stderr is not a terminal (journald
//! adds its own timestamps), or one JSON object per line for machines.
//! `RUST_LOG` overrides the default filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn,hyper=warn,reqwest=warn";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text if terminal => builder.try_init(),
        // Under systemd the journal stamps every line itself.
        LogFormat::Text => builder.with_ansi(false).without_time().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
