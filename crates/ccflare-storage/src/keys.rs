//! The client keys repository (`client_keys`, migration 0006): creating a key (`ccf_` and 43
//! base62 characters from the system's randomness, 256 bits), which is returned once and
//! stored only as its SHA-256; listing, changing and deleting keys by name; the usage each key
//! has recorded since the start of its budget periods (read once at a server's start); and
//! when each key was last used.
//!
//! A request row names its key by id (`requests.client_key` holds the id as text): a key can
//! be renamed, and a deleted key's name can be given to a new one, without their histories
//! mixing. Every person-made change bumps `revision`.

use crate::db::Db;
use crate::error::StorageError;
use ccflare_core::client_key::{BudgetPeriod, KEY_PREFIX, KeyLimits, KeyStatus, SHOWN_PREFIX_LEN};
use ccflare_core::{Millis, Secret};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::FromRow;

/// Random characters after `ccf_`: 43 base62 characters carry 256 bits.
pub const RANDOM_CHARS: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The SHA-256 of a whole key, as stored and looked up.
pub type KeyHash = [u8; 32];

/// The hash a key is stored and looked up by. A key carries 256 random bits, so a plain hash
/// is as strong as a slow one, and costs one microsecond on the request path.
pub fn hash(key: &str) -> KeyHash {
    let digest = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A new key from the system's randomness: `ccf_` and [`RANDOM_CHARS`] base62 characters.
pub fn generate() -> Result<Secret, StorageError> {
    let random = SystemRandom::new();
    let mut key = String::with_capacity(KEY_PREFIX.len() + RANDOM_CHARS);
    key.push_str(KEY_PREFIX);
    let mut bytes = [0u8; 64];
    while key.len() < KEY_PREFIX.len() + RANDOM_CHARS {
        random
            .fill(&mut bytes)
            .map_err(|_| StorageError::Randomness)?;
        // Bytes from 248 up are dropped, so that every character is equally likely.
        for &byte in bytes.iter().filter(|&&b| b < 248) {
            if key.len() == KEY_PREFIX.len() + RANDOM_CHARS {
                break;
            }
            key.push(char::from(BASE62[usize::from(byte % 62)]));
        }
    }
    Ok(Secret::new(key))
}

/// A stored key: everything but the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientKey {
    pub id: i64,
    pub name: String,
    /// `ccf_` and the first eight random characters, for logs and listings.
    pub prefix: String,
    pub hash: KeyHash,
    pub status: KeyStatus,
    pub expires_at: Option<Millis>,
    pub limits: KeyLimits,
    pub revision: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub last_used: Option<Millis>,
}

impl ClientKey {
    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[derive(FromRow)]
struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    hash: Vec<u8>,
    status: String,
    expires_at: Option<i64>,
    rpm: Option<i64>,
    max_concurrent: Option<i64>,
    budget_usd: Option<f64>,
    budget_tokens: Option<i64>,
    budget_period: String,
    revision: i64,
    created_at: i64,
    updated_at: i64,
    last_used: Option<i64>,
}

impl TryFrom<KeyRow> for ClientKey {
    type Error = StorageError;

    fn try_from(row: KeyRow) -> Result<ClientKey, StorageError> {
        let hash = KeyHash::try_from(row.hash.as_slice())
            .map_err(|_| StorageError::Corrupt(format!("client key {}: bad hash", row.id)))?;
        let positive = |n: Option<i64>| n.filter(|n| *n > 0);
        Ok(ClientKey {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            hash,
            status: row.status.parse().map_err(StorageError::Corrupt)?,
            expires_at: row.expires_at,
            limits: KeyLimits {
                rpm: positive(row.rpm).map(|n| n.min(u32::MAX as i64) as u32),
                max_concurrent: positive(row.max_concurrent).map(|n| n.min(u32::MAX as i64) as u32),
                budget_usd: row.budget_usd.filter(|usd| *usd >= 0.0),
                budget_tokens: row.budget_tokens.filter(|n| *n >= 0).map(|n| n as u64),
                period: row
                    .budget_period
                    .parse::<BudgetPeriod>()
                    .map_err(StorageError::Corrupt)?,
            },
            revision: row.revision,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_used: row.last_used,
        })
    }
}

