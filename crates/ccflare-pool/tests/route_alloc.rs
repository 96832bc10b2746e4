//! What the routing explanation costs on the request path (issue 16: "no heap allocation when
//! nobody asked for the header"), counted by a counting global allocator: for every strategy, a
//! routing decision (a pinned session, a failover past an account already tried, a request
//! without a session) and putting its route on the request's record allocate nothing; only the
//! rendering (the `x-ccflare-route` header a client asked for, the writer binding the row, the
//! live views) allocates, and the test prints what it costs. One test in its own binary: the
//! allocator's counts are the whole process's, and nothing else runs while it counts.
//!
//! `cargo test -p ccflare-pool --test route_alloc -- --nocapture` prints the figures of
//! docs/benchmarks.md.

use ccflare_core::config::Strategy;
use ccflare_core::ratelimit::{RateLimitSnapshot, Verdict};
use ccflare_core::record::RequestRecord;
use ccflare_core::{Account, AccountId, AccountKind, Millis, Secret, Usage};
use ccflare_pool::{Demand, Pool, PoolConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const T0: Millis = 1_795_687_200_000;
const RESET: Millis = T0 + 5 * 3_600_000;
/// Requests counted per case.
const REQUESTS: u64 = 200;
const NAMES: [&str; 5] = ["max-1", "max-2", "pro-1", "pro-2", "work"];

fn account(id: i64, name: &str) -> Account {
    let credential = Secret::new(format!("sk-ant-oat01-{name}-0123456789abcdef"));
    Account::new(AccountId(id), name, AccountKind::OAuth, credential)
}

/// Five accounts with forecasts (two answers with subscription headers each, so `headroom`
/// explains with its basis), the last one rate limited: every kind of line gets built.
fn pool(strategy: Strategy) -> Pool {
    let mut pool = Pool::new(PoolConfig {
        strategy,
        session_timeout_ms: 3_600_000,
    });
    let accounts = NAMES
        .iter()
        .zip(1..)
        .map(|(n, id)| account(id, n))
        .collect();
    pool.sync(accounts, T0);
    for id in 1..=NAMES.len() as i64 {
        for (utilization, at) in [(0.1, T0), (0.2, T0 + 60_000)] {
            let snapshot = RateLimitSnapshot {
                unified_status: Some("allowed".into()),
                unified_5h_utilization: Some(utilization),
                unified_5h_reset: Some(RESET),
                seen_at: at,
                ..Default::default()
            };
            let serve = Verdict::Serve { bench_until: None };
            pool.report(AccountId(id), serve, Some(snapshot), at);
            let usage = Usage {
                input_tokens: 20_000,
                ..Usage::default()
            };
            pool.finish(AccountId(id), 0, None, Some(&usage), at);
        }
    }
    let limited = Verdict::RateLimited { until: Some(RESET) };
    pool.report(AccountId(NAMES.len() as i64), limited, None, T0 + 60_000);
    pool
}

/// What one request's routing costs: the decision and the route put on the record (counted),
/// then the line rendered as the header would be (counted apart).
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    allocations: usize,
    bytes: usize,
    render_allocations: usize,
    render_bytes: usize,
}

/// `REQUESTS` requests of the same shape; the session (if any) is pinned beforehand, as a
/// conversation's later turns find it.
fn measure(strategy: Strategy, session: Option<&str>, tried_first: bool) -> Cost {
    let mut pool = pool(strategy);
    let now = T0 + 120_000;
    let first = pool
        .select_for(now, &demand(session, &[]))
        .expect("an account");
    pool.finish(first.id, first.reserved, session, None, now);
    let tried = [first.id];
    let tried: &[AccountId] = if tried_first { &tried } else { &[] };
    let mut record = RequestRecord::default();
    let mut cost = Cost::default();
    for _ in 0..REQUESTS {
        let region = Region::new(GLOBAL);
        let pick = pool
            .select_for(now, &demand(session, tried))
            .expect("an account");
        let (id, reserved) = (pick.id, pick.reserved);
        record.set_route(pick.route);
        let decided = region.change();
        cost.allocations += decided.allocations + decided.reallocations;
        cost.bytes += decided.bytes_allocated;
        let region = Region::new(GLOBAL);
        let line = black_box(record.route.as_ref().map(ToString::to_string));
        let rendered = region.change();
        cost.render_allocations += rendered.allocations + rendered.reallocations;
        cost.render_bytes += rendered.bytes_allocated;
        assert!(line.is_some_and(|line| line.contains(": ")));
        pool.finish(id, reserved, session, None, now);
    }
    cost
}

fn demand<'a>(session: Option<&'a str>, tried: &'a [AccountId]) -> Demand<'a> {
    Demand {
        session,
        tried,
        prompt_tokens: 4_000,
        max_tokens: 1_000,
    }
}

#[test]
fn explaining_a_route_allocates_nothing_until_the_line_is_read() {
    let per = |n: usize| n as f64 / REQUESTS as f64;
    let mut rendered = Vec::new();
    for strategy in Strategy::ALL {
        for (case, session, tried_first) in [
            ("pinned session", Some("conversation-1"), false),
            ("failover", Some("conversation-1"), true),
            ("no session", None, false),
        ] {
            let cost = measure(strategy, session, tried_first);
            println!(
                "{:>14} {case:<15} decision + record: {:.1} allocations ({:.0} bytes); \
                 the line: {:.1} allocations ({:.0} bytes)",
                strategy.to_string(),
                per(cost.allocations),
                per(cost.bytes),
                per(cost.render_allocations),
                per(cost.render_bytes)
            );
            assert_eq!(
                (cost.allocations, cost.bytes),
                (0, 0),
                "{strategy} {case}: the explanation allocated on the request path"
            );
            assert!(cost.render_allocations > 0, "the line is rendered");
            rendered.push(cost);
        }
    }
    let total = |f: fn(&Cost) -> usize| per(rendered.iter().map(f).sum()) / rendered.len() as f64;
    println!(
        "mean over the cases: rendering the line costs {:.1} allocations, {:.0} bytes",
        total(|c| c.render_allocations),
        total(|c| c.render_bytes)
    );
}
