//! The fault matrix against the real `ccflare-server` binary and the mock upstream (issue 9;
//! `docs/testing.md` lists each fault with the guarantee it holds): SIGKILL in the middle of a
//! burst, the database locked by another program for ten seconds during traffic, a file that
//! is not a database at `DATABASE_URL`, and a start on a database that already holds 100,000
//! requests. Each test counts what a user would check: the responses that carried
//! `x-ccflare-request-id` against the rows in the database.

mod common;

use bytes::Bytes;
use ccflare_core::{Clock, Millis, Secret, SystemClock};
use ccflare_mock::Fault;
use ccflare_storage::Db;
use ccflare_testkit::db::{
    RequestTotals, WriteLock, integrity_check, prefill_requests, request_ids, request_totals,
};
use ccflare_testkit::http::TestClient;
use ccflare_testkit::process::{Server, isolated_command, workspace_binary};
use ccflare_testkit::{GUARD, PROCESS_GUARD, eventually, get, key, send};
use common::{
    db_path, health_until, messages_request, mock, proxy_command, run_to_end, server_command,
};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use tokio::task::JoinSet;

/// The burst test takes this for writing, the others for reading: the burst checks that the
/// writer keeps up with the answers, which is a claim about the server, not about how it fares
/// beside a 100,000-row fill in the same test process on the same cores.
static ALONE_FOR_THE_BURST: RwLock<()> = RwLock::const_new(());

/// The burst: requests per second, and how many are sent before the kill (three seconds'
/// worth). Issue 9 asks for about 300 a second, but the debug build these tests run spends
/// about 7 ms of CPU per request between the server and this process (mock and client): 300 a
/// second needs more than two cores, and a saturated server answers few requests while its
/// writer, one task among hundreds of connections, falls seconds behind the answers (measured
/// on two shared cores: 52 to 223 of 900 answered, the oldest unrecorded answer 1.3 to 3 s old).
/// At 100 a second on two cores busy with other builds the writer was sometimes 105 to 572 ms
/// behind; at 50 a second it stayed within 45 ms unless the whole server was starved of CPU,
/// and streams are still in flight at the kill.
const BURST_RATE: u32 = 50;
const KILL_AFTER: usize = 150;

/// Every answer that ended longer than this before the kill must have its row. SPEC §8's
/// batch time is 100 ms, and the writer keeps it (at 300 requests/s on the release build:
/// `ccflare-bench`'s `crash` scenario, docs/benchmarks.md); but that is a timing claim, which
/// the suite leaves to the bench. Here the window is wide enough that a CI machine starving
/// the debug server of CPU for half a second (seen: 510 ms) cannot fail the test, and narrow
/// enough that a writer that lost or held back records would.
const RECORDED_WITHIN: Duration = Duration::from_secs(1);

/// How long another program holds the database's write lock during traffic.
const LOCK_HELD: Duration = Duration::from_secs(10);

/// Rows in the database before the server starts.
const PREFILLED_ROWS: u64 = 100_000;

fn now_ms() -> Millis {
    SystemClock.now_ms()
}

/// Adds API-key accounts named `names` (keys [`key`]`(name)`) to the database at `path`, as
/// `ccflare-cli accounts add` does, so that tests and rows can name them.
async fn add_accounts(path: &Path, names: &[&str]) -> Db {
    let db = Db::open_path(path).await.expect("database opens");
    for name in names {
        ccflare_storage::accounts::upsert_api_key(
            &db,
            &Secret::new(key(name)),
            Some(name),
            None,
            now_ms(),
        )
        .await
        .expect("account added");
    }
    db
}

/// Requests sent to the server with credential `key(name)`, as the mock saw them.
fn upstream_requests_of(upstream: &ccflare_mock::MockUpstream, name: &str) -> usize {
    let credential = key(name);
    upstream
        .requests()
        .iter()
        .filter(|r| r.credential.as_deref() == Some(credential.as_str()))
        .count()
}

/// Request `n` of a mixed load: even ones JSON, odd ones streams of about ten events 10 ms
/// apart (so that some are always in flight).
fn mixed_request(url: &str, n: usize) -> http::Request<Full<Bytes>> {
    if n.is_multiple_of(2) {
        messages_request(url, false, &[])
    } else {
        messages_request(url, true, &[("x-mock-chunk-delay-ms", "10")])
    }
}

/// What a client saw of one request of the burst.
struct Answer {
    /// `x-ccflare-request-id`, when the response headers arrived.
    id: Option<String>,
    status: Option<StatusCode>,
    /// When the whole body had arrived, by the test's clock; `None` when it never did (the
    /// server died first).
    finished: Option<Instant>,
}

