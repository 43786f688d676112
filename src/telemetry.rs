//! Logs. Three shapes:
//! - a terminal: human text with colours and timestamps;
//! - the journal (stderr is the `JOURNAL_STREAM` systemd set up): one line per
//!   event with its syslog priority in front (`<3>` error … `<7>` debug), so
//!   `journalctl -p warning` filters right, and no timestamp or colour of our
//!   own (the journal stamps each line);
//! - `log_format = "json"`: one JSON object per line, for log shippers.
//!
//! In the text shapes the fields are logfmt ([`Logfmt`]): `msg="…"` then
//! `key=value`, a value quoted and escaped whenever it holds a space, `=`,
//! `"`, `;`, `\` or a control character, so any logfmt parser reads every
//! line, and a field looks the same whichever way it was recorded.
//!
//! `RUST_LOG` overrides the default filter.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
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

/// A value as logfmt writes it: bare when that is unambiguous, else in
/// double quotes with `\"`, `\\`, `\n`, `\r`, `\t` and `\u{..}` escapes.
pub fn logfmt_value(value: &str) -> Cow<'_, str> {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | '"' | ';' | '\\'));
    if plain {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// Formats an event's fields as logfmt: the message as `msg=`, then every
/// other field as `key=value` ([`logfmt_value`]), whether it was recorded as
/// a string, with `%` (Display) or with `?` (Debug).
#[derive(Clone, Copy, Debug, Default)]
pub struct Logfmt;

impl<'w> FormatFields<'w> for Logfmt {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = LogfmtVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LogfmtVisitor<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl LogfmtVisitor<'_> {
    fn pair(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let key = match field.name() {
            "message" => "msg",
            // `r#type` and the like: the name as written.
            name => name.trim_start_matches("r#"),
        };
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = write!(self.writer, "{sep}{key}={}", logfmt_value(value));
    }
}

impl Visit for LogfmtVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, &format!("{value:?}"));
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
                .fmt_fields(Logfmt)
                .with_ansi(false)
                .event_format(JournalPriority(plain))
                .try_init()
        }
        LogFormat::Text if std::io::stderr().is_terminal() => builder.fmt_fields(Logfmt).try_init(),
        // Piped elsewhere (a file, another supervisor): plain, still timestamped.
        LogFormat::Text => builder.fmt_fields(Logfmt).with_ansi(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_values_are_quoted_when_they_must_be() {
        assert_eq!(logfmt_value("webshop-nl"), "webshop-nl");
        assert_eq!(logfmt_value("webshop-nl:48193"), "webshop-nl:48193");
        assert_eq!(logfmt_value(""), r#""""#);
        assert_eq!(
            logfmt_value("state=processing, erp_order_number; lines"),
            r#""state=processing, erp_order_number; lines""#
        );
        assert_eq!(
            logfmt_value("say \"hi\"\n\\ \u{7}"),
            r#""say \"hi\"\n\\ \u{7}""#
        );
    }

    /// Every field comes out the same way, however it was recorded.
    #[test]
    fn fields_are_logfmt_whatever_the_recording() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .fmt_fields(Logfmt)
            .with_writer(move || Sink(std::sync::Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let source = "webshop-nl";
            tracing::info!(source, "as a str");
            tracing::info!(source = %source, detail = %"a=b; c", n = 3, ok = true, "as Display");
            tracing::info!(source = ?source, "as Debug");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"msg="as a str" source=webshop-nl"#);
        assert_eq!(
            lines[1],
            r#"msg="as Display" source=webshop-nl detail="a=b; c" n=3 ok=true"#
        );
        // Debug of a str is its quoted form: quoted again, escaped.
        assert_eq!(lines[2], r#"msg="as Debug" source="\"webshop-nl\"""#);
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn priorities_match_syslog() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
        assert_eq!(syslog_priority(&Level::TRACE), 7);
    }
}
