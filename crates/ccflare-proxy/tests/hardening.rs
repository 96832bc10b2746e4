//! The hardening of issue 12's review, end to end through the mock upstream: what a client
//! sends that must not reach the upstream, answers about a request that must not condemn an
//! account, and the limits on what a client may hold. Each test would fail without its fix.

mod common;

use ccflare_core::AccountStatus;
use ccflare_mock::Fault;
use ccflare_storage::accounts;
use ccflare_testkit::{GUARD, key};
use common::{Options, message_body, spawn_app};
use http::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn x_ccflare_headers_from_a_client_never_reach_the_upstream() {
    let app = spawn_app(Options::default()).await;
    let headers = [
        // (A client key in `x-ccflare-key` is checked and removed by the key check:
        // tests/keys.rs.)
        ("x-ccflare-admin-key", "0123456789abcdef-admin"),
        ("x-ccflare-account", "spoofed"),
        ("x-custom", "kept"),
    ];
    let reply = app.post(&headers, false).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &app.mock.requests()[0];
    let ours: Vec<&(String, String)> = seen
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-ccflare-"))
        .collect();
    assert!(ours.is_empty(), "forwarded: {ours:?}");
    assert_eq!(seen.header("x-custom"), Some("kept"));
    app.stop().await;
}

/// Two API-key accounts: `alpha`, tried first, and `beta`.
fn alpha_then_beta() -> Options {
    Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        ..Default::default()
    }
}

