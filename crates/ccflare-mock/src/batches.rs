//! Message Batches and Files: objects that belong to an organisation. The mock treats each
//! credential as its own organisation, so a batch or file is found only with the credential
//! that created it (any other gets 404 `not_found_error`, as another organisation's key does):
//! a proxy that sends a batch's later requests to another account is caught.
//!
//! A batch answers `processing_status: "in_progress"` (and `results_url: null`) when created,
//! and `"ended"` on every later look, with `results_url` an absolute URL on the mock's own
//! origin (`http://127.0.0.1:PORT/v1/messages/batches/{id}/results`), as the API names its
//! own. Its results are one JSONL line per request, each a message with the mock's default text.
//!
//! An upload (`POST /v1/files`, multipart) is counted as it arrives and never held: the file's
//! `size_bytes` is the body's length less the multipart framing around its one part.

use std::collections::HashMap;

use http::StatusCode;
use serde_json::{Value, json};

use crate::request::ReceivedRequest;
use crate::response::{self, ErrorKind, Response};
use crate::sse::{self, Usage};

/// The mock's text in batch results.
const RESULT_TEXT: &str = "Hello from the mock upstream.";

/// What the store keeps of one batch.
#[derive(Debug, Clone)]
struct Batch {
    owner: String,
    created_at: String,
    /// One JSONL line per request, in the order created.
    results: Vec<String>,
    looked_at: bool,
    canceled: bool,
}

/// What the store keeps of one file.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    owner: String,
    filename: String,
    mime_type: String,
    size_bytes: u64,
    created_at: String,
}

/// Batches and files by id.
#[derive(Debug, Default)]
pub(crate) struct Store {
    batches: HashMap<String, Batch>,
    /// Ids in creation order, for listing.
    batch_order: Vec<String>,
    files: HashMap<String, StoredFile>,
    file_order: Vec<String>,
}

/// The batch and file routes.
#[derive(Debug)]
pub(crate) enum Route {
    CreateBatch,
    ListBatches,
    Batch(String),
    CancelBatch(String),
    DeleteBatch(String),
    BatchResults(String),
    Upload,
    ListFiles,
    File(String),
    DeleteFile(String),
    FileContent(String),
}

impl Route {
    pub(crate) fn parse(method: &str, path: &str) -> Option<Route> {
        if let Some(rest) = path.strip_prefix("/v1/messages/batches") {
            let parts: Vec<&str> = rest.split('/').skip(1).collect();
            return match (method, parts.as_slice()) {
                ("POST", []) => Some(Route::CreateBatch),
                ("GET", []) => Some(Route::ListBatches),
                ("GET", [id]) if !id.is_empty() => Some(Route::Batch((*id).to_owned())),
                ("DELETE", [id]) if !id.is_empty() => Some(Route::DeleteBatch((*id).to_owned())),
                ("POST", [id, "cancel"]) => Some(Route::CancelBatch((*id).to_owned())),
                ("GET", [id, "results"]) => Some(Route::BatchResults((*id).to_owned())),
                _ => None,
            };
        }
        let rest = path.strip_prefix("/v1/files")?;
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        match (method, parts.as_slice()) {
            ("POST", []) => Some(Route::Upload),
            ("GET", []) => Some(Route::ListFiles),
            ("GET", [id]) if !id.is_empty() => Some(Route::File((*id).to_owned())),
            ("DELETE", [id]) if !id.is_empty() => Some(Route::DeleteFile((*id).to_owned())),
            ("GET", [id, "content"]) => Some(Route::FileContent((*id).to_owned())),
            _ => None,
        }
    }
}

