//! The upstream's ids on every request row (issue 13's request drawer): in process, with real
//! sockets, the mock upstream and a real SQLite file, a row keeps the `request-id` header of the
//! answer the client got and the message id in its body, streamed or not, and a relayed failure
//! keeps its `request-id` with no message id.

mod common;

use ccflare_mock::Fault;
use ccflare_testkit::key;
use common::{Options, spawn_app};
use http::StatusCode;
use serde_json::Value;

/// The message id of a stream as the client read it: `message_start`'s `message.id`.
fn streamed_message_id(text: &str) -> String {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|event| event["type"] == "message_start")
        .and_then(|event| event["message"]["id"].as_str().map(str::to_owned))
        .expect("the stream has a message_start with an id")
}

#[tokio::test]
async fn json_and_streamed_rows_keep_the_upstreams_request_id_and_message_id() {
    let app = spawn_app(Options::default()).await;
    let json = app.post(&[], false).await;
    assert_eq!(json.status, StatusCode::OK, "{}", json.text());
    let streamed = app.post(&[], true).await;
    assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.text());

    let json_upstream_id = json.header("request-id").to_owned();
    let json_message_id = json.json()["id"].as_str().unwrap().to_owned();
    let stream_upstream_id = streamed.header("request-id").to_owned();
    let stream_message_id = streamed_message_id(streamed.text());
    assert!(json_upstream_id.starts_with("req_") && stream_upstream_id.starts_with("req_"));
    assert!(json_message_id.starts_with("msg_") && stream_message_id.starts_with("msg_"));
    assert_ne!(json_upstream_id, stream_upstream_id);
    assert_ne!(json_message_id, stream_message_id);

    let records = app.records().await;
    let row = |id: &str| {
        records
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no row for {id}"))
    };
    let json_row = row(json.header("x-ccflare-request-id"));
    assert!(!json_row.streamed);
    assert_eq!(
        json_row.upstream_request_id.as_deref(),
        Some(json_upstream_id.as_str())
    );
    assert_eq!(
        json_row.message_id.as_deref(),
        Some(json_message_id.as_str())
    );
    let stream_row = row(streamed.header("x-ccflare-request-id"));
    assert!(stream_row.streamed);
    assert_eq!(
        stream_row.upstream_request_id.as_deref(),
        Some(stream_upstream_id.as_str())
    );
    assert_eq!(
        stream_row.message_id.as_deref(),
        Some(stream_message_id.as_str())
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_over_request_keeps_the_ids_of_the_answer_that_served() {
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        ..Default::default()
    })
    .await;
    app.mock.push_fault(&key("alpha"), Fault::Status(529));
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-ccflare-account"), "beta");

    let records = app.records().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.attempts, 2);
    assert_eq!(
        r.upstream_request_id.as_deref(),
        Some(reply.header("request-id"))
    );
    assert_eq!(r.message_id.as_deref(), reply.json()["id"].as_str());
    app.stop().await;
}

#[tokio::test]
async fn relayed_failures_keep_their_request_id_and_no_message_id() {
    // One attempt allowed: alpha's 529 is relayed as the final answer (the failover path's
    // relay), and a 400 passes through as any answer does.
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        max_attempts: 1,
        ..Default::default()
    })
    .await;
    app.mock.push_fault(&key("alpha"), Fault::Status(529));
    let overloaded = app.post(&[], false).await;
    assert_eq!(overloaded.status.as_u16(), 529, "{}", overloaded.text());
    app.mock.push_fault(&key("beta"), Fault::Status(400));
    let invalid = app.post(&[], false).await;
    assert_eq!(
        invalid.status,
        StatusCode::BAD_REQUEST,
        "{}",
        invalid.text()
    );

    let records = app.records().await;
    assert_eq!(records.len(), 2);
    for (reply, status) in [(&overloaded, 529), (&invalid, 400)] {
        let upstream_id = reply.header("request-id");
        assert!(upstream_id.starts_with("req_"), "{upstream_id:?}");
        let r = records
            .iter()
            .find(|r| r.id == reply.header("x-ccflare-request-id"))
            .expect("a row for each answer");
        assert_eq!((r.status, r.success), (status, false));
        assert_eq!(r.upstream_request_id.as_deref(), Some(upstream_id));
        assert_eq!(r.message_id, None);
    }
    app.stop().await;
}
