//! Rollups: running totals per hour and per day (for all requests, and per model, account,
//! client key and error kind), per minute, and latency histograms per hour and per day
//! (migration 0003). The writer adds every batch of request rows to them in the same
//! transaction as the rows themselves, so they never disagree with the table; analytics reads
//! them instead of scanning millions of rows.
//!
//! Latency histograms use fixed bins: one per millisecond below 128 ms, then 16 bins per
//! doubling, so a percentile read from them is exact below 128 ms and otherwise within 1/32 of
//! the true value (the bin's midpoint is reported; a bin is at most 1/16 as wide as its start).

use crate::db::Db;
use crate::error::StorageError;
use crate::rows::{self, Part, Parts, Query, Rows, Table};
use ccflare_core::Millis;
use ccflare_core::record::RequestRecord;
use foldhash::HashMap;
use sqlx::{FromRow, SqliteConnection};
use std::sync::LazyLock;

pub const MINUTE_MS: Millis = 60_000;
pub const HOUR_MS: Millis = 3_600_000;
pub const DAY_MS: Millis = 86_400_000;

/// Values below this many milliseconds have a bin of their own.
pub const LINEAR_BINS: i64 = 128;
/// Bins per doubling above [`LINEAR_BINS`], as a power of two.
const SUB_BITS: u32 = 4;
const SUB_BINS: i64 = 1 << SUB_BITS;
/// log2 of [`LINEAR_BINS`].
const FIRST_EXPONENT: u32 = 7;

/// Rollup group: every request.
pub const DIM_ALL: i64 = 0;
/// Rollup group: one model (`key` the model id, '' for requests without one).
pub const DIM_MODEL: i64 = 1;
/// Rollup group: one account (`key` its id, "0" for none; `label` its recorded name).
pub const DIM_ACCOUNT: i64 = 2;
/// Rollup group: one client key.
pub const DIM_CLIENT_KEY: i64 = 3;
/// Rollup group: failed requests of one error kind (`key` the error type, else `http_<status>`).
pub const DIM_ERROR: i64 = 4;

/// Histogram metric: total latency.
pub const METRIC_LATENCY: i64 = 0;
/// Histogram metric: time to first byte.
pub const METRIC_TTFB: i64 = 1;

/// The start of the bucket of `size` milliseconds that holds `at` (buckets start at the epoch,
/// so hours and days are UTC). `at` is a clock reading: within ±2^62 ms (146 million years)
/// of the epoch, the start is representable.
pub fn bucket(at: Millis, size: Millis) -> Millis {
    at.div_euclid(size) * size
}

/// The histogram bin of a latency in milliseconds (negative values count as 0).
pub fn bin(value_ms: i64) -> i64 {
    let value = value_ms.max(0);
    if value < LINEAR_BINS {
        return value;
    }
    let exponent = 63 - value.leading_zeros();
    let sub = (value >> (exponent - SUB_BITS)) - SUB_BINS;
    LINEAR_BINS + i64::from(exponent - FIRST_EXPONENT) * SUB_BINS + sub
}

/// The smallest and largest value that falls in `bin`.
pub fn bin_bounds(bin: i64) -> (i64, i64) {
    let bin = bin.max(0);
    if bin < LINEAR_BINS {
        return (bin, bin);
    }
    let above = bin - LINEAR_BINS;
    let shift = (above / SUB_BINS + i64::from(FIRST_EXPONENT) - i64::from(SUB_BITS)).min(58);
    let low = (SUB_BINS + above % SUB_BINS) << shift;
    (low, low + ((1 << shift) - 1))
}

/// The value reported for a bin: its midpoint (exact for the one-value bins below 128 ms).
pub fn bin_value(bin: i64) -> i64 {
    let (low, high) = bin_bounds(bin);
    low + (high - low) / 2
}

/// What the rollups need of one request. The rebuild reads it from the rows with
/// [`SAMPLE_COLUMNS`].
#[derive(Debug, Clone, PartialEq, FromRow)]
struct Sample {
    started_at: Millis,
    model: String,
    account_id: i64,
    account_name: String,
    client_key: String,
    status: i64,
    error_type: String,
    success: bool,
    streamed: bool,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    cost_usd: f64,
    cost_estimated: bool,
    latency_ms: i64,
    ttfb_ms: Option<i64>,
    /// The request's session moved (its `cache_write_tokens` were re-created because of it).
    moved: bool,
}

