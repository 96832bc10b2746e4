//! The soak (issue 9): an hour of mixed traffic at a steady rate against a `ccflare-server` of
//! its own, to show that nothing accumulates. The proxy's resident memory and open file
//! descriptors are sampled from `/proc` for the whole run; after a warm-up, a least-squares
//! line through the samples gives their slope, which must stay under the thresholds below.
//! Then, as for the other scenarios, every request sent must have its row.
//!
//! The server of its own has what the standard one lacks: OAuth accounts whose access tokens
//! expire every minute (so the proxy refreshes them through the mock's token endpoint all
//! along), an account the mock refuses part of the time (windowless 429s, which fail over
//! without benching it, and now and then a 529, which benches it for 15 s), and the
//! `round-robin` strategy, so that every account serves its share (the default `session`
//! strategy would keep to the first account).
//!
//! The mix, in every stretch of 20 requests: 12 non-streaming requests, 7 streams of 20 events
//! 25 ms apart (half a second, as a short answer streams), and 1 stream the client hangs up on
//! after its first event (a person pressing Esc), which the proxy records as a 499.

use crate::load;
use crate::procfs::{ProcSample, Sampler};
use crate::report::{Check, RecordsReport, SCENARIO_WORDS, ScenarioReport, checks_table};
use crate::scenarios::{Bench, Shape, mix_at};
use crate::server::{Extras, OAuthAccount, Server};
use anyhow::{Context, Result};
use ccflare_mock::{Fault, MockUpstream};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The standard soak: 10 requests a second for an hour, 36,000 requests. One person using
/// Claude Code sends a request every few seconds while working (each tool call is a turn), so
/// this is the busy hour of a team of twenty to thirty sharing one pool: more than typical use,
/// which makes a leak per request show sooner, and light enough (about 1 % of a CPU at the
/// standard run's CPU per request) that the machine's other work cannot starve it. It runs in
/// real time, so everything timed (token expiry, benches, idle connections, the writer's
/// linger) runs as in production.
pub const STANDARD_RATE: f64 = 10.0;
pub const STANDARD_DURATION: Duration = Duration::from_secs(3600);

/// Flat memory: the least-squares slope of RSS after the warm-up stays at or below this.
/// 32 kB/min is under 2 MB an hour; at 10 requests a second it is about 55 bytes per request,
/// so a leak of anything per request (a record, an id, a map entry) or per connection goes
/// over it, while the allocator's occasional step (it grows its arenas in chunks) does not.
pub const FLAT_RSS_KB_PER_MIN: f64 = 32.0;

/// Flat file descriptors: the slope stays at or below this, which is 0 within the noise of the
/// connections open at the instant of each sample. An fd kept per request, per hang-up or per
/// token refresh adds several a minute.
pub const FLAT_FDS_PER_MIN: f64 = 0.5;

/// The slopes are judged only over at least this long after the warm-up: over a few seconds a
/// line through the samples extrapolates noise (the smoke run reports them as not judged).
pub const MIN_JUDGED_WINDOW: Duration = Duration::from_secs(300);

/// Share of requests scheduled to meet a refusal by the flaky account.
const REFUSED_SHARE: f64 = 0.05;

/// At most one 529 (15 s on the bench) per this long, so the flaky account serves most of the
/// time; the other refusals are windowless 429s.
const OVERLOADED_EVERY: Duration = Duration::from_secs(60);

/// How many OAuth accounts the soak's server has.
const OAUTH_ACCOUNTS: usize = 2;

/// The proxy refreshes a token this long before it expires (`proxy::tokens::REFRESH_MARGIN_MS`);
/// the mock's `expires_in` is set to this plus the refresh interval.
const REFRESH_MARGIN_S: u64 = 300;

/// Indexes into the mix's specs.
const JSON: usize = 0;
const STREAM: usize = 1;
const HANG_UP: usize = 2;

/// 20 requests: 12 JSON, 7 streams, 1 hang-up, spread out.
const PATTERN: [usize; 20] = [
    JSON, STREAM, JSON, JSON, STREAM, JSON, STREAM, HANG_UP, JSON, STREAM, JSON, JSON, STREAM,
    JSON, STREAM, JSON, JSON, STREAM, JSON, JSON,
];