/// The size of the one part of a multipart body: its length less the part's headers (up to
/// the first blank line) and the closing `\r\n--boundary--\r\n`.
pub(crate) fn multipart_size(head: &[u8], total: u64, content_type: Option<&str>) -> u64 {
    let boundary = content_type
        .and_then(|ct| {
            ct.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"'))
        .unwrap_or("");
    let headers_end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| at + 4);
    let closing = format!("\r\n--{boundary}--\r\n").len();
    total.saturating_sub((headers_end + closing) as u64)
}

/// The part's file name, from its `Content-Disposition`, and its `Content-Type`.
fn multipart_file(head: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(head);
    let headers = text.split("\r\n\r\n").next().unwrap_or("");
    let filename = headers
        .split("filename=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("upload")
        .to_owned();
    let mime_type = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    (filename, mime_type)
}

fn not_found(what: &str, id: &str, request_id: &str) -> Response {
    let message = format!("{what} {id} not found");
    response::error(ErrorKind::NotFound, &message, request_id)
}

impl Store {
    fn batch_json(&self, id: &str, batch: &Batch, origin: &str, in_progress: bool) -> Value {
        let count = batch.results.len();
        let (status, results_url, ended_at, counts) = if in_progress {
            let counts = json!({"processing": count, "succeeded": 0, "errored": 0,
                "canceled": 0, "expired": 0});
            ("in_progress", Value::Null, Value::Null, counts)
        } else {
            let counts = json!({"processing": 0, "succeeded": count, "errored": 0,
                "canceled": 0, "expired": 0});
            let url = format!("{origin}/v1/messages/batches/{id}/results");
            (
                "ended",
                Value::String(url),
                Value::String(batch.created_at.clone()),
                counts,
            )
        };
        json!({
            "id": id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": ended_at,
            "created_at": batch.created_at,
            "expires_at": batch.created_at,
            "archived_at": null,
            "cancel_initiated_at": if batch.canceled { Value::String(batch.created_at.clone()) } else { Value::Null },
            "results_url": results_url,
        })
    }

    /// Answers a batch route for `request`'s credential.
    pub(crate) fn batches(
        &mut self,
        route: Route,
        request: &ReceivedRequest,
        ids: (String, String),
        origin: &str,
        now: &str,
    ) -> Response {
        let owner = request.credential.clone().unwrap_or_default();
        let (batch_id, request_id) = ids;
        let ok = |body: Value| response::json(StatusCode::OK, body.to_string(), &request_id);
        match route {
            Route::CreateBatch => {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let Some(requests) = body.get("requests").and_then(Value::as_array) else {
                    let message = "requests: Field required";
                    return response::error(ErrorKind::InvalidRequest, message, &request_id);
                };
                let mut results = Vec::new();
                for (n, item) in requests.iter().enumerate() {
                    let custom_id = item.get("custom_id").and_then(Value::as_str);
                    let model = item
                        .pointer("/params/model")
                        .and_then(Value::as_str)
                        .unwrap_or("claude-haiku-4-5");
                    let Some(custom_id) = custom_id else {
                        let message = format!("requests.{n}.custom_id: Field required");
                        return response::error(ErrorKind::InvalidRequest, &message, &request_id);
                    };
                    let params = item.get("params").map(Value::to_string).unwrap_or_default();
                    let usage = Usage {
                        output_tokens: RESULT_TEXT.split_whitespace().count() as u64,
                        ..Usage::for_request(params.as_bytes())
                    };
                    let message_id = format!("msg_batch_{n:04}");
                    let message = sse::message_json(model, &message_id, RESULT_TEXT, &usage);
                    results.push(format!(
                        "{{\"custom_id\":{},\"result\":{{\"type\":\"succeeded\",\"message\":{message}}}}}",
                        response::json_string(custom_id)
                    ));
                }
                let batch = Batch {
                    owner,
                    created_at: now.to_owned(),
                    results,
                    looked_at: false,
                    canceled: false,
                };
                let answer = self.batch_json(&batch_id, &batch, origin, true);
                self.batches.insert(batch_id.clone(), batch);
                self.batch_order.push(batch_id);
                ok(answer)
            }
            Route::ListBatches => {
                let data: Vec<Value> = self
                    .batch_order
                    .iter()
                    .rev()
                    .filter_map(|id| Some((id, self.batches.get(id)?)))
                    .filter(|(_, batch)| batch.owner == owner)
                    .map(|(id, batch)| self.batch_json(id, batch, origin, !batch.looked_at))
                    .collect();
                let first = data.first().map(|b| b["id"].clone()).unwrap_or(Value::Null);
                let last = data.last().map(|b| b["id"].clone()).unwrap_or(Value::Null);
                ok(json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
            }
            Route::Batch(ref id) | Route::CancelBatch(ref id) => {
                let cancel = matches!(route, Route::CancelBatch(_));
                let id = id.clone();
                let Some(batch) = self.batches.get_mut(&id).filter(|b| b.owner == owner) else {
                    return not_found("message batch", &id, &request_id);
                };
                batch.looked_at = true;
                batch.canceled |= cancel;
                let batch = batch.clone();
                ok(self.batch_json(&id, &batch, origin, false))
            }
            Route::DeleteBatch(id) => {
                if self.batches.get(&id).is_none_or(|b| b.owner != owner) {
                    return not_found("message batch", &id, &request_id);
                }
                self.batches.remove(&id);
                self.batch_order.retain(|kept| *kept != id);
                ok(json!({"id": id, "type": "message_batch_deleted"}))
            }
            Route::BatchResults(id) => {
                let Some(batch) = self.batches.get(&id).filter(|b| b.owner == owner) else {
                    return not_found("message batch", &id, &request_id);
                };
                let mut body = batch.results.join("\n");
                body.push('\n');
                let mut answer = response::json(StatusCode::OK, body, &request_id);
                response::put(&mut answer, "content-type", "application/binary");
                answer
            }
            _ => not_found("route", "", &request_id),
        }
    }

    fn file_json(id: &str, file: &StoredFile) -> Value {
        json!({
            "id": id,
            "type": "file",
            "filename": file.filename,
            "mime_type": file.mime_type,
            "size_bytes": file.size_bytes,
            "created_at": file.created_at,
            "downloadable": false,
        })
    }

    /// Keeps an upload's metadata (its bytes were counted, not kept) and answers it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upload(
        &mut self,
        request: &ReceivedRequest,
        head: &[u8],
        total: u64,
        file_id: String,
        now: &str,
        request_id: &str,
    ) -> Response {
        let size_bytes = multipart_size(head, total, request.header("content-type"));
        let (filename, mime_type) = multipart_file(head);
        let file = StoredFile {
            owner: request.credential.clone().unwrap_or_default(),
            filename,
            mime_type,
            size_bytes,
            created_at: now.to_owned(),
        };
        let answer = Store::file_json(&file_id, &file);
        self.files.insert(file_id.clone(), file);
        self.file_order.push(file_id);
        response::json(StatusCode::OK, answer.to_string(), request_id)
    }

    /// Answers the other file routes for `request`'s credential.
    pub(crate) fn files(
        &mut self,
        route: Route,
        request: &ReceivedRequest,
        request_id: &str,
    ) -> Response {
        let owner = request.credential.clone().unwrap_or_default();
        let ok = |body: Value| response::json(StatusCode::OK, body.to_string(), request_id);
        match route {
            Route::ListFiles => {
                let data: Vec<Value> = self
                    .file_order
                    .iter()
                    .rev()
                    .filter_map(|id| Some((id, self.files.get(id)?)))
                    .filter(|(_, file)| file.owner == owner)
                    .map(|(id, file)| Store::file_json(id, file))
                    .collect();
                let first = data.first().map(|f| f["id"].clone()).unwrap_or(Value::Null);
                let last = data.last().map(|f| f["id"].clone()).unwrap_or(Value::Null);
                ok(json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
            }
            Route::File(ref id) | Route::DeleteFile(ref id) | Route::FileContent(ref id) => {
                let id = id.clone();
                let Some(file) = self.files.get(&id).filter(|f| f.owner == owner) else {
                    return not_found("file", &id, request_id);
                };
                match route {
                    Route::DeleteFile(_) => {
                        self.files.remove(&id);
                        self.file_order.retain(|kept| *kept != id);
                        ok(json!({"id": id, "type": "file_deleted"}))
                    }
                    Route::FileContent(_) => {
                        let message = "This file is not downloadable";
                        response::error(ErrorKind::InvalidRequest, message, request_id)
                    }
                    _ => ok(Store::file_json(&id, file)),
                }
            }
            _ => not_found("route", "", request_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert!(matches!(
            Route::parse("POST", "/v1/messages/batches"),
            Some(Route::CreateBatch)
        ));
        assert!(
            matches!(Route::parse("GET", "/v1/messages/batches/b1/results"), Some(Route::BatchResults(id)) if id == "b1")
        );
        assert!(matches!(
            Route::parse("POST", "/v1/messages/batches/b1/cancel"),
            Some(Route::CancelBatch(_))
        ));
        assert!(matches!(
            Route::parse("DELETE", "/v1/files/f1"),
            Some(Route::DeleteFile(_))
        ));
        assert!(Route::parse("GET", "/v1/messages/batches/").is_none());
        assert!(Route::parse("PUT", "/v1/files").is_none());
    }

    #[test]
    fn multipart_size_is_the_part_without_its_framing() {
        let head = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n0123456789";
        let tail = b"\r\n--XyZ--\r\n";
        let total = (head.len() + tail.len()) as u64;
        let size = multipart_size(head, total, Some("multipart/form-data; boundary=XyZ"));
        assert_eq!(size, 10);
        assert_eq!(
            multipart_file(head),
            ("a.bin".to_owned(), "application/octet-stream".to_owned())
        );
    }
}
