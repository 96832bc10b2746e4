//! The state of one running proxy ([`AppState`]) as forwarding and the management API see it:
//! the narrow handles (the pool, the recorder's sink, the feed, the drain, the token refresher)
//! built once and held together, plus the upstream client, the settings, the management API
//! ([`ManagementRoutes`], which answers with this state in hand) and the task that keeps the
//! pool in step with the accounts table. The parts of the proxy below it take only their
//! handle: the recorder its [`RecordSink`], the token refresher the pool, the connection loop
//! the drain.

use crate::body::ResponseBody;
use crate::budget::BodyBudget;
use crate::feed::{Feed, FinishedFeed, RequestEvent, RequestObserver};
use crate::keys::ClientKeys;
use crate::owners::Owners;
use crate::pool::SharedPool;
use crate::recorder::RecordSink;
use crate::shutdown::{Drain, Shutdown};
use crate::tokens::TokenRefresher;
use crate::upstream::UpstreamClient;
use ccflare_core::config::{Layer, Settings};
use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::{Account, Clock, Millis};
use ccflare_pool::{PersistState, Pool};
use ccflare_storage::{Db, StorageError, WriterHandle, accounts, keys, settings};
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How accounts reach a running server: it re-reads the accounts table this often, so a change
/// made by the CLI is live within two seconds (SPEC §5).
pub const ACCOUNT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Client connections served at once when nothing else says: the open-files limit may allow
/// far more (or be unlimited), and each connection can hold a task, buffers and a request
/// body. Ten thousand is well past the concurrent streams one ccflare is built for (SPEC §14).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

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
    /// The longest a client may take to send a whole request body, however steadily it sends.
    pub body_timeout: Duration,
    /// Bytes of request bodies all requests together may hold in memory.
    pub max_body_memory: usize,
    /// Forward every `/v1/*` path, not only the API's documented routes.
    pub allow_all_paths: bool,
    /// Subscription answers carry the pool's unified five-hour headers (`quota_headers.rs`).
    pub pool_rate_limit_headers: bool,
    /// The server listens on a loopback address: a `/v1` request that names it by any other
    /// host comes from a page in a browser (DNS rebinding) and is refused.
    pub loopback_only: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body_bytes: 32 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            max_attempts: 0,
            shutdown_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_timeout: Duration::from_secs(60),
            max_body_memory: 256 * 1024 * 1024,
            allow_all_paths: false,
            pool_rate_limit_headers: false,
            loopback_only: true,
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

/// The answer of a management route.
pub type ManagementFuture = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// What the server hands every request outside `/v1/*` and `/health` to, once set with
/// [`AppState::set_management`]. Without one those paths are 404. As a [`RequestObserver`] it
/// also sees every finished request.
pub trait ManagementRoutes: RequestObserver {
    /// Answers one request.
    fn handle(&self, state: Arc<AppState>, request: Request<Incoming>) -> ManagementFuture;

    /// Whether a request with these headers would be let into the management API (its admin
    /// key, its browser checks): `/health` shows such a caller the database's error texts, and
    /// everyone else its state only. By default no one.
    fn admits(&self, _state: &AppState, _headers: &http::HeaderMap) -> bool {
        false
    }
}

