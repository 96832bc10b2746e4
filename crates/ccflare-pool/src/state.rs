//! What the pool tells the rest of ccflare about its accounts: the routing state of each one
//! (for `/health`, the CLI, the TUI and the API), the tally of those states, and the part of an
//! account's state that is written back to the database after an upstream answer.

use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::{Account, AccountId, AccountKind, AccountStatus, Millis};
use std::sync::Arc;

/// Whether an account can take a request now, and if not, why and until when. This is the one
/// definition of an account's state: the pool routes by it, and the CLI, the API's JSON and the
/// `/metrics` gauge show [`RoutingState::name`] and [`RoutingState::until`] of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingState {
    Active,
    /// Paused by a person.
    Paused,
    /// Benched after a 429 (or a refused OAuth token). `until` is when it is routable again.
    RateLimited {
        until: Millis,
    },
    /// Benched after a 529. `until` is when it is routable again.
    Overloaded {
        until: Millis,
    },
    /// The credential was refused for good (a 401 on an API key, a dead OAuth refresh token);
    /// a person must re-add or re-authenticate it.
    Invalid,
}

impl RoutingState {
    /// Every state's [`name`](RoutingState::name), in the order interfaces list them (the
    /// `ccflare_account_state` gauge has one sample per name for each account).
    pub const NAMES: [&'static str; 5] =
        ["active", "paused", "rate_limited", "overloaded", "invalid"];

    /// The state of an account at `now`, from the status a person (or a dead credential) set and
    /// the ends of its benches: a paused or invalid account is that, whatever its benches; an
    /// active one is benched until the later of its running benches end. A 429 bench says more
    /// about the account than a 529 one, so it names the state while both run. A bench whose end
    /// has passed is simply over.
    pub fn of(
        status: AccountStatus,
        rate_limited_until: Option<Millis>,
        overloaded_until: Option<Millis>,
        now: Millis,
    ) -> RoutingState {
        match status {
            AccountStatus::Paused => RoutingState::Paused,
            AccountStatus::Invalid => RoutingState::Invalid,
            AccountStatus::Active => {
                let rate_limited = rate_limited_until.filter(|&at| at > now);
                let overloaded = overloaded_until.filter(|&at| at > now);
                match rate_limited.max(overloaded) {
                    None => RoutingState::Active,
                    Some(until) if rate_limited.is_some() => RoutingState::RateLimited { until },
                    Some(until) => RoutingState::Overloaded { until },
                }
            }
        }
    }

    /// The state of an account as stored, at `now`: what the pool says of it once it has loaded
    /// the record (the pool takes the stored benches with it). For readers without a running
    /// pool, such as the CLI.
    pub fn of_stored(account: &Account, now: Millis) -> RoutingState {
        RoutingState::of(
            account.status,
            account.rate_limited_until,
            account.overloaded_until,
            now,
        )
    }

    /// Whether the account can take a request now.
    pub fn is_routable(self) -> bool {
        self == RoutingState::Active
    }

    /// The state's name in JSON and metric labels: `active`, `paused`, `rate_limited`,
    /// `overloaded` or `invalid`.
    pub fn name(self) -> &'static str {
        match self {
            RoutingState::Active => "active",
            RoutingState::Paused => "paused",
            RoutingState::RateLimited { .. } => "rate_limited",
            RoutingState::Overloaded { .. } => "overloaded",
            RoutingState::Invalid => "invalid",
        }
    }

    /// When a benched account is routable again; `None` when it is not benched.
    pub fn until(self) -> Option<Millis> {
        match self {
            RoutingState::RateLimited { until } | RoutingState::Overloaded { until } => Some(until),
            RoutingState::Active | RoutingState::Paused | RoutingState::Invalid => None,
        }
    }
}

/// One account as interfaces show it. Never carries the credential.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub id: AccountId,
    pub name: Arc<str>,
    pub kind: AccountKind,
    pub priority: i64,
    pub state: RoutingState,
    /// Attempts selected and not yet released.
    pub in_flight: u32,
    /// Attempts selected since this server started.
    pub requests: u64,
    /// 429s in a row without a successful answer in between; drives the default backoff.
    pub consecutive_rate_limits: u32,
    pub last_ratelimit: Option<RateLimitSnapshot>,
    /// When the account was last selected.
    pub last_used: Option<Millis>,
}

/// How many accounts are in each routing state; every account counts in exactly one of
/// `available`, `rate_limited`, `overloaded`, `paused` and `invalid`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub total: usize,
    /// Routable now.
    pub available: usize,
    pub rate_limited: usize,
    pub overloaded: usize,
    pub paused: usize,
    pub invalid: usize,
}

