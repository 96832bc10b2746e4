//! The record of one received request, kept so tests can assert what reached the upstream
//! (which credential, which headers, the exact body bytes).

use bytes::Bytes;
use http::request::Parts;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string, e.g. `Some("beta=true")`.
    pub query: Option<String>,
    /// Lowercase names. Order: names in the order first seen, repeated names grouped (the
    /// order `http::HeaderMap` keeps). Non-UTF-8 values are converted lossily.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The `x-api-key` value, or else the token of `authorization: Bearer <token>`.
    pub credential: Option<String>,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub(crate) fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn from_parts(parts: &Parts, body: Bytes) -> ReceivedRequest {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut request = ReceivedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            body,
            credential: None,
        };
        request.credential = request.find_credential();
        request
    }

    fn find_credential(&self) -> Option<String> {
        if let Some(key) = self.header("x-api-key") {
            return Some(key.trim().to_owned());
        }
        let authorization = self.header("authorization")?.trim();
        let (scheme, token) = authorization.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    }

    /// Whether the credential arrived as `authorization: Bearer` rather than `x-api-key`.
    pub(crate) fn credential_is_bearer(&self) -> bool {
        self.header("x-api-key").is_none() && self.credential.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder()
            .method("POST")
            .uri("/v1/messages?beta=true");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid test request").into_parts().0
    }

    #[test]
    fn credential_prefers_x_api_key_then_bearer() {
        let both = parts(&[
            ("authorization", "Bearer sk-ant-oat01-a"),
            ("x-api-key", "sk-ant-k"),
        ]);
        let request = ReceivedRequest::from_parts(&both, Bytes::new());
        assert_eq!(request.credential.as_deref(), Some("sk-ant-k"));
        assert!(!request.credential_is_bearer());

        let bearer = parts(&[("Authorization", "bearer sk-ant-oat01-a")]);
        let request = ReceivedRequest::from_parts(&bearer, Bytes::new());
        assert_eq!(request.credential.as_deref(), Some("sk-ant-oat01-a"));
        assert!(request.credential_is_bearer());
        assert_eq!(request.query.as_deref(), Some("beta=true"));
        assert_eq!(request.path, "/v1/messages");

        let basic = parts(&[("authorization", "Basic abc")]);
        assert_eq!(
            ReceivedRequest::from_parts(&basic, Bytes::new()).credential,
            None
        );
    }
}
