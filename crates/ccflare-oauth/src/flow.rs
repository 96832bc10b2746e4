//! The login flow: an authorize URL with a PKCE challenge and a fresh `state`, then the
//! `code#state` the user pastes back, checked against that state.

use crate::error::OAuthError;
use crate::pkce;
use ccflare_core::Secret;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::fmt;

/// Which login: a Claude Pro/Max subscription (the account then uses OAuth tokens) or a
/// Console login (the token only mints an API key, which becomes the account's credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Max,
    Console,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Max => "max",
            Mode::Console => "console",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "max" | "pro" | "claude" | "subscription" => Some(Mode::Max),
            "console" => Some(Mode::Console),
            _ => None,
        }
    }
}

/// Where the OAuth endpoints are: the configuration's `oauth_*` options (one table,
/// `core::config::OPTIONS`, with the values Claude Code uses as defaults), so a change on
/// Anthropic's side needs no release and tests point them at the mock.
pub type Endpoints = ccflare_core::config::OAuthSettings;

/// One login in progress. Holds the PKCE verifier, which must never be shown.
pub struct LoginFlow {
    pub mode: Mode,
    verifier: Secret,
    state: String,
    authorize_url: String,
}

impl fmt::Debug for LoginFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginFlow")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What a query value may carry unescaped: RFC 3986's unreserved characters; everything else
/// is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl LoginFlow {
    /// Starts a login: fresh verifier, challenge and state.
    pub fn start(mode: Mode, endpoints: &Endpoints) -> LoginFlow {
        let (verifier, challenge) = pkce::verifier_and_challenge();
        let state = pkce::state();
        let base = match mode {
            Mode::Max => &endpoints.authorize_url,
            Mode::Console => &endpoints.console_authorize_url,
        };
        // Parameter order as Claude Code sends them (protocol doc §6).
        let authorize_url = format!(
            "{base}?code=true&client_id={}&response_type=code&redirect_uri={}&scope={}\
             &code_challenge={challenge}&code_challenge_method=S256&state={state}",
            utf8_percent_encode(&endpoints.client_id, UNRESERVED),
            utf8_percent_encode(&endpoints.redirect_uri, UNRESERVED),
            utf8_percent_encode(&endpoints.scopes, UNRESERVED),
        );
        LoginFlow {
            mode,
            verifier: Secret::new(verifier),
            state,
            authorize_url,
        }
    }

    /// The page the user opens to log in.
    pub fn authorize_url(&self) -> &str {
        &self.authorize_url
    }

    pub(crate) fn verifier(&self) -> &Secret {
        &self.verifier
    }

    pub(crate) fn state(&self) -> &str {
        &self.state
    }

    /// Reads what the user pasted (`CODE#STATE`, whitespace around it ignored) and checks that
    /// the state is this login's. Returns the code.
    pub fn check_pasted(&self, pasted: &str) -> Result<Secret, OAuthError> {
        let pasted = pasted.trim();
        let (code, state) = pasted.split_once('#').ok_or(OAuthError::BadPaste)?;
        if code.is_empty() || code.contains(char::is_whitespace) {
            return Err(OAuthError::BadPaste);
        }
        // Constant-time comparison is not needed: the state is not a secret once the page
        // showed it, it only binds the paste to this login.
        if state != self.state {
            return Err(OAuthError::StateMismatch);
        }
        Ok(Secret::new(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_has_every_parameter_in_order() {
        let flow = LoginFlow::start(Mode::Max, &Endpoints::default());
        let url = flow.authorize_url();
        assert!(url.starts_with("https://claude.ai/oauth/authorize?code=true&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e&response_type=code&redirect_uri=https%3A%2F%2Fplatform.claude.com%2Foauth%2Fcode%2Fcallback&scope=org%3Acreate_api_key%20user%3Aprofile"), "{url}");
        assert!(url.contains("&code_challenge_method=S256&state="));
        let challenge = url
            .split("code_challenge=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert_eq!(challenge, crate::pkce::challenge(flow.verifier().expose()));
        assert!(
            !url.contains(flow.verifier().expose()),
            "the verifier never leaves"
        );
        let console = LoginFlow::start(Mode::Console, &Endpoints::default());
        assert!(
            console
                .authorize_url()
                .starts_with("https://console.anthropic.com/oauth/authorize?")
        );
    }

    #[test]
    fn pasted_code_must_carry_this_logins_state() {
        let flow = LoginFlow::start(Mode::Max, &Endpoints::default());
        let good = format!("  the-code#{}\n", flow.state());
        assert_eq!(flow.check_pasted(&good).unwrap().expose(), "the-code");
        assert!(matches!(
            flow.check_pasted("the-code#other"),
            Err(OAuthError::StateMismatch)
        ));
        assert!(matches!(
            flow.check_pasted("no-hash"),
            Err(OAuthError::BadPaste)
        ));
        assert!(matches!(
            flow.check_pasted(&format!("#{}", flow.state())),
            Err(OAuthError::BadPaste)
        ));
        assert!(!format!("{flow:?}").contains(flow.verifier().expose()));
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("MAX"), Some(Mode::Max));
        assert_eq!(Mode::parse("console"), Some(Mode::Console));
        assert_eq!(Mode::parse("team"), None);
    }
}
