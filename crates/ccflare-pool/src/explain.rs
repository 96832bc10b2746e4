//! Why a request went where it went (issue 16). The types live in `ccflare-core` (the request's
//! record carries a [`Route`] as built, rendered only where it is read); the pool builds them
//! with every selection and re-exports them, so its callers name them from here as before.

pub use ccflare_core::route::{Basis, Chosen, EXPLAINED, Explanation, MoveReason, Route, Skip};
