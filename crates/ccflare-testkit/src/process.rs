//! Child processes for the tests of the binaries: a command that sees none of the test's
//! environment, running one to its end, and [`Server`], a running `ccflare-server`.

use crate::PROCESS_GUARD;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// A command for `program` in `dir` that inherits nothing but `PATH`, with `dir` as its home
/// too, so no `DATABASE_URL`, `.env`, config file or key of the machine running the tests can
/// reach it. Standard input is closed, the output piped, and the process is killed if the test
/// drops it.
pub fn isolated_command(program: impl AsRef<OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The workspace binary `name` (`ccflare-server`) beside `sibling`, a binary of the test's own
/// package (its `CARGO_BIN_EXE_…`), built for this test run.
///
/// It asks cargo, once per test process, for exactly what `cargo test --workspace` builds (the
/// README's test command, scripts/test.sh), so under that command every artifact is already
/// fresh and nothing compiles again, and a lone `cargo test -p …` still gets a current binary.
/// Building only `-p ccflare-server` would resolve features without the workspace's
/// dev-dependencies (tokio's `process` and `test-util`) and compile tokio, hyper, sqlx and every
/// ccflare crate a second time: minutes of CI and gigabytes of disk (a CI machine ran out).
pub fn workspace_binary(sibling: &Path, name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let profile_dir = sibling.parent().expect("a binary sits in target/<profile>");
    BUILT.get_or_init(|| {
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let profile: &[&str] = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => &[],
            Some("release") => &["--release"],
            Some(other) => &["--profile", other],
            None => panic!("unexpected target layout: {}", profile_dir.display()),
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // What cargo sets for the running test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, …) must not
        // reach this build: a build script that watches one of them (ring's watches
        // CARGO_MANIFEST_DIR) would run again and recompile everything above it.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || matches!(
                    &*name,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cargo.env_remove(&*name);
            }
        }
        let status = cargo
            .args(["test", "--workspace", "--no-run", "--quiet"])
            .args(profile)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(&workspace)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the workspace's binaries failed");
    });
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.is_file(), "no {name} at {}", binary.display());
    binary
}

/// Runs `command` to its end within [`PROCESS_GUARD`].
pub async fn run_to_end(mut command: Command) -> Output {
    tokio::time::timeout(PROCESS_GUARD, command.output())
        .await
        .expect("exits in time")
        .expect("runs")
}

/// The line after which `ccflare-server` serves: its address follows.
const LISTENING: &str = "point clients at it:  export ANTHROPIC_BASE_URL=";

/// A running `ccflare-server` (or anything that prints the same start-up lines).
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
        let stderr = child.stderr.take().map(|err| {
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = BufReader::new(err).read_to_string(&mut text).await;
                text
            })
        });
        let mut banner = String::new();
        let url = tokio::time::timeout(PROCESS_GUARD, async {
            loop {
                let mut line = String::new();
                if stdout.read_line(&mut line).await.expect("read stdout") == 0 {
                    panic!("server exited before listening; printed:\n{banner}");
                }
                banner.push_str(&line);
                if let Some(url) = line.trim().strip_prefix(LISTENING) {
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

    /// Sends SIGTERM and returns at once, for a test that watches what happens during the
    /// shutdown; [`terminate_after_signal`](Self::terminate_after_signal) then waits for the exit.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Sends SIGTERM, waits for the exit and asserts it was clean (exit code 0: the server
    /// shut down rather than being killed by the signal); returns everything printed after the
    /// banner (stdout then stderr).
    pub async fn terminate(self) -> String {
        self.sigterm();
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
        let code = tokio::time::timeout(PROCESS_GUARD, self.child.wait())
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

    /// Kills the server (SIGKILL) for a test that checks nothing about how it ends.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(PROCESS_GUARD, self.child.wait()).await;
    }
}
