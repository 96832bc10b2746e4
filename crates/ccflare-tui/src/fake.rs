//! [`FakeSource`]: a [`Source`] in memory, for tests and screenshots. Its clock stands still
//! at [`NOW`] until told to move, and its accounts, requests and log lines come from a fixed
//! seed, so every frame drawn from it is the same on every run. Account and setting changes
//! work on its memory with the checks the real operations make that a person would notice (a
//! malformed key, a taken name, a wrong pasted code, a pinned setting).
//!
//! Its reports are computed from its own records, simply; the real figures come from
//! `ccflare_analytics::report`, which has its own tests.

use crate::source::{
    AccountRow, DatabaseHealth, LiveSettings, OAuthStart, ServerInfo, SettingChange, Source,
    SourceError,
};
use ccflare_analytics::{ErrorCount, Group, Percentiles, Point, Range, Report, Totals};
use ccflare_core::account::{check_api_key, default_key_name};
use ccflare_core::config::Strategy;
use ccflare_core::ratelimit::{RateLimitSnapshot, Window};
use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::secret::mask;
use ccflare_core::usage::Usage;
use ccflare_core::{AccountKind, AccountStatus, Millis, Secret};
use ccflare_oauth::Mode;
use ccflare_pool::RoutingState;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, broadcast};

/// Items each fake feed holds: as many as the server's request feed (ccflare-proxy's
/// `EVENT_CAPACITY`).
const FEED_CAPACITY: usize = 1024;

/// The fake's clock: 2026-01-31T12:00:00Z.
pub const NOW: Millis = 1_769_860_800_000;
const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// The warning a subscription login shows (SPEC §15), shortened.
const SUBSCRIPTION_RISK: &str = "Warning: Claude Pro/Max subscription tokens belong to Claude \
Code; routing requests through them can get the account banned. API keys are the supported way.";

/// What the fake holds.
#[derive(Debug)]
struct State {
    accounts: Vec<AccountRow>,
    /// Oldest first.
    records: Vec<RequestRecord>,
    settings: LiveSettings,
    health: DatabaseHealth,
    /// Open logins: flow id → (mode, name, state).
    logins: BTreeMap<String, (Mode, String, String)>,
    next_login: u32,
    /// Client keys made, by name (the fake keeps the key; the server keeps only its hash).
    client_keys: BTreeMap<String, Secret>,
}

#[derive(Debug)]
struct Inner {
    info: ServerInfo,
    now: AtomicI64,
    state: Mutex<State>,
    requests: broadcast::Sender<Arc<RequestRecord>>,
    logs: broadcast::Sender<Arc<str>>,
    history: Vec<Arc<str>>,
    account_loads: AtomicUsize,
    loaded: Notify,
}

/// A [`Source`] in memory; cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub struct FakeSource {
    inner: Arc<Inner>,
}

/// A small deterministic generator (SplitMix64), so the seed data needs no dependency.
struct Seed(u64);

