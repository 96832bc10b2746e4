//! Opening the database: `DATABASE_URL` forms, file permissions (the file and its `-wal` and
//! `-shm` made 0600, a folder ccflare creates 0700), WAL mode, the busy timeout, and the
//! encryption key the accounts' secrets are read and written with.

use crate::crypto::EncryptionKey;
use crate::error::StorageError;
use crate::migrate;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    /// The one connection write transactions run on ([`Db::begin_write`]).
    writes: SqlitePool,
    path: PathBuf,
    /// Encrypts the accounts' keys and tokens written, and decrypts those read; without one
    /// they are written in plaintext, and encrypted ones cannot be read.
    key: Option<EncryptionKey>,
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
            .foreign_keys(true)
            // Deleted and rewritten cells are zeroed where that costs no extra write, so a
            // removed account's key or a replaced token does not linger in a page's free
            // space. (`secrets::rewrite` turns it fully on for its one transaction.)
            .pragma("secure_delete", "FAST")
            // A transaction's statement journals (the undo of each multi-row statement of the
            // writer's batch) stay in memory instead of spilling to a file SQLite creates and
            // unlinks in /var/tmp every batch: seven system calls and a disk file per batch
            // for nothing, and a batch that fails wherever no temporary folder can be written.
            // Temporary tables stay in memory too (the analytics queries' are small); large
            // sorts (an index built by a migration) still spill to a temporary folder, which
            // SQLite's sorter opens whatever this says. The copies in `maintenance` use
            // connections of their own.
            .pragma("temp_store", "MEMORY");
        // The migrations run on a connection of their own, closed before the pool opens any:
        // sqlx keeps the result columns a statement had when it was prepared, and a connection
        // that read the schema before another one migrated it prepares on the old schema, so
        // its first `SELECT *` of a table a migration widened panicked sqlx's worker thread
        // and came back cut short, instead of failing. A connection of the pool could be one:
        // its first connection is opened before the migrations, which may run on another.
        let migrating = pool_options(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| classify_open(path, e))?;
        // Once SQLite has taken it as a database: a file that is not one is refused as it was.
        make_private(path)?;
        let migrated = migrate::run(&migrating).await.map_err(|e| match e {
            StorageError::Query(err) => classify_open(path, err),
            other => other,
        });
        migrating.close().await;
        migrated?;
        // From here on the file exists: a connection opened later (after a failed write closed
        // one) finds it gone as an error the writer waits out, rather than creating an empty
        // database with no tables and the default file mode.
        let options = options.create_if_missing(false);
        let pool = pool_options(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| classify_open(path, e))?;
        // SQLite takes one writer at a time whatever the connections, so write transactions
        // queue for one connection of their own: its page cache stays valid from one batch to
        // the next (a write from another connection voids it, and the next batch reads its
        // pages again), its statements stay prepared, and it is not pinged before each use.
        let writes = pool_options(1)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Db {
            pool,
            writes,
            path: path.to_owned(),
            key: None,
        })
    }

    /// This handle with `key` for the accounts' secrets (`None`: plaintext, as before
    /// encryption was configured). Set it before cloning the handle out.
    pub fn with_encryption_key(mut self, key: Option<EncryptionKey>) -> Db {
        self.key = key;
        self
    }

    /// The key the accounts' secrets are written with, if one is configured.
    pub fn encryption_key(&self) -> Option<&EncryptionKey> {
        self.key.as_ref()
    }

    /// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`). A
    /// deferred transaction that reads first and writes later fails with "database is locked"
    /// when another connection wrote in between, whatever the busy timeout; an immediate one
    /// waits for the lock instead.
    ///
    /// The transaction is [`WriteTx`], not sqlx's own: when a COMMIT fails (a full disk, a
    /// read-only file, an I/O error), SQLite has often rolled the transaction back already, the
    /// ROLLBACK sqlx then sends fails, and sqlx's connection keeps believing it is inside a
    /// transaction, so every later `BEGIN` on it fails for good. A `WriteTx` that did not
    /// commit closes its connection instead, and the pool opens a fresh one.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let mut connection = self.writes.acquire().await?;
        if let Err(error) = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await
        {
            // Whatever state a failed BEGIN left, this connection is not used again.
            drop(connection.detach());
            return Err(error);
        }
        Ok(WriteTx {
            connection: Some(connection),
        })
    }

    /// The write connection for a transaction that the caller's own queries begin and commit
    /// (`BEGIN IMMEDIATE; …` and `…; COMMIT`, fewer round trips to SQLite's thread: the
    /// writer's batches, `rows::write_transaction`). Until [`WriteTx::committed`] says the
    /// queries went through, dropping it closes the connection, as for [`Db::begin_write`].
    pub async fn write_connection(&self) -> Result<WriteTx, sqlx::Error> {
        Ok(WriteTx {
            connection: Some(self.writes.acquire().await?),
        })
    }

    /// Runs SQLite's `PRAGMA quick_check` (every page readable, b-trees well formed; it reads
    /// the whole file, without the slower index cross-checks of `integrity_check`). Returns
    /// the problems found, none when the database is sound.
    pub async fn quick_check(&self) -> Result<Vec<String>, sqlx::Error> {
        match sqlx::query_scalar::<_, String>("PRAGMA quick_check(20)")
            .fetch_all(&self.pool)
            .await
        {
            Ok(lines) => Ok(lines.into_iter().filter(|line| line != "ok").collect()),
            // A page so damaged that the check itself cannot go on is a finding too.
            Err(error) if is_damage(&error) => Ok(vec![error.to_string()]),
            Err(error) => Err(error),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, after the writer has flushed.
    pub async fn close(&self) {
        self.writes.close().await;
        self.pool.close().await;
    }
}

/// A pool of at most `connections`, each waited for at most 10 s.
fn pool_options(connections: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
}

/// Whether SQLite says the file is damaged (SQLITE_CORRUPT) or not a database at all
/// (SQLITE_NOTADB): waiting will not help.
pub(crate) fn is_damage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => matches!(primary_code(error.as_ref()), 11 | 26),
        _ => false,
    }
}

