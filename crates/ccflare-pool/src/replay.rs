//! Replay (issue 16): recorded traffic fed through the real pool with a simulated clock, once
//! per strategy, to see which would have served it best. Pure and single-threaded: the same
//! input gives the same report.
//!
//! Each account gets a five-hour window of a given size in tokens (the caller infers it), which
//! starts at its first use and resets five hours later. A request costs it what the mock's
//! window mode charges (`window_cost`): the cached prefix the conversation left on that account
//! within the last five minutes is read (a tenth), the rest of the prompt is written, plus the
//! answer. A request that does not fit gets a `rejected` 429 that locks the window until its
//! reset, and the request fails over as the proxy would; when no account is left the client
//! sees a 429. The prompt is the recorded input + cache read + cache write, the answer the
//! recorded output; `max_tokens` is not recorded, so the placement is told the answer's real
//! size (a little kinder to `headroom` than live traffic).

use crate::forecast::CACHE_READ_WEIGHT;
use crate::placement::Demand;
use crate::pool::{Pool, PoolConfig};
use ccflare_core::config::Strategy;
use ccflare_core::ratelimit::{RateLimitSnapshot, Verdict};
use ccflare_core::{Account, AccountId, AccountKind, Millis, Secret, Usage};
use std::collections::HashMap;

/// A window's length.
const WINDOW_MS: i64 = 5 * 3_600_000;
/// How long a prompt cache lives after its last use.
const CACHE_TTL_MS: i64 = 5 * 60_000;

/// One account of the replay and the size of its five-hour window.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayAccount {
    pub id: AccountId,
    pub name: String,
    pub window_tokens: u64,
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRequest {
    pub at: Millis,
    pub session: Option<String>,
    pub usage: Usage,
}

/// What one strategy would have done with the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    pub strategy: Strategy,
    pub requests: u64,
    pub served: u64,
    /// Requests no account could take: the client would have seen a 429.
    pub client_429s: u64,
    pub rejected_windows: u64,
    /// Turns served by another account than the conversation's warm cache.
    pub moves: u64,
    pub cache_recreated: u64,
    /// Highest minus lowest of the accounts' peak utilisation.
    pub spread: f64,
}

struct Window {
    size: u64,
    start: Option<Millis>,
    used: u64,
    rejected: bool,
    peak: f64,
}

impl Window {
    fn at(&mut self, now: Millis) {
        if self.start.is_some_and(|start| now >= start + WINDOW_MS) {
            self.start = None;
            self.used = 0;
            self.rejected = false;
        }
    }

    fn reset_at(&self, now: Millis) -> Millis {
        self.start.unwrap_or(now) + WINDOW_MS
    }

    fn snapshot(&self, status: &str, utilization: f64, now: Millis) -> RateLimitSnapshot {
        let reset = self.reset_at(now);
        RateLimitSnapshot {
            unified_status: Some(status.to_owned()),
            unified_5h_status: Some(status.to_owned()),
            unified_5h_utilization: Some((utilization * 100.0).round() / 100.0),
            unified_5h_reset: Some(reset),
            unified_reset: Some(reset),
            unified_representative_claim: Some("five_hour".to_owned()),
            seen_at: now,
            ..Default::default()
        }
    }
}

/// A conversation's cache: on which account, how many tokens, when last used.
struct Cache {
    account: AccountId,
    prefix: u64,
    at: Millis,
}

/// The accounts as the pool takes them from storage.
fn records(accounts: &[ReplayAccount]) -> Vec<Account> {
    accounts
        .iter()
        .map(|account| simulated_subscription(account.id, &account.name))
        .collect()
}

/// An active subscription account for a simulation (the replay, the benchmark's in-process
/// check): what the pool needs of a stored OAuth account, with a credential that is a name,
/// never a token.
pub fn simulated_subscription(id: AccountId, name: &str) -> Account {
    let credential = Secret::new(format!("sk-ant-oat01-simulated-{name}"));
    Account::new(id, name, AccountKind::OAuth, credential)
}

