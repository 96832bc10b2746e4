//! The accounts repository. Person-made changes (add, re-add, pause, resume, rename, priority)
//! bump `revision`; the server's own state writes (cooldowns, counters) do not, so a running
//! server can merge a person's edit without losing its own fresher runtime state.
//!
//! Keys and tokens are decrypted here, when read, and encrypted here, when written, with the
//! database handle's key (`crypto`): the rest of the code sees a [`Secret`] either way. A
//! key is found by its `credential_hash`, since two encryptions of one key never read alike.

use crate::crypto::{self, Column, EncryptionKey};
use crate::db::Db;
use crate::error::StorageError;
use ccflare_core::account::default_key_name;
use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::{Account, AccountId, AccountKind, AccountStatus, Millis, Secret};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

const COLUMNS: &str = "id, name, kind, credential, priority, weight, status, revision, \
                       rate_limited_until, overloaded_until, expires_at";

fn from_row(key: Option<&EncryptionKey>, row: &SqliteRow) -> Result<Account, StorageError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let id: i64 = row.try_get("id")?;
    let stored: String = row.try_get("credential")?;
    Ok(Account {
        id: AccountId(id),
        name: row.try_get("name")?,
        kind: kind.parse().map_err(StorageError::Corrupt)?,
        credential: crypto::open(key, Column::Credential, id, &stored)?,
        priority: row.try_get("priority")?,
        weight: row.try_get::<i64, _>("weight")?.clamp(0, u32::MAX as i64) as u32,
        status: status.parse().map_err(StorageError::Corrupt)?,
        revision: row.try_get("revision")?,
        rate_limited_until: row.try_get("rate_limited_until")?,
        overloaded_until: row.try_get("overloaded_until")?,
        token_expires_at: row.try_get("expires_at")?,
    })
}

/// Every account, ordered by id.
pub async fn list(db: &Db) -> Result<Vec<Account>, StorageError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts ORDER BY id"))
        .fetch_all(db.pool())
        .await?;
    let key = db.encryption_key();
    rows.iter().map(|row| from_row(key, row)).collect()
}

/// The last rate-limit headers the server persisted for an account. Headers written by another
/// version may not parse: they count as none, as if the account had not answered yet.
fn last_ratelimit(row: &SqliteRow) -> Result<Option<RateLimitSnapshot>, StorageError> {
    Ok(row
        .try_get::<Option<String>, _>("last_ratelimit")?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

/// Every account with the last rate-limit headers persisted for it, ordered by id: what the
/// pool routes on. A server that starts (or syncs) with these ranks accounts by the capacity
/// and subscription warnings they last reported, instead of treating every one as untouched.
pub async fn list_with_ratelimits(
    db: &Db,
) -> Result<Vec<(Account, Option<RateLimitSnapshot>)>, StorageError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS}, last_ratelimit FROM accounts ORDER BY id"
    ))
    .fetch_all(db.pool())
    .await?;
    let key = db.encryption_key();
    rows.iter()
        .map(|row| Ok((from_row(key, row)?, last_ratelimit(row)?)))
        .collect()
}

/// One account by name.
pub async fn find(db: &Db, name: &str) -> Result<Account, StorageError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE name = ?"))
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(row) => from_row(db.encryption_key(), &row),
        None => Err(StorageError::AccountNotFound {
            name: name.to_owned(),
        }),
    }
}

/// What [`upsert_api_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    /// The key was already stored; an invalid account was made active again.
    Reactivated,
    Unchanged,
}

/// Adds an API-key account, or finds the existing one with the same key. Running it again
/// with the same key changes nothing (start-up from `CLAUDE_API_KEYS` is idempotent), except
/// that an account marked invalid is given another chance: re-adding a key is how a person says
/// it works again. Without `name`, the name is `key-` and the key's last four characters, with
/// a number added if that is taken.
pub async fn upsert_api_key(
    db: &Db,
    key: &Secret,
    name: Option<&str>,
    priority: Option<i64>,
    now: Millis,
) -> Result<(Account, Upsert), StorageError> {
    let mut tx = db.begin_write().await?;
    let existing = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE credential_hash = ?"
    ))
    .bind(crypto::credential_hash(key))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        let account = from_row(db.encryption_key(), &row)?;
        if account.status != AccountStatus::Invalid {
            // Nothing to change; ending the transaction returns its connection to the pool.
            tx.commit().await?;
            return Ok((account, Upsert::Unchanged));
        }
        sqlx::query(
            "UPDATE accounts SET status = 'active', revision = revision + 1, updated_at = ? \
             WHERE id = ?",
        )
        .bind(now)
        .bind(account.id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let account = find(db, &account.name).await?;
        return Ok((account, Upsert::Reactivated));
    }
    let name = match name {
        Some(name) => {
            require_free_name(&mut tx, name).await?;
            name.to_owned()
        }
        None => {
            let base = default_key_name(key.expose());
            let mut candidate = base.clone();
            let mut n = 2;
            loop {
                if !name_taken(&mut tx, &candidate).await? {
                    break candidate;
                }
                candidate = format!("{base}-{n}");
                n += 1;
            }
        }
    };
    let account = insert(
        &mut tx,
        db.encryption_key(),
        &name,
        NewCredential::ApiKey(key),
        priority.unwrap_or(0),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((account, Upsert::Created))
}

