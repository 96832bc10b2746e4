//! The pool as a user sees it: which account serves each request as time passes and upstream
//! answers come in. Most tests are tables run by [`check`]: each row is a time in seconds after
//! `T0`, an action, and what should be seen (the account chosen, the error, or the state an
//! answer left the account in).

use super::*;
use crate::state::RoutingState;
use Do::*;
use ccflare_core::ratelimit::Window;

const T0: Millis = 1_795_687_200_000; // 2026-11-26T10:00:00Z

fn at(seconds: i64) -> Millis {
    T0 + seconds * 1000
}

const OK: Verdict = Verdict::Serve { bench_until: None };
const NO_RESET: Verdict = Verdict::RateLimited { until: None };
const OVERLOADED: Verdict = Verdict::Overloaded;
const UNAUTHORIZED: Verdict = Verdict::AuthFailed;

fn reset_at(seconds: i64) -> Verdict {
    Verdict::RateLimited {
        until: Some(at(seconds)),
    }
}

#[derive(Debug, Clone, Copy)]
enum Do<'a> {
    /// Select without a session key and release at once; shows the account or the error.
    Select,
    /// The same, with a session key.
    Key(&'a str),
    /// The same, for a request that already tried these accounts.
    Skip(&'a [&'a str]),
    /// The same, with a session key and accounts already tried.
    KeySkip(&'a str, &'a [&'a str]),
    /// Select without a session key and keep the attempt in flight.
    Hold,
    /// Release one attempt on the account; shows its attempts in flight.
    Release(&'a str),
    /// An upstream verdict on the account; shows its state.
    Report(&'a str, Verdict),
    /// A successful answer whose headers leave this percentage of the requests window.
    Headroom(&'a str, u64),
    /// A successful answer whose subscription headers say `allowed_warning` for a window that
    /// resets at this second; shows the account's state.
    Warn(&'a str, i64),
    /// A successful answer whose subscription headers say `rejected` and name no reset; shows
    /// the account's state.
    Rejected(&'a str),
    /// Sync with the harness's records; shows every account's state.
    Sync,
}

fn record(id: i64, name: &str) -> Account {
    let credential = Secret::new(format!("sk-ant-api03-{name}-0123456789abcdef"));
    Account::new(AccountId(id), name, AccountKind::ApiKey, credential)
}

fn with_priority(id: i64, name: &str, priority: i64) -> Account {
    Account {
        priority,
        ..record(id, name)
    }
}

fn snapshot(percent_left: u64, now: Millis) -> RateLimitSnapshot {
    RateLimitSnapshot {
        requests: Window {
            limit: Some(100),
            remaining: Some(percent_left),
            reset: None,
        },
        seen_at: now,
        ..Default::default()
    }
}

/// Subscription headers with `allowed_warning` on a window that resets at `reset` seconds.
fn warning(reset: i64, now: Millis) -> RateLimitSnapshot {
    RateLimitSnapshot {
        unified_status: Some("allowed_warning".into()),
        unified_reset: Some(at(reset)),
        unified_5h_utilization: Some(0.9),
        seen_at: now,
        ..Default::default()
    }
}

/// `active`, `paused`, `invalid`, `limited@30`, `overloaded@15` (seconds after `T0`).
fn describe(state: RoutingState) -> String {
    let seconds = |until: Millis| (until - T0) / 1000;
    match state {
        RoutingState::Active => "active".to_owned(),
        RoutingState::Paused => "paused".to_owned(),
        RoutingState::Invalid => "invalid".to_owned(),
        RoutingState::RateLimited { until } => format!("limited@{}", seconds(until)),
        RoutingState::Overloaded { until } => format!("overloaded@{}", seconds(until)),
    }
}

/// `AllRateLimited retry@30`, `NoAccounts`.
fn describe_error(error: &Unavailable) -> String {
    match error.retry_at {
        Some(retry_at) => format!("{:?} retry@{}", error.reason, (retry_at - T0) / 1000),
        None => format!("{:?}", error.reason),
    }
}

/// A pool and the records storage holds for it.
struct Harness {
    pool: Pool,
    records: Vec<Account>,
}

impl Harness {
    /// Accounts named as given, ids 1, 2, 3, …, priority 0, and a one-hour session timeout.
    fn new(strategy: Strategy, names: &[&str]) -> Harness {
        Harness::with_timeout(strategy, names, 3600)
    }

    fn with_timeout(strategy: Strategy, names: &[&str], timeout_seconds: i64) -> Harness {
        let records = names
            .iter()
            .zip(1..)
            .map(|(name, id)| record(id, name))
            .collect();
        Harness::with_records(strategy, records, timeout_seconds)
    }

    fn with_records(strategy: Strategy, records: Vec<Account>, timeout_seconds: i64) -> Harness {
        let mut pool = Pool::new(PoolConfig {
            strategy,
            session_timeout_ms: timeout_seconds * 1000,
        });
        pool.sync(records.clone(), T0);
        Harness { pool, records }
    }

    fn id(&self, name: &str) -> AccountId {
        let view = self.pool.views(T0).into_iter().find(|v| &*v.name == name);
        view.unwrap_or_else(|| panic!("no account {name}")).id
    }

    fn record_mut(&mut self, name: &str) -> &mut Account {
        let found = self.records.iter_mut().find(|r| r.name == name);
        found.unwrap_or_else(|| panic!("no record {name}"))
    }

    /// A person's edit: the stored record changes and gets a new revision.
    fn edit(&mut self, name: &str, change: impl FnOnce(&mut Account)) {
        let record = self.record_mut(name);
        change(record);
        record.revision += 1;
    }

    /// A change in storage that no person made (a refreshed token), so no new revision.
    fn edit_quietly(&mut self, name: &str, change: impl FnOnce(&mut Account)) {
        change(self.record_mut(name));
    }

    fn remove(&mut self, name: &str) {
        self.records.retain(|r| r.name != name);
    }

    fn view(&self, name: &str, now: Millis) -> AccountView {
        let view = self.pool.views(now).into_iter().find(|v| &*v.name == name);
        view.unwrap_or_else(|| panic!("no account {name}"))
    }

    fn states(&self, now: Millis) -> String {
        let states: Vec<String> = self
            .pool
            .views(now)
            .iter()
            .map(|v| format!("{}:{}", v.name, describe(v.state)))
            .collect();
        states.join(" ")
    }

    fn select(&mut self, now: Millis, key: Option<&str>, tried: &[&str], hold: bool) -> String {
        let tried: Vec<AccountId> = tried.iter().map(|name| self.id(name)).collect();
        match self.pool.select(now, key, &tried) {
            Ok(pick) => {
                if !hold {
                    self.pool.release(pick.id);
                }
                pick.name.to_string()
            }
            Err(error) => describe_error(&error),
        }
    }

    fn run(&mut self, now: Millis, action: Do) -> String {
        match action {
            Select => self.select(now, None, &[], false),
            Key(key) => self.select(now, Some(key), &[], false),
            Skip(tried) => self.select(now, None, tried, false),
            KeySkip(key, tried) => self.select(now, Some(key), tried, false),
            Hold => self.select(now, None, &[], true),
            Release(name) => {
                self.pool.release(self.id(name));
                format!("{} in flight", self.view(name, now).in_flight)
            }
            Report(name, verdict) => {
                self.pool.report(self.id(name), verdict, None, now);
                describe(self.view(name, now).state)
            }
            Headroom(name, percent) => {
                self.pool
                    .report(self.id(name), OK, Some(snapshot(percent, now)), now);
                describe(self.view(name, now).state)
            }
            Warn(name, reset) => {
                self.pool
                    .report(self.id(name), OK, Some(warning(reset, now)), now);
                describe(self.view(name, now).state)
            }
            Rejected(name) => {
                let rejected = RateLimitSnapshot {
                    unified_status: Some("rejected".into()),
                    seen_at: now,
                    ..Default::default()
                };
                self.pool.report(self.id(name), OK, Some(rejected), now);
                describe(self.view(name, now).state)
            }
            Sync => {
                self.pool.sync(self.records.clone(), now);
                self.states(now)
            }
        }
    }
}

fn check(harness: &mut Harness, rows: &[(i64, Do, &str)]) {
    for (row, &(second, action, expected)) in rows.iter().enumerate() {
        let seen = harness.run(at(second), action);
        assert_eq!(seen, expected, "row {row}: at {second} s, {action:?}");
    }
}

// ---- cooldowns ----

#[test]
fn rate_limit_with_a_reset_benches_until_the_reset() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Select, "a"),
            (0, Report("a", reset_at(30)), "limited@30"),
            (0, Select, "b"),
            (29, Select, "b"),
            (30, Select, "a"),
            (30, Sync, "a:active b:active"),
        ],
    );
}

#[test]
fn default_backoff_doubles_to_five_minutes_and_resets_after_a_success() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Report("a", NO_RESET), "limited@30"),
            (29, Select, "b"),
            (30, Select, "a"),
            (30, Report("a", NO_RESET), "limited@90"),
            (89, Select, "b"),
            (90, Report("a", NO_RESET), "limited@210"),
            (210, Report("a", NO_RESET), "limited@450"),
            (450, Report("a", NO_RESET), "limited@750"),
            (750, Report("a", NO_RESET), "limited@1050"),
            (1049, Select, "b"),
            (1050, Select, "a"),
            (1050, Report("a", OK), "active"),
            (1051, Report("a", NO_RESET), "limited@1081"),
        ],
    );
    // A 429 that named its reset is a repeat too; a 529 or a server error in between is not a
    // success and does not reset the count.
    let mut h = Harness::new(Strategy::Priority, &["a"]);
    check(
        &mut h,
        &[
            (0, Report("a", reset_at(10)), "limited@10"),
            (10, Report("a", Verdict::ServerError), "active"),
            (10, Report("a", OVERLOADED), "overloaded@25"),
            (25, Report("a", NO_RESET), "limited@85"),
        ],
    );
    assert_eq!(h.view("a", at(25)).consecutive_rate_limits, 2);
}

