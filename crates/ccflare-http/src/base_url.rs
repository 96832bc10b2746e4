//! A checked base URL (`scheme://authority`, maybe a path prefix) that request paths are
//! appended to byte for byte.

use crate::InvalidUrl;
use std::fmt;

/// `scheme://authority` plus any path prefix, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// Takes `url` without its trailing slashes, if it is absolute: a scheme and a host.
    pub fn parse(url: &str) -> Result<BaseUrl, InvalidUrl> {
        let base = url.trim_end_matches('/');
        let invalid = |reason: String| InvalidUrl {
            url: base.to_owned(),
            reason,
        };
        let uri: http::Uri = base
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(invalid("expected http:// or https:// and a host".into()));
        }
        Ok(BaseUrl(base.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI of `path_and_query` (which starts with `/`) under this base, kept byte for
    /// byte: one allocation, the joined text.
    #[inline]
    pub fn join(&self, path_and_query: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        let mut uri = String::with_capacity(self.0.len() + path_and_query.len());
        uri.push_str(&self.0);
        uri.push_str(path_and_query);
        uri.parse()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_lose_their_trailing_slash_and_keep_their_prefix() {
        let base = BaseUrl::parse("http://127.0.0.1:8080/prefix/").unwrap();
        assert_eq!(base.as_str(), "http://127.0.0.1:8080/prefix");
        assert_eq!(
            base.join("/v1/messages?beta=true").unwrap().to_string(),
            "http://127.0.0.1:8080/prefix/v1/messages?beta=true"
        );
        assert_eq!(
            BaseUrl::parse("https://api.anthropic.com")
                .unwrap()
                .to_string(),
            "https://api.anthropic.com"
        );
    }

    #[test]
    fn relative_or_broken_urls_are_refused_with_the_url() {
        for bad in ["", "/v1", "api.anthropic.com", "http://exa mple.com"] {
            let error = BaseUrl::parse(bad).unwrap_err();
            assert_eq!(error.url, bad);
            assert!(error.to_string().starts_with("invalid URL"), "{error}");
        }
    }
}
