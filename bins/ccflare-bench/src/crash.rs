//! The crash (issue 9): SIGKILL to the release `ccflare-server` in the middle of an open-loop
//! burst of JSON requests and streams, alternating, against a server of its own. The client
//! side notes, for every answer that completed, its `x-ccflare-request-id` and the instant it
//! completed. After the kill the database must pass `PRAGMA integrity_check`, and every answer
//! that completed more than 100 ms before the kill must have its row: the writer commits within
//! milliseconds of its linger (25 ms, 50 at most; SQLite's WAL with `synchronous = NORMAL`,
//! which a process crash cannot undo), so only the records still in memory, of the last
//! moments, may be lost.
//! The missing rows are split by how long before the kill their answer completed. Then the
//! server is started once more on the same database and must serve a request and record it.
//!
//! The 100 ms is a timing claim, so it is judged only here, on a release build; the test suite
//! holds the rest (`bins/ccflare-server/tests/faults.rs`, the burst at a rate a debug build
//! serves) without timing. A smoke run reports the buckets without judging them.

use crate::load;
use crate::report::{Check, SCENARIO_WORDS, ScenarioReport, checks_table};
use crate::scenarios::{Bench, CLIENT_KEY, Shape, mix_at, spec_at};
use crate::server::{self, Server};
use anyhow::{Context, Result};
use ccflare_storage::maintenance::{self, Depth};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

/// The standard burst: the rate issue 9 names, killed 3 s in.
pub const STANDARD_RATE: f64 = 300.0;
pub const STANDARD_KILL_AFTER: Duration = Duration::from_secs(3);

/// The schedule goes on this long past the kill, so that the kill falls in the middle of the
/// burst (requests in flight, new ones arriving), not after its last request.
const TAIL: Duration = Duration::from_millis(500);

/// Answers that completed at most this long before the kill may lack their row.
const GRACE: Duration = Duration::from_millis(100);
/// The bucket after it, to show how far back losses reach, if any.
const NEAR: Duration = Duration::from_millis(500);

/// Indexes into the mix's specs: JSON and streams alternating.
const JSON: usize = 0;
const STREAM: usize = 1;

/// Answers, and the answers without a row, by how long before the kill they completed.
#[derive(Debug, Default, Serialize)]
pub struct Buckets {
    /// At most 100 ms before the kill (or after it: bytes already on their way).
    pub within_100ms: u64,
    pub from_100_to_500ms: u64,
    pub over_500ms: u64,
}

impl Buckets {
    fn add(&mut self, before_kill: Duration) {
        if before_kill <= GRACE {
            self.within_100ms += 1;
        } else if before_kill <= NEAR {
            self.from_100_to_500ms += 1;
        } else {
            self.over_500ms += 1;
        }
    }

    fn total(&self) -> u64 {
        self.within_100ms + self.from_100_to_500ms + self.over_500ms
    }
}

/// What the crash found.
#[derive(Debug, Serialize)]
pub struct CrashReport {
    pub rate: f64,
    /// Seconds into the burst the server was killed.
    pub kill_after_s: f64,
    /// Requests the schedule had started by the kill (rate × kill_after).
    pub scheduled_before_kill: u64,
    pub sent: u64,
    pub json: u64,
    pub streams: u64,
    /// Answers that completed in full with a request id.
    pub answered: u64,
    /// Requests that failed (cut by the kill, or refused once the server was gone).
    pub not_answered: u64,
    pub answered_by_time: Buckets,
    /// Rows in the database after the kill, before the restart.
    pub rows: u64,
    pub rows_missing: Buckets,
    /// `PRAGMA integrity_check`, read-only, on the database as the kill left it.
    pub integrity_ok: bool,
    pub integrity_problems: Vec<String>,
    /// The server started again on that database, served one request and recorded it.
    pub restarted: bool,
    pub restart_request_ok: bool,
    pub restart_exit_code: Option<i32>,
    /// Answered requests without a row after the restart (its start may replay what the
    /// first server left), and the rows then.
    pub missing_after_restart: u64,
    pub rows_after_restart: u64,
    pub checks: Vec<Check>,
    pub passed: bool,
}

/// The crash server's API keys: its own, so nothing another scenario queued on the mock for
/// its keys reaches it.
fn crash_keys() -> Vec<String> {
    ["crsa", "crsb"]
        .iter()
        .map(|tail| format!("sk-ant-api03-crash-0123456789abcdefghijklmnop-{tail}"))
        .collect()
}

