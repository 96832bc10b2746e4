//! The pool's copy of one account: what storage says about it (name, credential, priority, the
//! status a person set) plus what only the running server knows (cooldowns it imposed, requests
//! in flight, the last rate-limit headers). Here live the rules that turn an upstream answer into
//! a bench, and the rules that merge a fresh database record into this copy.

use crate::forecast::{Forecast, WindowTrack};
use crate::state::{AccountView, PersistState, RoutingState};
use ccflare_core::ratelimit::{RateLimitSnapshot, Verdict};
use ccflare_core::{Account, AccountId, AccountKind, AccountStatus, Millis, Secret};
use std::sync::Arc;

/// First bench after a 429 that named no reset time; doubles with every 429 in a row.
pub const DEFAULT_BACKOFF_MS: i64 = 30_000;
/// The default backoff never grows past this.
pub const MAX_BACKOFF_MS: i64 = 5 * 60_000;
/// Bench after a 529. Fixed, because an overloaded API says nothing about this account.
pub const OVERLOAD_COOLDOWN_MS: i64 = 15_000;
/// Bench of an OAuth account whose token was refused: long enough for a token refresh, without
/// giving up on a subscription that a refresh will most likely bring back.
pub const OAUTH_AUTH_FAILURE_BENCH_MS: i64 = 60_000;

/// A cooldown end that still lies ahead; a bench whose end has passed is simply over.
fn ahead(until: Option<Millis>, now: Millis) -> Option<Millis> {
    until.filter(|&at| at > now)
}

/// The later of a running bench and a new one, so that a slow answer from a concurrent attempt
/// cannot shorten a bench another answer imposed.
fn extend(bench: &mut Option<Millis>, until: Millis) {
    *bench = Some(bench.map_or(until, |at| at.max(until)));
}

/// 30 s × 2^(n−1), capped at 5 min, for the n-th 429 in a row.
fn default_backoff(consecutive: u32) -> i64 {
    let doublings = consecutive.saturating_sub(1).min(20);
    DEFAULT_BACKOFF_MS
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF_MS)
}

#[derive(Debug)]
pub(crate) struct AccountState {
    pub(crate) id: AccountId,
    pub(crate) name: Arc<str>,
    pub(crate) kind: AccountKind,
    pub(crate) credential: Secret,
    /// When the OAuth access token expires (`None` for API keys).
    pub(crate) token_expires_at: Option<Millis>,
    pub(crate) priority: i64,
    pub(crate) status: AccountStatus,
    /// The record revision this copy last took a person's settings from.
    pub(crate) revision: i64,
    pub(crate) rate_limited_until: Option<Millis>,
    pub(crate) overloaded_until: Option<Millis>,
    pub(crate) consecutive_rate_limits: u32,
    pub(crate) last_ratelimit: Option<RateLimitSnapshot>,
    pub(crate) in_flight: u32,
    pub(crate) requests: u64,
    pub(crate) last_used: Option<Millis>,
    /// When rate-limit headers were last handed out for persisting.
    pub(crate) snapshot_persisted_at: Option<Millis>,
    /// The five-hour window's points and inferred size (`forecast.rs`).
    pub(crate) window: WindowTrack,
    /// Tokens this account served since the server started, in `window_cost` units.
    pub(crate) served: u64,
    /// Tokens reserved by attempts in flight (their estimated cost), released with them.
    pub(crate) reserved: u64,
    /// Session pins held by this account.
    pub(crate) pins: u32,
}

impl AccountState {
    /// An account the pool has not seen before: everything from the record, including the
    /// cooldowns and the last rate-limit headers an earlier run persisted, so that `headroom`
    /// and `allowed_warning` rank it as it last reported rather than as untouched.
    pub(crate) fn new(
        record: Account,
        last_ratelimit: Option<RateLimitSnapshot>,
        now: Millis,
    ) -> Self {
        AccountState {
            id: record.id,
            name: record.name.into(),
            kind: record.kind,
            credential: record.credential,
            token_expires_at: record.token_expires_at,
            priority: record.priority,
            status: record.status,
            revision: record.revision,
            rate_limited_until: ahead(record.rate_limited_until, now),
            overloaded_until: ahead(record.overloaded_until, now),
            consecutive_rate_limits: 0,
            last_ratelimit,
            in_flight: 0,
            requests: 0,
            last_used: None,
            snapshot_persisted_at: None,
            window: WindowTrack::default(),
            served: 0,
            reserved: 0,
            pins: 0,
        }
    }

