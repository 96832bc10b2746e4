//! Keeping OAuth access tokens fresh (SPEC §5, protocol doc §6.2): refresh ahead of expiry and
//! after a 401, one refresh per account at a time however many requests need it, and the
//! rotated refresh token committed to the database before the new access token is used.
//!
//! This is the one place the request path waits on the database, and only while a refresh is
//! due: the rotation must be durable before the old refresh token is dead for good.

use crate::state::AppState;
use ccflare_core::{AccountId, Millis, Secret};
use ccflare_oauth::{OAuthError, TokenClient};
use ccflare_pool::Pick;
use ccflare_storage::{Db, oauth};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Refresh this long before the token expires.
pub const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;

/// After a refresh failed for a passing reason, the account is skipped this long before the
/// next try.
pub const REFRESH_BACKOFF_MS: i64 = 60 * 1000;

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

/// The refresher: the token endpoint client, the database, and one lock per account.
pub struct TokenRefresher {
    client: TokenClient,
    db: Db,
    locks: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefresher").finish_non_exhaustive()
    }
}

impl TokenRefresher {
    pub fn new(client: TokenClient, db: Db) -> TokenRefresher {
        TokenRefresher {
            client,
            db,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, id: AccountId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id).or_default().clone()
    }

    /// Whether `pick`'s token must be refreshed before use at `now`.
    pub fn due(pick: &Pick, now: Millis) -> bool {
        pick.expires_at
            .is_some_and(|at| at - now <= REFRESH_MARGIN_MS)
    }

    /// A usable access token for `pick`: its own when fresh, else a refreshed one. `after_401`
    /// forces a refresh unless another request already replaced the token that was refused.
    pub async fn fresh_token(
        &self,
        state: &AppState,
        pick: &Pick,
        after_401: bool,
    ) -> Result<Secret, RefreshFailure> {
        let now = state.now();
        if !after_401 && !Self::due(pick, now) {
            return Ok(pick.credential.clone());
        }
        let lock = self.lock_for(pick.id);
        let _turn = lock.lock().await;
        // While this request waited, another may have refreshed: the stored token is the truth.
        let stored = match oauth::stored_tokens(&self.db, pick.id).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(account = %pick.name, %error, "reading stored tokens failed");
                return Err(self.transient(state, pick));
            }
        };
        let now = state.now();
        let replaced = stored.access.expose() != pick.credential.expose();
        let stored_fresh = stored
            .expires_at
            .is_none_or(|at| at - now > REFRESH_MARGIN_MS);
        if replaced && stored_fresh {
            state
                .pool()
                .set_credential(pick.id, stored.access.clone(), stored.expires_at);
            return Ok(stored.access);
        }
        let Some(refresh_token) = stored.refresh else {
            tracing::warn!(account = %pick.name, "OAuth account has no refresh token; it needs re-authentication");
            return Err(self.dead(state, pick));
        };
        match self.client.refresh(&refresh_token, now).await {
            Ok(tokens) => {
                // Durable first: once the endpoint rotated, the old refresh token is dead.
                let saved = oauth::save_refreshed(
                    &self.db,
                    pick.id,
                    &tokens.access_token,
                    tokens.refresh_token.as_ref(),
                    tokens.expires_at,
                    now,
                )
                .await;
                if let Err(error) = saved {
                    // The new tokens could not be stored: using them would lose the rotation
                    // at the next restart. Skip the account for now; the next try may store.
                    tracing::error!(account = %pick.name, %error, "storing refreshed tokens failed");
                    return Err(self.transient(state, pick));
                }
                state.pool().set_credential(
                    pick.id,
                    tokens.access_token.clone(),
                    Some(tokens.expires_at),
                );
                tracing::info!(account = %pick.name, expires_in_s = (tokens.expires_at - now) / 1000, "refreshed OAuth token");
                Ok(tokens.access_token)
            }
            Err(error @ OAuthError::Transient { .. }) => {
                tracing::warn!(account = %pick.name, %error, "OAuth refresh failed; retrying later");
                Err(self.transient(state, pick))
            }
            Err(error) => {
                tracing::warn!(account = %pick.name, %error, "OAuth login refused; the account needs re-authentication");
                Err(self.dead(state, pick))
            }
        }
    }

    fn transient(&self, state: &AppState, pick: &Pick) -> RefreshFailure {
        let until = state.now() + REFRESH_BACKOFF_MS;
        if let Some(changed) = state.pool().bench_until(pick.id, until) {
            state.persist(changed);
        }
        RefreshFailure::Transient
    }

    fn dead(&self, state: &AppState, pick: &Pick) -> RefreshFailure {
        if let Some(changed) = state.pool().invalidate(pick.id) {
            state.persist(changed);
        }
        RefreshFailure::Dead
    }
}
