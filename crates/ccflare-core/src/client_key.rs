//! Client keys (SPEC §11) as data: what a key looks like (`ccf_` and 43 base62 characters), its
//! status and optional limits, the UTC budget periods (day, week from Monday, month) and the
//! worst case a request may cost, which the proxy reserves against a budget before forwarding.
//! Generating and hashing keys is storage's (it needs the system's randomness); holding them
//! in memory and counting their use is the proxy's.

use crate::Millis;
use crate::time::{civil_from_days, days_from_civil};
use std::fmt;
use std::str::FromStr;

/// Every client key starts with this; the rest is random.
pub const KEY_PREFIX: &str = "ccf_";

/// Characters after [`KEY_PREFIX`] that are shown in logs and listings to tell keys apart.
pub const SHOWN_PREFIX_LEN: usize = 8;

/// Longest key name.
pub const MAX_NAME: usize = 64;

const DAY_MS: Millis = 86_400_000;

/// Whether a credential a client sent is meant as a ccflare client key (and not, say, the
/// client's own Anthropic key, which ccflare ignores when keys are optional).
pub fn is_client_key(value: &str) -> bool {
    value.starts_with(KEY_PREFIX)
}

/// The part of a key that may be shown: `ccf_` and the first eight characters after it. A
/// value too short to be a key is shown as `ccf_…` alone (a wrong key is not echoed).
pub fn shown_prefix(key: &str) -> String {
    let rest = key.strip_prefix(KEY_PREFIX).unwrap_or_default();
    if rest.len() < 32 || !rest.is_char_boundary(SHOWN_PREFIX_LEN) {
        return format!("{KEY_PREFIX}…");
    }
    format!("{KEY_PREFIX}{}…", &rest[..SHOWN_PREFIX_LEN])
}

/// Checks a key name: 1 to 64 printable characters without spaces or `/` (it is typed on
/// command lines and is a path segment), not starting with `-` or `ccf_`, and nothing shaped
/// like a key or token (names are shown in full everywhere). The message quotes the name only
/// masked.
pub fn check_name(name: &str) -> Result<(), String> {
    let shown = crate::secret::shown_masked(name);
    if shown != name || name.starts_with(KEY_PREFIX) {
        return Err(format!(
            "invalid key name {:?}: it looks like a key or token (names are shown in full \
             everywhere)",
            if shown != name {
                shown.as_ref()
            } else {
                "ccf_…"
            }
        ));
    }
    let fine = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.starts_with('-')
        && !name.contains('/')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if fine {
        Ok(())
    } else {
        Err(format!(
            "invalid key name {name:?}: use 1 to {MAX_NAME} characters without spaces or `/`, \
             not starting with -"
        ))
    }
}

/// Whether a key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyStatus {
    #[default]
    Active,
    Disabled,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for KeyStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(KeyStatus::Active),
            "disabled" => Ok(KeyStatus::Disabled),
            other => Err(format!("unknown key status {other:?}")),
        }
    }
}

/// The UTC period a budget counts over. Weeks start on Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BudgetPeriod {
    Day,
    Week,
    #[default]
    Month,
}

impl BudgetPeriod {
    pub const ALL: [BudgetPeriod; 3] = [BudgetPeriod::Day, BudgetPeriod::Week, BudgetPeriod::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }

    /// The period holding `now`: its first millisecond and the first of the next one.
    pub fn bounds(self, now: Millis) -> (Millis, Millis) {
        let day = now.div_euclid(DAY_MS);
        match self {
            BudgetPeriod::Day => (day * DAY_MS, (day + 1) * DAY_MS),
            BudgetPeriod::Week => {
                // 1970-01-01 was a Thursday: Monday is three days later in the cycle.
                let monday = day - (day + 3).rem_euclid(7);
                (monday * DAY_MS, (monday + 7) * DAY_MS)
            }
            BudgetPeriod::Month => {
                let (year, month, _) = civil_from_days(day);
                let start = days_from_civil(year, month, 1);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let end = days_from_civil(next_year, next_month, 1);
                (start * DAY_MS, end * DAY_MS)
            }
        }
    }
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BudgetPeriod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BudgetPeriod::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown budget period {s:?}: expected day, week or month"))
    }
}

/// A key's optional limits; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KeyLimits {
    /// Requests admitted per rolling minute.
    pub rpm: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// US dollars per period.
    pub budget_usd: Option<f64>,
    /// Tokens (input of every kind plus output) per period.
    pub budget_tokens: Option<u64>,
    pub period: BudgetPeriod,
}

impl KeyLimits {
    pub fn has_budget(&self) -> bool {
        self.budget_usd.is_some() || self.budget_tokens.is_some()
    }
}

/// What a request may cost at most, reserved against a budget before it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reservation {
    pub usd: f64,
    pub tokens: u64,
}

