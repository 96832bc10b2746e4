//! Settings stored in the database: what `ccflare-cli config set` and `PATCH /api/config`
//! write, so a change reaches a running server (it re-reads them every second) and survives a
//! restart. Values are validated by the caller (`core::config::Settings::resolve`) before they
//! are stored; this module only keeps text, and refuses any that looks like an account key or
//! a client key: the accounts table is where keys live (encrypted when a key is configured),
//! never here.

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

/// Whether a value holds an Anthropic key or token (`sk-ant-…`) or a ccflare client key
/// (`ccf_…`), anywhere in it.
pub fn holds_a_key(value: &str) -> bool {
    value.contains("sk-ant-")
        || value
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word.starts_with("ccf_") && word.len() > "ccf_".len())
}

fn refuse_keys(key: &str, value: &str) -> Result<(), StorageError> {
    if holds_a_key(value) {
        return Err(StorageError::SecretInSettings {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Stores one setting, replacing an earlier value. A value holding a key is refused
/// ([`StorageError::SecretInSettings`]).
pub async fn set(db: &Db, key: &str, value: &str, now: Millis) -> Result<(), StorageError> {
    refuse_keys(key, value)?;
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
/// `None` removes the key, so the config file or the default applies again. A value holding a
/// key refuses the whole change.
pub async fn set_many(
    db: &Db,
    changes: &[(String, Option<String>)],
    now: Millis,
) -> Result<(), StorageError> {
    for (key, value) in changes {
        if let Some(value) = value {
            refuse_keys(key, value)?;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_never_stored_as_settings() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("s.db")).await.unwrap();
        let client_key = format!("ccf_{}", "a1".repeat(20));
        for value in [
            "sk-ant-api03-settings-0123456789-wxyz",
            "x,sk-ant-oat01-abc",
            client_key.as_str(),
            &format!("prefix {client_key}"),
        ] {
            let error = set(&db, "api_keys", value, 1).await.unwrap_err();
            assert!(
                matches!(error, StorageError::SecretInSettings { .. }),
                "{value}"
            );
            assert!(!error.to_string().contains(value), "{error}");
            let many = [("api_keys".to_owned(), Some(value.to_owned()))];
            assert!(matches!(
                set_many(&db, &many, 1).await,
                Err(StorageError::SecretInSettings { .. })
            ));
        }
        assert!(all(&db).await.unwrap().is_empty());
        // Names that merely start alike are settings like any other.
        for value in [
            "round-robin",
            "ccf_",
            "my_ccf_thing",
            "https://sk-ant.example",
        ] {
            set(&db, "lb_strategy", value, 1).await.unwrap();
        }
    }
}
