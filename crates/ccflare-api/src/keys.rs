//! Client key endpoints (SPEC §11): list, create (the key is in that one answer and nowhere
//! else, ever), change (name, status, expiry, limits), delete; and `GET /api/me`, which a
//! client authenticates with its own key (not the admin key) to see its usage and what is
//! left of its budget.
//!
//! Every change goes through `ccflare_storage::keys` and then reloads the proxy's key map, so
//! a disabled or deleted key is refused from the next request on. Each is a public function
//! over a [`Ctx`] that the HTTP handler wraps, as for accounts.

use crate::Ctx;
use crate::error::ApiError;
use crate::respond::{self, json_body, no_body};
use ccflare_core::Millis;
use ccflare_core::client_key::{BudgetPeriod, KeyLimits, KeyStatus, check_name, parse_expiry};
use ccflare_proxy::{KeyRefusal, KnownKey, ResponseBody, Standing};
use ccflare_storage::keys::{self, ClientKey, KeyChange};
use http::request::Parts;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;

/// One key as the API shows it: never the key itself, only its prefix.
#[derive(Debug, Clone, Serialize)]
pub struct KeyJson {
    pub id: i64,
    pub name: String,
    /// `ccf_` and the first eight random characters.
    pub prefix: String,
    /// `active`, `disabled`, or `expired` (active, past its expiry).
    pub status: &'static str,
    pub expires_at: Option<Millis>,
    pub rpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// `day`, `week` or `month` (UTC).
    pub period: &'static str,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub last_used: Option<Millis>,
    /// Its use in the current period, as this server counts it.
    pub usage: UsageJson,
}

/// A key's use in its current budget period.
#[derive(Debug, Clone, Serialize)]
pub struct UsageJson {
    pub period_start: Millis,
    /// When the period ends and the budget is whole again.
    pub resets_at: Millis,
    pub cost_usd: f64,
    pub tokens: u64,
    /// Reserved by requests in flight (their worst case, until they finish).
    pub reserved_usd: f64,
    pub reserved_tokens: u64,
    pub in_flight: u32,
    pub requests_last_minute: u32,
}

impl UsageJson {
    fn of(standing: &Standing) -> UsageJson {
        UsageJson {
            period_start: standing.period_start,
            resets_at: standing.resets_at,
            cost_usd: standing.used.usd,
            tokens: standing.used.tokens,
            reserved_usd: standing.reserved.usd,
            reserved_tokens: standing.reserved.tokens,
            in_flight: standing.in_flight,
            requests_last_minute: standing.last_minute,
        }
    }
}

fn status_name(status: KeyStatus, expired: bool) -> &'static str {
    match status {
        KeyStatus::Disabled => "disabled",
        KeyStatus::Active if expired => "expired",
        KeyStatus::Active => "active",
    }
}

impl KeyJson {
    fn new(ctx: &Ctx, key: &ClientKey, now: Millis) -> KeyJson {
        let standing = ctx.state.client_keys().standing(&KnownKey::from(key), now);
        KeyJson {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            status: status_name(key.status, key.expired(now)),
            expires_at: key.expires_at,
            rpm: key.limits.rpm,
            max_concurrent: key.limits.max_concurrent,
            budget_usd: key.limits.budget_usd,
            budget_tokens: key.limits.budget_tokens,
            period: key.limits.period.as_str(),
            created_at: key.created_at,
            updated_at: key.updated_at,
            last_used: key.last_used,
            usage: UsageJson::of(&standing),
        }
    }
}

/// Makes a change live in the proxy now rather than at the next sync.
async fn reload(ctx: &Ctx) -> Result<(), ApiError> {
    ctx.state.sync_client_keys(ctx.db()).await?;
    Ok(())
}

/// Each key's id (as request rows record it) and name; a deleted key's id stays as it is.
pub(crate) async fn names(ctx: &Ctx) -> Result<HashMap<String, String>, ApiError> {
    Ok(keys::list(ctx.db())
        .await?
        .into_iter()
        .map(|key| (key.id.to_string(), key.name))
        .collect())
}

