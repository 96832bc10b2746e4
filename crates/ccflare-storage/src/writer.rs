//! The one background writer. The proxy hands it request records and account state changes
//! through an unbounded channel (sending never waits and never fails while the writer runs);
//! the writer takes whatever has queued up, writes it in one transaction, and repeats. Under
//! load that makes batches grow on their own. A batch's first record waits 25 ms for company
//! (up to 50 ms while records come slowly) before the write starts, well inside the 100 ms
//! SPEC §8 allows; a flush that finds the writer idle is done at once. Closing drains
//! everything that was sent before the close.
//!
//! Nothing is lost to the database (docs/proxy.md, "When the database cannot be written"):
//!
//! - A failure at any step (BEGIN, an INSERT, COMMIT) rolls the transaction back by closing
//!   its connection ([`crate::db::WriteTx`]), keeps the batch and retries it, with a pause
//!   growing to 5 s, until the database takes it. Recording resumes by itself.
//! - Only an error that is provably about one row (a constraint, a value SQLite refuses) costs
//!   a row, and that row goes to the rejects file beside the database, not nowhere. Any other
//!   error (locked, read-only, full, I/O, damaged, not a database, out of memory…) is the
//!   database's, and waits.
//! - Records wait in memory for [`WriterOptions::spill_after`]; past that (at once when the
//!   database is damaged, or when the writer closes) they go to the spill file and are replayed
//!   into the database when it can be written again, or at the next start. Only when the spill
//!   file cannot take them either do they wait in memory, up to [`MAX_QUEUED`] operations;
//!   beyond that new records are dropped, counted and logged.

mod files;

use crate::db::{Db, is_damage, primary_code};
use crate::rows::{Query, Rows, Table};
use crate::{requests, rollups};
use ccflare_core::ratelimit::RateLimitSnapshot;
use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountId, AccountStatus, Millis};
use files::{Files, SpillError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most operations waiting for the writer in memory. While neither the database nor the spill
/// file can be written they pile up here (about a minute and a half at 1,000 requests/s, some
/// 100 MB); beyond this, new ones are dropped and counted rather than growing memory without
/// bound.
pub const MAX_QUEUED: usize = 100_000;

/// Longest pause between two attempts while the database cannot be written.
const OUTAGE_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Most records written in one transaction.
const MAX_BATCH: usize = 2048;

/// How long the writer lets a small batch gather before committing it. Each commit costs a
/// WAL write and fsync-like work whatever its size, so at a steady 1,000 requests/s committing
/// every record alone spends more CPU on commits than on the records; waiting a few
/// milliseconds groups them, and a batch's rollup keys (its hour, day, minute, model, account)
/// are upserted once for all its records. 25 ms against 10 ms: 7–12 % less CPU per request at
/// 1,000 req/s with the same p99 (docs/benchmarks.md, "Joining frames already read, and the
/// writer's linger"); 50 ms saved little more there and lengthened streams' tail.
const LINGER: Duration = Duration::from_millis(25);

/// Records a batch should have after [`LINGER`]; with fewer (a rate below ~640/s) it lingers
/// on, up to [`LINGER_MOST`] in all. A batch's fixed cost (its commit and WAL pages, the rollup
/// upserts, the round trips to SQLite's thread) is then shared by twice as many records: at
/// 100 streams/s, 2–3 records a batch became 5, for ~20 % less CPU per request
/// (docs/benchmarks.md, "A longer linger at low rates"). At 1,000 req/s a batch holds ~25
/// records after 25 ms and goes at once, as before.
const LINGER_ENOUGH: usize = 16;

/// The longest a batch's first record waits before the write starts: with the write, a
/// record still reaches the database inside SPEC §8's 100 ms.
const LINGER_MOST: Duration = Duration::from_millis(50);

/// A batch at least this big is written at once, without lingering.
const LINGER_BELOW: usize = 256;

/// Records waiting in memory beyond which they spill even before [`WriterOptions::spill_after`].
const SPILL_ABOVE: usize = 10_000;

/// Where the writer keeps what the database cannot take, and when.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Records that wait too long go here (JSON lines); `None` keeps them in memory only.
    pub spill_file: Option<PathBuf>,
    /// Rows the database refuses for a reason of their own go here.
    pub rejects_file: Option<PathBuf>,
    /// How long records wait in memory through an outage before they spill.
    pub spill_after: Duration,
    /// Largest size of the spill file.
    pub spill_max_bytes: u64,
}

