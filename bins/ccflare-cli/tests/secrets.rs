//! Secrets at rest through the real binaries: `ccflare-cli secrets encrypt`, `rotate` and
//! `decrypt` on a database whose accounts then serve real requests through a real
//! `ccflare-server` (to the mock upstream) under each key; a server started with a wrong or
//! missing key refuses with one line and exit status 2, leaving the database file byte for
//! byte as it was; and the file holds no key once encrypted.
//!
//! The server binary is found as in `live.rs` (`process::workspace_binary`).

mod common;

use ccflare_core::Secret;
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::process::{self, isolated_command};
use ccflare_testkit::{Message, send};
use common::{Cli, key};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const ACCESS: &str = "sk-ant-oat01-secrets-binary-access-token-7777";
const REFRESH: &str = "sk-ant-ort01-secrets-binary-refresh-token-8888";
const KEY_ONE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_TWO: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn server_binary() -> PathBuf {
    process::workspace_binary(
        Path::new(env!("CARGO_BIN_EXE_ccflare-cli")),
        "ccflare-server",
    )
}

/// The server on port 0 against the CLI's database and the mock, round-robin so that a few
/// requests reach every account, with the key in `key_file` (none if `None`).
fn server_command(cli: &Cli, upstream: &str, key_file: Option<&Path>) -> tokio::process::Command {
    let mut command = isolated_command(server_binary(), cli.path());
    command
        .env("PORT", "0")
        .env("DATABASE_URL", "file:./ccflare.db")
        .env("CCFLARE_UPSTREAM_URL", upstream)
        .env("LB_STRATEGY", "round-robin");
    if let Some(file) = key_file {
        command.env("CCFLARE_ENCRYPTION_KEY_FILE", file);
    }
    command
}

/// The CLI with the key in `key_file`.
async fn cli_with_key(cli: &Cli, key_file: Option<&Path>, args: &[&str]) -> common::Output {
    let mut command = cli.command(args);
    if let Some(file) = key_file {
        command.env("CCFLARE_ENCRYPTION_KEY_FILE", file);
    }
    common::output(command).await
}

/// Starts the server with `key_file`, sends one request per account and returns the
/// credentials the upstream received for them (then stops the server).
async fn serve_every_account(
    cli: &Cli,
    upstream: &ccflare_mock::MockUpstream,
    key_file: Option<&Path>,
) -> BTreeSet<String> {
    let mut command = server_command(cli, &upstream.url(), key_file);
    command.stderr(Stdio::null());
    let server = process::Server::start(command).await;
    let shown = match key_file {
        Some(_) => "\n  encryption    key ",
        None => "\n  encryption    none (account keys and tokens stored in plaintext)\n",
    };
    assert!(server.banner.contains(shown), "{}", server.banner);
    let before = upstream.requests().len();
    for _ in 0..3 {
        let body = Message::new("claude-haiku-4-5")
            .max_tokens(16)
            .content("hi")
            .body();
        let url = format!("{}/v1/messages", server.url);
        let reply = send(anthropic_post(&url, "anything", &[], body)).await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    }
    // A clean stop: the server checkpoints its log into the file as it closes, so the bytes
    // compared by `refused_start` are the whole database.
    server.terminate().await;
    upstream.requests()[before..]
        .iter()
        .filter_map(|request| request.credential.clone())
        .collect()
}

fn every_credential() -> BTreeSet<String> {
    [key("ONE1"), key("TWO2"), ACCESS.to_owned()]
        .into_iter()
        .collect()
}

