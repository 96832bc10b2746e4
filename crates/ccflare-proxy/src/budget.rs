//! The memory budget of request bodies (`max_body_memory`): every body is read whole before
//! its first attempt, so without a bound many large uploads at once could take the process's
//! memory. Each request holds the bytes it has read until it is answered; a request whose next
//! piece does not fit gets 503 with `retry-after`, and nothing goes upstream (one whose
//! `content-length` does not fit gets it before a byte is read). The bytes are counted as they
//! arrive rather than as `content-length` declares them, so that a client cannot hold budget
//! it never sends.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bytes all requests together may hold; one permit per byte.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct BodyHold {
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub(crate) fn new(bytes: usize) -> BodyBudget {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Adds `bytes` to what `hold` holds; false, holding nothing more, when they do not fit.
    pub(crate) fn take(&self, hold: &mut BodyHold, bytes: usize) -> bool {
        let Ok(count) = u32::try_from(bytes) else {
            return false;
        };
        let Ok(permit) = self.permits.clone().try_acquire_many_owned(count) else {
            return false;
        };
        match &mut hold.permit {
            Some(held) => held.merge(permit),
            None => hold.permit = Some(permit),
        }
        true
    }

    /// Bytes that could still be taken now.
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Bytes of request bodies held now.
    pub(crate) fn held(&self) -> usize {
        self.total - self.permits.available_permits()
    }

    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_counted_and_given_back_and_the_budget_is_never_passed() {
        let budget = BodyBudget::new(100);
        let mut first = BodyHold::default();
        assert!(budget.take(&mut first, 60));
        assert!(budget.take(&mut first, 30));
        let mut second = BodyHold::default();
        assert!(!budget.take(&mut second, 11), "90 + 11 is over 100");
        assert!(budget.take(&mut second, 10));
        assert_eq!((budget.held(), budget.available()), (100, 0));
        drop(first);
        assert_eq!(budget.held(), 10);
        drop(second);
        assert_eq!(budget.held(), 0);
        assert!(!budget.take(&mut BodyHold::default(), usize::MAX));
    }
}
