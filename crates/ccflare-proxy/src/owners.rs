//! Which account made each batch and file ccflare has seen (`resources` explains why it
//! matters): a bounded map from id to account, learned from relayed answers and, at start,
//! from the request rows that created them.

use ccflare_core::AccountId;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The most ids remembered (about 100 bytes each); the oldest learned go first. Also how many
/// the server reads back from the database at start.
pub const MAX_OWNED: usize = 100_000;

/// Which account made each batch and file ccflare has seen.
#[derive(Debug, Default)]
pub struct Owners {
    inner: Mutex<OwnersInner>,
}

#[derive(Debug, Default)]
struct OwnersInner {
    by_id: HashMap<String, AccountId>,
    /// Ids in the order learned, for dropping the oldest past [`MAX_OWNED`].
    order: VecDeque<String>,
}

impl Owners {
    /// The account that made `id`, if ccflare saw it made (or listed).
    pub fn owner(&self, id: &str) -> Option<AccountId> {
        self.lock().by_id.get(id).copied()
    }

    /// Notes that `id` belongs to `account`'s organisation.
    pub fn learn(&self, id: &str, account: AccountId) {
        let mut inner = self.lock();
        if inner.by_id.insert(id.to_owned(), account).is_none() {
            inner.order.push_back(id.to_owned());
            while inner.order.len() > MAX_OWNED {
                if let Some(old) = inner.order.pop_front() {
                    inner.by_id.remove(&old);
                }
            }
        }
    }

    /// Learns what the database recorded, newest first (as `requests::created_resources`
    /// reads it), so that the newest win the room.
    pub fn load(&self, newest_first: Vec<(String, AccountId)>) {
        for (id, account) in newest_first.into_iter().rev() {
            self.learn(&id, account);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OwnersInner> {
        // Plain maps: a panic mid-update cannot leave them unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_forget_the_oldest_past_the_bound() {
        let owners = Owners::default();
        owners.load(vec![
            ("new".into(), AccountId(2)),
            ("old".into(), AccountId(1)),
        ]);
        assert_eq!(owners.owner("new"), Some(AccountId(2)));
        assert_eq!(owners.owner("old"), Some(AccountId(1)));
        for n in 0..MAX_OWNED {
            owners.learn(&format!("id{n}"), AccountId(3));
        }
        assert_eq!(owners.len(), MAX_OWNED);
        assert_eq!(owners.owner("old"), None, "the oldest went first");
        assert_eq!(owners.owner("id0"), Some(AccountId(3)));
    }
}
