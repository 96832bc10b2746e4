//! `ccflare-cli db backup FILE` beside a real `ccflare-server` under traffic (issue 14,
//! docs/deployment.md "Backup and restore"): the copy holds every request row committed before
//! the backup began, checks sound, is private to its owner, and a server started on it serves
//! with the accounts it holds.

mod common;

use ccflare_core::Secret;
use ccflare_storage::{Db, accounts};
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::process::{Server, isolated_command, workspace_binary};
use ccflare_testkit::{Message, PROCESS_GUARD, db, eventually, key, send};
use common::Cli;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Rows in the database before the server starts: enough that the copy takes a while.
const PREFILLED: u64 = 20_000;

fn server_binary() -> PathBuf {
    workspace_binary(
        Path::new(env!("CARGO_BIN_EXE_ccflare-cli")),
        "ccflare-server",
    )
}

async fn start_server(dir: &Path, database: &Path, upstream_url: &str) -> Server {
    let mut command = isolated_command(server_binary(), dir);
    command
        .env("PORT", "0")
        .env("DATABASE_URL", database)
        .env("CCFLARE_UPSTREAM_URL", upstream_url);
    Server::start(command).await
}

async fn one_request(url: &str) -> u16 {
    let body = Message::new("claude-haiku-4-5").content("hi").body();
    let request = anthropic_post(&format!("{url}/v1/messages"), "sk-ant-client", &[], body);
    send(request).await.status.as_u16()
}

#[tokio::test]
async fn a_backup_during_traffic_holds_every_committed_row_and_a_server_opens_it() {
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let live = cli.path().join("ccflare.db");
    {
        let db = Db::open_path(&live).await.unwrap();
        accounts::upsert_api_key(&db, &Secret::new(key("one")), Some("one"), None, 0)
            .await
            .unwrap();
        db::prefill_requests(&db, PREFILLED, 0, 86_400_000).await;
        db.close().await;
    }
    let server = start_server(cli.path(), &live, &upstream.url()).await;

    // Traffic that goes on through the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (url, stop, sent) = (server.url.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(one_request(&url).await, 200);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    eventually(PROCESS_GUARD, "traffic recorded", || async {
        (db::request_ids(&live).await.len() as u64 >= PREFILLED + 20).then_some(())
    })
    .await;
    let committed = db::request_ids(&live).await;

    let copy = cli.path().join("backup.db");
    let out = cli
        .run(&["db", "backup", copy.to_str().unwrap()])
        .await
        .ok();
    assert!(out.contains("check     quick_check: ok"), "{out}");
    let sent_during = sent.load(Ordering::Relaxed);
    // The traffic went on after the backup: more rows than it holds.
    eventually(PROCESS_GUARD, "traffic after the backup", || async {
        (sent.load(Ordering::Relaxed) > sent_during + 5).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    server.terminate().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the backup holds keys");
    }
    assert_eq!(db::integrity_check(&copy).await, "ok");
    let saved = db::request_ids(&copy).await;
    let missing = committed.difference(&saved).count();
    assert_eq!(missing, 0, "rows committed before the backup are missing");
    let everything = db::request_ids(&live).await;
    assert!(
        saved.len() < everything.len(),
        "the copy is a snapshot of the time it was taken"
    );

    // Restore: a server on the copy, with no key of its own, serves with the copied account.
    let server = start_server(cli.path(), &copy, &upstream.url()).await;
    assert!(
        server.banner.contains("1 total: 1 active"),
        "{}",
        server.banner
    );
    assert_eq!(one_request(&server.url).await, 200);
    server.terminate().await;
    assert_eq!(db::request_ids(&copy).await.len(), saved.len() + 1);
}

#[tokio::test]
async fn a_backup_never_writes_over_a_file() {
    let cli = Cli::new();
    cli.run(&["accounts", "add", &key("one")]).await.ok();
    let existing = cli.path().join("existing.db");
    std::fs::write(&existing, "precious").unwrap();
    let error = cli
        .run(&["db", "backup", existing.to_str().unwrap()])
        .await
        .fails();
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "precious");
}
