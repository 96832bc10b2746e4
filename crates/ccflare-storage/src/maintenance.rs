//! Checking a database file for damage and salvaging what is readable of a damaged one into a
//! new file (`ccflare-cli db check` and `db recover`), and copying a live one into a new file
//! (`db backup`, [`backup`]).
//!
//! Both open the database read-only and never run migrations on it, so neither can make a
//! damaged file worse, and both may run beside a server. `check` runs SQLite's own checker
//! (`PRAGMA quick_check`, or `integrity_check` when asked) and counts the rows of the main
//! tables. `recover` writes only to a new file: it first tries `VACUUM INTO`, which copies a
//! file that still reads whole; when that fails it creates the new file with the normal schema
//! and copies table by table, the tables people made first (accounts with their keys and OAuth
//! tokens, stored settings), then the request rows in rowid ranges, skipping the ranges SQLite
//! cannot read so that one bad page costs only its own rows. When a table had rows SQLite could
//! not reach (a damaged root or interior page hides intact leaves), its rows are then read
//! straight from the file's pages (`pages.rs`). The rollups are never copied: they are rebuilt
//! from the request rows that were saved, by the same code the writer and the migration use
//! (`rollups::rebuild_all`), so they match the new file's rows.

use crate::db::Db;
use crate::error::StorageError;
use crate::migrate::SCHEMA_VERSION;
use crate::rollups;
use pages::{Affinity, Column, PageFile, Value};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod pages;

/// The tables `recover` copies, in this order: what a person made first, since it matters most
/// and cannot be made again from anything else; then the request rows.
pub const COPIED_TABLES: &[&str] = &["accounts", "settings", "client_keys", "requests"];

/// The tables `recover` rebuilds from the saved request rows instead of copying them.
pub const ROLLUP_TABLES: &[&str] = &[
    "rollup_hourly",
    "rollup_daily",
    "rollup_minutely",
    "latency_hourly",
    "latency_daily",
    "latency_minutely",
];

/// The tables whose rows `check` counts.
const COUNTED_TABLES: &[&str] = &["accounts", "requests", "settings"];

/// Rowids per copy statement: small enough that a range spanning a bad page is found again by
/// a few halvings, large enough that a million rows take a thousand statements.
const CHUNK: i64 = 1_000;

/// Failed reads one table may spend on narrowing bad ranges down to single rows. A table whose
/// root page is gone fails every read; without a budget, narrowing would try every rowid one
/// by one. Past it, a failing range is skipped whole.
const NARROWING_BUDGET: u32 = 20_000;

/// How long a read waits for a lock (a running server's checkpoint), as the storage does.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's primary result codes that say the data cannot be read (as opposed to the new
/// file not taking it): SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FORMAT, SQLITE_RANGE,
/// SQLITE_NOTADB, and SQLITE_CONSTRAINT for a damaged row the new schema refuses.
const UNREADABLE_CODES: &[i32] = &[10, 11, 19, 24, 25, 26];
const SQLITE_NOTADB: i32 = 26;
const SQLITE_CONSTRAINT: i32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no database at {path}")]
    Missing { path: PathBuf },
    #[error("{path} is not a database (SQLite cannot read its header)")]
    NotADatabase { path: PathBuf },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the list of tables of {path} cannot be read ({reason}); nothing can be salvaged from it"
    )]
    SchemaUnreadable { path: PathBuf, reason: String },
    #[error("{path} is at schema version {found}, newer than this ccflare knows ({known})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path} already exists; only a new file is written, never an existing one")]
    DestinationExists { path: PathBuf },
    #[error("{path} is the database being recovered; give a new file to write to")]
    SameFile { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("copying {path}: {reason}")]
    Backup { path: PathBuf, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// How thorough `check` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// `PRAGMA quick_check`: every page and record is well formed; linear in the file size.
    Quick,
    /// `PRAGMA integrity_check`: also that every index matches its table; slower.
    Full,
}

