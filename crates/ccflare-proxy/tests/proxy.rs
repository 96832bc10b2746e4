//! The proxy contract (SPEC §4) end to end: real sockets, the mock upstream, a real SQLite file.
//! Each test asserts what a user would check: the bytes and status the client got, the account
//! that served (`x-ccflare-account`), what reached the upstream, and the rows recorded.

mod common;

use bytes::Bytes;
use ccflare_core::config::Strategy;
use ccflare_mock::Fault;
use ccflare_testkit::http::read_to_end;
use ccflare_testkit::raw;
use ccflare_testkit::{GUARD, key};
use common::{Options, message_body, spawn_app};
use http::StatusCode;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Two API-key accounts: `alpha`, tried first, and `beta`.
fn alpha_then_beta() -> Options {
    Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        ..Default::default()
    }
}

/// A 429 that says to retry after `seconds`.
fn rate_limited(seconds: u64) -> Fault {
    Fault::RateLimited {
        retry_after: Some(seconds),
        reset: None,
    }
}

#[tokio::test]
async fn json_request_is_forwarded_and_recorded_with_usage_and_cost() {
    let app = spawn_app(Options::default()).await;
    let body = message_body(false);
    let reply = app
        .send(app.request("/v1/messages?beta=true", &[], body.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["content"][0]["text"],
        "Hello from the mock upstream."
    );
    assert_eq!(reply.header("x-ccflare-account"), "alpha");
    let request_id = reply.header("x-ccflare-request-id").to_owned();
    assert!(!request_id.is_empty());
    assert!(
        !reply
            .header("anthropic-ratelimit-requests-remaining")
            .is_empty(),
        "rate-limit headers pass through"
    );

    let seen = &app.mock.requests()[0];
    assert_eq!(seen.query.as_deref(), Some("beta=true"));
    assert_eq!(
        seen.body,
        Bytes::from(body.clone()),
        "body forwarded byte for byte"
    );

    let records = app.records().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.id, request_id);
    assert_eq!(
        (r.status, r.success, r.attempts, r.streamed),
        (200, true, 1, false)
    );
    assert_eq!(r.account_name.as_deref(), Some("alpha"));
    assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
    let input = (body.len() / 4) as u64;
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (input, 5));
    // Sonnet 4.5: $3 per million input tokens, $15 per million output tokens.
    let expected = (input as f64 * 3.0 + 5.0 * 15.0) / 1e6;
    assert!(
        (r.cost_usd - expected).abs() < 1e-12,
        "{} vs {expected}",
        r.cost_usd
    );
    assert!(!r.cost_estimated);
    assert_eq!(
        app.state.writer.queue_depth(),
        0,
        "everything queued was written"
    );
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_never_reach_the_upstream() {
    let app = spawn_app(Options::default()).await;
    let headers = [
        ("authorization", "Bearer sk-ant-api03-client-bearer-secret"),
        ("anthropic-beta", "tools-2024,other"),
    ];
    let reply = app.post(&headers, false).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &app.mock.requests()[0];
    assert_eq!(seen.header("x-api-key"), Some(key("alpha").as_str()));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("anthropic-beta"), Some("tools-2024,other"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    for (name, value) in &seen.headers {
        assert!(
            !value.contains("client-bearer-secret")
                && !value.contains("client-key-that-must-not-leak"),
            "{name}: {value}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_without_anthropic_version_gets_the_default_and_a_clients_own_passes() {
    let app = spawn_app(Options::default()).await;
    let request = |version: Option<&str>| {
        let mut builder = http::Request::post(format!("{}/v1/messages", app.url))
            .header("content-type", "application/json")
            .header("x-api-key", "anything");
        if let Some(version) = version {
            builder = builder.header("anthropic-version", version);
        }
        builder
            .body(http_body_util::Full::new(Bytes::from(message_body(false))))
            .expect("request")
    };
    // As the tutorial's curl examples send it: no version at all.
    let reply = app.send(request(None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = app.send(request(Some("2099-01-01"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let versions: Vec<Vec<String>> = app
        .mock
        .requests()
        .iter()
        .map(|seen| {
            seen.headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("anthropic-version"))
                .map(|(_, value)| value.clone())
                .collect()
        })
        .collect();
    assert_eq!(versions, [["2023-06-01"], ["2099-01-01"]]);
    app.stop().await;
}

#[tokio::test]
async fn several_anthropic_beta_lines_reach_an_oauth_account_as_one() {
    let app = spawn_app(Options {
        accounts: vec![],
        oauth_accounts: vec![("max", 0, 8 * 3_600_000)],
        ..Default::default()
    })
    .await;
    let betas = |seen: &ccflare_mock::ReceivedRequest| -> Vec<String> {
        seen.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("anthropic-beta"))
            .map(|(_, value)| value.clone())
            .collect()
    };
    let two_lines = [
        ("anthropic-beta", "claude-code-20250219"),
        (
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,context-1m",
        ),
    ];
    let reply = app.post(&two_lines, false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        betas(&app.mock.requests()[0]),
        ["claude-code-20250219,interleaved-thinking-2025-05-14,context-1m,oauth-2025-04-20"]
    );
    // The OAuth beta on a later line is kept once, where the client put it.
    let with_oauth = [
        ("anthropic-beta", "claude-code-20250219"),
        ("anthropic-beta", "oauth-2025-04-20"),
    ];
    let reply = app.post(&with_oauth, false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        betas(&app.mock.requests()[1]),
        ["claude-code-20250219,oauth-2025-04-20"]
    );
    app.stop().await;
}

#[tokio::test]
async fn stream_is_relayed_and_usage_comes_from_the_final_message_delta() {
    let app = spawn_app(Options::default()).await;
    let reply = app
        .post(
            &[
                ("x-mock-split", "1"),
                ("x-mock-text", "ciao luna café au lait"),
            ],
            true,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8(reply.body.to_vec()).expect("utf-8");
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    let r = &app.records().await[0];
    assert!(r.streamed && r.success && !r.usage_incomplete);
    assert_eq!(
        r.usage.output_tokens, 5,
        "from the final message_delta, not the placeholder"
    );
    assert!(r.ttfb_ms.is_some());
    app.stop().await;
}

#[tokio::test]
async fn usage_of_a_large_stream_is_read_at_its_end() {
    let app = spawn_app(Options::default()).await;
    let reply = app.post(&[("x-mock-stream-bytes", "2500000")], true).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.len() > 2_500_000);
    let chunks = 2_500_000_u64.div_ceil(1024);
    // Whole and in order, however the relay joined the upstream's chunks: every event
    // complete, one delta per upstream chunk, and the stop last.
    let text = std::str::from_utf8(&reply.body).expect("UTF-8");
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert!(events.iter().all(|e| e.starts_with("event: ")));
    let deltas = events
        .iter()
        .filter(|e| e.starts_with("event: content_block_delta\n"))
        .count();
    assert_eq!(deltas as u64, chunks);
    assert_eq!(
        events.last().copied(),
        Some("event: message_stop\ndata: {\"type\":\"message_stop\"}")
    );
    let r = &app.records().await[0];
    assert_eq!(r.usage.output_tokens, 128 * chunks);
    assert!(r.success && !r.usage_incomplete);
    app.stop().await;
}

#[tokio::test]
async fn cache_tokens_are_recorded_split_by_ttl() {
    let app = spawn_app(Options::default()).await;
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":8,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}"#;
    let reply = app.send(app.request("/v1/messages", &[], body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let r = &app.records().await[0];
    assert_eq!(
        (
            r.usage.cache_read_input_tokens,
            r.usage.cache_creation_input_tokens
        ),
        (100, 50)
    );
    assert_eq!((r.usage.cache_write_5m, r.usage.cache_write_1h), (50, 0));
    app.stop().await;
}

/// A scripted upstream that answers every request with exactly these bytes, written in small
/// pieces, so the proxy's output can be compared byte for byte.
async fn raw_upstream(body: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if raw::read_request(&mut socket).await.is_none() {
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                for piece in body.chunks(7) {
                    let chunk = format!("{:x}\r\n", piece.len());
                    let _ = socket.write_all(chunk.as_bytes()).await;
                    let _ = socket.write_all(piece).await;
                    let _ = socket.write_all(b"\r\n").await;
                    let _ = socket.flush().await;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    url
}

#[tokio::test]
async fn streamed_bytes_are_identical_to_the_upstreams() {
    const SSE: &[u8] = b"event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n: keep-alive comment\r\n\r\nevent: ping\ndata: {\"type\": \"ping\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"caf\xc3\xa9 \xe2\x9c\x93\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let upstream = raw_upstream(SSE).await;
    let app = spawn_app(Options {
        upstream_override: Some(upstream),
        ..Default::default()
    })
    .await;
    let reply = app.post(&[], true).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, Bytes::from_static(SSE));
    let r = &app.records().await[0];
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (3, 7));
    app.stop().await;
}

#[tokio::test]
async fn failover_from_a_429_and_a_529_account_gives_one_clean_200() {
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1), ("gamma", 2)],
        ..Default::default()
    })
    .await;
    app.mock.push_fault(&key("alpha"), rate_limited(30));
    app.mock.push_fault(&key("beta"), Fault::Overloaded);
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-ccflare-account"), "gamma");
    assert_eq!(
        reply.header("retry-after"),
        "",
        "headers of failed attempts are not relayed"
    );
    assert_eq!(app.mock.requests().len(), 3);
    let r = &app.records().await[0];
    assert_eq!((r.status, r.attempts, r.success), (200, 3, true));
    let reasons: Vec<_> = r
        .attempt_failures
        .iter()
        .map(|f| (f.account.as_str(), f.status, f.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("alpha", Some(429), "rate_limited"),
            ("beta", Some(529), "overloaded")
        ]
    );
    // Both benched accounts are skipped by the next request without being asked.
    let reply = app.post(&[], false).await;
    assert_eq!(reply.header("x-ccflare-account"), "gamma");
    assert_eq!(app.mock.requests().len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn server_errors_and_auth_failures_fail_over_but_other_4xx_pass_through() {
    let app = spawn_app(alpha_then_beta()).await;
    app.mock.push_fault(&key("alpha"), Fault::Status(500));
    assert_eq!(app.served_by().await, "beta");
    app.mock.revoke(&key("alpha"));
    assert_eq!(app.served_by().await, "beta");
    // The revoked key is now invalid: never asked again.
    let before = app.mock.requests().len();
    app.post(&[], false).await;
    assert_eq!(app.mock.requests().len(), before + 1);
    let health = app.get("/health").await;
    assert_eq!(health.json()["accounts"]["invalid"], 1);

    app.mock.push_fault(&key("beta"), Fault::Status(400));
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    let records = app.records().await;
    let last = records.last().unwrap();
    assert_eq!(
        (last.status, last.attempts, last.error_type.as_deref()),
        (400, 1, Some("invalid_request_error"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limited_account_is_skipped_until_its_reset_then_used_again() {
    let app = spawn_app(alpha_then_beta()).await;
    app.mock.push_fault(&key("alpha"), rate_limited(60));
    assert_eq!(app.served_by().await, "beta");
    app.clock.advance(59_000);
    assert_eq!(app.served_by().await, "beta");
    app.clock.advance(1_001);
    assert_eq!(app.served_by().await, "alpha");
    app.stop().await;
}

#[tokio::test]
async fn session_affinity_holds_and_expires() {
    let app = spawn_app(Options {
        strategy: Strategy::RoundRobin,
        session_timeout_ms: 10_000,
        accounts: vec![("alpha", 0), ("beta", 0)],
        ..Default::default()
    })
    .await;
    let first = app
        .post(&[("x-session-id", "s1")], false)
        .await
        .header("x-ccflare-account")
        .to_owned();
    for _ in 0..3 {
        app.clock.advance(9_000);
        assert_eq!(
            app.post(&[("x-session-id", "s1")], false)
                .await
                .header("x-ccflare-account"),
            first
        );
    }
    // Claude Code's header and the body's metadata session work the same way.
    let cc = app
        .post(&[("x-claude-code-session-id", "cc-1")], false)
        .await
        .header("x-ccflare-account")
        .to_owned();
    assert_eq!(
        app.post(&[("x-claude-code-session-id", "cc-1")], false)
            .await
            .header("x-ccflare-account"),
        cc
    );
    // After the timeout without use the pin is gone: round-robin moves on.
    app.clock.advance(10_001);
    let other = if first == "alpha" { "beta" } else { "alpha" };
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            app.post(&[("x-session-id", "s1")], false)
                .await
                .header("x-ccflare-account")
                .to_owned(),
        );
        app.clock.advance(10_001);
    }
    assert!(
        seen.contains(&other.to_owned()),
        "affinity expired: {seen:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn body_metadata_session_keeps_affinity() {
    let app = spawn_app(Options {
        strategy: Strategy::RoundRobin,
        accounts: vec![("alpha", 0), ("beta", 0)],
        ..Default::default()
    })
    .await;
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"{\"device_id\":\"d\",\"account_uuid\":\"a\",\"session_id\":\"conv-9\"}"}}"#;
    let first = app
        .send(app.request("/v1/messages", &[], body))
        .await
        .header("x-ccflare-account")
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            app.send(app.request("/v1/messages", &[], body))
                .await
                .header("x-ccflare-account"),
            first
        );
    }
    assert_eq!(
        app.records().await[0].session_key.as_deref(),
        Some("conv-9")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_mid_stream_upstream_reset_reaches_the_client_as_an_error() {
    let app = spawn_app(Options::default()).await;
    app.mock
        .push_fault(&key("alpha"), Fault::DropMidStream { after_events: 3 });
    let response = app.open_post(&[], true).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (received, error) = read_to_end(response.into_body()).await;
    assert!(
        error.is_some(),
        "the stream must not end cleanly; got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(String::from_utf8_lossy(&received).starts_with("event: message_start"));
    let r = &app.records().await[0];
    assert!(!r.success && r.usage_incomplete);
    assert_eq!(r.error_type.as_deref(), Some("upstream_stream_error"));
    app.stop().await;
}

/// An app with a four-second idle timeout whose account goes silent after `after_events`
/// events. The healthy part (connecting, the headers, the first events) must beat the idle
/// timeout on a loaded machine; the stall then takes about this long to be noticed.
async fn stalling_after(after_events: usize) -> common::App {
    let app = spawn_app(Options {
        idle_timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .await;
    app.mock
        .push_fault(&key("alpha"), Fault::Stall { after_events });
    app
}

#[tokio::test]
async fn an_upstream_that_goes_silent_mid_stream_ends_the_response_with_an_error() {
    let app = stalling_after(3).await;
    let response = app.open_post(&[], true).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (received, error) = read_to_end(response.into_body()).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        error.is_some(),
        "the stream must not end cleanly; got {text:?}"
    );
    assert!(text.starts_with("event: message_start"), "{text:?}");
    assert!(
        text.contains("event: ping"),
        "the first events arrived: {text:?}"
    );
    assert!(!text.contains("message_stop"));
    tokio::time::timeout(GUARD, app.mock.wait_aborted_streams(1))
        .await
        .expect("the silent upstream request is dropped");
    let r = &app.records().await[0];
    assert_eq!(
        (r.status, r.success, r.usage_incomplete),
        (200, false, true)
    );
    assert_eq!(r.error_type.as_deref(), Some("upstream_idle_timeout"));
    assert!(r.ttfb_ms.is_some());
    assert_eq!(
        r.usage.input_tokens,
        (message_body(true).len() / 4) as u64,
        "input usage from message_start is kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_json_body_that_never_comes_ends_the_response_with_an_error() {
    let app = stalling_after(0).await;
    let response = app.open_post(&[], false).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-ccflare-account"], "alpha");
    let (received, error) = read_to_end(response.into_body()).await;
    assert!(error.is_some(), "the body must not end cleanly");
    assert!(received.is_empty());
    let r = &app.records().await[0];
    assert_eq!(
        (r.status, r.success, r.usage_incomplete),
        (200, false, true)
    );
    assert_eq!(r.error_type.as_deref(), Some("upstream_idle_timeout"));
    app.stop().await;
}

#[tokio::test]
async fn an_error_event_after_the_200_is_relayed_and_recorded() {
    let app = spawn_app(Options::default()).await;
    app.mock
        .push_fault(&key("alpha"), Fault::ErrorEvent { after_events: 2 });
    let reply = app.post(&[], true).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&reply.body).contains("event: error"));
    let r = &app.records().await[0];
    assert!(!r.success && r.usage_incomplete);
    assert_eq!(r.error_type.as_deref(), Some("overloaded_error"));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_the_upstream_and_is_recorded_as_499() {
    let app = spawn_app(Options::default()).await;
    let headers = [
        ("x-mock-chunk-delay-ms", "100"),
        ("x-mock-stream-bytes", "200000"),
    ];
    let response = app.open_post(&headers, true).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("in time");
    assert!(first.is_some());
    drop(body);
    tokio::time::timeout(GUARD, app.mock.wait_aborted_streams(1))
        .await
        .expect("upstream request dropped");
    let r = &app.records().await[0];
    assert_eq!(r.status, 499);
    assert!(!r.success && r.usage_incomplete);
    assert_eq!(
        r.usage.input_tokens,
        (message_body(true).len() / 4) as u64,
        "input usage from message_start is kept"
    );
    // The account is not penalised.
    assert_eq!(app.post(&[], false).await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_headers_cancels_the_upstream_and_is_recorded_as_499() {
    let app = spawn_app(Options::default()).await;
    app.mock.push_fault(&key("alpha"), Fault::Hang);
    // A non-streaming request: ccflare waits at least ten minutes for its headers, so only the
    // client's hang-up can end the upstream request within the test's guard.
    let body = message_body(false);
    let address = app.url.trim_start_matches("http://");
    let headers = [
        ("host", address),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", "client-key"),
    ];
    let client = raw::post(address, "/v1/messages", &headers, &body).await;
    tokio::time::timeout(GUARD, app.mock.wait_requests(1))
        .await
        .expect("the request reached the upstream");
    drop(client);
    tokio::time::timeout(GUARD, app.mock.wait_abandoned_requests(1))
        .await
        .expect("upstream request dropped");
    assert_eq!(app.mock.requests().len(), 1, "no other account was tried");
    let r = &app.records().await[0];
    assert_eq!((r.status, r.success, r.attempts), (499, false, 1));
    assert_eq!(r.error_type.as_deref(), Some("client_closed"));
    assert!(r.ttfb_ms.is_none(), "nothing reached the client");
    // The account is not penalised.
    assert_eq!(app.post(&[], false).await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_cut_at_the_shutdown_deadline_is_the_servers_cut_and_a_hang_up_before_it_the_clients()
 {
    let app = spawn_app(Options {
        shutdown_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    // The first stream's upstream goes silent: only the deadline ends it. The second is long
    // and healthy; its client hangs up while the proxy drains.
    app.mock
        .push_fault(&key("alpha"), Fault::Stall { after_events: 2 });
    let headers = [
        ("x-mock-chunk-delay-ms", "100"),
        ("x-mock-stream-bytes", "200000"),
    ];
    let mut bodies = Vec::new();
    for headers in [&[][..], &headers[..]] {
        let response = app.open_post(headers, true).await;
        assert_eq!(response.status(), StatusCode::OK);
        let id = response.headers()["x-ccflare-request-id"].clone();
        let mut body = response.into_body();
        let first = tokio::time::timeout(GUARD, body.frame()).await;
        assert!(first.expect("a first frame in time").is_some());
        bodies.push((id, body));
    }
    let (cut, left) = (bodies.remove(0), bodies.remove(0));
    let (db, mock) = (app.db.clone(), app.mock.clone());
    let ((), (received, error)) = tokio::join!(app.stop(), async {
        drop(left.1);
        tokio::time::timeout(GUARD, mock.wait_aborted_streams(1))
            .await
            .expect("the left stream's upstream request is dropped");
        read_to_end(cut.1).await
    });
    assert!(
        error.is_some(),
        "a cut stream must not end cleanly: {:?}",
        String::from_utf8_lossy(&received)
    );
    tokio::time::timeout(GUARD, mock.wait_aborted_streams(2))
        .await
        .expect("the cut stream's upstream request is dropped too");
    let rows = ccflare_storage::requests::recent(&db, 10).await.unwrap();
    let row = |id: &http::HeaderValue| {
        rows.iter()
            .find(|r| r.id == id.to_str().unwrap())
            .expect("a row for every response")
    };
    assert_eq!(rows.len(), 2);
    let server_cut = row(&cut.0);
    assert_eq!(
        (
            server_cut.status,
            server_cut.success,
            server_cut.usage_incomplete,
            server_cut.error_type.as_deref()
        ),
        (200, false, true, Some("shutdown_cut"))
    );
    assert_eq!(
        server_cut.usage.input_tokens,
        (message_body(true).len() / 4) as u64
    );
    let client_left = row(&left.0);
    assert_eq!(
        (client_left.status, client_left.error_type.as_deref()),
        (499, Some("client_closed"))
    );
}

#[tokio::test]
async fn empty_pool_answers_an_anthropic_error_with_retry_after() {
    let app = spawn_app(Options {
        accounts: vec![],
        ..Default::default()
    })
    .await;
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!reply.header("retry-after").is_empty());
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ccflare-cli accounts add"),
        "{body}"
    );
    assert!(
        app.mock.requests().is_empty(),
        "nothing is forwarded unauthenticated"
    );
    let r = &app.records().await[0];
    assert_eq!((r.status, r.attempts), (503, 0));
    app.stop().await;
}

#[tokio::test]
async fn all_accounts_rate_limited_answers_429_with_the_earliest_reset() {
    let app = spawn_app(alpha_then_beta()).await;
    app.mock.push_fault(&key("alpha"), rate_limited(120));
    app.mock.push_fault(&key("beta"), rate_limited(40));
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), "40");
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
    // While benched, nothing is sent upstream.
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.mock.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_in_the_anthropic_shape() {
    let app = spawn_app(Options {
        max_body_bytes: 1000,
        ..Default::default()
    })
    .await;
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let reply = app.send(app.request("/v1/messages", &[], big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["error"]["type"], "request_too_large");
    assert!(app.mock.requests().is_empty());
    app.stop().await;
}

/// A request body the test sends piece by piece, as a slow upload does (chunked encoding).
struct Trickle(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// Starts a non-streaming Messages request whose body the test sends through the returned
/// sender; the task resolves to the status and the body of the answer.
fn trickled_request(
    app: &common::App,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<(StatusCode, Bytes)>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let request = http::Request::post(format!("{}/v1/messages", app.url))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "client-key")
        .body(Trickle(receiver))
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Trickle>();
    let answer = tokio::spawn(async move {
        let response = client.request(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        (status, body.to_bytes())
    });
    (sender, answer)
}

#[tokio::test]
async fn a_slow_upload_that_keeps_coming_is_accepted() {
    let idle = Duration::from_secs(4);
    let app = spawn_app(Options {
        idle_timeout: idle,
        ..Default::default()
    })
    .await;
    let (sender, answer) = trickled_request(&app);
    let body = message_body(false);
    let pieces: Vec<Bytes> = body
        .as_bytes()
        .chunks(body.len().div_ceil(8))
        .map(Bytes::copy_from_slice)
        .collect();
    assert_eq!(pieces.len(), 8);
    // Each gap is well under the idle timeout (a loaded machine may stretch one by a second
    // and still pass); all of them together are well over it.
    let gap = Duration::from_millis(700);
    assert!(gap * 7 > idle + Duration::from_millis(500));
    for (index, piece) in pieces.into_iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(gap).await;
        }
        tokio::time::timeout(GUARD, sender.send(piece))
            .await
            .expect("the client takes the piece in time")
            .expect("the proxy is still reading");
    }
    drop(sender);
    let (status, reply) = tokio::time::timeout(GUARD, answer)
        .await
        .expect("in time")
        .expect("client task");
    assert_eq!(status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        app.mock.requests()[0].body,
        Bytes::from(body),
        "byte for byte"
    );
    assert_eq!(app.records().await[0].status, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_upload_that_stalls_for_the_idle_timeout_gets_408() {
    let app = spawn_app(Options {
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let (sender, answer) = trickled_request(&app);
    let body = message_body(false);
    sender
        .send(Bytes::copy_from_slice(&body.as_bytes()[..10]))
        .await
        .expect("sent");
    // The sender stays alive: the upload is not over, it has stopped.
    let (status, reply) = tokio::time::timeout(GUARD, answer)
        .await
        .expect("in time")
        .expect("client task");
    drop(sender);
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["error"]["type"], "invalid_request_error");
    assert!(reply["error"]["message"].is_string());
    assert!(app.mock.requests().is_empty(), "nothing was forwarded");
    let r = &app.records().await[0];
    assert_eq!((r.status, r.attempts), (408, 0));
    app.stop().await;
}

#[tokio::test]
async fn a_chunked_upload_over_the_cap_gets_413() {
    let app = spawn_app(Options {
        max_body_bytes: 1000,
        ..Default::default()
    })
    .await;
    let (sender, answer) = trickled_request(&app);
    // No content-length: the cap is found while reading the second piece. Nothing follows it
    // (the body's end comes only when the sender is dropped), so the proxy leaves no unread
    // bytes behind that could turn its close into a reset before the client reads the 413.
    for _ in 0..2 {
        let _ = tokio::time::timeout(GUARD, sender.send(Bytes::from(vec![b'x'; 600]))).await;
    }
    let (status, reply) = tokio::time::timeout(GUARD, answer)
        .await
        .expect("in time")
        .expect("client task");
    drop(sender);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
    assert_eq!(reply["error"]["type"], "request_too_large");
    assert!(app.mock.requests().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_and_fails_over() {
    // The idle timeout also bounds the healthy account's answer (a new connection, the
    // headers, the gaps between events), so it is long enough that a loaded machine does not
    // trip it there; alpha's hang is what makes it run out.
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        idle_timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .await;
    app.mock.push_fault(&key("alpha"), Fault::Hang);
    // A streaming request: its headers are due within the idle timeout. (A non-streaming
    // one gets at least ten minutes, since nothing is sent until its answer is complete.)
    let reply = app.post(&[], true).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-ccflare-account"), "beta");
    let r = &app.records().await[0];
    assert_eq!(r.attempt_failures.len(), 1);
    assert_eq!(r.attempt_failures[0].account, "alpha");
    assert_eq!(r.attempt_failures[0].reason, "timeout");
    app.stop().await;
}

/// How one way of failing ends with three accounts that all fail it and `max_attempts` 2.
struct Exhausted {
    status: StatusCode,
    /// `/v1/messages` requests the upstream received.
    upstream_calls: usize,
    /// Refresh-token grants the token endpoint received.
    refresh_grants: u64,
    attempts: u32,
    /// The recorded reason of each failed attempt.
    reasons: Vec<String>,
}

const THREE: [&str; 3] = ["alpha", "beta", "gamma"];

async fn exhaust(options: Options, fault: Option<Fault>, token_faults: usize) -> Exhausted {
    let app = spawn_app(Options {
        max_attempts: 2,
        ..options
    })
    .await;
    if let Some(fault) = fault {
        for name in THREE {
            app.mock.set_sticky_fault(&key(name), Some(fault.clone()));
        }
    }
    for _ in 0..token_faults {
        app.mock.push_oauth_fault(Fault::Status(500));
    }
    // Streaming, so that a request whose headers never come times out after the idle timeout.
    let reply = app.post(&[], true).await;
    let upstream_calls = app
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .count();
    let records = app.records().await;
    assert_eq!(records.len(), 1, "one request, one record");
    let record = &records[0];
    let exhausted = Exhausted {
        status: reply.status,
        upstream_calls,
        refresh_grants: app.mock.refresh_grants(),
        attempts: record.attempts,
        reasons: record
            .attempt_failures
            .iter()
            .map(|f| f.reason.clone())
            .collect(),
    };
    app.stop().await;
    exhausted
}

#[tokio::test]
async fn no_way_of_failing_tries_more_accounts_than_max_attempts_allows() {
    let api_keys = || Options {
        accounts: THREE.iter().zip(0..).map(|(&name, p)| (name, p)).collect(),
        ..Default::default()
    };
    let answered = [
        (
            "windowless 429",
            Fault::RateLimited {
                retry_after: None,
                reset: None,
            },
            429,
            "request_rate_limited",
        ),
        ("429", rate_limited(30), 429, "rate_limited"),
        ("529", Fault::Overloaded, 529, "overloaded"),
        ("500", Fault::Status(500), 500, "upstream_error"),
        ("502", Fault::Status(502), 502, "upstream_error"),
        ("503", Fault::Status(503), 503, "upstream_error"),
        ("504", Fault::Status(504), 504, "upstream_error"),
        ("401", Fault::Status(401), 401, "auth_failed"),
        ("403", Fault::Status(403), 403, "forbidden"),
    ];
    for (kind, fault, status, reason) in answered {
        let run = exhaust(api_keys(), Some(fault), 0).await;
        assert_eq!(run.upstream_calls, 2, "{kind}: upstream calls");
        assert_eq!(run.attempts, 2, "{kind}: recorded attempts");
        assert_eq!(run.reasons, [reason; 2], "{kind}: recorded reasons");
        assert_eq!(
            run.status.as_u16(),
            status,
            "{kind}: the last answer is relayed"
        );
    }

    let run = exhaust(
        Options {
            idle_timeout: Duration::from_secs(1),
            ..api_keys()
        },
        Some(Fault::Hang),
        0,
    )
    .await;
    assert_eq!(run.upstream_calls, 2, "no headers in time: upstream calls");
    assert_eq!(
        (run.attempts, run.reasons),
        (2, vec!["timeout".to_owned(); 2])
    );
    assert_eq!(run.status, StatusCode::BAD_GATEWAY);

    let run = exhaust(
        Options {
            upstream_override: Some("http://127.0.0.1:1".into()),
            ..api_keys()
        },
        None,
        0,
    )
    .await;
    assert_eq!(
        (run.attempts, run.reasons),
        (2, vec!["connect_error".to_owned(); 2])
    );
    assert_eq!(run.status, StatusCode::BAD_GATEWAY);

    // OAuth accounts whose expired tokens cannot be refreshed: no request reaches the
    // upstream, and the token endpoint is asked twice, not three times.
    let run = exhaust(
        Options {
            accounts: Vec::new(),
            oauth_accounts: THREE
                .iter()
                .zip(0..)
                .map(|(&name, p)| (name, p, -1_000))
                .collect(),
            ..Default::default()
        },
        None,
        3,
    )
    .await;
    assert_eq!(
        (run.upstream_calls, run.refresh_grants),
        (0, 2),
        "token refresh"
    );
    assert_eq!(
        (run.attempts, run.reasons),
        (2, vec!["token_refresh_failed".to_owned(); 2])
    );
    assert_eq!(run.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_naming_the_cause() {
    let app = spawn_app(Options {
        upstream_override: Some("http://127.0.0.1:1".into()),
        ..Default::default()
    })
    .await;
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect")
    );
    app.stop().await;
}

#[tokio::test]
async fn health_reports_accounts_and_unknown_paths_are_404() {
    let app = spawn_app(alpha_then_beta()).await;
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let body = health.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["accounts"]["total"], 2);
    assert_eq!(body["accounts"]["available"], 2);
    assert!(body["version"].is_string() && body["uptime_s"].is_u64());
    let missing = app.get("/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["type"], "not_found_error");
    app.stop().await;
}

#[tokio::test]
async fn accounts_added_to_the_database_reach_the_running_proxy() {
    let app = spawn_app(Options {
        accounts: vec![],
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.post(&[], false).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    ccflare_storage::accounts::upsert_api_key(
        &app.db,
        &ccflare_core::Secret::new(key("late")),
        Some("late"),
        None,
        0,
    )
    .await
    .unwrap();
    // The sync task is the server's; here the same call it makes every second is made once.
    app.state.sync_accounts(&app.db).await.unwrap();
    let reply = app.post(&[], false).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "late")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_403_fails_over_without_disabling_the_account() {
    let app = spawn_app(alpha_then_beta()).await;
    app.mock.push_fault(&key("alpha"), Fault::Status(403));
    assert_eq!(app.served_by().await, "beta");
    // The refusal may have been about that request: alpha still serves the next one.
    assert_eq!(app.served_by().await, "alpha");
    app.stop().await;
}

#[tokio::test]
async fn the_only_accounts_401_reaches_the_client_as_the_upstreams_401() {
    let app = spawn_app(Options::default()).await;
    app.mock.revoke(&key("alpha"));
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"]["type"], "authentication_error");
    assert_eq!(reply.header("x-ccflare-account"), "alpha");
    let r = &app.records().await[0];
    assert_eq!((r.status, r.account_name.as_deref()), (401, Some("alpha")));
    // Now invalid: the next request is refused by ccflare itself, naming why.
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_read_of_the_accounts_older_than_one_applied_changes_nothing() {
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        ..Options::default()
    })
    .await;
    let names = |app: &common::App| -> Vec<String> {
        let now = app.clock_now();
        let views = app.state.pool().views(now);
        views.iter().map(|view| view.name.to_string()).collect()
    };
    // The one-second sync reads the table; a person then removes beta and the API reads the
    // table back into the pool; the sync's older read is applied last.
    let stale = app.state.read_accounts(&app.db).await.unwrap();
    ccflare_storage::accounts::remove(&app.db, "beta")
        .await
        .unwrap();
    app.state.sync_accounts(&app.db).await.unwrap();
    assert_eq!(names(&app), ["alpha"]);
    app.state.apply_accounts(stale);
    assert_eq!(names(&app), ["alpha"], "the stale read brought beta back");
    // A read begun after the change is applied as ever.
    app.state.sync_accounts(&app.db).await.unwrap();
    assert_eq!(names(&app), ["alpha"]);
    app.stop().await;
}