/// The status of every stored account, by name, once the writer has caught up.
async fn statuses(app: &common::App) -> Vec<(String, AccountStatus)> {
    app.records().await;
    let mut all: Vec<(String, AccountStatus)> = accounts::list(&app.db)
        .await
        .expect("accounts")
        .into_iter()
        .map(|account| (account.name, account.status))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[tokio::test]
async fn a_401_on_a_path_the_client_chose_leaves_every_account_active() {
    let app = spawn_app(alpha_then_beta()).await;
    // Both keys are refused everywhere; only on an inference route does that judge them.
    for name in ["alpha", "beta"] {
        app.mock
            .set_sticky_fault(&key(name), Some(Fault::Status(401)));
    }
    let reply = app.get("/v1/models").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "relayed as it is");
    assert_eq!(reply.header("x-ccflare-account"), "alpha");
    assert_eq!(reply.json()["error"]["type"], "authentication_error");
    let models = app
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/models")
        .count();
    assert_eq!(
        models, 1,
        "no failover: every account would get the same answer"
    );
    assert_eq!(app.get("/health").await.json()["accounts"]["invalid"], 0);
    let active = [
        ("alpha".to_owned(), AccountStatus::Active),
        ("beta".to_owned(), AccountStatus::Active),
    ];
    assert_eq!(statuses(&app).await, active);
    for name in ["alpha", "beta"] {
        app.mock.set_sticky_fault(&key(name), None);
    }
    assert_eq!(app.served_by().await, "alpha");

    // On /v1/messages the same 401 is about the key: the account leaves routing.
    app.mock
        .set_sticky_fault(&key("alpha"), Some(Fault::Status(401)));
    assert_eq!(app.served_by().await, "beta");
    assert_eq!(
        statuses(&app).await,
        [
            ("alpha".to_owned(), AccountStatus::Invalid),
            ("beta".to_owned(), AccountStatus::Active),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_401_on_a_path_the_client_chose_neither_refreshes_nor_benches_an_oauth_account() {
    let app = spawn_app(Options {
        accounts: vec![],
        oauth_accounts: vec![("max", 0, 8 * 3_600_000)],
        ..Default::default()
    })
    .await;
    let account = accounts::find(&app.db, "max").await.unwrap();
    let token = ccflare_storage::oauth::stored_tokens(&app.db, account.id)
        .await
        .unwrap()
        .access;
    // An hour into its life the token is refused everywhere (revoked upstream, say).
    app.clock.advance(3_600_000);
    app.mock.expire_access_token(token.expose());
    let reply = app.get("/v1/models").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "relayed as it is");
    assert_eq!(app.mock.refresh_grants(), 0, "no refresh for a route's 401");
    let health = app.get("/health").await.json();
    assert_eq!(health["accounts"]["available"], 1, "not benched: {health}");
    // On /v1/messages the 401 is about the token: one refresh, and the request is served.
    assert_eq!(app.served_by().await, "max");
    assert_eq!(app.mock.refresh_grants(), 1);
    app.stop().await;
}

#[tokio::test]
async fn undocumented_paths_get_404_unless_every_path_is_allowed() {
    let app = spawn_app(Options::default()).await;
    let path = "/v1/organizations/api_keys";
    let reply = app.send(app.request(path, &[], "{}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_all_paths"),
        "{body}"
    );
    assert!(app.mock.requests().is_empty(), "nothing went upstream");
    let records = app.records().await;
    assert_eq!((records[0].status, records[0].attempts), (404, 0));
    // The documented routes still go through.
    assert_eq!(app.get("/v1/models").await.status, StatusCode::OK);
    app.stop().await;

    let app = spawn_app(Options {
        allow_all_paths: true,
        ..Default::default()
    })
    .await;
    app.send(app.request(path, &[], "{}")).await;
    assert_eq!(app.mock.requests()[0].path, path, "forwarded when allowed");
    app.stop().await;
}

#[tokio::test]
async fn a_401_relayed_when_the_only_oauth_accounts_refresh_cannot_help() {
    let app = spawn_app(Options {
        accounts: vec![],
        oauth_accounts: vec![("max", 0, 8 * 3_600_000)],
        ..Default::default()
    })
    .await;
    let account = accounts::find(&app.db, "max").await.unwrap();
    let token = ccflare_storage::oauth::stored_tokens(&app.db, account.id)
        .await
        .unwrap()
        .access;
    // Refused by the upstream moments after its refresh: another refresh would not help, and
    // the upstream's own answer is what the client should see.
    app.mock.expire_access_token(token.expose());
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(reply.header("x-ccflare-account"), "max");
    assert_eq!(reply.json()["error"]["type"], "authentication_error");
    assert_eq!(app.mock.refresh_grants(), 0);
    let r = &app.records().await[0];
    assert_eq!((r.status, r.account_name.as_deref()), (401, Some("max")));
    assert_eq!(r.attempt_failures.len(), 1);
    assert_eq!(r.attempt_failures[0].status, Some(401));
    assert_eq!(r.attempt_failures[0].reason, "token_refresh_failed");
    app.stop().await;
}

#[tokio::test]
async fn browser_driven_requests_to_v1_are_refused_and_clients_pass() {
    let app = spawn_app(Options::default()).await;
    let port = app.url.rsplit(':').next().unwrap().to_owned();
    let refused = [
        // A cross-site form or fetch from a page the operator has open.
        vec![("origin", "https://evil.example".to_owned())],
        // DNS rebinding: the page's own domain, resolving to 127.0.0.1.
        vec![("host", format!("rebind.evil.example:{port}"))],
    ];
    for headers in &refused {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = app
            .send(app.request("/v1/messages", &headers, message_body(false)))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(reply.json()["type"], "error");
        assert_eq!(reply.json()["error"]["type"], "permission_error");
    }
    assert!(app.mock.requests().is_empty(), "nothing went upstream");
    // Clients name the server as they were told and send no Origin; its own pages may.
    let localhost = format!("localhost:{port}");
    let own_page = format!("http://127.0.0.1:{port}");
    let passing = [
        vec![],
        vec![("host", localhost.as_str())],
        vec![("origin", own_page.as_str())],
    ];
    for headers in &passing {
        let reply = app
            .send(app.request("/v1/messages", headers, message_body(false)))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{headers:?}");
    }
    let records = app.records().await;
    let statuses: Vec<u16> = records.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403, 403, 200, 200, 200], "refusals are recorded");
    app.stop().await;
}

