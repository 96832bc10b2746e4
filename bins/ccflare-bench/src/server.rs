//! The proxy under test: the real `ccflare-server` binary as its own process, in a temp folder
//! (database, home, log) with a clean environment, pointed at the mock upstream. It is stopped
//! with SIGTERM so that it flushes its records, and then its database is counted.

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
    child: Child,
    pub url: String,
    pub pid: u32,
    pub log_path: PathBuf,
    db_path: PathBuf,
    dir: tempfile::TempDir,
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

/// What a server needs beyond the defaults: more environment, and OAuth accounts stored in its
/// database before it starts (the way `ccflare-cli accounts add --oauth` leaves them).
#[derive(Debug, Default)]
pub struct Extras {
    pub env: Vec<(&'static str, String)>,
    pub oauth_accounts: Vec<OAuthAccount>,
}

#[derive(Debug)]
pub struct OAuthAccount {
    pub name: String,
    pub access: String,
    pub refresh: String,
    /// When the access token expires, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// The `ccflare-server` next to this binary: the same target folder and profile.
pub fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating ccflare-bench")?;
    let dir = exe.parent().context("ccflare-bench has no parent folder")?;
    Ok(dir.join(format!("ccflare-server{}", std::env::consts::EXE_SUFFIX)))
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
        Self::spawn(binary, upstream, keys, &extras.env, dir, "server.log").await
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
            child,
            url,
            pid,
            log_path,
            db_path,
            dir,
        })
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
        let exit = tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .context("ccflare-server did not exit within 60 s of SIGTERM")?
            .context("waiting for ccflare-server")?;
        let records = count_rows(&self.db_path, seen_ids, exit.code()).await?;
        // The folder (database, log) goes with `self.dir` here.
        drop(self.dir);
        Ok(records)
    }

    /// SIGKILL, as a crash or the OOM killer would end it: no flush, no checkpoint. Returns the
    /// instant just before the signal went, once the process has exited.
    pub async fn kill(&mut self) -> Result<Instant> {
        let at = Instant::now();
        self.child.start_kill().context("sending SIGKILL")?;
        tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .context("ccflare-server did not exit within 60 s of SIGKILL")?
            .context("waiting for ccflare-server")?;
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