impl WriterOptions {
    /// The files beside the database file: `ccflare.db-spill.jsonl` and
    /// `ccflare.db-rejects.jsonl`, like SQLite's own `-wal` and `-shm`.
    pub fn beside(database: &Path) -> WriterOptions {
        let with = |suffix: &str| {
            let mut name = database.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        WriterOptions {
            spill_file: Some(with("-spill.jsonl")),
            rejects_file: Some(with("-rejects.jsonl")),
            spill_after: Duration::from_secs(10),
            spill_max_bytes: 512 * 1024 * 1024,
        }
    }
}

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
    /// Shared with the live feed while someone reads it: neither the request path nor the
    /// writer copies a record.
    Request(Arc<RequestRecord>),
    AccountState(Box<AccountStateUpdate>),
    /// Answer once everything sent before this is written (or, through an outage, spilled).
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, but through an outage spill at once instead of waiting: the writer stops.
    Close(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    /// Operations sent and not yet written, spilled, rejected or dropped.
    queued: AtomicUsize,
    written: AtomicU64,
    /// Records dropped: the queue was full, or the writer had stopped.
    dropped: AtomicU64,
    rejected: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
}

/// Whether the writer can write, as [`WriterHandle::health`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterHealth {
    /// The error of the last failed attempt while the database cannot be written (records
    /// wait meanwhile); `None` when writing works.
    pub failing: Option<String>,
    /// Failed attempts in the current outage.
    pub attempts: u32,
    /// The database is damaged: SQLite said so (SQLITE_CORRUPT, SQLITE_NOTADB) or the check at
    /// start found problems. Stays until a restart: damage does not heal by itself.
    pub damaged: Option<String>,
    /// Records in the spill file waiting to be replayed into the database.
    pub spilled_waiting: u64,
    /// Why waiting records cannot be spilled either (the spill file is full or cannot be
    /// written): they wait in memory, up to [`MAX_QUEUED`].
    pub spill_failing: Option<String>,
}

impl WriterHealth {
    /// Whether everything is as it should be: the database takes records, nothing waits in
    /// the spill file, nothing is damaged.
    pub fn is_ok(&self) -> bool {
        self.failing.is_none()
            && self.damaged.is_none()
            && self.spilled_waiting == 0
            && self.spill_failing.is_none()
    }
}

/// What the writer did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterTotals {
    /// Request rows written to the database (replayed ones included).
    pub written: u64,
    /// Records dropped because neither the database, the spill file nor memory could take them.
    pub dropped: u64,
    /// Rows the database refused for a reason of their own, kept in the rejects file.
    pub rejected: u64,
    /// Records that went to the spill file.
    pub spilled: u64,
    /// Records replayed from the spill file into the database.
    pub replayed: u64,
}

/// The sending side, cloned into every request.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Op>,
    counters: Arc<Counters>,
    health: Arc<watch::Sender<WriterHealth>>,
    spill_file: Option<PathBuf>,
}

impl WriterHandle {
    /// Queues a request record. Never waits.
    pub fn record(&self, record: RequestRecord) {
        self.send(Op::Request(Arc::new(record)));
    }

