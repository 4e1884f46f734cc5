//! The HTTP face of the test control plane: kube-apiserver's URL layout,
//! verbs, discovery, list/watch and subresources, over the [`Store`].

use super::admission::{Admission, Attributes, Operation, validate_configuration};
use super::patch::{PatchType, apply_patch, parse_body};
use super::resources::{RESOURCES, ResourceDef, find, groups};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, success};
use super::store::{DeleteOptions, Event, EventType, Store, index_of};
use super::watch_faults::{WatchFaultConfig, WatchFaults};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Params = HashMap<String, String>;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Objects.
    pub store: Arc<Store>,
    /// Admission chain.
    pub admission: Admission,
    /// Every request as `METHOD path?query`, for tests to assert what clients did.
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
    /// ServiceAccount token issuer (TokenRequest, TokenReview).
    pub tokens: Arc<super::authn::TokenIssuer>,
    /// Faults injected into watches.
    pub watch_faults: Arc<WatchFaults>,
}

/// Where a fault harness in another process reads (GET) and sets (PUT) the
/// watch faults: not a Kubernetes path, so no client reaches it by chance.
pub const WATCH_FAULTS_PATH: &str = "/sparkcap-test/watch-faults";

fn watch_faults_endpoint(faults: &WatchFaults, method: &Method, body: &[u8]) -> Response {
    let state = |f: &WatchFaults| json!({"config": f.config(), "counts": f.counts()});
    match *method {
        Method::GET => json_response(200, &state(faults)),
        Method::PUT => match serde_json::from_slice::<WatchFaultConfig>(body) {
            Ok(c) => {
                faults.set(c);
                json_response(200, &state(faults))
            }
            Err(e) => ApiError::bad_request(format!("watch fault config: {e}")).into_response(),
        },
        _ => ApiError::method_not_allowed(format!("{method} is not allowed on {WATCH_FAULTS_PATH}")).into_response(),
    }
}

/// Where a request points.
#[derive(Debug)]
struct Target {
    def: &'static ResourceDef,
    /// Namespace from the path (None: cluster-scoped, or all namespaces).
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn json_response(code: u16, v: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        axum::Json(v.clone()),
    )
        .into_response()
}

