//! OAuth accounts through the proxy (SPEC §5, protocol doc §6): bearer tokens with the OAuth
//! beta, refresh ahead of expiry and after a 401, one refresh for many requests, the rotated
//! token stored before use, dead logins leaving routing, passing failures only benching.

mod common;

use ccflare_core::AccountStatus;
use ccflare_core::config::Strategy;
use ccflare_mock::Fault;
use common::{Options, spawn_app};
use http::StatusCode;

const HOUR: i64 = 3_600_000;

fn oauth(accounts: Vec<(&'static str, i64, i64)>) -> Options {
    Options {
        accounts: vec![],
        oauth_accounts: accounts,
        ..Default::default()
    }
}

/// Two subscriptions with fresh tokens: `max`, tried first, and `other`.
fn max_then_other() -> Options {
    oauth(vec![("max", 0, 8 * HOUR), ("other", 1, 8 * HOUR)])
}

async fn stored(app: &common::App, name: &str) -> ccflare_storage::oauth::StoredTokens {
    let account = ccflare_storage::accounts::find(&app.db, name)
        .await
        .unwrap();
    ccflare_storage::oauth::stored_tokens(&app.db, account.id)
        .await
        .unwrap()
}

#[tokio::test]
async fn oauth_accounts_send_a_bearer_token_with_the_oauth_beta_appended() {
    let app = spawn_app(oauth(vec![("max", 0, 8 * HOUR)])).await;
    let reply = app
        .post(&[("anthropic-beta", "claude-code-20250219")], false)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-ccflare-account"), "max");
    let seen = &app.mock.requests()[0];
    let token = stored(&app, "max").await.access;
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", token.expose()).as_str())
    );
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("claude-code-20250219,oauth-2025-04-20")
    );
    assert_eq!(
        app.mock.refresh_grants(),
        0,
        "a fresh token is not refreshed"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_once_for_many_requests_and_stored_first() {
    let app = spawn_app(oauth(vec![("max", 0, 60_000)])).await;
    let before = stored(&app, "max").await;
    let requests = (0..50).map(|_| app.post(&[], false));
    let replies = futures_join_all(requests).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(
        app.mock.refresh_grants(),
        1,
        "one refresh per account at a time"
    );
    let after = stored(&app, "max").await;
    assert_ne!(after.access.expose(), before.access.expose());
    assert_ne!(
        after.refresh.as_ref().unwrap().expose(),
        before.refresh.as_ref().unwrap().expose()
    );
    assert!(after.expires_at.unwrap() > app.clock_now() + 7 * HOUR);
    assert!(after.refreshed_at.is_some());
    // Every request went out with the new token, none with the old one.
    let fresh = format!("Bearer {}", after.access.expose());
    let messages: Vec<_> = app
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert_eq!(messages.len(), 50);
    assert!(
        messages
            .iter()
            .all(|r| r.header("authorization") == Some(fresh.as_str()))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_401_gets_one_refresh_and_a_retry_on_the_same_account() {
    let app = spawn_app(max_then_other()).await;
    let old = stored(&app, "max").await.access;
    // An hour into the token's life it is refused (revoked upstream, say).
    app.clock.advance(HOUR);
    app.mock.expire_access_token(old.expose());
    let reply = app.post(&[], false).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "max")
    );
    assert_eq!(app.mock.refresh_grants(), 1);
    let r = &app.records().await[0];
    assert_eq!((r.attempts, r.success), (1, true));
    app.stop().await;
}

#[tokio::test]
async fn a_dead_refresh_token_marks_the_account_invalid_and_fails_over() {
    let app = spawn_app(oauth(vec![("max", 0, 60_000), ("other", 1, 8 * HOUR)])).await;
    let refresh = stored(&app, "max").await.refresh.unwrap();
    app.mock.kill_refresh_token(refresh.expose());
    let reply = app.post(&[], false).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "other")
    );
    let r = &app.records().await[0];
    assert_eq!(r.attempt_failures[0].reason, "token_refresh_refused");
    // Invalid everywhere: in routing, in /health, and in the database.
    let health = app.get("/health").await;
    assert_eq!(health.json()["accounts"]["invalid"], 1);
    app.state.writer.flush().await;
    let account = ccflare_storage::accounts::find(&app.db, "max")
        .await
        .unwrap();
    assert_eq!(account.status, AccountStatus::Invalid);
    assert_eq!(app.served_by().await, "other");
    assert_eq!(app.mock.refresh_grants(), 1, "a dead login is not retried");
    app.stop().await;
}

