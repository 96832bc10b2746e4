//! The `headroom` strategy's decisions (`placement.rs`) through the pool's public calls: each
//! account's window is taught by answers (`report` with subscription headers, then `finish`
//! with the usage), then a request is placed and the test reads where it went, or why not.

use super::*;

const T0: Millis = 1_795_687_200_000;
const RESET: Millis = T0 + 5 * 3_600_000;

fn account(id: i64, name: &str) -> Account {
    let credential = Secret::new(format!("sk-ant-oat01-{name}-0123456789abcdef"));
    Account::new(AccountId(id), name, AccountKind::OAuth, credential)
}

fn pool(names: &[&str]) -> Pool {
    let mut pool = Pool::new(PoolConfig {
        strategy: Strategy::Headroom,
        session_timeout_ms: 3_600_000,
    });
    let records = names
        .iter()
        .zip(1..)
        .map(|(name, id)| account(id, name))
        .collect();
    pool.sync(records, T0);
    pool
}

fn id_of(pool: &Pool, name: &str) -> AccountId {
    pool.views(T0)
        .iter()
        .find(|view| &*view.name == name)
        .map(|view| view.id)
        .unwrap()
}

/// An answer that cost its window `tokens`, 1,000 of them its own (the `max_tokens` of
/// [`request`]: the answer-length estimate stays at it).
fn usage(tokens: u64) -> Usage {
    Usage {
        input_tokens: tokens.saturating_sub(1_000),
        output_tokens: tokens.min(1_000),
        ..Usage::default()
    }
}

/// An answer of `name` that cost `tokens` and left its window at `utilization`.
fn answer(pool: &mut Pool, name: &str, utilization: f64, tokens: u64) {
    let id = id_of(pool, name);
    let snapshot = RateLimitSnapshot {
        unified_status: Some("allowed".into()),
        unified_5h_utilization: Some(utilization),
        unified_5h_reset: Some(RESET),
        seen_at: T0,
        ..Default::default()
    };
    pool.report(id, Verdict::Serve { bench_until: None }, Some(snapshot), T0);
    pool.finish(id, 0, None, Some(&usage(tokens)), T0);
}

/// Teaches `name` a window of `size` tokens now at `utilization` (two answers 10 % apart).
fn teach(pool: &mut Pool, name: &str, size: u64, utilization: f64) {
    let step = size / 10;
    answer(pool, name, utilization - 0.1, step);
    answer(pool, name, utilization, step);
}

fn request(session: Option<&str>, prompt_tokens: u64) -> Demand<'_> {
    Demand {
        session,
        tried: &[],
        prompt_tokens,
        max_tokens: 1_000,
    }
}

/// Where the request goes (`Err` names why not), its attempt ended at once without usage.
fn place(pool: &mut Pool, demand: &Demand) -> Result<String, String> {
    match pool.select_for(T0, demand) {
        Ok(pick) => {
            pool.finish(pick.id, pick.reserved, None, None, T0);
            Ok(pick.name.to_string())
        }
        Err(unavailable) => Err(format!(
            "{:?} retry@{:?}",
            unavailable.reason,
            unavailable.retry_at.map(|at| (at - T0) / 1000)
        )),
    }
}

#[test]
fn new_conversations_go_where_most_tokens_are_left_not_the_biggest_fraction() {
    // (small's size and use, large's size and use, where a new conversation goes)
    let cases = [
        // 50k left against 100k left: tokens win over fractions (50 % vs 10 % left).
        ((100_000, 0.5), (1_000_000, 0.9), "large"),
        ((100_000, 0.2), (1_000_000, 0.95), "small"),
        ((100_000, 0.2), (1_000_000, 0.5), "large"),
    ];
    for ((small_size, small_use), (large_size, large_use), expected) in cases {
        let mut pool = pool(&["small", "large"]);
        teach(&mut pool, "small", small_size, small_use);
        teach(&mut pool, "large", large_size, large_use);
        assert_eq!(
            place(&mut pool, &request(Some("new"), 5_000)).as_deref(),
            Ok(expected),
            "{small_size} at {small_use}, {large_size} at {large_use}"
        );
    }
}

#[test]
fn conversations_already_pinned_count_against_an_account() {
    let mut pool = pool(&["a", "b"]);
    teach(&mut pool, "a", 300_000, 0.2);
    teach(&mut pool, "b", 200_000, 0.2);
    // a: 240k left; b: 160k. One goes to a; two to b (a has 120k per conversation then,
    // against b's 160k); three to a (120k against 80k).
    let placed: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|key| place(&mut pool, &request(Some(key), 1_000)).unwrap())
        .collect();
    assert_eq!(placed, ["a", "b", "a"]);
}

