//! Runs the real `ccflare-cli` binary for tests: a temp dir as working directory and home, a
//! clean environment (PATH, HOME, `NO_COLOR`, `TZ=UTC` and a fixed clock), the database
//! `./ccflare.db` in that dir, and helpers that write request rows and account state the way
//! a server would (through the storage writer). The process helpers come from
//! `ccflare-testkit`.

#![allow(dead_code)]

use ccflare_core::record::RequestRecord;
use ccflare_core::usage::Usage;
use ccflare_core::{AccountId, AccountStatus, Millis};
use ccflare_storage::{AccountStateUpdate, Db, Writer};
use ccflare_testkit::process::{isolated_command, run_to_end};
use std::path::Path;
use tokio::process::Command;

/// The fixed "now" of every test run: 2026-11-26T10:00:00Z.
pub const NOW: Millis = 1_795_687_200_000;
pub const MIN: Millis = 60_000;
pub const HOUR: Millis = 60 * MIN;
pub const DAY: Millis = 24 * HOUR;

/// A key ending in `tail`, which its masked form (`sk-ant-…` and four characters) shows: the
/// snapshots read `sk-ant-…AAAA` rather than a name.
pub fn key(tail: &str) -> String {
    format!("sk-ant-api03-0123456789abcdefghij-{tail}")
}

pub struct Cli {
    pub dir: tempfile::TempDir,
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
        self.stdout
    }

    /// Asserts a failure with exactly one line on stderr, and returns that line.
    pub fn fails(self) -> String {
        assert_ne!(self.code, Some(0), "must fail; stdout: {}", self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {:?}", self.stderr);
        assert!(
            lines[0].starts_with("ccflare-cli: error: "),
            "{:?}",
            self.stderr
        );
        lines[0].to_owned()
    }
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with a clean environment in the temp dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = isolated_command(env!("CARGO_BIN_EXE_ccflare-cli"), self.path());
        command
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .env("CCFLARE_NOW_MS", NOW.to_string())
            .env("DATABASE_URL", "file:./ccflare.db")
            .args(args);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        output(self.command(args)).await
    }

    /// The same database, opened by the test.
    pub async fn db(&self) -> Db {
        Db::open_path(&self.path().join("ccflare.db"))
            .await
            .expect("database opens")
    }
}

pub async fn output(command: Command) -> Output {
    let output = run_to_end(command).await;
    Output {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A request row as the proxy records it.
pub struct Request {
    pub at: Millis,
    pub model: Option<&'static str>,
    pub account: Option<(i64, &'static str)>,
    pub status: u16,
    pub latency_ms: i64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cost: f64,
    pub error: Option<(&'static str, &'static str)>,
}

impl Request {
    pub fn ok(at: Millis, model: &'static str, account: (i64, &'static str)) -> Request {
        Request {
            at,
            model: Some(model),
            account: Some(account),
            status: 200,
            latency_ms: 1_200,
            input: 1_000,
            output: 250,
            cache_read: 0,
            cost: 0.0125,
            error: None,
        }
    }
}

/// Writes rows and account states through the storage writer, as a server does.
pub async fn record(db: &Db, requests: &[Request], states: &[AccountStateUpdate]) {
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    for (i, r) in requests.iter().enumerate() {
        handle.record(RequestRecord {
            id: format!("ccf_test_{i:04}"),
            started_at: r.at,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: r.model.map(str::to_owned),
            account_id: r.account.map(|(id, _)| AccountId(id)),
            account_name: r.account.map(|(_, name)| name.to_owned()),
            status: r.status,
            success: r.error.is_none(),
            error_type: r.error.map(|(t, _)| t.to_owned()),
            error_message: r.error.map(|(_, m)| m.to_owned()),
            attempts: 1,
            latency_ms: r.latency_ms,
            ttfb_ms: Some(r.latency_ms / 4),
            streamed: true,
            usage: Usage {
                input_tokens: r.input,
                output_tokens: r.output,
                cache_read_input_tokens: r.cache_read,
                ..Default::default()
            },
            cost_usd: r.cost,
            ..Default::default()
        });
    }
    for state in states {
        handle.account_state(state.clone());
    }
    writer.close().await;
}

pub fn benched(id: i64, status: AccountStatus, until: Option<Millis>) -> AccountStateUpdate {
    AccountStateUpdate {
        id: AccountId(id),
        revision: None,
        status,
        rate_limited_until: until,
        overloaded_until: None,
        last_ratelimit: None,
    }
}
