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

/// Decodes `%XX` escapes in a path segment (`+` stays a plus there). Invalid escapes are kept
/// as they are; invalid UTF-8 is replaced.
pub fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A decoded query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// The query string's `name=value` pairs, decoded, rejecting names not in `allowed` (so a
    /// typo such as `?modle=` is an error rather than an ignored filter) and repeated names.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        // `application/x-www-form-urlencoded`: `&`-separated, `+` is a space, escapes decoded.
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(ApiError::BadRequest(if allowed.is_empty() {
                    format!("unknown query parameter {name:?}: this endpoint takes none")
                } else {
                    format!(
                        "unknown query parameter {name:?}; allowed: {}",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs.iter().any(|(n, _)| n.as_str() == name) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {name:?} is given more than once"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
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
        assert_eq!(percent_decode("a%20b+c"), "a b+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
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
        // Form encoding: `+` is a space, empty parts are nothing, a value may hold `=`.
        let q = Query::parse(Some("&model=a+b%21&&limit=x=y"), &["model", "limit"]).unwrap();
        assert_eq!(
            (q.get("model"), q.get("limit")),
            (Some("a b!"), Some("x=y"))
        );
    }
}
