//! The scenarios of issue 6 and the plan that sizes them (standard or smoke). Each scenario
//! runs the same requests directly against the mock and then through the proxy, in the same
//! run, and measures the proxy process while the load goes through it.

use crate::crash::CrashReport;
use crate::load::{self, Expect, HttpClient, Mix, RequestSpec};
use crate::procfs::{self, Sampler};
use crate::report::{ProxyUsage, ScenarioReport};
use crate::soak::SoakReport;
use crate::stats::{PhaseData, PhaseSummary};
use anyhow::{Context, Result};
use bytes::Bytes;
use ccflare_mock::{Fault, MockUpstream};
use clap::ValueEnum;
use http::header::{HeaderName, HeaderValue};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Non-streaming Messages requests at a fixed rate.
    Json,
    /// Streaming requests (20 SSE events each) at a fixed rate.
    Stream,
    /// One 100 MB stream: throughput, and whether the proxy's memory stays flat.
    #[value(name = "stream-100mb")]
    Stream100mb,
    /// 1,000 concurrent slow streams: the memory ceiling.
    SlowStreams,
    /// 5 s at the highest rate the machine sustains; then every request must have its row.
    Burst,
    /// Three accounts, one answering 429 and one 529: clients must see no errors.
    Failover,
    /// An hour of mixed traffic at a steady rate against a server of its own (JSON, streams,
    /// failovers, client hang-ups, OAuth refreshes): the proxy's memory and open files must
    /// stay flat. Not in the default set (it takes an hour; `--soak-duration` shortens it).
    Soak,
    /// SIGKILL to a server of its own in the middle of a mixed burst at 300 req/s: the database
    /// must be intact, every answer completed more than 100 ms before the kill must have its
    /// row, and the server must start again on that database.
    Crash,
}

impl Scenario {
    /// The standard set, in the order it runs. The burst goes last but one, failover before
    /// it: the row check after the run covers every request anyway.
    pub const STANDARD: [Scenario; 7] = [
        Scenario::Json,
        Scenario::Stream,
        Scenario::Stream100mb,
        Scenario::SlowStreams,
        Scenario::Failover,
        Scenario::Burst,
        Scenario::Crash,
    ];

    /// Every scenario, in the order they run when named or in a smoke run: the standard set,
    /// then the soak, which has a server of its own.
    pub const ALL: [Scenario; 8] = [
        Scenario::Json,
        Scenario::Stream,
        Scenario::Stream100mb,
        Scenario::SlowStreams,
        Scenario::Failover,
        Scenario::Burst,
        Scenario::Crash,
        Scenario::Soak,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Json => "json",
            Scenario::Stream => "stream",
            Scenario::Stream100mb => "stream-100mb",
            Scenario::SlowStreams => "slow-streams",
            Scenario::Burst => "burst",
            Scenario::Failover => "failover",
            Scenario::Soak => "soak",
            Scenario::Crash => "crash",
        }
    }
}

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests per second of the fixed-rate scenarios (json, stream, failover).
    pub rate: f64,
    /// Measured load per side of a fixed-rate scenario, split into `segments` that alternate
    /// direct and through, so drift in the machine's load hits both sides alike.
    pub duration: Duration,
    pub segments: u32,
    /// Unmeasured load per side before measuring, to open pooled connections.
    pub warmup: Duration,
    pub big_stream_bytes: u64,
    pub slow_streams: u64,
    /// Gap between the SSE events of a slow stream (20 events, so 19 gaps).
    pub slow_gap: Duration,
    /// Streams opened per second in the slow-streams scenario.
    pub slow_open_rate: f64,
    /// Connections the generator may use per side (the slow streams get one each).
    pub connections: usize,
    /// Length of the burst, and so of each step of the search for its rate.
    pub burst: Duration,
    /// First rate the search tries; it doubles while the proxy keeps up.
    pub probe_start: f64,
    /// Requests per second of the soak, and how long it runs (its warm-up included).
    pub soak_rate: f64,
    pub soak_duration: Duration,
    /// Requests per second of the crash's burst, and how far into it the server is killed.
    pub crash_rate: f64,
    pub crash_kill_after: Duration,
    /// How long the idle server's CPU is measured before the load.
    pub idle_sample: Duration,
    /// A smoke run: timing claims (the crash's 100 ms) are reported, not judged.
    pub smoke: bool,
}

