//! The figures behind `/api/analytics?range=…` and `/api/stats`: totals, breakdowns per model,
//! account and client key, error counts by type, latency and time-to-first-byte percentiles, and
//! a time series — all read from the rollups the writer keeps (`storage::rollups`), never from a
//! scan of the request rows, so each query touches a few thousand rows however many requests
//! are recorded.
//!
//! **Windows.** A range covers `[now - range, now]`. The time series covers exactly that (in
//! minute buckets for `1h`/`6h`). Totals, breakdowns and percentiles come from hourly and daily
//! rollups and so cover whole hours: from the start of the hour holding `now - range`
//! (`rollup_since` in the report), at most an hour more than the range.

use crate::AnalyticsError;
use ccflare_core::Millis;
use ccflare_storage::Db;
use ccflare_storage::rollups::{
    self, DAY_MS, DIM_ACCOUNT, DIM_ALL, DIM_CLIENT_KEY, DIM_ERROR, DIM_MODEL, HOUR_MS,
    METRIC_LATENCY, METRIC_TTFB, MINUTE_MS, SUM_COLUMNS, Sums, bucket,
};
use serde::Serialize;
use sqlx::FromRow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A time range of `/api/analytics?range=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Hour,
    SixHours,
    Day,
    Week,
    Month,
}

/// Where a range's time series comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeriesSource {
    Minutes,
    Hours,
    Days,
}

impl Range {
    pub const ALL: [Range; 5] = [
        Range::Hour,
        Range::SixHours,
        Range::Day,
        Range::Week,
        Range::Month,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::SixHours => "6h",
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
        }
    }

    pub fn duration_ms(self) -> Millis {
        match self {
            Range::Hour => HOUR_MS,
            Range::SixHours => 6 * HOUR_MS,
            Range::Day => DAY_MS,
            Range::Week => 7 * DAY_MS,
            Range::Month => 30 * DAY_MS,
        }
    }

    /// The width of one point of the time series: about 25 to 75 points per range.
    pub fn bucket_ms(self) -> Millis {
        match self {
            Range::Hour => MINUTE_MS,
            Range::SixHours => 5 * MINUTE_MS,
            Range::Day => HOUR_MS,
            Range::Week => 6 * HOUR_MS,
            Range::Month => DAY_MS,
        }
    }

    fn series_source(self) -> SeriesSource {
        match self {
            Range::Hour | Range::SixHours => SeriesSource::Minutes,
            Range::Day | Range::Week => SeriesSource::Hours,
            Range::Month => SeriesSource::Days,
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Range {
    type Err = ();
    fn from_str(s: &str) -> Result<Range, ()> {
        Range::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// Sums over a set of requests, and the ratios derived from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub successes: i64,
    pub errors: i64,
    /// Successes over requests; 0 without requests.
    pub success_rate: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// Input of all kinds plus output.
    pub total_tokens: i64,
    pub cost_usd: f64,
    /// Requests whose model was not in the price table, priced by family.
    pub cost_estimated_requests: i64,
    /// Mean latency in milliseconds.
    pub average_response_time: f64,
    /// Mean time to first byte in milliseconds, over the requests that had a first byte.
    pub average_ttfb: Option<f64>,
    /// Output tokens over generation time (after the first byte), summed over the requests that
    /// had both: a ratio of sums, so long answers weigh by their length.
    pub output_tokens_per_second: Option<f64>,
    /// Cache reads over all input (plain input, cache reads and cache writes).
    pub cache_hit_rate: Option<f64>,
    /// Requests whose session moved to another account (its pin did not hold: a rate limit,
    /// a failover, `headroom` moving it; docs/routing.md).
    pub session_moves: i64,
    /// The cache-creation tokens of those requests: prompt cache re-created because of moves.
    pub moved_cache_write_tokens: i64,
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

/// The ratios of a set of requests, derived from the rollups' raw sums.
impl From<&Sums> for Totals {
    fn from(sums: &Sums) -> Totals {
        let all_input =
            (sums.input_tokens + sums.cache_read_tokens + sums.cache_write_tokens) as f64;
        Totals {
            requests: sums.requests,
            successes: sums.successes,
            errors: sums.requests - sums.successes,
            success_rate: ratio(sums.successes as f64, sums.requests as f64).unwrap_or(0.0),
            input_tokens: sums.input_tokens,
            output_tokens: sums.output_tokens,
            cache_read_tokens: sums.cache_read_tokens,
            cache_write_tokens: sums.cache_write_tokens,
            total_tokens: sums.input_tokens
                + sums.output_tokens
                + sums.cache_read_tokens
                + sums.cache_write_tokens,
            cost_usd: sums.cost_usd,
            cost_estimated_requests: sums.cost_estimated,
            average_response_time: ratio(sums.latency_ms_sum as f64, sums.requests as f64)
                .unwrap_or(0.0),
            average_ttfb: ratio(sums.ttfb_ms_sum as f64, sums.ttfb_count as f64),
            output_tokens_per_second: ratio(
                sums.generated_tokens as f64 * 1000.0,
                sums.generating_ms_sum as f64,
            ),
            cache_hit_rate: ratio(sums.cache_read_tokens as f64, all_input),
            session_moves: sums.moves,
            moved_cache_write_tokens: sums.moved_cache_write_tokens,
        }
    }
}

/// One group of a breakdown: a model, an account or a client key, and its totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The model, account or client key; `null` for requests without one (e.g. `/v1/models`
    /// has no model; a request no account could take has no account).
    pub name: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Failed requests of one kind: the error type recorded (the upstream's `error.type` or
/// ccflare's own, e.g. `client_closed`), else `http_<status>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorCount {
    pub error_type: String,
    pub count: i64,
}

