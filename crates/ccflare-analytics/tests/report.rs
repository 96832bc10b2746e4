//! `report` and `all_time` against rows with a known distribution, written through the real
//! writer into a temp SQLite file: counts, tokens, costs, ratios, error kinds, series and
//! percentiles checked against numbers worked out by hand; and the CLI's `stats` tables, whose
//! percentiles are the report's for the same requests.

use ccflare_analytics::stats::{Breakdown, Zone, stats};
use ccflare_analytics::{Range, all_time, overview, report};
use ccflare_core::record::RequestRecord;
use ccflare_core::usage::Usage;
use ccflare_core::{AccountId, Millis, Secret};
use ccflare_storage::rollups::{self, DAY_MS, HOUR_MS, MINUTE_MS};
use ccflare_storage::{Db, Writer, accounts};

/// Noon, on a day far from the epoch.
const NOW: Millis = 20_000 * DAY_MS + 12 * HOUR_MS + 30 * MINUTE_MS;

fn row(n: u32, started_at: Millis, model: &str, account: i64, latency_ms: i64) -> RequestRecord {
    RequestRecord {
        id: format!("r{n:04}"),
        started_at,
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: Some(model.into()),
        account_id: Some(AccountId(account)),
        account_name: Some(format!("old-name-{account}")),
        status: 200,
        success: true,
        attempts: 1,
        latency_ms,
        ttfb_ms: Some(latency_ms / 4),
        streamed: true,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 30,
            cache_read_input_tokens: 300,
            cache_creation_input_tokens: 100,
            ..Default::default()
        },
        cost_usd: 0.25,
        ..Default::default()
    }
}

async fn setup(records: Vec<RequestRecord>) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_path(&dir.path().join("a.db")).await.unwrap();
    accounts::upsert_api_key(
        &db,
        &Secret::new("sk-ant-api03-report-test-key-000000000001"),
        Some("alpha"),
        None,
        0,
    )
    .await
    .unwrap();
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    for record in records {
        handle.record(record);
    }
    writer.close().await;
    (dir, db)
}

#[tokio::test]
async fn a_known_distribution_gives_exact_figures() {
    // 100 requests in the last 30 minutes with latencies 1..=100 ms (so percentiles are exact),
    // split between two models and two accounts; account 1 is called "alpha" now.
    let mut records: Vec<RequestRecord> = (1..=100)
        .map(|n| {
            let model = if n % 4 == 0 {
                "claude-haiku-4-5"
            } else {
                "claude-sonnet-4-5"
            };
            let at = NOW - 30 * MINUTE_MS + i64::from(n) * 1000;
            row(n, at, model, i64::from(n % 2) + 1, i64::from(n))
        })
        .collect();
    // Five failures: three upstream 429s relayed, two clients that hung up.
    for (i, record) in records.iter_mut().take(5).enumerate() {
        record.success = false;
        record.status = if i < 3 { 429 } else { 499 };
        record.error_type = Some(
            if i < 3 {
                "rate_limit_error"
            } else {
                "client_closed"
            }
            .into(),
        );
    }
    // One old request, two days ago: outside every range but counted all-time.
    records.push(row(500, NOW - 2 * DAY_MS, "claude-opus-4-1", 1, 5000));
    let (_dir, db) = setup(records).await;

    let r = report(&db, NOW, Range::Hour).await.unwrap();
    let t = &r.totals;
    assert_eq!((t.requests, t.successes, t.errors), (100, 95, 5));
    assert_eq!(
        (
            t.input_tokens,
            t.output_tokens,
            t.cache_read_tokens,
            t.cache_write_tokens
        ),
        (10_000, 3_000, 30_000, 10_000)
    );
    assert_eq!(t.total_tokens, 53_000);
    assert!((t.cost_usd - 25.0).abs() < 1e-9);
    assert!((t.average_response_time - 50.5).abs() < 1e-9);
    // Cache reads over all input: 300 / (100 + 300 + 100).
    assert_eq!(t.cache_hit_rate, Some(0.6));
    // ttfb = latency / 4 (integer); tokens/s = 30 per request over (latency - ttfb) ms, summed.
    let generating: i64 = (1..=100i64).map(|l| l - l / 4).sum();
    let expected_tps = 100.0 * 30.0 * 1000.0 / generating as f64;
    let tps = t.output_tokens_per_second.unwrap();
    assert!((tps - expected_tps).abs() < 1e-9, "{tps} vs {expected_tps}");

    assert_eq!(
        (
            r.latency_ms.samples,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99
        ),
        (100, Some(50), Some(95), Some(99))
    );
    // ttfb values 0..=25: nearest rank 50 of sorted l/4 for l = 1..=100 is 50/4 = 12.
    assert_eq!((r.ttfb_ms.p50, r.ttfb_ms.p95), (Some(12), Some(23)));

    let models: Vec<(Option<&str>, i64)> = r
        .models
        .iter()
        .map(|g| (g.name.as_deref(), g.totals.requests))
        .collect();
    assert_eq!(
        models,
        [
            (Some("claude-sonnet-4-5"), 75),
            (Some("claude-haiku-4-5"), 25)
        ]
    );
    let accounts: Vec<(Option<&str>, i64)> = r
        .accounts
        .iter()
        .map(|g| (g.name.as_deref(), g.totals.requests))
        .collect();
    // Account 1 exists (named "alpha" now); account 2 is known only by its recorded name.
    assert_eq!(accounts, [(Some("alpha"), 50), (Some("old-name-2"), 50)]);
    let errors: Vec<(&str, i64)> = r
        .errors
        .iter()
        .map(|e| (e.error_type.as_str(), e.count))
        .collect();
    assert_eq!(errors, [("rate_limit_error", 3), ("client_closed", 2)]);

    // One-minute points over exactly the last hour; every request is in one of them.
    assert_eq!(r.bucket_ms, MINUTE_MS);
    assert_eq!(r.series.len(), 61);
    assert_eq!(r.series.iter().map(|p| p.requests).sum::<i64>(), 100);
    assert_eq!(r.series.iter().map(|p| p.errors).sum::<i64>(), 5);
    assert_eq!(r.requests_last_hour, 100);
    // Requests at NOW - 30 min + n s: those with n >= 1740 would be in the last minute; none.
    assert_eq!(r.requests_last_minute, 0);

    let all = all_time(&db).await.unwrap();
    assert_eq!(all.totals.requests, 101);
    assert_eq!(all.latency_ms.samples, 101);
    assert!(
        all.models
            .iter()
            .any(|g| g.name.as_deref() == Some("claude-opus-4-1"))
    );

    let o = overview(&db, NOW).await.unwrap();
    assert_eq!((o.total_requests, o.requests_last_hour), (101, 100));
    assert_eq!(o.top_models[0].model, "claude-sonnet-4-5");
    assert_eq!(o.top_models.len(), 3);
}