#[test]
fn a_late_answer_never_shortens_a_bench() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Report("a", reset_at(100)), "limited@100"),
            (1, Report("a", reset_at(50)), "limited@100"),
            (2, Report("a", OK), "limited@100"),
            (50, Select, "b"),
            (100, Select, "a"),
        ],
    );
}

#[test]
fn a_success_that_says_the_quota_is_gone_benches_the_account() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    let exhausted = Verdict::Serve {
        bench_until: Some(at(100)),
    };
    check(
        &mut h,
        &[
            (0, Report("a", exhausted), "limited@100"),
            (0, Select, "b"),
            (100, Select, "a"),
        ],
    );
}

#[test]
fn a_success_that_says_the_quota_is_gone_without_a_reset_backs_off_like_a_429() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            // Served, but benched for the default backoff, which doubles while it repeats.
            (0, Rejected("a"), "limited@30"),
            (0, Select, "b"),
            (30, Select, "a"),
            (30, Rejected("a"), "limited@90"),
            (90, Select, "a"),
            // A plain success ends the run of refusals.
            (90, Report("a", OK), "active"),
            (91, Rejected("a"), "limited@121"),
        ],
    );
}

#[test]
fn refusals_of_requests_already_in_flight_do_not_double_the_backoff_again() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Report("a", NO_RESET), "limited@30"),
            // Answers to requests sent before the bench began: the same refusal.
            (0, Report("a", NO_RESET), "limited@30"),
            // A late one is still 30 s, from its own arrival.
            (1, Rejected("a"), "limited@31"),
            // After the bench, the next refusal is the second in a row.
            (31, Select, "a"),
            (31, Report("a", NO_RESET), "limited@91"),
            (32, Report("a", NO_RESET), "limited@92"),
        ],
    );
}

#[test]
fn overload_cools_down_for_fifteen_seconds_and_never_grows() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Report("a", OVERLOADED), "overloaded@15"),
            (0, Select, "b"),
            (14, Select, "b"),
            (15, Select, "a"),
            (15, Report("a", OVERLOADED), "overloaded@30"),
            (30, Report("a", OVERLOADED), "overloaded@45"),
            (31, Report("a", OK), "active"),
            (31, Select, "a"),
        ],
    );
    assert_eq!(h.view("a", at(31)).consecutive_rate_limits, 0);
}

