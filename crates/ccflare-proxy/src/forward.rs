//! Forwarding one `/v1/*` request (SPEC §4): refuse what a browser sends and paths that are no
//! documented route, read the body (capped in size, in time and by the memory budget of all
//! bodies), then make attempts. An attempt picks an account this request has not tried, sends
//! (refreshing an OAuth token when due, and once after a 401 on an inference route),
//! classifies the answer, and comes to one [`Attempt`]: served (the
//! response is relayed with its body tapped for usage), retry with a reason (fail over: nothing
//! has reached the client yet), or final (no account is left). Attempts are the turns of one
//! bounded loop, so `max_attempts` bounds every path by construction; running out of attempts
//! is answered as running out of accounts is. Every exit finishes the request's record once.

use crate::body::{BodyKind, ResponseBody, TappedBody, error_of, join};
use crate::budget::BodyHold;
use crate::error::AttemptError;
use crate::headers::{upstream_request_headers, upstream_response_headers};
use crate::recorder::{CLIENT_CLOSED, Outcome, Recorder};
use crate::resources;
use crate::routes::Route;
use crate::state::AppState;
use crate::tokens::RefreshFailure;
use crate::uploads;
use crate::upstream::{Reuse, UpstreamBody};
use bytes::Bytes;
use ccflare_core::browser::{self, BrowserRefusal};
use ccflare_core::error::anthropic_error_body;
use ccflare_core::ratelimit::{RateLimitSnapshot, Verdict, classify};
use ccflare_core::record::AttemptFailure;
use ccflare_core::request::{RequestInfo, escapes_v1, session_key};
use ccflare_core::{AccountId, AccountKind, Secret};
use ccflare_pool::{Demand, Pick, Unavailable, UnavailableReason};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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
    /// Why it failed over (the verdict's label).
    reason: &'static str,
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
    let (mut parts, body) = request.into_parts();
    let id = state.next_request_id();
    let mut recorder = Recorder::new(state.records(), id, parts.method.as_str(), parts.uri.path());
    // The client key (SPEC §11), before anything is read or sent: a refused request costs
    // nothing upstream, and is still recorded.
    let key = match state
        .client_keys()
        .authenticate(&mut parts.headers, state.now())
    {
        Ok(key) => {
            if let Some(key) = &key {
                recorder.set_client_key(key.id);
            }
            key
        }
        Err(refusal) => {
            if let Some(key) = refusal.key() {
                recorder.set_client_key(key.id);
            }
            let message = refusal.message();
            let status = StatusCode::UNAUTHORIZED;
            return local_error(
                &mut recorder,
                status,
                "authentication_error",
                &message,
                None,
            );
        }
    };

    // Refused before a byte of the body is read: nothing of it is held, nothing goes upstream.
    // A request with a valid client key is no web page's: no page can know the key.
    if key.is_none()
        && let Some(refusal) = browser_refusal(&state, &parts.headers)
    {
        return local_error(
            &mut recorder,
            StatusCode::FORBIDDEN,
            "permission_error",
            &refusal,
            None,
        );
    }
    let route = Route::of(parts.uri.path());
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
    if route == Route::Unknown && !state.config.allow_all_paths {
        let message = format!(
            "ccflare forwards only the API's documented routes; {} {} is not one \
             (the allow_all_paths option forwards every /v1 path)",
            parts.method,
            parts.uri.path()
        );
        return local_error(
            &mut recorder,
            StatusCode::NOT_FOUND,
            "not_found_error",
            &message,
            None,
        );
    }

    // Batches and files (`resources`): an id ccflare saw made goes to the account that made it,
    // and batch answers name ccflare's origin in `results_url`.
    let family = resources::Family::of(parts.uri.path());
    let owner = family.and_then(|_| resources::owner_for(&state, parts.uri.path()));
    let origin = family.and_then(|_| {
        let peer = parts.extensions.get::<resources::Peer>().copied();
        resources::client_origin(&parts.headers, peer)
    });

    // Uploads and batch creation: streamed upstream under their own limits (`uploads`).
    if let Some(limit) = uploads::streamed_limit(&parts.method, parts.uri.path()) {
        let upload = uploads::Upload { uri, limit, key };
        let method = parts.method.clone();
        return match uploads::send(&state, &mut recorder, parts, body, upload).await {
            uploads::Sent::Served { response, account } => {
                serve(
                    &state,
                    recorder,
                    response,
                    account,
                    (family, &method),
                    origin,
                )
                .await
            }
            uploads::Sent::Refused(r) => {
                let (status, retry) = (r.status, r.retry_after_s);
                local_error(&mut recorder, status, r.kind, &r.message, retry)
            }
        };
    }
    let (body, hold) = match read_body(&state, &parts, body).await {
        Ok(read) => read,
        Err(refusal) => return refusal.answer(&mut recorder, &state),
    };
    let info = RequestInfo::from_body(&body);
    let session = session_key(
        |name| parts.headers.get(name).and_then(|v| v.to_str().ok()),
        &info,
    )
    .map(str::to_owned);
    let stream = info.stream;
    let (body_len, max_tokens) = (body.len(), info.max_tokens);
    let route_is_messages = parts.uri.path() == "/v1/messages";
    // The key's limits: its worst case is reserved against its budget before forwarding.
    let admission = key.map(|key| {
        let (model, max_tokens) = (info.model.as_deref(), info.max_tokens);
        state
            .client_keys()
            .admit(&key, model, max_tokens, body.len(), state.now())
    });
    recorder.set_request(info.model, stream, session.clone());
    match admission {
        Some(Ok(ticket)) => recorder.admitted(ticket),
        Some(Err(limit)) => {
            let status = StatusCode::TOO_MANY_REQUESTS;
            let retry = Some(limit.retry_after_s);
            return local_error(
                &mut recorder,
                status,
                "rate_limit_error",
                &limit.message,
                retry,
            );
        }
        None => {}
    }
    let header_wait = if stream {
        state.config.idle_timeout
    } else {
        state.config.idle_timeout.max(NON_STREAMING_HEADER_WAIT)
    };
    let mut failover = Failover {
        state: &state,
        outgoing: Outgoing {
            parts,
            uri,
            body,
            _hold: hold,
            route,
            header_wait,
        },
        session,
        owner,
        // The size of a Messages request, for placing it where it fits (issue 16).
        prompt_tokens: if route_is_messages {
            body_len as u64 / 4
        } else {
            0
        },
        max_tokens: if route_is_messages {
            max_tokens.unwrap_or(0)
        } else {
            0
        },
        tried: Vec::new(),
        refused: None,
        unreachable: None,
    };
    let method = failover.outgoing.parts.method.clone();
    // `x-ccflare-route: 1` asks for the routing explanation as a response header (issue 16);
    // without it the line is never formatted here.
    let explain = failover.outgoing.parts.headers.contains_key(ROUTE_HEADER);
    // Every attempt is one turn of this loop, whatever it comes to, so no path can try more
    // accounts than `max_attempts` allows (0: every account, until the pool has none left).
    let limit = match state.config.max_attempts {
        0 => usize::MAX,
        n => n as usize,
    };
    for _ in 0..limit {
        match failover.attempt(&mut recorder).await {
            Attempt::Served {
                mut response,
                account,
            } => {
                if state.config.pool_rate_limit_headers
                    && let Some(window) = state.pool().pool_window(state.now())
                {
                    crate::quota_headers::rewrite(response.headers_mut(), window);
                }
                let line = explain.then(|| recorder.route_line()).flatten();
                let answer = match failover.tried.last().copied() {
                    Some(id) => {
                        let (account, how) = ((id, account), (family, &method));
                        serve(&state, recorder, response, account, how, origin).await
                    }
                    None => relay(&state, recorder, response, &account),
                };
                return with_route(answer, line);
            }
            Attempt::Final(answer) => {
                let line = explain.then(|| recorder.route_line()).flatten();
                return with_route(answer, line);
            }
            Attempt::Retry(retry) => failover.keep(retry),
        }
    }
    failover.out_of_attempts(&mut recorder)
}

