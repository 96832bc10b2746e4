//! The proxy engine: a hyper HTTP/1.1 server that forwards `/v1/*` requests (the API's
//! documented routes, unless told to forward every path) to the Anthropic API through one
//! account of the pool, fails over before the first byte, streams
//! the answer back chunk by chunk while reading its usage inline, and hands one record per
//! request to the storage writer. Also serves `/health`, and hands every other path to the
//! management API through [`ManagementRoutes`] (set on the [`AppState`]), publishing each
//! request's start and end on a broadcast feed ([`RequestEvent`]) for its live views.
//!
//! Entry point: [`run`], which takes its listener and a shutdown future (so tests run it on
//! port 0) and returns once every connection has finished or the shutdown deadline passed.

mod after_poll;
mod body;
mod budget;
mod error;
mod feed;
mod forward;
mod headers;
mod keys;
mod owners;
mod pool;
mod quiet;
mod quota_headers;
mod recorder;
mod resources;
mod routes;
mod server;
mod shutdown;
mod state;
mod tokens;
mod uploads;
mod upstream;

pub use body::ResponseBody;
pub use error::ProxyError;
pub use feed::{EVENT_CAPACITY, FinishedFeed, RequestEvent, RequestObserver, RequestStarted};
pub use keys::{ClientKeys, KEY_HEADER, KeyRefusal, KeyTicket, KnownKey, LimitRefusal, Standing};
pub use owners::{MAX_OWNED, Owners};
pub use resources::Peer;
pub use server::run;
pub use shutdown::Shutdown;
pub use state::{
    AccountsRead, AppState, ConfigLayers, DEFAULT_MAX_CONNECTIONS, ManagementFuture,
    ManagementRoutes, ProxyConfig, SyncError, spawn_account_sync,
};
pub use uploads::{BATCH_MAX_BYTES, FILES_MAX_BYTES};
pub use upstream::{POOL_IDLE_TIMEOUT, Reuse, SendError, UpstreamBody, UpstreamClient};
