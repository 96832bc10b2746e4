//! The one background writer. The proxy hands it request records and account state changes
//! through an unbounded channel (sending never waits and never fails while the writer runs);
//! the writer takes whatever has queued up, writes it in one transaction, and repeats. Under
//! load that makes batches grow on their own; when idle each record is written at once, well
//! inside the 100 ms SPEC §8 allows. Closing drains everything that was sent before the close.
//!
//! When the database as a whole cannot be written (locked by another program for long,
//! read-only, full, an I/O error), nothing is lost while memory allows: the batch is retried
//! with a growing pause (up to 5 s) until it goes in, and what arrives meanwhile waits in the
//! channel, up to [`MAX_QUEUED`] operations; beyond that new request records are dropped and
//! counted.
//! Only an error that concerns one row (a constraint) costs that row alone.

use crate::db::Db;
use crate::{requests, rollups};
use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountId, AccountStatus, Millis};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Most operations waiting for the writer. While the database cannot be written they pile up
/// here (about a minute and a half at 1,000 requests/s, some 100 MB); beyond this, new ones
/// are dropped and counted as failed rather than growing memory without bound.
pub const MAX_QUEUED: usize = 100_000;

/// Longest pause between two attempts while the database cannot be written.
const OUTAGE_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Most operations written in one transaction.
const MAX_BATCH: usize = 2048;

/// How long the writer lets a small batch gather before committing it. Each commit costs a
/// WAL write and fsync-like work whatever its size, so at a steady 1,000 requests/s committing
/// every record alone spends more CPU on commits than on the records; waiting a few
/// milliseconds groups them. A record still reaches the database well inside SPEC §8's 100 ms.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// A batch at least this big is written at once, without lingering.
const LINGER_BELOW: usize = 256;

/// Runtime state of an account to persist behind the request path.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountStateUpdate {
    pub id: AccountId,
    /// The account revision the server decided this on. If a person changed the account since
    /// (resumed it, re-added its key, logged in again), status and cooldowns are theirs and
    /// only the rate-limit headers are written. `None` writes unconditionally.
    pub revision: Option<i64>,
    pub status: AccountStatus,
    pub rate_limited_until: Option<Millis>,
    pub overloaded_until: Option<Millis>,
    pub last_ratelimit: Option<RateLimitSnapshot>,
}

enum Op {
    Request(Box<RequestRecord>),
    AccountState(Box<AccountStateUpdate>),
    /// Answer once everything sent before this is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicUsize,
    written: AtomicU64,
    failed: AtomicU64,
}

/// Whether the writer can write, as [`WriterHandle::health`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterHealth {
    /// The error of the last failed attempt while the database cannot be written (records
    /// wait meanwhile); `None` when writing works.
    pub failing: Option<String>,
    /// Failed attempts in the current outage.
    pub attempts: u32,
}

/// The sending side, cloned into every request.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Op>,
    counters: Arc<Counters>,
    health: watch::Receiver<WriterHealth>,
}

impl WriterHandle {
    /// Queues a request record. Never waits.
    pub fn record(&self, record: RequestRecord) {
        self.send(Op::Request(Box::new(record)));
    }

    /// Queues an account state change. Never waits.
    pub fn account_state(&self, update: AccountStateUpdate) {
        self.send(Op::AccountState(Box::new(update)));
    }

    fn send(&self, op: Op) {
        // Account states are few (the newest per account is all that is written) and decide
        // routing after a restart: only request records are dropped at the bound.
        let droppable = matches!(op, Op::Request(_));
        if self.counters.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED && droppable {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
            // Said once per doubling, not once per request.
            if failed.is_power_of_two() {
                tracing::error!(
                    queued = MAX_QUEUED,
                    failed,
                    "record dropped: the database cannot be written and the writer's queue is full"
                );
            }
            return;
        }
        if self.tx.send(op).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("record dropped: the database writer has stopped");
        }
    }

    /// Waits until everything queued so far is in the database.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Operations sent but not yet written.
    pub fn queue_depth(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Whether the database can be written now; a receiver, so a caller can wait for a change.
    pub fn health(&self) -> watch::Receiver<WriterHealth> {
        self.health.clone()
    }

    /// Rows written so far, and operations lost to database errors.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.counters.written.load(Ordering::Relaxed),
            self.counters.failed.load(Ordering::Relaxed),
        )
    }
}

/// The writer task and its handle.
#[derive(Debug)]
pub struct Writer {
    handle: WriterHandle,
    task: JoinHandle<()>,
}

