//! Small exchanges: one request, one answer of bounded size, within one total deadline. For
//! the token endpoint, `ccflare-cli doctor` and the CLI's questions to a running server;
//! never for proxied generations, which may rightly take many minutes (the proxy uses the
//! pooled client directly, with its own idle timeout).

use crate::connector::{PooledClient, connector, pool_builder};
use crate::error::HttpError;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::time::Duration;

/// The bounds of every call through one [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connecting (TCP and TLS handshake start) may take this long.
    pub connect: Duration,
    /// A whole exchange, connecting included, may take this long; an opened stream must have
    /// its headers by then.
    pub total: Duration,
    /// The longest body an exchange reads; a longer one is [`HttpError::TooLarge`].
    pub max_body: usize,
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A client for small exchanges, with its own connection pool. Cheap to clone (the pool is
/// shared).
#[derive(Debug, Clone)]
pub struct Client {
    pool: PooledClient<Full<Bytes>>,
    limits: Limits,
}

impl Client {
    pub fn new(limits: Limits) -> Client {
        Client {
            pool: pool_builder().build(connector(limits.connect)),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sends `request` and reads the whole answer, within [`Limits::total`] and at most
    /// [`Limits::max_body`] bytes of body.
    pub async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Answer, HttpError> {
        let Limits {
            total, max_body, ..
        } = self.limits;
        let call = async {
            let response = self
                .pool
                .request(request)
                .await
                .map_err(HttpError::sending)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<LengthLimitError>() {
                        HttpError::TooLarge { limit: max_body }
                    } else {
                        HttpError::Body(error)
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(total, call)
            .await
            .map_err(|_| HttpError::Timeout(total))?
    }

    /// Sends `request` and returns the response as soon as its headers are in (within
    /// [`Limits::total`]); the body is the caller's to read, with no deadline or cap of ours:
    /// for an endless stream such as a live feed, or when only the status matters.
    pub async fn open(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, HttpError> {
        let total = self.limits.total;
        tokio::time::timeout(total, self.pool.request(request))
            .await
            .map_err(|_| HttpError::Timeout(total))?
            .map_err(HttpError::sending)
    }
}
