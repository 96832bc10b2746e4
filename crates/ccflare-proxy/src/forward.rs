//! Forwarding one `/v1/*` request (SPEC §4): read the body (capped), pick an account, send,
//! classify the answer, fail over before the first byte, and relay the chosen response with its
//! body tapped for usage. Every exit path finishes the request's record exactly once.

use crate::body::{BodyKind, ResponseBody, TappedBody, error_of, join};
use crate::error::AttemptError;
use crate::headers::{upstream_request_headers, upstream_response_headers};
use crate::recorder::{CLIENT_CLOSED, Outcome, Recorder};
use crate::state::AppState;
use bytes::Bytes;
use ccflare_core::error::anthropic_error_body;
use ccflare_core::ratelimit::{RateLimitSnapshot, classify};
use ccflare_core::record::AttemptFailure;
use ccflare_core::request::{RequestInfo, escapes_v1, session_key};
use ccflare_core::{AccountId, AccountKind, Secret};
use ccflare_pool::{Pick, Unavailable, UnavailableReason};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// A failed attempt kept in case no other account can serve: its response goes to the client
/// as it is (with its body read, which is small for errors).
struct LastFailure {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    account: (AccountId, Arc<str>),
}

/// Largest error body read from a failed attempt to relay it later.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long a failed attempt's error body may take to arrive before it is given up.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// A non-streaming request sends no byte until the whole answer is ready, which can take
/// minutes; it gets at least this long for its response headers (the Anthropic SDKs' own
/// default timeout), whatever the idle timeout.
const NON_STREAMING_HEADER_WAIT: Duration = Duration::from_secs(600);

