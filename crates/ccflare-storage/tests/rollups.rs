//! The rollups the writer keeps for analytics, the request listing and retention, against a
//! real SQLite file: running totals equal a fresh count of the rows (the same code the
//! migration runs for rows recorded before it), listings page through every row exactly once,
//! and retention deletes whole days of rows and their rollups together.

use ccflare_core::AccountId;
use ccflare_core::record::RequestRecord;
use ccflare_core::usage::Usage;
use ccflare_storage::requests::{
    self, AccountFilter, ModelFilter, Order, RequestFilter, StatusFilter,
};
use ccflare_storage::rollups::{self, DAY_MS, HOUR_MS};
use ccflare_storage::{Db, Writer};
use sqlx::Row;

async fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_path(&dir.path().join("ccflare.db")).await.unwrap();
    (dir, db)
}

/// A day far from the epoch, at midnight UTC.
const DAY0: i64 = 20_000 * DAY_MS;

fn record(n: u32, started_at: i64) -> RequestRecord {
    let model = ["claude-sonnet-4-5", "claude-haiku-4-5", ""][n as usize % 3];
    let failed = n.is_multiple_of(7);
    RequestRecord {
        id: format!("r{n:05}"),
        started_at,
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: (!model.is_empty()).then(|| model.to_owned()),
        account_id: (!n.is_multiple_of(5)).then_some(AccountId(i64::from(n % 2) + 1)),
        account_name: (!n.is_multiple_of(5)).then(|| format!("acct-{}", n % 2 + 1)),
        status: if failed { 429 } else { 200 },
        success: !failed,
        error_type: failed.then(|| "rate_limit_error".to_owned()),
        attempts: 1,
        latency_ms: i64::from(n % 300) * 7,
        ttfb_ms: (!failed).then_some(i64::from(n % 50)),
        streamed: n.is_multiple_of(2),
        usage: Usage {
            input_tokens: u64::from(n % 13),
            output_tokens: u64::from(n % 17),
            cache_read_input_tokens: u64::from(n % 3),
            cache_creation_input_tokens: u64::from(n % 4),
            ..Default::default()
        },
        // Binary fractions add up exactly in any order, so sums can be compared with ==.
        cost_usd: f64::from(n % 8) / 64.0,
        client_key: (n.is_multiple_of(4)).then(|| "ccf_team".to_owned()),
        // Its session moved to another account (migration 0012's sums).
        moved: n % 3 == 1,
        ..Default::default()
    }
}

/// Every rollup row, in key order, as text.
async fn snapshot(db: &Db) -> Vec<String> {
    let mut all = Vec::new();
    for (table, order) in [
        ("rollup_hourly", "bucket, dim, key"),
        ("rollup_daily", "bucket, dim, key"),
        ("rollup_minutely", "minute"),
        ("latency_hourly", "bucket, metric, bin"),
        ("latency_daily", "bucket, metric, bin"),
        ("latency_minutely", "minute, bin"),
    ] {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .fetch_all(db.pool())
            .await
            .unwrap();
        for row in rows {
            let mut line = table.to_owned();
            for i in 0..row.len() {
                let value: sqlx::sqlite::SqliteValueRef<'_> = row.try_get_raw(i).unwrap();
                let text =
                    <String as sqlx::Decode<sqlx::Sqlite>>::decode(value).unwrap_or_default();
                line.push('|');
                line.push_str(&text);
            }
            all.push(line);
        }
    }
    all
}

async fn write(db: &Db, records: impl IntoIterator<Item = RequestRecord>, batch: usize) {
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    for (i, record) in records.into_iter().enumerate() {
        handle.record(record);
        // Flushing now and then makes the writer fold the rows in over many transactions.
        if i % batch == batch - 1 {
            handle.flush().await;
        }
    }
    writer.close().await;
}

