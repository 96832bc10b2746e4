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

/// Batches through ccflare with two accounts (round robin, so that an unowned retrieve would
/// go to the other one): the SDK's `results_url` names ccflare, the download comes back
/// through it, and everything naming the batch reaches the upstream with the key of the account
/// that created it. After a restart, the batch still goes to that account.
#[tokio::test]
async fn batch_results_come_through_ccflare_from_the_account_that_made_the_batch() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = [key("one"), key("two")];
    let mut command = proxy_command(dir.path(), &upstream, &keys);
    command.env("LB_STRATEGY", "round-robin");
    let server = Server::start(command).await;

    let result = sdk(&server, "batches", &[]).await;
    let batch_id = result["batch_id"].as_str().unwrap().to_owned();
    let results_url = result["results_url"].as_str().unwrap();
    assert_eq!(
        results_url,
        format!("{}/v1/messages/batches/{batch_id}/results", server.url),
        "results_url names ccflare as the client reached it"
    );
    let results = result["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (n, line) in results.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("req-{n}"));
        assert_eq!(line["type"], "succeeded");
        assert_eq!(line["text"], "Hello from the mock upstream.");
    }
    // Listing works through ccflare (whichever account answers, its own batches).
    assert!(result["listed"].is_array());

    // Every upstream request naming the batch carried the creating account's key, and the
    // results download was one of them (the SDK's own key never went upstream).
    let seen = upstream.requests();
    let created = seen
        .iter()
        .find(|r| r.method == "POST" && r.path == "/v1/messages/batches")
        .expect("the batch was created upstream");
    let owner = created.credential.clone().unwrap();
    assert!(keys.contains(&owner));
    let naming: Vec<_> = seen.iter().filter(|r| r.path.contains(&batch_id)).collect();
    assert!(naming.len() >= 2, "{naming:?}");
    assert!(
        naming
            .iter()
            .any(|r| r.path.ends_with("/results") && r.credential.as_deref() == Some(&owner))
    );
    for request in &naming {
        assert_eq!(
            request.credential.as_deref(),
            Some(owner.as_str()),
            "{} {}",
            request.method,
            request.path
        );
    }
    for request in &seen {
        assert!(keys.contains(request.credential.as_ref().unwrap()));
    }

    server.terminate().await;
    let rows = records(dir.path(), 50).await;
    let creation = rows
        .iter()
        .find(|r| r.method == "POST" && r.path == "/v1/messages/batches")
        .unwrap();
    assert_eq!(creation.resource_id.as_deref(), Some(batch_id.as_str()));
    let download = rows
        .iter()
        .find(|r| r.path.ends_with("/results"))
        .expect("the download was recorded");
    assert_eq!(download.status, 200);
    assert_eq!(download.account_id, creation.account_id);

    // A restarted server reads the owner back: a retrieve goes to the same account however
    // often it is asked (the other account's key would get 404 from the mock).
    let mut command = proxy_command(dir.path(), &upstream, &keys);
    command.env("LB_STRATEGY", "round-robin");
    let server = Server::start(command).await;
    let before = upstream.requests().len();
    for _ in 0..4 {
        let url = format!("{}/v1/messages/batches/{batch_id}", server.url);
        let answer = send(ccflare_testkit::http::request(
            http::Method::GET,
            &url,
            &[
                ("anthropic-version", "2023-06-01"),
                ("x-api-key", "client-own"),
            ],
            bytes::Bytes::new(),
        ))
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let expected = format!("{}/v1/messages/batches/{batch_id}/results", server.url);
        assert_eq!(answer.json()["results_url"], expected.as_str());
    }
    let after: Vec<_> = upstream.requests().into_iter().skip(before).collect();
    assert_eq!(after.len(), 4);
    assert!(
        after
            .iter()
            .all(|r| r.credential.as_deref() == Some(owner.as_str()))
    );
    server.terminate().await;
}
