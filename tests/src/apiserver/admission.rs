//! Admission: for every write, the API server calls the webhooks registered
//! in its MutatingWebhookConfigurations, then its ValidatingWebhookConfigurations,
//! as kube-apiserver does — rules, namespace and object selectors,
//! failurePolicy, timeoutSeconds, sideEffects with dryRun, reinvocation,
//! JSON patches — and words denials and failures as kube-apiserver words them.
//!
//! Not implemented, and refused when registered (422) rather than ignored:
//! `matchConditions` (CEL). Webhooks addressed by `service` are reached
//! through [`Admission::service_urls`], which tests fill in, since there is
//! no cluster network.

use super::resources::{ResourceDef, find};
use super::selector::LabelSelector;
use super::status::ApiError;
use super::store::Store;
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE (also binding and eviction, which are creates of a subresource).
    Create,
    /// UPDATE (PUT and PATCH).
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// One request to admit.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// The resource.
    pub def: &'static ResourceDef,
    /// Subresource ("" for the main resource).
    pub sub: &'a str,
    /// Operation.
    pub op: Operation,
    /// Namespace ("" when cluster-scoped).
    pub namespace: &'a str,
    /// Name (may be empty on CREATE with generateName).
    pub name: &'a str,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// The caller, as `userInfo`.
    pub user: &'a Value,
}

/// Clients are kept per CA bundle, timeout and Service address (a new
/// client per call put a 50–100 ms TLS setup on every admission).
type ClientKey = (String, u64, Option<(String, std::net::SocketAddr)>);

/// Admission state shared by the server.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// `namespace/name` of a webhook Service → base URL (https://host:port).
    pub service_urls: Arc<RwLock<HashMap<String, String>>>,
    /// HTTPS clients by (caBundle, timeout): kept, as kube-apiserver keeps
    /// its webhook clients, so that calls reuse connections.
    clients: Arc<RwLock<HashMap<ClientKey, reqwest::Client>>>,
}

fn matches_list(list: Option<&Value>, want: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "*" || v == want))
}

fn rule_matches(rule: &Value, a: &Attributes<'_>) -> bool {
    let resource = if a.sub.is_empty() {
        a.def.plural.to_owned()
    } else {
        format!("{}/{}", a.def.plural, a.sub)
    };
    let resource_ok = rule.get("resources").and_then(Value::as_array).is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            r == "*/*"
                || r == resource
                || (r == "*" && a.sub.is_empty())
                || r.strip_suffix("/*") == Some(a.def.plural) && !a.sub.is_empty()
                || r.strip_prefix("*/") == Some(a.sub) && !a.sub.is_empty()
        })
    });
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Namespaced" => a.def.namespaced,
        "Cluster" => !a.def.namespaced,
        _ => true,
    };
    matches_list(rule.get("apiGroups"), a.def.group)
        && matches_list(rule.get("apiVersions"), a.def.version)
        && matches_list(rule.get("operations"), a.op.as_str())
        && resource_ok
        && scope_ok
}

/// A `metav1.LabelSelector` as a selector string would read.
fn label_selector(sel: Option<&Value>) -> LabelSelector {
    let mut parts = Vec::new();
    if let Some(sel) = sel {
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let k = e["key"].as_str().unwrap_or_default();
                let vals: Vec<&str> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                parts.push(match e["operator"].as_str().unwrap_or_default() {
                    "In" => format!("{k} in ({})", vals.join(",")),
                    "NotIn" => format!("{k} notin ({})", vals.join(",")),
                    "Exists" => k.to_owned(),
                    _ => format!("!{k}"),
                });
            }
        }
    }
    LabelSelector::parse(&parts.join(",")).unwrap_or_default()
}

/// Refuses webhook configurations using what is not implemented here.
pub fn validate_configuration(obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (i, w) in obj
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if w.get("matchConditions")
            .is_some_and(|m| m.as_array().is_some_and(|a| !a.is_empty()))
        {
            return Err(ApiError::invalid(
                "WebhookConfiguration",
                name,
                &format!("webhooks[{i}].matchConditions"),
                "Forbidden: matchConditions (CEL) are not supported by the sparkcap test control plane",
            ));
        }
        if w.pointer("/clientConfig/url").is_none() && w.pointer("/clientConfig/service").is_none() {
            return Err(ApiError::invalid(
                "WebhookConfiguration",
                name,
                &format!("webhooks[{i}].clientConfig"),
                "Required value: exactly one of url or service is required",
            ));
        }
    }
    Ok(())
}

struct Outcome {
    patched: bool,
}

