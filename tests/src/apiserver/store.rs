//! The object store behind the test control plane: every object of every
//! served resource as JSON, one cluster-wide resourceVersion counter, and an
//! event log that watches replay from. Each write is atomic under one lock,
//! and its event is appended and broadcast under that same lock, so a watch
//! that starts at version N sees exactly the events after N, in order.
//!
//! Deliberate simplifications, each refused or documented rather than faked:
//! lists are served from the latest state (continue tokens older than the
//! event history get 410, as kube-apiserver does after compaction);
//! namespace deletion removes the contents at once instead of draining them.

use super::resources::{RESOURCES, ResourceDef};
use super::status::ApiError;
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed (the object carries the deletion's resourceVersion).
    Deleted,
}

impl EventType {
    /// As written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, in the log.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Index into [`RESOURCES`].
    pub resource: usize,
    /// The object before (for MODIFIED and DELETED), so a selector watch can
    /// tell an object entering or leaving it.
    pub old: Option<Value>,
    /// The object after (for DELETED: as it was, with the new resourceVersion).
    pub object: Value,
}

/// Events kept for watches to resume from; older versions get 410 Gone.
pub const DEFAULT_HISTORY: usize = 200_000;

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    objects: HashMap<usize, BTreeMap<(String, String), Value>>,
    log: VecDeque<Arc<Event>>,
    /// Oldest resourceVersion a watch may resume after.
    compacted: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    history: usize,
}

/// Live events for one watch.
pub type EventReceiver = broadcast::Receiver<Arc<Event>>;

/// The key of an object: (namespace or "", name).
pub type Key = (String, String);

/// Index of a resource definition.
pub fn index_of(def: &ResourceDef) -> usize {
    RESOURCES.iter().position(|r| r == def).expect("served resource")
}

/// Now, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = v;
}

/// What a delete asked for.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub rv: Option<String>,
    /// `propagationPolicy: Orphan` keeps dependents.
    pub orphan: bool,
    /// `dryRun: [All]`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (or an eviction's `deleteOptions`).
    pub fn from_json(v: &Value) -> Self {
        Self {
            grace: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            uid: v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            rv: v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            orphan: v.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
                || v.get("orphanDependents").and_then(Value::as_bool) == Some(true),
            dry_run: v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All")),
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY)
    }
}

