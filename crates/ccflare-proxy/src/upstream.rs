//! The upstream client: HTTP/1.1 connections to the one upstream the server forwards to, with
//! ccflare's own small pool, driven by the task that serves the response (docs/proxy.md, "The
//! relay").
//!
//! A connection is hyper's `client::conn::http1` pair: a [`SendRequest`] and the [`Connection`]
//! future that does the connection's reading and writing. hyper-util's pooled client runs that
//! future in a task of its own, so every frame of a response crossed from that task to the one
//! serving the client (a wake-up, often of another thread, per frame). Here nobody spawns it:
//! [`UpstreamClient::send`] polls it while it waits for the response's headers, and the
//! response's body ([`UpstreamBody`]) polls it whenever the client's side asks for the next
//! frame. A frame read from the upstream socket is handed to the client's socket in the same
//! poll.
//!
//! When a response's body has been read to its end and the connection can take another
//! request, it goes back to the idle list; a body dropped before its end (the client hung up,
//! or a broken stream) drops its connection with it, which closes the socket at once so the
//! upstream stops generating. Idle connections are not polled: each is checked when taken
//! (a connection the upstream closed meanwhile is seen as such and dropped), and those idle
//! longer than [`POOL_IDLE_TIMEOUT`] are dropped when taken or swept ([`UpstreamClient::sweep`]).
//!
//! The connection's own futures (the request's answer, the body's channel, the connection's
//! reading and writing) are polled with the connection's [`Quiet`] waker: hyper's parts wake
//! each other as they hand things over, and with the task's own waker each hand-over, made
//! while the task runs, would have the task polled once more for nothing, and another worker
//! thread woken to steal it (a futex wake-up, per request and per frame). The quiet waker
//! ignores the wake-ups made by the task's own poll, which looks at each future again after
//! driving the connection, and passes on those from elsewhere (the socket turning readable).
//!
//! No total timeout anywhere: a long generation is not a failure; only silence is (the idle
//! timeout, enforced by the caller).

use crate::error::ProxyError;
use crate::quiet::Quiet;
use bytes::{Bytes, BytesMut};
use ccflare_http::{BaseUrl, Connector, InvalidUrl};
use http::header::{self, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// How long an idle connection is kept for the next request.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept: enough for every client connection's request to find a warm one
/// after a burst.
const POOL_MAX_IDLE: usize = 1024;

/// What a connection's socket is: TCP, under rustls for `https://`.
type Io = <Connector as Service<http::Uri>>::Response;
/// Every request the proxy sends has its body in memory (read once, replayed per attempt).
type RequestBody = Full<Bytes>;

/// One HTTP/1.1 connection to the upstream.
struct Conn {
    sender: SendRequest<RequestBody>,
    driver: Connection<Io, RequestBody>,
    /// The waker its futures are polled with.
    quiet: Arc<Quiet>,
}

impl Conn {
    /// Polls the connection's reading and writing. Ready means it is finished: closed by either
    /// side or broken; it cannot carry another request.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.driver).poll(cx).map(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "upstream connection ended");
            }
        })
    }

    /// Whether an idle connection can still take a request: the upstream may have closed it
    /// while it waited, which one poll sees (its socket turned readable with the end).
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_drive(&mut cx).is_pending() && self.sender.is_ready()
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The idle connections, newest last.
struct IdleList {
    conns: Mutex<Vec<Idle>>,
    /// How long a connection may stay idle.
    timeout: Duration,
}

