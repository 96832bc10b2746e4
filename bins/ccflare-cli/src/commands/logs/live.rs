//! A running server's live request feed, `GET /api/requests/stream` (Server-Sent Events), as a
//! source for `logs --follow`. Used only when a server answers at the configured address and
//! says it uses the same database; anything else (no server, an older server without the
//! feed, an admin key required, another database) leaves following to the database.

use crate::context;
use bytes::{Buf, Bytes, BytesMut};
use ccflare_analytics::stats::LogEntry;
use ccflare_core::config::Settings;
use ccflare_http::{Client, Limits};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long connecting and each answer may take before following falls back to the database.
/// A local server answers at once, and where none runs the connection is refused at once, so
/// this only matters for a server that is there but slow: on a loaded machine (a busy CI
/// runner) that can take seconds, and giving up on it would silently lose the live feed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/api/config` answer read (it is a few kilobytes).
const MAX_CONFIG: usize = 1 << 20;
/// The longest SSE event kept while it arrives; a longer one means this is not our feed.
const MAX_EVENT: usize = 1 << 20;

/// What the feed reports.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A request finished (its row follows in the database a moment later).
    Finished(Box<LogEntry>),
    /// The feed dropped this many events because the reader fell behind.
    Lagged(u64),
}

pub struct LiveFeed {
    body: UnsyncBoxBody<Bytes, BoxError>,
    buffer: BytesMut,
}

/// A GET to the management API, with the admin key when the configuration has one.
fn get(
    url: &str,
    accept: &'static str,
    settings: &Settings,
) -> http::Request<http_body_util::Full<Bytes>> {
    let mut request = http::Request::get(url).header(http::header::ACCEPT, accept);
    if let Some(key) = &settings.admin_key
        && let Ok(mut value) = http::HeaderValue::from_str(key.expose())
    {
        value.set_sensitive(true);
        request = request.header("x-ccflare-admin-key", value);
    }
    request
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("a GET with a valid URL")
}

/// Subscribes to the feed of the server at the configured address, if one answers there and
/// reports the same `database_url`.
pub async fn connect(settings: &Settings) -> Option<LiveFeed> {
    let base = context::server_base(settings);
    let client = Client::new(Limits {
        connect: ANSWER_TIMEOUT,
        total: ANSWER_TIMEOUT,
        max_body: MAX_CONFIG,
    });

    // Another server (another database) may listen on this port: compare what it serves.
    let config = client
        .exchange(get(
            &format!("{base}/api/config"),
            "application/json",
            settings,
        ))
        .await
        .ok()?;
    if !config.status.is_success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&config.body).ok()?;
    let theirs = json["options"]
        .as_array()?
        .iter()
        .find(|o| o["key"] == "database_url")?["value"]
        .as_str()?
        .trim()
        .to_owned();
    let ours = settings
        .sources
        .get("database_url")
        .map(|(_, raw)| raw.trim().to_owned())
        .unwrap_or_default();
    if theirs != ours {
        return None;
    }

    let response = client
        .open(get(
            &format!("{base}/api/requests/stream"),
            "text/event-stream",
            settings,
        ))
        .await
        .ok()?;
    let is_sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !response.status().is_success() || !is_sse {
        return None;
    }
    Some(LiveFeed {
        body: response
            .into_body()
            .map_err(|e| Box::new(e) as BoxError)
            .boxed_unsync(),
        buffer: BytesMut::new(),
    })
}

impl LiveFeed {
    /// The next event; `None` when the feed ended (the server stopped) or broke.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(block) = take_block(&mut self.buffer) {
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
            }
            if self.buffer.len() > MAX_EVENT {
                return None;
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// Takes one event block (up to a blank line) off the front of `buffer`, if a whole one is
/// there. Line ends may be `\n` or `\r\n`.
fn take_block(buffer: &mut BytesMut) -> Option<String> {
    let text = &buffer[..];
    let (end, skip) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| {
            text.windows(sep.len())
                .position(|w| w == *sep)
                .map(|at| (at, sep.len()))
        })
        .min()?;
    let block = buffer.split_to(end + skip);
    Some(String::from_utf8_lossy(&block[..end]).replace("\r\n", "\n"))
}

/// One event block: `request_finished` and `lagged` matter; the rest (`request_started`,
/// comments, `retry:`) does not.
fn parse(block: &str) -> Option<Event> {
    let mut name = "message";
    let mut data = String::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    match name {
        "request_finished" => serde_json::from_str(&data)
            .ok()
            .map(|entry| Event::Finished(Box::new(entry))),
        "lagged" => serde_json::from_str::<serde_json::Value>(&data)
            .ok()?
            .get("missed")?
            .as_u64()
            .map(Event::Lagged),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINISHED: &str = r#"{"id":"ccf_1","started_at":5,"method":"POST","path":"/v1/messages","model":"claude-sonnet-4-5","account_id":2,"account":"two","status":200,"success":true,"error_type":null,"error_message":null,"attempts":1,"attempt_failures":[],"latency_ms":9,"ttfb_ms":3,"streamed":false,"input_tokens":1,"output_tokens":2,"cache_read_tokens":0,"cache_write_tokens":0,"cache_write_5m_tokens":0,"cache_write_1h_tokens":0,"usage_incomplete":false,"cost_usd":0.5,"cost_estimated":false,"output_tokens_per_second":null,"session_key":null,"client_key":null}"#;

    #[test]
    fn blocks_are_cut_at_blank_lines_in_either_line_ending() {
        let mut buffer =
            BytesMut::from(&b"retry: 3000\n: hi\n\nevent: a\r\ndata: 1\r\n\r\nevent: b"[..]);
        assert_eq!(take_block(&mut buffer).unwrap(), "retry: 3000\n: hi");
        assert_eq!(take_block(&mut buffer).unwrap(), "event: a\ndata: 1");
        assert_eq!(take_block(&mut buffer), None);
        assert_eq!(&buffer[..], b"event: b");
    }

    #[test]
    fn finished_requests_and_lag_are_read_the_rest_is_skipped() {
        let block = format!("event: request_finished\ndata: {FINISHED}");
        let Some(Event::Finished(entry)) = parse(&block) else {
            panic!("not read: {block}");
        };
        assert_eq!(
            (entry.id.as_str(), entry.account.as_deref(), entry.seq),
            ("ccf_1", Some("two"), 0)
        );
        assert_eq!(
            parse("event: lagged\ndata: {\"missed\":7}"),
            Some(Event::Lagged(7))
        );
        assert_eq!(parse("event: request_started\ndata: {\"id\":\"x\"}"), None);
        assert_eq!(parse(": keepalive"), None);
        assert_eq!(parse("event: request_finished\ndata: {not json"), None);
    }
}
