//! The record of one request while it is in flight. It travels with the request — first in the
//! handler, then inside the response body — and is sent to the writer exactly once: when the
//! response ends, fails, or is dropped. Dropping it unfinished means the client hung up: the
//! record gets status 499 and the account is released without penalty (SPEC §4.6) — unless the
//! server itself was cutting the connections left at its shutdown deadline, in which case the
//! record says so (`shutdown_cut`, see [`Outcome::shutdown_cut`]).
//!
//! It also publishes the request on the live feed: its start once the model is known, its end
//! (the whole record) when it is sent to the writer.
//!
//! What it needs of the server is one shared [`RecordSink`]: the pool (to release the account
//! it holds), the writer, the feed, and the drain (to tell a client's hang-up from the server's
//! cut). A request clones it once, as one reference count.

use crate::after_poll;
use crate::feed::Feed;
use crate::keys::KeyTicket;
use crate::pool::SharedPool;
use crate::shutdown::Drain;
use ccflare_core::AccountId;
use ccflare_core::pricing;
use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::usage::Usage;
use ccflare_pool::Route;
use ccflare_storage::WriterHandle;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where every request's record goes, and what its recorder touches on the way.
pub(crate) struct RecordSink {
    pub(crate) pool: Arc<SharedPool>,
    pub(crate) writer: WriterHandle,
    pub(crate) feed: Arc<Feed>,
    pub(crate) drain: Arc<Drain>,
}

/// Status recorded when the client went away before the response ended.
pub const CLIENT_CLOSED: u16 = 499;

/// Status recorded for a request the server cut at its shutdown deadline before any response
/// was sent: the service was unavailable to it (the client saw its connection close).
pub const SHUTDOWN_CUT: u16 = 503;

/// Longest upstream `request-id` kept (Anthropic's are about 30 characters).
const MAX_UPSTREAM_ID: usize = 128;

/// How a request ended, for the record.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub success: bool,
    pub error: Option<(String, String)>,
    pub model: Option<String>,
    pub usage: Usage,
    pub usage_incomplete: bool,
    /// The message id (`msg_…`) of the answer's body, when it was a message.
    pub message_id: Option<String>,
}

impl Outcome {
    /// A request that ended with an error and no usage (refused, or a relayed error).
    pub fn failed(status: u16, error: (String, String)) -> Outcome {
        Outcome {
            status,
            success: false,
            error: Some(error),
            model: None,
            usage: Usage::default(),
            usage_incomplete: false,
            message_id: None,
        }
    }

    /// The client went away before the response ended; `usage` is what was read so far.
    pub fn client_closed(model: Option<String>, usage: Usage) -> Outcome {
        Outcome {
            status: CLIENT_CLOSED,
            success: false,
            error: Some((
                "client_closed".into(),
                "the client closed the connection before the response ended".into(),
            )),
            model,
            usage,
            usage_incomplete: true,
            message_id: None,
        }
    }

    /// The server cut the request at its shutdown deadline. `status` is the status the client
    /// already received (a relayed response cut in its body), or [`SHUTDOWN_CUT`] when nothing
    /// was sent yet; `usage` is what was read so far.
    pub fn shutdown_cut(status: u16, model: Option<String>, usage: Usage) -> Outcome {
        Outcome {
            status,
            success: false,
            error: Some((
                "shutdown_cut".into(),
                "the server stopped at its shutdown deadline before the response ended".into(),
            )),
            model,
            usage,
            usage_incomplete: true,
            message_id: None,
        }
    }
}

pub struct Recorder {
    sink: Arc<RecordSink>,
    record: RequestRecord,
    started: Instant,
    /// The account whose in-flight slot this request holds.
    holding: Option<AccountId>,
    /// Tokens the pool reserved on that account for this attempt (its `headroom` placement).
    reserved: u64,
    first_byte: Option<Instant>,
    /// Since when the request has been waiting on the upstream, if it is now.
    upstream_since: Option<Instant>,
    /// Time spent waiting on the upstream so far; `None` until something is sent.
    upstream_time: Option<Duration>,
    /// Whether the start was published on the live feed.
    announced: bool,
    done: bool,
    /// The client key's admission, settled with the real cost at the finish.
    key: Option<KeyTicket>,
}