impl Plan {
    pub fn standard() -> Plan {
        Plan {
            rate: 1000.0,
            duration: Duration::from_secs(10),
            segments: 2,
            warmup: Duration::from_secs(1),
            big_stream_bytes: 100 << 20,
            slow_streams: 1000,
            slow_gap: Duration::from_millis(250),
            slow_open_rate: 1000.0,
            connections: 128,
            burst: Duration::from_secs(5),
            probe_start: 1000.0,
            soak_rate: crate::soak::STANDARD_RATE,
            soak_duration: crate::soak::STANDARD_DURATION,
            crash_rate: crate::crash::STANDARD_RATE,
            crash_kill_after: crate::crash::STANDARD_KILL_AFTER,
            idle_sample: Duration::from_secs(5),
            smoke: false,
        }
    }

    /// Every scenario in miniature: a few seconds in all, for CI.
    pub fn smoke() -> Plan {
        Plan {
            rate: 100.0,
            duration: Duration::from_millis(500),
            segments: 1,
            warmup: Duration::from_millis(100),
            big_stream_bytes: 4 << 20,
            slow_streams: 50,
            slow_gap: Duration::from_millis(20),
            slow_open_rate: 500.0,
            connections: 32,
            burst: Duration::from_millis(200),
            probe_start: 200.0,
            // A few seconds: enough for every kind of request, a failover and an OAuth
            // refresh per account; far too short to judge a slope, which the report says.
            soak_rate: 20.0,
            soak_duration: Duration::from_secs(4),
            crash_rate: 100.0,
            crash_kill_after: Duration::from_secs(1),
            idle_sample: Duration::from_millis(500),
            smoke: true,
        }
    }
}

/// Fourteen words: with `message_start`, `content_block_start`, `ping`, `content_block_stop`,
/// `message_delta` and `message_stop` the mock streams exactly 20 events.
const TEXT: &str = "The quick brown fox jumps over the lazy dog while five wizards box quickly.";

/// A Messages request of about a kilobyte, the size of a short chat turn.
fn request_body(stream: bool) -> Bytes {
    let question = "Summarise the trade-offs between open-loop and closed-loop load generation \
                    for measuring the latency a reverse proxy adds, and explain coordinated \
                    omission with a short example. "
        .repeat(3);
    let body = serde_json::json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": "You are a concise assistant that answers engineering questions.",
        "messages": [{ "role": "user", "content": question }],
    });
    Bytes::from(body.to_string())
}

/// What to ask the mock for.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Json,
    Stream,
    Big(u64),
    Slow(Duration),
    /// A slow stream (this gap between events) the client hangs up on after its first frame.
    HangUp(Duration),
}

/// The three account keys the server is started with, in routing order.
pub fn account_keys() -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .map(|name| format!("sk-ant-api03-bench-{name}-0123456789abcdefghijklmnop"))
        .collect()
}

/// A [`Mix`] of Messages requests to `base` with the client's key: one spec per shape, in
/// the order `pattern` indexes them.
pub fn mix_at(base: &str, shapes: &[Shape], pattern: Vec<usize>) -> Result<Mix> {
    let specs = shapes
        .iter()
        .map(|shape| spec_at(base, CLIENT_KEY, *shape))
        .collect::<Result<_>>()?;
    Ok(Mix { specs, pattern })
}

/// One kind of Messages request to `base` with `key` as the client's `x-api-key`.
pub fn spec_at(base: &str, key: &str, shape: Shape) -> Result<RequestSpec> {
    let uri = format!("{}/v1/messages", base.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("building a URL from {base}"))?;
    let mut headers = vec![
        (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(key)?,
        ),
        (
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        ),
        (
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ),
        (
            HeaderName::from_static("x-mock-text"),
            HeaderValue::from_static(TEXT),
        ),
    ];
    let (stream, expect, timeout) = match shape {
        Shape::Json => (false, Expect::Json, Duration::from_secs(30)),
        Shape::Stream => (true, Expect::Stream, Duration::from_secs(30)),
        Shape::Big(bytes) => {
            headers.push((
                HeaderName::from_static("x-mock-stream-bytes"),
                HeaderValue::from(bytes),
            ));
            (true, Expect::Stream, Duration::from_secs(300))
        }
        Shape::Slow(gap) | Shape::HangUp(gap) => {
            headers.push((
                HeaderName::from_static("x-mock-chunk-delay-ms"),
                HeaderValue::from(gap.as_millis() as u64),
            ));
            let expect = match shape {
                Shape::HangUp(_) => Expect::HangUp,
                _ => Expect::Stream,
            };
            (true, expect, gap * 20 + Duration::from_secs(60))
        }
    };
    Ok(RequestSpec {
        uri,
        headers,
        body: request_body(stream),
        expect,
        timeout,
    })
}

