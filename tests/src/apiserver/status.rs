//! Errors as kube-apiserver sends them: a `Status` body with the reason and
//! code clients switch on, worded as kube-apiserver words them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An API error.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// `NotFound`, `Conflict`, …
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details` (name, kind, causes).
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    /// 404 for an object.
    pub fn not_found(qualified: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found")).with_details(qualified, name)
    }

    /// 401: the bearer token does not authenticate (kube-apiserver answers
    /// plain "Unauthorized").
    pub fn unauthorized(why: &str) -> Self {
        tracing::debug!(why, "refused a bearer token");
        Self::new(401, "Unauthorized", "Unauthorized".to_owned())
    }

    /// 404 for a path nobody serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(qualified: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{qualified} \"{name}\" already exists")).with_details(qualified, name)
    }

    /// 409 on a stale resourceVersion or precondition.
    pub fn conflict(qualified: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        )
        .with_details(qualified, name)
    }

    /// 410 for a resourceVersion older than the event history.
    pub fn gone(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 422 with one invalid field.
    pub fn invalid(kind: &str, name: &str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {message}"),
        );
        e.details = Some(json!({"name": name, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}));
        e
    }

    /// 405 for a verb a resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }

    /// 415 for a patch type not served.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into())
    }

    /// 429 (eviction blocked by a disruption budget).
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", message.into())
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// 403 (admission denial or a forbidden operation).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message.into())
    }

    /// The same error with a reason taken from a webhook's status (kept
    /// verbatim, as kube-apiserver keeps it; "" when it gave none).
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = match reason {
            "" => "",
            "Forbidden" => "Forbidden",
            "Invalid" => "Invalid",
            "BadRequest" => "BadRequest",
            "Unauthorized" => "Unauthorized",
            "Conflict" => "Conflict",
            _ => "",
        };
        self
    }

    fn with_details(mut self, qualified: &str, name: &str) -> Self {
        let (kind, group) = qualified.split_once('.').unwrap_or((qualified, ""));
        self.details = Some(json!({"name": name, "group": group, "kind": kind}));
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_status())).into_response()
    }
}

/// A `Status{Success}` body (binding, delete of a collection member).
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
