//! Building responses: Anthropic-shaped error bodies, the headers every response carries, and
//! the two rate-limit header families (API-key and unified subscription).

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use crate::body::ResponseBody;
use crate::time;

pub(crate) type Response = http::Response<ResponseBody>;

/// A stable, UUID-shaped organisation id, so proxies can be tested for hiding it.
pub(crate) const ORGANIZATION_ID: &str = "6d0c2a5e-4b7f-4e1a-9c3d-8f2b1a0e7c55";

/// The `error.type` values the mock sends, with their usual statuses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorKind {
    InvalidRequest,
    Authentication,
    Billing,
    Permission,
    NotFound,
    Conflict,
    RequestTooLarge,
    RateLimit,
    Api,
    Timeout,
    Overloaded,
}

impl ErrorKind {
    fn wire_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Billing => "billing_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Conflict => "conflict_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Api => "api_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Overloaded => "overloaded_error",
        }
    }

    fn status(self) -> StatusCode {
        let code = match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Billing => 402,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimit => 429,
            ErrorKind::Api => 500,
            ErrorKind::Timeout => 504,
            ErrorKind::Overloaded => 529,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Quotes `text` as a JSON string. Formatting a `Value` cannot fail, unlike `to_string`.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// An error with the usual status of its kind.
pub(crate) fn error(kind: ErrorKind, message: &str, request_id: &str) -> Response {
    error_with_status(kind.status(), kind, message, request_id)
}

/// `{"type":"error","error":{"type":…,"message":…},"request_id":…}` with the common headers.
pub(crate) fn error_with_status(
    status: StatusCode,
    kind: ErrorKind,
    message: &str,
    request_id: &str,
) -> Response {
    let body = format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":\"{}\",\"message\":{}}},\"request_id\":{}}}",
        kind.wire_name(),
        json_string(message),
        json_string(request_id),
    );
    json(status, body, request_id)
}

/// A JSON response with the common headers.
pub(crate) fn json(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    put(&mut response, "content-type", "application/json");
    put_common(&mut response, request_id);
    response
}

