//! The Messages API's wider surface (issue 17) with the official `anthropic` Python SDK, through
//! the real server binary against the mock upstream: server-tool usage counted and priced,
//! batches created and their results read through ccflare with the account that made them, and
//! a large Files API upload. Python and the SDK are required: if they are missing these tests
//! fail, they do not skip.

mod common;

use ccflare_testkit::process::Server;
use ccflare_testkit::{PROCESS_GUARD, get, key, send};
use common::{mock, proxy_command, records};

/// Runs `sdk_messages_api.py MODE` against `server` and returns its JSON.
async fn sdk(server: &Server, mode: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_messages_api.py");
    let python = common::installed_client("PYTHON", "target/python/bin/python", "python3");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(script)
        .arg(mode)
        .env("ANTHROPIC_BASE_URL", &server.url)
        .env_remove("ANTHROPIC_API_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(PROCESS_GUARD, command.output())
        .await
        .expect("the SDK script finishes in time")
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}; `.ci/run` installs python3 and the anthropic SDK")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script ({mode}) failed:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the script")
}

#[tokio::test]
async fn a_streamed_answer_with_web_searches_is_counted_and_priced() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("sdk")])).await;

    let result = sdk(&server, "web_search", &[]).await;
    assert_eq!(result["text"], "Hello from the mock upstream.");
    assert_eq!(
        result["blocks"],
        serde_json::json!([
            "text",
            "server_tool_use",
            "web_search_tool_result",
            "server_tool_use",
            "web_search_tool_result"
        ])
    );
    assert_eq!(result["web_search_requests"], 2);

    // The API shows the calls on the request.
    let page = send(get(&format!("{}/api/requests?limit=1", server.url)))
        .await
        .json();
    let shown = &page["requests"][0];
    assert_eq!(shown["web_search_requests"], 2, "{shown}");
    assert_eq!(shown["web_fetch_requests"], 0);

    server.terminate().await;
    let rows = records(dir.path(), 10).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.streamed && row.success, "{row:?}");
    assert_eq!(row.usage.web_search_requests, 2);
    assert_eq!(row.usage.output_tokens, 5);
    // Haiku 4.5: $1 per million input tokens, $5 per million output; searches $10 per 1,000.
    let tokens_usd = (row.usage.input_tokens as f64 + 5.0 * 5.0) / 1_000_000.0;
    let expected = tokens_usd + 2.0 * 0.01;
    assert!(
        (row.cost_usd - expected).abs() < 1e-9,
        "cost {} is not {expected}",
        row.cost_usd
    );
}
