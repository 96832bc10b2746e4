//! Embedded migrations, applied in order at start, each in its own transaction. A small runner
//! of our own instead of sqlx's macros keeps the build free of compile-time database access.

use crate::error::StorageError;
use sqlx::SqlitePool;

/// Every migration, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "settings",
        include_str!("../../../migrations/0002_settings.sql"),
    ),
    (
        3,
        "rollups",
        include_str!("../../../migrations/0003_rollups.sql"),
    ),
    (
        4,
        "oauth",
        include_str!("../../../migrations/0004_oauth.sql"),
    ),
    (
        5,
        "latency_minutely",
        include_str!("../../../migrations/0005_latency_minutely.sql"),
    ),
    (
        6,
        "client_keys",
        include_str!("../../../migrations/0006_client_keys.sql"),
    ),
    (
        7,
        "encrypted_secrets",
        include_str!("../../../migrations/0007_encrypted_secrets.sql"),
    ),
    (
        8,
        "request_listing",
        include_str!("../../../migrations/0008_request_listing.sql"),
    ),
    (
        9,
        "request_route",
        include_str!("../../../migrations/0009_request_route.sql"),
    ),
    (
        10,
        "messages_api",
        include_str!("../../../migrations/0010_messages_api.sql"),
    ),
    (
        11,
        "upstream_ids",
        include_str!("../../../migrations/0011_upstream_ids.sql"),
    ),
    (
        12,
        "moved_cache",
        include_str!("../../../migrations/0012_moved_cache.sql"),
    ),
];

/// The migration whose new column (`accounts.credential_hash`) is filled from the credentials
/// stored, by Rust code (SQLite has no SHA-256).
const ENCRYPTED_SECRETS: i64 = 7;

/// The migrations whose new tables are filled from the rows already recorded, by Rust code that
/// shares the histogram bins with the writer (SQL alone would need a second copy of them).
const ROLLUPS: i64 = 3;
const LATENCY_MINUTELY: i64 = 5;

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub async fn run(pool: &SqlitePool) -> Result<(), StorageError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?;
    let current = applied.iter().copied().max().unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    // Every migration not applied yet, in order — not only those above the newest applied:
    // a database taken back to an older schema by removing one version's row (as the
    // migration tests do) gets that one again, whatever came after it.
    let pending = MIGRATIONS.iter().filter(|m| !applied.contains(&m.0));
    for &(version, name, sql) in pending {
        let migration_error = |source| StorageError::Migration {
            version,
            name,
            source,
        };
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(migration_error)?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(migration_error)?;
        // Each fill writes only the tables that exist at its turn, in its migration's
        // transaction: a crash half-way leaves the migration to be done again.
        if version == ROLLUPS {
            crate::rollups::fill_0003(&mut tx)
                .await
                .map_err(migration_error)?;
        } else if version == LATENCY_MINUTELY {
            crate::rollups::rebuild_minute_latency(&mut tx)
                .await
                .map_err(migration_error)?;
        }
        if version == ENCRYPTED_SECRETS {
            crate::secrets::fill_credential_hashes(&mut tx)
                .await
                .map_err(migration_error)?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, strftime('%s','now'))")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(migration_error)?;
        tx.commit().await.map_err(migration_error)?;
        tracing::debug!(version, name, "applied database migration");
    }
    Ok(())
}
