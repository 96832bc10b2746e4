//! What the pool tells the rest of ccflare about its accounts: the routing state of each one
//! (for `/health`, the CLI, the TUI and the API), the tally of those states, and the part of an
//! account's state that is written back to the database after an upstream answer.

use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::{AccountId, AccountKind, AccountStatus, Millis};
use std::sync::Arc;

/// Whether an account can take a request now, and if not, why and until when.
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
    /// The credential was refused; a person must re-add it.
    Invalid,
}

/// One account as interfaces show it. Never carries the credential.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub id: AccountId,
    pub name: Arc<str>,
    pub kind: AccountKind,
    pub priority: i64,
    pub weight: u32,
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
