//! Account endpoints: list, show, add (API key), remove, pause, resume, rename, set priority.
//! Every change goes through `ccflare_storage::accounts` (a person's change bumps the
//! account's `revision`) and then reloads the pool, so it routes differently at once.
//!
//! Each change is a public function over a [`Ctx`] ([`add_api_key`], [`remove`],
//! [`set_status`], [`rename`], [`set_priority`]) that the HTTP handler wraps, so the terminal
//! UI, which calls them in-process, makes exactly the change the API makes.

use crate::Ctx;
use crate::error::ApiError;
use crate::respond::{self, json_body, no_body};
use crate::views::AccountJson;
use ccflare_core::account::check_api_key;
use ccflare_core::{Account, AccountStatus, Secret};
use ccflare_proxy::ResponseBody;
use ccflare_storage::accounts::{self, Upsert};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

/// Longest account name.
const MAX_NAME: usize = 64;

/// A name must be short, printable, without `/` (it is a path segment) and without leading or
/// trailing spaces.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    // A name is shown in full everywhere (lists, logs, `x-ccflare-account`): nothing key- or
    // token-shaped may become one.
    let shown = ccflare_core::secret::shown_masked(name);
    if shown != name {
        return Err(ApiError::BadRequest(format!(
            "invalid account name {shown:?}: it looks like a key or token (names are shown in \
             full everywhere)"
        )));
    }
    let fine = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name.trim() == name
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if fine {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid account name {shown:?}: use 1 to {MAX_NAME} printable characters, no `/`, \
             no leading or trailing spaces"
        )))
    }
}

/// Every account as JSON, joined with the pool's live view.
async fn all(ctx: &Ctx) -> Result<Vec<AccountJson>, ApiError> {
    let stored = accounts::list_with_usage(&ctx.api.db).await?;
    let now = ctx.state.now();
    let views = ctx.state.pool().views(now);
    Ok(stored
        .iter()
        .map(|summary| {
            let view = views.iter().find(|v| v.id == summary.account.id);
            AccountJson::new(summary, view, now)
        })
        .collect())
}

pub(crate) async fn one(ctx: &Ctx, name: &str) -> Result<AccountJson, ApiError> {
    all(ctx)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::AccountNotFound {
            name: name.to_owned(),
        })
}

/// Makes a change live in the pool now rather than at the next sync.
async fn reload(ctx: &Ctx) -> Result<(), ApiError> {
    ctx.state.sync_accounts(&ctx.api.db).await?;
    Ok(())
}

pub(crate) async fn list(ctx: &Ctx) -> Result<Response<ResponseBody>, ApiError> {
    Ok(respond::ok(
        &serde_json::json!({ "accounts": all(ctx).await? }),
    ))
}

pub(crate) async fn get(ctx: &Ctx, name: &str) -> Result<Response<ResponseBody>, ApiError> {
    Ok(respond::ok(&one(ctx, name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    api_key: String,
    name: Option<String>,
    priority: Option<i64>,
}

/// Adds an API-key account (`name` defaults to `key-` and the key's last four), or
/// re-activates the paused or invalid account that has this key; a key already stored and
/// active is a conflict. Returns the stored account and what happened.
pub async fn add_api_key(
    ctx: &Ctx,
    key: &Secret,
    name: Option<&str>,
    priority: Option<i64>,
) -> Result<(Account, Upsert), ApiError> {
    let key = key.expose().trim();
    // The check's message describes the problem without repeating the key.
    check_api_key(key).map_err(|why| ApiError::BadRequest(format!("api_key: {why}")))?;
    if let Some(name) = name {
        check_name(name)?;
    }
    let now = ctx.state.now();
    let (account, how) =
        accounts::upsert_api_key(&ctx.api.db, &Secret::new(key), name, priority, now).await?;
    if how == Upsert::Unchanged {
        return Err(ApiError::Conflict(format!(
            "this key is already stored, as account {:?}",
            account.name
        )));
    }
    reload(ctx).await?;
    tracing::info!(account = %account.name, reactivated = how == Upsert::Reactivated, "account added through the API");
    Ok((account, how))
}

pub(crate) async fn add_handler(
    ctx: &Ctx,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let new: NewAccount = json_body(body).await?;
    let key = Secret::new(new.api_key);
    let (account, how) = add_api_key(ctx, &key, new.name.as_deref(), new.priority).await?;
    let status = match how {
        Upsert::Created => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok(respond::json(status, &one(ctx, &account.name).await?))
}

/// Removes an account (its request rows stay, under the name they were recorded with).
pub async fn remove(ctx: &Ctx, name: &str) -> Result<(), ApiError> {
    accounts::remove(&ctx.api.db, name).await?;
    reload(ctx).await?;
    tracing::info!(account = %name, "account removed through the API");
    Ok(())
}

pub(crate) async fn remove_handler(
    ctx: &Ctx,
    name: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    no_body(body).await?;
    remove(ctx, name).await?;
    Ok(respond::ok(&serde_json::json!({ "removed": name })))
}

/// Pauses (`Paused`) or resumes (`Active`) an account.
pub async fn set_status(ctx: &Ctx, name: &str, status: AccountStatus) -> Result<(), ApiError> {
    accounts::set_status(&ctx.api.db, name, status, ctx.state.now()).await?;
    reload(ctx).await?;
    tracing::info!(account = %name, status = status.as_str(), "account status changed through the API");
    Ok(())
}

pub(crate) async fn set_status_handler(
    ctx: &Ctx,
    name: &str,
    status: AccountStatus,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    no_body(body).await?;
    set_status(ctx, name, status).await?;
    Ok(respond::ok(&one(ctx, name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
}

/// Renames an account (a new name equal to the old one changes nothing).
pub async fn rename(ctx: &Ctx, name: &str, new_name: &str) -> Result<(), ApiError> {
    check_name(new_name)?;
    if new_name != name {
        accounts::rename(&ctx.api.db, name, new_name, ctx.state.now()).await?;
        reload(ctx).await?;
        tracing::info!(account = %name, new_name = %new_name, "account renamed through the API");
    }
    Ok(())
}

pub(crate) async fn rename_handler(
    ctx: &Ctx,
    name: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let Rename { name: new_name } = json_body(body).await?;
    rename(ctx, name, &new_name).await?;
    Ok(respond::ok(&one(ctx, &new_name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Priority {
    priority: i64,
}

/// Sets an account's priority (the order of the `priority` strategy).
pub async fn set_priority(ctx: &Ctx, name: &str, priority: i64) -> Result<(), ApiError> {
    accounts::set_priority(&ctx.api.db, name, priority, ctx.state.now()).await?;
    reload(ctx).await?;
    tracing::info!(account = %name, priority, "account priority changed through the API");
    Ok(())
}

pub(crate) async fn set_priority_handler(
    ctx: &Ctx,
    name: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    let Priority { priority } = json_body(body).await?;
    set_priority(ctx, name, priority).await?;
    Ok(respond::ok(&one(ctx, name).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["alpha", "team a", "key-wxyz", "ü-1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", " a", "a ", "a/b", "a\nb", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