    /// Takes a fresh record of this account from storage.
    ///
    /// Name, kind, credential and priority are always taken: the pool never changes them
    /// itself, and a refreshed OAuth token is stored without a new revision yet must be used.
    /// Stored rate-limit headers are taken only when they were seen later than the pool's own
    /// (another process wrote them); the database is usually behind the pool. Status and
    /// cooldowns are taken only when a person changed the account (a new revision); with the
    /// same revision the pool's own state wins, because the database may not have the pool's
    /// latest writes yet. An older revision is a stale read (the one-second sync read the table
    /// just before a person's change, which the API already applied): it changes nothing, or
    /// it would undo a pause for up to a second.
    pub(crate) fn merge(
        &mut self,
        record: Account,
        last_ratelimit: Option<RateLimitSnapshot>,
        now: Millis,
    ) {
        if *self.name != *record.name {
            self.name = record.name.into();
        }
        if let Some(stored) = last_ratelimit
            && self
                .last_ratelimit
                .as_ref()
                .is_none_or(|own| stored.seen_at > own.seen_at)
        {
            self.last_ratelimit = Some(stored);
        }
        self.kind = record.kind;
        self.credential = record.credential;
        self.token_expires_at = record.token_expires_at;
        self.priority = record.priority;
        if record.revision <= self.revision {
            return;
        }
        self.revision = record.revision;
        // Resuming or re-adding brings the account back with the cooldowns storage holds for it
        // (none, when the person's act cleared them). Other edits (a rename, a new priority) keep
        // the benches this server imposed: the upstream limits did not change.
        let reactivated = record.status == AccountStatus::Active && self.status != record.status;
        self.status = record.status;
        if reactivated {
            self.rate_limited_until = ahead(record.rate_limited_until, now);
            self.overloaded_until = ahead(record.overloaded_until, now);
            self.consecutive_rate_limits = 0;
        }
    }

    /// The stable order of the pool: priority ascending, then id.
    pub(crate) fn order_key(&self) -> (i64, AccountId) {
        (self.priority, self.id)
    }

    /// The subscription said it is close to its limit (`allowed_warning`), and the window it
    /// spoke of has not reset since (at most 5 hours after that answer). A warning whose window is over says nothing any more; an
    /// account that no new session reaches would otherwise never get the answer that clears it.
    pub(crate) fn is_warned(&self, now: Millis) -> bool {
        self.last_ratelimit
            .as_ref()
            .is_some_and(|snapshot| snapshot.unified_warning() && snapshot.warning_ends_at() > now)
    }

    /// Adds a finished request's cost to what the account served, and takes the five-hour
    /// utilisation of its last headers as a point of the window (at the request's end, so
    /// that the point and the tokens served both include the request).
    pub(crate) fn served(&mut self, cost: u64, now: Millis) {
        self.served = self.served.saturating_add(cost);
        if let Some(snapshot) = &self.last_ratelimit
            && let Some(utilization) = snapshot.unified_5h_utilization
        {
            self.window.observe(
                utilization,
                snapshot.unified_5h_reset,
                self.served,
                cost,
                now,
            );
        }
    }

    /// The five-hour window as forecast now; `None` without subscription headers.
    pub(crate) fn forecast(&self, now: Millis) -> Option<Forecast> {
        self.window.forecast(self.served, now)
    }

    pub(crate) fn is_routable(&self, now: Millis) -> bool {
        self.state(now).is_routable()
    }

    pub(crate) fn state(&self, now: Millis) -> RoutingState {
        RoutingState::of(
            self.status,
            self.rate_limited_until,
            self.overloaded_until,
            now,
        )
    }

    pub(crate) fn view(&self, now: Millis) -> AccountView {
        AccountView {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            priority: self.priority,
            state: self.state(now),
            in_flight: self.in_flight,
            requests: self.requests,
            consecutive_rate_limits: self.consecutive_rate_limits,
            last_ratelimit: self.last_ratelimit.clone(),
            last_used: self.last_used,
        }
    }

    pub(crate) fn persist_state(&self) -> PersistState {
        PersistState {
            id: self.id,
            revision: self.revision,
            status: self.status,
            rate_limited_until: self.rate_limited_until,
            overloaded_until: self.overloaded_until,
            last_ratelimit: self.last_ratelimit.clone(),
        }
    }

