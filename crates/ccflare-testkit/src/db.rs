//! Another program's hold on a ccflare database: what the server and the CLI meet when a
//! `sqlite3` session or a backup keeps the write lock; and the checks a fault test makes on a
//! database file the server left behind (integrity, which request rows are there).

use sqlx::Connection;
use std::path::Path;

/// An open transaction holding the write lock of a database file (`BEGIN EXCLUSIVE` on a
/// connection of its own). Readers still read (WAL); every writer waits, and gives up after
/// its busy timeout.
pub struct WriteLock(sqlx::SqliteConnection);

impl WriteLock {
    /// Takes the write lock of the database at `path`.
    pub async fn take(path: &Path) -> WriteLock {
        let url = format!("sqlite://{}", path.display());
        let mut connection = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("the database opens");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut connection)
            .await
            .expect("the write lock is free");
        WriteLock(connection)
    }

    /// Lets go: the transaction ends without a change.
    pub async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.0)
            .await
            .expect("rollback");
    }
}

/// A connection of the test's own to the database file at `path`, which must exist: the
/// checks below look at a file as the server left it and never create one.
async fn connect(path: &Path) -> sqlx::SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false);
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("the database opens")
}

/// Runs `sql` (statements separated by `;`) on the database at `path` from a connection of the
/// test's own: a change made outside ccflare (a trigger that stalls or refuses a write).
pub async fn execute(path: &Path, sql: &str) {
    let mut connection = connect(path).await;
    sqlx::raw_sql(sql)
        .execute(&mut connection)
        .await
        .expect("the statements run");
    let _ = connection.close().await;
}

/// Whether another connection holds the write lock of the database at `path` now: a
/// `BEGIN IMMEDIATE` that may not wait fails as busy. (When it succeeds it is rolled back.)
pub async fn write_lock_held(path: &Path) -> bool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::ZERO);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("the database opens");
    let held = match sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut connection)
        .await
    {
        Ok(_) => {
            sqlx::query("ROLLBACK")
                .execute(&mut connection)
                .await
                .expect("rollback");
            false
        }
        Err(sqlx::Error::Database(error)) if error.message().contains("locked") => true,
        Err(error) => panic!("BEGIN IMMEDIATE: {error}"),
    };
    let _ = connection.close().await;
    held
}

/// What `PRAGMA integrity_check` says of the database at `path`: `"ok"` for a sound file,
/// else SQLite's list of problems, one per line.
pub async fn integrity_check(path: &Path) -> String {
    let mut connection = connect(path).await;
    let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut connection)
        .await
        .expect("integrity_check runs");
    let _ = connection.close().await;
    lines.join("\n")
}

/// The id (`x-ccflare-request-id`) of every request row in the database at `path`.
pub async fn request_ids(path: &Path) -> std::collections::HashSet<String> {
    let mut connection = connect(path).await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(&mut connection)
        .await
        .expect("request ids");
    let _ = connection.close().await;
    ids.into_iter().collect()
}

/// Fills a database with `rows` generated requests, spread evenly over `[from, until)` and
/// over its accounts in turn, as if a server had recorded them: the rollups rebuilt from the
/// rows (which equal the writer's running totals; the storage tests check that) and each
/// account's request counter and last use set. One `INSERT … SELECT` that SQLite generates
/// itself, then the storage crate's rebuild of the rollups: 100,000 rows take seconds, where
/// sending them through the writer takes over a minute in a debug build. The rows are the
/// same on every run; their latencies take eight values, so the latency histograms (one
/// upsert per hour and bin) stay small enough to rebuild quickly.
pub async fn prefill_requests(db: &ccflare_storage::Db, rows: u64, from: i64, until: i64) {
    let mut tx = db.begin_write().await.expect("the write lock");
    sqlx::query(
        "INSERT INTO requests (id, started_at, method, path, model, account_id, account_name, \
         status, success, error_type, error_message, attempts, latency_ms, ttfb_ms, streamed, \
         input_tokens, output_tokens, cache_read_tokens, cost_usd) \
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1), \
         turn AS (SELECT id, name, row_number() OVER (ORDER BY id) - 1 AS k, \
             count(*) OVER () AS accounts FROM accounts), \
         picked AS (SELECT i, (i * 2654435761) >> 7 AS h, id AS account_id, name AS account \
             FROM n JOIN turn ON turn.k = n.i % turn.accounts), \
         shaped AS (SELECT *, CASE WHEN h % 100 < 3 THEN 429 WHEN h % 100 = 3 THEN 529 \
             WHEN h % 100 = 4 THEN 499 ELSE 200 END AS status FROM picked), \
         counted AS (SELECT *, 100 + h % 4000 AS input, \
             CASE WHEN status = 200 THEN 20 + h % 900 ELSE 0 END AS output FROM shaped) \
         SELECT printf('prefill_%06d', i), ?2 + i * (?3 - ?2) / ?1, 'POST', '/v1/messages', \
             CASE h % 3 WHEN 0 THEN 'claude-sonnet-4-5' WHEN 1 THEN 'claude-haiku-4-5' \
                 ELSE 'claude-opus-4-1' END, \
             account_id, account, \
             status, status = 200, \
             CASE status WHEN 429 THEN 'rate_limit_error' WHEN 529 THEN 'overloaded_error' \
                 WHEN 499 THEN 'client_closed' END, \
             CASE WHEN status != 200 THEN 'prefilled' END, \
             1, 300 * (1 + h % 8), CASE WHEN status = 200 THEN 75 * (1 + h % 8) END, \
             i % 3 != 0, input, output, CASE WHEN i % 2 = 0 THEN h % 20000 ELSE 0 END, \
             (input * 3 + output * 15) / 1e6 \
         FROM counted",
    )
    .bind(rows as i64)
    .bind(from)
    .bind(until)
    .execute(&mut *tx)
    .await
    .expect("rows generated");
    // What the writer adds per batch: the account's requests and its latest start.
    sqlx::query(
        "UPDATE accounts SET \
         request_count = (SELECT count(*) FROM requests WHERE account_id = accounts.id), \
         last_used = (SELECT max(started_at) FROM requests WHERE account_id = accounts.id)",
    )
    .execute(&mut *tx)
    .await
    .expect("account counters");
    tx.commit().await.expect("commit");
    ccflare_storage::rollups::rebuild_all(db)
        .await
        .expect("rollups rebuilt");
}

/// The figures a user reads from the CLI and the API, counted afresh from the request rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestTotals {
    pub requests: i64,
    pub successes: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_usd: f64,
    /// Requests per account name.
    pub by_account: std::collections::BTreeMap<String, i64>,
}

/// [`RequestTotals`] of the database's request rows.
pub async fn request_totals(db: &ccflare_storage::Db) -> RequestTotals {
    let (requests, successes, input_tokens, output_tokens, cache_read_tokens, cost_usd) =
        sqlx::query_as::<_, (i64, i64, i64, i64, i64, f64)>(
            "SELECT count(*), coalesce(sum(success), 0), coalesce(sum(input_tokens), 0), \
             coalesce(sum(output_tokens), 0), coalesce(sum(cache_read_tokens), 0), \
             total(cost_usd) FROM requests",
        )
        .fetch_one(db.pool())
        .await
        .expect("totals");
    let by_account = sqlx::query_as::<_, (String, i64)>(
        "SELECT account_name, count(*) FROM requests WHERE account_name IS NOT NULL \
         GROUP BY account_name",
    )
    .fetch_all(db.pool())
    .await
    .expect("totals per account")
    .into_iter()
    .collect();
    RequestTotals {
        requests,
        successes,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cost_usd,
        by_account,
    }
}
