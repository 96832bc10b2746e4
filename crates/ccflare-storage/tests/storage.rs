//! Storage against a real SQLite file in a temp dir: opening, permissions, migrations,
//! idempotent account upserts, and the batched writer.

use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::usage::Usage;
use ccflare_core::{Account, AccountStatus, Secret};
use ccflare_storage::accounts::{self, Upsert};
use ccflare_storage::{AccountStateUpdate, Db, StorageError, Writer, requests};

const KEY_A: &str = "sk-ant-api03-aaaaaaaaaaaaaaaaaaaa-1111";
const KEY_B: &str = "sk-ant-api03-bbbbbbbbbbbbbbbbbbbb-1111";

async fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("file:{}/ccflare.db", dir.path().display()))
        .await
        .unwrap();
    (dir, db)
}

/// The account of `KEY_A`, added at time 1 under the name it gets by default.
async fn add_key_a(db: &Db) -> Account {
    let (account, _) = accounts::upsert_api_key(db, &Secret::new(KEY_A), None, None, 1)
        .await
        .unwrap();
    account
}

/// `account`'s request count and last use, as the writer stored them.
async fn counters(db: &Db, account: &Account) -> (i64, i64) {
    sqlx::query_as("SELECT request_count, last_used FROM accounts WHERE id = ?")
        .bind(account.id.0)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// A state the server decided for `account` on its current revision: `status`, and nothing
/// else.
fn decided(account: &Account, status: AccountStatus) -> AccountStateUpdate {
    AccountStateUpdate {
        id: account.id,
        revision: Some(account.revision),
        status,
        rate_limited_until: None,
        overloaded_until: None,
        last_ratelimit: None,
    }
}

/// Writes an account state through the writer, as the server does, and waits until it is in.
async fn write_state(db: &Db, update: AccountStateUpdate) {
    let writer = Writer::spawn(db.clone());
    writer.handle().account_state(update);
    writer.close().await;
}

#[tokio::test]
async fn database_file_is_private_and_reopens() {
    let (dir, db) = open().await;
    let path = dir.path().join("ccflare.db");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    accounts::upsert_api_key(&db, &Secret::new(KEY_A), None, None, 1)
        .await
        .unwrap();
    db.close().await;
    // Opening again applies no migration twice and keeps the data.
    let db = Db::open_path(&path).await.unwrap();
    assert_eq!(accounts::list(&db).await.unwrap().len(), 1);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn unwritable_path_is_a_clear_error() {
    let err = Db::open("file:/proc/ccflare-no/ccflare.db")
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Open { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("cannot open database at /proc/ccflare-no/ccflare.db"),
        "{err}"
    );
}

#[tokio::test]
async fn api_keys_upsert_idempotently_with_readable_names() {
    let (_dir, db) = open().await;
    let (a, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_A), None, None, 1)
        .await
        .unwrap();
    assert_eq!((a.name.as_str(), how), ("key-1111", Upsert::Created));
    let (again, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_A), None, None, 2)
        .await
        .unwrap();
    assert_eq!((again.id, how), (a.id, Upsert::Unchanged));
    // Same last four characters: the name gets a number, never the key.
    let (b, _) = accounts::upsert_api_key(&db, &Secret::new(KEY_B), None, None, 3)
        .await
        .unwrap();
    assert_eq!(b.name, "key-1111-2");
    assert_eq!(accounts::list(&db).await.unwrap().len(), 2);
    let dup = accounts::upsert_api_key(
        &db,
        &Secret::new("sk-ant-api03-cccccccccccccccc-9"),
        Some("key-1111"),
        None,
        4,
    )
    .await;
    assert!(matches!(dup, Err(StorageError::DuplicateName { .. })));
}

