//! Reading Anthropic's rate-limit response headers (protocol doc §3) and deciding what an
//! upstream answer means for the account that gave it: serve it, pass it on, or fail over and
//! bench the account for a while.

use crate::time::{Millis, parse_http_date, parse_rfc3339};

/// Longest bench any header can impose; a reset further away than this is treated as this.
/// The longest an `allowed_warning` keeps an account aside without a fresh answer (5 hours,
/// the shortest subscription window).
pub const WARNING_MAX_MS: Millis = 5 * 3_600_000;

pub const MAX_BENCH_MS: i64 = 24 * 3600 * 1000;

/// One family of API-key limits (`requests`, `tokens`, `input-tokens`, `output-tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<Millis>,
}

impl Window {
    fn fraction_left(&self) -> Option<f64> {
        match (self.remaining, self.limit) {
            // Capped: a window cannot have more left than all of it.
            (Some(remaining), Some(limit)) if limit > 0 => {
                Some((remaining as f64 / limit as f64).min(1.0))
            }
            _ => None,
        }
    }
}

/// What the last response of an account said about its limits.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RateLimitSnapshot {
    pub requests: Window,
    pub tokens: Window,
    pub input_tokens: Window,
    pub output_tokens: Window,
    /// `anthropic-ratelimit-unified-status`: `allowed`, `allowed_warning`, `rejected`, …
    pub unified_status: Option<String>,
    /// `anthropic-ratelimit-unified-reset`, epoch seconds turned into milliseconds.
    pub unified_reset: Option<Millis>,
    pub unified_5h_utilization: Option<f64>,
    pub unified_5h_reset: Option<Millis>,
    pub unified_7d_utilization: Option<f64>,
    pub unified_7d_reset: Option<Millis>,
    /// `-5h-status` and `-7d-status` of the windows (`allowed`, `rejected`, …).
    #[serde(default)]
    pub unified_5h_status: Option<String>,
    #[serde(default)]
    pub unified_7d_status: Option<String>,
    /// Which window the unified status speaks for (`five_hour`, `seven_day`, …).
    #[serde(default)]
    pub unified_representative_claim: Option<String>,
    /// Extra usage beyond the plan: `-overage-status` and why it is off.
    #[serde(default)]
    pub unified_overage_status: Option<String>,
    #[serde(default)]
    pub unified_overage_disabled_reason: Option<String>,
    /// `retry-after` resolved to an absolute time.
    pub retry_at: Option<Millis>,
    /// `x-should-retry`.
    pub should_retry: Option<bool>,
    /// When these values were seen.
    pub seen_at: Millis,
}

/// A utilization (1.0 = the window is used up); `inf` and `NaN` parse as floats but are none.
fn utilization(value: &str) -> Option<f64> {
    value.trim().parse().ok().filter(|u: &f64| u.is_finite())
}

fn epoch_seconds(value: &str) -> Option<Millis> {
    let seconds = value.trim().parse::<f64>().ok().filter(|s| s.is_finite())?;
    Some((seconds.clamp(0.0, 1e12) * 1000.0) as Millis)
}

