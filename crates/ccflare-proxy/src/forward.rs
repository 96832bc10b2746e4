//! Forwarding one `/v1/*` request (SPEC §4): read the body (capped), pick an account, send,
//! classify the answer, fail over before the first byte, and relay the chosen response with its
//! body tapped for usage. Every exit path finishes the request's record exactly once.

use crate::body::{ResponseBody, TappedBody, error_of};
use crate::error::AttemptError;
use crate::headers::{strip_hop_by_hop, upstream_request_headers};
use crate::recorder::{Outcome, Recorder};
use crate::state::AppState;
use bytes::Bytes;
use ccflare_core::error::anthropic_error_body;
use ccflare_core::ratelimit::{RateLimitSnapshot, classify};
use ccflare_core::record::AttemptFailure;
use ccflare_core::request::{RequestInfo, session_key};
use ccflare_core::usage::Usage;
use ccflare_pool::{Unavailable, UnavailableReason};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::sync::Arc;

/// A failed attempt kept in case no other account can serve: its response goes to the client
/// as it is (with its body read, which is small for errors).
struct LastFailure {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    account: Arc<str>,
}

/// Largest error body read from a failed attempt to relay it later.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub async fn forward(state: Arc<AppState>, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let id = state.next_request_id();
    let mut recorder = Recorder::new(state.clone(), id, parts.method.as_str(), parts.uri.path());

    let body = match Limited::new(body, state.config.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            let message = format!(
                "request body is larger than the {} byte limit",
                state.config.max_body_bytes
            );
            return local_error(
                &mut recorder,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &message,
                None,
            );
        }
        Err(error) => {
            tracing::debug!(%error, "reading the request body failed");
            return local_error(
                &mut recorder,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the request body could not be read",
                None,
            );
        }
    };
    let info = RequestInfo::from_body(&body);
    let session = session_key(
        |name| parts.headers.get(name).and_then(|v| v.to_str().ok()),
        &info,
    )
    .map(str::to_owned);
    recorder.set_request(info.model, info.stream, session.clone());
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = match state.upstream.uri_for(path_and_query) {
        Ok(uri) => uri,
        Err(_) => {
            return local_error(
                &mut recorder,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the request path is not valid",
                None,
            );
        }
    };

    let mut tried = Vec::new();
    let mut last_failure: Option<LastFailure> = None;
    let mut last_error: Option<AttemptError> = None;
    loop {
        let now = state.now();
        let pick = state.pool().select(now, session.as_deref(), &tried);
        let pick = match pick {
            Ok(pick) => pick,
            Err(unavailable) => {
                return match (unavailable.reason, last_failure, last_error) {
                    // Every account that could serve was tried: the last real upstream error
                    // says most, then the last connection failure.
                    (UnavailableReason::AllTried, Some(failure), _) => {
                        relay_failure(&mut recorder, failure)
                    }
                    (UnavailableReason::AllTried, None, Some(kind)) => {
                        upstream_unreachable(&mut recorder, kind)
                    }
                    _ => exhausted(&mut recorder, unavailable, now),
                };
            }
        };
        tried.push(pick.id);
        recorder.attempt(pick.id, &pick.name);

        let mut headers = parts.headers.clone();
        if upstream_request_headers(&mut headers, pick.kind, pick.credential.expose()).is_err() {
            // Only a credential with bytes no header may carry gets here.
            tracing::error!(account = %pick.name, "account credential is not a valid header value");
            recorder.attempt_failed(AttemptFailure {
                account: pick.name.to_string(),
                status: None,
                reason: "bad_credential".into(),
            });
            continue;
        }
        let mut upstream_request = Request::new(Full::new(body.clone()));
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri.clone();
        *upstream_request.headers_mut() = headers;

        let sent = tokio::time::timeout(
            state.config.idle_timeout,
            state.upstream.send(upstream_request),
        )
        .await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let kind = if error.is_connect() {
                    AttemptError::Connect
                } else {
                    AttemptError::Other
                };
                tracing::warn!(account = %pick.name, error = %error, "upstream request failed");
                recorder.attempt_failed(AttemptFailure {
                    account: pick.name.to_string(),
                    status: None,
                    reason: kind.label().into(),
                });
                last_error = Some(kind);
                if attempts_left(&state, tried.len()) {
                    continue;
                }
                return upstream_unreachable(&mut recorder, kind);
            }
            Err(_) => {
                tracing::warn!(account = %pick.name, "upstream sent no response headers within the idle timeout");
                recorder.attempt_failed(AttemptFailure {
                    account: pick.name.to_string(),
                    status: None,
                    reason: AttemptError::Timeout.label().into(),
                });
                last_error = Some(AttemptError::Timeout);
                if attempts_left(&state, tried.len()) {
                    continue;
                }
                return upstream_unreachable(&mut recorder, AttemptError::Timeout);
            }
        };

        let status = response.status();
        let now = state.now();
        let snapshot = RateLimitSnapshot::from_headers(
            response
                .headers()
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
            now,
        );
        let verdict = classify(status.as_u16(), &snapshot, now);
        let snapshot = snapshot.has_limits().then_some(snapshot);
        if let Some(changed) = state.pool().report(pick.id, verdict, snapshot, now) {
            state.persist(changed);
        }
        if verdict.fails_over() {
            tracing::info!(account = %pick.name, status = status.as_u16(), reason = verdict.label(), "failing over");
            recorder.attempt_failed(AttemptFailure {
                account: pick.name.to_string(),
                status: Some(status.as_u16()),
                reason: verdict.label().into(),
            });
            let (response_parts, response_body) = response.into_parts();
            // Read the (small) error body so it can be relayed if nothing else works; a body
            // that is slow or large is not worth waiting for.
            let limited = Limited::new(response_body, MAX_ERROR_BODY).collect();
            let body = match tokio::time::timeout(std::time::Duration::from_secs(5), limited).await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                _ => Bytes::new(),
            };
            last_failure = Some(LastFailure {
                status: response_parts.status,
                headers: response_parts.headers,
                body,
                account: pick.name.clone(),
            });
            if attempts_left(&state, tried.len()) {
                continue;
            }
            let failure = last_failure.take().expect("just set");
            return relay_failure(&mut recorder, failure);
        }
        return relay(&state, recorder, response, &pick.name);
    }
}