#[tokio::test]
async fn running_totals_equal_a_fresh_count_of_the_rows() {
    let (_dir, db) = open().await;
    // Three days, several rows per minute and hour, written in small transactions.
    let records: Vec<RequestRecord> = (0..900)
        .map(|n| record(n, DAY0 + i64::from(n) * 290_000))
        .collect();
    write(&db, records.clone(), 7).await;
    let running = snapshot(&db).await;
    assert!(
        running.len() > 100,
        "the rollups hold {} rows",
        running.len()
    );
    rollups::rebuild_all(&db).await.unwrap();
    assert_eq!(running, snapshot(&db).await);

    // And they agree with the rows themselves.
    let (requests, tokens, cost): (i64, i64, f64) = {
        let row = sqlx::query(
            "SELECT count(*), sum(input_tokens + output_tokens + cache_read_tokens + \
             cache_write_tokens), sum(cost_usd) FROM requests",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    for table in ["rollup_hourly", "rollup_daily"] {
        let row = sqlx::query(&format!(
            "SELECT sum(requests), sum(input_tokens + output_tokens + cache_read_tokens + \
             cache_write_tokens), sum(cost_usd) FROM {table} WHERE dim = 0"
        ))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(
            (
                row.get::<i64, _>(0),
                row.get::<i64, _>(1),
                row.get::<f64, _>(2)
            ),
            (requests, tokens, cost),
            "{table}"
        );
    }
    let latency_samples: i64 =
        sqlx::query_scalar("SELECT sum(count) FROM latency_daily WHERE metric = 0")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(latency_samples, 900);
}

/// Pages through a listing 17 rows at a time and compares it with `expected`, newest first.
async fn check(db: &Db, filter: RequestFilter, expected: Vec<&RequestRecord>) {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let order = Order::NewestStarted { after };
        let page = requests::list(db, &filter, order, 17).await.unwrap();
        assert!(page.requests.len() <= 17);
        seen.extend(page.requests.iter().map(|l| l.record.id.clone()));
        match page.requests.last().filter(|_| page.more) {
            Some(last) => after = Some((last.record.started_at, last.record.id.clone())),
            None => break,
        }
    }
    let mut expected = expected;
    expected.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let expected: Vec<String> = expected.iter().map(|r| r.id.clone()).collect();
    assert_eq!(seen, expected, "{filter:?}");
}

#[tokio::test]
async fn listings_page_through_every_row_once_with_filters() {
    let (_dir, db) = open().await;
    // Pairs of rows share a start time, so paging must break ties by id.
    let records: Vec<RequestRecord> = (0..250)
        .map(|n| record(n, DAY0 + i64::from(n / 2) * 1000))
        .collect();
    write(&db, records.clone(), 50).await;

    check(&db, RequestFilter::default(), records.iter().collect()).await;
    check(
        &db,
        RequestFilter {
            model: Some(ModelFilter::Is("claude-haiku-4-5".into())),
            ..Default::default()
        },
        records
            .iter()
            .filter(|r| r.model.as_deref() == Some("claude-haiku-4-5"))
            .collect(),
    )
    .await;
    check(
        &db,
        RequestFilter {
            status: Some(StatusFilter::Error),
            account: Some(AccountFilter::Named("acct-2".into())),
            ..Default::default()
        },
        records
            .iter()
            .filter(|r| !r.success && r.account_name.as_deref() == Some("acct-2"))
            .collect(),
    )
    .await;
    check(
        &db,
        RequestFilter {
            status: Some(StatusFilter::Code(200)),
            since: Some(DAY0 + 30_000),
            until: Some(DAY0 + 90_000),
            ..Default::default()
        },
        records
            .iter()
            .filter(|r| {
                r.status == 200 && r.started_at >= DAY0 + 30_000 && r.started_at < DAY0 + 90_000
            })
            .collect(),
    )
    .await;
    check(
        &db,
        RequestFilter {
            status: Some(StatusFilter::Success),
            account: Some(AccountFilter::Named("no-such-account".into())),
            ..Default::default()
        },
        Vec::new(),
    )
    .await; // The dashboard's filters: a status class, errors only, a client key.
    for class in [2, 4, 5] {
        check(
            &db,
            RequestFilter {
                status: Some(StatusFilter::Class(class)),
                ..Default::default()
            },
            records
                .iter()
                .filter(|r| r.status / 100 == u16::from(class))
                .collect(),
        )
        .await;
    }
    check(
        &db,
        RequestFilter {
            status: Some(StatusFilter::Error),
            ..Default::default()
        },
        records.iter().filter(|r| !r.success).collect(),
    )
    .await;
    check(
        &db,
        RequestFilter {
            client_key: Some("ccf_team".into()),
            model: Some(ModelFilter::Is("claude-sonnet-4-5".into())),
            ..Default::default()
        },
        records
            .iter()
            .filter(|r| {
                r.client_key.as_deref() == Some("ccf_team")
                    && r.model.as_deref() == Some("claude-sonnet-4-5")
            })
            .collect(),
    )
    .await;
}

/// Each filter of the listing alone reads an index in the listing's order: SQLite sorts at
/// most the rows that share a start time ("RIGHT PART OF ORDER BY"), never the matches, and
/// never scans the table. This is what keeps a page fast at any table size (docs/dashboard.md
/// has the figures at 1,000,000 rows); a change to a condition's form that defeats its index
/// fails here.
#[tokio::test]
async fn every_filter_of_the_listing_reads_an_index_in_order() {
    let (_dir, db) = open().await;
    let filters = [
        RequestFilter::default(),
        RequestFilter {
            status: Some(StatusFilter::Class(2)),
            ..Default::default()
        },
        RequestFilter {
            status: Some(StatusFilter::Error),
            ..Default::default()
        },
        RequestFilter {
            status: Some(StatusFilter::Code(429)),
            ..Default::default()
        },
        RequestFilter {
            client_key: Some("7".into()),
            ..Default::default()
        },
        RequestFilter {
            model: Some(ModelFilter::Is("claude-opus-4-1".into())),
            ..Default::default()
        },
        RequestFilter {
            account: Some(AccountFilter::Recorded("gone".into())),
            since: Some(DAY0),
            ..Default::default()
        },
        RequestFilter {
            since: Some(DAY0),
            until: Some(DAY0 + DAY_MS),
            ..Default::default()
        },
    ];
    for filter in filters {
        for after in [None, Some((DAY0, "r00010".to_owned()))] {
            let plan = requests::explain(&db, &filter, Order::NewestStarted { after })
                .await
                .unwrap();
            let text = plan.join(" | ");
            assert!(
                plan.iter().any(|d| d.contains("USING INDEX")),
                "{filter:?}: {text}"
            );
            assert!(
                !plan.iter().any(|d| d.contains("TEMP B-TREE FOR ORDER BY")),
                "{filter:?} sorts its matches: {text}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|d| d.starts_with("SCAN requests") && !d.contains("INDEX")),
                "{filter:?} scans the table: {text}"
            );
        }
    }
}

#[tokio::test]
async fn retention_deletes_whole_days_of_rows_and_rollups() {
    let (_dir, db) = open().await;
    // Rows on days 0, 1 and 2, one every 20 minutes.
    let records: Vec<RequestRecord> = (0..216)
        .map(|n| record(n, DAY0 + i64::from(n) * 1_200_000))
        .collect();
    write(&db, records, 40).await;
    // A cutoff in the middle of day 1 keeps all of day 1: days are deleted whole.
    let purged = rollups::purge_before(&db, DAY0 + DAY_MS + 5 * HOUR_MS, 10)
        .await
        .unwrap();
    assert_eq!(purged.before, DAY0 + DAY_MS);
    assert_eq!(purged.requests, 72, "day 0 had 72 rows");
    assert_eq!(requests::count(&db).await.unwrap(), 144);
    let oldest: i64 = sqlx::query_scalar("SELECT min(bucket) FROM rollup_hourly")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(oldest, DAY0 + DAY_MS);
    // What is left of the rollups is exactly what the remaining rows add up to.
    let kept = snapshot(&db).await;
    rollups::rebuild_all(&db).await.unwrap();
    assert_eq!(kept, snapshot(&db).await);
    // Nothing more to do the second time.
    let again = rollups::purge_before(&db, DAY0 + DAY_MS + 5 * HOUR_MS, 10)
        .await
        .unwrap();
    assert_eq!(again.requests, 0);
}

/// The first migrations, as the builds of their time left a database.
const OLD_MIGRATIONS: [(i64, &str, &str); 4] = [
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "settings",
        include_str!("../../../migrations/0002_settings.sql"),
    ),
    (
        3,
        "rollups",
        include_str!("../../../migrations/0003_rollups.sql"),
    ),
    (
        4,
        "oauth",
        include_str!("../../../migrations/0004_oauth.sql"),
    ),
];

