//! OAuth logins through the management API against the mock's token endpoint: start → paste →
//! finish adds a subscription account that then serves proxied requests with its bearer token;
//! a Console login mints an API-key account; a bad state is refused before anything is
//! exchanged; flows expire after 10 minutes (on the app's manual clock) and are single-use;
//! re-authentication revives an invalid account and keeps its priority. No answer carries a
//! token, the verifier or the pasted code.

mod common;

use ccflare_core::{AccountStatus, Secret};
use ccflare_mock::Fault;
use ccflare_storage::{accounts, oauth};
use ccflare_testkit::Reply;
use common::{App, Options, code_verifiers, message_body, spawn_app, state_of, use_mock_oauth};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const LIFETIME_MS: i64 = 10 * 60 * 1000;

/// An app with no accounts whose OAuth endpoints are the mock's.
async fn app_with(accounts: Vec<(&'static str, i64)>) -> App {
    let app = spawn_app(Options {
        accounts,
        ..Options::default()
    })
    .await;
    use_mock_oauth(&app);
    app
}

/// Every answer a test saw, to search for secrets at the end.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, reply: Reply) -> Reply {
        self.0.push(reply.text().to_owned());
        reply
    }

    /// No answer carried a token, a minted key's body, the verifier or a pasted code.
    fn assert_clean(&self, app: &App, codes: &[&str]) {
        let verifiers = code_verifiers(&app.mock);
        for text in &self.0 {
            for secret in ["sk-ant-oat", "sk-ant-ort", "mock-minted", "code_verifier"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            for secret in verifiers
                .iter()
                .map(String::as_str)
                .chain(codes.iter().copied())
            {
                assert!(!text.contains(secret), "a secret in {text}");
            }
        }
    }
}

async fn post(app: &App, seen: &mut Seen, path: &str, body: Value) -> Reply {
    seen.keep(app.call(Method::POST, path, &body.to_string()).await)
}

/// Starts a login for `body`: the flow's id and the `state` of its authorize URL. (The tests
/// of what a start answers read the answer themselves.)
async fn start_login(app: &App, seen: &mut Seen, body: Value) -> (String, String) {
    let start = post(app, seen, "/api/oauth/start", body).await.json();
    let url = start["authorize_url"].as_str().unwrap();
    (start["flow_id"].as_str().unwrap().to_owned(), state_of(url))
}

/// Finishes the login `flow_id` with the pasted text.
async fn finish_login(app: &App, seen: &mut Seen, flow_id: &str, pasted: &str) -> Reply {
    let body = json!({"flow_id": flow_id, "code": pasted});
    post(app, seen, "/api/oauth/finish", body).await
}

