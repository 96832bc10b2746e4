//! The UI's [`Source`] over the server running in this process. Nothing here is an
//! operation of its own: reads are the proxy's live feed and pool views, the storage writer's
//! health, the API's log feed, `storage::requests::list` and `ccflare_analytics::report` (the
//! function `/api/analytics?range=` calls, so a figure on screen is the API's figure); changes
//! are the management API's operations ([`ccflare_api::accounts`], [`ccflare_api::oauth`],
//! [`ccflare_api::config::patch`]), so the UI refuses what the API refuses and the running
//! pool sees each change at once.

use ccflare_analytics::stats::{Zone, utc_offset_ms};
use ccflare_analytics::{Range, Report};
use ccflare_api::{ApiError, Ctx};
use ccflare_app::Handles;
use ccflare_core::client_key::KeyLimits;
use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountStatus, Millis, Secret};
use ccflare_oauth::Mode;
use ccflare_proxy::FinishedFeed;
use ccflare_storage::requests::{Order, RequestFilter};
use ccflare_tui::{
    AccountRow, DatabaseHealth, Ended, Feed, FeedItem, LiveSettings, OAuthStart, ServerInfo,
    SettingChange, Source, SourceError, feed_item,
};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The server in this process, as the UI sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InProcess {
    ctx: Ctx,
    info: Arc<ServerInfo>,
}

impl InProcess {
    /// The source over a started server's handles.
    pub async fn new(handles: &Handles) -> InProcess {
        let ctx = handles.api.ctx(handles.state.clone());
        let now = handles.state.now();
        // Times show in the local zone, as the CLI shows them; SQLite knows the zone's rules.
        let utc_offset_ms = utc_offset_ms(&handles.db, Zone::Local, now)
            .await
            .unwrap_or(0);
        let info = ServerInfo {
            listen: format!("http://{}", handles.local),
            database: handles.db.path().display().to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: handles.started_at,
            utc_offset_ms,
        };
        InProcess {
            ctx,
            info: Arc::new(info),
        }
    }
}

/// The finished requests of the proxy's live feed: the UI shows no starts, so with only the
/// UI subscribed the proxy builds none.
#[derive(Debug)]
pub struct Finished(FinishedFeed);

impl Feed<Arc<RequestRecord>> for Finished {
    fn try_next(&mut self) -> Result<Option<FeedItem<Arc<RequestRecord>>>, Ended> {
        feed_item(self.0.try_recv())
    }
}

/// The API's error as the UI says it. Every variant is named, so a new one must be placed.
pub fn source_error(error: ApiError) -> SourceError {
    match error {
        ApiError::BadRequest(message) => SourceError::Invalid(message),
        ApiError::AccountNotFound { name } => SourceError::AccountNotFound { name },
        ApiError::Conflict(message) => SourceError::Conflict(message),
        ApiError::LoginFlowNotFound => SourceError::LoginExpired,
        ApiError::TokenEndpoint(message) => SourceError::Login(message),
        too_many @ ApiError::TooManyLogins { .. } => SourceError::Conflict(too_many.to_string()),
        failed @ (ApiError::Storage(_) | ApiError::Analytics(_)) => {
            SourceError::Unavailable(failed.to_string())
        }
        // Answers to HTTP requests only; the operations the UI calls never give them.
        http @ (ApiError::RequestNotFound { .. }
        | ApiError::NoRoute { .. }
        | ApiError::MethodNotAllowed { .. }
        | ApiError::BodyTooLarge { .. }
        | ApiError::BodyTimeout
        | ApiError::AdminKeyRequired
        | ApiError::WrongAdminKey
        | ApiError::SessionUnavailable
        | ApiError::ClientKeyRefused(_)
        | ApiError::KeyNotFound { .. }
        | ApiError::Forbidden(_)) => SourceError::Invalid(http.to_string()),
    }
}

fn unavailable(error: impl std::fmt::Display) -> SourceError {
    SourceError::Unavailable(error.to_string())
}

impl Source for InProcess {
    type Requests = Finished;
    type Logs = broadcast::Receiver<Arc<str>>;

    fn info(&self) -> ServerInfo {
        (*self.info).clone()
    }

    fn now(&self) -> Millis {
        self.ctx.state().now()
    }

