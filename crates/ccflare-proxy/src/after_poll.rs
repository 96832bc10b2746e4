//! Work that waits until the connection's current poll is over. Hyper polls a response's
//! body, buffers what it gets and writes (flushes) it to the socket within one poll of the
//! connection, so anything a body does when it ends — the record, the log line — runs before
//! the client's last bytes leave, and adds to the latency the client sees. The request's "request
//! finished" log line is the dearest of it (a formatted line for the terminal and a JSON line
//! for the log feed, about a third of the end's instructions) and decides nothing: it is
//! written after the poll instead, by the connection's own task, still on the same thread
//! and without a hand-over to another task.
//!
//! [`scope`] wraps a connection's task: while its inner future is polled on this thread,
//! [`log_finished`] keeps the record for the end of the poll. Outside any scope (a body
//! finished by another task, a test) the line is written at once. The record itself (the
//! writer's row, the pool, the budget, the metrics) is never deferred: only the line is.

use ccflare_core::record::RequestRecord;
use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

thread_local! {
    static LATER: RefCell<Later> = const {
        RefCell::new(Later {
            depth: 0,
            lines: Vec::new(),
        })
    };
}

/// The scopes being polled on this thread, and the records whose lines wait for the
/// outermost one to end.
struct Later {
    depth: u32,
    lines: Vec<Arc<RequestRecord>>,
}

/// Runs `future`, writing the log lines of the requests finished during each of its polls
/// after that poll.
pub(crate) async fn scope<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        let polled = {
            let _inside = Inside::enter();
            future.as_mut().poll(cx)
        };
        write_waiting();
        polled
    })
    .await
}

/// Logs `record`'s "request finished" line after the current scope's poll, or now when no
/// scope is being polled on this thread.
pub(crate) fn log_finished(record: Arc<RequestRecord>) {
    let now = LATER.with(|later| {
        let mut later = later.borrow_mut();
        if later.depth == 0 {
            return Some(record);
        }
        later.lines.push(record);
        None
    });
    if let Some(record) = now {
        write_line(&record);
    }
}

/// Counts a scope as being polled until dropped (a panicking poll included).
struct Inside;

impl Inside {
    fn enter() -> Inside {
        LATER.with(|later| later.borrow_mut().depth += 1);
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        LATER.with(|later| later.borrow_mut().depth -= 1);
    }
}

/// Writes the waiting lines once the outermost scope's poll is over (lines left by a poll
/// that panicked go out with the next one).
fn write_waiting() {
    let mut lines = LATER.with(|later| {
        let mut later = later.borrow_mut();
        if later.depth > 0 || later.lines.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut later.lines)
    });
    if lines.is_empty() {
        return;
    }
    for record in lines.drain(..) {
        write_line(&record);
    }
    // The vector goes back for the next poll, so a busy thread does not allocate for it.
    LATER.with(|later| {
        let mut later = later.borrow_mut();
        if later.lines.is_empty() {
            later.lines = lines;
        }
    });
}

fn write_line(record: &RequestRecord) {
    tracing::info!(
        target: "ccflare_proxy::recorder",
        // Text rather than `%` (Display): a layer takes text as it is, without `core::fmt`.
        request_id = record.id.as_str(),
        method = record.method.as_str(),
        path = record.path.as_str(),
        status = record.status,
        account = record.account_name.as_deref().unwrap_or("-"),
        client_key = record.client_key.as_deref().unwrap_or("-"),
        model = record.model.as_deref().unwrap_or("-"),
        attempts = record.attempts,
        latency_ms = record.latency_ms,
        input_tokens = record.usage.input_tokens,
        output_tokens = record.usage.output_tokens,
        error = record.error_type.as_deref().unwrap_or(""),
        "request finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::task::{Context, Poll, Waker};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Collects the `request_id` of every event.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl Subscriber for Lines {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            struct RequestId(Option<String>);
            impl Visit for RequestId {
                fn record_str(&mut self, field: &Field, value: &str) {
                    if field.name() == "request_id" {
                        self.0 = Some(value.to_owned());
                    }
                }
                fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
            }
            let mut id = RequestId(None);
            event.record(&mut id);
            if let Some(id) = id.0 {
                self.0.lock().unwrap().push(id);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn record(id: &str) -> Arc<RequestRecord> {
        Arc::new(RequestRecord {
            id: id.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_line_waits_for_the_end_of_the_poll_it_was_made_in() {
        let lines = Lines::default();
        let seen = lines.0.clone();
        tracing::subscriber::with_default(lines, || {
            // Outside a scope: at once.
            log_finished(record("alone"));
            assert_eq!(*seen.lock().unwrap(), ["alone"]);

            let seen_inside = seen.clone();
            let mut polls = 0;
            let inner = std::future::poll_fn(move |cx| {
                polls += 1;
                log_finished(record(&format!("poll-{polls}")));
                // Made during the poll: not yet written.
                assert_eq!(seen_inside.lock().unwrap().len(), polls);
                if polls == 2 {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            });
            let mut outer = pin!(scope(scope(inner)));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(outer.as_mut().poll(&mut cx).is_pending());
            assert_eq!(*seen.lock().unwrap(), ["alone", "poll-1"]);
            assert!(outer.as_mut().poll(&mut cx).is_ready());
            assert_eq!(*seen.lock().unwrap(), ["alone", "poll-1", "poll-2"]);
        });
    }
}
