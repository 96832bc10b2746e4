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
        .env("LOG_LEVEL", "warn")
        // Longer than the guard: a server that waited out the shutdown timeout for the open
        // feed below would not exit in time, and the test would fail.
        .env("CCFLARE_SHUTDOWN_TIMEOUT", "600");
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
    // the start-up line about the account, without the key. The history may come in more
    // than one frame, so events are read until both lines are there.
    let response = tokio::time::timeout(
        GUARD,
        common::client().request(get(&format!("{}/api/logs/stream", server.url))),
    )
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let history = read_events_until(&mut body, |events| {
        events.contains("added API-key account from CLAUDE_API_KEYS")
            && events.contains("request finished")
    })
    .await;
    assert!(!history.contains(&key("one")), "{history}");

    // SIGTERM with the feed still open: the server stops at once rather than waiting out the
    // (600 s) shutdown timeout for a response that never ends; `terminate` fails the test if
    // it does not exit, cleanly, within the guard.
    server.terminate().await;
    drop(body);
}

/// Reads whole Server-Sent Events from `body` until the text of those read satisfies `done`;
/// returns that text. Fails the test if the stream ends first or the guard time passes.
async fn read_events_until<B>(body: &mut B, done: impl Fn(&str) -> bool) -> String
where
    B: BodyExt + Unpin,
    B::Data: AsRef<[u8]>,
    B::Error: std::fmt::Debug,
{
    let mut received = String::new();
    let read = tokio::time::timeout(GUARD, async {
        loop {
            // Only whole events (up to a blank line) count: a line cut between frames does not.
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
    read.unwrap_or_else(|_| panic!("the expected events did not come in time:\n{received}"))
}