#[test]
fn refused_api_key_is_invalid_until_a_person_re_adds_it() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Report("a", UNAUTHORIZED), "invalid"),
            (0, Select, "b"),
            (86_400, Select, "b"),
            // The record still says active: the database is behind, the pool knows better.
            (86_400, Sync, "a:invalid b:active"),
            (86_401, Select, "b"),
        ],
    );
    h.edit("a", |record| record.status = AccountStatus::Active);
    check(
        &mut h,
        &[(86_402, Sync, "a:active b:active"), (86_402, Select, "a")],
    );
}

#[test]
fn refused_oauth_token_benches_for_a_minute() {
    let oauth = Account {
        kind: AccountKind::OAuth,
        ..record(1, "a")
    };
    let mut h = Harness::with_records(Strategy::Priority, vec![oauth, record(2, "b")], 3600);
    check(
        &mut h,
        &[
            (0, Report("a", UNAUTHORIZED), "limited@60"),
            (59, Select, "b"),
            (60, Select, "a"),
        ],
    );
}

#[test]
fn answers_that_blame_no_account_change_nothing() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Report("a", Verdict::RequestScoped), "active"),
            (0, Report("a", Verdict::ServerError), "active"),
            (0, Select, "a"),
        ],
    );
}

// ---- session affinity ----

#[test]
fn affinity_holds_for_the_same_key() {
    let mut h = Harness::with_timeout(Strategy::RoundRobin, &["a", "b", "c"], 100);
    check(
        &mut h,
        &[
            (0, Key("s1"), "a"),
            (1, Select, "b"),
            (2, Key("s1"), "a"),
            (3, Key("s2"), "c"),
            (4, Key("s1"), "a"),
            (5, Key("s2"), "c"),
            // Pinned picks do not move the rotation: it continues after c.
            (6, Select, "a"),
            (7, Select, "b"),
        ],
    );
}

#[test]
fn affinity_moves_when_its_account_is_benched_or_fails() {
    let mut h = Harness::with_timeout(Strategy::RoundRobin, &["a", "b", "c"], 100);
    check(
        &mut h,
        &[
            (0, Key("s1"), "a"),
            (1, Report("a", reset_at(50)), "limited@50"),
            (2, Key("s1"), "b"),
            // Re-pinned to b: it stays there when a comes back, keeping b's prompt cache warm.
            (51, Key("s1"), "b"),
            (52, KeySkip("s1", &["b"]), "c"),
            (53, Key("s1"), "c"),
            (54, Report("c", OVERLOADED), "overloaded@69"),
            (55, Key("s1"), "a"),
            (70, Key("s1"), "a"),
        ],
    );
    h.edit("a", |record| record.status = AccountStatus::Paused);
    check(
        &mut h,
        &[
            (71, Sync, "a:paused b:active c:active"),
            (72, Key("s1"), "b"),
        ],
    );
}

#[test]
fn affinity_expires_after_the_timeout_at_exactly_the_boundary() {
    let mut h = Harness::with_timeout(Strategy::RoundRobin, &["a", "b", "c"], 100);
    check(
        &mut h,
        &[
            (0, Key("s1"), "a"),
            (0, Key("s2"), "b"),
            (99, Key("s2"), "b"),
            // 100 s after its last use: expired, so the rotation picks (after b comes c).
            (100, Key("s1"), "c"),
            // s2 was used at 99, which restarted its timeout.
            (198, Key("s2"), "b"),
            (298, Key("s2"), "a"),
            (299, Key("s2"), "a"),
        ],
    );
}

#[test]
fn affinity_is_dropped_with_its_account() {
    let mut h = Harness::new(Strategy::RoundRobin, &["a", "b", "c"]);
    check(&mut h, &[(0, Key("s1"), "a"), (0, Key("s2"), "b")]);
    h.remove("a");
    check(&mut h, &[(1, Sync, "b:active c:active")]);
    assert_eq!(h.pool.pins.len(), 1, "only s2's pin is left");
    check(&mut h, &[(2, Key("s1"), "c"), (3, Key("s2"), "b")]);
    // The same account coming back does not bring the old session with it.
    h.records.push(record(1, "a"));
    check(
        &mut h,
        &[(4, Sync, "a:active b:active c:active"), (5, Key("s1"), "c")],
    );
}

#[test]
fn sync_drops_expired_pins() {
    let mut h = Harness::with_timeout(Strategy::Session, &["a", "b"], 100);
    check(&mut h, &[(0, Key("s1"), "a"), (50, Key("s2"), "a")]);
    check(&mut h, &[(99, Sync, "a:active b:active")]);
    assert_eq!(h.pool.pins.len(), 2);
    check(&mut h, &[(100, Sync, "a:active b:active")]);
    assert_eq!(h.pool.pins.len(), 1);
    check(&mut h, &[(150, Sync, "a:active b:active")]);
    assert!(h.pool.pins.is_empty());
}

#[test]
fn session_pins_are_bounded_and_the_least_recently_used_go_first() {
    let mut h = Harness::new(Strategy::RoundRobin, &["a", "b"]);
    // A client that sends a new session key with every request.
    let total = 2 * MAX_PINS;
    for n in 0..total {
        let key = format!("session-{n}");
        h.pool.select(at(0), Some(&key), &[]).expect("an account");
        assert!(h.pool.pin_count() <= MAX_PINS);
    }
    assert_eq!(h.pool.pin_count(), MAX_PINS);
    // The newest sessions are the ones kept; the first ones are gone.
    assert!(
        h.pool
            .pins
            .contains(format!("session-{}", total - 1).as_str())
    );
    assert!(
        h.pool
            .pins
            .contains(format!("session-{}", total - MAX_PINS).as_str())
    );
    assert!(!h.pool.pins.contains("session-0"));
    assert!(
        !h.pool
            .pins
            .contains(format!("session-{}", total - MAX_PINS - 1).as_str())
    );
}

