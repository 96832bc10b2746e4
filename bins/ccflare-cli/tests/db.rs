//! `ccflare-cli db check` and `db recover` against real damage: a database with the normal
//! schema, two API-key accounts, an OAuth login, a stored setting and 3,000 request rows
//! written by the storage writer, closed, then damaged on disk (a leaf page of the `requests`
//! table, or its root page, overwritten with garbage; `ccflare_testkit::damage`). The checks
//! are what an operator would look at: exit codes and the lines printed, then in the recovered
//! file every account with its key and tokens, the setting, every request row that was not on
//! the damaged page (byte for byte), rollups that add up to the saved rows, and a real
//! `ccflare-server` that serves with the recovered accounts.

mod common;

use ccflare_core::{AccountKind, Clock, Secret};
use ccflare_storage::{Db, accounts, oauth, rollups};
use ccflare_testkit::damage;
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::process::{self, isolated_command};
use ccflare_testkit::{Message, send};
use common::{Cli, DAY, HOUR, NOW, Request, key, record};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Request rows in the database: a few hundred pages of them.
const ROWS: usize = 3_000;
/// An error message longer than a 4,096-byte page.
static LONG_MESSAGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| "prompt is too long: ".repeat(400));
const MODELS: [&str; 3] = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"];

/// A healthy database in the CLI's temp dir: accounts `work` and `spare` (API keys), `personal`
/// (OAuth, with the tokens given), the setting `lb_strategy = round-robin`, and [`ROWS`]
/// requests over about three days. Checkpointed and closed, so the file holds everything.
async fn healthy(tokens: (&str, &str), expires_at: i64) -> Cli {
    let cli = Cli::new();
    cli.run(&["accounts", "add", &key("AAAA"), "--name", "work"])
        .await
        .ok();
    cli.run(&["accounts", "add", &key("BBBB"), "--name", "spare"])
        .await
        .ok();
    cli.run(&["config", "set", "lb_strategy", "round-robin"])
        .await
        .ok();
    let db = cli.db().await;
    oauth::add_oauth_account(
        &db,
        "personal",
        &Secret::new(tokens.0),
        Some(&Secret::new(tokens.1)),
        expires_at,
        None,
        NOW,
    )
    .await
    .unwrap();
    let requests: Vec<Request> = (0..ROWS)
        .map(|i| {
            let account = if i % 2 == 0 {
                (1, "work")
            } else {
                (2, "spare")
            };
            let mut request = Request::ok(NOW - i as i64 * 90_000, MODELS[i % 3], account);
            request.latency_ms = 200 + (i as i64 * 37) % 5_000;
            request.input = 100 + i as u64;
            request.cost = (i % 8) as f64 / 64.0;
            if i % 11 == 0 {
                request.status = 529;
                request.error = Some(("overloaded_error", "Overloaded"));
            }
            // Longer than a page: the row continues on overflow pages.
            if i % 500 == 7 {
                request.status = 400;
                request.error = Some(("invalid_request_error", LONG_MESSAGE.as_str()));
            }
            request
        })
        .collect();
    record(&db, &requests, &[]).await;
    db.close().await;
    damage::checkpoint(&database(&cli)).await;
    cli
}

fn database(cli: &Cli) -> PathBuf {
    cli.path().join("ccflare.db")
}

/// Every request row, by id, as text (all columns).
async fn rows(path: &Path) -> BTreeMap<String, String> {
    damage::select(path, "SELECT id, * FROM requests")
        .await
        .into_iter()
        .map(|row| (row[0].clone(), row[1..].join("|")))
        .collect()
}

/// Damages a leaf page of `requests` in the middle of the table; returns the ids of the rows
/// that were on it.
async fn damage_a_leaf(cli: &Cli, before: &BTreeMap<String, String>) -> Vec<String> {
    let path = database(cli);
    let leaves = damage::leaf_pages(&path, "requests").await;
    assert!(leaves.len() > 20, "{} leaf pages", leaves.len());
    let page = leaves[leaves.len() / 2];
    let rowids = damage::rowids_on_leaf(&path, page);
    assert!(!rowids.is_empty());
    let list: Vec<String> = rowids.iter().map(i64::to_string).collect();
    let sql = format!(
        "SELECT id FROM requests WHERE rowid IN ({})",
        list.join(", ")
    );
    let ids: Vec<String> = damage::select(&path, &sql)
        .await
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(ids.len(), rowids.len());
    assert!(ids.iter().all(|id| before.contains_key(id)));
    damage::overwrite_page(&path, page);
    ids
}

