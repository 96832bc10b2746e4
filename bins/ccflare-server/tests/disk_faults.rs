//! The real server binary on a misbehaving disk: the database made read-only under it
//! (`chattr +i`), the disk filling up (a small tmpfs in a private mount namespace), and a
//! damaged page in the database. Clients are served throughout; every response that carried
//! an `x-ccflare-request-id` has its row once the disk behaves again, or waits in the spill
//! file, and `/health` says what is wrong meanwhile.
//!
//! The first two need root (CI runs as root; see `ccflare_testkit::fault`).

mod common;

use ccflare_core::record::RequestRecord;
use ccflare_storage::{Db, Writer};
use ccflare_testkit::damage::damage_table;
use ccflare_testkit::fault::{Immutable, have_root};
use ccflare_testkit::process::{Server, isolated_command};
use ccflare_testkit::{get, key, send};
use common::{db_path, health_until, messages_request, mock, proxy_command, records};
use http::StatusCode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Sends `count` requests, each of which must be served; returns their request ids.
async fn served(server: &Server, count: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..count {
        let reply = send(messages_request(&server.url, i % 2 == 1, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        ids.insert(reply.header("x-ccflare-request-id").to_owned());
    }
    ids
}

/// The request ids the running server's API lists.
async fn listed(server: &Server) -> BTreeSet<String> {
    let page = send(get(&format!("{}/api/requests?limit=1000", server.url)))
        .await
        .json();
    page["requests"]
        .as_array()
        .expect("a page of requests")
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect()
}

fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test]
async fn a_database_read_only_for_a_while_loses_no_record() {
    if !have_root("a_database_read_only_for_a_while_loses_no_record") {
        return;
    }
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let mut sent = served(&server, 1).await;
    health_until(&server, |h| h["database"]["waiting_records"] == 0).await;

    let db = db_path(dir.path());
    let immutable = Immutable::make(&[&db, &beside(&db, "-wal")]);
    sent.extend(served(&server, 20).await);
    let health = health_until(&server, |h| h["database"]["writable"] == false).await;
    assert_eq!(health["status"], "degraded");
    immutable.undo();

    sent.extend(served(&server, 5).await);
    let health = health_until(&server, |h| {
        h["database"]["writable"] == true && h["database"]["waiting_records"] == 0
    })
    .await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(listed(&server).await, sent);
    server.terminate().await;
    let stored: BTreeSet<String> = records(dir.path(), 100)
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(stored, sent);
}

#[tokio::test]
async fn a_full_disk_for_a_while_loses_no_record() {
    if !have_root("a_full_disk_for_a_while_loses_no_record") {
        return;
    }
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // The server runs in a mount namespace of its own, its data folder a 4 MiB tmpfs that
    // only it (and `nsenter`) can see; `exec` keeps one process, so the pid is the server's.
    let mut command = isolated_command("unshare", dir.path());
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=4m ccflare-test "$0" && exec "$1""#)
        .arg(&data)
        .arg(env!("CARGO_BIN_EXE_ccflare-server"))
        .env("PORT", "0")
        .env("CLAUDE_API_KEYS", key("one"))
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("DATABASE_URL", data.join("ccflare.db"));
    let server = Server::start(command).await;
    let pid = server.child.id().unwrap().to_string();
    let in_namespace = |script: String| {
        let status = std::process::Command::new("nsenter")
            .args(["-t", &pid, "-m", "--", "sh", "-c", &script])
            .status()
            .expect("nsenter runs");
        assert!(status.success(), "{script}");
    };
    let mut sent = served(&server, 3).await;
    health_until(&server, |h| h["database"]["waiting_records"] == 0).await;

    let filler = data.join("filler");
    in_namespace(format!(
        "dd if=/dev/zero of={} bs=64k 2>/dev/null; test \"$(df --output=avail {} | tail -1)\" -eq 0",
        filler.display(),
        data.display()
    ));
    sent.extend(served(&server, 20).await);
    let health = health_until(&server, |h| h["database"]["writable"] == false).await;
    assert!(
        health["database"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("full")),
        "{health}"
    );
    in_namespace(format!("rm {}", filler.display()));

    sent.extend(served(&server, 5).await);
    let health = health_until(&server, |h| {
        h["database"]["writable"] == true && h["database"]["waiting_records"] == 0
    })
    .await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["database"]["dropped_records"], 0);
    // The tmpfs goes with the server's namespace: the rows are counted while it runs.
    assert_eq!(listed(&server).await, sent);
    server.terminate().await;
}

#[tokio::test]
async fn a_damaged_database_is_reported_serves_and_keeps_its_records_in_the_spill_file() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    // Enough rows that the requests table has a root page of its own, then that page damaged.
    let db = Db::open_path(&path).await.unwrap();
    let writer = Writer::spawn(db.clone());
    for i in 0..500 {
        writer.handle().record(RequestRecord {
            id: format!("before-{i}"),
            started_at: 1_700_000_000_000 + i,
            status: 200,
            success: true,
            ..Default::default()
        });
    }
    writer.close().await;
    db.close().await;
    damage_table(&path, "requests").await;

    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let sent = served(&server, 5).await;
    let health = health_until(&server, |h| h["database"]["spilled_records"] == 5).await;
    assert_eq!(health["status"], "degraded");
    assert!(
        health["database"]["damaged"]
            .as_str()
            .is_some_and(|d| d.contains("malformed")),
        "{health}"
    );
    let metrics = send(get(&format!("{}/metrics", server.url))).await;
    assert!(metrics.text().contains("\nccflare_database_damaged 1\n"));

    server.sigterm();
    let (code, rest) = server.terminate_after_signal().await;
    // Not a clean exit: the operator has a damaged database to deal with, and is told where
    // the records are.
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("5 records wait in"), "{rest}");
    let spilled: BTreeSet<String> = std::fs::read_to_string(beside(&path, "-spill.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(spilled, sent);
}
