//! The state one mock shares between its handle and its connections: recorded requests, fault
//! scripts, revoked credentials, counters that tests can wait on, and id generation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::fault::Fault;
use crate::request::ReceivedRequest;

pub(crate) struct State {
    scripts: Mutex<Scripts>,
    requests_seen: Counter,
    aborted_streams: Counter,
    abandoned_requests: Counter,
    id_counter: AtomicU64,
    id_seed: u64,
    pub(crate) oauth: crate::oauth::OAuth,
    /// Batches and files, by id.
    pub(crate) store: Mutex<crate::batches::Store>,
    /// `http://127.0.0.1:PORT`: the origin the mock names in `results_url`.
    pub(crate) origin: String,
    /// Quota windows of the credentials given one (the window mode).
    pub(crate) windows: Mutex<crate::windows::Windows>,
}

/// A count tests can wait on, behind `watch` so waiters wake on change instead of polling
/// with sleeps.
struct Counter(watch::Sender<usize>);

impl Counter {
    fn new() -> Counter {
        Counter(watch::Sender::new(0))
    }

    fn add_one(&self) {
        self.0.send_modify(|count| *count += 1);
    }

    fn get(&self) -> usize {
        *self.0.borrow()
    }

    async fn wait_for(&self, n: usize) {
        // The sender lives as long as `self`, so `wait_for` cannot fail while we wait.
        let _ = self.0.subscribe().wait_for(|count| *count >= n).await;
    }
}

#[derive(Default)]
struct Scripts {
    requests: Vec<ReceivedRequest>,
    queued_faults: HashMap<String, VecDeque<Fault>>,
    sticky_faults: HashMap<String, Fault>,
    revoked: HashSet<String>,
}

impl State {
    pub(crate) fn new(port: u16) -> State {
        // Ids only need to differ between mocks in one test process, not be unpredictable.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id_seed = (nanos as u64) ^ (u64::from(port) << 48);
        State {
            scripts: Mutex::new(Scripts::default()),
            requests_seen: Counter::new(),
            aborted_streams: Counter::new(),
            abandoned_requests: Counter::new(),
            id_counter: AtomicU64::new(0),
            id_seed,
            oauth: crate::oauth::OAuth::default(),
            store: Mutex::new(crate::batches::Store::default()),
            origin: format!("http://127.0.0.1:{port}"),
            windows: Mutex::default(),
        }
    }