/// The single handler: routes by path as kube-apiserver does.
pub async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    ws: Result<axum::extract::ws::WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {}", uri.path_and_query().map_or("", |p| p.as_str())));
    let path = uri.path().trim_end_matches('/').to_owned();
    if path == WATCH_FAULTS_PATH {
        return watch_faults_endpoint(&shared.watch_faults, &method, &body);
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match discovery(&segs) {
        Some(Ok(v)) if method == Method::GET => return json_response(200, &v),
        Some(Ok(_)) => {
            return ApiError::method_not_allowed(format!("{method} is not allowed on {path}")).into_response();
        }
        Some(Err(e)) => return e.into_response(),
        None => {}
    }
    let target = match route(&segs) {
        Some(t) => t,
        None => return ApiError::no_route(&path).into_response(),
    };
    // Bodies are JSON only. Protobuf (kubectl's default for built-in types)
    // gets 415, as kube-apiserver answers for a type it cannot decode, and
    // client-go retries in JSON.
    let mut body = body;
    if matches!(method, Method::POST | Method::PUT) && !body.is_empty() {
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let base = ct.split(';').next().unwrap_or("").trim();
        // kubectl sends `create token` as protobuf only; that one message is decoded.
        if base == "application/vnd.kubernetes.protobuf" && target.sub.as_deref() == Some("token") {
            match super::authn::token_request_from_protobuf(&body) {
                Ok(v) => body = Bytes::from(v.to_string()),
                Err(e) => return e.into_response(),
            }
        } else if base != "application/json" && base != "*/*" && !base.is_empty() {
            return ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json \
                 (got {base})"
            ))
            .into_response();
        }
    }
    // A watch over WebSocket (fabric8, Spark 4's Kubernetes client, asks for
    // one first): the same events, one JSON message each.
    if let Ok(ws) = ws
        && method == Method::GET
        && flag(&params, "watch")
    {
        return match watch_events(
            &shared.store,
            &shared.watch_faults,
            target.def,
            target.ns.as_deref(),
            &params,
        ) {
            Err(e) => e.into_response(),
            Ok(events) => ws.on_upgrade(move |mut socket| async move {
                use axum::extract::ws::Message;
                let mut events = events;
                while let Some(line) = events.next().await {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                let _ = socket.send(Message::Close(None)).await;
            }),
        };
    }
    match serve(&shared, &method, target, &params, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn discovery(segs: &[&str]) -> Option<Result<Value, ApiError>> {
    let resource_list = |group: &str, version: &str| {
        let mut resources = Vec::new();
        for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
            let verbs = if r.plural == "tokenreviews" {
                json!(["create"])
            } else {
                json!([
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch"
                ])
            };
            resources.push(json!({
                "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                "kind": r.kind, "shortNames": r.short_names, "verbs": verbs,
            }));
            for sub in r.subresources {
                let (kind, verbs) = match *sub {
                    "binding" => ("Binding", json!(["create"])),
                    "eviction" => ("Eviction", json!(["create"])),
                    "token" => ("TokenRequest", json!(["create"])),
                    _ => (r.kind, json!(["get", "patch", "update"])),
                };
                let (group, version) = match *sub {
                    "eviction" => ("policy", "v1"),
                    "token" => ("authentication.k8s.io", "v1"),
                    _ => ("", ""),
                };
                let mut e = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                                   "kind": kind, "verbs": verbs});
                if !group.is_empty() {
                    e["group"] = json!(group);
                    e["version"] = json!(version);
                }
                resources.push(e);
            }
        }
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    };
    let group_json = |g: &str, v: &str| {
        json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}],
               "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}})
    };
    Some(Ok(match segs {
        ["version"] => json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-sparkcap-testkit",
                              "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                              "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                              "platform": "linux/amd64"}),
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ["apis"] => json!({"kind": "APIGroupList", "apiVersion": "v1",
                           "groups": groups().iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>()}),
        ["api", "v1"] => resource_list("", "v1"),
        ["apis", g] => match groups().iter().find(|(gg, _)| gg == g) {
            Some((g, v)) => {
                let mut j = group_json(g, v);
                j["kind"] = json!("APIGroup");
                j["apiVersion"] = json!("v1");
                j
            }
            None => return Some(Err(ApiError::no_route(&format!("/apis/{g}")))),
        },
        ["apis", g, v] => {
            if !groups().iter().any(|(gg, vv)| gg == g && vv == v) {
                return Some(Err(ApiError::no_route(&format!("/apis/{g}/{v}"))));
            }
            resource_list(g, v)
        }
        _ => return None,
    }))
}