/// Shared state of one running proxy.
pub struct AppState {
    pub writer: WriterHandle,
    pub upstream: UpstreamClient,
    pub config: ProxyConfig,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pool: Arc<SharedPool>,
    /// What each request's recorder holds: the pool, the writer, the feed, the drain.
    records: Arc<RecordSink>,
    /// The live request feed and the management API's observer of finished requests.
    feed: Arc<Feed>,
    /// Stops the connections and endless responses (live feeds) when the server stops
    /// accepting, and says when the server is cutting what is left at the deadline.
    drain: Arc<Drain>,
    /// What request bodies may hold in memory, all together.
    bodies: BodyBudget,
    request_counter: AtomicU64,
    /// Reads of the accounts table begun ([`AppState::read_accounts`]), and the latest begun
    /// of those applied to the pool (changed only under the pool's lock).
    accounts_reads: AtomicU64,
    accounts_applied: AtomicU64,
    id_prefix: String,
    layers: RwLock<ConfigLayers>,
    settings: RwLock<Arc<Settings>>,
    management: OnceLock<Arc<dyn ManagementRoutes>>,
    /// Refreshes OAuth tokens; absent in a server without OAuth accounts' endpoints set up.
    tokens: OnceLock<TokenRefresher>,
    /// The client keys `/v1` checks, and their limits' counters.
    client_keys: Arc<ClientKeys>,
    /// The git revision the binary was built from, shown by `/health` (set by ccflare-app).
    revision: OnceLock<String>,
    /// Which account made each batch and file (`resources`).
    owners: Owners,
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
        let pool = Arc::new(SharedPool::new(pool, clock.clone(), writer.clone()));
        let feed = Arc::new(Feed::new());
        let drain = Arc::new(Drain::new());
        let records = Arc::new(RecordSink {
            pool: pool.clone(),
            writer: writer.clone(),
            feed: feed.clone(),
            drain: drain.clone(),
        });
        let bodies = BodyBudget::new(config.max_body_memory);
        Arc::new(AppState {
            writer,
            upstream,
            config,
            bodies,
            clock,
            started: Instant::now(),
            pool,
            records,
            feed,
            drain,
            request_counter: AtomicU64::new(0),
            accounts_reads: AtomicU64::new(0),
            accounts_applied: AtomicU64::new(0),
            id_prefix,
            layers: RwLock::new(ConfigLayers::default()),
            settings: RwLock::new(Arc::new(Settings::defaults())),
            management: OnceLock::new(),
            tokens: OnceLock::new(),
            client_keys: Arc::new(ClientKeys::default()),
            revision: OnceLock::new(),
            owners: Owners::default(),
        })
    }

    /// Names the git revision the binary was built from, for `/health` (once, at start).
    pub fn set_revision(&self, revision: &str) {
        if !revision.is_empty() {
            let _ = self.revision.set(revision.to_owned());
        }
    }

    pub(crate) fn revision(&self) -> Option<&str> {
        self.revision.get().map(String::as_str)
    }

    /// Installs the OAuth token refresher (once, at start; false if one was set). Without it
    /// OAuth accounts are used with their stored token until it is refused.
    pub fn set_token_refresher(&self, client: ccflare_oauth::TokenClient, db: Db) -> bool {
        self.tokens
            .set(TokenRefresher::new(client, db, self.pool.clone()))
            .is_ok()
    }

    pub(crate) fn tokens(&self) -> Option<&TokenRefresher> {
        self.tokens.get()
    }

    /// Accounts whose refreshed OAuth tokens the database could not take yet: only this
    /// process holds them, and a stop now loses those logins.
    pub fn unsaved_logins(&self) -> Vec<Arc<str>> {
        self.tokens()
            .map(|t| t.unsaved_logins())
            .unwrap_or_default()
    }

    /// At exit, once `run` has returned: waits up to `wait` for the token
    /// refresher's tasks (a refresh whose request left, tokens waiting for the database),
    /// stops what is left, and returns the accounts whose refreshed tokens were never stored.
    pub async fn finish_token_refreshes(&self, wait: Duration) -> Vec<Arc<str>> {
        match self.tokens() {
            Some(tokens) => tokens.finish(wait).await,
            None => Vec::new(),
        }
    }

    /// Installs the management API. Set once, before serving; returns false if one was set.
    pub fn set_management(&self, routes: Arc<dyn ManagementRoutes>) -> bool {
        if self.management.set(routes.clone()).is_err() {
            return false;
        }
        self.feed.observe(routes)
    }

    pub(crate) fn management(&self) -> Option<&Arc<dyn ManagementRoutes>> {
        self.management.get()
    }

    /// Subscribes to the live request feed: every request's start and end from now on.
    pub fn subscribe_requests(&self) -> broadcast::Receiver<RequestEvent> {
        self.feed.subscribe()
    }

    /// Subscribes to the finished requests of the live feed only (see [`FinishedFeed`]).
    pub fn subscribe_finished(&self) -> FinishedFeed {
        self.feed.subscribe_finished()
    }

    /// Resolves when the server stops accepting connections.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.drain.subscribe()
    }

    /// The server's side of shutdown, for the connection loop.
    pub(crate) fn drain(&self) -> Arc<Drain> {
        self.drain.clone()
    }

    /// The handle a request's recorder keeps.
    pub(crate) fn records(&self) -> Arc<RecordSink> {
        self.records.clone()
    }

    /// The configuration sources that do not change while running (flags, env, file).
    pub fn layers(&self) -> ConfigLayers {
        self.layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The pool. Hold the guard only for a few statements, never across an await.
    pub fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock()
    }

    pub fn now(&self) -> Millis {
        self.pool.now()
    }

    /// Bytes of request bodies held in memory now (read, and not yet answered).
    pub fn body_bytes_held(&self) -> usize {
        self.bodies.held()
    }

    pub(crate) fn bodies(&self) -> &BodyBudget {
        &self.bodies
    }

    pub fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        request_id(&self.id_prefix, n)
    }

    /// Queues a pool state change for the database.
    pub fn persist(&self, state: PersistState) {
        self.pool.persist(state);
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
        let read = self.read_accounts(db).await?;
        self.apply_accounts(read);
        Ok(())
    }

    /// Reads the accounts table (with each account's last persisted rate-limit headers, so a
    /// restarted server routes on what it last saw instead of taking every account as fresh),
    /// numbered in the order reads begin.
    pub async fn read_accounts(&self, db: &Db) -> Result<AccountsRead, StorageError> {
        let begun = self.accounts_reads.fetch_add(1, Ordering::Relaxed) + 1;
        let list = accounts::list_with_ratelimits(db).await?;
        Ok(AccountsRead { begun, list })
    }

    /// Puts a read of the accounts table into the pool, unless a read begun after it was put
    /// there already. The one-second sync may have read the table just before a person's
    /// change (a removal, an addition, a pause) that the API then wrote and read back: the
    /// older read, applied last, would undo the change for a second.
    pub fn apply_accounts(&self, read: AccountsRead) {
        let now = self.now();
        let mut pool = self.pool();
        if read.begun < self.accounts_applied.load(Ordering::Relaxed) {
            return;
        }
        self.accounts_applied.store(read.begun, Ordering::Relaxed);
        pool.sync_with_ratelimits(read.list, now);
    }

    /// The client keys `/v1` checks.
    /// Which account made each batch and file: requests naming one go to its account. The
    /// server loads what the database recorded at start ([`Owners::load`]).
    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    pub fn client_keys(&self) -> &Arc<ClientKeys> {
        &self.client_keys
    }

    /// Stores when keys were last used, then reads the client keys table into the map `/v1`
    /// checks (a key changed or deleted stops working now) and re-reads the usage of keys
    /// whose budget period changed. In that order, so a key refused after a change has its
    /// last use stored already.
    pub async fn sync_client_keys(&self, db: &Db) -> Result<(), StorageError> {
        // Last use is shown, not routed on: a database that refuses the write now (locked by
        // another process) gets it at a later sync, and the sync goes on.
        let used = self.client_keys.take_last_used();
        if let Err(error) = keys::touch(db, &used).await {
            tracing::debug!(%error, "storing when client keys were last used failed; retrying at the next sync");
            self.client_keys.unstored_last_used(&used);
        }
        let changed_period = self.client_keys.load(keys::list(db).await?);
        if !changed_period.is_empty() {
            let now = self.now();
            let usage = keys::usage(db, now).await?;
            self.client_keys.seed(&usage, Some(&changed_period), now);
        }
        Ok(())
    }

    /// Reads the client keys and seeds each one's budget with what its stored requests used
    /// in the current period: once, at start.
    pub async fn start_client_keys(&self, db: &Db) -> Result<(), StorageError> {
        self.client_keys.load(keys::list(db).await?);
        let now = self.now();
        let usage = keys::usage(db, now).await?;
        self.client_keys.seed(&usage, None, now);
        Ok(())
    }

    /// Reads accounts and stored settings once: what the sync task does every second.
    pub async fn sync_from_db(&self, db: &Db) -> Result<(), SyncError> {
        self.sync_accounts(db).await?;
        self.sync_client_keys(db).await?;
        let stored = settings::all(db).await?;
        self.apply_stored_settings(&stored)?;
        Ok(())
    }
}