impl Seed {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn snapshot(
    five_hours: (f64, Millis),
    seven_days: (f64, Millis),
    status: &str,
) -> RateLimitSnapshot {
    RateLimitSnapshot {
        unified_status: Some(status.to_owned()),
        unified_reset: Some(five_hours.1),
        unified_5h_utilization: Some(five_hours.0),
        unified_5h_reset: Some(five_hours.1),
        unified_7d_utilization: Some(seven_days.0),
        unified_7d_reset: Some(seven_days.1),
        seen_at: NOW - 30 * SECOND,
        ..RateLimitSnapshot::default()
    }
}

fn seed_accounts() -> Vec<AccountRow> {
    let row = |name: &str, kind, credential: &str, priority, status, state| AccountRow {
        name: name.to_owned(),
        kind,
        credential: mask(credential),
        priority,
        status,
        state,
        in_flight: 0,
        requests: 0,
        last_used: None,
        last_ratelimit: None,
    };
    vec![
        AccountRow {
            in_flight: 2,
            requests: 1_234,
            last_used: Some(NOW - 12 * SECOND),
            last_ratelimit: Some(RateLimitSnapshot {
                requests: Window {
                    limit: Some(50),
                    remaining: Some(45),
                    reset: Some(NOW + 40 * SECOND),
                },
                seen_at: NOW - 12 * SECOND,
                ..RateLimitSnapshot::default()
            }),
            ..row(
                "work",
                AccountKind::ApiKey,
                "sk-ant-api03-fakefakefakefake-wxyz",
                0,
                AccountStatus::Active,
                RoutingState::Active,
            )
        },
        AccountRow {
            in_flight: 1,
            requests: 987,
            last_used: Some(NOW - 3 * MINUTE),
            last_ratelimit: Some(snapshot(
                (0.62, NOW + HOUR + 20 * MINUTE),
                (0.21, NOW + 3 * DAY + 4 * HOUR),
                "allowed",
            )),
            ..row(
                "max-1",
                AccountKind::OAuth,
                "sk-ant-oat01-fakefakefakefake-abcd",
                1,
                AccountStatus::Active,
                RoutingState::Active,
            )
        },
        AccountRow {
            requests: 2_345,
            last_used: Some(NOW - 5 * MINUTE),
            last_ratelimit: Some(snapshot(
                (1.0, NOW + 4 * MINUTE + 10 * SECOND),
                (0.88, NOW + 2 * DAY),
                "rejected",
            )),
            ..row(
                "max-2",
                AccountKind::OAuth,
                "sk-ant-oat01-fakefakefakefake-efgh",
                1,
                AccountStatus::Active,
                RoutingState::RateLimited {
                    until: NOW + 4 * MINUTE + 10 * SECOND,
                },
            )
        },
        AccountRow {
            requests: 56,
            last_used: Some(NOW - 2 * DAY),
            ..row(
                "backup",
                AccountKind::ApiKey,
                "sk-ant-api03-fakefakefakefake-ijkl",
                5,
                AccountStatus::Paused,
                RoutingState::Paused,
            )
        },
    ]
}

const MODELS: [&str; 3] = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"];
const SERVING: [&str; 2] = ["work", "max-1"];

/// One request `age` before [`NOW`], shaped by the seed.
fn seed_record(n: u32, age: Millis, seed: &mut Seed) -> RequestRecord {
    let model = MODELS[seed.below(MODELS.len() as u64) as usize];
    let account = SERVING[seed.below(SERVING.len() as u64) as usize];
    let input = 200 + seed.below(4_000);
    let output = 20 + seed.below(600);
    let cache_read = if seed.below(3) == 0 {
        seed.below(20_000)
    } else {
        0
    };
    let ttfb = 150 + seed.below(900) as i64;
    let latency = ttfb + output as i64 * (2 + seed.below(6) as i64);
    let mut record = RequestRecord {
        id: format!("ccf_{n:06}"),
        started_at: NOW - age,
        method: "POST".to_owned(),
        path: "/v1/messages".to_owned(),
        model: Some(model.to_owned()),
        account_name: Some(account.to_owned()),
        status: 200,
        success: true,
        attempts: 1,
        latency_ms: latency,
        ttfb_ms: Some(ttfb),
        streamed: seed.below(4) != 0,
        usage: Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cache_read,
            ..Usage::default()
        },
        cost_usd: (input as f64 * 3.0 + output as f64 * 15.0 + cache_read as f64 * 0.3) / 1e6,
        output_tokens_per_second: RequestRecord::tokens_per_second(output, latency, Some(ttfb)),
        session_key: Some(format!("session-{}", n % 7)),
        // ccflare's own time, 0.15 to 0.55 ms (as live records carry it).
        proxy_overhead_us: Some(150 + (i64::from(n) * 37) % 400),
        ..RequestRecord::default()
    };
    match seed.below(20) {
        // Failed over from the limited account, then served: its session moved.
        0 | 1 => {
            record.moved = true;
            // Its prompt written again on this account (as cache, not new input).
            record.usage.cache_creation_input_tokens = record.usage.input_tokens;
            record.usage.input_tokens = 0;
            record.attempts = 2;
            record.attempt_failures = vec![AttemptFailure {
                account: "max-2".to_owned(),
                status: Some(429),
                reason: "rate_limited".to_owned(),
            }];
        }
        2 => {
            record.status = 529;
            record.success = false;
            record.error_type = Some("overloaded_error".to_owned());
            record.error_message = Some("Overloaded".to_owned());
            record.attempts = 2;
            record.attempt_failures = vec![
                AttemptFailure {
                    account: "max-1".to_owned(),
                    status: Some(529),
                    reason: "overloaded".to_owned(),
                },
                AttemptFailure {
                    account: "work".to_owned(),
                    status: Some(529),
                    reason: "overloaded".to_owned(),
                },
            ];
            record.usage = Usage::default();
            record.cost_usd = 0.0;
            record.output_tokens_per_second = None;
        }
        3 => {
            record.status = 499;
            record.success = false;
            record.error_type = Some("client_closed".to_owned());
            record.usage_incomplete = true;
        }
        _ => {}
    }
    record
}

