//! The proxy under test: the real `ccflare-server` binary as its own process, in a temp folder
//! (database, home, log) with a clean environment, pointed at the mock upstream. It is stopped
//! with SIGTERM so that it flushes its records, and then its database is counted.
//!
//! With `--ui` it is the `ccflare` binary instead, with its terminal UI open on the Requests
//! tab in a detached tmux session of 120×40 (a private tmux server in the temp folder): the
//! same server, plus the UI drawing every request as it finishes. Its log goes to the log
//! file (`CCFLARE_LOG_FILE`), since the terminal is the UI's.

use anyhow::{Context, Result, bail};
use ccflare_core::Secret;
use ccflare_storage::{Db, requests};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server may take to print its address, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Time a server gets to finish starting (account sync, first allocations) before load or an
/// idle sample.
pub const SETTLE: Duration = Duration::from_millis(500);

pub struct Server {
    /// Before `dir`: fields drop in order, and a tmux server is ended through its socket there.
    process: Process,
    pub url: String,
    pub pid: u32,
    pub log_path: PathBuf,
    db_path: PathBuf,
    dir: tempfile::TempDir,
    /// The client key it requires (`--client-keys`), sent with every request through it.
    pub client_key: Option<String>,
}

/// How the server runs: a child of ours, or `ccflare` in its own tmux session.
enum Process {
    Child(Child),
    Ui(Tmux),
}

/// A tmux server of our own (its socket in the server's temp folder) with one session,
/// `ccflare`, whose pane stays after the program exits so that its exit status can be read.
/// Dropping it ends the tmux server and whatever runs in it.
struct Tmux {
    /// Where the pane's shell writes ccflare's exit status (tmux 3.3a can mark a pane dead
    /// without its `pane_dead_status`, so the status is not read from tmux).
    exit_file: PathBuf,
    socket: PathBuf,
}

impl Tmux {
    /// tmux on our socket, with nothing of our environment (`-u`: the screen is UTF-8).
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

    /// Runs tmux with `args`; its standard output.
    async fn run(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command()
            .args(args)
            .output()
            .await
            .context("running tmux (is it installed?)")?;
        if !output.status.success() {
            bail!(
                "tmux {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn screen(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", "ccflare"]).await
    }

    /// Polls the screen until `test` holds; the screen then.
    async fn wait_for(&self, what: &str, test: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let screen = self.screen().await?;
            if test(&screen) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                bail!(
                    "ccflare's UI did not show {what} within {START_TIMEOUT:?}; the screen:\n{screen}"
                );
            }
        }
    }

    /// ccflare's exit status once it has exited (written by the pane's shell); `None` while
    /// it runs.
    async fn exit_status(&self) -> Result<Option<i32>> {
        match std::fs::read_to_string(&self.exit_file) {
            Ok(text) if text.ends_with('\n') => Ok(Some(text.trim().parse().unwrap_or(-1))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).context("reading ccflare's exit status"),
        }
    }

    /// Waits for the program in the pane to exit; its exit status.
    async fn wait_exit(&self) -> Result<Option<i32>> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if let Some(status) = self.exit_status().await? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                bail!("ccflare did not exit within {STOP_TIMEOUT:?}");
            }
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // A moment's work, once, at the end.
        let _ = std::process::Command::new("tmux")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// The database after the server stopped.
#[derive(Debug)]
pub struct Records {
    pub rows: u64,
    /// Request ids the clients saw that have no row: how many, and which.
    pub missing_ids: u64,
    pub missing: Vec<String>,
    pub exit_code: Option<i32>,
    /// Rows per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Rows per serving account (`-` for none).
    pub accounts: BTreeMap<String, u64>,
    /// Rows that took more than one attempt: an account refused, the next served.
    pub failed_over: u64,
}

