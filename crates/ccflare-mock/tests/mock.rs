//! End-to-end checks of the mock upstream over real sockets: what a proxy under test will see
//! on the wire (status, headers, exact body bytes, usage numbers, dropped connections).

use bytes::Bytes;
use ccflare_mock::{Fault, MockUpstream};
use ccflare_testkit::http::request;
use ccflare_testkit::sse::parse_events;
use ccflare_testkit::{GUARD, Message, Reply, raw};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::AsyncReadExt;

const API_KEY: &str = "sk-ant-api03-test-key";
const OAUTH_TOKEN: &str = "sk-ant-oat01-test-token";

/// Sends a request to the mock and reads the answer, keeping a body that breaks.
async fn send(
    mock: &MockUpstream,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let url = format!("{}{path}", mock.url());
    let response = ccflare_testkit::open(request(method, &url, headers, body.to_owned())).await;
    Reply::read_allowing_break(response).await
}

/// `POST /v1/messages` with exactly `headers`.
async fn post(mock: &MockUpstream, headers: &[(&str, &str)], body: &str) -> Reply {
    send(mock, Method::POST, "/v1/messages", headers, body).await
}

/// `POST /v1/messages?beta=true` with an API key and the version header.
async fn post_message(mock: &MockUpstream, extra: &[(&str, &str)], body: &str) -> Reply {
    let mut headers = vec![
        ("x-api-key", API_KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    send(mock, Method::POST, "/v1/messages?beta=true", &headers, body).await
}

fn message_body(stream: bool) -> String {
    Message::new("claude-sonnet-4-5")
        .stream(stream)
        .content("hi")
        .body()
}

/// The headers of the hand-written requests: the test key, the version, and `extra`.
fn raw_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("host", "mock"),
        ("x-api-key", API_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    headers.extend_from_slice(extra);
    headers
}

fn assert_error(reply: &Reply, status: u16, kind: &str, message: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], kind);
    assert_eq!(body["error"]["message"], message);
    assert_eq!(body["request_id"], reply.header("request-id"));
    assert!(reply.header("request-id").starts_with("req_011C"));
    assert!(!reply.header("anthropic-organization-id").is_empty());
}

#[tokio::test]
async fn json_message_has_exact_usage_and_rate_limit_headers() {
    let mock = MockUpstream::start().await.expect("start");
    let body = message_body(false);
    let reply = post_message(&mock, &[], &body).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(reply.header("request-id").starts_with("req_011C"));
    assert!(!reply.header("anthropic-organization-id").is_empty());
    assert_eq!(reply.header("anthropic-ratelimit-requests-limit"), "1000");
    assert_eq!(
        reply.header("anthropic-ratelimit-requests-remaining"),
        "999"
    );
    assert!(
        reply
            .header("anthropic-ratelimit-tokens-reset")
            .ends_with('Z')
    );
    assert!(
        reply
            .headers
            .get("anthropic-ratelimit-unified-status")
            .is_none()
    );

    let message = reply.json();
    assert_eq!(message["model"], "claude-sonnet-4-5");
    assert_eq!(
        message["content"][0]["text"],
        "Hello from the mock upstream."
    );
    let usage = &message["usage"];
    assert_eq!(usage["input_tokens"], body.len() / 4);
    assert_eq!(usage["output_tokens"], 5);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(usage["cache_creation_input_tokens"], 0);

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let received = &requests[0];
    assert_eq!(received.method, "POST");
    assert_eq!(received.path, "/v1/messages");
    assert_eq!(received.query.as_deref(), Some("beta=true"));
    assert_eq!(received.credential.as_deref(), Some(API_KEY));
    assert_eq!(received.header("Anthropic-Version"), Some("2023-06-01"));
    assert_eq!(received.body, body.as_bytes());
}

#[tokio::test]
async fn cache_control_and_custom_text_steer_usage() {
    let mock = MockUpstream::start().await.expect("start");
    let body = concat!(
        r#"{"model":"m","max_tokens":1,"messages":[],"#,
        r#""system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}]}"#,
    );
    let reply = post_message(&mock, &[("x-mock-text", "one two  three")], body).await;
    let usage = &reply.json()["usage"];
    assert_eq!(usage["input_tokens"], body.len() / 4);
    assert_eq!(usage["output_tokens"], 3);
    assert_eq!(usage["cache_read_input_tokens"], 100);
    assert_eq!(usage["cache_creation_input_tokens"], 50);
    assert_eq!(usage["cache_creation"]["ephemeral_5m_input_tokens"], 50);
    assert_eq!(usage["cache_creation"]["ephemeral_1h_input_tokens"], 0);
    assert_eq!(reply.json()["content"][0]["text"], "one two  three");
}