fn error_type(reply: &Reply) -> String {
    reply.json()["error"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_subscription_login_adds_an_account_that_serves_requests() {
    let app = app_with(vec![]).await;
    let mut seen = Seen::default();
    let started_at = app.state.now();
    let start = post(
        &app,
        &mut seen,
        "/api/oauth/start",
        json!({"mode": "max", "name": "personal", "priority": 3}),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text());
    let start = start.json();
    let keys: Vec<&str> = start
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["authorize_url", "expires_at", "flow_id", "warning"],
        "exactly these fields"
    );
    assert_eq!(start["expires_at"], started_at + LIFETIME_MS);
    assert!(
        start["warning"].as_str().unwrap().contains("banned"),
        "the subscription risk is said"
    );
    let url = start["authorize_url"].as_str().unwrap();
    assert!(url.starts_with("https://claude.ai/oauth/authorize?code=true&client_id="));
    assert!(url.contains("code_challenge_method=S256"));
    let flow_id = start["flow_id"].as_str().unwrap();
    assert!(flow_id.len() >= 32, "{flow_id}");
    let state = state_of(url);

    let code = "pasted-code-0001";
    let finish = finish_login(&app, &mut seen, flow_id, &format!("  {code}#{state}\n")).await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.text());
    assert_eq!(app.mock.code_grants(), 1);
    let exchange = app
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/oauth/token")
        .unwrap();
    let sent: Value = serde_json::from_slice(&exchange.body).unwrap();
    assert_eq!(
        (sent["code"].as_str(), sent["state"].as_str()),
        (Some(code), Some(state.as_str()))
    );
    let account = finish.json();
    assert_eq!(account["name"], "personal");
    assert_eq!(account["kind"], "oauth");
    assert_eq!(account["priority"], 3);
    assert_eq!(account["state"], "active");
    assert_eq!(account["token_expires_at"], started_at + 28_800_000);
    assert_eq!(account["token_refreshed_at"], started_at);
    assert_eq!(account["credential"], "sk-ant-…aaaa");

    // Single use.
    let again = finish_login(&app, &mut seen, flow_id, &format!("{code}#{state}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&again), "not_found_error");
    assert!(
        again.text().contains("expired or unknown"),
        "{}",
        again.text()
    );
    assert_eq!(app.mock.code_grants(), 1);

    // Live at once: the next request is served by it, with its bearer token.
    let reply = seen.keep(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await,
    );
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let upstream = app.mock.requests().pop().unwrap();
    assert_eq!(upstream.path, "/v1/messages");
    assert!(
        upstream
            .header("authorization")
            .unwrap_or_default()
            .starts_with("Bearer sk-ant-oat01-mock-access-")
    );
    assert!(upstream.header("x-api-key").is_none());
    assert!(
        upstream
            .header("anthropic-beta")
            .unwrap_or_default()
            .contains("oauth-2025-04-20")
    );

    // The listing shows the token's times and the subscription windows it answered with.
    let listed = seen.keep(app.get("/api/accounts").await).json();
    let listed = &listed["accounts"][0];
    assert_eq!(listed["name"], "personal");
    assert_eq!(listed["token_expires_at"], started_at + 28_800_000);
    assert_eq!(listed["token_refreshed_at"], started_at);
    let windows = &listed["subscription"];
    assert_eq!(windows["status"], "allowed", "{listed}");
    assert!(windows["utilization_5h"].is_number(), "{windows}");
    assert!(windows["resets_5h"].is_number(), "{windows}");
    assert!(windows["utilization_7d"].is_number(), "{windows}");
    assert!(windows["resets_7d"].is_number(), "{windows}");
    let one = seen.keep(app.get("/api/accounts/personal").await).json();
    assert_eq!(one["subscription"]["status"], "allowed");

    seen.assert_clean(&app, &[code]);
    app.stop().await;
}

#[tokio::test]
async fn a_console_login_mints_an_api_key_account() {
    let app = app_with(vec![]).await;
    let mut seen = Seen::default();
    let start = post(
        &app,
        &mut seen,
        "/api/oauth/start",
        json!({"mode": "console", "name": "team"}),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text());
    let start = start.json();
    assert!(start["warning"].is_null(), "no subscription, no warning");
    let url = start["authorize_url"].as_str().unwrap();
    assert!(url.starts_with("https://console.anthropic.com/oauth/authorize?"));
    let code = "console-code-0002";
    let finish = finish_login(
        &app,
        &mut seen,
        start["flow_id"].as_str().unwrap(),
        &format!("{code}#{}", state_of(url)),
    )
    .await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.text());
    let account = finish.json();
    assert_eq!(
        (account["name"].as_str(), account["kind"].as_str()),
        (Some("team"), Some("api_key"))
    );
    assert_eq!(account["credential"], "sk-ant-…cccc");
    assert!(account["token_expires_at"].is_null());
    assert!(account["token_refreshed_at"].is_null());
    let stored = accounts::find(&app.db, "team").await.unwrap();
    assert!(
        stored
            .credential
            .expose()
            .starts_with("sk-ant-api03-mock-minted-")
    );
    // The minted key serves requests.
    let reply = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let upstream = app.mock.requests().pop().unwrap();
    assert_eq!(
        upstream.credential.as_deref(),
        Some(stored.credential.expose())
    );
    seen.assert_clean(&app, &[code]);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_paste_is_refused_before_any_exchange_and_the_flow_stays_open() {
    let app = app_with(vec![]).await;
    let mut seen = Seen::default();
    let (flow_id, state) =
        start_login(&app, &mut seen, json!({"mode": "max", "name": "careful"})).await;
    for (pasted, says) in [
        ("code-0003#another-logins-state", "state mismatch"),
        ("code-0003", "CODE#STATE"),
        (&format!("#{state}") as &str, "CODE#STATE"),
    ] {
        let reply = finish_login(&app, &mut seen, &flow_id, pasted).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{pasted}");
        assert_eq!(error_type(&reply), "invalid_request_error");
        assert!(reply.text().contains(says), "{}", reply.text());
    }
    assert_eq!(app.mock.code_grants(), 0, "nothing was exchanged");
    assert!(accounts::list(&app.db).await.unwrap().is_empty());
    // The corrected paste still works.
    let finish = finish_login(&app, &mut seen, &flow_id, &format!("code-0003#{state}")).await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.text());
    assert_eq!(app.mock.code_grants(), 1);
    seen.assert_clean(&app, &["code-0003"]);
    app.stop().await;
}

#[tokio::test]
async fn flows_expire_after_ten_minutes_and_unknown_ones_are_404() {
    let app = app_with(vec![]).await;
    let mut seen = Seen::default();
    let mut flows = Vec::new();
    for name in ["first", "second"] {
        flows.push(start_login(&app, &mut seen, json!({"mode": "max", "name": name})).await);
    }
    // At exactly ten minutes a flow is still open; a millisecond later it is not.
    app.clock.advance(LIFETIME_MS);
    let (id, state) = &flows[0];
    let on_time = finish_login(&app, &mut seen, id, &format!("code-0004#{state}")).await;
    assert_eq!(on_time.status, StatusCode::CREATED, "{}", on_time.text());
    app.clock.advance(1);
    let (id, state) = &flows[1];
    let late = finish_login(&app, &mut seen, id, &format!("code-0005#{state}")).await;
    assert_eq!(late.status, StatusCode::NOT_FOUND, "{}", late.text());
    assert_eq!(error_type(&late), "not_found_error");
    assert!(late.text().contains("login flow expired or unknown"));
    assert_eq!(app.mock.code_grants(), 1, "the late code was not exchanged");
    let unknown = finish_login(&app, &mut seen, "no-such-flow", "x#y").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    seen.assert_clean(&app, &["code-0004", "code-0005"]);
    app.stop().await;
}

#[tokio::test]
async fn start_checks_the_mode_and_the_name_before_any_login() {
    let app = app_with(vec![("alpha", 0)]).await;
    let mut seen = Seen::default();
    let taken = post(
        &app,
        &mut seen,
        "/api/oauth/start",
        json!({"mode": "max", "name": "alpha"}),
    )
    .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text());
    assert_eq!(error_type(&taken), "conflict_error");
    for body in [
        json!({"mode": "team", "name": "x"}),
        json!({"mode": "max", "name": "two words"}),
        json!({"mode": "max", "name": "a/b"}),
        json!({"mode": "max", "name": "-x"}),
        json!({"mode": "max", "name": ""}),
        json!({"mode": "max", "name": "sk-ant-api03-secretsecret"}),
        json!({"mode": "max"}),
        json!({"mode": "max", "name": "x", "nmae": "y"}),
    ] {
        let reply = post(&app, &mut seen, "/api/oauth/start", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        assert!(!reply.text().contains("secretsecret"), "{}", reply.text());
    }
    let finish_typo = post(
        &app,
        &mut seen,
        "/api/oauth/finish",
        json!({"flow": "x", "code": "a#b"}),
    )
    .await;
    assert_eq!(finish_typo.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.mock.code_grants(), 0);
    app.stop().await;
}

#[tokio::test]
async fn token_endpoint_failures_keep_or_close_the_flow() {
    let app = app_with(vec![]).await;
    let mut seen = Seen::default();
    let (flow_id, state) =
        start_login(&app, &mut seen, json!({"mode": "max", "name": "flaky"})).await;
    // A passing failure: 502, and the same paste works on a retry.
    app.mock.push_oauth_fault(Fault::Status(503));
    let failed = finish_login(&app, &mut seen, &flow_id, &format!("code-0006#{state}")).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.text());
    assert_eq!(error_type(&failed), "api_error");
    assert!(failed.text().contains("retry"), "{}", failed.text());
    let retried = finish_login(&app, &mut seen, &flow_id, &format!("code-0006#{state}")).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text());
    assert_eq!(app.mock.code_grants(), 2);

    // A refused code: 400 with the OAuth error, and the flow is closed.
    let (flow_id, state) =
        start_login(&app, &mut seen, json!({"mode": "max", "name": "refused"})).await;
    let dead = finish_login(&app, &mut seen, &flow_id, &format!("invalid-code#{state}")).await;
    assert_eq!(dead.status, StatusCode::BAD_REQUEST, "{}", dead.text());
    assert_eq!(error_type(&dead), "invalid_request_error");
    assert!(dead.text().contains("invalid_grant"), "{}", dead.text());
    let closed = finish_login(&app, &mut seen, &flow_id, &format!("code-0007#{state}")).await;
    assert_eq!(closed.status, StatusCode::NOT_FOUND);
    assert!(accounts::find(&app.db, "refused").await.is_err());
    seen.assert_clean(&app, &["code-0006", "code-0007", "invalid-code"]);
    app.stop().await;
}