/// A database as a build at schema `version` (at most 4) left it, written straight with that
/// build's migrations and its record of them, opened without ccflare's migration runner.
async fn database_at_version(path: &std::path::Path, version: i64) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at INTEGER NOT NULL)",
    )
    .execute(&old)
    .await
    .unwrap();
    for (number, name, sql) in OLD_MIGRATIONS.iter().take_while(|(n, ..)| *n <= version) {
        sqlx::raw_sql(sql).execute(&old).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations VALUES (?, ?, 0)")
            .bind(number)
            .bind(name)
            .execute(&old)
            .await
            .unwrap();
    }
    old
}

#[tokio::test]
async fn upgrading_to_minute_histograms_fills_them_from_the_rows_already_recorded() {
    // A database as the builds before migration 0005 left it: schema version 4, with request
    // rows (written here straight into the table).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrade.db");
    let old = database_at_version(&path, 4).await;
    let mut expected: std::collections::BTreeMap<(i64, i64), i64> = Default::default();
    for n in 0..300i64 {
        let (at, latency) = (DAY0 + n * 7_000, 1 + n * n % 5_000);
        sqlx::query(
            "INSERT INTO requests (id, started_at, method, path, status, success, attempts, \
             latency_ms, streamed) VALUES (?, ?, 'POST', '/v1/messages', 200, 1, 1, ?, 0)",
        )
        .bind(format!("r{n}"))
        .bind(at)
        .bind(latency)
        .execute(&old)
        .await
        .unwrap();
        *expected
            .entry((rollups::bucket(at, 60_000), rollups::bin(latency)))
            .or_default() += 1;
    }
    old.close().await;

    let db = Db::open_path(&path).await.unwrap();
    let filled: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT minute, bin, count FROM latency_minutely ORDER BY minute, bin")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let expected: Vec<(i64, i64, i64)> =
        expected.into_iter().map(|((m, b), n)| (m, b, n)).collect();
    assert_eq!(filled, expected);
}

