//! The tables `ccflare-cli` prints: requests, tokens, cost, error rate and latency percentiles
//! per day, per hour and per model (`stats`); the log's filter and entries (`logs`, which reads
//! `storage::requests::list`); and the read-only database checks of `doctor`.
//!
//! The tables read the rollups through the same definitions as `/api/analytics`: the same sums,
//! and percentiles from the same latency histograms ([`Percentiles::from_histogram`], nearest
//! rank over every request, exact below 128 ms and within 1/32 above), so the CLI and the API
//! show the same p50 and p95 for the same hours. The rollups are written in the same transaction
//! as the rows, so they are never behind them, whether a server runs or not. The rollups keep
//! no histogram per model, so the per-model percentiles of `stats models` bin the window's
//! rows the same way instead.
//!
//! Everything here reads; nothing takes the write lock.

use crate::AnalyticsError;
use crate::report::{Percentiles, Window, percentiles_in};
use ccflare_core::Millis;
use ccflare_core::route::Explanation;
use ccflare_storage::Db;
use ccflare_storage::requests::{AccountFilter, Listed, ModelFilter, RequestFilter, StatusFilter};
use ccflare_storage::rollups::{
    self, DAY_MS, DIM_ALL, DIM_MODEL, HOUR_MS, METRIC_LATENCY, SUM_COLUMNS, Sums, bucket,
};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use std::collections::{BTreeMap, HashMap};

/// Which clock day and hour boundaries follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    /// The system's local time (`TZ`, else `/etc/localtime`), as SQLite's `localtime` sees it,
    /// so a day is the user's day and daylight-saving changes fall where they should.
    Local,
}

impl Zone {
    /// The SQLite date modifier; a constant, never user text.
    fn modifier(self) -> &'static str {
        match self {
            Zone::Utc => "'+0 seconds'",
            Zone::Local => "'localtime'",
        }
    }
}

/// How rows are grouped, and over which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakdown {
    /// The last `days` calendar days, today included; labels `YYYY-MM-DD`.
    Daily { days: u32 },
    /// The last `hours` clock hours, this one included; labels `YYYY-MM-DD HH:MM` (the minutes
    /// are `00` unless the zone is offset from UTC by a part of an hour).
    Hourly { hours: u32 },
    /// Per model, over the whole hours from the one holding `since`; requests without a model
    /// (a route such as `/v1/models`) are grouped as `(none)`.
    Models { since: Millis },
}

/// One line of a stats table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    /// The day, hour or model.
    pub key: String,
    pub requests: i64,
    /// Requests that did not succeed (any error status, including 499 for clients that hung
    /// up and ccflare's own 429/503 when no account could serve).
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    /// Latency percentiles of the requests, in milliseconds; `None` without any.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    /// Requests whose session moved to another account, and their cache-creation tokens: the
    /// prompt cache re-created because of moves (docs/routing.md).
    pub session_moves: i64,
    pub moved_cache_write_tokens: i64,
}

impl StatsRow {
    fn new(key: String, sums: &Sums, latency: Percentiles) -> StatsRow {
        StatsRow {
            key,
            requests: sums.requests,
            errors: sums.requests - sums.successes,
            input_tokens: sums.input_tokens,
            output_tokens: sums.output_tokens,
            cache_read_tokens: sums.cache_read_tokens,
            cache_write_tokens: sums.cache_write_tokens,
            cost_usd: sums.cost_usd,
            p50_ms: latency.p50,
            p95_ms: latency.p95,
            session_moves: sums.moves,
            moved_cache_write_tokens: sums.moved_cache_write_tokens,
        }
    }

    /// Errors as a fraction of requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A stats table: one row per group (days and hours oldest first, models busiest first) and
/// the total over the same window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsTable {
    pub rows: Vec<StatsRow>,
    pub total: StatsRow,
}

/// Latency samples per histogram bin (`rollups::bin`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram(BTreeMap<i64, i64>);

impl Histogram {
    fn add(&mut self, bin: i64, count: i64) {
        *self.0.entry(bin).or_default() += count;
    }

    fn percentiles(&self) -> Percentiles {
        let bins: Vec<(i64, i64)> = self.0.iter().map(|(bin, count)| (*bin, *count)).collect();
        Percentiles::from_histogram(&bins)
    }
}

