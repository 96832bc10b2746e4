//! Real faults for the tests that prove nothing is lost when the disk misbehaves: files made
//! immutable (`chattr +i`, what a read-only file or a failing disk looks like to SQLite). A
//! damaged database file is [`crate::damage`]'s.
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