impl StateCounts {
    pub(crate) fn add(&mut self, state: RoutingState) {
        self.total += 1;
        match state {
            RoutingState::Active => self.available += 1,
            RoutingState::Paused => self.paused += 1,
            RoutingState::RateLimited { .. } => self.rate_limited += 1,
            RoutingState::Overloaded { .. } => self.overloaded += 1,
            RoutingState::Invalid => self.invalid += 1,
        }
    }
}

/// The persisted part of an account's state after [`crate::Pool::report`] changed it. The caller
/// writes it as it is: `None` cooldowns mean "not benched" and should clear the stored ones.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistState {
    pub id: AccountId,
    /// The record revision this state was decided on: a person's later change wins.
    pub revision: i64,
    pub status: AccountStatus,
    pub rate_limited_until: Option<Millis>,
    pub overloaded_until: Option<Millis>,
    pub last_ratelimit: Option<RateLimitSnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Pool, PoolConfig};
    use AccountStatus::{Active, Invalid, Paused};
    use ccflare_core::Secret;

    const NOW: Millis = 1_000_000;

    /// One of each state; the match makes a new variant fail to compile here until it is added.
    fn every_state() -> [RoutingState; 5] {
        let all = [
            RoutingState::Active,
            RoutingState::Paused,
            RoutingState::RateLimited { until: NOW + 1 },
            RoutingState::Overloaded { until: NOW + 1 },
            RoutingState::Invalid,
        ];
        for state in all {
            match state {
                RoutingState::Active
                | RoutingState::Paused
                | RoutingState::RateLimited { .. }
                | RoutingState::Overloaded { .. }
                | RoutingState::Invalid => {}
            }
        }
        all
    }

    #[test]
    fn names_list_every_state_once_and_only_active_is_routable() {
        let names: Vec<&str> = every_state().iter().map(|s| s.name()).collect();
        assert_eq!(names, RoutingState::NAMES);
        let routable: Vec<&str> = every_state()
            .iter()
            .filter(|s| s.is_routable())
            .map(|s| s.name())
            .collect();
        assert_eq!(routable, ["active"]);
        let until: Vec<Option<Millis>> = every_state().iter().map(|s| s.until()).collect();
        assert_eq!(until, [None, None, Some(NOW + 1), Some(NOW + 1), None]);
    }

    /// (status, rate limited until, overloaded until) and the state they make at `NOW`.
    fn cases() -> Vec<(AccountStatus, Option<Millis>, Option<Millis>, RoutingState)> {
        vec![
            (Active, None, None, RoutingState::Active),
            // Benches whose end has passed (or is now) are over.
            (Active, Some(NOW - 1), Some(NOW), RoutingState::Active),
            (
                Active,
                Some(NOW + 250_000),
                Some(NOW + 5_000),
                RoutingState::RateLimited {
                    until: NOW + 250_000,
                },
            ),
            // The 429 bench names the state; `until` is when both are over.
            (
                Active,
                Some(NOW + 1),
                Some(NOW + 9),
                RoutingState::RateLimited { until: NOW + 9 },
            ),
            (
                Active,
                Some(NOW - 1),
                Some(NOW + 12_000),
                RoutingState::Overloaded {
                    until: NOW + 12_000,
                },
            ),
            (Paused, Some(NOW + 5_000), None, RoutingState::Paused),
            (Invalid, None, Some(NOW + 5_000), RoutingState::Invalid),
        ]
    }

    #[test]
    fn a_status_and_its_benches_make_one_state() {
        for (status, limited, overloaded, expected) in cases() {
            assert_eq!(
                RoutingState::of(status, limited, overloaded, NOW),
                expected,
                "{status:?} {limited:?} {overloaded:?}"
            );
        }
    }

    /// The CLI reads states from stored rows, the API and `/metrics` from the running pool: both
    /// must say the same of the same account.
    #[test]
    fn a_stored_account_has_the_state_the_pool_gives_it() {
        let records: Vec<Account> = cases()
            .into_iter()
            .enumerate()
            .map(|(n, (status, rate_limited_until, overloaded_until, _))| {
                let credential = Secret::new(format!("sk-ant-api03-state-{n}-0123456789abcdef"));
                let id = AccountId(n as i64 + 1);
                Account {
                    status,
                    rate_limited_until,
                    overloaded_until,
                    ..Account::new(id, format!("a{n}"), AccountKind::ApiKey, credential)
                }
            })
            .collect();
        let mut pool = Pool::new(PoolConfig::default());
        pool.sync(records.clone(), NOW);
        let from_pool: Vec<RoutingState> = pool.views(NOW).iter().map(|v| v.state).collect();
        let from_rows: Vec<RoutingState> = records
            .iter()
            .map(|record| RoutingState::of_stored(record, NOW))
            .collect();
        let expected: Vec<RoutingState> = cases().into_iter().map(|case| case.3).collect();
        assert_eq!(from_rows, expected);
        assert_eq!(from_pool, expected);
    }
}