impl From<&RequestRecord> for Sample {
    fn from(r: &RequestRecord) -> Sample {
        let tokens = |n: u64| n.min(i64::MAX as u64) as i64;
        Sample {
            started_at: r.started_at,
            model: r.model.clone().unwrap_or_default(),
            account_id: r.account_id.map_or(0, |id| id.0),
            account_name: r.account_name.clone().unwrap_or_default(),
            client_key: r.client_key.clone().unwrap_or_default(),
            status: i64::from(r.status),
            error_type: r.error_type.clone().unwrap_or_default(),
            success: r.success,
            streamed: r.streamed,
            input_tokens: tokens(r.usage.input_tokens),
            output_tokens: tokens(r.usage.output_tokens),
            cache_read_tokens: tokens(r.usage.cache_read_input_tokens),
            cache_write_tokens: tokens(r.usage.cache_creation_input_tokens),
            cost_usd: r.cost_usd,
            cost_estimated: r.cost_estimated,
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            moved: r.moved,
        }
    }
}

/// The columns of a request row that make a [`Sample`], NULLs as the record's defaults, but
/// for `moved`.
macro_rules! sample_columns {
    () => {
        "started_at, coalesce(model, '') AS model, \
        coalesce(account_id, 0) AS account_id, coalesce(account_name, '') AS account_name, \
        coalesce(client_key, '') AS client_key, status, coalesce(error_type, '') AS error_type, \
        success, streamed, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
        cost_usd, cost_estimated, latency_ms, ttfb_ms"
    };
}

/// The columns of a request row that make a [`Sample`].
const SAMPLE_COLUMNS: &str = concat!(
    sample_columns!(),
    ", moved_cache_write_tokens IS NOT NULL AS moved"
);

/// The same, for the fills of migrations 0003 and 0005, which run before 0012 added the
/// `moved_cache_write_tokens` column (no request had moved then).
const SAMPLE_COLUMNS_BEFORE_0012: &str = concat!(sample_columns!(), ", 0 AS moved");

/// The sums migration 0012 added to the hourly and daily rollups: the fills of earlier
/// migrations leave them out.
const SUMS_0012: [&str; 2] = ["moves", "moved_cache_write_tokens"];

/// One rollup row's key: the bucket start, the dimension and the group within it.
type GroupKey = (Millis, i64, String);

/// The running sums a rollup row keeps, which add up: the writer adds each request's to the
/// rows of its hour, day and minute, and analytics adds rows up over a window (reading them
/// with [`SUM_COLUMNS`] through `FromRow`). The minute rollup keeps a subset of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, FromRow)]
pub struct Sums {
    pub requests: i64,
    pub successes: i64,
    pub streamed: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    /// Requests priced by family (their model was not in the price table).
    pub cost_estimated: i64,
    pub latency_ms_sum: i64,
    pub ttfb_ms_sum: i64,
    /// Requests that had a first byte.
    pub ttfb_count: i64,
    /// Output tokens of the requests that had both output and generation time after the
    /// first byte, and that time.
    pub generated_tokens: i64,
    pub generating_ms_sum: i64,
    /// Requests whose session moved to another account (migration 0012), and the cache
    /// tokens they wrote: the prompt cache re-created because of the moves.
    pub moves: i64,
    pub moved_cache_write_tokens: i64,
}

/// The columns of a query that sums hourly or daily rollup rows, named as [`Sums`]' fields.
pub const SUM_COLUMNS: &str = "coalesce(sum(requests), 0) AS requests, \
    coalesce(sum(successes), 0) AS successes, \
    coalesce(sum(streamed), 0) AS streamed, \
    coalesce(sum(input_tokens), 0) AS input_tokens, \
    coalesce(sum(output_tokens), 0) AS output_tokens, \
    coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens, \
    coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens, \
    coalesce(sum(cost_usd), 0.0) AS cost_usd, \
    coalesce(sum(cost_estimated), 0) AS cost_estimated, \
    coalesce(sum(latency_ms_sum), 0) AS latency_ms_sum, \
    coalesce(sum(ttfb_ms_sum), 0) AS ttfb_ms_sum, \
    coalesce(sum(ttfb_count), 0) AS ttfb_count, \
    coalesce(sum(generated_tokens), 0) AS generated_tokens, \
    coalesce(sum(generating_ms_sum), 0) AS generating_ms_sum, \
    coalesce(sum(moves), 0) AS moves, \
    coalesce(sum(moved_cache_write_tokens), 0) AS moved_cache_write_tokens";

