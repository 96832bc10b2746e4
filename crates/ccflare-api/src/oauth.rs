//! OAuth logins through the API, so the TUI and the dashboard can add Claude Pro/Max and
//! Console accounts (issue 5; the CLI runs the same flow in `ccflare-cli accounts add --oauth`).
//!
//! `POST /api/oauth/start` (or `POST /api/accounts/{name}/reauth`) opens a login: a PKCE
//! flow kept in memory under a random flow id, answered with the authorize URL. The person
//! logs in, copies the `CODE#STATE` the page shows, and `POST /api/oauth/finish` checks the
//! state, exchanges the code and stores the account (a subscription account, a Console-minted
//! API key, or new tokens for an existing account), then reloads the pool.
//!
//! A flow lives 10 minutes and at most [`MAX_PENDING`] are open. A malformed paste, a state
//! mismatch and a passing token-endpoint failure leave it open for another try; success, a
//! refused code or any other failure closes it. The work after the paste check runs in its own
//! task, so a client that disconnects mid-exchange cannot lose a code already spent: the
//! account is stored anyway (or the flow put back).
//!
//! The operations are public over a [`Ctx`] ([`begin`], [`begin_reauth`], [`finish`]): the
//! HTTP handlers wrap them, and the terminal UI calls them in-process, so a login from either
//! is the same login.
//!
//! **Invariant:** the verifier, the pasted code and the tokens appear in no answer and no log
//! line; the flow map's lock is never held across an await (a flow is taken out, worked on,
//! and put back if it is still usable).

use crate::error::ApiError;
use crate::respond::{self, json_body, no_body};
use crate::{Ctx, accounts};
use ccflare_core::{AccountId, AccountKind, Millis, Secret};
use ccflare_oauth::{Endpoints, LoginFlow, Mode, OAuthError, TokenClient, TokenSet};
use ccflare_proxy::ResponseBody;
use ccflare_storage::StorageError;
use ccflare_storage::accounts::Upsert;
use ccflare_storage::oauth::{add_oauth_account, reauthenticate};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// How long a login may take from start to finish.
pub const FLOW_LIFETIME_MS: Millis = 10 * 60 * 1000;

/// Most logins open at once (expired ones are pruned at every start).
pub const MAX_PENDING: usize = 64;

/// SPEC §15, said where a subscription login starts: the CLI's `SUBSCRIPTION_RISK`, as one
/// paragraph (clients wrap it to their width).
pub const SUBSCRIPTION_RISK: &str = "Warning: Claude Pro/Max subscription tokens belong to \
Claude Code. Anthropic's terms for Free/Pro/Max forbid automated access other than with an API \
key, and routing requests through subscription credentials can get the account banned without \
notice. API keys are the supported way. Continue only if you accept that risk.";

/// What a finished login does.
enum Purpose {
    /// A new account with this name.
    Add { name: String, priority: Option<i64> },
    /// New tokens for this existing OAuth account.
    Reauth { name: String, id: AccountId },
}

impl Purpose {
    fn name(&self) -> &str {
        match self {
            Purpose::Add { name, .. } | Purpose::Reauth { name, .. } => name,
        }
    }
}

/// A login opened: what the person needs to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    /// Names the login when it is finished (192 random bits).
    pub flow_id: String,
    pub authorize_url: String,
    /// After this the login is gone.
    pub expires_at: Millis,
    /// SPEC §15's warning, for subscription logins.
    pub warning: Option<&'static str>,
}

/// What a finished login stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// A new account.
    Created,
    /// A Console login minted a key that a paused or invalid account had: it is active again.
    Reactivated,
    /// New tokens for an existing account.
    Reauthenticated,
}

impl LoginResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Created => "created",
            LoginResult::Reactivated => "reactivated",
            LoginResult::Reauthenticated => "reauthenticated",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            LoginResult::Created => StatusCode::CREATED,
            LoginResult::Reactivated | LoginResult::Reauthenticated => StatusCode::OK,
        }
    }
}