#[tokio::test]
async fn a_healthy_database_checks_ok() {
    let cli = healthy(("sk-ant-oat01-access", "sk-ant-ort01-refresh"), NOW + HOUR).await;
    let text = cli.run(&["db", "check"]).await.ok();
    assert!(text.contains("check     quick_check: ok\n"), "{text}");
    assert!(
        text.contains("rows      accounts 3, requests 3,000, settings 1\n"),
        "{text}"
    );
    assert!(!text.contains("problem"), "{text}");

    let full = cli.run(&["db", "check", "--full", "--json"]).await.ok();
    let json: serde_json::Value = serde_json::from_str(&full).unwrap();
    assert_eq!(json["ok"], true, "{full}");
    assert_eq!(json["check"], "integrity_check");
    assert_eq!(json["problems"], serde_json::json!([]));
    assert_eq!(json["tables"][1]["table"], "requests");
    assert_eq!(json["tables"][1]["rows"], 3_000);
}

#[tokio::test]
async fn a_damaged_page_is_found_and_recovery_saves_everything_else() {
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let (access, refresh) = upstream.issue_oauth_tokens();
    // The server below runs on the real clock: the login must not be due for refresh.
    let expires_at = ccflare_core::SystemClock.now_ms() + 24 * HOUR;
    let cli = healthy((&access, &refresh), expires_at).await;
    let before = rows(&database(&cli)).await;
    assert_eq!(before.len(), ROWS);
    let lost = damage_a_leaf(&cli, &before).await;
    let old_bytes = std::fs::read(database(&cli)).unwrap();

    // The check: exit 1, and the damaged tree named.
    let checked = cli.run(&["db", "check"]).await;
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(checked.stderr.is_empty(), "{}", checked.stderr);
    let problems: Vec<&str> = checked
        .stdout
        .lines()
        .filter(|l| l.starts_with("problem   "))
        .collect();
    assert!(!problems.is_empty(), "{}", checked.stdout);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("table requests: database disk image is malformed")),
        "{}",
        checked.stdout
    );
    assert!(
        checked.stdout.contains("ccflare-cli db recover --output"),
        "{}",
        checked.stdout
    );
    let json = cli.run(&["db", "check", "--json"]).await;
    assert_eq!(json.code, Some(1));
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"].as_array().unwrap().len(), problems.len());

    // The recovery.
    let recovered = cli
        .run(&["db", "recover", "--output", "recovered.db"])
        .await
        .ok();
    assert!(recovered.contains("copied table by table"), "{recovered}");
    let saved = ROWS - lost.len();
    let line = |table: &str| {
        recovered
            .lines()
            .find(|l| l.starts_with(table))
            .unwrap_or_else(|| panic!("no {table} line: {recovered}"))
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("accounts"), "accounts 3 0");
    assert_eq!(line("settings"), "settings 1 0");
    assert_eq!(
        line("requests"),
        format!("requests {} {}", group(saved), lost.len())
    );
    assert!(
        recovered.contains(&format!(
            "rollups rebuilt from the {} saved requests",
            group(saved)
        )),
        "{recovered}"
    );
    assert!(recovered.contains("the new file checks ok"), "{recovered}");
    assert!(
        recovered.contains("mv ./ccflare.db ./ccflare.db.damaged\n"),
        "{recovered}"
    );
    assert!(
        recovered.contains("mv recovered.db ./ccflare.db\n"),
        "{recovered}"
    );
    // The damaged file was only read.
    assert_eq!(std::fs::read(database(&cli)).unwrap(), old_bytes);

    let new = cli.path().join("recovered.db");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&new).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the new file holds keys: {mode:o}");
    }
    // One self-contained file: nothing waits in a WAL beside it.
    let wal = cli.path().join("recovered.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "rows left in {wal:?}"
    );
    let mut check = cli.command(&["db", "check"]);
    check.env("DATABASE_URL", "file:./recovered.db");
    let check = common::output(check).await.ok();
    assert!(check.contains("quick_check: ok"), "{check}");

    // Every row not on the damaged page, exactly as it was; none of those on it.
    let after = rows(&new).await;
    assert_eq!(after.len(), saved);
    for (id, row) in &before {
        if lost.contains(id) {
            assert!(!after.contains_key(id), "{id} was on the damaged page");
        } else {
            assert_eq!(after.get(id), Some(row), "{id}");
        }
    }

    // Accounts with their keys and tokens; the setting.
    let db = Db::open_path(&new).await.unwrap();
    let accounts = accounts::list(&db).await.unwrap();
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["work", "spare", "personal"]);
    assert_eq!(accounts[0].credential.expose(), key("AAAA"));
    assert_eq!(accounts[1].credential.expose(), key("BBBB"));
    assert_eq!(accounts[2].kind, AccountKind::OAuth);
    let tokens = oauth::stored_tokens(&db, accounts[2].id).await.unwrap();
    assert_eq!(tokens.access.expose(), access);
    assert_eq!(tokens.refresh.as_ref().map(Secret::expose), Some(&*refresh));
    assert_eq!(tokens.expires_at, Some(expires_at));
    let stored = ccflare_storage::settings::all(&db).await.unwrap();
    assert_eq!(
        stored.get("lb_strategy").map(String::as_str),
        Some("round-robin")
    );

    db.close().await;
    // The rollups add up to the saved rows, day by day, and not to the rows that were lost.
    assert_rollups_match_rows(&new).await;

    // A real server on the recovered file serves with its accounts, in the stored strategy.
    let mut command = isolated_command(server_binary(), cli.path());
    command
        .env("PORT", "0")
        .env("DATABASE_URL", "file:./recovered.db")
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .stderr(Stdio::null());
    let server = process::Server::start(command).await;
    let mut served = Vec::new();
    for _ in 0..3 {
        let body = Message::new("claude-haiku-4-5").max_tokens(8).body();
        let url = format!("{}/v1/messages", server.url);
        let reply = send(anthropic_post(&url, "anything", &[], body)).await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
        served.push(reply.header("x-ccflare-account").to_owned());
    }
    server.kill().await;
    served.sort();
    assert_eq!(served, ["personal", "spare", "work"]);
    let mut credentials: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.credential.clone())
        .collect();
    credentials.sort();
    let mut expected = vec![key("AAAA"), key("BBBB"), access.clone()];
    expected.sort();
    assert_eq!(credentials, expected);
}

