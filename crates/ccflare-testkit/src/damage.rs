//! Real damage to a real SQLite file, for the tests of what ccflare does with one: finding a
//! table's pages (SQLite's `dbstat` table), reading which rows a leaf page holds (from the file
//! itself, in SQLite's documented page format), overwriting a page with garbage, as a failing
//! disk or a stray write would, and reading what a file holds with plain SQL, read-only. The
//! database must be closed first (its `-wal` file checkpointed and gone), or SQLite would read
//! the page's newer copy from the WAL instead.

use sqlx::{ConnectOptions, Connection, Row};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Moves everything in the WAL into the database file and empties the WAL, so that the file
/// alone holds every page. (Closing the last connection does it too, but sqlx finishes closing
/// on a thread of its own after `close` returns.)
pub async fn checkpoint(path: &Path) {
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("the database opens");
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut connection)
        .await
        .expect("checkpoint");
    assert_eq!(busy, 0, "a reader kept the checkpoint from finishing");
    connection.close().await.expect("close");
}

/// The leaf pages of `table`'s b-tree, in key (rowid) order.
pub async fn leaf_pages(path: &Path, table: &str) -> Vec<u32> {
    let mut connection = read_only(path).await;
    let pages: Vec<i64> = sqlx::query_scalar(
        "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
    )
    .bind(table)
    .fetch_all(&mut connection)
    .await
    .expect("dbstat reads");
    connection.close().await.expect("close");
    pages.into_iter().map(|p| p as u32).collect()
}

/// The root page of a table or index.
pub async fn root_page(path: &Path, name: &str) -> u32 {
    let mut connection = read_only(path).await;
    let root: i64 = sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = ?")
        .bind(name)
        .fetch_one(&mut connection)
        .await
        .expect("the table exists");
    connection.close().await.expect("close");
    root as u32
}

/// The rowids of the cells on a leaf page of a table b-tree, read from the file.
pub fn rowids_on_leaf(path: &Path, page: u32) -> Vec<i64> {
    let bytes = read_page(path, page);
    // Page 1 starts with the 100-byte file header; every other page with its own header.
    let header = if page == 1 { 100 } else { 0 };
    assert_eq!(bytes[header], 0x0d, "page {page} is not a table leaf");
    let cells = u16::from_be_bytes([bytes[header + 3], bytes[header + 4]]) as usize;
    (0..cells)
        .map(|i| {
            let at = header + 8 + 2 * i;
            let mut offset = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
            let _payload = varint(&bytes, &mut offset);
            varint(&bytes, &mut offset)
        })
        .collect()
}

/// Overwrites page `page` (numbered from 1) with bytes that no SQLite page starts with.
pub fn overwrite_page(path: &Path, page: u32) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "close the database first: its WAL would hide the damage"
    );
    let size = page_size(path);
    let garbage: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(7) ^ 0xa5)
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("database opens for writing");
    file.seek(SeekFrom::Start(u64::from(page - 1) * size as u64))
        .expect("seek");
    file.write_all(&garbage).expect("write");
    file.sync_all().expect("sync");
}

/// A file of `len` bytes that is not a database (no SQLite header).
pub fn garbage_file(path: &Path, len: usize) {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    std::fs::write(path, bytes).expect("write garbage");
}

/// The page size from the file header (bytes 16-17, big-endian; 1 means 65,536).
pub fn page_size(path: &Path) -> usize {
    let mut header = [0u8; 100];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .expect("database header");
    match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size => usize::from(size),
    }
}

fn read_page(path: &Path, page: u32) -> Vec<u8> {
    let size = page_size(path);
    let mut file = std::fs::File::open(path).expect("database opens");
    file.seek(SeekFrom::Start(u64::from(page - 1) * size as u64))
        .expect("seek");
    let mut bytes = vec![0; size];
    file.read_exact(&mut bytes).expect("read page");
    bytes
}

/// SQLite's variable-length integer: up to 9 bytes, big-endian, 7 bits each but the ninth.
fn varint(bytes: &[u8], offset: &mut usize) -> i64 {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = bytes[*offset];
        *offset += 1;
        if i == 8 {
            value = (value << 8) | u64::from(byte);
            break;
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            break;
        }
    }
    value as i64
}

/// Every row `sql` returns, each value as text (NULL as ""), read on a read-only connection.
pub async fn select(path: &Path, sql: &str) -> Vec<Vec<String>> {
    let mut connection = read_only(path).await;
    let rows = sqlx::query(sql)
        .fetch_all(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    connection.close().await.expect("close");
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let value = row.try_get_raw(i).expect("column");
                    <String as sqlx::Decode<sqlx::Sqlite>>::decode(value).unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

async fn read_only(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .expect("the database opens")
}

/// Damages the database at `path` the way the operator did: the root page of `table`
/// overwritten with garbage, after the WAL is moved into the file. Close every other
/// connection first. The schema (page 1) stays intact, so the database still opens; reading or
/// writing `table` fails with SQLITE_CORRUPT ("database disk image is malformed").
pub async fn damage_table(path: &Path, table: &str) {
    checkpoint(path).await;
    let root = root_page(path, table).await;
    assert!(root > 1, "{table} has a page of its own");
    overwrite_page(path, root);
}
