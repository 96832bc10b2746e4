//! Any request body: reading its model, stream flag and session never panics, and whatever it
//! reads is what a full JSON parse of the same body says, where one succeeds.
//!
//! Input: the body.

#![no_main]

use ccflare_core::request::{RequestInfo, session_key};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let info = RequestInfo::from_body(body);
    let _ = session_key(|_| None, &info);
    if info == RequestInfo::default() {
        return;
    }
    // Something was read, so the body is a JSON object saying it. The inspection skips the
    // fields it does not need without checking them (invalid UTF-8 or a lone surrogate in a
    // skipped string is the upstream's to refuse), so compare with a full parse only where
    // one succeeds, with invalid UTF-8 replaced.
    let Ok(value) = serde_json::from_str::<Value>(&String::from_utf8_lossy(body)) else {
        return;
    };
    let object = value
        .as_object()
        .expect("read from a body that is not an object");
    assert_eq!(
        info.model.as_deref(),
        object.get("model").and_then(Value::as_str),
        "model"
    );
    assert_eq!(
        info.stream,
        object
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        "stream"
    );
    if let Some(session) = &info.body_session {
        let user_id = object["metadata"]["user_id"].as_str().expect("user_id");
        assert!(!session.is_empty() || user_id.contains("session_id"));
    }
});
