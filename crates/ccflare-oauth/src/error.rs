//! OAuth failures, split by what the caller must do: a dead grant needs a person to log in
//! again; a passing failure (network, 5xx, 429) is retried later.

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The refresh token or code is dead (`invalid_grant` and friends): log in again.
    #[error("the login is no longer valid ({code}): re-authenticate the account")]
    InvalidGrant { code: String },
    /// The pasted `code#state` does not belong to this login.
    #[error("the pasted code does not belong to this login (state mismatch): start again")]
    StateMismatch,
    /// The pasted text is not `code#state`.
    #[error("expected the code shown after login, in the form CODE#STATE")]
    BadPaste,
    /// The token endpoint could not be reached or answered with a passing error.
    #[error("the token endpoint failed ({reason}); try again later")]
    Transient { status: Option<u16>, reason: String },
    /// The endpoint answered something this client does not understand.
    #[error("unexpected answer from the token endpoint: {0}")]
    Protocol(String),
    #[error("invalid OAuth endpoint URL {url:?}")]
    BadUrl { url: String },
}

impl OAuthError {
    /// Whether retrying later can help; false means a person has to act.
    pub fn is_transient(&self) -> bool {
        matches!(self, OAuthError::Transient { .. })
    }
}

/// OAuth error codes that mean the grant is dead (protocol doc §6.2).
pub(crate) const DEAD_GRANT_CODES: &[&str] = &[
    "invalid_grant",
    "invalid_refresh_token",
    "refresh_token_reused",
    "unauthorized_client",
];
