//! The pooled upstream client: `ccflare-http`'s connector (rustls with the webpki roots,
//! `TCP_NODELAY`, a connect timeout) under hyper-util's connection pool, sized for the proxy's
//! load. No total timeout anywhere: a long generation is not a failure; only silence is (the
//! idle timeout, enforced by the caller).

use crate::error::ProxyError;
use bytes::Bytes;
use ccflare_http::{BaseUrl, InvalidUrl, PooledClient, SendError};
use http_body_util::Full;
use hyper::body::Incoming;
use std::time::Duration;

/// How long an idle pooled connection is kept for the next request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host: enough for every client connection's request to
/// find a warm one after a burst.
const POOL_MAX_IDLE_PER_HOST: usize = 1024;

/// The client and the upstream base it sends to.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: PooledClient<Full<Bytes>>,
    base: BaseUrl,
}

impl UpstreamClient {
    pub fn new(base_url: &str, connect_timeout: Duration) -> Result<UpstreamClient, ProxyError> {
        let base = BaseUrl::parse(base_url)
            .map_err(|InvalidUrl { url, reason }| ProxyError::InvalidUpstream { url, reason })?;
        let client = ccflare_http::pool_builder()
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(ccflare_http::connector(connect_timeout));
        Ok(UpstreamClient { client, base })
    }

    /// The upstream URI for a client request's path and query, kept byte for byte.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        self.base.join(path_and_query)
    }

    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, SendError> {
        self.client.request(request).await
    }
}