pub async fn forward(state: Arc<AppState>, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let id = state.next_request_id();
    let mut recorder = Recorder::new(state.records(), id, parts.method.as_str(), parts.uri.path());

    let body = match read_body(&state, &parts, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal.answer(&mut recorder, state.config.max_body_bytes),
    };
    let info = RequestInfo::from_body(&body);
    let session = session_key(
        |name| parts.headers.get(name).and_then(|v| v.to_str().ok()),
        &info,
    )
    .map(str::to_owned);
    let stream = info.stream;
    recorder.set_request(info.model, stream, session.clone());
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = (!escapes_v1(parts.uri.path()))
        .then(|| state.upstream.uri_for(path_and_query).ok())
        .flatten();
    let Some(uri) = uri else {
        let message = "the request path is not valid";
        return local_error(
            &mut recorder,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message,
            None,
        );
    };
    let header_wait = if stream {
        state.config.idle_timeout
    } else {
        state.config.idle_timeout.max(NON_STREAMING_HEADER_WAIT)
    };

    let mut tried = Vec::new();
    let mut last_failure: Option<LastFailure> = None;
    let mut last_error: Option<AttemptError> = None;
    'attempts: loop {
        let now = state.now();
        let pick = state.pool().select(now, session.as_deref(), &tried);
        let pick = match pick {
            Ok(pick) => pick,
            Err(unavailable) => {
                return no_account_left(&mut recorder, unavailable, last_failure, last_error, now);
            }
        };
        tried.push(pick.id);
        recorder.attempt(pick.id, &pick.name);

        // OAuth tokens are refreshed ahead of expiry (and once after a 401, below).
        let refresher = (pick.kind == AccountKind::OAuth)
            .then(|| state.tokens())
            .flatten();
        let mut credential = pick.credential.clone();
        if let Some(refresher) = refresher {
            match refresher.fresh_token(&pick, None).await {
                Ok(token) => credential = token,
                Err(refused) => {
                    recorder.attempt_failed(failure(&pick, None, refused.label()));
                    continue 'attempts;
                }
            }
        }
        let mut refreshed_after_401 = false;
        let response = loop {
            let Some(upstream_request) = build_request(&parts, &uri, &body, &pick, &credential)
            else {
                // Only a stored credential with bytes no header may carry gets here.
                tracing::error!(account = %pick.name, "account credential is not a valid header value");
                recorder.attempt_failed(failure(&pick, None, "bad_credential"));
                continue 'attempts;
            };
            let sent =
                tokio::time::timeout(header_wait, state.upstream.send(upstream_request)).await;
            let response = match sent {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    let kind = if error.is_connect() {
                        AttemptError::Connect
                    } else {
                        AttemptError::Other
                    };
                    tracing::warn!(account = %pick.name, %error, "upstream request failed");
                    recorder.attempt_failed(failure(&pick, None, kind.label()));
                    last_error = Some(kind);
                    if attempts_left(&state, tried.len()) {
                        continue 'attempts;
                    }
                    return upstream_unreachable(&mut recorder, kind);
                }
                Err(_) => {
                    tracing::warn!(account = %pick.name, "upstream sent no response headers in time");
                    recorder.attempt_failed(failure(&pick, None, AttemptError::Timeout.label()));
                    last_error = Some(AttemptError::Timeout);
                    if attempts_left(&state, tried.len()) {
                        continue 'attempts;
                    }
                    return upstream_unreachable(&mut recorder, AttemptError::Timeout);
                }
            };
            // A refused OAuth token (expired early, revoked by a newer login) gets one
            // refresh and one more try on the same account before failing over.
            if response.status() == StatusCode::UNAUTHORIZED
                && !refreshed_after_401
                && let Some(refresher) = refresher
            {
                refreshed_after_401 = true;
                drop(response);
                match refresher.fresh_token(&pick, Some(&credential)).await {
                    Ok(token) => {
                        tracing::info!(account = %pick.name, "OAuth token refused; retrying with a refreshed one");
                        credential = token;
                        continue;
                    }
                    Err(refused) => {
                        recorder.attempt_failed(failure(&pick, Some(401), refused.label()));
                        continue 'attempts;
                    }
                }
            }
            break response;
        };

        let status = response.status();
        let now = state.now();
        let headers = response.headers().iter();
        let snapshot = RateLimitSnapshot::from_headers(
            headers.filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
            now,
        );
        let verdict = classify(status.as_u16(), &snapshot, now);
        let snapshot = snapshot.has_limits().then_some(snapshot);
        let changed = state.pool().report(pick.id, verdict, snapshot, now);
        if let Some(changed) = changed {
            state.persist(changed);
        }
        if !verdict.fails_over() {
            return relay(&state, recorder, response, &pick.name);
        }
        tracing::info!(account = %pick.name, status = status.as_u16(), reason = verdict.label(), "failing over");
        recorder.attempt_failed(failure(&pick, Some(status.as_u16()), verdict.label()));
        last_failure = Some(read_failure(response, &pick).await);
        if !attempts_left(&state, tried.len()) {
            return relay_failure(&mut recorder, last_failure.take().expect("just set"));
        }
    }
}

/// Why a request body was not accepted.
enum BodyRefusal {
    TooLarge,
    /// The client hung up while sending.
    ClientGone,
    /// The client sent nothing for the idle timeout.
    TimedOut,
}

impl BodyRefusal {
    fn answer(self, recorder: &mut Recorder, limit: usize) -> Response<ResponseBody> {
        match self {
            BodyRefusal::TooLarge => {
                let message = format!("request body is larger than the {limit} byte limit");
                local_error(
                    recorder,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    &message,
                    None,
                )
            }
            BodyRefusal::TimedOut => {
                let message = "the request body did not arrive in time";
                local_error(
                    recorder,
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    message,
                    None,
                )
            }
            BodyRefusal::ClientGone => {
                // Nobody is there to read an answer; the record says what happened.
                let message = "the client closed the connection while sending the request";
                local_error(
                    recorder,
                    StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST),
                    "client_closed",
                    message,
                    None,
                )
            }
        }
    }
}

