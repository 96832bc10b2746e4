//! Secrets at rest against a real SQLite file: with a key, account keys and OAuth tokens are
//! not in the file's bytes (the WAL included), they open only with their key, and `encrypt`,
//! `rotate` and `decrypt` (`secrets::rewrite`) change every secret or none — a row that fails
//! half-way leaves the database as it was.

use ccflare_core::{AccountStatus, Secret};
use ccflare_storage::accounts::{self, Upsert};
use ccflare_storage::crypto::SecretError;
use ccflare_storage::{Db, EncryptionKey, StorageError, oauth, secrets};
use std::path::{Path, PathBuf};

const KEY_A: &str = "sk-ant-api03-secrets-aaaaaaaaaaaaaaaa-1111";
const KEY_B: &str = "sk-ant-api03-secrets-bbbbbbbbbbbbbbbb-2222";
const ACCESS: &str = "sk-ant-oat01-secrets-access-cccccccc-3333";
const REFRESH: &str = "sk-ant-ort01-secrets-refresh-dddddddd-4444";
const ACCESS_2: &str = "sk-ant-oat01-secrets-access-eeeeeeee-5555";
const REFRESH_2: &str = "sk-ant-ort01-secrets-refresh-ffffffff-6666";

fn key(byte: u8) -> EncryptionKey {
    EncryptionKey::from_bytes(&[byte; 32])
}

async fn open(path: &Path, key: Option<EncryptionKey>) -> Db {
    Db::open_path(path)
        .await
        .expect("database opens")
        .with_encryption_key(key)
}

/// Two API-key accounts and an OAuth login (access and refresh token), whose token was
/// refreshed once: each secret written, and one rewritten, the way a server writes them.
async fn fill(db: &Db) {
    for (key, name) in [(KEY_A, "a"), (KEY_B, "b")] {
        accounts::upsert_api_key(db, &Secret::new(key), Some(name), None, 1)
            .await
            .unwrap();
    }
    let login = oauth::add_oauth_account(
        db,
        "max",
        &Secret::new("sk-ant-oat01-secrets-first-access-0000-9999"),
        Some(&Secret::new(REFRESH)),
        10_000,
        None,
        1,
    )
    .await
    .unwrap();
    let saved = oauth::save_refreshed(
        db,
        login.id,
        &Secret::new(REFRESH),
        &Secret::new(ACCESS),
        None,
        20_000,
        2,
    )
    .await
    .unwrap();
    assert!(saved);
}

/// Every stored secret, as read through the repository: (name, credential, refresh token).
async fn secrets_of(db: &Db) -> Vec<(String, String, Option<String>)> {
    let mut all = Vec::new();
    for account in accounts::list(db).await.unwrap() {
        let refresh = match account.kind {
            ccflare_core::AccountKind::OAuth => oauth::stored_tokens(db, account.id)
                .await
                .unwrap()
                .refresh
                .map(|r| r.expose().to_owned()),
            ccflare_core::AccountKind::ApiKey => None,
        };
        all.push((
            account.name,
            account.credential.expose().to_owned(),
            refresh,
        ));
    }
    all
}

fn expected() -> Vec<(String, String, Option<String>)> {
    vec![
        ("a".into(), KEY_A.into(), None),
        ("b".into(), KEY_B.into(), None),
        ("max".into(), ACCESS.into(), Some(REFRESH.into())),
    ]
}

