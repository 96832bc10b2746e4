//! A credential that cannot be printed by accident: `Debug` and `Display` show only a mask,
//! and the plain text is reachable only through [`Secret::expose`], which is easy to grep for.

use std::fmt;

/// An account key or token. Cloning is cheap enough (a short string) and keeps the mask.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
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
