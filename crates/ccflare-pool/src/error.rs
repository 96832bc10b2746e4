//! Why no account can take a request, in words a person can act on. The proxy turns this into an
//! Anthropic-shaped 429 or 503 with `Retry-After` (SPEC §4.7). The message goes to the client, so
//! it names counts and states only, never an account's credential.

use crate::explain::Route;
use crate::state::StateCounts;
use ccflare_core::Millis;
use ccflare_core::time::format_rfc3339;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableReason {
    /// The pool is empty.
    NoAccounts,
    /// Every account that is not paused or invalid is rate limited.
    AllRateLimited,
    /// Every account that is not paused or invalid is benched, at least one as overloaded.
    AllBenched,
    /// Every account is paused or invalid.
    NoneActive,
    /// Routable accounts exist, but this request has tried them all.
    AllTried,
    /// Routable accounts exist, but the room their windows have left (as forecast from their
    /// rate-limit headers) cannot take this request of about `tokens` tokens: sending it would
    /// only reject a window (issue 16's room-aware failover).
    NoRoom { tokens: u64 },
}

/// No account can take this attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Unavailable {
    pub reason: UnavailableReason,
    /// The earliest time an account becomes routable again; set only when every active account
    /// is benched, since waiting helps in no other case.
    pub retry_at: Option<Millis>,
    /// The pool's accounts by state at the time, for the message.
    pub counts: StateCounts,
    /// With [`UnavailableReason::NoneActive`]: the invalid OAuth accounts, whose login died and
    /// which only a new login (`ccflare-cli accounts reauth`) brings back. Names, never
    /// credentials; empty for the other reasons.
    pub needs_reauth: Vec<Arc<str>>,
    /// Why each account could not take it (the first few; see [`Route`]). Boxed: a refusal
    /// is rare and the route is big next to the rest.
    pub route: Box<Route>,
}

/// `1 account`, `3 accounts`.
fn accounts(count: usize) -> String {
    if count == 1 {
        "1 account".to_owned()
    } else {
        format!("{count} accounts")
    }
}

/// `1 paused, 2 invalid`, leaving out the states nobody is in.
fn inactive(counts: &StateCounts) -> String {
    let parts: Vec<String> = [(counts.paused, "paused"), (counts.invalid, "invalid")]
        .into_iter()
        .filter(|&(count, _)| count > 0)
        .map(|(count, label)| format!("{count} {label}"))
        .collect();
    parts.join(", ")
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = &self.counts;
        let benched = counts.rate_limited + counts.overloaded;
        match self.reason {
            UnavailableReason::NoAccounts => f.write_str(
                "no accounts configured: add one with `ccflare-cli accounts add` or CLAUDE_API_KEYS",
            )?,
            UnavailableReason::NoneActive => {
                write!(f, "no active accounts: {}; ", inactive(counts))?;
                self.what_to_do(f)?;
            }
            UnavailableReason::AllRateLimited if benched == 1 => {
                f.write_str("the only active account is rate limited")?
            }
            UnavailableReason::AllRateLimited => {
                write!(f, "all {} are rate limited", accounts(benched))?
            }
            UnavailableReason::AllBenched => write!(
                f,
                "every active account is cooling down: {} rate limited, {} overloaded",
                counts.rate_limited, counts.overloaded
            )?,
            UnavailableReason::NoRoom { tokens } => write!(
                f,
                "no account has room for this request (about {tokens} tokens) in its current \
                 usage window; sending it would only get a window rejected"
            )?,
            UnavailableReason::AllTried if counts.available == 1 => {
                f.write_str("the only available account failed for this request")?
            }
            UnavailableReason::AllTried => write!(
                f,
                "all {} available accounts failed for this request",
                counts.available
            )?,
        }
        let inactive = inactive(counts);
        let benched_reason = matches!(
            self.reason,
            UnavailableReason::AllRateLimited | UnavailableReason::AllBenched
        );
        if benched_reason && !inactive.is_empty() {
            write!(f, " ({inactive})")?;
        }
        if let Some(at) = self.retry_at {
            let what = match self.reason {
                UnavailableReason::NoRoom { .. } => "the first window resets",
                _ => "the first is available again",
            };
            write!(f, "; {what} at {}", format_rfc3339(at))?;
        }
        Ok(())
    }
}

impl Unavailable {
    /// What brings an inactive account back, for each kind of inactive account there is:
    /// resuming a paused one, re-adding a refused API key, logging in again to a dead OAuth
    /// login (by name, so that the command can be copied).
    fn what_to_do(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = &self.counts;
        let invalid_keys = counts.invalid.saturating_sub(self.needs_reauth.len());
        let reauth = match self.needs_reauth.as_slice() {
            [] => None,
            [name] => Some(format!(
                "log in again with `ccflare-cli accounts reauth {name}`"
            )),
            names => Some(format!(
                "log in again with `ccflare-cli accounts reauth <name>` ({})",
                listing(names)
            )),
        };
        let remedies: Vec<String> = [
            (counts.paused > 0).then(|| "resume one with `ccflare-cli accounts resume`".into()),
            (invalid_keys > 0)
                .then(|| "re-add an invalid key with `ccflare-cli accounts add`".into()),
            reauth,
        ]
        .into_iter()
        .flatten()
        .collect();
        match remedies.as_slice() {
            [] => Ok(()),
            [only] => f.write_str(only),
            [first, second] => write!(f, "{first} or {second}"),
            [first @ .., last] => write!(f, "{}, or {last}", first.join(", ")),
        }
    }
}