#[test]
fn a_session_in_use_outlives_older_ones_at_the_bound_and_at_expiry() {
    let mut h = Harness::with_timeout(Strategy::RoundRobin, &["a", "b"], 100);
    check(&mut h, &[(0, Key("kept"), "a")]);
    for n in 0..MAX_PINS - 1 {
        let key = format!("filler-{n}");
        h.pool.select(at(1), Some(&key), &[]).expect("an account");
    }
    // Used again, `kept` is the most recent: the next new session pushes out the oldest
    // filler instead.
    check(&mut h, &[(2, Key("kept"), "a"), (2, Key("new"), "a")]);
    assert_eq!(h.pool.pin_count(), MAX_PINS);
    assert!(!h.pool.pins.contains("filler-0"));
    // At 101 s the fillers (last used at 1 s) have expired; `kept` and `new` (2 s) have not.
    check(&mut h, &[(101, Sync, "a:active b:active")]);
    assert_eq!(h.pool.pin_count(), 2);
    check(&mut h, &[(101, Key("kept"), "a")]);
}

// ---- strategies ----

#[test]
fn round_robin_cycles_in_the_stable_order() {
    let records = vec![
        with_priority(1, "a", 1),
        with_priority(2, "b", 0),
        with_priority(3, "c", 0),
    ];
    let mut h = Harness::with_records(Strategy::RoundRobin, records, 3600);
    check(
        &mut h,
        &[
            (0, Select, "b"),
            (1, Select, "c"),
            (2, Select, "a"),
            (3, Select, "b"),
            (3, Report("c", OVERLOADED), "overloaded@18"),
            (4, Select, "a"),
            (5, Select, "b"),
            (6, Skip(&["a"]), "b"),
            (18, Select, "c"),
        ],
    );
    // The rotation continues where the removed account stood.
    h.remove("c");
    check(
        &mut h,
        &[(19, Sync, "b:active a:active"), (19, Select, "a")],
    );
}

#[test]
fn least_requests_prefers_fewest_in_flight_then_fewest_in_total() {
    let mut h = Harness::new(Strategy::LeastRequests, &["a", "b", "c"]);
    check(
        &mut h,
        &[
            (0, Hold, "a"),
            (0, Hold, "b"),
            (0, Hold, "c"),
            (0, Hold, "a"),
            (1, Release("b"), "0 in flight"),
            (1, Select, "b"),
            (1, Release("c"), "0 in flight"),
            // b and c have nothing in flight; c has served fewer requests.
            (2, Select, "c"),
            // Both have served two: the stable order decides.
            (3, Select, "b"),
            (3, Release("a"), "1 in flight"),
            (3, Release("a"), "0 in flight"),
            (4, Select, "a"),
            (5, Select, "c"),
        ],
    );
}

#[test]
fn priority_fills_the_lowest_number_first() {
    let records = vec![
        with_priority(1, "x", 2),
        with_priority(2, "y", 0),
        with_priority(3, "z", 0),
        with_priority(4, "w", 1),
    ];
    let mut h = Harness::with_records(Strategy::Priority, records, 3600);
    check(
        &mut h,
        &[
            (0, Select, "y"),
            (1, Select, "y"),
            (1, Report("y", reset_at(60)), "limited@60"),
            (2, Select, "z"),
            (2, Report("z", OVERLOADED), "overloaded@17"),
            (3, Select, "w"),
            (3, Skip(&["w"]), "x"),
            (17, Select, "z"),
            (60, Select, "y"),
        ],
    );
    // A new priority re-orders the pool at the next sync; equal priorities go by id.
    h.edit("x", |record| record.priority = 0);
    check(
        &mut h,
        &[
            (61, Sync, "x:active y:active z:active w:active"),
            (61, Select, "x"),
        ],
    );
}

#[test]
fn headroom_prefers_the_most_capacity_left() {
    let mut h = Harness::new(Strategy::Headroom, &["a", "b", "c"]);
    check(
        &mut h,
        &[
            (0, Hold, "a"),
            // All unknown (counted as full): fewest in flight.
            (0, Hold, "b"),
            (1, Release("a"), "0 in flight"),
            (1, Release("b"), "0 in flight"),
            (1, Headroom("a", 20), "active"),
            (1, Headroom("b", 50), "active"),
            // No headers yet counts as full capacity.
            (2, Select, "c"),
            (2, Headroom("c", 10), "active"),
            (3, Select, "b"),
            (3, Hold, "b"),
            (3, Headroom("a", 50), "active"),
            // a and b both have half left; b has an attempt in flight.
            (4, Select, "a"),
            (4, Release("b"), "0 in flight"),
            (5, Select, "a"),
        ],
    );
}

#[test]
fn headroom_forgets_windows_that_have_reset_since() {
    let mut h = Harness::new(Strategy::Headroom, &["a", "b"]);
    let resets_at_60 = RateLimitSnapshot {
        requests: Window {
            reset: Some(at(60)),
            ..snapshot(10, at(0)).requests
        },
        ..snapshot(10, at(0))
    };
    h.pool.report(h.id("a"), OK, Some(resets_at_60), at(0));
    check(
        &mut h,
        &[
            (0, Headroom("b", 50), "active"),
            (1, Select, "b"),
            (59, Select, "b"),
            // a's window is full again; b still has half of one that names no reset.
            (60, Select, "a"),
        ],
    );
}

#[test]
fn session_strategy_keeps_one_account_and_rotates_after_the_timeout() {
    let mut h = Harness::with_timeout(Strategy::Session, &["a", "b", "c"], 100);
    check(
        &mut h,
        &[
            (0, Select, "a"),
            (50, Select, "a"),
            (99, Select, "a"),
            (100, Select, "b"),
            (199, Select, "b"),
            (200, Select, "c"),
            (300, Select, "a"),
            (310, Report("a", reset_at(400)), "limited@400"),
            // a is benched: b takes over, and its turn starts now.
            (311, Select, "b"),
            (400, Select, "b"),
            (410, Select, "b"),
            (411, Select, "c"),
            // c failed this request: the next account serves it, c stays current for others.
            (412, Skip(&["c"]), "a"),
            (413, Select, "c"),
            (414, Skip(&["c", "a"]), "b"),
            (415, Skip(&["a", "b", "c"]), "AllTried"),
            (416, Select, "c"),
        ],
    );
    // The current account removed: the turn passes to the next one in order.
    h.remove("c");
    check(
        &mut h,
        &[(417, Sync, "a:active b:active"), (417, Select, "a")],
    );

    let mut alone = Harness::with_timeout(Strategy::Session, &["a"], 100);
    check(
        &mut alone,
        &[(0, Select, "a"), (100, Select, "a"), (250, Select, "a")],
    );
}

