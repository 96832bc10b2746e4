//! Read-only figures: `/api/analytics` (the seed's overview, plus a range report with
//! `?range=`), `/api/stats` (all time, per account and model), `/metrics` and the OpenAPI
//! document.

use crate::Ctx;
use crate::error::ApiError;
use crate::respond::{self, Query};
use ccflare_analytics::Range;
use ccflare_proxy::ResponseBody;
use http::Response;
use http::header::{self, HeaderValue};
use http::request::Parts;
use serde_json::Value;

/// The OpenAPI 3 description of this API, served as it is in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

pub async fn analytics(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    let query = Query::parse(parts.uri.query(), &["range"])?;
    let range = match query.get("range") {
        None => None,
        Some(text) => Some(text.parse::<Range>().map_err(|()| {
            ApiError::BadRequest(format!(
                "range: expected one of 1h, 6h, 24h, 7d, 30d, got {text:?}"
            ))
        })?),
    };
    let now = ctx.state.now();
    let overview = ccflare_analytics::overview(&ctx.api.db, now).await?;
    let counts = ctx.state.pool().counts(now);
    // Exactly the seed's fields.
    let mut body = serde_json::json!({
        "total_requests": overview.total_requests,
        "total_tokens": overview.total_tokens,
        "average_response_time": overview.average_response_time,
        "cost_estimate": overview.cost_estimate,
        "active_accounts": counts.available,
        "rate_limited_accounts": counts.rate_limited + counts.overloaded,
        "requests_last_hour": overview.requests_last_hour,
        "top_models": overview.top_models,
    });
    if let Some(range) = range {
        let report = ccflare_analytics::report(&ctx.api.db, now, range).await?;
        if let (Value::Object(body), Ok(Value::Object(report))) =
            (&mut body, serde_json::to_value(&report))
        {
            for (key, value) in report {
                body.entry(key).or_insert(value);
            }
        }
        name_client_keys(&mut body, &crate::keys::names(ctx).await?);
    }
    Ok(respond::ok(&body))
}

/// Rows record a client key by id: the breakdown by key shows each one's name (a deleted
/// key's as `deleted key <id>`).
fn name_client_keys(body: &mut Value, names: &std::collections::HashMap<String, String>) {
    let Some(groups) = body.get_mut("client_keys").and_then(Value::as_array_mut) else {
        return;
    };
    for group in groups {
        if let Some(id) = group.get("name").and_then(Value::as_str).map(str::to_owned) {
            let name = names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("deleted key {id}"));
            group["name"] = name.into();
        }
    }
}

pub async fn stats(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    let all = ccflare_analytics::all_time(&ctx.api.db).await?;
    Ok(respond::ok(&all))
}

pub fn metrics(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    let accounts = ctx.state.pool().views(ctx.state.now());
    let text = ctx.api.metrics.render(
        &accounts,
        &ctx.state.writer,
        ctx.state.started.elapsed().as_secs(),
    );
    let mut response = Response::new(ResponseBody::full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

pub fn openapi(parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    let mut response = Response::new(ResponseBody::full(OPENAPI));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