    /// Queues a request record that the live feed shares. Never waits, never copies.
    pub fn record_shared(&self, record: Arc<RequestRecord>) {
        self.send(Op::Request(record));
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
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Said once per doubling, not once per request.
            if dropped.is_power_of_two() {
                tracing::error!(
                    queued = MAX_QUEUED,
                    dropped,
                    "record dropped: neither the database nor the spill file can be written \
                     and the writer's queue is full"
                );
            }
            return;
        }
        if self.tx.send(op).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("record dropped: the database writer has stopped");
        }
    }

    /// Waits until everything queued so far is in the database (or, once an outage has lasted
    /// past [`WriterOptions::spill_after`], in the spill file).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Operations sent but not yet written, spilled, rejected or dropped.
    pub fn queue_depth(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Whether the database can be written now; a receiver, so a caller can wait for a change.
    pub fn health(&self) -> watch::Receiver<WriterHealth> {
        self.health.subscribe()
    }

    /// Marks the database as damaged (the check at start found `problems`): `/health` says so
    /// until the next start.
    pub fn report_damage(&self, problems: &str) {
        tracing::error!(
            problems,
            "the database is damaged: run `ccflare-cli db check` and `ccflare-cli db recover`"
        );
        self.health
            .send_modify(|health| health.damaged = Some(problems.to_owned()));
    }

    /// What the writer did since it started.
    pub fn totals(&self) -> WriterTotals {
        let c = &self.counters;
        WriterTotals {
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            spilled: c.spilled.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
        }
    }

    /// The spill file, when there is one.
    pub fn spill_file(&self) -> Option<&Path> {
        self.spill_file.as_deref()
    }
}

/// The writer task and its handle.
#[derive(Debug)]
pub struct Writer {
    handle: WriterHandle,
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer with its files beside the database ([`WriterOptions::beside`]).
    pub fn spawn(db: Db) -> Writer {
        let options = WriterOptions::beside(db.path());
        Writer::spawn_with(db, options)
    }

    pub fn spawn_with(db: Db, options: WriterOptions) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let health = Arc::new(watch::Sender::new(WriterHealth::default()));
        let spill_file = options.spill_file.clone();
        let task = Task {
            db,
            rx,
            counters: counters.clone(),
            health: health.clone(),
            files: Files::new(
                options.spill_file.clone(),
                options.rejects_file.clone(),
                options.spill_max_bytes,
            ),
            spill_after: options.spill_after,
            records: Vec::new(),
            states: HashMap::new(),
            waiters: Vec::new(),
            closing: None,
            outage: None,
        };
        Writer {
            handle: WriterHandle {
                tx,
                counters,
                health,
                spill_file,
            },
            task: tokio::spawn(task.run()),
        }
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Writes everything sent so far and stops; through an outage, what cannot be written
    /// goes to the spill file at once. Handles kept elsewhere can still send, but nothing
    /// reads it: call this only when no request is in flight any more.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.handle.tx.send(Op::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        self.task.abort();
        let _ = self.task.await;
    }
}

/// An outage: since when the database cannot be written.
struct Outage {
    since: Instant,
    attempts: u32,
}

/// The writer task's state.
struct Task {
    db: Db,
    rx: mpsc::UnboundedReceiver<Op>,
    counters: Arc<Counters>,
    health: Arc<watch::Sender<WriterHealth>>,
    files: Files,
    spill_after: Duration,
    /// Records taken from the channel, not written yet (in order).
    /// Shared with the live feed's readers while they hold them: never copied.
    records: Vec<Arc<RequestRecord>>,
    /// The newest state of each account, not written yet.
    states: HashMap<AccountId, AccountStateUpdate>,
    /// Flushes waiting for everything taken before them.
    waiters: Vec<oneshot::Sender<()>>,
    /// A close is asked: answer it once nothing is held any more.
    closing: Option<oneshot::Sender<()>>,
    outage: Option<Outage>,
}

/// What one write attempt came to.
enum Attempt {
    Written,
    /// The database as a whole cannot be written now.
    Outage(sqlx::Error),
}

