//! The server's start-up and shutdown, as a library both binaries call: `ccflare-server` (and
//! `ccflare --serve`) run it headless, `ccflare` runs it under the terminal UI. One path, so
//! the two cannot drift: the same options, flags, environment and config layers
//! ([`cli`]), the same database, the same listener, the same drain at the end and the same
//! exit status.
//!
//! Configuration ([`cli::load`]) → [`Server::start`] (logging → storage → stored settings →
//! open-files limit → listener → `CLAUDE_API_KEYS` → pool, proxy and API) → [`Server::serve`]
//! (account sync, retention, `ccflare_proxy::run`) → [`Running::wait`] (drain, flush, report).
//! Start-up failures are [`StartError`]s, a run that could not write everything ends in a
//! [`StopError`]; the binaries print either as one line and exit non-zero.
//!
//! **Invariant:** the library never writes to the terminal on its own: log lines go to stderr
//! only under [`Logging::Terminal`], and the banner only when a binary asks
//! ([`Server::print_banner`]). With a UI open, [`Logging::Quiet`] sends them to the log feed
//! (and the log file) alone.

pub mod cli;
mod headless;
pub mod healthcheck;
mod limits;
mod logging;
pub mod notify;
mod server;
mod signals;

pub use cli::{LoadError, Loaded};

/// The git revision the binaries were built from (`build.rs`: `GIT_REVISION`, else `git
/// rev-parse`); empty when it was unknown at build time.
pub const REVISION: &str = env!("CCFLARE_GIT_REVISION");

/// The version as `--version` and the banner show it: `0.1.0 (rev 0123456789ab)`, or `0.1.0`
/// when the revision is unknown.
pub fn version() -> String {
    if REVISION.is_empty() {
        env!("CARGO_PKG_VERSION").to_owned()
    } else {
        format!("{} (rev {REVISION})", env!("CARGO_PKG_VERSION"))
    }
}
pub use headless::{HeadlessError, headless, one_line, runtime, serve_headless};
pub use logging::{LogFileError, Logging};
pub use server::{Handles, Running, Server, StartError, StopError, Stopped};
pub use signals::{ShutdownSignals, SignalError};