/// Runs the crash; its summary goes in the scenario list, the rest in `bench.crash`.
pub async fn run(bench: &mut Bench) -> Result<ScenarioReport> {
    let binary = bench.server_bin.clone().context(
        "the crash kills a ccflare-server of its own, so it cannot use a proxy given with \
         --proxy-url",
    )?;
    let rate = bench.plan.crash_rate;
    let kill_after = bench.plan.crash_kill_after;
    let keys = crash_keys();
    let mut server = Server::start(&binary, &bench.mock_url, &keys).await?;
    let plan = format!("{rate} req/s, SIGKILL after {} s", kill_after.as_secs_f64());
    server.announce_and_settle("crash server", &plan).await;
    let mix = mix_at(
        &server.url,
        &[Shape::Json, Shape::Stream],
        vec![JSON, STREAM],
    )?;
    let count = ((kill_after + TAIL).as_secs_f64() * rate).round().max(1.0) as u64;
    let connections = bench.plan.connections;
    let client = load::client(connections);
    // The generator's schedule starts a few milliseconds after this; the kill is timed from it.
    let kill_at = tokio::time::Instant::now() + kill_after;
    let burst = load::open_loop_mix(&client, &mix, rate, count, connections, bench.max_in_flight);
    let killer = async {
        tokio::time::sleep_until(kill_at).await;
        server.kill().await
    };
    let (data, killed_at) = tokio::join!(burst, killer);
    let killed_at = killed_at?;

    let answered: Vec<(&str, Duration)> = data
        .samples
        .iter()
        .filter(|s| s.error.is_none())
        .filter_map(|s| {
            let id = s.request_id.as_deref()?;
            Some((id, killed_at.saturating_duration_since(s.ended)))
        })
        .collect();
    let ids: Vec<String> = answered.iter().map(|(id, _)| (*id).to_owned()).collect();
    let mut answered_by_time = Buckets::default();
    for (_, before) in &answered {
        answered_by_time.add(*before);
    }

    // The database as the kill left it: checked read-only (as `ccflare-cli db check --full`
    // does), then counted on a copy, so that the restart below meets the crash's WAL itself.
    let db_path = server.db_path().to_owned();
    let integrity = maintenance::check(&db_path, Depth::Full)
        .await
        .context("checking the database after the kill")?;
    let copy_dir = server.dir().join("after-kill");
    std::fs::create_dir_all(&copy_dir).context("creating the copy's folder")?;
    let copy = copy_dir.join("bench.db");
    std::fs::copy(&db_path, &copy).context("copying the database")?;
    let wal = db_path.with_extension("db-wal");
    if wal.is_file() {
        std::fs::copy(&wal, copy.with_extension("db-wal")).context("copying the WAL")?;
    }
    let records = server::count_rows(&copy, &ids, None).await?;
    let missing: HashSet<&str> = records.missing.iter().map(String::as_str).collect();
    let mut rows_missing = Buckets::default();
    for (id, before) in &answered {
        if missing.contains(id) {
            rows_missing.add(*before);
        }
    }

    // Once more on the same database: it must start, serve and record.
    let (restarted, restart_request_ok, restart_exit_code, after) = match server
        .restart(&binary, &bench.mock_url, &keys, "server-restart.log")
        .await
    {
        Ok(again) => {
            let spec = spec_at(&again.url, CLIENT_KEY, Shape::Json)?;
            let one = load::open_loop(&client, &spec, 1.0, 1, 1, 1).await;
            let id = one
                .samples
                .first()
                .filter(|s| s.error.is_none())
                .and_then(|s| s.request_id.clone());
            let mut all = ids.clone();
            all.extend(id.clone());
            let after = again.stop_and_count(&all).await?;
            // Answered, and its row is there.
            let ok = id.is_some_and(|id| !after.missing.contains(&id));
            (true, ok, after.exit_code, Some(after))
        }
        Err(error) => {
            eprintln!("ccflare-bench: the restart after the kill failed: {error:#}");
            (false, false, None, None)
        }
    };

    let sent = data.sent();
    let scheduled_before_kill = (kill_after.as_secs_f64() * rate).round() as u64;
    let judged = !bench.plan.smoke;
    let checks = vec![
        Check {
            target: "the database is intact after SIGKILL (PRAGMA integrity_check = ok)".into(),
            measured: if integrity.ok() {
                "ok".to_owned()
            } else {
                integrity.problems.join("; ")
            },
            met: Some(integrity.ok()),
        },
        Check {
            target: "every answer completed > 100 ms before the kill has its row".into(),
            measured: format!(
                "{} answered; rows missing: {} ≤ 100 ms, {} 100–500 ms, {} > 500 ms before the \
                 kill{}",
                answered.len(),
                rows_missing.within_100ms,
                rows_missing.from_100_to_500ms,
                rows_missing.over_500ms,
                if judged {
                    ""
                } else {
                    " (smoke: not judged, it is a timing claim)"
                }
            ),
            met: judged.then_some(
                !answered.is_empty()
                    && rows_missing.from_100_to_500ms == 0
                    && rows_missing.over_500ms == 0,
            ),
        },
        Check {
            target: "the server restarts on that database, serves a request, records it and \
                     exits 0"
                .into(),
            measured: format!(
                "started: {restarted}, request answered and recorded: {restart_request_ok}, \
                 exit code {}",
                restart_exit_code.map_or_else(|| "none".to_owned(), |c| c.to_string())
            ),
            met: Some(restarted && restart_request_ok && restart_exit_code == Some(0)),
        },
    ];
    let passed = checks.iter().all(|c| c.met != Some(false));
    let crash = CrashReport {
        rate,
        kill_after_s: kill_after.as_secs_f64(),
        scheduled_before_kill,
        sent,
        json: mix.count_of(JSON, sent),
        streams: mix.count_of(STREAM, sent),
        answered: answered.len() as u64,
        not_answered: sent - answered.len() as u64,
        answered_by_time,
        rows: records.rows,
        rows_missing,
        integrity_ok: integrity.ok(),
        integrity_problems: integrity.problems,
        restarted,
        restart_request_ok,
        restart_exit_code,
        missing_after_restart: after.as_ref().map_or(0, |a| a.missing_ids),
        rows_after_restart: after.as_ref().map_or(0, |a| a.rows),
        checks,
        passed,
    };
    let mut report = ScenarioReport::new(
        "crash",
        format!(
            "{rate} req/s open loop, JSON and streams alternating, against a server of its own; \
             SIGKILL {} s in (after ~{scheduled_before_kill} requests), the schedule going on \
             {} ms past it; then integrity_check, rows by how long before the kill each answer \
             completed, and one restart on the same database",
            kill_after.as_secs_f64(),
            TAIL.as_millis()
        ),
        None,
        Some(data.summary()),
        None,
    );
    report.notes.push(format!(
        "{}: {} answered, {} rows; missing {} / {} / {} (≤ 100 ms / 100–500 ms / > 500 ms \
         before the kill); integrity {}",
        if crash.passed { "passed" } else { "FAILED" },
        crash.answered,
        crash.rows,
        crash.rows_missing.within_100ms,
        crash.rows_missing.from_100_to_500ms,
        crash.rows_missing.over_500ms,
        if crash.integrity_ok { "ok" } else { "FAILED" }
    ));
    bench.crash = Some(crash);
    Ok(report)
}

