//! Another program's hold on a ccflare database: what the server and the CLI meet when a
//! `sqlite3` session or a backup keeps the write lock.

use sqlx::Connection;
use std::path::Path;

/// An open transaction holding the write lock of a database file (`BEGIN EXCLUSIVE` on a
/// connection of its own). Readers still read (WAL); every writer waits, and gives up after
/// its busy timeout.
pub struct WriteLock(sqlx::SqliteConnection);

impl WriteLock {
    /// Takes the write lock of the database at `path`.
    pub async fn take(path: &Path) -> WriteLock {
        let url = format!("sqlite://{}", path.display());
        let mut connection = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("the database opens");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut connection)
            .await
            .expect("the write lock is free");
        WriteLock(connection)
    }

    /// Lets go: the transaction ends without a change.
    pub async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.0)
            .await
            .expect("rollback");
    }
}