/// Reads the whole request body, refusing a declared or actual size over the limit without
/// reading further, and a client that sends nothing for the idle timeout. The timeout is per
/// frame: a large upload that keeps arriving, however slowly, is never cut.
async fn read_body(state: &AppState, parts: &Parts, body: Incoming) -> Result<Bytes, BodyRefusal> {
    let limit = state.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyRefusal::TooLarge);
    }
    let mut body = Limited::new(body, limit);
    let mut chunks = Vec::new();
    loop {
        let frame = match tokio::time::timeout(state.config.idle_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(error))) if error.is::<LengthLimitError>() => {
                return Err(BodyRefusal::TooLarge);
            }
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "reading the request body failed");
                return Err(BodyRefusal::ClientGone);
            }
            Err(_) => return Err(BodyRefusal::TimedOut),
        };
        // Trailers carry nothing the upstream needs.
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            chunks.push(data);
        }
    }
    Ok(join(chunks))
}

fn build_request(
    parts: &Parts,
    uri: &http::Uri,
    body: &Bytes,
    pick: &Pick,
    credential: &Secret,
) -> Option<Request<Full<Bytes>>> {
    let mut headers = parts.headers.clone();
    upstream_request_headers(&mut headers, pick.kind, credential.expose()).ok()?;
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers;
    Some(request)
}

fn failure(pick: &Pick, status: Option<u16>, reason: &str) -> AttemptFailure {
    AttemptFailure {
        account: pick.name.to_string(),
        status,
        reason: reason.to_owned(),
    }
}

/// Reads a failed attempt's (small) error body so it can be relayed if nothing else works; a
/// body that is slow or large is not worth waiting for.
async fn read_failure(response: Response<Incoming>, pick: &Pick) -> LastFailure {
    let (parts, body) = response.into_parts();
    let limited = Limited::new(body, MAX_ERROR_BODY).collect();
    let body = match tokio::time::timeout(ERROR_BODY_TIMEOUT, limited).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    };
    LastFailure {
        status: parts.status,
        headers: parts.headers,
        body,
        account: (pick.id, pick.name.clone()),
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
    upstream_response_headers(&mut parts.headers);
    let kind = BodyKind::of(&parts.headers);
    add_ccflare_headers(&mut parts.headers, recorder.id(), Some(account));
    let tapped = TappedBody::new(
        body,
        recorder,
        parts.status.as_u16(),
        kind,
        state.config.idle_timeout,
    );
    Response::from_parts(parts, ResponseBody::tapped(tapped))
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
    recorder.finish(Outcome::failed(
        status.as_u16(),
        (error_type.to_owned(), message.to_owned()),
    ));
    response
}

/// The pool has no account left for this request.
fn no_account_left(
    recorder: &mut Recorder,
    unavailable: Unavailable,
    last_failure: Option<LastFailure>,
    last_error: Option<AttemptError>,
    now: i64,
) -> Response<ResponseBody> {
    let retry_after_s = unavailable.retry_at.map(|at| (at - now + 999) / 1000);
    let message = unavailable.to_string();
    match (unavailable.reason, last_failure, last_error) {
        // Benched accounts: SPEC §4.7's answer, with the earliest recovery as Retry-After
        // (better than the one account's own retry-after a relayed 429 would carry).
        (UnavailableReason::AllRateLimited, ..) => local_error(
            recorder,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &message,
            retry_after_s.or(Some(60)),
        ),
        (UnavailableReason::AllBenched, ..) => local_error(
            recorder,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            &message,
            retry_after_s.or(Some(15)),
        ),
        // Every account this request could use answered with an error (or was just found
        // invalid): the last real upstream answer says most, then the last connection failure.
        (_, Some(failure), _) => relay_failure(recorder, failure),
        (UnavailableReason::AllTried, None, Some(kind)) => upstream_unreachable(recorder, kind),
        _ => local_error(
            recorder,
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            &message,
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
    upstream_response_headers(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let (account_id, account_name) = failure.account;
    add_ccflare_headers(&mut headers, recorder.id(), Some(&account_name));
    recorder.answered_by(account_id, &account_name);
    let mut response = Response::new(ResponseBody::full(failure.body));
    *response.status_mut() = failure.status;
    *response.headers_mut() = headers;
    recorder.finish(Outcome::failed(
        failure.status.as_u16(),
        (error_type, message),
    ));
    response
}