impl CrashReport {
    /// The crash's section of `bench.md`.
    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Crash (kill -9)\n");
        let _ = writeln!(
            out,
            "{} req/s ({} JSON, {} streams sent), SIGKILL {} s in (~{} requests scheduled by \
             then). **{}**.\n",
            self.rate,
            self.json,
            self.streams,
            self.kill_after_s,
            self.scheduled_before_kill,
            if self.passed { "Passed" } else { "Failed" }
        );
        let _ = writeln!(
            out,
            "| answer completed before the kill | answered | rows missing |"
        );
        let _ = writeln!(out, "|---|---|---|");
        let a = &self.answered_by_time;
        let m = &self.rows_missing;
        for (label, answered, missing) in [
            ("≤ 100 ms (or after)", a.within_100ms, m.within_100ms),
            ("100–500 ms", a.from_100_to_500ms, m.from_100_to_500ms),
            ("> 500 ms", a.over_500ms, m.over_500ms),
            ("all", a.total(), m.total()),
        ] {
            let _ = writeln!(out, "| {label} | {answered} | {missing} |");
        }
        let _ = writeln!(
            out,
            "\n{} requests not answered (cut by the kill or sent after it); {} rows after the \
             kill; integrity_check {}. Restart: {}, {} rows after it, {} answered requests \
             without a row.",
            self.not_answered,
            self.rows,
            if self.integrity_ok {
                "ok".to_owned()
            } else {
                self.integrity_problems.join("; ")
            },
            if self.restarted && self.restart_request_ok {
                "started and served"
            } else if self.restarted {
                "started, did not serve"
            } else {
                "did not start"
            },
            self.rows_after_restart,
            self.missing_after_restart
        );
        let _ = writeln!(out);
        checks_table(out, &self.checks, SCENARIO_WORDS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_at_100_and_500_ms() {
        let mut buckets = Buckets::default();
        for ms in [0, 100, 101, 500, 501, 5000] {
            buckets.add(Duration::from_millis(ms));
        }
        assert_eq!(buckets.within_100ms, 2);
        assert_eq!(buckets.from_100_to_500ms, 2);
        assert_eq!(buckets.over_500ms, 2);
        assert_eq!(buckets.total(), 6);
    }
}