impl Depth {
    pub fn pragma(self) -> &'static str {
        match self {
            Depth::Quick => "quick_check",
            Depth::Full => "integrity_check",
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub path: PathBuf,
    pub depth: Depth,
    /// One line per problem; empty when the file is sound.
    pub problems: Vec<String>,
    pub page_size: Option<i64>,
    pub page_count: Option<i64>,
    /// The newest migration applied, when `schema_migrations` reads.
    pub schema_version: Option<i64>,
    /// The row count of each main table that exists: the count, or why it cannot be read.
    pub tables: Vec<(String, Result<i64, String>)>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn new(path: &Path, depth: Depth) -> CheckReport {
        CheckReport {
            path: path.to_owned(),
            depth,
            problems: Vec::new(),
            page_size: None,
            page_count: None,
            schema_version: None,
            tables: Vec::new(),
        }
    }
}

/// Checks the database at `path` without changing it: it is opened read-only, nothing is
/// created and no migration runs. A missing file is an error; a file SQLite cannot read (not a
/// database, unreadable table list) is a report with that problem.
pub async fn check(path: &Path, depth: Depth) -> Result<CheckReport, MaintenanceError> {
    let mut report = CheckReport::new(path, depth);
    let mut conn = match open_read_only(path).await {
        Ok(conn) => conn,
        Err(MaintenanceError::NotADatabase { .. }) => {
            report
                .problems
                .push("not a database: SQLite cannot read this file's header".to_owned());
            return Ok(report);
        }
        Err(error) => return Err(error),
    };
    let result = check_open(&mut conn, &mut report).await;
    let _ = conn.close().await;
    result.map(|()| report)
}

async fn check_open(
    conn: &mut SqliteConnection,
    report: &mut CheckReport,
) -> Result<(), MaintenanceError> {
    let schema = match schema(conn).await {
        Ok(schema) => schema,
        Err(error) if code(&error) == Some(SQLITE_NOTADB) => {
            report
                .problems
                .push("not a database: SQLite cannot read this file's header".to_owned());
            return Ok(());
        }
        Err(error) => {
            report.problems.push(format!(
                "the list of tables cannot be read: {}",
                message(&error)
            ));
            return Ok(());
        }
    };
    report.page_size = pragma_number(conn, "page_size").await;
    report.page_count = pragma_number(conn, "page_count").await;

    let names: HashMap<i64, &SchemaEntry> = schema
        .iter()
        .map(|entry| (entry.root_page, entry))
        .collect();
    let pragma = report.depth.pragma();
    match run_check(conn, pragma, None).await {
        Ok(lines) => report
            .problems
            .extend(lines.iter().map(|line| name_tree(line, &names))),
        // The checker stops with an error at a page it cannot read as it scans the rows, and
        // what it found before is lost with it. Table by table, the check names the damaged
        // tables and still reports on the others.
        Err(error) => {
            let before = report.problems.len();
            for entry in schema.iter().filter(|e| e.kind == "table") {
                match run_check(conn, pragma, Some(&entry.name)).await {
                    Ok(lines) => report
                        .problems
                        .extend(lines.iter().map(|line| name_tree(line, &names))),
                    Err(error) => {
                        report
                            .problems
                            .push(format!("table {}: {}", entry.name, message(&error)))
                    }
                }
            }
            if report.problems.len() == before {
                report
                    .problems
                    .push(format!("{pragma} could not run: {}", message(&error)));
            }
        }
    }

    let has = |table: &str| schema.iter().any(|e| e.kind == "table" && e.name == table);
    if !COUNTED_TABLES.iter().any(|table| has(table)) {
        report
            .problems
            .push("no ccflare tables: the file is empty or another program's database".to_owned());
        return Ok(());
    }
    if has("schema_migrations") {
        report.schema_version =
            sqlx::query_scalar::<_, Option<i64>>("SELECT max(version) FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await
                .ok()
                .flatten();
    }
    for table in COUNTED_TABLES {
        if !has(table) {
            report.problems.push(format!("table {table} is missing"));
            continue;
        }
        let count = sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM \"{table}\""))
            .fetch_one(&mut *conn)
            .await
            .map_err(|error| message(&error));
        if let Err(reason) = &count {
            report
                .problems
                .push(format!("table {table} cannot be counted: {reason}"));
        }
        report.tables.push(((*table).to_owned(), count));
    }
    Ok(())
}

/// The problems `PRAGMA quick_check` (or `integrity_check`) reports, for the whole file or one
/// table and its indexes; an empty list when it finds none.
async fn run_check(
    conn: &mut SqliteConnection,
    pragma: &str,
    table: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = match table {
        Some(table) => format!("PRAGMA {pragma}(\"{}\")", table.replace('"', "\"\"")),
        None => format!("PRAGMA {pragma}"),
    };
    let text = sqlx::query_scalar::<_, String>(&sql)
        .fetch_all(&mut *conn)
        .await?;
    Ok(text
        .iter()
        .flat_map(|text| text.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty() && *line != "ok" && !line.starts_with("*** in database"))
        .map(str::to_owned)
        .collect())
}

/// SQLite names a damaged b-tree by its root page ("Tree 5 page 9: …"); say whose it is.
fn name_tree(line: &str, names: &HashMap<i64, &SchemaEntry>) -> String {
    let Some(rest) = line.strip_prefix("Tree ") else {
        return line.to_owned();
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<i64>().ok().and_then(|root| names.get(&root)) {
        Some(entry) => format!(
            "Tree {digits} ({} {}){}",
            entry.kind,
            entry.name,
            &rest[digits.len()..]
        ),
        None => line.to_owned(),
    }
}

/// What `recover` saved of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecovery {
    pub table: String,
    /// Rows now in the new file.
    pub copied: u64,
    /// The rows the old file says it holds (`count(*)`, which SQLite may answer from an index
    /// that is still whole), when it can say.
    pub in_source: Option<u64>,
    /// Rowid ranges that could not be read and were skipped, in order.
    pub skipped: Vec<(i64, i64)>,
    /// SQLite's reason for the first read that failed.
    pub error: Option<String>,
    /// Rows read straight from the file's pages, which SQLite could not reach through the
    /// table (included in `copied`).
    pub from_pages: u64,
    /// Why the pages were not read directly, when SQLite left rows unread.
    pub pages_unread: Option<String>,
}

