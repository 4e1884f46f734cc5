//! The AdmissionReview (`admission.k8s.io/v1`) wire format, decoded and
//! encoded without touching the object beyond what admission reads.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// API version of the review.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Group/version/resource as the API server names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Gvr {
    /// API group ("" for core).
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Plural resource.
    #[serde(default)]
    pub resource: String,
}

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Create.
    Create,
    /// Update.
    Update,
    /// Delete.
    Delete,
    /// Connect.
    Connect,
}

/// One admission request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Echoed in the response.
    pub uid: String,
    /// The resource.
    pub resource: Gvr,
    /// Subresource, if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name (may be empty on CREATE with generateName).
    #[serde(default)]
    pub name: Option<String>,
    /// What is being done.
    pub operation: Operation,
    /// The object after the change.
    #[serde(default)]
    pub object: Option<Value>,
    /// The object before (UPDATE, DELETE).
    #[serde(default)]
    pub old_object: Option<Value>,
    /// A dry run: decide, change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Who asks, as the API server authenticated them.
    #[serde(default)]
    pub user_info: UserInfo,
}

/// The requesting user of an AdmissionReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:NS:NAME` for a ServiceAccount).
    #[serde(default)]
    pub username: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<Request>,
}

/// Why a body is not a review we can answer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// Another version or kind.
    #[error("expected kind AdmissionReview, apiVersion {API_VERSION}; got kind {kind:?}, apiVersion {api_version:?}")]
    WrongType {
        /// The kind sent.
        kind: String,
        /// The apiVersion sent.
        api_version: String,
    },
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
}

/// Decodes a review body.
pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    let review: Review = serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let (kind, api_version) = (review.kind.unwrap_or_default(), review.api_version.unwrap_or_default());
    if kind != "AdmissionReview" || api_version != API_VERSION {
        return Err(DecodeError::WrongType { kind, api_version });
    }
    review.request.ok_or(DecodeError::NoRequest)
}

/// A refusal: HTTP-like code, reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 403 for what was not paid for, 422 for a malformed spec, 503 when sparkcap cannot tell.
    pub code: u16,
    /// Kubernetes status reason.
    pub reason: &'static str,
    /// What is wrong, with the numbers and the fix.
    pub message: String,
}

/// What admission decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admit, possibly changed by JSON Patch operations.
    Allow {
        /// RFC 6902 operations (empty: unchanged).
        patch: Vec<Value>,
        /// Shown to the client (kubectl prints them).
        warnings: Vec<String>,
    },
    /// Refuse.
    Deny(Denial),
}

impl Decision {
    /// Admit unchanged.
    pub fn allow() -> Self {
        Self::Allow {
            patch: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Refuse with a message.
    pub fn deny(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self::Deny(Denial {
            code,
            reason,
            message: message.into(),
        })
    }

    /// Whether it admits.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// Encodes the response review for request `uid`.
pub fn encode(uid: &str, decision: &Decision) -> Value {
    let response = match decision {
        Decision::Allow { patch, warnings } => {
            let mut r = json!({"uid": uid, "allowed": true});
            if !patch.is_empty() {
                let bytes = serde_json::to_vec(patch).expect("JSON values serialize");
                r["patchType"] = json!("JSONPatch");
                r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            if !warnings.is_empty() {
                r["warnings"] = json!(warnings);
            }
            r
        }
        Decision::Deny(d) => json!({
            "uid": uid,
            "allowed": false,
            "status": {"status": "Failure", "code": d.code, "reason": d.reason, "message": d.message}
        }),
    };
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
}
