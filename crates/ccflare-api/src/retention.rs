//! The retention task (SPEC §8): with `retention_days` above 0, request rows older than that
//! many days — and their rollups, by whole UTC days — are deleted at start, every hour, and
//! whenever the setting changes. Deletion runs in transactions of [`BATCH`] rows, so the
//! proxy's writer waits for at most one short batch at a time and never for the whole purge.

use ccflare_core::Millis;
use ccflare_proxy::AppState;
use ccflare_storage::rollups::{self, DAY_MS, Purged};
use ccflare_storage::{Db, StorageError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often retention runs without a settings change.
pub const INTERVAL: Duration = Duration::from_secs(3600);
/// Rows deleted per transaction.
pub const BATCH: u32 = 1000;

/// One pass at `now` with the settings in force: what it deleted, or `None` when rows are
/// kept forever.
pub async fn run_once(
    state: &AppState,
    db: &Db,
    now: Millis,
) -> Result<Option<Purged>, StorageError> {
    let days = state.settings().retention_days;
    if days == 0 {
        return Ok(None);
    }
    let cutoff = now.saturating_sub(days as i64 * DAY_MS);
    rollups::purge_before(db, cutoff, BATCH).await.map(Some)
}

/// Runs retention until `stop` turns true: now, every [`INTERVAL`], and when `changed` is
/// notified (`PATCH /api/config` does).
pub fn spawn(
    state: Arc<AppState>,
    db: Db,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // A long first purge must not hold up shutdown: each batch is its own transaction,
            // so stopping between (or inside) batches loses nothing.
            let outcome = tokio::select! {
                outcome = run_once(&state, &db, state.now()) => outcome,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match outcome {
                Ok(Some(purged)) if purged.requests > 0 => {
                    tracing::info!(
                        deleted = purged.requests,
                        before = purged.before,
                        "retention deleted old request rows"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention failed; it will run again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = changed.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    })
}
