//! Where the UI's data comes from: the [`Source`] trait, and the plain types it speaks in.
//!
//! The UI never reaches the database, the pool or the server directly: it reads and changes
//! them through a `Source`. The one the `ccflare` binary uses lives in-process (the pool's
//! views, the storage writer's health, the live request and log feeds, the same analytics
//! functions `/api/analytics` calls, the same account and settings operations as the API); a
//! later source could attach to a remote server over the management API. Tests use
//! [`FakeSource`](crate::FakeSource).
//!
//! Types come from the crates below where they exist — [`Report`] and [`Range`] from
//! analytics, [`RequestRecord`] from core, [`WriterHealth`] from storage, [`AccountView`] and
//! [`RoutingState`] from the pool, [`Mode`] from oauth — so a figure the UI shows is the figure
//! the API gives for the same range, and an in-process source is a thin adapter.

use ccflare_analytics::{Range, Report};
use ccflare_core::config::{Settings, Source as ConfigSource, Strategy};
use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::record::RequestRecord;
use ccflare_core::secret::mask;
use ccflare_core::{AccountKind, AccountStatus, Millis, Secret};
use ccflare_oauth::Mode;
use ccflare_pool::{AccountView, RoutingState};
use ccflare_storage::WriterHealth;
use ccflare_storage::accounts::AccountSummary;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

/// Failures of a [`Source`] operation, as the person at the terminal should read them. The
/// messages are the ones the CLI and the API give for the same mistake (an invalid key, a
/// taken name), and never carry a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Input the operation refuses: a malformed key, an invalid name or value. Nothing was
    /// stored.
    #[error("{0}")]
    Invalid(String),
    #[error("no account named {name:?}")]
    AccountNotFound { name: String },
    /// A name already taken, a key already stored, a setting pinned by a flag or the
    /// environment.
    #[error("{0}")]
    Conflict(String),
    /// The OAuth login expired or was never opened: start a new one.
    #[error("login expired or unknown: start a new login")]
    LoginExpired,
    /// The token endpoint refused or failed; the message says whether to retry.
    #[error("{0}")]
    Login(String),
    /// The database or a query failed; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
}

/// Facts about the running server that do not change while the UI is open.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// Where clients connect, e.g. `http://127.0.0.1:8080`.
    pub listen: String,
    /// The database, as the start-up banner shows it.
    pub database: String,
    pub version: String,
    /// When the server started (epoch milliseconds, from the server's clock).
    pub started_at: Millis,
    /// The local zone's offset from UTC, so times show as the CLI shows them.
    pub utc_offset_ms: Millis,
}

/// One account as the Accounts tab shows it: what a person set and what the pool sees now.
/// Never carries the credential, only its mask.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRow {
    pub name: String,
    pub kind: AccountKind,
    /// `sk-ant-…wxyz`.
    pub credential: String,
    pub priority: i64,
    /// What a person set (active, paused, invalid).
    pub status: AccountStatus,
    /// Whether it can take a request now, and if not until when.
    pub state: RoutingState,
    /// Requests being served by it right now.
    pub in_flight: u32,
    /// Requests it served over its whole life.
    pub requests: i64,
    pub last_used: Option<Millis>,
    /// The last rate-limit headers it answered with (subscription windows included).
    pub last_ratelimit: Option<RateLimitSnapshot>,
}

impl AccountRow {
    /// Joins the stored accounts with the pool's views of them, as `GET /api/accounts` does:
    /// the pool's state when it has loaded the account, else the stored status.
    pub fn join(stored: &[AccountSummary], views: &[AccountView]) -> Vec<AccountRow> {
        stored
            .iter()
            .map(|summary| {
                let account = &summary.account;
                let view = views.iter().find(|v| v.id == account.id);
                let state = match view {
                    Some(view) => view.state,
                    None => match account.status {
                        AccountStatus::Active => RoutingState::Active,
                        AccountStatus::Paused => RoutingState::Paused,
                        AccountStatus::Invalid => RoutingState::Invalid,
                    },
                };
                AccountRow {
                    name: account.name.clone(),
                    kind: account.kind,
                    credential: mask(account.credential.expose()),
                    priority: account.priority,
                    status: account.status,
                    state,
                    in_flight: view.map_or(0, |v| v.in_flight),
                    requests: summary.request_count,
                    last_used: match (summary.last_used, view.and_then(|v| v.last_used)) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                    last_ratelimit: view
                        .and_then(|v| v.last_ratelimit.clone())
                        .or_else(|| summary.last_ratelimit.clone()),
                }
            })
            .collect()
    }
}

