//! Keeping OAuth access tokens fresh (SPEC §5, protocol doc §6.2): refresh ahead of expiry and
//! after a 401, one refresh per account at a time however many requests need it, and the
//! rotated refresh token committed to the database before the new access token is used.
//!
//! The refresh runs in a task of its own that holds the account's lock until the new tokens
//! are stored: a client that hangs up mid-refresh drops only its wait, never a rotation the
//! token endpoint already made (which would leave a dead refresh token behind). Requests that
//! waited for a refresh take its result instead of repeating it.
//!
//! This is the one place the request path waits on the database, and only while a refresh is
//! due: the rotation must be durable before the old refresh token is dead for good.
//!
//! When the database cannot take the new tokens (locked by another program for longer than the
//! busy timeout, read-only, full), dropping them would kill the login: the endpoint already
//! rotated the refresh token. They are kept in memory instead ([`Unsaved`]), used for requests,
//! and a background task stores them as soon as the database takes them. Only a process that
//! dies before that loses them.
//!
//! Both kinds of task belong to the refresher ([`Tasks`]): the server waits for them at exit
//! ([`TokenRefresher::finish`]), up to a deadline, and dropping the refresher stops them. What
//! they touch of the server is the pool ([`SharedPool`]) and the database, nothing else.

use crate::pool::SharedPool;
use ccflare_core::{AccountId, Millis, Secret};
use ccflare_oauth::{OAuthError, TokenClient};
use ccflare_pool::Pick;
use ccflare_storage::{Db, oauth};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Refresh this long before the token expires.
pub const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;

/// After a refresh failed for a passing reason, the account is skipped this long before the
/// next try, and requests that waited for that refresh get its failure.
pub const REFRESH_BACKOFF_MS: i64 = 60 * 1000;

/// A 401 forces a refresh only when the token is older than this: a 401 that a fresh token
/// also gets is about the request (an endpoint or beta that refuses OAuth), and refreshing
/// again would only rotate tokens and hammer the token endpoint.
pub const FORCED_REFRESH_MIN_AGE_MS: i64 = 60 * 1000;

/// Why an OAuth account could not get a usable token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    /// The login is dead (`invalid_grant`, no refresh token): the account is now invalid.
    Dead,
    /// A passing failure: the account is benched for [`REFRESH_BACKOFF_MS`].
    Transient,
}

impl RefreshFailure {
    pub fn label(self) -> &'static str {
        match self {
            RefreshFailure::Dead => "token_refresh_refused",
            RefreshFailure::Transient => "token_refresh_failed",
        }
    }
}

/// One account's refresh state: the lock that makes refreshes single-flight, and the last
/// failure, which requests that waited behind it take as their answer.
#[derive(Default)]
struct Slot {
    failed: Option<(Millis, RefreshFailure)>,
}

/// Tokens a refresh got that the database has not taken yet.
#[derive(Clone)]
struct Unsaved {
    access: Secret,
    refresh: Option<Secret>,
    expires_at: Millis,
    refreshed_at: Millis,
    /// The refresh token the database still holds: the save applies only while it does (a
    /// person's new login meanwhile wins).
    stored_refresh: Secret,
    name: Arc<str>,
}

/// The accounts whose refreshed tokens wait to be stored, and a flag that keeps the common
/// case (none) to one atomic load.
#[derive(Default)]
struct UnsavedTokens {
    any: AtomicBool,
    by_account: Mutex<HashMap<AccountId, Unsaved>>,
}

impl UnsavedTokens {
    fn get(&self, id: AccountId) -> Option<Unsaved> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id).cloned()
    }

    /// The names of the accounts whose refreshed tokens are not stored yet.
    fn names(&self) -> Vec<Arc<str>> {
        let map = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|u| u.name.clone()).collect()
    }

    fn with<R>(&self, change: impl FnOnce(&mut HashMap<AccountId, Unsaved>) -> R) -> R {
        let mut map = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        let result = change(&mut map);
        self.any.store(!map.is_empty(), Ordering::Release);
        result
    }
}

/// The refresher's tasks: refreshes that outlive the request that started them, and tokens
/// waiting for the database. Finished ones are reaped at the next spawn.
#[derive(Default)]
struct Tasks {
    set: Mutex<JoinSet<()>>,
}

impl Tasks {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    /// Waits until every task has ended (those spawned meanwhile included), or `wait` has
    /// passed; then stops the rest.
    async fn finish(&self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Taken out of the lock, which is never held across an await; a task spawned
            // meanwhile lands in the new set and is waited for on the next turn.
            let mut set = std::mem::take(&mut *self.set.lock().unwrap_or_else(|p| p.into_inner()));
            if set.is_empty() {
                return;
            }
            let all_ended = tokio::time::timeout_at(deadline, async {
                while set.join_next().await.is_some() {}
            })
            .await;
            if all_ended.is_err() {
                set.shutdown().await;
                let mut rest =
                    std::mem::take(&mut *self.set.lock().unwrap_or_else(|p| p.into_inner()));
                rest.shutdown().await;
                return;
            }
        }
    }
}

