//! How `payrelay serve` writes its log: one event, one line, whatever its
//! fields hold.
//!
//! Biller ids, invoice ids, provider errors and request bodies come from
//! outside. A CR or LF in one of them would let whoever sent it write a fake
//! log line, and an escape code would repaint an operator's terminal, so in
//! text logs every field value (the message too) is written through
//! [`Escaped`]. `PAYRELAY_LOG_FORMAT=json` writes one JSON object a line
//! instead, which escapes by itself and suits log shippers. Escaping happens
//! while a line is written, so it costs nothing at a level that is off.

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The variable that picks the log format.
pub const FORMAT_VAR: &str = "PAYRELAY_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `time level message key=value …`, for people.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

/// `PAYRELAY_LOG_FORMAT` holds something payrelay does not know.
#[derive(Debug, thiserror::Error)]
#[error("{FORMAT_VAR} is {0:?}; set it to \"text\" (the default) or \"json\"")]
pub struct UnknownFormat(String);

impl Format {
    /// The format `PAYRELAY_LOG_FORMAT` names; text when it is unset or empty.
    pub fn from_env() -> Result<Format, UnknownFormat> {
        match std::env::var(FORMAT_VAR) {
            Ok(value) => Format::parse(&value),
            Err(_) => Ok(Format::Text),
        }
    }

    fn parse(value: &str) -> Result<Format, UnknownFormat> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(value.to_owned())),
        }
    }
}

/// The subscriber `payrelay serve` logs through, writing to `writer`.
/// Colours (`ansi`) belong on a terminal only: in a file or a collector
/// escape codes make lines unreadable and longer.
pub fn subscriber<W>(
    format: Format,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(without_template_debug(filter))
        .with_target(false)
        .with_writer(writer);
    match format {
        Format::Text => Box::new(
            builder
                .with_ansi(ansi)
                .fmt_fields(debug_fn(field).delimited(" "))
                .finish(),
        ),
        Format::Json => Box::new(builder.with_ansi(false).json().flatten_event(true).finish()),
    }
}

/// handlebars logs every helper call's arguments at debug level, and those
/// are customers' names, emails and phone numbers: its debug lines are never
/// written, whatever `PAYRELAY_LOG` asks for.
fn without_template_debug(filter: EnvFilter) -> EnvFilter {
    match "handlebars=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Writes one field as the default text format does (the message bare,
/// others `name=value`), with the value escaped.
fn field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let name = field.name();
    if name == "message" {
        return write!(Escaped(writer), "{value:?}");
    }
    // What the `log` bridge adds (target, file, line) is metadata, not data.
    if name.starts_with("log.") {
        return Ok(());
    }
    let name = name.strip_prefix("r#").unwrap_or(name);
    if writer.has_ansi_escapes() {
        write!(writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
    } else {
        write!(writer, "{name}=")?;
    }
    write!(Escaped(writer), "{value:?}")
}

/// Passes text through with control characters (CR, LF, escape, …) and the
/// Unicode line separators and direction overrides written as escapes
/// (`\n`, `\r`, `\t`, `\u{1b}`), so a value can neither end its line nor
/// disguise it.
pub struct Escaped<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let Some(c) = rest[at..].chars().next() else { break };
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// What the current thread logs at `filter`, as `payrelay serve` would
/// write it, for tests that check a log line.
#[cfg(test)]
pub(crate) fn capture(filter: &str) -> (tracing::subscriber::DefaultGuard, impl Fn() -> String) {
    let buffer = tests::Buffer::default();
    let subscriber = subscriber(Format::Text, EnvFilter::new(filter), false, buffer.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    // Tests on other threads, with no subscriber, may have cached a
    // callsite as never wanted meanwhile: ask every callsite again.
    tracing::callsite::rebuild_interest_cache();
    (guard, move || buffer.text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    const FORGED: &str = "acme\n2026-12-02T23:59:59.000000Z  INFO payment confirmed invoice_id=INV-FORGED\r\x1b[2K";

    /// Logs what `POST /v1/payments` and the consumer log, with fields as
    /// a stranger could send them, and returns the output.
    fn log_forged(format: Format) -> String {
        let buffer = Buffer::default();
        let subscriber = subscriber(format, EnvFilter::new("info"), false, buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let invoice_id = "INV-1\r\nINV-2";
            let span = tracing::info_span!("invoice", key = %invoice_id);
            let _entered = span.enter();
            tracing::warn!(biller_id = %FORGED, "payment confirmation for an unknown biller");
            tracing::info!(invoice_id, "invoice closed");
            tracing::info!("rejected: {FORGED}");
        });
        buffer.text()
    }

    #[test]
    fn template_debug_lines_are_never_written() {
        let (_guard, logged) = capture("debug");
        tracing::debug!(
            target: "handlebars::render",
            "Rendering helper: \"money\", params: [\"maria@example.com +5215512345678\"]"
        );
        tracing::debug!("phone numbering plans loaded");
        let out = logged();
        assert!(!out.contains("maria@example.com"), "{out}");
        assert!(out.contains("phone numbering plans loaded"), "{out}");
    }

    #[test]
    fn fields_from_outside_cannot_start_a_line_or_send_escape_codes() {
        let out = log_forged(Format::Text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
        assert!(!lines.iter().any(|l| l.starts_with("2026-12-02T23:59:59")), "{out}");
        assert!(
            lines[0].contains(r"biller_id=acme\n2026-12-02T23:59:59.000000Z  INFO payment confirmed"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(r"invoice{key=INV-1\r\nINV-2}"), "{}", lines[0]);
        assert!(lines[2].contains(r"rejected: acme\n2026"), "{}", lines[2]);
    }

    #[test]
    fn json_logs_are_one_object_a_line_with_the_values_intact() {
        let out = log_forged(Format::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["biller_id"], FORGED);
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["message"], "payment confirmation for an unknown biller");
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["invoice_id"], "INV-1\r\nINV-2");
    }

    #[test]
    fn the_format_is_text_unless_json_is_asked_for() {
        assert_eq!(Format::parse("").unwrap(), Format::Text);
        assert_eq!(Format::parse("text").unwrap(), Format::Text);
        assert_eq!(Format::parse(" JSON ").unwrap(), Format::Json);
        let err = Format::parse("logfmt").unwrap_err().to_string();
        assert!(err.contains("\"logfmt\"") && err.contains("json"), "{err}");
    }

    #[test]
    fn plain_text_passes_through_unchanged() {
        let mut out = String::new();
        write!(Escaped(&mut out), "due 2026-12-01, 12.50 MXN, ok").unwrap();
        assert_eq!(out, "due 2026-12-01, 12.50 MXN, ok");
        out.clear();
        write!(Escaped(&mut out), "a\tb\u{2028}c\u{202e}d\u{7f}").unwrap();
        assert_eq!(out, r"a\tb\u{2028}c\u{202e}d\u{7f}");
    }
}