/// A group's sums, read with [`SUM_COLUMNS`] and the group as `g`.
#[derive(FromRow)]
struct GroupSums {
    g: String,
    #[sqlx(flatten)]
    sums: Sums,
}

/// A group's samples in one bin (or at one latency), as `g`, `bin` and `n`.
#[derive(FromRow)]
struct GroupBin {
    g: String,
    bin: i64,
    n: i64,
}

/// Requests, tokens, cost, errors and latency per day, hour or model, as of `now`.
pub async fn stats(
    db: &Db,
    breakdown: Breakdown,
    zone: Zone,
    now: Millis,
) -> Result<StatsTable, AnalyticsError> {
    match breakdown {
        Breakdown::Hourly { hours } => {
            let first = bucket(now, HOUR_MS) - (i64::from(hours.max(1)) - 1) * HOUR_MS;
            Periods::new("hourly", "%Y-%m-%d %H:%M", zone)
                .table(db, first, "")
                .await
        }
        // Whole UTC days are rows of the daily rollups.
        Breakdown::Daily { days } if zone == Zone::Utc => {
            let first = bucket(now, DAY_MS) - (i64::from(days.max(1)) - 1) * DAY_MS;
            Periods::new("daily", "%Y-%m-%d", zone)
                .table(db, first, "")
                .await
        }
        // Local days are made of the hours whose local date they share; which ones count is
        // decided by that label, from the local date `days - 1` days before today's. The
        // bound on `bucket` (with a day of slack for the zone's offset) only lets SQLite use
        // the primary key.
        Breakdown::Daily { days } => {
            let (lower, first_label) = local_days(db, zone, now, days).await?;
            Periods::new("hourly", "%Y-%m-%d", zone)
                .table(db, lower, &first_label)
                .await
        }
        Breakdown::Models { since } => per_model(db, Window::since(Some(since))).await,
    }
}

/// The last `days` local days (at least one) up to `now`: a lower bound on the hours they
/// hold (with a day of slack for the zone's offset, so that SQLite can use the primary key or
/// the `started_at` index) and the local date of the first, which decides which hours count.
async fn local_days(
    db: &Db,
    zone: Zone,
    now: Millis,
    days: u32,
) -> Result<(Millis, String), AnalyticsError> {
    let days = days.max(1);
    let first_label: String = sqlx::query_scalar(&format!(
        "SELECT strftime('%Y-%m-%d', ?1 / 1000, 'unixepoch', {}, '-{} days')",
        zone.modifier(),
        days - 1
    ))
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    Ok((
        now.saturating_sub(i64::from(days) * DAY_MS + DAY_MS),
        first_label,
    ))
}