impl Task {
    async fn run(mut self) {
        if let Err(error) = self.files.load().await {
            // Appending to a file whose end is unknown could overwrite what it holds: this run
            // keeps records in memory only, and the file waits for the next start.
            tracing::error!(%error, "cannot read the spill file; its records wait there, and this run does not spill");
            self.files.disable_spill();
        }
        if self.files.waiting() > 0 {
            tracing::info!(
                records = self.files.waiting(),
                "records spilled by an earlier run are being written to the database"
            );
            self.publish_spill();
        }
        loop {
            if !self.gather().await {
                break;
            }
            self.work().await;
            // A close is answered once nothing is held in memory: spilled records are safe
            // in their file and are replayed at the next start.
            if self.closing.is_some() && !self.holds_work() {
                break;
            }
        }
        self.answer_waiters();
        if let Some(done) = self.closing.take() {
            let _ = done.send(());
        }
    }

    fn holds_work(&self) -> bool {
        !self.records.is_empty() || !self.states.is_empty()
    }

    /// Takes operations from the channel. Waits for one only when there is nothing else to do
    /// (spilled records to replay count as something: after an outage they are retried without
    /// waiting for new traffic); returns false once the channel is closed and all is done.
    async fn gather(&mut self) -> bool {
        let must_wait = !self.holds_work()
            && self.waiters.is_empty()
            && self.closing.is_none()
            && self.files.waiting() == 0;
        if must_wait {
            let Some(op) = self.rx.recv().await else {
                return false;
            };
            let urgent = matches!(op, Op::Flush(_) | Op::Close(_));
            self.take(op);
            // A flush is waited for by someone: no lingering then.
            if !urgent && self.rx.len() < LINGER_BELOW {
                let first = Instant::now();
                tokio::time::sleep(LINGER).await;
                // A trickle: wait on for company (not woken per record, which would cost
                // more than it saves).
                if self.records.len() + self.rx.len() < LINGER_ENOUGH {
                    tokio::time::sleep_until(first + LINGER_MOST).await;
                }
            }
        }
        while self.records.len() < MAX_BATCH && self.closing.is_none() {
            match self.rx.try_recv() {
                Ok(op) => self.take(op),
                Err(_) => break,
            }
        }
        true
    }

