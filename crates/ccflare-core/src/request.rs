//! What the proxy needs to know about a client request before choosing an account: the model
//! (for the record), whether it streams, its `max_tokens` (for a client key's budget) and its
//! session key (SPEC §6), read in one pass over the body without copying it; and whether its
//! path stays under `/v1/`.

use serde::Deserialize;

/// The few request-body fields ccflare looks at; everything else is skipped unparsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
    /// `session_id` from `metadata.user_id`, or the whole `user_id` when it is not JSON.
    pub body_session: Option<String>,
    /// The most output tokens the request allows: what a client key's budget reserves.
    pub max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    stream: Option<bool>,
    /// Any JSON value, so that a malformed one (the upstream's to refuse) does not cost the
    /// other fields; a number is not allocated.
    max_tokens: Option<serde_json::Value>,
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
            max_tokens: parsed
                .max_tokens
                .as_ref()
                .and_then(serde_json::Value::as_u64),
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
        .or(info.body_session.as_deref().filter(|v| !v.is_empty()))
}

/// Whether a `/v1/…` path could leave `/v1/` once the upstream resolves it: a `.` or `..`
/// segment, plain or percent-encoded, or an encoded slash or backslash. Such a path could reach
/// other Anthropic endpoints (say, one that mints API keys) with a pooled account's credential,
/// so the proxy refuses it.
pub fn escapes_v1(path: &str) -> bool {
    // The usual path has none of these: no allocation on the way through.
    if !path.contains(['.', '%', '\\']) {
        return false;
    }
    path.split('/').any(|segment| {
        let decoded = segment
            .replace("%2e", ".")
            .replace("%2E", ".")
            .to_ascii_lowercase();
        decoded == "."
            || decoded == ".."
            || decoded.contains("%2f")
            || decoded.contains("%5c")
            || decoded.contains('\\')
    })
}

