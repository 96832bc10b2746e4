//! The log feed behind `GET /api/logs/stream`: a `tracing_subscriber` layer that turns every
//! event at info and above into one JSON line, keeps the most recent lines in a bounded ring
//! (history for new subscribers) and broadcasts each line to live subscribers. Installing the
//! layer is the binary's job (it owns the subscriber); the API only reads the feed.
//!
//! Libraries never log credentials, and as a second line of defence anything that looks like an
//! Anthropic key (`sk-ant-…`) in a message or field is masked before it is kept.

use ccflare_core::secret::mask;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept for subscribers that join later.
pub const LOG_HISTORY: usize = 1000;
/// Lines a live subscriber may fall behind before it loses the oldest.
const LOG_CHANNEL: usize = 1024;

/// The log feed; cheap to clone. One copy goes into the tracing layer, one into the API.
#[derive(Clone)]
pub struct LogFeed {
    inner: Arc<Inner>,
}

struct Inner {
    history: Mutex<VecDeque<Arc<str>>>,
    capacity: usize,
    live: broadcast::Sender<Arc<str>>,
}

impl fmt::Debug for LogFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogFeed")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for LogFeed {
    fn default() -> Self {
        LogFeed::new(LOG_HISTORY)
    }
}

impl LogFeed {
    /// A feed that keeps the last `capacity` lines.
    pub fn new(capacity: usize) -> LogFeed {
        LogFeed {
            inner: Arc::new(Inner {
                history: Mutex::new(VecDeque::with_capacity(capacity.min(LOG_HISTORY))),
                capacity: capacity.max(1),
                live: broadcast::channel(LOG_CHANNEL).0,
            }),
        }
    }

    /// The tracing layer that fills this feed (events at info and above).
    pub fn layer(&self) -> LogLayer {
        LogLayer { feed: self.clone() }
    }

    /// Adds one line (already JSON).
    pub fn push(&self, line: &str) {
        let line: Arc<str> = line.into();
        // History and broadcast change under the same lock, so a subscriber that takes the
        // history and subscribes under it sees every line exactly once.
        let mut history = self.history();
        if history.len() == self.inner.capacity {
            history.pop_front();
        }
        history.push_back(line.clone());
        let _ = self.inner.live.send(line);
    }

    /// The recent lines, oldest first, and a receiver for every line after them.
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let history = self.history();
        let receiver = self.inner.live.subscribe();
        (history.iter().cloned().collect(), receiver)
    }

    fn history(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<str>>> {
        // A panic while pushing leaves a valid deque behind.
        self.inner
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `tracing_subscriber` layer of a [`LogFeed`].
#[derive(Debug, Clone)]
pub struct LogLayer {
    feed: LogFeed,
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        // Levels order by verbosity: INFO and the less verbose WARN and ERROR pass.
        if *metadata.level() > Level::INFO {
            return;
        }
        // The buffers are the thread's, kept from line to line: a line costs one allocation,
        // its `Arc<str>` (a field whose formatting logs, which would find them taken, gets
        // buffers of its own).
        let mut own = None;
        let _ = SCRATCH.try_with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.write(event, &mut scratch),
            Err(_) => self.write(event, own.get_or_insert_with(Scratch::default)),
        });
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A line's buffers.
#[derive(Default)]
struct Scratch {
    visitor: JsonVisitor,
    line: String,
}

impl LogLayer {
    /// Writes `event` as a JSON line into the feed.
    fn write(&self, event: &Event<'_>, scratch: &mut Scratch) {
        let Scratch { visitor, line } = scratch;
        visitor.message.clear();
        visitor.fields.clear();
        event.record(visitor);
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // Written in one pass (this runs for every request's "request finished" line, whether
        // or not anyone reads the feed): no map, no intermediate values.
        let metadata = event.metadata();
        line.clear();
        line.push_str("{\"time\":");
        let _ = write!(line, "{time}");
        line.push_str(",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push_str("\",\"target\":");
        push_json_string(line, metadata.target());
        line.push_str(",\"message\":");
        push_json_string(line, &visitor.message);
        line.push_str(",\"fields\":{");
        line.push_str(&visitor.fields);
        line.push_str("}}");
        self.feed.push(line);
    }
}

/// An event's message, and its other fields as the inside of a JSON object.
#[derive(Default)]
struct JsonVisitor {
    message: String,
    fields: String,
    /// A `Debug` value's text, before it is escaped.
    scratch: String,
}

impl JsonVisitor {
    /// Starts the field `field` and returns true, or returns false for the message.
    fn key(&mut self, field: &Field) -> bool {
        if field.name() == "message" {
            return false;
        }
        if !self.fields.is_empty() {
            self.fields.push(',');
        }
        push_json_string(&mut self.fields, field.name());
        self.fields.push(':');
        true
    }

    fn text(&mut self, field: &Field, value: &str) {
        let value = scrubbed(value);
        if self.key(field) {
            push_json_string(&mut self.fields, &value);
        } else {
            self.message.clear();
            self.message.push_str(&value);
        }
    }

    /// A number or a boolean, as JSON writes it.
    fn plain(&mut self, field: &Field, value: impl fmt::Display) {
        if self.key(field) {
            let _ = write!(self.fields, "{value}");
        } else {
            self.message.clear();
            let _ = write!(self.message, "{value}");
        }
    }
}

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let _ = write!(scratch, "{value:?}");
        self.text(field, &scratch);
        self.scratch = scratch;
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.plain(field, value);
        } else if self.key(field) {
            // JSON has no NaN or infinity.
            self.fields.push_str("null");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, &value.to_string());
    }
}

