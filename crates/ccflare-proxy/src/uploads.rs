//! Streamed request bodies: Files API uploads (`POST /v1/files`) and batch creation
//! (`POST /v1/messages/batches`) may be far larger than a message (protocol doc §1: Files
//! 500 MB, batches 256 MB, against 32 MB for Messages), so they are not read into memory to be
//! replayable: their bytes go upstream as they arrive, through a body that counts them against
//! the route's limit and the idle timeout. The price is failover: the body cannot be sent
//! twice, so such a request makes **one** attempt, and an upstream error (429, 529, 5xx) is
//! relayed as it came — the SDKs retry those themselves — while the pool still hears the
//! verdict (a 429 benches the account as usual). Neither counts against `max_body_memory`:
//! what they hold is hyper's buffers, not the body.
//!
//! Limits are MiB, as the 32 MB of Messages is 32 MiB in ccflare (`max_body_bytes`); a declared
//! `content-length` above the limit is 413 before a byte is read, and a body that grows past
//! it is cut (413 when nothing came back yet). `body_timeout` does not apply (a large upload on
//! a slow link rightly takes long); the idle timeout does, to every wait for the client's next
//! bytes.

use crate::keys::KnownKey;
use crate::recorder::{CLIENT_CLOSED, Recorder};
use crate::resources;
use crate::state::AppState;
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use ccflare_core::ratelimit::{RateLimitSnapshot, Verdict, classify};
use ccflare_core::{AccountId, AccountKind};
use ccflare_http::PooledClient;
use ccflare_pool::{Demand, UnavailableReason};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// `POST /v1/files`: the Files API's 500 MB.
pub const FILES_MAX_BYTES: u64 = 500 * 1024 * 1024;
/// `POST /v1/messages/batches`: the Batches API's 256 MB.
pub const BATCH_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Connecting to the upstream for an upload may take this long (the pooled client of the other
/// requests has the configured connect timeout; uploads have their own pool).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// After the last byte went up, the upstream gets this long to answer (it answers only then),
/// or the idle timeout if longer.
const ANSWER_WAIT: Duration = Duration::from_secs(600);

/// The limit of a route whose body is streamed, or `None` for a body read whole.
pub(crate) fn streamed_limit(method: &Method, path: &str) -> Option<u64> {
    if *method != Method::POST {
        return None;
    }
    match path {
        "/v1/files" => Some(FILES_MAX_BYTES),
        "/v1/messages/batches" => Some(BATCH_MAX_BYTES),
        _ => None,
    }
}

/// The client uploads go through: its own connection pool, because its body type is the
/// streamed [`UploadBody`] rather than the replayable whole body of other requests.
type UploadClient = PooledClient<UploadBody>;

fn client() -> &'static UploadClient {
    static CLIENT: OnceLock<UploadClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        ccflare_http::pool_builder().build(ccflare_http::connector(CONNECT_TIMEOUT))
    })
}

/// How the client's side of an upload went, as the body saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Sending,
    /// Every byte went upstream.
    Sent,
    TooLarge,
    ClientGone,
    TimedOut,
}

/// The client's body on its way upstream: frames pass through as they come, counted against
/// the limit, each awaited at most the idle timeout.
pub(crate) struct UploadBody {
    inner: Incoming,
    sent: u64,
    limit: u64,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    progress: watch::Sender<Progress>,
}

/// Why an upload body stopped (the upstream request fails with it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the request body is larger than the route's limit")]
    TooLarge,
    #[error("the client stopped sending the request body")]
    ClientGone,
    #[error("the client sent nothing for the idle timeout")]
    TimedOut,
}