#[tokio::test]
async fn sse_stream_has_the_captured_byte_format() {
    let mock = MockUpstream::start().await.expect("start");
    let body = message_body(true);
    for split in ["0", "1"] {
        let reply = post_message(
            &mock,
            &[("x-mock-text", "gato, luna, café"), ("x-mock-split", split)],
            &body,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.body_error);
        assert_eq!(
            reply.header("content-type"),
            "text/event-stream; charset=utf-8"
        );
        assert_eq!(reply.header("cache-control"), "no-cache");
        assert_eq!(reply.header("anthropic-ratelimit-requests-limit"), "1000");

        let events = parse_events(reply.text());
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[2].1, r#"{"type": "ping"}"#);
        assert!(reply.text().contains(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
             \"delta\":{\"type\":\"text_delta\",\"text\":\"café\"}}\n\n"
        ));

        let start: Value = serde_json::from_str(&events[0].1).expect("json");
        assert_eq!(start["message"]["model"], "claude-sonnet-4-5");
        assert_eq!(start["message"]["usage"]["output_tokens"], 1);
        assert_eq!(start["message"]["usage"]["input_tokens"], body.len() / 4);
        assert_eq!(
            start["message"]["usage"]["cache_creation"]["ephemeral_1h_input_tokens"],
            0
        );

        let text: String = events[3..6]
            .iter()
            .map(|(_, data)| {
                let delta: Value = serde_json::from_str(data).expect("json");
                delta["delta"]["text"].as_str().expect("text").to_owned()
            })
            .collect();
        assert_eq!(text, "gato, luna, café");

        let delta: Value = serde_json::from_str(&events[7].1).expect("json");
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 3);
        assert_eq!(delta["usage"]["input_tokens"], body.len() / 4);

        // Usage is only in message_start and the final message_delta, as upstream sends it.
        let with_usage = events
            .iter()
            .filter(|(_, data)| data.contains("\"usage\""))
            .count();
        assert_eq!(with_usage, 2);
    }
}

#[tokio::test]
async fn stream_bytes_makes_a_large_stream_with_counted_output() {
    let mock = MockUpstream::start().await.expect("start");
    let reply = post_message(
        &mock,
        &[("x-mock-stream-bytes", "2100000")],
        &message_body(true),
    )
    .await;
    assert!(reply.body.len() > 2_100_000);
    let events = parse_events(reply.text());
    let deltas = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .count();
    assert_eq!(deltas, 2_100_000usize.div_ceil(1024));
    let (name, data) = &events[events.len() - 2];
    assert_eq!(name, "message_delta");
    let delta: Value = serde_json::from_str(data).expect("json");
    assert_eq!(delta["usage"]["output_tokens"], deltas * 128);
}

