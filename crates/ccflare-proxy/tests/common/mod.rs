//! `spawn_app()` for the proxy's integration tests: a mock upstream, a fresh SQLite file in a
//! temp dir, accounts stored in it, a manual clock, and the proxy serving on `127.0.0.1:0`.

#![allow(dead_code)]

use bytes::Bytes;
use ccflare_core::config::Strategy;
use ccflare_core::record::RequestRecord;
use ccflare_core::{Clock, ManualClock, Secret, SystemClock};
use ccflare_mock::MockUpstream;
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::{AppState, ProxyConfig, UpstreamClient};
use ccflare_storage::{Db, Writer, accounts, requests};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Every wait in a test is bounded so a bug fails the test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(20);

/// The API key of test account `name`.
pub fn key(name: &str) -> String {
    format!("sk-ant-api03-{name}-0123456789abcdefghij-{name}")
}

pub struct Options {
    pub strategy: Strategy,
    pub session_timeout_ms: i64,
    /// Accounts (name, priority).
    pub accounts: Vec<(&'static str, i64)>,
    pub max_body_bytes: usize,
    pub idle_timeout: Duration,
    /// Point the proxy at this URL instead of the mock.
    pub upstream_override: Option<String>,
    /// OAuth accounts (name, priority, token lifetime left in ms), with tokens the mock issued.
    pub oauth_accounts: Vec<(&'static str, i64, i64)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::Priority,
            session_timeout_ms: 60_000,
            accounts: vec![("alpha", 0)],
            max_body_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            upstream_override: None,
            oauth_accounts: Vec::new(),
        }
    }
}

pub struct App {
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

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub async fn spawn_app(options: Options) -> App {
    let mock = MockUpstream::start().await.expect("mock starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_path(&dir.path().join("ccflare.db"))
        .await
        .expect("database opens");
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    for (name, priority) in &options.accounts {
        accounts::upsert_api_key(
            &db,
            &Secret::new(key(name)),
            Some(name),
            Some(*priority),
            clock.now_ms(),
        )
        .await
        .expect("account stored");
    }
    let writer = Writer::spawn(db.clone());
    let upstream_url = options
        .upstream_override
        .clone()
        .unwrap_or_else(|| mock.url());
    let upstream = UpstreamClient::new(&upstream_url, Duration::from_secs(5)).expect("client");
    let pool = Pool::new(PoolConfig {
        strategy: options.strategy,
        session_timeout_ms: options.session_timeout_ms,
    });
    let config = ProxyConfig {
        max_body_bytes: options.max_body_bytes,
        idle_timeout: options.idle_timeout,
        max_attempts: 0,
        shutdown_timeout: Duration::from_secs(5),
    };
    let state = AppState::new(
        pool,
        writer.handle(),
        upstream,
        config,
        clock.clone() as Arc<dyn Clock>,
    );
    for (name, priority, lifetime_ms) in &options.oauth_accounts {
        let (access, refresh) = mock.issue_oauth_tokens();
        ccflare_storage::oauth::add_oauth_account(
            &db,
            name,
            &Secret::new(access),
            Some(&Secret::new(refresh)),
            clock.now_ms() + lifetime_ms,
            Some(*priority),
            clock.now_ms(),
        )
        .await
        .expect("OAuth account stored");
    }
    let endpoints = ccflare_oauth::Endpoints {
        token_url: format!("{}/v1/oauth/token", mock.url()),
        ..ccflare_oauth::Endpoints::default()
    };
    state.set_token_refresher(ccflare_oauth::TokenClient::new(endpoints), db.clone());
    state.sync_accounts(&db).await.expect("accounts load");
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
    App {
        url,
        state,
        db,
        mock,
        clock,
        stop: Some(stop),
        task: Some(task),
        writer: Some(writer),
        _dir: dir,
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A Messages request body.
pub fn message_body(stream: bool) -> String {
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"Hello there"}}]}}"#
    )
}

impl App {
    pub fn clock_now(&self) -> i64 {
        use ccflare_core::Clock;
        self.clock.now_ms()
    }

    pub fn request(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", "client-key-that-must-not-leak");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(body.into())).expect("request")
    }

    /// Sends a request and returns the response with its headers, body unread.
    pub async fn open(&self, request: Request<Full<Bytes>>) -> http::Response<Incoming> {
        tokio::time::timeout(GUARD, client().request(request))
            .await
            .expect("in time")
            .expect("response")
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        let response = self.open(request).await;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(GUARD, body.collect())
            .await
            .expect("in time")
            .expect("body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn post(&self, headers: &[(&str, &str)], stream: bool) -> Reply {
        self.send(self.request("/v1/messages", headers, message_body(stream)))
            .await
    }

    /// Every record written so far, oldest first.
    pub async fn records(&self) -> Vec<RequestRecord> {
        self.state.writer.flush().await;
        let mut all = requests::recent(&self.db, 10_000).await.expect("records");
        all.reverse();
        all
    }

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
