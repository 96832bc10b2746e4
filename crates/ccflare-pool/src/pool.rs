//! The pool itself: the accounts in their stable order, the session pins, and the cursors of the
//! rotating strategies. A request's attempt goes through [`Pool::select`], then
//! [`Pool::report`] with the upstream's verdict, then [`Pool::release`]; [`Pool::sync`] brings in
//! what storage holds every second.
//!
//! A select is a hash lookup for the session pin plus one linear scan over the accounts; the
//! stable order is sorted once per sync, never per request.
//!
//! Session keys come from clients (headers, the body's `metadata.user_id`), so the pins are
//! bounded: at most [`MAX_PINS`], the least recently used going first, kept in use order so that
//! the sync drops expired ones from the old end without looking at the others.

use crate::account_state::AccountState;
use crate::error::{Unavailable, UnavailableReason};
use crate::explain::{Basis, Chosen, MoveReason, Route, Skip};
use crate::forecast::window_cost;
use crate::placement::{
    self, Answers, CACHE_TTL_1H_MS, CACHE_TTL_5M_MS, Demand, MOVE_HORIZON_MS, Warm,
};
use crate::state::{AccountView, PersistState, RoutingState, StateCounts};
use crate::strategy::{self, Cursor};
use ccflare_core::config::Strategy;
use ccflare_core::ratelimit::{RateLimitSnapshot, Verdict};
use ccflare_core::{Account, AccountId, AccountKind, AccountStatus, Millis, Secret, Usage};
use lru::LruCache;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The most session pins kept: far more sessions than a pool's accounts serve within a session
/// timeout, and a bound on what clients sending a new key with every request can make the
/// server hold (about 100 bytes each, with a short key).
pub const MAX_PINS: usize = 100_000;

/// The settings a person can change while the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub strategy: Strategy,
    /// How long a session stays on its account after its last request, and how long the
    /// `session` strategy keeps one account current.
    pub session_timeout_ms: i64,
}

impl Default for PoolConfig {
    /// The defaults of SPEC §3: the `session` strategy and a 5-hour session.
    fn default() -> Self {
        PoolConfig {
            strategy: Strategy::Session,
            session_timeout_ms: 18_000 * 1000,
        }
    }
}

/// The account chosen for one attempt, with what the proxy needs to send it upstream.
#[derive(Debug, Clone)]
pub struct Pick {
    pub id: AccountId,
    pub name: Arc<str>,
    pub kind: AccountKind,
    pub credential: Secret,
    /// When an OAuth access token expires; the proxy refreshes it ahead of that.
    pub expires_at: Option<Millis>,
    /// Tokens reserved on the account for this attempt (its estimated cost; 0 outside the
    /// `headroom` strategy), handed back by [`Pool::finish`].
    pub reserved: u64,
    /// Why this account, and why not the others.
    pub route: Route,
}

/// The pool's five-hour window as one, for clients ([`Pool::pool_window`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolWindow {
    /// Used share of the pool's capacity, 0.0 to 1.0.
    pub utilization: f64,
    /// When the first window resets: the pool regains capacity then.
    pub reset_at: Option<Millis>,
}

/// A session key's account and when the session last used it.
#[derive(Debug, Clone, Copy)]
struct Pin {
    account: AccountId,
    last_used: Millis,
    /// The prompt cache the session's last answer left on `account` (read + written tokens),
    /// and until when it lives.
    cached: u64,
    cache_until: Millis,
}

/// The account the `session` strategy sends everything to, and since when.
#[derive(Debug, Clone, Copy)]
struct Turn {
    cursor: Cursor,
    since: Millis,
}