/// Nearest-rank percentiles in milliseconds (`null` without samples). Exact below 128 ms, else
/// within 1/32 of the true value (the rollups keep latencies in histogram bins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: i64,
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub p99: Option<i64>,
}

impl Percentiles {
    /// Nearest rank: the smallest value with at least p of the samples at or below it.
    pub fn from_histogram(bins: &[(i64, i64)]) -> Percentiles {
        let samples: i64 = bins.iter().map(|(_, count)| *count).sum();
        // p in thousandths, so the rank is exact integer arithmetic (0.95 * n in floating
        // point can land just above an integer and round the rank up by one).
        let at = |per_mille: i64| -> Option<i64> {
            if samples == 0 {
                return None;
            }
            let rank = ((per_mille * samples + 999) / 1000).clamp(1, samples);
            let mut seen = 0;
            for (bin, count) in bins {
                seen += count;
                if seen >= rank {
                    return Some(rollups::bin_value(*bin));
                }
            }
            None
        };
        Percentiles {
            samples,
            p50: at(500),
            p95: at(950),
            p99: at(990),
        }
    }
}

/// One point of a time series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    /// Start of the bucket, epoch milliseconds.
    pub time: Millis,
    pub requests: i64,
    pub errors: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    /// Mean latency in milliseconds; 0 without requests.
    pub average_response_time: f64,
    /// Latency p50 and p95 of the point's requests, by the definition of [`Percentiles`]
    /// (nearest rank, exact below 128 ms, within 1/32 above); `null` without requests.
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

/// Everything `/api/analytics?range=` adds to the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub range: &'static str,
    /// `now - range`.
    pub since: Millis,
    pub until: Millis,
    /// Start of the first whole hour counted in totals, breakdowns and percentiles.
    pub rollup_since: Millis,
    /// Width of one point of `series`.
    pub bucket_ms: Millis,
    pub totals: Totals,
    pub latency_ms: Percentiles,
    pub ttfb_ms: Percentiles,
    pub series: Vec<Point>,
    /// Busiest first.
    pub models: Vec<Group>,
    pub accounts: Vec<Group>,
    pub client_keys: Vec<Group>,
    /// Most frequent first.
    pub errors: Vec<ErrorCount>,
    pub requests_last_minute: i64,
    pub requests_last_hour: i64,
}

/// Which rollup rows make up a window: hourly rows in `[hours_from, days_from)`, daily rows
/// from `days_from` on. Whole days come from the daily table, so a 30-day window reads about
/// 30 days' worth of groups instead of 720 hours' worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) hours_from: Millis,
    pub(crate) days_from: Millis,
}

