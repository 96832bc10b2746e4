//! The mock's OAuth endpoints over a real socket: both grants, rotation, reuse detection,
//! expired access tokens and the console key mint.

use ccflare_mock::{Fault, MockUpstream};
use ccflare_testkit::http::request;
use http::Method;
use serde_json::{Value, json};

/// A JSON POST to the mock, with a bearer token if given: the status and the JSON answer
/// (`null` when the answer is not JSON).
async fn post(mock: &MockUpstream, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    let url = format!("{}{path}", mock.url());
    let reply =
        ccflare_testkit::send(request(Method::POST, &url, &headers, body.to_string())).await;
    (
        reply.status.as_u16(),
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

const CLIENT: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";

#[tokio::test]
async fn code_exchange_then_rotating_refresh() {
    let mock = MockUpstream::start().await.unwrap();
    let exchange = json!({"code": "abc", "state": "s", "grant_type": "authorization_code", "client_id": CLIENT, "redirect_uri": "https://x/cb", "code_verifier": "v"});
    let (status, tokens) = post(&mock, "/v1/oauth/token", None, exchange).await;
    assert_eq!(status, 200);
    assert_eq!(tokens["expires_in"], 28800);
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh.starts_with("sk-ant-ort01-"));
    assert!(
        tokens["access_token"]
            .as_str()
            .unwrap()
            .starts_with("sk-ant-oat01-")
    );

    let grant = |token: &str| json!({"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT});
    let (status, rotated) = post(&mock, "/v1/oauth/token", None, grant(&refresh)).await;
    assert_eq!(status, 200);
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);
    // The old refresh token was rotated away: reusing it is invalid_grant.
    let (status, error) = post(&mock, "/v1/oauth/token", None, grant(&refresh)).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!((mock.code_grants(), mock.refresh_grants()), (1, 2));

    let (status, error) = post(&mock, "/v1/oauth/token", None, json!({"grant_type": "authorization_code", "code": "invalid-code", "client_id": CLIENT, "redirect_uri": "r", "code_verifier": "v"})).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn faults_killed_tokens_expiry_and_key_minting() {
    let mock = MockUpstream::start().await.unwrap();
    let (access, refresh) = mock.issue_oauth_tokens();
    mock.push_oauth_fault(Fault::Status(503));
    let grant =
        json!({"grant_type": "refresh_token", "refresh_token": refresh, "client_id": CLIENT});
    assert_eq!(
        post(&mock, "/v1/oauth/token", None, grant.clone()).await.0,
        503
    );
    mock.kill_refresh_token(&refresh);
    assert_eq!(
        post(&mock, "/v1/oauth/token", None, grant).await.1["error"],
        "invalid_grant"
    );

    let (status, minted) = post(
        &mock,
        "/api/oauth/claude_cli/create_api_key",
        Some(&access),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        minted["raw_key"]
            .as_str()
            .unwrap()
            .starts_with("sk-ant-api03-")
    );
    mock.expire_access_token(&access);
    assert_eq!(
        post(
            &mock,
            "/api/oauth/claude_cli/create_api_key",
            Some(&access),
            Value::Null
        )
        .await
        .0,
        401
    );
    let message = json!({"model": "m", "max_tokens": 1, "messages": []});
    let bearer = format!("Bearer {access}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("anthropic-beta", "oauth-2025-04-20"),
        ("anthropic-version", "2023-06-01"),
    ];
    let url = format!("{}/v1/messages", mock.url());
    let reply =
        ccflare_testkit::send(request(Method::POST, &url, &headers, message.to_string())).await;
    assert_eq!(reply.status, 401);
    assert!(String::from_utf8_lossy(&reply.body).contains("OAuth token has expired"));
}
