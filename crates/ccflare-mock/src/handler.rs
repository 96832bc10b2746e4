//! One request in, one response out: recording, routing, authentication, faults, validation,
//! and the normal answers of each route.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::batches;
use crate::body::{Chunk, Chunks, Ending, ResponseBody, ScriptedBody};
use crate::fault::{self, Fault};
use crate::request::ReceivedRequest;
use crate::response::{self, ErrorKind, Response};
use crate::sse::{self, Pacing, Text, Usage};
use crate::state::State;
use crate::windows::{Charge, WindowHeaders};

const DEFAULT_TEXT: &str = "Hello from the mock upstream.";
const OAUTH_BETA: &str = "oauth-2025-04-20";
/// The largest `x-mock-stream-bytes` text of a non-streaming answer: 64 MiB.
const MAX_JSON_TEXT_BYTES: u64 = 64 << 20;

/// Models listed by `GET /v1/models`: (id, display name, created at).
const MODELS: [(&str, &str, &str); 3] = [
    (
        "claude-opus-4-5-20251101",
        "Claude Opus 4.5",
        "2025-11-24T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
    ),
];

enum Route {
    Messages,
    CountTokens,
    Models,
    Model(String),
    Complete,
    /// Batches and files (module `batches`).
    Store(batches::Route),
}

impl Route {
    fn parse(method: &str, path: &str) -> Option<Route> {
        if let Some(route) = batches::Route::parse(method, path) {
            return Some(Route::Store(route));
        }
        match (method, path) {
            ("POST", "/v1/messages") => Some(Route::Messages),
            ("POST", "/v1/messages/count_tokens") => Some(Route::CountTokens),
            ("POST", "/v1/complete") => Some(Route::Complete),
            ("GET", "/v1/models") => Some(Route::Models),
            ("GET", _) => {
                let id = path.strip_prefix("/v1/models/")?;
                (!id.is_empty() && !id.contains('/')).then(|| Route::Model(id.to_owned()))
            }
            _ => None,
        }
    }
}

/// The hyper service: reads the whole request body, records the request, answers it.
pub(crate) async fn handle(
    state: Arc<State>,
    request: http::Request<Incoming>,
) -> Result<Response, Infallible> {
    let (parts, body) = request.into_parts();
    if parts.method == http::Method::POST && parts.uri.path() == "/v1/files" {
        return Ok(upload(&state, &parts, body).await);
    }
    // A body that fails to arrive means the client is gone; the request is still recorded
    // (with what could be read: nothing) so a test can see that it was attempted.
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let received = ReceivedRequest::from_parts(&parts, body);
    state.record(received.clone());
    let mut pending = Unanswered {
        state: &state,
        answered: false,
    };
    let response = respond(&state, &received).await;
    pending.answered = true;
    Ok(response)
}

/// Bytes of an upload kept to read its part's headers (the rest is only counted).
const UPLOAD_HEAD: usize = 4096;

/// `POST /v1/files`: the body is counted as it arrives, never held, so that a test can upload
/// hundreds of megabytes. The request is recorded with the body's first bytes only.
async fn upload(state: &Arc<State>, parts: &http::request::Parts, mut body: Incoming) -> Response {
    let mut head = Vec::new();
    let mut total = 0u64;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            let room = UPLOAD_HEAD.saturating_sub(head.len());
            head.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    let received = ReceivedRequest::from_parts(parts, Bytes::from(head.clone()));
    state.record(received.clone());
    let request_id = state.next_request_id();
    if let Err(rejection) = authenticate(state, &received) {
        return rejection.into_response(&request_id);
    }
    if !complete {
        let message = "the upload was cut short";
        return response::error(ErrorKind::InvalidRequest, message, &request_id);
    }
    let now = crate::time::rfc3339(crate::time::now_epoch());
    let file_id = state.next_file_id();
    state
        .store()
        .upload(&received, &head, total, file_id, &now, &request_id)
}

