//! Claude Code (installed from npm by `scripts/test.sh`, version pinned there) through the real
//! server binary against the mock upstream: `claude -p` prints the mock's answer, its own key
//! never reaches the upstream, and its requests are recorded with its session id as the
//! affinity key. Claude Code is required: without it this test fails, it does not skip.

mod common;

use ccflare_testkit::process::Server;
use ccflare_testkit::{PROCESS_GUARD, key};
use common::{assert_only_the_account_key_went_upstream, mock, proxy_command, records};

#[tokio::test]
async fn claude_code_answers_through_ccflare() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("cc")])).await;

    let claude = common::installed_client(
        "CLAUDE_CODE_BIN",
        "target/node/node_modules/.bin/claude",
        "claude",
    );
    let home = dir.path().join("claude-home");
    std::fs::create_dir_all(&home).unwrap();
    let output = tokio::time::timeout(
        PROCESS_GUARD * 3,
        tokio::process::Command::new(&claude)
            .args(["-p", "Say hello"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("ANTHROPIC_BASE_URL", &server.url)
            .env(
                "ANTHROPIC_API_KEY",
                "sk-ant-api03-claude-code-own-key-must-not-leak",
            )
            // Only the base URL: no telemetry, error reporting or update checks.
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("claude -p finishes in time")
    .unwrap_or_else(|e| panic!("cannot run {claude}: {e}; scripts/test.sh installs Claude Code"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "claude -p failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.trim(), "Hello from the mock upstream.");

    let seen = upstream.requests();
    assert!(!seen.is_empty());
    assert_only_the_account_key_went_upstream(
        &upstream,
        &key("cc"),
        "claude-code-own-key-must-not-leak",
    );

    server.terminate().await;
    let rows = records(dir.path(), 100).await;
    assert_eq!(rows.len(), seen.len(), "one record per request");
    let messages: Vec<_> = rows.iter().filter(|r| r.path == "/v1/messages").collect();
    assert!(!messages.is_empty());
    for row in messages {
        assert!(row.success && row.usage.output_tokens > 0, "{row:?}");
        assert!(
            row.session_key.is_some(),
            "Claude Code's session id is the affinity key"
        );
    }
}