impl TableRecovery {
    fn new(table: &str) -> TableRecovery {
        TableRecovery {
            table: table.to_owned(),
            copied: 0,
            in_source: None,
            skipped: Vec::new(),
            error: None,
            from_pages: 0,
            pages_unread: None,
        }
    }

    /// Rows the old file holds that the new one does not, when the old file can count them.
    pub fn lost(&self) -> Option<u64> {
        self.in_source.map(|n| n.saturating_sub(self.copied))
    }
}

/// How `recover` made the new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `VACUUM INTO` copied the whole file: every row was readable.
    VacuumInto,
    /// `VACUUM INTO` failed (the reason); the tables were copied one by one.
    TableByTable { vacuum_error: String },
}

/// What `recover` did.
#[derive(Debug, Clone)]
pub struct RecoverReport {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub method: Method,
    /// Per copied table, in [`COPIED_TABLES`] order.
    pub tables: Vec<TableRecovery>,
    /// Tables of the old file this build does not know, left behind.
    pub left_behind: Vec<String>,
    /// The check of the new file, once written and closed.
    pub check: CheckReport,
}

impl RecoverReport {
    /// The saved request rows, from which the rollups were rebuilt.
    pub fn requests(&self) -> u64 {
        self.tables
            .iter()
            .find(|t| t.table == "requests")
            .map_or(0, |t| t.copied)
    }
}

/// Saves what is readable of the database at `source` into a new file at `destination`, which
/// must not exist. The source is only read (opened read-only); the new file has the current
/// schema, the source's accounts, settings and readable request rows, and rollups rebuilt from
/// those rows. A destination that cannot be completed is removed.
pub async fn recover(source: &Path, destination: &Path) -> Result<RecoverReport, MaintenanceError> {
    let (source_path, destination_path) = {
        let (source, destination) = (source.to_owned(), destination.to_owned());
        blocking(move || prepare_paths(&source, &destination)).await?
    };
    let mut conn = open_read_only(&source_path).await?;
    let schema = match schema(&mut conn).await {
        Ok(schema) => schema,
        Err(error) if code(&error) == Some(SQLITE_NOTADB) => {
            return Err(MaintenanceError::NotADatabase {
                path: source.to_owned(),
            });
        }
        Err(error) => {
            return Err(MaintenanceError::SchemaUnreadable {
                path: source.to_owned(),
                reason: message(&error),
            });
        }
    };
    if schema.iter().any(|e| e.name == "schema_migrations") {
        let found =
            sqlx::query_scalar::<_, Option<i64>>("SELECT max(version) FROM schema_migrations")
                .fetch_one(&mut conn)
                .await
                .ok()
                .flatten();
        if let Some(found) = found.filter(|v| *v > SCHEMA_VERSION) {
            return Err(MaintenanceError::SchemaTooNew {
                path: source.to_owned(),
                found,
                known: SCHEMA_VERSION,
            });
        }
    }

    // Created here, not in `write_new`: a file that could not be created is not ours, and
    // must not be removed on the way out.
    let to_create = destination_path.clone();
    if let Err(error) = blocking(move || create_private_new(&to_create)).await {
        let _ = conn.close().await;
        return Err(error);
    }
    let result = write_new(&mut conn, &schema, &source_path, &destination_path).await;
    let _ = conn.close().await;
    let (method, tables) = match result {
        Ok(done) => done,
        Err(error) => {
            let path = destination_path.clone();
            let _ = blocking(move || remove_new_file(&path)).await;
            return Err(error);
        }
    };
    let known: Vec<&str> = COPIED_TABLES
        .iter()
        .chain(ROLLUP_TABLES)
        .copied()
        .chain(["schema_migrations"])
        .collect();
    // VACUUM INTO copies every table; only a table-by-table salvage leaves some behind.
    let left_behind = schema
        .iter()
        .filter(|_| matches!(method, Method::TableByTable { .. }))
        .filter(|e| e.kind == "table" && !e.name.starts_with("sqlite_"))
        .filter(|e| !known.contains(&e.name.as_str()))
        .map(|e| e.name.clone())
        .collect();
    let check = check(&destination_path, Depth::Quick).await?;
    Ok(RecoverReport {
        source: source.to_owned(),
        destination: destination.to_owned(),
        method,
        tables,
        left_behind,
        check,
    })
}