/// The id request rows record for the key named `name` (a 404 when there is none).
pub(crate) async fn id_of(ctx: &Ctx, name: &str) -> Result<String, ApiError> {
    Ok(keys::find(ctx.db(), name).await?.id.to_string())
}

pub(crate) async fn list(ctx: &Ctx) -> Result<Response<ResponseBody>, ApiError> {
    let now = ctx.state.now();
    let listed: Vec<KeyJson> = keys::list(ctx.db())
        .await?
        .iter()
        .map(|key| KeyJson::new(ctx, key, now))
        .collect();
    Ok(respond::ok(&serde_json::json!({ "keys": listed })))
}

/// Reads `null` as `Some(None)` (remove), and a missing field as `None` (keep).
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A request body of `POST /api/keys` (name required, no status) and `PATCH
/// /api/keys/{name}`: a field left out is left as it is; `null` or 0 removes a limit, `null`
/// the expiry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: Option<String>,
    status: Option<String>,
    /// RFC 3339, or a duration from now such as `30d`.
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    max_concurrent: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_tokens: Option<Option<u64>>,
    period: Option<String>,
}

impl KeyBody {
    fn any_limit(&self) -> bool {
        self.rpm.is_some()
            || self.max_concurrent.is_some()
            || self.budget_usd.is_some()
            || self.budget_tokens.is_some()
            || self.period.is_some()
    }

    /// `limits` with this body's changes.
    fn limits(&self, mut limits: KeyLimits) -> Result<KeyLimits, ApiError> {
        if let Some(rpm) = self.rpm {
            limits.rpm = rpm.filter(|n| *n > 0);
        }
        if let Some(max) = self.max_concurrent {
            limits.max_concurrent = max.filter(|n| *n > 0);
        }
        if let Some(usd) = self.budget_usd {
            if usd.is_some_and(|usd| !usd.is_finite() || usd < 0.0) {
                return Err(ApiError::BadRequest(
                    "budget_usd: expected a number of dollars from 0".into(),
                ));
            }
            limits.budget_usd = usd.filter(|usd| *usd > 0.0);
        }
        if let Some(tokens) = self.budget_tokens {
            limits.budget_tokens = tokens.filter(|n| *n > 0);
        }
        if let Some(period) = &self.period {
            limits.period = period
                .parse::<BudgetPeriod>()
                .map_err(|why| ApiError::BadRequest(format!("period: {why}")))?;
        }
        Ok(limits)
    }
}

fn expiry(text: &str, now: Millis) -> Result<Millis, ApiError> {
    parse_expiry(text, now).map_err(|why| ApiError::BadRequest(format!("expires_at: {why}")))
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    check_name(name).map_err(ApiError::BadRequest)
}

/// Creates a key; the answer is the only place its full text ever appears.
pub async fn create(
    ctx: &Ctx,
    name: &str,
    limits: KeyLimits,
    expires_at: Option<Millis>,
) -> Result<(ClientKey, ccflare_core::Secret), ApiError> {
    checked_name(name)?;
    let now = ctx.state.now();
    let created = keys::create(ctx.db(), name, &limits, expires_at, now).await?;
    reload(ctx).await?;
    tracing::info!(key = %created.0.prefix, name = %name, "client key created through the API");
    Ok(created)
}

pub(crate) async fn create_handler(
    ctx: &Ctx,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let new: KeyBody = json_body(body).await?;
    let Some(name) = new.name.as_deref() else {
        return Err(ApiError::BadRequest("name: a new key needs a name".into()));
    };
    if new.status.is_some() {
        return Err(ApiError::BadRequest(
            "status: a new key is active; disable it with PATCH".into(),
        ));
    }
    let now = ctx.state.now();
    let limits = new.limits(KeyLimits::default())?;
    let expires_at = new
        .expires_at
        .clone()
        .flatten()
        .map(|e| expiry(&e, now))
        .transpose()?;
    let (key, secret) = create(ctx, name, limits, expires_at).await?;
    let mut shown = serde_json::to_value(KeyJson::new(ctx, &key, now)).unwrap_or_default();
    shown["key"] = secret.expose().into();
    Ok(respond::json(StatusCode::CREATED, &shown))
}