fn route(segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let t = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| -> Option<Target> {
        let def = find(group, version, plural)?;
        if ns.is_some() && !def.namespaced {
            return None;
        }
        if sub.is_some_and(|s| !def.subresources.contains(&s)) {
            return None;
        }
        Some(Target {
            def,
            ns: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            sub: sub.map(str::to_owned),
        })
    };
    match rest {
        ["namespaces", ns, plural] if find(group, version, plural).is_some_and(|d| d.namespaced) => {
            t(plural, Some(ns), None, None)
        }
        ["namespaces", ns, plural, name] => t(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => t(plural, Some(ns), Some(name), Some(sub)),
        [plural] => t(plural, None, None, None),
        [plural, name] => t(plural, None, Some(name), None),
        [plural, name, sub] => t(plural, None, Some(name), Some(sub)),
        _ => None,
    }
}

fn dry_run(params: &Params) -> bool {
    params.get("dryRun").is_some_and(|v| v == "All")
}

/// Who is calling, as admission's `userInfo` names them: the ServiceAccount
/// of a bearer token this API server issued (an invalid one is refused, as
/// kube-apiserver does), or the cluster admin for a client with no token
/// (the tests' own client, like a kubeconfig with admin credentials).
fn caller(shared: &Shared, headers: &HeaderMap) -> Result<Value, ApiError> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(json!({"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}));
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or_default().trim();
    // The devcluster kubeconfig's static token (kube-apiserver's
    // --token-auth-file): the cluster admin.
    if token == crate::apiserver::authn::ADMIN_TOKEN {
        return Ok(json!({"username": "devcluster-admin", "groups": ["system:masters", "system:authenticated"]}));
    }
    shared
        .tokens
        .user(&shared.store, token)
        .map_err(|why| ApiError::unauthorized(&why))
}

fn flag(params: &Params, k: &str) -> bool {
    params.get(k).is_some_and(|v| v == "true" || v == "1")
}

async fn serve(
    shared: &Shared,
    method: &Method,
    t: Target,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let store = &shared.store;
    let def = t.def;
    let ns = t.ns.clone().unwrap_or_default();
    let user = caller(shared, headers)?;
    if def.namespaced && t.name.is_some() && t.ns.is_none() {
        return Err(ApiError::no_route(&format!("{} without a namespace", def.plural)));
    }
    if def.plural == "tokenreviews" {
        return match (method.as_str(), t.name.as_deref()) {
            ("POST", None) => Ok(json_response(201, &shared.tokens.review(store, &parse_body(body)?)?)),
            (m, _) => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m} tokenreviews)"
            ))),
        };
    }
    match (method.as_str(), t.name.as_deref(), t.sub.as_deref()) {
        ("POST", Some(name), Some("token")) => Ok(json_response(
            201,
            &shared.tokens.token_request(store, &ns, name, &parse_body(body)?)?,
        )),
        ("GET", None, None) if flag(params, "watch") => {
            watch(store, &shared.watch_faults, def, t.ns.as_deref(), params)
        }
        ("GET", None, None) => list(store, def, t.ns.as_deref(), params),
        ("GET", Some(name), _) => Ok(json_response(200, &store.get(def, &ns, name)?)),
        ("POST", None, None) => {
            let mut obj = parse_body(body)?;
            if def.group == "admissionregistration.k8s.io" {
                validate_configuration(&obj)?;
            }
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let a = Attributes {
                def,
                sub: "",
                op: Operation::Create,
                namespace: &ns,
                name: &name,
                dry_run: dry_run(params),
                user: &user,
            };
            shared.admission.admit(store, &a, &mut obj, None).await?;
            Ok(json_response(201, &store.create(def, &ns, obj, dry_run(params))?))
        }
        ("POST", Some(name), Some(sub @ ("binding" | "eviction"))) => {
            let mut obj = parse_body(body)?;
            let a = Attributes {
                def,
                sub,
                op: Operation::Create,
                namespace: &ns,
                name,
                dry_run: dry_run(params),
                user: &user,
            };
            shared.admission.admit(store, &a, &mut obj, None).await?;
            if sub == "binding" {
                bind(store, &ns, name, &obj)
            } else {
                evict(store, &ns, name, &obj)
            }
        }
        ("PUT", Some(name), sub) => {
            let mut obj = parse_body(body)?;
            if def.group == "admissionregistration.k8s.io" {
                validate_configuration(&obj)?;
            }
            let old = store.get(def, &ns, name)?;
            let a = Attributes {
                def,
                sub: sub.unwrap_or(""),
                op: Operation::Update,
                namespace: &ns,
                name,
                dry_run: dry_run(params),
                user: &user,
            };
            shared.admission.admit(store, &a, &mut obj, Some(&old)).await?;
            Ok(json_response(
                200,
                &store.update(def, &ns, name, obj, sub, dry_run(params))?,
            ))
        }
        ("PATCH", Some(name), sub) => {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            let kind = PatchType::from_content_type(ct)?;
            patch(shared, def, &ns, name, sub, kind, params, body, &user).await
        }
        ("DELETE", Some(name), None) => {
            let mut opts = if body.is_empty() {
                DeleteOptions::default()
            } else {
                DeleteOptions::from_json(&parse_body(body)?)
            };
            if let Some(g) = params.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
                opts.grace = Some(g);
            }
            opts.dry_run |= dry_run(params);
            opts.orphan |= params.get("propagationPolicy").is_some_and(|p| p == "Orphan");
            let old = store.get(def, &ns, name)?;
            let a = Attributes {
                def,
                sub: "",
                op: Operation::Delete,
                namespace: &ns,
                name,
                dry_run: opts.dry_run,
                user: &user,
            };
            shared.admission.admit(store, &a, &mut old.clone(), Some(&old)).await?;
            Ok(json_response(200, &store.delete(def, &ns, name, &opts)?))
        }
        ("DELETE", None, None) => {
            let opts = if body.is_empty() {
                DeleteOptions::default()
            } else {
                DeleteOptions::from_json(&parse_body(body)?)
            };
            let (items, _) = selected(store, def, t.ns.as_deref(), params)?;
            let mut deleted = Vec::new();
            for item in items {
                let n = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let i_ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let a = Attributes {
                    def,
                    sub: "",
                    op: Operation::Delete,
                    namespace: &i_ns,
                    name: &n,
                    dry_run: opts.dry_run,
                    user: &user,
                };
                shared
                    .admission
                    .admit(store, &a, &mut item.clone(), Some(&item))
                    .await?;
                match store.delete(def, &i_ns, &n, &opts) {
                    Ok(v) => deleted.push(v),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                200,
                &list_body(def, deleted, store.resource_version(), None),
            ))
        }
        (m, _, sub) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m} {}{})",
            def.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

