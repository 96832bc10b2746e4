//! Header hygiene (protocol doc §9): hop-by-hop headers never cross the proxy, client
//! credentials never reach the upstream, and exactly one account credential is injected.

use ccflare_core::AccountKind;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const OAUTH_BETA: &str = "oauth-2025-04-20";

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The version sent for a client that names none: the current one of the Messages API.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// RFC 9110 §7.6.1 hop-by-hop headers. Names, not text: removing by a name does not parse
/// it again for every request.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Prefix of the headers ccflare itself reads or sets (`x-ccflare-key`, `x-ccflare-admin-key`,
/// `x-ccflare-account`, …): none of a client's is ever sent upstream.
const CCFLARE_PREFIX: &str = "x-ccflare-";

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Cleans an upstream response's headers before they go to the client: hop-by-hop headers,
/// and `set-cookie` — a cookie set for one account (Cloudflare's bot cookies) must not come
/// back with requests that go to another, where it would tie the accounts together.
pub fn upstream_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::SET_COOKIE);
    no_buffering_for_streams(headers);
}

/// A streamed response (`text/event-stream`) says `X-Accel-Buffering: no`, so that nginx in
/// front (deploy/nginx) passes each event on as it comes even where `proxy_buffering` is left
/// on.
pub fn no_buffering_for_streams(headers: &mut HeaderMap) {
    let streamed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if streamed {
        headers.insert(
            const { HeaderName::from_static("x-accel-buffering") },
            HeaderValue::from_static("no"),
        );
    }
}

