//! The writer against real storage faults: a COMMIT that fails (the database and its WAL made
//! immutable, as a read-only remount or a failing disk does), a long outage that spills records
//! to a file, a spill file left by an earlier run, a row the database refuses, and a damaged
//! database. Each test counts the rows it sent against the rows it finds.

use ccflare_core::record::RequestRecord;
use ccflare_storage::{Db, Writer, WriterHandle, WriterHealth, WriterOptions, rollups};
use ccflare_testkit::damage::damage_table;
use ccflare_testkit::fault::{Immutable, have_root};
use ccflare_testkit::{GUARD, eventually};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Store {
    _dir: tempfile::TempDir,
    path: PathBuf,
    db: Db,
}

async fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = Db::open_path(&path).await.unwrap();
    Store {
        _dir: dir,
        path,
        db,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn record(id: &str) -> RequestRecord {
    RequestRecord {
        id: id.to_owned(),
        started_at: 1_700_000_000_000,
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: Some("claude-haiku-4-5".into()),
        status: 200,
        success: true,
        latency_ms: 12,
        ..Default::default()
    }
}

fn send(writer: &WriterHandle, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            writer.record(record(&id));
            id
        })
        .collect()
}

/// Waits (bounded by the guard) until the writer's health satisfies `ready`.
async fn health_until(writer: &WriterHandle, what: &str, ready: impl Fn(&WriterHealth) -> bool) {
    let mut health = writer.health();
    tokio::time::timeout(GUARD, health.wait_for(|h| ready(h)))
        .await
        .unwrap_or_else(|_| panic!("{what}: {:?}", writer.health().borrow()))
        .unwrap();
}

