//! Runs the real `ccflare-server` binary for tests: a temp dir as working directory and home,
//! a clean environment, the mock upstream in-process, and helpers to talk to it over HTTP.

#![allow(dead_code)]

use bytes::Bytes;
use ccflare_mock::MockUpstream;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

pub const GUARD: Duration = Duration::from_secs(30);

pub fn key(name: &str) -> String {
    format!("sk-ant-api03-{name}-0123456789abcdefghij-{name}")
}

/// A command for the server binary with an empty environment apart from PATH and HOME.
pub fn server_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ccflare-server"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("PORT", "0")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the binary to completion (for start-up failures): exit code, stdout, stderr.
pub async fn run_to_end(mut command: Command) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(GUARD, command.output())
        .await
        .expect("exits in time")
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub struct Server {
    pub child: Child,
    pub url: String,
    /// Start-up lines printed on stdout, up to the `export ANTHROPIC_BASE_URL` line.
    pub banner: String,
    stdout: Option<BufReader<ChildStdout>>,
    /// Reads stderr while the server runs: a server that logs more than a pipe holds (64 KiB,
    /// easily reached at `LOG_LEVEL=trace`) would otherwise block writing and never exit.
    stderr: Option<tokio::task::JoinHandle<String>>,
}

impl Server {
    /// Starts the server and waits until it prints where it listens.
    pub async fn start(mut command: Command) -> Server {
        let mut child = command.spawn().expect("server starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = child.stderr.take().map(|err: ChildStderr| {
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = BufReader::new(err).read_to_string(&mut text).await;
                text
            })
        });
        let mut banner = String::new();
        let url = tokio::time::timeout(GUARD, async {
            loop {
                let mut line = String::new();
                if stdout.read_line(&mut line).await.expect("read stdout") == 0 {
                    panic!("server exited before listening; printed:\n{banner}");
                }
                banner.push_str(&line);
                if let Some(url) = line
                    .trim()
                    .strip_prefix("point clients at it:  export ANTHROPIC_BASE_URL=")
                {
                    return url.to_owned();
                }
            }
        })
        .await
        .expect("server prints its address in time");
        Server {
            child,
            url,
            banner,
            stdout: Some(stdout),
            stderr,
        }
    }

    /// Sends SIGTERM, waits for the exit and asserts it was clean (exit code 0: the server
    /// shut down rather than being killed by the signal); returns everything printed after the
    /// banner (stdout then stderr).
    pub async fn terminate(self) -> String {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let (code, rest) = self.terminate_after_signal().await;
        assert_eq!(
            code,
            Some(0),
            "SIGTERM is a clean shutdown; printed:\n{rest}"
        );
        rest
    }

    /// Waits for an exit already asked for; returns the exit code and the rest of the output.
    pub async fn terminate_after_signal(mut self) -> (Option<i32>, String) {
        let code = tokio::time::timeout(GUARD, self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait")
            .code();
        let mut rest = String::new();
        if let Some(mut out) = self.stdout.take() {
            out.read_to_string(&mut rest).await.expect("stdout");
        }
        if let Some(err) = self.stderr.take() {
            rest.push_str(&err.await.expect("stderr reader"));
        }
        (code, rest)
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub async fn send(request: http::Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(GUARD, client().request(request))
        .await
        .expect("in time")
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(GUARD, body.collect())
        .await
        .expect("in time")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub fn messages_request(
    url: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"claude-haiku-4-5","max_tokens":32,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let mut builder = http::Request::post(format!("{url}/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-ant-api03-client-own-key-must-not-leak");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body))).expect("request")
}

pub fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

pub async fn mock() -> MockUpstream {
    MockUpstream::start().await.expect("mock starts")
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("ccflare.db")
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
