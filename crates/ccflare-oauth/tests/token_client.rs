//! The token client against the mock upstream's OAuth endpoints over real sockets: exchange,
//! rotation, dead grants, passing failures, and the Console key mint.

use ccflare_core::Secret;
use ccflare_mock::{Fault, MockUpstream};
use ccflare_oauth::{Endpoints, LoginFlow, Mode, OAuthError, TokenClient};

fn endpoints(mock: &MockUpstream) -> Endpoints {
    Endpoints {
        token_url: format!("{}/v1/oauth/token", mock.url()),
        api_key_url: format!("{}/api/oauth/claude_cli/create_api_key", mock.url()),
        ..Endpoints::default()
    }
}

fn state_of(flow: &LoginFlow) -> String {
    flow.authorize_url()
        .rsplit("state=")
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn login_exchange_and_rotating_refresh() {
    let mock = MockUpstream::start().await.unwrap();
    let client = TokenClient::new(endpoints(&mock));
    let flow = LoginFlow::start(Mode::Max, client.endpoints());
    let code = flow
        .check_pasted(&format!("code-123#{}", state_of(&flow)))
        .unwrap();
    let tokens = client.exchange(&flow, &code, 1_000).await.unwrap();
    assert!(tokens.access_token.expose().starts_with("sk-ant-oat01-"));
    assert_eq!(tokens.expires_at, 1_000 + 28_800_000);
    let exchange = mock.requests().pop().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&exchange.body).unwrap();
    assert_eq!(body["grant_type"], "authorization_code");
    assert_eq!(body["code"], "code-123");
    assert_eq!(
        body["redirect_uri"],
        "https://platform.claude.com/oauth/code/callback"
    );
    assert_eq!(body["code_verifier"].as_str().unwrap().len(), 43);
    assert!(
        exchange
            .header("user-agent")
            .unwrap()
            .starts_with("claude-cli/")
    );

    let first_refresh = tokens.refresh_token.unwrap();
    let rotated = client.refresh(&first_refresh, 2_000).await.unwrap();
    let second_refresh = rotated.refresh_token.unwrap();
    assert_ne!(second_refresh.expose(), first_refresh.expose());
    // Reusing the rotated-away token is a dead grant: a person must log in again.
    let reused = client.refresh(&first_refresh, 3_000).await.unwrap_err();
    assert!(
        matches!(reused, OAuthError::InvalidGrant { ref code } if code == "invalid_grant"),
        "{reused}"
    );
    assert!(!reused.is_transient());
    assert!(client.refresh(&second_refresh, 4_000).await.is_ok());
}

#[tokio::test]
async fn passing_failures_are_transient_and_errors_carry_no_secret() {
    let mock = MockUpstream::start().await.unwrap();
    let client = TokenClient::new(endpoints(&mock));
    let (_, refresh) = mock.issue_oauth_tokens();
    let refresh = Secret::new(refresh);
    mock.push_oauth_fault(Fault::Status(503));
    let error = client.refresh(&refresh, 0).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!error.to_string().contains(refresh.expose()));
    mock.push_oauth_fault(Fault::RateLimited {
        retry_after: Some(5),
        reset: None,
    });
    assert!(
        client
            .refresh(&refresh, 0)
            .await
            .unwrap_err()
            .is_transient()
    );
    // The token was not consumed by the failed calls.
    assert!(client.refresh(&refresh, 0).await.is_ok());

    let unreachable = TokenClient::new(Endpoints {
        token_url: "http://127.0.0.1:1/v1/oauth/token".into(),
        ..Endpoints::default()
    });
    assert!(
        unreachable
            .refresh(&refresh, 0)
            .await
            .unwrap_err()
            .is_transient()
    );
}

#[tokio::test]
async fn console_tokens_mint_an_api_key() {
    let mock = MockUpstream::start().await.unwrap();
    let client = TokenClient::new(endpoints(&mock));
    let (access, _) = mock.issue_oauth_tokens();
    let key = client
        .create_api_key(&Secret::new(access.clone()))
        .await
        .unwrap();
    assert!(key.expose().starts_with("sk-ant-api03-"));
    mock.expire_access_token(&access);
    assert!(client.create_api_key(&Secret::new(access)).await.is_err());
}