    /// What `/health` says of the database.
    fn health(&self) -> DatabaseHealth {
        let state = self.ctx.state();
        let totals = state.writer.totals();
        DatabaseHealth {
            writer: state.writer.health().borrow().clone(),
            waiting_records: state.writer.queue_depth(),
            rejected_records: totals.rejected,
            dropped_records: totals.dropped,
            unsaved_logins: state.unsaved_logins().len(),
        }
    }

    fn settings(&self) -> LiveSettings {
        LiveSettings::of(&self.ctx.state().settings())
    }

    fn subscribe_requests(&self) -> Self::Requests {
        Finished(self.ctx.state().subscribe_finished())
    }

    fn subscribe_logs(&self) -> (Vec<Arc<str>>, Self::Logs) {
        self.ctx.logs().subscribe()
    }

    /// The stored accounts joined with the pool's views, as `GET /api/accounts` joins them.
    async fn accounts(&self) -> Result<Vec<AccountRow>, SourceError> {
        let stored = ccflare_storage::accounts::list_with_usage(self.ctx.db())
            .await
            .map_err(unavailable)?;
        let state = self.ctx.state();
        let views = state.pool().views(state.now());
        Ok(AccountRow::join(&stored, &views))
    }

    /// The first page of `GET /api/requests`: the newest started first.
    async fn recent_requests(&self, limit: u32) -> Result<Vec<RequestRecord>, SourceError> {
        let newest = Order::NewestStarted { after: None };
        let page = ccflare_storage::requests::list(
            self.ctx.db(),
            &RequestFilter::default(),
            newest,
            limit,
        )
        .await
        .map_err(unavailable)?;
        Ok(page
            .requests
            .into_iter()
            .map(|listed| listed.record)
            .collect())
    }

    async fn report(&self, range: Range) -> Result<Report, SourceError> {
        ccflare_analytics::report(self.ctx.db(), self.now(), range)
            .await
            .map_err(|error| source_error(error.into()))
    }

    async fn add_api_key(&self, key: Secret, name: Option<String>) -> Result<String, SourceError> {
        let (account, _) =
            ccflare_api::accounts::add_api_key(&self.ctx, &key, name.as_deref(), None)
                .await
                .map_err(source_error)?;
        Ok(account.name)
    }

    /// The API's `POST /api/keys`, with no limits.
    async fn create_client_key(&self, name: String) -> Result<Secret, SourceError> {
        let (_, key) = ccflare_api::keys::create(&self.ctx, &name, KeyLimits::default(), None)
            .await
            .map_err(source_error)?;
        Ok(key)
    }

    async fn oauth_begin(&self, mode: Mode, name: String) -> Result<OAuthStart, SourceError> {
        let start = ccflare_api::oauth::begin(&self.ctx, mode, name, None)
            .await
            .map_err(source_error)?;
        Ok(OAuthStart {
            flow_id: start.flow_id,
            authorize_url: start.authorize_url,
            expires_at: start.expires_at,
            warning: start.warning.map(str::to_owned),
        })
    }

    async fn oauth_complete(&self, flow_id: String, code: Secret) -> Result<String, SourceError> {
        let done = ccflare_api::oauth::finish(&self.ctx, flow_id, code)
            .await
            .map_err(source_error)?;
        Ok(done.name)
    }

    async fn set_paused(&self, name: String, paused: bool) -> Result<(), SourceError> {
        let status = if paused {
            AccountStatus::Paused
        } else {
            AccountStatus::Active
        };
        ccflare_api::accounts::set_status(&self.ctx, &name, status)
            .await
            .map_err(source_error)
    }

    async fn rename(&self, name: String, new_name: String) -> Result<(), SourceError> {
        ccflare_api::accounts::rename(&self.ctx, &name, &new_name)
            .await
            .map_err(source_error)
    }

    async fn set_priority(&self, name: String, priority: i64) -> Result<(), SourceError> {
        ccflare_api::accounts::set_priority(&self.ctx, &name, priority)
            .await
            .map_err(source_error)
    }

    async fn remove(&self, name: String) -> Result<(), SourceError> {
        ccflare_api::accounts::remove(&self.ctx, &name)
            .await
            .map_err(source_error)
    }

    async fn change_setting(&self, change: SettingChange) -> Result<LiveSettings, SourceError> {
        let (key, value) = change.as_option();
        let changes = serde_json::Map::from_iter([(key.to_owned(), value.into())]);
        ccflare_api::config::patch(&self.ctx, changes)
            .await
            .map_err(source_error)?;
        Ok(self.settings())
    }
}