impl Sums {
    /// One request's share.
    fn of(s: &Sample) -> Sums {
        let generating = s
            .ttfb_ms
            .map(|ttfb| s.latency_ms - ttfb)
            .filter(|ms| *ms > 0 && s.output_tokens > 0);
        Sums {
            requests: 1,
            successes: i64::from(s.success),
            streamed: i64::from(s.streamed),
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cache_read_tokens: s.cache_read_tokens,
            cache_write_tokens: s.cache_write_tokens,
            cost_usd: s.cost_usd,
            cost_estimated: i64::from(s.cost_estimated),
            latency_ms_sum: s.latency_ms,
            ttfb_ms_sum: s.ttfb_ms.unwrap_or(0),
            ttfb_count: i64::from(s.ttfb_ms.is_some()),
            generated_tokens: generating.map_or(0, |_| s.output_tokens),
            generating_ms_sum: generating.unwrap_or(0),
            moves: i64::from(s.moved),
            moved_cache_write_tokens: if s.moved { s.cache_write_tokens } else { 0 },
        }
    }

    /// Every sum with its column name, in the order of the hourly and daily tables; the
    /// minute table keeps those in [`MINUTE_SUMS`].
    fn columns(&self) -> [(&'static str, Value); 16] {
        [
            ("requests", Value::Int(self.requests)),
            ("successes", Value::Int(self.successes)),
            ("streamed", Value::Int(self.streamed)),
            ("input_tokens", Value::Int(self.input_tokens)),
            ("output_tokens", Value::Int(self.output_tokens)),
            ("cache_read_tokens", Value::Int(self.cache_read_tokens)),
            ("cache_write_tokens", Value::Int(self.cache_write_tokens)),
            ("cost_usd", Value::Real(self.cost_usd)),
            ("cost_estimated", Value::Int(self.cost_estimated)),
            ("latency_ms_sum", Value::Int(self.latency_ms_sum)),
            ("ttfb_ms_sum", Value::Int(self.ttfb_ms_sum)),
            ("ttfb_count", Value::Int(self.ttfb_count)),
            ("generated_tokens", Value::Int(self.generated_tokens)),
            ("generating_ms_sum", Value::Int(self.generating_ms_sum)),
            ("moves", Value::Int(self.moves)),
            (
                "moved_cache_write_tokens",
                Value::Int(self.moved_cache_write_tokens),
            ),
        ]
    }

    pub fn add(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.streamed += other.streamed;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_usd += other.cost_usd;
        self.cost_estimated += other.cost_estimated;
        self.latency_ms_sum += other.latency_ms_sum;
        self.ttfb_ms_sum += other.ttfb_ms_sum;
        self.ttfb_count += other.ttfb_count;
        self.generated_tokens += other.generated_tokens;
        self.generating_ms_sum += other.generating_ms_sum;
        self.moves += other.moves;
        self.moved_cache_write_tokens += other.moved_cache_write_tokens;
    }
}

/// An hourly or daily rollup row being built: its sums and, for an account, the name it was
/// last recorded with.
#[derive(Debug, Default)]
struct GroupSums {
    label: String,
    sums: Sums,
}

/// Rollup increments summed over a batch of requests, so a batch of many requests in the same
/// hour costs one upsert per key rather than one per request.
#[derive(Debug, Default)]
struct Increments {
    /// (hour, dim) → key → sums: a key is looked up by reference, and copied only the first
    /// time a batch meets it.
    hours: HashMap<(Millis, i64), HashMap<String, GroupSums>>,
    /// (day, dim) → key → sums.
    days: HashMap<(Millis, i64), HashMap<String, GroupSums>>,
    minutes: HashMap<Millis, Sums>,
    /// (metric, hour, bin) → count.
    hour_bins: HashMap<(i64, Millis, i64), i64>,
    /// (metric, day, bin) → count.
    day_bins: HashMap<(i64, Millis, i64), i64>,
    /// (minute, bin) → count, of the total latency only.
    minute_bins: HashMap<(Millis, i64), i64>,
    /// Account id → (requests, the latest start): the accounts' own counters, which only
    /// [`add`] counts (a rebuild of the rollups leaves them alone).
    accounts: HashMap<i64, (i64, Millis)>,
}

impl Increments {
    fn add(&mut self, s: Sample) {
        let hour = bucket(s.started_at, HOUR_MS);
        let day = bucket(s.started_at, DAY_MS);
        let minute = bucket(s.started_at, MINUTE_MS);
        let one = Sums::of(&s);
        self.minutes.entry(minute).or_default().add(&one);
        *self
            .minute_bins
            .entry((minute, bin(s.latency_ms)))
            .or_default() += 1;

        for (metric, value) in [
            (METRIC_LATENCY, Some(s.latency_ms)),
            (METRIC_TTFB, s.ttfb_ms),
        ] {
            if let Some(value) = value {
                let bin = bin(value);
                *self.hour_bins.entry((metric, hour, bin)).or_default() += 1;
                *self.day_bins.entry((metric, day, bin)).or_default() += 1;
            }
        }

        let account = s.account_id.to_string();
        let error;
        let mut groups = [
            Some((DIM_ALL, "")),
            Some((DIM_MODEL, s.model.as_str())),
            Some((DIM_ACCOUNT, account.as_str())),
            None,
            None,
        ];
        if !s.client_key.is_empty() {
            groups[3] = Some((DIM_CLIENT_KEY, s.client_key.as_str()));
        }
        if !s.success {
            error = if s.error_type.is_empty() {
                format!("http_{}", s.status)
            } else {
                s.error_type.clone()
            };
            groups[4] = Some((DIM_ERROR, error.as_str()));
        }
        for (bucket, table) in [(hour, &mut self.hours), (day, &mut self.days)] {
            for (dim, key) in groups.iter().flatten() {
                let keys = table.entry((bucket, *dim)).or_default();
                let g = match keys.get_mut(*key) {
                    Some(g) => g,
                    None => keys.entry((*key).to_owned()).or_default(),
                };
                if *dim == DIM_ACCOUNT && g.label != s.account_name {
                    g.label.clone_from(&s.account_name);
                }
                g.sums.add(&one);
            }
        }
    }