/// What `/health` says about the database, for the Overview.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseHealth {
    pub writer: WriterHealth,
    /// Records waiting in memory for the writer.
    pub waiting_records: usize,
    pub rejected_records: u64,
    pub dropped_records: u64,
    /// OAuth logins whose tokens only live in memory until the database takes them.
    pub unsaved_logins: usize,
}

impl DatabaseHealth {
    /// Whether everything is as it should be (what makes `/health` say `ok` besides accounts).
    pub fn is_ok(&self) -> bool {
        self.writer.is_ok() && self.dropped_records == 0
    }
}

/// The options a running server changes at once (`PATCH /api/config`'s `LIVE_OPTIONS`), and
/// which of them a flag or the environment pins.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub strategy: Strategy,
    pub session_timeout_s: u64,
    /// 0 keeps requests forever.
    pub retention_days: u64,
    /// Option keys (`lb_strategy`, `session_timeout`, `retention_days`) set by a flag or the
    /// environment: a change here would have no effect, so the UI does not offer one.
    pub pinned: Vec<&'static str>,
}

/// The option keys of [`LiveSettings`], as in `core::config::OPTIONS`.
pub const STRATEGY_KEY: &str = "lb_strategy";
pub const SESSION_TIMEOUT_KEY: &str = "session_timeout";
pub const RETENTION_KEY: &str = "retention_days";

impl LiveSettings {
    /// The live options of a resolved configuration.
    pub fn of(settings: &Settings) -> LiveSettings {
        let pinned = [STRATEGY_KEY, SESSION_TIMEOUT_KEY, RETENTION_KEY]
            .into_iter()
            .filter(|key| {
                matches!(
                    settings.sources.get(key),
                    Some((ConfigSource::Flag | ConfigSource::Env, _))
                )
            })
            .collect();
        LiveSettings {
            strategy: settings.strategy,
            session_timeout_s: settings.session_timeout_s,
            retention_days: settings.retention_days,
            pinned,
        }
    }

    pub fn is_pinned(&self, key: &str) -> bool {
        self.pinned.contains(&key)
    }
}

/// One change of a live option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingChange {
    Strategy(Strategy),
    SessionTimeout { seconds: u64 },
    RetentionDays { days: u64 },
}

impl SettingChange {
    /// The option key and the value as `PATCH /api/config` takes them.
    pub fn as_option(&self) -> (&'static str, String) {
        match self {
            SettingChange::Strategy(strategy) => (STRATEGY_KEY, strategy.as_str().to_owned()),
            SettingChange::SessionTimeout { seconds } => (SESSION_TIMEOUT_KEY, seconds.to_string()),
            SettingChange::RetentionDays { days } => (RETENTION_KEY, days.to_string()),
        }
    }
}

/// An OAuth login opened: what the person needs to log in.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthStart {
    /// Names the login when it is finished.
    pub flow_id: String,
    pub authorize_url: String,
    pub expires_at: Millis,
    /// SPEC §15's warning, for subscription logins.
    pub warning: Option<String>,
}

/// One item of a live feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem<T> {
    Item(T),
    /// The UI fell behind and the feed dropped this many of the oldest items.
    Lagged(u64),
}

/// A live feed: the request feed (finished requests) or the log feed (JSON lines).
///
/// The UI takes what a feed holds on its frame clock instead of waiting on it: a publisher
/// (the proxy, on its request path) then never has a waiting reader to wake, so the UI costs
/// the proxy nothing per request but the copy into the feed.
pub trait Feed<T>: Send + 'static {
    /// The next item if one is waiting, without waiting: `Ok(None)` when none is,
    /// `Err(Ended)` once the feed has ended (the server is stopping).
    fn try_next(&mut self) -> Result<Option<FeedItem<T>>, Ended>;
}

/// The feed has ended: nothing more will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

impl<T: Clone + Send + 'static> Feed<T> for broadcast::Receiver<T> {
    fn try_next(&mut self) -> Result<Option<FeedItem<T>>, Ended> {
        feed_item(broadcast::Receiver::try_recv(self))
    }
}

/// What a broadcast receiver's `try_recv` (or one like it) means to the UI: an item, a lag, nothing
/// waiting, or the end.
pub fn feed_item<T>(received: Result<T, TryRecvError>) -> Result<Option<FeedItem<T>>, Ended> {
    match received {
        Ok(item) => Ok(Some(FeedItem::Item(item))),
        Err(TryRecvError::Lagged(missed)) => Ok(Some(FeedItem::Lagged(missed))),
        Err(TryRecvError::Empty) => Ok(None),
        Err(TryRecvError::Closed) => Err(Ended),
    }
}

