//! OAuth for Claude Pro/Max subscriptions and Console logins (protocol doc §6): the PKCE login
//! flow with a pasted `code#state`, the token endpoint (code exchange and rotating refresh),
//! and the Console key mint. The endpoints, client id and scopes are configuration with the
//! current values as defaults, so a change on Anthropic's side needs no release and tests point
//! them at the mock upstream.
//!
//! **Invariant:** no token, refresh token, verifier or pasted code ever appears in a log line,
//! an error message or a `Debug` output: they are [`Secret`](ccflare_core::Secret)s.

mod client;
mod error;
mod flow;
mod pkce;

pub use client::{TokenClient, TokenSet};
pub use error::OAuthError;
pub use flow::{Endpoints, LoginFlow, Mode};
pub use pkce::{base64url, random_bytes};