/// What a client sends through the proxy as its own key; the proxy replaces it.
pub const CLIENT_KEY: &str = "sk-ant-api03-bench-client-key-is-replaced";

pub struct Bench {
    pub plan: Plan,
    pub mock: MockUpstream,
    pub mock_url: String,
    pub proxy_url: String,
    pub proxy_pid: Option<u32>,
    pub keys: Vec<String>,
    /// What requests through the proxy send as their key: [`CLIENT_KEY`], or with
    /// `--client-keys` the client key the server requires.
    pub through_key: String,
    pub ticks_per_second: u64,
    pub max_in_flight: usize,
    /// Every request sent through the proxy, for the row check.
    pub through_sent: u64,
    pub through_ids: Vec<String>,
    /// The server binary, when the bench starts servers (the soak starts its own).
    pub server_bin: Option<PathBuf>,
    /// The soak's own report, when it ran.
    pub soak: Option<SoakReport>,
    /// The crash's own report, when it ran.
    pub crash: Option<CrashReport>,
}

/// Measures the proxy process across a scenario: peak memory and CPU per request.
struct Meter {
    pid: Option<u32>,
    sampler: Option<Sampler>,
    before_kb: u64,
    peak_reset: bool,
    ticks: u64,
    /// Run-queue wait of the proxy and of this process (generator and mock), in ns.
    proxy_wait: u64,
    bench_wait: u64,
    requests: u64,
    running_since: Option<(u64, u64, u64)>,
}

impl Meter {
    fn begin(pid: Option<u32>, period: Duration) -> Meter {
        let peak_reset = pid.is_some_and(procfs::reset_peak);
        Meter {
            pid,
            sampler: pid.map(|pid| Sampler::start(pid, period, false)),
            before_kb: pid.and_then(procfs::rss_kb).unwrap_or(0),
            peak_reset,
            ticks: 0,
            proxy_wait: 0,
            bench_wait: 0,
            requests: 0,
            running_since: None,
        }
    }

    /// CPU ticks, proxy run-queue wait and bench run-queue wait, now.
    fn counters(&self) -> Option<(u64, u64, u64)> {
        let pid = self.pid?;
        Some((
            procfs::cpu_ticks(pid)?,
            procfs::run_queue_wait_ns(pid)?,
            procfs::run_queue_wait_ns(std::process::id())?,
        ))
    }

    fn resume(&mut self) {
        self.running_since = self.counters();
    }

    fn pause(&mut self, requests: u64) {
        if let (Some(start), Some(now)) = (self.running_since.take(), self.counters()) {
            self.ticks += now.0.saturating_sub(start.0);
            self.proxy_wait += now.1.saturating_sub(start.1);
            self.bench_wait += now.2.saturating_sub(start.2);
        }
        self.requests += requests;
    }

    async fn end(self, ticks_per_second: u64) -> Option<ProxyUsage> {
        let pid = self.pid?;
        let (sampled_max, series) = match self.sampler {
            Some(sampler) => sampler.stop().await,
            None => (0, Vec::new()),
        };
        let hwm = if self.peak_reset {
            procfs::peak_rss_kb(pid).unwrap_or(0)
        } else {
            0
        };
        let after = procfs::rss_kb(pid).unwrap_or(0);
        let mb = |kb: u64| kb as f64 / 1024.0;
        let per_1000 =
            |total: f64| (self.requests > 0).then(|| total / self.requests as f64 * 1000.0);
        let cpu_s_per_1000 = per_1000(self.ticks as f64 / ticks_per_second as f64);
        let proxy_wait_ms_per_1000 = per_1000(self.proxy_wait as f64 / 1e6);
        let bench_wait_ms_per_1000 = per_1000(self.bench_wait as f64 / 1e6);
        Some(ProxyUsage {
            peak_rss_mb: mb(hwm.max(sampled_max)),
            rss_before_mb: mb(self.before_kb),
            rss_after_mb: mb(after),
            cpu_s_per_1000,
            proxy_wait_ms_per_1000,
            bench_wait_ms_per_1000,
            samples: series.len(),
        })
    }
}

