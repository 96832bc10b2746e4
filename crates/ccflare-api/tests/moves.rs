//! The cache re-created by moves (issue 16), end to end: real proxy, mock upstream, SQLite,
//! `/api/analytics`. Two accounts under the `session` strategy; a conversation pinned to the
//! first one sees it answer 429 and goes on on the second, writing its prompt cache again
//! there: analytics counts one move per conversation that left and the cache-creation tokens
//! of the turn that moved, and nothing for the turns that stayed.

mod common;

use ccflare_core::config::Strategy;
use ccflare_mock::Fault;
use ccflare_storage::rollups;
use ccflare_testkit::key;
use common::{App, Options, message_body, spawn_app};
use http::StatusCode;
use serde_json::Value;

/// The mock's cache-creation tokens for a body with `cache_control` (crates/ccflare-mock).
const CACHE_WRITE: i64 = 50;

/// One turn of conversation `session` (a cached prompt), asking for the routing explanation;
/// the account that served it and the explanation.
async fn turn(app: &App, session: &str) -> (String, String) {
    let body = message_body("claude-sonnet-4-5", false, true);
    let reply = app
        .message(
            &body,
            &[("x-session-id", session), ("x-ccflare-route", "1")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    (
        reply.header("x-ccflare-account").to_owned(),
        reply.header("x-ccflare-route").to_owned(),
    )
}

async fn totals(app: &App) -> Value {
    app.flushed().await;
    app.get("/api/analytics?range=1h").await.json()["totals"].clone()
}

fn moves(totals: &Value) -> (Option<i64>, Option<i64>) {
    (
        totals["session_moves"].as_i64(),
        totals["moved_cache_write_tokens"].as_i64(),
    )
}

#[tokio::test]
async fn analytics_count_the_cache_re_created_by_sessions_that_moved() {
    let app = spawn_app(Options {
        strategy: Strategy::Session,
        ..Options::default()
    })
    .await;
    // Both conversations start on the session strategy's current account.
    assert_eq!(turn(&app, "first").await.0, "alpha");
    assert_eq!(turn(&app, "second").await.0, "alpha");
    // A request without a session never moves.
    let plain = app
        .message(&message_body("claude-sonnet-4-5", false, true), &[])
        .await;
    assert_eq!(plain.status, StatusCode::OK);
    let before = totals(&app).await;
    assert_eq!(before["cache_write_tokens"], 3 * CACHE_WRITE);
    assert_eq!(moves(&before), (Some(0), Some(0)), "nothing moved yet");

    // alpha answers 429 for an hour: the turn fails over to beta, the conversation with it.
    app.mock.push_fault(
        &key("alpha"),
        Fault::RateLimited {
            retry_after: Some(3600),
            reset: None,
        },
    );
    let (account, route) = turn(&app, "first").await;
    assert_eq!(account, "beta");
    assert_eq!(
        route,
        "beta: session moved (its account is not routable); skipped alpha: already tried"
    );
    let after = totals(&app).await;
    assert_eq!(moves(&after), (Some(1), Some(CACHE_WRITE)));
    // By account: the move is counted where the cache was written again.
    let beta = after_group(&app, "beta").await;
    assert_eq!(moves(&beta), (Some(1), Some(CACHE_WRITE)));

    // The other conversation's pin is broken by the bench alpha got: its next turn moves too.
    let (account, route) = turn(&app, "second").await;
    assert_eq!(account, "beta");
    assert!(
        route.starts_with(
            "beta: session moved (its account is not routable); skipped alpha: rate limited until "
        ),
        "{route}"
    );
    // Turns that stay on their (new) account, and requests without a session, add nothing.
    assert_eq!(
        turn(&app, "first").await.1,
        "beta: pinned session; skipped alpha: rate limited until ".to_owned()
            + &rate_limited_until(&route)
    );
    let plain = app
        .message(&message_body("claude-sonnet-4-5", false, true), &[])
        .await;
    assert_eq!(plain.status, StatusCode::OK);
    let last = totals(&app).await;
    assert_eq!(last["requests"], 7);
    assert_eq!(last["cache_write_tokens"], 7 * CACHE_WRITE);
    assert_eq!(moves(&last), (Some(2), Some(2 * CACHE_WRITE)));

    // The rows say the same: the rollups rebuilt from them give the same figures.
    rollups::rebuild_all(&app.db).await.expect("rebuild");
    let rebuilt = app.get("/api/analytics?range=1h").await.json()["totals"].clone();
    assert_eq!(moves(&rebuilt), (Some(2), Some(2 * CACHE_WRITE)));
    app.stop().await;
}

/// The `accounts` breakdown's group of `name` in the last hour.
async fn after_group(app: &App, name: &str) -> Value {
    let report = app.get("/api/analytics?range=1h").await.json();
    report["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|group| group["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no group {name} in {report}"))
}

/// The time in "…rate limited until T" of an explanation.
fn rate_limited_until(route: &str) -> String {
    route
        .rsplit("rate limited until ")
        .next()
        .expect("a bench end")
        .to_owned()
}
