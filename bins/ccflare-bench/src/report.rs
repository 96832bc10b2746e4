//! The report: one serializable structure (written as `bench.json`) and its Markdown rendering
//! (`bench.md`, also printed), with the SPEC §14 targets checked against what was measured.

use crate::crash::CrashReport;
use crate::procfs::{FdLimit, Machine};
use crate::soak::SoakReport;
use crate::stats::{Percentiles, PhaseSummary};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Serialize)]
pub struct Report {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub started_at: String,
    pub command: String,
    pub smoke: bool,
    pub machine: Machine,
    pub proxy: ProxyInfo,
    pub scenarios: Vec<ScenarioReport>,
    /// The row check: only when the bench ran the server itself.
    pub records: Option<RecordsReport>,
    /// The soak, when it ran (with its own server, series, slopes and row check).
    pub soak: Option<SoakReport>,
    /// The crash, when it ran (kill -9 mid-burst, integrity, rows by time before the kill).
    pub crash: Option<CrashReport>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct ProxyInfo {
    /// `None` when only the soak ran: it starts a server of its own.
    pub url: Option<String>,
    /// The server binary when the bench started it; `None` for `--proxy-url`.
    pub binary: Option<String>,
    pub profile: Option<String>,
    pub mock_url: String,
    pub idle_rss_mb_at_start: Option<f64>,
    pub idle_rss_mb_at_end: Option<f64>,
    /// `ccflare` with its UI open on the Requests tab (`--ui`), not `ccflare-server`.
    pub ui: bool,
    /// CPU of the idle server before the load, in percent of one core.
    pub idle_cpu_percent: Option<f64>,
    pub fd_limit: FdLimit,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub direct: Option<PhaseSummary>,
    pub through: Option<PhaseSummary>,
    /// through − direct at each percentile, in ms.
    pub overhead: Option<Overhead>,
    pub proxy: Option<ProxyUsage>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    pub latency_ms: Percentiles,
    pub ttfb_ms: Percentiles,
}

impl ScenarioReport {
    pub fn new(
        name: &str,
        description: String,
        direct: Option<PhaseSummary>,
        through: Option<PhaseSummary>,
        proxy: Option<ProxyUsage>,
    ) -> ScenarioReport {
        let overhead = match (&direct, &through) {
            (Some(direct), Some(through)) => Some(Overhead {
                latency_ms: through.latency_ms.minus(&direct.latency_ms),
                ttfb_ms: through.ttfb_ms.minus(&direct.ttfb_ms),
            }),
            _ => None,
        };
        ScenarioReport {
            name: name.to_owned(),
            description,
            direct,
            through,
            overhead,
            proxy,
            notes: Vec::new(),
        }
    }
}

/// What the proxy process used during the scenario's through-the-proxy phases.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyUsage {
    /// `VmHWM` since the scenario began (reset with `clear_refs`), or the largest sampled
    /// `VmRSS` when the reset is not allowed.
    pub peak_rss_mb: f64,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    /// CPU seconds (user + system) the proxy spent per 1,000 requests it served.
    pub cpu_s_per_1000: Option<f64>,
    /// Milliseconds the proxy's threads were runnable but had no CPU, per 1,000 requests
    /// (`schedstat`): CPU contention, which shows up as tail latency.
    pub proxy_wait_ms_per_1000: Option<f64>,
    /// The same for this process (the load generator and the mock).
    pub bench_wait_ms_per_1000: Option<f64>,
    pub samples: usize,
}

#[derive(Debug, Serialize)]
pub struct RecordsReport {
    /// Every request the bench sent through the proxy, warm-ups and the rate probe included.
    pub requests_sent: u64,
    pub rows: u64,
    /// `requests_sent − rows`: requests without a record (negative: extra rows).
    pub lost: i64,
    /// Request ids clients received (`x-ccflare-request-id`) that have no row.
    pub missing_ids: u64,
    pub server_exit_code: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    /// `None` when this run cannot say (not measured, or a smoke run too small to count).
    pub met: Option<bool>,
}

