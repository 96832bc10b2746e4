//! The OAuth side of the mock (protocol doc §6, §8.8): the token endpoint for both grants, with
//! refresh-token rotation and `invalid_grant` for a reused or killed refresh token, and the
//! console endpoint that mints an API key. Access tokens it issues are accepted as bearer
//! credentials by the Messages routes until a test expires them.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use http::StatusCode;
use serde_json::{Value, json};

use crate::fault::Fault;
use crate::request::ReceivedRequest;
use crate::response::{self, Response};

/// Lifetime the token endpoint reports, as the live one does (8 hours).
pub const DEFAULT_EXPIRES_IN: u64 = 28_800;

#[derive(Default)]
struct Tokens {
    /// Refresh tokens that may be used once more.
    live_refresh: HashSet<String>,
    /// Refresh tokens already rotated away or killed: using one is `invalid_grant`.
    dead_refresh: HashSet<String>,
    /// Access tokens a test declared expired.
    expired_access: HashSet<String>,
    faults: VecDeque<Fault>,
    expires_in: Option<u64>,
}

/// Token bookkeeping, shared by the handle and the handler.
#[derive(Default)]
pub(crate) struct OAuth {
    tokens: Mutex<Tokens>,
    counter: AtomicU64,
    refresh_grants: AtomicU64,
    code_grants: AtomicU64,
}

impl OAuth {
    fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh access/refresh pair, the refresh token live.
    pub(crate) fn issue(&self) -> (String, String) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let access = format!("sk-ant-oat01-mock-access-{n:06}-aaaaaaaaaaaaaaaa");
        let refresh = format!("sk-ant-ort01-mock-refresh-{n:06}-bbbbbbbbbbbbbbbb");
        self.tokens().live_refresh.insert(refresh.clone());
        (access, refresh)
    }

    pub(crate) fn expire_access(&self, token: &str) {
        self.tokens().expired_access.insert(token.to_owned());
    }

    pub(crate) fn is_expired(&self, token: &str) -> bool {
        self.tokens().expired_access.contains(token)
    }

    pub(crate) fn kill_refresh(&self, token: &str) {
        let mut tokens = self.tokens();
        tokens.live_refresh.remove(token);
        tokens.dead_refresh.insert(token.to_owned());
    }

    pub(crate) fn push_fault(&self, fault: Fault) {
        self.tokens().faults.push_back(fault);
    }

    pub(crate) fn set_expires_in(&self, seconds: u64) {
        self.tokens().expires_in = Some(seconds);
    }

    pub(crate) fn refresh_grants(&self) -> u64 {
        self.refresh_grants.load(Ordering::Relaxed)
    }

    pub(crate) fn code_grants(&self) -> u64 {
        self.code_grants.load(Ordering::Relaxed)
    }

    /// `POST /v1/oauth/token`.
    pub(crate) async fn token(&self, request: &ReceivedRequest, request_id: &str) -> Response {
        // Counted before any fault, so a test sees every call that reached the endpoint.
        let grant_type = serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|body| body.get("grant_type")?.as_str().map(str::to_owned));
        match grant_type.as_deref() {
            Some("authorization_code") => self.code_grants.fetch_add(1, Ordering::Relaxed),
            Some("refresh_token") => self.refresh_grants.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let fault = self.tokens().faults.pop_front();
        let delay = match &fault {
            Some(Fault::Delay { millis }) => Some(*millis),
            _ => None,
        };
        if let Some(response) = fault
            .filter(|_| delay.is_none())
            .and_then(|f| crate::fault::replacement_response(&f, request_id))
        {
            return response;
        }
        // The grant (and its rotation) takes effect at once; a `Delay` only holds the answer
        // back, as a slow network would, so a client that gives up meanwhile loses it.
        let response = self.answer(request, request_id);
        if let Some(millis) = delay {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        }
        response
    }

    fn answer(&self, request: &ReceivedRequest, request_id: &str) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body is not JSON",
                request_id,
            );
        };
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if field("client_id").is_empty() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                "client_id is required",
                request_id,
            );
        }
        match field("grant_type").as_str() {
            "authorization_code" => {
                let code = field("code");
                if code.is_empty() || code == "invalid-code" {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid authorization code",
                        request_id,
                    );
                }
                if field("code_verifier").is_empty() || field("redirect_uri").is_empty() {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "code_verifier and redirect_uri are required",
                        request_id,
                    );
                }
                self.grant(request_id)
            }
            "refresh_token" => {
                let presented = field("refresh_token");
                let rotated = {
                    let mut tokens = self.tokens();
                    if tokens.live_refresh.remove(&presented) {
                        tokens.dead_refresh.insert(presented);
                        true
                    } else {
                        false
                    }
                };
                if !rotated {
                    let message = "Refresh token not found or invalid";
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        message,
                        request_id,
                    );
                }
                self.grant(request_id)
            }
            other => oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("unsupported grant_type {other:?}"),
                request_id,
            ),
        }
    }

    fn grant(&self, request_id: &str) -> Response {
        let (access, refresh) = self.issue();
        let expires_in = self.tokens().expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
        let body = json!({
            "token_type": "Bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": expires_in,
            "scope": "user:inference user:profile",
            "account": { "uuid": "00000000-0000-4000-8000-000000000001", "email_address": "mock@example.com" },
        });
        response::json(StatusCode::OK, body.to_string(), request_id)
    }

    /// `POST /api/oauth/claude_cli/create_api_key`: a live OAuth access token mints a key.
    pub(crate) fn create_api_key(&self, request: &ReceivedRequest, request_id: &str) -> Response {
        let token = request.credential.as_deref().unwrap_or_default();
        if !request.credential_is_bearer()
            || !token.starts_with("sk-ant-oat")
            || self.is_expired(token)
        {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "a valid OAuth access token is required",
                request_id,
            );
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let body =
            json!({ "raw_key": format!("sk-ant-api03-mock-minted-{n:06}-cccccccccccccccc") });
        response::json(StatusCode::OK, body.to_string(), request_id)
    }
}

fn oauth_error(status: StatusCode, code: &str, description: &str, request_id: &str) -> Response {
    let body = json!({ "error": code, "error_description": description });
    response::json(status, body.to_string(), request_id)
}
