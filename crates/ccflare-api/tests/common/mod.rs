//! `spawn_app()` for the management API's tests: a mock upstream, a fresh SQLite file in a temp
//! dir, accounts stored in it, the proxy serving on `127.0.0.1:0` with the API installed, and
//! calls to it. The shared pieces come from `ccflare-testkit`; the configuration layers, the
//! API and its retention task are this crate's own.

#![allow(dead_code)]

use ccflare_api::{Api, LogFeed};
use ccflare_core::config::{Layer, Settings, Strategy};
use ccflare_mock::MockUpstream;
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::ConfigLayers;
use ccflare_storage::Writer;
use ccflare_testkit::Reply;
use ccflare_testkit::http::{anthropic_post, request};
use ccflare_testkit::proxy::{Fixture, Running};
use http::Method;
use hyper::body::Incoming;
use std::ops::Deref;
use std::sync::Arc;
use tokio::sync::watch;

/// The client's own key, which must never reach the upstream.
pub const CLIENT_KEY: &str = "client-key-that-must-not-leak";

pub struct Options {
    pub strategy: Strategy,
    /// Accounts (name, priority).
    pub accounts: Vec<(&'static str, i64)>,
    /// The environment layer of the configuration (e.g. to pin a setting).
    pub env: Layer,
    pub logs: LogFeed,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::Priority,
            accounts: vec![("alpha", 0), ("beta", 1)],
            env: Layer::new(),
            logs: LogFeed::default(),
        }
    }
}

/// The running proxy with the API installed (its `url`, `state`, `db`, `mock` and `clock` are
/// reached through it), and the retention task's stop switch.
pub struct App {
    running: Running,
    retention_stop: watch::Sender<bool>,
}

impl Deref for App {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.running
    }
}

pub async fn spawn_app(options: Options) -> App {
    let fixture = Fixture::start().await;
    fixture.add_api_keys(&options.accounts).await;
    let writer = Writer::spawn(fixture.db.clone());
    // The strategy comes from the "config file", so the API may change it.
    let file: Layer = [("lb_strategy".to_owned(), options.strategy.to_string())]
        .into_iter()
        .collect();
    let layers = ConfigLayers {
        flags: Layer::new(),
        env: options.env.clone(),
        file,
    };
    let settings = Settings::resolve(&layers.flags, &layers.env, &layers.file).expect("settings");
    let pool = Pool::new(PoolConfig {
        strategy: settings.strategy,
        session_timeout_ms: settings.session_timeout_s as i64 * 1000,
    });
    let state = fixture.state(
        pool,
        &writer,
        &fixture.mock.url(),
        ccflare_testkit::proxy::config(),
    );
    state.configure(layers, settings);
    state
        .sync_accounts(&fixture.db)
        .await
        .expect("accounts load");
    let api = Api::new(fixture.db.clone(), options.logs);
    assert!(state.set_management(Arc::new(api.clone())));
    let (retention_stop, stopped_rx) = watch::channel(false);
    // Retention runs as in the server (here it has nothing to do: retention is off).
    let _retention = api.spawn_retention(state.clone(), stopped_rx);
    App {
        running: fixture.serve(state, writer).await,
        retention_stop,
    }
}

/// A Messages request body for `model`; `cached` adds a system prompt with `cache_control`,
/// which makes the mock report cache use.
pub fn message_body(model: &str, stream: bool, cached: bool) -> String {
    ccflare_testkit::Message::new(model)
        .stream(stream)
        .cached(cached)
        .body()
}

/// The OAuth endpoints of the mock, as the environment layer of the configuration.
pub fn mock_oauth_endpoints(mock: &MockUpstream) -> Layer {
    [
        (
            "oauth_token_url".to_owned(),
            format!("{}/v1/oauth/token", mock.url()),
        ),
        (
            "oauth_api_key_url".to_owned(),
            format!("{}/api/oauth/claude_cli/create_api_key", mock.url()),
        ),
    ]
    .into_iter()
    .collect()
}

/// Points the app's OAuth logins at the mock's token endpoints (added to its environment layer,
/// as `CCFLARE_OAUTH_*` would be).
pub fn use_mock_oauth(app: &App) {
    let mut layers = app.state.layers();
    layers.env.extend(mock_oauth_endpoints(&app.mock));
    let settings = Settings::resolve(&layers.flags, &layers.env, &layers.file).expect("settings");
    app.state.configure(layers, settings);
}

/// Stores a subscription account `sub` with tokens the mock issued (valid an hour, five minutes
/// of refresh margin) and loads it into the running pool, as a login would.
pub async fn add_subscription(app: &App) {
    let (access, refresh) = app.mock.issue_oauth_tokens();
    let now = app.state.now();
    ccflare_storage::oauth::add_oauth_account(
        &app.db,
        "sub",
        &ccflare_core::Secret::new(access),
        Some(&ccflare_core::Secret::new(refresh)),
        now + 3_600_000,
        Some(5),
        now,
    )
    .await
    .expect("subscription account stored");
    app.state
        .sync_accounts(&app.db)
        .await
        .expect("accounts load");
}

/// Makes `logs` this thread's default tracing subscriber until the guard drops. For tests on a
/// current-thread runtime, where the server and the mock log on this thread too.
pub fn log_to(logs: &LogFeed) -> tracing::subscriber::DefaultGuard {
    use tracing_subscriber::layer::SubscriberExt;
    tracing::subscriber::set_default(tracing_subscriber::registry().with(logs.layer()))
}

/// The `state` parameter of an authorize URL.
pub fn state_of(authorize_url: &str) -> String {
    authorize_url
        .split('&')
        .find_map(|p| p.strip_prefix("state="))
        .expect("a state")
        .to_owned()
}

/// The PKCE verifiers the mock's token endpoint received, in order: secrets no answer or log
/// line may carry.
pub fn code_verifiers(mock: &MockUpstream) -> Vec<String> {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/v1/oauth/token")
        .filter_map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["code_verifier"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

impl App {
    /// Opens a live feed (`GET path`): the response once its headers are in, events unread.
    pub async fn feed(&self, path: &str) -> http::Response<Incoming> {
        self.open(ccflare_testkit::get(&format!("{}{path}", self.url)))
            .await
    }

    /// A management API call.
    pub async fn call(&self, method: Method, path: &str, body: &str) -> Reply {
        let url = format!("{}{path}", self.url);
        let headers = [("content-type", "application/json")];
        self.send(request(method, &url, &headers, body.to_owned()))
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, "").await
    }

    /// A proxied Messages request, with extra headers (the mock's steering headers).
    pub async fn message(&self, body: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("{}/v1/messages", self.url);
        self.send(anthropic_post(&url, CLIENT_KEY, headers, body.to_owned()))
            .await
    }

    /// Waits until every record sent so far is in the database.
    pub async fn flushed(&self) {
        tokio::time::timeout(ccflare_testkit::GUARD, self.state.writer.flush())
            .await
            .expect("the writer flushes in time");
    }

    pub async fn stop(self) {
        let _ = self.retention_stop.send(true);
        self.running.stop().await;
    }
}

/// The value at nearest rank `per_mille`/1000 of `values` (which it sorts).
pub fn nearest_rank(values: &mut [i64], per_mille: usize) -> i64 {
    values.sort_unstable();
    let rank = (per_mille * values.len()).div_ceil(1000).max(1);
    values[rank - 1]
}
