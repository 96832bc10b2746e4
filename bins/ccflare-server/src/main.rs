//! `ccflare-server`: configuration → logging → storage → `ccflare_proxy::run(listener,
//! shutdown)`. Only argument parsing, start-up messages and glue live here; errors are printed
//! once, as one line, and the exit code is non-zero.

mod config;
mod limits;

use anyhow::{Context, Result};
use ccflare_core::config::Settings;
use ccflare_core::{Clock, Secret, SystemClock};
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::{AppState, ProxyConfig, Shutdown, UpstreamClient, spawn_account_sync};
use ccflare_storage::accounts::{self, Upsert};
use ccflare_storage::{Db, Writer};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(config::LoadError::Clap(error)) => error.exit(),
        Err(config::LoadError::Other(error)) => {
            eprintln!("ccflare-server: error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ccflare-server: error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ccflare-server: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(loaded: config::Loaded) -> Result<()> {
    let settings = loaded.settings;
    // The log feed of `/api/logs/stream` is filled from the first line on.
    let log_feed = ccflare_api::LogFeed::default();
    init_logging(&settings, &log_feed);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let database_url = ccflare_config::database_url(&settings)?;
    let db = Db::open(&database_url).await?;
    // Settings stored by `ccflare-cli config set` or the API rank between env and file.
    let stored = ccflare_storage::settings::all(&db)
        .await
        .context("reading stored settings")?;
    let settings = Settings::resolve_with_database(
        &loaded.layers.flags,
        &loaded.layers.env,
        &stored,
        &loaded.layers.file,
    )
    .context(
        "a setting stored in the database is invalid (change it with `ccflare-cli config set`)",
    )?;
    let max_connections = limits::raise_open_files(settings.max_connections);
    // Listen before anything else starts: a port in use is reported as one line.
    let upstream = UpstreamClient::new(
        &settings.upstream_url,
        Duration::from_secs(settings.connect_timeout_s),
    )?;
    // SPEC §11: the management API may face other machines only behind its admin key.
    if !is_loopback_host(&settings.host) && settings.admin_key.is_none() {
        anyhow::bail!(
            "HOST={} makes the management API (/api, /metrics) reachable from other machines: \
             set an admin key with CCFLARE_ADMIN_KEY (at least 16 characters), or listen on 127.0.0.1",
            settings.host
        );
    }
    let address = format!("{}:{}", settings.host, settings.port);
    let listener = TcpListener::bind(&address).await.map_err(|error| match error.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!("port {} on {} is already in use: stop the other process or choose another with --port or PORT", settings.port, settings.host),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!("not allowed to listen on {address}: choose a port above 1023 with --port or PORT"),
        _ => anyhow::anyhow!("cannot listen on {address}: {error}"),
    })?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;

    for key in &settings.api_keys {
        let (account, how) =
            accounts::upsert_api_key(&db, &Secret::new(key.clone()), None, None, clock.now_ms())
                .await
                .context("adding an account from CLAUDE_API_KEYS")?;
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
    };
    let state = AppState::new(pool, writer.handle(), upstream, proxy_config, clock);
    state.configure(loaded.layers, settings.clone());
    // OAuth accounts' tokens are refreshed through the configured token endpoint.
    let token_client = ccflare_oauth::TokenClient::new(settings.oauth.clone());
    state.set_token_refresher(token_client, db.clone());
    state.sync_accounts(&db).await.context("reading accounts")?;
    let api = ccflare_api::Api::new(db.clone(), log_feed);
    state.set_management(Arc::new(api.clone()));

    // Before the banner: whoever reads it (a supervisor, a test) may stop the server at once,
    // and a signal that comes before its handler exists would kill the process outright
    // instead of shutting it down cleanly. From here on, a signal waits for `run` to see it.
    let signals = ShutdownSignals::listen()?;
    print_banner(&settings, &state, &db, local, loaded.config_file.as_deref());

    let (stop_tx, stop_rx) = watch::channel(false);
    let sync = spawn_account_sync(state.clone(), db.clone(), Shutdown::new(stop_rx.clone()));
    let retention = api.spawn_retention(state.clone(), stop_rx);
    let report = ccflare_proxy::run(listener, state.clone(), signals.recv()).await;
    tracing::info!(
        cut_connections = report.cut_connections,
        "stopped accepting; flushing records"
    );
    let _ = stop_tx.send(true);
    let _ = sync.await;
    let _ = retention.await;
    // Refreshed OAuth tokens the database could not take are stored by the token refresher's
    // tasks (a pause of at most 5 s between tries), and a refresh whose client left may still
    // be storing its rotation: they get a moment; a login lost is named.
    let lost_logins = state.finish_token_refreshes(UNSAVED_LOGINS_WAIT).await;
    drop(state);
    // Records wait in memory while the database cannot be written; at exit whatever the
    // database cannot take goes to the spill file at once. Only when that cannot be written
    // either do they get at least WRITER_CLOSE_MIN (or the shutdown timeout when longer) of
    // retries, and then are reported lost.
    let records = writer.handle();
    let deadline = Duration::from_secs(settings.shutdown_timeout_s).max(WRITER_CLOSE_MIN);
    let closed = tokio::time::timeout(deadline, writer.close()).await.is_ok();
    check.abort();
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
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    db.close().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Checks the database file in the background (SQLite's quick_check reads every page, which
/// takes a while on a big file): the server serves meanwhile, and damage found turns `/health`
/// to degraded with the reason.
fn spawn_quick_check(db: Db, writer: ccflare_storage::WriterHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match db.quick_check().await {
            Ok(problems) if problems.is_empty() => tracing::debug!("database check: ok"),
            Ok(problems) => writer.report_damage(&problems.join("; ")),
            Err(error) => tracing::warn!(%error, "the database check could not run"),
        }
    })
}

