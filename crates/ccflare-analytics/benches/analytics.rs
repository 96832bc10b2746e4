//! How fast the analytics queries answer at a million request rows (`docs/benchmarks.md`,
//! "Analytics at 1,000,000 rows"). Generates the rows through the real writer (so the rollups
//! are built the way a running server builds them) into a temporary SQLite file, then times
//! every query `/api/analytics`, `/api/stats`, `/api/requests` and `ccflare-cli stats` make.
//!
//! `cargo bench -p ccflare-analytics --bench analytics` (release build). Environment:
//! `CCFLARE_BENCH_ROWS` (default 1000000), `CCFLARE_BENCH_DAYS` (default 30, the span the rows
//! are spread over), `CCFLARE_BENCH_DB` (keep the database at this path and reuse it next time).

use ccflare_analytics::Range;
use ccflare_analytics::stats::{Breakdown, Zone};
use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::usage::Usage;
use ccflare_core::{AccountId, Clock, Millis, SystemClock};
use ccflare_storage::requests::{
    self, AccountFilter, ModelFilter, Order, RequestFilter, StatusFilter,
};
use ccflare_storage::{Db, Writer};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*), so every run writes the same rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const MODELS: [(&str, f64, f64); 5] = [
    ("claude-sonnet-4-5", 3.0, 15.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-sonnet-4-0", 3.0, 15.0),
    ("claude-3-5-haiku-latest", 0.8, 4.0),
];

fn record(rng: &mut Rng, n: u64, started_at: Millis) -> RequestRecord {
    let (model, input_price, output_price) = MODELS[(rng.below(100) as usize * 7 / 100).min(4)];
    let account = rng.below(6) as i64 + 1;
    // A long-tailed latency: mostly 1-10 s, some up to minutes, a few fast failures.
    let latency_ms = (400.0 * (1.0 + 30.0 * rng.unit().powi(3)) * (1.0 + 4.0 * rng.unit())) as i64;
    let ttfb_ms = (latency_ms as f64 * (0.05 + 0.3 * rng.unit())) as i64;
    let roll = rng.below(1000);
    let (status, error_type) = match roll {
        0..=19 => (429, Some("rate_limit_error")),
        20..=29 => (529, Some("overloaded_error")),
        30..=34 => (499, Some("client_closed")),
        35..=37 => (500, Some("api_error")),
        38..=39 => (400, Some("invalid_request_error")),
        _ => (200, None),
    };
    let success = status == 200;
    let input = 500 + rng.below(20_000);
    let output = if success { 50 + rng.below(2_000) } else { 0 };
    let cache_read = if rng.below(2) == 0 {
        rng.below(50_000)
    } else {
        0
    };
    let cost = (input as f64 * input_price
        + output as f64 * output_price
        + cache_read as f64 * input_price * 0.1)
        / 1e6;
    RequestRecord {
        id: format!("bench_{n:08x}"),
        started_at,
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: Some(model.into()),
        account_id: Some(AccountId(account)),
        account_name: Some(format!("account-{account}")),
        status,
        success,
        error_type: error_type.map(str::to_owned),
        error_message: error_type.map(|_| "generated".to_owned()),
        attempts: if status == 429 { 2 } else { 1 },
        attempt_failures: if status == 429 {
            vec![AttemptFailure {
                account: "account-0".into(),
                status: Some(429),
                reason: "rate_limited".into(),
            }]
        } else {
            Vec::new()
        },
        latency_ms,
        ttfb_ms: success.then_some(ttfb_ms),
        streamed: rng.below(3) != 0,
        usage: Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cache_read,
            ..Default::default()
        },
        usage_incomplete: false,
        cost_usd: cost,
        cost_estimated: false,
        output_tokens_per_second: RequestRecord::tokens_per_second(
            output,
            latency_ms,
            Some(ttfb_ms),
        ),
        session_key: Some(format!("session-{}", rng.below(500))),
        client_key: None,
        resource_id: None,
        proxy_overhead_us: None,
        route: None,
        upstream_request_id: None,
        message_id: None,
        // About one request in fifty had its session moved (a rate limit, a failover).
        moved: n.is_multiple_of(50),
    }
}

