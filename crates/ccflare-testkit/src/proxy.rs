//! The pieces of an in-process proxy test that every `spawn_app()` shares: the mock upstream,
//! a fresh SQLite file with the test's accounts, a manual clock ([`Fixture`]), and the proxy
//! serving on `127.0.0.1:0` until stopped ([`Serving`]). What the proxy is given in between
//! (its options, the management API) is each suite's own.

use crate::key;
use ccflare_core::{Clock, ManualClock, Secret, SystemClock};
use ccflare_mock::MockUpstream;
use ccflare_pool::Pool;
use ccflare_proxy::{AppState, ProxyConfig, UpstreamClient};
use ccflare_storage::{Db, Writer, accounts};
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

/// The proxy settings of the tests: a 1 MiB body cap, a 30 s idle timeout, every account tried,
/// 5 s for streams at shutdown.
pub fn config() -> ProxyConfig {
    ProxyConfig {
        max_body_bytes: 1024 * 1024,
        idle_timeout: Duration::from_secs(30),
        max_attempts: 0,
        shutdown_timeout: Duration::from_secs(5),
    }
}

/// A proxy serving on `127.0.0.1:0`.
pub struct Serving {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Serves `state` on a fresh port until [`Serving::stop`].
pub async fn serve(state: Arc<AppState>) -> Serving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        ccflare_proxy::run(listener, state, async {
            let _ = stopped.await;
        })
        .await;
    });
    Serving {
        url,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Serving {
    /// Stops accepting and waits until the proxy has shut down.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
