//! Batches and files belong to an organisation (protocol doc §1): the account whose key created
//! one is the only one that can read, cancel or delete it. ccflare learns which account made
//! each batch and file from the answers it relays ([`Owners`](crate::owners::Owners), kept in memory, and written with
//! the creating request's row so that a restart reads them back), and sends every later request
//! naming that id to that account — with no failover to another, which would ask the wrong
//! organisation (SPEC: the request gets the owner's own 429/503/error instead). An id ccflare
//! never saw (made before it, or elsewhere) is routed like any request.
//!
//! Batch answers are the one body ccflare changes: their `results_url` is absolute and names
//! the upstream's origin, and the SDKs fetch it as it is — past the proxy, with the client's
//! own key. [`relay_read`] rewrites its origin to ccflare's own as the client saw it
//! ([`client_origin`]), so the download comes back here and goes to the batch's account.
//! Every other byte of those answers is relayed unchanged.

use crate::body::join;
use crate::headers::upstream_response_headers;
use crate::recorder::{Outcome, Recorder};
use crate::state::AppState;
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use ccflare_core::AccountId;
use ccflare_core::usage::Usage;
use ccflare_pool::{Demand, Pick, Unavailable};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// The largest batch or file answer read whole to learn its ids and rewrite `results_url`
/// (a list page of 1,000 batches is far smaller); a bigger one is relayed as it came.
const MAX_READ: usize = 8 * 1024 * 1024;

/// The TCP peer of a request, put in its extensions by the server: forwarded headers are
/// believed only from a loopback peer (a reverse proxy on the same host, as the shipped nginx
/// site is).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What a `/v1` path is, for batches and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `/v1/messages/batches[/{id}[/cancel]]`: answers are batch objects (or a list of them),
    /// read whole to learn ids and rewrite `results_url`.
    Batches,
    /// `/v1/messages/batches/{id}/results`: JSONL, relayed as it comes.
    BatchResults,
    /// `/v1/files[/{id}]`: answers are file objects (or a list), read whole to learn ids.
    Files,
    /// `/v1/files/{id}/content`: the file's bytes, relayed as they come.
    FileContent,
}

impl Family {
    pub(crate) fn of(path: &str) -> Option<Family> {
        if let Some(rest) = path.strip_prefix("/v1/messages/batches") {
            let parts: Vec<&str> = rest.split('/').collect();
            return match parts.as_slice() {
                [""] | ["", _] | ["", _, "cancel"] => Some(Family::Batches),
                ["", _, "results"] => Some(Family::BatchResults),
                _ => None,
            };
        }
        let rest = path.strip_prefix("/v1/files")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [""] | ["", _] => Some(Family::Files),
            ["", _, "content"] => Some(Family::FileContent),
            _ => None,
        }
    }

    /// Whether the answer is read whole (batch and file objects) rather than streamed.
    fn reads_answers(self) -> bool {
        matches!(self, Family::Batches | Family::Files)
    }
}

/// The batch or file id a path names (`/v1/messages/batches/{id}…`, `/v1/files/{id}…`).
pub(crate) fn named_id(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1/messages/batches/")
        .or_else(|| path.strip_prefix("/v1/files/"))?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// The account a request must go to: the owner of the id its path names, when ccflare knows it
/// and the account is still in the pool.
pub(crate) fn owner_for(state: &AppState, path: &str) -> Option<AccountId> {
    let id = named_id(path)?;
    let owner = state.owners().owner(id)?;
    let now = state.now();
    let known = state.pool().views(now).iter().any(|view| view.id == owner);
    if !known {
        tracing::info!(%id, "the account that made this id is gone; routing the request as usual");
    }
    known.then_some(owner)
}

/// One attempt's account: the owner's only (the others count as tried, so no failover can
/// reach them), or the pool's usual choice.
pub(crate) fn select(
    state: &AppState,
    now: i64,
    owner: Option<AccountId>,
    demand: &Demand<'_>,
) -> Result<Pick, Unavailable> {
    let mut pool = state.pool();
    match owner {
        None => pool.select_for(now, demand),
        Some(owner) => {
            let mut excluded: Vec<AccountId> = pool
                .views(now)
                .iter()
                .map(|view| view.id)
                .filter(|id| *id != owner)
                .collect();
            excluded.extend_from_slice(demand.tried);
            // No session pin: the owner is fixed by the id, not by the session.
            let demand = Demand {
                session: None,
                tried: &excluded,
                ..*demand
            };
            pool.select_for(now, &demand)
        }
    }
}

/// `scheme://host[:port]` of ccflare as the client addressed it: the `Host` header over plain
/// HTTP; `X-Forwarded-Proto` and `X-Forwarded-Host` when the peer is on loopback (the shipped
/// nginx site sets both). `None` without a usable host.
pub(crate) fn client_origin(headers: &HeaderMap, peer: Option<Peer>) -> Option<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim())
            .filter(|v| !v.is_empty())
    };
    let trusted = peer.is_some_and(|Peer(addr)| addr.ip().is_loopback());
    let forwarded = |name| if trusted { text(name) } else { None };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host").or_else(|| text(header::HOST.as_str()))?;
    // A host is an authority: no path, no user info, nothing that could redirect elsewhere.
    let valid = host
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| a.as_str() == host)
        && !host.contains('@');
    valid.then(|| format!("{scheme}://{host}"))
}