#[tokio::test]
async fn reauth_revives_an_invalid_account_and_keeps_its_priority() {
    let app = app_with(vec![("alpha", 0)]).await;
    let mut seen = Seen::default();
    let (access, refresh) = app.mock.issue_oauth_tokens();
    let now = app.state.now();
    let added = oauth::add_oauth_account(
        &app.db,
        "sub",
        &Secret::new(access.clone()),
        Some(&Secret::new(refresh)),
        now + 1_000,
        Some(-7),
        now,
    )
    .await
    .unwrap();
    accounts::set_status(&app.db, "sub", AccountStatus::Invalid, now)
        .await
        .unwrap();
    app.state.sync_accounts(&app.db).await.unwrap();
    let before = seen.keep(app.get("/api/accounts/sub").await).json();
    assert_eq!(before["state"], "invalid");

    // An API-key account has no login to renew; an unknown one is 404.
    let key_account = post(&app, &mut seen, "/api/accounts/alpha/reauth", json!({})).await;
    assert_eq!(key_account.status, StatusCode::BAD_REQUEST);
    assert!(
        key_account.text().contains("API key"),
        "{}",
        key_account.text()
    );
    let unknown = post(&app, &mut seen, "/api/accounts/nobody/reauth", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    app.clock.advance(5_000);
    let start = seen.keep(app.call(Method::POST, "/api/accounts/sub/reauth", "").await);
    assert_eq!(start.status, StatusCode::OK, "{}", start.text());
    let start = start.json();
    assert!(start["warning"].is_string());
    let url = start["authorize_url"].as_str().unwrap();
    assert!(url.starts_with("https://claude.ai/oauth/authorize?"));
    let finish = finish_login(
        &app,
        &mut seen,
        start["flow_id"].as_str().unwrap(),
        &format!("code-0008#{}", state_of(url)),
    )
    .await;
    assert_eq!(finish.status, StatusCode::OK, "{}", finish.text());
    let account = finish.json();
    assert_eq!(account["id"], added.id.0);
    assert_eq!(account["priority"], -7);
    assert_eq!(
        (account["status"].as_str(), account["state"].as_str()),
        (Some("active"), Some("active"))
    );
    assert_eq!(account["token_refreshed_at"], now + 5_000);
    assert_eq!(account["token_expires_at"], now + 5_000 + 28_800_000);
    let tokens = oauth::stored_tokens(&app.db, added.id).await.unwrap();
    assert_ne!(tokens.access.expose(), access, "a new token");

    // Live at once: it serves (priority -7 beats alpha's 0) with the new token.
    let reply = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let upstream = app.mock.requests().pop().unwrap();
    assert_eq!(upstream.credential.as_deref(), Some(tokens.access.expose()));
    seen.assert_clean(&app, &["code-0008"]);
    app.stop().await;
}