/// Without client keys nothing tells a browser's request from a client's but what browsers
/// add: a foreign `Origin` is refused, and so is a foreign `Host` when the server listens on
/// loopback (a DNS-rebinding page names it by its own domain). A server listening on a network
/// address without keys was opened to that network on purpose; its clients name it as they
/// please.
fn browser_refusal(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let checked = browser::check(
        text(header::ORIGIN),
        text(header::HOST),
        state.config.loopback_only,
    );
    match checked.err()? {
        BrowserRefusal::ForeignOrigin(origin) => Some(format!(
            "requests from web pages are refused (Origin {origin}); clients such as the SDKs \
             and Claude Code send no Origin"
        )),
        BrowserRefusal::ForeignHost => Some(
            "address this server as localhost or 127.0.0.1: requests naming it by another \
             host come from web pages (DNS rebinding)"
                .to_owned(),
        ),
    }
}

/// What every attempt of one request sends: read once, replayed to each account by reference.
struct Outgoing {
    parts: Parts,
    uri: http::Uri,
    body: Bytes,
    /// The body's share of the memory budget, given back when the request is answered.
    _hold: BodyHold,
    /// What the path is: whether a 401 on it judges the account's credential.
    route: Route,
    /// How long the upstream gets to send its response headers.
    header_wait: Duration,
}

