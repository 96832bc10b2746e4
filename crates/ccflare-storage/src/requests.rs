//! Request rows: the insert the writer uses, and the reads: one request, the newest ones, and
//! the one filtered listing that both the API's pages and the CLI's log read. Aggregates live
//! in `ccflare-analytics`.

use crate::db::Db;
use crate::error::StorageError;
use crate::rows::{Part, Query, Rows, Table};
use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::route::Explanation;
use ccflare_core::usage::Usage;
use ccflare_core::{AccountId, Millis};
use sqlx::{FromRow, SqliteConnection};
use std::collections::HashSet;

/// A batch's request rows, a part of the writer's transaction (`rows`: many per statement).
pub(crate) fn rows<'a>(records: &'a [&'a RequestRecord]) -> impl Part + Sync + 'a {
    static INSERT: Rows = Rows::new(
        "INSERT OR REPLACE INTO requests (id, started_at, method, path, model, account_id, \
         account_name, status, success, error_type, error_message, attempts, attempt_failures, \
         latency_ms, ttfb_ms, streamed, input_tokens, output_tokens, cache_read_tokens, \
         cache_write_tokens, cache_write_5m_tokens, cache_write_1h_tokens, usage_incomplete, \
         cost_usd, cost_estimated, output_tokens_per_second, session_key, client_key, \
         web_search_requests, web_fetch_requests, resource_id, route, upstream_request_id, \
         message_id, moved_cache_write_tokens)",
        "",
        35,
    );
    Table::new(&INSERT, records, |query, r| bind_row(query, r))
}

/// Binds one request row's 35 values, in [`rows`]' column order.
fn bind_row<'q>(query: Query<'q>, r: &'q RequestRecord) -> Query<'q> {
    let failures = (!r.attempt_failures.is_empty())
        .then(|| serde_json::to_string(&r.attempt_failures).unwrap_or_default());
    query
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
        .bind(r.usage.web_search_requests.min(i64::MAX as u64) as i64)
        .bind(r.usage.web_fetch_requests.min(i64::MAX as u64) as i64)
        .bind(&r.resource_id)
        // Rendered here, in the writer, off the request path.
        .bind(r.route.as_ref().map(ToString::to_string))
        .bind(&r.upstream_request_id)
        .bind(&r.message_id)
        .bind(moved_cache_write_tokens(r))
}

/// The cache-creation tokens of a request whose session moved (its column); `None` when it did
/// not move.
pub(crate) fn moved_cache_write_tokens(r: &RequestRecord) -> Option<i64> {
    r.moved
        .then(|| r.usage.cache_creation_input_tokens.min(i64::MAX as u64) as i64)
}

/// The ids among `records` that are already stored (a replay of spilled records skips them).
pub(crate) async fn existing_ids(
    tx: &mut SqliteConnection,
    records: &[std::sync::Arc<RequestRecord>],
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

/// A request row as stored, with its position in recording order (`rowid AS seq`).
#[derive(Debug, FromRow)]
struct RequestRow {
    seq: i64,
    id: String,
    started_at: Millis,
    method: String,
    path: String,
    model: Option<String>,
    account_id: Option<i64>,
    account_name: Option<String>,
    status: i64,
    success: bool,
    error_type: Option<String>,
    error_message: Option<String>,
    attempts: i64,
    attempt_failures: Option<String>,
    latency_ms: i64,
    ttfb_ms: Option<i64>,
    streamed: bool,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    cache_write_5m_tokens: i64,
    cache_write_1h_tokens: i64,
    usage_incomplete: bool,
    cost_usd: f64,
    cost_estimated: bool,
    output_tokens_per_second: Option<f64>,
    session_key: Option<String>,
    client_key: Option<String>,
    web_search_requests: i64,
    web_fetch_requests: i64,
    resource_id: Option<String>,
    route: Option<String>,
    upstream_request_id: Option<String>,
    message_id: Option<String>,
    moved_cache_write_tokens: Option<i64>,
}

/// What every read of whole rows selects: [`RequestRow`]'s columns, named rather than `*`. A
/// pooled connection opened before a migration that added a column (0009's `route`) expands
/// `*` from its stale schema when it prepares, and SQLite re-prepares the statement with one
/// more column only when it runs: the row then has more values than sqlx expected. A named
/// column that the stale schema lacks fails the prepare instead, which makes SQLite reload its
/// schema and prepare again.
const SELECT_ROWS: &str = "SELECT rowid AS seq, id, started_at, method, path, model, \
     account_id, account_name, status, success, error_type, error_message, attempts, \
     attempt_failures, latency_ms, ttfb_ms, streamed, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, cache_write_5m_tokens, cache_write_1h_tokens, \
     usage_incomplete, cost_usd, cost_estimated, output_tokens_per_second, session_key, \
     client_key, web_search_requests, web_fetch_requests, resource_id, route, \
     upstream_request_id, message_id, moved_cache_write_tokens FROM requests";

/// A recorded request and its position in recording order.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// SQLite's rowid: rows are written when their request ends, so this is the order requests
    /// ended in ([`Order::RecordedAfter`] resumes from it).
    pub seq: i64,
    pub record: RequestRecord,
}

impl TryFrom<RequestRow> for Listed {
    type Error = StorageError;

    fn try_from(row: RequestRow) -> Result<Listed, StorageError> {
        let attempt_failures: Vec<AttemptFailure> = match row.attempt_failures {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| StorageError::Corrupt(e.to_string()))?
            }
            None => Vec::new(),
        };
        let count = |n: i64| n.max(0) as u64;
        let record = RequestRecord {
            id: row.id,
            started_at: row.started_at,
            method: row.method,
            path: row.path,
            model: row.model,
            account_id: row.account_id.map(AccountId),
            account_name: row.account_name,
            status: row.status.clamp(0, 999) as u16,
            success: row.success,
            error_type: row.error_type,
            error_message: row.error_message,
            attempts: row.attempts.max(0) as u32,
            attempt_failures,
            latency_ms: row.latency_ms,
            ttfb_ms: row.ttfb_ms,
            streamed: row.streamed,
            usage: Usage {
                input_tokens: count(row.input_tokens),
                output_tokens: count(row.output_tokens),
                cache_read_input_tokens: count(row.cache_read_tokens),
                cache_creation_input_tokens: count(row.cache_write_tokens),
                cache_write_5m: count(row.cache_write_5m_tokens),
                cache_write_1h: count(row.cache_write_1h_tokens),
                web_search_requests: count(row.web_search_requests),
                web_fetch_requests: count(row.web_fetch_requests),
            },
            usage_incomplete: row.usage_incomplete,
            cost_usd: row.cost_usd,
            cost_estimated: row.cost_estimated,
            output_tokens_per_second: row.output_tokens_per_second,
            session_key: row.session_key,
            client_key: row.client_key,
            resource_id: row.resource_id,
            // Not stored: `/metrics` counts it as requests finish.
            proxy_overhead_us: None,
            route: row.route.map(Explanation::Text),
            upstream_request_id: row.upstream_request_id,
            message_id: row.message_id,
            moved: row.moved_cache_write_tokens.is_some(),
        };
        Ok(Listed {
            seq: row.seq,
            record,
        })
    }
}