/// SQLite's primary result code of a database error (the low byte of the extended code).
pub(crate) fn primary_code(error: &dyn sqlx::error::DatabaseError) -> i32 {
    error
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(0, |code| code & 0xff)
}

/// A write transaction from [`Db::begin_write`] (or [`Db::write_connection`]); dereferences to
/// its connection, so queries run on `&mut *tx`. Dropped without [`WriteTx::commit`] or
/// [`WriteTx::committed`] (an early return, a failed statement, a cancelled future), its
/// connection is closed, which rolls the transaction back, rather than returned to the pool
/// in a state nobody can vouch for.
#[derive(Debug)]
pub struct WriteTx {
    connection: Option<PoolConnection<Sqlite>>,
}

impl WriteTx {
    /// Commits. On failure the connection is closed (see [`Db::begin_write`]) and the caller
    /// can retry the whole transaction on another one.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        sqlx::query("COMMIT").execute(&mut **connection).await?;
        // Committed: the connection goes back to the pool as it came.
        self.connection = None;
        Ok(())
    }

    /// The transaction of a [`Db::write_connection`] was committed by the caller's queries:
    /// the connection goes back to the pool.
    pub fn committed(mut self) {
        self.connection = None;
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing a connection rolls back its open transaction and releases the lock.
            drop(connection.detach());
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.connection
            .as_deref()
            .expect("a WriteTx holds its connection until it ends")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.connection
            .as_deref_mut()
            .expect("a WriteTx holds its connection until it ends")
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

/// Creates the parent folder (each folder created 0700) and an empty file readable only by its
/// owner, so that keys stored in it are not readable by other users (SPEC §11). An existing
/// file or folder is left as it is here ([`make_private`] tightens the file).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut folders = std::fs::DirBuilder::new();
        folders.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            folders.mode(0o700);
        }
        folders.create(parent)?;
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