/// Copies the database at `source` into the new file `destination` while a server may be
/// writing to it (`ccflare-cli db backup`): one `VACUUM INTO` on a read-only connection, which
/// reads a single snapshot, so the copy holds every row committed before it began and nothing
/// half-written. The new file is created readable by its owner only (it holds keys), is one
/// self-contained file that a server opens as it is, and is checked (`quick_check`) once
/// written; the report says what it holds.
pub async fn backup(source: &Path, destination: &Path) -> Result<CheckReport, MaintenanceError> {
    let (source_path, destination_path) = {
        let (source, destination) = (source.to_owned(), destination.to_owned());
        blocking(move || prepare_paths(&source, &destination)).await?
    };
    let mut conn = open_read_only(&source_path).await?;
    let to_create = destination_path.clone();
    if let Err(error) = blocking(move || create_private_new(&to_create)).await {
        let _ = conn.close().await;
        return Err(error);
    }
    let copied = sqlx::query("VACUUM INTO ?")
        .bind(destination_path.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    if let Err(error) = copied {
        let path = destination_path.clone();
        let _ = blocking(move || remove_new_file(&path)).await;
        return Err(match code(&error) {
            Some(SQLITE_NOTADB) => MaintenanceError::NotADatabase {
                path: source.to_owned(),
            },
            _ => MaintenanceError::Backup {
                path: source.to_owned(),
                reason: message(&error),
            },
        });
    }
    check(&destination_path, Depth::Quick).await
}

/// Writes the new file, by `VACUUM INTO` when the source reads whole, else table by table.
async fn write_new(
    source: &mut SqliteConnection,
    schema: &[SchemaEntry],
    source_path: &Path,
    destination: &Path,
) -> Result<(Method, Vec<TableRecovery>), MaintenanceError> {
    let method = match sqlx::query("VACUUM INTO ?")
        .bind(destination.to_string_lossy().into_owned())
        .execute(&mut *source)
        .await
    {
        Ok(_) => Method::VacuumInto,
        Err(error) => {
            tracing::warn!(error = %message(&error), "VACUUM INTO failed; salvaging table by table");
            // Start the new file again from nothing: what VACUUM INTO wrote before it stopped
            // is not a database to build on.
            let path = destination.to_owned();
            blocking(move || remove_new_file(&path)).await?;
            Method::TableByTable {
                vacuum_error: message(&error),
            }
        }
    };

    // Opening applies the migrations: the current schema on an empty file, or what a copy of
    // an older file lacks; and WAL mode, as the server uses it.
    let db = Db::open_path(destination).await?;
    let result = fill(&db, source, schema, source_path, &method).await;
    // Everything into the file itself: a person moves that one file into place, and rows left
    // in a WAL beside it would stay behind. (Closing does it too, but sqlx finishes closing on
    // threads of its own, after `close` returns; the process may end first.)
    let settled = match result {
        Ok(_) => checkpoint(&db).await,
        Err(_) => Ok(()),
    };
    db.close().await;
    let tables = result?;
    settled?;
    leave_wal_mode(destination).await;
    Ok((method, tables))
}

/// Empties the WAL into the database file; fails if a reader kept part of it there.
async fn checkpoint(db: &Db) -> Result<(), MaintenanceError> {
    let (busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(db.pool())
        .await?;
    if busy != 0 {
        return Err(MaintenanceError::Unreadable {
            path: db.path().to_owned(),
            reason: format!("the WAL could not be emptied into the file ({done} of {log} pages)"),
        });
    }
    Ok(())
}

/// Switches the new file out of WAL mode, so that it is one self-contained file with nothing
/// beside it; the server turns WAL on again when it opens it. Best effort: the file is already
/// complete (checkpointed), and a connection of the closed pool that is still closing keeps
/// the switch from happening, which costs only an empty `-wal` file left beside it.
async fn leave_wal_mode(path: &Path) {
    let switched = async {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(mode)
    };
    match switched.await {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => {}
        Ok(mode) => tracing::debug!(mode, "the new file stays in WAL mode"),
        Err(error) => tracing::debug!(error = %message(&error), "the new file stays in WAL mode"),
    }
}

async fn fill(
    db: &Db,
    source: &mut SqliteConnection,
    schema: &[SchemaEntry],
    source_path: &Path,
    method: &Method,
) -> Result<Vec<TableRecovery>, MaintenanceError> {
    let mut tables = Vec::new();
    match method {
        Method::VacuumInto => {
            for table in COPIED_TABLES {
                let mut saved = TableRecovery::new(table);
                if schema.iter().any(|e| e.kind == "table" && e.name == *table) {
                    saved.in_source = count(&mut *source, "main", table).await;
                }
                let mut conn = db.pool().acquire().await?;
                saved.copied = count(&mut conn, "main", table).await.unwrap_or(0);
                tables.push(saved);
            }
        }
        Method::TableByTable { .. } => {
            let mut conn = db.pool().acquire().await?;
            sqlx::query("ATTACH DATABASE ? AS salvage")
                .bind(read_only_uri(source_path))
                .execute(&mut *conn)
                .await?;
            for table in COPIED_TABLES {
                let mut saved = TableRecovery::new(table);
                if schema.iter().any(|e| e.kind == "table" && e.name == *table) {
                    saved = copy_table(&mut conn, table).await?;
                    if saved.error.is_some() {
                        copy_from_pages(&mut conn, source_path, &mut saved).await?;
                    }
                }
                tables.push(saved);
            }
            copy_sequences(&mut conn).await;
            sqlx::query("DETACH DATABASE salvage")
                .execute(&mut *conn)
                .await?;
            // Accounts from a file older than credential hashes come without one.
            crate::secrets::fill_credential_hashes(&mut conn).await?;
        }
    }
    // From the saved rows, whatever the old rollups said: they may be damaged themselves, and
    // they counted rows that may not have been saved.
    rollups::rebuild_all(db).await?;
    Ok(tables)
}

/// Copies one table from `salvage` into `main`, in rowid ranges; a range that cannot be read
/// is halved until the unreadable rows are found (or the table's budget is spent) and skipped.
async fn copy_table(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<TableRecovery, MaintenanceError> {
    let mut saved = TableRecovery::new(table);
    saved.in_source = count(conn, "salvage", table).await;
    let columns = shared_columns(conn, table).await?;
    let (lo, hi) = match rowid_bounds(conn, table).await {
        Ok(Some(bounds)) => bounds,
        Ok(None) => return Ok(saved),
        Err(reason) => {
            saved.error = Some(reason);
            return Ok(saved);
        }
    };
    let list = columns.join(", ");
    let copy = format!(
        "INSERT INTO main.\"{table}\" ({list}) SELECT {list} FROM salvage.\"{table}\" WHERE"
    );
    // A range scan reads one row past its end to know it is over, so the last row before a
    // bad page is read by itself with a lookup, which stops at its own row.
    let range = format!("{copy} rowid BETWEEN ?1 AND ?2");
    let single = format!("{copy} rowid = ?1");
    let mut budget = NARROWING_BUDGET;
    let mut start = lo;
    loop {
        let end = start.saturating_add(CHUNK - 1).min(hi);
        // Ranges still to copy, the next one on top, so rows go in rowid order.
        let mut pending = vec![(start, end)];
        while let Some((a, b)) = pending.pop() {
            let query = if a == b {
                sqlx::query(&single).bind(a)
            } else {
                sqlx::query(&range).bind(a).bind(b)
            };
            match query.execute(&mut *conn).await {
                Ok(done) => saved.copied += done.rows_affected(),
                Err(error) if code(&error).is_some_and(|c| UNREADABLE_CODES.contains(&c)) => {
                    if saved.error.is_none() {
                        saved.error = Some(message(&error));
                    }
                    if a < b && budget > 0 {
                        budget -= 1;
                        let middle = a + (b - a) / 2;
                        pending.push((middle + 1, b));
                        pending.push((a, middle));
                    } else {
                        skip(&mut saved.skipped, a, b);
                    }
                }
                // The new file refuses to be written (full disk, read-only): stop, rather
                // than count the rows as unreadable.
                Err(error) => return Err(error.into()),
            }
        }
        if end >= hi {
            break;
        }
        // On to the next row that exists: rowids may be scattered (or the highest one read
        // from a damaged page absurd), and stepping through empty ranges could take forever.
        // Where the lookup itself meets the damage, the next range starts right after.
        let next: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(&format!(
            "SELECT min(rowid) FROM salvage.\"{table}\" WHERE rowid > ?1"
        ))
        .bind(end)
        .fetch_one(&mut *conn)
        .await;
        start = match next {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) => end + 1,
        };
    }
    if !saved.skipped.is_empty() {
        tracing::warn!(
            table,
            copied = saved.copied,
            ranges = saved.skipped.len(),
            "rows skipped as unreadable"
        );
    }
    Ok(saved)
}

/// Pages read from the file at a time: 4 MiB at the default page size.
const SCAN_PAGES: u32 = 1_024;

/// Reads the rows of `saved.table` straight from the source file's pages and adds those the
/// copy through SQLite could not reach (a row it did copy has the same rowid and key, and is
/// ignored). Then narrows the skipped ranges to the rowids still missing.
async fn copy_from_pages(
    conn: &mut SqliteConnection,
    source: &Path,
    saved: &mut TableRecovery,
) -> Result<(), MaintenanceError> {
    // The file alone is read: pages newer in the WAL would be missed, or read in an old state.
    let wal = sibling(source, "-wal");
    let wal_bytes = blocking(move || Ok(std::fs::metadata(&wal).map_or(0, |m| m.len()))).await?;
    if wal_bytes > 0 {
        saved.pages_unread = Some(
            "newer pages wait in its WAL (stop the server, which empties it, and run this again)"
                .to_owned(),
        );
        return Ok(());
    }
    let table = saved.table.clone();
    let (columns, names) = shape(conn, &table).await?;
    let new: HashSet<String> = sqlx::query(&format!("PRAGMA main.table_info(\"{table}\")"))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.get::<String, _>("name"))
        .collect();
    let alias = columns.iter().position(|c| c.rowid_alias);

    let path = source.to_owned();
    let mut file = blocking(move || {
        PageFile::open(&path).map_err(|error| MaintenanceError::Unreadable {
            path,
            reason: error.to_string(),
        })
    })
    .await?;
    // One statement per record length: a record written before a column was added lacks it,
    // and the column's default must apply, not NULL.
    let mut statements: HashMap<usize, (String, Vec<usize>)> = HashMap::new();
    let mut found = Vec::new();
    let mut first = 1u32;
    while first <= file.pages() {
        let wanted = columns.clone();
        let (back, rows) = blocking(move || {
            let rows = file.rows(first, SCAN_PAGES, &wanted);
            Ok((file, rows))
        })
        .await?;
        file = back;
        let rows = rows.map_err(|error| MaintenanceError::Unreadable {
            path: source.to_owned(),
            reason: error.to_string(),
        })?;
        first = first.saturating_add(SCAN_PAGES);
        if rows.is_empty() {
            continue;
        }
        let mut tx = conn.begin().await?;
        for row in rows {
            let (sql, indexes) = statements
                .entry(row.values.len())
                .or_insert_with(|| insert_statement(&table, &names, row.values.len(), &new, alias));
            let mut query = sqlx::query(sql.as_str());
            if alias.is_none() {
                query = query.bind(row.rowid);
            }
            for &i in indexes.iter() {
                let value = if Some(i) == alias {
                    Value::Integer(row.rowid)
                } else {
                    row.values[i].clone()
                };
                query = bind(query, value);
            }
            match query.execute(&mut *tx).await {
                Ok(done) if done.rows_affected() > 0 => found.push(row.rowid),
                Ok(_) => {}
                // A damaged row the schema refuses: skipped, as the reads through SQLite do.
                Err(error) if code(&error) == Some(SQLITE_CONSTRAINT) => {}
                Err(error) => return Err(error.into()),
            }
        }
        tx.commit().await?;
    }
    saved.from_pages = found.len() as u64;
    saved.copied += saved.from_pages;
    found.sort_unstable();
    saved.skipped = still_missing(&saved.skipped, &found);
    if saved.from_pages > 0 {
        tracing::warn!(
            table = %saved.table,
            rows = saved.from_pages,
            "rows read straight from the file's pages"
        );
    }
    Ok(())
}

/// The old table's columns as records store them, and their names.
async fn shape(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<(Vec<Column>, Vec<String>), MaintenanceError> {
    let info = sqlx::query(&format!("PRAGMA salvage.table_info(\"{table}\")"))
        .fetch_all(&mut *conn)
        .await?;
    let keys = info.iter().filter(|r| r.get::<i64, _>("pk") > 0).count();
    let mut columns = Vec::new();
    let mut names = Vec::new();
    for row in &info {
        let declared: String = row.get("type");
        columns.push(Column {
            affinity: Affinity::of(&declared),
            not_null: row.get::<i64, _>("notnull") != 0,
            has_default: row.get::<Option<String>, _>("dflt_value").is_some(),
            rowid_alias: keys == 1
                && row.get::<i64, _>("pk") == 1
                && declared.eq_ignore_ascii_case("integer"),
        });
        names.push(row.get::<String, _>("name"));
    }
    Ok((columns, names))
}

/// `INSERT OR IGNORE` of a record with `length` values into the new table, and which of the
/// record's values it takes (those whose column the new table has).
fn insert_statement(
    table: &str,
    names: &[String],
    length: usize,
    new: &HashSet<String>,
    alias: Option<usize>,
) -> (String, Vec<usize>) {
    let indexes: Vec<usize> = (0..length).filter(|i| new.contains(&names[*i])).collect();
    let mut list: Vec<String> = indexes
        .iter()
        .map(|i| format!("\"{}\"", names[*i].replace('"', "\"\"")))
        .collect();
    if alias.is_none() {
        list.insert(0, "rowid".to_owned());
    }
    let marks = vec!["?"; list.len()].join(", ");
    let sql = format!(
        "INSERT OR IGNORE INTO main.\"{table}\" ({}) VALUES ({marks})",
        list.join(", ")
    );
    (sql, indexes)
}

fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>>,
    value: Value,
) -> sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>> {
    match value {
        Value::Null => query.bind(None::<i64>),
        Value::Integer(n) => query.bind(n),
        Value::Real(x) => query.bind(x),
        Value::Text(text) => query.bind(text),
        Value::Blob(bytes) => query.bind(bytes),
    }
}

/// The parts of the skipped ranges not covered by the (sorted) rowids found since.
fn still_missing(skipped: &[(i64, i64)], found: &[i64]) -> Vec<(i64, i64)> {
    let mut missing = Vec::new();
    for &(a, b) in skipped {
        let mut next = a;
        let start = found.partition_point(|&r| r < a);
        for &rowid in found[start..].iter().take_while(|&&r| r <= b) {
            if rowid > next {
                skip(&mut missing, next, rowid - 1);
            }
            match rowid.checked_add(1) {
                Some(after) => next = after,
                // i64::MAX was found: nothing can be missing after it.
                None => return missing,
            }
        }
        if next <= b {
            skip(&mut missing, next, b);
        }
    }
    missing
}

/// Adds a skipped range, joining it to the previous one when they touch.
fn skip(skipped: &mut Vec<(i64, i64)>, a: i64, b: i64) {
    match skipped.last_mut() {
        Some(last) if last.1.checked_add(1) == Some(a) => last.1 = b,
        _ => skipped.push((a, b)),
    }
}

/// The columns both copies of `table` have, in the new file's order, quoted; and the rowid
/// itself for a table whose rowid is not a column, so request rows keep their order.
async fn shared_columns(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<String>, MaintenanceError> {
    let info = |schema: &str| format!("PRAGMA {schema}.table_info(\"{table}\")");
    let new = sqlx::query(&info("main")).fetch_all(&mut *conn).await?;
    let old: Vec<String> = sqlx::query(&info("salvage"))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.get::<String, _>("name"))
        .collect();
    let mut columns = Vec::new();
    let mut integer_key = false;
    for row in &new {
        let name: String = row.get("name");
        let kind: String = row.get("type");
        let pk: i64 = row.get("pk");
        // A lone INTEGER PRIMARY KEY is the rowid under another name.
        if pk == 1 && kind.eq_ignore_ascii_case("integer") {
            integer_key = new.iter().filter(|r| r.get::<i64, _>("pk") > 0).count() == 1;
        }
        if old.contains(&name) {
            columns.push(format!("\"{}\"", name.replace('"', "\"\"")));
        }
    }
    if !integer_key {
        columns.insert(0, "rowid".to_owned());
    }
    Ok(columns)
}

/// The smallest and largest rowid of the old table: from the table itself, else from any of
/// its indexes (which hold every rowid on pages of their own). `Ok(None)` for an empty table.
async fn rowid_bounds(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Option<(i64, i64)>, String> {
    let bound = |function: &str, indexed: Option<&str>| {
        let indexed = indexed.map_or(String::new(), |index| format!(" INDEXED BY \"{index}\""));
        format!("SELECT {function}(rowid) FROM salvage.\"{table}\"{indexed}")
    };
    let mut first_error = None;
    let mut ends = [None, None];
    for (slot, function) in ["min", "max"].into_iter().enumerate() {
        match sqlx::query_scalar::<_, Option<i64>>(&bound(function, None))
            .fetch_one(&mut *conn)
            .await
        {
            Ok(None) => return Ok(None),
            Ok(value) => ends[slot] = value,
            Err(error) => {
                first_error.get_or_insert_with(|| message(&error));
            }
        }
    }
    if ends.iter().any(Option::is_none) {
        let indexes: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT name FROM pragma_index_list('{table}', 'salvage')"
        ))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
        for index in &indexes {
            for (slot, function) in ["min", "max"].into_iter().enumerate() {
                if ends[slot].is_none()
                    && let Ok(value) =
                        sqlx::query_scalar::<_, Option<i64>>(&bound(function, Some(index)))
                            .fetch_one(&mut *conn)
                            .await
                {
                    ends[slot] = value;
                }
            }
        }
    }
    match ends {
        [Some(lo), Some(hi)] => Ok(Some((lo, hi))),
        _ => Err(format!(
            "neither the table nor its indexes can be read: {}",
            first_error.unwrap_or_default()
        )),
    }
}

