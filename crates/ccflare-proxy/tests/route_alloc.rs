//! Allocations per request of the whole path, for information (docs/benchmarks.md): the real
//! proxy in process with the mock upstream, the client, the writer and SQLite all counted by
//! one counting global allocator, over a run of requests of one pinned conversation, without
//! and with the `x-ccflare-route` header. Nothing is asserted about the totals (they include
//! the mock, the client and the database); the test checks only that each request was served
//! and that asking for the explanation is what adds its rendering. One test in its own binary:
//! the counts are the whole process's.
//!
//! `cargo test -p ccflare-proxy --test route_alloc -- --nocapture` prints the figures.

mod common;

use ccflare_core::config::Strategy;
use common::{App, Options, spawn_app};
use http::StatusCode;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests counted per run (after one that pins the conversation and warms the connections).
const REQUESTS: usize = 200;

/// Allocations and bytes per request of `REQUESTS` requests of one conversation, each written
/// to the database before the count ends.
async fn per_request(app: &App, explain: bool) -> (f64, f64) {
    let mut headers = vec![("x-session-id", "conversation-1")];
    if explain {
        headers.push(("x-ccflare-route", "1"));
    }
    let warm = app.post(&headers, false).await;
    assert_eq!(warm.status, StatusCode::OK);
    app.state.writer.flush().await;
    let region = Region::new(GLOBAL);
    for _ in 0..REQUESTS {
        let reply = app.post(&headers, false).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers.contains_key("x-ccflare-route"), explain);
    }
    app.state.writer.flush().await;
    let change = region.change();
    let n = REQUESTS as f64;
    (
        (change.allocations + change.reallocations) as f64 / n,
        change.bytes_allocated as f64 / n,
    )
}

#[tokio::test]
async fn allocations_per_request_with_and_without_the_route_header() {
    let app = spawn_app(Options {
        strategy: Strategy::Session,
        accounts: vec![("alpha", 0), ("beta", 1), ("gamma", 2)],
        ..Options::default()
    })
    .await;
    let (plain, plain_bytes) = per_request(&app, false).await;
    let (explained, explained_bytes) = per_request(&app, true).await;
    println!(
        "whole request path, in process (proxy + mock + client + writer): \
         {plain:.1} allocations ({plain_bytes:.0} bytes) per request without x-ccflare-route, \
         {explained:.1} ({explained_bytes:.0} bytes) with it"
    );
    assert_eq!(app.records().await.len(), 2 * (REQUESTS + 1));
    app.stop().await;
}