fn seed_records() -> Vec<RequestRecord> {
    let mut seed = Seed(0x00cc_f1a3);
    let mut records = Vec::new();
    let mut n = 0;
    // About one a minute over the last day (busier in its working hours), a few an hour
    // back to 30 days.
    for minute in 0..(24 * 60) {
        let busy = (minute / 60) % 24 < 10;
        for _ in 0..seed.below(if busy { 3 } else { 2 }) {
            n += 1;
            let age = minute * MINUTE + seed.below(MINUTE as u64) as Millis;
            records.push(seed_record(n, age, &mut seed));
        }
    }
    for hour in 24..(30 * 24) {
        let count = seed.below(6);
        for _ in 0..count {
            n += 1;
            let age = hour * HOUR + seed.below(HOUR as u64) as Millis;
            records.push(seed_record(n, age, &mut seed));
        }
    }
    records.sort_by_key(|r| r.started_at);
    records
}

fn seed_logs() -> Vec<Arc<str>> {
    let line =
        |age: Millis, level: &str, target: &str, message: &str, fields: serde_json::Value| {
            Arc::from(
                serde_json::json!({
                    "time": NOW - age,
                    "level": level,
                    "target": target,
                    "message": message,
                    "fields": fields,
                })
                .to_string(),
            )
        };
    vec![
        line(
            2 * HOUR + 5 * MINUTE,
            "INFO",
            "ccflare_server",
            "listening",
            serde_json::json!({"address": "127.0.0.1:8080"}),
        ),
        line(
            40 * MINUTE,
            "WARN",
            "ccflare_proxy::forward",
            "upstream rate limited",
            serde_json::json!({"account": "max-2", "status": 429, "retry_in": "4m 10s"}),
        ),
        line(
            25 * MINUTE,
            "INFO",
            "ccflare_api::accounts",
            "account status changed through the API",
            serde_json::json!({"account": "backup", "status": "paused"}),
        ),
        line(
            3 * MINUTE,
            "ERROR",
            "ccflare_proxy::forward",
            "every account failed",
            serde_json::json!({"error_type": "overloaded_error", "attempts": 2}),
        ),
        line(
            12 * SECOND,
            "INFO",
            "ccflare_proxy::recorder",
            "request finished",
            serde_json::json!({"account": "work", "status": 200, "latency_ms": 1240}),
        ),
    ]
}

impl Default for FakeSource {
    fn default() -> Self {
        FakeSource::seeded()
    }
}

impl FakeSource {
    /// Four accounts (active, subscription, rate limited, paused), a month of requests and a
    /// few log lines, at [`NOW`].
    pub fn seeded() -> FakeSource {
        FakeSource::with(seed_accounts(), seed_records())
    }

    /// No accounts and no requests.
    pub fn empty() -> FakeSource {
        FakeSource::with(Vec::new(), Vec::new())
    }