    /// Writes the increments inside the caller's transaction (`None`), or in a transaction of
    /// their own: `(first, then)` as `rows::write_transaction` takes them, the increments
    /// before `then` (the writer's batch: its request rows first, its accounts' states then).
    async fn write(
        self,
        tx: &mut SqliteConnection,
        own_transaction: Option<(Parts<'_, '_>, Parts<'_, '_>)>,
    ) -> Result<(), sqlx::Error> {
        static EVERY_SUM: LazyLock<Upserts> = LazyLock::new(|| Upserts::new(|_| true));
        self.write_sums(tx, &EVERY_SUM, |_| true, own_transaction)
            .await
    }

    /// Writes the increments with `upserts`, of the hourly and daily sums only those `exists`
    /// accepts (the sums `upserts` was built with): each table's rows many per statement
    /// (`rows`), all tables and the accounts' counters as one query when each fits one
    /// statement; with `own_transaction`, in a transaction of their own with those parts
    /// (`rows::write_transaction`).
    async fn write_sums(
        self,
        tx: &mut SqliteConnection,
        upserts: &Upserts,
        exists: impl Fn(&str) -> bool + Copy + Sync,
        own_transaction: Option<(Parts<'_, '_>, Parts<'_, '_>)>,
    ) -> Result<(), sqlx::Error> {
        let groups = |groups: HashMap<(Millis, i64), HashMap<String, GroupSums>>| {
            groups
                .into_iter()
                .flat_map(|((bucket, dim), keys)| {
                    keys.into_iter()
                        .map(move |(key, sums)| ((bucket, dim, key), sums))
                })
                .collect::<Vec<(GroupKey, GroupSums)>>()
        };
        let (hours, days) = (groups(self.hours), groups(self.days));
        let minutes: Vec<(Millis, Sums)> = self.minutes.into_iter().collect();
        let hour_bins: Vec<((i64, Millis, i64), i64)> = self.hour_bins.into_iter().collect();
        let day_bins: Vec<((i64, Millis, i64), i64)> = self.day_bins.into_iter().collect();
        let minute_bins: Vec<((Millis, i64), i64)> = self.minute_bins.into_iter().collect();
        let accounts: Vec<(i64, (i64, Millis))> = self.accounts.into_iter().collect();

        let group = rows::binder(|query, row: &(GroupKey, GroupSums)| {
            let ((bucket, dim, key), GroupSums { label, sums }) = row;
            let query = query
                .bind(*bucket)
                .bind(*dim)
                .bind(key.as_str())
                .bind(label.as_str());
            bind_sums(query, sums, exists)
        });
        let bins = rows::binder(
            |query, ((metric, bucket, bin), count): &((i64, Millis, i64), i64)| {
                query.bind(*bucket).bind(*metric).bind(*bin).bind(*count)
            },
        );
        let own: [&(dyn Part + Sync); 7] = [
            &Table::new(&upserts.hourly, &hours, group),
            &Table::new(&upserts.daily, &days, group),
            &Table::new(&upserts.minutely, &minutes, |query, (minute, sums)| {
                bind_sums(query.bind(*minute), sums, |name| {
                    MINUTE_SUMS.contains(&name)
                })
            }),
            &Table::new(&upserts.latency_hourly, &hour_bins, bins),
            &Table::new(&upserts.latency_daily, &day_bins, bins),
            &Table::new(
                &upserts.latency_minutely,
                &minute_bins,
                |query, ((minute, bin), count)| query.bind(*minute).bind(*bin).bind(*count),
            ),
            &Table::new(
                &ACCOUNT_COUNTERS,
                &accounts,
                |query, (id, (count, last_used))| query.bind(*id).bind(*count).bind(*last_used),
            ),
        ];
        // One round trip to SQLite's thread for all of them (when each fits one statement).
        match own_transaction {
            None => rows::write_all(tx, &own).await,
            Some((first, then)) => {
                let rest: Vec<&(dyn Part + Sync)> = own.iter().chain(then).copied().collect();
                rows::write_transaction(tx, first, &rest).await
            }
        }
    }
}

/// The accounts' counters: requests and last use, added from rows of (id, count, latest start).
static ACCOUNT_COUNTERS: Rows = Rows::new(
    "UPDATE accounts SET request_count = request_count + v.column2, \
     last_used = max(coalesce(last_used, 0), v.column3) FROM (",
    ") AS v WHERE accounts.id = v.column1",
    3,
);

/// The upserts of every rollup table, for a set of sums.
struct Upserts {
    hourly: Rows,
    daily: Rows,
    minutely: Rows,
    latency_hourly: Rows,
    latency_daily: Rows,
    latency_minutely: Rows,
}

impl Upserts {
    /// The upserts that write, of the hourly and daily sums, those `exists` accepts.
    fn new(exists: impl Fn(&str) -> bool) -> Upserts {
        let all_sums = Sums::default().columns().map(|(name, _)| name);
        let group_sums: Vec<&str> = all_sums.into_iter().filter(|name| exists(name)).collect();
        let minute_sums: Vec<&str> = all_sums
            .into_iter()
            .filter(|name| MINUTE_SUMS.contains(name))
            .collect();
        let groups = |table| upsert(table, &["bucket", "dim", "key"], &["label"], &group_sums);
        Upserts {
            hourly: groups("rollup_hourly"),
            daily: groups("rollup_daily"),
            minutely: upsert("rollup_minutely", &["minute"], &[], &minute_sums),
            latency_hourly: upsert(
                "latency_hourly",
                &["bucket", "metric", "bin"],
                &[],
                &["count"],
            ),
            latency_daily: upsert(
                "latency_daily",
                &["bucket", "metric", "bin"],
                &[],
                &["count"],
            ),
            latency_minutely: upsert("latency_minutely", &["minute", "bin"], &[], &["count"]),
        }
    }
}

/// A sum as bound to an upsert.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i64),
    Real(f64),
}

