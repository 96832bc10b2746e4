//! HTTP as the tests speak it: one plain HTTP/1.1 client, requests built the way Anthropic
//! clients send them, and [`Reply`], a whole answer read under the guard.

use crate::GUARD;
use ::http::{HeaderMap, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client every test uses: HTTP/1.1 over plain TCP, nothing else.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `request` and returns the response as soon as its headers are in, body unread.
pub async fn open(request: Request<Full<Bytes>>) -> Response<Incoming> {
    tokio::time::timeout(GUARD, client().request(request))
        .await
        .expect("in time")
        .expect("response")
}

/// Sends `request` and reads the whole answer ([`Reply::read`]).
pub async fn send(request: Request<Full<Bytes>>) -> Reply {
    Reply::read(open(request).await).await
}

/// A whole answer: status, headers and every byte of the body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, or as much of it as arrived before it broke (see `body_error`).
    pub body: Bytes,
    /// Whether the body ended with an error (a dropped connection) instead of cleanly. Only
    /// [`Reply::read_allowing_break`] returns a reply with a broken body.
    pub body_error: bool,
}

impl Reply {
    /// Reads the whole body within the guard; panics if it breaks.
    pub async fn read(response: Response<Incoming>) -> Reply {
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(GUARD, body.collect())
            .await
            .expect("in time")
            .expect("body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            body_error: false,
        }
    }

    /// Reads the body until it ends or breaks, each frame within the guard; a break is kept in
    /// `body_error` with the bytes that came before it.
    pub async fn read_allowing_break(response: Response<Incoming>) -> Reply {
        let (parts, body) = response.into_parts();
        let (body, error) = read_to_end(body).await;
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(body),
            body_error: error.is_some(),
        }
    }

    /// The header's value, or `""` when it is missing (or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The body as text; panics if it is not UTF-8 (every body these tests read is text).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("not UTF-8 ({e}): {:?}", self.body))
    }
}

/// Reads a body until it ends, each frame within the guard: the bytes received, and the error
/// it ended with if it did not end cleanly.
pub async fn read_to_end<B>(mut body: B) -> (Vec<u8>, Option<B::Error>)
where
    B: Body + Unpin,
    B::Data: AsRef<[u8]>,
{
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(GUARD, body.frame())
            .await
            .expect("in time")
        {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    received.extend_from_slice(data.as_ref());
                }
            }
            Some(Err(error)) => return (received, Some(error)),
            None => return (received, None),
        }
    }
}

/// A request with `headers`, in order, and `body`.
pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).expect("request")
}

/// A `GET` without headers.
pub fn get(url: &str) -> Request<Full<Bytes>> {
    request(Method::GET, url, &[], Bytes::new())
}

/// A `POST` the way an Anthropic client sends one: a JSON body, `anthropic-version`, and the
/// client's own key (which the proxy must drop), then `headers`.
pub fn anthropic_post(
    url: &str,
    client_key: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut all = vec![
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", client_key),
    ];
    all.extend_from_slice(headers);
    request(Method::POST, url, &all, body)
}

/// A Messages request body with one user message. The text is written out (not serialized)
/// so that its bytes, and with them the mock's usage (a token per four bytes), stay fixed.
#[derive(Debug, Clone)]
pub struct Message {
    model: String,
    max_tokens: u32,
    stream: Option<bool>,
    cached: bool,
    content: String,
}

impl Message {
    /// `model`, 64 tokens at most, no `stream` field, "Hello there".
    pub fn new(model: &str) -> Message {
        Message {
            model: model.to_owned(),
            max_tokens: 64,
            stream: None,
            cached: false,
            content: "Hello there".to_owned(),
        }
    }

    pub fn max_tokens(mut self, max_tokens: u32) -> Message {
        self.max_tokens = max_tokens;
        self
    }

    pub fn stream(mut self, stream: bool) -> Message {
        self.stream = Some(stream);
        self
    }

    /// With a system prompt marked `cache_control`, which makes the mock report cache use.
    pub fn cached(mut self, cached: bool) -> Message {
        self.cached = cached;
        self
    }

    /// The user message's text (written as is: no quotes or backslashes).
    pub fn content(mut self, content: &str) -> Message {
        self.content = content.to_owned();
        self
    }

    pub fn body(&self) -> String {
        let Message {
            model,
            max_tokens,
            stream,
            cached,
            content,
        } = self;
        let stream = stream.map_or(String::new(), |s| format!(r#","stream":{s}"#));
        let system = if *cached {
            r#","system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}]"#
        } else {
            ""
        };
        format!(
            r#"{{"model":"{model}","max_tokens":{max_tokens}{stream}{system},"messages":[{{"role":"user","content":"{content}"}}]}}"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn message_bodies_are_the_bytes_the_suites_always_sent() {
        assert_eq!(
            Message::new("claude-sonnet-4-5").stream(true).body(),
            r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hello there"}]}"#
        );
        assert_eq!(
            Message::new("m").stream(false).cached(true).body(),
            r#"{"model":"m","max_tokens":64,"stream":false,"system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Hello there"}]}"#
        );
        assert_eq!(
            Message::new("claude-haiku-4-5")
                .max_tokens(16)
                .content("hi")
                .body(),
            r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#
        );
    }
}
