//! The upstream connections the relay keeps (docs/proxy.md, "The relay"): reused from one
//! request to the next, closed when idle too long, sent on again once when the upstream closed
//! a reused one under the request, never reused after a broken body, and closed at once when
//! the client hangs up. The upstream here is a scripted HTTP/1.1 server on a real socket that
//! counts the connections it accepts and sees each one close.

mod common;

use bytes::Bytes;
use ccflare_proxy::{Reuse, UpstreamClient};
use ccflare_testkit::http::Reply;
use ccflare_testkit::{GUARD, eventually};
use common::{Options, spawn_app};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the scripted upstream does with request `n` (from 0) on connection `c` (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// A whole JSON answer; the connection stays open.
    Answer,
    /// Read the request, then close without a byte of answer.
    Close,
    /// Headers of a chunked answer, then a chunk that is no chunk: the body breaks there.
    BreakBody,
    /// Headers and the first event of a stream, then nothing: wait for the peer to leave.
    Hold,
}

const ANSWER: &str = r#"{"id":"msg_raw","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#;

struct Upstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

impl Upstream {
    async fn start(script: fn(usize, usize) -> Act) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(Notify::new());
        let (a, c, n) = (accepted.clone(), closed.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let index = a.fetch_add(1, Ordering::SeqCst);
                n.notify_waiters();
                let (c, n) = (c.clone(), n.clone());
                tokio::spawn(async move {
                    serve(socket, index, script).await;
                    c.fetch_add(1, Ordering::SeqCst);
                    n.notify_waiters();
                });
            }
        });
        Upstream {
            url,
            accepted,
            closed,
            changed,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections have been closed (by the proxy, or by the script).
    async fn wait_closed(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.closed.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(GUARD, wait)
            .await
            .unwrap_or_else(|_| panic!("{n} upstream connections closed in time"));
    }
}

/// Serves one connection until the peer closes it or the script ends it.
async fn serve(mut socket: TcpStream, connection: usize, script: fn(usize, usize) -> Act) {
    let mut buffer = Vec::new();
    for request in 0.. {
        if !read_request(&mut socket, &mut buffer).await {
            return;
        }
        let reply: &[u8] = match script(connection, request) {
            Act::Answer => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    ANSWER.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(ANSWER.as_bytes()).await;
                continue;
            }
            Act::Close => return,
            Act::BreakBody => {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n"
            }
            Act::Hold => {
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n23\r\nevent: ping\ndata: {\"type\":\"ping\"}\n\n\r\n"
            }
        };
        let _ = socket.write_all(reply).await;
        // Whatever comes next, the connection ends when the peer closes it.
        let mut rest = [0u8; 1024];
        while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
        return;
    }
}

/// Reads one request (head and `content-length` body); false when the peer closed first.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                buffer.drain(..end + 4 + length);
                return true;
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn through(upstream: &Upstream) -> Options {
    Options {
        upstream_override: Some(upstream.url.clone()),
        ..Default::default()
    }
}

#[tokio::test]
async fn one_upstream_connection_serves_one_request_after_another() {
    let upstream = Upstream::start(|_, _| Act::Answer).await;
    let app = spawn_app(through(&upstream)).await;
    for _ in 0..5 {
        let reply = app.post(&[], false).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.text());
        assert_eq!(reply.body, ANSWER.as_bytes());
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "every request went on the first connection"
    );
    let records = app.records().await;
    assert_eq!(records.len(), 5);
    assert!(
        records
            .iter()
            .all(|r| r.success && r.usage.output_tokens == 1)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_reused_connection_the_upstream_closed_under_the_request_is_sent_on_again_once() {
    // The first connection answers once, then closes as the second request arrives.
    let upstream = Upstream::start(|connection, request| match (connection, request) {
        (0, 0) => Act::Answer,
        (0, _) => Act::Close,
        _ => Act::Answer,
    })
    .await;
    let app = spawn_app(through(&upstream)).await;
    assert_eq!(app.post(&[], false).await.status, StatusCode::OK);
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.text());
    assert_eq!(reply.body, ANSWER.as_bytes());
    assert_eq!(
        upstream.accepted(),
        2,
        "one new connection for the second request"
    );
    let records = app.records().await;
    assert_eq!(records.len(), 2);
    let second = &records[1];
    assert!(second.success);
    assert_eq!(second.attempts, 1, "sending again is not another attempt");
    assert!(second.attempt_failures.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_connection_whose_body_broke_is_never_reused() {
    let upstream = Upstream::start(|connection, _| match connection {
        0 => Act::BreakBody,
        _ => Act::Answer,
    })
    .await;
    let app = spawn_app(through(&upstream)).await;
    let broken = Reply::read_allowing_break(app.open_post(&[], false).await).await;
    assert!(broken.body_error, "the client sees the break");
    // The broken connection is closed by the proxy, and the next request opens another.
    upstream.wait_closed(1).await;
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.accepted(), 2);
    let records = app.records().await;
    assert_eq!(
        records[0].error_type.as_deref(),
        Some("upstream_stream_error")
    );
    assert!(records[1].success);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_closes_the_upstream_connection() {
    let upstream = Upstream::start(|_, _| Act::Hold).await;
    let app = spawn_app(through(&upstream)).await;
    let response = app.open_post(&[], true).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("the first event in time")
        .expect("a frame")
        .expect("data");
    assert!(
        first
            .data_ref()
            .is_some_and(|d| d.starts_with(b"event: ping"))
    );
    let left = std::time::Instant::now();
    drop(body);
    // The proxy closes its upstream connection as soon as the client is gone, so the
    // upstream stops generating.
    upstream.wait_closed(1).await;
    eprintln!("upstream closed {:?} after the client left", left.elapsed());
    let records = app.records().await;
    assert_eq!(records[0].status, 499);
    app.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_and_not_reused() {
    let upstream = Upstream::start(|_, _| Act::Answer).await;
    let client = UpstreamClient::new(&upstream.url, Duration::from_secs(5))
        .expect("client")
        .with_idle_timeout(Duration::from_millis(200));
    let send = |client: UpstreamClient| async move {
        let mut request = http::Request::new(Full::new(Bytes::from_static(b"{}")));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = client.uri_for("/v1/messages").expect("uri");
        let response = client.send(request, Reuse::Idle).await.expect("answer");
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), ANSWER.as_bytes());
    };
    send(client.clone()).await;
    assert_eq!(client.idle_connections(), 1, "kept for the next request");
    send(client.clone()).await;
    assert_eq!(upstream.accepted(), 1);
    // Past the idle timeout the sweep closes it, and the upstream sees it close.
    eventually(GUARD, "the idle connection expires", || {
        let client = client.clone();
        async move { (client.sweep() == 1).then_some(()) }
    })
    .await;
    assert_eq!(client.idle_connections(), 0);
    upstream.wait_closed(1).await;
    send(client.clone()).await;
    assert_eq!(upstream.accepted(), 2, "a new connection after the expiry");
}
