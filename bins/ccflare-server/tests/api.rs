//! The management API through the real binary: installed on the proxy's port, accounts from
//! `CLAUDE_API_KEYS` listed masked, proxied requests counted, the log feed filled from start-up
//! on (so the binary installs its tracing layer), and SIGTERM ending an open live feed at once.

mod common;

use common::{GUARD, Server, get, key, messages_request, mock, send, server_command};
use http_body_util::BodyExt;

#[tokio::test]
async fn the_management_api_is_served_by_the_binary() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_command(dir.path());
    command
        .env("CLAUDE_API_KEYS", key("one"))
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("LOG_LEVEL", "warn");
    let server = Server::start(command).await;

    let accounts = send(get(&format!("{}/api/accounts", server.url))).await;
    assert_eq!(accounts.status, 200);
    let text = String::from_utf8_lossy(&accounts.body).into_owned();
    assert!(!text.contains(&key("one")), "{text}");
    let list = accounts.json();
    assert_eq!(list["accounts"][0]["name"], "key--one");
    assert_eq!(list["accounts"][0]["credential"], "sk-ant-…-one");

    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(reply.status, 200);
    let analytics = send(get(&format!("{}/api/analytics", server.url))).await;
    assert_eq!(analytics.json()["active_accounts"], 1);
    let metrics = send(get(&format!("{}/metrics", server.url))).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(
            r#"ccflare_requests_total{status="200",model="claude-haiku-4-5",account="key--one"} 1"#
        ),
        "{metrics}"
    );

    // The log feed keeps info lines even though stderr shows only warnings: its history has
    // the start-up line about the account, without the key.
    let response = tokio::time::timeout(
        GUARD,
        common::client().request(get(&format!("{}/api/logs/stream", server.url))),
    )
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("history in time")
        .expect("a frame")
        .expect("data");
    let history = String::from_utf8_lossy(first.data_ref().expect("data")).into_owned();
    assert!(
        history.contains("added API-key account from CLAUDE_API_KEYS"),
        "{history}"
    );
    assert!(history.contains("request finished"), "{history}");
    assert!(!history.contains(&key("one")));

    // SIGTERM with the feed still open: the server stops at once rather than waiting out the
    // shutdown timeout for a response that never ends.
    let started = std::time::Instant::now();
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(body);
}
