//! Header hygiene (protocol doc §9): hop-by-hop headers never cross the proxy, client
//! credentials never reach the upstream, and exactly one account credential is injected.

use ccflare_core::AccountKind;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const OAUTH_BETA: &str = "oauth-2025-04-20";

/// RFC 9110 §7.6.1 hop-by-hop headers, plus `host` (the client sets it from the URI).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Cleans an upstream response's headers before they go to the client: hop-by-hop headers,
/// and `set-cookie` — a cookie set for one account (Cloudflare's bot cookies) must not come
/// back with requests that go to another, where it would tie the accounts together.
pub fn upstream_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::SET_COOKIE);
}

/// Turns the client's request headers into the upstream's: hop-by-hop, `host`, the client's
/// credentials and `content-length` (recomputed from the body) are removed; the account's
/// credential is set; `accept-encoding: identity` keeps the response readable for usage
/// accounting. `anthropic-version` and `anthropic-beta` pass through as sent, except that OAuth
/// accounts append the OAuth beta when it is missing.
pub fn upstream_request_headers(
    headers: &mut HeaderMap,
    kind: AccountKind,
    credential: &str,
) -> Result<(), http::header::InvalidHeaderValue> {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    headers.remove("x-api-key");
    headers.remove(header::CONTENT_LENGTH);
    // The body is already here: nothing to wait for. Cookies are per account (Cloudflare
    // sets them) and must not carry one account's over to another.
    headers.remove(header::EXPECT);
    headers.remove(header::COOKIE);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    match kind {
        AccountKind::ApiKey => {
            let mut value = HeaderValue::from_str(credential)?;
            value.set_sensitive(true);
            headers.insert("x-api-key", value);
        }
        AccountKind::OAuth => {
            let mut value = HeaderValue::from_str(&format!("Bearer {credential}"))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
            let beta = headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !beta.split(',').any(|b| b.trim() == OAUTH_BETA) {
                let joined = if beta.trim().is_empty() {
                    OAUTH_BETA.to_owned()
                } else {
                    format!("{beta},{OAUTH_BETA}")
                };
                headers.insert("anthropic-beta", HeaderValue::from_str(&joined)?);
            }
        }
    }
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
}