/// Carries each table's AUTOINCREMENT high-water mark over, so that an account added later
/// does not take the id of a removed one (whose requests still name it). Best effort: a
/// damaged sequence costs only that.
async fn copy_sequences(conn: &mut SqliteConnection) {
    for table in COPIED_TABLES {
        let result = sqlx::raw_sql(&format!(
            "UPDATE main.sqlite_sequence SET seq = max(seq, coalesce((SELECT max(seq) FROM \
             salvage.sqlite_sequence WHERE name = '{table}'), 0)) WHERE name = '{table}'; \
             INSERT INTO main.sqlite_sequence (name, seq) SELECT name, max(seq) FROM \
             salvage.sqlite_sequence WHERE name = '{table}' AND NOT EXISTS \
             (SELECT 1 FROM main.sqlite_sequence WHERE name = '{table}') GROUP BY name;"
        ))
        .execute(&mut *conn)
        .await;
        if let Err(error) = result
            && !message(&error).contains("no such table")
        {
            tracing::warn!(table, error = %message(&error), "AUTOINCREMENT sequence not copied");
        }
    }
}

/// `count(*)` of a table, or `None` when it cannot be read.
async fn count(conn: &mut SqliteConnection, schema: &str, table: &str) -> Option<u64> {
    sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {schema}.\"{table}\""))
        .fetch_one(conn)
        .await
        .ok()
        .map(|n| n.max(0) as u64)
}