    fn with(accounts: Vec<AccountRow>, records: Vec<RequestRecord>) -> FakeSource {
        FakeSource {
            inner: Arc::new(Inner {
                info: ServerInfo {
                    listen: "http://127.0.0.1:8080".to_owned(),
                    database: "/home/me/.local/share/ccflare/ccflare.db".to_owned(),
                    version: "0.1.0".to_owned(),
                    started_at: NOW - 2 * HOUR - 5 * MINUTE,
                    utc_offset_ms: 0,
                },
                now: AtomicI64::new(NOW),
                state: Mutex::new(State {
                    accounts,
                    records,
                    settings: LiveSettings {
                        strategy: Strategy::Session,
                        session_timeout_s: 18_000,
                        retention_days: 30,
                        pinned: Vec::new(),
                    },
                    health: DatabaseHealth::default(),
                    logins: BTreeMap::new(),
                    next_login: 0,
                    client_keys: BTreeMap::new(),
                }),
                requests: broadcast::channel(FEED_CAPACITY).0,
                logs: broadcast::channel(FEED_CAPACITY).0,
                history: seed_logs(),
                account_loads: AtomicUsize::new(0),
                loaded: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock.
    pub fn advance(&self, by: Millis) {
        self.inner.now.fetch_add(by, Ordering::SeqCst);
    }

    /// Records a finished request and publishes it on the live feed.
    pub fn finish(&self, record: RequestRecord) {
        let record = Arc::new(record);
        self.state().records.push((*record).clone());
        let _ = self.inner.requests.send(record);
    }

    /// Publishes a log line (JSON, as the log feed sends it).
    pub fn log(&self, line: &str) {
        let _ = self.inner.logs.send(Arc::from(line));
    }

    pub fn account(&self, name: &str) -> Option<AccountRow> {
        self.state()
            .accounts
            .iter()
            .find(|a| a.name == name)
            .cloned()
    }

    pub fn account_rows(&self) -> Vec<AccountRow> {
        self.state().accounts.clone()
    }

    pub fn set_health(&self, health: DatabaseHealth) {
        self.state().health = health;
    }

    /// Marks options as set by a flag or the environment.
    pub fn pin(&self, key: &'static str) {
        self.state().settings.pinned.push(key);
    }

    /// How often the accounts were read.
    pub fn account_loads(&self) -> usize {
        self.inner.account_loads.load(Ordering::SeqCst)
    }

    /// Waits until the accounts were read `n` times.
    pub async fn wait_for_account_loads(&self, n: usize) {
        loop {
            let notified = self.inner.loaded.notified();
            if self.account_loads() >= n {
                return;
            }
            notified.await;
        }
    }

    fn find<'a>(state: &'a mut State, name: &str) -> Result<&'a mut AccountRow, SourceError> {
        state
            .accounts
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| SourceError::AccountNotFound {
                name: name.to_owned(),
            })
    }

    fn check_new_name(state: &State, name: &str) -> Result<(), SourceError> {
        if name.is_empty() || name.contains('/') || name.trim() != name {
            return Err(SourceError::Invalid(format!(
                "invalid account name {name:?}: use 1 to 64 printable characters, no `/`, no \
                 leading or trailing spaces"
            )));
        }
        if state.accounts.iter().any(|a| a.name == name) {
            return Err(SourceError::Conflict(format!(
                "an account named {name:?} already exists"
            )));
        }
        Ok(())
    }

    fn new_account(name: &str, kind: AccountKind, credential: &str) -> AccountRow {
        AccountRow {
            name: name.to_owned(),
            kind,
            credential: mask(credential),
            priority: 0,
            status: AccountStatus::Active,
            state: RoutingState::Active,
            in_flight: 0,
            requests: 0,
            last_used: None,
            last_ratelimit: None,
        }
    }
}

/// Nearest-rank percentiles of `values`.
fn percentiles(mut values: Vec<i64>) -> Percentiles {
    values.sort_unstable();
    let n = values.len() as i64;
    let at = |per_mille: i64| {
        (n > 0).then(|| values[(((per_mille * n + 999) / 1000).clamp(1, n) - 1) as usize])
    };
    Percentiles {
        samples: n,
        p50: at(500),
        p95: at(950),
        p99: at(990),
    }
}

fn totals<'a>(records: impl IntoIterator<Item = &'a RequestRecord>) -> Totals {
    let mut t = Totals::default();
    let mut latency = 0;
    for r in records {
        t.requests += 1;
        t.successes += i64::from(r.success);
        t.input_tokens += r.usage.input_tokens as i64;
        t.output_tokens += r.usage.output_tokens as i64;
        t.cache_read_tokens += r.usage.cache_read_input_tokens as i64;
        t.cache_write_tokens += r.usage.cache_creation_input_tokens as i64;
        t.cost_usd += r.cost_usd;
        if r.moved {
            t.session_moves += 1;
            t.moved_cache_write_tokens += r.usage.cache_creation_input_tokens as i64;
        }
        latency += r.latency_ms;
    }
    t.errors = t.requests - t.successes;
    t.total_tokens = t.input_tokens + t.output_tokens + t.cache_read_tokens + t.cache_write_tokens;
    if t.requests > 0 {
        t.success_rate = t.successes as f64 / t.requests as f64;
        t.average_response_time = latency as f64 / t.requests as f64;
    }
    t
}