impl Bench {
    fn spec(&self, through: bool, key: &str, shape: Shape) -> Result<RequestSpec> {
        if through {
            spec_at(&self.proxy_url, &self.through_key, shape)
        } else {
            spec_at(&self.mock_url, key, shape)
        }
    }

    fn count(&self, seconds: f64, rate: f64) -> u64 {
        (seconds * rate).round().max(1.0) as u64
    }

    /// An open-loop phase straight to the mock.
    async fn direct(
        &self,
        client: &HttpClient,
        spec: &RequestSpec,
        rate: f64,
        count: u64,
        connections: usize,
    ) -> PhaseData {
        load::open_loop(client, spec, rate, count, connections, self.max_in_flight).await
    }

    /// An open-loop phase through the proxy, counted for the row check.
    async fn through(
        &mut self,
        client: &HttpClient,
        spec: &RequestSpec,
        rate: f64,
        count: u64,
        connections: usize,
    ) -> PhaseData {
        // The same open loop as a direct phase; `spec` aims it at the proxy.
        let data = self.direct(client, spec, rate, count, connections).await;
        self.through_sent += data.sent();
        self.through_ids
            .extend(data.samples.iter().filter_map(|s| s.request_id.clone()));
        data
    }

    pub async fn run(&mut self, scenario: Scenario) -> Result<ScenarioReport> {
        match scenario {
            Scenario::Json => {
                let description = format!(
                    "non-streaming Messages requests (~{} B body), {} req/s open loop",
                    request_body(false).len(),
                    self.plan.rate
                );
                self.fixed_rate("json", description, Shape::Json, 0).await
            }
            Scenario::Stream => {
                let description = format!(
                    "streaming requests, 20 SSE events each sent back to back, {} req/s",
                    self.plan.rate
                );
                self.fixed_rate("stream", description, Shape::Stream, 0)
                    .await
            }
            Scenario::Failover => self.failover().await,
            Scenario::Stream100mb => self.big_stream().await,
            Scenario::SlowStreams => self.slow_streams().await,
            Scenario::Burst => self.burst().await,
            Scenario::Soak => crate::soak::run(self).await,
            Scenario::Crash => crate::crash::run(self).await,
        }
    }

    /// Warm-up, then `segments` rounds of direct then through at the plan's rate.
    async fn fixed_rate(
        &mut self,
        name: &str,
        description: String,
        shape: Shape,
        direct_key: usize,
    ) -> Result<ScenarioReport> {
        let rate = self.plan.rate;
        let connections = self.plan.connections;
        let direct_spec = self.spec(false, &self.keys[direct_key].clone(), shape)?;
        let through_spec = self.spec(true, "", shape)?;
        let direct_client = load::client(connections);
        let through_client = load::client(connections);
        let warm = self.count(self.plan.warmup.as_secs_f64(), rate);
        self.direct(&direct_client, &direct_spec, rate, warm, connections)
            .await;
        self.through(&through_client, &through_spec, rate, warm, connections)
            .await;

        let segments = self.plan.segments.max(1);
        let per_segment = self.count(self.plan.duration.as_secs_f64() / f64::from(segments), rate);
        let mut meter = Meter::begin(self.proxy_pid, Duration::from_millis(20));
        let mut direct = PhaseData::default();
        let mut through = PhaseData::default();
        for _ in 0..segments {
            let data = self
                .direct(&direct_client, &direct_spec, rate, per_segment, connections)
                .await;
            direct.merge(data);
            meter.resume();
            let data = self
                .through(
                    &through_client,
                    &through_spec,
                    rate,
                    per_segment,
                    connections,
                )
                .await;
            meter.pause(data.sent());
            through.merge(data);
        }
        let usage = meter.end(self.ticks_per_second).await;
        Ok(ScenarioReport::new(
            name,
            description,
            Some(direct.summary()),
            Some(through.summary()),
            usage,
        ))
    }

