//! The admin key (SPEC §11): when the server has one, every management request must carry it,
//! as `Authorization: Bearer <key>` or `x-ccflare-admin-key: <key>`. The comparison (`subtle`'s)
//! takes the same time whatever the bytes sent (only their length shows), so the key cannot be
//! guessed byte by byte.

use crate::error::ApiError;
use ccflare_core::Secret;
use ccflare_core::browser::{self, BrowserRefusal};
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The header for clients that use `Authorization` for something else.
pub const ADMIN_KEY_HEADER: &str = "x-ccflare-admin-key";

/// Refuses what a web page in the user's browser could send: a request whose `Origin` is not
/// this server, and — when there is no admin key — a request that names the server by
/// anything but a loopback name (a DNS-rebinding page names it by its own domain). The rule is
/// `ccflare_core::browser`'s, which `/v1` applies too.
pub fn check_browser(headers: &HeaderMap, has_admin_key: bool) -> Result<(), ApiError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let checked = browser::check(
        text(http::header::ORIGIN),
        text(http::header::HOST),
        !has_admin_key,
    );
    match checked {
        Ok(()) => Ok(()),
        Err(BrowserRefusal::ForeignOrigin(origin)) => Err(ApiError::Forbidden(format!(
            "cross-origin requests are refused (Origin {origin} is not this server)"
        ))),
        Err(BrowserRefusal::ForeignHost) => Err(ApiError::Forbidden(
            "address this server as localhost or 127.0.0.1, or give it an admin key".into(),
        )),
    }
}

pub fn check(headers: &HeaderMap, key: &Secret) -> Result<(), ApiError> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let header = headers.get(ADMIN_KEY_HEADER).and_then(|v| v.to_str().ok());
    let sent = [bearer, header].into_iter().flatten();
    let mut accepted = false;
    for candidate in sent {
        accepted |= bool::from(candidate.trim().as_bytes().ct_eq(key.expose().as_bytes()));
    }
    if accepted {
        Ok(())
    } else {
        Err(ApiError::AdminKeyRequired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_key_is_accepted_in_either_header_and_nothing_else_is() {
        let key = Secret::new("0123456789abcdef-admin");
        assert!(
            check(
                &headers(&[("authorization", "Bearer 0123456789abcdef-admin")]),
                &key
            )
            .is_ok()
        );
        assert!(
            check(
                &headers(&[("x-ccflare-admin-key", "0123456789abcdef-admin")]),
                &key
            )
            .is_ok()
        );
        for wrong in [
            headers(&[]),
            headers(&[("authorization", "Bearer 0123456789abcdef-admiN")]),
            headers(&[("authorization", "0123456789abcdef-admin")]),
            headers(&[("x-ccflare-admin-key", "0123456789abcdef-admin-and-more")]),
            headers(&[("x-ccflare-admin-key", "0123456789abcdef")]),
        ] {
            assert!(matches!(
                check(&wrong, &key),
                Err(ApiError::AdminKeyRequired)
            ));
        }
    }

    #[test]
    fn browsers_from_elsewhere_are_refused() {
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(check_browser(&ok, false).is_ok());
        assert!(check_browser(&headers(&[("host", "localhost:8080")]), false).is_ok());
        assert!(check_browser(&headers(&[("host", "[::1]:8080")]), false).is_ok());
        assert!(
            check_browser(&headers(&[]), false).is_ok(),
            "no Host: not a browser"
        );
        let evil = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(matches!(
            check_browser(&evil, true),
            Err(ApiError::Forbidden(_))
        ));
        let rebound = headers(&[("host", "evil.example:8080")]);
        assert!(matches!(
            check_browser(&rebound, false),
            Err(ApiError::Forbidden(_))
        ));
        assert!(
            check_browser(&rebound, true).is_ok(),
            "with an admin key the key decides"
        );
    }
}