/// A login finished: the account's name and what was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginDone {
    pub name: String,
    pub result: LoginResult,
}

/// One login in progress.
struct PendingFlow {
    flow: LoginFlow,
    /// The endpoints the authorize URL was made for; the exchange must use the same client id
    /// and redirect URI even if the configuration changes meanwhile.
    endpoints: Endpoints,
    purpose: Purpose,
    expires_at: Millis,
    /// Tokens already obtained by an exchange whose next step (the Console key mint, or
    /// storing) failed for a passing reason: a retry resumes after the exchange, since the
    /// code is spent.
    exchanged: Option<TokenSet>,
}

/// The logins in progress, by flow id.
#[derive(Default)]
pub(crate) struct Logins {
    flows: Mutex<HashMap<String, PendingFlow>>,
}

impl Logins {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PendingFlow>> {
        // Every critical section is a map operation: a poisoned map is still consistent.
        self.flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a flow, after dropping the expired ones; refused when [`MAX_PENDING`] are open.
    fn open(&self, id: String, flow: PendingFlow, now: Millis) -> Result<(), ApiError> {
        let mut flows = self.lock();
        flows.retain(|_, f| now <= f.expires_at);
        if flows.len() >= MAX_PENDING {
            return Err(ApiError::TooManyLogins { limit: MAX_PENDING });
        }
        flows.insert(id, flow);
        Ok(())
    }

    /// Takes a live flow out of the map (so no other finish can use it meanwhile).
    fn take(&self, id: &str, now: Millis) -> Option<PendingFlow> {
        let flow = self.lock().remove(id)?;
        (now <= flow.expires_at).then_some(flow)
    }

