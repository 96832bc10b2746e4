//! Request rows: the insert the writer uses and the plain reads tests, the CLI and the API
//! build on. Aggregates live in `ccflare-analytics`.

use crate::db::Db;
use crate::error::StorageError;
use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::usage::Usage;
use ccflare_core::{AccountId, Millis};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use std::collections::HashSet;

pub(crate) async fn insert(
    tx: &mut SqliteConnection,
    r: &RequestRecord,
) -> Result<(), sqlx::Error> {
    let failures = (!r.attempt_failures.is_empty())
        .then(|| serde_json::to_string(&r.attempt_failures).unwrap_or_default());
    sqlx::query(
        "INSERT OR REPLACE INTO requests (id, started_at, method, path, model, account_id, \
         account_name, status, success, error_type, error_message, attempts, attempt_failures, \
         latency_ms, ttfb_ms, streamed, input_tokens, output_tokens, cache_read_tokens, \
         cache_write_tokens, cache_write_5m_tokens, cache_write_1h_tokens, usage_incomplete, \
         cost_usd, cost_estimated, output_tokens_per_second, session_key, client_key) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.id)
    .bind(r.started_at)
    .bind(&r.method)
    .bind(&r.path)
    .bind(&r.model)
    .bind(r.account_id.map(|id| id.0))
    .bind(&r.account_name)
    .bind(i64::from(r.status))
    .bind(r.success)
    .bind(&r.error_type)
    .bind(&r.error_message)
    .bind(i64::from(r.attempts))
    .bind(failures)
    .bind(r.latency_ms)
    .bind(r.ttfb_ms)
    .bind(r.streamed)
    .bind(r.usage.input_tokens as i64)
    .bind(r.usage.output_tokens as i64)
    .bind(r.usage.cache_read_input_tokens as i64)
    .bind(r.usage.cache_creation_input_tokens as i64)
    .bind(r.usage.cache_write_5m as i64)
    .bind(r.usage.cache_write_1h as i64)
    .bind(r.usage_incomplete)
    .bind(r.cost_usd)
    .bind(r.cost_estimated)
    .bind(r.output_tokens_per_second)
    .bind(&r.session_key)
    .bind(&r.client_key)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The ids among `records` that are already stored (a replay of spilled records skips them).
pub(crate) async fn existing_ids(
    tx: &mut SqliteConnection,
    records: &[RequestRecord],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut present = HashSet::new();
    // SQLite allows 32,766 parameters; a batch is far below that, but stay well clear.
    let mut start = 0;
    while start < records.len() {
        let end = (start + 1000).min(records.len());
        let placeholders = vec!["?"; end - start].join(",");
        let sql = format!("SELECT id FROM requests WHERE id IN ({placeholders})");
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for record in &records[start..end] {
            query = query.bind(record.id.clone());
        }
        present.extend(query.fetch_all(&mut *tx).await?);
        start = end;
    }
    Ok(present)
}

fn from_row(row: &SqliteRow) -> Result<RequestRecord, StorageError> {
    let failures: Option<String> = row.try_get("attempt_failures")?;
    let attempt_failures: Vec<AttemptFailure> = match failures {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| StorageError::Corrupt(e.to_string()))?
        }
        None => Vec::new(),
    };
    let count = |name: &str| -> Result<u64, StorageError> {
        Ok(row.try_get::<i64, _>(name)?.max(0) as u64)
    };
    Ok(RequestRecord {
        id: row.try_get("id")?,
        started_at: row.try_get("started_at")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        model: row.try_get("model")?,
        account_id: row.try_get::<Option<i64>, _>("account_id")?.map(AccountId),
        account_name: row.try_get("account_name")?,
        status: row.try_get::<i64, _>("status")?.clamp(0, 999) as u16,
        success: row.try_get("success")?,
        error_type: row.try_get("error_type")?,
        error_message: row.try_get("error_message")?,
        attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
        attempt_failures,
        latency_ms: row.try_get("latency_ms")?,
        ttfb_ms: row.try_get("ttfb_ms")?,
        streamed: row.try_get("streamed")?,
        usage: Usage {
            input_tokens: count("input_tokens")?,
            output_tokens: count("output_tokens")?,
            cache_read_input_tokens: count("cache_read_tokens")?,
            cache_creation_input_tokens: count("cache_write_tokens")?,
            cache_write_5m: count("cache_write_5m_tokens")?,
            cache_write_1h: count("cache_write_1h_tokens")?,
        },
        usage_incomplete: row.try_get("usage_incomplete")?,
        cost_usd: row.try_get("cost_usd")?,
        cost_estimated: row.try_get("cost_estimated")?,
        output_tokens_per_second: row.try_get("output_tokens_per_second")?,
        session_key: row.try_get("session_key")?,
        client_key: row.try_get("client_key")?,
    })
}