async fn stored_ids(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM requests ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The rollups as the writer kept them equal the rollups rebuilt from the rows.
async fn assert_rollups_match_rows(db: &Db) {
    let snapshot = || async {
        sqlx::query_as::<_, (i64, i64, String, i64)>(
            "SELECT bucket, dim, key, requests FROM rollup_daily ORDER BY bucket, dim, key",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
    };
    let kept = snapshot().await;
    rollups::rebuild_all(db).await.unwrap();
    assert_eq!(
        kept,
        snapshot().await,
        "rollups counted a row twice or not at all"
    );
}

#[tokio::test]
async fn a_commit_that_fails_loses_nothing_and_recording_resumes() {
    if !have_root("a_commit_that_fails_loses_nothing_and_recording_resumes") {
        return;
    }
    let store = store().await;
    let writer = Writer::spawn(store.db.clone());
    let handle = writer.handle();
    let mut sent = send(&handle, "before", 1);
    handle.flush().await;

    // The database and its WAL cannot be written; BEGIN still succeeds (the lock lives in the
    // shared-memory file), so each batch fails at COMMIT, when its pages go to the WAL.
    let immutable = Immutable::make(&[&store.path, &with_suffix(&store.path, "-wal")]);
    sent.extend(send(&handle, "during", 20));
    health_until(&handle, "the writer meets the failure and retries", |h| {
        h.attempts >= 3
    })
    .await;
    assert_eq!(handle.totals().dropped, 0);
    assert_eq!(handle.totals().rejected, 0);
    immutable.undo();

    sent.extend(send(&handle, "after", 5));
    tokio::time::timeout(GUARD, handle.flush())
        .await
        .expect("written once the disk takes writes again");
    sent.sort();
    assert_eq!(stored_ids(&store.db).await, sent);
    let totals = handle.totals();
    assert_eq!((totals.written, totals.dropped, totals.spilled), (26, 0, 0));
    assert!(
        handle.health().borrow().is_ok(),
        "{:?}",
        handle.health().borrow()
    );
    assert_rollups_match_rows(&store.db).await;
    writer.close().await;
}

#[tokio::test]
async fn records_spill_to_a_file_and_are_replayed_when_the_database_returns() {
    if !have_root("records_spill_to_a_file_and_are_replayed_when_the_database_returns") {
        return;
    }
    let store = store().await;
    let options = WriterOptions {
        spill_after: Duration::ZERO,
        ..WriterOptions::beside(&store.path)
    };
    let spill = options.spill_file.clone().unwrap();
    let writer = Writer::spawn_with(store.db.clone(), options);
    let handle = writer.handle();
    handle.flush().await;
    let immutable = Immutable::make(&[&store.path, &with_suffix(&store.path, "-wal")]);
    let mut sent = send(&handle, "spilled", 20);
    // Once spilled, a flush is answered: the records are safe on disk.
    tokio::time::timeout(GUARD, handle.flush())
        .await
        .expect("a flush is answered once the records are in the spill file");
    let waiting = handle.health().borrow().clone();
    assert_eq!(waiting.spilled_waiting, 20, "{waiting:?}");
    assert!(waiting.failing.is_some());
    let mut in_file: Vec<String> = lines(&spill)
        .iter()
        .map(|line| line["id"].as_str().unwrap().to_owned())
        .collect();
    in_file.sort();
    sent.sort();
    assert_eq!(in_file, sent);

    immutable.undo();
    health_until(&handle, "the spilled records are replayed", |h| h.is_ok()).await;
    assert_eq!(stored_ids(&store.db).await, sent);
    assert!(!spill.exists(), "the spill file is removed once replayed");
    let totals = handle.totals();
    assert_eq!(
        (
            totals.spilled,
            totals.replayed,
            totals.written,
            totals.dropped
        ),
        (20, 20, 20, 0)
    );
    assert_rollups_match_rows(&store.db).await;
    writer.close().await;
}

#[tokio::test]
async fn closing_through_an_outage_spills_at_once_and_the_next_start_replays() {
    if !have_root("closing_through_an_outage_spills_at_once_and_the_next_start_replays") {
        return;
    }
    let store = store().await;
    let writer = Writer::spawn(store.db.clone());
    let handle = writer.handle();
    handle.flush().await;
    let immutable = Immutable::make(&[&store.path, &with_suffix(&store.path, "-wal")]);
    let mut sent = send(&handle, "at-exit", 10);
    tokio::time::timeout(GUARD, writer.close())
        .await
        .expect("closing does not wait out the outage");
    assert_eq!(handle.health().borrow().spilled_waiting, 10);
    assert_eq!(handle.totals().dropped, 0);
    immutable.undo();

    // The next run.
    let writer = Writer::spawn(store.db.clone());
    let handle = writer.handle();
    sent.sort();
    let db = &store.db;
    eventually(GUARD, "the spill file is replayed at start", || async {
        (stored_ids(db).await == sent).then_some(())
    })
    .await;
    assert_eq!(handle.totals().replayed, 10);
    assert!(!with_suffix(&store.path, "-spill.jsonl").exists());
    writer.close().await;
}

#[tokio::test]
async fn a_spill_file_left_by_a_crash_is_replayed_once_whole_lines_only() {
    let store = store().await;
    // A record the crashed run had already written, then spilled again: not counted twice.
    let writer = Writer::spawn(store.db.clone());
    writer.handle().record(record("already-stored"));
    writer.close().await;

    let spill = with_suffix(&store.path, "-spill.jsonl");
    let mut text = String::new();
    for id in ["already-stored", "s-1", "s-2", "s-3"] {
        text.push_str(&serde_json::to_string(&record(id)).unwrap());
        text.push('\n');
    }
    // The crash cut the last append in the middle of a line.
    text.push_str(r#"{"id":"cut-off","started_at":17"#);
    std::fs::write(&spill, text).unwrap();

    let writer = Writer::spawn(store.db.clone());
    let handle = writer.handle();
    let db = &store.db;
    eventually(GUARD, "the spill file is replayed at start", || async {
        (stored_ids(db).await.len() == 4).then_some(())
    })
    .await;
    assert_eq!(
        stored_ids(&store.db).await,
        ["already-stored", "s-1", "s-2", "s-3"]
    );
    eventually(GUARD, "the replayed spill file is removed", || async {
        (!spill.exists()).then_some(())
    })
    .await;
    // The cut line is not lost silently: it is in the rejects file, with the reason.
    let rejects = lines(&with_suffix(&store.path, "-rejects.jsonl"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["error"], "unreadable spill line");
    assert!(rejects[0]["record"].as_str().unwrap().contains("cut-off"));
    assert_eq!(handle.totals().rejected, 1);
    assert_rollups_match_rows(&store.db).await;
    writer.close().await;
}

#[tokio::test]
async fn a_row_the_database_refuses_is_kept_in_the_rejects_file_and_costs_no_other() {
    let store = store().await;
    sqlx::raw_sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.id = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .execute(store.db.pool())
    .await
    .unwrap();
    let writer = Writer::spawn(store.db.clone());
    let handle = writer.handle();
    for id in ["good-1", "refused", "good-2"] {
        handle.record(record(id));
    }
    tokio::time::timeout(GUARD, handle.flush()).await.unwrap();
    assert_eq!(stored_ids(&store.db).await, ["good-1", "good-2"]);
    let rejects = lines(&with_suffix(&store.path, "-rejects.jsonl"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["record"]["id"], "refused");
    assert!(
        rejects[0]["error"]
            .as_str()
            .unwrap()
            .contains("refused by the test")
    );
    let totals = handle.totals();
    assert_eq!((totals.written, totals.rejected, totals.dropped), (2, 1, 0));
    // A row's own refusal is not an outage.
    assert!(handle.health().borrow().is_ok());
    writer.close().await;
}

#[tokio::test]
async fn a_damaged_database_is_reported_and_its_records_wait_in_the_spill_file() {
    let store = store().await;
    // Enough rows that the requests table spans many pages under an interior root page.
    let writer = Writer::spawn(store.db.clone());
    let handle = writer.handle();
    let earlier = send(&handle, "earlier", 500);
    writer.close().await;
    assert_eq!(stored_ids(&store.db).await.len(), earlier.len());
    store.db.close().await;
    damage_table(&store.path, "requests").await;

    let db = Db::open_path(&store.path)
        .await
        .expect("the schema page is intact: the database opens");
    let problems = db.quick_check().await.unwrap();
    assert!(!problems.is_empty(), "quick_check finds the damaged page");

    let writer = Writer::spawn(db.clone());
    let handle = writer.handle();
    let sent = send(&handle, "after-damage", 5);
    tokio::time::timeout(GUARD, handle.flush())
        .await
        .expect("records of a damaged database go to the spill file at once");
    let health = handle.health().borrow().clone();
    assert!(
        health
            .damaged
            .as_deref()
            .is_some_and(|d| d.contains("malformed")),
        "{health:?}"
    );
    assert_eq!(health.spilled_waiting, 5);
    let spilled: Vec<String> = lines(&with_suffix(&store.path, "-spill.jsonl"))
        .iter()
        .map(|line| line["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(spilled, sent);
    assert_eq!(handle.totals().dropped, 0);
    writer.close().await;
}

#[tokio::test]
async fn records_wait_in_memory_when_the_spill_file_cannot_be_written_either() {
    if !have_root("records_wait_in_memory_when_the_spill_file_cannot_be_written_either") {
        return;
    }
    let store = store().await;
    let options = WriterOptions {
        spill_after: Duration::ZERO,
        ..WriterOptions::beside(&store.path)
    };
    let spill = options.spill_file.clone().unwrap();
    let writer = Writer::spawn_with(store.db.clone(), options);
    let handle = writer.handle();
    handle.flush().await;
    // Nothing in the folder can be created (the spill file), nor the database written.
    let folder = store.path.parent().unwrap().to_path_buf();
    let immutable = Immutable::make(&[&store.path, &with_suffix(&store.path, "-wal"), &folder]);
    let mut sent = send(&handle, "in-memory", 20);
    health_until(&handle, "the spill file fails too", |h| {
        h.spill_failing.is_some() && h.attempts >= 2
    })
    .await;
    assert_eq!(handle.queue_depth(), 20, "the records wait in memory");
    assert_eq!(handle.totals().dropped, 0);
    immutable.undo();

    tokio::time::timeout(GUARD, handle.flush())
        .await
        .expect("written once the database can be written");
    sent.sort();
    assert_eq!(stored_ids(&store.db).await, sent);
    assert!(!spill.exists());
    let health = handle.health().borrow().clone();
    assert!(health.is_ok(), "nothing is left to spill: {health:?}");
    writer.close().await;
}