/// Takes group and other permissions away from the database file and its `-wal` and `-shm`
/// files when they have any (an older ccflare, a copy, a restore from backup may have left them
/// 0644): they hold the accounts' keys, encrypted or not, and every request's metadata. A file
/// that cannot be tightened (owned by another user) is refused with what to do, rather than
/// used as it is.
#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        let Ok(metadata) = std::fs::metadata(&file) else {
            // No such file (yet): SQLite creates the WAL and shared-memory files with the
            // database file's permissions.
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
            |error| StorageError::NotPrivate {
                path: file.clone(),
                mode,
                reason: error.to_string(),
            },
        )?;
        tracing::warn!(
            path = %file.display(),
            was = %format!("{mode:03o}"),
            now = %format!("{:03o}", mode & 0o700),
            "the database file could be read by other users; took their permissions away"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), StorageError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_connection_sees_the_migrated_schema() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("ccflare.db")).await.unwrap();
        // A row written from outside the pool, so the pool's connections run nothing before
        // the `SELECT *` below.
        let mut outside = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join("ccflare.db").display()
        ))
        .await
        .unwrap();
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('rollup_hourly')")
                .fetch_all(&mut outside)
                .await
                .unwrap();
        let columns = names.len() as i64;
        let zeros = vec!["0"; names.len()].join(", ");
        sqlx::query(&format!(
            "INSERT INTO rollup_hourly ({}) VALUES ({zeros})",
            names.join(", ")
        ))
        .execute(&mut outside)
        .await
        .unwrap();
        // Hold four at once, so each is a different connection of the pool; `SELECT *` is
        // prepared on whatever schema the connection last read.
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut connection = db.pool().acquire().await.unwrap();
            let rows = sqlx::query("SELECT * FROM rollup_hourly")
                .fetch_all(&mut *connection)
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(sqlx::Row::len(&rows[0]) as i64, columns);
            held.push(connection);
        }
    }

    #[tokio::test]
    async fn a_database_file_removed_under_a_running_server_is_not_created_again_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ccflare.db");
        let db = Db::open_path(&path).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
        // The write transactions' connection opens at its first use: now.
        let error = db.begin_write().await.expect_err("no database to write to");
        assert!(!path.exists(), "not created again: {error}");
    }

    #[tokio::test]
    async fn every_connection_keeps_temporary_files_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("ccflare.db")).await.unwrap();
        async fn temp_store(connection: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar("PRAGMA temp_store")
                .fetch_one(connection)
                .await
        }
        // The write transactions' connection, where the writer's statement journals are.
        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(temp_store(&mut tx).await.unwrap(), 2, "temp_store = MEMORY");
        tx.commit().await.unwrap();
        // Hold four at once, so each is a different connection of the pool.
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut connection = db.pool().acquire().await.unwrap();
            assert_eq!(temp_store(&mut connection).await.unwrap(), 2);
            held.push(connection);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_others_can_read_become_private_and_new_folders_are_0700() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/deeper/ccflare.db");
        let db = Db::open_path(&path).await.unwrap();
        db.close().await;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        assert_eq!(mode(&dir.path().join("new/deeper")), 0o700);

        // While one handle has the database open, its -wal and -shm files exist: loosened
        // (as a copy or a restore leaves them), a second open tightens all three.
        let first = Db::open_path(&path).await.unwrap();
        settings_write(&first).await;
        let files: Vec<PathBuf> = ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| dir.path().join(format!("new/deeper/ccflare.db{suffix}")))
            .collect();
        for file in &files {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let second = Db::open_path(&path).await.unwrap();
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        second.close().await;
        first.close().await;
        // A folder that existed is not ccflare's to change.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = Db::open_path(&dir.path().join("other.db")).await.unwrap();
        db.close().await;
        assert_eq!(mode(dir.path()), 0o755);
    }

    /// A write, so that the write-ahead log has something in it.
    #[cfg(unix)]
    async fn settings_write(db: &Db) {
        crate::settings::set(db, "lb_strategy", "priority", 1)
            .await
            .unwrap();
    }

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