#[tokio::test]
async fn percentiles_above_128_ms_are_within_a_32nd() {
    // 1,000 latencies spread from 130 ms to about 100 s.
    let latencies: Vec<i64> = (0..1000).map(|i| 130 + i * i / 10).collect();
    let records = latencies
        .iter()
        .enumerate()
        .map(|(n, l)| row(n as u32, NOW - HOUR_MS + n as i64, "m", 1, *l))
        .collect();
    let (_dir, db) = setup(records).await;
    let r = report(&db, NOW, Range::Day).await.unwrap();
    let mut sorted = latencies.clone();
    sorted.sort();
    for (p, got) in [
        (0.50, r.latency_ms.p50),
        (0.95, r.latency_ms.p95),
        (0.99, r.latency_ms.p99),
    ] {
        let exact = sorted[((p * 1000.0) as usize).max(1) - 1];
        let got = got.unwrap();
        let error = (got - exact).abs() as f64 / exact as f64;
        assert!(error <= 1.0 / 32.0, "p{p}: {got} vs exact {exact}");
    }
}

#[tokio::test]
async fn every_range_reads_and_an_empty_database_gives_zeros() {
    let (_dir, db) = setup(Vec::new()).await;
    for range in Range::ALL {
        let r = report(&db, NOW, range).await.unwrap();
        assert_eq!(r.totals.requests, 0, "{range}");
        assert_eq!(r.latency_ms.p50, None);
        assert!(r.series.iter().all(|p| p.requests == 0));
        assert!(r.models.is_empty() && r.errors.is_empty());
        assert!(r.rollup_since <= r.since && r.since - r.rollup_since < HOUR_MS);
    }
}

/// The nearest-rank percentile (per mille) of `latencies` as the rollups' bins report it: the
/// one definition the API and the CLI share.
fn binned_percentile(latencies: &[i64], per_mille: usize) -> i64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = (per_mille * sorted.len()).div_ceil(1000).max(1);
    rollups::bin_value(rollups::bin(sorted[rank - 1]))
}

