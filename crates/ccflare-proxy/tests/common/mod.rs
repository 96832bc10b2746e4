//! `spawn_app()` for the proxy's integration tests: a mock upstream, a fresh SQLite file in a
//! temp dir, accounts stored in it, a manual clock, and the proxy serving on `127.0.0.1:0`.
//! The shared pieces come from `ccflare-testkit`; the options are the proxy's own.

#![allow(dead_code)]

use bytes::Bytes;
use ccflare_core::Clock;
use ccflare_core::config::Strategy;
use ccflare_core::record::RequestRecord;
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::ProxyConfig;
use ccflare_storage::{Writer, requests};
use ccflare_testkit::Reply;
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::proxy::{Fixture, Running};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::ops::Deref;
use std::time::Duration;

/// The client's own key, which must never reach the upstream.
pub const CLIENT_KEY: &str = "client-key-that-must-not-leak";

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
    /// How long running responses get when the proxy is stopped.
    pub shutdown_timeout: Duration,
    /// Most accounts tried for one request (0: every account).
    pub max_attempts: u32,
    /// The longest a whole request body may take to arrive.
    pub body_timeout: Duration,
    /// Bytes of request bodies held in memory at once, all requests together.
    pub max_body_memory: usize,
    /// Forward every `/v1/*` path, not only the documented routes.
    pub allow_all_paths: bool,
    /// Subscription answers carry the pool's unified five-hour headers.
    pub pool_rate_limit_headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        let config = ccflare_testkit::proxy::config();
        Options {
            strategy: Strategy::Priority,
            session_timeout_ms: 60_000,
            accounts: vec![("alpha", 0)],
            max_body_bytes: config.max_body_bytes,
            idle_timeout: config.idle_timeout,
            upstream_override: None,
            oauth_accounts: Vec::new(),
            shutdown_timeout: config.shutdown_timeout,
            max_attempts: config.max_attempts,
            body_timeout: config.body_timeout,
            max_body_memory: config.max_body_memory,
            allow_all_paths: config.allow_all_paths,
            pool_rate_limit_headers: config.pool_rate_limit_headers,
        }
    }
}

/// The running proxy (its `url`, `state`, `db`, `mock` and `clock` are reached through it),
/// with the requests the proxy's tests make.
pub struct App(Running);

impl Deref for App {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.0
    }
}

pub async fn spawn_app(options: Options) -> App {
    let fixture = Fixture::start().await;
    fixture.add_api_keys(&options.accounts).await;
    fixture.add_oauth_accounts(&options.oauth_accounts).await;
    let writer = Writer::spawn(fixture.db.clone());
    let upstream_url = options
        .upstream_override
        .clone()
        .unwrap_or_else(|| fixture.mock.url());
    let pool = Pool::new(PoolConfig {
        strategy: options.strategy,
        session_timeout_ms: options.session_timeout_ms,
    });
    let config = ProxyConfig {
        max_body_bytes: options.max_body_bytes,
        idle_timeout: options.idle_timeout,
        shutdown_timeout: options.shutdown_timeout,
        max_attempts: options.max_attempts,
        body_timeout: options.body_timeout,
        max_body_memory: options.max_body_memory,
        allow_all_paths: options.allow_all_paths,
        pool_rate_limit_headers: options.pool_rate_limit_headers,
        ..ccflare_testkit::proxy::config()
    };
    let state = fixture.state(pool, &writer, &upstream_url, config);
    let endpoints = ccflare_oauth::Endpoints {
        token_url: format!("{}/v1/oauth/token", fixture.mock.url()),
        ..ccflare_oauth::Endpoints::default()
    };
    state.set_token_refresher(
        ccflare_oauth::TokenClient::new(endpoints),
        fixture.db.clone(),
    );
    state
        .sync_accounts(&fixture.db)
        .await
        .expect("accounts load");
    App(fixture.serve(state, writer).await)
}

/// A Messages request body.
pub fn message_body(stream: bool) -> String {
    ccflare_testkit::Message::new("claude-sonnet-4-5")
        .stream(stream)
        .body()
}

impl App {
    pub fn clock_now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A POST to `path` as a client sends it, with its own key and `headers`.
    pub fn request(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Request<Full<Bytes>> {
        anthropic_post(&format!("{}{path}", self.url), CLIENT_KEY, headers, body)
    }

    /// A `GET` of `path` (`/health`, a management path).
    pub async fn get(&self, path: &str) -> Reply {
        self.send(ccflare_testkit::get(&format!("{}{path}", self.url)))
            .await
    }

    pub async fn post(&self, headers: &[(&str, &str)], stream: bool) -> Reply {
        self.send(self.request("/v1/messages", headers, message_body(stream)))
            .await
    }

    /// Sends a Messages request and returns the response with its headers, body unread.
    pub async fn open_post(&self, headers: &[(&str, &str)], stream: bool) -> Response<Incoming> {
        self.open(self.request("/v1/messages", headers, message_body(stream)))
            .await
    }

    /// The account that serves a plain request sent now (`""` if none did).
    pub async fn served_by(&self) -> String {
        self.post(&[], false)
            .await
            .header("x-ccflare-account")
            .to_owned()
    }

    /// Every record written so far, oldest first.
    pub async fn records(&self) -> Vec<RequestRecord> {
        self.state.writer.flush().await;
        let mut all = requests::recent(&self.db, 10_000).await.expect("records");
        all.reverse();
        all
    }

    pub async fn stop(self) {
        self.0.stop().await;
    }
}
