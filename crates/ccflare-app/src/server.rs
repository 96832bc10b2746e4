//! One server's life: [`Server::start`] (logging → storage → stored settings → open-files
//! limit → listener → `CLAUDE_API_KEYS` → pool, proxy state and management API), then
//! [`Server::serve`] (account sync, retention, `ccflare_proxy::run`), and at the end the drain
//! and the writer's flush, whose outcome is the exit status: records not written, records
//! lost or OAuth logins lost make [`Running::wait`] an error.

use crate::cli::Loaded;
use crate::limits;
use crate::logging::{self, LogFileError, Logging};
use ccflare_api::{Api, LogFeed};
use ccflare_core::config::Settings;
use ccflare_core::{Clock, CoreError, Millis, Secret, SystemClock};
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::{
    AppState, ProxyConfig, ProxyError, Shutdown, UpstreamClient, spawn_account_sync,
};
use ccflare_storage::accounts::{self, Upsert};
use ccflare_storage::{Db, StorageError, Writer, WriterHandle};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long refreshed OAuth tokens waiting for the database get at exit (their background
/// saves retry at least every 5 s).
const UNSAVED_LOGINS_WAIT: Duration = Duration::from_secs(6);

/// Least time the writer gets at exit to write what is still queued.
const WRITER_CLOSE_MIN: Duration = Duration::from_secs(10);

/// Why a server could not start. Each says what to change; the binaries print it as one line
/// with its causes.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    LogFile(#[from] LogFileError),
    #[error(transparent)]
    Config(#[from] ccflare_config::ConfigError),
    #[error(transparent)]
    Database(#[from] StorageError),
    #[error("reading stored settings")]
    StoredSettings(#[source] StorageError),
    #[error(
        "a setting stored in the database is invalid (change it with `ccflare-cli config set`)"
    )]
    StoredSettingInvalid(#[source] CoreError),
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// SPEC §11: the management API may face other machines only behind its admin key.
    #[error(
        "HOST={host} makes the management API (/api, /metrics) reachable from other machines: \
         set an admin key (at least 16 characters) with CCFLARE_ADMIN_KEY, or in a file named \
         by CCFLARE_ADMIN_KEY_FILE or the systemd credential admin_key; or listen on 127.0.0.1"
    )]
    AdminKeyRequired { host: String },
    /// SPEC §11: `/v1` may face other machines only behind client keys.
    #[error(
        "HOST={host} makes /v1 reachable from other machines, and REQUIRE_CLIENT_KEYS=false would \
         let anyone there spend the accounts' quota: remove REQUIRE_CLIENT_KEYS (keys are then \
         required), or listen on 127.0.0.1"
    )]
    ClientKeysOff { host: String },
    #[error(
        "client keys are required ({why}) but none exists, so no client could use /v1: create \
         one with `ccflare-cli keys create NAME` and give each client its key \
         (ANTHROPIC_API_KEY=ccf_…)"
    )]
    NoClientKeys { why: String },
    #[error("reading client keys")]
    ClientKeys(#[source] StorageError),
    #[error(
        "port {port} on {host} is already in use: stop the other process or choose another with \
         --port or PORT"
    )]
    PortInUse { host: String, port: u16 },
    #[error("not allowed to listen on {address}: choose a port above 1023 with --port or PORT")]
    ListenDenied { address: String },
    #[error("cannot listen on {address}: {error}")]
    Listen {
        address: String,
        error: std::io::Error,
    },
    #[error("reading the listening address")]
    LocalAddress(#[source] std::io::Error),
    #[error("adding an account from CLAUDE_API_KEYS")]
    ApiKeys(#[source] StorageError),
    #[error("reading accounts")]
    Accounts(#[source] StorageError),
    #[error(transparent)]
    EncryptionKey(#[from] ccflare_storage::crypto::KeyError),
    /// The stored secrets cannot be read with the configured key (or without one): the
    /// server stops before it writes anything.
    #[error("the database's account credentials cannot be read; nothing was changed")]
    Secrets(#[source] StorageError),
}

impl StartError {
    /// Whether the configuration is what must change (exit status 2, like a bad option): the
    /// encryption key is missing, unreadable or not the one the database was encrypted with.
    pub fn is_configuration(&self) -> bool {
        matches!(self, StartError::EncryptionKey(_) | StartError::Secrets(_))
    }
}

/// What went wrong at the end of a run: records not written, lost, or OAuth logins lost. The
/// process should exit non-zero and say all of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct StopError {
    pub problems: Vec<String>,
}

/// How a run ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open at the shutdown deadline, and cut (their requests are recorded
    /// as the server's cut).
    pub cut_connections: usize,
}

/// What a started server shares with whoever watches it in the same process (the terminal
/// UI): the proxy's state, the database, the management API and its log feed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handles {
    pub state: Arc<AppState>,
    pub db: Db,
    pub api: Api,
    pub logs: LogFeed,
    /// Where it listens.
    pub local: SocketAddr,
    /// When it started, by its clock.
    pub started_at: Millis,
}

/// A server that has started (it listens; connections wait in the backlog) and serves once
/// [`Server::serve`] is called.
#[derive(Debug)]
pub struct Server {
    handles: Handles,
    /// Resolved with the database's stored settings.
    settings: Settings,
    config_file: Option<PathBuf>,
    listener: TcpListener,
    writer: Writer,
    check: JoinHandle<()>,
}

/// A server serving, in a task of its own.
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    stopping: Shutdown,
    task: JoinHandle<Result<Stopped, StopError>>,
}

