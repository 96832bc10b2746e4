//! Shutdown in two small types. [`Shutdown`] is what a task that must stop with the server
//! holds (mini-redis's shape: `is_shutdown()` and `async fn recv()` over a watch receiver):
//! each connection, the live feeds of the management API, the account sync. [`Drain`] is the
//! server's side: the signal those listen to, sent when `run` stops accepting, and the flag
//! that says the connections left at the shutdown deadline are being cut, so that a request
//! dropped from then on is recorded as the server's cut and not as its client's hang-up.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// A task's view of the server's shutdown. Cloning it is cheap (a reference count).
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// Listens on `receiver`: `true` means stop, and so does a sender that is gone.
    pub fn new(receiver: watch::Receiver<bool>) -> Shutdown {
        Shutdown { receiver }
    }

    /// Whether the shutdown was signalled.
    pub fn is_shutdown(&self) -> bool {
        *self.receiver.borrow() || self.receiver.has_changed().is_err()
    }

    /// Resolves once the shutdown is signalled (at once when it already was).
    pub async fn recv(&mut self) {
        // An error means the sender is gone: nobody is left to say "keep going".
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }
}

/// The server's side of shutdown: one per running proxy.
#[derive(Debug)]
pub(crate) struct Drain {
    signal: watch::Sender<bool>,
    /// Set once the shutdown deadline has passed and the remaining connections are being cut.
    /// Read only when a response or request is dropped unfinished, never per chunk.
    cutting: AtomicBool,
}

impl Drain {
    pub(crate) fn new() -> Drain {
        Drain {
            signal: watch::channel(false).0,
            cutting: AtomicBool::new(false),
        }
    }

    pub(crate) fn subscribe(&self) -> Shutdown {
        Shutdown::new(self.signal.subscribe())
    }

    /// The server stopped accepting: every [`Shutdown`] resolves.
    pub(crate) fn stop(&self) {
        self.signal.send_replace(true);
    }

    /// The shutdown deadline passed: what is dropped from now on is the server's cut.
    pub(crate) fn begin_cut(&self) {
        self.cutting.store(true, Ordering::Release);
    }

    /// Whether the server is cutting the connections left at the shutdown deadline.
    pub(crate) fn cutting(&self) -> bool {
        self.cutting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_the_stop_and_a_late_one_too() {
        let drain = Drain::new();
        let mut early = drain.subscribe();
        assert!(!early.is_shutdown());
        drain.stop();
        early.recv().await;
        assert!(early.is_shutdown());
        let mut late = drain.subscribe();
        assert!(late.is_shutdown());
        late.recv().await;
    }

    #[tokio::test]
    async fn a_sender_that_is_gone_means_stop() {
        let (sender, receiver) = watch::channel(false);
        let mut shutdown = Shutdown::new(receiver);
        assert!(!shutdown.is_shutdown());
        drop(sender);
        assert!(shutdown.is_shutdown());
        shutdown.recv().await;
    }

    #[test]
    fn cutting_starts_only_when_told() {
        let drain = Drain::new();
        assert!(!drain.cutting());
        drain.begin_cut();
        assert!(drain.cutting());
    }
}