impl Writer {
    pub fn spawn(db: Db) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (health_tx, health) = watch::channel(WriterHealth::default());
        let task = tokio::spawn(run(db, rx, counters.clone(), health_tx));
        Writer {
            handle: WriterHandle {
                tx,
                counters,
                health,
            },
            task,
        }
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Writes everything sent so far and stops. Handles kept elsewhere can still send, but
    /// nothing reads it: call this only when no request is in flight any more.
    pub async fn close(self) {
        self.handle.flush().await;
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn run(
    db: Db,
    mut rx: mpsc::UnboundedReceiver<Op>,
    counters: Arc<Counters>,
    health: watch::Sender<WriterHealth>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let flush_asked = matches!(first, Op::Flush(_));
        batch.push(first);
        // A flush is waited for by someone: no lingering then.
        if !flush_asked && rx.len() < LINGER_BELOW {
            tokio::time::sleep(LINGER).await;
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        let mut states = HashMap::new();
        // Counted before de-duplication: every op sent was counted once in `queued`.
        let mut drained = 0;
        for op in batch.drain(..) {
            match op {
                Op::Request(record) => {
                    drained += 1;
                    records.push(*record);
                }
                // Only the newest state of an account matters.
                Op::AccountState(update) => {
                    drained += 1;
                    states.insert(update.id, *update);
                }
                Op::Flush(done) => waiters.push(done),
            }
        }
        write_with_retries(&db, &records, &states, &counters, &health).await;
        counters.queued.fetch_sub(drained, Ordering::Relaxed);
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Whether an error says the database as a whole cannot be written now (locked, read-only,
/// full, an I/O error, no connection), which a later attempt can get past, rather than that
/// one row cannot be (a constraint, a value SQLite refuses).
fn is_database_wide(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => {
            let code = error
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .unwrap_or(0);
            // Primary result codes: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN,
            // PROTOCOL.
            matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15)
        }
        // (A closed pool never opens again: not something to wait for.)
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Writes one batch. While the database as a whole cannot be written the batch is retried,
/// with a pause growing to [`OUTAGE_PAUSE_MAX`], until it goes in: nothing is lost to a lock, a
/// full disk or a read-only file that someone fixes. Any other error means some row cannot be
/// written, so the batch is written again one row per transaction and only the rows that fail
/// are lost (and counted).
async fn write_with_retries(
    db: &Db,
    records: &[RequestRecord],
    states: &HashMap<AccountId, AccountStateUpdate>,
    counters: &Counters,
    health: &watch::Sender<WriterHealth>,
) {
    if let Err(error) = write_retrying(db, records, states.values(), counters, health).await {
        tracing::warn!(%error, "writing a batch failed; writing its rows one by one");
    } else {
        counters
            .written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        return;
    }
    for record in records {
        let one = std::slice::from_ref(record);
        match write_retrying(db, one, std::iter::empty(), counters, health).await {
            Ok(()) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, request_id = %record.id, "request record lost");
            }
        }
    }
    for state in states.values() {
        let one = std::iter::once(state);
        if let Err(error) = write_retrying(db, &[], one, counters, health).await {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, account_id = state.id.0, "account state not saved");
        }
    }
}

/// One batch, retried for as long as the database as a whole cannot be written; returns the
/// first error that concerns the rows themselves.
async fn write_retrying<'a>(
    db: &Db,
    records: &[RequestRecord],
    states: impl Iterator<Item = &'a AccountStateUpdate> + Clone,
    counters: &Counters,
    health: &watch::Sender<WriterHealth>,
) -> Result<(), sqlx::Error> {
    loop {
        match write_batch(db, records, states.clone()).await {
            Err(error) if is_database_wide(&error) => {
                let attempts = health.borrow().attempts + 1;
                // Said at the first failure and then once per doubling, not every few seconds.
                if attempts.is_power_of_two() {
                    tracing::warn!(
                        %error,
                        attempts,
                        waiting = counters.queued.load(Ordering::Relaxed),
                        "the database cannot be written; records wait in memory and are retried"
                    );
                }
                health.send_replace(WriterHealth {
                    failing: Some(error.to_string()),
                    attempts,
                });
                let pause = Duration::from_millis(50 << attempts.min(7)).min(OUTAGE_PAUSE_MAX);
                tokio::time::sleep(pause).await;
            }
            // The database answered (a row-level refusal is an answer too): the outage is over.
            result => {
                if health.borrow().failing.is_some() {
                    let attempts = health.borrow().attempts;
                    tracing::info!(attempts, "the database can be written again");
                    health.send_replace(WriterHealth::default());
                }
                return result;
            }
        }
    }
}

async fn write_batch<'a>(
    db: &Db,
    records: &[RequestRecord],
    states: impl Iterator<Item = &'a AccountStateUpdate>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    for record in records {
        requests::insert(&mut tx, record).await?;
    }
    // In the same transaction, so the rollups analytics reads always match the rows.
    rollups::add(&mut tx, records).await?;
    // Per-account counters, summed over the batch.
    let mut usage: HashMap<i64, (i64, Millis)> = HashMap::new();
    for record in records {
        if let Some(id) = record.account_id {
            let entry = usage.entry(id.0).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(record.started_at);
        }
    }
    for (id, (count, last_used)) in usage {
        sqlx::query(
            "UPDATE accounts SET request_count = request_count + ?, \
             last_used = max(coalesce(last_used, 0), ?) WHERE id = ?",
        )
        .bind(count)
        .bind(last_used)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    for state in states {
        let snapshot = state
            .last_ratelimit
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok());
        // A person's change (a newer revision) wins over the server's view: then only the
        // headers are written. A pause is never undone by the server either.
        sqlx::query(
            "UPDATE accounts SET \
             last_ratelimit = coalesce(?1, last_ratelimit), \
             rate_limited_until = CASE WHEN ?2 IS NULL OR revision = ?2 THEN ?3 ELSE rate_limited_until END, \
             overloaded_until = CASE WHEN ?2 IS NULL OR revision = ?2 THEN ?4 ELSE overloaded_until END, \
             status = CASE WHEN status = 'paused' OR (?2 IS NOT NULL AND revision != ?2) \
                      THEN status ELSE ?5 END \
             WHERE id = ?6",
        )
        .bind(snapshot)
        .bind(state.revision)
        .bind(state.rate_limited_until)
        .bind(state.overloaded_until)
        .bind(state.status.as_str())
        .bind(state.id.0)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