impl Running {
    /// Asks the server to drain and stop, as SIGTERM does: it stops accepting, lets requests
    /// in flight finish up to the shutdown timeout and flushes its records.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once the server stops accepting (asked by [`Running::stop`] or by the
    /// shutdown future it was given).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.clone();
        async move { stopping.recv().await }
    }

    /// Waits for the end of the run: its report, or what went wrong at the end.
    pub async fn wait(self) -> Result<Stopped, StopError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(StopError {
                problems: vec!["the server's task was cancelled".to_owned()],
            }),
        }
    }
}

impl Server {
    /// Starts a server from `loaded`: sets up logging (`logging` says whether the terminal
    /// gets log lines), opens and migrates the database, merges its stored settings, listens,
    /// adds the `CLAUDE_API_KEYS` accounts and builds the pool, the proxy's state and the
    /// management API. Nothing is served until [`Server::serve`].
    pub async fn start(loaded: Loaded, logging: Logging) -> Result<Server, StartError> {
        let settings = loaded.settings;
        // The log feed of `/api/logs/stream` is filled from the first line on.
        let log_feed = LogFeed::default();
        logging::init(&settings, &log_feed, logging)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);

        let database_url = ccflare_config::database_url(&settings)?;
        // The key first: a key file that cannot be read stops the start before the database
        // is touched. (It is never a stored setting.)
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let key = ccflare_storage::EncryptionKey::configured(
            &settings.encryption_key,
            credentials.as_deref(),
        )?;
        let db = Db::open(&database_url).await?.with_encryption_key(key);
        // Before anything is written: encrypted secrets the key does not open stop the start.
        let secrets = ccflare_storage::secrets::check(&db)
            .await
            .map_err(StartError::Secrets)?;
        match db.encryption_key() {
            Some(key) if secrets.plaintext > 0 => tracing::warn!(
                plaintext = secrets.plaintext,
                key = %key.id(),
                "some account credentials are stored in plaintext: run `ccflare-cli secrets \
                 encrypt` (new ones are encrypted)"
            ),
            Some(key) => tracing::debug!(key = %key.id(), "account credentials are encrypted"),
            None => {}
        }
        // Settings stored by `ccflare-cli config set` or the API rank between env and file.
        let stored = ccflare_storage::settings::all(&db)
            .await
            .map_err(StartError::StoredSettings)?;
        let settings = Settings::resolve_with_database(
            &loaded.layers.flags,
            &loaded.layers.env,
            &stored,
            &loaded.layers.file,
        )
        .map_err(StartError::StoredSettingInvalid)?;
        let max_connections = limits::raise_open_files(settings.max_connections);
        // Listen before anything else starts: a port in use is reported as one line.
        let upstream = UpstreamClient::new(
            &settings.upstream_url,
            Duration::from_secs(settings.connect_timeout_s),
        )?;
        let loopback = is_loopback_host(&settings.host);
        if !loopback && settings.admin_key.is_none() {
            return Err(StartError::AdminKeyRequired {
                host: settings.host.clone(),
            });
        }
        let keys_required = settings.require_client_keys.required(loopback);
        if !loopback && !keys_required {
            return Err(StartError::ClientKeysOff {
                host: settings.host.clone(),
            });
        }
        let any_key = ccflare_storage::keys::any(&db)
            .await
            .map_err(StartError::ClientKeys)?;
        if keys_required && !any_key {
            let why = if loopback {
                "REQUIRE_CLIENT_KEYS=true".to_owned()
            } else {
                format!("HOST={} is reachable from other machines", settings.host)
            };
            return Err(StartError::NoClientKeys { why });
        }
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::AddrInUse => StartError::PortInUse {
                    host: settings.host.clone(),
                    port: settings.port,
                },
                std::io::ErrorKind::PermissionDenied => StartError::ListenDenied { address },
                _ => StartError::Listen { address, error },
            })?;
        let local = listener.local_addr().map_err(StartError::LocalAddress)?;

        for key in &settings.api_keys {
            let (account, how) = accounts::upsert_api_key(
                &db,
                &Secret::new(key.clone()),
                None,
                None,
                clock.now_ms(),
            )
            .await
            .map_err(StartError::ApiKeys)?;
            match how {
                Upsert::Created => {
                    tracing::info!(account = %account.name, "added API-key account from CLAUDE_API_KEYS")
                }
                Upsert::Reactivated => {
                    tracing::info!(account = %account.name, "re-activated API-key account from CLAUDE_API_KEYS")
                }
                Upsert::Unchanged => {}
            }
        }

        let pool = Pool::new(PoolConfig {
            strategy: settings.strategy,
            session_timeout_ms: settings.session_timeout_s as i64 * 1000,
        });
        let writer = Writer::spawn(db.clone());
        let check = spawn_quick_check(db.clone(), writer.handle());
        let proxy_config = ProxyConfig {
            max_body_bytes: settings.max_body_bytes,
            idle_timeout: Duration::from_secs(settings.idle_timeout_s),
            max_attempts: settings.max_attempts,
            shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_s),
            max_connections,
            body_timeout: Duration::from_secs(settings.body_timeout_s),
            max_body_memory: settings.max_body_memory,
            allow_all_paths: settings.allow_all_paths,
            pool_rate_limit_headers: settings.pool_rate_limit_headers,
            loopback_only: is_loopback_host(&settings.host),
        };
        let started_at = clock.now_ms();
        let state = AppState::new(pool, writer.handle(), upstream, proxy_config, clock);
        state.set_revision(crate::REVISION);
        state.configure(loaded.layers, settings.clone());
        // OAuth accounts' tokens are refreshed through the configured token endpoint.
        let token_client = ccflare_oauth::TokenClient::new(settings.oauth.clone());
        state.set_token_refresher(token_client, db.clone());
        state
            .sync_accounts(&db)
            .await
            .map_err(StartError::Accounts)?;
        // The batches and files requests created: later requests for them go to their account.
        // A requests table that cannot be read (damaged: the server still serves, reporting it)
        // only costs that memory: ids are learned again from the answers relayed.
        match ccflare_storage::requests::created_resources(&db, ccflare_proxy::MAX_OWNED as u32)
            .await
        {
            Ok(created) => state.owners().load(created),
            Err(error) => tracing::warn!(
                %error,
                "could not read which account created each batch and file; \
                 requests for ones created before this start may go to another account"
            ),
        }
        state.client_keys().set_required(keys_required);
        state
            .start_client_keys(&db)
            .await
            .map_err(StartError::ClientKeys)?;
        let api = Api::new(db.clone(), log_feed.clone());
        state.set_management(Arc::new(api.clone()));
        Ok(Server {
            handles: Handles {
                state,
                db,
                api,
                logs: log_feed,
                local,
                started_at,
            },
            settings,
            config_file: loaded.config_file,
            listener,
            writer,
            check,
        })
    }

    /// What the server shares in-process.
    pub fn handles(&self) -> Handles {
        self.handles.clone()
    }

    /// The configuration in force at start (with the database's stored settings).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `http://address:port`, the base clients point at.
    pub fn url(&self) -> String {
        format!("http://{}", self.handles.local)
    }

    /// The start-up banner on stdout, first line `{name} {version}`; its last line, the
    /// `export ANTHROPIC_BASE_URL=` one, says the server is about to serve.
    pub fn print_banner(&self, name: &str) {
        let Handles { state, db, .. } = &self.handles;
        let settings = &self.settings;
        let local = self.handles.local;
        let counts = state.pool().counts(state.now());
        let base = self.url();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{name} {}", crate::version());
        let _ = writeln!(out, "  listening on  {base}");
        let _ = writeln!(out, "  database      {}", db.path().display());
        if let Some(file) = &self.config_file {
            let _ = writeln!(out, "  config file   {}", file.display());
        }
        let _ = writeln!(
            out,
            "  accounts      {} total: {} active, {} rate limited, {} overloaded, {} paused, {} invalid",
            counts.total,
            counts.available,
            counts.rate_limited,
            counts.overloaded,
            counts.paused,
            counts.invalid
        );
        let encryption = match db.encryption_key() {
            Some(key) => format!("key {}", key.id()),
            None => "none (account keys and tokens stored in plaintext)".to_owned(),
        };
        let _ = writeln!(out, "  encryption    {encryption}");
        let _ = writeln!(out, "  strategy      {}", settings.strategy);
        let keys = state.client_keys();
        let _ = writeln!(
            out,
            "  client keys   {} ({} stored)",
            if keys.required() {
                "required"
            } else {
                "optional"
            },
            keys.count()
        );
        let _ = writeln!(out, "  upstream      {}", settings.upstream_url);
        if counts.total == 0 {
            let _ = writeln!(
                out,
                "no accounts yet: set CLAUDE_API_KEYS or run `ccflare-cli accounts add sk-ant-…`"
            );
        }
        if !local.ip().is_loopback() {
            let _ = writeln!(
                out,
                "warning: listening on {}, reachable from other machines: the management API needs the \
                 admin key and /v1 a client key; put TLS in front of it (docs/security.md)",
                local.ip()
            );
        }
        let _ = writeln!(
            out,
            "point clients at it:  export ANTHROPIC_BASE_URL={base}"
        );
        let _ = out.flush();
    }

    /// Serves, in a task the returned [`Running`] owns, until `shutdown` resolves or
    /// [`Running::stop`] is called; then drains and flushes.
    pub fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Running {
        let (stop, mut asked) = watch::channel(false);
        let stopping = self.handles.state.shutdown_signal();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                _ = asked.wait_for(|stop| *stop) => tracing::info!("shutdown requested"),
            }
        };
        Running {
            stop,
            stopping,
            task: tokio::spawn(self.run(shutdown)),
        }
    }

    /// The run and its end: see the module's documentation.
    async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Stopped, StopError> {
        let Server {
            handles: Handles { state, db, api, .. },
            settings,
            listener,
            writer,
            check,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let sync = spawn_account_sync(state.clone(), db.clone(), Shutdown::new(stop_rx.clone()));
        let retention = api.spawn_retention(state.clone(), stop_rx);
        let report = ccflare_proxy::run(listener, state.clone(), shutdown).await;
        tracing::info!(
            cut_connections = report.cut_connections,
            "stopped accepting; flushing records"
        );
        let _ = stop_tx.send(true);
        let _ = sync.await;
        let _ = retention.await;
        // Refreshed OAuth tokens the database could not take are stored by the token
        // refresher's tasks (a pause of at most 5 s between tries), and a refresh whose client
        // left may still be storing its rotation: they get a moment; a login lost is named.
        let lost_logins = state.finish_token_refreshes(UNSAVED_LOGINS_WAIT).await;
        drop(state);
        // Records wait in memory while the database cannot be written; at exit whatever the
        // database cannot take goes to the spill file at once. Only when that cannot be
        // written either do they get at least WRITER_CLOSE_MIN (or the shutdown timeout when
        // longer) of retries, and then are reported lost.
        let records = writer.handle();
        let deadline = Duration::from_secs(settings.shutdown_timeout_s).max(WRITER_CLOSE_MIN);
        let closed = tokio::time::timeout(deadline, writer.close()).await.is_ok();
        check.abort();
        let problems = problems_at_exit(&records, closed, &lost_logins);
        if !problems.is_empty() {
            return Err(StopError { problems });
        }
        db.close().await;
        tracing::info!("shut down cleanly");
        Ok(Stopped {
            cut_connections: report.cut_connections,
        })
    }
}