/// Counts a request whose handler is dropped before it has a response: hyper drops it when the
/// client closes the connection while the answer is held back (`Hang`, `Delay`).
struct Unanswered<'a> {
    state: &'a State,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.state.note_abandoned_request();
        }
    }
}

async fn respond(state: &Arc<State>, request: &ReceivedRequest) -> Response {
    let request_id = state.next_request_id();
    // The OAuth endpoints authenticate by their body (or a bearer token of their own).
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/oauth/token") => return state.oauth.token(request, &request_id).await,
        ("POST", "/api/oauth/claude_cli/create_api_key") => {
            return state.oauth.create_api_key(request, &request_id);
        }
        _ => {}
    }
    let Some(route) = Route::parse(&request.method, &request.path) else {
        let message = "The requested resource could not be found.";
        return response::error(ErrorKind::NotFound, message, &request_id);
    };
    let oauth = match authenticate(state, request) {
        Ok(oauth) => oauth,
        Err(rejection) => return rejection.into_response(&request_id),
    };

    let mut stream_fault = None;
    let mut unified = None;
    if let Some(fault) = request
        .credential
        .as_deref()
        .and_then(|c| state.take_fault(c))
    {
        tracing::debug!(?fault, %request_id, "mock upstream injecting fault");
        match fault {
            Fault::Hang => {
                // Never answer; the connection task is dropped when the client gives up or
                // the mock shuts down.
                let never: Infallible = std::future::pending().await;
                match never {}
            }
            Fault::Delay { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
            Fault::DropMidStream { .. } | Fault::ErrorEvent { .. } | Fault::Stall { .. } => {
                stream_fault = Some(fault)
            }
            Fault::Unified { .. } => unified = Some(fault),
            other => {
                if let Some(response) = fault::replacement_response(&other, &request_id) {
                    return response;
                }
            }
        }
    }

    if request.header("anthropic-version").is_none() {
        let message = "anthropic-version: header is required";
        return response::error(ErrorKind::InvalidRequest, message, &request_id);
    }

    let answer = match route {
        Route::Messages => messages(state, request, &request_id, stream_fault.as_ref()),
        Route::CountTokens => count_tokens(request, &request_id),
        Route::Models => Ok(models(&request_id)),
        Route::Model(id) => model(&id, &request_id),
        Route::Complete => complete(request, &request_id),
        Route::Store(route) => Ok(store(state, route, request, &request_id)),
    };
    let mut response = match answer {
        Ok(response) => response,
        Err(rejection) => return rejection.into_response(&request_id),
    };
    if let Some(fault) = &stream_fault {
        response = apply_fault_to_full_body(response, fault, state, &request_id);
    }
    if response.status().is_success() {
        response::put_success_rate_limits(&mut response, oauth);
        if let Some(window) = response.extensions_mut().remove::<WindowHeaders>() {
            response::put_window(&mut response, &window);
        }
        if let Some(Fault::Unified {
            status,
            reset_epoch,
            window_reset_epoch,
        }) = &unified
        {
            response::put_unified_status(&mut response, status, *reset_epoch, *window_reset_epoch);
        }
    }
    response
}

/// A request the mock refuses, rendered as an Anthropic error once the request id is known.
/// Kept small (rather than a whole `Response`) so `Result`s stay cheap to move around.
#[derive(Debug)]
struct Rejection {
    kind: ErrorKind,
    message: String,
}

impl Rejection {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Rejection {
        Rejection::new(ErrorKind::InvalidRequest, message)
    }

    fn into_response(self, request_id: &str) -> Response {
        response::error(self.kind, &self.message, request_id)
    }
}