/// Per UTC day: the daily rollup of all requests equals a count of the rows, and the latency
/// histograms hold one entry per row.
async fn assert_rollups_match_rows(path: &Path) {
    let from_rows = damage::select(
        path,
        "SELECT started_at / 86400000 * 86400000, count(*), sum(input_tokens), sum(cost_usd) \
         FROM requests GROUP BY 1 ORDER BY 1",
    )
    .await;
    let from_rollups = damage::select(
        path,
        "SELECT bucket, requests, input_tokens, cost_usd FROM rollup_daily WHERE dim = 0 \
         ORDER BY bucket",
    )
    .await;
    assert!(from_rows.len() >= 3, "{from_rows:?}");
    assert_eq!(from_rollups, from_rows);
    let counted = damage::select(
        path,
        "SELECT (SELECT count(*) FROM requests), \
         (SELECT sum(count) FROM latency_hourly WHERE metric = 0)",
    )
    .await;
    assert_eq!(counted[0][0], counted[0][1]);
}

#[tokio::test]
async fn a_damaged_root_page_hides_intact_leaves_which_are_read_directly() {
    let cli = healthy(("sk-ant-oat01-access", "sk-ant-ort01-refresh"), NOW + HOUR).await;
    let path = database(&cli);
    // Retention deletes the oldest day: its leaf pages go to the freelist with their rows still
    // on them, which must not come back.
    let db = Db::open_path(&path).await.unwrap();
    let purged = rollups::purge_before(&db, NOW - 2 * DAY, 1_000)
        .await
        .unwrap();
    assert!(purged.requests > 500, "{purged:?}");
    db.close().await;
    damage::checkpoint(&path).await;
    let free = damage::select(&path, "PRAGMA freelist_count").await;
    assert_ne!(free[0][0], "0", "retention freed no page");
    let before = rows(&path).await;
    assert_eq!(before.len() as u64, 3_000 - purged.requests);
    let long = before
        .values()
        .filter(|row| row.contains(LONG_MESSAGE.as_str()))
        .count();
    assert!(long > 0, "no row on overflow pages is left");
    // With 3,000 rows the root is an interior page: it holds no row, only the way to them.
    let root = damage::root_page(&path, "requests").await;
    assert!(!damage::leaf_pages(&path, "requests").await.contains(&root));
    damage::overwrite_page(&path, root);

    let checked = cli.run(&["db", "check"]).await;
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("problem   table requests: "),
        "{}",
        checked.stdout
    );

    let recovered = cli
        .run(&["db", "recover", "-o", "recovered.db", "--json"])
        .await
        .ok();
    let json: serde_json::Value = serde_json::from_str(&recovered).unwrap();
    assert_eq!(json["method"], "table_by_table");
    assert_eq!(json["ok"], true);
    assert_eq!(json["tables"][0]["table"], "accounts");
    assert_eq!(json["tables"][0]["saved"], 3);
    assert_eq!(json["tables"][1]["saved"], 1);
    assert_eq!(json["tables"][2]["table"], "client_keys");
    let requests = &json["tables"][3];
    // SQLite cannot walk the table at all; every row is on an intact leaf, read directly.
    let kept = before.len();
    assert_eq!(requests["saved"], kept, "{recovered}");
    assert_eq!(requests["from_pages"], kept, "{recovered}");
    assert_eq!(requests["lost"], 0, "{recovered}");
    assert_eq!(requests["unreadable_rowids"], serde_json::json!([]));
    assert_eq!(json["rollups_rebuilt_from"], kept);

    let new = cli.path().join("recovered.db");
    assert_eq!(rows(&new).await, before);
    assert_rollups_match_rows(&new).await;
    let db = Db::open_path(&new).await.unwrap();
    let accounts = accounts::list(&db).await.unwrap();
    assert_eq!(accounts.len(), 3);
    assert_eq!(accounts[0].credential.expose(), key("AAAA"));
    db.close().await;

    let text = cli.run(&["db", "recover", "-o", "again.db"]).await.ok();
    assert!(
        text.contains(&format!(
            "requests: {} rows read straight from the file's pages (SQLite could not reach \
             them)\n",
            group(kept)
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_readable_database_is_copied_whole() {
    let cli = healthy(("sk-ant-oat01-access", "sk-ant-ort01-refresh"), NOW + HOUR).await;
    let before = rows(&database(&cli)).await;
    let recovered = cli
        .run(&["db", "recover", "--output", "copy.db"])
        .await
        .ok();
    assert!(
        recovered.contains("every row was readable: the file was copied whole"),
        "{recovered}"
    );
    assert!(
        recovered.contains("requests     3,000     0"),
        "{recovered}"
    );
    assert_eq!(rows(&cli.path().join("copy.db")).await, before);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_says_so() {
    let cli = Cli::new();
    damage::garbage_file(&database(&cli), 64 * 1024);
    let before = std::fs::read(database(&cli)).unwrap();
    let checked = cli.run(&["db", "check"]).await;
    assert_eq!(checked.code, Some(1));
    assert!(
        checked
            .stdout
            .contains("problem   not a database: SQLite cannot read this file's header\n"),
        "{}",
        checked.stdout
    );
    let error = cli
        .run(&["db", "recover", "--output", "new.db"])
        .await
        .fails();
    assert!(error.contains("is not a database"), "{error}");
    assert!(!cli.path().join("new.db").exists());
    assert_eq!(std::fs::read(database(&cli)).unwrap(), before, "untouched");
}

#[tokio::test]
async fn a_missing_database_is_an_error_and_is_not_created() {
    let cli = Cli::new();
    let error = cli.run(&["db", "check"]).await.fails();
    assert!(error.contains("no database at ./ccflare.db"), "{error}");
    assert!(!database(&cli).exists());
}

#[tokio::test]
async fn recover_refuses_to_write_over_a_file() {
    let cli = healthy(("sk-ant-oat01-access", "sk-ant-ort01-refresh"), NOW + HOUR).await;
    std::fs::write(cli.path().join("taken.db"), b"mine").unwrap();
    let error = cli
        .run(&["db", "recover", "--output", "taken.db"])
        .await
        .fails();
    assert!(error.contains("taken.db already exists"), "{error}");
    assert_eq!(std::fs::read(cli.path().join("taken.db")).unwrap(), b"mine");

    let error = cli
        .run(&["db", "recover", "--output", "./ccflare.db"])
        .await
        .fails();
    assert!(error.contains("is the database being recovered"), "{error}");

    // A leftover WAL beside the new name would be read as part of the new file.
    std::fs::write(cli.path().join("fresh.db-wal"), b"stale").unwrap();
    let error = cli
        .run(&["db", "recover", "--output", "fresh.db"])
        .await
        .fails();
    assert!(error.contains("fresh.db-wal already exists"), "{error}");
    assert!(!cli.path().join("fresh.db").exists());
}

/// `1,234`.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn server_binary() -> PathBuf {
    process::workspace_binary(
        Path::new(env!("CARGO_BIN_EXE_ccflare-cli")),
        "ccflare-server",
    )
}
