//! Opening the database: `DATABASE_URL` forms, file permissions, WAL mode and the busy timeout.

use crate::error::StorageError;
use crate::migrate;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    path: PathBuf,
}

/// Turns a `DATABASE_URL` into a file path: `file:./ccflare.db` (the seed's form),
/// `sqlite://path`, `sqlite:path`, or a plain path.
pub fn database_path(url: &str) -> Result<PathBuf, StorageError> {
    let url = url.trim();
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| url.strip_prefix("file://"))
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url);
    // Query options such as `?mode=rwc` are sqlx's business, not ours.
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains("://") || path == ":memory:" {
        return Err(StorageError::UnsupportedUrl {
            url: url.to_owned(),
        });
    }
    Ok(PathBuf::from(path))
}

impl Db {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Db, StorageError> {
        let path = database_path(url)?;
        Self::open_path(&path).await
    }

    pub async fn open_path(path: &Path) -> Result<Db, StorageError> {
        let open_error = |reason: String| StorageError::Open {
            path: path.to_owned(),
            reason,
        };
        create_private_file(path).map_err(|e| open_error(e.to_string()))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| classify_open(path, e))?;
        migrate::run(&pool).await.map_err(|e| match e {
            StorageError::Query(err) => classify_open(path, err),
            other => other,
        })?;
        Ok(Db {
            pool,
            path: path.to_owned(),
        })
    }

    /// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`). A
    /// deferred transaction that reads first and writes later fails with "database is locked"
    /// when another connection wrote in between, whatever the busy timeout; an immediate one
    /// waits for the lock instead.
    pub async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, after the writer has flushed.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn classify_open(path: &Path, error: sqlx::Error) -> StorageError {
    let text = error.to_string();
    if text.contains("database is locked") || text.contains("SQLITE_BUSY") {
        StorageError::Locked {
            path: path.to_owned(),
        }
    } else {
        StorageError::Open {
            path: path.to_owned(),
            reason: text,
        }
    }
}

/// Creates the parent folder and an empty file readable only by its owner, so that keys stored
/// in it are not readable by other users (SPEC §11). An existing file is left as it is.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            database_path("file:./ccflare.db").unwrap(),
            PathBuf::from("./ccflare.db")
        );
        assert_eq!(
            database_path("sqlite:///tmp/x.db").unwrap(),
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(
            database_path("sqlite://data/x.db?mode=rwc").unwrap(),
            PathBuf::from("data/x.db")
        );
        assert_eq!(
            database_path("/var/lib/ccflare.db").unwrap(),
            PathBuf::from("/var/lib/ccflare.db")
        );
        assert!(database_path("postgres://localhost/ccflare").is_err());
        assert!(database_path("").is_err());
    }
}
