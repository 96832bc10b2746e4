//! Turning raw per-request measurements into the figures the report shows: nearest-rank
//! percentiles over every sample (no histogram buckets, so no rounding of the tail), rates,
//! and the error tally of one phase.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// p50/p90/p99/p99.9/max of one distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `micros` (sorted in place). Empty input gives zeros.
    pub fn of(micros: &mut [u64]) -> Percentiles {
        if micros.is_empty() {
            return Percentiles::default();
        }
        micros.sort_unstable();
        let at = |p: f64| {
            // Nearest rank: the smallest value with at least p% of the samples at or below it.
            // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary rounding.
            let rank = ((p / 100.0) * micros.len() as f64 - 1e-9).ceil() as usize;
            micros[rank.clamp(1, micros.len()) - 1] as f64 / 1000.0
        };
        Percentiles {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            max: micros[micros.len() - 1] as f64 / 1000.0,
        }
    }

    /// `self − other` at each percentile (the proxy's overhead when `self` is through it).
    pub fn minus(&self, other: &Percentiles) -> Percentiles {
        Percentiles {
            p50: self.p50 - other.p50,
            p90: self.p90 - other.p90,
            p99: self.p99 - other.p99,
            p999: self.p999 - other.p999,
            max: self.max - other.max,
        }
    }
}

/// The outcome of one request as the load generator saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// From the intended start (the schedule), not the actual send: a late send counts.
    pub latency: Duration,
    /// From the intended start to the first body byte.
    pub ttfb: Option<Duration>,
    /// How late the generator actually sent it.
    pub lag: Duration,
    pub bytes: u64,
    /// `None` for a complete, successful answer; else a short error kind.
    pub error: Option<String>,
    /// `x-ccflare-request-id` of the answer, when the proxy gave one.
    pub request_id: Option<String>,
    /// Which request of a [`Mix`](crate::load::Mix) this was (0 when there is one kind).
    pub kind: usize,
    /// When the answer ended (its last byte, an error or the timeout): the crash scenario
    /// compares it with the instant the server was killed.
    pub ended: Instant,
}

/// Everything one phase (one side of one scenario) measured.
#[derive(Debug, Clone, Default)]
pub struct PhaseData {
    pub samples: Vec<Sample>,
    /// Requests the generator could not even start (its in-flight cap was reached).
    pub not_sent: u64,
    pub target_rate: f64,
    /// From the first intended start until the last answer ended.
    pub wall: Duration,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
}

impl PhaseData {
    pub fn merge(&mut self, other: PhaseData) {
        self.samples.extend(other.samples);
        self.not_sent += other.not_sent;
        self.target_rate = other.target_rate;
        self.wall += other.wall;
        self.max_in_flight = self.max_in_flight.max(other.max_in_flight);
    }

    /// Requests that reached the network (and so, through a proxy, should have a record).
    pub fn sent(&self) -> u64 {
        self.samples.len() as u64
    }

    pub fn summary(&self) -> PhaseSummary {
        let mut latency = Vec::with_capacity(self.samples.len());
        let mut ttfb = Vec::with_capacity(self.samples.len());
        let mut lag = Vec::with_capacity(self.samples.len());
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut bytes = 0;
        for sample in &self.samples {
            lag.push(sample.lag.as_micros() as u64);
            match &sample.error {
                None => {
                    latency.push(sample.latency.as_micros() as u64);
                    if let Some(first) = sample.ttfb {
                        ttfb.push(first.as_micros() as u64);
                    }
                    bytes += sample.bytes;
                }
                Some(kind) => *errors.entry(kind.clone()).or_default() += 1,
            }
        }
        if self.not_sent > 0 {
            errors.insert("generator in-flight cap".into(), self.not_sent);
        }
        let ok = latency.len() as u64;
        let wall = self.wall.as_secs_f64();
        PhaseSummary {
            target_rate: self.target_rate,
            achieved_rate: if wall > 0.0 { ok as f64 / wall } else { 0.0 },
            sent: self.sent(),
            ok,
            errors: errors.values().sum(),
            error_kinds: errors,
            latency_ms: Percentiles::of(&mut latency),
            ttfb_ms: Percentiles::of(&mut ttfb),
            send_lag_ms: Percentiles::of(&mut lag),
            bytes,
            wall_s: wall,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// One side (direct or through the proxy) of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub target_rate: f64,
    /// Successful answers per second of wall time.
    pub achieved_rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Successful requests only, from intended start to the last body byte.
    pub latency_ms: Percentiles,
    /// Successful requests only, from intended start to the first body byte.
    pub ttfb_ms: Percentiles,
    /// How late the generator sent requests (its own precision; large values mean the bench
    /// machine itself was saturated).
    pub send_lag_ms: Percentiles,
    pub bytes: u64,
    pub wall_s: f64,
    pub max_in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut micros: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut micros);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p90, 900.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
        let mut one = [1500];
        assert_eq!(Percentiles::of(&mut one).p50, 1.5);
    }

    #[test]
    fn errors_are_tallied_and_left_out_of_latency() {
        let sample = |ms: u64, error: Option<&str>| Sample {
            latency: Duration::from_millis(ms),
            ttfb: Some(Duration::from_millis(ms)),
            lag: Duration::ZERO,
            bytes: 10,
            error: error.map(str::to_owned),
            request_id: None,
            kind: 0,
            ended: Instant::now(),
        };
        let data = PhaseData {
            samples: vec![
                sample(1, None),
                sample(2, None),
                sample(900, Some("status 429")),
            ],
            not_sent: 1,
            target_rate: 3.0,
            wall: Duration::from_secs(1),
            max_in_flight: 2,
        };
        let summary = data.summary();
        assert_eq!(summary.ok, 2);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.error_kinds["status 429"], 1);
        assert_eq!(summary.latency_ms.max, 2.0);
        assert_eq!(summary.bytes, 20);
        assert_eq!(summary.achieved_rate, 2.0);
    }
}