/// Replaces the origin of every batch object's `results_url` in `answer` (one object, or a
/// list page's `data`) with `origin`, keeping its path and query. Returns the ids of the batch
/// objects and whether anything changed.
fn rewrite_batches(answer: &mut Value, origin: Option<&str>) -> (Vec<String>, bool) {
    let mut ids = Vec::new();
    let mut changed = false;
    let objects: Vec<&mut Value> = match answer.get_mut("data") {
        Some(Value::Array(items)) => items.iter_mut().collect(),
        _ => vec![answer],
    };
    for object in objects {
        if object.get("type").and_then(Value::as_str) != Some("message_batch") {
            continue;
        }
        if let Some(id) = object.get("id").and_then(Value::as_str) {
            ids.push(id.to_owned());
        }
        let (Some(origin), Some(Value::String(url))) = (origin, object.get_mut("results_url"))
        else {
            continue;
        };
        if let Some(path) = path_of(url) {
            let rewritten = format!("{origin}{path}");
            changed |= rewritten != *url;
            *url = rewritten;
        }
    }
    (ids, changed)
}

/// The path and query of an absolute URL (`None` when it is not one).
fn path_of(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://")?.1;
    let at = after_scheme.find('/').unwrap_or(after_scheme.len());
    let path = &after_scheme[at..];
    Some(if path.is_empty() { "/" } else { path })
}

/// The ids of the file objects in `answer` (one object, or a list page's `data`).
fn file_ids(answer: &Value) -> Vec<String> {
    let objects: Vec<&Value> = match answer.get("data") {
        Some(Value::Array(items)) => items.iter().collect(),
        _ => vec![answer],
    };
    objects
        .into_iter()
        .filter(|o| o.get("type").and_then(Value::as_str) == Some("file"))
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Whether `relay_read` takes this answer: a batch or file route's successful, uncompressed
/// JSON answer.
pub(crate) fn reads(family: Option<Family>, response: &Response<UpstreamBody>) -> bool {
    let headers = response.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let plain = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == "identity");
    family.is_some_and(Family::reads_answers) && response.status().is_success() && json && plain
}

