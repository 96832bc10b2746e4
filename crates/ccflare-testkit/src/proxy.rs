//! The pieces of an in-process proxy test that every `spawn_app()` shares: the mock upstream,
//! a fresh SQLite file with the test's accounts, a manual clock ([`Fixture`]), and the proxy
//! serving on `127.0.0.1:0` until stopped ([`Running`]). What the proxy is given in between
//! (its options, the management API) is each suite's own.

use crate::{Reply, key};
use ::http::{Request, Response};
use bytes::Bytes;
use ccflare_core::{Clock, ManualClock, Secret, SystemClock};
use ccflare_mock::MockUpstream;
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::{AppState, ProxyConfig, UpstreamClient};
use ccflare_storage::{Db, Writer, accounts};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The mock upstream, a database in a temp dir, and a manual clock at the wall clock's now.
pub struct Fixture {
    pub mock: MockUpstream,
    pub db: Db,
    pub clock: Arc<ManualClock>,
    /// Holds the database's directory until the test ends.
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Fixture {
        let mock = MockUpstream::start().await.expect("mock starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open_path(&dir.path().join("ccflare.db"))
            .await
            .expect("database opens");
        let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
        Fixture {
            mock,
            db,
            clock,
            dir,
        }
    }

    /// Stores API-key accounts (name, priority), each with the key [`key`]`(name)`.
    pub async fn add_api_keys(&self, accounts: &[(&str, i64)]) {
        for (name, priority) in accounts {
            accounts::upsert_api_key(
                &self.db,
                &Secret::new(key(name)),
                Some(name),
                Some(*priority),
                self.clock.now_ms(),
            )
            .await
            .expect("account stored");
        }
    }

    /// Stores OAuth accounts (name, priority, token lifetime left in ms) with tokens the mock
    /// issued.
    pub async fn add_oauth_accounts(&self, accounts: &[(&str, i64, i64)]) {
        for (name, priority, lifetime_ms) in accounts {
            let (access, refresh) = self.mock.issue_oauth_tokens();
            ccflare_storage::oauth::add_oauth_account(
                &self.db,
                name,
                &Secret::new(access),
                Some(&Secret::new(refresh)),
                self.clock.now_ms() + lifetime_ms,
                Some(*priority),
                self.clock.now_ms(),
            )
            .await
            .expect("OAuth account stored");
        }
    }

    /// The proxy's state: `pool` and `config`, the records going to `writer`, upstream
    /// requests to `upstream_url` (5 s to connect), time from the manual clock.
    pub fn state(
        &self,
        pool: Pool,
        writer: &Writer,
        upstream_url: &str,
        config: ProxyConfig,
    ) -> Arc<AppState> {
        let upstream = UpstreamClient::new(upstream_url, Duration::from_secs(5)).expect("client");
        AppState::new(
            pool,
            writer.handle(),
            upstream,
            config,
            self.clock.clone() as Arc<dyn Clock>,
        )
    }
}

/// A proxy state on the wall clock, as a running server has (the benchmarks; tests move the
/// fixture's manual clock instead): the default strategy and an hour's session timeout.
pub fn wall_clock_state(
    writer: &Writer,
    upstream: UpstreamClient,
    config: ProxyConfig,
) -> Arc<AppState> {
    AppState::new(
        Pool::new(PoolConfig {
            strategy: Default::default(),
            session_timeout_ms: 3_600_000,
        }),
        writer.handle(),
        upstream,
        config,
        Arc::new(SystemClock) as Arc<dyn Clock>,
    )
}

/// The proxy settings of the tests: a 1 MiB body cap, a 30 s idle timeout, every account tried,
/// 5 s for streams at shutdown, no connection limit; otherwise the defaults (60 s for a whole
/// body, 256 MiB of bodies in memory, the documented routes only, a loopback listener).
pub fn config() -> ProxyConfig {
    ProxyConfig {
        max_body_bytes: 1024 * 1024,
        idle_timeout: Duration::from_secs(30),
        max_attempts: 0,
        shutdown_timeout: Duration::from_secs(5),
        max_connections: usize::MAX,
        ..ProxyConfig::default()
    }
}

/// A proxy serving on `127.0.0.1:0`, with what it was built from.
pub struct Running {
    pub url: String,
    pub state: Arc<AppState>,
    pub db: Db,
    pub mock: MockUpstream,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    writer: Option<Writer>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Serves `state`, whose records go to `writer`, on a fresh port until [`Running::stop`].
    pub async fn serve(self, state: Arc<AppState>, writer: Writer) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                ccflare_proxy::run(listener, state, async {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        Running {
            url,
            state,
            db: self.db,
            mock: self.mock,
            clock: self.clock,
            stop: Some(stop),
            task: Some(task),
            writer: Some(writer),
            _dir: self.dir,
        }
    }
}

impl Running {
    /// Sends a request and returns the response with its headers, body unread.
    pub async fn open(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        crate::open(request).await
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        crate::send(request).await
    }

    /// Stops accepting, waits until the proxy has shut down, then closes the writer (which
    /// writes everything still queued).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(writer) = self.writer.take() {
            writer.close().await;
        }
    }
}