#[cfg(test)]
mod tests {
    //! The source over a real server: `ccflare_app` starts it on port 0 with a temp database,
    //! proxying to the mock upstream; the answers are compared with the management API's.

    use super::*;
    use ccflare_app::{Loaded, Logging, Running, Server};
    use ccflare_core::config::{Layer, Strategy};
    use ccflare_mock::MockUpstream;
    use ccflare_testkit::http::anthropic_post;
    use ccflare_testkit::{GUARD, Message, Reply, eventually, get, key, send};
    use ccflare_tui::{Feed, FeedItem};

    struct Fixture {
        source: InProcess,
        url: String,
        running: Running,
        _mock: MockUpstream,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        /// A server with API-key accounts `a` and `b`, and `env` as its environment layer.
        async fn start(env: &[(&str, &str)]) -> Fixture {
            let mock = MockUpstream::start().await.expect("mock starts");
            let dir = tempfile::tempdir().unwrap();
            let layer = |pairs: &[(&str, &str)]| -> Layer {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            let database = dir.path().join("ccflare.db");
            let flags = layer(&[
                ("port", "0"),
                ("database_url", database.to_str().unwrap()),
                ("upstream_url", &mock.url()),
                ("api_keys", &format!("{},{}", key("a"), key("b"))),
            ]);
            let loaded = Loaded::from_layers(flags, layer(env), Layer::new()).unwrap();
            let server = Server::start(loaded, Logging::Quiet).await.unwrap();
            let source = InProcess::new(&server.handles()).await;
            let url = server.url();
            let running = server.serve(std::future::pending());
            Fixture {
                source,
                url,
                running,
                _mock: mock,
                _dir: dir,
            }
        }

        async fn message(&self) -> Reply {
            let body = Message::new("claude-haiku-4-5").content("hi").body();
            let request = anthropic_post(&format!("{}/v1/messages", self.url), "client", &[], body);
            let reply = send(request).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply
        }

        async fn api(&self, path: &str) -> serde_json::Value {
            let reply = send(get(&format!("{}{path}", self.url))).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            reply.json()
        }

        async fn stop(self) {
            self.running.stop();
            self.running.wait().await.expect("stops cleanly");
        }
    }

    #[tokio::test]
    async fn the_ui_reads_what_the_api_reads() {
        let fixture = Fixture::start(&[]).await;
        let source = &fixture.source;
        assert_eq!(source.info().listen, fixture.url);
        let mut feed = source.subscribe_requests();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                fixture
                    .message()
                    .await
                    .header("x-ccflare-request-id")
                    .to_owned(),
            );
        }
        // The live feed has each request as it finished, and nothing else.
        for id in &ids {
            let item = eventually(GUARD, "the next finished request", || {
                std::future::ready(feed.try_next().transpose())
            })
            .await;
            match item {
                Ok(FeedItem::Item(record)) => assert_eq!(&record.id, id),
                other => panic!("expected the record of {id}, got {other:?}"),
            }
        }
        let recent = eventually(GUARD, "the three rows are stored", || async {
            let recent = source.recent_requests(10).await.unwrap();
            (recent.len() == 3).then_some(recent)
        })
        .await;
        assert_eq!(recent[0].id, ids[2], "newest first");

        // The analytics figures are the API's, from the same function.
        let report = serde_json::to_value(source.report(Range::Hour).await.unwrap()).unwrap();
        let api = fixture.api("/api/analytics?range=1h").await;
        for field in [
            "totals",
            "latency_ms",
            "ttfb_ms",
            "models",
            "accounts",
            "errors",
            "requests_last_hour",
        ] {
            assert_eq!(report[field], api[field], "{field}");
        }
        assert_eq!(report["totals"]["requests"], 3);

