//! The API's one error shape, `{code, message, details, request_id}`: every
//! refusal names what was wrong and how to fix it, and carries the request id
//! an admin can find in the logs.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sparkcap_ledger::LedgerError;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unknown_tenant`.
    pub code: String,
    /// What went wrong and how to fix it, for people.
    pub message: String,
    /// Further facts (field errors, conflicting values); may be empty.
    pub details: Vec<String>,
    /// The request's id (`X-Request-Id`), also in the server's logs.
    pub request_id: String,
}

/// An error a handler returns. Rendered into [`ErrorBody`] by the request-id
/// middleware, which knows the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
    /// Further facts.
    pub details: Vec<String>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no identity could be established.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: a dependency (ledger, TokenReview, JWKS) cannot answer.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        use LedgerError as L;
        let (status, code) = match &e {
            L::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant"),
            L::TenantExists(_) => (StatusCode::CONFLICT, "tenant_exists"),
            L::NamespaceTaken { .. } => (StatusCode::CONFLICT, "namespace_taken"),
            L::NotTenantsNamespace { .. } => (StatusCode::CONFLICT, "namespace_not_owned"),
            L::InvalidStatusTransition { .. } => (StatusCode::CONFLICT, "invalid_status_transition"),
            L::TenantDeleted(_) => (StatusCode::CONFLICT, "tenant_deleted"),
            L::IdempotencyConflict { .. } => (StatusCode::CONFLICT, "idempotency_conflict"),
            L::DedicatedOverAllocation { .. } => (StatusCode::CONFLICT, "dedicated_pool_full"),
            L::MissingIdempotencyKey => (StatusCode::BAD_REQUEST, "missing_idempotency_key"),
            L::Database(_) | L::ConcurrentWrite(_) => (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
            L::Migration(_) | L::Corrupt(_) | L::Overflow(_) | L::Configuration(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            _ if e.is_bad_input() => (StatusCode::BAD_REQUEST, "invalid_request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "ledger error answering an API request");
        }
        let message = match &e {
            L::Database(_) => "the ledger database is unavailable; retry shortly".to_owned(),
            _ => e.to_string(),
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut r = status.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

impl ApiError {
    /// The JSON body for this error under `request_id`.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody {
            code: self.code.to_owned(),
            message: self.message.clone(),
            details: self.details.clone(),
            request_id: request_id.to_owned(),
        }
    }
}
