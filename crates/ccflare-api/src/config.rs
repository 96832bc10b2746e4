//! `GET /api/config` (every option with its value and where it came from) and `PATCH
//! /api/config` (change the options that take effect while running: strategy, session timeout,
//! retention). A change is validated by resolving the whole configuration with it, stored in
//! the database (where it ranks between the environment and the config file, and survives a
//! restart) and applied at once. An option set by a flag or the environment outranks the stored
//! value, so changing it is refused (409) rather than silently having no effect.
//!
//! [`patch`] is the change itself, over a [`Ctx`]: the HTTP handler and the terminal UI's
//! settings tab both call it.

use crate::Ctx;
use crate::error::ApiError;
use crate::respond::{self, Query};
use ccflare_core::config::{OPTIONS, Settings, Source, option};
use ccflare_proxy::ResponseBody;
use ccflare_storage::settings;
use http::Response;
use http::request::Parts;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;

/// Options a running server applies at once, and so the ones `PATCH /api/config` changes.
/// The others need a restart; `ccflare-cli config set` stores them.
pub const LIVE_OPTIONS: &[&str] = &["lb_strategy", "session_timeout", "retention_days"];

#[derive(Debug, Serialize)]
struct OptionJson {
    key: &'static str,
    env: &'static str,
    /// The value in force, as text (API keys masked).
    value: String,
    /// `flag`, `env`, `database`, `file` or `default`.
    source: &'static str,
    /// Changes through `PATCH /api/config` take effect at once.
    live: bool,
    /// Set by a flag or the environment, which outrank stored settings.
    pinned: bool,
    help: &'static str,
}

fn options(settings: &Settings) -> Vec<OptionJson> {
    OPTIONS
        .iter()
        .map(|spec| {
            let (source, raw) = settings
                .sources
                .get(spec.key)
                .cloned()
                .unwrap_or((Source::Default, spec.default.to_owned()));
            let value = ccflare_core::config::display_value(spec, &raw);
            OptionJson {
                key: spec.key,
                env: spec.env,
                value,
                source: source.as_str(),
                live: LIVE_OPTIONS.contains(&spec.key),
                pinned: matches!(source, Source::Flag | Source::Env),
                help: spec.help,
            }
        })
        .collect()
}

fn answer(ctx: &Ctx) -> Response<ResponseBody> {
    respond::ok(&serde_json::json!({ "options": options(&ctx.state.settings()) }))
}

pub(crate) fn get(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    Ok(answer(ctx))
}

pub(crate) async fn patch_handler(
    ctx: &Ctx,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    let changes: serde_json::Map<String, Value> = respond::json_body(body).await?;
    patch(ctx, changes).await?;
    Ok(answer(ctx))
}

/// Changes live options (`{key: value}`, `null` removes the stored value): checked, stored and
/// applied to the running server at once, or refused whole. The settings in force afterwards
/// are `ctx.state().settings()`.
pub async fn patch(ctx: &Ctx, changes: serde_json::Map<String, Value>) -> Result<(), ApiError> {
    let current = ctx.state.settings();
    let mut stored = settings::all(&ctx.api.db).await?;
    let mut writes: Vec<(String, Option<String>)> = Vec::new();
    for (key, value) in changes {
        let Some(spec) = option(&key) else {
            return Err(ApiError::BadRequest(format!(
                "unknown option {key:?}; options that change at run time: {}",
                LIVE_OPTIONS.join(", ")
            )));
        };
        if !LIVE_OPTIONS.contains(&spec.key) {
            return Err(ApiError::BadRequest(format!(
                "{key} cannot change while the server runs; set it with `ccflare-cli config \
                 set`, {} or the config file, and restart",
                spec.env
            )));
        }
        if let Some((source @ (Source::Flag | Source::Env), _)) = current.sources.get(spec.key) {
            let by = match source {
                Source::Flag => format!("the --{} flag", spec.flag),
                _ => format!("the environment variable {}", spec.env),
            };
            return Err(ApiError::Conflict(format!(
                "{key} is set by {by}, which outranks stored settings: a change here would have \
                 no effect; remove it there first"
            )));
        }
        let text = match value {
            Value::Null => None,
            Value::String(text) => Some(text),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "{key}: expected a string or a number (or null to remove the stored value), \
                     got {other}"
                )));
            }
        };
        match &text {
            Some(text) => stored.insert(key.clone(), text.clone()),
            None => stored.remove(&key),
        };
        writes.push((key, text));
    }
    if writes.is_empty() {
        return Ok(());
    }
    // Resolving the whole configuration with the change is the validation: the message names
    // the option, the value and what is allowed.
    let layers = ctx.state.layers();
    Settings::resolve_with_database(&layers.flags, &layers.env, &stored, &layers.file)
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    settings::set_many(&ctx.api.db, &writes, ctx.state.now()).await?;
    ctx.state
        .apply_stored_settings(&stored)
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    for (key, value) in &writes {
        tracing::info!(option = %key, value = value.as_deref().unwrap_or("(removed)"), "setting changed through the API");
    }
    if writes.iter().any(|(key, _)| key == "retention_days") {
        ctx.api.retention.notify_one();
    }
    Ok(())
}
