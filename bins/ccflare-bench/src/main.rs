//! `ccflare-bench`: measures what ccflare adds (latency, memory, CPU) and where its limits are,
//! against the mock upstream on loopback, with the release `ccflare-server` as its own process.
//! SPEC §14 has the targets; `docs/benchmarks.md` the results and what each figure means.
//!
//! Argument parsing and glue live here; the generator is `load`, the scenarios `scenarios`,
//! the proxy process `server` and `procfs`, the output `report`.

mod crash;
mod load;
mod procfs;
mod quota;
mod report;
mod scenarios;
mod server;
mod soak;
mod stats;

use anyhow::{Context, Result, bail};
use ccflare_mock::MockUpstream;
use clap::Parser;
use report::{Check, ProxyInfo, RecordsReport, Report};
use scenarios::{Bench, Plan, Scenario};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Benchmarks ccflare against a mock Anthropic upstream: latency overhead, memory and limits.
#[derive(Debug, Parser)]
#[command(name = "ccflare-bench", version)]
struct Options {
    /// Scenarios to run, repeatable or comma-separated [default: all but soak; smoke: all]
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Requests per second of the fixed-rate scenarios (json, stream, failover) [default: 1000;
    /// smoke: 100]
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of measured load per side (direct, through) of the fixed-rate scenarios
    /// [default: 10; smoke: 0.5]
    #[arg(long)]
    duration: Option<f64>,
    /// Measure this proxy instead of starting ccflare-server. It must forward to the mock
    /// (see --mock-port) with the three bench keys, which are printed at start.
    #[arg(long)]
    proxy_url: Option<String>,
    /// With --proxy-url: the proxy's pid, to read its memory and CPU from /proc.
    #[arg(long, requires = "proxy_url")]
    proxy_pid: Option<u32>,
    /// Seconds the soak runs, its warm-up (a sixth) included [default: 3600; smoke: 4]
    #[arg(long)]
    soak_duration: Option<f64>,
    /// Requests per second of the soak [default: 10; smoke: 20]
    #[arg(long)]
    soak_rate: Option<f64>,
    /// Requests per second of the crash's burst [default: 300; smoke: 100]
    #[arg(long)]
    crash_rate: Option<f64>,
    /// Seconds into the crash's burst the server is killed [default: 3; smoke: 1]
    #[arg(long)]
    crash_after: Option<f64>,
    /// Port of the mock upstream [default: any free port]
    #[arg(long, default_value_t = 0)]
    mock_port: u16,
    /// Every scenario in miniature (a few seconds), to check that the bench works.
    #[arg(long)]
    smoke: bool,
    /// Folder to write bench.md and bench.json to (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The ccflare-server binary [default: the one next to ccflare-bench]
    #[arg(long, conflicts_with = "proxy_url")]
    server_bin: Option<PathBuf>,
    /// Measure the `ccflare` binary with its terminal UI open on the Requests tab (in a tmux
    /// session of 120×40) instead of ccflare-server, for the fixed-rate and limit scenarios
    /// (the soak and the crash still start ccflare-server). Needs tmux.
    #[arg(long, conflicts_with = "proxy_url")]
    ui: bool,
    /// With --ui: the ccflare binary [default: the one next to ccflare-bench]
    #[arg(long, requires = "ui")]
    ui_bin: Option<PathBuf>,
    /// Start ccflare-server with client keys required (a key created before it starts) and
    /// send the key with every request through it, to measure key checking's overhead (the
    /// soak and the crash start their own servers, without keys).
    #[arg(long, conflicts_with_all = ["proxy_url", "ui"])]
    client_keys: bool,
    /// Run the quota simulation (issue 16) instead of the scenarios: four subscription windows
    /// in the mock, seeded Claude-Code-like conversations through ccflare-server, one run per
    /// strategy; prints the table of docs/benchmarks.md.
    #[arg(long, conflicts_with_all = ["proxy_url", "ui", "scenarios"])]
    quota: bool,
    /// The quota simulation's seed.
    #[arg(long, default_value_t = 16, requires = "quota")]
    quota_seed: u64,
    /// The quota simulation's demand as a share of the pool's capacity.
    #[arg(long, default_value_t = 0.9, requires = "quota")]
    quota_demand: f64,
    /// The strategies the quota simulation compares [default: all five]
    #[arg(long, value_delimiter = ',', requires = "quota")]
    quota_strategies: Vec<String>,
    /// Divides the pauses between turns, to shorten a quota run.
    #[arg(long, default_value_t = 1.0, requires = "quota")]
    quota_speed: f64,
}

impl Options {
    fn plan(&self) -> Result<Plan> {
        let mut plan = if self.smoke {
            Plan::smoke()
        } else {
            Plan::standard()
        };
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
                bail!("--rate must be between 0 and 1000000 requests per second");
            }
            plan.rate = rate;
        }
        if let Some(seconds) = self.duration {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
                bail!("--duration must be between 0 and 3600 seconds");
            }
            plan.duration = Duration::from_secs_f64(seconds);
        }
        if let Some(seconds) = self.soak_duration {
            // Four hours at most: the mock keeps every request it received, in this process.
            if !(seconds.is_finite() && (1.0..=14_400.0).contains(&seconds)) {
                bail!("--soak-duration must be between 1 and 14400 seconds");
            }
            plan.soak_duration = Duration::from_secs_f64(seconds);
        }
        if let Some(rate) = self.soak_rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
                bail!("--soak-rate must be between 0 and 10000 requests per second");
            }
            plan.soak_rate = rate;
        }
        if let Some(rate) = self.crash_rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
                bail!("--crash-rate must be between 0 and 100000 requests per second");
            }
            plan.crash_rate = rate;
        }
        if let Some(seconds) = self.crash_after {
            if !(seconds.is_finite() && (0.1..=600.0).contains(&seconds)) {
                bail!("--crash-after must be between 0.1 and 600 seconds");
            }
            plan.crash_kill_after = Duration::from_secs_f64(seconds);
        }
        Ok(plan)
    }

    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenarios.is_empty() {
            // The soak takes an hour: only a smoke run (where it takes seconds) includes it
            // unasked.
            return if self.smoke {
                Scenario::ALL.to_vec()
            } else {
                Scenario::STANDARD.to_vec()
            };
        }
        // The standard order, whatever order they were named in; each once.
        Scenario::ALL
            .into_iter()
            .filter(|s| self.scenarios.contains(s))
            .collect()
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ccflare-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

