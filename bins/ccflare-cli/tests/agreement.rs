//! `ccflare-cli stats` and a running `ccflare-server`'s `/api/analytics` on the same database
//! show the same latency percentiles for the same requests: both read the rollups' histograms
//! through one definition (nearest rank over every request, in the rollups' bins).
//!
//! The server binary is found as in `live.rs` (`process::workspace_binary`). Both sides use the
//! real clock here, since the server's report ends at its own "now"; the requests are all from
//! the last ten minutes, so every window asked for holds all of them.

mod common;

use ccflare_core::{Clock, SystemClock};
use ccflare_testkit::process::{self, isolated_command};
use ccflare_testkit::{get, send};
use common::{Cli, MIN, Request};
use std::path::Path;
use std::process::Stdio;

#[tokio::test]
async fn the_cli_and_a_running_servers_api_show_the_same_percentiles() {
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let now = SystemClock.now_ms();
    // 200 requests over the last ten minutes with latencies from 2 ms to about 40 s; one in
    // eight is a fast failure, which counts like any other request.
    let requests: Vec<Request> = (0..200i64)
        .map(|n| {
            let at = now - 10 * MIN + n * 3_000;
            let request = Request::ok(at, "claude-sonnet-4-5", (1, "work"));
            if n % 8 == 0 {
                Request {
                    status: 529,
                    latency_ms: 3,
                    error: Some(("overloaded_error", "Overloaded")),
                    ..request
                }
            } else {
                Request {
                    latency_ms: 2 + n * n * 7919 % 40_000,
                    ..request
                }
            }
        })
        .collect();
    common::record(&cli.db().await, &requests, &[]).await;

    let mut command = isolated_command(
        process::workspace_binary(
            Path::new(env!("CARGO_BIN_EXE_ccflare-cli")),
            "ccflare-server",
        ),
        cli.path(),
    );
    command
        .env("PORT", "0")
        .env("DATABASE_URL", "file:./ccflare.db")
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .stderr(Stdio::null());
    let server = process::Server::start(command).await;
    let api = send(get(&format!("{}/api/analytics?range=24h", server.url)))
        .await
        .json();
    server.kill().await;
    // The values themselves are checked against the definition in the analytics tests
    // (`report.rs::the_cli_tables_and_the_api_report_agree_on_percentiles`).
    let api = &api["latency_ms"];
    assert_eq!(api["samples"], 200);
    assert!(
        api["p50"].as_i64().is_some() && api["p95"].as_i64().is_some(),
        "{api}"
    );

    for args in [
        ["stats", "daily", "--utc", "--days", "2", "--json"],
        ["stats", "hourly", "--utc", "--hours", "2", "--json"],
        ["stats", "models", "--utc", "--days", "1", "--json"],
    ] {
        let mut command = cli.command(&args);
        command.env_remove("CCFLARE_NOW_MS");
        let json: serde_json::Value =
            serde_json::from_str(&common::output(command).await.ok()).unwrap();
        let total = &json["total"];
        assert_eq!(total["requests"], 200, "{args:?}");
        assert_eq!(
            (total["p50_ms"].as_i64(), total["p95_ms"].as_i64()),
            (api["p50"].as_i64(), api["p95"].as_i64()),
            "{args:?}"
        );
    }
}
