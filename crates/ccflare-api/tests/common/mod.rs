//! `spawn_app()` for the management API's tests: a mock upstream, a fresh SQLite file in a temp
//! dir, accounts stored in it, the proxy serving on `127.0.0.1:0` with the API installed, and a
//! small HTTP client. Copied from the proxy's helper and extended with the API.

#![allow(dead_code)]

use bytes::Bytes;
use ccflare_api::{Api, LogFeed};
use ccflare_core::config::{Layer, Settings, Strategy};
use ccflare_core::{Clock, ManualClock, Secret, SystemClock};
use ccflare_mock::MockUpstream;
use ccflare_pool::{Pool, PoolConfig};
use ccflare_proxy::{AppState, ConfigLayers, ProxyConfig, UpstreamClient};
use ccflare_storage::{Db, Writer, accounts};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Every wait in a test is bounded so a bug fails the test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(20);

/// The API key of test account `name`.
pub fn key(name: &str) -> String {
    format!("sk-ant-api03-{name}-0123456789abcdefghij-{name}")
}

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

pub struct App {
    pub url: String,
    pub state: Arc<AppState>,
    pub db: Db,
    pub mock: MockUpstream,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    writer: Option<Writer>,
    retention_stop: watch::Sender<bool>,
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

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
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
    let upstream = UpstreamClient::new(&mock.url(), Duration::from_secs(5)).expect("client");
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
    let config = ProxyConfig {
        max_body_bytes: 1024 * 1024,
        idle_timeout: Duration::from_secs(30),
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
    state.configure(layers, settings);
    state.sync_accounts(&db).await.expect("accounts load");
    let api = Api::new(db.clone(), options.logs);
    assert!(state.set_management(Arc::new(api.clone())));
    let (retention_stop, stopped_rx) = watch::channel(false);
    // Retention runs as in the server (here it has nothing to do: retention is off).
    let _retention = api.spawn_retention(state.clone(), stopped_rx);
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
        retention_stop,
        _dir: dir,
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A Messages request body for `model`; `"cache_control"` in it makes the mock report cache use.
pub fn message_body(model: &str, stream: bool, cached: bool) -> String {
    let cache = if cached {
        r#","system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}]"#
    } else {
        ""
    };
    format!(
        r#"{{"model":"{model}","max_tokens":64,"stream":{stream}{cache},"messages":[{{"role":"user","content":"Hello there"}}]}}"#
    )
}

impl App {
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

    /// A management API call.
    pub async fn call(&self, method: Method, path: &str, body: &str) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, "").await
    }

    /// A proxied Messages request, with extra headers (the mock's steering headers).
    pub async fn message(&self, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut builder = Request::post(format!("{}/v1/messages", self.url))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", "client-key-that-must-not-leak");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(
            builder
                .body(Full::new(Bytes::from(body.to_owned())))
                .expect("request"),
        )
        .await
    }

    /// Waits until every record sent so far is in the database.
    pub async fn flushed(&self) {
        tokio::time::timeout(GUARD, self.state.writer.flush())
            .await
            .expect("the writer flushes in time");
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = self.retention_stop.send(true);
        if let Some(writer) = self.writer.take() {
            writer.close().await;
        }
    }
}

/// Reads Server-Sent Events from a response body, one event at a time.
pub struct SseReader {
    body: Incoming,
    buffer: String,
}

/// One event: its name (`message` when it has none) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.data))
    }
}

impl SseReader {
    pub fn new(body: Incoming) -> SseReader {
        SseReader {
            body,
            buffer: String::new(),
        }
    }

    /// The next event, skipping comments and `retry:` lines; panics after [`GUARD`].
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(GUARD, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut name = None;
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("event: ") {
                            name = Some(value.to_owned());
                        } else if let Some(value) = line.strip_prefix("data: ") {
                            data.push(value);
                        }
                    }
                    if name.is_some() || !data.is_empty() {
                        return Event {
                            name: name.unwrap_or_else(|| "message".to_owned()),
                            data: data.join("\n"),
                        };
                    }
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the feed is still open")
                    .expect("a frame");
                if let Ok(data) = frame.into_data() {
                    self.buffer.push_str(&String::from_utf8_lossy(&data));
                }
            }
        })
        .await
        .expect("an event in time")
    }

    /// Everything received so far that is not yet read as an event.
    pub fn unread(&self) -> &str {
        &self.buffer
    }
}

/// The value at nearest rank `per_mille`/1000 of `values` (which it sorts).
pub fn nearest_rank(values: &mut [i64], per_mille: usize) -> i64 {
    values.sort_unstable();
    let rank = (per_mille * values.len()).div_ceil(1000).max(1);
    values[rank - 1]
}
