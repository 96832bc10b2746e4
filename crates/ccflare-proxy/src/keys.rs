//! Client keys on the request path (SPEC §11): who may use `/v1`, and how much.
//!
//! [`ClientKeys`] holds the stored keys as a map from SHA-256 to key, swapped whole when the
//! account sync (every second) or a person's change through the API finds them changed, so a
//! disabled or deleted key stops working within two seconds. Checking a key is one hash and
//! one map read under a read lock held for the lookup: no database on the request path.
//!
//! A key's limits are counted here too, per key id, under one mutex held for a few field
//! writes: requests admitted in the last minute, requests in flight, and the budget of the
//! current UTC period. A budget holds under bursts because each request reserves its worst
//! case ([`ccflare_core::client_key::worst_case`]) before it is forwarded, and the reservation
//! is settled with the real cost when its record is finished ([`KeyTicket`], which the
//! recorder holds; dropped unsettled, it releases). Usage recorded before a start is seeded
//! from the stored rows ([`ClientKeys::seed`]).

use ccflare_core::Millis;
use ccflare_core::client_key::{
    BudgetPeriod, KeyLimits, KeyStatus, Reservation, is_client_key, shown_prefix, worst_case,
};
use ccflare_storage::keys::{ClientKey, KeyHash, KeyUsage, hash};
use http::header::{self, HeaderMap};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// The header a client can send its key in when it keeps `x-api-key` and `Authorization` for
/// something else.
pub const KEY_HEADER: &str = "x-ccflare-key";

/// The rolling window of a requests-per-minute limit.
const MINUTE_MS: Millis = 60_000;

/// A stored key as the request path sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownKey {
    pub id: i64,
    pub name: Arc<str>,
    /// `ccf_` and its first eight random characters: what logs show.
    pub prefix: String,
    pub status: KeyStatus,
    pub expires_at: Option<Millis>,
    pub limits: KeyLimits,
}

impl From<&ClientKey> for KnownKey {
    fn from(key: &ClientKey) -> KnownKey {
        KnownKey {
            id: key.id,
            name: Arc::from(key.name.as_str()),
            prefix: key.prefix.clone(),
            status: key.status,
            expires_at: key.expires_at,
            limits: key.limits,
        }
    }
}

/// Why a request's key was refused: the 401's message says which, never the key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRefusal {
    /// Keys are required and the request carried none.
    Missing,
    /// A `ccf_` key no stored key has (mistyped, or deleted).
    Unknown,
    Disabled {
        key: Arc<KnownKey>,
    },
    Expired {
        key: Arc<KnownKey>,
    },
}

impl KeyRefusal {
    pub fn message(&self) -> String {
        match self {
            KeyRefusal::Missing => "this ccflare server requires a client key: send your ccf_… \
                                    key in x-api-key, Authorization: Bearer or x-ccflare-key"
                .to_owned(),
            KeyRefusal::Unknown => {
                "the client key is not valid: no ccflare client key matches it (mistyped or \
                 deleted)"
                    .to_owned()
            }
            KeyRefusal::Disabled { key } => {
                format!("the client key {:?} is disabled", key.name)
            }
            KeyRefusal::Expired { key } => format!(
                "the client key {:?} expired at {}",
                key.name,
                key.expires_at
                    .map(ccflare_core::time::format_rfc3339)
                    .unwrap_or_default()
            ),
        }
    }

    /// The refused key, when it is a stored one (the record names it).
    pub fn key(&self) -> Option<&Arc<KnownKey>> {
        match self {
            KeyRefusal::Disabled { key } | KeyRefusal::Expired { key } => Some(key),
            KeyRefusal::Missing | KeyRefusal::Unknown => None,
        }
    }
}

/// Why a key's limit refused a request: answered 429 with `retry-after`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitRefusal {
    pub message: String,
    pub retry_after_s: i64,
}

/// What one key used in its current budget period.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Standing {
    pub period: BudgetPeriod,
    pub period_start: Millis,
    /// When the period ends and the budget is whole again.
    pub resets_at: Millis,
    /// Settled use of the period (requests finished).
    pub used: Reservation,
    /// Reserved by requests in flight.
    pub reserved: Reservation,
    pub in_flight: u32,
    /// Requests admitted in the last minute.
    pub last_minute: u32,
}

/// The stored keys, by hash.
#[derive(Default)]
struct Known {
    by_hash: HashMap<KeyHash, Arc<KnownKey>>,
    /// As read, to tell whether a sync changed anything.
    rows: Vec<ClientKey>,
}

