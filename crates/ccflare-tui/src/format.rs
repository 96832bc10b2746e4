//! Numbers and times as the screen shows them: "4m 10s", "2 min ago", "12.3k", "$0.0421",
//! "320 ms", "14:03:07". Pure functions of their arguments — the caller passes `now` and the
//! zone's offset — so the snapshot tests can fix the clock. Units follow `ccflare-cli`'s.

use ccflare_core::Millis;

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// How long ago `then` was, in one unit: "12 s ago", "2 min ago", "3 h ago", "5 d ago";
/// "never" without a time, "just now" within the second.
pub fn ago(now: Millis, then: Option<Millis>) -> String {
    let Some(then) = then else {
        return "never".to_owned();
    };
    let elapsed = now.saturating_sub(then);
    if elapsed < SECOND {
        "just now".to_owned()
    } else if elapsed < MINUTE {
        format!("{} s ago", elapsed / SECOND)
    } else if elapsed < HOUR {
        format!("{} min ago", elapsed / MINUTE)
    } else if elapsed < DAY {
        format!("{} h ago", elapsed / HOUR)
    } else {
        format!("{} d ago", elapsed / DAY)
    }
}

/// A duration in its two largest units: "45s", "4m 10s", "2h 05m", "3d 4h", rounded up to the
/// second (a reset 200 ms away reads "1s").
pub fn duration(ms: Millis) -> String {
    let seconds = (ms.max(0) + SECOND - 1) / SECOND;
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3_600,
        seconds % 3_600 / 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// "HH:MM:SS" of `at` in the zone `offset_ms` east of UTC.
pub fn clock(at: Millis, offset_ms: Millis) -> String {
    let text = ccflare_core::time::format_rfc3339(at.saturating_add(offset_ms));
    text[11..19].to_owned()
}

/// "MM-DD HH:MM" of `at` in the zone `offset_ms` east of UTC.
pub fn day_clock(at: Millis, offset_ms: Millis) -> String {
    let text = ccflare_core::time::format_rfc3339(at.saturating_add(offset_ms));
    format!("{} {}", &text[5..10], &text[11..16])
}

/// The start of the local day holding `now` (UTC midnight shifted by the zone's offset).
pub fn start_of_day(now: Millis, offset_ms: Millis) -> Millis {
    (now + offset_ms).div_euclid(DAY) * DAY - offset_ms
}

/// A count with a thousands separator: "1,234,567".
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A token count in at most four significant characters: "987", "12.3k", "4.5M".
pub fn tokens(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 1_000.0 {
        format!("{n:.0}")
    } else if n < 10_000.0 {
        format!("{:.1}k", n / 1_000.0)
    } else if n < 1_000_000.0 {
        format!("{:.0}k", n / 1_000.0)
    } else if n < 10_000_000.0 {
        format!("{:.1}M", n / 1_000_000.0)
    } else {
        format!("{:.0}M", n / 1_000_000.0)
    }
}

/// US dollars: four decimals below a dollar, two above.
pub fn cost(usd: f64) -> String {
    if usd.abs() < 1.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// A latency: "87 ms", "1.24 s", "12.0 s".
pub fn latency(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1_000.0)
    } else {
        format!("{:.1} s", ms as f64 / 1_000.0)
    }
}

/// A ratio as a percentage with one decimal: "98.5%".
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// `text` cut to `width` characters, with "…" as the last one when it was longer.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ages() {
        assert_eq!(duration(200), "1s");
        assert_eq!(duration(250 * SECOND), "4m 10s");
        assert_eq!(duration(2 * HOUR + 5 * MINUTE), "2h 05m");
        assert_eq!(duration(3 * DAY + 4 * HOUR + 1), "3d 4h");
        assert_eq!(duration(-5), "0s");
        let now = 10 * DAY;
        assert_eq!(ago(now, None), "never");
        assert_eq!(ago(now, Some(now - 12 * SECOND)), "12 s ago");
        assert_eq!(ago(now, Some(now - 2 * MINUTE - 59 * SECOND)), "2 min ago");
        assert_eq!(ago(now, Some(now + SECOND)), "just now");
    }

    #[test]
    fn clocks_follow_the_zone() {
        // 2026-01-31T23:30:00Z
        let at = ccflare_core::time::parse_rfc3339("2026-01-31T23:30:00Z").unwrap();
        assert_eq!(clock(at, 0), "23:30:00");
        assert_eq!(clock(at, HOUR), "00:30:00");
        assert_eq!(day_clock(at, HOUR), "02-01 00:30");
        assert_eq!(
            start_of_day(at, 0),
            ccflare_core::time::parse_rfc3339("2026-01-31T00:00:00Z").unwrap()
        );
        // An hour east, 23:30 UTC is already the next day.
        assert_eq!(
            start_of_day(at, HOUR),
            ccflare_core::time::parse_rfc3339("2026-01-31T23:00:00Z").unwrap()
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-1_000), "-1,000");
        assert_eq!(tokens(987), "987");
        assert_eq!(tokens(12_345), "12k");
        assert_eq!(tokens(4_500), "4.5k");
        assert_eq!(tokens(4_500_000), "4.5M");
        assert_eq!(cost(0.04213), "$0.0421");
        assert_eq!(cost(12.345), "$12.35");
        assert_eq!(latency(87), "87 ms");
        assert_eq!(latency(1_240), "1.24 s");
        assert_eq!(percent(0.985), "98.5%");
        assert_eq!(fit("claude-sonnet-4-5", 8), "claude-…");
        assert_eq!(fit("short", 8), "short");
    }
}
