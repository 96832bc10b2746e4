//! Rate-limit headers of any names and values: parsing and classifying them never panics, a
//! bench always ends after now and at most `MAX_BENCH_MS` later, a warning ends within
//! `WARNING_MAX_MS`, and headroom stays within 0..=1. The values also go through both date
//! parsers directly.
//!
//! Input: 8 bytes for the clock (kept between 1970 and 2100), then `name: value` lines.

#![no_main]

use ccflare_core::ratelimit::{MAX_BENCH_MS, RateLimitSnapshot, Verdict, WARNING_MAX_MS, classify};
use ccflare_core::time::{parse_http_date, parse_rfc3339};
use ccflare_fuzz::split_params;
use libfuzzer_sys::fuzz_target;

const YEAR_2100_MS: i64 = 4_102_444_800_000;

fuzz_target!(|data: &[u8]| {
    let (clock, text) = split_params::<8>(data);
    let now = i64::from_le_bytes(clock).rem_euclid(YEAR_2100_MS);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let headers: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.split_once(':').unwrap_or((line, "")))
        .collect();
    for (_, value) in &headers {
        let _ = (parse_rfc3339(value), parse_http_date(value));
    }
    let snap = RateLimitSnapshot::from_headers(headers.iter().copied(), now);
    for status in [200, 401, 403, 429, 500, 529] {
        if let Verdict::RateLimited { until: Some(at) }
        | Verdict::Serve {
            bench_until: Some(at),
        } = classify(status, &snap, now)
        {
            assert!(
                now < at && at <= now + MAX_BENCH_MS,
                "bench until {at} from {now}"
            );
        }
    }
    assert!(snap.warning_ends_at() <= now + WARNING_MAX_MS);
    for at in [now, now + 3_600_000, now + 8 * 86_400_000] {
        if let Some(share) = snap.headroom_at(at) {
            assert!((0.0..=1.0).contains(&share), "headroom {share}");
        }
    }
    let _ = (snap.reset_at(), snap.unified_reset_at(), snap.has_limits());
});