impl IdleList {
    fn new(timeout: Duration) -> Arc<IdleList> {
        Arc::new(IdleList {
            conns: Mutex::new(Vec::new()),
            timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Nothing panics while holding it, but a poisoned list is still a valid list.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle connection that is still open, if any.
    fn take(&self) -> Option<Box<Conn>> {
        let now = Instant::now();
        loop {
            let idle = self.lock().pop()?;
            if now.duration_since(idle.since) >= self.timeout {
                // The newest is expired, so all are.
                self.lock().clear();
                return None;
            }
            let mut conn = idle.conn;
            if conn.alive() {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: Box<Conn>) {
        let now = Instant::now();
        let mut conns = self.lock();
        if conns.len() >= POOL_MAX_IDLE {
            conns.remove(0);
        }
        conns.push(Idle { conn, since: now });
    }

    /// Drops the connections idle longer than the idle timeout (the oldest are first).
    fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut conns = self.lock();
        let expired = conns
            .iter()
            .take_while(|idle| now.duration_since(idle.since) >= self.timeout)
            .count();
        conns.drain(..expired);
        expired
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: refused, unreachable, timed out, or the TLS handshake failed.
    #[error("connecting to the upstream failed: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// A connection taken from the idle list failed before any of the response arrived: the
    /// upstream most likely closed it as the request went out. Sending again on a new
    /// connection is safe (nothing was answered).
    #[error("the reused upstream connection closed: {0}")]
    Stale(hyper::Error),
    /// The connection failed while sending or before the response's headers.
    #[error("the upstream connection failed: {0}")]
    Failed(hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }

    pub fn is_stale(&self) -> bool {
        matches!(self, SendError::Stale(_))
    }
}

/// Whether a new or reused connection serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// An idle connection if one is open, else a new one.
    Idle,
    /// A new connection (after a stale one failed).
    Fresh,
}

/// The client and the upstream base it sends to. Cheap to clone (the idle list is shared).
#[derive(Clone)]
pub struct UpstreamClient {
    connector: Connector,
    base: BaseUrl,
    /// The base as a URI, parsed once: what the connector connects to.
    origin: http::Uri,
    /// `Host` of every request: the base's authority.
    host: HeaderValue,
    idle: Arc<IdleList>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("base", &self.base)
            .field("idle", &self.idle.len())
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    pub fn new(base_url: &str, connect_timeout: Duration) -> Result<UpstreamClient, ProxyError> {
        let invalid = |InvalidUrl { url, reason }| ProxyError::InvalidUpstream { url, reason };
        let base = BaseUrl::parse(base_url).map_err(invalid)?;
        let no_host = || ProxyError::InvalidUpstream {
            url: base_url.to_owned(),
            reason: "no host".into(),
        };
        let origin: http::Uri = base.as_str().parse().map_err(|_| no_host())?;
        let authority = origin.authority().ok_or_else(no_host)?;
        // The default port is left out of `Host`, as browsers and curl do.
        let default = match origin.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = match authority.port_u16() {
            Some(port) if port != default => authority.as_str(),
            _ => authority.host(),
        };
        let host = HeaderValue::from_str(host).map_err(|_| no_host())?;
        Ok(UpstreamClient {
            connector: ccflare_http::connector(connect_timeout),
            base,
            origin,
            host,
            idle: IdleList::new(POOL_IDLE_TIMEOUT),
        })
    }

    /// The same client with idle connections kept `timeout` instead of [`POOL_IDLE_TIMEOUT`]
    /// (before it sends anything).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> UpstreamClient {
        self.idle = IdleList::new(timeout);
        self
    }

    /// The upstream URI for a client request's path and query, kept byte for byte.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        self.base.join(path_and_query)
    }

    /// Idle connections now.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    /// Drops the connections idle longer than the idle timeout; returns how many.
    pub fn sweep(&self) -> usize {
        self.idle.sweep()
    }

    /// Sends `request` (its URI one of [`UpstreamClient::uri_for`]'s) and returns the response
    /// once its headers are in; its body carries the connection with it. A [`SendError::Stale`]
    /// is worth one more try with [`Reuse::Fresh`].
    pub async fn send(
        &self,
        mut request: http::Request<RequestBody>,
        reuse: Reuse,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        // HTTP/1.1 wants the origin form (`/v1/messages?beta=true`) and a `Host`.
        let origin = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *request.uri_mut() = http::Uri::from(origin);
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());

        let taken = match reuse {
            Reuse::Idle => self.idle.take(),
            Reuse::Fresh => None,
        };
        let reused = taken.is_some();
        let mut conn = match taken {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let response = conn.sender.send_request(request);
        let mut response = pin!(response);
        // The response's headers arrive while this task drives the connection.
        let mut driving = true;
        let quiet = conn.quiet.clone();
        let answer = poll_fn(|cx| {
            let (_inside, waker) = quiet.enter(cx);
            let cx = &mut Context::from_waker(&waker);
            if let Poll::Ready(answer) = response.as_mut().poll(cx) {
                return Poll::Ready(answer);
            }
            if driving && conn.poll_drive(cx).is_ready() {
                // Finished: the request's future now holds the answer or the reason.
                driving = false;
            }
            response.as_mut().poll(cx)
        })
        .await;
        match answer {
            Ok(response) => {
                let conn = driving.then_some(conn);
                Ok(response.map(|incoming| UpstreamBody {
                    incoming,
                    conn,
                    idle: Some(self.idle.clone()),
                    // The response's head is not sent yet either.
                    relayed: true,
                    held: None,
                }))
            }
            Err(error) if reused => Err(SendError::Stale(error)),
            Err(error) => Err(SendError::Failed(error)),
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Failed)?;
        Ok(Box::new(Conn {
            sender,
            driver,
            quiet: Quiet::new(),
        }))
    }
}

/// A response body from the upstream, with the connection it arrives on: polling the body
/// drives the connection. Its connection goes back to the idle list when the body has been
/// read to its end and the connection is ready for another request; otherwise it is closed
/// with the body.
pub struct UpstreamBody {
    incoming: Incoming,
    /// None once the connection is back in the idle list, or finished.
    conn: Option<Box<Conn>>,
    /// Where the connection goes back; `None` for a detached body, which has none.
    idle: Option<Arc<IdleList>>,
    /// A frame was handed on since the body last said `Pending`.
    relayed: bool,
    /// What ended the last gathered run (`gather`), or the error that broke the body right
    /// after data (`poll_frame`): handed on at the next poll.
    held: Option<Held>,
}

/// What [`UpstreamBody`] hands on at its next poll.
enum Held {
    /// Trailers (rare: boxed, so the body stays small).
    Frame(Box<Frame<Bytes>>),
    Error(hyper::Error),
    End,
}

/// Up to how many bytes of frames already read are joined into one (`gather`).
const GATHER_BYTES: usize = 64 * 1024;

impl UpstreamBody {
    /// A body whose connection someone else drives (a streamed upload's answer, which comes
    /// through hyper-util's client: `uploads.rs`); polling it only reads what arrives.
    pub(crate) fn detached(incoming: Incoming) -> UpstreamBody {
        UpstreamBody {
            incoming,
            conn: None,
            idle: None,
            relayed: true,
            held: None,
        }
    }

    /// The body is complete: one more poll lets the connection take in the response's end
    /// (and the upstream's `Connection: close`, if it said so); then it is idle or finished.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut conn) = self.conn.take()
            && let Some(idle) = &self.idle
            && conn.poll_drive(cx).is_pending()
            && conn.sender.is_ready()
        {
            conn.quiet.forget();
            idle.put(conn);
        }
    }

    fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        let polled = Pin::new(&mut self.incoming).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if self.incoming.is_end_stream() => self.release(cx),
            Poll::Ready(None) => self.release(cx),
            // A broken body leaves the connection in no state for another request.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }
}

impl UpstreamBody {
    /// The next frame: what the connection has handed on already, or else what it reads now.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        let polled = self.poll_incoming(cx);
        if polled.is_pending()
            && let Some(conn) = self.conn.as_mut()
        {
            // Nothing buffered: let the connection read (it hands what it reads to
            // `incoming`, which asked for it just now), then look again.
            if conn.poll_drive(cx).is_ready() {
                // Finished: `incoming` ends or fails with it.
                self.conn = None;
            }
            return self.poll_incoming(cx);
        }
        polled
    }

