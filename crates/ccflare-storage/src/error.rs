//! Storage failures, named by what failed so callers can print one clear line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("database at {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error("database schema version {found} is newer than this ccflare understands ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("unsupported DATABASE_URL {url:?}: expected file:PATH, sqlite://PATH or a plain path")]
    UnsupportedUrl { url: String },
    #[error("no account named {name:?}")]
    AccountNotFound { name: String },
    #[error("an account named {name:?} already exists")]
    DuplicateName { name: String },
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
