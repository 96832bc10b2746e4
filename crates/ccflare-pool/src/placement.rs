//! Predictive placement, the `headroom` strategy of issue 16: the rules that decide, from each
//! account's window forecast (`forecast.rs`), whether a request fits an account, where a new
//! conversation goes, and when a pinned one moves.
//!
//! - **Cost of a request** on an account: the prompt (body bytes / 4) plus its expected answer
//!   (the longest of the pool's recent answers, never more than its `max_tokens`: [`Answers`]);
//!   on the account that holds the conversation's warm prompt cache, the cached prefix counts at
//!   [`CACHE_READ_WEIGHT`] only. Attempts in flight reserve their cost until they end.
//! - **Fits**: an account whose window size is known fits a request when the tokens it has left
//!   (minus reservations) cover its cost; one whose size is not known yet fits while its
//!   utilisation is under 100 %; one without subscription headers always fits.
//! - **Stay or move**: a pinned conversation stays on its account while the request fits there,
//!   unless the window is [`pressed`] and another account has room to spare (it moves now, while
//!   its prefix is smaller than it will be), or its forecast says the window fills within
//!   [`MOVE_HORIZON_MS`] and its cache has expired anyway (then moving costs nothing). Moving a warm conversation re-writes its prefix
//!   at the cache-write price; not fitting would reject the window, which costs more.
//! - **Place**: a new conversation (or a moved one) goes to the fitting account with the most
//!   tokens left per conversation it carries (room / (pins + 1)): tokens, not fractions, and
//!   counting the conversations already there, which will keep growing.

use crate::account_state::AccountState;
use crate::forecast::{CACHE_READ_WEIGHT, Forecast};
use ccflare_core::{AccountId, Millis};

/// How soon a forecast exhaustion makes a conversation with a cold cache move.
pub const MOVE_HORIZON_MS: i64 = 5 * 60_000;
/// How many turns ahead of each pinned conversation [`pressed`] looks.
pub const LOOKAHEAD_TURNS: u64 = 3;
/// How many recent answers the answer-length estimate ([`Answers`]) looks at.
pub const ANSWERS_KEPT: usize = 64;
/// How long a prompt cache lives after its last use: 5 minutes, or an hour for 1-hour writes.
pub const CACHE_TTL_5M_MS: i64 = 5 * 60_000;
pub const CACHE_TTL_1H_MS: i64 = 60 * 60_000;

/// What the pool knows of one request when it places it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand<'a> {
    /// The session key, if any.
    pub session: Option<&'a str>,
    /// Accounts this request already tried.
    pub tried: &'a [AccountId],
    /// The prompt's size estimate in tokens (body bytes / 4).
    pub prompt_tokens: u64,
    /// The request's `max_tokens`: the most its answer can cost.
    pub max_tokens: u64,
}

impl Demand<'_> {
    /// The request's size on an account without its cache.
    pub fn estimate(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.max_tokens)
    }
}

/// A conversation's warm prompt cache: where, and how many tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Warm {
    pub(crate) account: AccountId,
    pub(crate) cached: u64,
}

/// What the request costs the window of `account`.
pub(crate) fn cost_on(account: AccountId, demand: &Demand, warm: Option<Warm>) -> u64 {
    match warm {
        Some(warm) if warm.account == account => {
            let read = warm.cached.min(demand.prompt_tokens);
            let weighted = (read as f64 * CACHE_READ_WEIGHT).round() as u64;
            (demand.prompt_tokens - read)
                .saturating_add(weighted)
                .saturating_add(demand.max_tokens)
        }
        _ => demand.estimate(),
    }
}

/// The lengths of the pool's recent answers, for what a request's answer is expected to cost.
/// Reserving a request's whole `max_tokens` refuses requests that fit: Claude Code sends
/// 32,000 for answers that are mostly a few hundred tokens.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    recent: [u32; ANSWERS_KEPT],
    len: usize,
    next: usize,
    longest: u32,
}

impl Default for Answers {
    fn default() -> Self {
        Answers {
            recent: [0; ANSWERS_KEPT],
            len: 0,
            next: 0,
            longest: 0,
        }
    }
}

impl Answers {
    /// Takes the length of one more answer (output tokens); an answer of none (a usage
    /// without output) says nothing of answers' lengths and is not counted.
    pub(crate) fn push(&mut self, output: u64) {
        if output == 0 {
            return;
        }
        self.recent[self.next] = u32::try_from(output).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % ANSWERS_KEPT;
        self.len = (self.len + 1).min(ANSWERS_KEPT);
        self.longest = self.recent[..self.len].iter().copied().max().unwrap_or(0);
    }

