//! The files in `deploy/` read by the real tools that will read them (issue 14): the systemd
//! unit by `systemd-analyze`, the nginx site by nginx in front of a real `ccflare-server`, and
//! the Dockerfile and compose file (no Docker daemon here) checked for what matters. A tool
//! that is missing skips its test locally and fails it when `CI` is set (`.ci/run` installs
//! them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `deploy/<path>` in the workspace.
fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_file(path)).expect("the deploy file exists")
}

/// Whether `tool` runs; when it does not, the test passes locally and fails under CI.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing and CI is set: .ci/run installs it"
        );
        eprintln!("{tool} is not installed: skipped");
    }
    found
}

/// The unit as shipped, with `ExecStart` pointing at the binary under test (verify checks that
/// the executable exists), in a directory of its own.
fn unit_under_test() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let unit = read("systemd/ccflare.service").replace(
        "ExecStart=/usr/local/bin/ccflare-server",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_ccflare-server")),
    );
    let path = dir.path().join("ccflare.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

/// The value of `Key=` in a unit (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// Seconds in a systemd time span such as `90s` or `90`.
fn seconds(span: &str) -> u64 {
    span.trim_end_matches('s')
        .parse()
        .expect("a span in seconds")
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let (_dir, unit) = unit_under_test();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("ccflare.service"),
        "verify complains about the unit: {stderr}"
    );
}

#[test]
fn the_systemd_unit_is_hardened_to_an_exposure_of_at_most_2() {
    if !have("systemd-analyze") {
        return;
    }
    let (_dir, unit) = unit_under_test();
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ccflare.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{stdout}");
}

#[test]
fn the_systemd_unit_waits_for_readiness_and_for_the_drain() {
    let unit = read("systemd/ccflare.service");
    assert_eq!(unit_value(&unit, "Type"), Some("notify"));
    assert_eq!(unit_value(&unit, "Restart"), Some("on-failure"));
    assert_eq!(unit_value(&unit, "DynamicUser"), Some("yes"));
    assert_eq!(unit_value(&unit, "StateDirectoryMode"), Some("0700"));
    assert_eq!(unit_value(&unit, "UMask"), Some("0077"));
    // The stop must outlast the drain (shutdown timeout), the records' flush (as long again,
    // at least 10 s) and the OAuth tokens' save (6 s), or systemd kills a clean shutdown.
    let drain: u64 = unit
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Environment=CCFLARE_SHUTDOWN_TIMEOUT=")
        })
        .expect("the unit sets the drain deadline")
        .parse()
        .unwrap();
    let stop = seconds(unit_value(&unit, "TimeoutStopSec").unwrap());
    assert!(
        stop > drain + drain.max(10) + 6,
        "TimeoutStopSec={stop}s, drain {drain}s"
    );
    let files: u64 = unit_value(&unit, "LimitNOFILE").unwrap().parse().unwrap();
    assert!(files >= 65_536);
    // Secrets as credentials, never in the environment.
    assert!(unit.contains("LoadCredential=admin_key:"));
    assert!(!unit.contains("CCFLARE_ADMIN_KEY="));
    assert!(!unit.contains("CLAUDE_API_KEYS="));
}
