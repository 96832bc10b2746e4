//! What the proxy needs to know about a client request before choosing an account: the model
//! (for the record), whether it streams, and its session key (SPEC §6), read in one pass over
//! the body without copying it.

use serde::Deserialize;

/// The few request-body fields ccflare looks at; everything else is skipped unparsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
    /// `session_id` from `metadata.user_id`, or the whole `user_id` when it is not JSON.
    pub body_session: Option<String>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    stream: Option<bool>,
    metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    user_id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UserId {
    session_id: Option<String>,
}

impl RequestInfo {
    /// Reads a request body. Bodies that are not JSON objects give an empty `RequestInfo`; the
    /// upstream, not the proxy, decides whether they are valid.
    pub fn from_body(body: &[u8]) -> RequestInfo {
        let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
            return RequestInfo::default();
        };
        let body_session = parsed.metadata.and_then(|m| m.user_id).and_then(|user_id| {
            // Claude Code sends a JSON string with account_uuid, device_id and session_id;
            // older clients send a flat opaque string, which is itself a good key.
            match serde_json::from_str::<UserId>(&user_id) {
                Ok(UserId {
                    session_id: Some(id),
                }) => Some(id),
                Ok(UserId { session_id: None }) => None,
                Err(_) if !user_id.is_empty() => Some(user_id.into_owned()),
                Err(_) => None,
            }
        });
        RequestInfo {
            model: parsed.model.map(|m| m.into_owned()),
            stream: parsed.stream.unwrap_or(false),
            body_session,
        }
    }
}

/// Chooses the session key: header `x-session-id`, then `x-claude-code-session-id`, then the
/// body's session. `header` looks a lowercase header name up.
pub fn session_key<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    info: &'a RequestInfo,
) -> Option<&'a str> {
    let present = |name: &str| header(name).filter(|v| !v.is_empty());
    present("x-session-id")
        .or_else(|| present("x-claude-code-session-id"))
        .or(info.body_session.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_stream_and_json_user_id() {
        let body = br#"{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi \"there\""}],"metadata":{"user_id":"{\"device_id\":\"d\",\"account_uuid\":\"a\",\"session_id\":\"s-123\"}"}}"#;
        let info = RequestInfo::from_body(body);
        assert_eq!(info.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(info.stream);
        assert_eq!(info.body_session.as_deref(), Some("s-123"));
    }

    #[test]
    fn flat_user_id_is_the_key() {
        let info =
            RequestInfo::from_body(br#"{"metadata":{"user_id":"user_abc_account__session_x"}}"#);
        assert_eq!(
            info.body_session.as_deref(),
            Some("user_abc_account__session_x")
        );
    }

    #[test]
    fn garbage_bodies_are_empty() {
        assert_eq!(RequestInfo::from_body(b"not json"), RequestInfo::default());
        assert_eq!(RequestInfo::from_body(b""), RequestInfo::default());
        assert_eq!(RequestInfo::from_body(b"[1,2]"), RequestInfo::default());
    }

    #[test]
    fn header_keys_come_first() {
        let info = RequestInfo {
            body_session: Some("body".into()),
            ..Default::default()
        };
        let none = |_: &str| None;
        assert_eq!(session_key(none, &info), Some("body"));
        let cc = |n: &str| (n == "x-claude-code-session-id").then_some("cc");
        assert_eq!(session_key(cc, &info), Some("cc"));
        let both = |n: &str| match n {
            "x-session-id" => Some("seed"),
            "x-claude-code-session-id" => Some("cc"),
            _ => None,
        };
        assert_eq!(session_key(both, &info), Some("seed"));
        let empty_seed = |n: &str| match n {
            "x-session-id" => Some(""),
            "x-claude-code-session-id" => Some("cc"),
            _ => None,
        };
        assert_eq!(session_key(empty_seed, &info), Some("cc"));
    }
}