fn run(options: &Options) -> Result<()> {
    if options.quota {
        return run_quota(options);
    }
    let plan = options.plan()?;
    let fd_limit = procfs::raise_fd_limit();
    // The mock gets its own runtime so that its work and the generator's do not queue behind
    // each other on the same workers; both still share the machine's CPUs with the proxy.
    let mock_runtime = runtime("mock")?;
    let mock = mock_runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, options.mock_port))
            .await
            .with_context(|| format!("binding the mock to port {}", options.mock_port))?;
        MockUpstream::start_on(listener)
            .await
            .context("starting the mock upstream")
    })?;
    let load_runtime = runtime("load")?;
    let report = load_runtime.block_on(bench(options, plan, mock.clone(), fd_limit));
    drop(mock);
    // Connections may still be parked on the runtimes; nothing on them matters any more.
    load_runtime.shutdown_background();
    mock_runtime.shutdown_background();
    let report = report?;

    let markdown = report.markdown();
    let soak_failed = report.soak.as_ref().is_some_and(|soak| !soak.passed);
    let crash_failed = report.crash.as_ref().is_some_and(|crash| !crash.passed);
    println!("{markdown}");
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let md_path = out.join("bench.md");
        std::fs::write(&md_path, &markdown)
            .with_context(|| format!("writing {}", md_path.display()))?;
        let json_path = out.join("bench.json");
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(&json_path, json + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        eprintln!(
            "ccflare-bench: wrote {} and {}",
            md_path.display(),
            json_path.display()
        );
    }
    if soak_failed {
        bail!("the soak failed (see its checks above)");
    }
    if crash_failed {
        bail!("the crash scenario failed (see its checks above)");
    }
    Ok(())
}

