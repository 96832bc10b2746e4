//! Response bodies. A tapped body ([`TappedBody`]) relays the upstream body frame by frame — no
//! buffering, no copying — while reading usage on the side: an SSE stream goes through the
//! constant-memory [`SseScanner`]; a JSON body keeps cheap reference-counted handles to its
//! chunks (up to a cap) and is parsed once at the end. It also enforces the idle timeout and
//! finishes the request's record when the body ends, breaks, or is dropped (by a departed client,
//! or by the server at its shutdown deadline).

use crate::error::BodyError;
use crate::recorder::{Outcome, Recorder};
use crate::upstream::UpstreamBody;
use bytes::{Bytes, BytesMut};
use ccflare_core::sse::SseScanner;
use ccflare_core::usage::{self, Usage};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Largest non-streaming body kept aside for reading its usage; bigger ones are relayed
/// without usage (Messages responses are far smaller).
const MAX_JSON_TAP: usize = 8 * 1024 * 1024;

/// Body of every response the server sends: the proxy's relayed upstream bodies, its own
/// answers, and the management API's (which builds them with [`ResponseBody::full`] and, for
/// live feeds, [`ResponseBody::stream`]).
pub struct ResponseBody(Kind);

enum Kind {
    /// An answer made by the server itself (errors, `/health`, the management API).
    Full(Full<Bytes>),
    /// An upstream response relayed to the client.
    Tapped(Box<TappedBody>),
    /// A body produced as it goes (the management API's Server-Sent Events).
    Stream(UnsyncBoxBody<Bytes, Infallible>),
}

impl ResponseBody {
    /// A body sent as it is.
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody(Kind::Full(Full::new(bytes.into())))
    }

    /// A body whose frames are produced over time; it ends when `body` ends.
    pub fn stream(body: impl Body<Data = Bytes, Error = Infallible> + Send + 'static) -> Self {
        ResponseBody(Kind::Stream(body.boxed_unsync()))
    }

    pub(crate) fn tapped(body: TappedBody) -> ResponseBody {
        ResponseBody(Kind::Tapped(Box::new(body)))
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Full(_) => "ResponseBody::Full",
            Kind::Tapped(_) => "ResponseBody::Tapped",
            Kind::Stream(_) => "ResponseBody::Stream",
        })
    }
}

/// What the response body is, for reading its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `text/event-stream`: scanned inline.
    Sse,
    /// `application/json`: kept aside (as reference-counted chunks) and parsed at the end.
    Json,
    /// Anything else (JSONL batch results, HTML error pages): relayed only, no usage expected.
    Other,
    /// Compressed: relayed only; usage cannot be read.
    Unreadable,
}

impl BodyKind {
    pub fn of(headers: &HeaderMap) -> BodyKind {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or("")
        };
        if !matches!(text(header::CONTENT_ENCODING), "" | "identity") {
            return BodyKind::Unreadable;
        }
        let content_type = text(header::CONTENT_TYPE);
        if content_type.starts_with("text/event-stream") {
            BodyKind::Sse
        } else if content_type.starts_with("application/json") {
            BodyKind::Json
        } else {
            BodyKind::Other
        }
    }
}

enum Reader {
    Sse(SseScanner),
    Json {
        chunks: Vec<Bytes>,
        len: usize,
    },
    /// No usage to read.
    None,
    /// Usage was expected but cannot be read (too large or compressed).
    Lost,
}

pub struct TappedBody {
    inner: UpstreamBody,
    reader: Reader,
    recorder: Recorder,
    status: u16,
    /// Fires at the idle deadline as last set; frames that came since only move `last_frame`
    /// (setting a timer per frame would cost more than the frame), and the timer is set again
    /// from it when it fires.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    last_frame: Instant,
    ended: bool,
}

impl TappedBody {
    pub fn new(
        inner: UpstreamBody,
        recorder: Recorder,
        status: u16,
        kind: BodyKind,
        idle_timeout: Duration,
    ) -> TappedBody {
        let reader = match kind {
            BodyKind::Sse => Reader::Sse(SseScanner::new()),
            BodyKind::Json => Reader::Json {
                chunks: Vec::new(),
                len: 0,
            },
            BodyKind::Other => Reader::None,
            BodyKind::Unreadable => Reader::Lost,
        };
        TappedBody {
            inner,
            reader,
            recorder,
            status,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            last_frame: Instant::now(),
            ended: false,
        }
    }

    fn observe(&mut self, data: &Bytes) {
        self.recorder.mark_first_byte();
        match &mut self.reader {
            Reader::Sse(scanner) => scanner.feed(data),
            Reader::Json { chunks, len } => {
                *len += data.len();
                if *len <= MAX_JSON_TAP {
                    chunks.push(data.clone());
                } else {
                    self.reader = Reader::Lost;
                }
            }
            Reader::None | Reader::Lost => {}
        }
    }