/// One key's counters.
#[derive(Debug, Clone, Default)]
struct Ledger {
    period: BudgetPeriod,
    start: Millis,
    end: Millis,
    used: Reservation,
    reserved: Reservation,
    in_flight: u32,
    /// Admission times within the last minute, oldest first (kept only under an rpm limit).
    admitted: VecDeque<Millis>,
    /// When the key was last used, and whether that is stored yet.
    last_used: Option<Millis>,
    last_used_stored: bool,
}

impl Ledger {
    /// Moves to the period holding `now` (a new period starts unused).
    fn roll(&mut self, period: BudgetPeriod, now: Millis) {
        if self.period != period || now >= self.end || now < self.start || self.end == 0 {
            let (start, end) = period.bounds(now);
            if (self.period, self.start) != (period, start) {
                self.used = Reservation::default();
            }
            self.period = period;
            self.start = start;
            self.end = end;
        }
    }

    fn forget_before(&mut self, now: Millis) {
        while self
            .admitted
            .front()
            .is_some_and(|at| *at <= now - MINUTE_MS)
        {
            self.admitted.pop_front();
        }
    }
}

/// The client keys of a running proxy: the map the request path checks, whether keys are
/// required, and each key's counters.
#[derive(Default)]
pub struct ClientKeys {
    required: AtomicBool,
    known: RwLock<Arc<Known>>,
    ledgers: Mutex<HashMap<i64, Ledger>>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("required", &self.required())
            .finish_non_exhaustive()
    }
}

/// The key a request presents, from the first of `x-ccflare-key`, `x-api-key` and
/// `Authorization: Bearer` that carries one. `x-ccflare-key` is ccflare's own header, so
/// anything in it is meant as a client key; in the other two only a `ccf_…` value is (a
/// client's own Anthropic key is ignored, as before keys existed).
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(key) = value(KEY_HEADER) {
        return Some(key);
    }
    if let Some(key) = value("x-api-key").filter(|k| is_client_key(k)) {
        return Some(key);
    }
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .find(|token| is_client_key(token))
}

impl ClientKeys {
    /// Whether every `/v1` request needs a key (decided at start from `require_client_keys`
    /// and the listen address).
    pub fn set_required(&self, required: bool) {
        self.required.store(required, Ordering::Relaxed);
    }

    pub fn required(&self) -> bool {
        self.required.load(Ordering::Relaxed)
    }

    fn known(&self) -> Arc<Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn ledgers(&self) -> MutexGuard<'_, HashMap<i64, Ledger>> {
        self.ledgers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many keys are stored.
    pub fn count(&self) -> usize {
        self.known().rows.len()
    }