/// What the end of a run must say: records the writer could not write (`closed` false),
/// records lost while running, records waiting in the spill file while the database is
/// failing, and OAuth logins lost. Warnings that need no exit status are logged.
fn problems_at_exit(records: &WriterHandle, closed: bool, lost_logins: &[Arc<str>]) -> Vec<String> {
    let health = records.health().borrow().clone();
    let totals = records.totals();
    let spill_file = records
        .spill_file()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let mut problems = Vec::new();
    if !closed {
        let spill = health
            .spill_failing
            .as_deref()
            .map(|error| format!(", nor the spill file ({error})"))
            .unwrap_or_default();
        problems.push(format!(
            "{} records were not written before exit: the database cannot be written ({}){spill}",
            records.queue_depth(),
            health.failing.as_deref().unwrap_or("unknown error"),
        ));
    }
    if totals.dropped > 0 {
        problems.push(format!(
            "{} records were lost while running (see the log)",
            totals.dropped
        ));
    }
    if health.spilled_waiting > 0 {
        let message = format!(
            "{} records wait in {spill_file}; they are written to the database at the next start",
            health.spilled_waiting
        );
        match health.failing.as_deref().or(health.damaged.as_deref()) {
            Some(error) => problems.push(format!(
                "the database cannot be written ({error}): {message}"
            )),
            None => tracing::warn!("{message}"),
        }
    }
    if totals.rejected > 0 {
        tracing::warn!(
            rejected = totals.rejected,
            "request rows the database refused are kept in the rejects file beside it"
        );
    }
    if !lost_logins.is_empty() {
        let names: Vec<&str> = lost_logins.iter().map(|n| &**n).collect();
        problems.push(format!(
            "the refreshed OAuth tokens of {} could not be stored; log in again with \
             `ccflare-cli accounts reauth <name>`",
            names.join(", ")
        ));
    }
    problems
}

/// Checks the database file in the background (SQLite's quick_check reads every page, which
/// takes a while on a big file): the server serves meanwhile, and damage found turns `/health`
/// to degraded with the reason.
fn spawn_quick_check(db: Db, writer: WriterHandle) -> JoinHandle<()> {
    tokio::spawn(async move {
        match db.quick_check().await {
            Ok(problems) if problems.is_empty() => tracing::debug!("database check: ok"),
            Ok(problems) => writer.report_damage(&problems.join("; ")),
            Err(error) => tracing::warn!(%error, "the database check could not run"),
        }
    })
}

/// Whether a listen address only accepts connections from this machine.
fn is_loopback_host(host: &str) -> bool {
    ccflare_core::config::is_loopback_host(host)
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "localhost",
            "LOCALHOST",
            "::1",
            "[::1]",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "192.168.1.2", "example.com"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