#[tokio::test]
async fn re_adding_an_invalid_key_reactivates_it_with_a_new_revision() {
    let (_dir, db) = open().await;
    let a = add_key_a(&db).await;
    write_state(&db, decided(&a, AccountStatus::Invalid)).await;
    let stored = accounts::find(&db, &a.name).await.unwrap();
    assert_eq!(
        (stored.status, stored.revision),
        (AccountStatus::Invalid, a.revision)
    );
    let (back, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_A), None, None, 2)
        .await
        .unwrap();
    assert_eq!(
        (back.status, how),
        (AccountStatus::Active, Upsert::Reactivated)
    );
    assert!(back.revision > a.revision);
}

#[tokio::test]
async fn person_edits_bump_revision_and_report_unknown_names() {
    let (_dir, db) = open().await;
    let a = add_key_a(&db).await;
    accounts::set_status(&db, &a.name, AccountStatus::Paused, 2)
        .await
        .unwrap();
    accounts::rename(&db, &a.name, "work", 3).await.unwrap();
    accounts::set_priority(&db, "work", 5, 4).await.unwrap();
    let stored = accounts::find(&db, "work").await.unwrap();
    assert_eq!(
        (stored.status, stored.priority, stored.revision),
        (AccountStatus::Paused, 5, 4)
    );
    assert!(matches!(
        accounts::remove(&db, "nope").await,
        Err(StorageError::AccountNotFound { .. })
    ));
    accounts::remove(&db, "work").await.unwrap();
    assert!(accounts::list(&db).await.unwrap().is_empty());
}

#[tokio::test]
async fn writer_records_every_request_and_counts_per_account() {
    let (_dir, db) = open().await;
    let a = add_key_a(&db).await;
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    for i in 0..500 {
        handle.record(RequestRecord {
            id: format!("req-{i}"),
            started_at: 1000 + i,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-haiku-4-5".into()),
            account_id: Some(a.id),
            account_name: Some(a.name.clone()),
            status: 200,
            success: true,
            attempts: 2,
            attempt_failures: vec![AttemptFailure {
                account: "other".into(),
                status: Some(429),
                reason: "rate_limited".into(),
            }],
            latency_ms: 12,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Default::default()
            },
            cost_usd: 0.25,
            // The upstream's ids on every other row (migration 0011); the rest have none.
            upstream_request_id: (i % 2 == 1).then(|| format!("req_up_{i}")),
            message_id: (i % 2 == 1).then(|| format!("msg_{i}")),
            ..Default::default()
        });
    }
    handle.flush().await;
    assert_eq!(requests::count(&db).await.unwrap(), 500);
    assert_eq!(handle.queue_depth(), 0);
    let row = requests::get(&db, "req-7").await.unwrap().unwrap();
    assert_eq!(row.usage.output_tokens, 4);
    assert_eq!(row.attempt_failures[0].status, Some(429));
    assert_eq!(row.upstream_request_id.as_deref(), Some("req_up_7"));
    assert_eq!(row.message_id.as_deref(), Some("msg_7"));
    let without = requests::get(&db, "req-8").await.unwrap().unwrap();
    assert_eq!(
        (without.upstream_request_id, without.message_id),
        (None, None)
    );
    assert_eq!(counters(&db, &a).await, (500, 1499));
    writer.close().await;
}

#[tokio::test]
async fn every_account_of_a_batch_gets_its_own_count_and_last_use() {
    let (_dir, db) = open().await;
    // 20 accounts: one batch's counters fill one statement with room for 64 and leave the
    // rest of it empty; records without an account count for none.
    let mut all = Vec::new();
    for n in 0..20 {
        let key = Secret::new(format!("sk-ant-api03-{n:020}-1111"));
        let (account, _) = accounts::upsert_api_key(&db, &key, None, None, 1)
            .await
            .unwrap();
        all.push(account);
    }
    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    for i in 0..210_i64 {
        let account = (i % 21 != 20).then(|| &all[(i % 21) as usize]);
        handle.record(RequestRecord {
            id: format!("req-{i}"),
            started_at: 5000 + i,
            method: "POST".into(),
            path: "/v1/messages".into(),
            account_id: account.map(|a| a.id),
            account_name: account.map(|a| a.name.clone()),
            status: 200,
            success: true,
            attempts: 1,
            ..Default::default()
        });
    }
    handle.flush().await;
    for (n, account) in all.iter().enumerate() {
        // Account n took requests n, n + 21, …, n + 189.
        assert_eq!(
            counters(&db, account).await,
            (10, 5000 + 189 + n as i64),
            "account {n}"
        );
    }
    writer.close().await;
}

