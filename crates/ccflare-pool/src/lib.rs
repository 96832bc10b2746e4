//! The account pool and load balancer (SPEC §5–§7): which accounts may take a request right now,
//! which one a request goes to (session affinity, then the configured strategy), and how an
//! upstream answer benches an account: a 429 until its reset or a growing backoff, a 529 for a
//! short fixed time, a 401 on an OAuth token for a minute (time for a refresh). A 401 on an API
//! key makes the account invalid until a person re-adds the key. A 403 (the refusal may be about
//! the request), a 500–504 and a 429 without rate-limit headers fail over without benching it.
//!
//! **Invariant:** this crate is pure. It does no IO, never sleeps and never reads a clock: every
//! call takes `now`, and a bench whose end has passed is simply over. The proxy owns one [`Pool`]
//! behind a lock, feeds it the stored accounts with [`Pool::sync`], and writes the
//! [`PersistState`] that [`Pool::report`] returns to the database behind the request.

mod account_state;
mod error;
mod explain;
mod forecast;
mod placement;
mod pool;
mod replay;
mod state;
mod strategy;

pub use account_state::{
    DEFAULT_BACKOFF_MS, MAX_BACKOFF_MS, OAUTH_AUTH_FAILURE_BENCH_MS, OVERLOAD_COOLDOWN_MS,
};
pub use error::{Unavailable, UnavailableReason};
pub use explain::{Basis, Chosen, EXPLAINED, Explanation, MoveReason, Route, Skip};
pub use forecast::{CACHE_READ_WEIGHT, Confidence, Forecast, WindowTrack, window_cost};
pub use placement::{Demand, MOVE_HORIZON_MS};
pub use pool::{MAX_PINS, Pick, Pool, PoolConfig, PoolWindow};
pub use replay::{ReplayAccount, ReplayReport, ReplayRequest, replay, simulated_subscription};
pub use state::{AccountView, PersistState, RoutingState, StateCounts};