/// What the soak found.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub sample_period_s: f64,
    /// Seconds between OAuth refreshes of one account (the token's life minus the margin).
    pub refresh_interval_s: u64,
    pub traffic: Traffic,
    pub rss_kb: Trend,
    pub fds: Trend,
    /// Every sample: seconds since the load began, RSS in kB, open fds.
    pub series: Vec<ProcSample>,
    pub records: RecordsReport,
    /// Rows per HTTP status and per serving account.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub accounts: std::collections::BTreeMap<String, u64>,
    pub checks: Vec<Check>,
    /// No check failed.
    pub passed: bool,
}

/// What was sent and what happened to it.
#[derive(Debug, Serialize)]
pub struct Traffic {
    pub sent: u64,
    pub json: u64,
    pub streams: u64,
    pub hang_ups: u64,
    /// Requests answered in full (hang-ups that got their first frame count as answered).
    pub ok: u64,
    /// Anything else a client saw: error statuses, broken bodies, timeouts.
    pub client_errors: u64,
    /// Refusals queued on the flaky account: windowless 429s and 529s.
    pub refusals_429: u64,
    pub refusals_529: u64,
    /// Rows with more than one attempt.
    pub failed_over: u64,
    /// Refresh grants the mock's token endpoint received.
    pub oauth_refreshes: u64,
    /// Upstream streams the proxy closed early (the mock saw them abandoned).
    pub upstream_streams_closed: u64,
}

/// A series' start, end and slope.
#[derive(Debug, Serialize)]
pub struct Trend {
    pub first: f64,
    /// The first sample of the fitted window (after the warm-up).
    pub after_warmup: f64,
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// Least-squares slope per minute over the samples after the warm-up.
    pub slope_per_min: Option<f64>,
    pub threshold_per_min: f64,
    /// `None` when the window after the warm-up is too short to judge.
    pub flat: Option<bool>,
}

/// Least-squares slope of `points` (x, y); `None` for fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

impl Trend {
    fn of(
        series: &[ProcSample],
        warmup_s: f64,
        judged: bool,
        threshold_per_min: f64,
        value: impl Fn(&ProcSample) -> Option<f64>,
    ) -> Trend {
        let all: Vec<(f64, f64)> = series
            .iter()
            .filter_map(|s| Some((s.at_s, value(s)?)))
            .collect();
        let fitted: Vec<(f64, f64)> = all
            .iter()
            .copied()
            .filter(|(at, _)| *at >= warmup_s)
            .map(|(at, v)| (at / 60.0, v))
            .collect();
        let slope_per_min = slope(&fitted);
        let values = all.iter().map(|p| p.1);
        Trend {
            first: all.first().map_or(0.0, |p| p.1),
            after_warmup: fitted.first().map_or(0.0, |p| p.1),
            last: all.last().map_or(0.0, |p| p.1),
            min: values.clone().fold(f64::INFINITY, f64::min),
            max: values.fold(f64::NEG_INFINITY, f64::max),
            slope_per_min,
            threshold_per_min,
            flat: match slope_per_min {
                Some(slope) if judged => Some(slope <= threshold_per_min),
                _ => None,
            },
        }
    }
}

/// The pace of everything timed in a soak, from its rate and duration.
struct Pacing {
    warmup: Duration,
    sample_period: Duration,
    refresh_interval_s: u64,
    refusal_period: Duration,
    overloaded_every: u64,
}

impl Pacing {
    fn of(rate: f64, duration: Duration) -> Pacing {
        // A sixth of the run (10 minutes of the hour): pools fill, SQLite's page cache and the
        // allocator's arenas reach their working size.
        let warmup = duration / 6;
        // About 360 samples whatever the length: every 10 s in an hour.
        let sample_period =
            (duration / 360).clamp(Duration::from_millis(50), Duration::from_secs(10));
        // A minute in the hour; a second in a smoke run, so it still refreshes.
        let refresh_interval_s = (duration.as_secs() / 60).clamp(1, 60);
        let refusal_period = Duration::from_secs_f64(1.0 / (REFUSED_SHARE * rate.max(0.001)));
        let overloaded_every = (OVERLOADED_EVERY.as_secs_f64() / refusal_period.as_secs_f64())
            .round()
            .max(1.0) as u64;
        Pacing {
            warmup,
            sample_period,
            refresh_interval_s,
            refusal_period,
            overloaded_every,
        }
    }
}

