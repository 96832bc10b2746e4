//! Cookie sessions for the dashboard. With an admin key, a browser exchanges it once
//! (`POST /api/session {"key": …}`) for a session cookie: 256 random bits from the system,
//! `HttpOnly` (the page's script never sees it), `SameSite=Strict` (no other site's page makes
//! the browser send it), `Path=/`, and `Secure` when the request came through an HTTPS proxy
//! (`X-Forwarded-Proto: https`; the server itself speaks plain HTTP). The key never goes back
//! to the browser, into a URL or into storage.
//!
//! The table lives in memory: a restart logs every browser out. It holds the SHA-256 of each
//! session id (a lookup by hash cannot be timed byte by byte), its expiry, and the hash of the
//! admin key it was opened with, so changing the key ends every session at once. It is
//! bounded ([`MAX_SESSIONS`]; the oldest goes first).
//!
//! A cookie proves only that the browser holds it; a state change made with one must also
//! prove it comes from the dashboard itself: an `Origin` naming this server (the general check
//! of `admin::check_browser` has already refused a foreign one) and no `Sec-Fetch-Site` other
//! than `same-origin`. Browsers send both on every `fetch` that is not a `GET`.

use crate::error::ApiError;
use ccflare_core::Secret;
use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie's name.
pub const COOKIE: &str = "ccflare_session";

/// How long a session lasts from login.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions held at once.
pub const MAX_SESSIONS: usize = 1024;

type Hash = [u8; 32];

fn hash(bytes: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[derive(Debug, Clone, Copy)]
struct Session {
    expires: Instant,
    /// The admin key it was opened with.
    key: Hash,
}

/// The open sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    table: Mutex<HashMap<Hash, Session>>,
}

impl Sessions {
    /// Opens a session for a holder of `key`; returns its id (the cookie's value).
    pub fn open(&self, key: &Secret) -> Result<String, ApiError> {
        let mut random = [0u8; 32];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| ApiError::SessionUnavailable)?;
        let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, s| s.expires > now);
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table.iter().min_by_key(|(_, s)| s.expires).map(|(h, _)| *h)
        {
            table.remove(&oldest);
        }
        table.insert(
            hash(id.as_bytes()),
            Session {
                expires: now + LIFETIME,
                key: hash(key.expose().as_bytes()),
            },
        );
        Ok(id)
    }

    /// Whether `headers` carry the cookie of a live session opened with `key`.
    pub fn valid(&self, headers: &HeaderMap, key: &Secret) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&hash(id.as_bytes())).is_some_and(|session| {
            session.expires > Instant::now() && session.key == hash(key.expose().as_bytes())
        })
    }

    /// Ends the session whose cookie `headers` carry, if any.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            table.remove(&hash(id.as_bytes()));
        }
    }
}

/// The session cookie's value among the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| value.len() == 64)
}

/// Whether the request came to us over HTTPS (through a proxy that says so).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` header that gives the browser session `id`.
pub fn set_cookie(id: &str, headers: &HeaderMap) -> HeaderValue {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        LIFETIME.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
}

/// The `Set-Cookie` header that makes the browser forget its session.
pub fn clear_cookie(headers: &HeaderMap) -> HeaderValue {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// Whether a request authenticated by cookie may do what it asks: reads always; a state
/// change only when the browser says it comes from this server's own page.
pub fn same_origin_for(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN).is_some();
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| site == "same-origin");
    if origin && site_ok {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "a change made with the session cookie must come from the dashboard's own page \
             (same Origin)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::COOKIE, value.parse().unwrap());
        map
    }

    #[test]
    fn sessions_open_check_and_close() {
        let sessions = Sessions::default();
        let key = Secret::new("admin-key-0123456789");
        let id = sessions.open(&key).unwrap();
        assert_eq!(id.len(), 64);
        let headers = with_cookie(&format!("theme=dark; {COOKIE}={id}"));
        assert!(sessions.valid(&headers, &key));
        assert!(
            !sessions.valid(&headers, &Secret::new("another-admin-key")),
            "a new admin key ends old sessions"
        );
        assert!(!sessions.valid(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64))), &key));
        sessions.close(&headers);
        assert!(!sessions.valid(&headers, &key));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_https() {
        let plain = set_cookie("abc", &HeaderMap::new());
        let text = plain.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict"));
        assert!(text.contains("Path=/") && !text.contains("Secure"));
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(
            set_cookie("abc", &forwarded)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert!(
            clear_cookie(&forwarded)
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    #[test]
    fn cookie_changes_need_the_page_origin() {
        let mut headers = HeaderMap::new();
        assert!(same_origin_for(&Method::GET, &headers).is_ok());
        assert!(same_origin_for(&Method::POST, &headers).is_err());
        headers.insert(header::ORIGIN, "http://127.0.0.1:1".parse().unwrap());
        assert!(same_origin_for(&Method::POST, &headers).is_ok());
        headers.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(same_origin_for(&Method::DELETE, &headers).is_err());
    }
}