/// Up to three names, then how many more: `a, b, c and 2 more`.
fn listing(names: &[Arc<str>]) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<&str> = names.iter().take(SHOWN).map(|name| &**name).collect();
    match names.len().saturating_sub(SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

impl std::error::Error for Unavailable {}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(reason: UnavailableReason, retry_at: Option<Millis>, counts: StateCounts) -> String {
        Unavailable {
            reason,
            retry_at,
            counts,
            needs_reauth: Vec::new(),
            route: Box::default(),
        }
        .to_string()
    }

    /// The `NoneActive` message with these paused and invalid counts and dead logins.
    fn none_active(paused: usize, invalid: usize, needs_reauth: &[&str]) -> String {
        Unavailable {
            reason: UnavailableReason::NoneActive,
            retry_at: None,
            counts: StateCounts {
                total: paused + invalid,
                paused,
                invalid,
                ..Default::default()
            },
            needs_reauth: needs_reauth.iter().map(|&name| name.into()).collect(),
            route: Box::default(),
        }
        .to_string()
    }

    #[test]
    fn dead_logins_are_told_to_log_in_again_by_name() {
        let table: [(usize, usize, &[&str], &str); 6] = [
            (
                0,
                1,
                &["max"],
                "no active accounts: 1 invalid; log in again with \
                 `ccflare-cli accounts reauth max`",
            ),
            (
                0,
                2,
                &["max", "pro"],
                "no active accounts: 2 invalid; log in again with \
                 `ccflare-cli accounts reauth <name>` (max, pro)",
            ),
            (
                0,
                5,
                &["a", "b", "c", "d", "e"],
                "no active accounts: 5 invalid; log in again with \
                 `ccflare-cli accounts reauth <name>` (a, b, c and 2 more)",
            ),
            (
                0,
                2,
                &[],
                "no active accounts: 2 invalid; re-add an invalid key with \
                 `ccflare-cli accounts add`",
            ),
            (
                1,
                2,
                &["max"],
                "no active accounts: 1 paused, 2 invalid; resume one with \
                 `ccflare-cli accounts resume`, re-add an invalid key with \
                 `ccflare-cli accounts add`, or log in again with \
                 `ccflare-cli accounts reauth max`",
            ),
            (
                1,
                1,
                &["max"],
                "no active accounts: 1 paused, 1 invalid; resume one with \
                 `ccflare-cli accounts resume` or log in again with \
                 `ccflare-cli accounts reauth max`",
            ),
        ];
        for (row, (paused, invalid, needs_reauth, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                none_active(paused, invalid, needs_reauth),
                expected,
                "row {row}"
            );
        }
    }

    #[test]
    fn messages_say_why_and_what_to_do() {
        use UnavailableReason::*;
        let at = 1_795_687_230_000; // 2026-11-26T10:00:30Z
        let counts = |available, rate_limited, overloaded, paused, invalid| StateCounts {
            total: available + rate_limited + overloaded + paused + invalid,
            available,
            rate_limited,
            overloaded,
            paused,
            invalid,
        };
        let table = [
            (
                NoAccounts,
                None,
                counts(0, 0, 0, 0, 0),
                "no accounts configured: add one with `ccflare-cli accounts add` or \
                 CLAUDE_API_KEYS",
            ),
            (
                NoneActive,
                None,
                counts(0, 0, 0, 1, 2),
                "no active accounts: 1 paused, 2 invalid; resume one with \
                 `ccflare-cli accounts resume` or re-add an invalid key with \
                 `ccflare-cli accounts add`",
            ),
            (
                AllRateLimited,
                Some(at),
                counts(0, 3, 0, 0, 0),
                "all 3 accounts are rate limited; the first is available again at \
                 2026-11-26T10:00:30.000Z",
            ),
            (
                AllRateLimited,
                Some(at),
                counts(0, 1, 0, 0, 1),
                "the only active account is rate limited (1 invalid); the first is available \
                 again at 2026-11-26T10:00:30.000Z",
            ),
            (
                AllBenched,
                Some(at),
                counts(0, 1, 2, 1, 0),
                "every active account is cooling down: 1 rate limited, 2 overloaded (1 paused); \
                 the first is available again at 2026-11-26T10:00:30.000Z",
            ),
            (
                AllTried,
                None,
                counts(2, 1, 0, 0, 0),
                "all 2 available accounts failed for this request",
            ),
        ];
        for (reason, retry_at, counts, expected) in table {
            assert_eq!(message(reason, retry_at, counts), expected, "{reason:?}");
        }
    }
}