/// The accounts table as one read saw it ([`AppState::read_accounts`]).
pub struct AccountsRead {
    begun: u64,
    list: Vec<(Account, Option<RateLimitSnapshot>)>,
}

/// Why a sync with the database failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("a stored setting is invalid: {0}")]
    Setting(#[from] ccflare_core::CoreError),
}

/// Re-reads the accounts table every [`ACCOUNT_SYNC_INTERVAL`] until `shutdown`, and closes the
/// upstream connections idle past their timeout. The request path never waits for this: it
/// only swaps the pool's account list under the lock.
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
            // Upstream connections idle past their timeout are closed here, so that a quiet
            // server does not hold them until its next request.
            state.upstream.sweep();
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

/// `{prefix}_{n:06x}`, without `core::fmt` (one of every request's small costs).
fn request_id(prefix: &str, n: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = n.checked_ilog(16).map_or(1, |log| log as usize + 1).max(6);
    let mut id = String::with_capacity(prefix.len() + 1 + digits);
    id.push_str(prefix);
    id.push('_');
    for at in (0..digits).rev() {
        id.push(char::from(HEX[(n >> (4 * at) & 0xf) as usize]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_and_the_counter_in_hex() {
        for n in [0, 1, 0xabc, 0xff_ffff, 0x100_0000, u64::MAX] {
            assert_eq!(request_id("ccf_1a2b", n), format!("ccf_1a2b_{n:06x}"));
        }
    }
}