#[test]
fn a_request_goes_only_where_it_fits_and_nowhere_is_an_immediate_refusal() {
    let mut pool = pool(&["a", "b"]);
    teach(&mut pool, "a", 100_000, 0.9);
    teach(&mut pool, "b", 50_000, 0.8);
    // a has 9.5k left, b 9.75k (each half a point of rounding less than the headers say):
    // 8.7k + 1k fits, 8.8k + 1k does not.
    assert_eq!(place(&mut pool, &request(None, 8_700)).as_deref(), Ok("b"));
    assert_eq!(
        place(&mut pool, &request(None, 8_800)),
        Err(format!(
            "NoRoom {{ tokens: 9800 }} retry@Some({})",
            5 * 3600
        ))
    );
}

#[test]
fn an_answer_is_expected_as_long_as_recent_answers_not_its_max_tokens() {
    // (the two teaching answers' lengths, the request's prompt and max_tokens, where it goes);
    // `a` is 100k at 90 %: 9.5k left by the rounding-safe count (half a point less).
    let cases = [
        // No answer with a length seen yet: the whole max_tokens is reserved.
        ((0, 0), 8_500, 32_000, false),
        // Answers of up to 600 tokens: 8.5k + 600 fits.
        ((300, 600), 8_500, 32_000, true),
        // The longest recent answer counts: 9k + 600 does not fit.
        ((300, 600), 9_000, 32_000, false),
        // Never more than the request's own max_tokens: 9.4k + 100 fits.
        ((300, 600), 9_400, 100, true),
    ];
    for ((first, second), prompt, max_tokens, fits) in cases {
        let mut pool = pool(&["a"]);
        let id = id_of(&pool, "a");
        for (utilization, output) in [(0.8, first), (0.9, second)] {
            let snapshot = RateLimitSnapshot {
                unified_5h_utilization: Some(utilization),
                unified_5h_reset: Some(RESET),
                seen_at: T0,
                ..Default::default()
            };
            pool.report(id, Verdict::Serve { bench_until: None }, Some(snapshot), T0);
            let answer = Usage {
                input_tokens: 10_000 - output,
                output_tokens: output,
                ..Usage::default()
            };
            pool.finish(id, 0, None, Some(&answer), T0);
        }
        let demand = Demand {
            session: None,
            tried: &[],
            prompt_tokens: prompt,
            max_tokens,
        };
        let placed = place(&mut pool, &demand);
        assert_eq!(
            placed.as_deref().map_err(|_| ()),
            if fits { Ok("a") } else { Err(()) },
            "answers {first} and {second}, prompt {prompt}, max_tokens {max_tokens}"
        );
    }
}

#[test]
fn attempts_in_flight_reserve_their_size() {
    let mut pool = pool(&["a"]);
    teach(&mut pool, "a", 100_000, 0.8);
    // 20k left: the first 12k request holds 12k of it while in flight.
    let first = pool.select_for(T0, &request(None, 11_000)).unwrap();
    assert_eq!(first.reserved, 12_000);
    assert!(matches!(
        pool.select_for(T0, &request(None, 11_000)),
        Err(Unavailable {
            reason: UnavailableReason::NoRoom { .. },
            ..
        })
    ));
    pool.finish(first.id, first.reserved, None, None, T0);
    assert!(pool.select_for(T0, &request(None, 11_000)).is_ok());
}

/// A conversation on `a` with a warm cache of `cached` tokens (20k: 2k of window cost to read),
/// `a` at `a_use` of 100k and `b` at `b_use` of 1M; where its next turn (a prompt of `prompt`
/// tokens) goes.
fn next_turn(cached: u64, a_use: f64, b_use: f64, prompt: u64) -> String {
    // The conversation starts on `a` while it is the only account.
    let mut pool = pool(&["a"]);
    teach(&mut pool, "a", 100_000, a_use - 0.05);
    let pick = pool.select_for(T0, &request(Some("talk"), 1_000)).unwrap();
    // Its answer: `cached` tokens in the cache (5,000 of window cost), `a` at `a_use`.
    let snapshot = RateLimitSnapshot {
        unified_5h_utilization: Some(a_use),
        unified_5h_reset: Some(RESET),
        seen_at: T0,
        ..Default::default()
    };
    pool.report(
        pick.id,
        Verdict::Serve { bench_until: None },
        Some(snapshot),
        T0,
    );
    let cache = Usage {
        input_tokens: 3_000,
        cache_read_input_tokens: cached,
        ..Usage::default()
    };
    pool.finish(pick.id, pick.reserved, Some("talk"), Some(&cache), T0);
    pool.sync(vec![account(1, "a"), account(2, "b")], T0);
    teach(&mut pool, "b", 1_000_000, b_use);
    place(&mut pool, &request(Some("talk"), prompt)).unwrap()
}