/// The soak's API keys: two that serve and one the mock refuses part of the time. Distinct from
/// the standard scenarios' keys, so the mock's faults for one never touch the other.
/// The server names an API-key account after its key's last four characters, so these end in
/// what the report should call them: `key-srva`, `key-srvb`, `key-flky`.
fn soak_keys() -> Vec<String> {
    ["srva", "srvb", "flky"]
        .iter()
        .map(|tail| format!("sk-ant-api03-soak-0123456789abcdefghijklmnop-{tail}"))
        .collect()
}

/// Queues refusals on the flaky account at a steady pace until `stop` turns true: a 529 first
/// and then every `overloaded_every`-th time, windowless 429s otherwise. Returns how many of
/// each it queued.
async fn refuse(
    mock: MockUpstream,
    key: String,
    period: Duration,
    overloaded_every: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut rate_limited, mut overloaded) = (0, 0);
    // Bounded by `stop`, which the soak sends when its load ends.
    for n in 0_u64.. {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        if n % overloaded_every == 0 {
            mock.push_fault(&key, Fault::Overloaded);
            overloaded += 1;
        } else {
            mock.push_fault(
                &key,
                Fault::RateLimited {
                    retry_after: None,
                    reset: None,
                },
            );
            rate_limited += 1;
        }
    }
    (rate_limited, overloaded)
}

