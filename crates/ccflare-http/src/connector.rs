//! The connector every ccflare client uses, and the pooled client built on it.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// TCP (plain, or under rustls for `https://`).
pub type Connector = HttpsConnector<HttpConnector>;

/// hyper-util's pooled client over [`Connector`], sending bodies of type `B`.
pub type PooledClient<B> = hyper_util::client::legacy::Client<Connector, B>;

/// Why a pooled client's request produced no response (`is_connect()` tells a refused or
/// timed-out connect from a connection that broke).
pub type SendError = hyper_util::client::legacy::Error;

/// How long an idle connection may sit before the kernel probes it: a pooled connection to a
/// peer that vanished is found out in about a minute instead of at the next request.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// TCP with `TCP_NODELAY` (a request goes out whole at once, not after Nagle's wait), TCP
/// keep-alive probes and the given connect timeout, under rustls with the webpki roots for
/// `https://`, and plain for `http://`. HTTP/1.1 only: what the Anthropic API, the token
/// endpoint and ccflare's own server speak.
pub fn connector(connect_timeout: Duration) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(TCP_KEEPALIVE));
    // The scheme is rustls's to check: plain TCP must also carry https:// URIs.
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// A builder of [`PooledClient`]s whose connection tasks run on the tokio runtime; callers set
/// the pool's size and idle timeout, then `build(connector(…))`.
pub fn pool_builder() -> hyper_util::client::legacy::Builder {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
}
