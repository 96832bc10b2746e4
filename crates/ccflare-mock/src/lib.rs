//! A mock Anthropic upstream for ccflare's integration tests and benchmarks.
//!
//! [`MockUpstream::start`] serves the Messages API on `127.0.0.1:0` over real HTTP/1.1 with
//! keep-alive: `POST /v1/messages` (JSON, or SSE when the body has `"stream": true`),
//! `POST /v1/messages/count_tokens`, `GET /v1/models`, `GET /v1/models/{id}`, a stub
//! `POST /v1/complete`, Message Batches (create, list, retrieve, cancel, delete, JSONL results
//! at an absolute `results_url` on the mock's origin) and Files (upload, list, metadata,
//! delete), each batch and file found only with the credential that made it (module
//! `batches`). Query strings such as `?beta=true` are accepted; every other path is a
//! 404 `not_found_error`. Every response carries `request-id` and `anthropic-organization-id`;
//! error bodies are Anthropic-shaped and their `request_id` equals the header.
//!
//! # Authentication
//!
//! The credential is the `x-api-key` value, else the token of `authorization: Bearer`. Any
//! credential starting with `sk-ant-` is accepted unless [revoked](MockUpstream::revoke). OAuth
//! tokens (`sk-ant-oat…`) must come as a bearer token with `oauth-2025-04-20` in
//! `anthropic-beta`, else 401 `"OAuth authentication is currently not supported."`. Successful
//! responses carry the `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*`
//! family for API keys (RFC 3339 resets a minute ahead) and the unified family (status
//! `allowed`, epoch-second resets) for OAuth tokens.
//!
//! Checks run in this order, so a queued fault is consumed by the first authenticated request
//! on a known route: route (404), credential (401), [fault](Fault), `anthropic-version` (400),
//! body validation (400).
//!
//! # OAuth
//!
//! `POST /v1/oauth/token` answers both grants (JSON bodies as protocol doc §6.1–§6.2):
//! `authorization_code` (any code but `invalid-code`; `code_verifier` and `redirect_uri`
//! required) and `refresh_token`, which **rotates**: the presented refresh token dies and a
//! reused or [killed](MockUpstream::kill_refresh_token) one is 400 `invalid_grant`. Both
//! return `access_token` (`sk-ant-oat01-…`), `refresh_token` (`sk-ant-ort01-…`) and
//! `expires_in` (28800 unless [set](MockUpstream::set_oauth_expires_in)).
//! `POST /api/oauth/claude_cli/create_api_key` with a live bearer access token returns
//! `{"raw_key":"sk-ant-api03-…"}`. An access token [expired](MockUpstream::expire_access_token)
//! by a test gets 401 "OAuth token has expired…" on the Messages routes.
//!
//! # Deterministic usage
//!
//! So that tests can check the proxy's accounting exactly:
//!
//! - `input_tokens` = request body length in bytes / 4 (integer division), at least 1.
//! - `output_tokens` = number of whitespace-separated words of the response text.
//! - If the request body contains the substring `"cache_control"` (with the quotes):
//!   `cache_read_input_tokens` = 100 and `cache_creation_input_tokens` = 50, split as
//!   `ephemeral_5m_input_tokens` = 50 and `ephemeral_1h_input_tokens` = 0. Otherwise all three
//!   are 0.
//! - In a stream, `message_start` carries the input and cache counts with the placeholder
//!   `output_tokens: 1`; the final `message_delta` repeats them with the real `output_tokens`.
//! - `count_tokens` answers `{"input_tokens":N}` with the same `input_tokens` rule.
//!
//! # Steering headers
//!
//! Request headers pass through the proxy unchanged, so tests steer the mock with them:
//!
//! - `x-mock-text: <text>`: the response text (default `"Hello from the mock upstream."`). A
//!   stream sends one `text_delta` per word, each with its trailing whitespace.
//! - `x-mock-stream-bytes: N`: the text is `ceil(N / 1024)` (at least 1) chunks of exactly 1024
//!   bytes, each `"mocktok "` repeated 128 times; a stream sends one `text_delta` per chunk.
//!   So `output_tokens` = 128 × chunks. Overrides `x-mock-text`. Without `"stream": true` the
//!   same text comes as one JSON body, limited to 64 MiB.
//! - `x-mock-chunk-delay-ms: N`: wait N ms before each SSE event after the first.
//! - `x-mock-split: 1`: write each SSE event in several pieces, 1 ms apart, cut inside the
//!   `event:` line, in the middle of the `data:` line, just after the first byte of the first
//!   multi-byte UTF-8 character (if any), and between the two final newlines.
//!
//! - `x-mock-web-searches: N`: the answer ran N web searches: after the text block come N
//!   `server_tool_use` blocks (`web_search`, query as one `input_json_delta`), each followed by
//!   its complete `web_search_tool_result` block, and the usage (of the JSON Message and of
//!   the final `message_delta`) carries `"server_tool_use":{"web_search_requests":N}`.
//!
//! # Quota windows
//!
//! A credential put in the window mode ([`MockUpstream::set_window`]) has a subscription-style
//! five-hour budget of tokens: its Messages answers carry unified headers computed from its use,
//! caching is modelled per conversation (`x-claude-code-session-id`), and a request that does
//! not fit is a `rejected` 429 that locks the window until its reset. The usage rules above do
//! not apply to it; `windows.rs` has its own.
//!
//! An unparsable numeric steering header is a 400 `invalid_request_error`, to catch typos.

