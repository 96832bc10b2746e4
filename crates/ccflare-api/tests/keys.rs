//! The client key endpoints against a real proxy: a key created through the API is shown once
//! and works on `/v1` at once; listings never show it; a change (disable, limits, rename) and a
//! deletion take effect on the next request; `GET /api/me` answers the calling key's own use
//! with that key and without the admin key; requests and analytics break usage down by key.

mod common;

use ccflare_testkit::Reply;
use ccflare_testkit::http::{anthropic_post, request};
use common::{App, Options, message_body, spawn_app};
use http::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(app: &App, method: Method, path: &str, body: Value) -> Reply {
    app.call(method, path, &body.to_string()).await
}

/// A Messages request made with client key `key`.
async fn message_with(app: &App, key: &str) -> Reply {
    let url = format!("{}/v1/messages", app.url);
    let body = message_body("claude-sonnet-4-5", false, false);
    app.send(anthropic_post(&url, key, &[], body)).await
}

async fn me(app: &App, headers: &[(&str, &str)]) -> Reply {
    let url = format!("{}/api/me", app.url);
    app.send(request(Method::GET, &url, headers, "")).await
}

#[tokio::test]
async fn keys_are_created_shown_once_used_changed_and_deleted() {
    let app = spawn_app(Options::default()).await;
    app.state.client_keys().set_required(true);
    let created = call(
        &app,
        Method::POST,
        "/api/keys",
        json!({"name": "alice", "budget_usd": 5, "period": "week", "rpm": 100}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let created = created.json();
    let key = created["key"].as_str().expect("the key, once").to_owned();
    assert!(key.starts_with("ccf_") && key.len() == 47, "{key}");
    assert_eq!(created["prefix"], &key[..12]);
    assert_eq!(created["budget_usd"], 5.0);
    assert_eq!(created["period"], "week");
    let taken = call(&app, Method::POST, "/api/keys", json!({"name": "alice"})).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let bad = call(&app, Method::POST, "/api/keys", json!({"name": "a b"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // It works at once, and the listing never shows it.
    assert_eq!(message_with(&app, &key).await.status, StatusCode::OK);
    let listed = app.get("/api/keys").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.text().contains(&key[4..]), "{}", listed.text());
    let alice = &listed.json()["keys"][0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["status"], "active");
    assert!(
        alice["usage"]["cost_usd"].as_f64().unwrap() > 0.0,
        "{alice}"
    );

    // /api/me with the key itself.
    let mine = me(&app, &[("x-api-key", &key)]).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text());
    let mine = mine.json();
    assert_eq!(mine["name"], "alice");
    assert_eq!(mine["period"], "week");
    assert_eq!(mine["budget"]["usd"], 5.0);
    let left = mine["left"]["usd"].as_f64().unwrap();
    let used = mine["usage"]["cost_usd"].as_f64().unwrap();
    assert!(used > 0.0 && (left + used - 5.0).abs() < 1e-9, "{mine}");
    assert!(mine["usage"]["resets_at"].as_i64().unwrap() > app.state.now());
    let anonymous = me(&app, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let says = anonymous.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(says.contains("send your client key"), "{says}");
    let wrong = format!("ccf_{}", "z".repeat(43));
    let refused = me(&app, &[("authorization", &format!("Bearer {wrong}"))]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["error"]["type"], "authentication_error");

    // Requests and analytics by key.
    app.flushed().await;
    let by_key = app.get("/api/requests?key=alice").await.json();
    assert_eq!(by_key["requests"].as_array().unwrap().len(), 1, "{by_key}");
    assert_eq!(
        app.get("/api/requests?key=nobody").await.status,
        StatusCode::NOT_FOUND
    );
    let analytics = app.get("/api/analytics?range=24h").await.json();
    assert_eq!(analytics["client_keys"][0]["name"], "alice", "{analytics}");

    // Disabled: refused at once; limits and a new name; deleted: refused.
    let off = call(
        &app,
        Method::PATCH,
        "/api/keys/alice",
        json!({"status": "disabled"}),
    )
    .await;
    assert_eq!(off.status, StatusCode::OK);
    assert_eq!(
        message_with(&app, &key).await.status,
        StatusCode::UNAUTHORIZED
    );
    let changed = call(
        &app,
        Method::PATCH,
        "/api/keys/alice",
        json!({"status": "active", "name": "alice2", "budget_usd": null, "budget_tokens": 1}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let changed = changed.json();
    assert_eq!(changed["name"], "alice2");
    assert_eq!(changed["budget_usd"], Value::Null);
    assert_eq!(changed["budget_tokens"], 1);
    // One token is less than any request's worst case.
    let limited = message_with(&app, &key).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text()
    );
    assert!(!limited.header("retry-after").is_empty());
    let gone = app.call(Method::DELETE, "/api/keys/alice2", "").await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(
        message_with(&app, &key).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = app.call(Method::DELETE, "/api/keys/alice2", "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    app.stop().await;
}