/// Checks the credential; `Ok(true)` for an OAuth token, `Ok(false)` for an API key.
fn authenticate(state: &State, request: &ReceivedRequest) -> Result<bool, Rejection> {
    let unauthorized = |message: &str| Rejection::new(ErrorKind::Authentication, message);
    let Some(credential) = request.credential.as_deref() else {
        return Err(unauthorized("x-api-key header is required"));
    };
    if !credential.starts_with("sk-ant-") || state.is_revoked(credential) {
        return Err(unauthorized("invalid x-api-key"));
    }
    let oauth = credential.starts_with("sk-ant-oat");
    if oauth && state.oauth.is_expired(credential) {
        return Err(unauthorized(
            "OAuth token has expired. Please obtain a new token or refresh your existing token.",
        ));
    }
    if oauth {
        // Classified by prefix: an OAuth token sent as x-api-key is not a valid API key.
        if !request.credential_is_bearer() {
            return Err(unauthorized("invalid x-api-key"));
        }
        let has_beta = request
            .header_values("anthropic-beta")
            .flat_map(|value| value.split(','))
            .any(|beta| beta.trim() == OAUTH_BETA);
        if !has_beta {
            return Err(unauthorized(
                "OAuth authentication is currently not supported.",
            ));
        }
    }
    Ok(oauth)
}

/// What the `x-mock-*` headers ask for.
struct Steering {
    text: Text,
    pacing: Pacing,
    /// `x-mock-web-searches`: the answer ran this many web searches.
    web_searches: u64,
}

fn steering(request: &ReceivedRequest) -> Result<Steering, Rejection> {
    let number = |name: &str| -> Result<Option<u64>, Rejection> {
        match request.header(name) {
            None => Ok(None),
            Some(value) => value.trim().parse().map(Some).map_err(|_| {
                Rejection::invalid(format!("{name}: expected a non-negative integer"))
            }),
        }
    };
    let text = match number("x-mock-stream-bytes")? {
        Some(bytes) => Text::filler(bytes),
        None => Text::from_text(request.header("x-mock-text").unwrap_or(DEFAULT_TEXT)),
    };
    let event_delay = Duration::from_millis(number("x-mock-chunk-delay-ms")?.unwrap_or(0));
    let split = matches!(
        request.header("x-mock-split").map(str::trim),
        Some("1" | "true")
    );
    let web_searches = number("x-mock-web-searches")?.unwrap_or(0);
    Ok(Steering {
        text,
        pacing: Pacing { event_delay, split },
        web_searches,
    })
}

/// Parses the body as a JSON object and checks that `required` fields are present.
fn json_body(
    request: &ReceivedRequest,
    required: &[&str],
) -> Result<serde_json::Map<String, Value>, Rejection> {
    let value: Value = serde_json::from_slice(&request.body)
        .map_err(|_| Rejection::invalid("There was an error parsing the body of your request."))?;
    let Value::Object(object) = value else {
        return Err(Rejection::invalid(
            "body: Input should be a valid dictionary",
        ));
    };
    if let Some(missing) = required.iter().find(|field| !object.contains_key(**field)) {
        return Err(Rejection::invalid(format!("{missing}: Field required")));
    }
    Ok(object)
}

fn model_name(body: &serde_json::Map<String, Value>) -> Result<&str, Rejection> {
    body.get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Rejection::invalid("model: Input should be a valid string"))
}