fn selectors(def: &ResourceDef, params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))?,
        FieldSelector::parse(params.get("fieldSelector").map_or("", String::as_str), def.kind)?,
    ))
}

fn selected(
    store: &Store,
    def: &ResourceDef,
    ns: Option<&str>,
    params: &Params,
) -> Result<(Vec<Value>, u64), ApiError> {
    let (ls, fs) = selectors(def, params)?;
    let (items, rv) = store.list(def, ns);
    Ok((
        items.into_iter().filter(|o| ls.matches(o) && fs.matches(o)).collect(),
        rv,
    ))
}

fn list_body(def: &ResourceDef, items: Vec<Value>, rv: u64, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(), "metadata": meta, "items": items})
}

fn list(store: &Store, def: &ResourceDef, ns: Option<&str>, params: &Params) -> Result<Response, ApiError> {
    if params.get("resourceVersionMatch").is_some_and(|m| m == "Exact") {
        let want = params
            .get("resourceVersion")
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0);
        if want != store.resource_version() {
            return Err(ApiError::gone(format!(
                "too old resource version: {want} ({})",
                store.resource_version()
            )));
        }
    }
    let (mut items, mut rv) = selected(store, def, ns, params)?;
    // Continue tokens carry the version of the first page and the last key served.
    if let Some(token) = params.get("continue").filter(|c| !c.is_empty()) {
        let mut parts = token.splitn(3, '|');
        let (Some(trv), Some(tns), Some(tname)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ApiError::bad_request(format!("continue key is not valid: {token}")));
        };
        let trv: u64 = trv
            .parse()
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
        if trv < store.compacted() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .into(),
            ));
        }
        let after = (tns.to_owned(), tname.to_owned());
        items.retain(|o| key_of(o) > after);
        rv = trv;
    }
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0);
    let mut cont = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        let (kns, kname) = key_of(items.last().expect("non-empty"));
        cont = Some(format!("{rv}|{kns}|{kname}"));
    }
    Ok(json_response(200, &list_body(def, items, rv, cont)))
}

fn key_of(o: &Value) -> (String, String) {
    let g = |f: &str| o.pointer(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    (g("/metadata/namespace"), g("/metadata/name"))
}

/// One watch event line; compact JSON and a newline, as clients decode it.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object})).expect("serializable");
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    store: &Arc<Store>,
    faults: &Arc<WatchFaults>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let stream = watch_events(store, faults, def, ns, params)?.map(Ok::<_, std::convert::Infallible>);
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .expect("response"))
}