#[test]
fn a_pinned_conversation_moves_only_when_staying_is_worse() {
    // (cached prefix, a's use, b's use, next prompt, where it goes)
    let cases = [
        // Fits easily: stays with its cache.
        (20_000, 0.30, 0.10, 21_500, "a"),
        // 4.5k left on a (half a point of rounding less than 5 %): the warm turn costs 1.5k
        // new + 2k read + 1k answer = 4.5k: it fits only because of the cache, and would stay,
        // but a is pressed and b can take it: it moves.
        (20_000, 0.95, 0.10, 21_500, "b"),
        // 4.5k left on a, nothing else has room for a cold 22.5k turn: it stays.
        (20_000, 0.95, 0.99, 21_500, "a"),
        // 2.5k left on a: the turn cannot fit, it moves to b.
        (20_000, 0.97, 0.10, 21_500, "b"),
    ];
    for (cached, a_use, b_use, prompt, expected) in cases {
        assert_eq!(
            next_turn(cached, a_use, b_use, prompt),
            expected,
            "cached {cached}, a at {a_use}, b at {b_use}, prompt {prompt}"
        );
    }
}

#[test]
fn pins_are_counted_per_account_as_sessions_come_and_move() {
    let mut pool = pool(&["a", "b"]);
    teach(&mut pool, "a", 100_000, 0.1);
    teach(&mut pool, "b", 100_000, 0.1);
    place(&mut pool, &request(Some("one"), 1_000)).unwrap();
    place(&mut pool, &request(Some("two"), 1_000)).unwrap();
    let pins = |pool: &Pool| -> Vec<u32> { pool.accounts.iter().map(|a| a.pins).collect() };
    assert_eq!(pins(&pool), [1, 1]);
    // The sync drops expired pins and their counts with them.
    pool.sync(vec![account(1, "a"), account(2, "b")], T0 + 3_600_000);
    assert_eq!(pins(&pool), [0, 0]);
}

#[test]
fn the_explanation_names_why_each_of_the_first_accounts_was_skipped() {
    let records = |strategy: Strategy| {
        let mut pool = Pool::new(PoolConfig {
            strategy,
            session_timeout_ms: 3_600_000,
        });
        let mut all: Vec<Account> = ["tried", "paused", "limited", "invalid", "over", "free"]
            .iter()
            .zip(1..)
            .map(|(name, id)| account(id, name))
            .collect();
        all[1].status = AccountStatus::Paused;
        all[2].rate_limited_until = Some(T0 + 60_000);
        all[3].status = AccountStatus::Invalid;
        all[4].overloaded_until = Some(T0 + 15_000);
        pool.sync(all, T0);
        pool
    };
    let mut pool = records(Strategy::Priority);
    let tried = [AccountId(1)];
    let demand = Demand {
        tried: &tried,
        ..Demand::default()
    };
    let pick = pool.select_for(T0, &demand).unwrap();
    assert_eq!(
        pick.route.to_string(),
        "free: priority; skipped tried: already tried, paused: paused, limited: rate limited \
         until 2026-11-26T10:01:00.000Z (+2 more)"
    );
    // Nothing left: the refusal explains the first three and counts the others.
    let tried: Vec<AccountId> = (1..=6).map(AccountId).collect();
    let demand = Demand {
        tried: &tried,
        ..Demand::default()
    };
    let refused = pool.select_for(T0, &demand).unwrap_err();
    assert_eq!(
        refused.route.to_string(),
        "no account; skipped tried: already tried, paused: already tried, limited: already \
         tried (+3 more)"
    );
    // Under headroom, a routable account too small for the request says so.
    let mut pool = pool_of_two_sized();
    let pick = pool
        .select_for(T0, &request(Some("big one"), 15_000))
        .unwrap();
    assert_eq!(&*pick.name, "b");
    assert!(
        pick.route
            .to_string()
            .ends_with("skipped a: no room (9.5k left < 16.0k needed)"),
        "{}",
        pick.route
    );
}

/// `a`: 100k at 90 % (9.5k left, half a point of rounding less); `b`: 1M at 10 %.
fn pool_of_two_sized() -> Pool {
    let mut pool = pool(&["a", "b"]);
    teach(&mut pool, "a", 100_000, 0.9);
    teach(&mut pool, "b", 1_000_000, 0.1);
    pool
}
