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
mod views;

pub use config::LIVE_OPTIONS;
pub use error::ApiError;
pub use insights::OPENAPI;
pub use logs::{LogFeed, LogLayer};
pub use metrics::Metrics;
pub use respond::MAX_BODY_BYTES;

use ccflare_core::AccountStatus;
use ccflare_core::record::RequestRecord;
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
            && admin_key.is_none_or(|key| admin::check(headers, &key).is_ok())
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
    let (endpoint, params) = router::find(&parts.method, parts.uri.path())?;
    // A team member sees their own key's use with that key, without the admin key.
    if endpoint == Endpoint::Me {
        return keys::me(ctx, &parts);
    }
    if let Some(key) = &admin_key {
        admin::check(&parts.headers, key)?;
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
