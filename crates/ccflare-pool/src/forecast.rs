//! The forecast of one subscription window (issue 16): from the utilisation and reset each
//! answer's unified headers gave (protocol doc §3.2) and the tokens the account served, how big
//! the window is in tokens, how much of it is left now, how fast it is used, and when it will
//! reach 100 %.
//!
//! The API reports a window's use as a fraction, never its size; accounts differ (Pro, Max 5×,
//! Max 20×), so "most room" must be tokens, not fraction. The size is inferred as the tokens
//! served between two points of the same window divided by the utilisation that moved between
//! them, once it moved by at least [`MIN_SIZE_DELTA`] (utilisation comes with two decimals).
//! The size survives a window's reset: it is the plan's, not the window's.
//!
//! Two decimals hide up to half a point of the window (the header is taken as rounded, as the
//! mock does): 5,700 tokens of a 1.1M window, more than a turn costs. So the tokens left are the
//! tightest of what every point allows, each rounded up by half a point (`WindowTrack::left`),
//! and before the size can be inferred a lower bound of it (tokens served over the utilisation
//! rounded up, `WindowTrack::floor`) ranks the accounts: taking the first answers' `0.01` at its
//! word made a 1.1M window look like 1.4M and drew every new conversation to it.
//!
//! Pure, like the rest of the crate: every call takes `now`, and the tokens served so far (a
//! running count the pool keeps per account, in [`window_cost`] units).

use ccflare_core::{Millis, Usage};
use std::collections::VecDeque;

/// The share of a cache read assumed to count against a subscription window. The API does not
/// say; the size inference uses the same rule, so a different truth is partly absorbed in the
/// inferred size.
pub const CACHE_READ_WEIGHT: f64 = 0.1;
/// The least utilisation move a size is inferred from (utilisation has two decimals, so this
/// bounds the error at about 10 %).
pub const MIN_SIZE_DELTA: f64 = 0.05;
/// Points kept per window; the oldest go first (the size uses the first and the last, the rate
/// the recent ones).
const MAX_POINTS: usize = 32;
/// The span the rate of use is measured over.
pub const RATE_SPAN_MS: i64 = 15 * 60_000;
/// Half the last decimal of a utilisation header: the most rounding can hide.
const ROUNDING: f64 = 0.005;
/// Two resets closer than this are the same window (the header has whole seconds; a window
/// whose reset moved by more than this has rolled over).
const SAME_WINDOW_MS: i64 = 60_000;

/// What one request counts against a window, by [`CACHE_READ_WEIGHT`]'s rule.
pub fn window_cost(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.cache_creation_input_tokens)
        .saturating_add(usage.output_tokens)
        .saturating_add((usage.cache_read_input_tokens as f64 * CACHE_READ_WEIGHT).round() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at: Millis,
    utilization: f64,
    /// The account's tokens served (running count) when the point was seen.
    served: u64,
}

/// How much to trust a forecast: how many points of the current window it rests on, over how
/// long, and whether the size was inferred (else the fraction alone is known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confidence {
    pub points: u32,
    pub span_ms: i64,
    pub size_known: bool,
}

/// One window as forecast at a given time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Forecast {
    /// Estimated use now: the last utilisation seen, plus what was served since.
    pub utilization: f64,
    /// The inferred size of the window in tokens.
    pub size_tokens: Option<u64>,
    /// Without it, a rough lower bound from the window's first answers (ranking only).
    pub rough_size_tokens: Option<u64>,
    /// Tokens left now, when the size is known.
    pub tokens_left: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<Millis>,
    /// Utilisation per hour over the last [`RATE_SPAN_MS`].
    pub rate_per_hour: Option<f64>,
    /// When it reaches 100 % at that rate, if before its reset.
    pub exhausts_at: Option<Millis>,
    pub confidence: Confidence,
}

impl Forecast {
    /// Whether the forecast says the window reaches 100 % within `horizon_ms` of `now`.
    pub fn exhausts_within(&self, now: Millis, horizon_ms: i64) -> bool {
        self.exhausts_at.is_some_and(|at| at <= now + horizon_ms)
    }
}

/// The points of an account's current five-hour window and what was inferred from them.
#[derive(Debug, Clone, Default)]
pub struct WindowTrack {
    reset_at: Option<Millis>,
    points: VecDeque<Point>,
    size_tokens: Option<u64>,
    /// Tokens served before the first request of this window seen here.
    base: Option<u64>,
    /// The least the size can be: the most any point's tokens served in its window over its
    /// utilisation rounded up (half of the last decimal). Others' use of the account only makes
    /// the true size bigger, so it holds whoever else uses the account.
    floor: u64,
}