#[tokio::test]
async fn settings_are_stored_replaced_and_removed() {
    let (_dir, db) = open().await;
    use ccflare_storage::settings;
    assert!(settings::all(&db).await.unwrap().is_empty());
    settings::set(&db, "lb_strategy", "round-robin", 1)
        .await
        .unwrap();
    settings::set(&db, "lb_strategy", "priority", 2)
        .await
        .unwrap();
    settings::set(&db, "session_timeout", "60", 2)
        .await
        .unwrap();
    let stored = settings::all(&db).await.unwrap();
    assert_eq!(
        stored.get("lb_strategy").map(String::as_str),
        Some("priority")
    );
    assert_eq!(stored.len(), 2);
    assert!(settings::unset(&db, "lb_strategy").await.unwrap());
    assert!(!settings::unset(&db, "lb_strategy").await.unwrap());
    assert_eq!(settings::all(&db).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_persons_newer_change_wins_over_a_state_the_server_decided_earlier() {
    let (_dir, db) = open().await;
    let a = add_key_a(&db).await;
    // The person resumes the account (revision 2) while the server's "invalid", decided on
    // revision 1, is still queued.
    accounts::set_status(&db, &a.name, AccountStatus::Paused, 2)
        .await
        .unwrap();
    accounts::set_status(&db, &a.name, AccountStatus::Active, 3)
        .await
        .unwrap();
    let invalid = AccountStateUpdate {
        rate_limited_until: Some(99_999),
        ..decided(&a, AccountStatus::Invalid)
    };
    write_state(&db, invalid).await;
    let stored = accounts::find(&db, &a.name).await.unwrap();
    assert_eq!(
        (stored.status, stored.rate_limited_until),
        (AccountStatus::Active, None)
    );
}

#[tokio::test]
async fn the_last_rate_limit_headers_survive_a_restart_for_routing() {
    let (dir, db) = open().await;
    let (a, _) = accounts::upsert_api_key(&db, &Secret::new(KEY_A), Some("a"), None, 1)
        .await
        .unwrap();
    let (b, _) = accounts::upsert_api_key(&db, &Secret::new(KEY_B), Some("b"), None, 1)
        .await
        .unwrap();
    let warned = RateLimitSnapshot {
        unified_status: Some("allowed_warning".into()),
        unified_reset: Some(1_795_705_200_000),
        unified_5h_utilization: Some(0.92),
        seen_at: 1_795_687_200_000,
        ..Default::default()
    };
    let headers = AccountStateUpdate {
        last_ratelimit: Some(warned.clone()),
        ..decided(&a, AccountStatus::Active)
    };
    write_state(&db, headers).await;
    db.close().await;

    let db = Db::open_path(&dir.path().join("ccflare.db")).await.unwrap();
    let listed = accounts::list_with_ratelimits(&db).await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|(account, snapshot)| (account.id, snapshot.clone()))
        .collect();
    assert_eq!(seen, [(a.id, Some(warned)), (b.id, None)]);
    assert_eq!(listed[0].0.name, "a");

    // Headers another version wrote in a shape this one cannot read count as none.
    sqlx::query("UPDATE accounts SET last_ratelimit = '{\"unified_status\":3}' WHERE id = ?")
        .bind(a.id.0)
        .execute(db.pool())
        .await
        .unwrap();
    let listed = accounts::list_with_ratelimits(&db).await.unwrap();
    assert_eq!((listed.len(), &listed[0].1), (2, &None));
}