fn attempts_left(state: &AppState, tried: usize) -> bool {
    state.config.max_attempts == 0 || tried < state.config.max_attempts as usize
}

/// Relays the chosen upstream response: status and headers now, the body as it arrives.
fn relay(
    state: &AppState,
    recorder: Recorder,
    response: Response<Incoming>,
    account: &str,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let sse = content_type.starts_with("text/event-stream");
    // Usage can be read only from an uncompressed body.
    let readable = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_none_or(|v| v == "identity");
    add_ccflare_headers(&mut parts.headers, recorder.id(), Some(account));
    let tapped = TappedBody::new(
        body,
        recorder,
        parts.status.as_u16(),
        sse,
        readable,
        state.config.idle_timeout,
    );
    Response::from_parts(parts, ResponseBody::Tapped(Box::new(tapped)))
}

fn add_ccflare_headers(headers: &mut HeaderMap, request_id: &str, account: Option<&str>) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-ccflare-request-id", value);
    }
    if let Some(value) = account.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert("x-ccflare-account", value);
    }
}

/// An answer the proxy makes itself, in the Anthropic error shape.
fn local_error(
    recorder: &mut Recorder,
    status: StatusCode,
    error_type: &str,
    message: &str,
    retry_after_s: Option<i64>,
) -> Response<ResponseBody> {
    let body = anthropic_error_body(error_type, message, recorder.id());
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = retry_after_s {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    add_ccflare_headers(headers, recorder.id(), None);
    recorder.finish(Outcome {
        status: status.as_u16(),
        success: false,
        error: Some((error_type.to_owned(), message.to_owned())),
        model: None,
        usage: Usage::default(),
        usage_incomplete: false,
    });
    response
}

/// No account can take the request (SPEC §4.7).
fn exhausted(
    recorder: &mut Recorder,
    unavailable: Unavailable,
    now: i64,
) -> Response<ResponseBody> {
    let retry_after_s = unavailable.retry_at.map(|at| (at - now + 999) / 1000);
    match unavailable.reason {
        UnavailableReason::AllRateLimited => local_error(
            recorder,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &unavailable.to_string(),
            retry_after_s.or(Some(60)),
        ),
        UnavailableReason::AllBenched => local_error(
            recorder,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            &unavailable.to_string(),
            retry_after_s.or(Some(15)),
        ),
        _ => local_error(
            recorder,
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            &unavailable.to_string(),
            retry_after_s.or(Some(30)),
        ),
    }
}

/// Every attempt ended without a response.
fn upstream_unreachable(recorder: &mut Recorder, kind: AttemptError) -> Response<ResponseBody> {
    let message = match kind {
        AttemptError::Connect => "could not connect to the upstream API",
        AttemptError::Timeout => "the upstream API did not answer in time",
        AttemptError::Other => "the upstream API connection failed",
    };
    local_error(
        recorder,
        StatusCode::BAD_GATEWAY,
        "api_error",
        message,
        Some(5),
    )
}

/// Relays a failed attempt's response as the final answer.
fn relay_failure(recorder: &mut Recorder, failure: LastFailure) -> Response<ResponseBody> {
    let (error_type, message) = error_of(&failure.body, failure.status.as_u16());
    let mut headers = failure.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    add_ccflare_headers(&mut headers, recorder.id(), Some(&failure.account));
    let mut response = Response::new(ResponseBody::full(failure.body));
    *response.status_mut() = failure.status;
    *response.headers_mut() = headers;
    recorder.finish(Outcome {
        status: failure.status.as_u16(),
        success: false,
        error: Some((error_type, message)),
        model: None,
        usage: Usage::default(),
        usage_incomplete: false,
    });
    response
}
