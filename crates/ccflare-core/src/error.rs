//! Errors of the core crate, and the Anthropic-shaped error body the proxy answers with when it
//! cannot forward a request (protocol doc §2), so clients handle ccflare's own errors exactly
//! like the API's.

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("invalid value {value:?} for {option}: expected {expected}")]
    InvalidOption {
        option: String,
        value: String,
        expected: String,
    },
    #[error("unknown option {option:?} in {source_name}")]
    UnknownOption { option: String, source_name: String },
}

/// `{"type":"error","error":{"type":…,"message":…},"request_id":…}` as JSON text.
pub fn anthropic_error_body(error_type: &str, message: &str, request_id: &str) -> String {
    serde_json::json!({
        "type": "error",
        "error": { "type": error_type, "message": message },
        "request_id": request_id,
    })
    .to_string()
}
