//! Why an exchange failed, by what the caller may do about it. No variant carries a header or a
//! body: requests hold credentials.

use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A base URL that is not absolute (`http://` or `https://` and a host).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL {url:?}: {reason}")]
pub struct InvalidUrl {
    pub url: String,
    pub reason: String,
}

/// Why an exchange produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing accepted the connection in time, or it was refused. Shown as hyper-util shows
    /// it ("client error (Connect)" and its causes).
    #[error(transparent)]
    Connect(crate::SendError),
    /// The connection was made but broke before the response's headers.
    #[error(transparent)]
    Send(crate::SendError),
    /// The whole exchange (or, when a stream is opened, its headers) took longer than this.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer's body broke off.
    #[error("the answer could not be read")]
    Body(#[source] BoxError),
    /// The answer's body is longer than the exchange takes.
    #[error("the answer is longer than {limit} bytes")]
    TooLarge { limit: usize },
}

impl HttpError {
    pub(crate) fn sending(error: crate::SendError) -> HttpError {
        if error.is_connect() {
            HttpError::Connect(error)
        } else {
            HttpError::Send(error)
        }
    }
}
