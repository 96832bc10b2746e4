//! The management HTTP API (SPEC §9) on the proxy's port: accounts, requests, analytics,
//! configuration, live feeds as Server-Sent Events, Prometheus metrics and the OpenAPI
//! document. Routing is a table matched by hand on hyper ([`router::ROUTES`]); errors are
//! `{"error":{"type","message"}}` with a fitting status.
//!
//! The proxy knows nothing of this crate: the binary builds an [`Api`] and installs it with
//! `AppState::set_management`, which hands it every request outside `/v1/*` and `/health` and
//! every finished request (for the metrics).
//!
//! Every change a person makes (accounts, OAuth logins, live settings) is a public function
//! over a [`Ctx`] — the API's state and the proxy's — in [`accounts`], [`oauth`] and
//! [`config`]; the HTTP handlers wrap them, and the terminal UI calls them in-process
//! ([`Api::ctx`]), so both make the same change and refuse the same input.
//!
//! **Invariant:** no response carries a credential — accounts show only masked keys, stored
//! settings mask API keys, log lines are scrubbed — and no handler holds a lock across an
//! await.

pub mod accounts;
mod admin;
pub mod config;
mod error;
mod feeds;
mod insights;
pub mod keys;
pub mod logs;
mod metrics;
pub mod oauth;
mod requests;
mod respond;
pub mod retention;
pub mod router;
pub mod session;
mod views;

pub use config::LIVE_OPTIONS;
pub use error::ApiError;
pub use insights::OPENAPI;
pub use logs::{LogFeed, LogLayer};
pub use metrics::Metrics;
pub use respond::MAX_BODY_BYTES;

use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountStatus, Secret};
use ccflare_proxy::{AppState, ManagementFuture, ManagementRoutes, RequestObserver, ResponseBody};
use ccflare_storage::Db;
use http::{Request, Response};
use hyper::body::Incoming;
use router::Endpoint;
use std::fmt;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// The management API; install it with `AppState::set_management(Arc::new(api))`.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    logs: LogFeed,
    metrics: Metrics,
    /// Wakes the retention task when its setting changes.
    retention: Arc<Notify>,
    /// OAuth logins in progress.
    logins: oauth::Logins,
    /// The dashboard's cookie sessions.
    sessions: session::Sessions,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// What an operation needs: the API's own state and the running proxy's. A handler gets one
/// per request; the terminal UI keeps one ([`Api::ctx`]). Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    api: Arc<Inner>,
    state: Arc<AppState>,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

impl Ctx {
    /// The running proxy's state (pool, writer, settings in force).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn db(&self) -> &Db {
        &self.api.db
    }

    pub fn logs(&self) -> &LogFeed {
        &self.api.logs
    }
}

impl Api {
    /// An API over `db`, serving the log lines of `logs` (whose layer the binary installs).
    pub fn new(db: Db, logs: LogFeed) -> Api {
        Api {
            inner: Arc::new(Inner {
                db,
                logs,
                metrics: Metrics::default(),
                retention: Arc::new(Notify::new()),
                logins: oauth::Logins::default(),
                sessions: session::Sessions::default(),
            }),
        }
    }

    /// The operations over this API and the proxy `state` it is installed on.
    pub fn ctx(&self, state: Arc<AppState>) -> Ctx {
        Ctx {
            api: self.inner.clone(),
            state,
        }
    }

    /// Starts the retention task; it runs until `stop` turns true.
    pub fn spawn_retention(
        &self,
        state: Arc<AppState>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        retention::spawn(
            state,
            self.inner.db.clone(),
            self.inner.retention.clone(),
            stop,
        )
    }
}

impl ManagementRoutes for Api {
    fn handle(&self, state: Arc<AppState>, request: Request<Incoming>) -> ManagementFuture {
        let ctx = self.ctx(state);
        Box::pin(async move {
            match dispatch(&ctx, request).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            }
        })
    }

    fn admits(&self, state: &AppState, headers: &http::HeaderMap) -> bool {
        let admin_key = state.settings().admin_key.clone();
        admin::check_browser(headers, admin_key.is_some()).is_ok()
            && admin_key.is_none_or(|key| {
                admin::check(headers, &key).is_ok() || self.inner.sessions.valid(headers, &key)
            })
    }
}

impl RequestObserver for Api {
    fn request_finished(&self, record: &RequestRecord) {
        self.inner.metrics.observe(record);
    }
}