fn groups(records: &[&RequestRecord], key: fn(&RequestRecord) -> Option<String>) -> Vec<Group> {
    let mut by: BTreeMap<Option<String>, Vec<&RequestRecord>> = BTreeMap::new();
    for r in records {
        by.entry(key(r)).or_default().push(r);
    }
    let mut groups: Vec<Group> = by
        .into_iter()
        .map(|(name, records)| Group {
            name,
            totals: totals(records),
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

fn report(records: &[RequestRecord], now: Millis, range: Range) -> Report {
    let since = now - range.duration_ms();
    let bucket = range.bucket_ms();
    let inside: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.started_at >= since && r.started_at <= now)
        .collect();
    let mut series = Vec::new();
    let mut start = since.div_euclid(bucket) * bucket;
    while start <= now {
        let end = start + bucket;
        let in_bucket: Vec<&RequestRecord> = inside
            .iter()
            .copied()
            .filter(|r| r.started_at >= start && r.started_at < end)
            .collect();
        let t = totals(in_bucket.iter().copied());
        let latency = percentiles(in_bucket.iter().map(|r| r.latency_ms).collect());
        series.push(Point {
            time: start,
            requests: t.requests,
            errors: t.errors,
            total_tokens: t.total_tokens,
            cost_usd: t.cost_usd,
            average_response_time: t.average_response_time,
            latency_p50_ms: latency.p50,
            latency_p95_ms: latency.p95,
        });
        start = end;
    }
    let mut errors: BTreeMap<String, i64> = BTreeMap::new();
    for r in inside.iter().filter(|r| !r.success) {
        let kind = r
            .error_type
            .clone()
            .unwrap_or_else(|| format!("http_{}", r.status));
        *errors.entry(kind).or_default() += 1;
    }
    let mut errors: Vec<ErrorCount> = errors
        .into_iter()
        .map(|(error_type, count)| ErrorCount { error_type, count })
        .collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.count));
    let count_since = |from: Millis| records.iter().filter(|r| r.started_at >= from).count() as i64;
    Report {
        range: range.as_str(),
        since,
        until: now,
        rollup_since: since.div_euclid(HOUR) * HOUR,
        bucket_ms: bucket,
        totals: totals(inside.iter().copied()),
        latency_ms: percentiles(inside.iter().map(|r| r.latency_ms).collect()),
        ttfb_ms: percentiles(inside.iter().filter_map(|r| r.ttfb_ms).collect()),
        series,
        models: groups(&inside, |r| r.model.clone()),
        accounts: groups(&inside, |r| r.account_name.clone()),
        client_keys: groups(&inside, |r| r.client_key.clone()),
        errors,
        requests_last_minute: count_since(now - MINUTE),
        requests_last_hour: count_since(now - HOUR),
    }
}

impl Source for FakeSource {
    type Requests = broadcast::Receiver<Arc<RequestRecord>>;
    type Logs = broadcast::Receiver<Arc<str>>;

    fn info(&self) -> ServerInfo {
        self.inner.info.clone()
    }

    fn now(&self) -> Millis {
        self.inner.now.load(Ordering::SeqCst)
    }

    fn health(&self) -> DatabaseHealth {
        self.state().health.clone()
    }

    fn settings(&self) -> LiveSettings {
        self.state().settings.clone()
    }

    fn subscribe_requests(&self) -> Self::Requests {
        self.inner.requests.subscribe()
    }

    fn subscribe_logs(&self) -> (Vec<Arc<str>>, Self::Logs) {
        (self.inner.history.clone(), self.inner.logs.subscribe())
    }

    async fn accounts(&self) -> Result<Vec<AccountRow>, SourceError> {
        let accounts = self.state().accounts.clone();
        self.inner.account_loads.fetch_add(1, Ordering::SeqCst);
        self.inner.loaded.notify_waiters();
        Ok(accounts)
    }