    fn take(&mut self, op: Op) {
        match op {
            Op::Request(record) => self.records.push(record),
            // Only the newest state of an account matters: an older one is done with.
            Op::AccountState(update) => {
                if self.states.insert(update.id, *update).is_some() {
                    self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Op::Flush(done) => self.waiters.push(done),
            Op::Close(done) => self.closing = Some(done),
        }
    }

    /// One step: write what is held, or replay spilled records, or wait out an outage.
    async fn work(&mut self) {
        if self.holds_work() {
            let count = self.records.len().min(MAX_BATCH);
            match self.write_records(count, false).await {
                Attempt::Written => self.end_outage(),
                Attempt::Outage(error) => {
                    self.wait_out(error).await;
                    return;
                }
            }
        }
        // After each batch that went in, one chunk of spilled records: under steady traffic
        // the channel is never empty, and the replay must not wait for a quiet moment.
        if !self.holds_work() && self.files.waiting() > 0 && self.closing.is_none() {
            self.replay_chunk().await;
        }
        if !self.holds_work() {
            self.answer_waiters();
        }
    }

    /// Writes the first `count` held records (and every held account state) in one
    /// transaction. If the database refuses a row for a reason of its own, writes them one by
    /// one and keeps only the refused rows, in the rejects file. Written records leave
    /// `self.records`; on an outage the rest stay.
    async fn write_records(&mut self, count: usize, replaying: bool) -> Attempt {
        let result = write_batch(&self.db, &self.records[..count], &self.states, replaying).await;
        match result {
            Ok(()) => {
                self.wrote(count, replaying);
                let states = std::mem::take(&mut self.states).len();
                self.counters.queued.fetch_sub(states, Ordering::Relaxed);
                Attempt::Written
            }
            Err(error) if !concerns_one_row(&error) => Attempt::Outage(error),
            Err(error) => {
                tracing::warn!(%error, "the database refused a batch; writing its rows one by one");
                self.write_one_by_one(count, replaying).await
            }
        }
    }

    async fn write_one_by_one(&mut self, count: usize, replaying: bool) -> Attempt {
        let no_states = HashMap::new();
        for _ in 0..count {
            match write_batch(&self.db, &self.records[..1], &no_states, replaying).await {
                Ok(()) => self.wrote(1, replaying),
                Err(error) if !concerns_one_row(&error) => return Attempt::Outage(error),
                Err(error) => {
                    let record = self.records.remove(0);
                    if !replaying {
                        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.reject(&record, &error).await;
                }
            }
        }
        let ids: Vec<AccountId> = self.states.keys().copied().collect();
        for id in ids {
            let mut one = HashMap::new();
            if let Some(state) = self.states.remove(&id) {
                one.insert(id, state);
            }
            match write_batch(&self.db, &[], &one, replaying).await {
                Ok(()) => {}
                Err(error) if !concerns_one_row(&error) => {
                    self.states.extend(one);
                    return Attempt::Outage(error);
                }
                Err(error) => {
                    tracing::error!(%error, account_id = id.0, "account state refused by the database; not saved");
                }
            }
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
        }
        Attempt::Written
    }

    /// Counts the first `count` held records as written and lets go of them.
    fn wrote(&mut self, count: usize, replaying: bool) {
        self.records.drain(..count);
        self.counters
            .written
            .fetch_add(count as u64, Ordering::Relaxed);
        if replaying {
            self.counters
                .replayed
                .fetch_add(count as u64, Ordering::Relaxed);
        } else {
            self.counters.queued.fetch_sub(count, Ordering::Relaxed);
        }
    }

    async fn reject(&mut self, record: &RequestRecord, error: &sqlx::Error) {
        let kept = match serde_json::to_value(record) {
            Ok(value) => self.files.reject(value, &error.to_string()).await,
            Err(_) => false,
        };
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        if kept {
            tracing::error!(%error, request_id = %record.id, "request record refused by the database; kept in the rejects file");
        } else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, request_id = %record.id, "request record refused by the database and lost");
        }
    }

    /// The database cannot be written: says so, spills what has waited long enough, and
    /// pauses before the next attempt.
    async fn wait_out(&mut self, error: sqlx::Error) {
        // Take whatever waits in the channel (it waits in memory either way): a close asked
        // while the attempt hung on the lock must be seen now, not after another attempt.
        while let Ok(op) = self.rx.try_recv() {
            self.take(op);
        }
        let outage = self.outage.get_or_insert(Outage {
            since: Instant::now(),
            attempts: 0,
        });
        outage.attempts += 1;
        let attempts = outage.attempts;
        let waited = outage.since.elapsed();
        let damaged = is_damage(&error);
        // Said at the first failure and then once per doubling, not every few seconds.
        if attempts.is_power_of_two() {
            tracing::warn!(
                %error,
                attempts,
                waiting = self.counters.queued.load(Ordering::Relaxed),
                "the database cannot be written; records wait and are retried"
            );
        }
        let text = error.to_string();
        self.health.send_modify(|health| {
            health.failing = Some(text.clone());
            health.attempts = attempts;
            if damaged {
                health.damaged.get_or_insert(text);
            }
        });
        let spill_now = damaged
            || matches!(error, sqlx::Error::PoolClosed)
            || self.closing.is_some()
            || waited >= self.spill_after
            || self.counters.queued.load(Ordering::Relaxed) >= SPILL_ABOVE;
        if spill_now {
            self.spill_waiting().await;
        }
        if self.closing.is_some() && !self.records.is_empty() {
            // Closing, and the records could not even be spilled: the caller's deadline
            // decides how long they are retried.
            tracing::error!(
                records = self.records.len(),
                "closing while records can be written neither to the database nor to the spill file"
            );
        }
        if self.closing.is_some() && self.records.is_empty() && !self.states.is_empty() {
            // The routing state of a few accounts (benches, rate-limit headers): not records,
            // and rebuilt from the next answers after a restart.
            tracing::error!(
                accounts = self.states.len(),
                "closing: account states not saved, the database cannot be written"
            );
            let count = std::mem::take(&mut self.states).len();
            self.counters.queued.fetch_sub(count, Ordering::Relaxed);
        }
        if self.records.is_empty() {
            // Everything is spilled: whoever waits for it can go on.
            self.answer_waiters();
        }
        if self.closing.is_some() && !self.holds_work() {
            return;
        }
        let pause = Duration::from_millis(50 << attempts.min(7)).min(OUTAGE_PAUSE_MAX);
        tokio::time::sleep(pause).await;
    }

    /// Moves every held record to the spill file (the outage took the channel's into memory
    /// first). On failure they stay in memory.
    async fn spill_waiting(&mut self) {
        if self.records.is_empty() {
            return;
        }
        match self.files.spill(&self.records).await {
            Ok(()) => {
                let count = self.records.len();
                self.records.clear();
                self.counters.queued.fetch_sub(count, Ordering::Relaxed);
                let total = self
                    .counters
                    .spilled
                    .fetch_add(count as u64, Ordering::Relaxed)
                    + count as u64;
                tracing::warn!(
                    records = count,
                    spilled = total,
                    file = %self.files.spill_path().map(|p| p.display().to_string()).unwrap_or_default(),
                    "records spilled to file; they are written to the database once it can be written"
                );
                self.health
                    .send_modify(|health| health.spill_failing = None);
                self.publish_spill();
            }
            Err(SpillError::Disabled) => {}
            Err(error) => {
                let text = error.to_string();
                let first = self.health.borrow().spill_failing.is_none();
                if first {
                    tracing::error!(%error, waiting = self.records.len(), "records cannot be spilled either; they wait in memory");
                }
                self.health
                    .send_modify(|health| health.spill_failing = Some(text));
            }
        }
    }

    /// Writes the next chunk of the spill file into the database.
    async fn replay_chunk(&mut self) {
        let chunk = match self.files.next_chunk(MAX_BATCH).await {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::error!(%error, "cannot read the spill file; its records wait there");
                self.wait_out(sqlx::Error::Io(error)).await;
                return;
            }
        };
        let lines = (chunk.records.len() + chunk.unreadable.len()) as u64;
        for line in &chunk.unreadable {
            let kept = self
                .files
                .reject(
                    serde_json::Value::String(line.clone()),
                    "unreadable spill line",
                )
                .await;
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if !kept {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            tracing::error!(kept, "a line of the spill file cannot be read back");
        }
        // Held records are empty here (replay runs only then): the chunk takes their place.
        let count = chunk.records.len();
        self.records = chunk.records.into_iter().map(Arc::new).collect();
        if count > 0
            && let Attempt::Outage(error) = self.write_records(count, true).await
        {
            // They are still in the file: let go of the copies and retry later.
            self.records.clear();
            self.wait_out(error).await;
            return;
        }
        self.end_outage();
        if let Err(error) = self.files.replayed(chunk.end, lines).await {
            tracing::error!(%error, "cannot empty the replayed spill file");
        }
        if self.files.waiting() == 0 {
            tracing::info!(
                replayed = self.counters.replayed.load(Ordering::Relaxed),
                "every spilled record is in the database"
            );
        }
        self.publish_spill();
    }

    fn publish_spill(&self) {
        let waiting = self.files.waiting();
        self.health
            .send_modify(|health| health.spilled_waiting = waiting);
    }

    fn end_outage(&mut self) {
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                attempts = outage.attempts,
                "the database can be written again"
            );
            self.health.send_modify(|health| {
                health.failing = None;
                health.attempts = 0;
                // Nothing needs spilling any more, whether or not the spill file could take it.
                health.spill_failing = None;
            });
        }
    }

    fn answer_waiters(&mut self) {
        for done in self.waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Whether an error is provably about the rows being written (a constraint, a value SQLite
/// refuses) rather than about the database as a whole. Only such an error may cost a row;
/// every other error — locked, read-only, full, I/O, damaged, not a database, out of memory,
/// a connection that went away, one nobody foresaw — waits.
fn concerns_one_row(error: &sqlx::Error) -> bool {
    match error {
        // Primary result codes: TOOBIG, CONSTRAINT, MISMATCH, RANGE.
        sqlx::Error::Database(error) => matches!(primary_code(error.as_ref()), 18 | 19 | 20 | 25),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// One transaction: the records, their rollups, the accounts' counters and states, as two
/// queries (two round trips to SQLite's thread) when each table's rows fit one statement. When
/// `replaying`, records already in the database (a replay cut short by a crash) are skipped,
/// so nothing counts twice; they are looked up before the transaction, which is safe since
/// only this writer inserts request rows.
async fn write_batch(
    db: &Db,
    records: &[Arc<RequestRecord>],
    states: &HashMap<AccountId, AccountStateUpdate>,
    replaying: bool,
) -> Result<(), sqlx::Error> {
    let mut tx = db.write_connection().await?;
    let present = if replaying {
        requests::existing_ids(&mut tx, records).await?
    } else {
        HashSet::new()
    };
    let fresh: Vec<&RequestRecord> = records
        .iter()
        .map(|record| &**record)
        .filter(|record| !present.contains(&record.id))
        .collect();
    let state_rows: Vec<StateRow> = states.values().map(StateRow::of).collect();
    let requests = requests::rows(&fresh);
    let states = Table::new(&ACCOUNT_STATES, &state_rows, StateRow::bind);
    // In the same transaction, so the rollups analytics reads always match the rows; the
    // accounts' counters with them.
    rollups::add(&mut tx, &fresh, &[&requests], &[&states]).await?;
    tx.committed();
    Ok(())
}

/// The accounts' states, from rows of [`StateRow`]. A person's change (a newer revision) wins
/// over the server's view: then only the headers are written. A pause is never undone by the
/// server either.
static ACCOUNT_STATES: Rows = Rows::new(
    "UPDATE accounts SET \
     last_ratelimit = coalesce(v.column2, last_ratelimit), \
     rate_limited_until = CASE WHEN v.column3 IS NULL OR revision = v.column3 \
                          THEN v.column4 ELSE rate_limited_until END, \
     overloaded_until = CASE WHEN v.column3 IS NULL OR revision = v.column3 \
                        THEN v.column5 ELSE overloaded_until END, \
     status = CASE WHEN status = 'paused' OR (v.column3 IS NOT NULL AND revision != v.column3) \
              THEN status ELSE v.column6 END \
     FROM (",
    ") AS v WHERE accounts.id = v.column1",
    6,
);

/// One account's state as [`ACCOUNT_STATES`] binds it: id, the last rate-limit headers (JSON),
/// the revision decided on, the two cooldowns, the status.
struct StateRow {
    id: i64,
    snapshot: Option<String>,
    revision: Option<i64>,
    rate_limited_until: Option<Millis>,
    overloaded_until: Option<Millis>,
    status: &'static str,
}

impl StateRow {
    fn of(state: &AccountStateUpdate) -> StateRow {
        StateRow {
            id: state.id.0,
            snapshot: state
                .last_ratelimit
                .as_ref()
                .and_then(|s| serde_json::to_string(s).ok()),
            revision: state.revision,
            rate_limited_until: state.rate_limited_until,
            overloaded_until: state.overloaded_until,
            status: state.status.as_str(),
        }
    }

    fn bind<'q>(query: Query<'q>, row: &'q StateRow) -> Query<'q> {
        query
            .bind(row.id)
            .bind(row.snapshot.as_deref())
            .bind(row.revision)
            .bind(row.rate_limited_until)
            .bind(row.overloaded_until)
            .bind(row.status)
    }
}
