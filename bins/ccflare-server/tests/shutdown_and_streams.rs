//! Faults around streams and shutdown, against the real `ccflare-server` binary and the mock
//! upstream: SIGTERM with many streams in flight, the shutdown deadline cutting what is left, an
//! upstream reset mid-stream, a 529 storm on one account, and a client hanging up mid-stream.
//! Each test counts what a user would: responses that carried `x-ccflare-request-id` against
//! the rows in the database once the server has exited, and what each row says happened.

mod common;

use ccflare_core::record::RequestRecord;
use ccflare_mock::{Fault, MockUpstream};
use ccflare_testkit::http::read_to_end;
use ccflare_testkit::process::Server;
use ccflare_testkit::{GUARD, Reply, eventually, get, key, open, raw, send};
use common::{messages_body, messages_request, mock, proxy_command, records};
use http::StatusCode;
use http_body_util::BodyExt;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// What the mock reports as input tokens for [`messages_request`]'s body.
fn input_tokens(stream: bool) -> u64 {
    (messages_body(stream).len() / 4) as u64
}

/// `n` words for `x-mock-text`: the mock streams one per event and counts one output token each.
fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The request id a response carried.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-ccflare-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every /v1 response carries x-ccflare-request-id")
        .to_owned()
}

/// Every row in the database of the server that ran in `dir`, by request id.
async fn rows_by_id(dir: &Path) -> HashMap<String, RequestRecord> {
    records(dir, 10_000)
        .await
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

/// The requests `upstream` received with the key of account `name`.
fn upstream_requests_of(upstream: &MockUpstream, name: &str) -> usize {
    let key = key(name);
    upstream
        .requests()
        .iter()
        .filter(|r| r.credential.as_deref() == Some(key.as_str()))
        .count()
}

#[tokio::test]
async fn sigterm_with_20_streams_in_flight_lets_every_one_finish_and_records_every_one() {
    const STREAMS: usize = 20;
    const WORDS: usize = 30;
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    // About three seconds per stream (an event every 100 ms), far inside the default 30 s
    // shutdown timeout: each has started (its first frame is in) when the signal comes.
    let text = words(WORDS);
    let opened = all((0..STREAMS).map(|_| {
        let (url, text) = (server.url.clone(), text.clone());
        async move {
            let headers = [("x-mock-chunk-delay-ms", "100"), ("x-mock-text", &text)];
            let response = open(messages_request(&url, true, &headers)).await;
            assert_eq!(response.status(), StatusCode::OK);
            let id = request_id(response.headers());
            let mut body = response.into_body();
            let first = tokio::time::timeout(GUARD, body.frame())
                .await
                .expect("a first frame in time")
                .expect("a first frame")
                .expect("no error");
            (id, first.into_data().unwrap_or_default().to_vec(), body)
        }
    }))
    .await;

    server.sigterm();
    let finished = all(opened
        .into_iter()
        .map(|(id, mut received, body)| async move {
            let (rest, error) = read_to_end(body).await;
            assert!(error.is_none(), "stream {id} ended with {error:?}");
            received.extend_from_slice(&rest);
            (id, String::from_utf8(received).expect("UTF-8"))
        }))
    .await;
    for (id, text) in &finished {
        let events = ccflare_testkit::sse::parse_events(text);
        assert_eq!(events.first().map(|e| e.0.as_str()), Some("message_start"));
        assert_eq!(
            events.last().map(|e| e.0.as_str()),
            Some("message_stop"),
            "stream {id} is whole"
        );
    }
    let (code, rest) = server.terminate_after_signal().await;
    assert_eq!(code, Some(0), "{rest}");

    let rows = rows_by_id(dir.path()).await;
    let answered: BTreeSet<&String> = finished.iter().map(|(id, _)| id).collect();
    assert_eq!(answered.len(), STREAMS);
    assert_eq!(rows.keys().collect::<BTreeSet<_>>(), answered);
    for row in rows.values() {
        assert_eq!(
            (
                row.status,
                row.success,
                row.usage_incomplete,
                row.error_type.as_deref()
            ),
            (200, true, false, None),
            "{row:?}"
        );
        assert_eq!(
            (row.usage.input_tokens, row.usage.output_tokens),
            (input_tokens(true), WORDS as u64),
            "{row:?}"
        );
    }
}

#[tokio::test]
async fn responses_cut_at_the_shutdown_deadline_are_recorded_as_the_servers_cut_not_the_clients() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command.env("CCFLARE_SHUTDOWN_TIMEOUT", "1");
    let server = Server::start(command).await;
    // A stream whose upstream goes silent after two events, and a plain request whose upstream
    // never answers: neither can end by itself before the deadline.
    upstream.push_fault(&key("one"), Fault::Stall { after_events: 2 });
    upstream.push_fault(&key("one"), Fault::Hang);
    let response = open(messages_request(&server.url, true, &[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream_id = request_id(response.headers());
    let mut body = response.into_body();
    let first = tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("a first frame in time")
        .expect("a first frame")
        .expect("no error");
    assert!(
        String::from_utf8_lossy(&first.into_data().unwrap_or_default())
            .starts_with("event: message_start")
    );
    // The plain request on a bare socket: its client stays connected and waits.
    let address = server.url.trim_start_matches("http://").to_owned();
    let plain = messages_body(false);
    let raw_headers = [
        ("host", address.as_str()),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", common::CLIENT_KEY),
    ];
    let mut waiting = raw::post(address.as_str(), "/v1/messages", &raw_headers, &plain).await;
    tokio::time::timeout(GUARD, upstream.wait_requests(2))
        .await
        .expect("both requests reached the upstream");

    server.sigterm();
    // The stream breaks at the deadline instead of ending cleanly; the waiting client's
    // connection closes without an answer.
    let (received, error) = read_to_end(body).await;
    assert!(
        error.is_some(),
        "a cut stream must not end cleanly: {:?}",
        String::from_utf8_lossy(&received)
    );
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(GUARD, waiting.read_to_end(&mut answer))
        .await
        .expect("the waiting connection closes in time");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let (code, rest) = server.terminate_after_signal().await;
    assert_eq!(code, Some(0), "{rest}");
    assert!(rest.contains("shutdown deadline passed"), "{rest}");
    // Both upstream requests were closed with their clients' connections.
    eventually(GUARD, "the upstream stream is closed", || async {
        (upstream.aborted_streams() == 1).then_some(())
    })
    .await;
    eventually(GUARD, "the upstream request is closed", || async {
        (upstream.abandoned_requests() == 1).then_some(())
    })
    .await;

    let rows = rows_by_id(dir.path()).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let stream = &rows[&stream_id];
    // The client had the 200 and part of the stream: the row keeps the status, names the cut.
    assert_eq!(
        (
            stream.status,
            stream.success,
            stream.usage_incomplete,
            stream.error_type.as_deref()
        ),
        (200, false, true, Some("shutdown_cut")),
        "{stream:?}"
    );
    assert_eq!(
        stream.usage.input_tokens,
        input_tokens(true),
        "input usage from message_start is kept"
    );
    let cut = rows
        .values()
        .find(|r| r.id != stream_id)
        .expect("the plain request's row");
    // Nothing was sent: the server was unavailable to it.
    assert_eq!(
        (
            cut.status,
            cut.success,
            cut.attempts,
            cut.error_type.as_deref()
        ),
        (503, false, 1, Some("shutdown_cut")),
        "{cut:?}"
    );
    assert!(cut.ttfb_ms.is_none(), "nothing reached the client");
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_breaks_the_clients_stream_and_the_next_request_works() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    upstream.push_fault(&key("one"), Fault::DropMidStream { after_events: 3 });
    let broken =
        Reply::read_allowing_break(open(messages_request(&server.url, true, &[])).await).await;
    assert_eq!(broken.status, StatusCode::OK);
    assert!(broken.body_error, "the stream must not end cleanly");
    let text = String::from_utf8_lossy(&broken.body);
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    let broken_id = request_id(&broken.headers);

    let next = send(messages_request(&server.url, true, &[])).await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(
        next.text()
            .ends_with("data: {\"type\":\"message_stop\"}\n\n")
    );
    let next_id = request_id(&next.headers);
    server.terminate().await;

    let rows = rows_by_id(dir.path()).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let cut = &rows[&broken_id];
    assert_eq!(
        (
            cut.status,
            cut.success,
            cut.usage_incomplete,
            cut.error_type.as_deref()
        ),
        (200, false, true, Some("upstream_stream_error")),
        "{cut:?}"
    );
    assert_eq!(cut.usage.input_tokens, input_tokens(true));
    let whole = &rows[&next_id];
    assert_eq!(
        (whole.status, whole.success, whole.usage_incomplete),
        (200, true, false),
        "{whole:?}"
    );
}

#[tokio::test]
async fn a_529_storm_on_one_account_is_served_by_the_other_and_every_failed_attempt_is_recorded() {
    const REQUESTS: usize = 20;
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    // Round-robin, so the overloaded account is certainly picked.
    let mut command = proxy_command(dir.path(), &upstream, &[key("stormy"), key("calm")]);
    command.env("LB_STRATEGY", "round-robin");
    let server = Server::start(command).await;
    upstream.set_sticky_fault(&key("stormy"), Some(Fault::Overloaded));
    // Named after their keys' last four characters.
    let (stormy, calm) = ("key-ormy", "key-calm");

    let replies = all((0..REQUESTS).map(|i| {
        let url = server.url.clone();
        async move { send(messages_request(&url, i % 2 == 0, &[])).await }
    }))
    .await;
    let mut answered = BTreeSet::new();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-ccflare-account"), calm);
        answered.insert(request_id(&reply.headers));
    }
    let accounts = send(get(&format!("{}/api/accounts", server.url)))
        .await
        .json();
    let state_of = |name: &str| {
        accounts["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["state"].clone())
            .unwrap_or_else(|| panic!("no account {name} in {accounts}"))
    };
    assert_eq!(state_of(stormy), "overloaded");
    assert_eq!(state_of(calm), "active");
    server.terminate().await;

    let rows = rows_by_id(dir.path()).await;
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), answered);
    let mut failed_attempts = 0;
    for row in rows.values() {
        assert_eq!(
            (row.status, row.success, row.account_name.as_deref()),
            (200, true, Some(calm)),
            "{row:?}"
        );
        assert_eq!(row.attempts as usize, row.attempt_failures.len() + 1);
        for failure in &row.attempt_failures {
            assert_eq!(
                (
                    failure.account.as_str(),
                    failure.status,
                    failure.reason.as_str()
                ),
                (stormy, Some(529), "overloaded"),
                "{row:?}"
            );
        }
        failed_attempts += row.attempt_failures.len();
    }
    // Every 529 the upstream gave is one failed attempt in a row, and there was a storm.
    assert_eq!(failed_attempts, upstream_requests_of(&upstream, "stormy"));
    assert!(failed_attempts >= 1);
    assert_eq!(
        upstream_requests_of(&upstream, "calm"),
        REQUESTS,
        "each request was served once"
    );
}

#[tokio::test]
async fn a_client_hanging_up_mid_stream_closes_the_upstream_request_and_is_recorded_as_499() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    // A long stream: about twenty seconds of events if nobody stops it.
    let headers = [
        ("x-mock-chunk-delay-ms", "100"),
        ("x-mock-stream-bytes", "200000"),
    ];
    let response = open(messages_request(&server.url, true, &headers)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let left_id = request_id(response.headers());
    let mut body = response.into_body();
    tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("a first frame in time")
        .expect("a first frame")
        .expect("no error");
    drop(body);
    // The proxy drops its upstream request with the client's: the mock sees it go.
    eventually(GUARD, "the upstream stream is closed", || async {
        (upstream.aborted_streams() == 1).then_some(())
    })
    .await;
    // The account is not penalised: the next request is served by it.
    let next = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(next.status, StatusCode::OK);
    let next_id = request_id(&next.headers);
    server.terminate().await;

    let rows = rows_by_id(dir.path()).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let left = &rows[&left_id];
    assert_eq!(
        (
            left.status,
            left.success,
            left.usage_incomplete,
            left.error_type.as_deref()
        ),
        (499, false, true, Some("client_closed")),
        "{left:?}"
    );
    assert_eq!(left.usage.input_tokens, input_tokens(true));
    assert_eq!((rows[&next_id].status, rows[&next_id].success), (200, true));
    assert_eq!(upstream.requests().len(), 2, "no retry of the left request");
}

/// Runs each future on its own task, all at once, and returns their outputs in order; a
/// panic in one is the test's.
async fn all<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(
            task.await
                .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic())),
        );
    }
    outputs
}