/// The newest `limit` requests, newest first.
pub async fn recent(db: &Db, limit: u32) -> Result<Vec<RequestRecord>, StorageError> {
    let rows = sqlx::query("SELECT * FROM requests ORDER BY started_at DESC, rowid DESC LIMIT ?")
        .bind(i64::from(limit))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

/// One request by id.
pub async fn get(db: &Db, id: &str) -> Result<Option<RequestRecord>, StorageError> {
    let row = sqlx::query("SELECT * FROM requests WHERE id = ?")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Number of request rows.
pub async fn count(db: &Db) -> Result<i64, StorageError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(db.pool())
        .await?)
}

/// Which requests a listing shows by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Requests recorded as successful.
    Success,
    /// Every request that was not a success (any status).
    Error,
    /// Exactly this HTTP status.
    Code(u16),
}

/// A request listing's filters; every `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilter {
    pub model: Option<String>,
    /// The account's current name (all its requests, under any earlier name too), or the name
    /// recorded on the rows of an account that no longer exists.
    pub account: Option<String>,
    pub status: Option<StatusFilter>,
    /// Started at or after this time.
    pub since: Option<Millis>,
    /// Started before this time.
    pub until: Option<Millis>,
    /// Continue after this row: its `started_at` and id (the listing is newest first).
    pub after: Option<(Millis, String)>,
}

/// One page of a listing, newest first, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub requests: Vec<RequestRecord>,
    /// `started_at` and id of the last row, when more rows follow.
    pub next: Option<(Millis, String)>,
}

/// Requests matching `filter`, newest first, at most `limit` (1 to 1000) of them.
pub async fn list(db: &Db, filter: &RequestFilter, limit: u32) -> Result<Page, StorageError> {
    let limit = limit.clamp(1, 1000);
    let account_id: Option<i64> = match &filter.account {
        Some(name) => {
            sqlx::query_scalar("SELECT id FROM accounts WHERE name = ?")
                .bind(name)
                .fetch_optional(db.pool())
                .await?
        }
        None => None,
    };
    let mut conditions: Vec<&str> = Vec::new();
    if filter.model.is_some() {
        conditions.push("model = ?");
    }
    match (&filter.account, account_id) {
        (Some(_), Some(_)) => conditions.push("account_id = ?"),
        (Some(_), None) => conditions.push("account_name = ?"),
        _ => {}
    }
    match filter.status {
        Some(StatusFilter::Success) => conditions.push("success = 1"),
        Some(StatusFilter::Error) => conditions.push("success = 0"),
        Some(StatusFilter::Code(_)) => conditions.push("status = ?"),
        None => {}
    }
    if filter.since.is_some() {
        conditions.push("started_at >= ?");
    }
    if filter.until.is_some() {
        conditions.push("started_at < ?");
    }
    if filter.after.is_some() {
        // The first term lets SQLite use the started_at indexes for the range.
        conditions.push("started_at <= ? AND (started_at < ? OR id < ?)");
    }
    let mut sql = String::from("SELECT * FROM requests");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY started_at DESC, id DESC LIMIT ?");

    let mut query = sqlx::query(&sql);
    if let Some(model) = &filter.model {
        query = query.bind(model);
    }
    match (&filter.account, account_id) {
        (Some(_), Some(id)) => query = query.bind(id),
        (Some(name), None) => query = query.bind(name),
        _ => {}
    }
    if let Some(StatusFilter::Code(code)) = filter.status {
        query = query.bind(i64::from(code));
    }
    if let Some(since) = filter.since {
        query = query.bind(since);
    }
    if let Some(until) = filter.until {
        query = query.bind(until);
    }
    if let Some((at, id)) = &filter.after {
        query = query.bind(*at).bind(*at).bind(id);
    }
    // One more than asked tells whether another page follows.
    let rows = query
        .bind(i64::from(limit) + 1)
        .fetch_all(db.pool())
        .await?;
    let mut requests = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = if requests.len() > limit as usize {
        requests.truncate(limit as usize);
        requests.last().map(|r| (r.started_at, r.id.clone()))
    } else {
        None
    };
    Ok(Page { requests, next })
}