    /// What the answer of a request allowed `max_tokens` is expected to cost: the longest of
    /// the last [`ANSWERS_KEPT`] answers, never more than `max_tokens`; before any answer,
    /// `max_tokens` itself.
    pub(crate) fn expected(&self, max_tokens: u64) -> u64 {
        match self.len {
            0 => max_tokens,
            _ => max_tokens.min(u64::from(self.longest)),
        }
    }
}

/// Whether the account's window can take `cost` more tokens now.
pub(crate) fn fits(forecast: Option<&Forecast>, reserved: u64, cost: u64) -> bool {
    match forecast {
        Some(f) if f.confidence.size_known => {
            f.tokens_left.unwrap_or(0).saturating_sub(reserved) >= cost
        }
        Some(f) => f.utilization < 1.0,
        None => true,
    }
}

/// Whether the account's known room will not carry [`LOOKAHEAD_TURNS`] more turns of each
/// conversation pinned to it (plus `extra` new ones), each costing about `cost`: the window is
/// forecast to fill within a few turns. Unknown sizes are never pressed.
pub(crate) fn pressed(
    forecast: Option<&Forecast>,
    account: &AccountState,
    cost: u64,
    extra: u32,
) -> bool {
    match forecast {
        Some(f) if f.confidence.size_known => {
            let left = f.tokens_left.unwrap_or(0).saturating_sub(account.reserved);
            let conversations = u64::from(account.pins.saturating_add(extra).max(1));
            left < conversations
                .saturating_mul(cost)
                .saturating_mul(LOOKAHEAD_TURNS)
        }
        _ => false,
    }
}

/// The rank of an account for a new conversation: estimated tokens left per conversation it
/// will carry. An account whose size is not known yet is assumed as big as the biggest known
/// one (so that it is tried and learnt), or, when none is known, every account counts as size 1
/// (fractions, the best that is known then).
pub(crate) fn rank(
    account: &AccountState,
    forecast: Option<&Forecast>,
    assumed_size: f64,
    now: Millis,
) -> f64 {
    let (utilization, size) = match forecast {
        Some(f) => (
            f.utilization,
            f.rough_size_tokens.map_or(assumed_size, |size| size as f64),
        ),
        None => {
            let left = account
                .last_ratelimit
                .as_ref()
                .and_then(|snapshot| snapshot.headroom_at(now))
                .filter(|share| !share.is_nan())
                .unwrap_or(1.0);
            (1.0 - left, assumed_size)
        }
    };
    let reserved = if forecast.is_some_and(|f| f.confidence.size_known) {
        account.reserved as f64
    } else {
        0.0
    };
    let left = ((1.0 - utilization).max(0.0) * size - reserved).max(0.0);
    left / f64::from(account.pins.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::Confidence;

    fn known(left: u64) -> Forecast {
        Forecast {
            tokens_left: Some(left),
            size_tokens: Some(100_000),
            confidence: Confidence {
                points: 5,
                span_ms: 60_000,
                size_known: true,
            },
            ..Forecast::default()
        }
    }

    #[test]
    fn a_warm_cache_makes_a_request_cheaper_only_where_it_is() {
        let demand = Demand {
            prompt_tokens: 50_000,
            max_tokens: 2_000,
            ..Demand::default()
        };
        let warm = Some(Warm {
            account: AccountId(1),
            cached: 40_000,
        });
        // 10,000 new + 4,000 for reading 40,000 + 2,000 answer.
        assert_eq!(cost_on(AccountId(1), &demand, warm), 16_000);
        assert_eq!(cost_on(AccountId(2), &demand, warm), 52_000);
        assert_eq!(cost_on(AccountId(1), &demand, None), 52_000);
    }

    #[test]
    fn a_request_fits_what_is_left_after_reservations() {
        // (forecast, reserved, cost, fits)
        let unknown = Forecast {
            utilization: 0.99,
            ..Forecast::default()
        };
        let full = Forecast {
            utilization: 1.0,
            ..Forecast::default()
        };
        let cases = [
            (Some(known(10_000)), 0, 10_000, true),
            (Some(known(10_000)), 1, 10_000, false),
            (Some(known(12_799)), 0, 12_800, false),
            (Some(unknown), 0, 1_000_000, true),
            (Some(full), 0, 1, false),
            (None, 0, u64::MAX, true),
        ];
        for (forecast, reserved, cost, expected) in cases {
            assert_eq!(
                fits(forecast.as_ref(), reserved, cost),
                expected,
                "{forecast:?} {reserved} {cost}"
            );
        }
    }
}
