//! The admin key (SPEC §11): when the server has one, every management request must carry it,
//! as `Authorization: Bearer <key>` or `x-ccflare-admin-key: <key>`. The comparison takes the
//! same time whatever the key sent, so it cannot be guessed byte by byte.

use crate::error::ApiError;
use ccflare_core::Secret;
use http::HeaderMap;

/// The header for clients that use `Authorization` for something else.
pub const ADMIN_KEY_HEADER: &str = "x-ccflare-admin-key";

pub fn check(headers: &HeaderMap, key: &Secret) -> Result<(), ApiError> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let header = headers.get(ADMIN_KEY_HEADER).and_then(|v| v.to_str().ok());
    let sent = [bearer, header].into_iter().flatten();
    let mut accepted = false;
    for candidate in sent {
        accepted |= constant_time_eq(candidate.trim().as_bytes(), key.expose().as_bytes());
    }
    if accepted {
        Ok(())
    } else {
        Err(ApiError::AdminKeyRequired)
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
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
    fn equality_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