/// [`stats`] for the requests of one client key (`key`: its id, as request rows record it).
/// The rollups keep sums per key but no latency histogram per key, so these tables are read
/// from the key's request rows in the window (through the `started_at` index), labelled by the
/// UTC hour they started in as the rollups' buckets are, and binned as the rollups bin.
pub async fn stats_of_key(
    db: &Db,
    breakdown: Breakdown,
    zone: Zone,
    now: Millis,
    key: &str,
) -> Result<StatsTable, AnalyticsError> {
    let hour = "(started_at - started_at % 3600000) / 1000";
    let label = |format: &str| {
        format!(
            "strftime('{format}', {hour}, 'unixepoch', {})",
            zone.modifier()
        )
    };
    let (group, from, first_label) = match breakdown {
        Breakdown::Hourly { hours } => (
            label("%Y-%m-%d %H:%M"),
            bucket(now, HOUR_MS) - (i64::from(hours.max(1)) - 1) * HOUR_MS,
            String::new(),
        ),
        Breakdown::Daily { days } => {
            let (lower, first_label) = local_days(db, zone, now, days).await?;
            (label("%Y-%m-%d"), lower, first_label)
        }
        Breakdown::Models { since } => (
            "coalesce(model, '')".to_owned(),
            bucket(since, HOUR_MS),
            String::new(),
        ),
    };
    let rows = format!(
        "WITH r AS MATERIALIZED ( \
             SELECT {group} AS g, success, streamed, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, cost_usd, cost_estimated, latency_ms, \
             ttfb_ms, moved_cache_write_tokens \
             FROM requests WHERE started_at >= ?1 AND client_key = ?3 \
         )"
    );
    let mut groups: Vec<GroupSums> = sqlx::query_as(&format!(
        "{rows} SELECT g, count(*) AS requests, coalesce(sum(success), 0) AS successes, \
         coalesce(sum(streamed), 0) AS streamed, \
         coalesce(sum(input_tokens), 0) AS input_tokens, \
         coalesce(sum(output_tokens), 0) AS output_tokens, \
         coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens, \
         coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens, \
         coalesce(sum(cost_usd), 0.0) AS cost_usd, \
         coalesce(sum(cost_estimated), 0) AS cost_estimated, \
         coalesce(sum(latency_ms), 0) AS latency_ms_sum, \
         coalesce(sum(ttfb_ms), 0) AS ttfb_ms_sum, count(ttfb_ms) AS ttfb_count, \
         0 AS generated_tokens, 0 AS generating_ms_sum, \
         count(moved_cache_write_tokens) AS moves, \
         coalesce(sum(moved_cache_write_tokens), 0) AS moved_cache_write_tokens \
         FROM r WHERE g >= ?2 GROUP BY g ORDER BY g"
    ))
    .bind(from)
    .bind(&first_label)
    .bind(key)
    .fetch_all(db.pool())
    .await?;
    let bins: Vec<GroupBin> = sqlx::query_as(&format!(
        "{rows} SELECT g, latency_ms AS bin, count(*) AS n FROM r WHERE g >= ?2 \
         GROUP BY g, latency_ms"
    ))
    .bind(from)
    .bind(&first_label)
    .bind(key)
    .fetch_all(db.pool())
    .await?;
    let models = matches!(breakdown, Breakdown::Models { .. });
    let mut latency: HashMap<String, Histogram> = HashMap::new();
    let mut all = Histogram::default();
    for GroupBin { g, bin, n } in bins {
        let g = if models { model_name(g) } else { g };
        latency.entry(g).or_default().add(rollups::bin(bin), n);
        all.add(rollups::bin(bin), n);
    }
    if models {
        for group in &mut groups {
            group.g = model_name(std::mem::take(&mut group.g));
        }
        groups.sort_by(|a, b| {
            b.sums
                .requests
                .cmp(&a.sums.requests)
                .then_with(|| a.g.cmp(&b.g))
        });
    }
    Ok(table(groups, &latency, all.percentiles()))
}

/// Rows of the hourly or daily rollups grouped by a label of their start in a zone.
struct Periods {
    /// `rollup_{size}` and `latency_{size}`.
    sums: String,
    bins: String,
    /// The group: an SQL expression built from constants, never from user text.
    label: String,
}

impl Periods {
    fn new(size: &str, format: &str, zone: Zone) -> Periods {
        Periods {
            sums: format!("rollup_{size}"),
            bins: format!("latency_{size}"),
            label: format!(
                "strftime('{format}', bucket / 1000, 'unixepoch', {})",
                zone.modifier()
            ),
        }
    }

    /// The buckets from `from` on whose label is at least `first_label`, one row per label.
    async fn table(
        &self,
        db: &Db,
        from: Millis,
        first_label: &str,
    ) -> Result<StatsTable, AnalyticsError> {
        let Periods { sums, bins, label } = self;
        let groups: Vec<GroupSums> = sqlx::query_as(&format!(
            "SELECT {label} AS g, {SUM_COLUMNS} FROM {sums} \
             WHERE dim = {DIM_ALL} AND bucket >= ?1 GROUP BY g HAVING g >= ?2 ORDER BY g"
        ))
        .bind(from)
        .bind(first_label)
        .fetch_all(db.pool())
        .await?;
        // The label is computed once per bucket, not once per bin: SQLite's `localtime` is not
        // free, and a month has about 100,000 bins. Every bucket with bins has its row of sums
        // (the writer adds both). Summing in SQL beats reading the bins out (measured).
        let bins: Vec<GroupBin> = sqlx::query_as(&format!(
            "WITH labels AS MATERIALIZED ( \
                 SELECT bucket, {label} AS g FROM {sums} WHERE dim = {DIM_ALL} AND bucket >= ?1 \
             ) \
             SELECT g, bin, sum(count) AS n FROM labels JOIN {bins} USING (bucket) \
             WHERE metric = {METRIC_LATENCY} AND g >= ?2 GROUP BY g, bin"
        ))
        .bind(from)
        .bind(first_label)
        .fetch_all(db.pool())
        .await?;
        let mut latency: HashMap<String, Histogram> = HashMap::new();
        let mut all = Histogram::default();
        for GroupBin { g, bin, n } in bins {
            latency.entry(g).or_default().add(bin, n);
            all.add(bin, n);
        }
        Ok(table(groups, &latency, all.percentiles()))
    }
}

