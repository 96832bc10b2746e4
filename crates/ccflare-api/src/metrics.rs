//! `GET /metrics` in the Prometheus text format, written by hand. Request counters are kept in
//! memory from every finished request (the proxy calls [`Metrics::observe`] on the request
//! path): each thread counts into a shard of its own, so two requests finishing at once never
//! wait on one lock, and once a model, account and status have been seen, counting them
//! allocates nothing; a scrape sums the shards. Account states, in-flight requests and the
//! writer's queue are read at scrape time. Counters start from zero at each start, as
//! Prometheus counters do.
//!
//! Label values come from clients (the model name), so their number is capped: past
//! [`MAX_LABEL_VALUES`] distinct models, new ones are counted under `other`.

use ccflare_core::record::RequestRecord;
use ccflare_pool::{AccountView, RoutingState};
use ccflare_storage::WriterHandle;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

/// Most distinct values of a client-controlled label.
pub const MAX_LABEL_VALUES: usize = 100;

/// Shards of the counters. A thread takes one the first time it counts, in turn, and keeps it:
/// with fewer counting threads than shards, no two share one.
const SHARDS: usize = 16;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Upper bounds of the buckets of ccflare's own time per request, in seconds: 50 µs to 1 s.
const OVERHEAD_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Count per bucket (not cumulative); the last one is +Inf.
    counts: Vec<u64>,
    sum_seconds: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds(&BUCKETS)
    }
}