/// What a new account authenticates with.
pub(crate) enum NewCredential<'a> {
    ApiKey(&'a Secret),
    /// An OAuth login's first tokens; the access token is the credential sent upstream.
    OAuth {
        access: &'a Secret,
        refresh: Option<&'a Secret>,
        expires_at: Millis,
    },
}

/// Adds an account in the caller's write transaction (which has checked that the name is free)
/// and returns it as stored: the schema's defaults for what the insert does not set (weight 1,
/// active, revision 1, no cooldowns). An OAuth login counts as refreshed now.
///
/// With a key, the secrets are encrypted for the row's id, which the insert gives: the row is
/// inserted with its credential hash in their place and updated in the same transaction, so
/// the plaintext never reaches the database.
pub(crate) async fn insert(
    tx: &mut SqliteConnection,
    key: Option<&EncryptionKey>,
    name: &str,
    credential: NewCredential<'_>,
    priority: i64,
    now: Millis,
) -> Result<Account, StorageError> {
    let (kind, secret, refresh, expires_at) = match credential {
        NewCredential::ApiKey(key) => (AccountKind::ApiKey, key, None, None),
        NewCredential::OAuth {
            access,
            refresh,
            expires_at,
        } => (AccountKind::OAuth, access, refresh, Some(expires_at)),
    };
    let hash = crypto::credential_hash(secret);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO accounts (name, kind, credential, credential_hash, refresh_token, \
         expires_at, refreshed_at, priority, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(kind.as_str())
    // Unique like the credential (the hash is), and no secret.
    .bind(format!("pending:{hash}"))
    .bind(&hash)
    .bind(None::<String>)
    .bind(expires_at)
    .bind(expires_at.map(|_| now))
    .bind(priority)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE accounts SET credential = ?, refresh_token = ? WHERE id = ?")
        .bind(crypto::seal(key, Column::Credential, id, secret))
        .bind(refresh.map(|refresh| crypto::seal(key, Column::RefreshToken, id, refresh)))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(Account {
        priority,
        token_expires_at: expires_at,
        ..Account::new(AccountId(id), name, kind, secret.clone())
    })
}

/// Whether an account is called `name`, read in the write transaction that would add one.
async fn name_taken(tx: &mut SqliteConnection, name: &str) -> Result<bool, sqlx::Error> {
    let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(taken.is_some())
}

/// `name` is free for a new account, or it is [`StorageError::DuplicateName`].
pub(crate) async fn require_free_name(
    tx: &mut SqliteConnection,
    name: &str,
) -> Result<(), StorageError> {
    if name_taken(tx, name).await? {
        return Err(StorageError::DuplicateName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A change addressed by account name that touched no row names no account.
pub(crate) fn matched(rows_affected: u64, name: &str) -> Result<(), StorageError> {
    if rows_affected == 0 {
        return Err(StorageError::AccountNotFound {
            name: name.to_owned(),
        });
    }
    Ok(())
}

async fn person_update(
    db: &Db,
    name: &str,
    set: &str,
    value: impl ToString,
    now: Millis,
) -> Result<(), StorageError> {
    let sql = format!(
        "UPDATE accounts SET {set} = ?, revision = revision + 1, updated_at = ? WHERE name = ?"
    );
    let value = value.to_string();
    let result = sqlx::query(&sql)
        .bind(&value)
        .bind(now)
        .bind(name)
        .execute(db.pool())
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StorageError::DuplicateName {
                name: value.clone(),
            },
            other => StorageError::Query(other),
        })?;
    matched(result.rows_affected(), name)
}

/// Pauses or resumes an account by name. Resuming also clears its cooldowns.
pub async fn set_status(
    db: &Db,
    name: &str,
    status: AccountStatus,
    now: Millis,
) -> Result<(), StorageError> {
    person_update(db, name, "status", status.as_str(), now).await?;
    if status == AccountStatus::Active {
        sqlx::query(
            "UPDATE accounts SET rate_limited_until = NULL, overloaded_until = NULL WHERE name = ?",
        )
        .bind(name)
        .execute(db.pool())
        .await?;
    }
    Ok(())
}

/// Renames an account; the new name must be free.
pub async fn rename(db: &Db, name: &str, new_name: &str, now: Millis) -> Result<(), StorageError> {
    let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE name = ?")
        .bind(new_name)
        .fetch_optional(db.pool())
        .await?;
    if taken.is_some() {
        return Err(StorageError::DuplicateName {
            name: new_name.to_owned(),
        });
    }
    person_update(db, name, "name", new_name, now).await
}

/// Sets an account's priority (lower is preferred).
pub async fn set_priority(
    db: &Db,
    name: &str,
    priority: i64,
    now: Millis,
) -> Result<(), StorageError> {
    person_update(db, name, "priority", priority, now).await
}

/// Removes an account. Its request rows stay, with the account's name.
pub async fn remove(db: &Db, name: &str) -> Result<(), StorageError> {
    let result = sqlx::query("DELETE FROM accounts WHERE name = ?")
        .bind(name)
        .execute(db.pool())
        .await?;
    matched(result.rows_affected(), name)
}

/// An account with its usage counters, as listings show it (`ccflare-cli accounts list`).
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub account: Account,
    /// Requests this account served (kept by the writer).
    pub request_count: i64,
    /// When it last served a request.
    pub last_used: Option<Millis>,
    pub created_at: Millis,
    /// The last rate-limit headers the server persisted (subscription windows included).
    pub last_ratelimit: Option<RateLimitSnapshot>,
    /// OAuth accounts: when the access token was last refreshed.
    pub refreshed_at: Option<Millis>,
}

/// Every account with its usage counters, ordered by id. Read-only.
pub async fn list_with_usage(db: &Db) -> Result<Vec<AccountSummary>, StorageError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS}, request_count, last_used, created_at, last_ratelimit, refreshed_at \
         FROM accounts ORDER BY id"
    ))
    .fetch_all(db.pool())
    .await?;
    let key = db.encryption_key();
    rows.iter()
        .map(|row| {
            Ok(AccountSummary {
                account: from_row(key, row)?,
                request_count: row.try_get("request_count")?,
                last_used: row.try_get("last_used")?,
                created_at: row.try_get("created_at")?,
                last_ratelimit: last_ratelimit(row)?,
                refreshed_at: row.try_get("refreshed_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[tokio::test]
    async fn an_added_account_is_returned_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("a.db")).await.unwrap();
        let key = Secret::new("sk-ant-api03-returned-0123456789-wxyz");
        let (added, _) = upsert_api_key(&db, &key, None, Some(3), 1_000)
            .await
            .unwrap();
        let access = Secret::new("sk-ant-oat01-returned-0123456789-wxyz");
        let oauth = crate::oauth::add_oauth_account(&db, "max", &access, None, 9_000, None, 1_000)
            .await
            .unwrap();
        for account in [added, oauth] {
            let stored = find(&db, &account.name).await.unwrap();
            // Account has no PartialEq; its Debug shows every field (the key masked).
            assert_eq!(format!("{account:?}"), format!("{stored:?}"));
            assert!(account.credential == stored.credential);
        }
        // The one INSERT gives an OAuth login its refresh token and time, and a key neither.
        let listed = list_with_usage(&db).await.unwrap();
        let refreshed: Vec<_> = listed
            .iter()
            .map(|s| (s.account.kind, s.refreshed_at, s.created_at))
            .collect();
        assert_eq!(
            refreshed,
            [
                (AccountKind::ApiKey, None, 1_000),
                (AccountKind::OAuth, Some(1_000), 1_000)
            ]
        );
        let tokens = crate::oauth::stored_tokens(&db, listed[1].account.id)
            .await
            .unwrap();
        assert_eq!(tokens.expires_at, Some(9_000));
        assert!(tokens.refresh.is_none());
    }

    #[tokio::test]
    async fn listings_carry_the_usage_counters() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("a.db")).await.unwrap();
        let key = Secret::new("sk-ant-api03-listing-0123456789-wxyz");
        upsert_api_key(&db, &key, Some("one"), Some(2), 1_000)
            .await
            .unwrap();
        sqlx::query("UPDATE accounts SET request_count = 7, last_used = 5000")
            .execute(db.pool())
            .await
            .unwrap();
        let listed = list_with_usage(&db).await.unwrap();
        assert_eq!(listed.len(), 1);
        let one = &listed[0];
        assert_eq!(
            (one.account.name.as_str(), one.account.priority),
            ("one", 2)
        );
        assert_eq!(
            (one.request_count, one.last_used, one.created_at),
            (7, Some(5_000), 1_000)
        );
    }
}