    async fn failover(&mut self) -> Result<ScenarioReport> {
        // A 429 without rate-limit headers does not bench the account, so *every* request
        // that the session strategy sends to the first account fails over: the worst case.
        // The 529 benches the second account for 15 s each time it is tried.
        self.mock.set_sticky_fault(
            &self.keys[0],
            Some(Fault::RateLimited {
                retry_after: None,
                reset: None,
            }),
        );
        self.mock
            .set_sticky_fault(&self.keys[1], Some(Fault::Overloaded));
        let description = format!(
            "three accounts: the first answers every request with 429 (no rate-limit headers, so \
             it is never benched and every request fails over), the second 529 (benched 15 s at \
             a time), the third serves; JSON requests at {} req/s. Direct = the serving account \
             alone, so the overhead includes the failed attempts",
            self.plan.rate
        );
        let result = self
            .fixed_rate("failover", description, Shape::Json, 2)
            .await;
        self.mock.set_sticky_fault(&self.keys[0], None);
        self.mock.set_sticky_fault(&self.keys[1], None);
        result
    }

    async fn big_stream(&mut self) -> Result<ScenarioReport> {
        let bytes = self.plan.big_stream_bytes;
        let shape = Shape::Big(bytes);
        let direct_spec = self.spec(false, &self.keys[0].clone(), shape)?;
        let through_spec = self.spec(true, "", shape)?;
        let client = load::client(1);
        let direct = self.direct(&client, &direct_spec, 1.0, 1, 1).await;
        let mut meter = Meter::begin(self.proxy_pid, Duration::from_millis(5));
        meter.resume();
        let through = self.through(&client, &through_spec, 1.0, 1, 1).await;
        meter.pause(1);
        let usage = meter.end(self.ticks_per_second).await;
        let mut report = ScenarioReport::new(
            "stream-100mb",
            format!(
                "one stream of {} MiB ({} text deltas of 1 KiB) read as fast as the client can",
                bytes >> 20,
                bytes.div_ceil(1024)
            ),
            Some(direct.summary()),
            Some(through.summary()),
            usage,
        );
        for (path, phase) in [("direct", &report.direct), ("ccflare", &report.through)] {
            if let Some(phase) = phase
                && phase.latency_ms.max > 0.0
            {
                let mb_per_s = phase.bytes as f64 / 1e6 / (phase.latency_ms.max / 1000.0);
                report.notes.push(format!("{path}: {mb_per_s:.0} MB/s"));
            }
        }
        Ok(report)
    }

    async fn slow_streams(&mut self) -> Result<ScenarioReport> {
        let count = self.plan.slow_streams;
        let gap = self.plan.slow_gap;
        let rate = self.plan.slow_open_rate;
        let shape = Shape::Slow(gap);
        let direct_spec = self.spec(false, &self.keys[0].clone(), shape)?;
        let through_spec = self.spec(true, "", shape)?;
        // One connection per stream: they are all open at once.
        let connections = count as usize;
        let direct = self
            .direct(
                &load::client(connections),
                &direct_spec,
                rate,
                count,
                connections,
            )
            .await;
        let mut meter = Meter::begin(self.proxy_pid, Duration::from_millis(20));
        meter.resume();
        let through = self
            .through(
                &load::client(connections),
                &through_spec,
                rate,
                count,
                connections,
            )
            .await;
        meter.pause(through.sent());
        let usage = meter.end(self.ticks_per_second).await;
        let mut report = ScenarioReport::new(
            "slow-streams",
            format!(
                "{count} streams of 20 events {} ms apart (~{:.1} s each), opened at {rate} per \
                 second, so all are open at once",
                gap.as_millis(),
                (gap * 19).as_secs_f64()
            ),
            Some(direct.summary()),
            Some(through.summary()),
            usage,
        );
        report.notes.push(format!(
            "most streams open at once: direct {}, ccflare {}",
            direct.max_in_flight, through.max_in_flight
        ));
        Ok(report)
    }

    /// Whether the proxy kept up with a step of the rate search: every request answered, the
    /// schedule held, and the median not queueing.
    fn sustained(summary: &PhaseSummary) -> bool {
        summary.errors == 0
            && summary.achieved_rate >= 0.95 * summary.target_rate
            && summary.latency_ms.p50 <= SUSTAINED_P50_MS
    }