/// Everything the UI reads and changes. Cheap to clone (the UI clones it into each operation
/// it runs, so a slow one never stops the screen); every method is safe to call from any
/// task, and none blocks the runtime: the synchronous ones read memory, the others are async.
///
/// Account changes are the operations the CLI and the API perform (a person's change bumps
/// the account's revision, and the running pool sees it at once); setting changes are those
/// of `PATCH /api/config`.
pub trait Source: Clone + Send + Sync + 'static {
    /// The live request feed: every request as it finishes.
    type Requests: Feed<Arc<RequestRecord>>;
    /// The live log feed: one JSON line per log event (`time`, `level`, `target`, `message`,
    /// `fields`), as `GET /api/logs/stream` sends them.
    type Logs: Feed<Arc<str>>;

    fn info(&self) -> ServerInfo;
    /// The server's clock.
    fn now(&self) -> Millis;
    fn health(&self) -> DatabaseHealth;
    fn settings(&self) -> LiveSettings;
    fn subscribe_requests(&self) -> Self::Requests;
    /// The recent log lines, oldest first, and a feed of every line after them.
    fn subscribe_logs(&self) -> (Vec<Arc<str>>, Self::Logs);

    /// Every account, ordered as stored.
    fn accounts(&self) -> impl Future<Output = Result<Vec<AccountRow>, SourceError>> + Send;
    /// The most recent requests, newest first (what the Requests tab starts with).
    fn recent_requests(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RequestRecord>, SourceError>> + Send;
    /// `ccflare_analytics::report` for `range`, at the server's now.
    fn report(&self, range: Range) -> impl Future<Output = Result<Report, SourceError>> + Send;

    /// Adds an API key account (the name defaults to `key-` and the key's last four); returns
    /// the stored name.
    fn add_api_key(
        &self,
        key: Secret,
        name: Option<String>,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;
    /// Creates a client key for `/v1` named `name`, with no limits; returns the key, which is
    /// never available again.
    fn create_client_key(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Secret, SourceError>> + Send;
    /// Opens an OAuth login for a new account named `name`.
    fn oauth_begin(
        &self,
        mode: Mode,
        name: String,
    ) -> impl Future<Output = Result<OAuthStart, SourceError>> + Send;
    /// Finishes a login with the pasted `CODE#STATE`; returns the stored account's name. A
    /// malformed paste or a passing failure leaves the login open for another try.
    fn oauth_complete(
        &self,
        flow_id: String,
        code: Secret,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;
    fn set_paused(
        &self,
        name: String,
        paused: bool,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
    fn rename(
        &self,
        name: String,
        new_name: String,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
    fn set_priority(
        &self,
        name: String,
        priority: i64,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
    fn remove(&self, name: String) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Applies a live option to the running server and stores it; returns the settings now
    /// in force.
    fn change_setting(
        &self,
        change: SettingChange,
    ) -> impl Future<Output = Result<LiveSettings, SourceError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_report_lag_nothing_waiting_and_their_end() {
        let (tx, mut feed) = broadcast::channel::<u32>(2);
        assert_eq!(feed.try_next(), Ok(None), "nothing yet");
        for n in 0..5 {
            tx.send(n).unwrap();
        }
        assert_eq!(feed.try_next(), Ok(Some(FeedItem::Lagged(3))));
        assert_eq!(feed.try_next(), Ok(Some(FeedItem::Item(3))));
        assert_eq!(feed.try_next(), Ok(Some(FeedItem::Item(4))));
        assert_eq!(feed.try_next(), Ok(None), "taken");
        tx.send(6).unwrap();
        drop(tx);
        assert_eq!(
            feed.try_next(),
            Ok(Some(FeedItem::Item(6))),
            "kept after the end"
        );
        assert_eq!(feed.try_next(), Err(Ended));
    }

    #[test]
    fn live_settings_name_what_a_flag_or_the_environment_pins() {
        let env =
            ccflare_core::config::Layer::from([(SESSION_TIMEOUT_KEY.to_owned(), "60".to_owned())]);
        let empty = ccflare_core::config::Layer::new();
        let settings = Settings::resolve(&empty, &env, &empty).unwrap();
        let live = LiveSettings::of(&settings);
        assert_eq!(live.session_timeout_s, 60);
        assert_eq!(live.pinned, [SESSION_TIMEOUT_KEY]);
        assert!(!live.is_pinned(STRATEGY_KEY));
    }
}
