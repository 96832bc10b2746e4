//! The log feed end to end, in a test binary of its own: tracing's per-thread default
//! subscriber is only dependable when no other test registers log call sites concurrently.

mod common;

use ccflare_testkit::{SseReader, key};
use common::{Options, log_to, message_body, spawn_app};
use http::StatusCode;

#[tokio::test(flavor = "current_thread")]
async fn the_log_feed_sends_recent_lines_then_live_ones() {
    let logs = ccflare_api::LogFeed::new(100);
    // A current-thread runtime: the server, the mock and this test share the thread whose
    // default subscriber this is.
    let _guard = log_to(&logs);
    let app = spawn_app(Options {
        logs: logs.clone(),
        ..Options::default()
    })
    .await;
    let before = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    let before_id = before.header("x-ccflare-request-id").to_owned();
    let response = app.feed("/api/logs/stream").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut feed = SseReader::new(response.into_body());
    // History: the line of the request made before subscribing.
    loop {
        let event = feed.next().await;
        assert_eq!(event.name, "log");
        let line = event.json();
        if line["fields"]["request_id"] == before_id.as_str() {
            assert_eq!(
                (line["level"].as_str(), line["message"].as_str()),
                (Some("INFO"), Some("request finished"))
            );
            assert_eq!(line["fields"]["account"], "alpha");
            break;
        }
    }
    // Live: the line of a request made now.
    let after = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    let after_id = after.header("x-ccflare-request-id").to_owned();
    loop {
        let event = feed.next().await;
        if event.json()["fields"]["request_id"] == after_id.as_str() {
            assert!(!event.data.contains(&key("alpha")));
            break;
        }
    }
    app.stop().await;
}