    /// Puts a flow that can still finish back.
    fn put_back(&self, id: String, flow: PendingFlow) {
        self.lock().insert(id, flow);
    }
}

/// Account names for logins follow the CLI's rules on top of the API's: no whitespace, no
/// leading `-`, and nothing that looks like a key (names are shown in full everywhere).
fn check_login_name(name: &str) -> Result<(), ApiError> {
    // First, so that the other messages, which quote the name, never quote a key.
    if name.starts_with("sk-ant-") {
        return Err(ApiError::BadRequest(
            "invalid account name: it looks like a key (names are shown in full everywhere)".into(),
        ));
    }
    accounts::check_name(name)?;
    if name.chars().any(char::is_whitespace) {
        return Err(ApiError::BadRequest(format!(
            "invalid account name {name:?}: spaces are not allowed"
        )));
    }
    if name.starts_with('-') {
        return Err(ApiError::BadRequest(format!(
            "invalid account name {name:?}: it may not start with -"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    mode: String,
    name: String,
    priority: Option<i64>,
}

/// `POST /api/oauth/start`.
pub(crate) async fn start_handler(
    ctx: &Ctx,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let StartBody {
        mode,
        name,
        priority,
    } = json_body(body).await?;
    let mode = Mode::parse(&mode)
        .ok_or_else(|| ApiError::BadRequest("mode: expected \"max\" or \"console\"".into()))?;
    Ok(started(begin(ctx, mode, name, priority).await?))
}

/// The answer to a login opened.
fn started(start: LoginStart) -> Response<ResponseBody> {
    respond::ok(&serde_json::json!({
        "flow_id": start.flow_id,
        "authorize_url": start.authorize_url,
        "expires_at": start.expires_at,
        "warning": start.warning,
    }))
}

/// Opens a login for a new account named `name` (refused at once when the name is invalid or
/// taken).
pub async fn begin(
    ctx: &Ctx,
    mode: Mode,
    name: String,
    priority: Option<i64>,
) -> Result<LoginStart, ApiError> {
    check_login_name(&name)?;
    // Refused before the login, not after it.
    match ccflare_storage::accounts::find(&ctx.api.db, &name).await {
        Ok(_) => {
            return Err(ApiError::Conflict(format!(
                "an account named {name:?} already exists; to renew its login: \
                 POST /api/accounts/{name}/reauth"
            )));
        }
        Err(StorageError::AccountNotFound { .. }) => {}
        Err(other) => return Err(other.into()),
    }
    open(ctx, mode, Purpose::Add { name, priority })
}

/// `POST /api/accounts/{name}/reauth`.
pub(crate) async fn reauth_handler(
    ctx: &Ctx,
    name: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    no_body(body).await?;
    Ok(started(begin_reauth(ctx, name).await?))
}

/// Opens a new subscription login for the OAuth account `name`.
pub async fn begin_reauth(ctx: &Ctx, name: &str) -> Result<LoginStart, ApiError> {
    let account = ccflare_storage::accounts::find(&ctx.api.db, name).await?;
    if account.kind != AccountKind::OAuth {
        return Err(not_a_login(name));
    }
    open(
        ctx,
        Mode::Max,
        Purpose::Reauth {
            name: account.name,
            id: account.id,
        },
    )
}

fn not_a_login(name: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "account {name:?} uses an API key, not a login: add the key again with POST /api/accounts"
    ))
}

/// Opens a flow and says what the person needs to log in.
fn open(ctx: &Ctx, mode: Mode, purpose: Purpose) -> Result<LoginStart, ApiError> {
    let endpoints = ctx.state.settings().oauth.clone();
    let flow = LoginFlow::start(mode, &endpoints);
    let now = ctx.state.now();
    let expires_at = now + FLOW_LIFETIME_MS;
    // 192 random bits: a flow id cannot be guessed.
    let flow_id = ccflare_oauth::base64url(&ccflare_oauth::random_bytes::<24>());
    let authorize_url = flow.authorize_url().to_owned();
    let reauth = matches!(purpose, Purpose::Reauth { .. });
    let account = purpose.name().to_owned();
    ctx.api.logins.open(
        flow_id.clone(),
        PendingFlow {
            flow,
            endpoints,
            purpose,
            expires_at,
            exchanged: None,
        },
        now,
    )?;
    tracing::info!(account = %account, mode = mode.as_str(), reauth, "OAuth login started through the API");
    Ok(LoginStart {
        flow_id,
        authorize_url,
        expires_at,
        warning: (mode == Mode::Max).then_some(SUBSCRIPTION_RISK),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FinishBody {
    flow_id: String,
    code: String,
}

/// `POST /api/oauth/finish`.
pub(crate) async fn finish_handler(
    ctx: &Ctx,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let FinishBody { flow_id, code } = json_body(body).await?;
    let done = finish(ctx, flow_id, Secret::new(code)).await?;
    Ok(respond::json(
        done.result.status(),
        &accounts::one(ctx, &done.name).await?,
    ))
}

/// Finishes the login `flow_id` with the pasted `CODE#STATE`: checks the state, exchanges the
/// code and stores the account. A malformed paste, a state mismatch or a passing failure
/// leaves the login open for another try.
pub async fn finish(ctx: &Ctx, flow_id: String, pasted: Secret) -> Result<LoginDone, ApiError> {
    let pending = ctx
        .api
        .logins
        .take(&flow_id, ctx.state.now())
        .ok_or(ApiError::LoginFlowNotFound)?;
    let code = match pending.flow.check_pasted(pasted.expose()) {
        Ok(code) => code,
        Err(error) => {
            // Nothing was exchanged: the person may paste again.
            ctx.api.logins.put_back(flow_id, pending);
            return Err(ApiError::BadRequest(match error {
                OAuthError::StateMismatch => "the pasted code does not belong to this login \
                    (state mismatch): paste the code shown after this login, or start a new one"
                    .to_owned(),
                other => other.to_string(),
            }));
        }
    };
    // From here on a code may be spent: finish in a task of its own, which a client that
    // disconnects does not cancel.
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move { complete(&ctx, flow_id, pending, code).await }
    });
    match task.await {
        Ok(answer) => answer,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(ApiError::TokenEndpoint(
            "the server is stopping; the login was not finished".into(),
        )),
    }
}

/// What a failure after the paste check does to the flow.
enum After {
    /// Closed: start a new login.
    Close,
    /// Kept for another try.
    Keep,
}

/// Exchanges the code and stores the account; on failure, closes the flow or puts it back.
async fn complete(
    ctx: &Ctx,
    flow_id: String,
    mut pending: PendingFlow,
    code: Secret,
) -> Result<LoginDone, ApiError> {
    let name = pending.purpose.name().to_owned();
    let mode = pending.flow.mode;
    match store(ctx, &mut pending, &code).await {
        Ok(result) => {
            if let Err(error) = ctx.state.sync_accounts(&ctx.api.db).await {
                // Stored: the background sync makes it live within a second.
                tracing::warn!(%error, "reloading the accounts after an OAuth login failed");
            }
            tracing::info!(account = %name, mode = mode.as_str(), result = result.as_str(), "OAuth login finished through the API");
            Ok(LoginDone { name, result })
        }
        Err((error, after)) => {
            tracing::warn!(account = %name, mode = mode.as_str(), %error, "OAuth login through the API failed");
            if let After::Keep = after {
                ctx.api.logins.put_back(flow_id, pending);
            }
            Err(error)
        }
    }
}

/// The steps after the paste check. Returns what was stored.
async fn store(
    ctx: &Ctx,
    pending: &mut PendingFlow,
    code: &Secret,
) -> Result<LoginResult, (ApiError, After)> {
    let db = &ctx.api.db;
    let closed = |error: ApiError| (error, After::Close);
    // Before spending the code: is its purpose still possible?
    match &pending.purpose {
        Purpose::Add { name, .. } => match ccflare_storage::accounts::find(db, name).await {
            Ok(_) => {
                return Err(closed(ApiError::Conflict(format!(
                    "an account named {name:?} was added while this login was open"
                ))));
            }
            Err(StorageError::AccountNotFound { .. }) => {}
            Err(other) => return Err((other.into(), After::Keep)),
        },
        Purpose::Reauth { name, id } => {
            let account = ccflare_storage::accounts::find(db, name)
                .await
                .map_err(|error| match error {
                    StorageError::AccountNotFound { .. } => closed(error.into()),
                    other => (other.into(), After::Keep),
                })?;
            if account.id != *id {
                return Err(closed(ApiError::Conflict(format!(
                    "account {name:?} was replaced while this login was open: start a new login"
                ))));
            }
            if account.kind != AccountKind::OAuth {
                return Err(closed(not_a_login(name)));
            }
        }
    }
    let client = TokenClient::new(pending.endpoints.clone());
    let now = ctx.state.now();
    let tokens = match &pending.exchanged {
        Some(tokens) => tokens.clone(),
        None => {
            let tokens = client
                .exchange(&pending.flow, code, now)
                .await
                .map_err(token_failure)?;
            pending.exchanged = Some(tokens.clone());
            tokens
        }
    };
    // A database failure after the exchange keeps the flow (and its tokens) for a retry.
    let kept = |error: StorageError| match error {
        StorageError::DuplicateName { .. } | StorageError::AccountNotFound { .. } => {
            closed(error.into())
        }
        other => (other.into(), After::Keep),
    };
    // What an OAuth account stores of the login: a new account's tokens, or an existing one's.
    let (access, refresh, expires_at) = (
        &tokens.access_token,
        tokens.refresh_token.as_ref(),
        tokens.expires_at,
    );
    match (&pending.purpose, pending.flow.mode) {
        (Purpose::Add { name, priority }, Mode::Max) => {
            add_oauth_account(db, name, access, refresh, expires_at, *priority, now)
                .await
                .map_err(kept)?;
            Ok(LoginResult::Created)
        }
        (Purpose::Add { name, priority }, Mode::Console) => {
            let key = client
                .create_api_key(&tokens.access_token)
                .await
                .map_err(token_failure)?;
            let (account, how) =
                ccflare_storage::accounts::upsert_api_key(db, &key, Some(name), *priority, now)
                    .await
                    .map_err(kept)?;
            match how {
                Upsert::Created => Ok(LoginResult::Created),
                Upsert::Reactivated => Ok(LoginResult::Reactivated),
                Upsert::Unchanged => Err(closed(ApiError::Conflict(format!(
                    "the minted key is already stored, as account {:?}",
                    account.name
                )))),
            }
        }
        (Purpose::Reauth { name, .. }, _) => {
            reauthenticate(db, name, access, refresh, expires_at, now)
                .await
                .map_err(kept)?;
            Ok(LoginResult::Reauthenticated)
        }
    }
}

/// A token-endpoint failure as an answer: a refused code closes the login (400); a passing
/// failure keeps it (502, retry); anything else closes it (502).
fn token_failure(error: OAuthError) -> (ApiError, After) {
    match error {
        OAuthError::InvalidGrant { code } => (
            ApiError::BadRequest(format!(
                "the token endpoint refused the code ({code}): this login is closed, start a new \
                 one"
            )),
            After::Close,
        ),
        OAuthError::Transient { reason, .. } => (
            ApiError::TokenEndpoint(format!(
                "the token endpoint failed ({reason}); retry: this login stays open until it \
                 expires"
            )),
            After::Keep,
        ),
        other => (
            ApiError::TokenEndpoint(format!("{other}; this login is closed: start a new one")),
            After::Close,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_is_the_clis() {
        let cli = include_str!("../../../bins/ccflare-cli/src/commands/login.rs");
        let start = cli
            .find("SUBSCRIPTION_RISK: &str = \"\\\n")
            .expect("the CLI's warning")
            + "SUBSCRIPTION_RISK: &str = \"\\\n".len();
        let text = &cli[start..start + cli[start..].find("\";").expect("its end")];
        assert_eq!(text.replace('\n', " "), SUBSCRIPTION_RISK);
    }

    #[test]
    fn login_names_follow_the_clis_rules() {
        assert!(check_login_name("work-1").is_ok());
        assert!(check_login_name("회사").is_ok());
        for bad in ["", "two words", "-x", "a/b", &"n".repeat(65)] {
            assert!(check_login_name(bad).is_err(), "{bad:?}");
        }
        let key = format!("sk-ant-api03-secret{}", "x".repeat(80));
        let err = check_login_name(&key).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    fn flow(expires_at: Millis) -> PendingFlow {
        let endpoints = Endpoints::default();
        PendingFlow {
            flow: LoginFlow::start(Mode::Max, &endpoints),
            endpoints,
            purpose: Purpose::Add {
                name: "a".into(),
                priority: None,
            },
            expires_at,
            exchanged: None,
        }
    }

    #[test]
    fn flows_expire_are_taken_once_and_are_bounded() {
        let logins = Logins::default();
        logins.open("f".into(), flow(1_000), 0).unwrap();
        assert!(logins.take("f", 1_001).is_none(), "expired");
        assert!(logins.take("f", 0).is_none(), "an expired flow is gone");
        logins.open("g".into(), flow(1_000), 0).unwrap();
        let taken = logins.take("g", 1_000).expect("live up to its expiry");
        assert!(logins.take("g", 0).is_none(), "taken once");
        logins.put_back("g".into(), taken);
        assert!(logins.take("g", 0).is_some(), "put back");
        for i in 0..MAX_PENDING {
            logins.open(format!("h{i}"), flow(1_000), 0).unwrap();
        }
        assert!(matches!(
            logins.open("full".into(), flow(5_000), 0),
            Err(ApiError::TooManyLogins { .. })
        ));
        // Expired flows make room.
        logins.open("later".into(), flow(5_000), 1_001).unwrap();
        assert_eq!(logins.lock().len(), 1);
    }
}
