//! The headless run, as `ccflare-server` and `ccflare --serve` do it: start with log lines on
//! stderr, listen for SIGTERM and SIGINT, print the banner, tell systemd it is ready (when run
//! by it), serve until a signal, drain.

use crate::cli::Loaded;
use crate::logging::Logging;
use crate::server::{Server, StartError, StopError, Stopped};
use crate::signals::{ShutdownSignals, SignalError};

/// Why a headless run failed: at start, or at the end (records not all written).
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Signals(#[from] SignalError),
    #[error(transparent)]
    Stop(#[from] StopError),
}

/// Runs the server headless until SIGTERM or SIGINT; `name` heads the banner.
pub async fn headless(loaded: Loaded, name: &str) -> Result<Stopped, HeadlessError> {
    let server = Server::start(loaded, Logging::Terminal).await?;
    // Before the banner: whoever reads it (a supervisor, a test) may stop the server at once,
    // and a signal that comes before its handler exists would kill the process outright
    // instead of shutting it down cleanly. From here on, a signal waits for the server to see
    // it.
    let signals = ShutdownSignals::listen()?;
    server.print_banner(name);
    // Under systemd (`Type=notify`): the listener is bound and the database open, so
    // connections made from now on are served.
    crate::notify::notify(&format!("READY=1\nSTATUS=listening on {}", server.url()));
    let running = server.serve(signals.recv());
    let stopping = running.stopping();
    let end = running.wait();
    tokio::pin!(end);
    tokio::select! {
        stopped = &mut end => return Ok(stopped?),
        () = stopping => {
            crate::notify::notify("STOPPING=1\nSTATUS=draining");
        }
    }
    Ok(end.await?)
}

/// The multi-threaded tokio runtime both binaries run on; on failure the error is printed as
/// one line headed by `name`.
pub fn runtime(name: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("{name}: error: starting the async runtime: {error}");
            None
        }
    }
}

/// The whole headless process (`ccflare-server`, `ccflare --serve`): a runtime, [`headless`],
/// and the exit status, with any error printed as one line headed by `name`.
pub fn serve_headless(loaded: Loaded, name: &str) -> std::process::ExitCode {
    let Some(runtime) = runtime(name) else {
        return std::process::ExitCode::FAILURE;
    };
    match runtime.block_on(headless(loaded, name)) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: error: {}", one_line(&error));
            match error {
                // Configuration to change, as a bad option is (the binaries exit 2 for those).
                HeadlessError::Start(start) if start.is_configuration() => {
                    std::process::ExitCode::from(2)
                }
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// `error` and its causes on one line, `what failed: why: why`, as the binaries print errors.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        line.push_str(": ");
        line.push_str(&error.to_string());
        cause = error.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_on_one_line() {
        let error = StartError::StoredSettings(ccflare_storage::StorageError::AccountNotFound {
            name: "x".into(),
        });
        assert_eq!(
            one_line(&error),
            format!(
                "reading stored settings: {}",
                ccflare_storage::StorageError::AccountNotFound { name: "x".into() }
            )
        );
    }
}