/// What one attempt came to (pingora's shape: the loop reads this, never an error string).
enum Attempt {
    /// The account answered with a response for the client: the request is served.
    Served {
        response: Response<UpstreamBody>,
        account: Arc<str>,
    },
    /// The account failed before anything reached the client; another account may serve.
    Retry(Retry),
    /// No account is left to try: this is the answer.
    Final(Response<ResponseBody>),
}

/// Why an attempt failed over (already in the record's `attempt_failures`), with what it
/// leaves for the final answer should no account serve.
enum Retry {
    /// The upstream answered with a status that fails over (429, 529, 5xx, 401, 403); its
    /// small body was read so that it can be relayed.
    Refused(LastFailure),
    /// No response: no connection, no headers in time, or the connection failed.
    Unreachable(AttemptError),
    /// The OAuth token could not be refreshed: before sending, or after a 401, which is then
    /// kept in `refused` to be relayed should no other account serve.
    Token {
        failure: RefreshFailure,
        refused: Option<LastFailure>,
    },
    /// The stored credential is no valid header value.
    BadCredential,
}

impl Retry {
    /// The upstream status the attempt got, for the record.
    fn status(&self) -> Option<u16> {
        match self {
            Retry::Refused(failure) => Some(failure.status.as_u16()),
            Retry::Token {
                refused: Some(refused),
                ..
            } => Some(refused.status.as_u16()),
            _ => None,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Retry::Refused(failure) => failure.reason,
            Retry::Unreachable(kind) => kind.label(),
            Retry::Token { failure, .. } => failure.label(),
            Retry::BadCredential => "bad_credential",
        }
    }
}

/// One request's way through the pool: the accounts it tried, and the failures it keeps for
/// the final answer.
struct Failover<'a> {
    state: &'a AppState,
    outgoing: Outgoing,
    session: Option<String>,
    /// The account that made the batch or file the path names: the only one tried.
    owner: Option<AccountId>,
    /// The request's size, for placing it where it fits (issue 16).
    prompt_tokens: u64,
    max_tokens: u64,
    tried: Vec<AccountId>,
    /// The last upstream error response, relayed if no account serves.
    refused: Option<LastFailure>,
    /// The last attempt that reached no upstream, when none answered.
    unreachable: Option<AttemptError>,
}