#[tokio::test]
async fn moves_and_the_cache_they_re_created_add_up_in_the_rollups() {
    let (_dir, db) = open().await;
    let records: Vec<RequestRecord> = (0..120)
        .map(|n| record(n, DAY0 + i64::from(n) * 60_000))
        .collect();
    let moved: Vec<&RequestRecord> = records.iter().filter(|r| r.moved).collect();
    let tokens: i64 = moved
        .iter()
        .map(|r| r.usage.cache_creation_input_tokens as i64)
        .sum();
    assert!(!moved.is_empty() && tokens > 0);
    write(&db, records.clone(), 25).await;
    for table in ["rollup_hourly", "rollup_daily"] {
        let sums: (i64, i64) = sqlx::query_as(&format!(
            "SELECT sum(moves), sum(moved_cache_write_tokens) FROM {table} WHERE dim = 0"
        ))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(sums, (moved.len() as i64, tokens), "{table}");
    }
    // The row keeps the tokens of a moved request only; read back, it says whether it moved.
    for record in &records[..6] {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT moved_cache_write_tokens FROM requests WHERE id = ?")
                .bind(&record.id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        let expected = record
            .moved
            .then_some(record.usage.cache_creation_input_tokens as i64);
        assert_eq!(row, expected, "{}", record.id);
        let read = requests::get(&db, &record.id).await.unwrap().unwrap();
        assert_eq!(read.moved, record.moved);
    }
    // The running totals are what a rebuild from the rows gives.
    let kept = snapshot(&db).await;
    rollups::rebuild_all(&db).await.unwrap();
    assert_eq!(kept, snapshot(&db).await);
}

#[tokio::test]
async fn a_database_from_before_the_rollups_upgrades_through_every_migration() {
    // Schema version 2 with request rows: the fills of 0003 and 0005 run before migration
    // 0012 adds its columns, and must not name them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrade.db");
    let old = database_at_version(&path, 2).await;
    for n in 0..50i64 {
        sqlx::query(
            "INSERT INTO requests (id, started_at, method, path, status, success, attempts, \
             latency_ms, streamed, cache_write_tokens) \
             VALUES (?, ?, 'POST', '/v1/messages', 200, 1, 1, 5, 0, 7)",
        )
        .bind(format!("r{n}"))
        .bind(DAY0 + n * 60_000)
        .execute(&old)
        .await
        .unwrap();
    }
    old.close().await;

    let db = Db::open_path(&path).await.unwrap();
    let sums: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT sum(requests), sum(cache_write_tokens), sum(moves), \
         sum(moved_cache_write_tokens) FROM rollup_daily WHERE dim = 0",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(sums, (50, 350, 0, 0), "rows from before 0012 did not move");
}
