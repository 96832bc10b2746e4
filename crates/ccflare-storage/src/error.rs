//! Storage failures, named by what failed so callers can print one clear line.
//!
//! An account name in a message is whatever a person typed, and people paste keys where names
//! go (`ccflare-cli accounts remove sk-ant-…`, `DELETE /api/accounts/sk-ant-…`). So a name that
//! looks like a key or token is shown masked (`ccflare_core::secret::shown_masked`), here in
//! `Display`, which every caller (the CLI, the API, logs) prints.

use ccflare_core::secret::shown_masked;
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
    #[error("no account named {:?}", shown_masked(.name))]
    AccountNotFound { name: String },
    #[error("an account named {:?} already exists", shown_masked(.name))]
    DuplicateName { name: String },
    #[error("no client key named {:?}", shown_masked(.name))]
    KeyNotFound { name: String },
    #[error("a client key named {:?} already exists", shown_masked(.name))]
    DuplicateKeyName { name: String },
    #[error("the system's random number generator failed")]
    Randomness,
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Secret(#[from] crate::crypto::SecretError),
    /// The settings table holds options, never credentials (`settings::set`).
    #[error(
        "the value for {key} looks like an account key or a client key, and keys are never \
         stored in the settings table: add accounts with `ccflare-cli accounts add` or \
         CLAUDE_API_KEYS"
    )]
    SecretInSettings { key: String },
    /// A database file others can read, which could not be made private.
    #[error(
        "{path} can be read by other users (mode {mode:03o}) and could not be made private \
         ({reason}): run `chmod 600` on it as its owner"
    )]
    NotPrivate {
        path: PathBuf,
        mode: u32,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "sk-ant-api03-Zx81kQ_pL0vN3mT7yR2wS9uB4cD6eF8gH1iJ5kL7mN9oP2qR4sT6uV8wX0yZ-wxyz";

    #[test]
    fn names_are_shown_as_given() {
        for name in [
            "work",
            "key-wxyz",
            "회사",
            "team-2025-production-primary-account",
            "a name with spaces that is rather long indeed 12345",
        ] {
            assert_eq!(shown_masked(name), name);
            let error = StorageError::AccountNotFound { name: name.into() };
            assert_eq!(error.to_string(), format!("no account named {name:?}"));
        }
    }

    #[test]
    fn keys_and_tokens_given_as_names_are_masked() {
        let not_found = StorageError::AccountNotFound { name: KEY.into() };
        assert_eq!(not_found.to_string(), "no account named \"sk-ant-…wxyz\"");
        let duplicate = StorageError::DuplicateName { name: KEY.into() };
        assert_eq!(
            duplicate.to_string(),
            "an account named \"sk-ant-…wxyz\" already exists"
        );
        // Too short to keep even the last four: nothing of it is shown.
        assert_eq!(shown_masked("sk-ant-oops"), "…");
        for token in [
            "api03-Zx81kQ_pL0vN3mT7yR2wS9uB4cD6eF8gH1iJ5kL7mN9oP2qR4sT6uV8wX0yZ-wxyz",
            "3f9a0c7e1b2d4f6a8c0e2b4d6f8a0c1e3b5d7f9a",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THwxyz",
        ] {
            let shown = StorageError::AccountNotFound { name: token.into() }.to_string();
            assert!(!shown.contains(&token[..20]), "{shown}");
            assert!(
                shown.ends_with(&format!("\"…{}\"", &token[token.len() - 4..])),
                "{shown}"
            );
        }
    }
    #[test]
    fn a_key_inside_a_name_is_masked_too() {
        for given in [
            format!(" {KEY}"),
            format!("\"{KEY}\""),
            format!("Bearer {KEY}"),
            format!("x-api-key: {KEY}"),
            format!("my{KEY}"),
        ] {
            let shown = shown_masked(&given);
            assert_eq!(shown, "sk-ant-…wxyz", "{given}");
            let error = StorageError::AccountNotFound { name: given };
            assert!(!error.to_string().contains(&KEY[..20]), "{error}");
        }
        let bearer = "Bearer 3f9a0c7e1b2d4f6a8c0e2b4d6f8a0c1e3b5d7f9a";
        assert_eq!(shown_masked(bearer), "…7f9a");
    }
}