/// Runs the soak; its summary goes in the scenario list, the rest in `bench.soak`.
pub async fn run(bench: &mut Bench) -> Result<ScenarioReport> {
    let binary = bench.server_bin.clone().context(
        "the soak starts a ccflare-server of its own (OAuth accounts, round-robin), so it cannot \
         measure a proxy given with --proxy-url",
    )?;
    let rate = bench.plan.soak_rate;
    let duration = bench.plan.soak_duration;
    let shape = Pacing::of(rate, duration);
    let mock = bench.mock.clone();

    // Tokens that expire within the refresh margin: the first request of each account refreshes
    // them, and every refresh from then on gets `refresh_interval_s` before the next is due.
    mock.set_oauth_expires_in(REFRESH_MARGIN_S + shape.refresh_interval_s);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let oauth_accounts = (1..=OAUTH_ACCOUNTS)
        .map(|n| {
            let (access, refresh) = mock.issue_oauth_tokens();
            OAuthAccount {
                name: format!("soak-oauth-{n}"),
                access,
                refresh,
                expires_at_ms: now_ms + 60_000,
            }
        })
        .collect();
    let keys = soak_keys();
    let extras = Extras {
        env: vec![
            ("LB_STRATEGY", "round-robin".to_owned()),
            (
                "CCFLARE_OAUTH_TOKEN_URL",
                format!("{}/v1/oauth/token", bench.mock_url),
            ),
        ],
        oauth_accounts,
        client_key: false,
    };
    let server = Server::start_with(&binary, &bench.mock_url, &keys, &extras).await?;
    let plan = format!("{rate} req/s for {} s", duration.as_secs_f64());
    server.announce_and_settle("soak server", &plan).await;
    let shapes = [
        Shape::Json,
        Shape::Slow(Duration::from_millis(25)),
        Shape::HangUp(Duration::from_millis(50)),
    ];
    let mix = mix_at(&server.url, &shapes, PATTERN.to_vec())?;
    let count = (duration.as_secs_f64() * rate).round().max(1.0) as u64;
    let connections = bench.plan.connections;
    let client = load::client(connections);
    let refreshes_before = mock.refresh_grants();
    let aborted_before = mock.aborted_streams();

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let refusals = tokio::spawn(refuse(
        mock.clone(),
        keys[2].clone(),
        shape.refusal_period,
        shape.overloaded_every,
        stop_rx,
    ));
    let sampler = Sampler::start(server.pid, shape.sample_period, true);
    let data =
        load::open_loop_mix(&client, &mix, rate, count, connections, bench.max_in_flight).await;
    let (_, series) = sampler.stop().await;
    let _ = stop.send(true);
    let (refusals_429, refusals_529) = refusals.await.context("the refusal task failed")?;
    mock.set_oauth_expires_in(28_800);

    let hang_ups_answered = data
        .samples
        .iter()
        .filter(|s| s.kind == HANG_UP && s.error.is_none())
        .count();
    // The proxy closes the upstream stream as it records the hang-up; give the mock a moment
    // to see every one (bounded: a stream the proxy kept open would end by itself within 1 s).
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        mock.wait_aborted_streams(aborted_before + hang_ups_answered),
    )
    .await;
    let upstream_streams_closed = (mock.aborted_streams() - aborted_before) as u64;
    let oauth_refreshes = mock.refresh_grants() - refreshes_before;

    let ids: Vec<String> = data
        .samples
        .iter()
        .filter_map(|s| s.request_id.clone())
        .collect();
    let sent = data.sent();
    let records = server.stop_and_count(&ids).await?;
    let summary = data.summary();
    let traffic = Traffic {
        sent,
        json: mix.count_of(JSON, sent),
        streams: mix.count_of(STREAM, sent),
        hang_ups: mix.count_of(HANG_UP, sent),
        ok: summary.ok,
        client_errors: summary.errors,
        refusals_429,
        refusals_529,
        failed_over: records.failed_over,
        oauth_refreshes,
        upstream_streams_closed,
    };

    let warmup_s = shape.warmup.as_secs_f64();
    let window = duration.saturating_sub(shape.warmup);
    let judged = window >= MIN_JUDGED_WINDOW;
    let rss_kb = Trend::of(&series, warmup_s, judged, FLAT_RSS_KB_PER_MIN, |s| {
        Some(s.rss_kb as f64)
    });
    let fds = Trend::of(&series, warmup_s, judged, FLAT_FDS_PER_MIN, |s| {
        s.fds.map(|fds| fds as f64)
    });
    let records_report = RecordsReport {
        requests_sent: sent,
        rows: records.rows,
        lost: sent as i64 - records.rows as i64,
        missing_ids: records.missing_ids,
        server_exit_code: records.exit_code,
    };
    let oauth_rows: Vec<u64> = (1..=OAUTH_ACCOUNTS)
        .map(|n| {
            records
                .accounts
                .get(&format!("soak-oauth-{n}"))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let rows_499 = records.statuses.get(&499).copied().unwrap_or(0);
    let checks = checks(
        &rss_kb,
        &fds,
        window,
        &records_report,
        &traffic,
        &oauth_rows,
        rows_499,
    );
    let passed = checks.iter().all(|c| c.met != Some(false));
    let soak = SoakReport {
        rate,
        duration_s: duration.as_secs_f64(),
        warmup_s,
        sample_period_s: shape.sample_period.as_secs_f64(),
        refresh_interval_s: shape.refresh_interval_s,
        traffic,
        rss_kb,
        fds,
        series,
        records: records_report,
        statuses: records.statuses,
        accounts: records.accounts,
        checks,
        passed,
    };
    let mut report = ScenarioReport::new(
        "soak",
        format!(
            "{rate} req/s for {:.0} s against a server of its own (two API-key accounts, one \
             the mock refuses part of the time with 429/529, two OAuth accounts refreshed every \
             {} s; round-robin); per 20 requests 12 JSON, 7 streams of 20 events 25 ms apart, 1 \
             stream hung up after its first event. RSS and open fds sampled every {:.2} s, \
             slopes fitted after {:.0} s of warm-up",
            duration.as_secs_f64(),
            shape.refresh_interval_s,
            shape.sample_period.as_secs_f64(),
            warmup_s
        ),
        None,
        Some(summary),
        None,
    );
    report.notes.push(format!(
        "{}: RSS slope {}, fd slope {}; {} sent, {} rows",
        if soak.passed { "passed" } else { "FAILED" },
        per_min(soak.rss_kb.slope_per_min, "kB"),
        per_min(soak.fds.slope_per_min, "fds"),
        sent,
        soak.records.rows
    ));
    bench.soak = Some(soak);
    Ok(report)
}

fn per_min(slope: Option<f64>, unit: &str) -> String {
    slope.map_or_else(|| "–".to_owned(), |s| format!("{s:+.2} {unit}/min"))
}

fn checks(
    rss_kb: &Trend,
    fds: &Trend,
    window: Duration,
    records: &RecordsReport,
    traffic: &Traffic,
    oauth_rows: &[u64],
    rows_499: u64,
) -> Vec<Check> {
    let window_note = if window >= MIN_JUDGED_WINDOW {
        format!(
            "over {:.1} min after the warm-up",
            window.as_secs_f64() / 60.0
        )
    } else {
        format!(
            "over {:.1} s only: not judged (needs ≥ {} min)",
            window.as_secs_f64(),
            MIN_JUDGED_WINDOW.as_secs() / 60
        )
    };
    vec![
        Check {
            target: format!("RSS flat: slope ≤ {FLAT_RSS_KB_PER_MIN} kB/min after the warm-up"),
            measured: format!(
                "{} {window_note}; {:.1} → {:.1} MB",
                per_min(rss_kb.slope_per_min, "kB"),
                rss_kb.after_warmup / 1024.0,
                rss_kb.last / 1024.0
            ),
            met: rss_kb.flat,
        },
        Check {
            target: format!("open fds flat: slope ≤ {FLAT_FDS_PER_MIN} fds/min after the warm-up"),
            measured: format!(
                "{} {window_note}; {:.0} → {:.0}",
                per_min(fds.slope_per_min, "fds"),
                fds.after_warmup,
                fds.last
            ),
            met: fds.flat,
        },
        Check {
            target: "no lost records: one row per request sent, the server exits 0".into(),
            measured: format!(
                "{} sent, {} rows, {} ids missing, exit code {}",
                records.requests_sent,
                records.rows,
                records.missing_ids,
                records
                    .server_exit_code
                    .map_or_else(|| "none".to_owned(), |c| c.to_string())
            ),
            met: Some(
                records.lost == 0
                    && records.missing_ids == 0
                    && records.server_exit_code == Some(0),
            ),
        },
        Check {
            target: "clients see no errors (refusals fail over, refreshes are invisible)".into(),
            measured: format!(
                "{} errors in {} requests",
                traffic.client_errors, traffic.sent
            ),
            met: Some(traffic.client_errors == 0),
        },
        Check {
            target: "every part of the mix happened: failovers, OAuth refreshes and rows for \
                     each OAuth account, hang-ups recorded as 499"
                .into(),
            measured: format!(
                "{} failed over ({} × 429, {} × 529 queued), {} refreshes, OAuth rows {:?}, \
                 {} hang-ups → {} rows 499, {} upstream streams closed",
                traffic.failed_over,
                traffic.refusals_429,
                traffic.refusals_529,
                traffic.oauth_refreshes,
                oauth_rows,
                traffic.hang_ups,
                rows_499,
                traffic.upstream_streams_closed
            ),
            met: Some(
                traffic.failed_over > 0
                    && traffic.oauth_refreshes >= oauth_rows.len() as u64
                    && oauth_rows.iter().all(|&rows| rows > 0)
                    && traffic.hang_ups > 0
                    && rows_499 > 0,
            ),
        },
    ]
}

/// Eight levels of block, lowest first.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` as at most `width` blocks (means of equal runs of samples), scaled from their
/// minimum to their maximum.
pub fn sparkline(values: &[f64], width: usize) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let buckets = width.min(values.len());
    let means: Vec<f64> = (0..buckets)
        .map(|b| {
            let from = b * values.len() / buckets;
            let to = ((b + 1) * values.len() / buckets).max(from + 1);
            values[from..to].iter().sum::<f64>() / (to - from) as f64
        })
        .collect();
    let min = means.iter().copied().fold(f64::INFINITY, f64::min);
    let max = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    means
        .iter()
        .map(|&v| {
            if max > min {
                let level = ((v - min) / (max - min) * 7.0).round() as usize;
                BLOCKS[level.min(7)]
            } else {
                BLOCKS[3]
            }
        })
        .collect()
}