async fn dispatch(
    ctx: &Ctx,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let (parts, body) = request.into_parts();
    let admin_key = ctx.state.settings().admin_key.clone();
    admin::check_browser(&parts.headers, admin_key.is_some())?;
    // The dashboard's files are public (they hold no data); what they show comes from the
    // routes below, behind the admin key.
    if let Some(answer) = ccflare_dashboard::serve(&parts.method, parts.uri.path(), &parts.headers)
    {
        return Ok(answer.map(ResponseBody::full));
    }
    let (endpoint, params) = router::find(&parts.method, parts.uri.path())?;
    match endpoint {
        // A team member sees their own key's use with that key, without the admin key.
        Endpoint::Me => return keys::me(ctx, &parts),
        // Logging in and out is how a browser gets and drops the admin key's session.
        Endpoint::SessionInfo => return session_info(ctx, &parts),
        Endpoint::Login => return login(ctx, &parts, body).await,
        Endpoint::Logout => return Ok(logout(ctx, &parts)),
        _ => {}
    }
    if let Some(key) = &admin_key {
        authorize(ctx, &parts, key)?;
    }
    let param = || params.first().map(String::as_str).unwrap_or_default();
    match endpoint {
        Endpoint::Analytics => insights::analytics(ctx, &parts).await,
        Endpoint::Stats => insights::stats(ctx, &parts).await,
        Endpoint::Metrics => insights::metrics(ctx, &parts),
        Endpoint::OpenApi => insights::openapi(&parts),
        Endpoint::ListAccounts => accounts::list(ctx).await,
        Endpoint::AddAccount => accounts::add_handler(ctx, body).await,
        Endpoint::GetAccount => accounts::get(ctx, param()).await,
        Endpoint::RemoveAccount => accounts::remove_handler(ctx, param(), body).await,
        Endpoint::PauseAccount => {
            accounts::set_status_handler(ctx, param(), AccountStatus::Paused, body).await
        }
        Endpoint::ResumeAccount => {
            accounts::set_status_handler(ctx, param(), AccountStatus::Active, body).await
        }
        Endpoint::RenameAccount => accounts::rename_handler(ctx, param(), body).await,
        Endpoint::SetPriority => accounts::set_priority_handler(ctx, param(), body).await,
        Endpoint::ReauthAccount => oauth::reauth_handler(ctx, param(), body).await,
        Endpoint::StartLogin => oauth::start_handler(ctx, body).await,
        Endpoint::FinishLogin => oauth::finish_handler(ctx, body).await,
        Endpoint::ListKeys => keys::list(ctx).await,
        Endpoint::CreateKey => keys::create_handler(ctx, body).await,
        Endpoint::PatchKey => keys::patch_handler(ctx, param(), body).await,
        Endpoint::DeleteKey => keys::remove_handler(ctx, param(), body).await,
        Endpoint::Me => keys::me(ctx, &parts),
        Endpoint::SessionInfo => session_info(ctx, &parts),
        Endpoint::Login => login(ctx, &parts, body).await,
        Endpoint::Logout => Ok(logout(ctx, &parts)),
        Endpoint::ListRequests => requests::list(ctx, &parts).await,
        Endpoint::RequestStream => requests::stream(ctx, &parts),
        Endpoint::GetRequest => requests::get(ctx, &parts, param()).await,
        Endpoint::GetConfig => config::get(ctx, &parts),
        Endpoint::PatchConfig => config::patch_handler(ctx, &parts, body).await,
        Endpoint::LogStream => {
            respond::Query::parse(parts.uri.query(), &[])?;
            let (history, live) = ctx.api.logs.subscribe();
            Ok(feeds::LogStream::new(history, live, ctx.state.shutdown_signal()).into_response())
        }
    }
}

/// The admin key in a header, or the dashboard's session cookie — which, for a state change,
/// must come with the page's own `Origin` ([`session::same_origin_for`]).
fn authorize(ctx: &Ctx, parts: &http::request::Parts, key: &Secret) -> Result<(), ApiError> {
    if admin::check(&parts.headers, key).is_ok() {
        Ok(())
    } else if ctx.api.sessions.valid(&parts.headers, key) {
        session::same_origin_for(&parts.method, &parts.headers)
    } else {
        Err(ApiError::AdminKeyRequired)
    }
}

/// `GET /api/session`: whether this server wants its admin key, and whether this caller is in.
fn session_info(
    ctx: &Ctx,
    parts: &http::request::Parts,
) -> Result<Response<ResponseBody>, ApiError> {
    respond::Query::parse(parts.uri.query(), &[])?;
    let admin_key = ctx.state.settings().admin_key.clone();
    let signed_in = admin_key.as_ref().is_none_or(|key| {
        admin::check(&parts.headers, key).is_ok() || ctx.api.sessions.valid(&parts.headers, key)
    });
    Ok(respond::ok(&serde_json::json!({
        "admin_key_required": admin_key.is_some(),
        "signed_in": signed_in,
    })))
}

/// `POST /api/session {"key": …}`: the admin key for a session cookie.
async fn login(
    ctx: &Ctx,
    parts: &http::request::Parts,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        key: String,
    }
    respond::Query::parse(parts.uri.query(), &[])?;
    let sent: Login = respond::json_body(body).await?;
    let Some(key) = ctx.state.settings().admin_key.clone() else {
        return Err(ApiError::Conflict(
            "this server has no admin key: the dashboard needs no login".into(),
        ));
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(
        admin::ADMIN_KEY_HEADER,
        http::HeaderValue::from_str(sent.key.trim()).map_err(|_| ApiError::WrongAdminKey)?,
    );
    admin::check(&headers, &key).map_err(|_| ApiError::WrongAdminKey)?;
    let id = ctx.api.sessions.open(&key)?;
    let mut response = respond::ok(&serde_json::json!({"signed_in": true}));
    response.headers_mut().insert(
        http::header::SET_COOKIE,
        session::set_cookie(&id, &parts.headers),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `DELETE /api/session`: ends this browser's session and clears its cookie.
fn logout(ctx: &Ctx, parts: &http::request::Parts) -> Response<ResponseBody> {
    ctx.api.sessions.close(&parts.headers);
    let mut response = respond::ok(&serde_json::json!({"signed_in": false}));
    response.headers_mut().insert(
        http::header::SET_COOKIE,
        session::clear_cookie(&parts.headers),
    );
    response
}