impl UploadBody {
    fn fail(
        &mut self,
        progress: Progress,
        error: UploadError,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        self.progress.send_replace(progress);
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    if this.sent > this.limit {
                        return this.fail(Progress::TooLarge, UploadError::TooLarge);
                    }
                }
                let deadline = Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                if this.inner.is_end_stream() {
                    this.progress.send_replace(Progress::Sent);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => this.fail(Progress::ClientGone, UploadError::ClientGone),
            Poll::Ready(None) => {
                this.progress.send_replace(Progress::Sent);
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => this.fail(Progress::TimedOut, UploadError::TimedOut),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What [`forward`] needs of the request beyond its parts and body.
pub(crate) struct Upload {
    pub uri: http::Uri,
    pub limit: u64,
    pub key: Option<Arc<KnownKey>>,
}

/// What sending an upload came to, for the forwarder to answer.
pub(crate) enum Sent {
    /// Refused or failed before an answer came: the forwarder answers with this error.
    Refused(Refusal),
    /// The upstream answered, through this account: relayed as it is.
    Served {
        response: Response<UpstreamBody>,
        account: (AccountId, Arc<str>),
    },
}

/// An error answer of ccflare's own, in the Anthropic shape.
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after_s: Option<i64>,
}

fn refuse(
    status: StatusCode,
    kind: &'static str,
    message: impl Into<String>,
    retry_after_s: Option<i64>,
) -> Sent {
    Sent::Refused(Refusal {
        status,
        kind,
        message: message.into(),
        retry_after_s,
    })
}

/// Sends one streamed upload: one account, one attempt. The recorder gets the request and the
/// attempt; the forwarder answers what this comes to.
pub(crate) async fn send(
    state: &AppState,
    recorder: &mut Recorder,
    mut parts: Parts,
    body: Incoming,
    upload: Upload,
) -> Sent {
    let Upload { uri, limit, key } = upload;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return too_large(limit);
    }
    recorder.set_request(None, false, None);
    // An upload costs nothing by itself (what a batch runs is billed later, upstream): the
    // key's limits count it as a request only.
    if let Some(key) = key {
        match state.client_keys().admit(&key, None, None, 0, state.now()) {
            Ok(ticket) => recorder.admitted(ticket),
            Err(limit) => {
                let retry = Some(limit.retry_after_s);
                let status = StatusCode::TOO_MANY_REQUESTS;
                return refuse(status, "rate_limit_error", limit.message, retry);
            }
        }
    }
    let now = state.now();
    let pick = match resources::select(state, now, None, &Demand::default()) {
        Ok(pick) => pick,
        Err(unavailable) => {
            let retry_after_s = unavailable.retry_at.map(|at| (at - now + 999) / 1000);
            let message = unavailable.to_string();
            let (status, kind) = match unavailable.reason {
                UnavailableReason::AllRateLimited => {
                    (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
                }
                _ => (StatusCode::SERVICE_UNAVAILABLE, "overloaded_error"),
            };
            return refuse(status, kind, message, retry_after_s.or(Some(30)));
        }
    };
    recorder.attempt(pick.id, &pick.name);
    let credential = match (pick.kind, state.tokens()) {
        (AccountKind::OAuth, Some(refresher)) => match refresher.fresh_token(&pick, None).await {
            Ok(token) => token,
            Err(failure) => {
                let message = format!(
                    "the account's OAuth token could not be refreshed ({})",
                    failure.label()
                );
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    message,
                    Some(30),
                );
            }
        },
        _ => pick.credential.clone(),
    };
    if crate::headers::upstream_request_headers(&mut parts.headers, pick.kind, credential.expose())
        .is_err()
    {
        let message = "the account's credential is not a valid header value";
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "api_error", message, None);
    }
    let (progress, mut watching) = watch::channel(Progress::Sending);
    let idle_timeout = state.config.idle_timeout;
    let body = UploadBody {
        inner: body,
        sent: 0,
        limit,
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        idle_timeout,
        progress,
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers.clone();
    // The upstream answers once the whole body is there: its wait starts then.
    let answer_wait = ANSWER_WAIT.max(idle_timeout);
    let sent = client().request(request);
    let waited = async {
        let _ = watching.wait_for(|p| *p == Progress::Sent).await;
        tokio::time::sleep(answer_wait).await;
    };
    let result = tokio::select! {
        result = sent => Some(result),
        () = waited => None,
    };
    let progress = *watching.borrow();
    let response = match (result, progress) {
        (Some(Ok(response)), Progress::Sending | Progress::Sent) => response,
        (_, Progress::TooLarge) => return too_large(limit),
        (_, Progress::ClientGone) => {
            let message = "the client closed the connection while sending the request";
            let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
            return refuse(status, "client_closed", message, None);
        }
        (_, Progress::TimedOut) => {
            let message = "the request body did not arrive in time";
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                message,
                None,
            );
        }
        (Some(Err(error)), _) => {
            tracing::warn!(account = %pick.name, %error, "upload to the upstream failed");
            let message = "the upstream API connection failed during the upload";
            return refuse(StatusCode::BAD_GATEWAY, "api_error", message, Some(5));
        }
        (None, _) => {
            let message = "the upstream API did not answer the upload in time";
            return refuse(StatusCode::GATEWAY_TIMEOUT, "api_error", message, Some(5));
        }
    };
    // The pool hears what the upstream said (a 429 benches the account), but the answer is
    // relayed whatever it is: the body cannot be sent again.
    let now = state.now();
    let snapshot = RateLimitSnapshot::from_headers(
        response
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
        now,
    );
    let mut verdict = classify(response.status().as_u16(), &snapshot, now);
    if verdict == Verdict::AuthFailed {
        // Not an inference route (`routes`): a 401 here says nothing about the credential.
        verdict = Verdict::Serve { bench_until: None };
    }
    let snapshot = snapshot.has_limits().then_some(snapshot);
    if let Some(changed) = state.pool().report(pick.id, verdict, snapshot, now) {
        state.persist(changed);
    }
    Sent::Served {
        response: response.map(UpstreamBody::detached),
        account: (pick.id, pick.name),
    }
}

fn too_large(limit: u64) -> Sent {
    let message = format!("request body is larger than this route's {limit} byte limit");
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        message,
        None,
    )
}
