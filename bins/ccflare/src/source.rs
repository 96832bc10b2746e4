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
use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountStatus, Millis, Secret};
use ccflare_oauth::Mode;
use ccflare_proxy::RequestEvent;
use ccflare_storage::requests::RequestFilter;
use ccflare_tui::{
    AccountRow, DatabaseHealth, LiveSettings, OAuthStart, Picked, ServerInfo, SettingChange,
    Source, SourceError,
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

/// The finished requests of the proxy's live feed.
fn finished(event: RequestEvent) -> Option<Arc<RequestRecord>> {
    match event {
        RequestEvent::Finished(record) => Some(record),
        RequestEvent::Started(_) => None,
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
        | ApiError::Forbidden(_)) => SourceError::Invalid(http.to_string()),
    }
}

fn unavailable(error: impl std::fmt::Display) -> SourceError {
    SourceError::Unavailable(error.to_string())
}

impl Source for InProcess {
    type Requests = Picked<RequestEvent, Arc<RequestRecord>>;
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
        Picked::new(self.ctx.state().subscribe_requests(), finished)
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

    async fn recent_requests(&self, limit: u32) -> Result<Vec<RequestRecord>, SourceError> {
        let page = ccflare_storage::requests::list(self.ctx.db(), &RequestFilter::default(), limit)
            .await
            .map_err(unavailable)?;
        Ok(page.requests)
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