/// Turns the client's request headers into the upstream's: hop-by-hop, `host`, the client's
/// credentials, ccflare's own `x-ccflare-*` headers and `content-length` (recomputed from the
/// body) are removed; the account's
/// credential is set; `accept-encoding: identity` keeps the response readable for usage
/// accounting. `anthropic-version` and `anthropic-beta` pass through as sent, except that a
/// missing `anthropic-version` is set to `2023-06-01`, and for OAuth accounts the
/// `anthropic-beta` lines become one, with the OAuth beta appended when it is missing.
pub fn upstream_request_headers(
    headers: &mut HeaderMap,
    kind: AccountKind,
    credential: &str,
) -> Result<(), http::header::InvalidHeaderValue> {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    headers.remove(X_API_KEY);
    headers.remove(header::CONTENT_LENGTH);
    // The body is already here: nothing to wait for. Cookies are per account (Cloudflare
    // sets them) and must not carry one account's over to another.
    headers.remove(header::EXPECT);
    headers.remove(header::COOKIE);
    strip_ccflare_headers(headers);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    // The API refuses a request without a version (curl users often leave it out); a
    // client's own value always wins.
    if !headers.contains_key(ANTHROPIC_VERSION) {
        headers.insert(
            ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
    match kind {
        AccountKind::ApiKey => {
            let mut value = HeaderValue::from_str(credential)?;
            value.set_sensitive(true);
            headers.insert(X_API_KEY, value);
        }
        AccountKind::OAuth => {
            let mut value = HeaderValue::from_str(&format!("Bearer {credential}"))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
            with_oauth_beta(headers)?;
        }
    }
    Ok(())
}

/// Removes every `x-ccflare-*` header: they speak to ccflare (a client key, the admin key) or
/// pretend to come from it, and would tell the upstream about the pool or leak a key.
fn strip_ccflare_headers(headers: &mut HeaderMap) {
    // Header names are stored lowercase, so the prefix compares as it is.
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(CCFLARE_PREFIX))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// Makes `anthropic-beta` one header holding every beta the client sent, in order (it may send
/// several lines), with the OAuth beta appended unless one of them already names it.
fn with_oauth_beta(headers: &mut HeaderMap) -> Result<(), http::header::InvalidHeaderValue> {
    let lines = headers.get_all(ANTHROPIC_BETA);
    let has_oauth = lines.iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|beta| beta.trim_ascii() == OAUTH_BETA.as_bytes())
    });
    if has_oauth && lines.iter().nth(1).is_none() {
        return Ok(());
    }
    let mut joined = Vec::new();
    let betas = lines
        .iter()
        .map(|line| line.as_bytes().trim_ascii())
        .chain((!has_oauth).then_some(OAUTH_BETA.as_bytes()));
    for beta in betas.filter(|beta| !beta.is_empty()) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(beta);
    }
    headers.insert(ANTHROPIC_BETA, HeaderValue::from_bytes(&joined)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn client_credentials_are_replaced_by_the_accounts() {
        let mut h = map(&[
            ("x-api-key", "client-key"),
            ("authorization", "Bearer sk-ant-api03-client"),
            ("host", "localhost:8080"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("anthropic-version", "2026-10-21"),
            ("anthropic-beta", "a,b"),
            ("content-length", "10"),
            ("cookie", "__cf_bm=from-another-account"),
            ("expect", "100-continue"),
        ]);
        upstream_request_headers(&mut h, AccountKind::ApiKey, "sk-ant-account").unwrap();
        assert_eq!(h.get("x-api-key").unwrap(), "sk-ant-account");
        assert!(h.get("authorization").is_none() && h.get("host").is_none());
        assert!(h.get("x-custom").is_none() && h.get("connection").is_none());
        assert_eq!(h.get("anthropic-version").unwrap(), "2026-10-21");
        assert_eq!(h.get("anthropic-beta").unwrap(), "a,b");
        assert!(h.get("content-length").is_none());
        assert!(h.get("cookie").is_none() && h.get("expect").is_none());
        assert_eq!(h.get("accept-encoding").unwrap(), "identity");
    }

    #[test]
    fn ccflare_headers_from_the_client_stay_behind() {
        let mut h = map(&[
            ("x-ccflare-key", "ccf_client-key"),
            ("X-Ccflare-Admin-Key", "0123456789abcdef-admin"),
            ("x-ccflare-account", "spoofed"),
            ("x-ccflare-anything", "1"),
            ("x-ccflarex", "not ours"),
            ("x-custom", "kept"),
        ]);
        upstream_request_headers(&mut h, AccountKind::ApiKey, "sk-ant-account").unwrap();
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert!(
            names.iter().all(|n| !n.starts_with("x-ccflare-")),
            "{names:?}"
        );
        assert_eq!(h.get("x-ccflarex").unwrap(), "not ours");
        assert_eq!(h.get("x-custom").unwrap(), "kept");
    }

    #[test]
    fn response_cookies_and_hop_by_hop_headers_stay_behind() {
        let mut h = map(&[
            ("set-cookie", "__cf_bm=x"),
            ("transfer-encoding", "chunked"),
            ("request-id", "req_1"),
        ]);
        upstream_response_headers(&mut h);
        assert!(h.get("set-cookie").is_none() && h.get("transfer-encoding").is_none());
        assert_eq!(h.get("request-id").unwrap(), "req_1");
    }

    #[test]
    fn oauth_appends_the_beta_once() {
        let mut h = map(&[
            ("x-api-key", "c"),
            ("anthropic-beta", "claude-code-20250219"),
        ]);
        upstream_request_headers(&mut h, AccountKind::OAuth, "sk-ant-oat01-t").unwrap();
        assert_eq!(h.get("authorization").unwrap(), "Bearer sk-ant-oat01-t");
        assert!(h.get("x-api-key").is_none());
        assert_eq!(
            h.get("anthropic-beta").unwrap(),
            "claude-code-20250219,oauth-2025-04-20"
        );
        upstream_request_headers(&mut h, AccountKind::OAuth, "sk-ant-oat01-t").unwrap();
        assert_eq!(
            h.get("anthropic-beta").unwrap(),
            "claude-code-20250219,oauth-2025-04-20"
        );
        let mut none = HeaderMap::new();
        upstream_request_headers(&mut none, AccountKind::OAuth, "sk-ant-oat01-t").unwrap();
        assert_eq!(none.get("anthropic-beta").unwrap(), "oauth-2025-04-20");
    }

    #[test]
    fn a_missing_anthropic_version_gets_the_default() {
        let mut h = map(&[("x-api-key", "c")]);
        upstream_request_headers(&mut h, AccountKind::ApiKey, "sk-ant-account").unwrap();
        assert_eq!(h.get("anthropic-version").unwrap(), "2023-06-01");
        let mut h = map(&[("anthropic-version", "")]);
        upstream_request_headers(&mut h, AccountKind::OAuth, "sk-ant-oat01-t").unwrap();
        assert_eq!(
            h.get("anthropic-version").unwrap(),
            "",
            "the client's own value"
        );
    }

    #[test]
    fn oauth_joins_every_beta_line_into_one() {
        let check = |lines: &[&str], expected: &str| {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("anthropic-beta", *l)).collect();
            let mut h = map(&pairs);
            upstream_request_headers(&mut h, AccountKind::OAuth, "sk-ant-oat01-t").unwrap();
            let values: Vec<_> = h.get_all("anthropic-beta").iter().collect();
            assert_eq!(values, [expected], "{lines:?}");
        };
        check(&["a", "b,c"], "a,b,c,oauth-2025-04-20");
        check(&["a", "oauth-2025-04-20"], "a,oauth-2025-04-20");
        check(&["oauth-2025-04-20, a", " b "], "oauth-2025-04-20, a,b");
        check(&["", "a"], "a,oauth-2025-04-20");
        check(&["a, oauth-2025-04-20"], "a, oauth-2025-04-20");
        // API keys leave the client's lines alone.
        let mut h = map(&[("anthropic-beta", "a"), ("anthropic-beta", "b")]);
        upstream_request_headers(&mut h, AccountKind::ApiKey, "sk-ant-api03-k").unwrap();
        assert_eq!(h.get_all("anthropic-beta").iter().count(), 2);
    }
}
