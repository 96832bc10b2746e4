//! ccflare's one way of speaking HTTP as a client. The proxy's upstream client (its connector),
//! the OAuth token client and `ccflare-cli` (doctor, the live feed of `logs --follow`) all
//! build on it:
//!
//! - [`connector`]: TCP with `TCP_NODELAY`, keep-alive probes and a connect timeout, then
//!   rustls with the webpki roots for `https://` (plain `http://` too, for a local server or
//!   the mock upstream);
//! - [`pool_builder`]: hyper-util's pooled client on the tokio runtime, under [`Client`] (the
//!   proxy keeps its own pool of connections, driven by the tasks that use them);
//! - [`Client`]: small request/response exchanges (a token grant, `/health`, `/api/config`)
//!   under one total deadline and a cap on the answer's size, or the opening of a stream
//!   whose headers come within the deadline;
//! - [`BaseUrl`]: a checked `scheme://authority[/prefix]` that paths are appended to.
//!
//! **Invariant:** depends on no ccflare crate; no request is ever logged here (requests carry
//! credentials), and errors carry no header or body.

mod base_url;
mod client;
mod connector;
mod error;

pub use base_url::BaseUrl;
pub use client::{Answer, Client, Limits};
pub use connector::{Connector, PooledClient, SendError, connector, pool_builder};
pub use error::{HttpError, InvalidUrl};
