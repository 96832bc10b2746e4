//! `GET /api/analytics` and friends through a real server and socket, timed on a large
//! database: the figures in `docs/benchmarks.md` ("Analytics at 1,000,000 rows").
//!
//! Build the database first with the analytics benchmark, then point this one at it:
//!
//! ```sh
//! CCFLARE_BENCH_DB=/tmp/ccflare-bench.db cargo bench -p ccflare-analytics --bench analytics
//! CCFLARE_BENCH_DB=/tmp/ccflare-bench.db cargo bench -p ccflare-api --bench endpoints
//! ```
//!
//! Run as a test (`cargo test --benches`), or without `CCFLARE_BENCH_DB`, it checks every
//! endpoint answers on a small generated database.

use bytes::Bytes;
use ccflare_api::{Api, LogFeed};
use ccflare_core::record::RequestRecord;
use ccflare_core::{Clock, SystemClock};
use ccflare_proxy::{ProxyConfig, UpstreamClient};
use ccflare_storage::{Db, Writer, requests};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(full));
}

/// A few rows spread over a day, for the check run.
async fn small(db: &Db, now: i64) {
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    for n in 0..2_000i64 {
        handle.record(RequestRecord {
            id: format!("small_{n}"),
            started_at: now - 86_400_000 + n * 43_000,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some(["claude-sonnet-4-5", "claude-haiku-4-5"][n as usize % 2].into()),
            status: if n % 50 == 0 { 429 } else { 200 },
            success: n % 50 != 0,
            latency_ms: 200 + n % 5000,
            ..Default::default()
        });
    }
    writer.close().await;
}

async fn run(full: bool) {
    let temp = tempfile::tempdir().expect("a temp dir");
    let given = std::env::var_os("CCFLARE_BENCH_DB")
        .filter(|_| full)
        .map(PathBuf::from);
    let path = given
        .clone()
        .unwrap_or_else(|| temp.path().join("small.db"));
    let db = Db::open_path(&path).await.expect("database opens");
    let now = SystemClock.now_ms();
    if given.is_none() {
        if full {
            eprintln!("CCFLARE_BENCH_DB is not set: timing a small database instead");
        }
        small(&db, now).await;
    }
    let rows = requests::count(&db).await.expect("count");

    let writer = Writer::spawn(db.clone());
    let upstream =
        UpstreamClient::new("http://127.0.0.1:9", Duration::from_secs(1)).expect("client");
    let state = ccflare_testkit::proxy::wall_clock_state(&writer, upstream, ProxyConfig::default());
    state.sync_accounts(&db).await.expect("accounts");
    state.set_management(Arc::new(Api::new(db.clone(), LogFeed::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ccflare_proxy::run(listener, state, async {
        let _ = stopped.await;
    }));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let runs = if full { 30 } else { 1 };
    println!("{rows} request rows; {runs} calls each over one keep-alive connection");
    println!("{:<36} {:>10} {:>10}", "endpoint", "median", "max");
    for path in [
        "/api/analytics",
        "/api/analytics?range=1h",
        "/api/analytics?range=6h",
        "/api/analytics?range=24h",
        "/api/analytics?range=7d",
        "/api/analytics?range=30d",
        "/api/stats",
        "/api/requests?limit=50",
        "/api/requests?status=error&limit=50",
        "/metrics",
    ] {
        let mut samples = Vec::with_capacity(runs);
        // One call first to warm SQLite's page cache, as a running server's would be.
        for i in 0..=runs {
            let request = http::Request::get(format!("{base}{path}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let start = Instant::now();
            let response = client.request(request).await.expect("response");
            let status = response.status();
            let body = response.into_body().collect().await.expect("body");
            let elapsed = start.elapsed();
            assert!(status.is_success(), "{path}: {status}");
            std::hint::black_box(body);
            if i > 0 {
                samples.push(elapsed);
            }
        }
        samples.sort();
        println!(
            "GET {path:<32} {:>8.2}ms {:>8.2}ms",
            samples[samples.len() / 2].as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    writer.close().await;
    db.close().await;
}