fn messages(
    state: &Arc<State>,
    request: &ReceivedRequest,
    request_id: &str,
    stream_fault: Option<&Fault>,
) -> Result<Response, Rejection> {
    let body = json_body(request, &["model", "max_tokens", "messages"])?;
    let model = model_name(&body)?;
    let steering = steering(request)?;
    let mut usage = Usage {
        output_tokens: steering.text.output_tokens(),
        web_search_requests: steering.web_searches,
        ..Usage::for_request(&request.body)
    };
    let mut window = None;
    if let Some(credential) = request.credential.as_deref() {
        let session = request.header("x-claude-code-session-id");
        let now = crate::time::now_epoch();
        let charge = state.windows().charge(
            credential,
            session,
            request.body.len(),
            usage.output_tokens,
            now,
        );
        match charge {
            Charge::Untracked => {}
            Charge::Served {
                usage: charged,
                headers,
            } => {
                usage = charged;
                window = Some(headers);
            }
            Charge::Refused { reset_epoch } => {
                let mut response = fault::rate_limited(request_id);
                let wait = reset_epoch.saturating_sub(now).to_string();
                response::put(&mut response, "retry-after", &wait);
                response::put_unified_rejected(&mut response, reset_epoch);
                return Ok(response);
            }
        }
    }
    let message_id = state.next_message_id();

    if body.get("stream") != Some(&Value::Bool(true)) {
        // A whole JSON body is built in memory, unlike a stream, so its size is bounded.
        if let Text::Filler { count } = steering.text
            && count.saturating_mul(sse::FILLER_DELTA_BYTES) > MAX_JSON_TEXT_BYTES
        {
            let message = format!(
                "x-mock-stream-bytes: at most {MAX_JSON_TEXT_BYTES} without \"stream\": true"
            );
            return Err(Rejection::invalid(message));
        }
        let text = steering.text.joined();
        let json = sse::message_json(model, &message_id, &text, &usage);
        let mut response = response::json(StatusCode::OK, json, request_id);
        if let Some(window) = window {
            response.extensions_mut().insert(window);
        }
        return Ok(response);
    }

    let events = sse::message_events(model, &message_id, steering.text, usage);
    let (events, ending): (Box<dyn Iterator<Item = Bytes> + Send>, Ending) = match stream_fault {
        Some(Fault::DropMidStream { after_events }) => {
            (Box::new(events.take(*after_events)), Ending::Drop)
        }
        Some(Fault::Stall { after_events }) => {
            (Box::new(events.take(*after_events)), Ending::Stall)
        }
        Some(Fault::ErrorEvent { after_events }) => {
            let error = sse::overloaded_error_event(request_id);
            (
                Box::new(events.take(*after_events).chain([error])),
                Ending::Clean,
            )
        }
        _ => (events, Ending::Clean),
    };
    let pacing = steering.pacing;
    let chunks: Chunks = Box::new(
        events
            .enumerate()
            .flat_map(move |(index, event)| sse::pace(index, event, pacing)),
    );
    let body = ScriptedBody::new(chunks, ending, None, Arc::clone(state));
    let mut response = Response::new(ResponseBody::Scripted(body));
    response::put(
        &mut response,
        "content-type",
        "text/event-stream; charset=utf-8",
    );
    response::put(&mut response, "cache-control", "no-cache");
    response::put_common(&mut response, request_id);
    if let Some(window) = window {
        response.extensions_mut().insert(window);
    }
    Ok(response)
}

/// Stream faults on a route that answered with a whole JSON body: `DropMidStream` cuts the
/// body in half, `Stall` sends none of it, `ErrorEvent` becomes a 529 since there is no stream
/// to carry the event. An SSE answer has already taken the fault into its script and is
/// returned unchanged.
fn apply_fault_to_full_body(
    response: Response,
    fault: &Fault,
    state: &Arc<State>,
    request_id: &str,
) -> Response {
    let Some(bytes) = response.body().full_bytes() else {
        return response;
    };
    match fault {
        Fault::DropMidStream { .. } => {
            let (parts, _) = response.into_parts();
            let half = bytes.slice(..bytes.len() / 2);
            let chunks: Chunks = Box::new(std::iter::once(Chunk {
                delay: Duration::ZERO,
                bytes: half,
            }));
            let declared = Some(bytes.len() as u64);
            let body = ScriptedBody::new(chunks, Ending::Drop, declared, Arc::clone(state));
            Response::from_parts(parts, ResponseBody::Scripted(body))
        }
        Fault::Stall { .. } => {
            let (parts, _) = response.into_parts();
            let declared = Some(bytes.len() as u64);
            let body = ScriptedBody::new(
                Box::new(std::iter::empty()),
                Ending::Stall,
                declared,
                Arc::clone(state),
            );
            Response::from_parts(parts, ResponseBody::Scripted(body))
        }
        Fault::ErrorEvent { .. } => {
            response::error(ErrorKind::Overloaded, "Overloaded", request_id)
        }
        _ => response,
    }
}

