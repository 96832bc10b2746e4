//! Real faults for the tests that prove nothing is lost when the disk misbehaves: files made
//! immutable (`chattr +i`, what a read-only file or a failing disk looks like to SQLite), and a
//! database page overwritten with garbage (a damaged file).
//!
//! Immutable files need root. CI runs as root, so there a test that is not root fails; a
//! developer who runs the suite as another user is told the test could not run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process is root. When not, outside CI the test says it cannot run and the
/// caller returns; in CI (`CI` set) the test fails: the faults must be exercised there.
pub fn have_root(test: &str) -> bool {
    let root = is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root (CI runs as root)"
        );
        eprintln!("{test}: not run, it needs root");
    }
    root
}

fn is_root() -> bool {
    // `id -u` rather than libc: the testkit has no unsafe code and no libc dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Files made immutable (`chattr +i`): nothing can write them, not even root, not even
/// through a descriptor opened before. Made writable again when dropped, so a failing test
/// leaves nothing behind that its temp dir cannot delete.
pub struct Immutable(Vec<PathBuf>);

impl Immutable {
    pub fn make(paths: &[&Path]) -> Immutable {
        let immutable = Immutable(paths.iter().map(|p| p.to_path_buf()).collect());
        for path in &immutable.0 {
            chattr("+i", path);
        }
        immutable
    }

    /// Makes the files writable again.
    pub fn undo(self) {}
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            chattr("-i", path);
        }
    }
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("chattr runs (package e2fsprogs)");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

/// Damages the database at `path` for real: overwrites the root page of `table` with bytes no
/// b-tree page holds, after moving everything from the WAL into the file. Close every other
/// connection first. The schema (page 1) stays intact, so the database still opens; reading
/// or writing `table` fails with SQLITE_CORRUPT ("database disk image is malformed").
pub async fn damage_table(path: &Path, table: &str) {
    use sqlx::Connection;
    use std::io::{Seek, SeekFrom, Write};
    let url = format!("sqlite://{}", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("the database opens");
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let root: i64 = sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = ?")
        .bind(table)
        .fetch_one(&mut connection)
        .await
        .expect("the table exists");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    assert!(root > 1, "{table} has a page of its own");
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
        .unwrap();
    file.write_all(&vec![0xA5; page_size as usize]).unwrap();
    file.sync_all().unwrap();
}