#[test]
fn every_strategy_respects_tried_accounts() {
    for strategy in Strategy::ALL {
        let mut h = Harness::new(strategy, &["a", "b", "c"]);
        let rows = [
            (0, Skip(&["a", "b"]), "c"),
            (1, Skip(&["a", "c"]), "b"),
            (2, Skip(&["b", "c"]), "a"),
            (3, KeySkip("s1", &["b", "c"]), "a"),
            (4, KeySkip("s1", &["a", "c"]), "b"),
            (5, Skip(&["a", "b", "c"]), "AllTried"),
            (6, KeySkip("s1", &["a", "b", "c"]), "AllTried"),
            (7, Key("s1"), "b"),
        ];
        for (row, &(second, action, expected)) in rows.iter().enumerate() {
            let seen = h.run(at(second), action);
            assert_eq!(seen, expected, "{strategy}, row {row}: {action:?}");
        }
    }
}

#[test]
fn paused_accounts_are_never_picked() {
    for strategy in Strategy::ALL {
        let paused = Account {
            status: AccountStatus::Paused,
            ..record(1, "a")
        };
        let records = vec![paused, with_priority(2, "b", 5)];
        let mut h = Harness::with_records(strategy, records, 100);
        let rows = [
            (0, Select, "b"),
            (1, Key("s1"), "b"),
            (200, Select, "b"),
            (300, Hold, "b"),
            (300, Report("b", reset_at(400)), "limited@400"),
            (301, Select, "AllRateLimited retry@400"),
        ];
        for (row, &(second, action, expected)) in rows.iter().enumerate() {
            let seen = h.run(at(second), action);
            assert_eq!(seen, expected, "{strategy}, row {row}: {action:?}");
        }
    }
}

#[test]
fn set_strategy_applies_to_the_next_request() {
    let mut h = Harness::new(Strategy::Session, &["a", "b"]);
    check(&mut h, &[(0, Select, "a"), (1, Select, "a")]);
    h.pool.set_strategy(Strategy::RoundRobin);
    h.pool.set_session_timeout(10_000);
    assert_eq!(
        h.pool.config(),
        PoolConfig {
            strategy: Strategy::RoundRobin,
            session_timeout_ms: 10_000
        }
    );
    check(
        &mut h,
        &[(2, Select, "a"), (3, Select, "b"), (4, Select, "a")],
    );
}

// ---- errors ----

#[test]
fn errors_say_why_and_when_to_retry() {
    let mut empty = Harness::new(Strategy::Session, &[]);
    check(
        &mut empty,
        &[(0, Select, "NoAccounts"), (0, Key("s1"), "NoAccounts")],
    );

    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Skip(&["a", "b"]), "AllTried"),
            (0, Report("a", reset_at(30)), "limited@30"),
            (0, Report("b", reset_at(20)), "limited@20"),
            (1, Select, "AllRateLimited retry@20"),
            (20, Report("b", OVERLOADED), "overloaded@35"),
            (21, Select, "AllBenched retry@30"),
            // A bench from a 429 and one from a 529 at once: routable when both are over.
            (25, Report("a", OVERLOADED), "limited@40"),
            (26, Select, "AllBenched retry@35"),
            (35, Select, "b"),
            (36, Report("b", reset_at(50)), "limited@50"),
            // a's 429 bench ended at 30; its 529 bench runs until 40.
            (37, Select, "AllBenched retry@40"),
            (40, Select, "a"),
        ],
    );

    // Only active accounts count: a paused account's old bench is no reason to wait.
    let paused = Account {
        status: AccountStatus::Paused,
        rate_limited_until: Some(at(10)),
        ..record(1, "a")
    };
    let invalid = Account {
        status: AccountStatus::Invalid,
        ..record(2, "b")
    };
    let mut h = Harness::with_records(Strategy::Session, vec![paused, invalid, record(3, "c")], 60);
    check(
        &mut h,
        &[
            (0, Report("c", reset_at(30)), "limited@30"),
            (1, Select, "AllRateLimited retry@30"),
            (30, Select, "c"),
            (30, Report("c", UNAUTHORIZED), "invalid"),
            (31, Select, "NoneActive"),
        ],
    );
    assert_eq!(h.pool.next_recovery(at(31)), None);
    let error = h.pool.select(at(31), None, &[]).unwrap_err();
    assert_eq!(
        error.counts,
        StateCounts {
            total: 3,
            paused: 1,
            invalid: 2,
            ..Default::default()
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("no active accounts: 1 paused, 2 invalid")
    );
}

#[test]
fn error_messages_never_show_a_credential() {
    let mut h = Harness::new(Strategy::Priority, &["a"]);
    let mut messages = vec![
        h.pool
            .select(T0, None, &[h.id("a")])
            .unwrap_err()
            .to_string(),
    ];
    h.pool.report(h.id("a"), NO_RESET, None, T0);
    messages.push(h.pool.select(T0, None, &[]).unwrap_err().to_string());
    h.pool.report(h.id("a"), UNAUTHORIZED, None, T0);
    messages.push(h.pool.select(T0, None, &[]).unwrap_err().to_string());
    for message in messages {
        assert!(!message.contains("0123456789abcdef"), "{message}");
    }
}

// ---- sync ----

#[test]
fn sync_keeps_the_pools_own_state_for_the_same_revision() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b", "c"]);
    check(
        &mut h,
        &[
            (0, Hold, "a"),
            (0, Report("a", UNAUTHORIZED), "invalid"),
            (0, Report("b", reset_at(60)), "limited@60"),
            (0, Report("c", OVERLOADED), "overloaded@15"),
            (1, Sync, "a:invalid b:limited@60 c:overloaded@15"),
            (2, Select, "AllBenched retry@15"),
        ],
    );
    let a = h.view("a", at(2));
    assert_eq!((a.in_flight, a.requests, a.last_used), (1, 1, Some(at(0))));
    assert_eq!(h.view("b", at(2)).consecutive_rate_limits, 1);
}

