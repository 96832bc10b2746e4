//! The token endpoint client: code exchange, rotating refresh, and the Console key mint, over
//! `ccflare-http`'s small-exchange client. Every call has a total deadline and a size cap
//! (these are small JSON exchanges, unlike proxied generations).

use crate::error::{DEAD_GRANT_CODES, OAuthError};
use crate::flow::{Endpoints, LoginFlow};
use bytes::Bytes;
use ccflare_core::{Millis, Secret};
use ccflare_http::{Answer, HttpError, Limits};
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http_body_util::Full;
use serde::Deserialize;
use std::time::Duration;

/// The bounds of one call to the token endpoint: connecting, the whole call, and the largest
/// answer read.
const LIMITS: Limits = Limits {
    connect: Duration::from_secs(10),
    total: Duration::from_secs(30),
    max_body: 256 * 1024,
};

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
    http: ccflare_http::Client,
    endpoints: Endpoints,
}

/// What a POST to the endpoint carries.
enum Post<'a> {
    /// A grant: JSON, answered with JSON.
    Json(serde_json::Value),
    /// The key mint: an empty form with the bearer access token.
    Bearer(&'a Secret),
}

impl TokenClient {
    pub fn new(endpoints: Endpoints) -> TokenClient {
        TokenClient {
            http: ccflare_http::Client::new(LIMITS),
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
        let body = self
            .post(&self.endpoints.api_key_url, Post::Bearer(access_token))
            .await?;
        let key: WireKey = serde_json::from_slice(&body)
            .map_err(|_| OAuthError::Protocol("no raw_key in the answer".into()))?;
        Ok(Secret::new(key.raw_key))
    }

    async fn grant(&self, body: serde_json::Value, now: Millis) -> Result<TokenSet, OAuthError> {
        let body = self
            .post(&self.endpoints.token_url, Post::Json(body))
            .await?;
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

    /// POSTs to `url` and returns the body of a 200 answer; any other answer becomes the
    /// failure it names.
    async fn post(&self, url: &str, post: Post<'_>) -> Result<Bytes, OAuthError> {
        let bad_url = || OAuthError::BadUrl {
            url: url.to_owned(),
        };
        let request = http::Request::post(url).header(USER_AGENT, &self.endpoints.user_agent);
        let (request, body) = match post {
            Post::Json(body) => (
                request
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "application/json"),
                Bytes::from(body.to_string()),
            ),
            Post::Bearer(token) => {
                let mut bearer = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| OAuthError::Protocol("the access token is not a header".into()))?;
                bearer.set_sensitive(true);
                (
                    request
                        .header(AUTHORIZATION, bearer)
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .header(ACCEPT, "application/json, text/plain, */*"),
                    Bytes::new(),
                )
            }
        };
        let request = request.body(Full::new(body)).map_err(|_| bad_url())?;
        let Answer { status, body, .. } = self.http.exchange(request).await.map_err(transient)?;
        if status != 200 {
            return Err(failure(status.as_u16(), &body));
        }
        Ok(body)
    }
}

/// A failed exchange: always worth retrying later.
fn transient(error: HttpError) -> OAuthError {
    let reason = match error {
        HttpError::Timeout(_) => "timed out",
        HttpError::Connect(_) => "cannot connect",
        HttpError::Send(_) => "connection failed",
        HttpError::Body(_) | HttpError::TooLarge { .. } => "the answer could not be read",
    };
    OAuthError::Transient {
        status: None,
        reason: reason.into(),
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
