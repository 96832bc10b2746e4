//! Settings stored in the database: what `ccflare-cli config set` and `PATCH /api/config`
//! write, so a change reaches a running server (it re-reads them every second) and survives a
//! restart. Values are validated by the caller (`core::config::Settings::resolve`) before they
//! are stored; this module only keeps text.

use crate::db::Db;
use crate::error::StorageError;
use ccflare_core::Millis;
use ccflare_core::config::Layer;
use sqlx::Row;

/// Every stored setting, by config-file key.
pub async fn all(db: &Db) -> Result<Layer, StorageError> {
    let rows = sqlx::query("SELECT key, value FROM settings")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("key")?, row.try_get("value")?)))
        .collect()
}

/// Stores one setting, replacing an earlier value.
pub async fn set(db: &Db, key: &str, value: &str, now: Millis) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(value)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Removes a stored setting, so the config file or the default applies again. Returns whether
/// one was stored.
pub async fn unset(db: &Db, key: &str) -> Result<bool, StorageError> {
    let result = sqlx::query("DELETE FROM settings WHERE key = ?")
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Stores and removes several settings in one transaction: all of them take effect or none.
/// `None` removes the key, so the config file or the default applies again.
pub async fn set_many(
    db: &Db,
    changes: &[(String, Option<String>)],
    now: Millis,
) -> Result<(), StorageError> {
    let mut tx = db.begin_write().await?;
    for (key, value) in changes {
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                     updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = ?")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