/// The rows of `groups` in their order with their latencies, and their total, whose latency
/// is `all`.
fn table(
    groups: Vec<GroupSums>,
    latency: &HashMap<String, Histogram>,
    all: Percentiles,
) -> StatsTable {
    let mut total = Sums::default();
    let rows = groups
        .into_iter()
        .map(|GroupSums { g, sums }| {
            total.add(&sums);
            let latency = latency.get(&g).map(Histogram::percentiles);
            StatsRow::new(g, &sums, latency.unwrap_or_default())
        })
        .collect();
    StatsTable {
        rows,
        total: StatsRow::new("total".to_owned(), &total, all),
    }
}

/// Per model over `window`, busiest first: the sums from the rollups; the percentiles from the
/// window's rows put in the rollups' bins (the rollups have no histogram per model), and the
/// total's from the rollups' histograms, as the API reads them.
async fn per_model(db: &Db, window: Window) -> Result<StatsTable, AnalyticsError> {
    let mut groups: Vec<GroupSums> = sqlx::query_as(&format!(
        "SELECT key AS g, {SUM_COLUMNS} FROM {} GROUP BY key",
        Window::rows(
            "rollup_hourly",
            "rollup_daily",
            &format!("AND dim = {DIM_MODEL}")
        )
    ))
    .bind(window.hours_from)
    .bind(window.days_from)
    .fetch_all(db.pool())
    .await?;
    // Rows from the window's first hour on are exactly the rows its rollups count.
    let latencies: Vec<GroupBin> = sqlx::query_as(
        "SELECT coalesce(model, '') AS g, latency_ms AS bin, count(*) AS n FROM requests \
         WHERE started_at >= ?1 GROUP BY g, latency_ms",
    )
    .bind(window.hours_from)
    .fetch_all(db.pool())
    .await?;
    let mut latency: HashMap<String, Histogram> = HashMap::new();
    for GroupBin {
        g,
        bin: latency_ms,
        n,
    } in latencies
    {
        let name = model_name(g);
        latency
            .entry(name)
            .or_default()
            .add(rollups::bin(latency_ms), n);
    }
    for group in &mut groups {
        group.g = model_name(std::mem::take(&mut group.g));
    }
    groups.sort_by(|a, b| {
        b.sums
            .requests
            .cmp(&a.sums.requests)
            .then_with(|| a.g.cmp(&b.g))
    });
    let (all, _ttfb) = percentiles_in(db, window).await?;
    Ok(table(groups, &latency, all))
}

/// A model as the table shows it: `(none)` for requests without one.
fn model_name(model: String) -> String {
    if model.is_empty() {
        "(none)".to_owned()
    } else {
        model
    }
}

/// The zone's offset from UTC at `at`, in milliseconds (0 for UTC), as SQLite's `localtime`
/// computes it: how the log shows its times in the same zone as the stats group their days.
pub async fn utc_offset_ms(db: &Db, zone: Zone, at: Millis) -> Result<Millis, AnalyticsError> {
    match zone {
        Zone::Utc => Ok(0),
        Zone::Local => {
            let seconds: i64 = sqlx::query_scalar(
                "SELECT CAST(strftime('%s', ?1 / 1000, 'unixepoch', 'localtime') AS INTEGER) \
                 - ?1 / 1000",
            )
            .bind(at)
            .fetch_one(db.pool())
            .await?;
            Ok(seconds * 1000)
        }
    }
}