/// Changes a key and returns it as stored.
pub async fn update(ctx: &Ctx, name: &str, change: &KeyChange) -> Result<ClientKey, ApiError> {
    if let Some(new_name) = &change.name {
        checked_name(new_name)?;
    }
    let key = keys::update(ctx.db(), name, change, ctx.state.now()).await?;
    reload(ctx).await?;
    tracing::info!(key = %key.prefix, name = %key.name, "client key changed through the API");
    Ok(key)
}

pub(crate) async fn patch_handler(
    ctx: &Ctx,
    name: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let patch: KeyBody = json_body(body).await?;
    let now = ctx.state.now();
    let status = match patch.status.as_deref() {
        None => None,
        Some(text) => Some(text.parse::<KeyStatus>().map_err(|_| {
            ApiError::BadRequest(format!("status: expected active or disabled, got {text:?}"))
        })?),
    };
    let expires_at = match &patch.expires_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(expiry(text, now)?)),
    };
    let limits = if patch.any_limit() {
        let current = keys::find(ctx.db(), name).await?.limits;
        Some(patch.limits(current)?)
    } else {
        None
    };
    let change = KeyChange {
        name: patch.name,
        status,
        expires_at,
        limits,
    };
    let key = update(ctx, name, &change).await?;
    Ok(respond::ok(&KeyJson::new(ctx, &key, now)))
}

/// Deletes a key (its request rows stay, under its id).
pub async fn remove(ctx: &Ctx, name: &str) -> Result<(), ApiError> {
    keys::remove(ctx.db(), name).await?;
    reload(ctx).await?;
    tracing::info!(name = %name, "client key deleted through the API");
    Ok(())
}

pub(crate) async fn remove_handler(
    ctx: &Ctx,
    name: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    no_body(body).await?;
    remove(ctx, name).await?;
    Ok(respond::ok(&serde_json::json!({ "deleted": name })))
}

/// What is left of a budget (`None`: no such budget).
#[derive(Debug, Serialize)]
struct Left {
    usd: Option<f64>,
    tokens: Option<u64>,
}

/// `GET /api/me`: the calling client key's own view, authenticated by that key.
pub(crate) fn me(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    respond::Query::parse(parts.uri.query(), &[])?;
    let now = ctx.state.now();
    let keys = ctx.state.client_keys();
    let key = keys.identify(&parts.headers, now).map_err(|refusal| {
        ApiError::ClientKeyRefused(match refusal {
            // Whether or not /v1 requires keys, this answer is a key's own.
            KeyRefusal::Missing => "send your client key (ccf_…) in x-api-key, Authorization: \
                                    Bearer or x-ccflare-key to see its use"
                .to_owned(),
            other => other.message(),
        })
    })?;
    let standing = keys.standing(&key, now);
    let limits = key.limits;
    let taken_usd = standing.used.usd + standing.reserved.usd;
    let taken_tokens = standing
        .used
        .tokens
        .saturating_add(standing.reserved.tokens);
    Ok(respond::ok(&serde_json::json!({
        "name": &*key.name,
        "prefix": key.prefix,
        "expires_at": key.expires_at,
        "period": standing.period.as_str(),
        "rpm": limits.rpm,
        "max_concurrent": limits.max_concurrent,
        "budget": { "usd": limits.budget_usd, "tokens": limits.budget_tokens },
        "left": Left {
            usd: limits.budget_usd.map(|b| (b - taken_usd).max(0.0)),
            tokens: limits.budget_tokens.map(|b| b.saturating_sub(taken_tokens)),
        },
        "usage": UsageJson::of(&standing),
    })))
}
