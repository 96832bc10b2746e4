//! The one background writer. The proxy hands it request records and account state changes
//! through an unbounded channel (sending never waits and never fails while the writer runs);
//! the writer takes whatever has queued up, writes it in one transaction, and repeats. Under
//! load that makes batches grow on their own; when idle each record is written at once, well
//! inside the 100 ms SPEC §8 allows. Closing drains everything that was sent before the close.

use crate::db::Db;
use crate::{requests, rollups};
use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountId, AccountStatus, Millis};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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

/// The sending side, cloned into every request.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Op>,
    counters: Arc<Counters>,
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
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
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
        let task = tokio::spawn(run(db, rx, counters.clone()));
        Writer {
            handle: WriterHandle { tx, counters },
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

async fn run(db: Db, mut rx: mpsc::UnboundedReceiver<Op>, counters: Arc<Counters>) {
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
        write_with_retries(&db, &records, &states, &counters).await;
        counters.queued.fetch_sub(drained, Ordering::Relaxed);
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Whether an error is another connection holding the lock, which passes by itself.
fn is_busy(error: &sqlx::Error) -> bool {
    let text = error.to_string();
    text.contains("database is locked")
        || text.contains("database table is locked")
        || text.contains("SQLITE_BUSY")
}

/// Writes one batch. A busy database is retried with backoff; any other error means some row
/// cannot be written, so the batch is written again one row per transaction and only the rows
/// that fail are lost (and counted).
async fn write_with_retries(
    db: &Db,
    records: &[RequestRecord],
    states: &HashMap<AccountId, AccountStateUpdate>,
    counters: &Counters,
) {
    let mut attempt = 0;
    loop {
        match write_batch(db, records, states.values()).await {
            Ok(()) => {
                counters
                    .written
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(error) if is_busy(&error) && attempt < 8 => {
                attempt += 1;
                tracing::warn!(%error, attempt, "database busy while writing records, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(5))).await;
            }
            Err(error) => {
                tracing::warn!(%error, "writing a batch failed; writing its rows one by one");
                break;
            }
        }
    }
    for record in records {
        match write_batch(db, std::slice::from_ref(record), std::iter::empty()).await {
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
        if let Err(error) = write_batch(db, &[], std::iter::once(state)).await {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, account_id = state.id.0, "account state not saved");
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
