//! Live feeds as Server-Sent Events: the request feed (`request_started`, `request_finished`)
//! and the log feed (`log`, recent history first). Each subscriber reads from its own broadcast
//! receiver: one that stops reading (a stuck client, a full socket) falls behind and loses the
//! oldest events — it is told with a `lagged` event saying how many — and never slows the proxy
//! or the other subscribers. A comment line every 15 s of silence keeps proxies from closing
//! the connection; every feed ends when the server shuts down.

use crate::views::{RequestJson, StartedJson};
use bytes::Bytes;
use ccflare_proxy::{RequestEvent, ResponseBody, Shutdown};
use http::Response;
use http::header::{self, HeaderValue};
use http_body::{Body, Frame};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Silence after which a comment line is sent.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

type Step<S> = Pin<Box<dyn Future<Output = (S, Option<Bytes>)> + Send>>;

/// A response body that produces one frame per call of `step` on its state, until `step`
/// returns `None`.
struct SseBody<S> {
    pending: Option<Step<S>>,
    step: fn(S) -> Step<S>,
}

impl<S> Body for SseBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(pending) = this.pending.as_mut() else {
            return Poll::Ready(None);
        };
        match pending.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((state, Some(bytes))) => {
                this.pending = Some((this.step)(state));
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready((_, None)) => {
                this.pending = None;
                Poll::Ready(None)
            }
        }
    }
}

/// An SSE response whose body is produced by `step` from `state`.
fn sse_response<S: Send + 'static>(state: S, step: fn(S) -> Step<S>) -> Response<ResponseBody> {
    let body = SseBody {
        pending: Some(step(state)),
        step,
    };
    let mut response = Response::new(ResponseBody::stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and friends would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One SSE event: `event: <name>` and the JSON on one `data:` line (JSON text has no newline).
pub fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn lagged(missed: u64) -> Bytes {
    event("lagged", &format!("{{\"missed\":{missed}}}"))
}

/// The request feed's state.
pub struct RequestFeed {
    greeting: Option<Bytes>,
    events: broadcast::Receiver<RequestEvent>,
    shutdown: Shutdown,
}

impl RequestFeed {
    pub fn new(events: broadcast::Receiver<RequestEvent>, shutdown: Shutdown) -> Self {
        RequestFeed {
            greeting: Some(Bytes::from_static(
                b"retry: 3000\n: ccflare live requests\n\n",
            )),
            events,
            shutdown,
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        sse_response(self, |feed| Box::pin(feed.next()))
    }

    /// The next frame, or `None` at the end.
    pub async fn next(mut self) -> (Self, Option<Bytes>) {
        if let Some(greeting) = self.greeting.take() {
            return (self, Some(greeting));
        }
        let frame = tokio::select! {
            biased;
            _ = self.shutdown.recv() => None,
            received = self.events.recv() => match received {
                Ok(RequestEvent::Started(started)) => Some(event(
                    "request_started",
                    &serde_json::to_string(&StartedJson::from(&*started)).unwrap_or_default(),
                )),
                Ok(RequestEvent::Finished(record)) => Some(event(
                    "request_finished",
                    &serde_json::to_string(&RequestJson::from(&*record)).unwrap_or_default(),
                )),
                Err(RecvError::Lagged(missed)) => Some(lagged(missed)),
                Err(RecvError::Closed) => None,
            },
            _ = tokio::time::sleep(KEEPALIVE) => Some(Bytes::from_static(b": keepalive\n\n")),
        };
        (self, frame)
    }
}

/// The log feed's state: history not yet sent, then the live lines.
pub struct LogStream {
    history: VecDeque<Arc<str>>,
    lines: broadcast::Receiver<Arc<str>>,
    shutdown: Shutdown,
    greeted: bool,
}

impl LogStream {
    pub fn new(
        history: Vec<Arc<str>>,
        lines: broadcast::Receiver<Arc<str>>,
        shutdown: Shutdown,
    ) -> LogStream {
        LogStream {
            history: history.into(),
            lines,
            shutdown,
            greeted: false,
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        sse_response(self, |feed| Box::pin(feed.next()))
    }

    pub async fn next(mut self) -> (Self, Option<Bytes>) {
        if !self.greeted {
            // The greeting and the whole history go out as one frame.
            self.greeted = true;
            let mut first = String::from("retry: 3000\n: ccflare logs\n\n");
            for line in self.history.drain(..) {
                first.push_str("event: log\ndata: ");
                first.push_str(&line);
                first.push_str("\n\n");
            }
            return (self, Some(Bytes::from(first)));
        }
        let frame = tokio::select! {
            biased;
            _ = self.shutdown.recv() => None,
            received = self.lines.recv() => match received {
                Ok(line) => Some(event("log", &line)),
                Err(RecvError::Lagged(missed)) => Some(lagged(missed)),
                Err(RecvError::Closed) => None,
            },
            _ = tokio::time::sleep(KEEPALIVE) => Some(Bytes::from_static(b": keepalive\n\n")),
        };
        (self, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccflare_core::record::RequestRecord;
    use tokio::sync::watch;

    fn finished(id: &str) -> RequestEvent {
        RequestEvent::Finished(Arc::new(RequestRecord {
            id: id.into(),
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
        let (tx, rx) = broadcast::channel(2);
        let (_stop_tx, stop) = watch::channel(false);
        let feed = RequestFeed::new(rx, Shutdown::new(stop));
        // The sender never waits, however far behind the subscriber is.
        for n in 0..5 {
            tx.send(finished(&format!("r{n}"))).unwrap();
        }
        let (feed, greeting) = feed.next().await;
        assert!(greeting.unwrap().starts_with(b"retry:"));
        let (feed, frame) = feed.next().await;
        assert_eq!(frame.unwrap(), "event: lagged\ndata: {\"missed\":3}\n\n");
        let (feed, frame) = feed.next().await;
        let frame = String::from_utf8(frame.unwrap().to_vec()).unwrap();
        assert!(
            frame.starts_with("event: request_finished\ndata: {\"id\":\"r3\""),
            "{frame}"
        );
        let (_, frame) = feed.next().await;
        assert!(String::from_utf8_lossy(&frame.unwrap()).contains("\"id\":\"r4\""));
    }

    #[tokio::test]
    async fn feeds_end_at_shutdown_and_keep_quiet_connections_alive() {
        tokio::time::pause();
        let (_tx, rx) = broadcast::channel::<RequestEvent>(2);
        let (stop_tx, stop) = watch::channel(false);
        let (feed, _) = RequestFeed::new(rx, Shutdown::new(stop)).next().await;
        let (feed, frame) = feed.next().await;
        assert_eq!(frame.unwrap(), ": keepalive\n\n");
        stop_tx.send(true).unwrap();
        let (_, frame) = feed.next().await;
        assert_eq!(frame, None);
    }

    #[tokio::test]
    async fn logs_send_their_history_first() {
        let (tx, rx) = broadcast::channel(4);
        let (_stop_tx, stop) = watch::channel(false);
        let stream = LogStream::new(
            vec!["{\"a\":1}".into(), "{\"a\":2}".into()],
            rx,
            Shutdown::new(stop),
        );
        tx.send("{\"a\":3}".into()).unwrap();
        let (stream, first) = stream.next().await;
        let first = String::from_utf8(first.unwrap().to_vec()).unwrap();
        assert!(first.ends_with("event: log\ndata: {\"a\":1}\n\nevent: log\ndata: {\"a\":2}\n\n"));
        let (_, next) = stream.next().await;
        assert_eq!(next.unwrap(), "event: log\ndata: {\"a\":3}\n\n");
    }
}