impl Failover<'_> {
    /// One attempt: pick an account this request has not tried, send, classify the answer.
    async fn attempt(&mut self, recorder: &mut Recorder) -> Attempt {
        let state = self.state;
        let now = state.now();
        let demand = Demand {
            session: self.session.as_deref(),
            tried: &self.tried,
            prompt_tokens: self.prompt_tokens,
            max_tokens: self.max_tokens,
        };
        let pick = resources::select(state, now, self.owner, &demand);
        let mut pick = match pick {
            Ok(pick) => pick,
            Err(mut unavailable) => {
                recorder.set_route(std::mem::take(&mut *unavailable.route));
                return Attempt::Final(self.no_account_left(recorder, unavailable, now));
            }
        };
        recorder.set_route(std::mem::take(&mut pick.route));
        self.tried.push(pick.id);
        recorder.attempt(pick.id, &pick.name);
        recorder.upstream_started();
        recorder.reserve(pick.reserved);
        let response = match self.send_with_fresh_token(&pick).await {
            Ok(response) => response,
            Err(retry) => {
                recorder.upstream_stopped();
                recorder.attempt_failed(failure(&pick, retry.status(), retry.label()));
                return Attempt::Retry(retry);
            }
        };
        let status = response.status();
        let now = state.now();
        let headers = response.headers().iter();
        let snapshot = RateLimitSnapshot::from_headers(
            headers.filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
            now,
        );
        let mut verdict = classify(status.as_u16(), &snapshot, now);
        if verdict == Verdict::AuthFailed && !self.outgoing.route.judges_credentials() {
            // The client chose this path: an endpoint that refuses a valid key (an
            // organisation's, a beta this account lacks) says nothing about the account, and
            // failing over would only show every account the same refusal.
            verdict = Verdict::Serve { bench_until: None };
        }
        let snapshot = snapshot.has_limits().then_some(snapshot);
        // A 401's verdict waits for its body (below); every other one is reported at once.
        let unreported = if verdict == Verdict::AuthFailed {
            Some(snapshot)
        } else {
            self.report(pick.id, verdict, snapshot, now);
            None
        };
        if !verdict.fails_over() {
            return Attempt::Served {
                response,
                account: pick.name,
            };
        }
        tracing::info!(account = %pick.name, status = status.as_u16(), reason = verdict.label(), "failing over");
        recorder.attempt_failed(failure(&pick, Some(status.as_u16()), verdict.label()));
        let failure = read_failure(response, &pick, verdict.label()).await;
        recorder.upstream_stopped();
        if let Some(snapshot) = unreported {
            // A 401 condemns the credential when the API itself says so; one from something in
            // between (a gateway's HTML page) fails over without touching the account.
            let confirmed = error_of(&failure.body, 401).0 == "authentication_error";
            let judged = if confirmed {
                verdict
            } else {
                Verdict::ServerError
            };
            self.report(pick.id, judged, snapshot, now);
        }
        Attempt::Retry(Retry::Refused(failure))
    }

    /// Tells the pool what the upstream said of an attempt, and persists what changed.
    fn report(
        &self,
        account: AccountId,
        verdict: Verdict,
        snapshot: Option<RateLimitSnapshot>,
        now: i64,
    ) {
        let changed = self.state.pool().report(account, verdict, snapshot, now);
        if let Some(changed) = changed {
            self.state.persist(changed);
        }
    }

    /// Sends to `pick` with a usable credential: an OAuth token is refreshed ahead of expiry,
    /// and a refused one (expired early, revoked by a newer login) gets one refresh and one
    /// more send to the same account — on an inference route, where a 401 is about the token.
    /// When that refresh fails, the 401 is kept (its body read first) so that it can be relayed
    /// should no other account serve.
    async fn send_with_fresh_token(&self, pick: &Pick) -> Result<Response<UpstreamBody>, Retry> {
        let refresher = (pick.kind == AccountKind::OAuth)
            .then(|| self.state.tokens())
            .flatten();
        let Some(refresher) = refresher else {
            return self.send(pick, &pick.credential).await;
        };
        let token = refresher
            .fresh_token(pick, None)
            .await
            .map_err(|failure| Retry::Token {
                failure,
                refused: None,
            })?;
        let response = self.send(pick, &token).await?;
        if response.status() != StatusCode::UNAUTHORIZED
            || !self.outgoing.route.judges_credentials()
        {
            return Ok(response);
        }
        let refused = read_failure(response, pick, "auth_failed").await;
        let token = match refresher.fresh_token(pick, Some(&token)).await {
            Ok(token) => token,
            Err(failure) => {
                let refused = Some(LastFailure {
                    reason: failure.label(),
                    ..refused
                });
                return Err(Retry::Token { failure, refused });
            }
        };
        tracing::info!(account = %pick.name, "OAuth token refused; retrying with a refreshed one");
        self.send(pick, &token).await
    }

    /// One upstream request, bounded by the wait for its response headers. A connection
    /// taken from the idle list that turns out closed (the upstream closed it as the request
    /// went out, before answering) costs one more send on a new connection, not an attempt.
    async fn send(
        &self,
        pick: &Pick,
        credential: &Secret,
    ) -> Result<Response<UpstreamBody>, Retry> {
        let outgoing = &self.outgoing;
        let request = || {
            let request = build_request(outgoing, pick, credential);
            if request.is_none() {
                // Only a stored credential with bytes no header may carry gets here.
                tracing::error!(account = %pick.name, "account credential is not a valid header value");
            }
            request
        };
        let upstream = &self.state.upstream;
        let exchange = async {
            let Some(first) = request() else {
                return Err(Retry::BadCredential);
            };
            match upstream.send(first, Reuse::Idle).await {
                Err(error) if error.is_stale() => {
                    tracing::debug!(account = %pick.name, %error, "sending again on a new connection");
                    let Some(again) = request() else {
                        return Err(Retry::BadCredential);
                    };
                    Ok(upstream.send(again, Reuse::Fresh).await)
                }
                sent => Ok(sent),
            }
        };
        match tokio::time::timeout(outgoing.header_wait, exchange).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Err(retry)) => Err(retry),
            Ok(Ok(Err(error))) => {
                tracing::warn!(account = %pick.name, %error, "upstream request failed");
                Err(Retry::Unreachable(if error.is_connect() {
                    AttemptError::Connect
                } else {
                    AttemptError::Other
                }))
            }
            Err(_) => {
                tracing::warn!(account = %pick.name, "upstream sent no response headers in time");
                Err(Retry::Unreachable(AttemptError::Timeout))
            }
        }
    }

    /// Keeps what a failed attempt leaves for the final answer.
    fn keep(&mut self, retry: Retry) {
        match retry {
            Retry::Refused(failure)
            | Retry::Token {
                refused: Some(failure),
                ..
            } => self.refused = Some(failure),
            Retry::Unreachable(kind) => self.unreachable = Some(kind),
            Retry::Token { refused: None, .. } | Retry::BadCredential => {}
        }
    }

    /// The pool has no account left for this request.
    fn no_account_left(
        &mut self,
        recorder: &mut Recorder,
        unavailable: Unavailable,
        now: i64,
    ) -> Response<ResponseBody> {
        let retry_after_s = unavailable.retry_at.map(|at| (at - now + 999) / 1000);
        let message = unavailable.to_string();
        match unavailable.reason {
            // Benched accounts: SPEC §4.7's answer, with the earliest recovery as Retry-After
            // (better than the one account's own retry-after a relayed 429 would carry).
            UnavailableReason::AllRateLimited | UnavailableReason::NoRoom { .. } => local_error(
                recorder,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                &message,
                retry_after_s.or(Some(60)),
            ),
            UnavailableReason::AllBenched => local_error(
                recorder,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                &message,
                retry_after_s.or(Some(15)),
            ),
            reason => self.failed_answer(
                recorder,
                reason == UnavailableReason::AllTried,
                &message,
                retry_after_s,
            ),
        }
    }

    /// The request used the attempts `max_attempts` allows: it is answered as when every
    /// account has been tried.
    fn out_of_attempts(mut self, recorder: &mut Recorder) -> Response<ResponseBody> {
        let message = format!(
            "the request failed on {} accounts, the most max_attempts allows",
            self.tried.len()
        );
        self.failed_answer(recorder, true, &message, None)
    }

    /// Every account this request could use failed (or was just found invalid): the last real
    /// upstream answer says most, then the last connection failure (when every account was
    /// tried), then `message`.
    fn failed_answer(
        &mut self,
        recorder: &mut Recorder,
        all_tried: bool,
        message: &str,
        retry_after_s: Option<i64>,
    ) -> Response<ResponseBody> {
        if let Some(failure) = self.refused.take() {
            return relay_failure(recorder, failure);
        }
        match self.unreachable {
            Some(kind) if all_tried => upstream_unreachable(recorder, kind),
            _ => local_error(
                recorder,
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                message,
                retry_after_s.or(Some(30)),
            ),
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
    /// The whole body did not arrive within `body_timeout`, however steadily it came.
    TooSlow,
    /// The bodies held in memory are at `max_body_memory`.
    OverBudget,
}

/// `retry-after` of a request refused because bodies fill the memory budget: bodies are held
/// only while their requests are sent, so room comes back quickly.
const OVER_BUDGET_RETRY_S: i64 = 2;

impl BodyRefusal {
    fn answer(self, recorder: &mut Recorder, state: &AppState) -> Response<ResponseBody> {
        match self {
            BodyRefusal::TooLarge => {
                let limit = state.config.max_body_bytes;
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
            BodyRefusal::TooSlow => {
                let message = format!(
                    "the request body was not complete within the {} s body_timeout",
                    state.config.body_timeout.as_secs()
                );
                local_error(
                    recorder,
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    &message,
                    None,
                )
            }
            BodyRefusal::OverBudget => {
                let message = format!(
                    "ccflare holds as many request bodies as its memory budget allows \
                     (max_body_memory, {} bytes); retry shortly",
                    state.bodies().total()
                );
                local_error(
                    recorder,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded_error",
                    &message,
                    Some(OVER_BUDGET_RETRY_S),
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
/// reading further, a client that sends nothing for the idle timeout, one that has not sent
/// the whole body within `body_timeout` (a slow upload holds a connection and its memory), and
/// a piece that does not fit in the memory budget of all bodies. Returns the body with its
/// share of the budget, which the request holds until it is answered.
async fn read_body(
    state: &AppState,
    parts: &Parts,
    body: Incoming,
) -> Result<(Bytes, BodyHold), BodyRefusal> {
    let limit = state.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyRefusal::TooLarge);
    }
    // A body that cannot fit now is refused before a byte of it is read.
    if declared.is_some_and(|length| length > state.bodies().available() as u64) {
        tracing::warn!(
            held = state.bodies().held(),
            "request bodies fill max_body_memory; refusing a request with 503"
        );
        return Err(BodyRefusal::OverBudget);
    }
    let deadline = tokio::time::Instant::now() + state.config.body_timeout;
    let mut hold = BodyHold::default();
    let mut body = Limited::new(body, limit);
    let mut chunks = Vec::new();
    loop {
        let next = tokio::time::timeout(state.config.idle_timeout, body.frame());
        let frame = match tokio::time::timeout_at(deadline, next).await {
            Ok(Ok(Some(Ok(frame)))) => frame,
            Ok(Ok(None)) => break,
            Ok(Ok(Some(Err(error)))) if error.is::<LengthLimitError>() => {
                return Err(BodyRefusal::TooLarge);
            }
            Ok(Ok(Some(Err(error)))) => {
                tracing::debug!(%error, "reading the request body failed");
                return Err(BodyRefusal::ClientGone);
            }
            Ok(Err(_)) => return Err(BodyRefusal::TimedOut),
            Err(_) => return Err(BodyRefusal::TooSlow),
        };
        // Trailers carry nothing the upstream needs.
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            if !state.bodies().take(&mut hold, data.len()) {
                tracing::warn!(
                    held = state.bodies().held(),
                    "request bodies fill max_body_memory; refusing a request with 503"
                );
                return Err(BodyRefusal::OverBudget);
            }
            chunks.push(data);
        }
    }
    Ok((join(chunks), hold))
}

fn build_request(
    outgoing: &Outgoing,
    pick: &Pick,
    credential: &Secret,
) -> Option<Request<Full<Bytes>>> {
    let mut headers = outgoing.parts.headers.clone();
    upstream_request_headers(&mut headers, pick.kind, credential.expose()).ok()?;
    let mut request = Request::new(Full::new(outgoing.body.clone()));
    *request.method_mut() = outgoing.parts.method.clone();
    *request.uri_mut() = outgoing.uri.clone();
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
async fn read_failure(
    response: Response<UpstreamBody>,
    pick: &Pick,
    reason: &'static str,
) -> LastFailure {
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
        reason,
    }
}

/// Relays the chosen upstream response: status and headers now, the body as it arrives.
fn relay(
    state: &AppState,
    mut recorder: Recorder,
    response: Response<UpstreamBody>,
    account: &str,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    recorder.set_upstream_request_id(&parts.headers);
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

/// Relays an answer of the batch and file routes: read whole by `resources` when it holds
/// batch or file objects (their ids learned, batch `results_url`s rewritten), else as any.
async fn serve(
    state: &AppState,
    mut recorder: Recorder,
    response: Response<UpstreamBody>,
    (id, account): (AccountId, Arc<str>),
    (family, method): (Option<resources::Family>, &http::Method),
    origin: Option<String>,
) -> Response<ResponseBody> {
    match family {
        Some(family) if resources::reads(Some(family), &response) => {
            let request_id = recorder.id().to_owned();
            recorder.set_upstream_request_id(response.headers());
            let how = (family, method);
            let origin = origin.as_deref();
            let mut answer =
                resources::relay_read(state, recorder, response, how, id, origin).await;
            add_ccflare_headers(answer.headers_mut(), &request_id, Some(&account));
            answer
        }
        _ => relay(state, recorder, response, &account),
    }
}

/// The request header that asks for the routing explanation, and the response header that
/// carries it.
const ROUTE_HEADER: &str = "x-ccflare-route";

/// Adds the routing explanation's one line to a response, when it was asked for. A line that
/// cannot be a header value (an account name outside visible ASCII) has those characters
/// replaced.
fn with_route(
    mut response: Response<ResponseBody>,
    line: Option<String>,
) -> Response<ResponseBody> {
    if let Some(line) = line {
        let visible: String = line
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(value) = http::HeaderValue::from_str(&visible) {
            response.headers_mut().insert(ROUTE_HEADER, value);
        }
    }
    response
}

fn add_ccflare_headers(headers: &mut HeaderMap, request_id: &str, account: Option<&str>) {
    // Names, not text: a name given as text is parsed again on every insert.
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-ccflare-request-id");
    const ACCOUNT: HeaderName = HeaderName::from_static("x-ccflare-account");
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if let Some(value) = account.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(ACCOUNT, value);
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
    recorder.set_upstream_request_id(&headers);
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
