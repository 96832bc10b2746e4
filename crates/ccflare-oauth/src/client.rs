//! The token endpoint client: code exchange, rotating refresh, and the Console key mint, over
//! hyper with rustls. Every call has a total deadline (these are small JSON exchanges, unlike
//! proxied generations).

use crate::error::{DEAD_GRANT_CODES, OAuthError};
use crate::flow::{Endpoints, LoginFlow};
use bytes::Bytes;
use ccflare_core::{Millis, Secret};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::time::Duration;

/// Deadline of one call to the token endpoint.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the token endpoint.
const MAX_ANSWER: usize = 256 * 1024;

/// Tokens from a grant. `expires_at` is computed from `expires_in` at receipt.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret,
    /// Absent when the endpoint did not rotate it: keep the old one.
    pub refresh_token: Option<Secret>,
    pub expires_at: Millis,
}

#[derive(Deserialize)]
struct WireTokens {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct WireError {
    error: Option<String>,
}

#[derive(Deserialize)]
struct WireKey {
    raw_key: String,
}

#[derive(Clone, Debug)]
pub struct TokenClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: Endpoints,
}

impl TokenClient {
    pub fn new(endpoints: Endpoints) -> TokenClient {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        TokenClient {
            client: Client::builder(TokioExecutor::new()).build(https),
            endpoints,
        }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Exchanges the pasted code of `flow` for tokens.
    pub async fn exchange(
        &self,
        flow: &LoginFlow,
        code: &Secret,
        now: Millis,
    ) -> Result<TokenSet, OAuthError> {
        let body = serde_json::json!({
            "code": code.expose(),
            "state": flow.state(),
            "grant_type": "authorization_code",
            "client_id": self.endpoints.client_id,
            "redirect_uri": self.endpoints.redirect_uri,
            "code_verifier": flow.verifier().expose(),
        });
        self.grant(body, now).await
    }

    /// Trades a refresh token for new tokens. The refresh token rotates: store the new one
    /// before using the new access token.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        now: Millis,
    ) -> Result<TokenSet, OAuthError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose(),
            "client_id": self.endpoints.client_id,
        });
        self.grant(body, now).await
    }

    /// Mints an API key with a Console login's access token.
    pub async fn create_api_key(&self, access_token: &Secret) -> Result<Secret, OAuthError> {
        let request = http::Request::post(&self.endpoints.api_key_url)
            .header(AUTHORIZATION, format!("Bearer {}", access_token.expose()))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json, text/plain, */*")
            .header(USER_AGENT, &self.endpoints.user_agent)
            .body(Full::new(Bytes::new()))
            .map_err(|_| OAuthError::BadUrl {
                url: self.endpoints.api_key_url.clone(),
            })?;
        let (status, body) = self.call(request).await?;
        if status != 200 {
            return Err(failure(status, &body));
        }
        let key: WireKey = serde_json::from_slice(&body)
            .map_err(|_| OAuthError::Protocol("no raw_key in the answer".into()))?;
        Ok(Secret::new(key.raw_key))
    }

    async fn grant(&self, body: serde_json::Value, now: Millis) -> Result<TokenSet, OAuthError> {
        let request = http::Request::post(&self.endpoints.token_url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, &self.endpoints.user_agent)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| OAuthError::BadUrl {
                url: self.endpoints.token_url.clone(),
            })?;
        let (status, body) = self.call(request).await?;
        if status != 200 {
            return Err(failure(status, &body));
        }
        let tokens: WireTokens = serde_json::from_slice(&body)
            .map_err(|_| OAuthError::Protocol("no access_token in the answer".into()))?;
        // Always the returned lifetime; 8 hours is what the endpoint says today.
        let expires_in = tokens.expires_in.unwrap_or(28_800).max(0);
        Ok(TokenSet {
            access_token: Secret::new(tokens.access_token),
            refresh_token: tokens
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            expires_at: now + expires_in * 1000,
        })
    }

    async fn call(&self, request: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), OAuthError> {
        let transient = |reason: String| OAuthError::Transient {
            status: None,
            reason,
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| transient("timed out".into()))?
            .map_err(|e| {
                transient(if e.is_connect() {
                    "cannot connect".into()
                } else {
                    "connection failed".into()
                })
            })?;
        let status = response.status().as_u16();
        let body = tokio::time::timeout(
            CALL_TIMEOUT,
            Limited::new(response.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| transient("timed out reading the answer".into()))?
        .map_err(|_| transient("the answer could not be read".into()))?
        .to_bytes();
        Ok((status, body))
    }
}

/// Turns a non-200 answer into the right kind of failure.
fn failure(status: u16, body: &[u8]) -> OAuthError {
    let code = serde_json::from_slice::<WireError>(body)
        .ok()
        .and_then(|e| e.error);
    match code {
        Some(code) if DEAD_GRANT_CODES.contains(&code.as_str()) => {
            OAuthError::InvalidGrant { code }
        }
        _ if status == 429 || status >= 500 => OAuthError::Transient {
            status: Some(status),
            reason: format!("HTTP {status}"),
        },
        // 401/403 from the token endpoint itself: the grant or client is refused for good.
        _ if status == 401 || status == 403 => OAuthError::InvalidGrant {
            code: format!("http_{status}"),
        },
        Some(code) => OAuthError::Protocol(format!("HTTP {status}: {code}")),
        None => OAuthError::Protocol(format!("HTTP {status}")),
    }
}