/// The quota simulation: its own runtime, mock and servers.
fn run_quota(options: &Options) -> Result<()> {
    if !(options.quota_demand.is_finite() && (0.05..=5.0).contains(&options.quota_demand)) {
        bail!("--quota-demand must be between 0.05 and 5");
    }
    if !(options.quota_speed.is_finite() && (0.01..=100.0).contains(&options.quota_speed)) {
        bail!("--quota-speed must be between 0.01 and 100");
    }
    let strategies = if options.quota_strategies.is_empty() {
        quota::STRATEGIES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        options.quota_strategies.clone()
    };
    let plan = quota::QuotaPlan {
        seed: options.quota_seed,
        demand: options.quota_demand,
        strategies,
        speed: options.quota_speed,
    };
    let binary = match &options.server_bin {
        Some(path) => {
            std::path::absolute(path).with_context(|| format!("locating {}", path.display()))?
        }
        None => server::default_binary("ccflare-server")?,
    };
    let runtime = runtime("quota")?;
    let (header, results) = runtime.block_on(quota::run(&plan, &binary))?;
    runtime.shutdown_background();
    let markdown = quota::markdown(&header, &results);
    println!("{markdown}");
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join("quota.md");
        std::fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn bench(
    options: &Options,
    plan: Plan,
    mock: MockUpstream,
    fd_limit: procfs::FdLimit,
) -> Result<Report> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut machine = procfs::machine();
    let keys = scenarios::account_keys();
    let mock_url = mock.url();

    let scenarios = options.scenarios();
    // The soak and the crash start servers of their own; the main one is only for the others.
    let needs_server = scenarios
        .iter()
        .any(|s| !matches!(s, Scenario::Soak | Scenario::Crash));
    let server_bin = match (&options.proxy_url, &options.server_bin) {
        (Some(_), _) => None,
        // Absolute, because the server runs in its own temp folder.
        (None, Some(path)) => Some(
            std::path::absolute(path).with_context(|| format!("locating {}", path.display()))?,
        ),
        (None, None) => Some(server::default_binary("ccflare-server")?),
    };
    let main_bin = match (&options.ui, &options.ui_bin) {
        (false, _) => server_bin.clone(),
        (true, Some(path)) => Some(
            std::path::absolute(path).with_context(|| format!("locating {}", path.display()))?,
        ),
        (true, None) => Some(server::default_binary("ccflare")?),
    };
    let (server, binary) = match &options.proxy_url {
        Some(_) => {
            eprintln!(
                "ccflare-bench: the proxy must forward to {mock_url} with these accounts, in \
                 this order: {}",
                keys.join(", ")
            );
            (None, None)
        }
        None if !needs_server => (None, server_bin.clone()),
        None => {
            let binary = main_bin.clone().context("no server binary")?;
            let server = if options.ui {
                server::Server::start_ui(&binary, &mock_url, &keys).await?
            } else {
                let extras = server::Extras {
                    client_key: options.client_keys,
                    ..server::Extras::default()
                };
                server::Server::start_with(&binary, &mock_url, &keys, &extras).await?
            };
            eprintln!(
                "ccflare-bench: {} (pid {}) at {}, log {}, data in {}",
                binary.display(),
                server.pid,
                server.url,
                server.log_path.display(),
                server.dir().display()
            );
            (Some(server), Some(binary))
        }
    };
    let proxy_url = match (&server, &options.proxy_url) {
        (Some(server), _) => Some(server.url.clone()),
        (None, url) => url.clone(),
    };
    let proxy_pid = server.as_ref().map(|s| s.pid).or(options.proxy_pid);
    if needs_server {
        // Let the server finish starting (account sync, first allocations) before "idle".
        tokio::time::sleep(server::SETTLE).await;
    }
    let idle_at_start = proxy_pid.and_then(procfs::rss_kb);
    // The CPU an idle server uses (with --ui: the UI's slow tick and redraws, SPEC: under 2 %
    // of a core), measured before any load.
    let idle_cpu_percent = match proxy_pid {
        Some(pid) if needs_server => idle_cpu_percent(pid, plan.idle_sample).await,
        _ => None,
    };

    // Two sockets per request in this process when it talks to the mock directly (client and
    // mock side), plus headroom for the runtime and files.
    let soft = fd_limit.soft.unwrap_or(1024);
    let max_in_flight = (soft.saturating_sub(256) / 2).clamp(64, 20_000) as usize;
    let mut bench = Bench {
        plan,
        mock,
        mock_url: mock_url.clone(),
        // Only the soak and the crash run without a main server, and they do not use this.
        proxy_url: proxy_url.clone().unwrap_or_default(),
        proxy_pid,
        keys,
        through_key: server
            .as_ref()
            .and_then(|s| s.client_key.clone())
            .unwrap_or_else(|| scenarios::CLIENT_KEY.to_owned()),
        ticks_per_second: procfs::clock_ticks_per_second(),
        max_in_flight,
        through_sent: 0,
        through_ids: Vec::new(),
        server_bin,
        soak: None,
        crash: None,
    };
    let mut reports = Vec::new();
    for scenario in scenarios {
        eprintln!("ccflare-bench: {}", scenario.name());
        let report = bench
            .run(scenario)
            .await
            .with_context(|| format!("scenario {}", scenario.name()))?;
        reports.push(report);
    }

    if proxy_pid.is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let idle_at_end = proxy_pid.and_then(procfs::rss_kb);
    let records = match server {
        Some(server) => {
            let records = server.stop_and_count(&bench.through_ids).await?;
            Some(RecordsReport {
                requests_sent: bench.through_sent,
                rows: records.rows,
                lost: bench.through_sent as i64 - records.rows as i64,
                missing_ids: records.missing_ids,
                server_exit_code: records.exit_code,
            })
        }
        None => None,
    };
    machine.load_at_end = procfs::load_average();
    let mb = |kb: Option<u64>| kb.map(|kb| kb as f64 / 1024.0);
    let mut report = Report {
        started_at: report::utc_minute(started),
        command: std::env::args()
            .enumerate()
            .map(|(i, arg)| match i {
                // The binary's full path varies by machine and says nothing useful.
                0 => "ccflare-bench".to_owned(),
                _ => arg,
            })
            .collect::<Vec<_>>()
            .join(" "),
        smoke: options.smoke,
        machine,
        proxy: ProxyInfo {
            url: proxy_url,
            profile: binary.as_deref().map(server::profile_of),
            binary: binary.map(|b| b.display().to_string()),
            mock_url,
            idle_rss_mb_at_start: mb(idle_at_start),
            idle_rss_mb_at_end: mb(idle_at_end),
            ui: options.ui,
            idle_cpu_percent,
            fd_limit,
        },
        scenarios: reports,
        records,
        soak: bench.soak.take(),
        crash: bench.crash.take(),
        checks: Vec::new(),
    };
    report.checks = checks(&report, &bench.plan);
    Ok(report)
}