/// A watch's events, one JSON line each, as a stream.
fn watch_events(
    store: &Arc<Store>,
    faults: &Arc<WatchFaults>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    params: &Params,
) -> Result<futures::stream::BoxStream<'static, Bytes>, ApiError> {
    let (ls, fs) = selectors(def, params)?;
    let bookmarks = flag(params, "allowWatchBookmarks");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let send_initial = params.get("sendInitialEvents").map(|v| v == "true");
    let rv_param = params.get("resourceVersion").filter(|r| !r.is_empty()).cloned();
    let ns = ns.map(str::to_owned);
    let idx = index_of(def);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);

    let in_scope = {
        let ns = ns.clone();
        move |o: &Value| {
            ns.as_deref()
                .is_none_or(|n| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n))
                && ls.matches(o)
                && fs.matches(o)
        }
    };
    // Initial state: synthetic ADDED events when no version (or "0") was
    // given, or when sendInitialEvents=true asks for them.
    let initial = send_initial.unwrap_or(matches!(rv_param.as_deref(), None | Some("0")));
    let (initial_items, start_rv, backlog, events) = if initial {
        let (items, rv, events) = store.snapshot_and_watch(def, ns.as_deref());
        (items, rv, Vec::new(), events)
    } else {
        let rv: u64 = rv_param
            .as_deref()
            .unwrap_or("0")
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {:?}", rv_param)))?;
        let resumed = match store.watch_from(rv) {
            Ok(_) if faults.expire_now() => Err(ApiError::gone(format!(
                "too old resource version: {rv} (a fault injected by the test control plane)"
            ))),
            r => r,
        };
        match resumed {
            Ok((backlog, events)) => (Vec::new(), rv, backlog, events),
            Err(gone) => {
                // 410 goes inside the stream: HTTP 200, then one ERROR event.
                let body = line("ERROR", &gone.to_status());
                return Ok(futures::stream::once(async move { body }).boxed());
            }
        }
    };
    let api_version = def.api_version();
    let faults = faults.clone();
    tokio::spawn(async move {
        let mut events = events;
        let mut last = start_rv;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        for o in initial_items.iter().filter(|o| in_scope(o)) {
            if tx.send(line("ADDED", o)).await.is_err() {
                return;
            }
        }
        let bookmark = |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line(
                "BOOKMARK",
                &json!({"kind": def.kind, "apiVersion": api_version, "metadata": meta}),
            )
        };
        if send_initial == Some(true) && bookmarks && tx.send(bookmark(last, true)).await.is_err() {
            return;
        }
        let deliver = |e: &Event, last: &mut u64| -> Option<Bytes> {
            if e.rv <= *last || e.resource != idx {
                *last = (*last).max(e.rv);
                return None;
            }
            *last = e.rv;
            let now_in = e.kind != EventType::Deleted && in_scope(&e.object);
            let was_in = e.old.as_ref().is_some_and(&in_scope);
            let kind = match (e.kind, was_in, now_in) {
                (EventType::Added, _, true) => "ADDED",
                (EventType::Modified, true, true) => "MODIFIED",
                (EventType::Modified, false, true) => "ADDED",
                (EventType::Modified, true, false) | (EventType::Deleted, true, _) => "DELETED",
                _ => return None,
            };
            Some(line(kind, &e.object))
        };
        for e in &backlog {
            if let Some(b) = deliver(e, &mut last)
                && tx.send(b).await.is_err()
            {
                return;
            }
        }
        // Periodic progress bookmarks, the first one a period from now (as
        // kube-apiserver: never ahead of the events already due).
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(last, false)).await.is_err() { return; }
                }
                r = events.recv() => match r {
                    Ok(e) => if let Some(b) = deliver(&e, &mut last) {
                        if let Some(d) = faults.delay() {
                            tokio::time::sleep(d).await;
                        }
                        if tx.send(b).await.is_err() || faults.cut_now() {
                            return;
                        }
                    },
                    // Too slow to keep up: end the stream; the client re-watches
                    // from its last version (and relists if that is gone).
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

use futures::StreamExt;

/// PATCH: apply the patch to the stored object, admit the result as an
/// UPDATE, and write it if nobody wrote in between (else start again, as
/// kube-apiserver retries a patch). Server-side apply creates what is missing.
#[allow(clippy::too_many_arguments)]
async fn patch(
    shared: &Shared,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    kind: PatchType,
    params: &Params,
    body: &[u8],
    user: &Value,
) -> Result<Response, ApiError> {
    let store = &shared.store;
    let dry = dry_run(params);
    let manager = params.get("fieldManager").filter(|m| !m.is_empty()).cloned();
    if kind == PatchType::Apply && manager.is_none() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires fieldManager to be set",
        ));
    }
    for _ in 0..16 {
        let current = match store.get(def, ns, name) {
            Err(e) if e.code == 404 && kind == PatchType::Apply => {
                let mut obj = parse_body(body)?;
                if !obj.get("metadata").is_some_and(Value::is_object) {
                    return Err(ApiError::bad_request("the applied configuration has no metadata"));
                }
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply"}]);
                let a = Attributes {
                    def,
                    sub: "",
                    op: Operation::Create,
                    namespace: ns,
                    name,
                    dry_run: dry,
                    user,
                };
                shared.admission.admit(store, &a, &mut obj, None).await?;
                return match store.create(def, ns, obj, dry) {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => Ok(json_response(201, &other?)),
                };
            }
            other => other?,
        };
        if kind == PatchType::Apply {
            // Ownership is tracked per manager, not per field: a second
            // applier conflicts unless it forces, as every client sparkcap
            // meets does (fabric8, kubectl --force-conflicts).
            let others: Vec<String> = current
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|m| m["operation"] == "Apply" && m["manager"] != json!(manager))
                        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if !others.is_empty() && !flag(params, "force") {
                return Err(ApiError::conflict(
                    &def.qualified(),
                    name,
                    &format!("Apply failed with conflicts: conflict with {others:?}"),
                ));
            }
        }
        let mut candidate = current.clone();
        apply_patch(kind, &mut candidate, body)?;
        if !candidate.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::invalid(
                def.kind,
                name,
                "metadata",
                "Required value: the patch removed the object's metadata",
            ));
        }
        if kind == PatchType::Apply {
            candidate["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply"}]);
        }
        candidate["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        let a = Attributes {
            def,
            sub: sub.unwrap_or(""),
            op: Operation::Update,
            namespace: ns,
            name,
            dry_run: dry,
            user,
        };
        shared
            .admission
            .admit(store, &a, &mut candidate, Some(&current))
            .await?;
        match store.update(def, ns, name, candidate, sub, dry) {
            Err(e) if e.reason == "Conflict" && e.message.contains("has been modified") => continue,
            other => return Ok(json_response(200, &other?)),
        }
    }
    Err(ApiError::conflict(
        &def.qualified(),
        name,
        "too many concurrent writers; try again",
    ))
}