    /// A panic while holding the lock cannot leave these plain collections half-updated in a
    /// way that matters to a test double, so a poisoned lock is used as is.
    fn scripts(&self) -> MutexGuard<'_, Scripts> {
        self.scripts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The quota windows; a poisoned lock is used as is, like the scripts.
    pub(crate) fn windows(&self) -> MutexGuard<'_, crate::windows::Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, request: ReceivedRequest) {
        self.scripts().requests.push(request);
        self.requests_seen.add_one();
    }

    pub(crate) fn requests(&self) -> Vec<ReceivedRequest> {
        self.scripts().requests.clone()
    }

    pub(crate) fn push_fault(&self, credential: &str, fault: Fault) {
        self.scripts()
            .queued_faults
            .entry(credential.to_owned())
            .or_default()
            .push_back(fault);
    }

    pub(crate) fn set_sticky_fault(&self, credential: &str, fault: Option<Fault>) {
        let mut scripts = self.scripts();
        match fault {
            Some(fault) => scripts.sticky_faults.insert(credential.to_owned(), fault),
            None => scripts.sticky_faults.remove(credential),
        };
    }

    /// The fault for the next request of `credential`: the oldest queued one, else the sticky.
    pub(crate) fn take_fault(&self, credential: &str) -> Option<Fault> {
        let mut scripts = self.scripts();
        if let Some(fault) = scripts
            .queued_faults
            .get_mut(credential)
            .and_then(VecDeque::pop_front)
        {
            return Some(fault);
        }
        scripts.sticky_faults.get(credential).cloned()
    }

    pub(crate) fn revoke(&self, credential: &str) {
        self.scripts().revoked.insert(credential.to_owned());
    }

    pub(crate) fn is_revoked(&self, credential: &str) -> bool {
        self.scripts().revoked.contains(credential)
    }

    pub(crate) fn note_aborted_stream(&self) {
        self.aborted_streams.add_one();
    }

    pub(crate) fn aborted_streams(&self) -> usize {
        self.aborted_streams.get()
    }

    pub(crate) async fn wait_aborted_streams(&self, n: usize) {
        self.aborted_streams.wait_for(n).await;
    }

    pub(crate) fn note_abandoned_request(&self) {
        self.abandoned_requests.add_one();
    }

    pub(crate) fn abandoned_requests(&self) -> usize {
        self.abandoned_requests.get()
    }

    pub(crate) async fn wait_abandoned_requests(&self, n: usize) {
        self.abandoned_requests.wait_for(n).await;
    }

    pub(crate) async fn wait_requests(&self, n: usize) {
        self.requests_seen.wait_for(n).await;
    }

    /// `req_011C` followed by 20 base58 characters, like current Anthropic request ids.
    pub(crate) fn next_request_id(&self) -> String {
        self.next_id("req_011C", 20)
    }

    /// `msg_01` followed by 22 base58 characters.
    pub(crate) fn next_message_id(&self) -> String {
        self.next_id("msg_01", 22)
    }

    /// `msgbatch_01` followed by 22 base58 characters.
    pub(crate) fn next_batch_id(&self) -> String {
        self.next_id("msgbatch_01", 22)
    }

    /// `file_011C` followed by 20 base58 characters.
    pub(crate) fn next_file_id(&self) -> String {
        self.next_id("file_011C", 20)
    }

    /// The batches and files (a poisoned lock is used as is, like the scripts').
    pub(crate) fn store(&self) -> MutexGuard<'_, crate::batches::Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self, prefix: &str, len: usize) -> String {
        const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let mut mix = self.id_seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut id = String::with_capacity(prefix.len() + len);
        id.push_str(prefix);
        for _ in 0..len {
            let value = splitmix64(&mut mix);
            id.push(char::from(BASE58[(value % 58) as usize]));
        }
        id
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_counter_wakes_a_waiter_when_it_reaches_the_count() {
        let state = State::new(1);
        state.note_aborted_stream();
        state.wait_aborted_streams(1).await;
        let waiter = async {
            state.wait_aborted_streams(2).await;
            state.aborted_streams()
        };
        let (seen, ()) = tokio::join!(waiter, async { state.note_aborted_stream() });
        assert_eq!(seen, 2);
        assert_eq!(state.abandoned_requests(), 0);
    }

    #[test]
    fn queued_faults_come_first_then_sticky() {
        let state = State::new(1);
        state.set_sticky_fault("k", Some(Fault::Overloaded));
        state.push_fault("k", Fault::Status(500));
        state.push_fault("k", Fault::Hang);
        assert_eq!(state.take_fault("k"), Some(Fault::Status(500)));
        assert_eq!(state.take_fault("k"), Some(Fault::Hang));
        assert_eq!(state.take_fault("k"), Some(Fault::Overloaded));
        assert_eq!(state.take_fault("k"), Some(Fault::Overloaded));
        state.set_sticky_fault("k", None);
        assert_eq!(state.take_fault("k"), None);
        assert_eq!(state.take_fault("other"), None);
    }

    #[test]
    fn ids_are_distinct_and_shaped() {
        let state = State::new(1);
        let a = state.next_request_id();
        let b = state.next_request_id();
        assert_ne!(a, b);
        assert!(a.starts_with("req_011C") && a.len() == 28, "{a}");
        let m = state.next_message_id();
        assert!(m.starts_with("msg_01") && m.len() == 28, "{m}");
    }
}