fn ms(value: f64) -> String {
    format!("{value:.3}")
}

fn signed(value: f64) -> String {
    format!("{value:+.3}")
}

fn percentile_cells(p: &Percentiles, cell: fn(f64) -> String) -> String {
    [p.p50, p.p90, p.p99, p.p999, p.max].map(cell).join(" | ")
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "# ccflare-bench{}\n",
            if self.smoke { " (smoke)" } else { "" }
        );
        let _ = writeln!(out, "- run: {} UTC, `{}`", self.started_at, self.command);
        let _ = writeln!(
            out,
            "- machine: {} × {}, {} MB memory, Linux {}; load average {:.2} at start, {:.2} at end",
            m.cpus, m.cpu_model, m.memory_mb, m.kernel, m.load_at_start, m.load_at_end
        );
        match (&self.proxy.binary, &self.proxy.profile) {
            (Some(binary), Some(profile)) => {
                let _ = writeln!(
                    out,
                    "- proxy: `{binary}` ({profile} build), started by the bench"
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "- proxy: {} (not started by the bench)",
                    self.proxy.url.as_deref().unwrap_or("none")
                );
            }
        }
        let _ = writeln!(
            out,
            "- upstream: the mock ({}), in the bench process on its own runtime\n",
            self.proxy.mock_url
        );

        let _ = writeln!(out, "## Latency\n");
        let _ = writeln!(
            out,
            "Milliseconds from each request's intended start (open loop) to its last byte; TTFB \
             to its first body byte. `overhead` = ccflare − direct at each percentile.\n"
        );
        let _ = writeln!(
            out,
            "| scenario | path | req/s target → achieved | ok | errors | p50 | p90 | p99 | p99.9 | max | TTFB p50 | TTFB p99 |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for scenario in &self.scenarios {
            for (path, phase) in [("direct", &scenario.direct), ("ccflare", &scenario.through)] {
                let Some(phase) = phase else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} → {:.1} | {} | {} | {} | {} | {} |",
                    scenario.name,
                    path,
                    phase.target_rate,
                    phase.achieved_rate,
                    phase.ok,
                    phase.errors,
                    percentile_cells(&phase.latency_ms, ms),
                    ms(phase.ttfb_ms.p50),
                    ms(phase.ttfb_ms.p99),
                );
            }
            if let Some(overhead) = &scenario.overhead {
                let _ = writeln!(
                    out,
                    "| {} | **overhead** | | | | {} | {} | {} |",
                    scenario.name,
                    percentile_cells(&overhead.latency_ms, signed),
                    signed(overhead.ttfb_ms.p50),
                    signed(overhead.ttfb_ms.p99),
                );
            }
        }
        let errors: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(|s| {
                [("direct", &s.direct), ("ccflare", &s.through)]
                    .into_iter()
                    .filter_map(move |(path, phase)| {
                        let phase = phase.as_ref()?;
                        (!phase.error_kinds.is_empty()).then(|| {
                            let kinds: Vec<String> = phase
                                .error_kinds
                                .iter()
                                .map(|(kind, n)| format!("{n} × {kind}"))
                                .collect();
                            format!("- {} {}: {}", s.name, path, kinds.join(", "))
                        })
                    })
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "\nErrors:\n{}", errors.join("\n"));
        }

        let measured = self.scenarios.iter().any(|s| s.proxy.is_some())
            || self.proxy.idle_rss_mb_at_start.is_some();
        if measured {
            self.proxy_process(&mut out);
        }
        self.scenarios_and_records(&mut out);
        out
    }

    fn proxy_process(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Proxy process\n");
        let _ = writeln!(
            out,
            "| scenario | peak RSS MB | RSS before → after MB | CPU s per 1,000 requests | run-queue wait ms per 1,000 requests: proxy / bench |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for scenario in &self.scenarios {
            let Some(usage) = &scenario.proxy else {
                continue;
            };
            let figure = |value: Option<f64>, digits: usize| {
                value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
            };
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} → {:.1} | {} | {} / {} |",
                scenario.name,
                usage.peak_rss_mb,
                usage.rss_before_mb,
                usage.rss_after_mb,
                figure(usage.cpu_s_per_1000, 3),
                figure(usage.proxy_wait_ms_per_1000, 1),
                figure(usage.bench_wait_ms_per_1000, 1),
            );
        }
        let idle = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |mb| format!("{mb:.1} MB"));
        let _ = writeln!(
            out,
            "\nIdle RSS: {} at start, {} after the run.",
            idle(self.proxy.idle_rss_mb_at_start),
            idle(self.proxy.idle_rss_mb_at_end)
        );
        if let Some(percent) = self.proxy.idle_cpu_percent {
            let what = if self.proxy.ui {
                "`ccflare` with its UI open on the Requests tab"
            } else {
                "the server"
            };
            let _ = writeln!(
                out,
                "Idle CPU before the load: {percent:.2} % of a core ({what})."
            );
        }
    }

    fn scenarios_and_records(&self, out: &mut String) {
        let notes: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(|s| s.notes.iter().map(move |n| format!("- {}: {n}", s.name)))
            .collect();
        let _ = writeln!(out, "\n## Scenarios\n");
        for scenario in &self.scenarios {
            let _ = writeln!(out, "- **{}**: {}", scenario.name, scenario.description);
        }
        if !notes.is_empty() {
            let _ = writeln!(out, "\n{}", notes.join("\n"));
        }

        if let Some(records) = &self.records {
            let _ = writeln!(out, "\n## Records\n");
            let _ = writeln!(
                out,
                "After SIGTERM (exit code {}): {} requests sent through the proxy, {} rows, \
                 {} lost, {} client-seen request ids without a row.",
                records
                    .server_exit_code
                    .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                records.requests_sent,
                records.rows,
                records.lost,
                records.missing_ids
            );
        }

        if let Some(soak) = &self.soak {
            soak.markdown(out);
        }

        if let Some(crash) = &self.crash {
            crash.markdown(out);
        }

        if self.checks.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n## Targets (SPEC §14)\n");
        checks_table(out, &self.checks, TARGET_WORDS);
    }
}

