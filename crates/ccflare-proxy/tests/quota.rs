//! Quota-aware routing end to end (issue 16): subscriptions in the mock's window mode (token
//! budgets per five-hour window, a `rejected` 429 that locks a window), the proxy with the
//! reactive `priority` strategy and the predictive `headroom` one, on the same requests.

mod common;

use ccflare_core::config::Strategy;
use common::{App, Options, spawn_app};
use http::StatusCode;

const HOUR: i64 = 3_600_000;

/// `small` (a 20k-token window, tried first) and `big` (200k).
async fn pool(strategy: Strategy) -> App {
    pool_with(strategy, false).await
}

async fn pool_with(strategy: Strategy, pool_rate_limit_headers: bool) -> App {
    let app = spawn_app(Options {
        strategy,
        accounts: vec![],
        oauth_accounts: vec![("small", 0, 8 * HOUR), ("big", 1, 8 * HOUR)],
        pool_rate_limit_headers,
        ..Default::default()
    })
    .await;
    for (name, size) in [("small", 20_000), ("big", 200_000)] {
        let account = ccflare_storage::accounts::find(&app.db, name)
            .await
            .unwrap();
        let tokens = ccflare_storage::oauth::stored_tokens(&app.db, account.id)
            .await
            .unwrap();
        app.mock.set_window(tokens.access.expose(), size);
    }
    app
}

/// A Messages request whose prompt is `tokens` tokens (the mock counts bytes / 4), in the
/// conversation `session`.
async fn turn(app: &App, session: &str, tokens: usize) -> (StatusCode, String, Option<String>) {
    let (status, account, retry_after, _) = explained_turn(app, session, tokens, false).await;
    (status, account, retry_after)
}