/// Sends `request` and reads the whole answer, taking the time it ends; a server that dies on
/// the way is an answer without an end, not a panic.
async fn attempt(client: TestClient, request: http::Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(GUARD, client.request(request))
        .await
        .expect("the server answers or goes away in time");
    let Ok(response) = response else {
        return Answer {
            id: None,
            status: None,
            finished: None,
        };
    };
    let status = response.status();
    let id = response
        .headers()
        .get("x-ccflare-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let whole = tokio::time::timeout(GUARD, response.into_body().collect())
        .await
        .expect("the body ends or breaks in time")
        .is_ok();
    Answer {
        id,
        status: Some(status),
        finished: whole.then(Instant::now),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_burst_loses_no_answer_older_than_a_second_and_benches_survive() {
    let _alone = ALONE_FOR_THE_BURST.write().await;
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    add_accounts(&path, &["one", "benched"]).await.close().await;
    let command = || {
        let mut command = proxy_command(dir.path(), &upstream, &[]);
        command
            .env("LB_STRATEGY", "round-robin")
            .env("LOG_LEVEL", "warn");
        command
    };
    let server = Server::start(command()).await;
    let url = server.url.clone();

    // "benched" answers 429 with a reset an hour away: it is benched and "one" serves. Round
    // robin sends one of the two requests to it.
    let reset = ccflare_core::time::format_rfc3339(now_ms() + 3_600_000);
    upstream.push_fault(
        &key("benched"),
        Fault::RateLimited {
            retry_after: Some(3600),
            reset: Some(reset),
        },
    );
    for _ in 0..2 {
        let reply = send(messages_request(&url, false, &[])).await;
        assert_eq!(
            (reply.status, reply.header("x-ccflare-account")),
            (StatusCode::OK, "one")
        );
    }
    assert_eq!(upstream_requests_of(&upstream, "benched"), 1);
    health_until(&server, |h| h["accounts"]["rate_limited"] == 1).await;

    // BURST_RATE requests a second, open loop (each on its own task, sent on time whatever
    // the answers do), JSON and streams alternating; SIGKILL right after the last is sent,
    // with streams still running. The kill's time is taken just before the signal.
    let client = ccflare_testkit::client();
    let mut burst = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / BURST_RATE);
    for n in 0..KILL_AFTER {
        tick.tick().await;
        burst.spawn(attempt(client.clone(), mixed_request(&url, n)));
    }
    let killed_at = Instant::now();
    server.kill().await;
    let mut answers = Vec::with_capacity(KILL_AFTER);
    while let Some(answer) = burst.join_next().await {
        answers.push(answer.expect("the client task ends"));
    }

    // The file as the killed process left it (its WAL beside it) opens clean.
    assert_eq!(integrity_check(&path).await, "ok");
    let rows = request_ids(&path).await;
    let window = RECORDED_WITHIN;
    let answered: Vec<&Answer> = answers.iter().filter(|a| a.finished.is_some()).collect();
    for answer in &answered {
        assert_eq!(answer.status, Some(StatusCode::OK));
        assert!(answer.id.is_some(), "an answer without a request id");
    }
    let (early, late): (Vec<&Answer>, Vec<&Answer>) = answered
        .iter()
        .partition(|a| a.finished.is_some_and(|at| at + window < killed_at));
    let id = |a: &&Answer| a.id.clone().unwrap_or_default();
    let missing_early: Vec<String> = early.iter().map(id).filter(|i| !rows.contains(i)).collect();
    let missing_late = late.iter().map(id).filter(|i| !rows.contains(i)).count();
    // How long before the kill the oldest answer without a row had ended: how far the
    // writer was behind (for the report; the assertion is the count below).
    let behind = answered
        .iter()
        .filter(|a| !rows.contains(&id(a)))
        .filter_map(|a| a.finished.map(|at| killed_at.saturating_duration_since(at)))
        .max()
        .map_or("every answer has its row".to_owned(), |d| {
            format!("the oldest answer without a row ended {d:?} before the kill")
        });
    println!(
        "kill -9 after {KILL_AFTER} requests at {BURST_RATE}/s: {} answered ({} in the last \
         {window:?}), {} cut in flight; {} rows; rows missing: {} of the answers before the last \
         {window:?}, {missing_late} of those in it; {behind}",
        answered.len(),
        late.len(),
        answers.len() - answered.len(),
        rows.len(),
        missing_early.len(),
    );
    assert!(
        missing_early.is_empty(),
        "answered more than {window:?} before the kill but not in the database: {missing_early:?}"
    );
    // The test means something only if the burst was served and the kill cut some of it.
    assert!(early.len() >= KILL_AFTER / 2, "{} answered", early.len());
    assert!(
        answered.len() < answers.len(),
        "the kill cut requests in flight"
    );

    // A restarted server serves, and "benched" is still benched: nothing goes to it.
    let server = Server::start(command()).await;
    assert!(
        server.banner.contains("2 total: 1 active, 1 rate limited"),
        "{}",
        server.banner
    );
    let health = send(get(&format!("{}/health", server.url))).await.json();
    assert_eq!(
        (&health["status"], &health["accounts"]["rate_limited"]),
        (&serde_json::json!("ok"), &serde_json::json!(1)),
        "{health}"
    );
    for n in 0..4 {
        let reply = send(mixed_request(&server.url, n)).await;
        assert_eq!(
            (reply.status, reply.header("x-ccflare-account")),
            (StatusCode::OK, "one")
        );
    }
    assert_eq!(upstream_requests_of(&upstream, "benched"), 1);
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_for_10_s_during_traffic_loses_no_request_and_no_row() {
    let _shared = ALONE_FOR_THE_BURST.read().await;
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let url = server.url.clone();

    // Another program (a `sqlite3` session, a backup) holds the write lock for ten seconds,
    // twice the writer's busy timeout, while clients send 20 requests a second and a monitor
    // reads /health.
    let lock = WriteLock::take(&path).await;
    let locked_at = Instant::now();
    let mut traffic = JoinSet::new();
    let mut writable_seen = Vec::new();
    let mut metrics_seen = false;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while locked_at.elapsed() < LOCK_HELD {
        tick.tick().await;
        traffic.spawn(send(mixed_request(&url, writable_seen.len())));
        let health = send(get(&format!("{url}/health"))).await.json();
        let writable = health["database"]["writable"] == true;
        if !writable {
            assert_eq!(health["status"], "degraded", "{health}");
            assert!(
                health["database"]["waiting_records"].as_u64() >= Some(1),
                "{health}"
            );
            assert!(
                health["database"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("locked")),
                "{health}"
            );
            if !metrics_seen {
                let metrics = send(get(&format!("{url}/metrics"))).await;
                assert!(
                    metrics.text().contains("\nccflare_database_writable 0\n"),
                    "{}",
                    metrics.text()
                );
                metrics_seen = true;
            }
        }
        writable_seen.push(writable);
    }
    lock.release().await;
    let sent = writable_seen.len();

    // Once the writer's wait for the lock ran out, health said so, and kept saying so for as
    // long as the lock was held.
    let outage = writable_seen
        .iter()
        .position(|w| !w)
        .expect("/health showed the outage");
    assert!(
        writable_seen[outage..].iter().all(|w| !w),
        "/health went back to writable while the lock was held: {writable_seen:?}"
    );
    // Every request was served, without waiting for the database.
    let mut ids = HashSet::new();
    while let Some(reply) = tokio::time::timeout(PROCESS_GUARD, traffic.join_next())
        .await
        .expect("every request ends in time")
    {
        let reply = reply.expect("the client saw an answer");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        ids.insert(reply.header("x-ccflare-request-id").to_owned());
    }
    assert_eq!(ids.len(), sent, "one request id per request");
    // The other program let go: everything waiting goes in, and health says so.
    let health = health_until(&server, |h| h["database"]["writable"] == true).await;
    assert_eq!(health["status"], "ok", "{health}");
    // The outage (from the writer's first failed wait, five seconds in, to the release) was
    // shorter than the ten seconds records wait in memory before they spill: all went straight
    // to the database, none to the spill or rejects file, none dropped.
    let database = &health["database"];
    assert_eq!(
        [
            &database["spilled_records"],
            &database["rejected_records"],
            &database["dropped_records"]
        ],
        [0, 0, 0],
        "{health}"
    );
    server.terminate().await;
    println!(
        "database locked for {LOCK_HELD:?}: {sent} requests served, /health showed the outage \
         from poll {outage} on"
    );
    assert_eq!(
        request_ids(&path).await,
        ids,
        "every answered request has its row"
    );
}

/// `len` bytes that are not SQLite's (a deterministic xorshift stream, so a failure can be
/// reproduced).
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let bytes = garbage(64 * 1024);
    std::fs::write(&path, &bytes).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();

    let mut command = server_command(dir.path());
    command.env("DATABASE_URL", &path);
    let (code, stdout, stderr) = run_to_end(command).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "exits with an error, not 0 or a signal: {code:?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("cannot open database at {}", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("not a database"), "{stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");

    // Untouched: the same bytes, not even rewritten with them, and nothing beside it.
    assert!(std::fs::read(&path).unwrap() == bytes, "the file changed");
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
    let mut beside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["ccflare.db"], "no -wal, -shm or -journal file");
}

/// The totals and per-account requests of one JSON report, to compare with the rows' own.
fn read_totals(totals: &serde_json::Value, accounts: &[serde_json::Value]) -> RequestTotals {
    let int = |v: &serde_json::Value, field: &str| {
        v[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field} in {v}"))
    };
    RequestTotals {
        requests: int(totals, "requests"),
        // The CLI's tables count errors; the API has both.
        successes: int(totals, "requests") - int(totals, "errors"),
        input_tokens: int(totals, "input_tokens"),
        output_tokens: int(totals, "output_tokens"),
        cache_read_tokens: int(totals, "cache_read_tokens"),
        cost_usd: totals["cost_usd"].as_f64().unwrap(),
        by_account: accounts
            .iter()
            .map(|a| (a["name"].as_str().unwrap().to_owned(), int(a, "requests")))
            .collect(),
    }
}

/// `shown` equals `rows`, the cost within rounding (the same sums, added in another order).
fn assert_totals(what: &str, shown: &RequestTotals, rows: &RequestTotals) {
    let cost_ok = (shown.cost_usd - rows.cost_usd).abs() <= 1e-6 * rows.cost_usd.max(1.0);
    let rounded = RequestTotals {
        cost_usd: rows.cost_usd,
        ..shown.clone()
    };
    assert!(
        cost_ok && rounded == *rows,
        "{what} shows {shown:?}, the rows say {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_100_000_requests_starts_ready_and_its_figures_match() {
    let _shared = ALONE_FOR_THE_BURST.read().await;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let db = add_accounts(&path, &["one", "two"]).await;
    let filling = Instant::now();
    // A busy week: one request every six seconds, the newest a minute ago.
    let now = now_ms();
    prefill_requests(&db, PREFILLED_ROWS, now - 7 * 86_400_000, now - 60_000).await;
    let filled_in = filling.elapsed();
    assert_eq!(request_totals(&db).await.requests, PREFILLED_ROWS as i64);

    // Ready: listening, /health answers, a request is proxied. Each wait is bounded by the
    // guards (`Server::start`, `send`); the time is printed for docs/testing.md, not asserted.
    let upstream = mock().await;
    let starting = Instant::now();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[])).await;
    let listening = starting.elapsed();
    let health = send(get(&format!("{}/health", server.url))).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok", "{}", health.text());
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    let ready = starting.elapsed();
    println!(
        "{PREFILLED_ROWS} rows: filled in {filled_in:?}; the server listened after {listening:?} \
         and had answered /health and a proxied request after {ready:?}"
    );

    // Once the proxied request is recorded, what the API shows is what the rows say: the
    // all-time stats (read from the rollups) and the accounts (their counters).
    let stats = eventually(PROCESS_GUARD, "the proxied request is recorded", || async {
        let stats = send(get(&format!("{}/api/stats", server.url))).await.json();
        (stats["totals"]["requests"].as_i64() == Some(PREFILLED_ROWS as i64 + 1)).then_some(stats)
    })
    .await;
    let rows = request_totals(&db).await;
    let api_stats = read_totals(&stats["totals"], stats["accounts"].as_array().unwrap());
    assert_totals("GET /api/stats", &api_stats, &rows);
    let accounts = send(get(&format!("{}/api/accounts", server.url)))
        .await
        .json();
    let by_account: BTreeMap<String, i64> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_account, rows.by_account, "GET /api/accounts");

    // The CLI, beside the running server (it reads the rows themselves).
    let cli = workspace_binary(
        Path::new(env!("CARGO_BIN_EXE_ccflare-server")),
        "ccflare-cli",
    );
    let run_cli = |args: &'static [&'static str]| {
        let mut command = isolated_command(&cli, dir.path());
        command.env("DATABASE_URL", &path).args(args);
        async move {
            let output = ccflare_testkit::process::run_to_end(command).await;
            assert!(output.status.success(), "{args:?}: {output:?}");
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        }
    };
    let daily = run_cli(&["stats", "daily", "--days", "30", "--utc", "--json"]).await;
    let listed = run_cli(&["accounts", "list", "--json"]).await;
    let cli_stats = read_totals(&daily["total"], listed.as_array().unwrap());
    assert_totals("ccflare-cli stats daily / accounts list", &cli_stats, &rows);
    server.terminate().await;
    db.close().await;
}
