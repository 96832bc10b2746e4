//! Time as people read it in a terminal: "2 min ago", "4m 10s", "11-26 14:03:07", and the
//! durations `--since 1h` accepts. Pure functions of their arguments (the caller passes `now`),
//! so every rule is a unit test and the snapshot tests can fix the clock.

use ccflare_core::Millis;

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

// "2 min ago" and "4m 10s" read the same in the CLI and the terminal UI: one definition.
pub use ccflare_core::human::{ago, duration};

/// "MM-DD HH:MM:SS" for epoch milliseconds shifted by `offset_ms` (the local zone's offset).
pub fn clock(at: Millis, offset_ms: Millis) -> String {
    let text = ccflare_core::time::format_rfc3339(at.saturating_add(offset_ms));
    // "YYYY-MM-DDTHH:MM:SS.mmmZ": month-day, then the time to the second.
    format!("{} {}", &text[5..10], &text[11..19])
}

/// Parses a duration such as `90s`, `15m`, `1h`, `7d`, `2w` or `1h30m` into milliseconds.
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    let expected = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit, such as 30s, 15m, 1h or 7d"
        )
    };
    let mut total: Millis = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => SECOND,
            'm' => MINUTE,
            'h' => HOUR,
            'd' => DAY,
            'w' => 7 * DAY,
            _ => return Err(expected()),
        };
        let n: Millis = digits.parse().map_err(|_| expected())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(expected)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any || total == 0 {
        return Err(expected());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_shows_month_day_and_time() {
        // 2026-11-26T10:00:00Z, shown in UTC and nine hours east.
        let at = 1_795_687_200_000;
        assert_eq!(clock(at, 0), "11-26 10:00:00");
        assert_eq!(clock(at + 61_500, 9 * HOUR), "11-26 19:01:01");
    }

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("90s"), Ok(90 * SECOND));
        assert_eq!(parse_duration("15m"), Ok(15 * MINUTE));
        assert_eq!(parse_duration("1h"), Ok(HOUR));
        assert_eq!(parse_duration("1h30m"), Ok(HOUR + 30 * MINUTE));
        assert_eq!(parse_duration(" 7d "), Ok(7 * DAY));
        assert_eq!(parse_duration("2w"), Ok(14 * DAY));
        for bad in ["", "1", "h", "1x", "0m", "-1h", "99999999999999999999d"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("such as 30s, 15m, 1h or 7d"), "{bad}: {err}");
        }
    }
}