/// The answer on a raw connection: its status and body, read until the body's
/// `content-length` is in (or the connection ends).
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> (u16, serde_json::Value, String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .to_ascii_lowercase()
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
                    .unwrap_or(usize::MAX);
                if body.len() >= length {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&seen).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (
        status,
        serde_json::from_str(body).expect("a JSON body"),
        head.to_owned(),
    )
}

/// The head of a Messages request whose body has `length` bytes.
fn head(app: &common::App, length: usize) -> String {
    let host = app.url.trim_start_matches("http://");
    format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         anthropic-version: 2023-06-01\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// A valid Messages body of about `size` bytes.
fn sized_body(size: usize) -> String {
    let text = "x".repeat(size.saturating_sub(100));
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"{text}"}}]}}"#
    )
}

#[tokio::test]
async fn a_slowloris_upload_is_cut_at_the_body_deadline() {
    // Each piece comes well within the idle timeout (30 s here), so only a deadline for the
    // whole body can cut this upload.
    let app = spawn_app(Options {
        body_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let body = message_body(false);
    let address = app.url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = head(&app, body.len());
    // One byte every 400 ms: the attack, not a wait of the test. It ends when the proxy closes.
    let trickle = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.expect("head");
        let mut every = tokio::time::interval(Duration::from_millis(400));
        for byte in body.as_bytes() {
            every.tick().await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let (status, reply, _) = read_answer(&mut reader).await;
    trickle.abort();
    assert_eq!(status, 408);
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["error"]["type"], "invalid_request_error");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("body_timeout"),
        "{reply}"
    );
    assert!(app.mock.requests().is_empty(), "nothing went upstream");
    let r = &app.records().await[0];
    assert_eq!((r.status, r.attempts), (408, 0));
    assert_eq!(app.state.body_bytes_held(), 0, "its bytes were given back");
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_the_memory_budget_get_503_and_nothing_goes_upstream() {
    let app = spawn_app(Options {
        max_body_bytes: 64 * 1024,
        max_body_memory: 64 * 1024,
        ..Default::default()
    })
    .await;
    // A first upload holds 50,000 bytes of the budget while the rest of its body is on its way.
    let body = sized_body(60_000);
    let (first, rest) = body.split_at(50_000);
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut holder = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    holder
        .write_all(format!("{}{first}", head(&app, body.len())).as_bytes())
        .await
        .expect("write");
    ccflare_testkit::eventually(GUARD, "the first body is held", || async {
        (app.state.body_bytes_held() >= 50_000).then_some(())
    })
    .await;
    // Declared (content-length) or sent piece by piece, 20,000 bytes more do not fit.
    let reply = app
        .send(app.request("/v1/messages", &[], sized_body(20_000)))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"]["type"], "overloaded_error");
    assert!(
        reply.header("retry-after").parse::<u64>().unwrap() >= 1,
        "retry-after: {:?}",
        reply.header("retry-after")
    );
    // Without a content-length the budget is found short while reading.
    let chunked = sized_body(20_000);
    let host = app.url.trim_start_matches("http://");
    let mut piecewise = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         anthropic-version: 2023-06-01\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{chunked}\r\n0\r\n\r\n",
        chunked.len()
    );
    piecewise
        .write_all(request.as_bytes())
        .await
        .expect("write");
    let (status, reply, head) = read_answer(&mut piecewise).await;
    assert_eq!(status, 503, "{head}");
    assert_eq!(reply["error"]["type"], "overloaded_error");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(app.mock.requests().is_empty(), "nothing went upstream");
    assert_eq!(
        app.state.body_bytes_held(),
        50_000,
        "what the refused one read is back"
    );
    // The first upload completes and is served; its share comes back.
    holder.write_all(rest.as_bytes()).await.expect("write");
    let (status, _, _) = read_answer(&mut holder).await;
    assert_eq!(status, 200);
    assert_eq!(app.state.body_bytes_held(), 0);
    let reply = app
        .send(app.request("/v1/messages", &[], sized_body(20_000)))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "room again");
    let statuses: Vec<u16> = app.records().await.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200, 200], "the refusals are recorded");
    app.stop().await;
}
