//! Scriptable upstream failures, and the responses for the faults that replace the normal
//! answer outright (statuses and rate limits). Stream faults and delays are applied by the
//! handler, because they shape a normal answer rather than replace it.

use http::StatusCode;

use crate::body::ResponseBody;
use crate::response::{self, ErrorKind, Response};

/// A failure to inject into the answer to one request (or every request) of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `rate_limit_error` with `x-should-retry: true`. `retry_after` seconds become the
    /// `retry-after` header; `reset` (an RFC 3339 value) becomes every
    /// `anthropic-ratelimit-*-reset` header, with the whole family present and
    /// `requests-remaining` 0. Both `None` is the "windowless" 429: only `x-should-retry`.
    RateLimited {
        retry_after: Option<u64>,
        reset: Option<String>,
    },
    /// 429 with the unified subscription headers (status `rejected` on the five-hour window,
    /// resets at `reset_epoch` seconds). `retry_after` seconds become the `retry-after` header
    /// when given (the mock never derives it from its own clock, so a test on a manual clock
    /// decides every time the proxy sees).
    UnifiedRejected {
        reset_epoch: u64,
        retry_after: Option<u64>,
    },
    /// A normal, successful answer whose unified subscription headers say `status`
    /// (`allowed_warning`, or `rejected` as the last request a window lets through) with
    /// `anthropic-ratelimit-unified-reset` at `reset_epoch`, or without that header when `None`
    /// (the five-hour window's own reset stays, at `window_reset_epoch`).
    Unified {
        status: String,
        reset_epoch: Option<u64>,
        window_reset_epoch: u64,
    },
    /// 529 `overloaded_error` "Overloaded".
    Overloaded,
    /// The status with its usual error type: 400 `invalid_request_error`, 401
    /// `authentication_error`, 402 `billing_error`, 403 `permission_error`, 404
    /// `not_found_error`, 409 `conflict_error`, 413 `request_too_large`, 429
    /// `rate_limit_error`, 500/502/503 `api_error`, 504 `timeout_error`, 529
    /// `overloaded_error`; other 4xx `invalid_request_error`, other 5xx `api_error`. A number
    /// that is not an HTTP status (outside 100..=999) is treated as 500.
    Status(u16),
    /// 413 with an HTML body, as Cloudflare sends it before the request reaches the API.
    RequestTooLargeHtml,
    /// Streaming: send the headers and the first `after_events` SSE events, then drop the
    /// connection without finishing the chunked body (no `message_stop`). On a JSON answer:
    /// send the first half of the body (with the full `content-length`), then drop.
    DropMidStream { after_events: usize },
    /// Streaming: after `after_events` events send `event: error` (`overloaded_error`) and end
    /// the body cleanly. On a JSON answer there is no stream to carry it: 529 `Overloaded`.
    ErrorEvent { after_events: usize },
    /// Streaming: send the headers and the first `after_events` SSE events, then send nothing
    /// more and keep the connection open (for idle timeouts between body frames). On a JSON
    /// answer: send the headers (with the full `content-length`) and nothing of the body. A
    /// client that gives up counts in
    /// [`aborted_streams`](crate::MockUpstream::aborted_streams).
    Stall { after_events: usize },
    /// Read the request, then never send response headers (for first-byte timeouts). A client
    /// that gives up counts in [`abandoned_requests`](crate::MockUpstream::abandoned_requests).
    Hang,
    /// Wait this long before answering normally (a client that gives up meanwhile counts as for
    /// `Hang`).
    Delay { millis: u64 },
}