/// Starts the server expecting it to refuse: its exit status and stderr, and whether the
/// database file is byte for byte as before.
async fn refused_start(
    cli: &Cli,
    upstream: &str,
    key_file: Option<&Path>,
) -> (Option<i32>, String) {
    let db = cli.path().join("ccflare.db");
    // What the last CLI command left in the WAL goes into the file first: the refused start
    // opening and closing the database would move it there (the same rows), not change them.
    ccflare_testkit::damage::checkpoint(&db).await;
    let before = std::fs::read(&db).unwrap();
    let output = process::run_to_end(server_command(cli, upstream, key_file)).await;
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file changed");
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn file_holds(path: &Path, needle: &str) -> bool {
    let mut bytes = std::fs::read(path).unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
        bytes.extend(more);
    }
    bytes
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn encrypt_rotate_decrypt_keep_every_account_serving_and_a_wrong_key_refuses_to_start() {
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let one = cli.path().join("key-one");
    let two = cli.path().join("key-two");
    std::fs::write(&one, format!("{KEY_ONE}\n")).unwrap();
    std::fs::write(&two, KEY_TWO).unwrap();
    for (tail, name) in [("ONE1", "one"), ("TWO2", "two")] {
        cli.run(&["accounts", "add", &key(tail), "--name", name])
            .await
            .ok();
    }
    {
        // An OAuth login, as `accounts add --oauth` stores it (its token far from expiry).
        let db = cli.db().await;
        ccflare_storage::oauth::add_oauth_account(
            &db,
            "max",
            &Secret::new(ACCESS),
            Some(&Secret::new(REFRESH)),
            i64::MAX / 2,
            None,
            1,
        )
        .await
        .unwrap();
        db.close().await;
    }
    let db_file = cli.path().join("ccflare.db");
    assert_eq!(
        serve_every_account(&cli, &upstream, None).await,
        every_credential()
    );
    // A key configured before the rows are encrypted: plaintext rows still serve.
    assert_eq!(
        serve_every_account(&cli, &upstream, Some(&one)).await,
        every_credential()
    );

    // Encrypt: the file no longer holds a key or token, and every account still serves.
    let encrypted = cli_with_key(&cli, Some(&one), &["secrets", "encrypt"])
        .await
        .ok();
    assert!(
        encrypted.starts_with("encrypted the keys and tokens of 3 accounts with key "),
        "{encrypted}"
    );
    assert!(
        !file_holds(&db_file, "sk-ant-"),
        "a key is left in the file"
    );
    let status = cli_with_key(&cli, Some(&one), &["secrets", "status", "--json"])
        .await
        .ok();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (status["encrypted"].as_u64(), status["plaintext"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(
        serve_every_account(&cli, &upstream, Some(&one)).await,
        every_credential()
    );

    // No key, or the other key: one line, exit 2, the file untouched.
    let (code, stderr) = refused_start(&cli, &upstream.url(), None).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ccflare-server: error: the database's account credentials cannot be read; nothing was changed: ")
            && stderr.contains("no encryption key is configured"),
        "{stderr}"
    );
    let (code, stderr) = refused_start(&cli, &upstream.url(), Some(&two)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("configure the key they were encrypted with"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(KEY_ONE) && !stderr.contains(KEY_TWO),
        "{stderr}"
    );
    // The CLI says the same instead of listing.
    let listed = cli.run(&["accounts", "list"]).await.fails();
    assert!(
        listed.contains("no encryption key is configured"),
        "{listed}"
    );

    // Rotate to the second key: the first no longer starts a server, the second serves all.
    let rotated = cli_with_key(
        &cli,
        Some(&one),
        &["secrets", "rotate", "--new-key-file", two.to_str().unwrap()],
    )
    .await
    .ok();
    assert!(
        rotated.starts_with("re-encrypted the keys and tokens of 3 accounts"),
        "{rotated}"
    );
    assert!(!file_holds(&db_file, "sk-ant-"));
    let (code, _) = refused_start(&cli, &upstream.url(), Some(&one)).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        serve_every_account(&cli, &upstream, Some(&two)).await,
        every_credential()
    );

    // Decrypt: plaintext again, served without a key.
    let decrypted = cli_with_key(&cli, Some(&two), &["secrets", "decrypt"])
        .await
        .ok();
    assert!(
        decrypted.starts_with("decrypted the keys and tokens of 3 accounts"),
        "{decrypted}"
    );
    assert_eq!(
        serve_every_account(&cli, &upstream, None).await,
        every_credential()
    );
    let listed = cli.run(&["accounts", "list"]).await.ok();
    assert!(listed.contains("max") && listed.contains("one"), "{listed}");
}

#[tokio::test]
async fn a_key_that_is_not_a_key_stops_the_server_and_the_cli_with_one_line() {
    let cli = Cli::new();
    // The database exists (the check is that the key stops the start before it is opened).
    cli.run(&["accounts", "list"]).await.ok();
    let bad = cli.path().join("bad-key");
    std::fs::write(&bad, "not-a-key-but-a-secret-all-the-same").unwrap();
    let (code, stderr) = refused_start(&cli, "http://127.0.0.1:9", Some(&bad)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is not a key: expected 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("all-the-same"), "{stderr}");
    let encrypt = cli_with_key(&cli, Some(&bad), &["secrets", "encrypt"])
        .await
        .fails();
    assert!(encrypt.contains("is not a key"), "{encrypt}");
    let nothing = cli.run(&["secrets", "encrypt"]).await.fails();
    assert!(
        nothing.contains("no encryption key is configured"),
        "{nothing}"
    );
}

#[tokio::test]
async fn an_account_key_cannot_be_stored_as_a_setting() {
    let cli = Cli::new();
    let refused = cli
        .run(&["config", "set", "api_keys", &key("SET1")])
        .await
        .fails();
    assert!(
        refused.contains("keys are never stored in the settings table")
            && refused.contains("ccflare-cli accounts add"),
        "{refused}"
    );
    assert!(!refused.contains(&key("SET1")), "{refused}");
    let db = cli.db().await;
    assert!(
        ccflare_storage::settings::all(&db)
            .await
            .unwrap()
            .is_empty()
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_database_others_can_read_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    cli.run(&["accounts", "add", &key("PERM"), "--name", "perm"])
        .await
        .ok();
    let db_file = cli.path().join("ccflare.db");
    std::fs::set_permissions(&db_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = server_command(&cli, &upstream.url(), None);
    command.stderr(Stdio::null());
    let server = process::Server::start(command).await;
    let mode = std::fs::metadata(&db_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    server.kill().await;
}

/// `doctor`'s encryption line (status and detail), with the key in `key_file`.
async fn doctor_encryption(
    cli: &Cli,
    upstream: &ccflare_mock::MockUpstream,
    key_file: Option<&Path>,
) -> (String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = cli.command(&["doctor", "--json"]);
    command
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("PORT", port.to_string());
    if let Some(file) = key_file {
        command.env("CCFLARE_ENCRYPTION_KEY_FILE", file);
    }
    let output = common::output(command).await;
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let line = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["check"] == "encryption")
        .expect("an encryption line")
        .clone();
    (
        line["status"].as_str().unwrap().to_owned(),
        line["detail"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn doctor_says_whether_keys_are_encrypted_and_whether_the_key_opens_them() {
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let one = cli.path().join("key-one");
    let two = cli.path().join("key-two");
    std::fs::write(&one, KEY_ONE).unwrap();
    std::fs::write(&two, KEY_TWO).unwrap();
    cli.run(&["accounts", "add", &key("DOC1"), "--name", "doc"])
        .await
        .ok();

    let (status, detail) = doctor_encryption(&cli, &upstream, None).await;
    assert_eq!(status, "info");
    assert!(
        detail.starts_with("off: account keys and tokens are stored in plaintext"),
        "{detail}"
    );
    let (status, detail) = doctor_encryption(&cli, &upstream, Some(&one)).await;
    assert_eq!(status, "warn");
    assert!(
        detail.contains("run `ccflare-cli secrets encrypt`"),
        "{detail}"
    );

    cli_with_key(&cli, Some(&one), &["secrets", "encrypt"])
        .await
        .ok();
    let (status, detail) = doctor_encryption(&cli, &upstream, Some(&one)).await;
    assert_eq!(status, "ok");
    assert!(
        detail.starts_with("on: 1 key or token encrypted with key "),
        "{detail}"
    );
    for wrong in [None, Some(two.as_path())] {
        let (status, detail) = doctor_encryption(&cli, &upstream, wrong).await;
        assert_eq!(status, "fail", "{detail}");
        assert!(detail.ends_with("a server will not start"), "{detail}");
    }
}

/// The accounts' stored columns, read with plain SQL, outside ccflare.
async fn stored_columns(path: &Path) -> Vec<Vec<String>> {
    ccflare_testkit::damage::select(
        path,
        "SELECT id, credential, coalesce(refresh_token, ''), credential_hash FROM accounts \
         ORDER BY id",
    )
    .await
}

#[tokio::test]
async fn a_cli_killed_in_the_middle_of_encrypting_leaves_every_row_as_it_was() {
    let cli = Cli::new();
    let one = cli.path().join("key-one");
    std::fs::write(&one, KEY_ONE).unwrap();
    for tail in ["KIL1", "KIL2", "KIL3", "KIL4"] {
        cli.run(&["accounts", "add", &key(tail)]).await.ok();
    }
    let db_file = cli.path().join("ccflare.db");
    let before = stored_columns(&db_file).await;
    assert_eq!(before.len(), 4);
    // The third row's write takes minutes (a trigger counting a billion-row join), so the
    // encryption is caught after the first rows were written, inside its transaction.
    ccflare_testkit::db::execute(
        &db_file,
        "CREATE TABLE spin (n INTEGER); \
         INSERT INTO spin WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
         WHERE n < 1000) SELECT n FROM c; \
         CREATE TRIGGER slow_third BEFORE UPDATE OF credential ON accounts WHEN NEW.id = 3 \
         BEGIN SELECT count(*) FROM spin a, spin b, spin c; END;",
    )
    .await;

    let mut command = cli.command(&["secrets", "encrypt"]);
    command.env("CCFLARE_ENCRYPTION_KEY_FILE", &one);
    let mut child = command.spawn().expect("the CLI starts");
    // In its transaction once it holds the write lock; the trigger keeps it there.
    ccflare_testkit::eventually(
        ccflare_testkit::PROCESS_GUARD,
        "the CLI holds the write lock",
        || async {
            ccflare_testkit::db::write_lock_held(&db_file)
                .await
                .then_some(())
        },
    )
    .await;
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed, not finished: {status:?}");

    // All old: the rows byte for byte, a sound file, every account readable without a key.
    ccflare_testkit::db::execute(&db_file, "DROP TRIGGER slow_third; DROP TABLE spin;").await;
    assert_eq!(stored_columns(&db_file).await, before);
    assert_eq!(ccflare_testkit::db::integrity_check(&db_file).await, "ok");
    let listed = cli.run(&["accounts", "list"]).await.ok();
    assert!(listed.contains("key-KIL3"), "{listed}");
    // And the encryption, run again to its end, takes every row.
    let done = cli_with_key(&cli, Some(&one), &["secrets", "encrypt"])
        .await
        .ok();
    assert!(
        done.starts_with("encrypted the keys and tokens of 4 accounts"),
        "{done}"
    );
}