/// Relays a batch or file answer after reading it whole: learns which account its ids belong
/// to, rewrites batch `results_url`s to `origin`, and finishes the record (with the id a
/// creation made). A body that breaks, stalls for the idle timeout or passes [`MAX_READ`]
/// ends the request with 502, as a broken stream would. The caller adds ccflare's own headers.
pub(crate) async fn relay_read(
    state: &AppState,
    mut recorder: Recorder,
    response: Response<UpstreamBody>,
    (family, method): (Family, &Method),
    account_id: AccountId,
    origin: Option<&str>,
) -> Response<crate::ResponseBody> {
    let (mut parts, mut body) = response.into_parts();
    upstream_response_headers(&mut parts.headers);
    let status = parts.status.as_u16();
    let mut chunks = Vec::new();
    let mut len = 0;
    let read = loop {
        match tokio::time::timeout(idle(state), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                recorder.mark_first_byte();
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    if len > MAX_READ {
                        break Err("the answer is larger than ccflare reads whole");
                    }
                    chunks.push(data);
                }
            }
            Ok(None) => break Ok(join(chunks)),
            Ok(Some(Err(_))) => break Err("the upstream connection broke mid-answer"),
            Err(_) => break Err("the upstream sent nothing for the idle timeout"),
        }
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(why) => {
            tracing::warn!(request_id = %recorder.id(), why, "batch or file answer not relayed");
            let body = ccflare_core::error::anthropic_error_body("api_error", why, recorder.id());
            recorder.finish(Outcome::failed(
                502,
                ("upstream_stream_error".into(), why.into()),
            ));
            let mut answer = Response::new(crate::ResponseBody::full(body));
            *answer.status_mut() = http::StatusCode::BAD_GATEWAY;
            return answer;
        }
    };
    let mut out = bytes.clone();
    if let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) {
        let ids = match family {
            Family::Batches => {
                let (ids, changed) = rewrite_batches(&mut answer, origin);
                if changed {
                    out = Bytes::from(answer.to_string());
                }
                ids
            }
            _ => file_ids(&answer),
        };
        for id in &ids {
            state.owners().learn(id, account_id);
        }
        // A creation's answer is one object: its id goes into the request's row.
        if *method == Method::POST
            && matches!(
                Family::of(recorder.path()),
                Some(Family::Batches | Family::Files)
            )
            && named_id(recorder.path()).is_none()
            && let [id] = ids.as_slice()
        {
            recorder.set_resource(id.clone());
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    recorder.finish(Outcome {
        status,
        success: true,
        error: None,
        model: None,
        usage: Usage::default(),
        usage_incomplete: false,
        message_id: None,
    });
    Response::from_parts(parts, crate::ResponseBody::full(out))
}

fn idle(state: &AppState) -> Duration {
    state.config.idle_timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_ids_of_paths() {
        let cases = [
            ("/v1/messages/batches", Some(Family::Batches), None),
            ("/v1/messages/batches/b1", Some(Family::Batches), Some("b1")),
            (
                "/v1/messages/batches/b1/cancel",
                Some(Family::Batches),
                Some("b1"),
            ),
            (
                "/v1/messages/batches/b1/results",
                Some(Family::BatchResults),
                Some("b1"),
            ),
            ("/v1/files", Some(Family::Files), None),
            ("/v1/files/f1", Some(Family::Files), Some("f1")),
            (
                "/v1/files/f1/content",
                Some(Family::FileContent),
                Some("f1"),
            ),
            ("/v1/messages", None, None),
            ("/v1/messages/batchesx", None, None),
        ];
        for (path, family, id) in cases {
            assert_eq!(Family::of(path), family, "{path}");
            assert_eq!(named_id(path), id, "{path}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_origin_is_the_host_and_forwarded_headers_only_from_loopback() {
        let loopback = Some(Peer("127.0.0.1:5000".parse().unwrap()));
        let remote = Some(Peer("203.0.113.9:5000".parse().unwrap()));
        let plain = headers(&[("host", "localhost:8080")]);
        assert_eq!(
            client_origin(&plain, remote).as_deref(),
            Some("http://localhost:8080")
        );
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "ccflare.example.com"),
        ]);
        assert_eq!(
            client_origin(&proxied, loopback).as_deref(),
            Some("https://ccflare.example.com")
        );
        assert_eq!(
            client_origin(&proxied, remote).as_deref(),
            Some("http://127.0.0.1:8080"),
            "a remote peer's forwarded headers are not believed"
        );
        for bad in ["evil.com/path", "user@evil.com", ""] {
            let h = headers(&[("host", bad)]);
            assert_eq!(client_origin(&h, remote), None, "{bad:?}");
        }
    }

    #[test]
    fn results_urls_get_the_new_origin_and_ids_are_collected() {
        let mut one: Value = serde_json::from_str(
            r#"{"id":"b1","type":"message_batch","results_url":"https://api.anthropic.com/v1/messages/batches/b1/results?x=1"}"#,
        )
        .unwrap();
        let (ids, changed) = rewrite_batches(&mut one, Some("http://localhost:8080"));
        assert_eq!(ids, ["b1"]);
        assert!(changed);
        assert_eq!(
            one["results_url"],
            "http://localhost:8080/v1/messages/batches/b1/results?x=1"
        );
        let mut page: Value = serde_json::from_str(
            r#"{"data":[{"id":"b2","type":"message_batch","results_url":null},{"id":"b3","type":"message_batch","results_url":"http://up:1/r"}],"has_more":false}"#,
        )
        .unwrap();
        let (ids, changed) = rewrite_batches(&mut page, Some("http://h:1"));
        assert_eq!(ids, ["b2", "b3"]);
        assert!(changed);
        assert!(page["data"][0]["results_url"].is_null());
        assert_eq!(page["data"][1]["results_url"], "http://h:1/r");
        let files: Value =
            serde_json::from_str(r#"{"data":[{"id":"f1","type":"file"}],"has_more":false}"#)
                .unwrap();
        assert_eq!(file_ids(&files), ["f1"]);
    }
}