impl Window {
    pub(crate) fn since(start: Option<Millis>) -> Window {
        match start {
            None => Window {
                hours_from: Millis::MIN,
                days_from: Millis::MIN,
            },
            Some(start) => {
                let hours_from = bucket(start, HOUR_MS);
                let days_from = bucket(hours_from, DAY_MS);
                let days_from = if days_from == hours_from {
                    days_from
                } else {
                    days_from + DAY_MS
                };
                Window {
                    hours_from,
                    days_from,
                }
            }
        }
    }

    /// A subquery over the window's rows of `hourly` and `daily` (table names are constants),
    /// binding `?1` = hours_from and `?2` = days_from.
    pub(crate) fn rows(hourly: &str, daily: &str, extra: &str) -> String {
        format!(
            "(SELECT * FROM {hourly} WHERE bucket >= ?1 AND bucket < ?2 {extra} \
             UNION ALL SELECT * FROM {daily} WHERE bucket >= ?2 {extra})"
        )
    }
}

/// Everything the rollups say about a window, from one scan grouped by every dimension.
#[derive(Debug, Clone, Default, PartialEq)]
struct Breakdowns {
    totals: Totals,
    models: Vec<Group>,
    accounts: Vec<Group>,
    client_keys: Vec<Group>,
    errors: Vec<ErrorCount>,
}

/// Sums per key, busiest first (then by name), as [`Group`]s.
fn ranked(groups: HashMap<Option<String>, Sums>) -> Vec<Group> {
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(name, sums)| Group {
            name,
            totals: Totals::from(&sums),
        })
        .collect();
    groups.sort_by(|a, b| {
        b.totals
            .requests
            .cmp(&a.totals.requests)
            .then_with(|| a.name.cmp(&b.name))
    });
    groups
}

/// One group's sums over a window, read with [`SUM_COLUMNS`].
#[derive(FromRow)]
struct DimSums {
    dim: i64,
    key: String,
    /// For an account, the name it was last recorded with; absent where not selected.
    #[sqlx(default)]
    label: String,
    #[sqlx(flatten)]
    sums: Sums,
}

async fn breakdowns(db: &Db, window: Window) -> Result<Breakdowns, AnalyticsError> {
    // SQLite takes the bare `label` from the row holding max(bucket): for an account, the name
    // it was last recorded with (used for accounts removed since).
    let sql = format!(
        "SELECT dim, key, label, max(bucket) AS latest, {SUM_COLUMNS} FROM {} GROUP BY dim, key",
        Window::rows("rollup_hourly", "rollup_daily", "")
    );
    let rows: Vec<DimSums> = sqlx::query_as(&sql)
        .bind(window.hours_from)
        .bind(window.days_from)
        .fetch_all(db.pool())
        .await?;
    // Accounts are named as they are called now.
    let names: HashMap<String, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT id, name FROM accounts")
            .fetch_all(db.pool())
            .await?
            .into_iter()
            .map(|(id, name)| (id.to_string(), name))
            .collect();

    let mut total = Sums::default();
    let mut models: HashMap<Option<String>, Sums> = HashMap::new();
    let mut accounts: HashMap<Option<String>, Sums> = HashMap::new();
    let mut client_keys: HashMap<Option<String>, Sums> = HashMap::new();
    let mut errors = Vec::new();
    let some = |text: String| (!text.is_empty()).then_some(text);
    for DimSums {
        dim,
        key,
        label,
        sums,
    } in rows
    {
        match dim {
            DIM_ALL => total.add(&sums),
            DIM_MODEL => models.entry(some(key)).or_default().add(&sums),
            DIM_ACCOUNT => {
                let name = match names.get(&key) {
                    Some(current) => Some(current.clone()),
                    None => some(label),
                };
                // Two ids can share a name (one removed, a new one added under its name).
                accounts.entry(name).or_default().add(&sums);
            }
            DIM_CLIENT_KEY => client_keys.entry(some(key)).or_default().add(&sums),
            DIM_ERROR => errors.push(ErrorCount {
                error_type: key,
                count: sums.requests,
            }),
            _ => {}
        }
    }
    errors.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.error_type.cmp(&b.error_type))
    });
    Ok(Breakdowns {
        totals: Totals::from(&total),
        models: ranked(models),
        accounts: ranked(accounts),
        client_keys: ranked(client_keys),
        errors,
    })
}