/// What a refresh task needs: the token endpoint, the database, the pool, the unsaved tokens.
struct Shared {
    client: TokenClient,
    db: Db,
    pool: Arc<SharedPool>,
    unsaved: UnsavedTokens,
}

/// The refresher: what its tasks share, one lock per account, and the tasks.
pub struct TokenRefresher {
    shared: Arc<Shared>,
    slots: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<Slot>>>>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefresher").finish_non_exhaustive()
    }
}

impl TokenRefresher {
    pub fn new(client: TokenClient, db: Db, pool: Arc<SharedPool>) -> TokenRefresher {
        TokenRefresher {
            shared: Arc::new(Shared {
                client,
                db,
                pool,
                unsaved: UnsavedTokens::default(),
            }),
            slots: Mutex::new(HashMap::new()),
            tasks: Arc::default(),
        }
    }

    fn slot(&self, id: AccountId) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(id).or_default().clone()
    }

    /// Accounts whose refreshed tokens only this process holds (the database could not take
    /// them yet): a stop now loses those logins.
    pub fn unsaved_logins(&self) -> Vec<Arc<str>> {
        self.shared.unsaved.names()
    }

    /// At exit: waits up to `wait` for the refresher's tasks (a refresh whose request left,
    /// tokens waiting for the database), stops what is left, and returns the accounts whose
    /// refreshed tokens were never stored (those logins are lost).
    pub async fn finish(&self, wait: Duration) -> Vec<Arc<str>> {
        self.tasks.finish(wait).await;
        self.unsaved_logins()
    }

    /// Whether `pick`'s token must be refreshed before use at `now`.
    pub fn due(pick: &Pick, now: Millis) -> bool {
        pick.expires_at
            .is_some_and(|at| at - now <= REFRESH_MARGIN_MS)
    }

    /// A usable access token for `pick`: its own when fresh, else a refreshed one. `refused`
    /// is the token an upstream 401 just refused: it forces a refresh unless another request
    /// already replaced it.
    pub async fn fresh_token(
        &self,
        pick: &Pick,
        refused: Option<&Secret>,
    ) -> Result<Secret, RefreshFailure> {
        if refused.is_none() {
            let now = self.shared.pool.now();
            // Tokens the database has not taken yet are newer than the pool's copy.
            if let Some(unsaved) = self.shared.unsaved.get(pick.id)
                && unsaved.expires_at - now > REFRESH_MARGIN_MS
            {
                return Ok(unsaved.access);
            }
            if !Self::due(pick, now) {
                return Ok(pick.credential.clone());
            }
        }
        let slot = self.slot(pick.id).lock_owned().await;
        let job = Job {
            shared: self.shared.clone(),
            tasks: Arc::downgrade(&self.tasks),
            pick: pick.clone(),
            refused: refused.cloned(),
        };
        // The task owns the lock until the tokens are stored, whatever happens to this request.
        let (answer, answered) = oneshot::channel();
        self.tasks.spawn(async move {
            // An error only means the request left; the refresh has still been made and stored.
            let _ = answer.send(job.run(slot).await);
        });
        match answered.await {
            Ok(result) => result,
            Err(_) => {
                // Stopped at exit, or it panicked.
                tracing::error!(account = %pick.name, "token refresh task ended without an answer");
                Err(RefreshFailure::Transient)
            }
        }
    }
}

/// One refresh, run in its own task.
struct Job {
    shared: Arc<Shared>,
    /// Where to start the task that stores tokens the database refused; weak, so that the
    /// tasks never keep their own owner alive.
    tasks: Weak<Tasks>,
    pick: Pick,
    refused: Option<Secret>,
}