impl SoakReport {
    /// The soak's section of `bench.md`.
    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Soak\n");
        let _ = writeln!(
            out,
            "{} req/s for {:.0} s ({} requests), warm-up {:.0} s, a sample every {:.2} s; \
             OAuth tokens refreshed every {} s. **{}**.\n",
            self.rate,
            self.duration_s,
            self.traffic.sent,
            self.warmup_s,
            self.sample_period_s,
            self.refresh_interval_s,
            if self.passed { "Passed" } else { "Failed" }
        );
        let rss: Vec<f64> = self.series.iter().map(|s| s.rss_kb as f64).collect();
        let fds: Vec<f64> = self
            .series
            .iter()
            .filter_map(|s| s.fds.map(|f| f as f64))
            .collect();
        let _ = writeln!(
            out,
            "| | first | after warm-up | last | min | max | slope after warm-up | threshold |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        let mb = |kb: f64| format!("{:.1} MB", kb / 1024.0);
        let t = &self.rss_kb;
        let _ = writeln!(
            out,
            "| RSS | {} | {} | {} | {} | {} | {} | ≤ {} kB/min |",
            mb(t.first),
            mb(t.after_warmup),
            mb(t.last),
            mb(t.min),
            mb(t.max),
            per_min(t.slope_per_min, "kB"),
            t.threshold_per_min
        );
        let t = &self.fds;
        let _ = writeln!(
            out,
            "| open fds | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | ≤ {} fds/min |",
            t.first,
            t.after_warmup,
            t.last,
            t.min,
            t.max,
            per_min(t.slope_per_min, "fds"),
            t.threshold_per_min
        );
        let _ = writeln!(
            out,
            "\n```\nRSS {} ({} → {})\nfds {} ({:.0} → {:.0})\n```\n",
            sparkline(&rss, 60),
            mb(self.rss_kb.min),
            mb(self.rss_kb.max),
            sparkline(&fds, 60),
            self.fds.min,
            self.fds.max
        );
        // Twelve evenly spaced readings, and the last.
        let _ = writeln!(out, "| elapsed | RSS MB | open fds |");
        let _ = writeln!(out, "|---|---|---|");
        let mut shown = Vec::new();
        for i in 0..=12 {
            let at = self.duration_s * i as f64 / 12.0;
            if let Some(index) = self
                .series
                .iter()
                .position(|s| s.at_s >= at)
                .or_else(|| self.series.len().checked_sub(1))
                && !shown.contains(&index)
            {
                shown.push(index);
            }
        }
        for index in shown {
            let s = &self.series[index];
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} |",
                elapsed(s.at_s),
                s.rss_kb as f64 / 1024.0,
                s.fds.map_or_else(|| "–".to_owned(), |f| f.to_string())
            );
        }
        let tr = &self.traffic;
        let _ = writeln!(
            out,
            "\nTraffic: {} sent ({} JSON, {} streams, {} hang-ups), {} answered, {} client \
             errors; {} × 429 and {} × 529 queued on the flaky account, {} requests failed \
             over; {} OAuth refreshes; {} upstream streams closed early.",
            tr.sent,
            tr.json,
            tr.streams,
            tr.hang_ups,
            tr.ok,
            tr.client_errors,
            tr.refusals_429,
            tr.refusals_529,
            tr.failed_over,
            tr.oauth_refreshes,
            tr.upstream_streams_closed
        );
        let join = |map: Vec<String>| map.join(", ");
        let _ = writeln!(
            out,
            "Rows by status: {}. By account: {}.",
            join(
                self.statuses
                    .iter()
                    .map(|(status, n)| format!("{status}: {n}"))
                    .collect()
            ),
            join(
                self.accounts
                    .iter()
                    .map(|(account, n)| format!("{account}: {n}"))
                    .collect()
            )
        );
        let _ = writeln!(out);
        checks_table(out, &self.checks, SCENARIO_WORDS);
    }
}

