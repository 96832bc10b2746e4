//! What the workspace's integration tests share, so that each suite keeps only what is its
//! own: the HTTP client and the answers it reads ([`http`]), Server-Sent Events ([`sse`]),
//! requests written on a bare socket ([`raw`]), answers checked against the OpenAPI
//! document's schemas ([`openapi`]), child processes and the real server binary
//! ([`process`]), the in-process proxy's fixture ([`proxy`]), another program's hold on the
//! database and the checks and fills of a database file ([`db`]), real disk faults
//! ([`fault`]) and real damage to a database file ([`damage`]), a WebDriver client for headless
//! Chromium ([`webdriver`]), and waiting for a change that
//! arrives on its own ([`eventually`]).
//!
//! A dev-dependency only (`bins/ccflare-server/tests/layering.rs` checks that no crate ships
//! with it). Everything here panics instead of returning errors, and every wait is bounded by
//! a guard, so a bug fails the test that met it instead of hanging the run.

use std::time::Duration;

pub mod damage;
pub mod db;
pub mod fault;
pub mod http;
pub mod openapi;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod sse;
pub mod webdriver;

pub use crate::http::{Message, Reply, client, get, open, send};
pub use crate::sse::{Event, SseReader};

/// Bounds every wait of an in-process test (an answer, a frame, an event, a flush).
pub const GUARD: Duration = Duration::from_secs(20);

/// Bounds every wait on a child process (starting, printing, exiting): longer than [`GUARD`],
/// since a binary starts cold and a loaded machine may be slow to schedule it.
pub const PROCESS_GUARD: Duration = Duration::from_secs(30);

/// The API key of test account `name`: shaped like a real key, and ending in the name, so its
/// masked form (`sk-ant-…` and the last four characters) says whose it is.
pub fn key(name: &str) -> String {
    format!("sk-ant-api03-{name}-0123456789abcdefghij-{name}")
}

/// Polls `check` every 50 ms until it gives a value, and returns it; fails after `within`,
/// naming `what` did not happen.
///
/// For changes that arrive on their own (a server's one-second sync, a writer retrying): the
/// test waits for the state it asserts, never for a fixed time. `within` guards against a
/// change that never comes; it is not a measurement.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < within, "{what} within {within:?}");
    }
}
