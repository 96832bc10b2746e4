//! PKCE material (RFC 7636, S256) and the random values of a login, from the system's secure
//! random source through `ring` (already in the tree for TLS).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

/// `n` bytes from the system's secure random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system source only fails when the OS cannot provide randomness at all, in which
    // case no login can be safe; failing loudly is right.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    bytes
}

/// Base64url without padding (RFC 4648 §5), as PKCE requires.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A verifier (32 random bytes, base64url) and its S256 challenge.
pub(crate) fn verifier_and_challenge() -> (String, String) {
    let verifier = base64url(&random_bytes::<32>());
    (verifier.clone(), challenge(&verifier))
}

pub(crate) fn challenge(verifier: &str) -> String {
    base64url(digest(&SHA256, verifier.as_bytes()).as_ref())
}

/// An independent `state`: 32 random bytes in hex (never the verifier, which ccflare did).
pub(crate) fn state() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn s256_challenge_matches_rfc7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_and_states_are_fresh_and_shaped() {
        let (v1, c1) = verifier_and_challenge();
        let (v2, _) = verifier_and_challenge();
        assert_ne!(v1, v2);
        assert_eq!(v1.len(), 43);
        assert_eq!(c1, challenge(&v1));
        let s = state();
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(s, state());
    }
}