#[test]
fn a_stale_read_never_undoes_a_persons_newer_edit() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    let before = h.records.clone();
    h.edit("a", |record| record.status = AccountStatus::Paused);
    check(&mut h, &[(1, Sync, "a:paused b:active")]);
    // The periodic sync read the table before the pause and applies it after.
    let fresh = std::mem::replace(&mut h.records, before);
    check(&mut h, &[(2, Sync, "a:paused b:active"), (2, Select, "b")]);
    h.records = fresh;
    h.edit("a", |record| record.status = AccountStatus::Active);
    check(&mut h, &[(3, Sync, "a:active b:active"), (3, Select, "a")]);
}

#[test]
fn sync_takes_a_persons_edit_for_a_new_revision() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b", "c"]);
    check(
        &mut h,
        &[
            (0, Report("a", UNAUTHORIZED), "invalid"),
            (0, Report("b", reset_at(600)), "limited@600"),
            (0, Report("c", reset_at(700)), "limited@700"),
        ],
    );
    h.edit("a", |record| record.status = AccountStatus::Active);
    h.edit("b", |record| record.status = AccountStatus::Paused);
    h.edit("c", |record| record.name = "c2".to_owned());
    check(
        &mut h,
        &[
            // A rename does not lift the bench the upstream imposed.
            (1, Sync, "a:active b:paused c2:limited@700"),
            (1, Select, "a"),
            (1, Key("s1"), "a"),
        ],
    );
    // Resumed with no cooldown in the record: the old bench is gone.
    h.edit("b", |record| record.status = AccountStatus::Active);
    check(&mut h, &[(2, Sync, "a:active b:active c2:limited@700")]);
    assert_eq!(h.view("b", at(2)).consecutive_rate_limits, 0);

    // Paused again, then resumed with a cooldown storage still holds: that cooldown applies.
    h.edit("b", |record| record.status = AccountStatus::Paused);
    check(&mut h, &[(3, Sync, "a:active b:paused c2:limited@700")]);
    h.edit("b", |record| {
        record.status = AccountStatus::Active;
        record.rate_limited_until = Some(at(900));
    });
    check(
        &mut h,
        &[(4, Sync, "a:active b:limited@900 c2:limited@700")],
    );
}

#[test]
fn sync_adds_and_removes_accounts() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    h.records.push(Account {
        rate_limited_until: Some(at(100)),
        ..record(3, "c")
    });
    h.records.push(Account {
        rate_limited_until: Some(at(0)),
        overloaded_until: Some(at(20)),
        ..record(4, "d")
    });
    h.records.push(Account {
        rate_limited_until: Some(at(-50)),
        overloaded_until: Some(at(1)),
        ..record(5, "e")
    });
    h.remove("a");
    check(
        &mut h,
        &[
            (1, Sync, "b:active c:limited@100 d:overloaded@20 e:active"),
            (1, Select, "b"),
        ],
    );
    h.remove("b");
    check(
        &mut h,
        &[
            (2, Sync, "c:limited@100 d:overloaded@20 e:active"),
            (2, Select, "e"),
        ],
    );
    h.records.clear();
    check(&mut h, &[(3, Sync, ""), (3, Select, "NoAccounts")]);
}

#[test]
fn sync_takes_a_refreshed_credential_without_a_new_revision() {
    let mut h = Harness::new(Strategy::Priority, &["a"]);
    h.edit_quietly("a", |record| {
        record.credential = Secret::new("sk-ant-oat01-refreshed-0123456789");
    });
    h.pool.sync(h.records.clone(), at(1));
    let pick = h.pool.select(at(1), None, &[]).unwrap();
    assert_eq!(
        pick.credential.expose(),
        "sk-ant-oat01-refreshed-0123456789"
    );
}

#[test]
fn a_restarted_pool_routes_on_the_headers_persisted_before() {
    // The first run: a says its subscription is close to the limit, b has a fifth left.
    let mut before = Harness::new(Strategy::Priority, &["a", "b", "c"]);
    let mut persist = |name: &str, headers: RateLimitSnapshot| {
        let id = before.id(name);
        let persisted = before.pool.report(id, OK, Some(headers), at(0));
        persisted.expect("new headers are persisted").last_ratelimit
    };
    let a = persist("a", warning(3600, at(0)));
    let b = persist("b", snapshot(20, at(0)));
    let records = vec![record(1, "a"), record(2, "b"), record(3, "c")];
    let stored: Vec<_> = records.iter().cloned().zip([a, b, None]).collect();
    // The second run starts from the stored records and headers; without the headers every
    // account would look untouched and `a` would be first for both.
    for (strategy, expected) in [(Strategy::Priority, "b"), (Strategy::Headroom, "c")] {
        let config = PoolConfig {
            strategy,
            session_timeout_ms: 3_600_000,
        };
        let mut restarted = Pool::new(config);
        restarted.sync_with_ratelimits(stored.clone(), at(10));
        let pick = restarted.select(at(10), None, &[]).unwrap();
        assert_eq!(&*pick.name, expected, "{strategy}");
        let views = restarted.views(at(10));
        assert_eq!(views[0].last_ratelimit, stored[0].1, "{strategy}");
        let mut forgetful = Pool::new(config);
        forgetful.sync(records.clone(), at(10));
        assert_eq!(&*forgetful.select(at(10), None, &[]).unwrap().name, "a");
    }
}