/// The newest `limit` requests, newest first.
pub async fn recent(db: &Db, limit: u32) -> Result<Vec<RequestRecord>, StorageError> {
    let rows: Vec<RequestRow> = sqlx::query_as(&format!(
        "{SELECT_ROWS} ORDER BY started_at DESC, rowid DESC LIMIT ?"
    ))
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| Ok(Listed::try_from(row)?.record))
        .collect()
}

/// One request by id.
pub async fn get(db: &Db, id: &str) -> Result<Option<RequestRecord>, StorageError> {
    let row: Option<RequestRow> = sqlx::query_as(&format!("{SELECT_ROWS} WHERE id = ?"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(Listed::try_from).transpose()?.map(|l| l.record))
}

/// The batches and files that requests created, newest first, with the account that created
/// each (at most `limit`): the proxy routes later requests for an id to its account.
pub async fn created_resources(
    db: &Db,
    limit: u32,
) -> Result<Vec<(String, AccountId)>, StorageError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT resource_id, account_id FROM requests \
         WHERE resource_id IS NOT NULL AND account_id IS NOT NULL \
         ORDER BY started_at DESC, rowid DESC LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, account)| (id, AccountId(account)))
        .collect())
}

/// Number of request rows.
pub async fn count(db: &Db) -> Result<i64, StorageError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(db.pool())
        .await?)
}

/// The position of the last recorded request (0 when there is none): reading
/// [`Order::RecordedAfter`] it shows only what is recorded from now on.
pub async fn last_seq(db: &Db) -> Result<i64, StorageError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(rowid), 0) FROM requests")
            .fetch_one(db.pool())
            .await?,
    )
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
    /// Every status of this class: `4` is 400 to 499.
    Class(u8),
}

/// Which requests a listing shows by model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFilter {
    /// Exactly this model.
    Is(String),
    /// Every model whose name starts with this (`claude-sonnet` matches every Sonnet).
    StartsWith(String),
}

/// Which requests a listing shows by account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountFilter {
    /// The account now called this (all its requests, under any earlier name too), or the name
    /// recorded on the rows of an account that no longer exists.
    Named(String),
    /// The requests recorded under this name: the rule a live feed's events can be matched by,
    /// since they carry only the name.
    Recorded(String),
}

/// A request listing's filters; every `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilter {
    pub model: Option<ModelFilter>,
    pub account: Option<AccountFilter>,
    pub status: Option<StatusFilter>,
    /// Started at or after this time.
    pub since: Option<Millis>,
    /// Started before this time.
    pub until: Option<Millis>,
    /// Made with this client key: its id as the rows record it (`keys::ClientKey::id` as
    /// text; the callers look names up).
    pub client_key: Option<String>,
}

