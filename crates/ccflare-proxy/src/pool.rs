//! The account pool as the proxy shares it ([`SharedPool`]): the pure `ccflare_pool::Pool`
//! behind a mutex, the clock its calls take `now` from, and the writer its state changes go
//! to. It is the one handle of everything that routes requests or changes an account's state:
//! forwarding (select, report), the recorder (release), the token refresher (new credentials,
//! benches) and the account sync (the list). None of them needs more of the server.

use ccflare_core::{Clock, Millis};
use ccflare_pool::{PersistState, Pool};
use ccflare_storage::{AccountStateUpdate, WriterHandle};
use std::sync::{Arc, Mutex, MutexGuard};

/// The pool, its clock and where its state changes are persisted.
pub struct SharedPool {
    pool: Mutex<Pool>,
    clock: Arc<dyn Clock>,
    writer: WriterHandle,
}

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPool").finish_non_exhaustive()
    }
}

impl SharedPool {
    pub fn new(pool: Pool, clock: Arc<dyn Clock>, writer: WriterHandle) -> SharedPool {
        SharedPool {
            pool: Mutex::new(pool),
            clock,
            writer,
        }
    }

    /// The pool. Hold the guard only for a few statements, never across an await: selection
    /// and reports are a few field writes, the 1 s sync rebuilds the account list.
    pub fn lock(&self) -> MutexGuard<'_, Pool> {
        // A panic under the lock (a bug) must not stop all routing for good: the pool is used
        // as the panic left it.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Queues a pool state change for the database (the writer's channel: never waits).
    pub fn persist(&self, state: PersistState) {
        self.writer.account_state(AccountStateUpdate {
            id: state.id,
            revision: Some(state.revision),
            status: state.status,
            rate_limited_until: state.rate_limited_until,
            overloaded_until: state.overloaded_until,
            last_ratelimit: state.last_ratelimit,
        });
    }
}
