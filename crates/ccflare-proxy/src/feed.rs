//! Where a request is published as it starts and ends ([`Feed`]): the live request feed, a
//! broadcast of [`RequestEvent`]s that the management API's live views subscribe to, and the
//! [`RequestObserver`] (the management API's metrics) that sees every finished record.
//!
//! Publishing never waits: a broadcast send only writes into a ring buffer, and a subscriber
//! that falls more than [`EVENT_CAPACITY`] events behind loses the oldest (it is told how many
//! when it next reads), so a slow reader can never slow the proxy. Records are copied for the
//! feed only while someone is subscribed.

use ccflare_core::Millis;
use ccflare_core::record::RequestRecord;
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

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

/// One event of the live request feed. Every request publishes `Started` and then `Finished`.
#[derive(Debug, Clone)]
pub enum RequestEvent {
    Started(Arc<RequestStarted>),
    /// The whole record, as it goes to the database.
    Finished(Arc<RequestRecord>),
}

/// The live request feed and the observer of finished requests.
pub(crate) struct Feed {
    events: broadcast::Sender<RequestEvent>,
    observer: OnceLock<Arc<dyn RequestObserver>>,
}

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed {
            events: broadcast::channel(EVENT_CAPACITY).0,
            observer: OnceLock::new(),
        }
    }

    /// Every request's start and end from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RequestEvent> {
        self.events.subscribe()
    }

    /// Sets the observer of finished requests (once); false if one was set.
    pub(crate) fn observe(&self, observer: Arc<dyn RequestObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Publishes a request's start, if anyone listens (so nothing is copied otherwise).
    pub(crate) fn started(&self, record: &RequestRecord) {
        if self.events.receiver_count() == 0 {
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

    /// Hands a finished request to the observer and to the live feed.
    pub(crate) fn finished(&self, record: &RequestRecord) {
        if let Some(observer) = self.observer.get() {
            observer.request_finished(record);
        }
        if self.events.receiver_count() > 0 {
            let _ = self
                .events
                .send(RequestEvent::Finished(Arc::new(record.clone())));
        }
    }
}
