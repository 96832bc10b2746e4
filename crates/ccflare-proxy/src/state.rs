//! Everything a request needs, shared by all connections: the pool (behind a mutex that is
//! never held across an await), the writer handle, the upstream client, the clock and the
//! settings. Also the task that keeps the pool in step with the accounts table.

use crate::management::{EVENT_CAPACITY, ManagementRoutes, RequestEvent, RequestStarted};
use crate::shutdown::{Drain, Shutdown};
use crate::upstream::UpstreamClient;
use ccflare_core::config::{Layer, Settings};
use ccflare_core::record::RequestRecord;
use ccflare_core::{Clock, Millis};
use ccflare_pool::{PersistState, Pool};
use ccflare_storage::{AccountStateUpdate, Db, StorageError, WriterHandle, accounts, settings};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How accounts reach a running server: it re-reads the accounts table this often, so a change
/// made by the CLI is live within two seconds (SPEC §5).
pub const ACCOUNT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Proxy settings that matter on the request path.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub max_body_bytes: usize,
    pub idle_timeout: Duration,
    /// Most accounts tried for one request; 0 means every account.
    pub max_attempts: u32,
    /// How long in-flight requests get to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Client connections served at once; more wait in the listen backlog until one closes.
    /// The server derives it from the open-files limit, so that every accepted connection
    /// can also open its upstream connection.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body_bytes: 32 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            max_attempts: 0,
            shutdown_timeout: Duration::from_secs(30),
            max_connections: usize::MAX,
        }
    }
}

/// The configuration sources that do not change while the server runs. With the settings
/// stored in the database (which do) they resolve to the current [`Settings`].
#[derive(Debug, Clone, Default)]
pub struct ConfigLayers {
    pub flags: Layer,
    pub env: Layer,
    pub file: Layer,
}

/// Shared state of one running proxy.
pub struct AppState {
    pool: Mutex<Pool>,
    pub writer: WriterHandle,
    pub upstream: UpstreamClient,
    pub config: ProxyConfig,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    request_counter: AtomicU64,
    id_prefix: String,
    layers: RwLock<ConfigLayers>,
    settings: RwLock<Arc<Settings>>,
    /// The live request feed.
    events: broadcast::Sender<RequestEvent>,
    management: OnceLock<Arc<dyn ManagementRoutes>>,
    /// Refreshes OAuth tokens; absent in a server without OAuth accounts' endpoints set up.
    tokens: OnceLock<crate::tokens::TokenRefresher>,
    /// Stops the connections and endless responses (live feeds) when the server stops
    /// accepting, and says when the server is cutting what is left at the deadline.
    drain: Drain,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        pool: Pool,
        writer: WriterHandle,
        upstream: UpstreamClient,
        config: ProxyConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<AppState> {
        // Request ids are unique across restarts: the start time in the prefix, a counter after it.
        let id_prefix = format!("ccf_{:x}", clock.now_ms());
        Arc::new(AppState {
            pool: Mutex::new(pool),
            writer,
            upstream,
            config,
            clock,
            started: Instant::now(),
            request_counter: AtomicU64::new(0),
            id_prefix,
            layers: RwLock::new(ConfigLayers::default()),
            settings: RwLock::new(Arc::new(Settings::defaults())),
            events: broadcast::channel(EVENT_CAPACITY).0,
            management: OnceLock::new(),
            tokens: OnceLock::new(),
            drain: Drain::new(),
        })
    }

    /// Installs the OAuth token refresher (once, at start). Without it OAuth accounts are used
    /// with their stored token until it is refused.
    pub fn set_token_refresher(&self, client: ccflare_oauth::TokenClient, db: Db) -> bool {
        self.tokens
            .set(crate::tokens::TokenRefresher::new(client, db))
            .is_ok()
    }

    pub(crate) fn tokens(&self) -> Option<&crate::tokens::TokenRefresher> {
        self.tokens.get()
    }

    /// Accounts whose refreshed OAuth tokens the database could not take yet: only this
    /// process holds them, and a stop now loses those logins.
    pub fn unsaved_logins(&self) -> Vec<Arc<str>> {
        self.tokens()
            .map(|t| t.unsaved_logins())
            .unwrap_or_default()
    }

    /// Installs the management API. Set once, before serving; returns false if one was set.
    pub fn set_management(&self, routes: Arc<dyn ManagementRoutes>) -> bool {
        self.management.set(routes).is_ok()
    }

    pub(crate) fn management(&self) -> Option<&Arc<dyn ManagementRoutes>> {
        self.management.get()
    }

    /// Subscribes to the live request feed: every request's start and end from now on.
    pub fn subscribe_requests(&self) -> broadcast::Receiver<RequestEvent> {
        self.events.subscribe()
    }

