//! Subscription-style quota windows (the window mode): a credential given a window with
//! [`crate::MockUpstream::set_window`] has a budget of tokens per five hours, as a Pro or Max
//! plan has, and every Messages answer of it carries the unified headers of protocol doc §3.2
//! computed from what it used: `-5h-utilization` (two decimals, as captured), the reset in epoch
//! seconds, `allowed_warning` from 75 %. A request that does not fit in what is left is refused
//! with the captured `rejected` 429 and a `retry-after` of the hours until the reset, and the
//! window stays rejected (locked out) until that reset: one oversized request costs the whole
//! window, which is what makes a router that guesses wrong pay.
//!
//! What a request costs the window is an assumption (the API does not publish it): uncached
//! input + cache writes + output + a tenth of the cache reads ([`CACHE_READ_WEIGHT`]).
//!
//! Prompt caching is modelled per conversation (the `x-claude-code-session-id` header): the
//! account that served a conversation's last turn holds its whole prompt (body bytes / 4
//! tokens) as a cached prefix; the next turn there reads that prefix and writes only what is
//! new. A turn sent to another account writes the whole prompt again; the prefix it could have
//! read is counted as cache re-created by a move ([`CacheReport`]). Only the last account's
//! cache is kept, and it does not expire: a simulated run lasts minutes.

use std::collections::HashMap;

use crate::sse::Usage;

/// The share of a cache read that counts against a window, in tenths (see the module doc).
pub const CACHE_READ_WEIGHT: f64 = 0.1;
/// A window's length: five hours.
pub const WINDOW_SECONDS: u64 = 5 * 3600;
/// The utilisation from which answers say `allowed_warning`.
const WARNING_AT: f64 = 0.75;

/// One credential's window as a test or the simulation reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowReport {
    pub credential: String,
    pub size_tokens: u64,
    /// Tokens counted against the current window.
    pub used_tokens: u64,
    /// Whether the window is rejected (locked until its reset).
    pub rejected: bool,
    /// How many times a window of this credential went to `rejected`.
    pub rejections: u64,
    /// Requests the window served and refused.
    pub served: u64,
    pub refused: u64,
    pub reset_epoch: u64,
}

/// What moves of conversations between accounts cost in prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Turns served by another account than the conversation's previous turn.
    pub moves: u64,
    /// Cached prefix tokens written again because of those moves.
    pub recreated_tokens: u64,
}

/// The unified headers one answer carries.
#[derive(Debug, Clone)]
pub(crate) struct WindowHeaders {
    pub(crate) utilization: f64,
    pub(crate) reset_epoch: u64,
}

/// What the window says of one Messages request.
pub(crate) enum Charge {
    /// The credential has no window: the mock's usual answers.
    Untracked,
    /// Served; the usage to report and the headers to send.
    Served {
        usage: Usage,
        headers: WindowHeaders,
    },
    /// Refused: the window is (now) rejected until `reset_epoch`.
    Refused { reset_epoch: u64 },
}

struct Window {
    size: u64,
    used: u64,
    reset_epoch: u64,
    rejected: bool,
    rejections: u64,
    served: u64,
    refused: u64,
}

struct Conversation {
    account: String,
    prefix: u64,
}

#[derive(Default)]
pub(crate) struct Windows {
    windows: HashMap<String, Window>,
    conversations: HashMap<String, Conversation>,
    cache: CacheReport,
}

impl Windows {
    pub(crate) fn set(&mut self, credential: &str, size_tokens: u64, now_epoch: u64) {
        self.windows.insert(
            credential.to_owned(),
            Window {
                size: size_tokens.max(1),
                used: 0,
                reset_epoch: now_epoch + WINDOW_SECONDS,
                rejected: false,
                rejections: 0,
                served: 0,
                refused: 0,
            },
        );
    }

    pub(crate) fn reports(&self) -> Vec<WindowReport> {
        let mut reports: Vec<WindowReport> = self
            .windows
            .iter()
            .map(|(credential, w)| WindowReport {
                credential: credential.clone(),
                size_tokens: w.size,
                used_tokens: w.used,
                rejected: w.rejected,
                rejections: w.rejections,
                served: w.served,
                refused: w.refused,
                reset_epoch: w.reset_epoch,
            })
            .collect();
        reports.sort_by(|a, b| a.credential.cmp(&b.credential));
        reports
    }

    pub(crate) fn cache(&self) -> CacheReport {
        self.cache
    }

