//! The accounts' secrets as a whole: how many are stored in plaintext and how many encrypted
//! (and with which keys), whether the configured key opens them all (the server's start-up
//! check), and `rewrite`, which moves every one of them to another form — encrypted with a
//! key, or plaintext — in one transaction (`ccflare-cli secrets encrypt | rotate | decrypt`).
//!
//! **Invariant:** `rewrite` changes every secret or none: each is read with the handle's key
//! and written in the target form inside one `BEGIN IMMEDIATE` transaction, and any value that
//! does not open (a wrong key, an altered row) ends it before COMMIT, so a crash or an error
//! half-way leaves the database as it was. Freed cells are zeroed in that transaction
//! (`secure_delete`), and the write-ahead log is truncated after it, so the old form does not
//! linger in the file.

use crate::crypto::{self, Column, EncryptionKey, KeyId};
use crate::db::Db;
use crate::error::StorageError;
use crate::settings;
use sqlx::{Row, SqliteConnection};
use std::collections::BTreeSet;

/// What the accounts' secrets are stored as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsStatus {
    /// Keys and tokens stored in plaintext.
    pub plaintext: u64,
    /// Keys and tokens stored encrypted.
    pub encrypted: u64,
    /// The keys the encrypted ones name.
    pub keys: BTreeSet<KeyId>,
    /// Stored settings whose value looks like a key (written before the settings table
    /// refused them): plaintext outside the accounts table.
    pub settings_holding_keys: Vec<String>,
}

/// One account's stored secrets.
struct StoredRow {
    id: i64,
    credential: String,
    refresh_token: Option<String>,
}

async fn stored_rows(conn: &mut SqliteConnection) -> Result<Vec<StoredRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, credential, refresh_token FROM accounts ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredRow {
                id: row.try_get("id")?,
                credential: row.try_get("credential")?,
                refresh_token: row.try_get("refresh_token")?,
            })
        })
        .collect()
}

impl StoredRow {
    fn values(&self) -> impl Iterator<Item = (Column, &str)> {
        [
            Some((Column::Credential, self.credential.as_str())),
            self.refresh_token
                .as_deref()
                .map(|token| (Column::RefreshToken, token)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Counts the stored secrets by form. Read-only; needs no key.
pub async fn status(db: &Db) -> Result<SecretsStatus, StorageError> {
    let mut conn = db.pool().acquire().await?;
    let mut status = SecretsStatus::default();
    for row in stored_rows(&mut conn).await? {
        for (_, value) in row.values() {
            if crypto::is_encrypted(value) {
                status.encrypted += 1;
                status.keys.extend(crypto::stored_key_id(value));
            } else {
                status.plaintext += 1;
            }
        }
    }
    drop(conn);
    status.settings_holding_keys = settings::all(db)
        .await?
        .into_iter()
        .filter(|(_, value)| settings::holds_a_key(value))
        .map(|(key, _)| key)
        .collect();
    Ok(status)
}

/// [`status`], after checking that the handle's key opens every encrypted secret: what a
/// server checks before it starts, so that a missing or wrong key is one clear error at start
/// rather than failures later, and nothing is written with the wrong key.
pub async fn check(db: &Db) -> Result<SecretsStatus, StorageError> {
    let status = status(db).await?;
    if status.encrypted > 0 {
        let mut conn = db.pool().acquire().await?;
        for row in stored_rows(&mut conn).await? {
            for (column, value) in row.values() {
                crypto::open(db.encryption_key(), column, row.id, value)?;
            }
        }
    }
    Ok(status)
}

/// What [`rewrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub accounts: u64,
    /// Keys and tokens written in the new form.
    pub values: u64,
    /// Whether the write-ahead log could be emptied afterwards (a running server reading it
    /// holds it until it checkpoints itself).
    pub log_truncated: bool,
}

/// Writes every account's secrets anew: read with the handle's key (or as plaintext), written
/// encrypted with `to`, or in plaintext when `to` is `None`. `encrypt` is `to` = the handle's
/// key, `rotate` a new key, `decrypt` none. All in one transaction (see the module's
/// invariant). With a key to write, stored settings holding a key are refused first: they would
/// stay readable beside the encrypted accounts.
pub async fn rewrite(db: &Db, to: Option<&EncryptionKey>) -> Result<Rewritten, StorageError> {
    if to.is_some() {
        let held = status(db).await?.settings_holding_keys;
        if let Some(key) = held.into_iter().next() {
            return Err(StorageError::SecretInSettings { key });
        }
    }
    let from = db.encryption_key();
    let mut tx = db.begin_write().await?;
    // Zero every cell this transaction frees: the old form of each value.
    sqlx::query("PRAGMA secure_delete = ON")
        .execute(&mut *tx)
        .await?;
    let rows = stored_rows(&mut tx).await?;
    let mut values = 0;
    for row in &rows {
        let credential = crypto::open(from, Column::Credential, row.id, &row.credential)?;
        let refresh = row
            .refresh_token
            .as_deref()
            .map(|token| crypto::open(from, Column::RefreshToken, row.id, token))
            .transpose()?;
        sqlx::query(
            "UPDATE accounts SET credential = ?, credential_hash = ?, refresh_token = ? \
             WHERE id = ?",
        )
        .bind(crypto::seal(to, Column::Credential, row.id, &credential))
        .bind(crypto::credential_hash(&credential))
        .bind(
            refresh
                .as_ref()
                .map(|token| crypto::seal(to, Column::RefreshToken, row.id, token)),
        )
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
        values += 1 + u64::from(refresh.is_some());
    }
    sqlx::query("PRAGMA secure_delete = FAST")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // The log still holds the pages as they were before; once they are in the database file,
    // emptying it removes them.
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(db.pool())
        .await?;
    Ok(Rewritten {
        accounts: rows.len() as u64,
        values,
        log_truncated: busy == 0,
    })
}

/// Fills `accounts.credential_hash` where it is missing, from the plaintext credential: run by
/// migration 0007 for the rows stored before it, and by `db recover` for rows copied from an
/// older file. (Encrypted rows always have theirs: they were written after 0007.)
pub(crate) async fn fill_credential_hashes(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let rows = sqlx::query("SELECT id, credential FROM accounts WHERE credential_hash IS NULL")
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let credential: String = row.try_get("credential")?;
        if crypto::is_encrypted(&credential) {
            continue;
        }
        sqlx::query("UPDATE accounts SET credential_hash = ? WHERE id = ?")
            .bind(crypto::credential_hash(&ccflare_core::Secret::new(
                credential,
            )))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
