//! Logs. Three shapes:
//! - a terminal: human text with colours and timestamps;
//! - the journal (stderr is the `JOURNAL_STREAM` systemd set up): one line per
//!   event with its syslog priority in front (`<3>` error … `<7>` debug), so
//!   `journalctl -p warning` filters right, and no timestamp or colour of our
//!   own (the journal stamps each line);
//! - `log_format = "json"`: one JSON object per line, for log shippers.
//!
//! `RUST_LOG` overrides the default filter.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn,hyper=warn,reqwest=warn";

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Wraps a formatter and puts the event's syslog priority in front.
pub struct JournalPriority<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// True when stderr is the stream systemd connected to the journal
/// (`JOURNAL_STREAM` holds its `device:inode`), not merely inherited.
pub fn stderr_is_journal() -> bool {
    let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata("/proc/self/fd/2") {
            Ok(m) => expected == format!("{}:{}", m.dev(), m.ino()),
            Err(_) => !expected.is_empty(),
        }
    }
    #[cfg(not(unix))]
    {
        !expected.is_empty()
    }
}

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Above `backfill`'s progress bar while one is shown.
        .with_writer(|| crate::progress::Stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text if stderr_is_journal() => {
            let plain = tracing_subscriber::fmt::format()
                .with_target(false)
                .with_ansi(false)
                .without_time()
                .with_level(false);
            builder
                .with_ansi(false)
                .event_format(JournalPriority(plain))
                .try_init()
        }
        LogFormat::Text if std::io::stderr().is_terminal() => builder.try_init(),
        // Piped elsewhere (a file, another supervisor): plain, still timestamped.
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_match_syslog() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
        assert_eq!(syslog_priority(&Level::TRACE), 7);
    }
}