/// Latency and time-to-first-byte percentiles over a window, from one scan of the histograms.
pub(crate) async fn percentiles_in(
    db: &Db,
    window: Window,
) -> Result<(Percentiles, Percentiles), AnalyticsError> {
    let sql = format!(
        "SELECT metric, bin, sum(count) AS n FROM {} GROUP BY metric, bin ORDER BY metric, bin",
        Window::rows("latency_hourly", "latency_daily", "")
    );
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&sql)
        .bind(window.hours_from)
        .bind(window.days_from)
        .fetch_all(db.pool())
        .await?;
    let mut latency = Vec::new();
    let mut ttfb = Vec::new();
    for (metric, bin, n) in rows {
        let bin = (bin, n);
        match metric {
            METRIC_LATENCY => latency.push(bin),
            METRIC_TTFB => ttfb.push(bin),
            _ => {}
        }
    }
    Ok((
        Percentiles::from_histogram(&latency),
        Percentiles::from_histogram(&ttfb),
    ))
}

/// Requests started at or after `since`, exactly: whole minutes from the minute rollups, and
/// the rows of the one partial minute at the start counted directly (at most a minute of rows).
pub(crate) async fn requests_since(db: &Db, since: Millis) -> Result<i64, AnalyticsError> {
    let first_whole = bucket(since + MINUTE_MS - 1, MINUTE_MS);
    let partial: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests WHERE started_at >= ? AND started_at < ?",
    )
    .bind(since)
    .bind(first_whole)
    .fetch_one(db.pool())
    .await?;
    let whole: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(requests), 0) FROM rollup_minutely WHERE minute >= ?",
    )
    .bind(first_whole)
    .fetch_one(db.pool())
    .await?;
    Ok(partial + whole)
}

/// One bucket of a series as `series` selects it.
#[derive(FromRow)]
struct SeriesRow {
    t: Millis,
    requests: i64,
    successes: i64,
    tokens: i64,
    cost: f64,
    latency: i64,
}

async fn series(db: &Db, range: Range, now: Millis) -> Result<Vec<Point>, AnalyticsError> {
    let width = range.bucket_ms();
    let first = bucket(now - range.duration_ms(), width);
    let last = bucket(now, width);
    let sql = match range.series_source() {
        SeriesSource::Minutes => "SELECT (minute / ?1) * ?1 AS t, sum(requests) AS requests, \
             sum(successes) AS successes, \
             sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS tokens, \
             sum(cost_usd) AS cost, sum(latency_ms_sum) AS latency \
             FROM rollup_minutely WHERE minute >= ?2 GROUP BY t"
            .to_owned(),
        source => {
            let table = if source == SeriesSource::Hours {
                "rollup_hourly"
            } else {
                "rollup_daily"
            };
            format!(
                "SELECT (bucket / ?1) * ?1 AS t, sum(requests) AS requests, \
                 sum(successes) AS successes, \
                 sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) \
                 AS tokens, sum(cost_usd) AS cost, sum(latency_ms_sum) AS latency \
                 FROM {table} WHERE bucket >= ?2 AND dim = {DIM_ALL} GROUP BY t"
            )
        }
    };
    let rows: Vec<SeriesRow> = sqlx::query_as(&sql)
        .bind(width)
        .bind(first)
        .fetch_all(db.pool())
        .await?;
    let mut points: Vec<Point> = (0..=((last - first) / width))
        .map(|i| Point {
            time: first + i * width,
            ..Point::default()
        })
        .collect();
    // A row stamped in the future (a clock that stepped back) has no point.
    let index = |t: Millis| usize::try_from((t - first) / width).ok();
    for row in rows {
        let Some(point) = index(row.t).and_then(|i| points.get_mut(i)) else {
            continue;
        };
        *point = Point {
            time: point.time,
            requests: row.requests,
            errors: row.requests - row.successes,
            total_tokens: row.tokens,
            cost_usd: row.cost,
            average_response_time: ratio(row.latency as f64, row.requests as f64).unwrap_or(0.0),
            ..Point::default()
        };
    }
    // Each point's percentiles from its histogram: the bins of the minutes, hours or days it
    // spans, summed (rows come ordered by point, then bin).
    let (time, histogram) = match range.series_source() {
        SeriesSource::Minutes => ("minute", "latency_minutely WHERE minute >= ?2".to_owned()),
        source => (
            "bucket",
            format!(
                "{} WHERE bucket >= ?2 AND metric = {METRIC_LATENCY}",
                if source == SeriesSource::Hours {
                    "latency_hourly"
                } else {
                    "latency_daily"
                }
            ),
        ),
    };
    let bins: Vec<(Millis, i64, i64)> = sqlx::query_as(&format!(
        "SELECT ({time} / ?1) * ?1 AS t, bin, sum(count) FROM {histogram} \
         GROUP BY t, bin ORDER BY t, bin"
    ))
    .bind(width)
    .bind(first)
    .fetch_all(db.pool())
    .await?;
    for chunk in bins.chunk_by(|a, b| a.0 == b.0) {
        let Some(point) = index(chunk[0].0).and_then(|i| points.get_mut(i)) else {
            continue;
        };
        let histogram: Vec<(i64, i64)> = chunk.iter().map(|&(_, bin, n)| (bin, n)).collect();
        let percentiles = Percentiles::from_histogram(&histogram);
        point.latency_p50_ms = percentiles.p50;
        point.latency_p95_ms = percentiles.p95;
    }
    Ok(points)
}

