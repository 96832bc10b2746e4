//! Client keys through the real server binary (SPEC §11): it refuses to start where `/v1`
//! would be open to a network, or where keys are required and none exists, each with one line
//! that says what to do; with keys required, the key works from a client and never appears in
//! the server's output at `LOG_LEVEL=trace` nor in any API answer.

mod common;

use ccflare_core::client_key::KeyLimits;
use ccflare_core::{Clock, Secret, SystemClock};
use ccflare_testkit::http::request;
use ccflare_testkit::process::Server;
use ccflare_testkit::{get, key, send};
use common::{
    CLIENT_KEY, db_path, messages_request, mock, proxy_command, run_to_end, server_command,
};
use http::{Method, StatusCode};
use std::path::Path;

/// Creates client key `name` in the database the server in `dir` uses.
async fn create_key(dir: &Path, name: &str) -> Secret {
    let db = ccflare_storage::Db::open_path(&db_path(dir))
        .await
        .expect("database opens");
    let (_, key) =
        ccflare_storage::keys::create(&db, name, &KeyLimits::default(), None, SystemClock.now_ms())
            .await
            .expect("key created");
    db.close().await;
    key
}

#[tokio::test]
async fn the_server_refuses_to_start_with_v1_open_to_a_network_or_no_key_to_require() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "0123456789abcdef-admin-key";
    let network = |extra: &[(&str, &str)]| {
        let mut command = server_command(dir.path());
        command
            .env("HOST", "0.0.0.0")
            .env("CCFLARE_ADMIN_KEY", admin)
            .env("DATABASE_URL", db_path(dir.path()));
        for (name, value) in extra {
            command.env(name, value);
        }
        command
    };
    let (code, _, stderr) = run_to_end(network(&[])).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("client keys are required")
            && stderr.contains("HOST=0.0.0.0")
            && stderr.contains("ccflare-cli keys create"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let (code, _, stderr) = run_to_end(network(&[("REQUIRE_CLIENT_KEYS", "false")])).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("REQUIRE_CLIENT_KEYS=false"), "{stderr}");
    let mut loopback = server_command(dir.path());
    loopback
        .env("REQUIRE_CLIENT_KEYS", "true")
        .env("DATABASE_URL", db_path(dir.path()));
    let (code, _, stderr) = run_to_end(loopback).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("REQUIRE_CLIENT_KEYS=true"), "{stderr}");

    // With a key, the same network server starts, and /v1 wants the key.
    let secret = create_key(dir.path(), "team").await;
    let server = Server::start(network(&[])).await;
    assert!(
        server.banner.contains("client keys   required (1 stored)"),
        "{}",
        server.banner
    );
    let url = server.url.replace("0.0.0.0", "127.0.0.1");
    let refused = send(messages_request(&url, false, &[])).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // This server has no account: the good key gets past the check to the empty pool's 503,
    // and nothing leaves the machine.
    let bearer = format!("Bearer {}", secret.expose());
    let past = send(messages_request(&url, false, &[("authorization", &bearer)])).await;
    assert_eq!(
        past.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        past.text()
    );
    server.terminate().await;
}

#[tokio::test]
async fn a_key_never_appears_in_trace_logs_or_api_answers() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = create_key(dir.path(), "alice").await;
    let random = &secret.expose()[4..];
    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command
        .env("REQUIRE_CLIENT_KEYS", "true")
        .env("LOG_LEVEL", "trace");
    let server = Server::start(command).await;
    assert!(
        server.banner.contains("client keys   required"),
        "{}",
        server.banner
    );

    let served = send(messages_request(
        &server.url,
        false,
        &[("x-ccflare-key", secret.expose())],
    ))
    .await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());
    let missing = send(messages_request(&server.url, true, &[])).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "no key");
    let wrong = format!("ccf_{}", "W".repeat(43));
    let url = format!("{}/v1/messages", server.url);
    let refused = send(ccflare_testkit::http::anthropic_post(
        &url,
        &wrong,
        &[],
        common::messages_body(false),
    ))
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(!refused.text().contains(&wrong[4..]));
    common::assert_only_the_account_key_went_upstream(&upstream, &key("one"), random);
    common::assert_only_the_account_key_went_upstream(&upstream, &key("one"), CLIENT_KEY);

    let mut answers = Vec::new();
    for path in [
        "/api/keys",
        "/api/requests?key=alice",
        "/api/analytics?range=24h",
        "/api/logs/stream?x=1",
    ] {
        answers.push(
            send(get(&format!("{}{path}", server.url)))
                .await
                .text()
                .to_owned(),
        );
    }
    let me = send(request(
        Method::GET,
        &format!("{}/api/me", server.url),
        &[("x-api-key", secret.expose())],
        "",
    ))
    .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    answers.push(me.text().to_owned());
    for answer in &answers {
        assert!(
            !answer.contains(random),
            "an answer shows the key: {answer}"
        );
    }
    assert!(answers[0].contains("\"alice\""), "{}", answers[0]);

    let output = server.terminate().await;
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "trace logging is on"
    );
    assert!(
        !output.contains(random),
        "the server's output shows the key"
    );
    assert!(
        !output.contains(&wrong[4..]),
        "the server's output shows a wrong key whole"
    );
    assert!(
        output.contains(&wrong[..12]),
        "a wrong key is logged by its prefix"
    );
}
