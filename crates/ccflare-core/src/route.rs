//! Why a request went where it went (issue 16): the chosen account and how it was chosen, and
//! for the first few other accounts (in the stable order) why they were not. Built by the pool
//! with every selection without allocating (names are shared `Arc<str>`s, the list a fixed
//! array), and carried so by the request's record ([`Explanation::Route`]): it is rendered as
//! one line only where someone reads it — the `x-ccflare-route` header a client asked for, the
//! storage writer binding the row (off the request path), the live feed and the API's views.

use crate::Millis;
use crate::config::Strategy;
use crate::time::format_rfc3339;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// How many skipped accounts an explanation names; the others are counted.
pub const EXPLAINED: usize = 3;

/// Why a pinned conversation left its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveReason {
    /// Its account is benched, paused or invalid.
    NotRoutable,
    /// This request already failed there.
    Tried,
    /// The request does not fit what the window has left.
    NoRoom,
    /// The window will not carry a few more turns of its conversations; another will.
    Pressed,
    /// The forecast fills the window within minutes and the cache had expired anyway.
    Exhausting,
}

/// How the chosen account was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chosen {
    /// The session's pinned account.
    Pinned,
    /// The strategy's pick (no pin, or a pin that did not hold).
    Strategy(Strategy),
    /// `headroom`: the most tokens left per conversation among the accounts it fits.
    Placed,
    /// `headroom`: the conversation moved from its account.
    Moved(MoveReason),
}

/// Why an account was not chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Skip {
    /// This request already tried it.
    Tried,
    Paused,
    Invalid,
    RateLimited {
        until: Millis,
    },
    Overloaded {
        until: Millis,
    },
    /// Warned (`allowed_warning`): new picks go elsewhere while another account can take them.
    Warned,
    /// Its window's known room cannot take the request.
    NoRoom {
        left: u64,
        need: u64,
    },
    /// Routable, but the strategy ranked another first.
    Ranked,
}

/// What the forecast said of the chosen account (`headroom` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    pub tokens_left: Option<u64>,
    pub size_tokens: Option<u64>,
    pub points: u32,
    pub span_ms: i64,
    pub exhausts_at: Option<Millis>,
}

/// One routing decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// The account chosen (`None`: none could be).
    pub account: Option<Arc<str>>,
    pub chosen: Option<Chosen>,
    pub basis: Option<Basis>,
    /// The first [`EXPLAINED`] accounts not chosen, in the stable order.
    pub skipped: [Option<(Arc<str>, Skip)>; EXPLAINED],
    /// Accounts not chosen beyond those.
    pub more_skipped: u32,
}

impl Route {
    /// Names `name` as skipped for `reason`, or counts it once [`EXPLAINED`] are named.
    pub fn skip(&mut self, name: &Arc<str>, reason: Skip) {
        match self.skipped.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((Arc::clone(name), reason)),
            None => self.more_skipped += 1,
        }
    }

    /// Whether the request's session left the account it was pinned to (its prompt cache is
    /// written again on the new one).
    pub fn moved(&self) -> bool {
        matches!(self.chosen, Some(Chosen::Moved(_)))
    }
}

/// A request's routing explanation as its record carries it: the pool's [`Route`] as built on
/// the request path (no text yet), or the text read back from a stored row or a spill file.
/// Its serde form is the text, so the spill file and the JSON views hold the line.
#[derive(Debug, Clone)]
pub enum Explanation {
    Route(Route),
    Text(String),
}

impl Explanation {
    /// The line, borrowed when it is text already.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Explanation::Route(route) => Cow::Owned(route.to_string()),
            Explanation::Text(text) => Cow::Borrowed(text),
        }
    }

    /// The line, owned (a text is handed over as it is).
    pub fn into_text(self) -> String {
        match self {
            Explanation::Route(route) => route.to_string(),
            Explanation::Text(text) => text,
        }
    }

    /// Whether the explanation says the request's session moved (known only while it is a
    /// [`Route`]; the record's `moved` flag keeps it beyond that).
    pub fn moved(&self) -> bool {
        matches!(self, Explanation::Route(route) if route.moved())
    }
}

impl From<Route> for Explanation {
    fn from(route: Route) -> Explanation {
        Explanation::Route(route)
    }
}

impl From<String> for Explanation {
    fn from(text: String) -> Explanation {
        Explanation::Text(text)
    }
}

impl From<&str> for Explanation {
    fn from(text: &str) -> Explanation {
        Explanation::Text(text.to_owned())
    }
}

impl PartialEq for Explanation {
    /// Two explanations are equal when they read the same (a route and its stored line are).
    fn eq(&self, other: &Explanation) -> bool {
        match (self, other) {
            (Explanation::Route(a), Explanation::Route(b)) => a == b,
            (Explanation::Text(a), Explanation::Text(b)) => a == b,
            _ => self.text() == other.text(),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Route(route) => fmt::Display::fmt(route, f),
            Explanation::Text(text) => f.write_str(text),
        }
    }
}

impl Serialize for Explanation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Explanation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Explanation, D::Error> {
        String::deserialize(deserializer).map(Explanation::Text)
    }
}