#[test]
fn sync_takes_stored_headers_only_when_they_are_newer_than_the_pools_own() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(&mut h, &[(5, Warn("a", 3600), "active"), (5, Select, "b")]);
    let allowed = |seen: i64| RateLimitSnapshot {
        unified_status: Some("allowed".into()),
        seen_at: at(seen),
        ..Default::default()
    };
    let sync = |h: &mut Harness, a: Option<RateLimitSnapshot>, now: i64| {
        let stored = h.records.iter().cloned().zip([a, None]).collect();
        h.pool.sync_with_ratelimits(stored, at(now));
        h.select(at(now), None, &[], false)
    };
    // The database is behind the pool: older headers (or none) leave the warning in place.
    assert_eq!(sync(&mut h, Some(allowed(0)), 6), "b");
    assert_eq!(sync(&mut h, None, 7), "b");
    // Headers seen after the pool's own (another process answered) are taken.
    assert_eq!(sync(&mut h, Some(allowed(8)), 9), "a");
    assert_eq!(h.view("a", at(9)).last_ratelimit, Some(allowed(8)));
}

// ---- what the pool reports ----

#[test]
fn report_returns_the_state_to_persist_only_when_it_changed() {
    let mut h = Harness::new(Strategy::Priority, &["a"]);
    let a = h.id("a");
    let persisted = |status, rate_limited_until, overloaded_until, last_ratelimit| {
        Some(PersistState {
            id: a,
            revision: 1,
            status,
            rate_limited_until,
            overloaded_until,
            last_ratelimit,
        })
    };
    let headers = snapshot(40, at(0));
    let pool = &mut h.pool;
    let active = AccountStatus::Active;
    assert_eq!(pool.report(a, OK, None, at(0)), None);
    assert_eq!(pool.report(a, Verdict::ServerError, None, at(0)), None);
    assert_eq!(pool.report(a, Verdict::RequestScoped, None, at(0)), None);
    assert_eq!(
        pool.report(a, OK, Some(headers.clone()), at(0)),
        persisted(active, None, None, Some(headers.clone()))
    );
    // Headers alone are persisted at most once a second per account.
    assert_eq!(pool.report(a, OK, Some(headers.clone()), at(0) + 999), None);
    assert_eq!(
        pool.report(a, Verdict::RequestScoped, Some(headers.clone()), at(1)),
        persisted(active, None, None, Some(headers.clone()))
    );
    assert_eq!(
        pool.report(a, reset_at(30), None, at(0)),
        persisted(active, Some(at(30)), None, Some(headers.clone()))
    );
    assert_eq!(pool.report(a, reset_at(30), None, at(1)), None);
    assert_eq!(
        pool.report(a, OVERLOADED, None, at(1)),
        persisted(active, Some(at(30)), Some(at(16)), Some(headers.clone()))
    );
    assert_eq!(
        pool.report(a, OK, None, at(2)),
        persisted(active, Some(at(30)), None, Some(headers.clone()))
    );
    // The bench is over: the next answer writes it away once.
    assert_eq!(
        pool.report(a, OK, None, at(30)),
        persisted(active, None, None, Some(headers.clone()))
    );
    assert_eq!(pool.report(a, OK, None, at(31)), None);
    assert_eq!(
        pool.report(a, UNAUTHORIZED, None, at(32)),
        persisted(AccountStatus::Invalid, None, None, Some(headers))
    );
    assert_eq!(pool.report(AccountId(99), OVERLOADED, None, at(33)), None);
}

#[test]
fn counts_views_and_next_recovery() {
    let records = vec![
        record(1, "a"),
        Account {
            kind: AccountKind::OAuth,
            ..with_priority(2, "b", 1)
        },
        record(3, "c"),
        Account {
            status: AccountStatus::Paused,
            ..record(4, "d")
        },
        record(5, "e"),
    ];
    let mut h = Harness::with_records(Strategy::Priority, records, 3600);
    check(
        &mut h,
        &[
            (0, Select, "a"),
            (5, Hold, "a"),
            (5, Headroom("a", 20), "active"),
            (6, Report("b", NO_RESET), "limited@36"),
            (6, Report("c", OVERLOADED), "overloaded@21"),
            (6, Report("e", UNAUTHORIZED), "invalid"),
        ],
    );
    let now = at(7);
    assert_eq!(
        h.pool.counts(now),
        StateCounts {
            total: 5,
            available: 1,
            rate_limited: 1,
            overloaded: 1,
            paused: 1,
            invalid: 1,
        }
    );
    assert_eq!(h.pool.next_recovery(now), Some(at(21)));
    assert_eq!(h.pool.next_recovery(at(21)), Some(at(36)));
    assert_eq!(h.pool.next_recovery(at(36)), None);

    assert_eq!(
        h.states(now),
        "a:active c:overloaded@21 d:paused e:invalid b:limited@36",
        "views come in the stable order"
    );
    let a = h.view("a", now);
    assert_eq!(
        (a.id, a.kind, a.priority),
        (AccountId(1), AccountKind::ApiKey, 0)
    );
    assert_eq!((a.in_flight, a.requests, a.last_used), (1, 2, Some(at(5))));
    let headroom = a.last_ratelimit.and_then(|snapshot| snapshot.headroom());
    assert_eq!(headroom, Some(0.2));
    let b = h.view("b", now);
    assert_eq!((b.kind, b.priority), (AccountKind::OAuth, 1));
    assert_eq!(
        (b.requests, b.last_used, b.consecutive_rate_limits),
        (0, None, 1)
    );
    assert_eq!(h.pool.counts(at(36)).available, 3);
}

#[test]
fn release_never_goes_below_zero() {
    let mut h = Harness::new(Strategy::Priority, &["a"]);
    check(
        &mut h,
        &[
            (0, Hold, "a"),
            (0, Release("a"), "0 in flight"),
            (0, Release("a"), "0 in flight"),
        ],
    );
    h.pool.release(AccountId(99));
}

// ---- OAuth accounts ----