/// Which requests `logs` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only requests that did not succeed.
    pub errors_only: bool,
    /// A model name or the start of one (`claude-sonnet` matches every Sonnet).
    pub model: Option<String>,
    /// An account name, exactly.
    pub account: Option<String>,
    /// Only requests started at or after this time.
    pub since: Option<Millis>,
    /// Only requests made with this client key (its id, as rows record it).
    pub client_key: Option<String>,
}

/// One request as the log shows it. It also reads the `request_finished` events of a
/// server's live feed (`GET /api/requests/stream`), whose JSON has these fields and more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the order rows were recorded (SQLite's rowid); what following resumes
    /// from. 0 for an entry from a live feed, which has no row yet.
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub started_at: Millis,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub account: Option<String>,
    pub status: i64,
    pub success: bool,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub streamed: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    /// Server tools' calls (absent in older feeds); searches are in `cost_usd`.
    #[serde(default)]
    pub web_search_requests: i64,
    #[serde(default)]
    pub web_fetch_requests: i64,
    /// The client key's id, as rows record it (absent in older feeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Why the request went to its account (docs/routing.md; absent in older rows and feeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

impl LogFilter {
    /// Whether `entry` passes the filter: the rule of [`LogFilter::request_filter`], for
    /// entries that come from a live feed rather than the database.
    pub fn matches(&self, entry: &LogEntry) -> bool {
        (!self.errors_only || !entry.success)
            && self.model.as_deref().is_none_or(|prefix| {
                entry
                    .model
                    .as_deref()
                    .is_some_and(|model| model.starts_with(prefix))
            })
            && self
                .account
                .as_deref()
                .is_none_or(|account| entry.account.as_deref() == Some(account))
            && self.since.is_none_or(|since| entry.started_at >= since)
            && self
                .client_key
                .as_deref()
                .is_none_or(|key| entry.client_key.as_deref() == Some(key))
    }

    /// The filter as the request listing (`storage::requests::list`) takes it. The account is
    /// matched by the name recorded on each row, as [`LogFilter::matches`] can match it.
    pub fn request_filter(&self) -> RequestFilter {
        RequestFilter {
            model: self.model.clone().map(ModelFilter::StartsWith),
            account: self.account.clone().map(AccountFilter::Recorded),
            status: self.errors_only.then_some(StatusFilter::Error),
            since: self.since,
            until: None,
            client_key: self.client_key.clone(),
        }
    }
}

impl From<Listed> for LogEntry {
    fn from(Listed { seq, record: r }: Listed) -> LogEntry {
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        LogEntry {
            seq,
            id: r.id,
            started_at: r.started_at,
            method: r.method,
            path: r.path,
            model: r.model,
            account: r.account_name,
            status: i64::from(r.status),
            success: r.success,
            error_type: r.error_type,
            error_message: r.error_message,
            attempts: i64::from(r.attempts),
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            streamed: r.streamed,
            input_tokens: tokens(r.usage.input_tokens),
            output_tokens: tokens(r.usage.output_tokens),
            cache_read_tokens: tokens(r.usage.cache_read_input_tokens),
            cache_write_tokens: tokens(r.usage.cache_creation_input_tokens),
            cost_usd: r.cost_usd,
            web_search_requests: tokens(r.usage.web_search_requests),
            web_fetch_requests: tokens(r.usage.web_fetch_requests),
            client_key: r.client_key,
            route: r.route.map(Explanation::into_text),
        }
    }
}

/// What `doctor` reads about the database file itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseFacts {
    /// Applied migrations, in order (opening the database applies pending ones).
    pub migrations: Vec<i64>,
    /// `PRAGMA integrity_check`: `["ok"]` for a sound file, else one line per problem.
    pub integrity: Vec<String>,
    pub request_rows: i64,
}