/// The accounts' columns as stored, read with plain SQL.
async fn raw_rows(db: &Db) -> Vec<(i64, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT id, credential, refresh_token, credential_hash FROM accounts ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The database file's bytes and its WAL's (when there is one), after a checkpoint.
async fn file_bytes(path: &Path) -> Vec<u8> {
    ccflare_testkit::damage::checkpoint(path).await;
    let mut bytes = std::fs::read(path).unwrap();
    if let Ok(wal) = std::fs::read(with_suffix(path, "-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn encrypted_secrets_are_nowhere_in_the_file_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = open(&path, None).await;
    fill(&db).await;
    assert_eq!(secrets_of(&db).await, expected());
    let plain = secrets::status(&db).await.unwrap();
    assert_eq!((plain.plaintext, plain.encrypted), (4, 0));
    db.close().await;
    assert!(
        contains(&file_bytes(&path).await, KEY_A),
        "the plaintext test sees keys"
    );

    let db = open(&path, Some(key(1))).await;
    let done = secrets::rewrite(&db, Some(&key(1))).await.unwrap();
    assert_eq!((done.accounts, done.values), (3, 4));
    assert!(done.log_truncated);
    let status = secrets::check(&db).await.unwrap();
    assert_eq!((status.plaintext, status.encrypted), (0, 4));
    assert_eq!(status.keys.into_iter().collect::<Vec<_>>(), [key(1).id()]);
    db.close().await;

    // Not one key or token, nor any Anthropic-shaped string, anywhere in the bytes: the rows,
    // the pages' free space, the WAL.
    let bytes = file_bytes(&path).await;
    assert!(!contains(&bytes, "sk-ant-"), "a secret is left in the file");
    for secret in [KEY_A, KEY_B, ACCESS, REFRESH, "secrets-aaaa"] {
        assert!(!contains(&bytes, secret), "{secret}");
    }

    // Without the key, or with another, nothing opens, and the error says which.
    let db = open(&path, None).await;
    assert!(matches!(
        accounts::list(&db).await,
        Err(StorageError::Secret(SecretError::NoKey { stored })) if stored == key(1).id()
    ));
    assert!(matches!(
        secrets::check(&db).await,
        Err(StorageError::Secret(SecretError::NoKey { .. }))
    ));
    db.close().await;
    let db = open(&path, Some(key(2))).await;
    let error = secrets::check(&db).await.unwrap_err();
    assert!(
        matches!(error, StorageError::Secret(SecretError::WrongKey { stored, configured })
            if stored == key(1).id() && configured == key(2).id()),
        "{error}"
    );
    db.close().await;
    let db = open(&path, Some(key(1))).await;
    assert_eq!(secrets_of(&db).await, expected());
}

#[tokio::test]
async fn with_a_key_new_writes_are_encrypted_and_plaintext_rows_still_serve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = open(&path, None).await;
    accounts::upsert_api_key(&db, &Secret::new(KEY_A), Some("a"), None, 1)
        .await
        .unwrap();
    db.close().await;

    let db = open(&path, Some(key(1))).await;
    // The plaintext row reads, and is found again by its key (its hash), not added twice.
    let (again, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_A), None, None, 2)
        .await
        .unwrap();
    assert_eq!((again.name.as_str(), how), ("a", Upsert::Unchanged));
    let (b, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_B), Some("b"), None, 2)
        .await
        .unwrap();
    assert_eq!(how, Upsert::Created);
    assert_eq!(b.credential.expose(), KEY_B);
    // An encrypted key is found again too, and an invalid one is made active again.
    accounts::set_status(&db, "b", AccountStatus::Invalid, 3)
        .await
        .unwrap();
    let (_, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_B), None, None, 4)
        .await
        .unwrap();
    assert_eq!(how, Upsert::Reactivated);
    // Renaming keeps it readable: the row id is what the encryption is bound to.
    accounts::rename(&db, "b", "bee", 5).await.unwrap();
    assert_eq!(
        accounts::find(&db, "bee")
            .await
            .unwrap()
            .credential
            .expose(),
        KEY_B
    );

    let login = oauth::add_oauth_account(
        &db,
        "max",
        &Secret::new(ACCESS),
        Some(&Secret::new(REFRESH)),
        10_000,
        None,
        6,
    )
    .await
    .unwrap();
    // A refresh is compared with the stored (encrypted) token: a stale one changes nothing.
    let stale = oauth::save_refreshed(
        &db,
        login.id,
        &Secret::new("sk-ant-ort01-not-the-stored-one-0000"),
        &Secret::new(ACCESS_2),
        Some(&Secret::new(REFRESH_2)),
        20_000,
        7,
    )
    .await
    .unwrap();
    assert!(!stale);
    let saved = oauth::save_refreshed(
        &db,
        login.id,
        &Secret::new(REFRESH),
        &Secret::new(ACCESS_2),
        Some(&Secret::new(REFRESH_2)),
        20_000,
        7,
    )
    .await
    .unwrap();
    assert!(saved);
    let tokens = oauth::stored_tokens(&db, login.id).await.unwrap();
    assert_eq!(tokens.access.expose(), ACCESS_2);
    assert_eq!(tokens.refresh.as_ref().map(Secret::expose), Some(REFRESH_2));
    oauth::reauthenticate(
        &db,
        "max",
        &Secret::new(ACCESS),
        Some(&Secret::new(REFRESH)),
        30_000,
        8,
    )
    .await
    .unwrap();
    let tokens = oauth::stored_tokens(&db, login.id).await.unwrap();
    assert_eq!(
        (
            tokens.access.expose(),
            tokens.refresh.as_ref().map(Secret::expose)
        ),
        (ACCESS, Some(REFRESH))
    );

    // Stored: the first key as it was (plaintext until `secrets encrypt`), all new ones
    // encrypted.
    let raw = raw_rows(&db).await;
    assert_eq!(raw[0].1, KEY_A);
    for (_, credential, refresh, hash) in &raw[1..] {
        assert!(credential.starts_with("enc:v1:"), "{credential}");
        assert!(refresh.as_deref().is_none_or(|r| r.starts_with("enc:v1:")));
        assert_eq!(hash.as_ref().map(String::len), Some(64));
    }
    let status = secrets::check(&db).await.unwrap();
    assert_eq!((status.plaintext, status.encrypted), (1, 3));
}

