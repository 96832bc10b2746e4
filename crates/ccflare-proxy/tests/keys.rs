//! Client keys on `/v1` against the mock upstream (SPEC §11): a missing, wrong, disabled or
//! expired key is a 401 in Anthropic's shape that sends nothing upstream and is still
//! recorded; a good key is accepted from each of the three headers and never forwarded; a
//! burst of 50 concurrent requests with a budget for 10 serves at most 10 and answers the rest
//! 429 with `retry-after`, benching no account; a key disabled in the database stops working
//! through the server's own sync, with no reload.

mod common;

use ccflare_core::client_key::{BudgetPeriod, KeyLimits, KeyStatus};
use ccflare_core::{Millis, Secret};
use ccflare_proxy::{KEY_HEADER, Shutdown, spawn_account_sync};
use ccflare_storage::keys::{self, ClientKey, KeyChange};
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::{GUARD, Reply, eventually, key};
use common::{App, CLIENT_KEY, Options, message_body, spawn_app};
use http::StatusCode;
use std::sync::Arc;

/// Creates a key in the app's database and loads it into the proxy.
async fn create(
    app: &App,
    name: &str,
    limits: KeyLimits,
    expires_at: Option<Millis>,
) -> (ClientKey, Secret) {
    let created = keys::create(&app.db, name, &limits, expires_at, app.clock_now())
        .await
        .expect("key created");
    app.state
        .sync_client_keys(&app.db)
        .await
        .expect("keys load");
    created
}

/// A Messages request with `headers` (and the client's own `x-api-key` unless replaced).
async fn post_with(app: &App, api_key: &str, headers: &[(&str, &str)]) -> Reply {
    let url = format!("{}/v1/messages", app.url);
    app.send(anthropic_post(&url, api_key, headers, message_body(false)))
        .await
}