/// Reads the applied migrations, runs SQLite's integrity check and counts request rows.
pub async fn database_facts(db: &Db) -> Result<DatabaseFacts, AnalyticsError> {
    let migrations = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(db.pool())
        .await?;
    let integrity = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(db.pool())
        .await?;
    let request_rows = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(db.pool())
        .await?;
    Ok(DatabaseFacts {
        migrations,
        integrity,
        request_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccflare_core::record::RequestRecord;
    use ccflare_core::usage::Usage;
    use ccflare_storage::Writer;
    use ccflare_storage::requests::{self, Order};

    /// 2026-11-26T10:00:00Z.
    const NOW: Millis = 1_795_687_200_000;
    const MIN: Millis = 60_000;

    struct Row {
        at: Millis,
        model: &'static str,
        account: &'static str,
        latency: i64,
        ok: bool,
    }

    fn row(at: Millis, model: &'static str, latency: i64, ok: bool) -> Row {
        Row {
            at,
            model,
            account: "one",
            latency,
            ok,
        }
    }

    async fn db_with(rows: &[Row]) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("s.db")).await.unwrap();
        let writer = Writer::spawn(db.clone());
        let handle = writer.handle();
        for (i, r) in rows.iter().enumerate() {
            handle.record(RequestRecord {
                id: format!("r{i}"),
                started_at: r.at,
                method: "POST".into(),
                path: "/v1/messages".into(),
                model: Some(r.model.into()),
                account_name: Some(r.account.into()),
                status: if r.ok { 200 } else { 529 },
                success: r.ok,
                error_type: (!r.ok).then(|| "overloaded_error".into()),
                latency_ms: r.latency,
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 20,
                    cache_read_input_tokens: 30,
                    cache_creation_input_tokens: 40,
                    ..Default::default()
                },
                cost_usd: 0.25,
                ..Default::default()
            });
        }
        writer.close().await;
        (dir, db)
    }

    #[tokio::test]
    async fn daily_rows_are_whole_days_with_binned_percentiles_of_every_request() {
        let mut rows: Vec<Row> = (1..=20)
            .map(|i| row(NOW - i * MIN, "claude-haiku-4-5", i * 100, true))
            .collect();
        rows.push(row(NOW - 5 * MIN, "claude-haiku-4-5", 1, false));
        rows.push(row(NOW - DAY_MS, "claude-sonnet-4-5", 700, true));
        // Eight days ago: outside a seven-day table.
        rows.push(row(NOW - 8 * DAY_MS, "claude-sonnet-4-5", 700, true));
        let (_dir, db) = db_with(&rows).await;
        let table = stats(&db, Breakdown::Daily { days: 7 }, Zone::Utc, NOW)
            .await
            .unwrap();
        let keys: Vec<_> = table.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["2026-11-25", "2026-11-26"]);
        let today = &table.rows[1];
        assert_eq!((today.requests, today.errors), (21, 1));
        assert_eq!(
            (
                today.input_tokens,
                today.output_tokens,
                today.cache_read_tokens
            ),
            (210, 420, 630)
        );
        assert_eq!(today.cache_write_tokens, 840);
        // Nearest rank over all 21 requests (1 ms, then 100..2000): the 11th (1000 ms) and the
        // 20th (1900 ms), as their histogram bins report them: [992, 1023] and [1856, 1919].
        assert_eq!((today.p50_ms, today.p95_ms), (Some(1007), Some(1887)));
        assert!((today.cost_usd - 5.25).abs() < 1e-9);
        assert_eq!((table.total.requests, table.total.errors), (22, 1));
        assert_eq!(table.total.key, "total");

        let one_day = stats(&db, Breakdown::Daily { days: 1 }, Zone::Utc, NOW)
            .await
            .unwrap();
        assert_eq!(one_day.rows.len(), 1);
        assert_eq!(one_day.total.requests, 21);
    }

    #[tokio::test]
    async fn hourly_and_model_breakdowns() {
        let (_dir, db) = db_with(&[
            row(NOW - 10 * MIN, "claude-haiku-4-5", 100, true),
            row(NOW - 70 * MIN, "claude-sonnet-4-5", 200, true),
            row(NOW - 71 * MIN, "claude-sonnet-4-5", 300, false),
            row(NOW - 5 * HOUR_MS, "claude-opus-4-1", 400, true),
        ])
        .await;
        let hourly = stats(&db, Breakdown::Hourly { hours: 3 }, Zone::Utc, NOW)
            .await
            .unwrap();
        let keys: Vec<_> = hourly.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["2026-11-26 08:00", "2026-11-26 09:00"]);
        assert_eq!(hourly.total.requests, 3);
        assert_eq!(hourly.rows[0].error_rate(), 0.5);

        let models = stats(&db, Breakdown::Models { since: 0 }, Zone::Utc, NOW)
            .await
            .unwrap();
        let keys: Vec<_> = models
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.requests))
            .collect();
        assert_eq!(
            keys,
            [
                ("claude-sonnet-4-5", 2),
                ("claude-haiku-4-5", 1),
                ("claude-opus-4-1", 1)
            ]
        );
        assert_eq!(models.total.requests, 4);
        let empty = stats(&db, Breakdown::Models { since: NOW }, Zone::Utc, NOW)
            .await
            .unwrap();
        assert!(empty.rows.is_empty());
        assert_eq!((empty.total.requests, empty.total.p50_ms), (0, None));
    }

    async fn log(db: &Db, filter: &LogFilter, order: Order, limit: u32) -> Vec<LogEntry> {
        let page = requests::list(db, &filter.request_filter(), order, limit)
            .await
            .unwrap();
        page.requests.into_iter().map(LogEntry::from).collect()
    }

    #[tokio::test]
    async fn the_log_filters_and_follows_in_recording_order() {
        let mut rows = vec![
            row(NOW - 3 * MIN, "claude-haiku-4-5", 100, true),
            row(NOW - 2 * MIN, "claude-sonnet-4-5", 100, false),
            row(NOW - MIN, "claude-sonnet-4-5-20250929", 100, true),
        ];
        rows[2].account = "two";
        let (_dir, db) = db_with(&rows).await;
        let all = LogFilter::default();
        let ids = |entries: Vec<LogEntry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
        let last = Order::LastRecorded;
        assert_eq!(ids(log(&db, &all, last.clone(), 2).await), ["r1", "r2"]);
        let sonnet = LogFilter {
            model: Some("claude-sonnet".into()),
            ..Default::default()
        };
        assert_eq!(ids(log(&db, &sonnet, last.clone(), 10).await), ["r1", "r2"]);
        let errors = LogFilter {
            errors_only: true,
            ..Default::default()
        };
        assert_eq!(ids(log(&db, &errors, last.clone(), 10).await), ["r1"]);
        let two = LogFilter {
            account: Some("two".into()),
            since: Some(NOW - 90_000),
            ..Default::default()
        };
        assert_eq!(ids(log(&db, &two, last.clone(), 10).await), ["r2"]);

        // The in-memory rule agrees with the SQL, filter by filter.
        let every = log(&db, &all, last.clone(), 10).await;
        for filter in [&all, &sonnet, &errors, &two] {
            let by_sql = ids(log(&db, filter, last.clone(), 10).await);
            let by_rule = ids(every
                .iter()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect());
            assert_eq!(by_sql, by_rule, "{filter:?}");
        }

        let newest = log(&db, &all, last, 1).await;
        assert_eq!(requests::last_seq(&db).await.unwrap(), newest[0].seq);
        let after = Order::RecordedAfter(newest[0].seq - 2);
        assert_eq!(ids(log(&db, &all, after, 10).await), ["r1", "r2"]);
        let after_newest = Order::RecordedAfter(newest[0].seq);
        assert!(log(&db, &all, after_newest, 10).await.is_empty());
    }

    #[tokio::test]
    async fn utc_has_no_offset_and_local_time_is_whole_minutes() {
        let (_dir, db) = db_with(&[]).await;
        assert_eq!(utc_offset_ms(&db, Zone::Utc, NOW).await.unwrap(), 0);
        let local = utc_offset_ms(&db, Zone::Local, NOW).await.unwrap();
        assert_eq!(local % 60_000, 0);
        assert!(local.abs() <= 14 * HOUR_MS, "{local}");
    }

    #[tokio::test]
    async fn database_facts_of_a_fresh_file() {
        let (_dir, db) = db_with(&[]).await;
        let facts = database_facts(&db).await.unwrap();
        assert_eq!(facts.integrity, ["ok"]);
        assert_eq!(facts.request_rows, 0);
        assert!(
            facts.migrations.starts_with(&[1, 2]),
            "{:?}",
            facts.migrations
        );
    }
}
