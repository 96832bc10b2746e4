//! The open-files limit and the connection limit derived from it, as a user meets them: the
//! server started under `ulimit` (read back from `/proc`, so Linux only), and more streams at
//! once than the limit lets it serve.

#![cfg(target_os = "linux")]

mod common;

use ccflare_testkit::process::Server;
use ccflare_testkit::{PROCESS_GUARD, key, send};
use common::{db_path, messages_request, mock, proxy_command, records};
use http::StatusCode;

/// `soft hard` of this process's or another's open-files limit, from `/proc`.
fn open_files_limit(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .unwrap();
    let mut numbers = line.split_whitespace().map(|n| match n {
        "unlimited" => u64::MAX,
        n => n.parse().unwrap(),
    });
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// The server under `sh` after `ulimit` (arguments) lowered its open-files limit.
fn server_under_ulimit(dir: &std::path::Path, ulimit: &str) -> tokio::process::Command {
    let mut command = ccflare_testkit::process::isolated_command("sh", dir);
    command
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ccflare-server"))
        .env("PORT", "0");
    command
}

/// What the start-up warning says for a limit of `open_files` (below 4,096).
fn warning_for(open_files: u64) -> String {
    let streams = (open_files.saturating_sub(64) / 2).max(8);
    format!("the open-files limit allows about {streams} concurrent streams")
}

#[tokio::test]
async fn a_low_soft_open_files_limit_is_raised_to_the_hard_one() {
    let (_, hard) = open_files_limit("self");
    // The common desktop default is a soft limit of 1,024 under a much higher hard one.
    let low = 256.min(hard / 2);
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_under_ulimit(dir.path(), &format!("-S -n {low}"));
    command.env("LOG_LEVEL", "warn");
    let server = Server::start(command).await;
    let pid = server.child.id().unwrap().to_string();
    assert_eq!(open_files_limit(&pid), (hard, hard));
    let rest = server.terminate().await;
    // Only a hard limit that is itself low is worth a warning.
    if hard < 4096 {
        assert!(rest.contains(&warning_for(hard)), "{rest}");
    } else {
        assert!(!rest.contains("open-files limit"), "{rest}");
    }
}

#[tokio::test]
async fn a_low_hard_open_files_limit_is_kept_and_named_at_start() {
    let (_, hard) = open_files_limit("self");
    let low = 512.min(hard);
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_under_ulimit(dir.path(), &format!("-n {low}"));
    // The warning is a log line on stderr; `terminate` returns it.
    command.env("LOG_LEVEL", "warn");
    let server = Server::start(command).await;
    let pid = server.child.id().unwrap().to_string();
    assert_eq!(open_files_limit(&pid), (low, low));
    let rest = server.terminate().await;
    assert!(rest.contains(&warning_for(low)), "{rest}");
}

#[tokio::test]
async fn more_streams_than_the_open_files_limit_allows_wait_instead_of_failing() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    // 256 open files fit 96 client connections with their upstream ones; 150 streams would
    // need about 300 sockets. (A machine whose hard limit is lower gets a smaller version.)
    let (_, hard) = open_files_limit("self");
    let files = 256.min(hard);
    let count = (files.saturating_sub(64) / 2).max(8) as usize + 54;
    let mut command = server_under_ulimit(dir.path(), &format!("-n {files}"));
    command
        .env("CLAUDE_API_KEYS", key("one"))
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("DATABASE_URL", db_path(dir.path()))
        .env("LOG_LEVEL", "warn");
    let server = Server::start(command).await;
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..count {
        // 20 events 50 ms apart: each stream stays open for about a second, so they overlap
        // even on a loaded machine.
        let request = messages_request(&server.url, true, &[("x-mock-chunk-delay-ms", "50")]);
        streams.spawn(async move { send(request).await });
    }
    let mut served = 0;
    while let Some(reply) = tokio::time::timeout(PROCESS_GUARD, streams.join_next())
        .await
        .expect("every stream ends in time")
    {
        let reply = reply.expect("the client saw the stream through");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert!(reply.text().contains("message_stop"), "{:?}", reply.body);
        served += 1;
    }
    assert_eq!(served, count);
    let rest = server.terminate().await;
    assert!(rest.contains("connection limit reached"), "{rest}");
    assert!(!rest.contains("accepting a connection failed"), "{rest}");
    assert_eq!(records(dir.path(), 1000).await.len(), count);
}

#[tokio::test]
async fn a_configured_connection_limit_makes_more_clients_wait() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command
        .args(["--max-connections", "4"])
        .env("LOG_LEVEL", "warn");
    let server = Server::start(command).await;
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..12 {
        // About a second each, so the twelve overlap and eight of them wait.
        let request = messages_request(&server.url, true, &[("x-mock-chunk-delay-ms", "50")]);
        streams.spawn(async move { send(request).await });
    }
    while let Some(reply) = tokio::time::timeout(PROCESS_GUARD, streams.join_next())
        .await
        .expect("every stream ends in time")
    {
        let reply = reply.expect("the client saw the stream through");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    let rest = server.terminate().await;
    assert!(rest.contains("connection limit reached"), "{rest}");
    assert!(rest.contains("max_connections=4"), "{rest}");
    assert_eq!(records(dir.path(), 100).await.len(), 12);
}

#[tokio::test]
async fn a_connection_limit_above_what_the_open_files_allow_is_lowered_and_said() {
    let (_, hard) = open_files_limit("self");
    let files = 256.min(hard);
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_under_ulimit(dir.path(), &format!("-n {files}"));
    command
        .args(["--max-connections", "100000"])
        .env("LOG_LEVEL", "warn");
    let server = Server::start(command).await;
    let rest = server.terminate().await;
    let fit = (files.saturating_sub(64) / 2).max(8);
    assert!(
        rest.contains(&format!(
            "max_connections is more than the open-files limit allows; serving {fit} at once"
        )),
        "{rest}"
    );
}