    /// Joins to `first` the data frames the connection has read already, up to
    /// [`GATHER_BYTES`]: a fast stream then crosses the proxy in few large writes instead of
    /// one per upstream chunk (the upstream sends an event per chunk: a 100 MB answer is a
    /// hundred thousand of them). Never waits for data not read yet, so an event that is
    /// alone goes on at once and untouched; what ends the run (trailers, an error, the end) is
    /// held for the next poll.
    fn gather(&mut self, first: Frame<Bytes>, cx: &mut Context<'_>) -> Frame<Bytes> {
        let first = match first.into_data() {
            Ok(data) => data,
            Err(frame) => return frame,
        };
        if first.len() >= GATHER_BYTES || self.incoming.is_end_stream() {
            return Frame::data(first);
        }
        let mut joined = BytesMut::new();
        loop {
            match self.poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.held = Some(Held::End);
                    break;
                }
                Poll::Ready(Some(Err(error))) => {
                    self.held = Some(Held::Error(error));
                    break;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Err(trailers) => {
                        self.held = Some(Held::Frame(Box::new(trailers)));
                        break;
                    }
                    Ok(data) => {
                        if joined.is_empty() {
                            joined.reserve(GATHER_BYTES.max(first.len() + data.len()));
                            joined.extend_from_slice(&first);
                        }
                        joined.extend_from_slice(&data);
                        if joined.len() >= GATHER_BYTES || self.incoming.is_end_stream() {
                            break;
                        }
                    }
                },
            }
        }
        if joined.is_empty() {
            Frame::data(first)
        } else {
            Frame::data(joined.freeze())
        }
    }
}

impl UpstreamBody {
    /// [`Body::poll_frame`], its futures polled with `cx`; `task` is the task's own waker when
    /// `cx`'s is the connection's quiet one.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        task: Option<&Waker>,
    ) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        let next = match self.held.take() {
            Some(Held::Frame(frame)) => return Poll::Ready(Some(Ok(*frame))),
            Some(Held::End) => return Poll::Ready(None),
            Some(Held::Error(error)) => Poll::Ready(Some(Err(error))),
            None => self.poll_next(cx),
        };
        match next {
            Poll::Ready(Some(Err(error))) if self.relayed => {
                // The frames before the break were read in this same turn and are not sent
                // yet: an error now would make the server drop them (and the response's
                // head) unsent. The client gets them first, the error at the next poll.
                self.relayed = false;
                self.held = Some(Held::Error(error));
                task.unwrap_or(cx.waker()).wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.relayed = true;
                Poll::Ready(Some(Ok(self.gather(frame, cx))))
            }
            Poll::Pending => {
                self.relayed = false;
                Poll::Pending
            }
            other => other,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // While this body drives its connection, the connection's futures are polled quietly;
        // a body without one (detached, or past its end) polls with the task's own waker.
        match this.conn.as_ref().map(|conn| conn.quiet.clone()) {
            Some(quiet) => {
                let (_inside, waker) = quiet.enter(cx);
                this.poll_body(&mut Context::from_waker(&waker), Some(cx.waker()))
            }
            None => this.poll_body(cx, None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to its end but not polled to its `None` (a known length ends with its last
        // byte): the connection can still serve. Otherwise it closes here, with the socket.
        if self.conn.is_some() && self.incoming.is_end_stream() {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}