#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    /// Sorted by priority, then id: the stable order every strategy breaks ties with.
    accounts: Vec<AccountState>,
    /// Position of each account in `accounts`.
    positions: HashMap<AccountId, usize>,
    /// Session affinity, by session key, in the order of last use (what [`Pin::last_used`] says).
    pins: LruCache<Box<str>, Pin>,
    /// The `session` strategy's current account.
    turn: Option<Turn>,
    /// The `round-robin` strategy's last pick.
    round_robin: Option<Cursor>,
    /// The recent answers' lengths: what `headroom` expects a request's answer to cost.
    answers: Answers,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            config,
            accounts: Vec::new(),
            positions: HashMap::new(),
            // Grown as used (a bounded cache would allocate for all its entries at once).
            pins: LruCache::unbounded(),
            turn: None,
            round_robin: None,
            answers: Answers::default(),
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// Changes the strategy for requests that follow. Existing session pins stay: moving a
    /// session would throw its prompt cache away.
    pub fn set_strategy(&mut self, strategy: Strategy) {
        if strategy != self.config.strategy {
            self.config.strategy = strategy;
            // A rotation resumed from a stale position would be arbitrary; start it afresh.
            self.turn = None;
            self.round_robin = None;
        }
    }

    pub fn set_session_timeout(&mut self, ms: i64) {
        self.config.session_timeout_ms = ms;
    }

    /// Replaces the account list with what storage holds now, without rate-limit headers: as
    /// [`Pool::sync_with_ratelimits`] with none stored for any account.
    pub fn sync(&mut self, records: Vec<Account>, now: Millis) {
        let count = records.len();
        self.sync_records(records.into_iter().map(|record| (record, None)), count, now);
    }

    /// Replaces the account list with what storage holds now (at start and every second), each
    /// account with the last rate-limit headers persisted for it.
    ///
    /// Accounts no longer stored disappear with their session pins; new ones come in with the
    /// state, cooldowns and rate-limit headers of their record, so that a restarted server
    /// ranks them as they last reported; known ones are merged as [`AccountState::merge`]
    /// describes (a person's edit wins, otherwise the pool's own state). Expired session pins
    /// are dropped here too, so that memory stays bounded.
    pub fn sync_with_ratelimits(
        &mut self,
        records: Vec<(Account, Option<RateLimitSnapshot>)>,
        now: Millis,
    ) {
        let count = records.len();
        self.sync_records(records, count, now);
    }

    fn sync_records(
        &mut self,
        records: impl IntoIterator<Item = (Account, Option<RateLimitSnapshot>)>,
        count: usize,
        now: Millis,
    ) {
        let mut known: HashMap<AccountId, AccountState> = self
            .accounts
            .drain(..)
            .map(|account| (account.id, account))
            .collect();
        let mut accounts = Vec::with_capacity(count);
        let mut seen = HashSet::with_capacity(count);
        for (record, last_ratelimit) in records {
            // Ids are unique in storage; should a list repeat one, the first record counts.
            if !seen.insert(record.id) {
                continue;
            }
            let account = match known.remove(&record.id) {
                Some(mut account) => {
                    account.merge(record, last_ratelimit, now);
                    account
                }
                None => AccountState::new(record, last_ratelimit, now),
            };
            accounts.push(account);
        }
        accounts.sort_unstable_by_key(AccountState::order_key);
        self.positions = accounts
            .iter()
            .enumerate()
            .map(|(position, account)| (account.id, position))
            .collect();
        self.accounts = accounts;

        // Sessions of a removed account leave with it (a rare act of a person, the one time
        // every pin is looked at), so that an account coming back brings none of them back.
        if !known.is_empty() {
            let positions = &self.positions;
            self.pins
                .retain(|_, pin| positions.contains_key(&pin.account));
        }
        let timeout = self.config.session_timeout_ms;
        while let Some((_, pin)) = self.pins.peek_lru() {
            if now - pin.last_used < timeout {
                break;
            }
            if let Some((_, pin)) = self.pins.pop_lru() {
                self.count_pin(pin.account, false);
            }
        }
    }

    /// Session pins held now.
    pub fn pin_count(&self) -> usize {
        self.pins.len()
    }

    /// Chooses the account for one attempt and counts the attempt against it.
    ///
    /// A session key whose account is routable, untried and used within the session timeout
    /// goes back to that account. Anything else is chosen by the strategy among routable
    /// accounts not in `tried`, and the session key (if any) is pinned to that choice.
    pub fn select(
        &mut self,
        now: Millis,
        session: Option<&str>,
        tried: &[AccountId],
    ) -> Result<Pick, Unavailable> {
        let demand = Demand {
            session,
            tried,
            ..Demand::default()
        };
        self.select_for(now, &demand)
    }

    /// [`Pool::select`] for a request whose size is known: the `headroom` strategy places it
    /// by the accounts' forecast room (`placement.rs`); the others ignore the size.
    pub fn select_for(&mut self, now: Millis, demand: &Demand) -> Result<Pick, Unavailable> {
        if self.config.strategy == Strategy::Headroom {
            return self.select_predictive(now, demand);
        }
        let (session, tried) = (demand.session, demand.tried);
        let pinned = session.and_then(|key| self.pinned(key, now, tried));
        // A live pin that did not hold is a move (looked at before the new pick replaces it).
        let left = session.filter(|_| pinned.is_none());
        let moved = left.and_then(|key| self.left_pin(key, now, tried));
        let chosen = match pinned {
            Some(position) => Some(position),
            None => {
                let position = self.by_strategy(now, tried);
                if let (Some(key), Some(position)) = (session, position) {
                    self.pin(key, self.accounts[position].id, now);
                }
                position
            }
        };
        let Some(position) = chosen else {
            let mut unavailable = self.unavailable(now);
            unavailable.route = Box::new(self.explain(now, None, None, None, demand, None));
            return Err(unavailable);
        };
        let how = match (pinned, moved) {
            (Some(_), _) => Chosen::Pinned,
            (None, Some(reason)) => Chosen::Moved(reason),
            (None, None) => Chosen::Strategy(self.config.strategy),
        };
        let route = self.explain(now, Some(position), Some(how), None, demand, None);
        Ok(self.take(position, 0, route, now))
    }

    /// The explanation of a selection: the chosen account (if any) and why the others were
    /// not, the first [`crate::explain::EXPLAINED`] of them in the stable order.
    fn explain(
        &self,
        now: Millis,
        chosen: Option<usize>,
        how: Option<Chosen>,
        basis: Option<Basis>,
        demand: &Demand,
        warm: Option<Warm>,
    ) -> Route {
        let mut route = Route {
            account: chosen.map(|position| self.accounts[position].name.clone()),
            chosen: how,
            basis,
            ..Route::default()
        };
        let mut named = 0;
        for (position, account) in self.accounts.iter().enumerate() {
            if Some(position) == chosen {
                continue;
            }
            if named == crate::explain::EXPLAINED {
                // The rest are only counted: a pinned pick stays a lookup, not a scan.
                let others = self.accounts.len() - position;
                let chosen_later = chosen.is_some_and(|chosen| chosen > position);
                route.more_skipped = (others - usize::from(chosen_later)) as u32;
                break;
            }
            named += 1;
            let reason = if demand.tried.contains(&account.id) {
                Skip::Tried
            } else {
                match account.state(now) {
                    RoutingState::Paused => Skip::Paused,
                    RoutingState::Invalid => Skip::Invalid,
                    RoutingState::RateLimited { until } => Skip::RateLimited { until },
                    RoutingState::Overloaded { until } => Skip::Overloaded { until },
                    RoutingState::Active => self.active_skip(account, now, demand, warm),
                }
            };
            route.skip(&account.name, reason);
        }
        route
    }

    /// Why a routable account was passed over.
    fn active_skip(
        &self,
        account: &AccountState,
        now: Millis,
        demand: &Demand,
        warm: Option<Warm>,
    ) -> Skip {
        if self.config.strategy == Strategy::Headroom {
            let forecast = account.forecast(now);
            let need = placement::cost_on(account.id, demand, warm);
            if !placement::fits(forecast.as_ref(), account.reserved, need) {
                let left = forecast
                    .and_then(|f| f.tokens_left)
                    .unwrap_or(0)
                    .saturating_sub(account.reserved);
                return Skip::NoRoom { left, need };
            }
        } else if account.is_warned(now) {
            return Skip::Warned;
        }
        Skip::Ranked
    }

    /// What the forecast of the account at `position` says, for the explanation.
    fn basis(&self, position: usize, now: Millis) -> Option<Basis> {
        let account = &self.accounts[position];
        let forecast = account.forecast(now)?;
        Some(Basis {
            tokens_left: forecast
                .tokens_left
                .map(|left| left.saturating_sub(account.reserved)),
            size_tokens: forecast.size_tokens.or(forecast.rough_size_tokens),
            points: forecast.confidence.points,
            span_ms: forecast.confidence.span_ms,
            exhausts_at: forecast.exhausts_at,
        })
    }

    /// Counts an attempt against the account at `position`, reserving `reserved` tokens.
    fn take(&mut self, position: usize, reserved: u64, route: Route, now: Millis) -> Pick {
        let account = &mut self.accounts[position];
        account.in_flight += 1;
        account.requests += 1;
        account.reserved = account.reserved.saturating_add(reserved);
        account.last_used = Some(now);
        Pick {
            id: account.id,
            name: account.name.clone(),
            kind: account.kind,
            credential: account.credential.clone(),
            expires_at: account.token_expires_at,
            reserved,
            route,
        }
    }

    /// The `headroom` strategy (`placement.rs`): a pinned session stays while its request fits
    /// its account; anything else goes to the fitting account with the most tokens left per
    /// session; when none fits, the request is refused at once rather than sent to reject a
    /// window.
    fn select_predictive(&mut self, now: Millis, demand: &Demand) -> Result<Pick, Unavailable> {
        // The answer is expected to cost what recent answers cost, not the whole `max_tokens`.
        let demand = &Demand {
            max_tokens: self.answers.expected(demand.max_tokens),
            ..*demand
        };
        let timeout = self.config.session_timeout_ms;
        let pin = demand
            .session
            .and_then(|key| self.pins.peek(key).copied())
            .filter(|pin| now - pin.last_used < timeout);
        let warm = pin
            .filter(|pin| pin.cache_until > now && pin.cached > 0)
            .map(|pin| Warm {
                account: pin.account,
                cached: pin.cached,
            });
        let mut moved = None;
        if let Some(pin) = pin
            && let Some(&position) = self.positions.get(&pin.account)
        {
            let account = &self.accounts[position];
            moved = Some(if !account.is_routable(now) {
                MoveReason::NotRoutable
            } else {
                MoveReason::Tried
            });
            if account.is_routable(now) && !demand.tried.contains(&account.id) {
                let cost = placement::cost_on(account.id, demand, warm);
                let forecast = account.forecast(now);
                let exhausting = forecast.is_some_and(|f| f.exhausts_within(now, MOVE_HORIZON_MS));
                let fits = placement::fits(forecast.as_ref(), account.reserved, cost);
                // Forecast in turns rather than time: when the account's room will not carry
                // the next few turns of the conversations pinned to it, one of them must move
                // soon, and the sooner the smaller its prefix; this one moves now if another
                // account can carry it without being pressed itself.
                let pressed = placement::pressed(forecast.as_ref(), account, cost, 0);
                let relief = pressed && self.relief(now, demand, warm, account.id);
                if fits && !(exhausting && warm.is_none()) && !relief {
                    if let Some(key) = demand.session
                        && let Some(pin) = self.pins.get_mut(key)
                    {
                        pin.last_used = now;
                    }
                    let basis = self.basis(position, now);
                    let route = self.explain(
                        now,
                        Some(position),
                        Some(Chosen::Pinned),
                        basis,
                        demand,
                        warm,
                    );
                    return Ok(self.take(position, cost, route, now));
                }
                moved = Some(if !fits {
                    MoveReason::NoRoom
                } else if relief {
                    MoveReason::Pressed
                } else {
                    MoveReason::Exhausting
                });
            }
        }
        // Sizes in one unit: an account not sized yet (not even roughly) counts as big as the
        // biggest sized one; only while none is sized do all count as 1 (fractions).
        let assumed = self
            .accounts
            .iter()
            .filter_map(|account| account.forecast(now)?.rough_size_tokens)
            .max()
            .map_or(1.0, |size| size as f64);
        let mut best: Option<(usize, u64, f64, u32)> = None;
        let mut eligible = false;
        let mut earliest_reset: Option<Millis> = None;
        for (position, account) in self.accounts.iter().enumerate() {
            if !account.is_routable(now) || demand.tried.contains(&account.id) {
                continue;
            }
            eligible = true;
            let forecast = account.forecast(now);
            let cost = placement::cost_on(account.id, demand, warm);
            if !placement::fits(forecast.as_ref(), account.reserved, cost) {
                if let Some(reset) = forecast.and_then(|f| f.reset_at) {
                    earliest_reset = Some(earliest_reset.map_or(reset, |at| at.min(reset)));
                }
                continue;
            }
            let rank = placement::rank(account, forecast.as_ref(), assumed, now);
            let better = match best {
                None => true,
                Some((_, _, best_rank, in_flight)) => {
                    rank > best_rank || (rank == best_rank && account.in_flight < in_flight)
                }
            };
            if better {
                best = Some((position, cost, rank, account.in_flight));
            }
        }
        let Some((position, cost, _, _)) = best else {
            let route = Box::new(self.explain(now, None, None, None, demand, warm));
            if !eligible {
                let mut unavailable = self.unavailable(now);
                unavailable.route = route;
                return Err(unavailable);
            }
            return Err(Unavailable {
                reason: UnavailableReason::NoRoom {
                    tokens: demand.estimate(),
                },
                retry_at: earliest_reset,
                counts: self.counts(now),
                needs_reauth: Vec::new(),
                route,
            });
        };
        if let Some(key) = demand.session {
            self.pin(key, self.accounts[position].id, now);
        }
        let how = moved.map_or(Chosen::Placed, Chosen::Moved);
        let basis = self.basis(position, now);
        let route = self.explain(now, Some(position), Some(how), basis, demand, warm);
        Ok(self.take(position, cost, route, now))
    }

    /// Whether an account other than `from` fits the request and stays unpressed with one
    /// more conversation.
    fn relief(&self, now: Millis, demand: &Demand, warm: Option<Warm>, from: AccountId) -> bool {
        self.accounts.iter().any(|account| {
            if account.id == from || !account.is_routable(now) || demand.tried.contains(&account.id)
            {
                return false;
            }
            let forecast = account.forecast(now);
            let cost = placement::cost_on(account.id, demand, warm);
            forecast.is_some_and(|f| f.confidence.size_known)
                && placement::fits(forecast.as_ref(), account.reserved, cost)
                && !placement::pressed(forecast.as_ref(), account, cost, 1)
        })
    }

    /// The pool's five-hour window seen as one (issue 16's pool-level headers): the
    /// utilisation of the routable and benched subscription accounts weighted by their window
    /// sizes (an unsized one counts as big as the biggest sized one; none sized: all alike),
    /// a benched one counting as full, and the earliest reset among them: when the pool regains
    /// capacity. `None` when no account has subscription headers.
    pub fn pool_window(&self, now: Millis) -> Option<PoolWindow> {
        let forecasts: Vec<(f64, Option<u64>, Option<Millis>)> = self
            .accounts
            .iter()
            .filter(|account| account.status == AccountStatus::Active)
            .filter_map(|account| {
                let forecast = account.forecast(now)?;
                let benched = !account.is_routable(now);
                let utilization = if benched {
                    forecast.utilization.max(1.0)
                } else {
                    forecast.utilization
                };
                Some((utilization, forecast.rough_size_tokens, forecast.reset_at))
            })
            .collect();
        if forecasts.is_empty() {
            return None;
        }
        let biggest = forecasts.iter().filter_map(|f| f.1).max().unwrap_or(1) as f64;
        let (mut used, mut capacity) = (0.0, 0.0);
        for &(utilization, size, _) in &forecasts {
            let size = size.map_or(biggest, |size| size as f64);
            used += utilization.clamp(0.0, 1.0) * size;
            capacity += size;
        }
        Some(PoolWindow {
            utilization: if capacity > 0.0 { used / capacity } else { 0.0 },
            reset_at: forecasts.iter().filter_map(|f| f.2).min(),
        })
    }

    /// Ends an attempt that [`Pool::select`] started, as [`Pool::release`] does, handing back
    /// its reservation; for a served request, also counts its usage against the account's
    /// window and keeps what the answer cached for the session.
    pub fn finish(
        &mut self,
        id: AccountId,
        reserved: u64,
        session: Option<&str>,
        usage: Option<&Usage>,
        now: Millis,
    ) {
        let Some(&position) = self.positions.get(&id) else {
            return;
        };
        let account = &mut self.accounts[position];
        account.in_flight = account.in_flight.saturating_sub(1);
        account.reserved = account.reserved.saturating_sub(reserved);
        let Some(usage) = usage else {
            return;
        };
        account.served(window_cost(usage), now);
        self.answers.push(usage.output_tokens);
        let cached = usage
            .cache_read_input_tokens
            .saturating_add(usage.cache_creation_input_tokens);
        if let Some(key) = session
            && let Some(pin) = self.pins.peek_mut(key)
            && pin.account == id
            && cached > 0
        {
            let ttl = if usage.cache_write_1h > 0 {
                CACHE_TTL_1H_MS
            } else {
                CACHE_TTL_5M_MS
            };
            pin.cached = cached;
            pin.cache_until = now + ttl;
        }
    }

    /// Ends an attempt that [`Pool::select`] started, whatever its outcome.
    pub fn release(&mut self, id: AccountId) {
        if let Some(&position) = self.positions.get(&id) {
            let account = &mut self.accounts[position];
            account.in_flight = account.in_flight.saturating_sub(1);
        }
    }

    /// Applies what the upstream said about an attempt on `id`. Returns the state to write to
    /// the database when the status or a cooldown changed or new rate-limit headers came,
    /// otherwise `None`. An account removed meanwhile is ignored.
    pub fn report(
        &mut self,
        id: AccountId,
        verdict: Verdict,
        snapshot: Option<RateLimitSnapshot>,
        now: Millis,
    ) -> Option<PersistState> {
        let position = *self.positions.get(&id)?;
        self.accounts[position].apply(verdict, snapshot, now)
    }

    /// A refreshed OAuth access token, used from the next pick on (it was stored first).
    pub fn set_credential(
        &mut self,
        id: AccountId,
        credential: Secret,
        expires_at: Option<Millis>,
    ) {
        if let Some(&position) = self.positions.get(&id) {
            let account = &mut self.accounts[position];
            account.credential = credential;
            account.token_expires_at = expires_at;
        }
    }

    /// The account's login is dead (a refresh token refused for good): it leaves routing until
    /// a person re-authenticates it. Returns the state to persist.
    pub fn invalidate(&mut self, id: AccountId) -> Option<PersistState> {
        let position = *self.positions.get(&id)?;
        let account = &mut self.accounts[position];
        if account.status == AccountStatus::Invalid {
            return None;
        }
        account.status = AccountStatus::Invalid;
        Some(account.persist_state())
    }

    /// Keeps the account out of routing until `until` for a passing reason (a token refresh
    /// that failed on the network or a 5xx), without counting it as a rate limit. Returns the
    /// state to persist when the bench grew.
    pub fn bench_until(&mut self, id: AccountId, until: Millis) -> Option<PersistState> {
        let position = *self.positions.get(&id)?;
        let account = &mut self.accounts[position];
        if account
            .rate_limited_until
            .is_some_and(|current| current >= until)
        {
            return None;
        }
        account.rate_limited_until = Some(until);
        Some(account.persist_state())
    }

    /// Every account in the stable order, as interfaces show it.
    pub fn views(&self, now: Millis) -> Vec<AccountView> {
        self.accounts
            .iter()
            .map(|account| account.view(now))
            .collect()
    }

    pub fn counts(&self, now: Millis) -> StateCounts {
        let mut counts = StateCounts::default();
        for account in &self.accounts {
            counts.add(account.state(now));
        }
        counts
    }

    /// The earliest time a benched account becomes routable again. Paused and invalid accounts
    /// do not count: their bench ending brings them no closer to routing.
    pub fn next_recovery(&self, now: Millis) -> Option<Millis> {
        self.accounts
            .iter()
            .filter_map(|account| account.state(now).until())
            .min()
    }

    /// The session key's account, if the affinity still holds; refreshes its last use.
    fn pinned(&mut self, key: &str, now: Millis, tried: &[AccountId]) -> Option<usize> {
        // Looked at without moving it: only a pin that holds is used, and moves to the recent
        // end with its new time, so the use order stays the order of `last_used`.
        let pin = self.pins.peek_mut(key)?;
        let position = *self.positions.get(&pin.account)?;
        let account = &self.accounts[position];
        let holds = account.is_routable(now)
            && !tried.contains(&account.id)
            && now - pin.last_used < self.config.session_timeout_ms;
        if !holds {
            return None;
        }
        pin.last_used = now;
        self.pins.promote(key);
        Some(position)
    }

    /// Why the session key's pin, live but not held by [`Pool::pinned`], did not hold: its
    /// account was not routable or already tried. `None` without a pin, or with one expired
    /// or on an account no longer in the pool (nothing warm was left behind there).
    fn left_pin(&self, key: &str, now: Millis, tried: &[AccountId]) -> Option<MoveReason> {
        let pin = self.pins.peek(key)?;
        let account = &self.accounts[*self.positions.get(&pin.account)?];
        if now - pin.last_used >= self.config.session_timeout_ms {
            return None;
        }
        Some(if !account.is_routable(now) {
            MoveReason::NotRoutable
        } else if tried.contains(&account.id) {
            MoveReason::Tried
        } else {
            return None;
        })
    }

    fn pin(&mut self, key: &str, account: AccountId, now: Millis) {
        let pin = Pin {
            account,
            last_used: now,
            cached: 0,
            cache_until: now,
        };
        // Look up before inserting so that a known key costs no allocation.
        let replaced = match self.pins.get_mut(key) {
            Some(existing) => Some(std::mem::replace(existing, pin).account),
            None => {
                self.pins.push(key.into(), pin);
                if self.pins.len() > MAX_PINS {
                    self.pins.pop_lru().map(|(_, old)| old.account)
                } else {
                    None
                }
            }
        };
        if let Some(old) = replaced {
            self.count_pin(old, false);
        }
        self.count_pin(account, true);
    }

    /// Keeps each account's count of session pins.
    fn count_pin(&mut self, account: AccountId, added: bool) {
        if let Some(&position) = self.positions.get(&account) {
            let pins = &mut self.accounts[position].pins;
            *pins = if added {
                pins.saturating_add(1)
            } else {
                pins.saturating_sub(1)
            };
        }
    }

    fn by_strategy(&mut self, now: Millis, tried: &[AccountId]) -> Option<usize> {
        // A subscription close to its limit (`allowed_warning`) still serves, but every pick
        // (a new session, a request without one, the `session` strategy's turn) goes elsewhere
        // while another account can take it. Pinned sessions never get here: they stay where
        // their prompt cache is.
        self.pick(now, tried, true)
            .or_else(|| self.pick(now, tried, false))
    }

    fn pick(&mut self, now: Millis, tried: &[AccountId], skip_warned: bool) -> Option<usize> {
        let eligible = |account: &AccountState| {
            account.is_routable(now)
                && !tried.contains(&account.id)
                && !(skip_warned && account.is_warned(now))
        };
        match self.config.strategy {
            Strategy::Session => self.session_turn(now, tried, skip_warned),
            Strategy::RoundRobin => {
                let start = self.start_after(self.round_robin);
                let position = strategy::next_from(&self.accounts, start, eligible)?;
                self.round_robin = Some(Cursor::at(&self.accounts[position]));
                Some(position)
            }
            Strategy::LeastRequests => strategy::least_requests(&self.accounts, eligible),
            Strategy::Priority => strategy::first(&self.accounts, eligible),
            Strategy::Headroom => strategy::most_headroom(&self.accounts, now, eligible),
        }
    }

    /// The `session` strategy: the current account keeps serving while it is routable and its
    /// turn (one session timeout) lasts; then the next routable account in the stable order
    /// takes over, wrapping around. With `skip_warned`, a current account that got an
    /// `allowed_warning` hands its turn to the next account without one; when there is none,
    /// this finds nothing and the second pass keeps the turn where it is.
    fn session_turn(
        &mut self,
        now: Millis,
        tried: &[AccountId],
        skip_warned: bool,
    ) -> Option<usize> {
        let eligible = |account: &AccountState| {
            account.is_routable(now)
                && !tried.contains(&account.id)
                && !(skip_warned && account.is_warned(now))
        };
        if let Some(turn) = self.turn
            && let Some(&position) = self.positions.get(&turn.cursor.id)
        {
            let current = &self.accounts[position];
            if current.is_routable(now) && now - turn.since < self.config.session_timeout_ms {
                if tried.contains(&current.id) {
                    // The current account failed this request only: fail over to the next one
                    // for this request, and keep the turn where it is for the others.
                    return strategy::next_from(&self.accounts, position + 1, eligible);
                }
                if !(skip_warned && current.is_warned(now)) {
                    return Some(position);
                }
            }
        }
        let start = self.start_after(self.turn.map(|turn| turn.cursor));
        let position = strategy::next_from(&self.accounts, start, eligible)?;
        self.turn = Some(Turn {
            cursor: Cursor::at(&self.accounts[position]),
            since: now,
        });
        Some(position)
    }

    /// Where a rotation continues: after the cursor's account, or from the start.
    fn start_after(&self, cursor: Option<Cursor>) -> usize {
        match cursor {
            None => 0,
            Some(cursor) => {
                cursor.next_position(&self.accounts, self.positions.get(&cursor.id).copied())
            }
        }
    }

    /// Why nothing could be selected, from one scan over the accounts.
    fn unavailable(&self, now: Millis) -> Unavailable {
        let counts = self.counts(now);
        let active = counts.available + counts.rate_limited + counts.overloaded;
        let reason = if counts.total == 0 {
            UnavailableReason::NoAccounts
        } else if active == 0 {
            UnavailableReason::NoneActive
        } else if counts.available > 0 {
            UnavailableReason::AllTried
        } else if counts.overloaded == 0 {
            UnavailableReason::AllRateLimited
        } else {
            UnavailableReason::AllBenched
        };
        let retry_at = match reason {
            UnavailableReason::AllRateLimited | UnavailableReason::AllBenched => {
                self.next_recovery(now)
            }
            _ => None,
        };
        // Only when nothing is active is a dead login the reason to name.
        let needs_reauth = match reason {
            UnavailableReason::NoneActive => self
                .accounts
                .iter()
                .filter(|account| {
                    account.kind == AccountKind::OAuth && account.status == AccountStatus::Invalid
                })
                .map(|account| account.name.clone())
                .collect(),
            _ => Vec::new(),
        };
        Unavailable {
            reason,
            retry_at,
            counts,
            needs_reauth,
            route: Box::default(),
        }
    }
}

#[cfg(test)]
mod predictive_tests;
#[cfg(test)]
mod tests;