    /// Charges one request of `body_len` bytes answered with `output_tokens` to the window of
    /// `credential`, for the conversation `session` (if any).
    pub(crate) fn charge(
        &mut self,
        credential: &str,
        session: Option<&str>,
        body_len: usize,
        output_tokens: u64,
        now_epoch: u64,
    ) -> Charge {
        let Some(window) = self.windows.get_mut(credential) else {
            return Charge::Untracked;
        };
        while now_epoch >= window.reset_epoch {
            window.reset_epoch += WINDOW_SECONDS;
            window.used = 0;
            window.rejected = false;
        }
        let prompt = (body_len as u64 / 4).max(1);
        let held = session.and_then(|key| self.conversations.get(key));
        let read = match held {
            Some(c) if c.account == credential => c.prefix.min(prompt - 1),
            _ => 0,
        };
        let moved = held.filter(|c| c.account != credential).map(|c| c.prefix);
        let write = prompt - read - 1;
        let usage = Usage {
            input_tokens: 1,
            cache_creation_input_tokens: write,
            cache_read_input_tokens: read,
            ephemeral_5m_input_tokens: write,
            ephemeral_1h_input_tokens: 0,
            output_tokens,
            web_search_requests: 0,
        };
        let cost = 1 + write + output_tokens + (read as f64 * CACHE_READ_WEIGHT).round() as u64;
        if window.rejected || window.used + cost > window.size {
            if !window.rejected {
                window.rejected = true;
                window.rejections += 1;
            }
            window.refused += 1;
            return Charge::Refused {
                reset_epoch: window.reset_epoch,
            };
        }
        window.used += cost;
        window.served += 1;
        if let Some(prefix) = moved {
            self.cache.moves += 1;
            self.cache.recreated_tokens += prefix.min(prompt);
        }
        if let Some(key) = session {
            self.conversations.insert(
                key.to_owned(),
                Conversation {
                    account: credential.to_owned(),
                    prefix: prompt,
                },
            );
        }
        Charge::Served {
            usage,
            headers: WindowHeaders {
                utilization: window.used as f64 / window.size as f64,
                reset_epoch: window.reset_epoch,
            },
        }
    }
}

impl WindowHeaders {
    /// `allowed` or, from 75 %, `allowed_warning`.
    pub(crate) fn status(&self) -> &'static str {
        if self.utilization >= WARNING_AT {
            "allowed_warning"
        } else {
            "allowed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn served(charge: Charge) -> (Usage, WindowHeaders) {
        match charge {
            Charge::Served { usage, headers } => (usage, headers),
            _ => panic!("expected the request to be served"),
        }
    }

    #[test]
    fn a_conversation_reads_its_prefix_where_it_stays_and_rewrites_it_when_moved() {
        let mut windows = Windows::default();
        windows.set("a", 100_000, NOW);
        windows.set("b", 100_000, NOW);
        let (usage, headers) = served(windows.charge("a", Some("s"), 40_000, 100, NOW));
        assert_eq!(
            (
                usage.cache_read_input_tokens,
                usage.cache_creation_input_tokens
            ),
            (0, 9_999)
        );
        // 1 + 9,999 written + 100 out.
        assert_eq!(windows.reports()[0].used_tokens, 10_100);
        assert!((headers.utilization - 0.101).abs() < 1e-9);
        let (usage, _) = served(windows.charge("a", Some("s"), 48_000, 100, NOW));
        assert_eq!(
            (
                usage.cache_read_input_tokens,
                usage.cache_creation_input_tokens
            ),
            (10_000, 1_999)
        );
        assert_eq!(windows.cache(), CacheReport::default());
        let (usage, _) = served(windows.charge("b", Some("s"), 52_000, 100, NOW));
        assert_eq!(usage.cache_read_input_tokens, 0);
        assert_eq!(
            windows.cache(),
            CacheReport {
                moves: 1,
                recreated_tokens: 12_000
            }
        );
    }

    #[test]
    fn a_request_that_does_not_fit_rejects_the_window_until_its_reset() {
        let mut windows = Windows::default();
        windows.set("a", 10_000, NOW);
        served(windows.charge("a", None, 32_000, 0, NOW));
        assert!(matches!(
            windows.charge("a", None, 8_008, 0, NOW),
            Charge::Refused { reset_epoch } if reset_epoch == NOW + WINDOW_SECONDS
        ));
        // Locked: even a tiny request is refused now.
        assert!(matches!(
            windows.charge("a", None, 8, 0, NOW + 60),
            Charge::Refused { .. }
        ));
        let report = &windows.reports()[0];
        assert_eq!(
            (report.rejected, report.rejections, report.refused),
            (true, 1, 2)
        );
        // The reset opens it again, empty.
        let (_, headers) = served(windows.charge("a", None, 8, 0, NOW + WINDOW_SECONDS));
        assert!(headers.utilization < 0.01);
        assert_eq!(headers.reset_epoch, NOW + 2 * WINDOW_SECONDS);
        assert!(matches!(
            windows.charge("x", None, 8, 0, NOW),
            Charge::Untracked
        ));
    }
}