fn assert_refused(reply: &Reply, says: &str, secret: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");
    if !secret.is_empty() {
        assert!(
            !reply.text().contains(&secret[4..]),
            "the key is echoed: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn missing_wrong_disabled_and_expired_keys_are_refused_and_nothing_goes_upstream() {
    let app = spawn_app(Options::default()).await;
    app.state.client_keys().set_required(true);
    let now = app.clock_now();
    let (_, good) = create(&app, "good", KeyLimits::default(), None).await;
    let (disabled, disabled_key) = create(&app, "off", KeyLimits::default(), None).await;
    keys::update(
        &app.db,
        "off",
        &KeyChange {
            status: Some(KeyStatus::Disabled),
            ..KeyChange::default()
        },
        now,
    )
    .await
    .unwrap();
    let (expired, expired_key) = create(&app, "old", KeyLimits::default(), Some(now - 1)).await;
    app.state.sync_client_keys(&app.db).await.unwrap();
    // A key that looks right but was never issued: the good one with its last character changed.
    let mut wrong = good.expose().to_owned();
    let last = if wrong.ends_with('A') { "B" } else { "A" };
    wrong.replace_range(wrong.len() - 1.., last);

    assert_refused(
        &post_with(&app, CLIENT_KEY, &[]).await,
        "requires a client key",
        "",
    );
    assert_refused(&post_with(&app, &wrong, &[]).await, "not valid", &wrong);
    assert_refused(
        &post_with(&app, disabled_key.expose(), &[]).await,
        "disabled",
        disabled_key.expose(),
    );
    let bearer = format!("Bearer {}", expired_key.expose());
    assert_refused(
        &post_with(&app, CLIENT_KEY, &[("authorization", &bearer)]).await,
        "expired",
        expired_key.expose(),
    );
    assert!(app.mock.requests().is_empty(), "nothing went upstream");

    let records = app.records().await;
    assert_eq!(records.len(), 4);
    for record in &records {
        assert_eq!(record.status, 401);
        assert_eq!(record.error_type.as_deref(), Some("authentication_error"));
        assert_eq!(record.account_name, None);
    }
    let recorded_keys: Vec<Option<String>> = records.iter().map(|r| r.client_key.clone()).collect();
    assert_eq!(
        recorded_keys,
        [
            None,
            None,
            Some(disabled.id.to_string()),
            Some(expired.id.to_string())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_good_key_is_taken_from_each_header_and_never_forwarded() {
    let app = spawn_app(Options::default()).await;
    app.state.client_keys().set_required(true);
    let (stored, good) = create(&app, "alice", KeyLimits::default(), None).await;
    let bearer = format!("Bearer {}", good.expose());
    let sent: [(&str, Vec<(&str, &str)>); 3] = [
        (good.expose(), vec![]),
        (CLIENT_KEY, vec![("authorization", bearer.as_str())]),
        (CLIENT_KEY, vec![(KEY_HEADER, good.expose())]),
    ];
    for (api_key, headers) in &sent {
        let reply = post_with(&app, api_key, headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-ccflare-account"), "alpha");
    }
    let upstream = app.mock.requests();
    assert_eq!(upstream.len(), 3);
    for request in &upstream {
        assert_eq!(request.credential.as_deref(), Some(key("alpha").as_str()));
        for (name, value) in &request.headers {
            assert!(
                !value.contains(&good.expose()[4..]),
                "{name} carried the key upstream"
            );
            assert_ne!(name, KEY_HEADER);
            assert!(
                !value.contains(CLIENT_KEY),
                "{name} carried the client's own key"
            );
        }
    }
    let records = app.records().await;
    assert!(
        records
            .iter()
            .all(|r| r.status == 200 && r.client_key == Some(stored.id.to_string())),
        "{records:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn keys_are_optional_on_loopback_but_a_wrong_one_is_still_refused() {
    let app = spawn_app(Options::default()).await;
    let (_, good) = create(&app, "bob", KeyLimits::default(), None).await;
    assert_eq!(
        post_with(&app, CLIENT_KEY, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_with(&app, good.expose(), &[]).await.status,
        StatusCode::OK
    );
    let wrong = format!("ccf_{}", "x".repeat(43));
    assert_refused(&post_with(&app, &wrong, &[]).await, "not valid", &wrong);
    let by_header = post_with(&app, CLIENT_KEY, &[(KEY_HEADER, "not-even-a-key")]).await;
    assert_refused(&by_header, "not valid", "");
    assert_eq!(app.mock.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_50_with_a_budget_for_10_serves_at_most_10() {
    let app = spawn_app(Options::default()).await;
    app.state.client_keys().set_required(true);
    // What one request uses, as the mock counts it: the same body every time.
    let (_, free) = create(&app, "calibration", KeyLimits::default(), None).await;
    let first = post_with(&app, free.expose(), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let usage = &first.json()["usage"];
    let per_request =
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap();
    let limits = KeyLimits {
        budget_tokens: Some(10 * per_request),
        period: BudgetPeriod::Day,
        ..KeyLimits::default()
    };
    let (_, burst) = create(&app, "burst", limits, None).await;
    let app = Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let app = app.clone();
        let key = burst.expose().to_owned();
        tasks.spawn(async move { post_with(&app, &key, &[]).await });
    }
    let mut served = 0;
    let mut limited = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        match reply.status {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry: i64 = reply.header("retry-after").parse().unwrap();
                assert!(retry >= 1, "retry-after {retry}");
                let body = reply.json();
                assert_eq!(body["error"]["type"], "rate_limit_error");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("client key's ccflare budget"), "{message}");
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!((1..=10).contains(&served), "{served} served");
    assert_eq!(served + limited, 50);
    assert_eq!(app.mock.requests().len(), 1 + served);
    // A key's budget never benches an account.
    let now = app.clock_now();
    assert_eq!(app.state.pool().counts(now).available, 1);
    let records = app.records().await;
    assert_eq!(records.iter().filter(|r| r.status == 429).count(), limited);
    assert!(
        records
            .iter()
            .all(|r| r.account_name.as_deref() != Some("alpha") || r.status == 200)
    );
    Arc::try_unwrap(app).ok().expect("one owner").stop().await;
}

#[tokio::test]
async fn a_key_disabled_in_the_database_stops_working_through_the_sync() {
    let app = spawn_app(Options::default()).await;
    app.state.client_keys().set_required(true);
    let (_, carol) = create(&app, "carol", KeyLimits::default(), None).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sync = spawn_account_sync(app.state.clone(), app.db.clone(), Shutdown::new(stopped));
    assert_eq!(
        post_with(&app, carol.expose(), &[]).await.status,
        StatusCode::OK
    );
    // As `ccflare-cli keys disable` does it: the database only, no reload.
    let change = KeyChange {
        status: Some(KeyStatus::Disabled),
        ..KeyChange::default()
    };
    keys::update(&app.db, "carol", &change, app.clock_now())
        .await
        .unwrap();
    // The sync runs every second; GUARD only bounds a failure.
    eventually(GUARD, "the disabled key is refused", || async {
        let reply = post_with(&app, carol.expose(), &[]).await;
        (reply.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    // Its last use was stored by the sync.
    let stored = keys::find(&app.db, "carol").await.unwrap();
    assert!(stored.last_used.is_some());
    stop.send_replace(true);
    sync.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_budget_spent_before_a_restart_stays_spent() {
    let app = spawn_app(Options::default()).await;
    let limits = KeyLimits {
        budget_usd: Some(1.0),
        period: BudgetPeriod::Month,
        ..KeyLimits::default()
    };
    let (stored, dana) = create(&app, "dana", limits, None).await;
    // What an earlier run of the server recorded for this key this month: the whole budget.
    app.state
        .writer
        .record(ccflare_core::record::RequestRecord {
            id: "ccf_earlier_1".into(),
            started_at: app.clock_now() - 1000,
            method: "POST".into(),
            path: "/v1/messages".into(),
            status: 200,
            success: true,
            attempts: 1,
            cost_usd: 1.0,
            client_key: Some(stored.id.to_string()),
            ..Default::default()
        });
    app.state.writer.flush().await;
    app.state
        .start_client_keys(&app.db)
        .await
        .expect("keys seeded");
    let reply = post_with(&app, dana.expose(), &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("$1.00 per month is spent"), "{message}");
    assert!(app.mock.requests().is_empty());
    app.stop().await;
}
