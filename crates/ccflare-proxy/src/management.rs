//! The two seams the management API (a crate above this one) plugs into, so that the proxy
//! never depends on it: [`ManagementRoutes`], which answers every path that is neither `/v1/*`
//! nor `/health`, and the live request feed, a broadcast of [`RequestEvent`]s.
//!
//! Publishing never waits: a broadcast send only writes into a ring buffer, and a subscriber
//! that falls more than [`EVENT_CAPACITY`] events behind loses the oldest (it is told how many
//! when it next reads), so a slow reader can never slow the proxy.

use crate::body::ResponseBody;
use crate::state::AppState;
use ccflare_core::Millis;
use ccflare_core::record::RequestRecord;
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Events kept for subscribers that have not read them yet.
pub const EVENT_CAPACITY: usize = 1024;

/// The answer of a management route.
pub type ManagementFuture = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// What the server hands every request outside `/v1/*` and `/health` to, once set with
/// [`AppState::set_management`]. Without one those paths are 404.
pub trait ManagementRoutes: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, state: Arc<AppState>, request: Request<Incoming>) -> ManagementFuture;

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
