//! The one background writer. The proxy hands it request records and account state changes
//! through an unbounded channel (sending never waits and never fails while the writer runs);
//! the writer takes whatever has queued up, writes it in one transaction, and repeats. Under
//! load that makes batches grow on their own; when idle each record is written at once, well
//! inside the 100 ms SPEC §8 allows. Closing drains everything that was sent before the close.

use crate::db::Db;
use crate::requests;
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

/// Runtime state of an account to persist behind the request path.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountStateUpdate {
    pub id: AccountId,
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
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        let mut states = HashMap::new();
        for op in batch.drain(..) {
            match op {
                Op::Request(record) => records.push(*record),
                // Only the newest state of an account matters.
                Op::AccountState(update) => {
                    states.insert(update.id, *update);
                }
                Op::Flush(done) => waiters.push(done),
            }
        }
        let count = records.len() + states.len();
        let mut attempt = 0;
        loop {
            match write_batch(&db, &records, states.values()).await {
                Ok(()) => {
                    counters
                        .written
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    break;
                }
                // A locked database (another process writing) is worth a few retries;
                // anything else loses this batch but never stops the writer.
                Err(error) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "writing records failed, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                Err(error) => {
                    counters.failed.fetch_add(count as u64, Ordering::Relaxed);
                    tracing::error!(%error, lost = count, "writing records failed");
                    break;
                }
            }
        }
        counters.queued.fetch_sub(count, Ordering::Relaxed);
        for done in waiters.drain(..) {
            let _ = done.send(());
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
        // A person's change (revision bump) wins over the server's view of the status: only
        // cooldowns and headers are the server's to write unconditionally.
        sqlx::query(
            "UPDATE accounts SET rate_limited_until = ?, overloaded_until = ?, \
             last_ratelimit = coalesce(?, last_ratelimit), \
             status = CASE WHEN status = 'paused' THEN status ELSE ? END \
             WHERE id = ?",
        )
        .bind(state.rate_limited_until)
        .bind(state.overloaded_until)
        .bind(snapshot)
        .bind(state.status.as_str())
        .bind(state.id.0)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
