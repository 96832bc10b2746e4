//! Time as plain milliseconds since the Unix epoch, a clock that can be replaced in tests, and
//! the two date formats rate-limit headers use (RFC 3339 and HTTP dates).
//!
//! The pool and every cooldown rule take `now` as an argument; only the edges read a clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where "now" comes from. The server uses [`SystemClock`]; tests use [`ManualClock`] so that a
/// rate-limit reset can be passed without waiting for it.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        ManualClock(AtomicI64::new(start))
    }

    pub fn advance(&self, by_ms: i64) {
        self.0.fetch_add(by_ms, Ordering::SeqCst);
    }

    pub fn set(&self, to: Millis) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn number(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an RFC 3339 timestamp such as `2026-11-26T10:00:00Z` or
/// `2025-11-25T22:00:00.288792+00:00` into epoch milliseconds.
pub fn parse_rfc3339(value: &str) -> Option<Millis> {
    let value = value.trim();
    // Every response carries several (the rate-limit resets): the usual shape is read in
    // place, byte by byte; anything else by the general parser, which has the last word.
    match parse_usual_rfc3339(value.as_bytes()) {
        Some(parsed) => parsed,
        None => parse_any_rfc3339(value),
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of digits, then `Z` or `±HH:MM`: the shape
/// servers write. `None` when `b` has another shape; otherwise what [`parse_any_rfc3339`]
/// answers for it (a property test holds the two together).
fn parse_usual_rfc3339(b: &[u8]) -> Option<Option<Millis>> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digit = |i: usize| b[i].is_ascii_digit().then(|| i64::from(b[i] - b'0'));
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let mut at = 19;
    let mut millis = 0;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        match at - start {
            0 => return None,
            n @ 1..=2 => millis *= 10_i64.pow(3 - n as u32),
            _ => {}
        }
    }
    let offset_minutes = match &b[at..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two(at + 1)?, two(at + 4)?);
            if h > 23 || m > 59 {
                return Some(None);
            }
            (h * 60 + m) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Some(None);
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(Some(seconds * 1000 + millis))
}

/// [`parse_rfc3339`] for any shape it accepts.
fn parse_any_rfc3339(value: &str) -> Option<Millis> {
    let (date, rest) = value.split_at_checked(10)?;
    let mut parts = date.split('-');
    let (year, month, day) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(at) => rest.split_at(at),
        None => return None,
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.split(':');
    let (hour, minute, second) = (
        number(hms.next()?)?,
        number(hms.next()?)?,
        number(hms.next()?)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(3).collect();
        number(&digits)? * 10_i64.pow(3 - digits.len() as u32)
    };
    let offset_minutes = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            let (h, m) = (number(h)?, number(m)?);
            // Bounded as RFC 3339 bounds them, so an absurd offset cannot overflow below.
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Formats epoch milliseconds as RFC 3339 in UTC with millisecond precision.
pub fn format_rfc3339(ms: Millis) -> String {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (days, secs_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7), the other form
/// `retry-after` may take, with the `httpdate` crate: IMF-fixdate and the two obsolete forms a
/// recipient must also accept. Dates before 1970 or after 9999, and ones whose weekday is not
/// the date's, are refused.
pub fn parse_http_date(value: &str) -> Option<Millis> {
    let instant = httpdate::parse_http_date(value.trim()).ok()?;
    let since_epoch = instant.duration_since(UNIX_EPOCH).ok()?;
    Millis::try_from(since_epoch.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_accepts_offsets() {
        let t = parse_rfc3339("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(t, 1_795_687_200_000);
        assert_eq!(format_rfc3339(t), "2026-11-26T10:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-11-26T11:00:00+01:00"), Some(t));
        assert_eq!(
            parse_rfc3339("2025-11-25T22:00:00.288792+00:00").map(|v| v % 1000),
            Some(288)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        // The shapes servers write take the byte-by-byte path.
        for usual in ["2026-11-26T10:00:00Z", "2025-11-25T22:00:00.288792+00:00"] {
            let parsed = parse_usual_rfc3339(usual.as_bytes());
            assert_eq!(parsed, Some(parse_any_rfc3339(usual)), "{usual}");
        }
    }

    #[test]
    fn rfc3339_rejects_garbage() {
        for bad in [
            "",
            "soon",
            "2026-13-01T00:00:00Z",
            "2026-11-26",
            "2026-11-26T10:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_date() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        // The two obsolete forms RFC 9110 has recipients accept.
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777_000)
        );
        assert_eq!(parse_http_date("tomorrow"), None);
        // A weekday that is not the date's, and a date before the epoch.
        assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Thu, 01 Jan 1953 00:00:00 GMT"), None);
    }

    #[test]
    fn absurd_fields_are_refused_not_overflowed() {
        // Found by the properties below: these overflowed i64 arithmetic (a panic in debug
        // builds, a wrong time in release). The API reads `since=` with `parse_rfc3339`.
        assert_eq!(
            parse_rfc3339("2026-11-26T10:00:00+999999999999999999:00"),
            None
        );
        assert_eq!(
            parse_rfc3339("2026-11-26T10:00:00-00:9000000000000000000"),
            None
        );
        assert_eq!(
            parse_http_date("Thu, 26 Nov 9999999999999999 10:01:00 GMT"),
            None
        );
        assert_eq!(
            parse_http_date("Thu, 26 Nov 2026 9999999999999999:01:00 GMT"),
            None
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(5);
        assert_eq!(clock.now_ms(), 5);
        clock.advance(10);
        assert_eq!(clock.now_ms(), 15);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z: the instants with a four-digit
        /// year, which is what both formats write.
        fn instant() -> impl Strategy<Value = Millis> {
            let first = days_from_civil(0, 1, 1) * 86_400_000;
            let last = (days_from_civil(10_000, 1, 1)) * 86_400_000 - 1;
            first..=last
        }

        /// A number field as a header may write it: mostly in `usual`, sometimes absurd.
        fn field(usual: std::ops::Range<u64>) -> impl Strategy<Value = String> {
            prop_oneof![
                3 => usual.prop_map(|n| format!("{n:02}")),
                1 => any::<u64>().prop_map(|n| n.to_string()),
            ]
        }

        /// The IMF-fixdate form of a whole second, as a server writes `retry-after`.
        fn http_date(ms: Millis) -> String {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
            let seconds = ms.div_euclid(1000);
            let days = seconds.div_euclid(86_400);
            let (y, mo, d) = civil_from_days(days);
            let of_day = seconds.rem_euclid(86_400);
            format!(
                "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
                WEEKDAYS[days.rem_euclid(7) as usize],
                MONTHS[(mo - 1) as usize],
                of_day / 3600,
                of_day % 3600 / 60,
                of_day % 60
            )
        }

        proptest! {
            #[test]
            fn the_usual_shape_reads_as_the_general_parser_reads_it(
                text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,8})?([Zz]|[+-][0-9]{2}:[0-9]{2}|[+-][0-9]{4}|)x?",
            ) {
                if let Some(usual) = parse_usual_rfc3339(text.as_bytes()) {
                    prop_assert_eq!(usual, parse_any_rfc3339(&text));
                }
            }

            #[test]
            fn rfc3339_round_trips(ms in instant()) {
                prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
            }

            #[test]
            fn rfc3339_offsets_name_the_same_instant(
                // A day inside the four-digit years, so the local time has four digits too.
                ms in instant().prop_map(|ms| ms.clamp(86_400_000 * -719_527, 86_400_000 * 2_932_894)),
                hours in 0i64..24,
                minutes in 0i64..60,
                east in any::<bool>(),
            ) {
                let offset = (hours * 60 + minutes) * if east { 1 } else { -1 };
                let local = format_rfc3339(ms + offset * 60_000);
                let zone = format!("{}{hours:02}:{minutes:02}", if east { '+' } else { '-' });
                let text = format!("{}{zone}", local.trim_end_matches('Z'));
                prop_assert_eq!(parse_rfc3339(&text), Some(ms), "{}", text);
            }

            #[test]
            fn http_dates_round_trip(ms in instant().prop_filter("HTTP dates start in 1970", |ms| *ms >= 0)) {
                let whole_second = ms.div_euclid(1000) * 1000;
                prop_assert_eq!(parse_http_date(&http_date(ms)), Some(whole_second));
            }

            #[test]
            fn any_text_parses_or_not_without_panicking(text in "\\PC*") {
                let _ = parse_rfc3339(&text);
                let _ = parse_http_date(&text);
            }

            #[test]
            fn rfc3339_shaped_text_parses_or_not_without_panicking(
                date in (field(0..10_000), field(1..13), field(1..32)),
                clock in (field(0..24), field(0..60), field(0..61)),
                separator in "[Tt ]",
                fraction in "(\\.[0-9]{0,9})?",
                zone in "[Zz+-]",
                offset in (field(0..24), field(0..60)),
            ) {
                let zone = if zone.eq_ignore_ascii_case("z") {
                    zone
                } else {
                    format!("{zone}{}:{}", offset.0, offset.1)
                };
                let text = format!(
                    "{}-{}-{}{separator}{}:{}:{}{fraction}{zone}",
                    date.0, date.1, date.2, clock.0, clock.1, clock.2
                );
                let _ = parse_rfc3339(&text);
            }

            #[test]
            fn http_date_shaped_text_parses_or_not_without_panicking(
                date in (field(1..32), field(0..10_000)),
                clock in (field(0..24), field(0..60), field(0..61)),
                month in "(Jan|Nov|Dec)",
            ) {
                let text = format!(
                    "Thu, {} {month} {} {}:{}:{} GMT",
                    date.0, date.1, clock.0, clock.1, clock.2
                );
                let _ = parse_http_date(&text);
            }

            #[test]
            fn any_instant_formats(ms in any::<i64>()) {
                let _ = format_rfc3339(ms);
            }
        }
    }
}