impl Histogram {
    fn with_bounds(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_seconds: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let at = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[at] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    fn add(&mut self, other: &Histogram) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.sum_seconds += other.sum_seconds;
        self.count += other.count;
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// The histogram of ccflare's own time per request, on [`OVERHEAD_BUCKETS`].
#[derive(Debug)]
struct OverheadHistogram(Histogram);

impl Default for OverheadHistogram {
    fn default() -> Self {
        OverheadHistogram(Histogram::with_bounds(&OVERHEAD_BUCKETS))
    }
}

/// Every shard summed, keyed for the exposition (sorted label values).
#[derive(Debug, Default)]
struct Counters {
    /// (status, model, account) → requests.
    requests: BTreeMap<(u16, String, String), u64>,
    /// (model, kind) → tokens.
    tokens: BTreeMap<(String, &'static str), u64>,
    /// (model, account) → USD.
    cost: BTreeMap<(String, String), f64>,
    /// error type → failed requests.
    errors: BTreeMap<String, u64>,
    /// Reason → failed upstream attempts (each one failed over).
    attempt_failures: BTreeMap<String, u64>,
    attempts: u64,
    latency: Histogram,
    ttfb: Histogram,
    /// ccflare's own time per request that went upstream.
    overhead: OverheadHistogram,
}

/// The token kinds, in the order of [`ModelCounts::tokens`].
const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// One thread's counters, keyed so that a lookup by `&str` finds them: only a label value seen
/// for the first time in this shard is copied.
#[derive(Debug, Default)]
struct Shard {
    /// Model label ("" for none) → its counts.
    models: HashMap<String, ModelCounts>,
    errors: HashMap<String, u64>,
    attempt_failures: HashMap<String, u64>,
    attempts: u64,
    latency: Histogram,
    ttfb: Histogram,
    overhead: OverheadHistogram,
}

#[derive(Debug, Default)]
struct ModelCounts {
    tokens: [u64; 4],
    /// Account ("" for none) → its counts with this model.
    accounts: HashMap<String, AccountCounts>,
}

#[derive(Debug, Default)]
struct AccountCounts {
    /// (status, requests): a handful per pair.
    statuses: Vec<(u16, u64)>,
    cost_usd: f64,
}

/// A map entry by a borrowed key, copying the key only when it is new.
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("present or just inserted")
}

impl Shard {
    fn add_to(&self, total: &mut Counters) {
        for (model, counts) in &self.models {
            for (kind, n) in TOKEN_KINDS.iter().zip(counts.tokens) {
                if n > 0 {
                    *total.tokens.entry((model.clone(), kind)).or_default() += n;
                }
            }
            for (account, counts) in &counts.accounts {
                for &(status, n) in &counts.statuses {
                    *total
                        .requests
                        .entry((status, model.clone(), account.clone()))
                        .or_default() += n;
                }
                if counts.cost_usd != 0.0 {
                    *total
                        .cost
                        .entry((model.clone(), account.clone()))
                        .or_default() += counts.cost_usd;
                }
            }
        }
        for (kind, n) in &self.errors {
            *total.errors.entry(kind.clone()).or_default() += n;
        }
        for (reason, n) in &self.attempt_failures {
            *total.attempt_failures.entry(reason.clone()).or_default() += n;
        }
        total.attempts += self.attempts;
        total.latency.add(&self.latency);
        total.ttfb.add(&self.ttfb);
        total.overhead.0.add(&self.overhead.0);
    }
}

/// Label values a client chooses (models, error types): the first [`MAX_LABEL_VALUES`] seen
/// are kept as they are, later ones are counted under `other`. Read-mostly: once full or once
/// a value is known, a lookup takes only the read lock.
#[derive(Debug, Default)]
struct Labels(RwLock<HashSet<String>>);

impl Labels {
    /// `value` if it is (or now becomes) one of the kept values, else `other`.
    fn admit<'v>(&self, value: &'v str) -> &'v str {
        if self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(value)
        {
            return value;
        }
        let mut kept = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if kept.contains(value) || kept.len() < MAX_LABEL_VALUES {
            kept.insert(value.to_owned());
            value
        } else {
            "other"
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Counters of finished requests.
#[derive(Debug)]
pub struct Metrics {
    models: Labels,
    error_types: Labels,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            models: Labels::default(),
            error_types: Labels::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// The shard of the calling thread, taken in turn the first time it counts.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    }
    INDEX.with(|index| {
        index.get().unwrap_or_else(|| {
            let taken = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            index.set(Some(taken));
            taken
        })
    })
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe(&self, record: &RequestRecord) {
        let model = record.model.as_deref().map_or("", |m| self.models.admit(m));
        let account = record.account_name.as_deref().unwrap_or_default();
        let mut shard = self.shards[shard_index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let usage = &record.usage;
        let counts = entry(&mut shard.models, model);
        for (total, n) in counts.tokens.iter_mut().zip([
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
        ]) {
            *total += n;
        }
        let pair = entry(&mut counts.accounts, account);
        match pair.statuses.iter_mut().find(|(s, _)| *s == record.status) {
            Some((_, n)) => *n += 1,
            None => pair.statuses.push((record.status, 1)),
        }
        pair.cost_usd += record.cost_usd;
        if !record.success {
            // Error types are ccflare's and the upstream's words, but an upstream could send
            // anything: capped like models.
            let generic;
            let kind = match record.error_type.as_deref() {
                Some(kind) => kind,
                None => {
                    generic = format!("http_{}", record.status);
                    &generic
                }
            };
            *entry(&mut shard.errors, self.error_types.admit(kind)) += 1;
        }
        shard.attempts += u64::from(record.attempts);
        for failure in &record.attempt_failures {
            *entry(&mut shard.attempt_failures, &failure.reason) += 1;
        }
        shard.latency.observe(record.latency_ms as f64 / 1000.0);
        if let Some(ttfb) = record.ttfb_ms {
            shard.ttfb.observe(ttfb as f64 / 1000.0);
        }
        if let Some(overhead) = record.proxy_overhead_us {
            shard.overhead.0.observe(overhead as f64 / 1_000_000.0);
        }
    }

    /// Every shard summed.
    fn totals(&self) -> Counters {
        let mut total = Counters::default();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add_to(&mut total);
        }
        total
    }

    /// The whole exposition, with the accounts and the writer read now.
    pub fn render(&self, accounts: &[AccountView], writer: &WriterHandle, uptime_s: u64) -> String {
        let mut out = String::with_capacity(4096);
        let c = self.totals();
        header(
            &mut out,
            "ccflare_requests_total",
            "counter",
            "Proxied requests by the status the client got, model and serving account.",
        );
        for ((status, model, account), n) in &c.requests {
            let _ = writeln!(
                out,
                "ccflare_requests_total{{status=\"{status}\",model=\"{}\",account=\"{}\"}} {n}",
                escape(model),
                escape(account)
            );
        }
        header(
            &mut out,
            "ccflare_tokens_total",
            "counter",
            "Tokens by model and kind (input, output, cache_read, cache_write).",
        );
        two_labels(
            &mut out,
            "ccflare_tokens_total",
            ["model", "kind"],
            &c.tokens,
        );
        header(
            &mut out,
            "ccflare_cost_usd_total",
            "counter",
            "Cost in US dollars by model and account.",
        );
        two_labels(
            &mut out,
            "ccflare_cost_usd_total",
            ["model", "account"],
            &c.cost,
        );
        header(
            &mut out,
            "ccflare_request_errors_total",
            "counter",
            "Failed requests by error type.",
        );
        one_label(&mut out, "ccflare_request_errors_total", "type", &c.errors);
        header(
            &mut out,
            "ccflare_upstream_attempts_total",
            "counter",
            "Upstream attempts, failed-over ones included.",
        );
        let _ = writeln!(out, "ccflare_upstream_attempts_total {}", c.attempts);
        header(
            &mut out,
            "ccflare_upstream_attempt_failures_total",
            "counter",
            "Upstream attempts that failed over, by reason.",
        );
        one_label(
            &mut out,
            "ccflare_upstream_attempt_failures_total",
            "reason",
            &c.attempt_failures,
        );
        header(
            &mut out,
            "ccflare_request_duration_seconds",
            "histogram",
            "Time from request to the end of the response.",
        );
        c.latency
            .render(&mut out, "ccflare_request_duration_seconds");
        header(
            &mut out,
            "ccflare_time_to_first_byte_seconds",
            "histogram",
            "Time from request to the first response byte sent to the client.",
        );
        c.ttfb
            .render(&mut out, "ccflare_time_to_first_byte_seconds");
        header(
            &mut out,
            "ccflare_proxy_overhead_seconds",
            "histogram",
            "Time each request that went upstream spent in ccflare itself: its duration less the \
             time its attempts waited on the upstream.",
        );
        c.overhead
            .0
            .render(&mut out, "ccflare_proxy_overhead_seconds");
        drop(c);

        account_states(&mut out, accounts);
        header(
            &mut out,
            "ccflare_account_in_flight",
            "gauge",
            "Requests each account is serving now.",
        );
        for view in accounts {
            let _ = writeln!(
                out,
                "ccflare_account_in_flight{{account=\"{}\"}} {}",
                escape(&view.name),
                view.in_flight
            );
        }
        header(
            &mut out,
            "ccflare_writer_queue_depth",
            "gauge",
            "Records and state changes waiting for the database writer.",
        );
        let _ = writeln!(out, "ccflare_writer_queue_depth {}", writer.queue_depth());
        let totals = writer.totals();
        let health = writer.health().borrow().clone();
        for (name, kind, help, value) in [
            (
                "ccflare_writer_rows_written_total",
                "counter",
                "Request rows written to the database (replayed ones included).",
                totals.written,
            ),
            (
                "ccflare_writer_rows_lost_total",
                "counter",
                "Records dropped: neither the database, the spill file nor memory could take them.",
                totals.dropped,
            ),
            (
                "ccflare_writer_rows_rejected_total",
                "counter",
                "Rows the database refused for a reason of their own, kept in the rejects file.",
                totals.rejected,
            ),
            (
                "ccflare_writer_rows_spilled_total",
                "counter",
                "Records written to the spill file while the database could not be written.",
                totals.spilled,
            ),
            (
                "ccflare_writer_rows_replayed_total",
                "counter",
                "Records replayed from the spill file into the database.",
                totals.replayed,
            ),
            (
                "ccflare_writer_spilled_waiting",
                "gauge",
                "Records in the spill file waiting to be written to the database.",
                health.spilled_waiting,
            ),
            (
                "ccflare_database_writable",
                "gauge",
                "1 while the writer can write the database; 0 while records wait through an outage.",
                u64::from(health.failing.is_none()),
            ),
            (
                "ccflare_database_damaged",
                "gauge",
                "1 when SQLite or the check at start found the database damaged.",
                u64::from(health.damaged.is_some()),
            ),
        ] {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            &mut out,
            "ccflare_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
        );
        let _ = writeln!(out, "ccflare_uptime_seconds {uptime_s}");
        header(
            &mut out,
            "ccflare_build_info",
            "gauge",
            "The running version.",
        );
        let _ = writeln!(
            out,
            "ccflare_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// The `ccflare_account_state` gauge: for each account, one sample per state, 1 for the one it
/// is in. The names are the pool's ([`RoutingState::name`]), as in the API's JSON.
fn account_states(out: &mut String, accounts: &[AccountView]) {
    header(
        out,
        "ccflare_account_state",
        "gauge",
        "1 for the state each account is in now.",
    );
    for view in accounts {
        let name = escape(&view.name);
        for state in RoutingState::NAMES {
            let _ = writeln!(
                out,
                "ccflare_account_state{{account=\"{name}\",state=\"{state}\"}} {}",
                u8::from(view.state.name() == state)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The samples of a counter with one label, one per value counted.
fn one_label(out: &mut String, name: &str, label: &str, counts: &BTreeMap<String, u64>) {
    for (value, n) in counts {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
    }
}

/// The samples of a counter with two labels, one per pair of values counted.
fn two_labels<A: AsRef<str>, B: AsRef<str>, V: Display>(
    out: &mut String,
    name: &str,
    [first, second]: [&str; 2],
    counts: &BTreeMap<(A, B), V>,
) {
    for ((a, b), value) in counts {
        let _ = writeln!(
            out,
            "{name}{{{first}=\"{}\",{second}=\"{}\"}} {value}",
            escape(a.as_ref()),
            escape(b.as_ref())
        );
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::AccountJson;
    use ccflare_core::{Account, AccountId, AccountKind, Millis, Secret};
    use ccflare_storage::accounts::AccountSummary;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn one_label_counters_escape_their_values() {
        let counts = BTreeMap::from([("a\"b".to_owned(), 2), ("c".to_owned(), 1)]);
        let mut out = String::new();
        one_label(&mut out, "x_total", "type", &counts);
        assert_eq!(out, "x_total{type=\"a\\\"b\"} 2\nx_total{type=\"c\"} 1\n");
    }

    /// Every state, with the name clients have always seen for it. The match makes a new state
    /// fail to compile here until it is given a name.
    fn every_state(now: Millis) -> [(RoutingState, &'static str); 5] {
        let all = [
            (RoutingState::Active, "active"),
            (RoutingState::Paused, "paused"),
            (
                RoutingState::RateLimited {
                    until: now + 30_000,
                },
                "rate_limited",
            ),
            (
                RoutingState::Overloaded {
                    until: now + 15_000,
                },
                "overloaded",
            ),
            (RoutingState::Invalid, "invalid"),
        ];
        for (state, _) in all {
            match state {
                RoutingState::Active
                | RoutingState::Paused
                | RoutingState::RateLimited { .. }
                | RoutingState::Overloaded { .. }
                | RoutingState::Invalid => {}
            }
        }
        all
    }

    /// The accounts JSON and the `/metrics` gauge both render the pool's state: the same name
    /// (the one `ccflare-cli accounts list --json` prints, from the same function) and, in the
    /// JSON, the same end of the bench.
    #[test]
    fn the_json_and_the_gauge_name_each_state_as_the_pool_does() {
        let now: Millis = 1_000_000;
        let account = Account::new(
            AccountId(1),
            "a",
            AccountKind::ApiKey,
            Secret::new("sk-ant-api03-metrics-0123456789-wxyz"),
        );
        let summary = AccountSummary {
            account,
            request_count: 0,
            last_used: None,
            created_at: 0,
            last_ratelimit: None,
            refreshed_at: None,
        };
        for (state, name) in every_state(now) {
            assert_eq!(state.name(), name);
            let view = AccountView {
                id: AccountId(1),
                name: "a".into(),
                kind: AccountKind::ApiKey,
                priority: 0,
                state,
                in_flight: 0,
                requests: 0,
                consecutive_rate_limits: 0,
                last_ratelimit: None,
                last_used: None,
            };
            let json = AccountJson::new(&summary, Some(&view), now);
            assert_eq!((json.state, json.available_at), (name, state.until()));

            let mut out = String::new();
            account_states(&mut out, std::slice::from_ref(&view));
            let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(samples.len(), RoutingState::NAMES.len(), "{out}");
            let on: Vec<&str> = samples.into_iter().filter(|l| l.ends_with(" 1")).collect();
            assert_eq!(
                on,
                [format!(
                    "ccflare_account_state{{account=\"a\",state=\"{name}\"}} 1"
                )]
            );
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        for seconds in [0.01, 0.07, 0.07, 700.0] {
            h.observe(seconds);
        }
        let mut out = String::new();
        h.render(&mut out, "x");
        assert!(out.contains("x_bucket{le=\"0.05\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"600\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }

    #[test]
    fn ccflares_own_time_is_a_histogram_of_its_own_fine_buckets() {
        let metrics = Metrics::default();
        for overhead_us in [Some(40), Some(180), Some(180), Some(3_000), None] {
            metrics.observe(&RequestRecord {
                status: 200,
                success: true,
                proxy_overhead_us: overhead_us,
                ..Default::default()
            });
        }
        let c = metrics.totals();
        let mut out = String::new();
        c.overhead.0.render(&mut out, "o");
        assert!(out.contains("o_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("o_bucket{le=\"0.00025\"} 3\n"), "{out}");
        assert!(out.contains("o_bucket{le=\"0.005\"} 4\n"), "{out}");
        // A request answered without the upstream has no overhead of its own to count.
        assert!(out.contains("o_count 4\n"), "{out}");
    }

    #[test]
    fn threads_count_into_shards_and_a_scrape_sums_them() {
        let metrics = Metrics::default();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let metrics = &metrics;
                scope.spawn(move || {
                    for n in 0..250 {
                        metrics.observe(&RequestRecord {
                            model: Some(format!("model-{}", n % 3)),
                            account_name: Some(format!("account-{thread}")),
                            status: if n % 5 == 0 { 429 } else { 200 },
                            success: n % 5 != 0,
                            error_type: (n % 5 == 0).then(|| "rate_limit_error".to_owned()),
                            usage: ccflare_core::usage::Usage {
                                input_tokens: 10,
                                output_tokens: 1,
                                ..Default::default()
                            },
                            attempts: 1,
                            latency_ms: 20,
                            ..Default::default()
                        });
                    }
                });
            }
        });
        let c = metrics.totals();
        assert_eq!(c.requests.values().sum::<u64>(), 1_000);
        assert_eq!(
            c.requests[&(429, "model-0".to_owned(), "account-2".to_owned())],
            17
        );
        assert_eq!(c.tokens[&("model-1".to_owned(), "input")], 10 * 332);
        assert_eq!(c.errors["rate_limit_error"], 200);
        assert_eq!((c.attempts, c.latency.count), (1_000, 1_000));
        let model_2 = (200, "model-2".to_owned(), "account-0".to_owned());
        assert_eq!(c.requests[&model_2], 66);
    }

    #[test]
    fn client_chosen_models_are_capped() {
        let metrics = Metrics::default();
        for n in 0..(MAX_LABEL_VALUES + 10) {
            metrics.observe(&RequestRecord {
                model: Some(format!("model-{n}")),
                status: 200,
                success: true,
                ..Default::default()
            });
        }
        assert_eq!(metrics.models.len(), MAX_LABEL_VALUES);
        let c = metrics.totals();
        assert_eq!(c.requests[&(200, "other".to_owned(), String::new())], 10);
        assert_eq!(c.requests.len(), MAX_LABEL_VALUES + 1);
    }
}