/// One row of `sqlite_master`.
#[derive(Debug)]
struct SchemaEntry {
    kind: String,
    name: String,
    root_page: i64,
}

/// The file's list of tables and indexes. The first read of a file: a file that is not a
/// database fails here (SQLITE_NOTADB), one whose first page is damaged too.
async fn schema(conn: &mut SqliteConnection) -> Result<Vec<SchemaEntry>, sqlx::Error> {
    let rows = sqlx::query("SELECT type, name, coalesce(rootpage, 0) AS root FROM sqlite_master")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(SchemaEntry {
                kind: row.try_get("type")?,
                name: row.try_get("name")?,
                root_page: row.try_get("root")?,
            })
        })
        .collect()
}

async fn pragma_number(conn: &mut SqliteConnection, pragma: &str) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(&format!("PRAGMA {pragma}"))
        .fetch_one(conn)
        .await
        .ok()
}

/// A read-only connection to an existing file: SQLite creates nothing (at most the WAL's
/// shared-memory index beside a WAL database, as any reader does) and writes nothing.
async fn open_read_only(path: &Path) -> Result<SqliteConnection, MaintenanceError> {
    let owned = path.to_owned();
    let metadata = blocking(move || Ok(std::fs::metadata(&owned))).await?;
    match metadata {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => {
            return Err(MaintenanceError::Unreadable {
                path: path.to_owned(),
                reason: "not a file".to_owned(),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(MaintenanceError::Missing {
                path: path.to_owned(),
            });
        }
        Err(error) => {
            return Err(MaintenanceError::Unreadable {
                path: path.to_owned(),
                reason: error.to_string(),
            });
        }
    }
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(|error| match code(&error) {
            Some(SQLITE_NOTADB) => MaintenanceError::NotADatabase {
                path: path.to_owned(),
            },
            _ => MaintenanceError::Unreadable {
                path: path.to_owned(),
                reason: message(&error),
            },
        })
}

/// An SQLite URI that opens `path` read-only (for ATTACH): `%`, `?` and `#` are escaped, the
/// only characters of a path a URI reads otherwise.
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// Resolves both paths and refuses what recover must never do: read a file that is not there,
/// write over the source, or write over (or beside the leftover WAL of) any existing file.
fn prepare_paths(
    source: &Path,
    destination: &Path,
) -> Result<(PathBuf, PathBuf), MaintenanceError> {
    let source_path = std::fs::canonicalize(source).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            MaintenanceError::Missing {
                path: source.to_owned(),
            }
        } else {
            MaintenanceError::Unreadable {
                path: source.to_owned(),
                reason: error.to_string(),
            }
        }
    })?;
    if let Ok(existing) = std::fs::canonicalize(destination) {
        return Err(if existing == source_path {
            MaintenanceError::SameFile {
                path: destination.to_owned(),
            }
        } else {
            MaintenanceError::DestinationExists {
                path: destination.to_owned(),
            }
        });
    }
    let create_error = |source: std::io::Error| MaintenanceError::Create {
        path: destination.to_owned(),
        source,
    };
    let absolute = std::path::absolute(destination).map_err(create_error)?;
    let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(create_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let destination_path = std::fs::canonicalize(parent)
        .map_err(create_error)?
        .join(name);
    if destination_path == source_path {
        return Err(MaintenanceError::SameFile {
            path: destination.to_owned(),
        });
    }
    // SQLite would read a leftover WAL beside the new file as part of it.
    for suffix in ["-wal", "-shm", "-journal"] {
        let beside = sibling(&destination_path, suffix);
        if beside.exists() {
            return Err(MaintenanceError::DestinationExists { path: beside });
        }
    }
    Ok((source_path, destination_path))
}

