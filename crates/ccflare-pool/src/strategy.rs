//! The ranking rules of the strategies (SPEC §6), as linear scans over the accounts in their
//! stable order (priority ascending, then id). Each returns the position of the chosen account
//! among those `eligible` accepts (routable and not yet tried by this request). The cursors that
//! `session` and `round-robin` carry between requests live in the pool; these functions only
//! read.

use crate::account_state::AccountState;
use ccflare_core::{AccountId, Millis};

/// Where a rotating strategy stands: the account it picked last. The order key is kept so that
/// the rotation continues at the right place after that account is removed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pub(crate) id: AccountId,
    pub(crate) key: (i64, AccountId),
}

impl Cursor {
    pub(crate) fn at(account: &AccountState) -> Self {
        Cursor {
            id: account.id,
            key: account.order_key(),
        }
    }

    /// The position the rotation continues from: just after the cursor's account, or, if it was
    /// removed, where it would have stood.
    pub(crate) fn next_position(
        &self,
        accounts: &[AccountState],
        position_of: Option<usize>,
    ) -> usize {
        match position_of {
            Some(position) => position + 1,
            None => accounts.partition_point(|account| account.order_key() <= self.key),
        }
    }
}

/// The first eligible account at or after `start` in the stable order, wrapping around.
pub(crate) fn next_from(
    accounts: &[AccountState],
    start: usize,
    eligible: impl Fn(&AccountState) -> bool,
) -> Option<usize> {
    let count = accounts.len();
    (0..count)
        .map(|offset| (start + offset) % count)
        .find(|&position| eligible(&accounts[position]))
}

/// `priority`: the first eligible account in the stable order, which puts the lowest priority
/// number first and breaks ties by id.
pub(crate) fn first(
    accounts: &[AccountState],
    eligible: impl Fn(&AccountState) -> bool,
) -> Option<usize> {
    accounts.iter().position(eligible)
}

/// `least-requests`: fewest attempts in flight, then fewest attempts in total, then stable order.
pub(crate) fn least_requests(
    accounts: &[AccountState],
    eligible: impl Fn(&AccountState) -> bool,
) -> Option<usize> {
    accounts
        .iter()
        .enumerate()
        .filter(|(_, account)| eligible(account))
        // `min_by_key` keeps the first of equal keys, which is the stable order.
        .min_by_key(|(_, account)| (account.in_flight, account.requests))
        .map(|(position, _)| position)
}

/// The share of capacity the last rate-limit headers left, not counting windows that have reset
/// since. Accounts without headers yet (or whose every window reset) count as untouched, so
/// that they are tried rather than starved.
fn headroom(account: &AccountState, now: Millis) -> f64 {
    account
        .last_ratelimit
        .as_ref()
        .and_then(|snapshot| snapshot.headroom_at(now))
        .filter(|share| !share.is_nan())
        .unwrap_or(1.0)
}

/// `headroom`: the most capacity left, then fewest in flight, then stable order.
pub(crate) fn most_headroom(
    accounts: &[AccountState],
    now: Millis,
    eligible: impl Fn(&AccountState) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, f64, u32)> = None;
    for (position, account) in accounts.iter().enumerate() {
        if !eligible(account) {
            continue;
        }
        let share = headroom(account, now);
        let better = match best {
            None => true,
            Some((_, best_share, best_in_flight)) => {
                share > best_share || (share == best_share && account.in_flight < best_in_flight)
            }
        };
        if better {
            best = Some((position, share, account.in_flight));
        }
    }
    best.map(|(position, _, _)| position)
}