impl RateLimitSnapshot {
    /// Reads every header it knows from `(lowercase name, value)` pairs; others are ignored.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Millis,
    ) -> Self {
        let mut snap = RateLimitSnapshot {
            seen_at: now,
            ..Default::default()
        };
        for (name, value) in headers {
            if name == "retry-after" {
                let value = value.trim();
                snap.retry_at = match value.parse::<f64>() {
                    // Clamped so an absurd value cannot overflow; benches are capped anyway.
                    Ok(seconds) if seconds >= 0.0 => {
                        Some(now.saturating_add((seconds.min(1e9) * 1000.0) as Millis))
                    }
                    _ => parse_http_date(value),
                };
                continue;
            }
            if name == "x-should-retry" {
                snap.should_retry = Some(value.trim() == "true");
                continue;
            }
            let Some(rest) = name.strip_prefix("anthropic-ratelimit-") else {
                continue;
            };
            if let Some(unified) = rest.strip_prefix("unified-") {
                match unified {
                    "status" => snap.unified_status = Some(value.trim().to_owned()),
                    "reset" => snap.unified_reset = epoch_seconds(value),
                    "5h-utilization" => snap.unified_5h_utilization = utilization(value),
                    "5h-reset" => snap.unified_5h_reset = epoch_seconds(value),
                    "7d-utilization" => snap.unified_7d_utilization = utilization(value),
                    "7d-reset" => snap.unified_7d_reset = epoch_seconds(value),
                    "5h-status" => snap.unified_5h_status = Some(value.trim().to_owned()),
                    "7d-status" => snap.unified_7d_status = Some(value.trim().to_owned()),
                    "representative-claim" => {
                        snap.unified_representative_claim = Some(value.trim().to_owned())
                    }
                    "overage-status" => snap.unified_overage_status = Some(value.trim().to_owned()),
                    "overage-disabled-reason" => {
                        snap.unified_overage_disabled_reason = Some(value.trim().to_owned())
                    }
                    _ => {}
                }
                continue;
            }
            let (family, field) = match rest.rsplit_once('-') {
                Some(split) => split,
                None => continue,
            };
            let window = match family {
                "requests" => &mut snap.requests,
                "tokens" => &mut snap.tokens,
                "input-tokens" => &mut snap.input_tokens,
                "output-tokens" => &mut snap.output_tokens,
                _ => continue,
            };
            match field {
                "limit" => window.limit = value.trim().parse().ok(),
                "remaining" => window.remaining = value.trim().parse().ok(),
                "reset" => window.reset = parse_rfc3339(value),
                _ => {}
            }
        }
        snap
    }

    fn windows(&self) -> [&Window; 4] {
        [
            &self.requests,
            &self.tokens,
            &self.input_tokens,
            &self.output_tokens,
        ]
    }

    /// True when the response carried any rate-limit information at all.
    pub fn has_limits(&self) -> bool {
        self.retry_at.is_some()
            || self.unified_status.is_some()
            || self
                .windows()
                .iter()
                .any(|w| w.reset.is_some() || w.remaining.is_some())
    }

    /// Whether the unified (subscription) status blocks further requests. Besides `rejected`,
    /// the statuses the protocol notes list as hard (seen in other clients, never captured).
    pub fn unified_blocked(&self) -> bool {
        matches!(
            self.unified_status.as_deref(),
            Some("rejected" | "rate_limited" | "blocked" | "queueing_hard" | "payment_required")
        )
    }

    /// Whether the unified status warns that the account nears its limit: `allowed_warning`,
    /// or the soft `queueing_soft`.
    pub fn unified_warning(&self) -> bool {
        matches!(
            self.unified_status.as_deref(),
            Some("allowed_warning" | "queueing_soft")
        )
    }

    /// When a subscription that said it is out of quota opens again: the unified reset; without
    /// it, the reset of the window whose own status is rejected (the later one when both are),
    /// else of the window the representative claim names, else the later of the 5h and 7d
    /// resets. `None` when the headers name no subscription reset at all.
    pub fn unified_reset_at(&self) -> Option<Millis> {
        let [five_hour, seven_day] = self.window_resets(|status| status == "rejected");
        self.unified_reset
            .or(five_hour.max(seven_day))
            .or_else(|| self.claimed_reset())
            .or(self.unified_5h_reset.max(self.unified_7d_reset))
    }

    /// Until when a warning (`allowed_warning`) speaks: the unified reset; without it, the
    /// earliest reset of a window whose own status warns, else of the claimed window, else the
    /// earliest 5h/7d reset. Never later than [`WARNING_MAX_MS`] after the headers were seen:
    /// a warned account gets few new requests, so a week-long window must not keep it aside for
    /// a week on one old answer; after that the next answer says again.
    pub fn warning_ends_at(&self) -> Millis {
        let latest = self.seen_at.saturating_add(WARNING_MAX_MS);
        let warns = |status: &str| matches!(status, "allowed_warning" | "queueing_soft");
        self.unified_reset
            .or_else(|| earliest(self.window_resets(warns)))
            .or_else(|| self.claimed_reset())
            .or_else(|| earliest([self.unified_5h_reset, self.unified_7d_reset]))
            .map_or(latest, |at| at.min(latest))
    }

    /// The 5h and 7d resets of the windows whose own status passes `status`.
    fn window_resets(&self, status: impl Fn(&str) -> bool) -> [Option<Millis>; 2] {
        let of = |own: &Option<String>, reset: Option<Millis>| {
            own.as_deref()
                .is_some_and(&status)
                .then_some(reset)
                .flatten()
        };
        [
            of(&self.unified_5h_status, self.unified_5h_reset),
            of(&self.unified_7d_status, self.unified_7d_reset),
        ]
    }

    /// The reset of the window the representative claim names.
    fn claimed_reset(&self) -> Option<Millis> {
        match self.unified_representative_claim.as_deref() {
            Some("five_hour") => self.unified_5h_reset,
            // `seven_day`, and the per-model weekly windows, which end with the week.
            Some(claim) if claim.starts_with("seven_day") => self.unified_7d_reset,
            _ => None,
        }
    }

    /// The time the headers say the account can be used again after a 429, or after a 200 that
    /// says the subscription is out of quota.
    ///
    /// A blocked subscription (`rejected`) waits for its window: [`Self::unified_reset_at`], or
    /// `retry-after` when that is later. Otherwise `retry-after` comes first, then the unified
    /// reset, then the earliest reset of an exhausted API-key window (or the latest reset of any
    /// window when none says it is exhausted).
    pub fn reset_at(&self) -> Option<Millis> {
        if self.unified_blocked()
            && let Some(window) = self.unified_reset_at()
        {
            return Some(self.retry_at.map_or(window, |at| at.max(window)));
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        if let Some(at) = self.unified_reset {
            return Some(at);
        }
        let exhausted = self
            .windows()
            .iter()
            .filter(|w| w.remaining == Some(0))
            .filter_map(|w| w.reset)
            .min();
        exhausted.or_else(|| self.windows().iter().filter_map(|w| w.reset).max())
    }

    /// Share of capacity left, 0.0 to 1.0, from the tightest window, as the headers said when
    /// they came; `None` when unknown.
    pub fn headroom(&self) -> Option<f64> {
        self.headroom_at(self.seen_at)
    }

    /// Share of capacity left at `now`, 0.0 to 1.0, from the tightest window whose reset has
    /// not passed (a window that reset since is full again, so it no longer counts); `None`
    /// when no window is known. The `headroom` strategy ranks accounts by it, so headers kept
    /// from long ago (an idle account, or a restart) do not hold an account back.
    pub fn headroom_at(&self, now: Millis) -> Option<f64> {
        let current = |reset: Option<Millis>| reset.is_none_or(|at| at > now);
        let api = self
            .windows()
            .iter()
            .filter(|w| current(w.reset))
            .filter_map(|w| w.fraction_left())
            .reduce(f64::min);
        let unified = [
            (self.unified_5h_utilization, self.unified_5h_reset),
            (self.unified_7d_utilization, self.unified_7d_reset),
        ]
        .into_iter()
        .filter(|&(_, reset)| current(reset))
        .filter_map(|(utilization, _)| utilization)
        .map(|u| (1.0 - u).clamp(0.0, 1.0))
        .reduce(f64::min);
        match (api, unified) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What an upstream answer means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give this response to the client. `bench_until` is set when a successful response also
    /// says the account is now out of quota (unified status `rejected`).
    Serve { bench_until: Option<Millis> },
    /// 429 with limit headers: bench the account until the time given (or a default backoff
    /// when `None`) and try the next account.
    RateLimited { until: Option<Millis> },
    /// 429 without any window (only `x-should-retry`): the limit was for this request, not the
    /// account. Try the next account without benching this one.
    RequestScoped,
    /// 529: short fixed cooldown, try the next account.
    Overloaded,
    /// 500/502/503/504: try the next account; the account is not benched.
    ServerError,
    /// 401: the credential was refused; try the next account.
    AuthFailed,
    /// 403: this account may not do this (a model, a beta, a region). Try the next account,
    /// but do not disable this one: the refusal may be about the request, not the key.
    Forbidden,
}

impl Verdict {
    /// Whether the same request should go to another account.
    pub fn fails_over(self) -> bool {
        !matches!(self, Verdict::Serve { .. })
    }

    /// A short label for records and logs.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Serve { .. } => "served",
            Verdict::RateLimited { .. } => "rate_limited",
            Verdict::RequestScoped => "request_rate_limited",
            Verdict::Overloaded => "overloaded",
            Verdict::ServerError => "upstream_error",
            Verdict::AuthFailed => "auth_failed",
            Verdict::Forbidden => "forbidden",
        }
    }
}