    /// One step of the rate search: `burst` long at `rate` through the proxy, measured.
    async fn step(
        &mut self,
        client: &HttpClient,
        spec: &RequestSpec,
        rate: f64,
        steps: &mut Vec<String>,
    ) -> Step {
        let connections = self.plan.connections;
        let count = self.count(self.plan.burst.as_secs_f64(), rate);
        let mut meter = Meter::begin(self.proxy_pid, Duration::from_millis(20));
        meter.resume();
        let data = self.through(client, spec, rate, count, connections).await;
        meter.pause(data.sent());
        let usage = meter.end(self.ticks_per_second).await;
        let summary = data.summary();
        let kept_up = Self::sustained(&summary);
        steps.push(step_note(rate, &summary, kept_up));
        // Let the proxy drain (writer queue, connections) before the next step; a smoke
        // run's short steps need only a short pause.
        tokio::time::sleep(self.plan.burst.min(Duration::from_secs(1))).await;
        Step {
            rate,
            summary,
            usage,
            kept_up,
        }
    }

    /// The burst: open-loop steps through the proxy, doubling from the plan's start rate until
    /// one falls behind, then one halfway back. Each step lasts as long as the burst, so the
    /// fastest step that kept up *is* the burst at the highest rate the machine sustains.
    async fn burst(&mut self) -> Result<ScenarioReport> {
        let connections = self.plan.connections;
        let direct_spec = self.spec(false, &self.keys[0].clone(), Shape::Json)?;
        let through_spec = self.spec(true, "", Shape::Json)?;
        let through_client = load::client(connections);
        let mut notes = Vec::new();
        let mut best: Option<Step> = None;
        let mut failed_at = None;
        let mut rate = self.plan.probe_start;
        // Doubling: at most 10 steps (a thousand-fold range).
        for _ in 0..10 {
            let step = self
                .step(&through_client, &through_spec, rate, &mut notes)
                .await;
            if !step.kept_up {
                failed_at = Some(rate);
                break;
            }
            best = Some(step);
            rate *= 2.0;
        }
        if let (Some(low), Some(high)) = (best.as_ref().map(|b| b.rate), failed_at) {
            let step = self
                .step(
                    &through_client,
                    &through_spec,
                    (low + high) / 2.0,
                    &mut notes,
                )
                .await;
            if step.kept_up {
                best = Some(step);
            }
        }
        // Nothing kept up, not even the first step: report that step as it went.
        let best = match best {
            Some(best) => best,
            None => {
                let rate = self.plan.probe_start;
                self.step(&through_client, &through_spec, rate, &mut notes)
                    .await
            }
        };
        let direct_client = load::client(connections);
        let count = self.count(self.plan.burst.as_secs_f64(), best.rate);
        let warm = self.count(self.plan.warmup.as_secs_f64(), best.rate);
        self.direct(&direct_client, &direct_spec, best.rate, warm, connections)
            .await;
        let direct = self
            .direct(&direct_client, &direct_spec, best.rate, count, connections)
            .await;
        let mut report = ScenarioReport::new(
            "burst",
            format!(
                "{} s of JSON requests over {connections} connections at the highest rate the \
                 proxy sustained: steps of that length from {} req/s, doubling while a step \
                 has no errors, ≥ 95 % of its rate and p50 ≤ {SUSTAINED_P50_MS} ms, then one \
                 halfway back; the fastest step that kept up is reported, and the same rate \
                 direct. Then the server is stopped with SIGTERM and every request sent through \
                 it must have exactly one row",
                self.plan.burst.as_secs_f64(),
                self.plan.probe_start,
            ),
            Some(direct.summary()),
            Some(best.summary),
            best.usage,
        );
        report.notes.push(format!("steps: {}", notes.join("; ")));
        Ok(report)
    }
}

/// One step of the burst's rate search.
struct Step {
    rate: f64,
    summary: PhaseSummary,
    usage: Option<ProxyUsage>,
    kept_up: bool,
}

/// The median latency above which a rate is taken as not sustained: requests are queueing.
const SUSTAINED_P50_MS: f64 = 10.0;

fn step_note(rate: f64, summary: &PhaseSummary, ok: bool) -> String {
    format!(
        "{rate:.0} req/s {} (achieved {:.0}, p50 {:.1} ms, {} errors)",
        if ok { "kept up" } else { "fell behind" },
        summary.achieved_rate,
        summary.latency_ms.p50,
        summary.errors
    )
}
