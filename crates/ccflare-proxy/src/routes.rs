//! Which `/v1/*` paths are forwarded, and which answers say something about an account's
//! credential. By default only the routes of the API's documentation go upstream (protocol doc
//! §1: Messages, token counting, batches, models, files, the legacy Text Completions); any
//! other path gets 404 in Anthropic's shape unless `allow_all_paths` is set. A 401 is evidence
//! against a key only on the inference routes: on any other path the client chose the endpoint,
//! and one that refuses a valid key (an organisation-level route, a beta an account lacks)
//! must not make the pool's accounts invalid one after another.

/// What ccflare knows of a `/v1/*` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v1/messages` and `/v1/messages/count_tokens`: every valid key may call them, so a 401
    /// here is about the credential.
    Inference,
    /// Another documented route: forwarded, but its answers say nothing about the credential.
    Documented,
    /// Not a route of the API's documentation.
    Unknown,
}

impl Route {
    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/v1/messages" | "/v1/messages/count_tokens" => return Route::Inference,
            "/v1/complete" => return Route::Documented,
            _ => {}
        }
        let documented = ["/v1/messages/batches", "/v1/models", "/v1/files"]
            .iter()
            .any(|base| {
                path.strip_prefix(base)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            });
        if documented {
            Route::Documented
        } else {
            Route::Unknown
        }
    }

    /// Whether an upstream 401 on this route is evidence against the account's credential.
    pub(crate) fn judges_credentials(self) -> bool {
        self == Route::Inference
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn documented_routes_are_known_and_only_inference_judges_a_key() {
        let cases = [
            ("/v1/messages", Route::Inference),
            ("/v1/messages/count_tokens", Route::Inference),
            ("/v1/messages/batches", Route::Documented),
            (
                "/v1/messages/batches/msgbatch_01/results",
                Route::Documented,
            ),
            ("/v1/models", Route::Documented),
            ("/v1/models/claude-sonnet-4-5", Route::Documented),
            ("/v1/files", Route::Documented),
            ("/v1/files/file_01/content", Route::Documented),
            ("/v1/complete", Route::Documented),
            ("/v1/messages/", Route::Unknown),
            ("/v1/messagesx", Route::Unknown),
            ("/v1/modelsx", Route::Unknown),
            ("/v1/organizations/api_keys", Route::Unknown),
            ("/v1/oauth/token", Route::Unknown),
            ("/v1/", Route::Unknown),
        ];
        for (path, expected) in cases {
            assert_eq!(Route::of(path), expected, "{path}");
        }
        assert!(Route::Inference.judges_credentials());
        assert!(!Route::Documented.judges_credentials());
    }
}