/// The sums the minute table keeps (a subset of the hourly and daily tables').
const MINUTE_SUMS: [&str; 8] = [
    "requests",
    "successes",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_ms_sum",
];

/// An insert into `table` of `keys` (its primary key), `labels` and `sums`, in that order,
/// which adds the sums to an existing row and replaces its labels. The names are constants.
fn upsert(table: &str, keys: &[&str], labels: &[&str], sums: &[&str]) -> Rows {
    let columns: Vec<&str> = keys.iter().chain(labels).chain(sums).copied().collect();
    let updates: Vec<String> = labels
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .chain(sums.iter().map(|c| format!("{c} = {c} + excluded.{c}")))
        .collect();
    Rows::of(
        format!("INSERT INTO {table} ({})", columns.join(", ")).into(),
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            keys.join(", "),
            updates.join(", ")
        )
        .into(),
        columns.len(),
    )
}

/// Binds the sums whose column `keep` accepts, in [`Sums::columns`]' order (the order
/// [`upsert`] was given them).
fn bind_sums<'q>(mut query: Query<'q>, sums: &Sums, keep: impl Fn(&str) -> bool) -> Query<'q> {
    for (name, value) in sums.columns() {
        if keep(name) {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Real(v) => query.bind(v),
            };
        }
    }
    query
}

