//! The real `ccflare` binary in a real terminal: a detached tmux session of 120×40 on a
//! private tmux socket, proxying to the mock upstream. The screen is read with
//! `tmux capture-pane -p`, keys are sent with `tmux send-keys`, and every wait polls the
//! screen under a guard.
//!
//! tmux is a system package (Debian `tmux`, installed by `.ci/run`). Without it the test says
//! so and passes locally; under `CI` it fails, so CI cannot skip it unseen.

use ccflare_mock::MockUpstream;
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::process::{Server, isolated_command, run_to_end};
use ccflare_testkit::{Message, PROCESS_GUARD, Reply, eventually, key, open, send};
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The promise: a finished request is on the Requests tab this soon after its answer.
const SHOWN_WITHIN: Duration = Duration::from_secs(2);

/// Whether tmux can be used; false (with a note) only outside CI.
fn have_tmux(test: &str) -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: tmux is missing, and CI must run this test (.ci/run installs the tmux package)"
        );
        eprintln!("{test}: skipped, tmux is not installed (apt-get install tmux)");
    }
    found
}

/// A tmux server of our own (its socket in the test's temp dir), with one session running
/// `ccflare` and, when it exits, its exit status and the terminal's modes.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `program` with `env` in a 120×40 session, in `dir`.
    fn start(dir: &Path, program: &Path, env: &[(&str, String)]) -> Tmux {
        let socket = dir.join("tmux.sock");
        let config = dir.join("tmux.conf");
        // The pane stays after the program exits, so its last words can be read.
        std::fs::write(&config, "set -g remain-on-exit on\nset -g status off\n").unwrap();
        let assignments: Vec<String> = env
            .iter()
            .map(|(name, value)| format!("{name}='{value}'"))
            .collect();
        let script = format!(
            "env {} '{}'; echo \"ccflare exited with $?\"; stty -a",
            assignments.join(" "),
            program.display()
        );
        let tmux = Tmux { socket };
        let status = tmux
            .command()
            .arg("-f")
            .arg(&config)
            .args([
                "new-session",
                "-d",
                "-s",
                "ccflare",
                "-x",
                "120",
                "-y",
                "40",
            ])
            .arg("-c")
            .arg(dir)
            .arg(script)
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    /// tmux on our socket, with an environment of our own: nothing of the test's reaches the
    /// session (`-u`: the screen is UTF-8).
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .arg("-u")
            .arg("-S")
            .arg(&self.socket);
        command
    }

    /// The pane's text: the visible screen, and the lines scrolled off it (a dead pane's
    /// notice can push the first line off).
    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-S", "-", "-t", "ccflare"])
            .output()
            .expect("tmux capture-pane runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The `ccflare` process in the pane (a child of the pane's shell).
    fn ccflare_pid(&self) -> u32 {
        let output = self
            .command()
            .args(["list-panes", "-t", "ccflare", "-F", "#{pane_pid}"])
            .output()
            .expect("tmux list-panes runs");
        let shell = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        // /proc/<pid>/stat: "pid (name) state ppid …".
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    let ppid = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1));
                    stat.contains("(ccflare)") && ppid == Some(shell.as_str())
                })
            })
            .expect("ccflare runs in the pane")
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", "ccflare"])
            .args(keys)
            .status()
            .expect("tmux send-keys runs");
        assert!(status.success());
    }

    /// Waits until the screen shows `what` (a test on it), and returns the screen.
    async fn wait_for(&self, within: Duration, what: &str, test: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = tokio::time::timeout(
            within,
            eventually(within, what, || {
                let screen = self.screen();
                let shown = test(&screen);
                last = screen.clone();
                async move { shown.then_some(screen) }
            }),
        )
        .await;
        match found {
            Ok(screen) => screen,
            Err(_) => panic!("{what} within {within:?}; the screen:\n{last}"),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The nice value of a task, from its `/proc/…/stat` ("pid (name) state ppid …": the 19th
/// field): `self` for this test (the server's threads start with the value they inherit), or
/// `<pid>/task/<tid>` for one thread.
fn nice_of(task: &str) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{task}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

async fn message(url: &str) -> Reply {
    let body = Message::new("claude-haiku-4-5").content("hi").body();
    let reply = send(anthropic_post(
        &format!("{url}/v1/messages"),
        "client",
        &[],
        body,
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

/// `ccflare` in tmux with API-key accounts `one` and `two`, proxying to `mock`, once its
/// Overview is up; and the address it listens on.
async fn start_ccflare(dir: &Path, mock: &MockUpstream) -> (Tmux, String) {
    let tmux = Tmux::start(
        dir,
        Path::new(env!("CARGO_BIN_EXE_ccflare")),
        &[
            ("HOME", dir.display().to_string()),
            ("PORT", "0".to_owned()),
            ("DATABASE_URL", dir.join("ccflare.db").display().to_string()),
            ("CCFLARE_UPSTREAM_URL", mock.url()),
            ("CLAUDE_API_KEYS", format!("{},{}", key("one"), key("two"))),
            (
                "CCFLARE_LOG_FILE",
                dir.join("ccflare.log").display().to_string(),
            ),
        ],
    );
    // The Overview: where it listens, and the two accounts.
    let screen = tmux
        .wait_for(PROCESS_GUARD, "the Overview", |s| {
            s.contains("listening http://127.0.0.1:") && s.contains("2 active")
        })
        .await;
    let url = screen
        .lines()
        .find_map(|line| line.split("listening ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the listening address")
        .to_owned();
    (tmux, url)
}

/// Checks the pane after `ccflare` exited: status 0, its one line, a cooked terminal, the
/// shell's screen (not the UI's), and no log line on the terminal. Returns the screen.
async fn assert_clean_exit(tmux: &Tmux, url: &str) -> String {
    let screen = tmux
        .wait_for(PROCESS_GUARD, "ccflare's exit", |s| {
            s.contains("ccflare exited with") && s.contains("icanon")
        })
        .await;
    assert!(screen.contains("ccflare exited with 0"), "{screen}");
    assert!(
        screen.contains(&format!("ccflare: stopped the server on {url}")),
        "{screen}"
    );
    let modes: Vec<&str> = screen.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            modes.contains(&mode),
            "{mode} is on again after exit:\n{screen}"
        );
    }
    // The alternate screen is gone: the UI's tab bar is not on the shell's screen. And the
    // server wrote no log line to the terminal, not even while draining after the UI closed.
    assert!(!screen.contains("1 Overview"), "{screen}");
    assert!(
        !screen.contains("INFO") && !screen.contains("shut down cleanly"),
        "{screen}"
    );
    screen
}

#[tokio::test]
async fn the_ui_shows_the_server_at_work_and_gives_the_terminal_back() {
    if !have_tmux("the_ui_shows_the_server_at_work_and_gives_the_terminal_back") {
        return;
    }
    let mock = MockUpstream::start().await.expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let (tmux, url) = start_ccflare(dir.path(), &mock).await;

    // The UI's thread yields to the server's: it runs at the lowest priority, the proxy's
    // threads at the one they were started with.
    let pid = tmux.ccflare_pid();
    let nice = |tid: &str| nice_of(&format!("{pid}/task/{tid}"));
    assert_eq!(nice(&pid.to_string()), 19, "the UI's thread");
    let workers: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|comm| comm.starts_with("tokio-rt"))
        })
        .map(|tid| nice(&tid))
        .collect();
    assert!(!workers.is_empty(), "the server's worker threads");
    assert!(
        workers.iter().all(|n| *n == nice_of("self")),
        "the server's threads keep their priority: {workers:?}"
    );

    // A request through the proxy is on the Requests tab at once.
    tmux.keys(&["3"]);
    let reply = message(&url).await;
    let served_by = reply.header("x-ccflare-account").to_owned();
    tmux.wait_for(SHOWN_WITHIN, "the request on the Requests tab", |s| {
        s.contains("claude-haiku-4-5")
            && s.lines()
                .any(|l| l.contains(&served_by) && l.contains("200"))
    })
    .await;

    // Pausing that account on the Accounts tab sends the next request elsewhere.
    tmux.keys(&["2"]);
    let screen = tmux
        .wait_for(PROCESS_GUARD, "both accounts listed", |s| {
            s.contains(&served_by) && s.lines().filter(|l| l.contains("key-")).count() >= 2
        })
        .await;
    let rows: Vec<&str> = screen.lines().filter(|l| l.contains("key-")).collect();
    let row = rows
        .iter()
        .position(|l| l.contains(&served_by))
        .expect("the account's row");
    for _ in 0..row {
        tmux.keys(&["j"]);
    }
    tmux.keys(&["p"]);
    tmux.wait_for(PROCESS_GUARD, "the account shown paused", |s| {
        s.lines()
            .any(|l| l.contains(&served_by) && l.contains("paused"))
    })
    .await;
    let next = message(&url).await;
    assert_ne!(
        next.header("x-ccflare-account"),
        served_by,
        "the paused account served the next request"
    );

    // The Logs tab has the server's lines (nothing went to the terminal).
    tmux.keys(&["5"]);
    tmux.wait_for(PROCESS_GUARD, "the account change in the Logs tab", |s| {
        s.contains("account status changed")
    })
    .await;

    // q drains and stops the server, says so, exits 0 and leaves a cooked terminal.
    tmux.keys(&["q"]);
    assert_clean_exit(&tmux, &url).await;
    // The log file has what the terminal did not get, to the last line.
    let log = std::fs::read_to_string(dir.path().join("ccflare.log")).unwrap();
    for line in [
        "request finished",
        "account status changed through the API",
        "shut down cleanly",
    ] {
        assert!(log.contains(line), "{line:?} in the log file:\n{log}");
    }
}

#[tokio::test]
async fn sigterm_with_the_ui_open_drains_the_server_and_gives_the_terminal_back() {
    if !have_tmux("sigterm_with_the_ui_open_drains_the_server_and_gives_the_terminal_back") {
        return;
    }
    let mock = MockUpstream::start().await.expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let (tmux, url) = start_ccflare(dir.path(), &mock).await;
    // A stream in flight when the signal comes still finishes (the drain).
    let body = Message::new("claude-haiku-4-5")
        .stream(true)
        .content("hi")
        .body();
    let request = anthropic_post(
        &format!("{url}/v1/messages"),
        "client",
        &[
            ("x-mock-chunk-delay-ms", "40"),
            ("x-mock-text", "one two three four five six seven eight"),
        ],
        body,
    );
    let response = open(request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let first = tokio::time::timeout(PROCESS_GUARD, body.frame())
        .await
        .expect("a first frame in time")
        .expect("a first frame")
        .expect("no error");
    received.extend_from_slice(&first.into_data().unwrap_or_default());

    let pid = tmux.ccflare_pid().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    while let Some(frame) = tokio::time::timeout(PROCESS_GUARD, body.frame())
        .await
        .expect("the stream goes on")
    {
        let frame = frame.expect("the stream finishes cleanly");
        received.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("message_stop"), "{text}");
    let screen = assert_clean_exit(&tmux, &url).await;
    assert!(screen.contains("on a signal"), "{screen}");
}

#[tokio::test]
async fn without_a_terminal_it_says_to_use_serve_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("ccflare.db");
    let mut command = isolated_command(env!("CARGO_BIN_EXE_ccflare"), dir.path());
    command.env("PORT", "0").env("DATABASE_URL", &database);
    let output = run_to_end(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ccflare --serve") && stderr.contains("ccflare-server"),
        "{stderr}"
    );
    assert!(!database.exists(), "no database was opened");
}

#[tokio::test]
async fn serve_runs_headless_as_ccflare_server_does() {
    let mock = MockUpstream::start().await.expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let mut command = isolated_command(env!("CARGO_BIN_EXE_ccflare"), dir.path());
    command
        .arg("--serve")
        .env("PORT", "0")
        .env("DATABASE_URL", dir.path().join("ccflare.db"))
        .env("CCFLARE_UPSTREAM_URL", mock.url())
        .env("CLAUDE_API_KEYS", key("one"));
    let server = Server::start(command).await;
    assert!(server.banner.starts_with("ccflare "), "{}", server.banner);
    message(&server.url).await;
    let log = server.terminate().await;
    assert!(log.contains("shut down cleanly"), "{log}");
}