impl WindowTrack {
    /// Takes one answer's utilisation and reset, seen at `now` when the account had served
    /// `served` tokens, that answer's `cost` included.
    pub fn observe(
        &mut self,
        utilization: f64,
        reset_at: Option<Millis>,
        served: u64,
        cost: u64,
        now: Millis,
    ) {
        if !utilization.is_finite() {
            return;
        }
        let rolled = match (self.reset_at, reset_at) {
            (Some(old), Some(new)) => (new - old).abs() > SAME_WINDOW_MS,
            (Some(old), None) => now >= old,
            _ => false,
        };
        if rolled || self.reset_at.is_some_and(|old| now >= old) {
            self.points.clear();
            self.base = None;
        }
        if self.base.is_none() {
            self.base = Some(served.saturating_sub(cost));
        }
        if reset_at.is_some() {
            self.reset_at = reset_at;
        }
        // Answers can arrive out of order; a point older than the last is dropped.
        if self.points.back().is_some_and(|last| last.at > now) {
            return;
        }
        if self.points.len() == MAX_POINTS {
            // Keep the first (the size's anchor): drop the second oldest.
            self.points.remove(1);
        }
        self.points.push_back(Point {
            at: now,
            utilization,
            served,
        });
        if let Some(base) = self.base {
            let bound = served.saturating_sub(base) as f64 / (utilization + ROUNDING).max(ROUNDING);
            self.floor = self.floor.max(bound as u64);
        }
        self.infer_size();
    }

    fn infer_size(&mut self) {
        let (Some(first), Some(last)) = (self.points.front(), self.points.back()) else {
            return;
        };
        let moved = last.utilization - first.utilization;
        if moved >= MIN_SIZE_DELTA && last.served > first.served {
            let size = (last.served - first.served) as f64 / moved;
            self.size_tokens = Some(size.round() as u64);
        }
    }

    /// The inferred size, kept across resets.
    pub fn size_tokens(&self) -> Option<u64> {
        self.size_tokens
    }

    /// A rough size before the utilisation moved enough for [`WindowTrack::size_tokens`]: the
    /// floor, the least the size can be by any point so far (a lower bound, for ranking only).
    fn rough_size(&self) -> Option<u64> {
        (self.floor > 0).then_some(self.floor)
    }

    /// Tokens left in a window of `size` (now at `utilization`) when the account has served
    /// `served`: every point says the window had at most `size × (1 − utilisation − rounding)`
    /// left when it was seen, less what was served since; the tightest of these (the point whose
    /// utilisation was rounded down the most) is taken, never more than the estimate from the
    /// last point alone. Many points make it close to the truth; a plain `(1 − utilisation) ×
    /// size` can be off by half a point of the window, which near the end rejects it.
    fn left(&self, size: u64, served: u64, utilization: f64) -> u64 {
        let size = size as f64;
        let plain = (1.0 - utilization).max(0.0) * size;
        let bound = self
            .points
            .iter()
            .map(|p| {
                size * (1.0 - p.utilization - ROUNDING) - served.saturating_sub(p.served) as f64
            })
            .fold(f64::MIN, f64::max);
        bound.min(plain).max(0.0).round() as u64
    }