impl Job {
    async fn run(
        self,
        mut slot: tokio::sync::OwnedMutexGuard<Slot>,
    ) -> Result<Secret, RefreshFailure> {
        let (shared, pick) = (&*self.shared, &self.pick);
        let now = shared.pool.now();
        // A refresh that failed a moment ago (perhaps the one this request waited behind)
        // answers for this one too: the same call would only fail again.
        if let Some((at, failure)) = slot.failed
            && now - at < REFRESH_BACKOFF_MS
        {
            // A token that still works is used meanwhile.
            if self.refused.is_none() && pick.expires_at.is_some_and(|at| at > now) {
                return Ok(pick.credential.clone());
            }
            return Err(failure);
        }
        let read = oauth::stored_tokens(&shared.db, pick.id).await;
        let mut unsaved = shared.unsaved.get(pick.id);
        if let (Some(kept), Ok(stored)) = (&unsaved, &read) {
            // A refresh token in the database that is neither the one the kept tokens replace
            // nor theirs: a person logged in again meanwhile, and their login wins.
            let theirs = |token: &Secret| {
                kept.refresh
                    .as_ref()
                    .is_some_and(|r| r.expose() == token.expose())
            };
            if stored
                .refresh
                .as_ref()
                .is_some_and(|r| r.expose() != kept.stored_refresh.expose() && !theirs(r))
            {
                shared.unsaved.with(|map| map.remove(&pick.id));
                unsaved = None;
            }
        }
        let stored = match (&unsaved, read) {
            // Tokens waiting to be stored are the newest this account has.
            (Some(unsaved), _) => oauth::StoredTokens {
                access: unsaved.access.clone(),
                refresh: Some(
                    unsaved
                        .refresh
                        .clone()
                        .unwrap_or(unsaved.stored_refresh.clone()),
                ),
                expires_at: Some(unsaved.expires_at),
                refreshed_at: Some(unsaved.refreshed_at),
            },
            (None, Ok(stored)) => stored,
            (None, Err(error)) => {
                tracing::warn!(account = %pick.name, %error, "reading stored tokens failed");
                return Err(self.transient(&mut slot, false));
            }
        };
        let now = shared.pool.now();
        let seen = self.refused.as_ref().unwrap_or(&pick.credential);
        let replaced = stored.access.expose() != seen.expose();
        let stored_fresh = stored
            .expires_at
            .is_none_or(|at| at - now > REFRESH_MARGIN_MS);
        if replaced && stored_fresh {
            // Another request (or a person's reauth) already brought a fresh token.
            shared
                .pool
                .lock()
                .set_credential(pick.id, stored.access.clone(), stored.expires_at);
            return Ok(stored.access);
        }
        if self.refused.is_some()
            && stored
                .refreshed_at
                .is_some_and(|at| now - at < FORCED_REFRESH_MIN_AGE_MS)
        {
            // A token refreshed moments ago was refused: the 401 is not about its age.
            return Err(RefreshFailure::Transient);
        }
        let Some(refresh_token) = stored.refresh.clone() else {
            tracing::warn!(account = %pick.name, "OAuth account has no refresh token; it needs re-authentication");
            return Err(self.dead(&mut slot));
        };
        match shared.client.refresh(&refresh_token, now).await {
            // The database has not taken the last tokens yet: these replace them in memory and
            // the task already waiting on the database stores them. (When that task stored the
            // last ones and ended during this refresh, there is no entry left, and these are
            // stored below like any refresh.)
            Ok(tokens) if unsaved.is_some() && self.keep_unsaved(&tokens, now) => {
                slot.failed = None;
                Ok(tokens.access_token)
            }
            Ok(tokens) => {
                // Durable first: once the endpoint rotated, the old refresh token is dead. The
                // save only applies if the refresh token is still the one used: a person's
                // reauth meanwhile wins.
                let saved = oauth::save_refreshed(
                    &shared.db,
                    pick.id,
                    &refresh_token,
                    &tokens.access_token,
                    tokens.refresh_token.as_ref(),
                    tokens.expires_at,
                    now,
                )
                .await;
                match saved {
                    Ok(true) => {}
                    Ok(false) => return self.newer_login(&mut slot).await,
                    Err(error) => {
                        // The endpoint has rotated: dropping these tokens would kill the login.
                        // They serve from memory until the database takes them.
                        tracing::error!(
                            account = %pick.name,
                            %error,
                            "storing refreshed tokens failed; using them and storing them as soon as the database allows"
                        );
                        shared.unsaved.with(|map| {
                            map.insert(
                                pick.id,
                                Unsaved {
                                    access: tokens.access_token.clone(),
                                    refresh: tokens.refresh_token.clone(),
                                    expires_at: tokens.expires_at,
                                    refreshed_at: now,
                                    stored_refresh: refresh_token.clone(),
                                    name: pick.name.clone(),
                                },
                            )
                        });
                        if let Some(tasks) = self.tasks.upgrade() {
                            tasks.spawn(store_later(self.shared.clone(), pick.id));
                        }
                        slot.failed = None;
                        return Ok(tokens.access_token);
                    }
                }
                slot.failed = None;
                shared.pool.lock().set_credential(
                    pick.id,
                    tokens.access_token.clone(),
                    Some(tokens.expires_at),
                );
                tracing::info!(account = %pick.name, expires_in_s = (tokens.expires_at - now) / 1000, "refreshed OAuth token");
                Ok(tokens.access_token)
            }
            Err(OAuthError::InvalidGrant { code }) => {
                // A person may have logged in again while this refresh used the old token.
                if let Ok(token) = self.newer_login(&mut slot).await {
                    return Ok(token);
                }
                tracing::warn!(account = %pick.name, %code, "OAuth login refused; the account needs re-authentication");
                Err(self.dead(&mut slot))
            }
            Err(error) => {
                tracing::warn!(account = %pick.name, %error, "OAuth refresh failed; retrying later");
                // A token that still works is used meanwhile rather than benching the account.
                let still_valid =
                    self.refused.is_none() && stored.expires_at.is_some_and(|at| at > now);
                let failure = self.transient(&mut slot, still_valid);
                if still_valid {
                    Ok(stored.access)
                } else {
                    Err(failure)
                }
            }
        }
    }

