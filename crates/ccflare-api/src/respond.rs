//! Reading requests and writing answers: JSON bodies capped in size and strict about unknown
//! fields, query strings with percent-decoding, and JSON responses.

use crate::error::ApiError;
use bytes::Bytes;
use ccflare_proxy::ResponseBody;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON answer.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<ResponseBody> {
    // Serialising our own types cannot fail (no maps with non-string keys, no failing Serialize).
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn ok(value: &impl serde::Serialize) -> Response<ResponseBody> {
    json(StatusCode::OK, value)
}

/// Reads the whole body, up to [`MAX_BODY_BYTES`].
pub async fn body_bytes(body: Incoming) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        }),
        Ok(Err(_)) => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
        Err(_) => Err(ApiError::BodyTimeout),
    }
}

/// Parses a JSON body into `T` (whose serde attributes reject unknown fields), with a message
/// that says what is wrong and where.
pub async fn json_body<T: DeserializeOwned>(body: Incoming) -> Result<T, ApiError> {
    let bytes = body_bytes(body).await?;
    parse_json(&bytes)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty: expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::BadRequest(format!("invalid JSON body: {error}")))
}

/// Reads a body that must be empty or `{}` (for actions such as pause that take no input).
pub async fn no_body(body: Incoming) -> Result<(), ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nothing {}
    let bytes = body_bytes(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    parse_json::<Nothing>(&bytes).map(drop)
}

/// Decodes `%XX` escapes (and `+` as a space, in query strings). Invalid escapes are kept as
/// they are; invalid UTF-8 is replaced.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A decoded query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// The query string's `name=value` pairs, decoded, rejecting names not in `allowed` (so a
    /// typo such as `?modle=` is an error rather than an ignored filter) and repeated names.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name, true);
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::BadRequest(if allowed.is_empty() {
                    format!("unknown query parameter {name:?}: this endpoint takes none")
                } else {
                    format!(
                        "unknown query parameter {name:?}; allowed: {}",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {name:?} is given more than once"
                )));
            }
            pairs.push((name, percent_decode(value, true)));
        }
        Ok(Query(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9", true), "café");
    }

    #[test]
    fn queries_reject_unknown_and_repeated_names() {
        let q = Query::parse(Some("model=a%2Fb&limit=5"), &["model", "limit"]).unwrap();
        assert_eq!(
            (q.get("model"), q.get("limit"), q.get("x")),
            (Some("a/b"), Some("5"), None)
        );
        let err = Query::parse(Some("modle=x"), &["model"]).unwrap_err();
        assert!(err.to_string().contains("\"modle\""), "{err}");
        assert!(Query::parse(Some("model=a&model=b"), &["model"]).is_err());
        assert!(Query::parse(Some("x=1"), &[]).is_err());
        assert_eq!(Query::parse(None, &[]).unwrap(), Query::default());
    }
}