fn bind(store: &Store, ns: &str, name: &str, binding: &Value) -> Result<Response, ApiError> {
    let pods = find("", "v1", "pods").expect("pods served");
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("Binding", name, "target.name", "Required value"))?
        .to_owned();
    let uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    store.modify(pods, ns, name, Some("binding"), false, |pod| {
        if let Some(uid) = &uid
            && pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                "pods",
                name,
                &format!("Precondition failed: UID in precondition: {uid}"),
            ));
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                "pods",
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(current) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                          "lastTransitionTime": super::store::now_rfc3339()});
        let conds = pod["status"]
            .as_object_mut()
            .map(|s| s.entry("conditions").or_insert(json!([])));
        if let Some(Value::Array(c)) = conds {
            c.retain(|x| x["type"] != "PodScheduled");
            c.push(cond);
        }
        Ok(())
    })?;
    Ok(json_response(201, &success(201)))
}

fn evict(store: &Store, ns: &str, name: &str, eviction: &Value) -> Result<Response, ApiError> {
    let pods = find("", "v1", "pods").expect("pods served");
    let pdbs = find("policy", "v1", "poddisruptionbudgets").expect("pdbs served");
    let pod = store.get(pods, ns, name)?;
    let (budgets, _) = store.list(pdbs, Some(ns));
    let matching: Vec<&Value> = budgets
        .iter()
        .filter(|b| selector_matches(b.pointer("/spec/selector"), &pod))
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    if let Some(budget) = matching.first() {
        let (all, _) = store.list(pods, Some(ns));
        let healthy = all
            .iter()
            .filter(|p| selector_matches(budget.pointer("/spec/selector"), p))
            .filter(|p| {
                p.pointer("/status/phase") == Some(&json!("Running"))
                    && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .count() as i64;
        let expected = all
            .iter()
            .filter(|p| selector_matches(budget.pointer("/spec/selector"), p))
            .count() as i64;
        let allowed = if let Some(min) = budget.pointer("/spec/minAvailable") {
            healthy - int_or_percent(min, expected)
        } else if let Some(max) = budget.pointer("/spec/maxUnavailable") {
            int_or_percent(max, expected) - (expected - healthy)
        } else {
            healthy
        };
        let is_healthy = pod.pointer("/status/phase") == Some(&json!("Running"));
        if is_healthy && allowed <= 0 {
            return Err(ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
            ));
        }
    }
    let opts = eviction
        .get("deleteOptions")
        .map(DeleteOptions::from_json)
        .unwrap_or_default();
    store.delete(pods, ns, name, &opts)?;
    Ok(json_response(201, &success(201)))
}

fn int_or_percent(v: &Value, total: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| (p * total + 99) / 100),
        _ => 0,
    }
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions) against an object.
pub fn selector_matches(sel: Option<&Value>, obj: &Value) -> bool {
    let Some(sel) = sel else { return false };
    let labels = obj.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let ml_ok = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let me_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let k = e["key"].as_str().unwrap_or("");
                let vals: Vec<&str> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap_or("") {
                    "In" => get(k).is_some_and(|x| vals.contains(&x)),
                    "NotIn" => get(k).is_none_or(|x| !vals.contains(&x)),
                    "Exists" => get(k).is_some(),
                    "DoesNotExist" => get(k).is_none(),
                    _ => false,
                }
            })
        });
    ml_ok && me_ok
}