/// Writes the writer's batch in one transaction of its own (`rows::write_transaction`):
/// `first` (the request rows), then what `records` add to the rollups and to their accounts'
/// counters (`request_count`, `last_used`), then `then` (the accounts' states).
pub(crate) async fn add(
    tx: &mut SqliteConnection,
    records: &[&RequestRecord],
    first: &[&(dyn Part + Sync)],
    then: &[&(dyn Part + Sync)],
) -> Result<(), sqlx::Error> {
    let mut increments = Increments::default();
    for record in records {
        increments.add(Sample::from(*record));
        if let Some(id) = record.account_id {
            let (count, last_used) = increments.accounts.entry(id.0).or_default();
            *count += 1;
            *last_used = (*last_used).max(record.started_at);
        }
    }
    increments.write(tx, Some((first, then))).await
}

/// Rows read per query while rebuilding.
const REBUILD_PAGE: i64 = 10_000;

/// A request row read while rebuilding: where it is, and what the rollups need of it.
#[derive(FromRow)]
struct Paged {
    rowid: i64,
    #[sqlx(flatten)]
    sample: Sample,
}

/// Rebuilds every rollup from the request rows.
pub(crate) async fn rebuild(tx: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "DELETE FROM rollup_hourly; DELETE FROM rollup_daily; DELETE FROM rollup_minutely; \
         DELETE FROM latency_hourly; DELETE FROM latency_daily; DELETE FROM latency_minutely;",
    )
    .execute(&mut *tx)
    .await?;
    let mut increments = Increments::default();
    every_sample(tx, SAMPLE_COLUMNS, |sample| increments.add(sample)).await?;
    increments.write(tx, None).await
}

/// Fills the rollups of migration 0003 from the rows recorded before it. The minute
/// histograms came later (0005, which fills them in its own turn), so they are left out.
pub(crate) async fn fill_0003(tx: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut increments = Increments::default();
    every_sample(tx, SAMPLE_COLUMNS_BEFORE_0012, |sample| {
        increments.add(sample)
    })
    .await?;
    // With no minute bins, writing never names their table.
    increments.minute_bins.clear();
    let before_0012 = |name: &str| !SUMS_0012.contains(&name);
    increments
        .write_sums(tx, &Upserts::new(before_0012), before_0012, None)
        .await
}

/// Fills the minute histograms from the request rows (migration 0005, for rows recorded
/// before it), leaving the other rollups as they are.
pub(crate) async fn rebuild_minute_latency(tx: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM latency_minutely")
        .execute(&mut *tx)
        .await?;
    let mut bins = Increments::default();
    every_sample(tx, SAMPLE_COLUMNS_BEFORE_0012, |s| {
        *bins
            .minute_bins
            .entry((bucket(s.started_at, MINUTE_MS), bin(s.latency_ms)))
            .or_default() += 1;
    })
    .await?;
    bins.write(tx, None).await
}

