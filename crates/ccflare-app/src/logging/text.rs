//! The text log line, written without `tracing_subscriber`'s default formatter: that one
//! formats every field through `core::fmt` with its padding and styling, a twentieth of a
//! proxied request's instructions for the one "request finished" line (docs/benchmarks.md,
//! "The log line's cost"). The line reads as before:
//!
//! ```text
//! 2026-12-06T17:53:19.123Z  INFO ccflare_proxy::recorder: request finished request_id=… status=200 account=work
//! ```
//!
//! The time is UTC to the millisecond; a text field is written as it is when it holds no
//! space, quote, `=` or control character, and quoted and escaped (Rust's `{:?}`) otherwise;
//! spans, which the server does not use, are left out.

use ccflare_core::time::format_rfc3339;
use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The text line's format: time, level, target, message, fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        write_time(&mut writer, ms)?;
        let metadata = event.metadata();
        let level = match *metadata.level() {
            Level::ERROR => ("ERROR", "\x1b[31m"),
            Level::WARN => (" WARN", "\x1b[33m"),
            Level::INFO => (" INFO", "\x1b[32m"),
            Level::DEBUG => ("DEBUG", "\x1b[34m"),
            Level::TRACE => ("TRACE", "\x1b[35m"),
        };
        if writer.has_ansi_escapes() {
            write!(writer, " {}{}\x1b[0m ", level.1, level.0)?;
        } else {
            writer.write_char(' ')?;
            writer.write_str(level.0)?;
            writer.write_char(' ')?;
        }
        writer.write_str(metadata.target())?;
        writer.write_char(':')?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

thread_local! {
    /// The last second written, and its text up to the seconds (`2026-12-06T17:53:19`).
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// `ms` (epoch milliseconds) as RFC 3339 in UTC to the millisecond: the date and clock are
/// formatted once per second per thread.
fn write_time(writer: &mut Writer<'_>, ms: i64) -> fmt::Result {
    let (second, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000) as u32);
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let full = format_rfc3339(second * 1000);
            text.clear();
            text.push_str(&full[..full.len() - ".000Z".len()]);
            *cached = second;
        }
        writer.write_str(text)
    })?;
    let digits = [
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ];
    // ASCII digits: always UTF-8.
    writer.write_str(std::str::from_utf8(&digits).unwrap_or(".000Z"))
}

/// Writes an event's fields: the message as it is, every other field as ` name=value`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field: ` name=`, or only the space for the message.
    fn name(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_char(' ')?;
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }

    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.writer));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |w| write!(w, "{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.write(field, |w| {
            if message || plain(value) {
                w.write_str(value)
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, |w| write!(w, "{value}"));
    }
}

/// Whether `value` reads unambiguously unquoted: not empty, and no space, quote, backslash,
/// `=` or control character.
fn plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b > b' ' && b != b'"' && b != b'\\' && b != b'=' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    fn lines(ansi: bool, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_ansi(ansi)
            .event_format(Text);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_line_has_the_time_level_target_message_and_fields() {
        let text = lines(false, || {
            tracing::info!(
                target: "ccflare_proxy::recorder",
                request_id = "01J-abc",
                status = 200_u16,
                latency_ms = -3_i64,
                account = "work",
                client_key = "-",
                error = "",
                streamed = true,
                "request finished"
            );
        });
        let (time, rest) = text.split_once(' ').unwrap();
        assert_eq!(
            rest,
            " INFO ccflare_proxy::recorder: request finished request_id=01J-abc status=200 \
             latency_ms=-3 account=work client_key=- error=\"\" streamed=true\n"
        );
        let ms = ccflare_core::time::parse_rfc3339(time).expect("an RFC 3339 time");
        assert_eq!(format_rfc3339(ms), time, "UTC to the millisecond");
    }

    #[test]
    fn text_that_would_read_ambiguously_is_quoted_and_escaped() {
        let awkward = "two words \"quoted\" a=b\nnext";
        let text = lines(false, || {
            tracing::warn!(name = awkward, other = %"shown as is", debug = ?"dbg", "the {} message", "formatted");
        });
        assert!(
            text.ends_with(&format!(
                " WARN ccflare_app::logging::text::tests: the formatted message name={awkward:?} \
                 other=shown as is debug=\"dbg\"\n"
            )),
            "{text}"
        );
        assert_eq!(
            text.lines().count(),
            1,
            "a newline in a value stays escaped"
        );
    }

    #[test]
    fn the_level_is_coloured_only_for_a_terminal() {
        let coloured = lines(true, || tracing::error!("boom"));
        assert!(
            coloured.contains(" \x1b[31mERROR\x1b[0m ccflare_app"),
            "{coloured:?}"
        );
        let plain = lines(false, || tracing::error!("boom"));
        assert!(
            !plain.contains('\x1b') && plain.contains(" ERROR ccflare_app"),
            "{plain:?}"
        );
    }

    #[test]
    fn milliseconds_are_three_digits_and_the_second_is_cached_per_thread() {
        let mut out = String::new();
        for ms in [1_765_000_000_007, 1_765_000_000_950, 1_765_000_001_000, 0] {
            out.clear();
            write_time(&mut Writer::new(&mut out), ms).unwrap();
            assert_eq!(out, format_rfc3339(ms));
        }
    }
}