/// Replays `requests` (in time order) through a pool of `accounts` with `strategy`.
pub fn replay(
    accounts: &[ReplayAccount],
    requests: &[ReplayRequest],
    strategy: Strategy,
    session_timeout_ms: i64,
) -> ReplayReport {
    let mut pool = Pool::new(PoolConfig {
        strategy,
        session_timeout_ms,
    });
    let start = requests.first().map_or(0, |r| r.at);
    pool.sync(records(accounts), start);
    let mut windows: HashMap<AccountId, Window> = accounts
        .iter()
        .map(|account| {
            let window = Window {
                size: account.window_tokens.max(1),
                start: None,
                used: 0,
                rejected: false,
                peak: 0.0,
            };
            (account.id, window)
        })
        .collect();
    let mut caches: HashMap<&str, Cache> = HashMap::new();
    let mut report = ReplayReport {
        strategy,
        requests: 0,
        served: 0,
        client_429s: 0,
        rejected_windows: 0,
        moves: 0,
        cache_recreated: 0,
        spread: 0.0,
    };
    let mut last_sync = start;
    for request in requests {
        let now = request.at;
        // The server syncs every second; here, whenever a second has passed, so that expired
        // pins leave as they would.
        if now - last_sync >= 1000 {
            pool.sync(records(accounts), now);
            last_sync = now;
        }
        report.requests += 1;
        let usage = &request.usage;
        let prompt = usage
            .input_tokens
            .saturating_add(usage.cache_read_input_tokens)
            .saturating_add(usage.cache_creation_input_tokens)
            .max(1);
        let session = request.session.as_deref();
        let mut tried = Vec::new();
        loop {
            let demand = Demand {
                session,
                tried: &tried,
                prompt_tokens: prompt,
                max_tokens: usage.output_tokens,
            };
            let pick = match pool.select_for(now, &demand) {
                Ok(pick) => pick,
                Err(_) => {
                    report.client_429s += 1;
                    break;
                }
            };
            tried.push(pick.id);
            let window = windows
                .get_mut(&pick.id)
                .expect("every account has a window");
            window.at(now);
            let cache = session.and_then(|key| caches.get(key));
            let warm = cache.filter(|c| now - c.at < CACHE_TTL_MS);
            let read = warm
                .filter(|c| c.account == pick.id)
                .map_or(0, |c| c.prefix.min(prompt));
            let write = prompt - read;
            let cost = write
                .saturating_add(usage.output_tokens)
                .saturating_add((read as f64 * CACHE_READ_WEIGHT).round() as u64);
            if window.rejected || window.used + cost > window.size {
                if !window.rejected {
                    window.rejected = true;
                    report.rejected_windows += 1;
                }
                let reset = window.reset_at(now);
                let snapshot = window.snapshot("rejected", 1.01, now);
                pool.report(
                    pick.id,
                    Verdict::RateLimited { until: Some(reset) },
                    Some(snapshot),
                    now,
                );
                pool.finish(pick.id, pick.reserved, session, None, now);
                continue;
            }
            window.start.get_or_insert(now);
            window.used += cost;
            let utilization = window.used as f64 / window.size as f64;
            window.peak = window.peak.max(utilization);
            let status = if utilization >= 0.75 {
                "allowed_warning"
            } else {
                "allowed"
            };
            let snapshot = window.snapshot(status, utilization, now);
            pool.report(
                pick.id,
                Verdict::Serve { bench_until: None },
                Some(snapshot),
                now,
            );
            let served = Usage {
                cache_read_input_tokens: read,
                cache_creation_input_tokens: write,
                output_tokens: usage.output_tokens,
                ..Usage::default()
            };
            pool.finish(pick.id, pick.reserved, session, Some(&served), now);
            if let Some(moved) = warm.filter(|c| c.account != pick.id) {
                report.moves += 1;
                report.cache_recreated += moved.prefix.min(prompt);
            }
            if let Some(key) = session {
                caches.insert(
                    key,
                    Cache {
                        account: pick.id,
                        prefix: prompt,
                        at: now,
                    },
                );
            }
            report.served += 1;
            break;
        }
    }
    let peaks: Vec<f64> = accounts.iter().map(|a| windows[&a.id].peak).collect();
    if let (Some(max), Some(min)) = (
        peaks.iter().cloned().reduce(f64::max),
        peaks.iter().cloned().reduce(f64::min),
    ) {
        report.spread = max - min;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_795_687_200_000;

    /// Eight conversations of ten growing turns, a minute apart, on a small and a big account.
    fn traffic() -> (Vec<ReplayAccount>, Vec<ReplayRequest>) {
        let accounts = vec![
            ReplayAccount {
                id: AccountId(1),
                name: "small".into(),
                window_tokens: 60_000,
            },
            ReplayAccount {
                id: AccountId(2),
                name: "big".into(),
                window_tokens: 400_000,
            },
        ];
        let mut requests = Vec::new();
        for turn in 0..10u64 {
            for conversation in 0..8u64 {
                requests.push(ReplayRequest {
                    at: T0 + (turn * 8 + conversation) as i64 * 7_000,
                    session: Some(format!("c{conversation}")),
                    usage: Usage {
                        input_tokens: 10,
                        cache_read_input_tokens: 5_000 + turn * 1_500,
                        cache_creation_input_tokens: 1_500,
                        output_tokens: 400,
                        ..Usage::default()
                    },
                });
            }
        }
        (accounts, requests)
    }

    #[test]
    fn the_same_traffic_gives_the_same_report() {
        let (accounts, requests) = traffic();
        for strategy in [Strategy::Session, Strategy::Headroom, Strategy::RoundRobin] {
            let first = replay(&accounts, &requests, strategy, 3_600_000);
            let second = replay(&accounts, &requests, strategy, 3_600_000);
            assert_eq!(first, second, "{strategy}");
            assert_eq!(first.requests, 80);
            assert_eq!(first.served + first.client_429s, 80, "{strategy}");
        }
    }

    #[test]
    fn predictive_placement_rejects_no_window_where_the_reactive_strategy_does() {
        let (accounts, requests) = traffic();
        let session = replay(&accounts, &requests, Strategy::Session, 3_600_000);
        let headroom = replay(&accounts, &requests, Strategy::Headroom, 3_600_000);
        assert!(session.rejected_windows > 0, "{session:?}");
        assert_eq!(headroom.rejected_windows, 0, "{headroom:?}");
        assert!(
            headroom.served >= session.served,
            "{headroom:?} {session:?}"
        );
    }
}
