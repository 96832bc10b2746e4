//! Domain types shared by every ccflare crate: accounts and their states, rate-limit header
//! parsing, token usage and its inline SSE scanner, the price table, the request record and the
//! configuration model. This crate does no IO and knows nothing of tokio, HTTP or SQL: it is
//! pure data and pure functions, so everything here is a fast unit test.

pub mod account;
pub mod browser;
pub mod client_key;
pub mod config;
pub mod error;
pub mod human;
pub mod pricing;
pub mod ratelimit;
pub mod record;
pub mod request;
pub mod route;
pub mod secret;
pub mod sse;
pub mod time;
pub mod usage;

pub use account::{Account, AccountId, AccountKind, AccountStatus};
pub use error::CoreError;
pub use secret::Secret;
pub use time::{Clock, ManualClock, Millis, SystemClock};
pub use usage::Usage;