/// [`turn`], asking for the routing explanation with `x-ccflare-route: 1` when `explain`; the
/// last value is the `x-ccflare-route` header the answer carried.
async fn explained_turn(
    app: &App,
    session: &str,
    tokens: usize,
    explain: bool,
) -> (StatusCode, String, Option<String>, Option<String>) {
    let frame = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":""}]}"#;
    let filler = "x".repeat(tokens * 4 - frame.len());
    let body = frame.replace(r#""content":"""#, &format!(r#""content":"{filler}""#));
    let mut headers = vec![("x-claude-code-session-id", session)];
    if explain {
        headers.push(("x-ccflare-route", "1"));
    }
    let reply = app.send(app.request("/v1/messages", &headers, body)).await;
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (retry_after, route) = (header("retry-after"), header("x-ccflare-route"));
    let account = reply.header("x-ccflare-account").to_owned();
    (reply.status, account, retry_after, route)
}

/// The shared start: one conversation takes `small` to half its window in two turns (so that
/// its size can be read from the utilisation), then a new conversation brings a 12,800-token
/// prompt, which the 10,000 tokens `small` has left cannot take.
async fn oversized_after_warm_up(app: &App) -> String {
    assert_eq!(turn(app, "first", 4_000).await.1, "small");
    assert_eq!(turn(app, "first", 6_000).await.1, "small");
    assert_eq!(turn(app, "first", 9_000).await.1, "small");
    let (status, account, _) = turn(app, "second", 12_800).await;
    assert_eq!(status, StatusCode::OK);
    account
}

fn small_window(app: &App) -> ccflare_mock::WindowReport {
    let windows = app.mock.windows();
    windows
        .into_iter()
        .find(|w| w.size_tokens == 20_000)
        .unwrap()
}

#[tokio::test]
async fn the_reactive_strategy_burns_a_window_on_a_request_that_cannot_fit() {
    let app = pool(Strategy::Priority).await;
    // Served in the end, by `big`, but only after `small` refused it and locked up.
    assert_eq!(oversized_after_warm_up(&app).await, "big");
    let small = small_window(&app);
    assert!(small.rejected);
    assert_eq!(small.rejections, 1);
    app.stop().await;
}

#[tokio::test]
async fn predictive_placement_sends_it_where_it_fits_and_no_window_is_rejected() {
    let app = pool(Strategy::Headroom).await;
    assert_eq!(oversized_after_warm_up(&app).await, "big");
    let small = small_window(&app);
    assert!(!small.rejected);
    assert_eq!((small.rejections, small.refused), (0, 0));
    // Room for the first conversation's next turn is still there: it stays.
    assert_eq!(turn(&app, "first", 10_000).await.1, "small");
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_fits_nowhere_is_refused_at_once_with_the_earliest_reset() {
    let app = pool(Strategy::Headroom).await;
    oversized_after_warm_up(&app).await;
    // `big` is sized now too (its utilisation moved by 6 %): fill it past what a 190k prompt
    // needs.
    assert_eq!(turn(&app, "second", 60_000).await.1, "big");
    let sent = app.mock.requests().len();
    let (status, account, retry_after) = turn(&app, "third", 190_000).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(account, "");
    // The windows reset in five hours: the client is told to come back then, not in a minute.
    let seconds: i64 = retry_after.expect("a retry-after").parse().unwrap();
    assert!(seconds > 4 * 3600, "{seconds}");
    // Nothing was sent upstream, and no window was burnt.
    assert_eq!(app.mock.requests().len(), sent);
    assert!(app.mock.windows().iter().all(|w| w.rejections == 0));
    let record = app.records().await.pop().unwrap();
    assert_eq!(record.status, 429);
    assert!(
        record
            .error_message
            .as_deref()
            .unwrap()
            .contains("no account has room for this request"),
        "{:?}",
        record.error_message
    );
    app.stop().await;
}

#[tokio::test]
async fn every_decision_is_explained_in_the_row_and_in_the_header_when_asked() {
    let app = pool(Strategy::Headroom).await;
    // Not asked: no header.
    let (_, _, _, route) = explained_turn(&app, "first", 4_000, false).await;
    assert_eq!(route, None);
    turn(&app, "first", 6_000).await;
    let (_, _, _, route) = explained_turn(&app, "first", 9_000, true).await;
    let route = route.expect("asked for");
    assert!(route.starts_with("small: pinned session ["), "{route}");
    assert!(route.contains("skipped big: ranked lower"), "{route}");
    let (_, account, _, route) = explained_turn(&app, "second", 12_800, true).await;
    assert_eq!(account, "big");
    let route = route.expect("asked for");
    assert!(
        route.starts_with("big: placed (most tokens left per session)"),
        "{route}"
    );
    assert!(route.contains("skipped small: no room ("), "{route}");
    // The rows keep the explanation whether or not it was asked for.
    let records = app.records().await;
    assert!(
        records[0]
            .route
            .as_ref()
            .unwrap()
            .text()
            .starts_with("small: placed")
    );
    assert_eq!(
        records
            .last()
            .unwrap()
            .route
            .as_ref()
            .map(ToString::to_string),
        Some(route.clone())
    );
    // A refusal explains itself too.
    let (status, _, _, route) = explained_turn(&app, "third", 190_000, true).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let route = route.expect("asked for");
    assert!(
        route.starts_with("no account; skipped small: no room"),
        "{route}"
    );
    app.stop().await;
}

/// The five-hour utilisation header a client sees on the third of three turns: `a` and `b`
/// start on `small` and `big`, then `a` goes on (its account at 32 % by then).
async fn utilisation_seen(pool_rate_limit_headers: bool) -> String {
    let app = pool_with(Strategy::Headroom, pool_rate_limit_headers).await;
    assert_eq!(turn(&app, "a", 4_000).await.1, "small");
    assert_eq!(turn(&app, "b", 4_000).await.1, "big");
    let frame = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":""}]}"#;
    let filler = "x".repeat(6_000 * 4 - frame.len());
    let body = frame.replace(r#""content":"""#, &format!(r#""content":"{filler}""#));
    let headers = [("x-claude-code-session-id", "a")];
    let reply = app.send(app.request("/v1/messages", &headers, body)).await;
    assert_eq!(reply.header("x-ccflare-account"), "small");
    let seen = reply
        .header("anthropic-ratelimit-unified-5h-utilization")
        .to_owned();
    app.stop().await;
    seen
}

#[tokio::test]
async fn pool_rate_limit_headers_describe_the_pool_only_when_asked_for() {
    // Off (the default): the serving account's own utilisation, bytes unchanged.
    assert_eq!(utilisation_seen(false).await, "0.32");
    // On: 4k of small's 20k and 4k of big's 200k are used: the pool is at 4 %.
    assert_eq!(utilisation_seen(true).await, "0.04");
}