/// Creates an empty file only its owner can read (it will hold keys), failing if one exists.
fn create_private_new(path: &Path) -> Result<(), MaintenanceError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(MaintenanceError::DestinationExists {
                path: path.to_owned(),
            })
        }
        Err(source) => Err(MaintenanceError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes the new file and what SQLite kept beside it; `prepare_paths` made sure none of them
/// existed before, so they are all ours.
fn remove_new_file(path: &Path) -> Result<(), MaintenanceError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = sibling(path, suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(MaintenanceError::Create { path: file, source }),
        }
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Runs file-system work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MaintenanceError> + Send + 'static,
) -> Result<T, MaintenanceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| MaintenanceError::Create {
            path: PathBuf::new(),
            source: std::io::Error::other(error),
        })?
}

/// SQLite's primary result code of a database error.
fn code(error: &sqlx::Error) -> Option<i32> {
    match error {
        sqlx::Error::Database(db) => Some(crate::db::primary_code(db.as_ref())),
        _ => None,
    }
}

/// SQLite's own message, without sqlx's wrapping ("error returned from database: (code: 11)").
fn message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_skipped_ranges_join() {
        let mut skipped = Vec::new();
        skip(&mut skipped, 5, 5);
        skip(&mut skipped, 6, 9);
        skip(&mut skipped, 12, 12);
        assert_eq!(skipped, vec![(5, 9), (12, 12)]);
    }

    #[test]
    fn rows_found_later_narrow_the_skipped_ranges() {
        let skipped = [(1, 10), (20, 22)];
        assert_eq!(
            still_missing(&skipped, &[1, 2, 3, 5, 10, 15, 20, 21, 22]),
            vec![(4, 4), (6, 9)]
        );
        assert_eq!(still_missing(&skipped, &[]), skipped.to_vec());
    }

    #[test]
    fn uris_escape_what_sqlite_would_read_as_query() {
        assert_eq!(
            read_only_uri(Path::new("/data/a?b#c%d.db")),
            "file:/data/a%3fb%23c%25d.db?mode=ro"
        );
    }

    #[test]
    fn damaged_trees_are_named() {
        let entry = SchemaEntry {
            kind: "table".into(),
            name: "requests".into(),
            root_page: 5,
        };
        let names = HashMap::from([(5, &entry)]);
        assert_eq!(
            name_tree(
                "Tree 5 page 9: btreeInitPage() returns error code 11",
                &names
            ),
            "Tree 5 (table requests) page 9: btreeInitPage() returns error code 11"
        );
        assert_eq!(name_tree("Tree 7 page 2: x", &names), "Tree 7 page 2: x");
        assert_eq!(
            name_tree("Page 4: never used", &names),
            "Page 4: never used"
        );
    }
}