/// How long refreshed OAuth tokens waiting for the database get at exit (their background
/// saves retry at least every 5 s).
const UNSAVED_LOGINS_WAIT: Duration = Duration::from_secs(6);

/// Least time the writer gets at exit to write what is still queued.
const WRITER_CLOSE_MIN: Duration = Duration::from_secs(10);

/// Whether a listen address only accepts connections from this machine.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn init_logging(settings: &Settings, feed: &ccflare_api::LogFeed) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    // RUST_LOG is for experts who want per-module levels; LOG_LEVEL is the documented knob.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.log_level));
    // Each output has its own filter: stderr follows LOG_LEVEL, the API's log feed always
    // keeps info and above.
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = if settings.log_json {
        stderr.json().with_filter(filter).boxed()
    } else {
        stderr
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(feed.layer().with_filter(LevelFilter::INFO))
        .init();
}

fn print_banner(
    settings: &Settings,
    state: &AppState,
    db: &Db,
    local: std::net::SocketAddr,
    config_file: Option<&std::path::Path>,
) {
    let counts = state.pool().counts(state.now());
    let base = format!("http://{local}");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ccflare-server {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "  listening on  {base}");
    let _ = writeln!(out, "  database      {}", db.path().display());
    if let Some(file) = config_file {
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
    let _ = writeln!(out, "  strategy      {}", settings.strategy);
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
             admin key, but anyone who can reach /v1 can spend your accounts' quota",
            local.ip()
        );
    }
    let _ = writeln!(
        out,
        "point clients at it:  export ANTHROPIC_BASE_URL={base}"
    );
    let _ = out.flush();
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is created: a signal that
/// arrives before [`ShutdownSignals::recv`] is polled is kept, not lost, and does not kill the
/// process (tokio replaces the default action when the listener is registered).
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(windows)]
    interrupt: tokio::signal::windows::CtrlC,
}

impl ShutdownSignals {
    fn listen() -> Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(windows)]
        {
            Ok(ShutdownSignals {
                interrupt: tokio::signal::windows::ctrl_c().context("listening for Ctrl-C")?,
            })
        }
    }

    /// Resolves at the first SIGTERM or SIGINT since [`ShutdownSignals::listen`].
    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(windows)]
        let _ = self.interrupt.recv().await;
        tracing::info!("shutdown requested");
    }
}
