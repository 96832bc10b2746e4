//! A credential that cannot be printed by accident: `Debug` and `Display` show only a mask,
//! and the plain text is reachable only through [`Secret::expose`], which is easy to grep for.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// An account key or token. Shared, so that cloning it (every request's pick does) costs no
/// allocation, and keeps the mask.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The credential in plain text, for the one place that must send it upstream or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form shown to people: the first 7 characters (`sk-ant-`) and the last 4, as
    /// SPEC §11 allows, e.g. `sk-ant-…wxyz`. Short values are masked entirely.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks any credential-like string to its prefix and last four characters.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 16 {
        return "…".to_string();
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// How text a person typed where a name goes (an account name) may be shown: unchanged, unless
/// some word of it looks like a key or token (pasted keys come with quotes, spaces or a
/// `Bearer ` in front). Then the whole text is replaced by that word masked: `sk-ant-…wxyz`
/// for Anthropic keys, only `…` and the last four characters for other tokens (whose first
/// characters are not a fixed prefix but part of the secret). A name is shown in full
/// everywhere, so the CLI and the API refuse any name this would change.
pub fn shown_masked(text: &str) -> Cow<'_, str> {
    match secret_word(text) {
        None => Cow::Borrowed(text),
        Some(word) => match word.find(ANTHROPIC_PREFIX) {
            Some(at) => Cow::Owned(mask(&word[at..])),
            None => {
                let chars: Vec<char> = word.chars().collect();
                let tail: String = chars[chars.len() - 4..].iter().collect();
                Cow::Owned(format!("…{tail}"))
            }
        },
    }
}

const ANTHROPIC_PREFIX: &str = "sk-ant-";

/// The first word of `value` (split at spaces, quotes and brackets) shaped like a credential
/// rather than a name a person chose: one containing an Anthropic key or token (`sk-ant-…`),
/// or a long run of token characters (base64, hex, JWT) with letters and digits and a stretch
/// of at least 16 letters and digits without a separator. Names people choose break into words
/// (`team-2025-production-primary`) and stay shown in full.
fn secret_word(value: &str) -> Option<&str> {
    value
        .split(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '"' | '\''
                        | '`'
                        | ','
                        | ';'
                        | ':'
                        | '<'
                        | '>'
                        | '('
                        | ')'
                        | '['
                        | ']'
                        | '{'
                        | '}'
                )
        })
        .find(|word| word.contains(ANTHROPIC_PREFIX) || token_shaped(word))
}

fn token_shaped(word: &str) -> bool {
    let token_chars = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '='));
    let longest_run = word
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::len)
        .max()
        .unwrap_or(0);
    word.len() >= 32
        && token_chars
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic())
        && longest_run >= 16
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = Secret::new("sk-ant-api03-abcdefghijklmnopqrstuvwxyz-1234");
        assert_eq!(format!("{key}"), "sk-ant-…1234");
        assert_eq!(format!("{key:?}"), "Secret(sk-ant-…1234)");
        assert!(!format!("{key:?}").contains("abcdefgh"));
    }

    #[test]
    fn short_values_are_fully_masked() {
        assert_eq!(mask("sk-ant-x"), "…");
    }
}