    /// Puts newly refreshed tokens in place of the account's kept ones; false when there are
    /// none any more (stored meanwhile).
    fn keep_unsaved(&self, tokens: &ccflare_oauth::TokenSet, now: Millis) -> bool {
        self.shared
            .unsaved
            .with(|map| match map.get_mut(&self.pick.id) {
                Some(entry) => {
                    entry.access = tokens.access_token.clone();
                    if let Some(refresh) = &tokens.refresh_token {
                        entry.refresh = Some(refresh.clone());
                    }
                    entry.expires_at = tokens.expires_at;
                    entry.refreshed_at = now;
                    true
                }
                None => false,
            })
    }

    /// The stored tokens changed under this refresh (a person's reauth): use them if fresh.
    async fn newer_login(&self, slot: &mut Slot) -> Result<Secret, RefreshFailure> {
        let shared = &*self.shared;
        match oauth::stored_tokens(&shared.db, self.pick.id).await {
            Ok(stored)
                if stored.access.expose() != self.pick.credential.expose()
                    && stored.expires_at.is_none_or(|at| at > shared.pool.now()) =>
            {
                slot.failed = None;
                shared.pool.lock().set_credential(
                    self.pick.id,
                    stored.access.clone(),
                    stored.expires_at,
                );
                Ok(stored.access)
            }
            _ => Err(RefreshFailure::Transient),
        }
    }

    /// A passing failure. Benches the account unless `keep_serving` (its token still works).
    fn transient(&self, slot: &mut Slot, keep_serving: bool) -> RefreshFailure {
        let pool = &self.shared.pool;
        let now = pool.now();
        slot.failed = Some((now, RefreshFailure::Transient));
        if !keep_serving
            && let Some(changed) = pool
                .lock()
                .bench_until(self.pick.id, now + REFRESH_BACKOFF_MS)
        {
            pool.persist(changed);
        }
        RefreshFailure::Transient
    }

    fn dead(&self, slot: &mut Slot) -> RefreshFailure {
        let pool = &self.shared.pool;
        slot.failed = Some((pool.now(), RefreshFailure::Dead));
        if let Some(changed) = pool.lock().invalidate(self.pick.id) {
            pool.persist(changed);
        }
        RefreshFailure::Dead
    }
}

/// Stores an account's refreshed tokens that the database could not take when they came,
/// retrying (a pause of 100 ms doubling to 5 s) until it does. Tokens refreshed again meanwhile
/// replace them in [`UnsavedTokens`] and are stored in turn. A person's new login stored
/// meanwhile wins: the tokens are then dropped.
async fn store_later(shared: Arc<Shared>, id: AccountId) {
    let (db, pool, unsaved) = (&shared.db, &shared.pool, &shared.unsaved);
    let mut attempts: u32 = 0;
    while let Some(entry) = unsaved.get(id) {
        let saved = oauth::save_refreshed(
            db,
            id,
            &entry.stored_refresh,
            &entry.access,
            entry.refresh.as_ref(),
            entry.expires_at,
            pool.now(),
        )
        .await;
        match saved {
            Ok(saved) => {
                let newer = unsaved.with(|map| match map.get_mut(&id) {
                    // Refreshed again while this was being written: the database now holds
                    // this entry's refresh token, and the newer tokens go next.
                    Some(current) if saved && current.access.expose() != entry.access.expose() => {
                        if let Some(refresh) = &entry.refresh {
                            current.stored_refresh = refresh.clone();
                        }
                        true
                    }
                    _ => {
                        map.remove(&id);
                        false
                    }
                });
                if newer {
                    continue;
                }
                if saved {
                    tracing::info!(account = %entry.name, "stored the refreshed OAuth tokens");
                    pool.lock()
                        .set_credential(id, entry.access.clone(), Some(entry.expires_at));
                } else {
                    tracing::warn!(account = %entry.name, "a newer login replaced tokens that were waiting to be stored");
                }
                return;
            }
            Err(error) => {
                attempts += 1;
                if attempts.is_power_of_two() {
                    tracing::error!(account = %entry.name, %error, attempts, "storing refreshed tokens still fails; retrying");
                }
                let pause =
                    Duration::from_millis(100u64 << attempts.min(6)).min(Duration::from_secs(5));
                tokio::time::sleep(pause).await;
            }
        }
    }
}