/// The figures of one range, ending at `now`.
pub async fn report(db: &Db, now: Millis, range: Range) -> Result<Report, AnalyticsError> {
    let since = now - range.duration_ms();
    let window = Window::since(Some(since));
    let groups = breakdowns(db, window).await?;
    let (latency_ms, ttfb_ms) = percentiles_in(db, window).await?;
    Ok(Report {
        range: range.as_str(),
        since,
        until: now,
        rollup_since: window.hours_from,
        bucket_ms: range.bucket_ms(),
        totals: groups.totals,
        latency_ms,
        ttfb_ms,
        series: series(db, range, now).await?,
        models: groups.models,
        accounts: groups.accounts,
        client_keys: groups.client_keys,
        errors: groups.errors,
        requests_last_minute: requests_since(db, now - MINUTE_MS).await?,
        requests_last_hour: requests_since(db, now - HOUR_MS).await?,
    })
}

/// All-time figures: totals, per account and per model (`/api/stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllTime {
    pub totals: Totals,
    pub latency_ms: Percentiles,
    pub ttfb_ms: Percentiles,
    pub accounts: Vec<Group>,
    pub models: Vec<Group>,
    pub client_keys: Vec<Group>,
    pub errors: Vec<ErrorCount>,
}

/// Every recorded request's totals, per account, model and client key.
pub async fn all_time(db: &Db) -> Result<AllTime, AnalyticsError> {
    let window = Window::since(None);
    let groups = breakdowns(db, window).await?;
    let (latency_ms, ttfb_ms) = percentiles_in(db, window).await?;
    Ok(AllTime {
        totals: groups.totals,
        latency_ms,
        ttfb_ms,
        accounts: groups.accounts,
        models: groups.models,
        client_keys: groups.client_keys,
        errors: groups.errors,
    })
}

