//! Where a request is published as it starts and ends ([`Feed`]): the live request feed, a
//! broadcast of [`RequestEvent`]s that the management API's live views subscribe to, and the
//! [`RequestObserver`] (the management API's metrics) that sees every finished record.
//!
//! Publishing never waits: a broadcast send only writes into a ring buffer, and a subscriber
//! that falls more than [`EVENT_CAPACITY`] events behind loses the oldest (it is told how many
//! when it next reads), so a slow reader can never slow the proxy. A finished record is never
//! copied: the feed's readers and the storage writer hold the same `Arc`. Starts are built only
//! while some subscriber wants them: the terminal UI reads finished requests only
//! ([`FinishedFeed`]), so with just the UI open a request publishes one event, not two.

use ccflare_core::Millis;
use ccflare_core::record::RequestRecord;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

/// Events kept for subscribers that have not read them yet.
pub const EVENT_CAPACITY: usize = 1024;

/// What sees every finished request, once set (with the management API, by
/// `AppState::set_management`).
pub trait RequestObserver: Send + Sync + 'static {
    /// Called once for every finished request, on the request path, before the record goes to
    /// the writer: it must be quick (a few counter updates) and must never block.
    fn request_finished(&self, _record: &RequestRecord) {}
}

/// A request as it starts: known once its body has been read (or refused).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestStarted {
    pub id: String,
    pub started_at: Millis,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub streamed: bool,
    pub session_key: Option<String>,
}

/// One event of the live request feed. Every request publishes `Finished`, and before it
/// `Started` while some subscriber wants starts.
#[derive(Debug, Clone)]
pub enum RequestEvent {
    Started(Arc<RequestStarted>),
    /// The whole record, as it goes to the database.
    Finished(Arc<RequestRecord>),
}

/// The live request feed and the observer of finished requests.
pub(crate) struct Feed {
    events: broadcast::Sender<RequestEvent>,
    /// Subscribers that want finished requests only (each [`FinishedFeed`] counts one).
    finished_only: Arc<AtomicUsize>,
    observer: OnceLock<Arc<dyn RequestObserver>>,
}

/// The finished requests of the live feed, for a reader that wants no starts (the terminal
/// UI). While every subscriber is one of these, the proxy builds no start events at all.
#[derive(Debug)]
pub struct FinishedFeed {
    events: broadcast::Receiver<RequestEvent>,
    finished_only: Arc<AtomicUsize>,
}

impl FinishedFeed {
    /// The next finished request if one is waiting, without waiting; `Lagged(n)` when this
    /// reader fell more than [`EVENT_CAPACITY`] events behind and lost the oldest `n`.
    pub fn try_recv(&mut self) -> Result<Arc<RequestRecord>, TryRecvError> {
        loop {
            match self.events.try_recv()? {
                RequestEvent::Finished(record) => return Ok(record),
                // Published for another subscriber.
                RequestEvent::Started(_) => {}
            }
        }
    }
}

impl Drop for FinishedFeed {
    fn drop(&mut self) {
        self.finished_only.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed {
            events: broadcast::channel(EVENT_CAPACITY).0,
            finished_only: Arc::new(AtomicUsize::new(0)),
            observer: OnceLock::new(),
        }
    }

    /// Every request's start and end from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RequestEvent> {
        self.events.subscribe()
    }

    /// Every request's end from now on, and no starts.
    pub(crate) fn subscribe_finished(&self) -> FinishedFeed {
        // Counted before subscribing, so that a start is never skipped for a subscriber that
        // wants it (a start built for nobody is the only race).
        self.finished_only.fetch_add(1, Ordering::Relaxed);
        FinishedFeed {
            events: self.events.subscribe(),
            finished_only: self.finished_only.clone(),
        }
    }

    /// Sets the observer of finished requests (once); false if one was set.
    pub(crate) fn observe(&self, observer: Arc<dyn RequestObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Publishes a request's start, if anyone listens for starts (so nothing is copied
    /// otherwise).
    pub(crate) fn started(&self, record: &RequestRecord) {
        if self.events.receiver_count() <= self.finished_only.load(Ordering::Relaxed) {
            return;
        }
        let started = RequestStarted {
            id: record.id.clone(),
            started_at: record.started_at,
            method: record.method.clone(),
            path: record.path.clone(),
            model: record.model.clone(),
            streamed: record.streamed,
            session_key: record.session_key.clone(),
        };
        // An error only means the last subscriber just left.
        let _ = self.events.send(RequestEvent::Started(Arc::new(started)));
    }

    /// Hands a finished request to the observer, then to the live feed if anyone reads it.
    /// The record comes back shared: the writer takes the same one the feed's readers hold
    /// (when nobody reads, its only holder), so the request path never copies it.
    pub(crate) fn finished(&self, record: RequestRecord) -> Arc<RequestRecord> {
        if let Some(observer) = self.observer.get() {
            observer.request_finished(&record);
        }
        let shared = Arc::new(record);
        if self.events.receiver_count() > 0 {
            // An error only means the last subscriber just left.
            let _ = self.events.send(RequestEvent::Finished(shared.clone()));
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_built_only_while_a_subscriber_wants_them() {
        let feed = Feed::new();
        let record = RequestRecord {
            id: "r-1".into(),
            ..Default::default()
        };
        let mut finished = feed.subscribe_finished();
        feed.started(&record);
        assert_eq!(feed.events.len(), 0, "the UI alone: no start is built");
        let mut all = feed.subscribe();
        feed.started(&record);
        assert_eq!(
            Arc::strong_count(&feed.finished(record.clone())),
            2,
            "shared with the feed"
        );
        assert!(matches!(all.try_recv(), Ok(RequestEvent::Started(s)) if s.id == "r-1"));
        assert!(matches!(all.try_recv(), Ok(RequestEvent::Finished(r)) if r.id == "r-1"));
        // The UI's reader passes over the start it was not built for.
        assert_eq!(
            finished.try_recv().map(|r| r.id.clone()),
            Ok("r-1".to_owned())
        );
        assert_eq!(finished.try_recv().err(), Some(TryRecvError::Empty));
        drop(all);
        feed.started(&record);
        assert_eq!(feed.events.len(), 0, "the UI alone again");
        drop(finished);
        feed.started(&record);
        assert_eq!(feed.events.len(), 0, "nobody at all");
        assert_eq!(
            Arc::strong_count(&feed.finished(record)),
            1,
            "nobody else holds it"
        );
    }
}
