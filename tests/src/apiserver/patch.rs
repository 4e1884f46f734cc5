//! PATCH bodies: JSON merge patch, JSON patch, strategic merge patch (for
//! the pod fields clients patch) and server-side apply.

use super::status::ApiError;
use serde_json::Value;

/// The patch types served, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// From a Content-Type header; 415 for anything else, as kube-apiserver answers.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                 application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// Parses a body as JSON (YAML documents that are JSON, as clients send, included).
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body could not be decoded as JSON: {e}")))
}

/// Lists merged by a key under strategic merge, as the Kubernetes pod schema declares.
const MERGE_KEYS: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("volumes", "name"),
    ("volumeMounts", "mountPath"),
    ("env", "name"),
    ("ports", "containerPort"),
    ("conditions", "type"),
    ("ownerReferences", "uid"),
    ("imagePullSecrets", "name"),
    ("containerStatuses", "name"),
    ("tolerations", "key"),
];

/// Strategic merge: objects merge, `null` deletes, lists with a known merge
/// key merge element by element, other lists are replaced.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    strategic_merge_at(target, patch, "");
}

fn strategic_merge_at(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if k.starts_with("$") {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else {
                    strategic_merge_at(t.entry(k.clone()).or_insert(Value::Null), v, k);
                }
            }
        }
        Value::Array(items) => match (MERGE_KEYS.iter().find(|(f, _)| *f == field), target.as_array_mut()) {
            (Some((_, key)), Some(existing)) => {
                for item in items {
                    let id = item.get(*key);
                    if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                        existing.retain(|e| e.get(*key) != id);
                        continue;
                    }
                    match existing.iter_mut().find(|e| id.is_some() && e.get(*key) == id) {
                        Some(e) => strategic_merge_at(e, item, ""),
                        None => existing.push(item.clone()),
                    }
                }
            }
            _ => *target = patch.clone(),
        },
        other => *target = other.clone(),
    }
}

/// Applies a patch of `kind` to `obj`.
pub fn apply_patch(kind: PatchType, obj: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        PatchType::Merge | PatchType::Apply => {
            let p = parse_body(body)?;
            json_patch::merge(obj, &p);
        }
        PatchType::Strategic => strategic_merge(obj, &parse_body(body)?),
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            json_patch::patch(obj, &p).map_err(|e| ApiError::invalid("Object", "", "patch", e.to_string()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
                              "nodeSelector": {"k": "v"}}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}], "nodeSelector": {"k": null}}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "x");
        assert_eq!(pod["spec"]["containers"][1]["image"], "z");
        assert_eq!(pod["spec"]["nodeSelector"], json!({}));
    }
}