/// `m:ss` (or `h:mm:ss`) for seconds since the start.
fn elapsed(seconds: f64) -> String {
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else if total >= 60 {
        format!("{m}:{s:02}")
    } else {
        format!("{:.1} s", seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_slope() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        // Symmetric noise around a flat line: no slope.
        let flat = [(0.0, 1.0), (1.0, -1.0), (2.0, 1.0), (3.0, -1.0), (4.0, 0.0)];
        assert!(slope(&flat).unwrap().abs() < 0.3);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn trend_fits_only_after_the_warm_up_and_judges_against_the_threshold() {
        // A steep start (warm-up), then flat at 2000 kB with ±10 kB of noise.
        let series: Vec<ProcSample> = (0..120)
            .map(|i| ProcSample {
                at_s: i as f64 * 10.0,
                rss_kb: if i < 20 {
                    1000 + i * 50
                } else {
                    2000 + ((i - 20) % 3) * 10
                },
                fds: Some(20 + (i % 2)),
            })
            .collect();
        let rss = Trend::of(&series, 200.0, true, 32.0, |s| Some(s.rss_kb as f64));
        assert_eq!(rss.first, 1000.0);
        assert_eq!(rss.after_warmup, 2000.0);
        assert!(rss.slope_per_min.unwrap().abs() < 1.0, "{rss:?}");
        assert_eq!(rss.flat, Some(true));
        // A leak of 100 kB a minute is caught.
        let leaking: Vec<ProcSample> = series
            .iter()
            .map(|s| ProcSample {
                rss_kb: s.rss_kb + (s.at_s / 60.0 * 100.0) as u64,
                ..*s
            })
            .collect();
        let rss = Trend::of(&leaking, 200.0, true, 32.0, |s| Some(s.rss_kb as f64));
        assert!((rss.slope_per_min.unwrap() - 100.0).abs() < 2.0, "{rss:?}");
        assert_eq!(rss.flat, Some(false));
        // Too short a window is reported, not judged.
        let rss = Trend::of(&leaking, 200.0, false, 32.0, |s| Some(s.rss_kb as f64));
        assert_eq!(rss.flat, None);
    }

    #[test]
    fn sparkline_scales_from_min_to_max() {
        assert_eq!(
            sparkline(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 8),
            "▁▂▃▄▅▆▇█"
        );
        assert_eq!(sparkline(&[5.0; 100], 4), "▄▄▄▄");
        assert_eq!(sparkline(&[0.0, 0.0, 10.0, 10.0], 2), "▁█");
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn the_mix_counts_each_kind() {
        let spec = crate::scenarios::spec_at("http://127.0.0.1:1", "k", Shape::Json).unwrap();
        let mix = crate::load::Mix {
            specs: vec![spec.clone(), spec.clone(), spec],
            pattern: PATTERN.to_vec(),
        };
        assert_eq!(mix.count_of(JSON, 20), 12);
        assert_eq!(mix.count_of(STREAM, 20), 7);
        assert_eq!(mix.count_of(HANG_UP, 20), 1);
        assert_eq!(mix.count_of(HANG_UP, 7), 0);
        assert_eq!(mix.count_of(HANG_UP, 8), 1);
        let total: u64 = [JSON, STREAM, HANG_UP]
            .iter()
            .map(|&k| mix.count_of(k, 36_007))
            .sum();
        assert_eq!(total, 36_007);
    }

    #[test]
    fn an_hour_refreshes_every_minute_and_samples_every_ten_seconds() {
        let shape = Pacing::of(STANDARD_RATE, STANDARD_DURATION);
        assert_eq!(shape.warmup, Duration::from_secs(600));
        assert_eq!(shape.sample_period, Duration::from_secs(10));
        assert_eq!(shape.refresh_interval_s, 60);
        // One refusal every 2 s, a 529 among them once a minute.
        assert_eq!(shape.refusal_period, Duration::from_secs(2));
        assert_eq!(shape.overloaded_every, 30);
        let smoke = Pacing::of(20.0, Duration::from_secs(4));
        assert_eq!(smoke.refresh_interval_s, 1);
        assert_eq!(smoke.sample_period, Duration::from_millis(50));
    }

    #[test]
    fn elapsed_times() {
        assert_eq!(elapsed(12.34), "12.3 s");
        assert_eq!(elapsed(600.0), "10:00");
        assert_eq!(elapsed(3600.0), "1:00:00");
    }
}