#[tokio::test]
async fn encrypt_rotate_decrypt_round_trips_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = open(&path, None).await;
    fill(&db).await;
    let plaintext = raw_rows(&db).await;
    db.close().await;

    let db = open(&path, Some(key(1))).await;
    secrets::rewrite(&db, Some(&key(1))).await.unwrap();
    db.close().await;
    // Rotate: read with the old key, written with the new one.
    let db = open(&path, Some(key(1))).await;
    secrets::rewrite(&db, Some(&key(2))).await.unwrap();
    db.close().await;
    let db = open(&path, Some(key(1))).await;
    assert!(matches!(
        accounts::list(&db).await,
        Err(StorageError::Secret(SecretError::WrongKey { .. }))
    ));
    db.close().await;
    let db = open(&path, Some(key(2))).await;
    assert_eq!(secrets_of(&db).await, expected());
    assert_eq!(
        secrets::status(&db)
            .await
            .unwrap()
            .keys
            .into_iter()
            .collect::<Vec<_>>(),
        [key(2).id()]
    );
    // Decrypt: every column back as it was, hashes included.
    secrets::rewrite(&db, None).await.unwrap();
    db.close().await;
    let db = open(&path, None).await;
    assert_eq!(raw_rows(&db).await, plaintext);
    assert_eq!(secrets_of(&db).await, expected());
}

#[tokio::test]
async fn a_row_failing_half_way_leaves_every_row_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = open(&path, Some(key(1))).await;
    fill(&db).await;
    let before = raw_rows(&db).await;

    // The third row cannot be written (as a full disk or a crash would stop it), after the
    // first two were: the transaction ends without COMMIT.
    sqlx::raw_sql(
        "CREATE TRIGGER fail_third BEFORE UPDATE OF credential ON accounts WHEN NEW.id = 3 \
         BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let error = secrets::rewrite(&db, Some(&key(2))).await.unwrap_err();
    assert!(error.to_string().contains("the disk is on fire"), "{error}");
    assert_eq!(raw_rows(&db).await, before, "all old");
    assert_eq!(secrets_of(&db).await, expected());
    sqlx::raw_sql("DROP TRIGGER fail_third")
        .execute(db.pool())
        .await
        .unwrap();

    // A value that does not open (here: the last row encrypted under another key, as a
    // server with another key would have written it) stops the rewrite before anything is
    // committed, too.
    let foreign = ccflare_storage::crypto::seal(
        Some(&key(9)),
        ccflare_storage::crypto::Column::Credential,
        3,
        &Secret::new(ACCESS),
    );
    sqlx::query("UPDATE accounts SET credential = ? WHERE id = 3")
        .bind(&foreign)
        .execute(db.pool())
        .await
        .unwrap();
    let before = raw_rows(&db).await;
    let error = secrets::rewrite(&db, None).await.unwrap_err();
    assert!(
        matches!(error, StorageError::Secret(SecretError::WrongKey { .. })),
        "{error}"
    );
    assert_eq!(raw_rows(&db).await, before, "all old");
    db.close().await;
}

#[tokio::test]
async fn keys_stored_before_the_hash_column_are_found_by_it_after_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = open(&path, None).await;
    accounts::upsert_api_key(&db, &Secret::new(KEY_A), Some("a"), None, 1)
        .await
        .unwrap();
    // Back to the schema before migration 0007, with the row as an older ccflare stored it.
    // Only 0007 is undone: the runner applies every migration not recorded, so it alone runs
    // again (the later ones, which touch no account, stay as they are).
    sqlx::raw_sql(
        "DROP INDEX accounts_credential_hash; ALTER TABLE accounts DROP COLUMN credential_hash; \
         DELETE FROM schema_migrations WHERE version = 7;",
    )
    .execute(db.pool())
    .await
    .unwrap();
    db.close().await;

    let db = open(&path, Some(key(1))).await;
    let raw = raw_rows(&db).await;
    assert_eq!(
        raw[0].3.as_deref(),
        Some(ccflare_storage::crypto::credential_hash(&Secret::new(KEY_A)).as_str())
    );
    let (account, how) = accounts::upsert_api_key(&db, &Secret::new(KEY_A), None, None, 2)
        .await
        .unwrap();
    assert_eq!((account.name.as_str(), how), ("a", Upsert::Unchanged));
}

#[tokio::test]
async fn encrypting_refuses_while_a_setting_holds_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccflare.db");
    let db = open(&path, Some(key(1))).await;
    fill(&db).await;
    // As an older ccflare let `config set api_keys …` store it.
    sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ('api_keys', ?, 1)")
        .bind(KEY_A)
        .execute(db.pool())
        .await
        .unwrap();
    let before = raw_rows(&db).await;
    let error = secrets::rewrite(&db, Some(&key(1))).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::SecretInSettings { key } if key == "api_keys"),
        "{error}"
    );
    assert_eq!(raw_rows(&db).await, before);
    assert_eq!(
        secrets::status(&db).await.unwrap().settings_holding_keys,
        ["api_keys"]
    );
}