impl Recorder {
    pub(crate) fn new(sink: Arc<RecordSink>, id: String, method: &str, path: &str) -> Recorder {
        let started_at = sink.pool.now();
        Recorder {
            sink,
            record: RequestRecord {
                id,
                started_at,
                method: method.to_owned(),
                path: path.to_owned(),
                ..Default::default()
            },
            started: Instant::now(),
            holding: None,
            reserved: 0,
            first_byte: None,
            upstream_since: None,
            upstream_time: None,
            announced: false,
            done: false,
            key: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The request's path (without the query).
    pub(crate) fn path(&self) -> &str {
        &self.record.path
    }

    /// The request created this batch or file (`resources`): the row names it, so that the
    /// owner is known again after a restart.
    pub(crate) fn set_resource(&mut self, id: String) {
        self.record.resource_id = Some(id);
    }

    pub fn set_request(
        &mut self,
        model: Option<String>,
        streamed: bool,
        session_key: Option<String>,
    ) {
        self.record.model = model;
        self.record.streamed = streamed;
        self.record.session_key = session_key;
        self.announce();
    }

    fn announce(&mut self) {
        if !self.announced {
            self.announced = true;
            self.sink.feed.started(&self.record);
        }
    }

    /// The answer relayed to the client (served or failed) came from the upstream with these
    /// headers: the row keeps their `request-id`. One short string: longer values are not
    /// Anthropic's ids and are not kept.
    pub fn set_upstream_request_id(&mut self, headers: &http::HeaderMap) {
        self.record.upstream_request_id = headers
            .get(const { http::HeaderName::from_static("request-id") })
            .and_then(|value| value.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= MAX_UPSTREAM_ID)
            .map(str::to_owned);
    }

    /// The request came with the client key `id` (the row records it), refused or not.
    pub fn set_client_key(&mut self, id: i64) {
        self.record.client_key = Some(id.to_string());
    }

    /// The request was admitted under its client key's limits: the ticket is settled with the
    /// request's cost when the record is finished.
    pub fn admitted(&mut self, ticket: KeyTicket) {
        self.set_client_key(ticket.id());
        self.key = Some(ticket);
    }

    /// An attempt on `id` started: it holds the account's in-flight slot until released.
    pub fn attempt(&mut self, id: AccountId, name: &str) {
        self.release();
        self.holding = Some(id);
        self.record.attempts += 1;
        self.record.account_id = Some(id);
        self.record.account_name = Some(name.to_owned());
    }

    /// The pool's explanation of the latest selection, on the record as built: no text (and
    /// no allocation) until someone reads it — the header, the writer, the live views.
    pub fn set_route(&mut self, route: Route) {
        self.record.set_route(route);
    }

    /// The explanation as one line, for the `x-ccflare-route` header.
    pub fn route_line(&self) -> Option<String> {
        self.record.route.as_ref().map(ToString::to_string)
    }

    /// The pool reserved `tokens` on the attempt's account; handed back with the slot.
    pub fn reserve(&mut self, tokens: u64) {
        self.reserved = tokens;
    }

    /// The final answer is a failed attempt's response from this account (relayed because no
    /// other account could do better): the record names it.
    pub fn answered_by(&mut self, id: AccountId, name: &str) {
        self.record.account_id = Some(id);
        self.record.account_name = Some(name.to_owned());
    }

    /// The attempt failed and the request moves on.
    pub fn attempt_failed(&mut self, failure: AttemptFailure) {
        tracing::debug!(account = %failure.account, status = ?failure.status, reason = %failure.reason, "attempt failed, trying the next account");
        self.record.attempt_failures.push(failure);
        self.release();
        self.record.account_id = None;
        self.record.account_name = None;
    }

    /// Whether a request dropped now was cut by the server at its shutdown deadline (and not
    /// left by its client).
    pub fn cut_by_server(&self) -> bool {
        self.sink.drain.cutting()
    }

    /// An attempt is being sent upstream: from now until [`Recorder::upstream_stopped`] (or the
    /// finish, for the attempt that serves), the time is the upstream's, not ccflare's.
    pub fn upstream_started(&mut self) {
        self.upstream_since = Some(Instant::now());
        self.upstream_time.get_or_insert(Duration::ZERO);
    }

    /// The attempt sent with [`Recorder::upstream_started`] is over (it failed over).
    pub fn upstream_stopped(&mut self) {
        if let (Some(since), Some(time)) = (self.upstream_since.take(), &mut self.upstream_time) {
            *time += since.elapsed();
        }
    }

    pub fn mark_first_byte(&mut self) {
        if self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
    }

    fn release(&mut self) {
        self.release_with(None);
    }

    /// Hands the account's slot and reservation back; with the usage of an answer that
    /// reached the client, the pool also counts it against the account's window.
    fn release_with(&mut self, usage: Option<&Usage>) {
        if let Some(id) = self.holding.take() {
            let reserved = std::mem::take(&mut self.reserved);
            let now = self.sink.pool.now();
            let session = self.record.session_key.as_deref();
            self.sink
                .pool
                .lock()
                .finish(id, reserved, session, usage, now);
        }
    }

    /// Sends the record. Called once; later calls and the drop do nothing.
    pub fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let charged = (outcome.usage.total() > 0).then_some(&outcome.usage);
        self.release_with(charged);
        // A request refused before its body was read has not been announced yet.
        self.announce();
        self.upstream_stopped();
        let record = &mut self.record;
        let latency = self.started.elapsed();
        record.latency_ms = latency.as_millis() as i64;
        record.proxy_overhead_us = self
            .upstream_time
            .map(|upstream| latency.saturating_sub(upstream).as_micros() as i64);
        record.ttfb_ms = self
            .first_byte
            .map(|t| t.duration_since(self.started).as_millis() as i64);
        record.status = outcome.status;
        record.success = outcome.success;
        if let Some((kind, message)) = outcome.error {
            record.error_type = Some(kind);
            record.error_message = Some(message);
        }
        if outcome.model.is_some() {
            record.model = outcome.model;
        }
        record.usage = outcome.usage;
        if outcome.message_id.is_some() {
            record.message_id = outcome.message_id;
        }
        record.usage_incomplete = outcome.usage_incomplete;
        let cost = pricing::cost(record.model.as_deref(), &record.usage);
        record.cost_usd = cost.usd;
        record.cost_estimated = cost.estimated;
        if let Some(ticket) = self.key.take() {
            ticket.settle(record.cost_usd, record.usage.total());
        }
        record.output_tokens_per_second = match (self.first_byte, record.usage.output_tokens) {
            (Some(first), tokens) if tokens > 0 => {
                let generating = latency
                    .saturating_sub(first.duration_since(self.started))
                    .as_secs_f64();
                (generating > 0.0).then(|| tokens as f64 / generating)
            }
            _ => None,
        };
        let record = std::mem::take(record);
        // The header of an answer made after the finish (a refusal) still reads the route: a
        // built one is cloned by reference counts, without allocating.
        self.record.route.clone_from(&record.route);
        let record = self.sink.feed.finished(record);
        self.sink.writer.record_shared(record.clone());
        // After the connection's poll, once hyper has written the answer's last bytes.
        after_poll::log_finished(record);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before an answer was returned: nothing reached the client.
            let outcome = if self.cut_by_server() {
                Outcome::shutdown_cut(SHUTDOWN_CUT, None, Usage::default())
            } else {
                Outcome::client_closed(None, Usage::default())
            };
            self.finish(outcome);
        }
    }
}
