//! Runs the real `ccflare-server` binary for tests: a temp dir as working directory and home,
//! a clean environment, and the mock upstream in-process. The process, HTTP and key helpers
//! come from `ccflare-testkit`; what is here knows this binary.

#![allow(dead_code)]

use bytes::Bytes;
use ccflare_core::record::RequestRecord;
use ccflare_mock::MockUpstream;
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::process::Server;
use ccflare_testkit::process::isolated_command;
use ccflare_testkit::{Message, PROCESS_GUARD, eventually, get, send};
use http_body_util::Full;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The client's own key: shaped like a real one, so that a leak would also be caught by the
/// searches for account keys.
pub const CLIENT_KEY: &str = "sk-ant-api03-client-own-key-must-not-leak";

/// The server binary in `dir`, on port 0, with nothing of the test's environment.
pub fn server_command(dir: &Path) -> Command {
    let mut command = isolated_command(env!("CARGO_BIN_EXE_ccflare-server"), dir);
    command.env("PORT", "0");
    command
}

/// The server proxying to `upstream`, with `keys` as its API-key accounts (none if empty) and
/// its database at [`db_path`].
pub fn proxy_command(dir: &Path, upstream: &MockUpstream, keys: &[String]) -> Command {
    let mut command = server_command(dir);
    if !keys.is_empty() {
        command.env("CLAUDE_API_KEYS", keys.join(","));
    }
    command
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("DATABASE_URL", db_path(dir));
    command
}

/// Runs the binary to completion (for start-up failures): exit code, stdout, stderr.
pub async fn run_to_end(command: Command) -> (Option<i32>, String, String) {
    let output = ccflare_testkit::process::run_to_end(command).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The body of [`messages_request`]; the mock counts a fourth of its length as input tokens.
pub fn messages_body(stream: bool) -> String {
    Message::new("claude-haiku-4-5")
        .max_tokens(32)
        .stream(stream)
        .content("hi")
        .body()
}

/// A Messages request to the server at `url`, as a client sends it, with `headers`.
pub fn messages_request(
    url: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let body = messages_body(stream);
    anthropic_post(&format!("{url}/v1/messages"), CLIENT_KEY, headers, body)
}

pub async fn mock() -> MockUpstream {
    MockUpstream::start().await.expect("mock starts")
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("ccflare.db")
}

/// The newest `limit` request records in the database at [`db_path`], newest first.
pub async fn records(dir: &Path, limit: u32) -> Vec<RequestRecord> {
    let db = ccflare_storage::Db::open_path(&db_path(dir))
        .await
        .expect("database opens");
    ccflare_storage::requests::recent(&db, limit)
        .await
        .expect("records")
}

/// Every request the upstream received went out with the account's key, and none carried the
/// client's own (any header containing `client_secret`).
pub fn assert_only_the_account_key_went_upstream(
    upstream: &MockUpstream,
    account_key: &str,
    client_secret: &str,
) {
    for request in upstream.requests() {
        assert_eq!(request.credential.as_deref(), Some(account_key));
        assert!(
            request
                .headers
                .iter()
                .all(|(_, v)| !v.contains(client_secret))
        );
    }
}

/// A client program the tests drive: the path in `variable` (set by `scripts/test.sh`), else
/// the copy `scripts/test.sh` installs under the workspace's `target/`, else `fallback` on the
/// PATH. A plain `cargo test` after one `scripts/test.sh` finds the installed copies.
pub fn installed_client(variable: &str, under_workspace: &str, fallback: &str) -> String {
    if let Ok(path) = std::env::var(variable) {
        return path;
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(under_workspace);
    if installed.exists() {
        return installed.display().to_string();
    }
    fallback.to_owned()
}

/// Polls the server's `/health` until `done` holds, and returns that answer.
pub async fn health_until(
    server: &Server,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(PROCESS_GUARD, "the awaited health", || async {
        let health = send(get(&format!("{}/health", server.url))).await.json();
        done(&health).then_some(health)
    })
    .await
}

/// Stores one client key in the database at `path`: a server on a network address requires
/// client keys and will not start without one (tests/keys.rs tests that rule).
pub async fn with_a_client_key(path: &Path) {
    let db = ccflare_storage::Db::open_path(path).await.unwrap();
    let limits = ccflare_core::client_key::KeyLimits::default();
    ccflare_storage::keys::create(&db, "team", &limits, None, 0)
        .await
        .unwrap();
    db.close().await;
}
