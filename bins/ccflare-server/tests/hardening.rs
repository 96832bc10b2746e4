//! The review's hardening (issue 12) in the real binary, configured as a user configures it:
//! undocumented `/v1` paths refused unless `CCFLARE_ALLOW_ALL_PATHS`, browser-driven requests
//! refused, and `CCFLARE_BODY_TIMEOUT` cutting an upload that stopped short. The behaviour
//! itself is tested in depth in `crates/ccflare-proxy/tests/hardening.rs`; this checks that the
//! options reach the proxy.

mod common;

use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::process::Server;
use ccflare_testkit::{GUARD, key, send};
use common::{CLIENT_KEY, messages_body, messages_request, mock, proxy_command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn undocumented_paths_browsers_and_stalled_uploads_are_refused() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command.env("CCFLARE_BODY_TIMEOUT", "1");
    let server = Server::start(command).await;

    let path = format!("{}/v1/organizations/api_keys", server.url);
    let reply = send(anthropic_post(&path, CLIENT_KEY, &[], "{}")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["type"], "not_found_error");
    let reply = send(messages_request(
        &server.url,
        false,
        &[("origin", "https://evil.example")],
    ))
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["type"], "permission_error");

    // Half a body, then nothing: the idle timeout (300 s) would wait; the body deadline cuts.
    let body = messages_body(false);
    let address = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         anthropic-version: 2023-06-01\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !String::from_utf8_lossy(&answer).contains("body_timeout") {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("cut in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        upstream.requests().is_empty(),
        "nothing of the three went upstream"
    );
    server.terminate().await;

    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command.arg("--allow-all-paths").arg("true");
    let server = Server::start(command).await;
    let path = format!("{}/v1/organizations/api_keys", server.url);
    send(anthropic_post(&path, CLIENT_KEY, &[], "{}")).await;
    assert_eq!(upstream.requests()[0].path, "/v1/organizations/api_keys");
    server.terminate().await;
}
