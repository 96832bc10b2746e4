//! The management API's failures, each with its HTTP status and error type. Answers carry
//! `{"error":{"type","message"}}`; the message says what to fix and never carries internal
//! error text (database errors are logged, and the client gets a generic 500).

use crate::respond;
use ccflare_proxy::ResponseBody;
use ccflare_storage::StorageError;
use http::{Response, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad JSON, an unknown field, a value out of range, an unknown query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The name is shown masked when it looks like a key.
    #[error("no account named {:?}", ccflare_core::secret::shown_masked(.name))]
    AccountNotFound { name: String },
    /// The name is shown masked when it looks like a key.
    #[error("no client key named {:?}", ccflare_core::secret::shown_masked(.name))]
    KeyNotFound { name: String },
    /// `GET /api/me` without a valid client key: the message says which (never the key).
    #[error("{0}")]
    ClientKeyRefused(String),
    #[error("no request with id {id:?}")]
    RequestNotFound { id: String },
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    /// A name already taken, a key already stored, a setting pinned by a higher source.
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the {limit} byte limit")]
    BodyTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The server has an admin key and the request did not carry it (SPEC §11).
    #[error(
        "this server requires its admin key: send `Authorization: Bearer <key>` or \
         `x-ccflare-admin-key: <key>` (the key is CCFLARE_ADMIN_KEY)"
    )]
    AdminKeyRequired,
    /// `POST /api/session` with a key that is not the admin key.
    #[error("that is not this server's admin key")]
    WrongAdminKey,
    /// The system's randomness failed, so no session id could be made.
    #[error("no session could be opened: the system's randomness failed")]
    SessionUnavailable,
    /// A browser request from another origin, or one addressing the server by a name that is
    /// not loopback while it has no admin key (DNS rebinding).
    #[error("{0}")]
    Forbidden(String),
    /// An OAuth login flow that expired, finished, or never existed.
    #[error("login flow expired or unknown: start a new login")]
    LoginFlowNotFound,
    #[error("too many logins in progress (at most {limit}): finish one or let it expire")]
    TooManyLogins { limit: usize },
    /// The OAuth token endpoint failed or answered something unusable; the message says
    /// whether to retry (it never carries a token or code).
    #[error("{0}")]
    TokenEndpoint(String),
    #[error("the database failed: {0}")]
    Storage(#[source] StorageError),
    #[error("an analytics query failed: {0}")]
    Analytics(#[from] ccflare_analytics::AnalyticsError),
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> ApiError {
        match error {
            StorageError::AccountNotFound { name } => ApiError::AccountNotFound { name },
            // Storage's own message, which masks a key-shaped name.
            duplicate @ (StorageError::DuplicateName { .. }
            | StorageError::DuplicateKeyName { .. }) => ApiError::Conflict(duplicate.to_string()),
            StorageError::KeyNotFound { name } => ApiError::KeyNotFound { name },
            other => ApiError::Storage(other),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::AccountNotFound { .. }
            | ApiError::KeyNotFound { .. }
            | ApiError::RequestNotFound { .. }
            | ApiError::NoRoute { .. }
            | ApiError::LoginFlowNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyLogins { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TokenEndpoint(_) => StatusCode::BAD_GATEWAY,
            ApiError::AdminKeyRequired
            | ApiError::WrongAdminKey
            | ApiError::ClientKeyRefused(_) => StatusCode::UNAUTHORIZED,
            ApiError::SessionUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Storage(_) | ApiError::Analytics(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error.type` of the answer, in the Anthropic API's vocabulary where it has a word.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::BodyTimeout => "invalid_request_error",
            ApiError::AccountNotFound { .. }
            | ApiError::KeyNotFound { .. }
            | ApiError::RequestNotFound { .. }
            | ApiError::NoRoute { .. }
            | ApiError::LoginFlowNotFound => "not_found_error",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed_error",
            ApiError::Conflict(_) => "conflict_error",
            ApiError::BodyTooLarge { .. } => "request_too_large",
            ApiError::TooManyLogins { .. } => "rate_limit_error",
            ApiError::TokenEndpoint(_) => "api_error",
            ApiError::AdminKeyRequired
            | ApiError::WrongAdminKey
            | ApiError::ClientKeyRefused(_) => "authentication_error",
            ApiError::SessionUnavailable => "api_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::Storage(_) | ApiError::Analytics(_) => "api_error",
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        // A 502 from the token endpoint says what to do; only internal failures are hidden.
        let message = if matches!(self, ApiError::Storage(_) | ApiError::Analytics(_)) {
            // The details go to the log, not to the client.
            tracing::error!(error = %self, "management API request failed");
            "internal error; the server log has the details".to_owned()
        } else {
            self.to_string()
        };
        let mut response = respond::json(
            status,
            &serde_json::json!({ "error": { "type": self.kind(), "message": message } }),
        );
        if let ApiError::MethodNotAllowed { allowed, .. } = &self
            && let Ok(value) = http::HeaderValue::from_str(allowed)
        {
            response.headers_mut().insert(http::header::ALLOW, value);
        }
        response
    }
}