/// Hands every request row to `add`, read with `columns` (one of the sample column lists), in
/// pages by rowid so memory holds one page plus what `add` keeps.
async fn every_sample(
    tx: &mut SqliteConnection,
    columns: &str,
    mut add: impl FnMut(Sample),
) -> Result<(), sqlx::Error> {
    let mut after: i64 = 0;
    loop {
        let rows: Vec<Paged> = sqlx::query_as(&format!(
            "SELECT rowid, {columns} FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?"
        ))
        .bind(after)
        .bind(REBUILD_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let read = rows.len() as i64;
        for row in rows {
            after = row.rowid;
            add(row.sample);
        }
        if read < REBUILD_PAGE {
            return Ok(());
        }
    }
}

/// Rebuilds every rollup from the request rows, in one write transaction (for repairs, and to
/// check that the writer's running totals equal a fresh count).
pub async fn rebuild_all(db: &Db) -> Result<(), StorageError> {
    let mut tx = db.begin_write().await?;
    rebuild(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub requests: u64,
    /// The cutoff used: the start of the UTC day, everything before it is gone.
    pub before: Millis,
}

/// Deletes request rows that started before the UTC day holding `cutoff`, and the rollups of
/// those days, in transactions of at most `batch` rows each, so the writer waits for at most one
/// short batch at a time. Aligning to whole days keeps the rollups equal to the rows that remain.
pub async fn purge_before(db: &Db, cutoff: Millis, batch: u32) -> Result<Purged, StorageError> {
    let before = bucket(cutoff, DAY_MS);
    let mut tx = db.begin_write().await?;
    for sql in [
        "DELETE FROM rollup_hourly WHERE bucket < ?",
        "DELETE FROM rollup_daily WHERE bucket < ?",
        "DELETE FROM rollup_minutely WHERE minute < ?",
        "DELETE FROM latency_hourly WHERE bucket < ?",
        "DELETE FROM latency_daily WHERE bucket < ?",
        "DELETE FROM latency_minutely WHERE minute < ?",
    ] {
        sqlx::query(sql).bind(before).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let mut requests = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM requests WHERE rowid IN \
             (SELECT rowid FROM requests WHERE started_at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(batch.max(1)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        requests += deleted;
        if deleted < u64::from(batch.max(1)) {
            return Ok(Purged { requests, before });
        }
        // Let the writer (and anyone else waiting for the lock) in between two batches.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_exact_below_128_ms() {
        for v in 0..LINEAR_BINS {
            assert_eq!(bin(v), v);
            assert_eq!(bin_value(bin(v)), v);
        }
        assert_eq!(bin(-5), 0);
    }

    #[test]
    fn bins_cover_every_value_once_and_in_order() {
        let mut previous = bin(LINEAR_BINS - 1);
        for v in LINEAR_BINS..200_000 {
            let b = bin(v);
            let (low, high) = bin_bounds(b);
            assert!(
                low <= v && v <= high,
                "{v} outside bin {b} = [{low}, {high}]"
            );
            assert!(b == previous || b == previous + 1, "bins skip at {v}");
            previous = b;
        }
    }

    #[test]
    fn a_bin_midpoint_is_within_a_32nd_of_any_value_in_it() {
        for v in (LINEAR_BINS..10_000_000).step_by(997) {
            let reported = bin_value(bin(v));
            let error = (reported - v).abs() as f64 / v as f64;
            assert!(error <= 1.0 / 32.0, "{v} reported as {reported}");
        }
        // Huge values stay representable.
        let (low, high) = bin_bounds(bin(i64::MAX));
        assert!(high >= low && high == i64::MAX);
    }

    #[test]
    fn a_request_adds_its_share_to_every_sum() {
        let usage = ccflare_core::usage::Usage {
            output_tokens: 20,
            cache_read_input_tokens: 30,
            ..Default::default()
        };
        let served = RequestRecord {
            success: true,
            streamed: true,
            latency_ms: 1_500,
            ttfb_ms: Some(500),
            usage,
            cost_usd: 0.25,
            ..Default::default()
        };
        // Without a first byte there is no generation time (and no output counted for it).
        let estimated = RequestRecord {
            latency_ms: 100,
            cost_estimated: true,
            ..Default::default()
        };
        let mut sums = Sums::default();
        for record in [&served, &estimated] {
            sums.add(&Sums::of(&Sample::from(record)));
        }
        let expected = Sums {
            requests: 2,
            successes: 1,
            streamed: 1,
            output_tokens: 20,
            cache_read_tokens: 30,
            cost_usd: 0.25,
            cost_estimated: 1,
            latency_ms_sum: 1_600,
            ttfb_ms_sum: 500,
            ttfb_count: 1,
            generated_tokens: 20,
            generating_ms_sum: 1_000,
            ..Sums::default()
        };
        assert_eq!(sums, expected);
    }

    #[test]
    fn buckets_align_to_utc() {
        assert_eq!(bucket(HOUR_MS + 5, HOUR_MS), HOUR_MS);
        assert_eq!(bucket(-1, MINUTE_MS), -MINUTE_MS);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The last bin any latency can fall in (that of `i64::MAX`).
        fn last_bin() -> i64 {
            bin(i64::MAX)
        }

        /// Latencies spread over every magnitude, not only the large ones a uniform draw gives.
        fn latency() -> impl Strategy<Value = i64> {
            prop_oneof![
                0i64..LINEAR_BINS * 2,
                (0u32..63).prop_flat_map(|bits| (1i64 << bits)..=(1i64 << bits).saturating_mul(2)),
                any::<i64>(),
            ]
        }

        #[test]
        fn the_bins_tile_every_latency_without_gap_or_overlap() {
            assert_eq!(bin_bounds(0), (0, 0));
            for b in 0..last_bin() {
                let (low, high) = bin_bounds(b);
                let (next_low, _) = bin_bounds(b + 1);
                assert!(low <= high, "bin {b} is empty");
                assert_eq!(high + 1, next_low, "gap or overlap after bin {b}");
                assert_eq!(
                    (bin(low), bin(high)),
                    (b, b),
                    "bin {b}'s ends fall elsewhere"
                );
            }
            assert_eq!(bin_bounds(last_bin()).1, i64::MAX);
        }

        proptest! {
            #[test]
            fn every_latency_falls_in_exactly_its_bin(value in latency()) {
                let b = bin(value);
                prop_assert!((0..=last_bin()).contains(&b));
                let (low, high) = bin_bounds(b);
                prop_assert!(low <= value.max(0) && value.max(0) <= high, "{} not in bin {} = [{}, {}]", value, b, low, high);
                // Its neighbours do not hold it.
                if b > 0 {
                    prop_assert!(bin_bounds(b - 1).1 < value.max(0));
                }
                if b < last_bin() {
                    prop_assert!(bin_bounds(b + 1).0 > value.max(0));
                }
            }

            #[test]
            fn bins_grow_with_latency(a in latency(), b in latency()) {
                let (low, high) = (a.min(b), a.max(b));
                prop_assert!(bin(low) <= bin(high));
                prop_assert!(bin_value(bin(low)) <= bin_value(bin(high)));
            }

            #[test]
            fn a_reported_latency_is_within_a_32nd(value in latency()) {
                let reported = bin_value(bin(value));
                let value = value.max(0);
                if value < LINEAR_BINS {
                    prop_assert_eq!(reported, value);
                } else {
                    let error = (i128::from(reported) - i128::from(value)).abs();
                    prop_assert!(error * 32 <= i128::from(value), "{} reported as {}", value, reported);
                }
            }

            #[test]
            fn a_time_lies_in_its_bucket_and_buckets_nest(
                at in -(1i64 << 62)..(1i64 << 62),
            ) {
                for size in [MINUTE_MS, HOUR_MS, DAY_MS] {
                    let start = bucket(at, size);
                    prop_assert!(start <= at && at < start + size, "{} in [{}, +{})", at, start, size);
                    prop_assert_eq!(start.rem_euclid(size), 0);
                    prop_assert_eq!(bucket(start, size), start);
                }
                let (minute, hour, day) =
                    (bucket(at, MINUTE_MS), bucket(at, HOUR_MS), bucket(at, DAY_MS));
                prop_assert!(day <= hour && hour <= minute && minute <= at);
                prop_assert_eq!(bucket(minute, HOUR_MS), hour);
                prop_assert_eq!(bucket(hour, DAY_MS), day);
            }
        }
    }
}