        // Accounts as `GET /api/accounts` lists them, with the pool's state.
        let accounts = source.accounts().await.unwrap();
        let listed = fixture.api("/api/accounts").await;
        let names: Vec<&str> = listed["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            accounts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            names
        );
        assert_eq!(accounts.iter().map(|a| a.requests).sum::<i64>(), 3);
        assert!(
            accounts
                .iter()
                .all(|a| a.state == ccflare_pool::RoutingState::Active)
        );
        assert!(source.health().is_ok());
        fixture.stop().await;
    }

    #[tokio::test]
    async fn a_client_key_made_in_the_ui_opens_v1_at_once() {
        let fixture = Fixture::start(&[]).await;
        let key = fixture
            .source
            .create_client_key("alice".into())
            .await
            .unwrap();
        assert!(key.expose().starts_with("ccf_"));
        let body = || Message::new("claude-haiku-4-5").content("hi").body();
        let url = format!("{}/v1/messages", fixture.url);
        let reply = send(anthropic_post(&url, key.expose(), &[], body())).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let wrong = format!("ccf_{}", "x".repeat(43));
        let reply = send(anthropic_post(&url, &wrong, &[], body())).await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        let listed = fixture.api("/api/keys").await;
        assert!(listed.to_string().contains("alice"), "{listed}");
        assert!(!listed.to_string().contains(key.expose()), "never listed");
        assert!(
            fixture
                .source
                .create_client_key("alice".into())
                .await
                .is_err(),
            "one name, one key"
        );
        fixture.stop().await;
    }

    #[tokio::test]
    async fn changes_are_the_apis_and_the_pool_routes_by_them_at_once() {
        // The session timeout is pinned by the environment.
        let fixture = Fixture::start(&[("session_timeout", "60")]).await;
        let source = &fixture.source;
        let first = fixture
            .message()
            .await
            .header("x-ccflare-account")
            .to_owned();
        source.set_paused(first.clone(), true).await.unwrap();
        // No wait for the one-second sync: the next request already avoids it.
        let next = fixture
            .message()
            .await
            .header("x-ccflare-account")
            .to_owned();
        assert_ne!(next, first);
        source.set_paused(first.clone(), false).await.unwrap();

        // Bad input is refused with the API's words, and nothing is stored.
        let before = source.accounts().await.unwrap().len();
        match source.add_api_key(Secret::new("not-a-key"), None).await {
            Err(SourceError::Invalid(message)) => assert!(message.starts_with("api_key:")),
            other => panic!("expected an invalid key, got {other:?}"),
        }
        assert_eq!(source.accounts().await.unwrap().len(), before);
        let added = source
            .add_api_key(Secret::new(key("c")), Some("gamma".into()))
            .await
            .unwrap();
        assert_eq!(added, "gamma");
        assert!(matches!(
            source.rename("gamma".into(), first.clone()).await,
            Err(SourceError::Conflict(_))
        ));
        source.rename("gamma".into(), "delta".into()).await.unwrap();
        source.set_priority("delta".into(), 7).await.unwrap();
        let delta = fixture.api("/api/accounts/delta").await;
        assert_eq!(delta["priority"], 7);
        source.remove("delta".into()).await.unwrap();
        assert_eq!(
            source.remove("delta".into()).await,
            Err(SourceError::AccountNotFound {
                name: "delta".into()
            })
        );

        // Settings go the way of PATCH /api/config: applied, stored, or refused when pinned.
        let settings = source
            .change_setting(SettingChange::Strategy(Strategy::RoundRobin))
            .await
            .unwrap();
        assert_eq!(settings.strategy, Strategy::RoundRobin);
        let config = fixture.api("/api/config").await;
        let strategy = config["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == "lb_strategy")
            .unwrap()
            .clone();
        assert_eq!(
            (strategy["value"].as_str(), strategy["source"].as_str()),
            (Some("round-robin"), Some("database"))
        );
        assert!(settings.is_pinned("session_timeout"));
        assert!(matches!(
            source
                .change_setting(SettingChange::SessionTimeout { seconds: 5 })
                .await,
            Err(SourceError::Conflict(_))
        ));

        // An OAuth login opens, refuses a malformed paste and stays open for another try.
        let login = source.oauth_begin(Mode::Max, "sub".into()).await.unwrap();
        assert!(login.warning.is_some());
        for _ in 0..2 {
            assert!(matches!(
                source
                    .oauth_complete(login.flow_id.clone(), Secret::new("no-state-here"))
                    .await,
                Err(SourceError::Invalid(_))
            ));
        }
        assert_eq!(
            source
                .oauth_complete("unknown".into(), Secret::new("a#b"))
                .await,
            Err(SourceError::LoginExpired)
        );
        fixture.stop().await;
    }
}