/// The CPU `pid` uses over `period` of idleness, in percent of one core.
async fn idle_cpu_percent(pid: u32, period: Duration) -> Option<f64> {
    let before = procfs::cpu_ticks(pid)?;
    let started = std::time::Instant::now();
    tokio::time::sleep(period).await;
    let ticks = procfs::cpu_ticks(pid)?.saturating_sub(before);
    let seconds = ticks as f64 / procfs::clock_ticks_per_second() as f64;
    Some(100.0 * seconds / started.elapsed().as_secs_f64())
}

/// SPEC §14's targets against this run. Speed targets are reported, never enforced.
fn checks(report: &Report, plan: &Plan) -> Vec<Check> {
    let mut checks = Vec::new();
    let find = |name: &str| report.scenarios.iter().find(|s| s.name == name);
    let full_size = !report.smoke;
    for name in ["json", "stream"] {
        let Some(overhead) = find(name).and_then(|s| s.overhead.as_ref()) else {
            continue;
        };
        let at_target_rate = full_size && (plan.rate - 1000.0).abs() < 1e-9;
        let mut add = |target: String, value: f64, limit: f64| {
            checks.push(Check {
                target,
                measured: format!("{value:+.3} ms"),
                met: at_target_rate.then_some(value <= limit),
            });
        };
        let rate = plan.rate;
        add(
            format!("{name}: overhead p50 ≤ 0.3 ms at 1,000 req/s (run: {rate} req/s)"),
            overhead.latency_ms.p50,
            0.3,
        );
        add(
            format!("{name}: overhead p99 ≤ 1 ms at 1,000 req/s (run: {rate} req/s)"),
            overhead.latency_ms.p99,
            1.0,
        );
        add(
            format!("{name}: time to first byte within 0.5 ms of direct (p50)"),
            overhead.ttfb_ms.p50,
            0.5,
        );
    }
    if report.proxy.ui
        && let Some(percent) = report.proxy.idle_cpu_percent
    {
        checks.push(Check {
            target: "the UI open and idle uses < 2 % of a core".into(),
            measured: format!("{percent:.2} % of a core"),
            met: Some(percent < 2.0),
        });
    }
    if let Some(idle) = report.proxy.idle_rss_mb_at_start {
        checks.push(Check {
            target: "idle RSS ≤ 30 MB (after start, before load)".into(),
            measured: format!("{idle:.1} MB"),
            met: Some(idle <= 30.0),
        });
    }
    if let Some(scenario) = find("slow-streams")
        && let Some(usage) = &scenario.proxy
    {
        let streams = scenario.through.as_ref().map_or(0, |t| t.sent);
        checks.push(Check {
            target: format!("≤ 100 MB with 1,000 concurrent streams (run: {streams})"),
            measured: format!("peak RSS {:.1} MB", usage.peak_rss_mb),
            met: (streams >= 1000).then_some(usage.peak_rss_mb <= 100.0),
        });
    }
    if let Some(scenario) = find("stream-100mb")
        && let Some(usage) = &scenario.proxy
    {
        let growth = usage.peak_rss_mb - usage.rss_before_mb;
        let mib = plan.big_stream_bytes >> 20;
        checks.push(Check {
            target: format!("{mib} MiB stream in constant memory (peak − before ≤ 8 MB)"),
            measured: format!(
                "{:.1} → peak {:.1} MB ({growth:+.1} MB)",
                usage.rss_before_mb, usage.peak_rss_mb
            ),
            met: Some(growth <= 8.0),
        });
    }
    if let Some(records) = &report.records {
        checks.push(Check {
            target: "no lost records: one row per request sent through the proxy".into(),
            measured: format!(
                "{} sent, {} rows, {} ids missing",
                records.requests_sent, records.rows, records.missing_ids
            ),
            met: Some(records.lost == 0 && records.missing_ids == 0),
        });
    }
    if let Some(through) = find("failover").and_then(|s| s.through.as_ref()) {
        checks.push(Check {
            target: "failover under load: clients see no errors".into(),
            measured: format!("{} errors in {} requests", through.errors, through.sent),
            met: Some(through.errors == 0),
        });
    }
    checks
}