/// The batch and file routes other than uploads.
fn store(
    state: &State,
    route: batches::Route,
    request: &ReceivedRequest,
    request_id: &str,
) -> Response {
    use batches::Route as R;
    match route {
        R::Upload | R::ListFiles | R::File(_) | R::DeleteFile(_) | R::FileContent(_) => {
            state.store().files(route, request, request_id)
        }
        _ => {
            let now = crate::time::rfc3339(crate::time::now_epoch());
            let ids = (state.next_batch_id(), request_id.to_owned());
            state
                .store()
                .batches(route, request, ids, &state.origin, &now)
        }
    }
}

fn count_tokens(request: &ReceivedRequest, request_id: &str) -> Result<Response, Rejection> {
    let body = json_body(request, &["model", "messages"])?;
    model_name(&body)?;
    let input_tokens = Usage::for_request(&request.body).input_tokens;
    let json = format!("{{\"input_tokens\":{input_tokens}}}");
    Ok(response::json(StatusCode::OK, json, request_id))
}

fn model_info(id: &str, display_name: &str, created_at: &str) -> Value {
    json!({"created_at": created_at, "display_name": display_name, "id": id, "type": "model"})
}

fn models(request_id: &str) -> Response {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name, at)| model_info(id, name, at))
        .collect();
    let body = json!({
        "data": data,
        "first_id": MODELS[0].0,
        "has_more": false,
        "last_id": MODELS[MODELS.len() - 1].0,
    });
    response::json(StatusCode::OK, body.to_string(), request_id)
}

/// An exact id, or an alias that the id extends with a date (`claude-haiku-4-5` → the dated
/// id).
fn model(id: &str, request_id: &str) -> Result<Response, Rejection> {
    let is_date_suffix = |rest: &str| {
        rest.strip_prefix('-')
            .is_some_and(|date| date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()))
    };
    let alias_of = |full: &str| full == id || full.strip_prefix(id).is_some_and(is_date_suffix);
    let (full, name, at) = MODELS
        .iter()
        .find(|(full, _, _)| alias_of(full))
        .ok_or_else(|| Rejection::new(ErrorKind::NotFound, format!("model: {id}")))?;
    let body = model_info(full, name, at).to_string();
    Ok(response::json(StatusCode::OK, body, request_id))
}

fn complete(request: &ReceivedRequest, request_id: &str) -> Result<Response, Rejection> {
    let body = json_body(request, &["model", "prompt", "max_tokens_to_sample"])?;
    let model = model_name(&body)?;
    let text = request.header("x-mock-text").unwrap_or(DEFAULT_TEXT);
    let body = json!({
        "type": "completion",
        "id": format!("compl_{}", request_id.trim_start_matches("req_")),
        "completion": format!(" {text}"),
        "stop_reason": "stop_sequence",
        "stop": "\n\nHuman:",
        "model": model,
    });
    Ok(response::json(StatusCode::OK, body.to_string(), request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            Route::parse("POST", "/v1/messages"),
            Some(Route::Messages)
        ));
        assert!(matches!(Route::parse("GET", "/v1/models/x"), Some(Route::Model(id)) if id == "x"));
        assert!(Route::parse("GET", "/v1/models/").is_none());
        assert!(Route::parse("GET", "/v1/messages").is_none());
        assert!(Route::parse("GET", "/v2/models/x").is_none());
        assert!(Route::parse("DELETE", "/v1/models").is_none());
    }

    #[test]
    fn model_aliases_resolve() {
        let response = model("claude-haiku-4-5", "req_1").expect("alias resolves");
        let body = response.body().full_bytes().expect("full");
        assert!(
            std::str::from_utf8(&body)
                .expect("utf-8")
                .contains("claude-haiku-4-5-20251001")
        );
        assert!(model("claude-haiku", "req_1").is_err());
        assert!(model("claude-haiku-4-5-2025", "req_1").is_err());
    }
}