    /// Applies what the upstream said about an attempt on this account. Returns the state to
    /// persist when the status or a cooldown changed, or when there are new headers to keep.
    pub(crate) fn apply(
        &mut self,
        verdict: Verdict,
        snapshot: Option<RateLimitSnapshot>,
        now: Millis,
    ) -> Option<PersistState> {
        // Benches that are over are dropped first, so what gets persisted says "not benched"
        // rather than a time in the past; that tidy-up is itself worth one write.
        let before = (self.status, self.rate_limited_until, self.overloaded_until);
        self.rate_limited_until = ahead(self.rate_limited_until, now);
        self.overloaded_until = ahead(self.overloaded_until, now);
        // Answers to requests sent before a running bench began (concurrent ones) are one
        // refusal, not several: they must not double the backoff once each.
        let benched = self.rate_limited_until.is_some();
        let has_snapshot = snapshot.is_some();
        let blocked = snapshot.as_ref().is_some_and(|s| s.unified_blocked());
        if snapshot.is_some() {
            self.last_ratelimit = snapshot;
        }
        match verdict {
            Verdict::Serve { bench_until } => {
                self.overloaded_until = None;
                match ahead(bench_until, now) {
                    Some(until) => {
                        self.consecutive_rate_limits = 0;
                        extend(&mut self.rate_limited_until, until);
                    }
                    // The subscription says it is out of quota but names no reset: bench it
                    // like a 429 without one, so the next requests go elsewhere.
                    None if blocked => {
                        let backoff = self.count_refusal(benched);
                        extend(&mut self.rate_limited_until, now + backoff);
                    }
                    None => self.consecutive_rate_limits = 0,
                }
            }
            Verdict::RateLimited { until } => {
                let backoff = self.count_refusal(benched);
                // A reset that has already passed cannot be right after a 429: treat it as no
                // reset at all rather than not benching.
                let until = ahead(until, now).unwrap_or(now + backoff);
                extend(&mut self.rate_limited_until, until);
            }
            Verdict::Overloaded => extend(&mut self.overloaded_until, now + OVERLOAD_COOLDOWN_MS),
            Verdict::AuthFailed => match self.kind {
                AccountKind::ApiKey => self.status = AccountStatus::Invalid,
                AccountKind::OAuth => extend(
                    &mut self.rate_limited_until,
                    now + OAUTH_AUTH_FAILURE_BENCH_MS,
                ),
            },
            Verdict::RequestScoped | Verdict::ServerError | Verdict::Forbidden => {}
        }
        let after = (self.status, self.rate_limited_until, self.overloaded_until);
        // Headers arrive with nearly every response; persisting them at most once a second
        // per account keeps the writer's work flat under load. State changes always persist.
        let snapshot_due = has_snapshot
            && self
                .snapshot_persisted_at
                .is_none_or(|at| now - at >= SNAPSHOT_PERSIST_INTERVAL_MS);
        if before == after && !snapshot_due {
            return None;
        }
        if has_snapshot {
            self.snapshot_persisted_at = Some(now);
        }
        Some(self.persist_state())
    }
}

impl AccountState {
    /// Counts a refusal (a 429, or a success that says the quota is gone) and returns the
    /// default backoff for the run so far. While a bench runs, further refusals are answers to
    /// requests sent before it began and do not count again, or ten requests in flight would
    /// bench the account for five minutes at once.
    fn count_refusal(&mut self, benched: bool) -> i64 {
        if !benched || self.consecutive_rate_limits == 0 {
            self.consecutive_rate_limits = self.consecutive_rate_limits.saturating_add(1);
        }
        default_backoff(self.consecutive_rate_limits)
    }
}

/// Least time between two persists of an account's rate-limit headers alone.
pub const SNAPSHOT_PERSIST_INTERVAL_MS: i64 = 1000;

#[cfg(test)]
mod tests {
    use super::default_backoff;

    #[test]
    fn default_backoff_doubles_up_to_the_cap() {
        let seconds: Vec<i64> = (1..=8).map(|n| default_backoff(n) / 1000).collect();
        assert_eq!(seconds, [30, 60, 120, 240, 300, 300, 300, 300]);
        assert_eq!(default_backoff(u32::MAX), 300_000);
    }
}