/// Sets a header. Values the mock builds are always valid header text; one that is not (say, a
/// control character a test smuggled in) is left out rather than failing the response.
pub(crate) fn put(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// The headers on every response.
pub(crate) fn put_common(response: &mut Response, request_id: &str) {
    put(response, "request-id", request_id);
    put(response, "anthropic-organization-id", ORGANIZATION_ID);
}

/// The §3.1 API-key family, every reset set to `reset` (RFC 3339).
pub(crate) fn put_api_key_rate_limits(response: &mut Response, reset: &str, requests_left: u64) {
    let families: [(&'static str, &'static str, &'static str, u64, u64); 4] = [
        (
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            1000,
            requests_left,
        ),
        (
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
            96000,
            90000,
        ),
        (
            "anthropic-ratelimit-input-tokens-limit",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
            80000,
            78000,
        ),
        (
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
            16000,
            12000,
        ),
    ];
    for (limit_name, remaining_name, reset_name, limit, remaining) in families {
        put(response, limit_name, &limit.to_string());
        put(response, remaining_name, &remaining.to_string());
        put(response, reset_name, reset);
    }
}

/// The rate-limit headers of a successful answer, by credential kind.
pub(crate) fn put_success_rate_limits(response: &mut Response, oauth: bool) {
    let now = time::now_epoch();
    if oauth {
        let five_hour = now + 5 * 3600;
        let seven_day = now + 7 * 24 * 3600;
        let headers: [(&'static str, String); 9] = [
            ("anthropic-ratelimit-unified-status", "allowed".into()),
            ("anthropic-ratelimit-unified-5h-status", "allowed".into()),
            ("anthropic-ratelimit-unified-5h-utilization", "0.26".into()),
            (
                "anthropic-ratelimit-unified-5h-reset",
                five_hour.to_string(),
            ),
            ("anthropic-ratelimit-unified-7d-status", "allowed".into()),
            ("anthropic-ratelimit-unified-7d-utilization", "0.06".into()),
            (
                "anthropic-ratelimit-unified-7d-reset",
                seven_day.to_string(),
            ),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour".into(),
            ),
            ("anthropic-ratelimit-unified-reset", five_hour.to_string()),
        ];
        for (name, value) in headers {
            put(response, name, &value);
        }
    } else {
        put_api_key_rate_limits(response, &time::rfc3339(now + 60), 999);
    }
}

/// Overrides the unified status of a successful answer, as the API sends it when a window nears
/// or reaches its limit: the overall and five-hour statuses, the five-hour reset, and the
/// overall reset (removed when `reset_epoch` is `None`).
pub(crate) fn put_unified_status(
    response: &mut Response,
    status: &str,
    reset_epoch: Option<u64>,
    window_reset_epoch: u64,
) {
    put(response, "anthropic-ratelimit-unified-status", status);
    put(response, "anthropic-ratelimit-unified-5h-status", status);
    let window_reset = window_reset_epoch.to_string();
    put(
        response,
        "anthropic-ratelimit-unified-5h-reset",
        &window_reset,
    );
    match reset_epoch {
        Some(at) => put(
            response,
            "anthropic-ratelimit-unified-reset",
            &at.to_string(),
        ),
        None => {
            response
                .headers_mut()
                .remove("anthropic-ratelimit-unified-reset");
        }
    }
}

/// The unified headers of a windowed credential's answer (`windows.rs`): its five-hour
/// utilisation with two decimals, its reset, and the status that follows from them.
pub(crate) fn put_window(response: &mut Response, window: &crate::windows::WindowHeaders) {
    let status = window.status();
    let utilization = format!("{:.2}", window.utilization);
    let reset = window.reset_epoch.to_string();
    put(response, "anthropic-ratelimit-unified-status", status);
    put(response, "anthropic-ratelimit-unified-5h-status", status);
    put(
        response,
        "anthropic-ratelimit-unified-5h-utilization",
        &utilization,
    );
    put(response, "anthropic-ratelimit-unified-5h-reset", &reset);
    put(response, "anthropic-ratelimit-unified-reset", &reset);
    if status == "allowed_warning" {
        put(
            response,
            "anthropic-ratelimit-unified-5h-surpassed-threshold",
            "0.75",
        );
    }
}

/// The unified headers of an exhausted five-hour window (the §3.2 capture, reset substituted).
pub(crate) fn put_unified_rejected(response: &mut Response, reset_epoch: u64) {
    let reset = reset_epoch.to_string();
    let seven_day = (time::now_epoch() + 7 * 24 * 3600).to_string();
    let headers: [(&'static str, &str); 12] = [
        ("anthropic-ratelimit-unified-5h-reset", &reset),
        ("anthropic-ratelimit-unified-5h-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-surpassed-threshold", "1.0"),
        ("anthropic-ratelimit-unified-5h-utilization", "1.01"),
        ("anthropic-ratelimit-unified-7d-reset", &seven_day),
        ("anthropic-ratelimit-unified-7d-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.69"),
        (
            "anthropic-ratelimit-unified-overage-disabled-reason",
            "org_level_disabled",
        ),
        ("anthropic-ratelimit-unified-overage-status", "rejected"),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
        ("anthropic-ratelimit-unified-reset", &reset),
        ("anthropic-ratelimit-unified-status", "rejected"),
    ];
    for (name, value) in headers {
        put(response, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_anthropic_shaped_with_matching_request_id() {
        let response = error(ErrorKind::NotFound, "Not \"found\"", "req_011Cabc");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["request-id"], "req_011Cabc");
        assert_eq!(
            response.headers()["anthropic-organization-id"],
            ORGANIZATION_ID
        );
        let body = response.body().full_bytes().expect("full body");
        assert_eq!(
            &body[..],
            br#"{"type":"error","error":{"type":"not_found_error","message":"Not \"found\""},"request_id":"req_011Cabc"}"#
        );
    }
}
