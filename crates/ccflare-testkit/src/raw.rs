//! HTTP/1.1 written and read by hand on a bare socket, for what a client library does not let
//! a test do: hang up at a moment of its choosing, or play a server that answers byte for byte.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Connects to `address` and writes `POST {path} HTTP/1.1` with the header lines given (the
/// `host` line first, as the caller lists it), a `content-length` and `body`; returns the open
/// connection, the answer unread.
pub async fn post(
    address: impl ToSocketAddrs,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut request = format!("POST {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

/// Reads one request from a connection a test server accepted: its head (request line and
/// headers, as sent) once the head and a `content-length` body are in. `None` if the peer
/// closed the connection first.
pub async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
            let length: usize = head
                .to_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if seen.len() >= end + 4 + length {
                return Some(head);
            }
        }
    }
}