/// The earlier of two optional times, or the one that is there.
fn earliest([a, b]: [Option<Millis>; 2]) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Classifies an upstream status and its rate-limit headers.
pub fn classify(status: u16, snapshot: &RateLimitSnapshot, now: Millis) -> Verdict {
    let cap = |at: Millis| at.min(now + MAX_BENCH_MS);
    match status {
        429 if !snapshot.has_limits() => Verdict::RequestScoped,
        429 => Verdict::RateLimited {
            until: snapshot.reset_at().filter(|&at| at > now).map(cap),
        },
        529 => Verdict::Overloaded,
        500 | 502 | 503 | 504 => Verdict::ServerError,
        401 => Verdict::AuthFailed,
        403 => Verdict::Forbidden,
        _ if snapshot.unified_blocked() => Verdict::Serve {
            bench_until: snapshot.reset_at().filter(|&at| at > now).map(cap),
        },
        _ => Verdict::Serve { bench_until: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_687_200_000; // 2026-11-26T10:00:00Z

    fn snap(headers: &[(&str, &str)]) -> RateLimitSnapshot {
        RateLimitSnapshot::from_headers(headers.iter().copied(), NOW)
    }

    #[test]
    fn retry_after_seconds_wins() {
        let s = snap(&[
            ("retry-after", "17"),
            ("anthropic-ratelimit-requests-reset", "2026-11-26T11:00:00Z"),
        ]);
        assert_eq!(
            classify(429, &s, NOW),
            Verdict::RateLimited {
                until: Some(NOW + 17_000)
            }
        );
    }

    #[test]
    fn exhausted_window_reset_is_used_without_retry_after() {
        let s = snap(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-26T10:00:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "1000"),
            ("anthropic-ratelimit-tokens-reset", "2026-11-26T10:05:00Z"),
        ]);
        assert_eq!(s.reset_at(), Some(NOW + 30_000));
        assert_eq!(s.headroom(), Some(0.0));
    }

    #[test]
    fn unified_reset_is_epoch_seconds() {
        let s = snap(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", "1795690800"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.01"),
        ]);
        assert_eq!(
            classify(429, &s, NOW),
            Verdict::RateLimited {
                until: Some(1_795_690_800_000)
            }
        );
        assert_eq!(
            classify(200, &s, NOW),
            Verdict::Serve {
                bench_until: Some(1_795_690_800_000)
            }
        );
        assert_eq!(s.headroom(), Some(0.0));
    }

    #[test]
    fn a_warning_ends_with_its_window_and_within_five_hours() {
        const MIN: Millis = 60_000;
        let epoch = |at: Millis| (at / 1000).to_string();
        let (in_1h, in_6d) = (epoch(NOW + 60 * MIN), epoch(NOW + 6 * 24 * 60 * MIN));
        // The overall reset, when given.
        let s = snap(&[
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-reset", &in_1h),
        ]);
        assert_eq!(s.warning_ends_at(), NOW + 60 * MIN);
        // Without it: the window that warns, not the later one.
        let s = snap(&[
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-reset", &in_1h),
            ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ("anthropic-ratelimit-unified-7d-reset", &in_6d),
        ]);
        assert_eq!(s.warning_ends_at(), NOW + 60 * MIN);
        // A week-long window, or no reset at all: five hours after the answer.
        let s = snap(&[
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-reset", &in_6d),
        ]);
        assert_eq!(s.warning_ends_at(), NOW + WARNING_MAX_MS);
        let s = snap(&[("anthropic-ratelimit-unified-status", "allowed_warning")]);
        assert_eq!(s.warning_ends_at(), NOW + WARNING_MAX_MS);
    }

    #[test]
    fn unified_statuses_are_hard_soft_or_open() {
        let status = |value| snap(&[("anthropic-ratelimit-unified-status", value)]);
        for hard in [
            "rejected",
            "rate_limited",
            "blocked",
            "queueing_hard",
            "payment_required",
        ] {
            assert!(status(hard).unified_blocked(), "{hard}");
            assert!(!status(hard).unified_warning(), "{hard}");
        }
        for soft in ["allowed_warning", "queueing_soft"] {
            assert!(status(soft).unified_warning(), "{soft}");
            assert!(!status(soft).unified_blocked(), "{soft}");
        }
        for open in ["allowed", "something_new"] {
            assert!(!status(open).unified_blocked(), "{open}");
            assert!(!status(open).unified_warning(), "{open}");
        }
    }

    #[test]
    fn a_rejected_subscription_waits_for_its_window_not_a_shorter_retry_after() {
        // NOW + 1 h, as epoch seconds.
        let reset = "1795690800";
        let rejected = [
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", reset),
        ];
        let short = snap(&[rejected[0], rejected[1], ("retry-after", "60")]);
        assert_eq!(
            classify(429, &short, NOW),
            Verdict::RateLimited {
                until: Some(NOW + 3_600_000)
            }
        );
        // A retry-after beyond the reset is the later of the two, so it wins.
        let long = snap(&[rejected[0], rejected[1], ("retry-after", "7200")]);
        assert_eq!(long.reset_at(), Some(NOW + 7_200_000));
        // Not rejected: retry-after still comes first.
        let allowed = snap(&[
            ("anthropic-ratelimit-unified-status", "allowed"),
            ("anthropic-ratelimit-unified-reset", reset),
            ("retry-after", "60"),
        ]);
        assert_eq!(allowed.reset_at(), Some(NOW + 60_000));
    }

    #[test]
    fn a_rejected_subscription_without_the_overall_reset_waits_for_a_window() {
        const FIVE_HOUR: &str = "1795705200"; // NOW + 5 h
        const SEVEN_DAY: &str = "1796292000"; // NOW + 7 d
        let five_hour_at = NOW + 5 * 3_600_000;
        let seven_day_at = NOW + 7 * 24 * 3_600_000;
        let rejected = |extra: &[(&'static str, &'static str)]| {
            let mut headers = vec![
                ("anthropic-ratelimit-unified-status", "rejected"),
                ("anthropic-ratelimit-unified-5h-reset", FIVE_HOUR),
                ("anthropic-ratelimit-unified-7d-reset", SEVEN_DAY),
            ];
            headers.extend_from_slice(extra);
            snap(&headers)
        };
        let table: [(&[(&str, &str)], Millis); 6] = [
            (
                &[("anthropic-ratelimit-unified-5h-status", "rejected")],
                five_hour_at,
            ),
            (
                &[("anthropic-ratelimit-unified-7d-status", "rejected")],
                seven_day_at,
            ),
            (
                &[
                    ("anthropic-ratelimit-unified-5h-status", "rejected"),
                    ("anthropic-ratelimit-unified-7d-status", "rejected"),
                ],
                seven_day_at,
            ),
            (
                &[
                    ("anthropic-ratelimit-unified-5h-status", "allowed"),
                    (
                        "anthropic-ratelimit-unified-representative-claim",
                        "five_hour",
                    ),
                ],
                five_hour_at,
            ),
            (
                &[(
                    "anthropic-ratelimit-unified-representative-claim",
                    "seven_day_opus",
                )],
                seven_day_at,
            ),
            (&[], seven_day_at),
        ];
        for (row, (extra, expected)) in table.into_iter().enumerate() {
            let s = rejected(extra);
            assert_eq!(s.unified_reset_at(), Some(expected), "row {row}");
            // A 200 that says so is served and benches the account; so does a 429. Benches
            // are capped (a week-long one is retried after a day).
            let until = Some(expected.min(NOW + MAX_BENCH_MS));
            assert_eq!(
                classify(200, &s, NOW),
                Verdict::Serve { bench_until: until },
                "row {row}"
            );
            assert_eq!(
                classify(429, &s, NOW),
                Verdict::RateLimited { until },
                "row {row}"
            );
        }
        // A rejected 200 that names no reset at all is served; the verdict names no bench end
        // (the pool benches it for its default backoff, as after a 429 without one).
        let bare = snap(&[("anthropic-ratelimit-unified-status", "rejected")]);
        assert_eq!(
            classify(200, &bare, NOW),
            Verdict::Serve { bench_until: None }
        );
        // `allowed_warning` never benches.
        let warned = snap(&[
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-reset", FIVE_HOUR),
        ]);
        assert_eq!(
            classify(200, &warned, NOW),
            Verdict::Serve { bench_until: None }
        );
    }

    #[test]
    fn every_unified_header_of_the_protocol_doc_capture_is_kept() {
        let s = snap(&[
            ("anthropic-ratelimit-unified-5h-reset", "1785518400"),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.01"),
            ("anthropic-ratelimit-unified-7d-reset", "1786006800"),
            ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.69"),
            (
                "anthropic-ratelimit-unified-overage-disabled-reason",
                "org_level_disabled",
            ),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-reset", "1785518400"),
            ("anthropic-ratelimit-unified-status", "rejected"),
        ]);
        assert_eq!(s.unified_5h_status.as_deref(), Some("rejected"));
        assert_eq!(s.unified_7d_status.as_deref(), Some("allowed"));
        assert_eq!(
            (s.unified_5h_utilization, s.unified_7d_utilization),
            (Some(1.01), Some(0.69))
        );
        assert_eq!(s.unified_7d_reset, Some(1_786_006_800_000));
        assert_eq!(s.unified_overage_status.as_deref(), Some("rejected"));
        assert_eq!(
            s.unified_overage_disabled_reason.as_deref(),
            Some("org_level_disabled")
        );
        assert_eq!(s.unified_representative_claim.as_deref(), Some("five_hour"));
        // Stored as JSON and read back, older snapshots (without these fields) included.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RateLimitSnapshot>(&json).unwrap(), s);
        let old: RateLimitSnapshot = serde_json::from_str(r#"{"requests":{"limit":null,"remaining":null,"reset":null},"tokens":{"limit":null,"remaining":null,"reset":null},"input_tokens":{"limit":null,"remaining":null,"reset":null},"output_tokens":{"limit":null,"remaining":null,"reset":null},"unified_status":"allowed","unified_reset":null,"unified_5h_utilization":null,"unified_5h_reset":null,"unified_7d_utilization":null,"unified_7d_reset":null,"retry_at":null,"should_retry":null,"seen_at":0}"#).unwrap();
        assert_eq!(old.unified_status.as_deref(), Some("allowed"));
    }

    #[test]
    fn windows_that_reset_since_no_longer_count_against_headroom() {
        let s = snap(&[
            ("anthropic-ratelimit-requests-limit", "100"),
            ("anthropic-ratelimit-requests-remaining", "10"),
            ("anthropic-ratelimit-requests-reset", "2026-11-26T10:01:00Z"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.5"),
            ("anthropic-ratelimit-unified-5h-reset", "1795690800"), // NOW + 1 h
            ("anthropic-ratelimit-unified-7d-utilization", "0.3"),
        ]);
        assert_eq!(s.headroom(), Some(0.1));
        assert_eq!(s.headroom_at(NOW + 59_999), Some(0.1));
        // The requests window reset a minute later; the 7-day one names no reset, so it holds.
        assert_eq!(s.headroom_at(NOW + 60_000), Some(0.5));
        assert_eq!(s.headroom_at(NOW + 3_600_000), Some(0.7));
        let api_only = snap(&[
            ("anthropic-ratelimit-requests-limit", "100"),
            ("anthropic-ratelimit-requests-remaining", "10"),
            ("anthropic-ratelimit-requests-reset", "2026-11-26T10:01:00Z"),
        ]);
        assert_eq!(api_only.headroom_at(NOW + 60_000), None);
    }

    #[test]
    fn windowless_429_is_request_scoped() {
        let s = snap(&[("x-should-retry", "true")]);
        assert_eq!(classify(429, &s, NOW), Verdict::RequestScoped);
    }

    #[test]
    fn resets_are_capped_and_past_resets_ignored() {
        let far = snap(&[("retry-after", "999999")]);
        assert_eq!(
            classify(429, &far, NOW),
            Verdict::RateLimited {
                until: Some(NOW + MAX_BENCH_MS)
            }
        );
        let past = snap(&[("anthropic-ratelimit-requests-reset", "2020-01-01T00:00:00Z")]);
        assert_eq!(
            classify(429, &past, NOW),
            Verdict::RateLimited { until: None }
        );
    }

    #[test]
    fn statuses_map_to_verdicts() {
        let none = RateLimitSnapshot::default();
        assert_eq!(classify(529, &none, NOW), Verdict::Overloaded);
        for s in [500, 502, 503, 504] {
            assert_eq!(classify(s, &none, NOW), Verdict::ServerError);
        }
        assert_eq!(classify(401, &none, NOW), Verdict::AuthFailed);
        assert_eq!(classify(403, &none, NOW), Verdict::Forbidden);
        assert!(Verdict::Forbidden.fails_over());
        for s in [200, 400, 404, 413, 422] {
            assert!(!classify(s, &none, NOW).fails_over(), "{s}");
        }
    }

    #[test]
    fn absurd_values_do_not_overflow() {
        let s = snap(&[
            ("retry-after", "1e300"),
            ("anthropic-ratelimit-unified-reset", "inf"),
        ]);
        assert_eq!(
            classify(429, &s, NOW),
            Verdict::RateLimited {
                until: Some(NOW + MAX_BENCH_MS)
            }
        );
        assert_eq!(s.unified_reset, None);
    }

    #[test]
    fn headroom_stays_between_none_and_all() {
        // Found by the properties below: a `NaN` utilization gave a `NaN` headroom, and more
        // remaining than the limit gave more than all of it (which the `headroom` strategy
        // would have preferred over an untouched account).
        let s = snap(&[
            ("anthropic-ratelimit-unified-5h-utilization", "NaN"),
            ("anthropic-ratelimit-unified-7d-utilization", "-inf"),
        ]);
        assert_eq!(
            (s.unified_5h_utilization, s.unified_7d_utilization),
            (None, None)
        );
        assert_eq!(s.headroom(), None);
        let s = snap(&[
            ("anthropic-ratelimit-requests-limit", "10"),
            ("anthropic-ratelimit-requests-remaining", "50"),
        ]);
        assert_eq!(s.headroom(), Some(1.0));
    }

    #[test]
    fn http_date_retry_after() {
        let s = snap(&[("retry-after", "Thu, 26 Nov 2026 10:01:00 GMT")]);
        assert_eq!(s.retry_at, Some(NOW + 60_000));
    }

    mod properties {
        use super::*;
        use crate::time::format_rfc3339;
        use proptest::prelude::*;

        /// Every header name the parser knows.
        const NAMES: &[&str] = &[
            "retry-after",
            "x-should-retry",
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
            "anthropic-ratelimit-unified-status",
            "anthropic-ratelimit-unified-reset",
            "anthropic-ratelimit-unified-5h-utilization",
            "anthropic-ratelimit-unified-5h-reset",
            "anthropic-ratelimit-unified-5h-status",
            "anthropic-ratelimit-unified-7d-utilization",
            "anthropic-ratelimit-unified-7d-reset",
            "anthropic-ratelimit-unified-7d-status",
            "anthropic-ratelimit-unified-representative-claim",
            "anthropic-ratelimit-unified-overage-status",
            "anthropic-ratelimit-unified-overage-disabled-reason",
        ];

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => proptest::sample::select(NAMES).prop_map(str::to_owned),
                1 => "anthropic-ratelimit-[a-z0-9-]{0,24}",
                1 => "[a-z-]{0,24}",
            ]
        }

        /// A header value: the shapes the parser looks for, near misses, and anything at all.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (0u64..1_000).prop_map(|n| n.to_string()),
                1 => any::<u64>().prop_map(|n| n.to_string()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => any::<f64>().prop_map(|f| f.to_string()),
                1 => "[0-9]{1,24}(\\.[0-9]{1,5})?(e[+-]?[0-9]{1,4})?",
                1 => "(inf|-inf|NaN|nan|infinity|1e400|-0)",
                1 => "(rejected|allowed|allowed_warning|queueing_soft|five_hour|seven_day_opus|true)",
                1 => any::<i64>().prop_map(format_rfc3339),
                1 => "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
                1 => "[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
                1 => "\\PC*",
            ]
        }

        /// A clock between 1970 and 2100.
        fn now() -> impl Strategy<Value = Millis> {
            0..4_102_444_800_000i64
        }

        proptest! {
            #[test]
            fn any_headers_parse_and_classify_without_panicking(
                headers in proptest::collection::vec((name(), value()), 0..12),
                now in now(),
                later in 0..(400 * 24 * 3_600_000i64),
                status in proptest::sample::select(&[200u16, 400, 401, 403, 429, 500, 529][..]),
            ) {
                let snap = RateLimitSnapshot::from_headers(
                    headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                    now,
                );
                // A bench always ends in the future, and at most a day from now.
                match classify(status, &snap, now) {
                    Verdict::RateLimited { until: Some(at) }
                    | Verdict::Serve { bench_until: Some(at) } => {
                        prop_assert!(now < at && at <= now + MAX_BENCH_MS, "{at} from {now}");
                    }
                    _ => {}
                }
                prop_assert!(snap.warning_ends_at() <= now + WARNING_MAX_MS);
                for at in [now, now + later] {
                    if let Some(share) = snap.headroom_at(at) {
                        prop_assert!((0.0..=1.0).contains(&share), "headroom {share}");
                    }
                }
                let _ = (snap.reset_at(), snap.unified_reset_at(), snap.has_limits());
            }

            #[test]
            fn generated_headers_parse_to_the_values_generated(
                windows in proptest::collection::vec(
                    (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()),
                     proptest::option::of(-62_167_219_200_000i64..253_402_300_800_000)),
                    4,
                ),
                unified in (
                    proptest::option::of("[a-z_]{1,20}"),
                    proptest::option::of(0u64..100_000_000_000),
                    proptest::option::of(0.0f64..2.0),
                    proptest::option::of(0u64..100_000_000_000),
                    proptest::option::of("[a-z_]{1,20}"),
                    proptest::option::of("[a-z_]{1,20}"),
                ),
                retry in (proptest::option::of(0u32..1_000_000), proptest::option::of(any::<bool>())),
                padding in proptest::collection::vec("[ \t]{0,2}", 2),
                order in proptest::collection::vec(any::<u32>(), 32),
                now in now(),
            ) {
                let (status, reset, utilization, reset_5h, status_5h, claim) = unified;
                let pad = |v: String| format!("{}{v}{}", padding[0], padding[1]);
                let mut headers: Vec<(String, String)> = Vec::new();
                let families = ["requests", "tokens", "input-tokens", "output-tokens"];
                for (family, (limit, remaining, reset)) in families.iter().zip(&windows) {
                    let name = |field: &str| format!("anthropic-ratelimit-{family}-{field}");
                    if let Some(limit) = limit {
                        headers.push((name("limit"), pad(limit.to_string())));
                    }
                    if let Some(remaining) = remaining {
                        headers.push((name("remaining"), pad(remaining.to_string())));
                    }
                    if let Some(reset) = reset {
                        headers.push((name("reset"), pad(format_rfc3339(*reset))));
                    }
                }
                let unified_name = |field: &str| format!("anthropic-ratelimit-unified-{field}");
                if let Some(status) = &status {
                    headers.push((unified_name("status"), pad(status.clone())));
                }
                if let Some(reset) = reset {
                    headers.push((unified_name("reset"), pad(reset.to_string())));
                }
                if let Some(utilization) = utilization {
                    headers.push((unified_name("5h-utilization"), pad(utilization.to_string())));
                }
                if let Some(reset) = reset_5h {
                    headers.push((unified_name("5h-reset"), pad(reset.to_string())));
                }
                if let Some(status) = &status_5h {
                    headers.push((unified_name("5h-status"), pad(status.clone())));
                }
                if let Some(claim) = &claim {
                    headers.push((unified_name("representative-claim"), pad(claim.clone())));
                }
                if let Some(seconds) = retry.0 {
                    headers.push(("retry-after".into(), pad(seconds.to_string())));
                }
                if let Some(should) = retry.1 {
                    headers.push(("x-should-retry".into(), pad(should.to_string())));
                }
                headers.push(("content-type".into(), "application/json".into()));
                // Any order.
                let mut keyed: Vec<_> = order.iter().zip(headers).collect();
                keyed.sort_by_key(|(key, _)| **key);

                let snap = RateLimitSnapshot::from_headers(
                    keyed.iter().map(|(_, (n, v))| (n.as_str(), v.as_str())),
                    now,
                );
                for (window, (limit, remaining, reset)) in snap.windows().iter().zip(&windows) {
                    prop_assert_eq!(window.limit, *limit);
                    prop_assert_eq!(window.remaining, *remaining);
                    prop_assert_eq!(window.reset, *reset);
                }
                prop_assert_eq!(snap.unified_status, status);
                prop_assert_eq!(snap.unified_reset, reset.map(|s| s as Millis * 1000));
                prop_assert_eq!(snap.unified_5h_utilization, utilization);
                prop_assert_eq!(snap.unified_5h_reset, reset_5h.map(|s| s as Millis * 1000));
                prop_assert_eq!(snap.unified_5h_status, status_5h);
                prop_assert_eq!(snap.unified_representative_claim, claim);
                prop_assert_eq!(snap.retry_at, retry.0.map(|s| now + i64::from(s) * 1000));
                prop_assert_eq!(snap.should_retry, retry.1);
                prop_assert_eq!(snap.seen_at, now);
            }
        }
    }
}