/// `12.9k`, `1.1M`, `950`.
fn tokens(n: u64) -> String {
    match n {
        0..=9_999 if n < 1_000 => n.to_string(),
        0..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

impl fmt::Display for MoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveReason::NotRoutable => "its account is not routable",
            MoveReason::Tried => "its account failed this request",
            MoveReason::NoRoom => "no room left on its account",
            MoveReason::Pressed => "its account's window is nearly full and this one is not",
            MoveReason::Exhausting => "its account fills within minutes and its cache expired",
        })
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Tried => f.write_str("already tried"),
            Skip::Paused => f.write_str("paused"),
            Skip::Invalid => f.write_str("needs re-login or a new key"),
            Skip::RateLimited { until } => {
                write!(f, "rate limited until {}", format_rfc3339(*until))
            }
            Skip::Overloaded { until } => write!(f, "overloaded until {}", format_rfc3339(*until)),
            Skip::Warned => f.write_str("near its limit (allowed_warning)"),
            Skip::NoRoom { left, need } => {
                write!(
                    f,
                    "no room ({} left < {} needed)",
                    tokens(*left),
                    tokens(*need)
                )
            }
            Skip::Ranked => f.write_str("ranked lower"),
        }
    }
}

impl fmt::Display for Route {
    /// `max: placed (812.0k left of 1.1M; 9 points over 41 s); skipped pro: no room (3.1k left
    /// < 12.9k needed), other: ranked lower`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.account, self.chosen) {
            (Some(account), Some(chosen)) => {
                write!(f, "{account}: ")?;
                match chosen {
                    Chosen::Pinned => f.write_str("pinned session")?,
                    Chosen::Strategy(strategy) => write!(f, "{strategy}")?,
                    Chosen::Placed => f.write_str("placed (most tokens left per session)")?,
                    Chosen::Moved(reason) => write!(f, "session moved ({reason})")?,
                }
                if let Some(basis) = self.basis {
                    let left = basis.tokens_left.map_or("?".to_owned(), tokens);
                    let size = basis.size_tokens.map_or("?".to_owned(), tokens);
                    write!(
                        f,
                        " [{left} left of {size}; {} points over {} s",
                        basis.points,
                        basis.span_ms / 1000
                    )?;
                    if let Some(at) = basis.exhausts_at {
                        write!(f, "; full at {}", format_rfc3339(at))?;
                    }
                    f.write_str("]")?;
                }
            }
            _ => f.write_str("no account")?,
        }
        let mut first = true;
        for (name, reason) in self.skipped.iter().flatten() {
            f.write_str(if first { "; skipped " } else { ", " })?;
            first = false;
            write!(f, "{name}: {reason}")?;
        }
        if self.more_skipped > 0 {
            write!(f, " (+{} more)", self.more_skipped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_as_a_person_would_say_it() {
        let until = 1_795_687_200_000;
        let cases: [(Skip, &str); 8] = [
            (Skip::Tried, "already tried"),
            (Skip::Paused, "paused"),
            (Skip::Invalid, "needs re-login or a new key"),
            (
                Skip::RateLimited { until },
                "rate limited until 2026-11-26T10:00:00.000Z",
            ),
            (
                Skip::Overloaded { until },
                "overloaded until 2026-11-26T10:00:00.000Z",
            ),
            (Skip::Warned, "near its limit (allowed_warning)"),
            (
                Skip::NoRoom {
                    left: 3_100,
                    need: 12_900,
                },
                "no room (3.1k left < 12.9k needed)",
            ),
            (Skip::Ranked, "ranked lower"),
        ];
        for (skip, text) in cases {
            assert_eq!(skip.to_string(), text);
        }
    }

    #[test]
    fn a_route_is_one_line_naming_the_first_skipped_and_counting_the_rest() {
        let name = |n: &str| -> Arc<str> { Arc::from(n) };
        let mut route = Route {
            account: Some(name("max")),
            chosen: Some(Chosen::Moved(MoveReason::NoRoom)),
            basis: Some(Basis {
                tokens_left: Some(812_000),
                size_tokens: Some(1_100_000),
                points: 9,
                span_ms: 41_000,
                exhausts_at: None,
            }),
            ..Route::default()
        };
        for (n, skip) in ["pro", "a", "b", "c"].iter().zip([
            Skip::NoRoom {
                left: 950,
                need: 5_000,
            },
            Skip::Tried,
            Skip::Ranked,
            Skip::Ranked,
        ]) {
            route.skip(&name(n), skip);
        }
        assert_eq!(
            route.to_string(),
            "max: session moved (no room left on its account) [812.0k left of 1.1M; 9 points \
             over 41 s]; skipped pro: no room (950 left < 5.0k needed), a: already tried, b: \
             ranked lower (+1 more)"
        );
        let none = Route::default();
        assert_eq!(none.to_string(), "no account");
    }

    #[test]
    fn an_explanation_serializes_as_its_line_and_reads_back_as_text() {
        let route = Route {
            account: Some(Arc::from("b")),
            chosen: Some(Chosen::Moved(MoveReason::Tried)),
            ..Route::default()
        };
        let line = "b: session moved (its account failed this request)";
        let built = Explanation::from(route);
        assert!(built.moved());
        let json = serde_json::to_string(&built).unwrap();
        assert_eq!(json, format!("\"{line}\""));
        let read: Explanation = serde_json::from_str(&json).unwrap();
        assert_eq!(read, Explanation::Text(line.to_owned()));
        assert_eq!(read, built);
        assert!(!read.moved());
    }
}
