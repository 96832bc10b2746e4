//! The official `anthropic` Python SDK (installed from PyPI by `.ci/run`) through the real
//! server binary against the mock upstream: a plain and a streaming request get the mock's text
//! and usage, and both are recorded. Python and the SDK are required: if they are missing this
//! test fails, it does not skip.

mod common;

use ccflare_testkit::process::Server;
use ccflare_testkit::{PROCESS_GUARD, key};
use common::{assert_only_the_account_key_went_upstream, mock, proxy_command, records};

#[tokio::test]
async fn the_python_sdk_gets_text_and_usage_through_ccflare() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("sdk")])).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_client.py");
    let python = common::installed_client("PYTHON", "target/python/bin/python", "python3");
    let output = tokio::time::timeout(
        PROCESS_GUARD,
        tokio::process::Command::new(&python)
            .arg(script)
            .env("ANTHROPIC_BASE_URL", &server.url)
            .env_remove("ANTHROPIC_API_KEY")
            .output(),
    )
    .await
    .expect("the SDK script finishes in time")
    .unwrap_or_else(|e| {
        panic!("cannot run {python}: {e}; `.ci/run` installs python3 and the anthropic SDK")
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK script failed:\n{stderr}");
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON from the script");

    assert_eq!(result["plain_text"], "Hello from the mock upstream.");
    assert_eq!(result["stream_text"], "Hello from the mock upstream.");
    assert_eq!(result["plain_usage"]["output"], 5);
    assert_eq!(
        result["stream_usage"]["output"], 5,
        "final usage from the last message_delta"
    );
    assert!(result["plain_usage"]["input"].as_u64().unwrap() > 0);

    // The SDK's own key never reached the upstream; the account's did.
    assert_only_the_account_key_went_upstream(&upstream, &key("sdk"), "any-key-the-proxy-ignores");

    server.terminate().await;
    let rows = records(dir.path(), 10).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.success && r.usage.output_tokens == 5)
    );
    assert_eq!(rows.iter().filter(|r| r.streamed).count(), 1);
    eprintln!(
        "anthropic SDK {} through {}",
        result["sdk_version"], result["base_url"]
    );
}

/// The SDK with `api_key="ccf_…"` against a server that requires client keys: served, and
/// the key is the one the rows record.
#[tokio::test]
async fn the_python_sdk_works_with_a_client_key() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let db = ccflare_storage::Db::open_path(&common::db_path(dir.path()))
        .await
        .unwrap();
    let limits = ccflare_core::client_key::KeyLimits::default();
    let (stored, client_key) = ccflare_storage::keys::create(&db, "sdk-user", &limits, None, 0)
        .await
        .unwrap();
    db.close().await;
    let mut command = proxy_command(dir.path(), &upstream, &[key("sdk")]);
    command.env("REQUIRE_CLIENT_KEYS", "true");
    let server = Server::start(command).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_client.py");
    let python = common::installed_client("PYTHON", "target/python/bin/python", "python3");
    let output = tokio::time::timeout(
        PROCESS_GUARD,
        tokio::process::Command::new(&python)
            .arg(script)
            .env("ANTHROPIC_BASE_URL", &server.url)
            .env("CCFLARE_TEST_API_KEY", client_key.expose())
            .env_remove("ANTHROPIC_API_KEY")
            .output(),
    )
    .await
    .expect("the SDK script finishes in time")
    .unwrap_or_else(|e| {
        panic!("cannot run {python}: {e}; `.ci/run` installs python3 and the anthropic SDK")
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK script failed:\n{stderr}");
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON from the script");
    assert_eq!(result["plain_text"], "Hello from the mock upstream.");
    assert_eq!(result["stream_text"], "Hello from the mock upstream.");
    assert_only_the_account_key_went_upstream(&upstream, &key("sdk"), &client_key.expose()[4..]);

    server.terminate().await;
    let rows = records(dir.path(), 10).await;
    assert_eq!(rows.len(), 2);
    let id = stored.id.to_string();
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.client_key.as_deref() == Some(id.as_str()))
    );
}