impl Store {
    /// An empty store keeping `history` events for watch resumption.
    pub fn new(history: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            events: broadcast::channel(65_536).0,
            history: history.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn emit(&self, inner: &mut Inner, kind: EventType, resource: usize, old: Option<Value>, object: Value) {
        let ev = Arc::new(Event {
            rv: inner.rv,
            kind,
            resource,
            old,
            object,
        });
        inner.log.push_back(ev.clone());
        while inner.log.len() > self.history {
            if let Some(e) = inner.log.pop_front() {
                inner.compacted = e.rv;
            }
        }
        let _ = self.events.send(ev);
    }

    /// One object.
    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&index_of(def))
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.qualified(), name))
    }

    /// Objects of a resource (in one namespace, or all when `ns` is None),
    /// in key order, with the resourceVersion they were read at.
    pub fn list(&self, def: &ResourceDef, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(&index_of(def))
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Every object of every resource in a namespace (for namespace deletion).
    fn keys_in_namespace(inner: &Inner, ns: &str) -> Vec<(usize, Key)> {
        inner
            .objects
            .iter()
            .flat_map(|(r, m)| m.keys().filter(|(n, _)| n == ns).map(move |k| (*r, k.clone())))
            .collect()
    }

    /// Creates an object; fills name (from generateName), uid, timestamps and
    /// resourceVersion. With `dry_run`, returns what would be stored.
    pub fn create(&self, def: &ResourceDef, ns: &str, mut obj: Value, dry_run: bool) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was not a JSON object"));
        }
        let name = match (meta(&obj, "name").filter(|n| !n.is_empty()), meta(&obj, "generateName")) {
            (Some(n), _) => n,
            (None, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    def.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        };
        validate_name(def, &name)?;
        if let Some(body_ns) = meta(&obj, "namespace").filter(|n| !n.is_empty())
            && def.namespaced
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut inner = self.lock();
        if def.namespaced {
            let ns_def = super::resources::find("", "v1", "namespaces").expect("namespaces served");
            let ns_obj = inner
                .objects
                .get(&index_of(ns_def))
                .and_then(|m| m.get(&(String::new(), ns.to_owned())))
                .ok_or_else(|| ApiError::not_found("namespaces", ns))?;
            if ns_obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    def.qualified()
                )));
            }
        }
        let key = (if def.namespaced { ns.to_owned() } else { String::new() }, name.clone());
        let idx = index_of(def);
        if inner.objects.get(&idx).is_some_and(|m| m.contains_key(&key)) {
            return Err(ApiError::already_exists(&def.qualified(), &name));
        }
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        set_meta(&mut obj, "name", json!(name));
        if def.namespaced {
            set_meta(&mut obj, "namespace", json!(ns));
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(now_rfc3339()));
        set_meta(&mut obj, "generation", json!(1));
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        defaults(def, &mut obj);
        if dry_run {
            set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
            return Ok(obj);
        }
        inner.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
        inner.objects.entry(idx).or_default().insert(key, obj.clone());
        self.emit(&mut inner, EventType::Added, idx, None, obj.clone());
        Ok(obj)
    }

    /// Replaces an object (PUT). `subresource` "status" writes only status;
    /// the main resource keeps the stored status when a status subresource exists.
    pub fn update(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut obj: Value,
        subresource: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if meta(&obj, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta(&obj, "name").unwrap_or_default()
            )));
        }
        let mut inner = self.lock();
        let idx = index_of(def);
        let key = (
            if def.namespaced { ns.to_owned() } else { String::new() },
            name.to_owned(),
        );
        let old = inner
            .objects
            .get(&idx)
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.qualified(), name))?;
        if let Some(rv) = meta(&obj, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &def.qualified(),
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if let Some(uid) = meta(&obj, "uid").filter(|u| !u.is_empty())
            && Some(&uid) != meta(&old, "uid").as_ref()
        {
            return Err(ApiError::conflict(
                &def.qualified(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if subresource == Some("status") {
            let status = obj.get("status").cloned().unwrap_or(Value::Null);
            obj = old.clone();
            obj["status"] = status;
        } else if def.has_status() && subresource.is_none() {
            // The main resource ignores status; a binding writes both.
            match old.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        // Fields the server owns.
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => set_meta(&mut obj, f, v.clone()),
                None => {
                    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove(f);
                    }
                }
            }
        }
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let spec_changed = obj.get("spec") != old.get("spec");
        set_meta(&mut obj, "generation", json!(generation + i64::from(spec_changed)));
        if dry_run {
            return Ok(obj);
        }
        // Objects being deleted go once their last finalizer is removed.
        let finalizers_left = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        inner.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
        if obj.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_left && !is_graceful_pod(def, &obj) {
            inner.objects.get_mut(&idx).map(|m| m.remove(&key));
            self.emit(&mut inner, EventType::Deleted, idx, Some(old), obj.clone());
            self.collect_garbage(&mut inner, &obj);
            return Ok(obj);
        }
        inner.objects.entry(idx).or_default().insert(key, obj.clone());
        self.emit(&mut inner, EventType::Modified, idx, Some(old), obj.clone());
        Ok(obj)
    }

    /// Reads, changes and writes an object (patches, binding). A concurrent
    /// write between the read and the write is retried, as kube-apiserver
    /// retries a patch internally; `change` may run more than once.
    pub fn modify(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        dry_run: bool,
        change: impl Fn(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        for _ in 0..16 {
            let current = self.get(def, ns, name)?;
            let mut candidate = current.clone();
            change(&mut candidate)?;
            set_meta(
                &mut candidate,
                "resourceVersion",
                json!(meta(&current, "resourceVersion").unwrap_or_default()),
            );
            match self.update(def, ns, name, candidate, subresource, dry_run) {
                Err(e) if e.reason == "Conflict" && e.message.contains("has been modified") => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(
            &def.qualified(),
            name,
            "too many concurrent writers; try again",
        ))
    }

    /// Deletes an object, honouring finalizers, preconditions and (for bound,
    /// running pods) the grace period; cascades to dependents unless orphaned.
    pub fn delete(&self, def: &ResourceDef, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        self.delete_locked(&mut inner, def, ns, name, opts)
    }

    fn delete_locked(
        &self,
        inner: &mut Inner,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let idx = index_of(def);
        let key = (
            if def.namespaced { ns.to_owned() } else { String::new() },
            name.to_owned(),
        );
        let old = inner
            .objects
            .get(&idx)
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.qualified(), name))?;
        if let Some(uid) = &opts.uid
            && Some(uid) != meta(&old, "uid").as_ref()
        {
            return Err(ApiError::conflict(
                &def.qualified(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.rv
            && Some(rv) != meta(&old, "resourceVersion").as_ref()
        {
            return Err(ApiError::conflict(
                &def.qualified(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if opts.dry_run {
            return Ok(old);
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let grace = if def.kind == "Pod" && def.group.is_empty() {
            let phase = old.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            let bound = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let default = old
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            // Unbound or finished pods go at once; running ones wait for their kubelet.
            if !bound || phase == "Succeeded" || phase == "Failed" {
                0
            } else {
                opts.grace.unwrap_or(default).max(0)
            }
        } else {
            0
        };
        if has_finalizers || grace > 0 {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut obj = old.clone();
            let at = Utc::now() + chrono::TimeDelta::seconds(grace);
            set_meta(
                &mut obj,
                "deletionTimestamp",
                json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            );
            set_meta(&mut obj, "deletionGracePeriodSeconds", json!(grace));
            inner.rv += 1;
            set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
            inner.objects.entry(idx).or_default().insert(key, obj.clone());
            self.emit(inner, EventType::Modified, idx, Some(old), obj.clone());
            return Ok(obj);
        }
        if def.kind == "Namespace" {
            for (r, k) in Self::keys_in_namespace(inner, name) {
                let dep_def = &RESOURCES[r];
                let force = DeleteOptions {
                    grace: Some(0),
                    ..Default::default()
                };
                let _ = self.force_remove(inner, dep_def, &k, &force);
            }
        }
        inner.rv += 1;
        let mut obj = old.clone();
        set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
        inner.objects.get_mut(&idx).map(|m| m.remove(&key));
        self.emit(inner, EventType::Deleted, idx, Some(old), obj.clone());
        if !opts.orphan {
            self.collect_garbage(inner, &obj);
        }
        Ok(obj)
    }

    fn force_remove(&self, inner: &mut Inner, def: &ResourceDef, key: &Key, _opts: &DeleteOptions) -> Option<Value> {
        let idx = index_of(def);
        let old = inner.objects.get_mut(&idx)?.remove(key)?;
        inner.rv += 1;
        let mut obj = old.clone();
        set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
        self.emit(inner, EventType::Deleted, idx, Some(old), obj.clone());
        Some(obj)
    }

    /// The kubelet's final delete (grace 0) of a pod whose containers it
    /// stopped: the object goes now, or, while finalizers remain, stays
    /// with `deletionGracePeriodSeconds: 0` until the last is removed.
    pub fn finish_pod_deletion(&self, ns: &str, name: &str) -> Option<Value> {
        let def = super::resources::find("", "v1", "pods").expect("pods served");
        let mut inner = self.lock();
        let idx = index_of(def);
        let key = (ns.to_owned(), name.to_owned());
        let current = inner.objects.get(&idx).and_then(|m| m.get(&key)).cloned()?;
        if current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            let mut obj = current.clone();
            set_meta(&mut obj, "deletionGracePeriodSeconds", json!(0));
            inner.rv += 1;
            set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
            inner.objects.entry(idx).or_default().insert(key, obj.clone());
            self.emit(&mut inner, EventType::Modified, idx, Some(current), obj.clone());
            return Some(obj);
        }
        let obj = self.force_remove(
            &mut inner,
            def,
            &(ns.to_owned(), name.to_owned()),
            &DeleteOptions::default(),
        )?;
        self.collect_garbage(&mut inner, &obj);
        Some(obj)
    }

    /// Background garbage collection: dependents whose last owner was `owner`
    /// are deleted; those with other owners lose the reference.
    fn collect_garbage(&self, inner: &mut Inner, owner: &Value) {
        let Some(uid) = meta(owner, "uid") else { return };
        let mut doomed = Vec::new();
        let mut edited = Vec::new();
        for (r, m) in &inner.objects {
            for (k, v) in m {
                let Some(refs) = v.pointer("/metadata/ownerReferences").and_then(Value::as_array) else {
                    continue;
                };
                if !refs
                    .iter()
                    .any(|o| o.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                {
                    continue;
                }
                if refs.len() == 1 {
                    doomed.push((*r, k.clone()));
                } else {
                    edited.push((*r, k.clone()));
                }
            }
        }
        for (r, k) in edited {
            let Some(old) = inner.objects.get(&r).and_then(|m| m.get(&k)).cloned() else {
                continue;
            };
            let mut obj = old.clone();
            if let Some(a) = obj
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                a.retain(|o| o.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
            }
            inner.rv += 1;
            set_meta(&mut obj, "resourceVersion", json!(inner.rv.to_string()));
            inner.objects.entry(r).or_default().insert(k, obj.clone());
            self.emit(inner, EventType::Modified, r, Some(old), obj);
        }
        for (r, k) in doomed {
            let def = &RESOURCES[r];
            let _ = self.delete_locked(
                inner,
                def,
                &k.0,
                &k.1,
                &DeleteOptions {
                    grace: Some(0),
                    ..Default::default()
                },
            );
        }
    }

    /// Subscribes to changes after `rv`: the retained events after it, then
    /// live ones. `Err` when `rv` is older than the retained history (410).
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Arc<Event>>, EventReceiver), ApiError> {
        let inner = self.lock();
        if rv < inner.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                inner.compacted + 1
            )));
        }
        let rx = self.events.subscribe();
        let backlog = inner.log.iter().filter(|e| e.rv > rv).cloned().collect();
        Ok((backlog, rx))
    }

    /// Current objects plus a subscription, read at one version (a watch with
    /// initial events).
    pub fn snapshot_and_watch(&self, def: &ResourceDef, ns: Option<&str>) -> (Vec<Value>, u64, EventReceiver) {
        let inner = self.lock();
        let rx = self.events.subscribe();
        let items = inner
            .objects
            .get(&index_of(def))
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv, rx)
    }

    /// The oldest resourceVersion a watch can resume after.
    pub fn compacted(&self) -> u64 {
        self.lock().compacted
    }
}

fn is_graceful_pod(def: &ResourceDef, obj: &Value) -> bool {
    def.kind == "Pod"
        && def.group.is_empty()
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
}

/// Names must be DNS subdomains (lowercase, digits, '-', '.'), as the API server requires.
fn validate_name(def: &ResourceDef, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            def.kind,
            name,
            "metadata.name",
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                 characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

/// Defaults the API server fills in.
fn defaults(def: &ResourceDef, obj: &mut Value) {
    match (def.group, def.kind) {
        ("", "Pod") => {
            if obj.get("status").is_none_or(|s| s.get("phase").is_none()) {
                obj["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
            }
            let spec = obj.get_mut("spec").and_then(Value::as_object_mut);
            if let Some(spec) = spec {
                spec.entry("schedulerName").or_insert(json!("default-scheduler"));
                spec.entry("restartPolicy").or_insert(json!("Always"));
                spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
                spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
            }
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            let name = meta(obj, "name").unwrap_or_default();
            if !obj["metadata"].get("labels").is_some_and(Value::is_object) {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        _ => {}
    }
}
