//! Requests a web page in the operator's browser could make to a server on their machine, told
//! apart from a real client's. A page cannot read the answers of another origin, but it can
//! send "simple" cross-site requests (a form POST, `fetch` with `no-cors`), and a DNS-rebinding
//! page can even read them, having named the server by a domain of its own. Browsers always
//! send `Origin` on such requests and the page's domain as `Host`; the SDKs, curl and Claude
//! Code send no `Origin` and name the server as they were told (`localhost`, `127.0.0.1`).
//! Both the management API and `/v1` (when no client key is required) refuse what only a
//! browser sends; the callers phrase the refusal for their own audience.

/// Why a request looks browser-driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserRefusal {
    /// `Origin` names another site than the server itself (lowercased, as sent).
    ForeignOrigin(String),
    /// `Host` names the server by something other than a loopback name or address.
    ForeignHost,
}

/// Checks a request's `Origin` and `Host` headers. An `Origin` must be the server itself
/// (`http(s)://` + the `Host` sent); with `check_host`, a `Host` must be a loopback name
/// (`localhost`, `*.localhost`) or address. A request without `Host` is no browser's.
pub fn check(
    origin: Option<&str>,
    host: Option<&str>,
    check_host: bool,
) -> Result<(), BrowserRefusal> {
    // On every `/v1` request: compared without allocating.
    let host = host.unwrap_or("");
    if let Some(origin) = origin {
        let authority = strip_prefix_ignoring_case(origin, "http://")
            .or_else(|| strip_prefix_ignoring_case(origin, "https://"));
        if !authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host)) {
            return Err(BrowserRefusal::ForeignOrigin(origin.to_ascii_lowercase()));
        }
    }
    if check_host && !host.is_empty() && !is_loopback_authority(host) {
        return Err(BrowserRefusal::ForeignHost);
    }
    Ok(())
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Whether `authority` (`host[:port]`, IPv6 in brackets, any case) names this machine's
/// loopback.
pub fn is_loopback_authority(authority: &str) -> bool {
    const SUFFIX: &str = ".localhost";
    let name = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(name, _)| name),
    };
    let under_localhost = name.len() > SUFFIX.len()
        && name
            .get(name.len() - SUFFIX.len()..)
            .is_some_and(|end| end.eq_ignore_ascii_case(SUFFIX));
    name.eq_ignore_ascii_case("localhost")
        || under_localhost
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_pass_and_pages_from_elsewhere_do_not() {
        // What SDKs, curl and Claude Code send.
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert_eq!(check(None, Some(host), true), Ok(()), "{host}");
        }
        assert_eq!(check(None, None, true), Ok(()), "no Host: not a browser");
        // The server's own pages.
        assert_eq!(
            check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), true),
            Ok(())
        );
        let evil = check(Some("https://Evil.example"), Some("127.0.0.1:8080"), false);
        assert_eq!(
            evil,
            Err(BrowserRefusal::ForeignOrigin("https://evil.example".into()))
        );
        assert_eq!(
            check(Some("null"), Some("127.0.0.1:8080"), false),
            Err(BrowserRefusal::ForeignOrigin("null".into())),
            "a sandboxed page or a file"
        );
        // DNS rebinding: the page's own domain, now resolving to 127.0.0.1.
        assert_eq!(
            check(None, Some("rebind.evil.example:8080"), true),
            Err(BrowserRefusal::ForeignHost)
        );
        assert_eq!(check(None, Some("rebind.evil.example:8080"), false), Ok(()));
        assert_eq!(
            check(None, Some("127.0.0.1.evil.example"), true),
            Err(BrowserRefusal::ForeignHost)
        );
        assert_eq!(check(None, Some("App.LocalHost:8080"), true), Ok(()));
        assert_eq!(
            check(None, Some("evillocalhost:8080"), true),
            Err(BrowserRefusal::ForeignHost)
        );
        assert_eq!(
            check(Some("HTTP://LOCALHOST:8080"), Some("localhost:8080"), true),
            Ok(())
        );
    }
}
