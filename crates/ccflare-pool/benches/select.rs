//! Criterion benchmark of account selection: the cost of one `Pool::select` (and the
//! `release` that always follows it) with 100 accounts and 10,000 live session pins, for every
//! strategy, with and without a session key. Run with
//! `cargo bench -p ccflare-pool --bench select`.

use ccflare_core::config::Strategy;
use ccflare_core::ratelimit::{RateLimitSnapshot, classify};
use ccflare_core::{Account, AccountId, AccountKind, Millis, Secret};
use ccflare_pool::{Pool, PoolConfig};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const ACCOUNTS: i64 = 100;
const SESSIONS: usize = 10_000;
const NOW: Millis = 1_800_000_000_000;

fn account(i: i64) -> Account {
    let credential = Secret::new(format!("sk-ant-api03-bench-{i:03}-0123456789abcdef"));
    let name = format!("account-{i:03}");
    Account {
        // A few priority levels, so the stable order is not simply the id order.
        priority: i % 3,
        ..Account::new(AccountId(i + 1), name, AccountKind::ApiKey, credential)
    }
}

fn session_key(i: usize) -> String {
    format!("session-{i:05}-5f0c6a2e-8d1b-4e57-9c3a")
}

/// A pool as a busy server has it: every account has reported rate-limit headers (so
/// `headroom` has figures to compare), and 10,000 sessions are pinned.
fn busy_pool(strategy: Strategy) -> Pool {
    let mut pool = Pool::new(PoolConfig {
        strategy,
        session_timeout_ms: 5 * 3600 * 1000,
    });
    pool.sync((0..ACCOUNTS).map(account).collect(), NOW);
    for i in 0..ACCOUNTS {
        let remaining = (1000 - i * 7).to_string();
        let headers = [
            ("anthropic-ratelimit-requests-limit", "1000"),
            ("anthropic-ratelimit-requests-remaining", remaining.as_str()),
            ("anthropic-ratelimit-requests-reset", "2027-01-15T10:00:00Z"),
        ];
        let snapshot = RateLimitSnapshot::from_headers(headers, NOW);
        let verdict = classify(200, &snapshot, NOW);
        pool.report(AccountId(i + 1), verdict, Some(snapshot), NOW);
    }
    for i in 0..SESSIONS {
        let pick = pool
            .select(NOW, Some(&session_key(i)), &[])
            .expect("an active account");
        pool.release(pick.id);
    }
    pool
}

fn select(c: &mut Criterion) {
    let keys: Vec<String> = (0..SESSIONS).map(session_key).collect();
    let mut group = c.benchmark_group("pool_select");
    for strategy in Strategy::ALL {
        let mut pool = busy_pool(strategy);
        group.bench_function(BenchmarkId::new(strategy.as_str(), "no session"), |b| {
            b.iter(|| {
                let pick = pool.select(black_box(NOW), None, &[]).expect("picks");
                pool.release(pick.id);
                pick.id
            })
        });
        let mut next = 0;
        group.bench_function(BenchmarkId::new(strategy.as_str(), "pinned session"), |b| {
            b.iter(|| {
                // Walk the live sessions so lookups do not all hit one warm cache line.
                next = (next + 7919) % SESSIONS;
                let key = keys[next].as_str();
                let pick = pool.select(black_box(NOW), Some(key), &[]).expect("picks");
                pool.release(pick.id);
                pick.id
            })
        });
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