/// The worst case of a request: `max_tokens` of output, plus its input estimated from the body
/// size at one token per three bytes (text runs about four bytes a token, and the JSON around
/// it counts as bytes but not tokens: three errs high), every input token priced as a one-hour
/// cache write (the dearest input rate), at the long-context price when that estimate passes
/// its threshold. A model without a known price reserves tokens only, as its use is recorded
/// at no cost.
pub fn worst_case(model: Option<&str>, max_tokens: Option<u64>, body_len: usize) -> Reservation {
    let input = body_len as u64 / 3 + 1;
    let output = max_tokens.unwrap_or(0);
    let usd = match model.and_then(|model| crate::pricing::price_for(model, input)) {
        Some((price, _)) => {
            (input as f64 * price.cache_write_1h.max(price.input) + output as f64 * price.output)
                / 1_000_000.0
        }
        None => 0.0,
    };
    Reservation {
        usd,
        tokens: input.saturating_add(output),
    }
}

/// Parses an expiry as people give it: an RFC 3339 time, or a duration from `now` in days,
/// hours or weeks (`30d`, `12h`, `2w`).
pub fn parse_expiry(text: &str, now: Millis) -> Result<Millis, String> {
    let text = text.trim();
    if let Some(at) = crate::time::parse_rfc3339(text) {
        return Ok(at);
    }
    let unit = match text.chars().last() {
        Some('h') => 3_600_000,
        Some('d') => DAY_MS,
        Some('w') => 7 * DAY_MS,
        _ => 0,
    };
    // The unit is one ASCII letter, so cutting it off leaves a whole string.
    let count = (unit > 0)
        .then(|| text[..text.len() - 1].parse::<i64>().ok())
        .flatten();
    match count {
        Some(n) if unit > 0 && n > 0 && n <= 36_500 => Ok(now + n * unit),
        _ => Err(format!(
            "invalid expiry {text:?}: expected an RFC 3339 time (2027-01-31T00:00:00Z) or a \
             duration such as 12h, 30d or 2w"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{format_rfc3339, parse_rfc3339};

    fn at(text: &str) -> Millis {
        parse_rfc3339(text).unwrap()
    }

    fn bounds(period: BudgetPeriod, now: &str) -> (String, String) {
        let (start, end) = period.bounds(at(now));
        (format_rfc3339(start), format_rfc3339(end))
    }

    #[test]
    fn periods_are_utc_days_weeks_from_monday_and_months() {
        assert_eq!(
            bounds(BudgetPeriod::Day, "2026-12-06T01:56:00Z"),
            (
                "2026-12-06T00:00:00.000Z".into(),
                "2026-12-07T00:00:00.000Z".into()
            )
        );
        // 2026-12-06 is a Sunday: its week began on Monday the 30th of November.
        assert_eq!(
            bounds(BudgetPeriod::Week, "2026-12-06T23:59:59Z"),
            (
                "2026-11-30T00:00:00.000Z".into(),
                "2026-12-07T00:00:00.000Z".into()
            )
        );
        assert_eq!(
            bounds(BudgetPeriod::Week, "2026-12-07T00:00:00Z").0,
            "2026-12-07T00:00:00.000Z"
        );
        assert_eq!(
            bounds(BudgetPeriod::Month, "2026-12-31T23:00:00Z"),
            (
                "2026-12-01T00:00:00.000Z".into(),
                "2027-01-01T00:00:00.000Z".into()
            )
        );
        assert_eq!(
            bounds(BudgetPeriod::Month, "2028-02-29T12:00:00Z").1,
            "2028-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn worst_case_prices_max_tokens_and_the_body() {
        let r = worst_case(Some("claude-sonnet-4-5"), Some(1000), 299);
        assert_eq!(r.tokens, 1000 + 100);
        // 100 input tokens at $6/M (1 h cache write) and 1000 output at $15/M.
        assert!((r.usd - (100.0 * 6.0 + 1000.0 * 15.0) / 1e6).abs() < 1e-12);
        let unknown = worst_case(Some("local-model"), Some(10), 0);
        assert_eq!((unknown.usd, unknown.tokens), (0.0, 11));
        // A body estimated past 200K input tokens: the long-context rates (1 h writes at $12/M,
        // output at $22.50/M), as the request will be billed.
        let long = worst_case(Some("claude-sonnet-4-5"), Some(1000), 600_000);
        assert!((long.usd - (200_001.0 * 12.0 + 1000.0 * 22.50) / 1e6).abs() < 1e-9);
    }

    #[test]
    fn names_and_prefixes() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("ci-pipeline_2").is_ok());
        for bad in ["", "a b", "a/b", "-x", "ccf_abc", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let key = format!("ccf_{}", "Ab3".repeat(15));
        let error = check_name(&key).unwrap_err();
        assert!(!error.contains("Ab3Ab3"), "{error}");
        assert_eq!(shown_prefix(&key), "ccf_Ab3Ab3Ab…");
        assert_eq!(shown_prefix("ccf_short"), "ccf_…");
    }

    #[test]
    fn expiries() {
        let now = at("2026-12-06T00:00:00Z");
        assert_eq!(parse_expiry("30d", now), Ok(now + 30 * DAY_MS));
        assert_eq!(parse_expiry("12h", now), Ok(now + 12 * 3_600_000));
        assert_eq!(
            parse_expiry("2027-01-01T00:00:00Z", now),
            Ok(at("2027-01-01T00:00:00Z"))
        );
        for bad in ["", "d", "0d", "-1d", "30x", "tomorrow", "3é"] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }
}
