//! The small-exchange client against real sockets on 127.0.0.1: a hand-written HTTP/1.1 peer
//! answers each test's way (whole, too long, never, half, or by hanging up), so every bound
//! the client promises is seen to hold.

use bytes::Bytes;
use ccflare_http::{Client, HttpError, Limits};
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Generous, so a loaded machine never makes an answer late where a test expects one.
const LIMITS: Limits = Limits {
    connect: Duration::from_secs(10),
    total: Duration::from_secs(30),
    max_body: 1024,
};

/// What the peer does after reading a request's head.
enum Then {
    /// Writes these bytes, then keeps the connection open.
    Answer(&'static [u8]),
    /// Writes the first bytes, waits for the signal, writes the second.
    AnswerInTwo(&'static [u8], oneshot::Receiver<()>, &'static [u8]),
    /// Closes the connection.
    HangUp,
}

/// A one-connection peer at `http://127.0.0.1:port`; the request head it read arrives on the
/// receiver.
async fn peer(then: Then) -> (String, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (head_tx, head_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = head_tx.send(String::from_utf8(head).unwrap());
        match then {
            Then::Answer(bytes) => socket.write_all(bytes).await.unwrap(),
            Then::AnswerInTwo(first, go, second) => {
                socket.write_all(first).await.unwrap();
                if go.await.is_ok() {
                    socket.write_all(second).await.unwrap();
                }
            }
            Then::HangUp => return,
        }
        // Held open: the client, not the peer, decides when the exchange is over.
        std::future::pending::<()>().await;
    });
    (url, head_rx)
}

fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("{url}/health"))
        .header("x-test", "1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn an_exchange_returns_the_whole_answer() {
    let (url, head) = peer(Then::Answer(
        b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx-answer: yes\r\n\r\nhello",
    ))
    .await;
    let answer = Client::new(LIMITS).exchange(get(&url)).await.unwrap();
    assert_eq!(answer.status, 201);
    assert_eq!(answer.headers["x-answer"], "yes");
    assert_eq!(&answer.body[..], b"hello");
    let head = head.await.unwrap();
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("x-test: 1\r\n"), "{head}");
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    // 1,025 bytes against a cap of 1,024, sent without a length so the cap is met mid-read.
    let mut answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
    answer.extend([b'x'; 1025]);
    let (url, _head) = peer(Then::Answer(answer.leak())).await;
    let error = Client::new(LIMITS).exchange(get(&url)).await.unwrap_err();
    assert!(
        matches!(error, HttpError::TooLarge { limit: 1024 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_deadline_covers_the_whole_exchange() {
    let limits = Limits {
        total: Duration::from_millis(300),
        ..LIMITS
    };
    // No answer at all.
    let (url, _head) = peer(Then::Answer(b"")).await;
    let error = Client::new(limits).exchange(get(&url)).await.unwrap_err();
    assert!(
        matches!(error, HttpError::Timeout(t) if t == limits.total),
        "{error:?}"
    );

    // Headers at once, then half the body and silence: the body's wait counts too.
    let (_never_tx, never) = oneshot::channel();
    let (url, _head) = peer(Then::AnswerInTwo(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
        never,
        b"",
    ))
    .await;
    let error = Client::new(limits).exchange(get(&url)).await.unwrap_err();
    assert!(matches!(error, HttpError::Timeout(_)), "{error:?}");
    assert_eq!(error.to_string(), "no answer within 300ms");
}

#[tokio::test]
async fn refused_connections_and_hang_ups_are_told_apart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = Client::new(LIMITS)
        .exchange(get(&closed))
        .await
        .unwrap_err();
    assert!(matches!(error, HttpError::Connect(_)), "{error:?}");
    assert!(
        error.to_string().contains("Connect"),
        "shown as hyper-util shows it: {error}"
    );

    let (url, _head) = peer(Then::HangUp).await;
    let error = Client::new(LIMITS).exchange(get(&url)).await.unwrap_err();
    assert!(matches!(error, HttpError::Send(_)), "{error:?}");
}

#[tokio::test]
async fn an_opened_stream_arrives_as_it_is_written() {
    let (go_tx, go) = oneshot::channel();
    let (url, _head) = peer(Then::AnswerInTwo(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
          6\r\nfirst\n\r\n",
        go,
        b"7\r\nsecond\n\r\n0\r\n\r\n",
    ))
    .await;
    let response = Client::new(LIMITS).open(get(&url)).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first\n");
    // The rest is written only now: the headers and first chunk did not wait for it.
    go_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second\n");
}

#[tokio::test]
async fn an_opened_stream_must_show_its_headers_in_time() {
    let limits = Limits {
        total: Duration::from_millis(300),
        ..LIMITS
    };
    let (url, _head) = peer(Then::Answer(b"")).await;
    let error = Client::new(limits).open(get(&url)).await.unwrap_err();
    assert!(matches!(error, HttpError::Timeout(_)), "{error:?}");
}