    /// Takes the stored keys (as read by the sync) and returns the ids of keys whose budget
    /// period changed, whose usage must be read again ([`ClientKeys::seed`]).
    pub fn load(&self, rows: Vec<ClientKey>) -> Vec<i64> {
        let current = self.known();
        if current.rows == rows {
            return Vec::new();
        }
        let by_hash = rows
            .iter()
            .map(|key| (key.hash, Arc::new(KnownKey::from(key))))
            .collect();
        let mut changed_period = Vec::new();
        {
            let mut ledgers = self.ledgers();
            ledgers.retain(|id, _| rows.iter().any(|key| key.id == *id));
            for key in &rows {
                if let Some(ledger) = ledgers.get(&key.id)
                    && ledger.end != 0
                    && ledger.period != key.limits.period
                {
                    changed_period.push(key.id);
                }
            }
        }
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Known { by_hash, rows });
        changed_period
    }

    /// Sets the period usage of the keys in `usage` (all of them, or only those in `only`)
    /// to what their stored rows say: at start, and when a key's period changed.
    pub fn seed(&self, usage: &[KeyUsage], only: Option<&[i64]>, now: Millis) {
        let known = self.known();
        let mut ledgers = self.ledgers();
        for key in &known.rows {
            if only.is_some_and(|ids| !ids.contains(&key.id)) {
                continue;
            }
            let period = key.limits.period;
            let ledger = ledgers.entry(key.id).or_default();
            ledger.roll(period, now);
            let stored = usage
                .iter()
                .find(|u| u.key_id == key.id)
                .map(|u| u.of(period))
                .unwrap_or_default();
            ledger.used = Reservation {
                usd: stored.usd,
                tokens: stored.tokens,
            };
        }
    }

    /// Checks the key a request presents, and removes `x-ccflare-key` (the other two headers
    /// are the client's credentials, which never go upstream anyway). `Ok(None)`: keys are
    /// optional and the request carries none.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        now: Millis,
    ) -> Result<Option<Arc<KnownKey>>, KeyRefusal> {
        let found = self.check(headers, now);
        headers.remove(KEY_HEADER);
        found
    }

    /// [`ClientKeys::authenticate`] without touching the headers, and with a key required
    /// whatever the setting: what `/api/me` asks.
    pub fn identify(&self, headers: &HeaderMap, now: Millis) -> Result<Arc<KnownKey>, KeyRefusal> {
        match presented(headers) {
            None => Err(KeyRefusal::Missing),
            Some(key) => self.look_up(key, now),
        }
    }

    fn check(&self, headers: &HeaderMap, now: Millis) -> Result<Option<Arc<KnownKey>>, KeyRefusal> {
        match presented(headers) {
            None if self.required() => Err(KeyRefusal::Missing),
            None => Ok(None),
            Some(key) => self.look_up(key, now).map(Some),
        }
    }

    fn look_up(&self, key: &str, now: Millis) -> Result<Arc<KnownKey>, KeyRefusal> {
        let hash = hash(key);
        let found = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_hash
            .get(&hash)
            .cloned();
        let Some(found) = found else {
            tracing::info!(key = %shown_prefix(key), "refused an unknown client key");
            return Err(KeyRefusal::Unknown);
        };
        if found.status == KeyStatus::Disabled {
            tracing::info!(key = %found.prefix, name = %found.name, "refused a disabled client key");
            return Err(KeyRefusal::Disabled { key: found });
        }
        if found.expires_at.is_some_and(|at| at <= now) {
            tracing::info!(key = %found.prefix, name = %found.name, "refused an expired client key");
            return Err(KeyRefusal::Expired { key: found });
        }
        Ok(found)
    }

    /// Admits a request of `key` under its limits, reserving its worst case against a budget,
    /// or says which limit refuses it and when to retry.
    pub fn admit(
        self: &Arc<Self>,
        key: &KnownKey,
        model: Option<&str>,
        max_tokens: Option<u64>,
        body_len: usize,
        now: Millis,
    ) -> Result<KeyTicket, LimitRefusal> {
        let limits = key.limits;
        let want = if limits.has_budget() {
            worst_case(model, max_tokens, body_len)
        } else {
            Reservation::default()
        };
        let mut ledgers = self.ledgers();
        let ledger = ledgers.entry(key.id).or_default();
        ledger.roll(limits.period, now);
        let refuse = |message: String, retry_after_ms: Millis| {
            tracing::info!(key = %key.prefix, name = %key.name, %message, "client key limit reached");
            Err(LimitRefusal {
                message,
                retry_after_s: ((retry_after_ms + 999) / 1000).max(1),
            })
        };
        if let Some(rpm) = limits.rpm {
            ledger.forget_before(now);
            if ledger.admitted.len() >= rpm as usize {
                let oldest = ledger.admitted.front().copied().unwrap_or(now);
                return refuse(
                    format!(
                        "this client key's ccflare limit of {rpm} requests per minute is reached"
                    ),
                    oldest + MINUTE_MS - now,
                );
            }
        }
        if let Some(max) = limits.max_concurrent
            && ledger.in_flight >= max
        {
            return refuse(
                format!("this client key's ccflare limit of {max} concurrent requests is reached"),
                1000,
            );
        }
        let period = limits.period;
        let until_reset = ledger.end - now;
        if let Some(budget) = limits.budget_usd {
            if want.usd > budget {
                return refuse(
                    format!(
                        "this request could cost up to ${:.4} (its max_tokens at the model's \
                         price), more than this client key's whole ccflare budget of \
                         ${budget:.2} per {period}",
                        want.usd
                    ),
                    until_reset,
                );
            }
            if ledger.used.usd + ledger.reserved.usd + want.usd > budget {
                return refuse(
                    format!(
                        "this client key's ccflare budget of ${budget:.2} per {period} is spent \
                         (${:.4} used, ${:.4} reserved by requests in flight)",
                        ledger.used.usd, ledger.reserved.usd
                    ),
                    until_reset,
                );
            }
        }
        if let Some(budget) = limits.budget_tokens {
            if want.tokens > budget {
                return refuse(
                    format!(
                        "this request could use up to {} tokens (its max_tokens and input), \
                         more than this client key's whole ccflare budget of {budget} tokens \
                         per {period}",
                        want.tokens
                    ),
                    until_reset,
                );
            }
            let taken = ledger.used.tokens.saturating_add(ledger.reserved.tokens);
            if taken.saturating_add(want.tokens) > budget {
                return refuse(
                    format!(
                        "this client key's ccflare budget of {budget} tokens per {period} is \
                         spent ({} used, {} reserved by requests in flight)",
                        ledger.used.tokens, ledger.reserved.tokens
                    ),
                    until_reset,
                );
            }
        }
        if limits.rpm.is_some() {
            ledger.admitted.push_back(now);
        }
        ledger.in_flight += 1;
        ledger.reserved.usd += want.usd;
        ledger.reserved.tokens = ledger.reserved.tokens.saturating_add(want.tokens);
        ledger.last_used = Some(now);
        ledger.last_used_stored = false;
        Ok(KeyTicket {
            keys: self.clone(),
            id: key.id,
            period_start: ledger.start,
            reserved: want,
            settled: false,
        })
    }

    fn settle(&self, ticket: &KeyTicket, usd: f64, tokens: u64) {
        let mut ledgers = self.ledgers();
        // A key deleted meanwhile has no counters left to settle.
        let Some(ledger) = ledgers.get_mut(&ticket.id) else {
            return;
        };
        ledger.in_flight = ledger.in_flight.saturating_sub(1);
        ledger.reserved.usd = (ledger.reserved.usd - ticket.reserved.usd).max(0.0);
        ledger.reserved.tokens = ledger
            .reserved
            .tokens
            .saturating_sub(ticket.reserved.tokens);
        // A request that started in an earlier period counts there, as the stored rows do.
        if ledger.start == ticket.period_start {
            ledger.used.usd += usd;
            ledger.used.tokens = ledger.used.tokens.saturating_add(tokens);
        }
    }

    /// Keys used since the last call, with when: what the sync stores as `last_used`.
    pub fn take_last_used(&self) -> Vec<(i64, Millis)> {
        let mut ledgers = self.ledgers();
        ledgers
            .iter_mut()
            .filter(|(_, l)| !l.last_used_stored)
            .filter_map(|(id, l)| {
                l.last_used_stored = true;
                Some((*id, l.last_used?))
            })
            .collect()
    }

    /// Hands back last-used times whose storing failed, to be tried again at the next sync.
    pub fn unstored_last_used(&self, used: &[(i64, Millis)]) {
        let mut ledgers = self.ledgers();
        for (id, _) in used {
            if let Some(ledger) = ledgers.get_mut(id) {
                ledger.last_used_stored = false;
            }
        }
    }

    /// What `key` used in its current budget period at `now`.
    pub fn standing(&self, key: &KnownKey, now: Millis) -> Standing {
        let mut ledgers = self.ledgers();
        let ledger = ledgers.entry(key.id).or_default();
        ledger.roll(key.limits.period, now);
        ledger.forget_before(now);
        Standing {
            period: ledger.period,
            period_start: ledger.start,
            resets_at: ledger.end,
            used: ledger.used,
            reserved: ledger.reserved,
            in_flight: ledger.in_flight,
            last_minute: ledger.admitted.len() as u32,
        }
    }

    /// The stored key with this id, if any.
    pub fn by_id(&self, id: i64) -> Option<Arc<KnownKey>> {
        self.known()
            .by_hash
            .values()
            .find(|key| key.id == id)
            .cloned()
    }
}