/// `text` as a JSON string, quotes included.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    // The characters to escape are ASCII, so a byte search finds them at a char boundary.
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < b' ')
    {
        out.push_str(&rest[..at]);
        let c = char::from(rest.as_bytes()[at]);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => {
                let _ = write!(out, "\\u{:04x}", other as u32);
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Masks every `sk-ant-…` token in `text` (to its prefix and last four characters).
pub fn scrub(text: &str) -> String {
    scrubbed(text).into_owned()
}

/// [`scrub`], borrowing `text` when it holds no key.
fn scrubbed(text: &str) -> Cow<'_, str> {
    const PREFIX: &str = "sk-ant-";
    if !text.contains(PREFIX) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        let token_len = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len() - at);
        out.push_str(&mask(&rest[at..at + token_len]));
        rest = &rest[at + token_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keys_are_masked() {
        let key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz-1234";
        let text = format!("bad key {key}, again:{key}.");
        let scrubbed = scrub(&text);
        assert!(!scrubbed.contains("abcdefgh"), "{scrubbed}");
        assert_eq!(scrubbed, "bad key sk-ant-…1234, again:sk-ant-…1234.");
        assert_eq!(scrub("nothing here"), "nothing here");
    }

    #[test]
    fn info_and_above_are_kept_with_their_fields_and_history_is_bounded() {
        let feed = LogFeed::new(3);
        let subscriber = tracing_subscriber::registry().with(feed.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("too verbose");
            for n in 0..4 {
                tracing::info!(n, account = "alpha", "line");
            }
            tracing::warn!(error = "sk-ant-api03-secret-secret-secret-9876", "failed");
        });
        let (history, _live) = feed.subscribe();
        assert_eq!(history.len(), 3, "the ring keeps the last three");
        let last: serde_json::Value = serde_json::from_str(&history[2]).unwrap();
        assert_eq!(last["level"], "WARN");
        assert_eq!(last["message"], "failed");
        assert_eq!(last["fields"]["error"], "sk-ant-…9876");
        let first: serde_json::Value = serde_json::from_str(&history[0]).unwrap();
        assert_eq!(
            (first["fields"]["n"].as_i64(), first["message"].as_str()),
            (Some(2), Some("line"))
        );
        assert_eq!(first["fields"]["account"], "alpha");
    }

    #[test]
    fn lines_are_json_whatever_the_fields_hold() {
        let feed = LogFeed::new(10);
        let subscriber = tracing_subscriber::registry().with(feed.layer());
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(text = awkward, debug = ?awkward, ratio = 0.5, nan = f64::NAN, ok = true, "say {}", awkward);
        });
        let (history, _live) = feed.subscribe();
        let line: serde_json::Value = serde_json::from_str(&history[0]).expect("valid JSON");
        assert_eq!(line["message"], format!("say {awkward}"));
        assert_eq!(line["fields"]["text"], awkward);
        assert_eq!(line["fields"]["debug"], format!("{awkward:?}"));
        assert_eq!(line["fields"]["ratio"], 0.5);
        assert_eq!(line["fields"]["nan"], serde_json::Value::Null);
        assert_eq!(line["fields"]["ok"], true);
        assert_eq!(line["level"], "INFO");
        assert!(line["time"].as_i64().is_some_and(|t| t > 0));
    }
}