/// What a server needs beyond the defaults: more environment, OAuth accounts stored in its
/// database before it starts (the way `ccflare-cli accounts add --oauth` leaves them), and
/// whether it requires a client key, created before it starts ([`Server::client_key`]).
#[derive(Debug, Default)]
pub struct Extras {
    pub env: Vec<(&'static str, String)>,
    pub oauth_accounts: Vec<OAuthAccount>,
    pub client_key: bool,
}

#[derive(Debug)]
pub struct OAuthAccount {
    pub name: String,
    pub access: String,
    pub refresh: String,
    /// When the access token expires, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// The binary `name` (`ccflare-server`, `ccflare`) next to this one: the same target folder
/// and profile.
pub fn default_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating ccflare-bench")?;
    let dir = exe.parent().context("ccflare-bench has no parent folder")?;
    Ok(dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// `release`, `debug` or `unknown`, from the binary's folder name: a debug server's figures
/// say little about the product.
pub fn profile_of(binary: &Path) -> String {
    let folder = binary
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    match folder {
        Some(name @ ("release" | "debug")) => name.to_owned(),
        _ => "unknown".to_owned(),
    }
}

impl Server {
    /// Says which server this is (`what`), where it runs and `plan`, then waits [`SETTLE`].
    pub async fn announce_and_settle(&self, what: &str, plan: &str) {
        eprintln!(
            "ccflare-bench: {what} (pid {}) at {}, log {}; {plan}",
            self.pid,
            self.url,
            self.log_path.display()
        );
        tokio::time::sleep(SETTLE).await;
    }

    pub async fn start(binary: &Path, upstream: &str, keys: &[String]) -> Result<Server> {
        Self::start_with(binary, upstream, keys, &Extras::default()).await
    }

    pub async fn start_with(
        binary: &Path,
        upstream: &str,
        keys: &[String],
        extras: &Extras,
    ) -> Result<Server> {
        if !binary.is_file() {
            bail!(
                "no server binary at {}: build it (cargo build --release --bin ccflare-server) or pass --server-bin",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ccflare-bench-")
            .tempdir()
            .context("creating a temp folder")?;
        let db_path = dir.path().join("bench.db");
        if !extras.oauth_accounts.is_empty() {
            seed_oauth_accounts(&db_path, &extras.oauth_accounts).await?;
        }
        let mut env = extras.env.clone();
        let client_key = if extras.client_key {
            env.push(("REQUIRE_CLIENT_KEYS", "true".to_owned()));
            Some(create_client_key(&db_path).await?)
        } else {
            None
        };
        let mut server = Self::spawn(binary, upstream, keys, &env, dir, "server.log").await?;
        server.client_key = client_key;
        Ok(server)
    }

    /// A new server on the database this one left, in the same folder, with its own log
    /// (`log_name`). This one must have exited ([`Server::kill`] or a crash).
    pub async fn restart(
        self,
        binary: &Path,
        upstream: &str,
        keys: &[String],
        log_name: &str,
    ) -> Result<Server> {
        Self::spawn(binary, upstream, keys, &[], self.dir, log_name).await
    }

    async fn spawn(
        binary: &Path,
        upstream: &str,
        keys: &[String],
        env: &[(&'static str, String)],
        dir: tempfile::TempDir,
        log_name: &str,
    ) -> Result<Server> {
        let db_path = dir.path().join("bench.db");
        let log_path = dir.path().join(log_name);
        let log = std::fs::File::create(&log_path).context("creating the server log")?;
        let mut command = Command::new(binary);
        // A clean environment: no .env, no config file, no DATABASE_URL of the person running
        // the bench. Only the log level may be passed through, to measure its cost.
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DATABASE_URL", &db_path)
            .env("CLAUDE_API_KEYS", keys.join(","))
            .env("CCFLARE_UPSTREAM_URL", upstream);
        for name in ["LOG_LEVEL", "RUST_LOG", "LOG_FORMAT"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line
                    .trim()
                    .strip_prefix("point clients at it:  export ANTHROPIC_BASE_URL=")
                {
                    return Ok(Some(url.to_owned()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let url = match url {
            Ok(Ok(Some(url))) => url,
            _ => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("ccflare-server did not start; its log:\n{log}");
            }
        };
        // Whatever else it prints is read and dropped, so a full pipe can never block it.
        tokio::spawn(async move {
            // Bounded by the server's lifetime: the stream ends when it exits.
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        Ok(Server {
            process: Process::Child(child),
            url,
            pid,
            log_path,
            db_path,
            dir,
            client_key: None,
        })
    }

    /// The `ccflare` binary with its UI open on the Requests tab, in a tmux session of 120×40,
    /// proxying to `upstream` with `keys`.
    pub async fn start_ui(binary: &Path, upstream: &str, keys: &[String]) -> Result<Server> {
        if !binary.is_file() {
            bail!(
                "no ccflare binary at {}: build it (cargo build --release --bin ccflare) or pass --ui-bin",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ccflare-bench-ui-")
            .tempdir()
            .context("creating a temp folder")?;
        let db_path = dir.path().join("bench.db");
        let log_path = dir.path().join("server.log");
        let config = dir.path().join("tmux.conf");
        std::fs::write(&config, "set -g remain-on-exit on\nset -g status off\n")
            .context("writing the tmux configuration")?;
        let tmux = Tmux {
            socket: dir.path().join("tmux.sock"),
            exit_file: dir.path().join("exit-status"),
        };
        // The same clean environment as the headless server's. A shell runs `env … ccflare`
        // (env execs ccflare, the shell's one child) and writes its exit status to a file.
        let mut env = vec![
            format!("HOME={}", dir.path().display()),
            "HOST=127.0.0.1".to_owned(),
            "PORT=0".to_owned(),
            format!("DATABASE_URL={}", db_path.display()),
            format!("CLAUDE_API_KEYS={}", keys.join(",")),
            format!("CCFLARE_UPSTREAM_URL={upstream}"),
            format!("CCFLARE_LOG_FILE={}", log_path.display()),
        ];
        for name in ["LOG_LEVEL", "RUST_LOG", "LOG_FORMAT"] {
            if let Ok(value) = std::env::var(name) {
                env.push(format!("{name}={value}"));
            }
        }
        let binary = binary.display().to_string();
        let directory = dir.path().display().to_string();
        let config = config.display().to_string();
        let mut args = vec![
            "-f",
            &config,
            "new-session",
            "-d",
            "-s",
            "ccflare",
            "-x",
            "120",
            "-y",
            "40",
            "-c",
            &directory,
            "sh",
            "-c",
            "env \"$@\"; echo $? > exit-status",
            "sh",
        ];
        args.extend(env.iter().map(String::as_str));
        args.push(&binary);
        tmux.run(&args).await?;
        let screen = tmux
            .wait_for("its Overview", |s| s.contains("listening http://"))
            .await?;
        let url = screen
            .lines()
            .find_map(|line| line.split("listening ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .context("the Overview shows no address")?
            .to_owned();
        let shell: u32 = tmux
            .run(&["list-panes", "-t", "ccflare", "-F", "#{pane_pid}"])
            .await?
            .trim()
            .parse()
            .context("reading the pane's pid")?;
        // ccflare is the shell's only child.
        let pid = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .context("reading the pane's children")?
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .context("reading ccflare's pid")?;
        tmux.run(&["send-keys", "-t", "ccflare", "3"]).await?;
        tmux.wait_for("the Requests tab", |s| s.contains("Requests ·"))
            .await?;
        Ok(Server {
            process: Process::Ui(tmux),
            url,
            pid,
            log_path,
            db_path,
            dir,
            client_key: None,
        })
    }

    /// Waits for the exit of a server that was told to stop; its exit code.
    async fn wait_exit(&mut self) -> Result<Option<i32>> {
        match &mut self.process {
            Process::Child(child) => Ok(tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .context("ccflare-server did not exit within 60 s")?
                .context("waiting for ccflare-server")?
                .code()),
            Process::Ui(tmux) => tmux.wait_exit().await,
        }
    }

    /// SIGTERM, wait for the exit (the writer flushes first), then count the rows and look up
    /// every request id a client saw.
    pub async fn stop_and_count(mut self, seen_ids: &[String]) -> Result<Records> {
        // `kill` rather than a signal call: the workspace forbids `unsafe`.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let exit = self.wait_exit().await?;
        let records = count_rows(&self.db_path, seen_ids, exit).await?;
        // The folder (database, log) goes here, after the tmux server of `--ui`, which is told
        // to end through its socket in that folder.
        let Server { process, dir, .. } = self;
        drop(process);
        drop(dir);
        Ok(records)
    }

    /// SIGKILL, as a crash or the OOM killer would end it: no flush, no checkpoint. Returns the
    /// instant just before the signal went, once the process has exited.
    pub async fn kill(&mut self) -> Result<Instant> {
        let at = Instant::now();
        match &mut self.process {
            Process::Child(child) => child.start_kill().context("sending SIGKILL")?,
            Process::Ui(_) => {
                let status = std::process::Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status()
                    .context("running kill")?;
                if !status.success() {
                    bail!("kill -KILL {} failed", self.pid);
                }
            }
        }
        self.wait_exit().await?;
        Ok(at)
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Counts the rows of the database at `path` (its server has exited) and looks up every
/// request id a client saw.
pub async fn count_rows(
    path: &Path,
    seen_ids: &[String],
    exit_code: Option<i32>,
) -> Result<Records> {
    let db = Db::open_path(path)
        .await
        .context("opening the server's database")?;
    let rows = requests::count(&db)
        .await
        .context("counting request rows")?;
    let rows = u64::try_from(rows).unwrap_or(0);
    let limit = u32::try_from(rows.max(1)).unwrap_or(u32::MAX);
    let mut stored = HashSet::new();
    let mut statuses = BTreeMap::new();
    let mut accounts = BTreeMap::new();
    let mut failed_over = 0;
    for record in requests::recent(&db, limit)
        .await
        .context("reading request rows")?
    {
        *statuses.entry(record.status).or_default() += 1;
        let account = record.account_name.unwrap_or_else(|| "-".to_owned());
        *accounts.entry(account).or_default() += 1;
        if record.attempts > 1 {
            failed_over += 1;
        }
        stored.insert(record.id);
    }
    let missing: Vec<String> = seen_ids
        .iter()
        .filter(|id| !stored.contains(*id))
        .cloned()
        .collect();
    db.close().await;
    Ok(Records {
        rows,
        missing_ids: missing.len() as u64,
        missing,
        exit_code,
        statuses,
        accounts,
        failed_over,
    })
}

/// Stores OAuth accounts in a new database at `path`, which the server then opens as its own.
/// Creates the client key `bench` (no limits) in the database at `path`; returns the key.
async fn create_client_key(path: &Path) -> Result<String> {
    let db = Db::open_path(path)
        .await
        .context("creating the server's database")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let limits = ccflare_core::client_key::KeyLimits::default();
    let (_, key) = ccflare_storage::keys::create(&db, "bench", &limits, None, now)
        .await
        .context("creating the bench's client key")?;
    db.close().await;
    Ok(key.expose().to_owned())
}

async fn seed_oauth_accounts(path: &Path, oauth_accounts: &[OAuthAccount]) -> Result<()> {
    let db = Db::open_path(path)
        .await
        .context("creating the server's database")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for account in oauth_accounts {
        ccflare_storage::oauth::add_oauth_account(
            &db,
            &account.name,
            &Secret::new(account.access.clone()),
            Some(&Secret::new(account.refresh.clone())),
            account.expires_at_ms,
            None,
            now,
        )
        .await
        .with_context(|| format!("adding the OAuth account {}", account.name))?;
    }
    db.close().await;
    Ok(())
}