/// The order of a listing and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Newest first by start time (then id), from the newest or after this row's `started_at`
    /// and id (the previous page's last).
    NewestStarted { after: Option<(Millis, String)> },
    /// The last rows recorded, oldest first.
    LastRecorded,
    /// The rows recorded after this position ([`Listed::seq`]), oldest first.
    RecordedAfter(i64),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub requests: Vec<Listed>,
    /// Whether more rows match beyond the page (in the listing's direction).
    pub more: bool,
}

/// A value bound to the listing's query.
enum Param {
    Int(i64),
    Text(String),
}

/// The listing's SQL and its parameters (bar the limit, bound last).
async fn query_of(
    db: &Db,
    filter: &RequestFilter,
    order: &Order,
) -> Result<(String, Vec<Param>), StorageError> {
    let mut conditions: Vec<&str> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    match &filter.model {
        Some(ModelFilter::Is(model)) => {
            conditions.push("model = ?");
            params.push(Param::Text(model.clone()));
        }
        Some(ModelFilter::StartsWith(prefix)) => {
            conditions.push("substr(model, 1, length(?)) = ?");
            params.push(Param::Text(prefix.clone()));
            params.push(Param::Text(prefix.clone()));
        }
        None => {}
    }
    let account = match &filter.account {
        Some(AccountFilter::Named(name)) => {
            let id: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE name = ?")
                .bind(name)
                .fetch_optional(db.pool())
                .await?;
            Some(id.map_or(Param::Text(name.clone()), Param::Int))
        }
        Some(AccountFilter::Recorded(name)) => Some(Param::Text(name.clone())),
        None => None,
    };
    match account {
        Some(Param::Int(id)) => {
            conditions.push("account_id = ?");
            params.push(Param::Int(id));
        }
        Some(name) => {
            conditions.push("account_name = ?");
            params.push(name);
        }
        None => {}
    }
    if let Some(id) = &filter.client_key {
        conditions.push("client_key = ?");
        params.push(Param::Text(id.clone()));
    }
    match filter.status {
        Some(StatusFilter::Success) => conditions.push("success = 1"),
        Some(StatusFilter::Error) => conditions.push("success = 0"),
        Some(StatusFilter::Code(code)) => {
            conditions.push("status = ?");
            params.push(Param::Int(i64::from(code)));
        }
        Some(StatusFilter::Class(class)) => {
            // This very expression is indexed (migration 0008).
            conditions.push("status / 100 = ?");
            params.push(Param::Int(i64::from(class)));
        }
        None => {}
    }
    if let Some(since) = filter.since {
        conditions.push("started_at >= ?");
        params.push(Param::Int(since));
    }
    if let Some(until) = filter.until {
        conditions.push("started_at < ?");
        params.push(Param::Int(until));
    }
    let sort = match &order {
        Order::NewestStarted { after } => {
            if let Some((at, id)) = after {
                // The first term lets SQLite use the started_at indexes for the range.
                conditions.push("started_at <= ? AND (started_at < ? OR id < ?)");
                params.extend([Param::Int(*at), Param::Int(*at), Param::Text(id.clone())]);
            }
            "started_at DESC, id DESC"
        }
        Order::LastRecorded => "rowid DESC",
        Order::RecordedAfter(after) => {
            conditions.push("rowid > ?");
            params.push(Param::Int(*after));
            "rowid"
        }
    };
    let mut sql = String::from(SELECT_ROWS);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {sort} LIMIT ?"));
    Ok((sql, params))
}

/// Requests matching `filter`, in `order`, at most `limit` of them. The one request listing:
/// the API's pages and the CLI's log both read it. Every filter alone has an index that gives
/// its rows in the listing's order (migration 0008), so a page costs about its own rows.
pub async fn list(
    db: &Db,
    filter: &RequestFilter,
    order: Order,
    limit: u32,
) -> Result<Page, StorageError> {
    let (sql, params) = query_of(db, filter, &order).await?;
    let mut query = sqlx::query_as::<_, RequestRow>(&sql);
    for param in params {
        query = match param {
            Param::Int(value) => query.bind(value),
            Param::Text(value) => query.bind(value),
        };
    }
    // One more than asked tells whether more follow.
    let rows = query
        .bind(i64::from(limit) + 1)
        .fetch_all(db.pool())
        .await?;
    let more = rows.len() > limit as usize;
    let mut requests = rows
        .into_iter()
        .take(limit as usize)
        .map(Listed::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if order == Order::LastRecorded {
        requests.reverse();
    }
    Ok(Page { requests, more })
}

/// SQLite's plan for [`list`] with `filter` and `order` (the `detail` lines of `EXPLAIN QUERY
/// PLAN`): tests check that each filter reads an index in the listing's order and sorts nothing.
pub async fn explain(
    db: &Db,
    filter: &RequestFilter,
    order: Order,
) -> Result<Vec<String>, StorageError> {
    let (sql, params) = query_of(db, filter, &order).await?;
    let sql = format!("EXPLAIN QUERY PLAN {sql}");
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
    for param in params {
        query = match param {
            Param::Int(value) => query.bind(value),
            Param::Text(value) => query.bind(value),
        };
    }
    let rows = query.bind(51_i64).fetch_all(db.pool()).await?;
    Ok(rows.into_iter().map(|(_, _, _, detail)| detail).collect())
}