#[tokio::test]
async fn the_cli_tables_and_the_api_report_agree_on_percentiles() {
    // One UTC day: 480 requests from midnight to 19:57, latencies from 2 ms to about 40 s, one
    // in eight a fast failure (which counts: a percentile is over every request).
    let day = 20_000 * DAY_MS;
    let now = day + 23 * HOUR_MS + 30 * MINUTE_MS;
    let models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"];
    let records: Vec<RequestRecord> = (0..480u32)
        .map(|n| {
            let latency = 2 + i64::from(n * n * 7919 % 40_000);
            let mut r = row(
                n,
                day + i64::from(n) * 150_000,
                models[n as usize % 3],
                1,
                latency,
            );
            if n % 8 == 0 {
                r.success = false;
                r.status = 529;
                r.latency_ms = 3;
            }
            r
        })
        .collect();
    let latencies: Vec<i64> = records.iter().map(|r| r.latency_ms).collect();
    let (_dir, db) = setup(records.clone()).await;

    // What `/api/analytics?range=24h` and `/api/stats` show.
    let api = report(&db, now, Range::Day).await.unwrap().latency_ms;
    let all = all_time(&db).await.unwrap().latency_ms;
    let expected = (
        Some(binned_percentile(&latencies, 500)),
        Some(binned_percentile(&latencies, 950)),
    );
    assert_eq!((api.samples, (api.p50, api.p95)), (480, expected));
    assert_eq!((all.p50, all.p95), expected);

    // What `ccflare-cli stats daily|hourly|models` show for the same requests.
    let tables = [
        Breakdown::Daily { days: 1 },
        Breakdown::Hourly { hours: 24 },
        Breakdown::Models {
            since: now - DAY_MS,
        },
    ];
    for breakdown in tables {
        let table = stats(&db, breakdown, Zone::Utc, now).await.unwrap();
        let total = &table.total;
        assert_eq!(total.requests, 480, "{breakdown:?}");
        assert_eq!((total.p50_ms, total.p95_ms), expected, "{breakdown:?}");
    }
    let daily = stats(&db, Breakdown::Daily { days: 1 }, Zone::Utc, now)
        .await
        .unwrap();
    assert_eq!(
        (daily.rows.len(), daily.rows[0].p50_ms, daily.rows[0].p95_ms),
        (1, expected.0, expected.1)
    );

    // A model's row: the same definition over its own requests.
    let by_model = stats(&db, tables[2], Zone::Utc, now).await.unwrap();
    for row in &by_model.rows {
        let own: Vec<i64> = records
            .iter()
            .filter(|r| r.model.as_deref() == Some(row.key.as_str()))
            .map(|r| r.latency_ms)
            .collect();
        assert_eq!(
            (row.p50_ms, row.p95_ms),
            (
                Some(binned_percentile(&own, 500)),
                Some(binned_percentile(&own, 950))
            ),
            "{}",
            row.key
        );
    }
    // An hour's row: its own requests (24 of them, one every 2.5 minutes).
    let hourly = stats(&db, tables[1], Zone::Utc, now).await.unwrap();
    let three = hourly
        .rows
        .iter()
        .find(|r| r.key.ends_with(" 03:00"))
        .unwrap();
    let own: Vec<i64> = records
        .iter()
        .filter(|r| r.started_at / HOUR_MS == (day + 3 * HOUR_MS) / HOUR_MS)
        .map(|r| r.latency_ms)
        .collect();
    assert_eq!(
        (three.requests, three.p95_ms),
        (24, Some(binned_percentile(&own, 950)))
    );
}

#[tokio::test]
async fn each_point_of_a_series_has_the_percentiles_of_its_own_requests() {
    // 600 requests over the 29 days before NOW, latencies from 1 ms to about 30 s in a pattern
    // that differs between neighbouring minutes, hours and days.
    let records: Vec<RequestRecord> = (0..600u32)
        .map(|n| {
            let at = NOW - i64::from(n) * (29 * DAY_MS / 600) - i64::from(n % 7) * 1_000;
            let latency = 1 + i64::from(n) * i64::from(n) * 104_729 % 30_000;
            row(n, at, "m", 1, latency)
        })
        .chain((0..120u32).map(|n| {
            // And two a minute over the last hour, so the short ranges have several per point.
            let at = NOW - HOUR_MS + 1 + i64::from(n) * 30_000;
            row(1_000 + n, at, "m", 1, 1 + i64::from(n * 37 % 250))
        }))
        .collect();
    let (_dir, db) = setup(records.clone()).await;
    for range in Range::ALL {
        let r = report(&db, NOW, range).await.unwrap();
        let mut checked = 0;
        for point in &r.series {
            let latencies: Vec<i64> = records
                .iter()
                .filter(|x| rollups::bucket(x.started_at, r.bucket_ms) == point.time)
                .map(|x| x.latency_ms)
                .collect();
            assert_eq!(
                point.requests,
                latencies.len() as i64,
                "{range} {}",
                point.time
            );
            if latencies.is_empty() {
                assert_eq!((point.latency_p50_ms, point.latency_p95_ms), (None, None));
                continue;
            }
            checked += 1;
            assert_eq!(
                (point.latency_p50_ms, point.latency_p95_ms),
                (
                    Some(binned_percentile(&latencies, 500)),
                    Some(binned_percentile(&latencies, 950))
                ),
                "{range}, the point at {}: {latencies:?}",
                point.time
            );
        }
        assert!(checked >= 5, "{range}: {checked} points with requests");
    }
}
