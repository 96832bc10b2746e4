//! The pooled upstream client: hyper-util's connection pool over rustls (webpki roots) with
//! `TCP_NODELAY` and a connect timeout. No total timeout anywhere: a long generation is not a
//! failure; only silence is (the idle timeout, enforced by the caller).

use crate::error::ProxyError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The client and the upstream base it sends to.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority` plus any path prefix, without a trailing slash.
    base: String,
}

impl UpstreamClient {
    pub fn new(base_url: &str, connect_timeout: Duration) -> Result<UpstreamClient, ProxyError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: http::Uri =
            base.parse()
                .map_err(|e: http::uri::InvalidUri| ProxyError::InvalidUpstream {
                    url: base.clone(),
                    reason: e.to_string(),
                })?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(ProxyError::InvalidUpstream {
                url: base,
                reason: "expected http:// or https:// and a host".into(),
            });
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Ok(UpstreamClient { client, base })
    }

    /// The upstream URI for a client request's path and query, kept byte for byte.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        let mut uri = String::with_capacity(self.base.len() + path_and_query.len());
        uri.push_str(&self.base);
        uri.push_str(path_and_query);
        uri.parse()
    }

    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// Sends `GET path` with no credential and returns the status, dropping the body: how
    /// `ccflare-cli doctor` shows that the upstream answers without spending quota (any HTTP
    /// answer, a 401 included, proves it is reachable). The caller bounds the wait.
    pub async fn probe(
        &self,
        path: &str,
    ) -> Result<http::StatusCode, Box<dyn std::error::Error + Send + Sync>> {
        let request = http::Request::get(self.uri_for(path)?)
            .header(http::header::USER_AGENT, "ccflare-doctor")
            .body(Full::new(Bytes::new()))?;
        Ok(self.client.request(request).await?.status())
    }
}