const COLUMNS: &str = "id, name, prefix, hash, status, expires_at, rpm, max_concurrent, \
                       budget_usd, budget_tokens, budget_period, revision, created_at, \
                       updated_at, last_used";

/// Every key, ordered by id.
pub async fn list(db: &Db) -> Result<Vec<ClientKey>, StorageError> {
    let rows: Vec<KeyRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM client_keys ORDER BY id"))
            .fetch_all(db.pool())
            .await?;
    rows.into_iter().map(ClientKey::try_from).collect()
}

/// One key by name.
pub async fn find(db: &Db, name: &str) -> Result<ClientKey, StorageError> {
    let row: Option<KeyRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM client_keys WHERE name = ?"))
            .bind(name)
            .fetch_optional(db.pool())
            .await?;
    match row {
        Some(row) => row.try_into(),
        None => Err(StorageError::KeyNotFound {
            name: name.to_owned(),
        }),
    }
}

/// Whether any key is stored.
pub async fn any(db: &Db) -> Result<bool, StorageError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM client_keys LIMIT 1")
        .fetch_optional(db.pool())
        .await?;
    Ok(found.is_some())
}

fn duplicate_name(error: sqlx::Error, name: &str) -> StorageError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::DuplicateKeyName {
            name: name.to_owned(),
        },
        _ => StorageError::Query(error),
    }
}

/// Creates a key named `name` and returns it with the key itself, which is stored nowhere: the
/// caller shows it once. The name is checked by the caller
/// (`ccflare_core::client_key::check_name`).
pub async fn create(
    db: &Db,
    name: &str,
    limits: &KeyLimits,
    expires_at: Option<Millis>,
    now: Millis,
) -> Result<(ClientKey, Secret), StorageError> {
    let key = generate()?;
    let random = &key.expose()[KEY_PREFIX.len()..];
    let prefix = format!("{KEY_PREFIX}{}", &random[..SHOWN_PREFIX_LEN]);
    sqlx::query(
        "INSERT INTO client_keys (name, prefix, hash, status, expires_at, rpm, max_concurrent, \
         budget_usd, budget_tokens, budget_period, revision, created_at, updated_at) \
         VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, 1, ?, ?)",
    )
    .bind(name)
    .bind(&prefix)
    .bind(hash(key.expose()).as_slice())
    .bind(expires_at)
    .bind(limits.rpm.map(i64::from))
    .bind(limits.max_concurrent.map(i64::from))
    .bind(limits.budget_usd)
    .bind(limits.budget_tokens.map(|n| n.min(i64::MAX as u64) as i64))
    .bind(limits.period.as_str())
    .bind(now)
    .bind(now)
    .execute(db.pool())
    .await
    .map_err(|error| duplicate_name(error, name))?;
    Ok((find(db, name).await?, key))
}

/// A person's change to a key; `None` leaves that part as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyChange {
    pub name: Option<String>,
    pub status: Option<KeyStatus>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<Millis>>,
    pub limits: Option<KeyLimits>,
}

/// Applies `change` to the key named `name` (bumping its revision) and returns it as stored.
pub async fn update(
    db: &Db,
    name: &str,
    change: &KeyChange,
    now: Millis,
) -> Result<ClientKey, StorageError> {
    let mut tx = db.begin_write().await?;
    let row: Option<KeyRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM client_keys WHERE name = ?"))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(row) = row else {
        return Err(StorageError::KeyNotFound {
            name: name.to_owned(),
        });
    };
    let key = ClientKey::try_from(row)?;
    let new_name = change.name.as_deref().unwrap_or(&key.name);
    let status = change.status.unwrap_or(key.status);
    let expires_at = change.expires_at.unwrap_or(key.expires_at);
    let limits = change.limits.unwrap_or(key.limits);
    sqlx::query(
        "UPDATE client_keys SET name = ?, status = ?, expires_at = ?, rpm = ?, \
         max_concurrent = ?, budget_usd = ?, budget_tokens = ?, budget_period = ?, \
         revision = revision + 1, updated_at = ? WHERE id = ?",
    )
    .bind(new_name)
    .bind(status.as_str())
    .bind(expires_at)
    .bind(limits.rpm.map(i64::from))
    .bind(limits.max_concurrent.map(i64::from))
    .bind(limits.budget_usd)
    .bind(limits.budget_tokens.map(|n| n.min(i64::MAX as u64) as i64))
    .bind(limits.period.as_str())
    .bind(now)
    .bind(key.id)
    .execute(&mut *tx)
    .await
    .map_err(|error| duplicate_name(error, new_name))?;
    tx.commit().await?;
    find(db, new_name).await
}

