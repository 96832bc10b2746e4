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

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A 100 MB Files API upload goes through (three times the 32 MiB of messages) with the
/// server's memory flat: streamed upstream, never held. The file belongs to the account that
/// took it: its metadata is asked of that account.
#[tokio::test]
async fn a_100_mb_upload_is_streamed_through_with_flat_memory() {
    const SIZE: u64 = 100_000_000;
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let block: Vec<u8> = (0..1_000_000u32).map(|n| (n % 251) as u8).collect();
        for _ in 0..SIZE / 1_000_000 {
            out.write_all(&block).unwrap();
        }
    }
    let keys = [key("one"), key("two")];
    let mut command = proxy_command(dir.path(), &upstream, &keys);
    command.env("LB_STRATEGY", "round-robin");
    let server = Server::start(command).await;
    let pid = server.child.id().expect("the server runs");
    let (before, _) = memory_of(pid);

    let upload = file.display().to_string();
    let result = sdk(&server, "upload", &[("CCFLARE_TEST_UPLOAD", &upload)]).await;
    let (_, peak) = memory_of(pid);
    assert_eq!(result["size_bytes"], SIZE, "the upstream got every byte");
    let file_id = result["file_id"].as_str().unwrap().to_owned();
    assert_eq!(result["metadata_id"], file_id.as_str());
    // Holding the body would add 100 MB; streaming adds buffers. A generous bound.
    let grown = peak.saturating_sub(before);
    eprintln!("server RSS before {before} B, peak after the upload {peak} B (+{grown} B)");
    assert!(
        grown < 40 * 1024 * 1024,
        "the server's peak memory grew by {grown} bytes for a {SIZE} byte upload"
    );

    let seen = upstream.requests();
    let uploaded = seen
        .iter()
        .find(|r| r.method == "POST" && r.path == "/v1/files")
        .unwrap();
    let owner = uploaded.credential.clone().unwrap();
    let metadata = seen
        .iter()
        .find(|r| r.method == "GET" && r.path == format!("/v1/files/{file_id}"))
        .unwrap();
    assert_eq!(metadata.credential.as_deref(), Some(owner.as_str()));

    server.terminate().await;
    let rows = records(dir.path(), 10).await;
    let row = rows.iter().find(|r| r.path == "/v1/files").unwrap();
    assert_eq!((row.status, row.success), (200, true));
    assert_eq!(row.resource_id.as_deref(), Some(file_id.as_str()));
}

/// The answer to a `POST` that declares `length` bytes of body and sends none of them.
async fn declared(address: &str, path: &str, length: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nanthropic-version: 2023-06-01\r\n\
         x-api-key: client-own\r\ncontent-length: {length}\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is a small JSON error; it is complete once its closing brace arrived.
    while !String::from_utf8_lossy(&answer).trim_end().ends_with('}') {
        let n = tokio::time::timeout(PROCESS_GUARD, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Each route has its own limit, decided on the declared length before a byte is read: over
/// 500 MiB for a Files API upload, over 256 MiB for batch creation, over 32 MiB (the default
/// `max_body_bytes`) for a message. Under them, nothing is refused: the upstream sees the
/// request.
#[tokio::test]
async fn uploads_batches_and_messages_have_their_own_body_limits() {
    const MIB: u64 = 1024 * 1024;
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let address = server.url.trim_start_matches("http://").to_owned();

    for (path, limit) in [
        ("/v1/files", 500 * MIB),
        ("/v1/messages/batches", 256 * MIB),
        ("/v1/messages", 32 * MIB),
    ] {
        let answer = declared(&address, path, limit + 1).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("request_too_large"), "{path}: {answer}");
    }
    assert!(upstream.requests().is_empty(), "nothing went upstream");

    // A 40 MiB upload is over the messages' limit but well within the Files API's.
    let body = format!(
        "--x\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n{}\r\n--x--\r\n",
        "z".repeat(40 * MIB as usize)
    );
    let body_len = body.len();
    let url = format!("{}/v1/files", server.url);
    let headers = [
        ("content-type", "multipart/form-data; boundary=x"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "files-api-2025-04-14"),
        ("x-api-key", "client-own"),
    ];
    let request = ccflare_testkit::http::request(http::Method::POST, &url, &headers, body);
    let answer = send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["size_bytes"], 40 * MIB);
    // Streamed, yet with its length: the upstream is told the size up front, not chunks.
    let uploaded = upstream
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/files")
        .unwrap();
    let length = uploaded.header("content-length").map(str::to_owned);
    assert_eq!(length, Some(body_len.to_string()));
    assert!(uploaded.header("transfer-encoding").is_none());
    server.terminate().await;
}