/// All-time totals and the busiest `limit` models with their request counts (the seed's
/// overview), from one scan of the daily rollups.
pub(crate) async fn all_time_overview(
    db: &Db,
    limit: usize,
) -> Result<(Totals, Vec<(String, i64)>), AnalyticsError> {
    let rows: Vec<DimSums> = sqlx::query_as(&format!(
        "SELECT dim, key, {SUM_COLUMNS} FROM rollup_daily WHERE dim IN ({DIM_ALL}, {DIM_MODEL}) \
         GROUP BY dim, key"
    ))
    .fetch_all(db.pool())
    .await?;
    let mut total = Sums::default();
    let mut models = Vec::new();
    for DimSums { dim, key, sums, .. } in rows {
        match dim {
            DIM_ALL => total.add(&sums),
            _ if !key.is_empty() => models.push((key, sums.requests)),
            _ => {}
        }
    }
    models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    models.truncate(limit);
    Ok((Totals::from(&total), models))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_on_exact_bins() {
        // 1..=100 ms, one sample each: p50 = 50, p95 = 95, p99 = 99.
        let bins: Vec<(i64, i64)> = (1..=100).map(|v| (rollups::bin(v), 1)).collect();
        let p = Percentiles::from_histogram(&bins);
        assert_eq!(
            (p.samples, p.p50, p.p95, p.p99),
            (100, Some(50), Some(95), Some(99))
        );
        assert_eq!(Percentiles::from_histogram(&[]).p50, None);
    }

    #[test]
    fn windows_take_whole_days_from_the_daily_table() {
        let day = 20_000 * DAY_MS;
        let w = Window::since(Some(day + 5 * HOUR_MS + 17));
        assert_eq!(w.hours_from, day + 5 * HOUR_MS);
        assert_eq!(w.days_from, day + DAY_MS);
        let aligned = Window::since(Some(day));
        assert_eq!((aligned.hours_from, aligned.days_from), (day, day));
    }

    #[test]
    fn ranges_parse_and_have_25_to_75_points() {
        for range in Range::ALL {
            assert_eq!(range.as_str().parse(), Ok(range));
            let points = range.duration_ms() / range.bucket_ms();
            assert!((24..=72).contains(&points), "{range}: {points}");
        }
        assert!("2h".parse::<Range>().is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Latencies of every magnitude a request can have.
        fn latency() -> impl Strategy<Value = i64> {
            prop_oneof![
                0i64..200,
                200i64..20_000,
                20_000i64..10_000_000,
                (0u32..63).prop_map(|bits| 1i64 << bits),
            ]
        }

        /// The histogram the rollups would hold for `samples`: (bin, count), by bin.
        fn histogram(samples: &[i64]) -> Vec<(i64, i64)> {
            let mut counts = std::collections::BTreeMap::new();
            for &value in samples {
                *counts.entry(rollups::bin(value)).or_insert(0i64) += 1;
            }
            counts.into_iter().collect()
        }

        proptest! {
            #[test]
            fn percentiles_are_the_nearest_rank_sample_as_its_bin_reports_it(
                samples in proptest::collection::vec(latency(), 1..200),
            ) {
                let p = Percentiles::from_histogram(&histogram(&samples));
                let mut sorted = samples.clone();
                sorted.sort_unstable();
                let n = sorted.len();
                prop_assert_eq!(p.samples, n as i64);
                for (per_mille, got) in [(500, p.p50), (950, p.p95), (990, p.p99)] {
                    // The smallest sample with at least p of the samples at or below it.
                    let rank = (per_mille * n).div_ceil(1000).max(1);
                    let exact = sorted[rank - 1];
                    prop_assert_eq!(got, Some(rollups::bin_value(rollups::bin(exact))));
                    let error = (i128::from(got.unwrap()) - i128::from(exact)).abs();
                    prop_assert!(error * 32 <= i128::from(exact), "{} for {}", got.unwrap(), exact);
                }
                prop_assert!(p.p50 <= p.p95 && p.p95 <= p.p99);
            }

            #[test]
            fn a_window_covers_its_start_in_whole_hours_then_whole_days(
                start in 0i64..4_102_444_800_000,
            ) {
                let w = Window::since(Some(start));
                // Hourly rows from the hour holding the start...
                prop_assert!(w.hours_from <= start && start < w.hours_from + HOUR_MS);
                prop_assert_eq!(w.hours_from % HOUR_MS, 0);
                // ... up to the first whole day, from which daily rows take over: no gap, no
                // overlap, and never more than a day of hourly rows.
                prop_assert_eq!(w.days_from % DAY_MS, 0);
                prop_assert!(w.hours_from <= w.days_from && w.days_from < w.hours_from + DAY_MS);
                prop_assert_eq!((w.days_from - w.hours_from) % HOUR_MS, 0);
            }

            #[test]
            fn every_range_series_has_a_point_for_its_start_and_its_end(
                now in 0i64..4_102_444_800_000,
                range in proptest::sample::select(&Range::ALL[..]),
            ) {
                // As `series` lays its points out.
                let width = range.bucket_ms();
                let first = bucket(now - range.duration_ms(), width);
                let last = bucket(now, width);
                let points = (last - first) / width + 1;
                prop_assert!(first <= now - range.duration_ms() && last <= now && now < last + width);
                prop_assert_eq!((last - first) % width, 0);
                prop_assert!((24..=73).contains(&points), "{} points", points);
            }
        }
    }
}