/// How a table of checks names its first column and the verdicts it cannot give as "met".
pub struct CheckWords {
    pub column: &'static str,
    pub failed: &'static str,
    pub not_judged: &'static str,
}

/// The SPEC §14 targets: a target is missed, or this run cannot say.
const TARGET_WORDS: CheckWords = CheckWords {
    column: "target",
    failed: "**missed**",
    not_judged: "n/a",
};

/// A scenario's own checks (the soak's, the crash's): a check fails, or is not judged.
pub const SCENARIO_WORDS: CheckWords = CheckWords {
    column: "check",
    failed: "**failed**",
    not_judged: "not judged",
};

/// `checks` as a Markdown table: what was checked, what was measured, the verdict.
pub fn checks_table(out: &mut String, checks: &[Check], words: CheckWords) {
    let _ = writeln!(out, "| {} | measured | |", words.column);
    let _ = writeln!(out, "|---|---|---|");
    for check in checks {
        let verdict = match check.met {
            Some(true) => "met",
            Some(false) => words.failed,
            None => words.not_judged,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            check.target, check.measured, verdict
        );
    }
}

/// `YYYY-MM-DD HH:MM` in UTC for a Unix time.
pub fn utc_minute(unix_seconds: u64) -> String {
    let rfc3339 = ccflare_core::time::format_rfc3339(unix_seconds as i64 * 1000);
    rfc3339[..16].replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(951_782_400 + 3_660), "2000-02-29 01:01");
        assert_eq!(utc_minute(1_795_000_000), "2026-11-18 11:06");
    }
}