mod batches;
mod body;
mod fault;
mod handler;
mod oauth;
mod request;
mod response;
mod server;
mod sse;
mod state;
mod time;
mod windows;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use fault::Fault;
pub use request::ReceivedRequest;
pub use windows::{CACHE_READ_WEIGHT, CacheReport, WINDOW_SECONDS, WindowReport};

use state::State;

/// A handle on a running mock upstream. Clones share the same server, which stops on
/// [`shutdown`](Self::shutdown) or when the last handle is dropped.
#[derive(Clone)]
pub struct MockUpstream {
    inner: Arc<Handle>,
}

/// The owner of the server task; dropping it (with the last `MockUpstream`) stops the server.
struct Handle {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The signal lets the accept loop end by itself; the abort covers a runtime that is no
        // longer polling it.
        let _ = self.shutdown.send(true);
        self.server.abort();
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and serves in a spawned task until [`shutdown`](Self::shutdown) or
    /// the drop of all handles.
    pub async fn start() -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener).await
    }

    /// Serves on an already bound listener.
    pub async fn start_on(listener: TcpListener) -> std::io::Result<MockUpstream> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(addr.port()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = tokio::spawn(server::serve(listener, Arc::clone(&state), shutdown_rx));
        Ok(MockUpstream {
            inner: Arc::new(Handle {
                addr,
                state,
                shutdown,
                server,
            }),
        })
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Queues a fault for requests authenticated with `credential` (the `x-api-key` value or
    /// the bearer token). Each queued fault is consumed by one request, in order; queued faults
    /// take precedence over a sticky one. When the queue is empty the key behaves normally.
    pub fn push_fault(&self, credential: &str, fault: Fault) {
        self.inner.state.push_fault(credential, fault);
    }

    /// Sets a fault applied to every request of this credential until cleared with `None`.
    pub fn set_sticky_fault(&self, credential: &str, fault: Option<Fault>) {
        self.inner.state.set_sticky_fault(credential, fault);
    }

    /// Makes `credential` fail with 401 `authentication_error` "invalid x-api-key".
    pub fn revoke(&self, credential: &str) {
        self.inner.state.revoke(credential);
    }

    /// Everything received, in arrival order, faulted and rejected requests included.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.inner.state.requests()
    }

    /// Number of streamed responses whose body was abandoned before its end: the client went
    /// away and the body was dropped before its last frame (streams cut by
    /// [`shutdown`](Self::shutdown) count too), a [`Fault::Stall`] left by its client included.
    /// Intentional [`Fault::DropMidStream`] cuts do not.
    pub fn aborted_streams(&self) -> usize {
        self.inner.state.aborted_streams()
    }

    /// Waits until [`aborted_streams`](Self::aborted_streams) is at least `n`.
    pub async fn wait_aborted_streams(&self, n: usize) {
        self.inner.state.wait_aborted_streams(n).await;
    }

    /// Number of requests whose connection closed before the mock sent response headers: the
    /// client gave up while a [`Fault::Hang`] or [`Fault::Delay`] held the answer back (requests
    /// cut by [`shutdown`](Self::shutdown) count too).
    pub fn abandoned_requests(&self) -> usize {
        self.inner.state.abandoned_requests()
    }

    /// Waits until [`abandoned_requests`](Self::abandoned_requests) is at least `n`.
    pub async fn wait_abandoned_requests(&self, n: usize) {
        self.inner.state.wait_abandoned_requests(n).await;
    }

    /// Waits until at least `n` requests have been received (and recorded).
    pub async fn wait_requests(&self, n: usize) {
        self.inner.state.wait_requests(n).await;
    }

    /// Issues an OAuth access/refresh token pair as the token endpoint would, so a test can
    /// store an OAuth account without going through the login flow.
    pub fn issue_oauth_tokens(&self) -> (String, String) {
        self.inner.state.oauth.issue()
    }

    /// Makes an access token answer 401 "OAuth token has expired" from now on.
    pub fn expire_access_token(&self, token: &str) {
        self.inner.state.oauth.expire_access(token);
    }

    /// Makes a refresh token dead: using it is `invalid_grant`.
    pub fn kill_refresh_token(&self, token: &str) {
        self.inner.state.oauth.kill_refresh(token);
    }

    /// Queues a fault for the next token-endpoint call (`Status(500)`, `RateLimited`, …).
    pub fn push_oauth_fault(&self, fault: Fault) {
        self.inner.state.oauth.push_fault(fault);
    }

    /// The `expires_in` the token endpoint reports from now on (default 28800 s).
    pub fn set_oauth_expires_in(&self, seconds: u64) {
        self.inner.state.oauth.set_expires_in(seconds);
    }

    /// Refresh-token grants received (rejected and faulted ones included).
    pub fn refresh_grants(&self) -> u64 {
        self.inner.state.oauth.refresh_grants()
    }

    /// Authorization-code grants received (rejected ones included).
    pub fn code_grants(&self) -> u64 {
        self.inner.state.oauth.code_grants()
    }

    /// Puts `credential` in the window mode (see the `windows` module): a budget of
    /// `size_tokens` per five-hour window, starting now, with unified headers computed from its
    /// use on every Messages answer and a `rejected` 429 when a request does not fit.
    pub fn set_window(&self, credential: &str, size_tokens: u64) {
        let now = time::now_epoch();
        self.inner.state.windows().set(credential, size_tokens, now);
    }

    /// Every window, by credential.
    pub fn windows(&self) -> Vec<WindowReport> {
        self.inner.state.windows().reports()
    }

    /// The prompt cache that moves of conversations between windowed accounts re-created.
    pub fn cache_report(&self) -> CacheReport {
        self.inner.state.windows().cache()
    }

    /// Stops accepting connections and closes the open ones, hanging requests included.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }
}
