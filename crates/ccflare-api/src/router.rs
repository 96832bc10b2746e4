//! The route table: every endpoint the management API serves, by method and path pattern. The
//! dispatcher matches against this table (so it is the single list of routes), answers 405 with
//! `Allow` for a known path with another method, and the OpenAPI test compares it with
//! `docs/openapi.json`.

use crate::error::ApiError;
use crate::respond::percent_decode;
use http::Method;

/// What a route does; the handlers match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Analytics,
    Stats,
    ListAccounts,
    AddAccount,
    GetAccount,
    RemoveAccount,
    PauseAccount,
    ResumeAccount,
    RenameAccount,
    SetPriority,
    ReauthAccount,
    StartLogin,
    FinishLogin,
    ListKeys,
    CreateKey,
    PatchKey,
    DeleteKey,
    Me,
    ListRequests,
    RequestStream,
    GetRequest,
    GetConfig,
    PatchConfig,
    LogStream,
    OpenApi,
    Metrics,
    SessionInfo,
    Login,
    Logout,
}

/// One route: a method, a path pattern whose `{name}` segments match any one segment, and what
/// it does.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub pattern: &'static str,
    pub endpoint: Endpoint,
}

const fn route(method: Method, pattern: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        pattern,
        endpoint,
    }
}

/// Every route, in matching order (a literal segment before a `{parameter}` in the same place).
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/api/analytics", Endpoint::Analytics),
    route(Method::GET, "/api/stats", Endpoint::Stats),
    route(Method::GET, "/api/accounts", Endpoint::ListAccounts),
    route(Method::POST, "/api/accounts", Endpoint::AddAccount),
    route(Method::GET, "/api/accounts/{name}", Endpoint::GetAccount),
    route(
        Method::DELETE,
        "/api/accounts/{name}",
        Endpoint::RemoveAccount,
    ),
    route(
        Method::POST,
        "/api/accounts/{name}/pause",
        Endpoint::PauseAccount,
    ),
    route(
        Method::POST,
        "/api/accounts/{name}/resume",
        Endpoint::ResumeAccount,
    ),
    route(
        Method::POST,
        "/api/accounts/{name}/rename",
        Endpoint::RenameAccount,
    ),
    route(
        Method::POST,
        "/api/accounts/{name}/priority",
        Endpoint::SetPriority,
    ),
    route(
        Method::POST,
        "/api/accounts/{name}/reauth",
        Endpoint::ReauthAccount,
    ),
    route(Method::POST, "/api/oauth/start", Endpoint::StartLogin),
    route(Method::POST, "/api/oauth/finish", Endpoint::FinishLogin),
    route(Method::GET, "/api/keys", Endpoint::ListKeys),
    route(Method::POST, "/api/keys", Endpoint::CreateKey),
    route(Method::PATCH, "/api/keys/{name}", Endpoint::PatchKey),
    route(Method::DELETE, "/api/keys/{name}", Endpoint::DeleteKey),
    route(Method::GET, "/api/me", Endpoint::Me),
    route(Method::GET, "/api/requests", Endpoint::ListRequests),
    route(Method::GET, "/api/requests/stream", Endpoint::RequestStream),
    route(Method::GET, "/api/requests/{id}", Endpoint::GetRequest),
    route(Method::GET, "/api/config", Endpoint::GetConfig),
    route(Method::PATCH, "/api/config", Endpoint::PatchConfig),
    route(Method::GET, "/api/logs/stream", Endpoint::LogStream),
    route(Method::GET, "/api/openapi.json", Endpoint::OpenApi),
    route(Method::GET, "/metrics", Endpoint::Metrics),
    route(Method::GET, "/api/session", Endpoint::SessionInfo),
    route(Method::POST, "/api/session", Endpoint::Login),
    route(Method::DELETE, "/api/session", Endpoint::Logout),
];

/// The path's parameters, decoded, if it matches `pattern`.
fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut wanted = pattern.split('/');
    let mut given = path.split('/');
    let mut params = Vec::new();
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                params.push(percent_decode(g));
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// The route for `method` and `path` and its path parameters; 404 for an unknown path, 405 for
/// a known path with another method.
pub fn find(method: &Method, path: &str) -> Result<(Endpoint, Vec<String>), ApiError> {
    // `/api/accounts/` is `/api/accounts`.
    let path = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    };
    let mut allowed: Vec<&str> = Vec::new();
    for route in ROUTES {
        let Some(params) = matches(route.pattern, path) else {
            continue;
        };
        if route.method == method {
            return Ok((route.endpoint, params));
        }
        if !allowed.contains(&route.method.as_str()) {
            allowed.push(route.method.as_str());
        }
    }
    if allowed.is_empty() {
        Err(ApiError::NoRoute {
            method: method.to_string(),
            path: path.to_owned(),
        })
    } else {
        Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_owned(),
            allowed: allowed.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_and_parameters_are_decoded() {
        assert_eq!(
            find(&Method::GET, "/api/requests/stream").unwrap().0,
            Endpoint::RequestStream
        );
        assert_eq!(
            find(&Method::GET, "/api/requests/ccf_1").unwrap(),
            (Endpoint::GetRequest, vec!["ccf_1".to_owned()])
        );
        assert_eq!(
            find(&Method::POST, "/api/accounts/team%20a/pause").unwrap(),
            (Endpoint::PauseAccount, vec!["team a".to_owned()])
        );
        assert_eq!(
            find(&Method::GET, "/api/accounts/").unwrap().0,
            Endpoint::ListAccounts
        );
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        let err = find(&Method::GET, "/api/nothing").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::NOT_FOUND);
        let err = find(&Method::PUT, "/api/accounts").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert!(err.to_string().ends_with("allowed: GET, POST"), "{err}");
        assert!(find(&Method::POST, "/api/accounts//pause").is_err());
        assert!(find(&Method::GET, "/api/accounts/a/b").is_err());
    }

    #[test]
    fn every_route_is_reachable() {
        for route in ROUTES {
            let path = route.pattern.replace("{name}", "x").replace("{id}", "x");
            assert_eq!(
                find(&route.method, &path).map(|(e, _)| e).ok(),
                Some(route.endpoint),
                "{} {}",
                route.method,
                route.pattern
            );
        }
    }
}
