//! SQLite storage for ccflare: opening the database (WAL, busy timeout, mode 0600), the
//! embedded migrations applied at start, the accounts repository (its keys and tokens
//! encrypted when a key is configured: `crypto`, `secrets`), and the single background
//! writer that records requests in batches so the request path never waits on the database.
//!
//! This is the only crate that names sqlx.

pub mod accounts;
pub mod crypto;
mod db;
mod error;
pub mod keys;
pub mod maintenance;
mod migrate;
pub mod oauth;
pub mod requests;
pub mod rollups;
mod rows;
pub mod secrets;
pub mod settings;
pub mod writer;

pub use crypto::EncryptionKey;
pub use db::WriteTx;
pub use db::{Db, database_path};
pub use error::StorageError;
pub use writer::{
    AccountStateUpdate, MAX_QUEUED, Writer, WriterHandle, WriterHealth, WriterOptions, WriterTotals,
};