    /// The window at `now`, when the account has served `served` tokens.
    pub fn forecast(&self, served: u64, now: Millis) -> Option<Forecast> {
        // A window whose reset has passed is empty again; the size is still the plan's.
        if self.reset_at.is_some_and(|at| now >= at) {
            return Some(Forecast {
                utilization: 0.0,
                size_tokens: self.size_tokens,
                rough_size_tokens: self.size_tokens,
                tokens_left: self.size_tokens,
                reset_at: None,
                rate_per_hour: None,
                exhausts_at: None,
                confidence: Confidence {
                    size_known: self.size_tokens.is_some(),
                    ..Confidence::default()
                },
            });
        }
        let last = *self.points.back()?;
        let since = served.saturating_sub(last.served);
        let utilization = match self.size_tokens {
            Some(size) if size > 0 => last.utilization + since as f64 / size as f64,
            _ => last.utilization,
        };
        let tokens_left = self
            .size_tokens
            .map(|size| self.left(size, served, utilization));
        let first = *self.points.front()?;
        let recent = self
            .points
            .iter()
            .find(|p| last.at - p.at <= RATE_SPAN_MS)
            .copied()
            .unwrap_or(last);
        let rate_per_ms = match last.at - recent.at {
            span if span > 0 => {
                Some((last.utilization - recent.utilization).max(0.0) / span as f64)
            }
            _ => None,
        };
        let exhausts_at = rate_per_ms.filter(|&r| r > 0.0).and_then(|rate| {
            let at = now + ((1.0 - utilization).max(0.0) / rate) as Millis;
            self.reset_at.is_none_or(|reset| at < reset).then_some(at)
        });
        Some(Forecast {
            utilization,
            size_tokens: self.size_tokens,
            rough_size_tokens: match (self.size_tokens, self.rough_size()) {
                (Some(size), floor) => Some(size.max(floor.unwrap_or(0))),
                (None, floor) => floor,
            },
            tokens_left,
            reset_at: self.reset_at,
            rate_per_hour: rate_per_ms.map(|r| r * 3_600_000.0),
            exhausts_at,
            confidence: Confidence {
                points: self.points.len() as u32,
                span_ms: last.at - first.at,
                size_known: self.size_tokens.is_some(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_800_000_000_000;
    const MIN: i64 = 60_000;
    const RESET: Millis = T0 + 300 * MIN;

    /// Observations (minutes after T0, utilisation, tokens served, reset) and what the forecast
    /// says at a time, with tokens served by then.
    struct Case {
        name: &'static str,
        points: &'static [(i64, f64, u64, Option<Millis>)],
        at_min: i64,
        served: u64,
        utilization: f64,
        size: Option<u64>,
        left: Option<u64>,
        exhausts_min: Option<i64>,
        points_kept: u32,
    }

    fn check(case: &Case) {
        let mut track = WindowTrack::default();
        for &(minute, utilization, served, reset) in case.points {
            track.observe(utilization, reset, served, 0, T0 + minute * MIN);
        }
        let forecast = track.forecast(case.served, T0 + case.at_min * MIN);
        let Some(forecast) = forecast else {
            assert!(case.points.is_empty(), "{}: no forecast", case.name);
            return;
        };
        assert!(
            (forecast.utilization - case.utilization).abs() < 1e-6,
            "{}: utilisation {}",
            case.name,
            forecast.utilization
        );
        assert_eq!(forecast.size_tokens, case.size, "{}: size", case.name);
        assert_eq!(forecast.tokens_left, case.left, "{}: left", case.name);
        assert_eq!(
            forecast.exhausts_at.map(|at| (at - T0 + MIN / 2) / MIN),
            case.exhausts_min,
            "{}: exhausts",
            case.name
        );
        assert_eq!(
            forecast.confidence.points, case.points_kept,
            "{}",
            case.name
        );
    }

    #[test]
    fn forecasts() {
        let cases = [
            Case {
                name: "steady use: 10 % per 10 minutes of a 100k window",
                points: &[
                    (0, 0.10, 10_000, Some(RESET)),
                    (10, 0.20, 20_000, Some(RESET)),
                    (20, 0.30, 30_000, Some(RESET)),
                ],
                at_min: 20,
                served: 30_000,
                utilization: 0.30,
                size: Some(100_000),
                // Half a point of rounding below (1 − 0.30) × 100k.
                left: Some(69_500),
                // 70 % left at 1 % a minute.
                exhausts_min: Some(90),
                points_kept: 3,
            },
            Case {
                name: "served since the last answer counts against what is left",
                points: &[
                    (0, 0.10, 10_000, Some(RESET)),
                    (10, 0.20, 20_000, Some(RESET)),
                ],
                at_min: 10,
                served: 30_000,
                utilization: 0.30,
                size: Some(100_000),
                left: Some(69_500),
                exhausts_min: Some(80),
                points_kept: 2,
            },
            Case {
                name: "a burst: the rate is the recent one",
                points: &[
                    (0, 0.10, 40_000, Some(RESET)),
                    (100, 0.12, 48_000, Some(RESET)),
                    (110, 0.52, 208_000, Some(RESET)),
                ],
                at_min: 110,
                served: 208_000,
                utilization: 0.52,
                size: Some(400_000),
                left: Some(190_000),
                // 40 % in 10 minutes: the 48 % left go in 12.
                exhausts_min: Some(122),
                points_kept: 3,
            },
            Case {
                name: "too small a move says nothing of the size",
                points: &[
                    (0, 0.10, 10_000, Some(RESET)),
                    (5, 0.12, 12_000, Some(RESET)),
                ],
                at_min: 5,
                served: 12_000,
                utilization: 0.12,
                size: None,
                left: None,
                exhausts_min: Some(5 + 220),
                points_kept: 2,
            },
            Case {
                name: "slow use exhausts after the reset: no exhaustion forecast",
                points: &[
                    (0, 0.10, 10_000, Some(RESET)),
                    (60, 0.20, 20_000, Some(RESET)),
                ],
                at_min: 60,
                served: 20_000,
                utilization: 0.20,
                size: Some(100_000),
                left: Some(79_500),
                exhausts_min: None,
                points_kept: 2,
            },
            Case {
                name: "reset rollover: new points, the size stays",
                points: &[
                    (0, 0.40, 40_000, Some(RESET)),
                    (10, 0.60, 60_000, Some(RESET)),
                    (301, 0.05, 65_000, Some(RESET + 300 * MIN)),
                ],
                at_min: 301,
                served: 65_000,
                utilization: 0.05,
                size: Some(100_000),
                left: Some(94_500),
                exhausts_min: None,
                points_kept: 1,
            },
            Case {
                name: "stale: the reset passed with no answer since, the window is empty",
                points: &[
                    (0, 0.40, 40_000, Some(RESET)),
                    (10, 0.90, 90_000, Some(RESET)),
                ],
                at_min: 301,
                served: 90_000,
                utilization: 0.0,
                size: Some(100_000),
                left: Some(100_000),
                exhausts_min: None,
                points_kept: 0,
            },
            Case {
                name: "missing headers: no forecast",
                points: &[],
                at_min: 0,
                served: 0,
                utilization: 0.0,
                size: None,
                left: None,
                exhausts_min: None,
                points_kept: 0,
            },
            Case {
                name: "missing reset: the fraction and the size still count",
                points: &[(0, 0.10, 10_000, None), (10, 0.30, 30_000, None)],
                at_min: 10,
                served: 30_000,
                utilization: 0.30,
                size: Some(100_000),
                left: Some(69_500),
                exhausts_min: Some(45),
                points_kept: 2,
            },
        ];
        for case in &cases {
            check(case);
        }
    }

    #[test]
    fn a_rough_size_comes_from_the_first_answers_and_gives_way_to_the_inferred_one() {
        let mut track = WindowTrack::default();
        // A 1M window: the first answer of 8,000 tokens shows as 0.01, which may be up to
        // 0.015: the window holds at least 8,000 / 0.015 tokens.
        track.observe(0.01, Some(RESET), 8_000, 8_000, T0);
        let forecast = track.forecast(8_000, T0).expect("a point");
        assert_eq!(forecast.size_tokens, None);
        assert_eq!(forecast.rough_size_tokens, Some(533_333));
        // 0.03 (up to 0.035) after 30,000: at least 857,142, a tighter bound.
        track.observe(0.03, Some(RESET), 30_000, 22_000, T0 + MIN / 2);
        let forecast = track.forecast(30_000, T0 + MIN / 2).expect("points");
        assert_eq!(forecast.size_tokens, None);
        assert_eq!(forecast.rough_size_tokens, Some(857_142));
        track.observe(0.07, Some(RESET), 70_000, 9_000, T0 + MIN);
        let forecast = track.forecast(70_000, T0 + MIN).expect("points");
        // (70,000 − 8,000) / 0.06
        assert_eq!(forecast.size_tokens, Some(1_033_333));
        assert_eq!(forecast.rough_size_tokens, forecast.size_tokens);
    }

    #[test]
    fn tokens_left_are_the_tightest_bound_any_point_gives() {
        // A 100k window. The answers said 0.10, 0.60, 0.95 (truly 0.9499) and 0.96 (truly
        // 0.964): taken at its word, the last leaves 4,000 tokens, but only 3,600 are.
        let mut track = WindowTrack::default();
        for (minute, utilization, served) in [
            (0, 0.10, 10_000),
            (1, 0.60, 60_000),
            (2, 0.95, 94_990),
            (3, 0.96, 96_400),
        ] {
            track.observe(utilization, Some(RESET), served, 0, T0 + minute * MIN);
        }
        let forecast = track.forecast(96_400, T0 + 3 * MIN).expect("points");
        // The size from the first and last points: 86,400 / 0.86.
        assert_eq!(forecast.size_tokens, Some(100_465));
        // The last point, rounded up by half a point: 100,465 × 0.035.
        assert_eq!(forecast.tokens_left, Some(3_516));
        // A window that has truly 3,600 left never looks as if it had more.
        assert!(forecast.tokens_left.unwrap() <= 3_600);
        // What was served since counts against every point alike.
        let later = track.forecast(97_400, T0 + 3 * MIN).expect("points");
        assert_eq!(later.tokens_left, Some(2_516));
    }

    #[test]
    fn a_window_cost_counts_a_tenth_of_cache_reads() {
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 500,
            cache_read_input_tokens: 20_000,
            cache_creation_input_tokens: 1_000,
            cache_write_5m: 1_000,
            cache_write_1h: 0,
            ..Usage::default()
        };
        assert_eq!(window_cost(&usage), 10 + 500 + 2_000 + 1_000);
    }
}