async fn generate(db: &Db, rows: u64, days: i64, now: Millis) {
    let span = days * 86_400_000;
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let chunk = 20_000;
    let mut n = 0;
    while n < rows {
        let upto = (n + chunk).min(rows);
        for i in n..upto {
            // Evenly spread in time, oldest first, as a server would record them.
            let at = now - span + (span as u128 * i as u128 / rows as u128) as i64;
            handle.record(record(&mut rng, i, at));
        }
        handle.flush().await;
        n = upto;
        eprint!("\r  generated {n} rows");
    }
    writer.close().await;
    let elapsed = started.elapsed();
    eprintln!(
        "\r  generated {rows} rows through the writer in {:.1} s ({:.0} rows/s)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
}

struct Timing {
    median: Duration,
    max: Duration,
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    // One run to warm SQLite's page cache, as a running server's would be.
    let _ = f().await;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let _ = std::hint::black_box(f().await);
        samples.push(start.elapsed());
    }
    samples.sort();
    Timing {
        median: samples[samples.len() / 2],
        max: samples[samples.len() - 1],
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`. Run as a test (`cargo test --benches`) it only checks
    // that every query runs, on a few rows.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(smoke));
}

async fn run(smoke: bool) {
    let rows = if smoke {
        2_000
    } else {
        env_number("CCFLARE_BENCH_ROWS", 1_000_000)
    };
    let days = env_number("CCFLARE_BENCH_DAYS", 30) as i64;
    let now = SystemClock.now_ms();
    let temp = tempfile::tempdir().expect("a temp dir");
    let path = std::env::var_os("CCFLARE_BENCH_DB")
        .filter(|_| !smoke)
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().join("bench.db"));
    let db = Db::open_path(&path).await.expect("database opens");
    let existing = requests::count(&db).await.expect("count");
    eprintln!(
        "analytics benchmark: {} ({existing} rows already)",
        path.display()
    );
    if existing == 0 {
        generate(&db, rows, days, now).await;
    }
    let rows = requests::count(&db).await.expect("count");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{rows} request rows over {days} days, database {:.0} MB",
        size as f64 / 1e6
    );
    println!("{:<44} {:>10} {:>10}", "query", "median", "max");
    let runs = if smoke { 1 } else { 30 };
    let report = |name: &str, t: Timing| {
        println!(
            "{name:<44} {:>8.2}ms {:>8.2}ms",
            t.median.as_secs_f64() * 1e3,
            t.max.as_secs_f64() * 1e3
        );
    };
    report(
        "GET /api/analytics (overview)",
        time(runs, || ccflare_analytics::overview(&db, now)).await,
    );
    for range in Range::ALL {
        report(
            &format!("GET /api/analytics?range={range}"),
            time(runs, || async {
                // The endpoint answers both: the seed's figures and the range's.
                let overview = ccflare_analytics::overview(&db, now).await;
                let report = ccflare_analytics::report(&db, now, range).await;
                (overview, report)
            })
            .await,
        );
    }
    report(
        "GET /api/stats (all time)",
        time(runs, || ccflare_analytics::all_time(&db)).await,
    );
    let day = 86_400_000;
    for (name, breakdown, zone) in [
        (
            "ccflare-cli stats daily (7 days, UTC)",
            Breakdown::Daily { days: 7 },
            Zone::Utc,
        ),
        (
            "ccflare-cli stats daily (30 days, local)",
            Breakdown::Daily { days: 30 },
            Zone::Local,
        ),
        (
            "ccflare-cli stats hourly (24 hours)",
            Breakdown::Hourly { hours: 24 },
            Zone::Local,
        ),
        (
            "ccflare-cli stats models (30 days)",
            Breakdown::Models {
                since: now - 30 * day,
            },
            Zone::Local,
        ),
    ] {
        report(
            name,
            time(runs, || {
                ccflare_analytics::stats::stats(&db, breakdown, zone, now)
            })
            .await,
        );
    }
    let newest = || Order::NewestStarted { after: None };
    let all = RequestFilter::default();
    report(
        "GET /api/requests (newest 50)",
        time(runs, || requests::list(&db, &all, newest(), 50)).await,
    );
    let deep = requests::list(&db, &all, newest(), 1000)
        .await
        .expect("page");
    let last = deep.requests.last().expect("a full page").record.clone();
    let page_20 = || Order::NewestStarted {
        after: Some((last.started_at, last.id.clone())),
    };
    report(
        "GET /api/requests?cursor=… (after 1000)",
        time(runs, || requests::list(&db, &all, page_20(), 50)).await,
    );
    let by_model = RequestFilter {
        model: Some(ModelFilter::Is("claude-haiku-4-5".into())),
        ..Default::default()
    };
    report(
        "GET /api/requests?model=claude-haiku-4-5",
        time(runs, || requests::list(&db, &by_model, newest(), 50)).await,
    );
    let by_status = RequestFilter {
        status: Some(StatusFilter::Code(500)),
        ..Default::default()
    };
    report(
        "GET /api/requests?status=500",
        time(runs, || requests::list(&db, &by_status, newest(), 50)).await,
    );
    let errors = RequestFilter {
        status: Some(StatusFilter::Error),
        account: Some(AccountFilter::Named("account-3".into())),
        ..Default::default()
    };
    report(
        "GET /api/requests?status=error&account=…",
        time(runs, || requests::list(&db, &errors, newest(), 50)).await,
    );
    db.close().await;
}