    async fn recent_requests(&self, limit: u32) -> Result<Vec<RequestRecord>, SourceError> {
        let state = self.state();
        Ok(state
            .records
            .iter()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn report(&self, range: Range) -> Result<Report, SourceError> {
        Ok(report(&self.state().records, self.now(), range))
    }

    async fn add_api_key(&self, key: Secret, name: Option<String>) -> Result<String, SourceError> {
        check_api_key(key.expose())
            .map_err(|why| SourceError::Invalid(format!("api_key: {why}")))?;
        let mut state = self.state();
        let name = name.unwrap_or_else(|| default_key_name(key.expose()));
        FakeSource::check_new_name(&state, &name)?;
        state.accounts.push(FakeSource::new_account(
            &name,
            AccountKind::ApiKey,
            key.expose(),
        ));
        Ok(name)
    }

    async fn create_client_key(&self, name: String) -> Result<Secret, SourceError> {
        let mut state = self.state();
        if state.client_keys.contains_key(&name) {
            return Err(SourceError::Conflict(format!(
                "a client key named {name} exists"
            )));
        }
        let key = Secret::new(format!("ccf_fake{:0>39}", state.client_keys.len() + 1));
        state.client_keys.insert(name, key.clone());
        Ok(key)
    }

    async fn oauth_begin(&self, mode: Mode, name: String) -> Result<OAuthStart, SourceError> {
        let mut state = self.state();
        FakeSource::check_new_name(&state, &name)?;
        state.next_login += 1;
        let flow_id = format!("flow-{}", state.next_login);
        let login_state = format!("state{}", state.next_login);
        let start = OAuthStart {
            authorize_url: format!(
                "https://claude.ai/oauth/authorize?code=true&client_id=9d1c250a-e61b-44d9-88ed-\
                 5944d1962f5e&response_type=code&redirect_uri=https%3A%2F%2Fconsole.anthropic.\
                 com%2Foauth%2Fcode%2Fcallback&scope=org%3Acreate_api_key+user%3Aprofile+user%3A\
                 inference&code_challenge=fakechallenge&code_challenge_method=S256&state=\
                 {login_state}"
            ),
            flow_id: flow_id.clone(),
            expires_at: self.now() + 10 * MINUTE,
            warning: (mode == Mode::Max).then(|| SUBSCRIPTION_RISK.to_owned()),
        };
        state.logins.insert(flow_id, (mode, name, login_state));
        Ok(start)
    }

    async fn oauth_complete(&self, flow_id: String, code: Secret) -> Result<String, SourceError> {
        let mut state = self.state();
        let Some((mode, name, expected)) = state.logins.get(&flow_id).cloned() else {
            return Err(SourceError::LoginExpired);
        };
        let Some((code, pasted_state)) = code.expose().trim().split_once('#') else {
            return Err(SourceError::Invalid(
                "the pasted code is not CODE#STATE: paste the whole code the page shows".into(),
            ));
        };
        if pasted_state != expected {
            return Err(SourceError::Invalid(
                "the pasted code does not belong to this login (state mismatch): paste the code \
                 shown after this login, or start a new one"
                    .into(),
            ));
        }
        if code == "refused" {
            state.logins.remove(&flow_id);
            return Err(SourceError::Login(
                "the token endpoint refused the code (invalid_grant): start a new login".into(),
            ));
        }
        state.logins.remove(&flow_id);
        let (kind, credential) = match mode {
            Mode::Max => (AccountKind::OAuth, "sk-ant-oat01-fromthelogin-0000"),
            Mode::Console => (AccountKind::ApiKey, "sk-ant-api03-mintedbylogin-1111"),
        };
        state
            .accounts
            .push(FakeSource::new_account(&name, kind, credential));
        Ok(name)
    }

    async fn set_paused(&self, name: String, paused: bool) -> Result<(), SourceError> {
        let mut state = self.state();
        let account = FakeSource::find(&mut state, &name)?;
        (account.status, account.state) = if paused {
            (AccountStatus::Paused, RoutingState::Paused)
        } else {
            (AccountStatus::Active, RoutingState::Active)
        };
        Ok(())
    }

    async fn rename(&self, name: String, new_name: String) -> Result<(), SourceError> {
        let mut state = self.state();
        if name != new_name {
            FakeSource::check_new_name(&state, &new_name)?;
        }
        FakeSource::find(&mut state, &name)?.name = new_name;
        Ok(())
    }

    async fn set_priority(&self, name: String, priority: i64) -> Result<(), SourceError> {
        FakeSource::find(&mut self.state(), &name)?.priority = priority;
        Ok(())
    }

    async fn remove(&self, name: String) -> Result<(), SourceError> {
        let mut state = self.state();
        FakeSource::find(&mut state, &name)?;
        state.accounts.retain(|a| a.name != name);
        Ok(())
    }

    async fn change_setting(&self, change: SettingChange) -> Result<LiveSettings, SourceError> {
        let mut state = self.state();
        let (key, _) = change.as_option();
        if state.settings.is_pinned(key) {
            return Err(SourceError::Conflict(format!(
                "{key} is set by the environment, which outranks stored settings: a change here \
                 would have no effect; remove it there first"
            )));
        }
        match change {
            SettingChange::Strategy(strategy) => state.settings.strategy = strategy,
            SettingChange::SessionTimeout { seconds } => {
                state.settings.session_timeout_s = seconds;
            }
            SettingChange::RetentionDays { days } => state.settings.retention_days = days,
        }
        Ok(state.settings.clone())
    }
}