/// The response for a fault that replaces the normal answer, or `None` for the faults the
/// handler applies itself (`DropMidStream`, `ErrorEvent`, `Stall`, `Hang`, `Delay`,
/// `Unified`).
pub(crate) fn replacement_response(fault: &Fault, request_id: &str) -> Option<Response> {
    let response = match fault {
        Fault::RateLimited { retry_after, reset } => {
            let mut response = rate_limited(request_id);
            if let Some(seconds) = retry_after {
                response::put(&mut response, "retry-after", &seconds.to_string());
            }
            if let Some(reset) = reset {
                response::put_api_key_rate_limits(&mut response, reset, 0);
            }
            response
        }
        Fault::UnifiedRejected {
            reset_epoch,
            retry_after,
        } => {
            let mut response = rate_limited(request_id);
            if let Some(seconds) = retry_after {
                response::put(&mut response, "retry-after", &seconds.to_string());
            }
            response::put_unified_rejected(&mut response, *reset_epoch);
            response
        }
        Fault::Overloaded => response::error(ErrorKind::Overloaded, "Overloaded", request_id),
        Fault::Status(code) => status_error(*code, request_id),
        Fault::RequestTooLargeHtml => request_too_large_html(request_id),
        Fault::DropMidStream { .. }
        | Fault::ErrorEvent { .. }
        | Fault::Stall { .. }
        | Fault::Hang
        | Fault::Delay { .. }
        | Fault::Unified { .. } => return None,
    };
    Some(response)
}

pub(crate) fn rate_limited(request_id: &str) -> Response {
    let mut response = response::error(ErrorKind::RateLimit, "rate limit exceeded", request_id);
    response::put(&mut response, "x-should-retry", "true");
    response
}

fn status_error(code: u16, request_id: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, message) = match status.as_u16() {
        400 => (ErrorKind::InvalidRequest, "Invalid request"),
        401 => (ErrorKind::Authentication, "invalid x-api-key"),
        402 => (ErrorKind::Billing, "Your credit balance is too low"),
        403 => (
            ErrorKind::Permission,
            "Your API key does not have permission",
        ),
        404 => (
            ErrorKind::NotFound,
            "The requested resource could not be found.",
        ),
        409 => (ErrorKind::Conflict, "Conflict"),
        413 => (
            ErrorKind::RequestTooLarge,
            "Request exceeds the maximum allowed size",
        ),
        429 => (ErrorKind::RateLimit, "rate limit exceeded"),
        502 => (ErrorKind::Api, "Bad gateway"),
        503 => (ErrorKind::Api, "Service unavailable"),
        504 => (ErrorKind::Timeout, "Request timed out"),
        529 => (ErrorKind::Overloaded, "Overloaded"),
        _ if status.is_client_error() => (ErrorKind::InvalidRequest, "Invalid request"),
        _ => (ErrorKind::Api, "Internal server error"),
    };
    response::error_with_status(status, kind, message, request_id)
}

fn request_too_large_html(request_id: &str) -> Response {
    const HTML: &str = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n\
        <body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n\
        <hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";
    let mut response = Response::new(ResponseBody::full(HTML));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    response::put(&mut response, "content-type", "text/html");
    response::put_common(&mut response, request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fault_maps_error_types() {
        let cases = [
            (500, "api_error"),
            (502, "api_error"),
            (504, "timeout_error"),
            (400, "invalid_request_error"),
            (403, "permission_error"),
            (401, "authentication_error"),
            (418, "invalid_request_error"),
            (529, "overloaded_error"),
        ];
        for (code, kind) in cases {
            let response = status_error(code, "req_1");
            assert_eq!(response.status().as_u16(), code);
            let body = response.body().full_bytes().expect("error bodies are full");
            let text = std::str::from_utf8(&body).expect("utf-8");
            assert!(
                text.contains(&format!("\"type\":\"{kind}\"")),
                "{code}: {text}"
            );
        }
        assert_eq!(
            status_error(42, "req_1").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn windowless_429_has_only_should_retry() {
        let fault = Fault::RateLimited {
            retry_after: None,
            reset: None,
        };
        let response = replacement_response(&fault, "req_1").expect("replaces");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["x-should-retry"], "true");
        assert!(response.headers().get("retry-after").is_none());
        assert!(
            response
                .headers()
                .keys()
                .all(|name| !name.as_str().contains("ratelimit"))
        );
    }
}
