//! SIGTERM and SIGINT (Ctrl-C), which stop a server the way quitting the UI does.

/// SIGTERM and SIGINT, listened for from the moment this is created: a signal that arrives
/// before [`ShutdownSignals::recv`] is polled is kept, not lost, and does not kill the process
/// (tokio replaces the default action when the listener is registered).
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(windows)]
    interrupt: tokio::signal::windows::CtrlC,
}

/// A signal handler could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("listening for {signal}")]
pub struct SignalError {
    signal: &'static str,
    #[source]
    source: std::io::Error,
}

impl ShutdownSignals {
    /// Starts listening. Call it on the runtime, before anything that may be stopped.
    pub fn listen() -> Result<ShutdownSignals, SignalError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind, name| {
                signal(kind).map_err(|source| SignalError {
                    signal: name,
                    source,
                })
            };
            Ok(ShutdownSignals {
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(windows)]
        {
            Ok(ShutdownSignals {
                interrupt: tokio::signal::windows::ctrl_c().map_err(|source| SignalError {
                    signal: "Ctrl-C",
                    source,
                })?,
            })
        }
    }

    /// Resolves at the first SIGTERM or SIGINT since [`ShutdownSignals::listen`].
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(windows)]
        let _ = self.interrupt.recv().await;
        tracing::info!("shutdown requested");
    }
}