/// A request's admission under its key's limits: it holds the request's in-flight slot and
/// budget reservation until [`KeyTicket::settle`] (the recorder calls it with the real cost);
/// dropped unsettled, it releases both and counts nothing.
pub struct KeyTicket {
    keys: Arc<ClientKeys>,
    id: i64,
    period_start: Millis,
    reserved: Reservation,
    settled: bool,
}

impl std::fmt::Debug for KeyTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTicket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KeyTicket {
    /// The key's id, as the request row records it.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Replaces the reservation by what the request really used.
    pub fn settle(mut self, usd: f64, tokens: u64) {
        self.settled = true;
        self.keys.settle(&self, usd, tokens);
    }
}

impl Drop for KeyTicket {
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            self.keys.settle(self, 0.0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccflare_core::client_key::KEY_PREFIX;
    use http::HeaderValue;

    const NOW: Millis = 1_780_000_000_000;

    fn stored(id: i64, key: &str, limits: KeyLimits) -> ClientKey {
        ClientKey {
            id,
            name: format!("key{id}"),
            prefix: key[..KEY_PREFIX.len() + 8].to_owned(),
            hash: hash(key),
            status: KeyStatus::Active,
            expires_at: None,
            limits,
            revision: 1,
            created_at: 0,
            updated_at: 0,
            last_used: None,
        }
    }

    fn key(n: u8) -> String {
        format!(
            "{KEY_PREFIX}{}",
            char::from(b'a' + n).to_string().repeat(43)
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn keys_are_found_in_each_header_and_x_ccflare_key_is_removed() {
        let keys = ClientKeys::default();
        keys.load(vec![stored(1, &key(1), KeyLimits::default())]);
        let bearer = format!("Bearer {}", key(1));
        for pairs in [
            vec![("x-api-key", key(1).as_str())],
            vec![("authorization", bearer.as_str())],
            vec![
                ("x-api-key", "sk-ant-own"),
                ("x-ccflare-key", key(1).as_str()),
            ],
        ] {
            let mut map = headers(&pairs);
            let found = keys.authenticate(&mut map, NOW).unwrap().unwrap();
            assert_eq!(found.id, 1);
            assert!(map.get(KEY_HEADER).is_none());
        }
        // Optional: no key passes, a client's own key is ignored, a wrong ccf_ key is not.
        let mut none = headers(&[("x-api-key", "sk-ant-own-key")]);
        assert_eq!(keys.authenticate(&mut none, NOW), Ok(None));
        let mut wrong = headers(&[("x-api-key", &key(2))]);
        assert_eq!(keys.authenticate(&mut wrong, NOW), Err(KeyRefusal::Unknown));
        keys.set_required(true);
        assert_eq!(keys.authenticate(&mut none, NOW), Err(KeyRefusal::Missing));
    }

    #[test]
    fn disabled_and_expired_keys_are_refused_by_name_and_messages_never_hold_a_key() {
        let keys = ClientKeys::default();
        let mut disabled = stored(1, &key(1), KeyLimits::default());
        disabled.status = KeyStatus::Disabled;
        let mut expired = stored(2, &key(2), KeyLimits::default());
        expired.expires_at = Some(NOW);
        keys.load(vec![disabled, expired]);
        for (n, what) in [(1, "disabled"), (2, "expired")] {
            let refusal = keys.identify(&headers(&[("x-api-key", &key(n))]), NOW);
            let message = refusal.unwrap_err().message();
            assert!(message.contains(what), "{message}");
            assert!(!message.contains(&key(n)[4..12]), "{message}");
        }
    }

    #[test]
    fn budgets_hold_under_a_burst_and_settle_on_real_use() {
        let keys = Arc::new(ClientKeys::default());
        let limits = KeyLimits {
            budget_tokens: Some(1000),
            period: BudgetPeriod::Day,
            ..KeyLimits::default()
        };
        keys.load(vec![stored(1, &key(1), limits)]);
        let known = keys.by_id(1).unwrap();
        // Each reserves 100 output tokens and 1 of input: nine fit, the tenth does not.
        let tickets: Vec<_> = (0..9)
            .map(|_| keys.admit(&known, None, Some(100), 0, NOW).unwrap())
            .collect();
        let refused = keys.admit(&known, None, Some(100), 0, NOW).unwrap_err();
        assert!(refused.message.contains("budget"), "{}", refused.message);
        let (_, end) = BudgetPeriod::Day.bounds(NOW);
        assert_eq!(refused.retry_after_s, (end - NOW + 999) / 1000);
        // Settling at 10 tokens each frees the rest; a dropped ticket releases everything.
        for ticket in tickets {
            ticket.settle(0.0, 10);
        }
        drop(keys.admit(&known, None, Some(100), 0, NOW).unwrap());
        let standing = keys.standing(&known, NOW);
        assert_eq!((standing.used.tokens, standing.reserved.tokens), (90, 0));
        assert_eq!(standing.in_flight, 0);
        // The next day starts unused.
        let next = keys.standing(&known, end);
        assert_eq!(next.used.tokens, 0);
    }

    #[test]
    fn rpm_and_concurrency_limits() {
        let keys = Arc::new(ClientKeys::default());
        let limits = KeyLimits {
            rpm: Some(2),
            max_concurrent: Some(1),
            ..KeyLimits::default()
        };
        keys.load(vec![stored(1, &key(1), limits)]);
        let known = keys.by_id(1).unwrap();
        let first = keys.admit(&known, None, None, 0, NOW).unwrap();
        let busy = keys.admit(&known, None, None, 0, NOW).unwrap_err();
        assert!(busy.message.contains("concurrent"), "{}", busy.message);
        first.settle(0.0, 0);
        keys.admit(&known, None, None, 0, NOW + 1000)
            .unwrap()
            .settle(0.0, 0);
        let minute = keys.admit(&known, None, None, 0, NOW + 2000).unwrap_err();
        assert!(minute.message.contains("per minute"), "{}", minute.message);
        assert_eq!(minute.retry_after_s, 58);
        keys.admit(&known, None, None, 0, NOW + MINUTE_MS).unwrap();
    }
}