#[cfg(test)]
mod path_model;

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
        assert_eq!(info.max_tokens, Some(10));
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
        // An empty session id in the body is no session either (it would pin every such
        // request to one account).
        let empty_body = RequestInfo {
            body_session: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(session_key(none, &empty_body), None);
    }

    #[test]
    fn paths_that_could_leave_v1_are_caught() {
        for bad in [
            "/v1/../api/oauth/claude_cli/create_api_key",
            "/v1/%2e%2e/api/x",
            "/v1/%2E./api",
            "/v1/./messages",
            "/v1/messages/..",
            "/v1/a%2fb",
            "/v1/a%5Cb",
            "/v1/a\\..",
        ] {
            assert!(escapes_v1(bad), "{bad}");
        }
        for good in [
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/models/claude-3.5-x",
            "/v1/files/a.b",
        ] {
            assert!(!escapes_v1(good), "{good}");
        }
    }

    mod properties {
        use super::super::path_model::resolved;
        use super::*;
        use proptest::prelude::*;

        /// A JSON string literal for `text`.
        fn json(text: &str) -> String {
            serde_json::to_string(text).unwrap()
        }

        /// JSON whitespace, as a client may put it between tokens.
        fn space() -> impl Strategy<Value = String> {
            "[ \t\r\n]{0,3}"
        }

        /// `{k: v, …}` with the members in the given order and `space` between tokens.
        fn object(members: &[(String, String)], space: &[String]) -> String {
            let gap = |i: usize| space[i % space.len()].as_str();
            let mut out = format!("{{{}", gap(0));
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(&format!(",{}", gap(i + 1)));
                }
                out.push_str(&format!(
                    "{}{}:{}{value}{}",
                    json(key),
                    gap(i + 2),
                    gap(i + 3),
                    gap(i + 4)
                ));
            }
            out.push('}');
            out
        }

        /// What `metadata.user_id` carries: Claude Code's JSON text with a session id (or
        /// without one), or an opaque string.
        #[derive(Debug, Clone)]
        enum UserId {
            Json {
                session: Option<String>,
                device: String,
            },
            Flat(String),
        }

        fn user_id() -> impl Strategy<Value = UserId> {
            prop_oneof![
                (proptest::option::of("\\PC{0,30}"), "[0-9a-f]{8}")
                    .prop_map(|(session, device)| UserId::Json { session, device }),
                "[A-Za-z0-9_-]{1,40}".prop_map(UserId::Flat),
            ]
        }

        proptest! {
            #[test]
            fn any_bytes_give_an_answer_without_panicking(
                body in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let _ = RequestInfo::from_body(&body);
            }

            #[test]
            fn a_body_gives_what_it_says_in_any_key_order_and_spacing(
                model in proptest::option::of("\\PC{0,40}"),
                stream in proptest::option::of(any::<bool>()),
                user in proptest::option::of(user_id()),
                order in proptest::collection::vec(any::<u32>(), 8),
                space in proptest::collection::vec(space(), 1..6),
            ) {
                let mut members = vec![
                    ("max_tokens".to_owned(), "1024".to_owned()),
                    (
                        "messages".to_owned(),
                        r#"[{"role":"user","content":[{"type":"text","text":"model \"stream\": true"}]}]"#.to_owned(),
                    ),
                    ("system".to_owned(), json("metadata")),
                ];
                if let Some(model) = &model {
                    members.push(("model".into(), json(model)));
                }
                if let Some(stream) = stream {
                    members.push(("stream".into(), stream.to_string()));
                }
                if let Some(user) = &user {
                    let text = match user {
                        UserId::Json { session, device } => {
                            let mut inner = vec![
                                ("device_id".to_owned(), json(device)),
                                ("account_uuid".to_owned(), json("a")),
                            ];
                            if let Some(session) = session {
                                inner.push(("session_id".into(), json(session)));
                            }
                            inner.sort_by_key(|(key, _)| order[key.len() % order.len()]);
                            object(&inner, &space)
                        }
                        UserId::Flat(flat) => flat.clone(),
                    };
                    let metadata = vec![("user_id".to_owned(), json(&text))];
                    members.push(("metadata".into(), object(&metadata, &space)));
                }
                let mut keyed: Vec<_> = order.iter().zip(members).collect();
                keyed.sort_by_key(|(key, _)| **key);
                let members: Vec<_> = keyed.into_iter().map(|(_, member)| member).collect();
                let body = object(&members, &space);

                let info = RequestInfo::from_body(body.as_bytes());
                let expected_session = match user {
                    Some(UserId::Json { session, .. }) => session,
                    Some(UserId::Flat(flat)) => Some(flat),
                    None => None,
                };
                prop_assert_eq!(
                    info,
                    RequestInfo {
                        model,
                        stream: stream.unwrap_or(false),
                        body_session: expected_session,
                        max_tokens: Some(1024),
                    },
                    "{}",
                    body
                );
            }
        }

        /// A path segment made of the characters that matter to the check, and a few others.
        fn tricky_segment() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("."),
                    Just(".."),
                    Just("%2e"),
                    Just("%2E"),
                    Just("%2f"),
                    Just("%2F"),
                    Just("%5c"),
                    Just("%5C"),
                    Just("\\"),
                    Just("%25"),
                    Just("%"),
                    Just("2e"),
                    Just("a"),
                    Just("v1"),
                    Just("%41"),
                ],
                0..8,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            // Cheap cases, and escapes need a few pieces in the right order: many cases.
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            #[test]
            fn no_accepted_path_resolves_outside_v1(
                segments in proptest::collection::vec(tricky_segment(), 1..4),
            ) {
                let path = format!("/v1/{}", segments.join("/"));
                if !escapes_v1(&path) {
                    let target = resolved(&path);
                    prop_assert!(target.starts_with("/v1/"), "{} resolves to {}", path, target);
                }
            }
        }

        proptest! {
            #[test]
            fn ordinary_paths_are_accepted(
                segments in proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", 1..5),
            ) {
                let path = format!("/v1/{}", segments.join("/"));
                prop_assert!(!escapes_v1(&path), "{}", path);
                prop_assert_eq!(resolved(&path), path.clone());
            }
        }
    }
}