    /// Finishes the record. `broken` is the reason the body stopped early, if it did;
    /// `client_left` says the body was dropped before its end (by its client, or by the server
    /// cutting it at the shutdown deadline).
    fn end(&mut self, broken: Option<&BodyError>, mut client_left: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let ok_status = (200..300).contains(&self.status);
        let reader = std::mem::replace(&mut self.reader, Reader::None);
        // A client that leaves after `message_stop` has had the whole answer; only the
        // stream's closing bytes were still on their way.
        if let Reader::Sse(scanner) = &reader
            && client_left
            && scanner.summary().message_stop
        {
            client_left = false;
        }
        let cut_short = broken.is_some() || client_left;
        let mut outcome = Outcome {
            status: self.status,
            success: ok_status && !cut_short,
            error: None,
            model: None,
            usage: Usage::default(),
            usage_incomplete: false,
            message_id: None,
        };
        match reader {
            Reader::Sse(scanner) => {
                let summary = scanner.into_summary();
                outcome.model = summary.model;
                outcome.message_id = summary.message_id;
                outcome.usage = summary.usage;
                outcome.usage_incomplete = !summary.final_usage;
                if let Some(error) = summary.error {
                    outcome.success = false;
                    outcome.error = Some(error);
                } else if ok_status && !summary.message_stop && !cut_short {
                    // The upstream ended the stream cleanly but early.
                    outcome.success = false;
                    outcome.usage_incomplete = true;
                    outcome.error = Some((
                        "incomplete_stream".into(),
                        "the stream ended without message_stop".into(),
                    ));
                }
            }
            Reader::Json { chunks, .. } if !cut_short => {
                let body = join(chunks);
                if !ok_status {
                    outcome.error = Some(error_of(&body, self.status));
                } else if let Some(message) = usage::from_json_body(&body) {
                    outcome.model = message.model;
                    outcome.message_id = message.id;
                    outcome.usage = message.usage;
                }
            }
            Reader::Lost => outcome.usage_incomplete = ok_status,
            _ => {}
        }
        if !ok_status && outcome.error.is_none() && !client_left {
            outcome.error = Some((format!("http_{}", self.status), String::new()));
        }
        if let Some(broken) = broken {
            let kind = match broken {
                BodyError::Upstream(_) => "upstream_stream_error",
                BodyError::IdleTimeout => "upstream_idle_timeout",
            };
            outcome.error = Some((kind.into(), broken.to_string()));
            outcome.usage_incomplete = true;
            tracing::warn!(request_id = %self.recorder.id(), error = %broken, "response ended abnormally");
        }
        if client_left {
            // The client may have had the message's start: the row keeps its id.
            let message_id = outcome.message_id.take();
            outcome = if self.recorder.cut_by_server() {
                // The client has the status and part of the body: the row keeps that status.
                Outcome::shutdown_cut(self.status, outcome.model, outcome.usage)
            } else {
                Outcome::client_closed(outcome.model, outcome.usage)
            };
            outcome.message_id = message_id;
        }
        self.recorder.finish(outcome);
    }
}

/// One `Bytes` for chunks read in pieces: a single chunk as it is, several copied once.
pub(crate) fn join(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        }
    }
}

/// `error.type` and `error.message` of an Anthropic error body, or the status when the body is
/// not one (a 413 from Cloudflare is HTML).
pub fn error_of(body: &[u8], status: u16) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Wire {
        error: Option<WireError>,
    }
    #[derive(serde::Deserialize)]
    struct WireError {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Wire>(body) {
        Ok(Wire { error: Some(e) }) => (
            e.kind.unwrap_or_else(|| format!("http_{status}")),
            e.message.unwrap_or_default().chars().take(500).collect(),
        ),
        _ => (format!("http_{status}"), String::new()),
    }
}

impl Body for TappedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.observe(data);
                }
                this.last_frame = Instant::now();
                // With a known length hyper stops polling after the last byte, so the end
                // must be noticed here rather than from a final `None`.
                if this.inner.is_end_stream() {
                    this.end(None, false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let error = BodyError::Upstream(error);
                this.end(Some(&error), false);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.end(None, false);
                Poll::Ready(None)
            }
            Poll::Pending => {
                loop {
                    ready!(this.idle.as_mut().poll(cx));
                    let deadline = this.last_frame + this.idle_timeout;
                    if deadline <= Instant::now() {
                        break;
                    }
                    this.idle.as_mut().reset(deadline);
                }
                let error = BodyError::IdleTimeout;
                this.end(Some(&error), false);
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TappedBody {
    fn drop(&mut self) {
        // Dropped before its end: the client left, or the server cut it at the shutdown
        // deadline (`end` asks the state which, once, here and not per frame). Dropping
        // `inner` right after this closes the upstream connection, so no more quota is spent.
        // A body whose upstream side is complete was simply not polled to its `None`.
        let complete = self.inner.is_end_stream();
        self.end(None, !complete);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Kind::Tapped(tapped) => Pin::new(tapped.as_mut()).poll_frame(cx),
            Kind::Stream(stream) => Pin::new(stream)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(full) => full.is_end_stream(),
            Kind::Tapped(tapped) => tapped.is_end_stream(),
            Kind::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(full) => full.size_hint(),
            Kind::Tapped(tapped) => tapped.size_hint(),
            Kind::Stream(stream) => stream.size_hint(),
        }
    }
}