#[tokio::test]
async fn rate_limited_fault_is_consumed_once() {
    let mock = MockUpstream::start().await.expect("start");
    mock.push_fault(
        API_KEY,
        Fault::RateLimited {
            retry_after: Some(30),
            reset: None,
        },
    );
    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert_error(&reply, 429, "rate_limit_error", "rate limit exceeded");
    assert_eq!(reply.header("retry-after"), "30");
    assert_eq!(reply.header("x-should-retry"), "true");

    let reset = "2030-01-01T00:00:00Z";
    let fault = Fault::RateLimited {
        retry_after: None,
        reset: Some(reset.to_owned()),
    };
    mock.push_fault(API_KEY, fault);
    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.headers.get("retry-after").is_none());
    assert_eq!(reply.header("anthropic-ratelimit-requests-remaining"), "0");
    assert_eq!(
        reply.header("anthropic-ratelimit-output-tokens-reset"),
        reset
    );

    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn sticky_faults_apply_until_cleared() {
    let mock = MockUpstream::start().await.expect("start");
    mock.set_sticky_fault(API_KEY, Some(Fault::Overloaded));
    for _ in 0..2 {
        let reply = post_message(&mock, &[], &message_body(false)).await;
        assert_error(&reply, 529, "overloaded_error", "Overloaded");
    }
    mock.push_fault(API_KEY, Fault::Status(504));
    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert_error(&reply, 504, "timeout_error", "Request timed out");
    mock.set_sticky_fault(API_KEY, None);
    assert_eq!(
        post_message(&mock, &[], &message_body(false)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_faults_have_their_wire_shapes() {
    let mock = MockUpstream::start().await.expect("start");
    mock.push_fault(API_KEY, Fault::RequestTooLargeHtml);
    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.header("content-type"), "text/html");
    assert!(reply.text().starts_with("<html>"));

    mock.push_fault(
        OAUTH_TOKEN,
        Fault::UnifiedRejected {
            reset_epoch: 4_000_000_000,
            retry_after: Some(3600),
        },
    );
    let bearer = format!("Bearer {OAUTH_TOKEN}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20"),
        ("anthropic-version", "2023-06-01"),
    ];
    let reply = post(&mock, &headers, &message_body(false)).await;
    assert_error(&reply, 429, "rate_limit_error", "rate limit exceeded");
    assert_eq!(
        reply.header("anthropic-ratelimit-unified-status"),
        "rejected"
    );
    assert_eq!(
        reply.header("anthropic-ratelimit-unified-reset"),
        "4000000000"
    );
    assert_eq!(reply.header("retry-after"), "3600");

    mock.push_fault(
        OAUTH_TOKEN,
        Fault::Unified {
            status: "rejected".into(),
            reset_epoch: None,
            window_reset_epoch: 4_000_000_123,
        },
    );
    let reply = post(&mock, &headers, &message_body(false)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the last request a window lets through"
    );
    assert_eq!(
        reply.header("anthropic-ratelimit-unified-status"),
        "rejected"
    );
    assert_eq!(
        reply.header("anthropic-ratelimit-unified-5h-reset"),
        "4000000123"
    );
    assert_eq!(reply.header("anthropic-ratelimit-unified-reset"), "");

    mock.push_fault(API_KEY, Fault::ErrorEvent { after_events: 4 });
    let reply = post_message(&mock, &[], &message_body(true)).await;
    assert!(!reply.body_error);
    let events = parse_events(reply.text());
    assert_eq!(events.len(), 5);
    assert_eq!(events[3].0, "content_block_delta");
    assert_eq!(events[4].0, "error");
    let error: Value = serde_json::from_str(&events[4].1).expect("json");
    assert_eq!(error["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn drop_mid_stream_ends_with_a_body_error() {
    let mock = MockUpstream::start().await.expect("start");
    mock.push_fault(API_KEY, Fault::DropMidStream { after_events: 4 });
    let reply = post_message(&mock, &[], &message_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body_error, "the body must fail, not end");
    let text = reply.text();
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.ends_with(concat!(
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"#,
        r#""delta":{"type":"text_delta","text":"Hello "}}"#,
        "\n\n"
    )));
    assert!(!text.contains("message_stop"));
    // A planned drop is not a client abandoning the stream.
    assert_eq!(mock.aborted_streams(), 0);

    mock.push_fault(API_KEY, Fault::DropMidStream { after_events: 0 });
    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert!(reply.body_error);
    assert!(reply.body.len() < reply.header("content-length").parse().expect("length"));
}

/// Sends a Messages request with the test key and returns the response, its body unread.
async fn open_message(mock: &MockUpstream, body: String) -> http::Response<hyper::body::Incoming> {
    let url = format!("{}/v1/messages", mock.url());
    let headers = [
        ("x-api-key", API_KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    ccflare_testkit::open(request(Method::POST, &url, &headers, body)).await
}

#[tokio::test]
async fn stall_sends_the_first_events_then_nothing_and_keeps_the_connection_open() {
    let mock = MockUpstream::start().await.expect("start");
    mock.push_fault(API_KEY, Fault::Stall { after_events: 3 });
    let response = open_message(&mock, message_body(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut incoming = response.into_body();
    let mut text = String::new();
    while text.matches("\n\n").count() < 3 {
        let frame = tokio::time::timeout(GUARD, incoming.frame())
            .await
            .expect("the first events arrive")
            .expect("the body is not over")
            .expect("the body has not failed");
        text.push_str(std::str::from_utf8(frame.data_ref().expect("data")).expect("utf-8"));
    }
    let names: Vec<String> = parse_events(&text)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        ["message_start", "content_block_start", "ping"],
        "exactly the first three events"
    );
    // Still open: leaving it is a client abandoning an unfinished stream.
    assert_eq!(mock.aborted_streams(), 0);
    drop(incoming);
    tokio::time::timeout(GUARD, mock.wait_aborted_streams(1))
        .await
        .expect("the stalled stream was still open");

    // A JSON answer: the headers with the whole length, then not one byte of the body.
    mock.push_fault(API_KEY, Fault::Stall { after_events: 3 });
    let response = open_message(&mock, message_body(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let length: usize = response.headers()["content-length"]
        .to_str()
        .expect("text")
        .parse()
        .expect("a number");
    assert!(length > 0);
    let mut incoming = response.into_body();
    mock.shutdown();
    let mut received = 0;
    let ending = loop {
        match tokio::time::timeout(GUARD, incoming.frame())
            .await
            .expect("the shutdown closes the connection")
        {
            Some(Ok(frame)) => received += frame.data_ref().map_or(0, Bytes::len),
            other => break other,
        }
    };
    assert_eq!(received, 0, "no byte of the body");
    assert!(
        matches!(ending, Some(Err(_))),
        "the body never ended cleanly"
    );
}

#[tokio::test]
async fn client_abandoning_a_stream_is_counted() {
    let mock = MockUpstream::start().await.expect("start");
    let body = message_body(true);
    let headers = raw_headers(&[
        ("content-type", "application/json"),
        ("x-mock-stream-bytes", "10000000"),
        ("x-mock-chunk-delay-ms", "5"),
    ]);
    let mut stream = raw::post(mock.addr(), "/v1/messages", &headers, &body).await;
    let mut first = [0u8; 64];
    let read = stream.read(&mut first).await.expect("read");
    assert!(first[..read].starts_with(b"HTTP/1.1 200"));
    drop(stream);
    tokio::time::timeout(GUARD, mock.wait_aborted_streams(1))
        .await
        .expect("abort noticed");
    assert_eq!(mock.aborted_streams(), 1);
}

#[tokio::test]
async fn a_client_leaving_before_the_headers_is_counted() {
    let mock = MockUpstream::start().await.expect("start");
    mock.push_fault(API_KEY, Fault::Delay { millis: 60_000 });
    let body = message_body(true);
    let stream = raw::post(mock.addr(), "/v1/messages", &raw_headers(&[]), &body).await;
    tokio::time::timeout(GUARD, mock.wait_requests(1))
        .await
        .expect("request recorded");
    assert_eq!(mock.abandoned_requests(), 0);
    drop(stream);
    tokio::time::timeout(GUARD, mock.wait_abandoned_requests(1))
        .await
        .expect("the close is noticed while the answer is held back");
    assert_eq!(mock.aborted_streams(), 0, "no stream was started");
    // An answered request is not abandoned.
    let reply = post_message(&mock, &[], &message_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mock.abandoned_requests(), 1);
}

#[tokio::test]
async fn hang_never_answers_until_shutdown() {
    let mock = MockUpstream::start().await.expect("start");
    mock.push_fault(API_KEY, Fault::Hang);
    let body = message_body(false);
    let mut stream = raw::post(mock.addr(), "/v1/messages", &raw_headers(&[]), &body).await;
    tokio::time::timeout(GUARD, mock.wait_requests(1))
        .await
        .expect("request recorded");
    mock.shutdown();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut received))
        .await
        .expect("closed");
    assert!(received.is_empty(), "no response bytes before the close");
}

#[tokio::test]
async fn authentication_rules() {
    let mock = MockUpstream::start().await.expect("start");
    let body = message_body(false);

    mock.revoke(API_KEY);
    let reply = post_message(&mock, &[], &body).await;
    assert_error(&reply, 401, "authentication_error", "invalid x-api-key");

    let headers = [("anthropic-version", "2023-06-01")];
    let reply = post(&mock, &headers, &body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let headers = [
        ("x-api-key", "not-a-key"),
        ("anthropic-version", "2023-06-01"),
    ];
    let reply = post(&mock, &headers, &body).await;
    assert_error(&reply, 401, "authentication_error", "invalid x-api-key");

    let bearer = format!("Bearer {OAUTH_TOKEN}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    let reply = post(&mock, &headers, &body).await;
    let message = "OAuth authentication is currently not supported.";
    assert_error(&reply, 401, "authentication_error", message);

    let headers = [
        ("authorization", bearer.as_str()),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "fine-grained-tool-streaming-2025-05-14, oauth-2025-04-20",
        ),
    ];
    let reply = post(&mock, &headers, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("anthropic-ratelimit-unified-status"),
        "allowed"
    );
    assert!(
        reply
            .headers
            .get("anthropic-ratelimit-requests-limit")
            .is_none()
    );

    // An API key sent as a bearer token is accepted (newer SDKs do this).
    let bearer_key = "Bearer sk-ant-api03-other";
    let headers = [
        ("authorization", bearer_key),
        ("anthropic-version", "2023-06-01"),
    ];
    let reply = post(&mock, &headers, &body).await;
    assert_eq!(reply.status, StatusCode::OK);

    assert_eq!(mock.requests().len(), 6);
}

#[tokio::test]
async fn validation_errors() {
    let mock = MockUpstream::start().await.expect("start");
    let headers = [("x-api-key", API_KEY)];
    let reply = post(&mock, &headers, &message_body(false)).await;
    assert_error(
        &reply,
        400,
        "invalid_request_error",
        "anthropic-version: header is required",
    );

    let reply = post_message(&mock, &[], r#"{"model":"m","messages":[]}"#).await;
    assert_error(
        &reply,
        400,
        "invalid_request_error",
        "max_tokens: Field required",
    );

    let reply = post_message(&mock, &[], "{not json").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = post_message(
        &mock,
        &[("x-mock-stream-bytes", "lots")],
        &message_body(true),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = send(&mock, Method::GET, "/v1/nothing", &[], "").await;
    let message = "The requested resource could not be found.";
    assert_error(&reply, 404, "not_found_error", message);
}

#[tokio::test]
async fn count_tokens_and_models() {
    let mock = MockUpstream::start().await.expect("start");
    let headers = [("x-api-key", API_KEY), ("anthropic-version", "2023-06-01")];
    let body =
        r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hello there"}]}"#;
    let path = "/v1/messages/count_tokens?beta=true";
    let reply = send(&mock, Method::POST, path, &headers, body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.text(),
        format!("{{\"input_tokens\":{}}}", body.len() / 4)
    );

    let reply = send(&mock, Method::GET, "/v1/models", &headers, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let list = reply.json();
    assert_eq!(list["data"].as_array().expect("data").len(), 3);
    assert_eq!(list["has_more"], false);

    let reply = send(
        &mock,
        Method::GET,
        "/v1/models/claude-haiku-4-5",
        &headers,
        "",
    )
    .await;
    assert_eq!(reply.json()["id"], "claude-haiku-4-5-20251001");
    let reply = send(&mock, Method::GET, "/v1/models/claude-9", &headers, "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// A batch belongs to the credential (organisation) that made it: found with that key, 404
/// with another; once ended it names its results by an absolute URL on the mock's origin.
#[tokio::test]
async fn batches_belong_to_their_key_and_name_results_on_the_mock_origin() {
    let mock = MockUpstream::start().await.unwrap();
    let other = "sk-ant-api03-other-organisation";
    let headers = |key| {
        vec![
            ("x-api-key", key),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ]
    };
    let body = r#"{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}},{"custom_id":"b","params":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}}]}"#;
    let created = send(
        &mock,
        Method::POST,
        "/v1/messages/batches",
        &headers(API_KEY),
        body,
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let created = created.json();
    assert_eq!(created["processing_status"], "in_progress");
    assert!(created["results_url"].is_null());
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msgbatch_"), "{id}");

    let path = format!("/v1/messages/batches/{id}");
    let theirs = send(&mock, Method::GET, &path, &headers(other), "").await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let ended = send(&mock, Method::GET, &path, &headers(API_KEY), "")
        .await
        .json();
    assert_eq!(ended["processing_status"], "ended");
    let url = format!("{}/v1/messages/batches/{id}/results", mock.url());
    assert_eq!(ended["results_url"], url.as_str());

    let results_path = format!("{path}/results");
    let results = send(&mock, Method::GET, &results_path, &headers(API_KEY), "").await;
    let lines: Vec<Value> = results
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["custom_id"], "a");
    assert_eq!(lines[1]["result"]["type"], "succeeded");
    let theirs = send(&mock, Method::GET, &results_path, &headers(other), "").await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    let listed = send(
        &mock,
        Method::GET,
        "/v1/messages/batches",
        &headers(other),
        "",
    )
    .await;
    assert_eq!(listed.json()["data"].as_array().unwrap().len(), 0);
    let deleted = send(&mock, Method::DELETE, &path, &headers(API_KEY), "").await;
    assert_eq!(deleted.json()["type"], "message_batch_deleted");
}