/// Deletes a key; its request rows stay, naming its id.
pub async fn remove(db: &Db, name: &str) -> Result<(), StorageError> {
    let done = sqlx::query("DELETE FROM client_keys WHERE name = ?")
        .bind(name)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(StorageError::KeyNotFound {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Records when keys were last used (`(id, time)` pairs); an earlier time never overwrites a
/// later one. Not a person's change: the revision stays.
pub async fn touch(db: &Db, used: &[(i64, Millis)]) -> Result<(), StorageError> {
    if used.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin_write().await?;
    for (id, at) in used {
        sqlx::query(
            "UPDATE client_keys SET last_used = max(coalesce(last_used, 0), ?) WHERE id = ?",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What one key's recorded requests used since the start of each budget period holding `now`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeriodUsage {
    pub usd: f64,
    pub tokens: u64,
}

/// One key's recorded usage in the current day, week and month.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyUsage {
    pub key_id: i64,
    pub day: PeriodUsage,
    pub week: PeriodUsage,
    pub month: PeriodUsage,
}

impl KeyUsage {
    pub fn of(&self, period: BudgetPeriod) -> PeriodUsage {
        match period {
            BudgetPeriod::Day => self.day,
            BudgetPeriod::Week => self.week,
            BudgetPeriod::Month => self.month,
        }
    }
}

#[derive(FromRow)]
struct UsageRow {
    client_key: String,
    day_usd: f64,
    day_tokens: i64,
    week_usd: f64,
    week_tokens: i64,
    month_usd: f64,
    month_tokens: i64,
}

/// Every key's recorded usage in the day, week and month holding `now` (UTC), in one query
/// over the rows since the earlier of the week's and the month's start: what a starting server
/// seeds its budgets with.
pub async fn usage(db: &Db, now: Millis) -> Result<Vec<KeyUsage>, StorageError> {
    let day = BudgetPeriod::Day.bounds(now).0;
    let week = BudgetPeriod::Week.bounds(now).0;
    let month = BudgetPeriod::Month.bounds(now).0;
    let tokens = "input_tokens + output_tokens + cache_read_tokens + cache_write_tokens";
    let rows: Vec<UsageRow> = sqlx::query_as(&format!(
        "SELECT client_key, \
         coalesce(sum(CASE WHEN started_at >= ?1 THEN cost_usd END), 0.0) AS day_usd, \
         coalesce(sum(CASE WHEN started_at >= ?1 THEN {tokens} END), 0) AS day_tokens, \
         coalesce(sum(CASE WHEN started_at >= ?2 THEN cost_usd END), 0.0) AS week_usd, \
         coalesce(sum(CASE WHEN started_at >= ?2 THEN {tokens} END), 0) AS week_tokens, \
         coalesce(sum(CASE WHEN started_at >= ?3 THEN cost_usd END), 0.0) AS month_usd, \
         coalesce(sum(CASE WHEN started_at >= ?3 THEN {tokens} END), 0) AS month_tokens \
         FROM requests WHERE started_at >= ?4 AND client_key IS NOT NULL GROUP BY client_key"
    ))
    .bind(day)
    .bind(week)
    .bind(month)
    .bind(week.min(month))
    .fetch_all(db.pool())
    .await?;
    let period = |usd: f64, tokens: i64| PeriodUsage {
        usd,
        tokens: tokens.max(0) as u64,
    };
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(KeyUsage {
                key_id: row.client_key.parse().ok()?,
                day: period(row.day_usd, row.day_tokens),
                week: period(row.week_usd, row.week_tokens),
                month: period(row.month_usd, row.month_tokens),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_base62_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        for key in [&a, &b] {
            let random = key.expose().strip_prefix(KEY_PREFIX).unwrap();
            assert_eq!(random.len(), RANDOM_CHARS);
            assert!(random.bytes().all(|c| c.is_ascii_alphanumeric()));
        }
        assert_eq!(hash(a.expose()), hash(a.expose()));
        assert_ne!(hash(a.expose()), hash(b.expose()));
    }
}
