//! Errors of the proxy: start-up failures, and the reasons an upstream attempt or a stream
//! failed, each saying who failed (client, upstream, proxy) so the retry loop and the record
//! read fields instead of matching strings.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUpstream { url: String, reason: String },
}

/// Why a response body stopped before its end.
#[derive(Debug)]
pub enum BodyError {
    /// The upstream connection broke mid-stream.
    Upstream(hyper::Error),
    /// No byte from the upstream for the idle timeout.
    IdleTimeout,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Upstream(e) => write!(f, "upstream stream broke: {e}"),
            BodyError::IdleTimeout => f.write_str("upstream sent nothing for the idle timeout"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Why one attempt produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    Connect,
    Timeout,
    Other,
}

impl AttemptError {
    pub fn label(self) -> &'static str {
        match self {
            AttemptError::Connect => "connect_error",
            AttemptError::Timeout => "timeout",
            AttemptError::Other => "upstream_error",
        }
    }
}
