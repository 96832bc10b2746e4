//! Numbers and times as the screen shows them: "4m 10s", "2 min ago", "12k", "$0.0421",
//! "320ms", "14:03:07". Pure functions of their arguments — the caller passes `now` and the
//! zone's offset — so the snapshot tests can fix the clock. Units follow `ccflare-cli`'s.

use ccflare_core::Millis;

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

// Ages, durations, counts, tokens, dollars, percentages and latencies read the same here as
// in `ccflare-cli`, and text from outside is made inert the same way: one definition, in core.
pub use ccflare_core::human::{ago, compact, count, duration, inert, latency, money, percent};

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

/// `text` made inert (escape sequences and control characters out: much of what is shown
/// came from clients and the upstream) and cut to `width` terminal columns (a wide character
/// takes two), with "…" as the last one when it was longer.
pub fn fit(text: &str, width: usize) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    let text = inert(text);
    if text.width() <= width {
        return text.into_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fit_counts_columns() {
        assert_eq!(fit("claude-sonnet-4-5", 8), "claude-…");
        assert_eq!(fit("short", 8), "short");
        assert_eq!(fit("회사-계정-이름", 6), "회사-…");
        assert_eq!(fit("회사계정", 6), "회사…");
        assert_eq!(fit("claude\x1b]0;pwned\x07\x1b[2J-x", 8), "claude-x");
    }
}