impl Admission {
    /// Runs mutating then validating admission on `object`, mutating it in
    /// place. `old` is the stored object for UPDATE and DELETE.
    pub async fn admit(
        &self,
        store: &Store,
        a: &Attributes<'_>,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let mutating = find("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations").expect("served");
        let validating = find("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations").expect("served");
        let ns_labels = self.namespace_labels(store, a);
        let hooks = |def: &ResourceDef| -> Vec<Value> {
            let (configs, _) = store.list(def, None);
            configs
                .iter()
                .flat_map(|c| c.get("webhooks").and_then(Value::as_array).cloned().unwrap_or_default())
                .collect()
        };
        let applicable = |w: &Value, object: &Value| -> bool {
            w.get("rules")
                .and_then(Value::as_array)
                .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, a)))
                && (a.namespace.is_empty() && a.def.kind != "Namespace"
                    || label_selector(w.get("namespaceSelector")).matches(&json!({"metadata": {"labels": ns_labels}})))
                && {
                    let sel = label_selector(w.get("objectSelector"));
                    sel.matches(object) || old.is_some_and(|o| sel.matches(o))
                }
        };
        let mutating_hooks = hooks(mutating);
        let mut ran_before_change: Vec<usize> = Vec::new();
        let mut last_change = None;
        for (i, w) in mutating_hooks.iter().enumerate() {
            if !applicable(w, object) {
                continue;
            }
            let out = self.call(a, w, object, old, true).await?;
            if out.patched {
                last_change = Some(i);
            }
            ran_before_change.push(i);
        }
        // reinvocationPolicy IfNeeded: once more for webhooks that ran before
        // a later webhook changed the object.
        if let Some(changed_at) = last_change {
            for &i in ran_before_change.iter().filter(|&&i| i < changed_at) {
                let w = &mutating_hooks[i];
                if w.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded") && applicable(w, object) {
                    self.call(a, w, object, old, true).await?;
                }
            }
        }
        let validators: Vec<Value> = hooks(validating)
            .into_iter()
            .filter(|w| applicable(w, object))
            .collect();
        for w in &validators {
            self.call(a, w, object, old, false).await?;
        }
        Ok(())
    }

    fn namespace_labels(&self, store: &Store, a: &Attributes<'_>) -> Value {
        let ns_def = find("", "v1", "namespaces").expect("served");
        let ns_name = if a.def.kind == "Namespace" { a.name } else { a.namespace };
        store
            .get(ns_def, "", ns_name)
            .ok()
            .and_then(|n| n.pointer("/metadata/labels").cloned())
            .unwrap_or(json!({}))
    }

    async fn call(
        &self,
        a: &Attributes<'_>,
        w: &Value,
        object: &mut Value,
        old: Option<&Value>,
        mutating: bool,
    ) -> Result<Outcome, ApiError> {
        let name = w["name"].as_str().unwrap_or_default().to_owned();
        let ignore = w.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
        if a.dry_run
            && !matches!(
                w.get("sideEffects").and_then(Value::as_str),
                Some("None" | "NoneOnDryRun")
            )
        {
            return Err(ApiError::bad_request(format!(
                "admission webhook \"{name}\" does not support dry run"
            )));
        }
        let fail = |why: String| -> Result<Outcome, ApiError> {
            if ignore {
                tracing::warn!(webhook = %name, error = %why, "failed calling webhook, failing open (failurePolicy Ignore)");
                Ok(Outcome { patched: false })
            } else {
                Err(ApiError::internal(format!(
                    "Internal error occurred: failed calling webhook \"{name}\": {why}"
                )))
            }
        };
        let mut resolve: Option<(String, std::net::SocketAddr)> = None;
        let url = match (
            w.pointer("/clientConfig/url").and_then(Value::as_str),
            w.pointer("/clientConfig/service"),
        ) {
            (Some(u), _) => u.to_owned(),
            (None, Some(svc)) => {
                let key = format!(
                    "{}/{}",
                    svc["namespace"].as_str().unwrap_or(""),
                    svc["name"].as_str().unwrap_or("")
                );
                let base = self
                    .service_urls
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .cloned();
                match base {
                    // A URL: called as is (tests whose certificates name 127.0.0.1).
                    Some(b) if b.starts_with("https://") => format!("{b}{}", svc["path"].as_str().unwrap_or("")),
                    // An address: the Service's endpoint, called by the Service's DNS
                    // name (the certificate must name it), as kube-apiserver does.
                    Some(addr) => match addr.parse::<std::net::SocketAddr>() {
                        Ok(a) => {
                            let host = format!(
                                "{}.{}.svc",
                                svc["name"].as_str().unwrap_or(""),
                                svc["namespace"].as_str().unwrap_or("")
                            );
                            resolve = Some((host.clone(), a));
                            format!(
                                "https://{host}:{}{}",
                                svc["port"].as_u64().unwrap_or(443),
                                svc["path"].as_str().unwrap_or("")
                            )
                        }
                        Err(e) => return fail(format!("service {key} endpoint {addr:?}: {e}")),
                    },
                    None => return fail(format!("failed to call webhook: service \"{key}\" not found")),
                }
            }
            _ => return fail("no clientConfig".into()),
        };
        let timeout = w.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(10);
        let ca_bundle = w
            .pointer("/clientConfig/caBundle")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let cached = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ca_bundle.clone(), timeout, resolve.clone()))
            .cloned();
        let client = match cached {
            Some(c) => c,
            None => {
                let mut builder = reqwest::Client::builder()
                    .timeout(Duration::from_secs(timeout))
                    .use_rustls_tls();
                if let Some((host, addr)) = &resolve {
                    builder = builder.resolve(host, *addr);
                }
                if !ca_bundle.is_empty() {
                    let pem = match base64::engine::general_purpose::STANDARD.decode(&ca_bundle) {
                        Ok(p) => p,
                        Err(e) => return fail(format!("invalid caBundle: {e}")),
                    };
                    match reqwest::Certificate::from_pem_bundle(&pem) {
                        Ok(certs) => {
                            for c in certs {
                                builder = builder.add_root_certificate(c);
                            }
                        }
                        Err(e) => return fail(format!("invalid caBundle: {e}")),
                    }
                }
                let client = match builder.build() {
                    Ok(c) => c,
                    Err(e) => return fail(format!("failed to build client: {e}")),
                };
                self.clients
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((ca_bundle, timeout, resolve), client.clone());
                client
            }
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let gvk = json!({"group": a.def.group, "version": a.def.version, "kind": a.def.kind});
        let gvr = json!({"group": a.def.group, "version": a.def.version, "resource": a.def.plural});
        let mut request = json!({
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": a.name, "namespace": a.namespace, "operation": a.op.as_str(),
            "userInfo": a.user,
            "object": if a.op == Operation::Delete { Value::Null } else { object.clone() },
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": a.dry_run,
        });
        if !a.sub.is_empty() {
            request["subResource"] = json!(a.sub);
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        let resp = match client.post(&url).json(&review).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return fail(format!(
                    "failed to call webhook: Post \"{url}\": context deadline exceeded"
                ));
            }
            Err(e) => return fail(format!("failed to call webhook: Post \"{url}\": {e}")),
        };
        if !resp.status().is_success() {
            return fail(format!("received invalid webhook response: HTTP {}", resp.status()));
        }
        let body: Value = match resp.json().await {
            Ok(b) => b,
            Err(e) => return fail(format!("received invalid webhook response: {e}")),
        };
        let response = &body["response"];
        if response["uid"].as_str() != Some(uid.as_str()) {
            return fail(format!(
                "received invalid webhook response: expected response.uid=\"{uid}\", got \"{}\"",
                response["uid"].as_str().unwrap_or_default()
            ));
        }
        if response["allowed"] != json!(true) {
            let result = &response["status"];
            let code = result["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400) as u16;
            let denied_by = format!("admission webhook \"{name}\" denied the request");
            let message = match (result["message"].as_str(), result["reason"].as_str()) {
                (Some(m), _) if !m.is_empty() => format!("{denied_by}: {m}"),
                (_, Some(r)) if !r.is_empty() => format!("{denied_by}: {r}"),
                _ => format!("{denied_by} without explanation"),
            };
            return Err(ApiError {
                code,
                reason: "",
                message,
                details: None,
            }
            .with_reason(result["reason"].as_str().unwrap_or("")));
        }
        let Some(patch) = response["patch"].as_str() else {
            return Ok(Outcome { patched: false });
        };
        if !mutating {
            return fail("validating webhook returned a patch".into());
        }
        if response["patchType"].as_str() != Some("JSONPatch") {
            return fail(format!("unsupported patch type {:?}", response["patchType"]));
        }
        let bytes = match base64::engine::general_purpose::STANDARD.decode(patch) {
            Ok(b) => b,
            Err(e) => return fail(format!("invalid patch encoding: {e}")),
        };
        let p: json_patch::Patch = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => return fail(format!("invalid JSON patch: {e}")),
        };
        let before = object.clone();
        if let Err(e) = json_patch::patch(object, &p) {
            *object = before;
            return fail(format!("failed to apply patch: {e}"));
        }
        Ok(Outcome {
            patched: *object != before,
        })
    }
}
