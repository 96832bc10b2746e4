//! Request endpoints: the filtered, cursor-paged listing, one request in full, and the live feed.

use crate::Ctx;
use crate::error::ApiError;
use crate::feeds::RequestFeed;
use crate::respond::{self, Query};
use crate::views::RequestJson;
use ccflare_core::Millis;
use ccflare_core::time::parse_rfc3339;
use ccflare_proxy::ResponseBody;
use ccflare_storage::requests::{
    self, AccountFilter, ModelFilter, Order, RequestFilter, StatusFilter,
};
use http::Response;
use http::request::Parts;

/// Rows per page without `limit`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// A time given as epoch milliseconds or RFC 3339.
fn time(name: &str, value: &str) -> Result<Millis, ApiError> {
    value
        .parse::<Millis>()
        .ok()
        .or_else(|| parse_rfc3339(value))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name}: expected epoch milliseconds or an RFC 3339 time such as \
                 2026-01-31T12:00:00Z, got {value:?}"
            ))
        })
}

/// The opaque cursor of a page: where the next one starts.
fn cursor(started_at: Millis, id: &str) -> String {
    format!("{started_at}_{id}")
}

fn parse_cursor(text: &str) -> Result<(Millis, String), ApiError> {
    text.split_once('_')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "cursor: not a cursor from an earlier page's next_cursor".to_owned(),
            )
        })
}

/// The listing's filter, where the page starts, and how many rows it has.
fn filter(query: &Query) -> Result<(RequestFilter, Order, u32), ApiError> {
    let status = match query.get("status") {
        None => None,
        Some("success") => Some(StatusFilter::Success),
        Some("error") => Some(StatusFilter::Error),
        Some(class @ ("1xx" | "2xx" | "3xx" | "4xx" | "5xx")) => {
            Some(StatusFilter::Class(class.as_bytes()[0] - b'0'))
        }
        Some(code) => match code.parse::<u16>() {
            Ok(code) if (100..=999).contains(&code) => Some(StatusFilter::Code(code)),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "status: expected success, error, a class such as 4xx or an HTTP status \
                     code, got {code:?}"
                )));
            }
        },
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit: expected a number from 1 to {MAX_LIMIT}, got {text:?}"
                ))
            })?,
    };
    let filter = RequestFilter {
        model: query.get("model").map(|m| ModelFilter::Is(m.to_owned())),
        account: query
            .get("account")
            .map(|a| AccountFilter::Named(a.to_owned())),
        status,
        since: query.get("since").map(|v| time("since", v)).transpose()?,
        until: query.get("until").map(|v| time("until", v)).transpose()?,
        // `key` is a name: the handler looks its id up.
        client_key: None,
    };
    let order = Order::NewestStarted {
        after: query.get("cursor").map(parse_cursor).transpose()?,
    };
    Ok((filter, order, limit))
}

pub async fn list(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    let query = Query::parse(
        parts.uri.query(),
        &[
            "model", "account", "key", "status", "since", "until", "limit", "cursor",
        ],
    )?;
    let (mut filter, order, limit) = filter(&query)?;
    if let Some(name) = query.get("key") {
        filter.client_key = Some(crate::keys::id_of(ctx, name).await?);
    }
    let page = requests::list(&ctx.api.db, &filter, order, limit).await?;
    let next_cursor = page
        .requests
        .last()
        .filter(|_| page.more)
        .map(|last| cursor(last.record.started_at, &last.record.id));
    let rows: Vec<RequestJson<'_>> = page
        .requests
        .iter()
        .map(|listed| RequestJson::from(&listed.record))
        .collect();
    Ok(respond::ok(&serde_json::json!({
        "requests": rows,
        "next_cursor": next_cursor,
    })))
}

pub async fn get(ctx: &Ctx, parts: &Parts, id: &str) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    match requests::get(&ctx.api.db, id).await? {
        Some(record) => Ok(respond::ok(&RequestJson::from(&record))),
        None => Err(ApiError::RequestNotFound { id: id.to_owned() }),
    }
}

pub fn stream(ctx: &Ctx, parts: &Parts) -> Result<Response<ResponseBody>, ApiError> {
    Query::parse(parts.uri.query(), &[])?;
    // Subscribed before the response goes out: every request that starts after the client
    // has the response headers is in its feed.
    let feed = RequestFeed::new(ctx.state.subscribe_requests(), ctx.state.shutdown_signal());
    Ok(feed.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let text = cursor(1_700_000_000_000, "ccf_18b_00002a");
        assert_eq!(
            parse_cursor(&text).unwrap(),
            (1_700_000_000_000, "ccf_18b_00002a".to_owned())
        );
        assert!(parse_cursor("nonsense").is_err());
        assert!(parse_cursor("12_").is_err());
    }

    #[test]
    fn filters_say_what_is_wrong() {
        let q = |s: &str| Query::parse(Some(s), &["status", "since", "limit"]).unwrap();
        assert_eq!(
            filter(&q("status=429&since=2026-01-31T12:00:00Z"))
                .unwrap()
                .0,
            RequestFilter {
                status: Some(StatusFilter::Code(429)),
                since: parse_rfc3339("2026-01-31T12:00:00Z"),
                ..Default::default()
            }
        );
        assert_eq!(
            filter(&q("status=5xx")).unwrap().0.status,
            Some(StatusFilter::Class(5))
        );
        for (bad, says) in [
            ("status=oops", "status:"),
            ("status=6xx", "status:"),
            ("since=yesterday", "since:"),
            ("limit=0", "limit:"),
            ("limit=5000", "limit:"),
        ] {
            let err = filter(&q(bad)).unwrap_err().to_string();
            assert!(err.starts_with(says), "{bad}: {err}");
        }
    }
}
