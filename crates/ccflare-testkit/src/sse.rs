//! Server-Sent Events as the tests read them: a live feed one event at a time
//! ([`SseReader`]), or a finished stream checked frame by frame ([`parse_events`]).

use crate::GUARD;
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// One event: its name (`message` when it has none) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.data))
    }
}

/// Reads Server-Sent Events from a response body as they come.
pub struct SseReader<B = Incoming> {
    body: B,
    buffer: String,
}

impl<B> SseReader<B>
where
    B: Body + Unpin,
    B::Data: AsRef<[u8]>,
    B::Error: std::fmt::Debug,
{
    pub fn new(body: B) -> SseReader<B> {
        SseReader {
            body,
            buffer: String::new(),
        }
    }

    /// The next event, skipping comments and `retry:` lines; panics after [`GUARD`].
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(GUARD, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut name = None;
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("event: ") {
                            name = Some(value.to_owned());
                        } else if let Some(value) = line.strip_prefix("data: ") {
                            data.push(value);
                        }
                    }
                    if name.is_some() || !data.is_empty() {
                        return Event {
                            name: name.unwrap_or_else(|| "message".to_owned()),
                            data: data.join("\n"),
                        };
                    }
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the feed is still open")
                    .expect("a frame");
                if let Some(data) = frame.data_ref() {
                    self.buffer
                        .push_str(&String::from_utf8_lossy(data.as_ref()));
                }
            }
        })
        .await
        .expect("an event in time")
    }

    /// Reads until the text of the whole events received so far (up to the last blank line:
    /// a line cut between frames does not count) satisfies `done`, and returns that text.
    /// Fails the test if the stream ends first or the guard time passes.
    pub async fn text_until(&mut self, done: impl Fn(&str) -> bool) -> String {
        let body = &mut self.body;
        let received = &mut self.buffer;
        let read = tokio::time::timeout(GUARD, async {
            loop {
                let whole = received.rfind("\n\n").map_or("", |end| &received[..end]);
                if done(whole) {
                    return whole.to_owned();
                }
                let frame = body
                    .frame()
                    .await
                    .unwrap_or_else(|| panic!("the feed ended early:\n{received}"))
                    .expect("the feed does not break");
                if let Some(data) = frame.data_ref() {
                    received.push_str(&String::from_utf8_lossy(data.as_ref()));
                }
            }
        })
        .await;
        read.unwrap_or_else(|_| {
            panic!("the expected events did not come in time:\n{}", self.buffer)
        })
    }

    /// Everything received so far that is not yet read as an event.
    pub fn unread(&self) -> &str {
        &self.buffer
    }
}

/// Splits a whole SSE stream into (event name, data) pairs, checking the frame syntax the API
/// uses strictly: an `event:` line and one `data:` line per event, a blank line after each.
pub fn parse_events(body: &str) -> Vec<(String, String)> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line");
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').expect("two lines per event");
            let name = event.strip_prefix("event: ").expect("event line");
            let data = data.strip_prefix("data: ").expect("data line");
            assert!(!data.contains('\n'), "one data line");
            (name.to_owned(), data.to_owned())
        })
        .collect()
}
