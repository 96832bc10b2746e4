//! OAuth accounts' tokens: adding a subscription account, reading its tokens for a refresh,
//! storing a rotated pair, and re-authentication. The access token is the account's
//! `credential` (what the proxy sends); the refresh token never leaves this module's callers.
//!
//! A refresh is the server's own write and does not bump `revision`; adding and
//! re-authenticating are a person's acts and do.
//!
//! Both tokens are encrypted with the database handle's key when one is configured
//! (`crypto`), each bound to its column and the account's row.

use crate::accounts;
use crate::crypto::{self, Column};
use crate::db::Db;
use crate::error::StorageError;
use ccflare_core::{Account, AccountId, Millis, Secret};
use sqlx::Row;

/// The tokens of one OAuth account as stored.
#[derive(Debug, Clone)]
pub struct StoredTokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub expires_at: Option<Millis>,
    pub refreshed_at: Option<Millis>,
}

/// Adds a subscription account with its first tokens. The name must be free.
pub async fn add_oauth_account(
    db: &Db,
    name: &str,
    access: &Secret,
    refresh: Option<&Secret>,
    expires_at: Millis,
    priority: Option<i64>,
    now: Millis,
) -> Result<Account, StorageError> {
    let mut tx = db.begin_write().await?;
    accounts::require_free_name(&mut tx, name).await?;
    let account = accounts::insert(
        &mut tx,
        db.encryption_key(),
        name,
        accounts::NewCredential::OAuth {
            access,
            refresh,
            expires_at,
        },
        priority.unwrap_or(0),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(account)
}

/// The stored tokens of an OAuth account.
pub async fn stored_tokens(db: &Db, id: AccountId) -> Result<StoredTokens, StorageError> {
    let row = sqlx::query(
        "SELECT credential, refresh_token, expires_at, refreshed_at FROM accounts \
         WHERE id = ? AND kind = 'oauth'",
    )
    .bind(id.0)
    .fetch_optional(db.pool())
    .await?
    .ok_or_else(|| StorageError::AccountNotFound {
        name: format!("#{id}"),
    })?;
    let key = db.encryption_key();
    Ok(StoredTokens {
        access: crypto::open(
            key,
            Column::Credential,
            id.0,
            &row.try_get::<String, _>("credential")?,
        )?,
        refresh: row
            .try_get::<Option<String>, _>("refresh_token")?
            .map(|stored| crypto::open(key, Column::RefreshToken, id.0, &stored))
            .transpose()?,
        expires_at: row.try_get("expires_at")?,
        refreshed_at: row.try_get("refreshed_at")?,
    })
}

/// Stores a refreshed token pair in one transaction, before the new access token is used.
/// Without a new refresh token (the endpoint did not rotate it) the old one is kept. Applies
/// only while `used_refresh` is still the stored refresh token: if a person logged in again
/// meanwhile, their login wins and this returns `false`.
pub async fn save_refreshed(
    db: &Db,
    id: AccountId,
    used_refresh: &Secret,
    access: &Secret,
    refresh: Option<&Secret>,
    expires_at: Millis,
    now: Millis,
) -> Result<bool, StorageError> {
    let key = db.encryption_key();
    let mut tx = db.begin_write().await?;
    // The stored refresh token is compared decrypted: an encrypted one never reads the same.
    let stored: Option<Option<String>> =
        sqlx::query_scalar("SELECT refresh_token FROM accounts WHERE id = ? AND kind = 'oauth'")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
    let current = match stored.flatten() {
        Some(stored) => Some(crypto::open(key, Column::RefreshToken, id.0, &stored)?),
        None => None,
    };
    if current.as_ref() != Some(used_refresh) {
        // Another login replaced it (or the account is gone): this refresh is stale.
        tx.commit().await?;
        return Ok(false);
    }
    // Without a rotated refresh token the one used stays, written anew (encrypted, when a key
    // was configured since it was stored).
    let refresh = refresh.unwrap_or(used_refresh);
    sqlx::query(
        "UPDATE accounts SET credential = ?, credential_hash = ?, refresh_token = ?, \
         expires_at = ?, refreshed_at = ?, updated_at = ? WHERE id = ?",
    )
    .bind(crypto::seal(key, Column::Credential, id.0, access))
    .bind(crypto::credential_hash(access))
    .bind(crypto::seal(key, Column::RefreshToken, id.0, refresh))
    .bind(expires_at)
    .bind(now)
    .bind(now)
    .bind(id.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Replaces an account's login with new tokens after a person logged in again: it becomes an
/// active OAuth account with its name, priority and history kept, its cooldowns cleared.
pub async fn reauthenticate(
    db: &Db,
    name: &str,
    access: &Secret,
    refresh: Option<&Secret>,
    expires_at: Millis,
    now: Millis,
) -> Result<(), StorageError> {
    let key = db.encryption_key();
    let mut tx = db.begin_write().await?;
    // The row's id binds the encrypted tokens to it.
    let id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM accounts WHERE name = ? AND kind = 'oauth'")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(id) = id else {
        tx.commit().await?;
        return accounts::matched(0, name);
    };
    sqlx::query(
        "UPDATE accounts SET kind = 'oauth', credential = ?, credential_hash = ?, \
         refresh_token = ?, expires_at = ?, refreshed_at = ?, status = 'active', \
         rate_limited_until = NULL, overloaded_until = NULL, revision = revision + 1, \
         updated_at = ? WHERE id = ?",
    )
    .bind(crypto::seal(key, Column::Credential, id, access))
    .bind(crypto::credential_hash(access))
    .bind(refresh.map(|refresh| crypto::seal(key, Column::RefreshToken, id, refresh)))
    .bind(expires_at)
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
