//! Why a request went where it went (issue 16). The types live in `ccflare-core` (the request's
//! record carries a [`Route`] as built, rendered only where it is read); the pool builds them
//! with every selection and re-exports them, so its callers name them from here as before.

pub use ccflare_core::route::{Basis, Chosen, EXPLAINED, Explanation, MoveReason, Route, Skip};

#[cfg(test)]
mod tests {
    //! Moves under the reactive strategies, through the pool's calls: a conversation whose
    //! live pin did not hold says so; one whose pin expired, or that never had one, does not.

    use super::*;
    use crate::{Pool, PoolConfig};
    use ccflare_core::config::Strategy;
    use ccflare_core::ratelimit::Verdict;
    use ccflare_core::{Account, AccountId, AccountKind, Millis, Secret};

    const T0: Millis = 1_795_687_200_000;
    const TIMEOUT: i64 = 60_000;

    fn pool(strategy: Strategy) -> Pool {
        let mut pool = Pool::new(PoolConfig {
            strategy,
            session_timeout_ms: TIMEOUT,
        });
        let accounts = ["a", "b"]
            .into_iter()
            .zip(1..)
            .map(|(name, id)| {
                let credential = Secret::new(format!("sk-ant-api03-{name}-0123456789abcdef"));
                Account {
                    priority: id,
                    ..Account::new(AccountId(id), name, AccountKind::ApiKey, credential)
                }
            })
            .collect();
        pool.sync(accounts, T0);
        pool
    }

    /// Where the turn went and how, released at once.
    fn turn(pool: &mut Pool, now: Millis, tried: &[AccountId]) -> (String, Option<Chosen>) {
        let pick = pool.select(now, Some("conversation"), tried).unwrap();
        pool.release(pick.id);
        (pick.name.to_string(), pick.route.chosen)
    }

    #[test]
    fn a_reactive_strategy_says_when_a_live_pin_did_not_hold() {
        for strategy in [
            Strategy::Session,
            Strategy::RoundRobin,
            Strategy::LeastRequests,
            Strategy::Priority,
        ] {
            let mut pool = pool(strategy);
            let first = turn(&mut pool, T0, &[]);
            assert_eq!(first, ("a".into(), Some(Chosen::Strategy(strategy))));
            assert_eq!(
                turn(&mut pool, T0 + 1_000, &[]),
                ("a".into(), Some(Chosen::Pinned))
            );
            // A failover past the pinned account (an answer that does not bench it).
            let moved = turn(&mut pool, T0 + 2_000, &[AccountId(1)]);
            assert_eq!(
                moved,
                ("b".into(), Some(Chosen::Moved(MoveReason::Tried))),
                "{strategy}"
            );
            // Now pinned to b; b rate limited: the next turn moves back, and says why.
            let limited = Verdict::RateLimited {
                until: Some(T0 + 3_600_000),
            };
            pool.report(AccountId(2), limited, None, T0 + 3_000);
            let back = turn(&mut pool, T0 + 4_000, &[]);
            assert_eq!(
                back,
                ("a".into(), Some(Chosen::Moved(MoveReason::NotRoutable))),
                "{strategy}"
            );
            assert_eq!(
                Explanation::from(Route {
                    account: Some("a".into()),
                    chosen: back.1,
                    ..Route::default()
                })
                .to_string(),
                "a: session moved (its account is not routable)"
            );
            // A pin left past the session timeout is no move: nothing warm was left there.
            let mut pool = self::pool(strategy);
            turn(&mut pool, T0, &[]);
            let (_, how) = turn(&mut pool, T0 + TIMEOUT, &[AccountId(1)]);
            assert_eq!(how, Some(Chosen::Strategy(strategy)), "{strategy}");
        }
    }
}