#[tokio::test]
async fn when_only_dead_logins_are_left_the_answer_says_to_log_in_again() {
    let app = spawn_app(oauth(vec![("max", 0, 60_000)])).await;
    let refresh = stored(&app, "max").await.refresh.unwrap();
    app.mock.kill_refresh_token(refresh.expose());
    for _ in 0..2 {
        let reply = app.post(&[], false).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("x-ccflare-account"), "");
        let body = reply.json();
        assert_eq!(
            body["error"]["message"],
            "no active accounts: 1 invalid; log in again with `ccflare-cli accounts reauth max`"
        );
        assert!(!String::from_utf8_lossy(&reply.body).contains(refresh.expose()));
    }
    assert_eq!(app.mock.refresh_grants(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_passing_refresh_failure_skips_the_account_then_retries() {
    // Already expired: without a refresh the account cannot serve.
    let app = spawn_app(oauth(vec![("max", 0, -1_000), ("other", 1, 8 * HOUR)])).await;
    app.mock.push_oauth_fault(Fault::Status(503));
    assert_eq!(app.served_by().await, "other");
    assert_eq!(app.served_by().await, "other", "skipped meanwhile");
    assert_eq!(app.mock.refresh_grants(), 1);
    app.clock.advance(61_000);
    assert_eq!(app.served_by().await, "max", "not killed");
    assert_eq!(app.mock.refresh_grants(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_subscription_window_benches_until_its_reset() {
    let app = spawn_app(max_then_other()).await;
    let token = stored(&app, "max").await.access;
    let reset_epoch = (app.clock_now() / 1000 + 3600) as u64;
    app.mock.push_fault(
        token.expose(),
        Fault::UnifiedRejected {
            reset_epoch,
            retry_after: Some(3600),
        },
    );
    assert_eq!(app.served_by().await, "other");
    // Resets are whole seconds: keep well clear of the boundary on both sides.
    app.clock.advance(3_590_000);
    assert_eq!(app.served_by().await, "other");
    app.clock.advance(11_000);
    assert_eq!(app.served_by().await, "max");
    app.stop().await;
}

/// `max` answers with `fault` (queued for its token), then `other` serves while `max` is
/// benched, until just before `reset_ms` and from just after it; the proxy's clock moves
/// through the bench in steps (`checks`, milliseconds from now) that keep several seconds clear
/// of the reset, which the headers give in whole seconds.
async fn benched_until(app: &common::App, reset_ms: i64, checks: &[i64]) {
    for &at in checks {
        app.clock.set(at);
        let expected = if at < reset_ms { "other" } else { "max" };
        assert_eq!(
            app.served_by().await,
            expected,
            "{} s after the start, the reset {} s after it",
            (at - checks[0]) / 1000,
            (reset_ms - checks[0]) / 1000
        );
    }
}

/// Queues for `max`'s token a 429 whose unified headers reject its window until an hour from
/// now, with `retry_after` if given; returns now and that reset, in ms.
async fn reject_max_for_an_hour(app: &common::App, retry_after: Option<u64>) -> (i64, i64) {
    let token = stored(app, "max").await.access;
    let start = app.clock_now();
    let reset_epoch = (start / 1000 + 3600) as u64;
    app.mock.push_fault(
        token.expose(),
        Fault::UnifiedRejected {
            reset_epoch,
            retry_after,
        },
    );
    (start, reset_epoch as i64 * 1000)
}

#[tokio::test]
async fn a_429_with_only_the_epoch_reset_benches_until_that_reset() {
    let app = spawn_app(max_then_other()).await;
    let (start, reset_ms) = reject_max_for_an_hour(&app, None).await;
    benched_until(
        &app,
        reset_ms,
        &[start, start + 600_000, reset_ms - 5_000, reset_ms + 5_000],
    )
    .await;
    let records = app.records().await;
    assert_eq!(records[0].attempt_failures[0].reason, "rate_limited");
    app.stop().await;
}

#[tokio::test]
async fn a_shorter_retry_after_does_not_end_a_rejected_windows_bench() {
    let app = spawn_app(max_then_other()).await;
    let (start, reset_ms) = reject_max_for_an_hour(&app, Some(60)).await;
    // Past the retry-after (a minute), the window is still closed.
    benched_until(
        &app,
        reset_ms,
        &[start, start + 120_000, reset_ms - 5_000, reset_ms + 5_000],
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_200_without_the_overall_reset_is_served_and_benches_until_the_window_reset() {
    let app = spawn_app(max_then_other()).await;
    let token = stored(&app, "max").await.access;
    let start = app.clock_now();
    let window_reset_epoch = (start / 1000 + 3600) as u64;
    app.mock.push_fault(
        token.expose(),
        Fault::Unified {
            status: "rejected".into(),
            reset_epoch: None,
            window_reset_epoch,
        },
    );
    // The last request the window let through is the client's answer.
    let reply = app.post(&[], false).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "max")
    );
    assert_eq!(reply.json()["type"], "message");
    let reset_ms = window_reset_epoch as i64 * 1000;
    benched_until(
        &app,
        reset_ms,
        &[
            start + 1_000,
            start + 600_000,
            reset_ms - 5_000,
            reset_ms + 5_000,
        ],
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_warned_subscription_keeps_its_session_and_new_work_goes_elsewhere() {
    let app = spawn_app(Options {
        strategy: Strategy::Session,
        session_timeout_ms: HOUR,
        ..max_then_other()
    })
    .await;
    let max = stored(&app, "max").await.access;
    let window_reset_epoch = (app.clock_now() / 1000 + 3 * 3600) as u64;
    // Every answer of `max` says it is close to its limit from now on.
    app.mock.set_sticky_fault(
        max.expose(),
        Some(Fault::Unified {
            status: "allowed_warning".into(),
            reset_epoch: Some(window_reset_epoch),
            window_reset_epoch,
        }),
    );
    let in_session = |key: &'static str| [("x-session-id", key)];
    let by = |reply: &ccflare_testkit::Reply| {
        (reply.status, reply.header("x-ccflare-account").to_owned())
    };
    let served = |name: &str| (StatusCode::OK, name.to_owned());
    // The warning comes with a normal answer: served, not benched.
    assert_eq!(by(&app.post(&in_session("s1"), false).await), served("max"));
    app.clock.advance(1_000);
    // The running session stays on its account (its prompt cache is there)…
    assert_eq!(by(&app.post(&in_session("s1"), false).await), served("max"));
    // …while requests without a session and new sessions go to the other account.
    assert_eq!(by(&app.post(&[], false).await), served("other"));
    assert_eq!(
        by(&app.post(&in_session("s2"), false).await),
        served("other")
    );
    assert_eq!(by(&app.post(&in_session("s1"), false).await), served("max"));
    // With the other account out of quota, the warned one serves everything.
    let other = stored(&app, "other").await.access;
    let other_reset = (app.clock_now() / 1000 + 3600) as u64;
    app.mock.push_fault(
        other.expose(),
        Fault::UnifiedRejected {
            reset_epoch: other_reset,
            retry_after: None,
        },
    );
    assert_eq!(by(&app.post(&[], false).await), served("max"));
    assert_eq!(by(&app.post(&in_session("s3"), false).await), served("max"));
    let records = app.records().await;
    let last = &records[records.len() - 2];
    assert_eq!(last.attempt_failures[0].reason, "rate_limited");
    app.stop().await;
}

#[tokio::test]
async fn a_passing_refresh_failure_keeps_a_token_that_still_works() {
    let app = spawn_app(oauth(vec![("max", 0, 60_000), ("other", 1, 8 * HOUR)])).await;
    let old = stored(&app, "max").await.access;
    app.mock.push_oauth_fault(Fault::Status(503));
    for _ in 0..3 {
        assert_eq!(app.served_by().await, "max");
    }
    assert_eq!(
        app.mock.refresh_grants(),
        1,
        "the failure answers for the next minute"
    );
    let bearer = format!("Bearer {}", old.expose());
    assert!(
        app.mock
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/messages")
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );
    app.clock.advance(REFRESH_BACKOFF + 1);
    assert_eq!(app.served_by().await, "max");
    assert_eq!(
        app.mock.refresh_grants(),
        2,
        "retried after the backoff, and it worked"
    );
    assert_ne!(stored(&app, "max").await.access.expose(), old.expose());
    app.stop().await;
}

#[tokio::test]
async fn a_401_on_a_token_refreshed_moments_ago_is_not_refreshed_again() {
    let app = spawn_app(max_then_other()).await;
    let token = stored(&app, "max").await.access;
    // A 401 that a fresh token gets is about the request: no refresh storm.
    app.mock.expire_access_token(token.expose());
    assert_eq!(app.served_by().await, "other");
    assert_eq!(app.mock.refresh_grants(), 0);
    app.stop().await;
}

const REFRESH_BACKOFF: i64 = 60_000;

/// Runs the futures concurrently on this task (no extra crate for `join_all`).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs = Vec::with_capacity(set.len());
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.extend(
        results
            .into_iter()
            .map(|r| r.expect("every future finished")),
    );
    outputs
}

#[tokio::test]
async fn a_client_hanging_up_mid_refresh_does_not_lose_the_rotation() {
    let app = spawn_app(oauth(vec![("max", 0, 60_000)])).await;
    let before = stored(&app, "max").await;
    // The endpoint rotates at once but its answer takes a second to arrive.
    app.mock.push_oauth_fault(Fault::Delay { millis: 1_000 });
    let request = app.request("/v1/messages", &[], common::message_body(false));
    let client = tokio::spawn(ccflare_testkit::client().request(request));
    // The client gives up once the refresh has reached the token endpoint (the mock's first
    // request), while the answer is on its way.
    tokio::time::timeout(ccflare_testkit::GUARD, app.mock.wait_requests(1))
        .await
        .expect("the refresh started");
    assert_eq!(app.mock.refresh_grants(), 1);
    client.abort();
    let _ = client.await;
    // The proxy has noticed the hang-up (the request is recorded as 499) before the next one.
    ccflare_testkit::eventually(
        ccflare_testkit::GUARD,
        "the hang-up is recorded",
        || async {
            app.records()
                .await
                .iter()
                .any(|r| r.status == 499)
                .then_some(())
        },
    )
    .await;
    // The next request waits for that refresh and uses its result; had the rotation been
    // dropped with the first request, the old refresh token would now be dead.
    let reply = app.post(&[], false).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "max")
    );
    assert_eq!(app.mock.refresh_grants(), 1);
    let after = stored(&app, "max").await;
    assert_ne!(
        after.refresh.unwrap().expose(),
        before.refresh.unwrap().expose()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restarted_server_routes_on_the_rate_limit_headers_it_last_saw() {
    let app = spawn_app(max_then_other()).await;
    let max = stored(&app, "max").await.access;
    let window_reset_epoch = (app.clock_now() / 1000 + 3 * 3600) as u64;
    app.mock.push_fault(
        max.expose(),
        Fault::Unified {
            status: "allowed_warning".into(),
            reset_epoch: Some(window_reset_epoch),
            window_reset_epoch,
        },
    );
    assert_eq!(app.served_by().await, "max");
    assert_eq!(
        app.served_by().await,
        "other",
        "the warned account ranks lower"
    );
    app.records().await; // the writer has persisted the headers
    // A restart: the in-memory pool is gone; what it knows comes from the database.
    let config = app.state.pool().config();
    *app.state.pool() = ccflare_pool::Pool::new(config);
    app.state.sync_accounts(&app.db).await.unwrap();
    assert_eq!(app.served_by().await, "other", "the warning was read back");
    // Past the window's reset the warning is over.
    app.clock.advance(3 * HOUR + 10_000);
    assert_eq!(app.served_by().await, "max");
    app.stop().await;
}

#[tokio::test]
async fn refreshed_tokens_the_database_cannot_take_serve_from_memory_and_are_stored_later() {
    let app = spawn_app(oauth(vec![("max", 0, 60_000)])).await;
    let before = stored(&app, "max").await;
    // Another program holds the database's write lock for longer than the busy timeout.
    let lock = ccflare_testkit::db::WriteLock::take(app.db.path()).await;
    // The refresh succeeds, the endpoint rotates, the save fails: the request is still served,
    // with the new token.
    let bearer = |app: &common::App| {
        let sent = app.mock.requests();
        let last = sent
            .iter()
            .rev()
            .find(|r| r.path == "/v1/messages")
            .unwrap();
        last.header("authorization").unwrap().to_owned()
    };
    for _ in 0..2 {
        let reply = app.post(&[], false).await;
        assert_eq!(
            (reply.status, reply.header("x-ccflare-account")),
            (StatusCode::OK, "max")
        );
    }
    assert_eq!(
        app.mock.refresh_grants(),
        1,
        "the kept tokens are used, not refreshed again"
    );
    let fresh = bearer(&app);
    assert_ne!(fresh, format!("Bearer {}", before.access.expose()));
    assert_eq!(
        stored(&app, "max").await.access.expose(),
        before.access.expose(),
        "the database still holds the old tokens"
    );
    let health = app
        .send(ccflare_testkit::get(&format!("{}/health", app.url)))
        .await;
    assert_eq!(health.json()["database"]["unsaved_logins"], 1);
    // Refused a few minutes later, the kept token is refreshed from the kept refresh token
    // (the stored one is dead), and the newer pair is kept in its place.
    app.clock.advance(5 * 60_000);
    app.mock
        .expire_access_token(fresh.trim_start_matches("Bearer "));
    let reply = app.post(&[], false).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "max")
    );
    assert_eq!(app.mock.refresh_grants(), 2);
    let fresh = bearer(&app);
    // The lock goes: the newest tokens are stored without another refresh.
    lock.release().await;
    let after = ccflare_testkit::eventually(
        ccflare_testkit::GUARD,
        "the kept tokens are stored once the database allows",
        || async {
            let now = stored(&app, "max").await;
            (format!("Bearer {}", now.access.expose()) == fresh).then_some(now)
        },
    )
    .await;
    assert_ne!(
        after.refresh.unwrap().expose(),
        before.refresh.unwrap().expose()
    );
    assert_eq!(app.mock.refresh_grants(), 2);
    let reply = app.post(&[], false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(bearer(&app), fresh);
    let health = app
        .send(ccflare_testkit::get(&format!("{}/health", app.url)))
        .await;
    assert_eq!(health.json()["database"]["unsaved_logins"], 0);
    app.stop().await;
}

/// At exit the server gives the refresher's tasks a wait (`finish_token_refreshes`): tokens
/// that wait for the database are stored if it comes back within it; otherwise the task is
/// stopped and the login named as lost.
#[tokio::test]
async fn at_exit_waiting_tokens_are_stored_within_the_wait_or_named_as_lost() {
    // The database stays locked through the wait: the login is lost, and named.
    let app = spawn_app(oauth(vec![("max", 0, 60_000)])).await;
    let lock = ccflare_testkit::db::WriteLock::take(app.db.path()).await;
    assert_eq!(app.post(&[], false).await.status, StatusCode::OK);
    assert_eq!(app.state.unsaved_logins().len(), 1);
    let lost = app
        .state
        .finish_token_refreshes(std::time::Duration::from_millis(200))
        .await;
    assert_eq!(lost, [std::sync::Arc::from("max")]);
    lock.release().await;
    app.stop().await;

    // The database comes back during the wait: the tokens are stored and nothing is lost.
    let app = spawn_app(oauth(vec![("max", 0, 60_000)])).await;
    let before = stored(&app, "max").await;
    let lock = ccflare_testkit::db::WriteLock::take(app.db.path()).await;
    assert_eq!(app.post(&[], false).await.status, StatusCode::OK);
    assert_eq!(app.state.unsaved_logins().len(), 1);
    let finishing = tokio::spawn({
        let state = app.state.clone();
        async move { state.finish_token_refreshes(ccflare_testkit::GUARD).await }
    });
    lock.release().await;
    let lost = finishing.await.expect("the wait ends");
    assert!(lost.is_empty(), "lost {lost:?}");
    assert_ne!(
        stored(&app, "max").await.access.expose(),
        before.access.expose(),
        "the refreshed tokens are stored"
    );
    app.stop().await;
}
