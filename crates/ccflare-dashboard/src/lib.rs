//! The web dashboard (`/dashboard`): hand-written HTML, CSS and JavaScript in `assets/`,
//! compiled into the binary with `include_bytes!`, served with a strong ETag (a SHA-256 of the
//! bytes, computed once on first use), `Cache-Control: no-cache` (the browser revalidates and
//! gets a 304 while the binary is the same), and a strict Content-Security-Policy: every
//! script and style comes from a file of this server, none inline, nothing from elsewhere.
//!
//! The page reads the management API (`/api/*`) and its live feeds from the browser; this
//! crate knows nothing of them. It is pure: [`serve`] turns a method, a path and the request's
//! headers into an answer, or `None` for a path that is not the dashboard's. The management API
//! calls it before its own routes.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use std::sync::LazyLock;

/// Where the dashboard lives; `/` redirects here.
pub const PATH: &str = "/dashboard";

/// The policy every dashboard answer carries. `style-src 'self'` still lets the page's script
/// set `element.style` properties (CSSOM), which is how bars get their widths; what it blocks
/// is `style="…"` in markup and `<style>` elements, which the page has none of.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the page.
#[derive(Debug)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file the dashboard serves. `/dashboard` and `/dashboard/` are the page itself.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/dashboard",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../assets/index.html"),
    },
    Asset {
        path: "/dashboard/app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/app.css"),
    },
    Asset {
        path: "/dashboard/lib.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/lib.js"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/app.js"),
    },
    Asset {
        path: "/dashboard/favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../assets/favicon.svg"),
    },
];

/// Each asset's ETag, in the order of [`ASSETS`]: the first 128 bits of its SHA-256, quoted.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = ring::digest::digest(&ring::digest::SHA256, asset.bytes);
            let hex: String = digest.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            // Hex in quotes is always a valid header value.
            HeaderValue::from_str(&format!("\"{hex}\""))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The ETag of the asset at `path`, if there is one.
pub fn etag(path: &str) -> Option<&'static str> {
    let index = ASSETS.iter().position(|asset| asset.path == path)?;
    ETAGS[index].to_str().ok()
}

/// Whether `path` is the dashboard's to answer: `/`, `/dashboard` and everything under it.
pub fn owns(path: &str) -> bool {
    path == "/" || path == PATH || path.starts_with("/dashboard/")
}

/// The answer for a request to `path`, or `None` when the path is not the dashboard's
/// ([`owns`]). `/` redirects to `/dashboard`; an asset comes whole (`GET`) or as headers
/// (`HEAD`), or as 304 when `If-None-Match` names its ETag; an unknown file under `/dashboard/`
/// is a 404; any other method is a 405.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<Bytes>> {
    if !owns(path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    if path == "/" {
        let mut response = plain(StatusCode::FOUND, "");
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(PATH));
        return Some(response);
    }
    let wanted = if path == "/dashboard/" { PATH } else { path };
    let Some(index) = ASSETS.iter().position(|asset| asset.path == wanted) else {
        return Some(plain(
            StatusCode::NOT_FOUND,
            "no such file in the dashboard\n",
        ));
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.as_bytes() == etag.as_bytes());
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.bytes))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    }
    security_headers(h);
    Some(response)
}

/// A short text answer with the dashboard's security headers.
fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(text.as_bytes()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    response
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&'static str, &str)]) -> Response<Bytes> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, value.parse().unwrap());
        }
        serve(&Method::GET, path, &map).expect("the dashboard's path")
    }

    #[test]
    fn etags_are_strong_distinct_and_revalidate() {
        let page = get("/dashboard", &[]);
        let tag = page.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert!(tag.starts_with('"') && tag.len() == 34, "{tag}");
        let tags: std::collections::HashSet<_> =
            ASSETS.iter().map(|a| etag(a.path).unwrap()).collect();
        assert_eq!(tags.len(), ASSETS.len());
        let again = get("/dashboard", &[("if-none-match", &format!("\"x\", {tag}"))]);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
        let stale = get("/dashboard", &[("if-none-match", "\"other\"")]);
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(stale.body().len(), ASSETS[0].bytes.len());
    }

    #[test]
    fn the_first_load_is_well_under_200_kb() {
        // Every file is part of the first load; the browser test sums what it really fetched.
        let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        assert!(total < 100_000, "{total} bytes");
    }

    #[test]
    fn paths_outside_are_not_ours_and_unknown_files_are_404() {
        assert!(serve(&Method::GET, "/api/stats", &HeaderMap::new()).is_none());
        assert!(serve(&Method::GET, "/dashboards", &HeaderMap::new()).is_none());
        assert_eq!(
            get("/dashboard/nope.js", &[]).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get("/", &[]).status(), StatusCode::FOUND);
        assert_eq!(get("/dashboard/", &[]).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        for asset in ASSETS
            .iter()
            .filter(|a| a.content_type.starts_with("text/html"))
        {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            assert!(!text.contains("style="), "{}", asset.path);
            assert!(!text.contains("<style"), "{}", asset.path);
            let handler = text.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "no inline handlers in {}", asset.path);
            for script in text.split("<script").skip(1) {
                let tag_end = script.find('>').unwrap();
                assert!(
                    script[..tag_end].contains("src="),
                    "inline script in {}",
                    asset.path
                );
                assert!(script[tag_end + 1..].starts_with("</script>"));
            }
        }
    }
}
