//! The management API through the real binary: installed on the proxy's port, accounts from
//! `CLAUDE_API_KEYS` listed masked, proxied requests counted, the log feed filled from start-up
//! on (so the binary installs its tracing layer), and SIGTERM ending an open live feed at once.

mod common;

use ccflare_testkit::process::Server;
use ccflare_testkit::{SseReader, get, key, send};
use common::{messages_request, mock, server_command};

#[tokio::test]
async fn the_management_api_is_served_by_the_binary() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_command(dir.path());
    command
        .env("CLAUDE_API_KEYS", key("one"))
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("LOG_LEVEL", "warn")
        // Longer than the guard: a server that waited out the shutdown timeout for the open
        // feed below would not exit in time, and the test would fail.
        .env("CCFLARE_SHUTDOWN_TIMEOUT", "600");
    let server = Server::start(command).await;

    let accounts = send(get(&format!("{}/api/accounts", server.url))).await;
    assert_eq!(accounts.status, 200);
    let text = accounts.text();
    assert!(!text.contains(&key("one")), "{text}");
    let list = accounts.json();
    assert_eq!(list["accounts"][0]["name"], "key--one");
    assert_eq!(list["accounts"][0]["credential"], "sk-ant-…-one");

    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(reply.status, 200);
    let analytics = send(get(&format!("{}/api/analytics", server.url))).await;
    assert_eq!(analytics.json()["active_accounts"], 1);
    let metrics = send(get(&format!("{}/metrics", server.url))).await;
    let metrics = metrics.text();
    assert!(
        metrics.contains(
            r#"ccflare_requests_total{status="200",model="claude-haiku-4-5",account="key--one"} 1"#
        ),
        "{metrics}"
    );

    // The log feed keeps info lines even though stderr shows only warnings: its history has
    // the start-up line about the account, without the key. The history may come in more
    // than one frame, so events are read until both lines are there.
    let response = ccflare_testkit::open(get(&format!("{}/api/logs/stream", server.url))).await;
    assert_eq!(response.status(), 200);
    let mut feed = SseReader::new(response.into_body());
    let history = feed
        .text_until(|events| {
            events.contains("added API-key account from CLAUDE_API_KEYS")
                && events.contains("request finished")
        })
        .await;
    assert!(!history.contains(&key("one")), "{history}");

    // SIGTERM with the feed still open: the server stops at once rather than waiting out the
    // (600 s) shutdown timeout for a response that never ends; `terminate` fails the test if
    // it does not exit, cleanly, within the guard.
    server.terminate().await;
    drop(feed);
}