    /// Publishes a request's start, if anyone listens (so nothing is copied otherwise).
    pub(crate) fn publish_started(&self, record: &RequestRecord) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let started = RequestStarted {
            id: record.id.clone(),
            started_at: record.started_at,
            method: record.method.clone(),
            path: record.path.clone(),
            model: record.model.clone(),
            streamed: record.streamed,
            session_key: record.session_key.clone(),
        };
        // An error only means the last subscriber just left.
        let _ = self.events.send(RequestEvent::Started(Arc::new(started)));
    }

    /// Hands a finished request to the management API's counters and to the live feed.
    pub(crate) fn publish_finished(&self, record: &RequestRecord) {
        if let Some(management) = self.management.get() {
            management.request_finished(record);
        }
        if self.events.receiver_count() > 0 {
            let _ = self
                .events
                .send(RequestEvent::Finished(Arc::new(record.clone())));
        }
    }

    /// Resolves when the server stops accepting connections.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.drain.subscribe()
    }

    pub(crate) fn drain(&self) -> &Drain {
        &self.drain
    }

    /// The configuration sources that do not change while running (flags, env, file).
    pub fn layers(&self) -> ConfigLayers {
        self.layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The pool. Hold the guard only for a few non-async statements.
    pub fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves the pool consistent enough to keep routing:
        // every mutation is a few field writes.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}_{n:06x}", self.id_prefix)
    }

    /// Queues a pool state change for the database.
    pub fn persist(&self, state: PersistState) {
        self.writer.account_state(AccountStateUpdate {
            id: state.id,
            revision: Some(state.revision),
            status: state.status,
            rate_limited_until: state.rate_limited_until,
            overloaded_until: state.overloaded_until,
            last_ratelimit: state.last_ratelimit,
        });
    }

    /// Records where the configuration came from and what it resolved to at start, so that
    /// settings stored later in the database can be merged in at their rank.
    pub fn configure(&self, layers: ConfigLayers, settings: Settings) {
        *self.layers.write().unwrap_or_else(|p| p.into_inner()) = layers;
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// The configuration in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-resolves the configuration with the database's settings and applies what can change
    /// at run time (strategy, session timeout). Options that need a restart (port, database,
    /// timeouts) are resolved too, so they show correctly, but take effect at the next start.
    pub fn apply_stored_settings(&self, stored: &Layer) -> Result<(), ccflare_core::CoreError> {
        let resolved = {
            let layers = self.layers.read().unwrap_or_else(|p| p.into_inner());
            Settings::resolve_with_database(&layers.flags, &layers.env, stored, &layers.file)?
        };
        let current = self.settings();
        if *current == resolved {
            return Ok(());
        }
        if (current.strategy, current.session_timeout_s)
            != (resolved.strategy, resolved.session_timeout_s)
        {
            let mut pool = self.pool();
            if pool.config().strategy != resolved.strategy {
                tracing::info!(strategy = %resolved.strategy, "load-balancing strategy changed");
                pool.set_strategy(resolved.strategy);
            }
            pool.set_session_timeout(resolved.session_timeout_s as i64 * 1000);
        }
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(resolved);
        Ok(())
    }

    /// Reads the accounts table into the pool once.
    pub async fn sync_accounts(&self, db: &Db) -> Result<(), StorageError> {
        // With each account's last persisted rate-limit headers, so a restarted server routes
        // on what it last saw (headroom, warnings) instead of taking every account as fresh.
        let list = accounts::list_with_ratelimits(db).await?;
        let now = self.now();
        self.pool().sync_with_ratelimits(list, now);
        Ok(())
    }

    /// Reads accounts and stored settings once: what the sync task does every second.
    pub async fn sync_from_db(&self, db: &Db) -> Result<(), SyncError> {
        self.sync_accounts(db).await?;
        let stored = settings::all(db).await?;
        self.apply_stored_settings(&stored)?;
        Ok(())
    }
}

/// Why a sync with the database failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("a stored setting is invalid: {0}")]
    Setting(#[from] ccflare_core::CoreError),
}

/// Re-reads the accounts table every [`ACCOUNT_SYNC_INTERVAL`] until `shutdown`. The
/// request path never waits for this: it only swaps the pool's account list under the lock.
pub fn spawn_account_sync(
    state: Arc<AppState>,
    db: Db,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ACCOUNT_SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            match state.sync_from_db(&db).await {
                Ok(()) => failing = false,
                // Logged once per outage, not every second.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "syncing with the database failed; routing on the last known accounts and settings");
                }
                Err(_) => {}
            }
        }
    })
}