#[test]
fn a_refreshed_token_is_picked_at_once_and_survives_sync() {
    let oauth = Account {
        kind: AccountKind::OAuth,
        token_expires_at: Some(at(60)),
        ..record(1, "a")
    };
    let mut h = Harness::with_records(Strategy::Priority, vec![oauth], 3600);
    let id = h.id("a");
    let fresh = Secret::new("sk-ant-oat01-fresh-0123456789abcdef");
    h.pool.set_credential(id, fresh.clone(), Some(at(28_800)));
    let pick = h.pool.select(at(1), None, &[]).unwrap();
    assert_eq!(
        (pick.credential.expose(), pick.expires_at),
        (fresh.expose(), Some(at(28_800)))
    );
    h.pool.release(id);
    // The new token was stored before use; a sync brings the same values back.
    h.edit_quietly("a", |r| {
        r.credential = fresh.clone();
        r.token_expires_at = Some(at(28_800));
    });
    check(&mut h, &[(2, Sync, "a:active")]);
    assert_eq!(
        h.pool.select(at(2), None, &[]).unwrap().expires_at,
        Some(at(28_800))
    );
}

#[test]
fn a_dead_login_leaves_routing_until_a_person_reauthenticates() {
    let oauth = Account {
        kind: AccountKind::OAuth,
        ..record(1, "a")
    };
    let mut h = Harness::with_records(Strategy::Priority, vec![oauth, record(2, "b")], 3600);
    let id = h.id("a");
    let persisted = h.pool.invalidate(id).expect("a change to persist");
    assert_eq!(persisted.status, AccountStatus::Invalid);
    assert_eq!(h.pool.invalidate(id), None, "already invalid");
    check(&mut h, &[(0, Select, "b"), (1, Sync, "a:invalid b:active")]);
    // With nothing else left, the error names the login to renew.
    check(&mut h, &[(1, Report("b", UNAUTHORIZED), "invalid")]);
    let error = h.pool.select(at(1), None, &[]).unwrap_err();
    assert_eq!(error.reason, UnavailableReason::NoneActive);
    assert_eq!(error.needs_reauth, [Arc::<str>::from("a")]);
    assert_eq!(
        error.to_string(),
        "no active accounts: 2 invalid; re-add an invalid key with `ccflare-cli accounts add` \
         or log in again with `ccflare-cli accounts reauth a`"
    );
    h.edit("a", |r| r.status = AccountStatus::Active);
    check(&mut h, &[(2, Sync, "a:active b:invalid"), (2, Select, "a")]);
    // Other reasons name no account.
    check(&mut h, &[(3, Report("a", reset_at(60)), "limited@60")]);
    let error = h.pool.select(at(3), None, &[]).unwrap_err();
    assert_eq!(error.reason, UnavailableReason::AllRateLimited);
    assert!(error.needs_reauth.is_empty());
}

#[test]
fn a_passing_refresh_failure_benches_without_killing() {
    let oauth = Account {
        kind: AccountKind::OAuth,
        ..record(1, "a")
    };
    let mut h = Harness::with_records(Strategy::Priority, vec![oauth, record(2, "b")], 3600);
    let id = h.id("a");
    assert!(h.pool.bench_until(id, at(60)).is_some());
    assert_eq!(
        h.pool.bench_until(id, at(30)),
        None,
        "a bench never shrinks"
    );
    check(
        &mut h,
        &[(0, Select, "b"), (59, Select, "b"), (60, Select, "a")],
    );
}

#[test]
fn allowed_warning_keeps_running_sessions_and_every_strategy_picks_another_account() {
    for strategy in Strategy::ALL {
        let mut h = Harness::new(strategy, &["a", "b"]);
        let rows = [
            (0, Key("s1"), "a"),
            (1, Warn("a", 3000), "active"),
            // The running session stays where its prompt cache is.
            (2, Key("s1"), "a"),
            // New sessions and requests without one go to the account without a warning.
            (3, Key("s2"), "b"),
            (4, Select, "b"),
            (5, Select, "b"),
            // The warned account still serves when it is the only one left.
            (6, Skip(&["b"]), "a"),
            (7, Report("b", reset_at(100)), "limited@100"),
            (8, Key("s3"), "a"),
            (9, Select, "a"),
            // Back from its bench, the other account is preferred again.
            (100, Select, "b"),
            (101, Key("s4"), "b"),
            (102, Key("s3"), "a"),
            (103, Key("s1"), "a"),
        ];
        for (row, &(second, action, expected)) in rows.iter().enumerate() {
            let seen = h.run(at(second), action);
            assert_eq!(seen, expected, "{strategy}, row {row}: {action:?}");
        }
    }
}

#[test]
fn a_warned_session_turn_passes_on_at_once_unless_every_account_is_warned() {
    let mut h = Harness::with_timeout(Strategy::Session, &["a", "b", "c"], 100);
    check(
        &mut h,
        &[
            (0, Select, "a"),
            (0, Key("s1"), "a"),
            (1, Warn("a", 1000), "active"),
            (2, Key("s1"), "a"),
            // The turn does not wait out its timeout on a warned account.
            (3, Select, "b"),
            (4, Key("s2"), "b"),
            (50, Select, "b"),
            (102, Select, "b"),
            (103, Select, "c"),
            // c's turn is over: a comes next in the order, but its warning still holds.
            (203, Select, "b"),
            (204, Warn("b", 1000), "active"),
            (204, Warn("c", 1000), "active"),
            // Everyone is warned: the turn stays and rotates as usual.
            (205, Select, "b"),
            (302, Select, "b"),
            (303, Select, "c"),
        ],
    );
}

#[test]
fn a_warning_ends_when_its_window_resets_or_the_account_says_allowed() {
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Warn("a", 10), "active"),
            (1, Select, "b"),
            (9, Select, "b"),
            (10, Select, "a"),
            (11, Warn("a", 60), "active"),
            (12, Select, "b"),
        ],
    );
    let fine = RateLimitSnapshot {
        unified_status: Some("allowed".into()),
        seen_at: at(13),
        ..Default::default()
    };
    h.pool.report(h.id("a"), OK, Some(fine), at(13));
    check(&mut h, &[(13, Select, "a")]);
}

#[test]
fn a_warning_on_a_week_long_window_keeps_an_account_aside_for_five_hours_at_most() {
    const HOURS: i64 = 3600;
    let mut h = Harness::new(Strategy::Priority, &["a", "b"]);
    check(
        &mut h,
        &[
            (0, Warn("a", 6 * 24 * HOURS), "active"),
            (1, Select, "b"),
            (5 * HOURS - 1, Select, "b"),
            (5 * HOURS, Select, "a"),
        ],
    );
}
