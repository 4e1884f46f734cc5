//! Keeps the tenant view current: the ledger (full reload on a timer, one
//! tenant on each change-feed notice), namespaces and running Spark
//! applications from API server watches. Admissions read the view through an
//! [`ArcSwap`] and never wait for any of this.

use crate::spark::{APP_SELECTOR_LABEL, JOB_LABEL, POOL_LABEL, TENANT_LABEL};
use crate::view::{LedgerFacts, RunningApp, TenantView};
use arc_swap::ArcSwap;
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use sparkcap_ledger::{ChangeKind, LedgerStore, Pool, TenantId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The shared view plus what readiness needs to know.
#[derive(Debug, Clone)]
pub struct ViewHandle {
    current: Arc<ArcSwap<TenantView>>,
    namespaces_listed: Arc<AtomicBool>,
    pods_listed: Arc<AtomicBool>,
    /// When each tenant's latest reload began: a full reload that began
    /// earlier must not put back what that reload replaced (an API write
    /// read back at once would seem lost).
    tenant_reloads: Arc<std::sync::Mutex<HashMap<TenantId, std::time::Instant>>>,
}

impl ViewHandle {
    /// A handle over `view` (for tests and benchmarks, fully "listed").
    pub fn fixed(view: TenantView) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(view)),
            namespaces_listed: Arc::new(AtomicBool::new(true)),
            pods_listed: Arc::new(AtomicBool::new(true)),
            tenant_reloads: Arc::default(),
        }
    }

    /// The current view.
    pub fn load(&self) -> arc_swap::Guard<Arc<TenantView>> {
        self.current.load()
    }

    /// The current view, owned (to hand to another thread).
    pub fn load_full(&self) -> Arc<TenantView> {
        self.current.load_full()
    }

    /// Ready when the ledger and both watches have loaded once.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.current.load().ledger_fresh_at.is_none() {
            Err("ledger not loaded yet")
        } else if !self.namespaces_listed.load(Ordering::Acquire) {
            Err("namespaces not listed yet")
        } else if !self.pods_listed.load(Ordering::Acquire) {
            Err("Spark pods not listed yet")
        } else {
            Ok(())
        }
    }

    /// Reloads one tenant (or, with `None`, the whole ledger part) now, so
    /// that an API write is visible to the next read on this replica
    /// without waiting for the change feed.
    pub async fn refresh(&self, store: &dyn LedgerStore, tenant: Option<&TenantId>) {
        match tenant {
            None => {
                full_reload(self, store).await;
            }
            Some(id) => reload_tenant(self, store, id).await,
        }
    }

    fn update(&self, f: impl Fn(&mut TenantView)) {
        self.current.rcu(|v| {
            let mut next = TenantView::clone(v);
            f(&mut next);
            next
        });
    }
}

/// How the view is kept current.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Full ledger reload period (also the freshness heartbeat).
    pub full_reload: Duration,
    /// Change notices are gathered this long before reloading.
    pub debounce: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            full_reload: Duration::from_secs(10),
            debounce: Duration::from_millis(100),
        }
    }
}

/// Starts keeping `view` current; the tasks stop when the returned handle's
/// join set is dropped.
pub fn start(
    view: TenantView,
    store: Arc<dyn LedgerStore>,
    kube: Client,
    config: SyncConfig,
) -> (ViewHandle, tokio::task::JoinSet<()>) {
    let handle = ViewHandle {
        current: Arc::new(ArcSwap::from_pointee(view)),
        namespaces_listed: Arc::new(AtomicBool::new(false)),
        pods_listed: Arc::new(AtomicBool::new(false)),
        tenant_reloads: Arc::default(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(ledger_loop(handle.clone(), store, config));
    tasks.spawn(namespace_loop(handle.clone(), Api::all(kube.clone())));
    tasks.spawn(pod_loop(handle.clone(), Api::all(kube)));
    (handle, tasks)
}

pub use sparkcap_core::facts::load_ledger;
use sparkcap_core::facts::load_tenant;

async fn full_reload(handle: &ViewHandle, store: &dyn LedgerStore) -> bool {
    let started = Utc::now();
    let began = std::time::Instant::now();
    let slice = handle.load().settings.slices.slice;
    match load_ledger(store, Utc::now(), slice).await {
        Ok(facts) => {
            sparkcap_ledger::faults::crash_point("webhook.sync.after_load");
            let facts = Arc::new(facts);
            let newer: Vec<TenantId> = {
                let mut reloads = handle.tenant_reloads.lock().unwrap_or_else(|p| p.into_inner());
                let newer = reloads
                    .iter()
                    .filter(|(_, t)| **t > began)
                    .map(|(id, _)| id.clone())
                    .collect();
                reloads.retain(|_, t| *t > began);
                newer
            };
            handle.update(|v| {
                let mut next = facts.clone();
                // Tenants reloaded since this load began are fresher where they are.
                if !newer.is_empty() {
                    let merged = Arc::make_mut(&mut next);
                    for id in &newer {
                        match v.ledger.tenants.get(id) {
                            Some(t) => merged.tenants.insert(id.clone(), t.clone()),
                            None => merged.tenants.remove(id),
                        };
                    }
                }
                v.ledger = next;
                v.ledger_fresh_at = Some(started);
            });
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "ledger reload failed; the view ages until the ledger answers");
            false
        }
    }
}

async fn ledger_loop(handle: ViewHandle, store: Arc<dyn LedgerStore>, config: SyncConfig) {
    let mut feed = None;
    let mut tick = tokio::time::interval(config.full_reload);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        sparkcap_ledger::faults::crash_point("webhook.sync.ledger_loop");
        if feed.is_none() {
            match store.subscribe().await {
                Ok(s) => {
                    feed = Some(s);
                    // Anything may have changed while the feed was down.
                    full_reload(&handle, store.as_ref()).await;
                }
                Err(e) => tracing::warn!(error = %e, "ledger change feed unavailable; retrying"),
            }
        }
        let mut changed: HashSet<TenantId> = HashSet::new();
        let mut everything = false;
        tokio::select! {
            _ = tick.tick() => everything = true,
            change = async { match feed.as_mut() { Some(f) => f.next().await, None => std::future::pending().await } } => {
                match change {
                    None => { feed = None; everything = true; }
                    Some(c) => {
                        // Gather what else arrives within the debounce window.
                        let deadline = tokio::time::Instant::now() + config.debounce;
                        let mut note = |c: sparkcap_ledger::LedgerChange| match (c.kind, c.tenant) {
                            (ChangeKind::Pool | ChangeKind::Resync | ChangeKind::Binding | ChangeKind::Schedule, _) | (_, None) => everything = true,
                            (_, Some(t)) => { changed.insert(t); }
                        };
                        note(c);
                        while let Ok(Some(c)) = tokio::time::timeout_at(deadline, feed.as_mut().expect("feed").next()).await {
                            note(c);
                        }
                    }
                }
            }
        }
        if feed.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if everything {
            full_reload(&handle, store.as_ref()).await;
            continue;
        }
        for id in changed {
            reload_tenant(&handle, store.as_ref(), &id).await;
        }
    }
}

async fn reload_tenant(handle: &ViewHandle, store: &dyn LedgerStore, id: &TenantId) {
    let began = std::time::Instant::now();
    match load_tenant(store, id).await {
        Ok(t) => {
            handle
                .tenant_reloads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), began);
            handle.update(|v| {
                let mut ledger = LedgerFacts::clone(&v.ledger);
                match &t {
                    Some(t) => ledger.tenants.insert(id.clone(), t.clone()),
                    None => ledger.tenants.remove(id),
                };
                v.ledger = Arc::new(ledger);
            });
        }
        Err(e) => tracing::warn!(tenant = %id, error = %e, "tenant reload failed"),
    }
}

async fn namespace_loop(handle: ViewHandle, api: Api<Namespace>) {
    let mut buffer: HashMap<String, Option<String>> = HashMap::new();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let entry = |ns: &Namespace| (ns.name_any(), ns.labels().get(TENANT_LABEL).cloned());
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(ns)) => {
                buffer.insert(entry(&ns).0, entry(&ns).1);
            }
            Ok(Event::InitDone) => {
                let all = Arc::new(std::mem::take(&mut buffer));
                handle.update(|v| v.namespaces = all.clone());
                handle.namespaces_listed.store(true, Ordering::Release);
            }
            Ok(Event::Apply(ns)) => {
                let (name, tenant) = entry(&ns);
                handle.update(|v| {
                    let mut m = HashMap::clone(&v.namespaces);
                    m.insert(name.clone(), tenant.clone());
                    v.namespaces = Arc::new(m);
                });
            }
            Ok(Event::Delete(ns)) => {
                let name = ns.name_any();
                handle.update(|v| {
                    let mut m = HashMap::clone(&v.namespaces);
                    m.remove(&name);
                    v.namespaces = Arc::new(m);
                });
            }
            Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
        }
    }
}

/// Pods of one application: uid → (pool, job).
type AppPods = HashMap<String, (Pool, Option<String>)>;
/// (namespace, `spark-app-selector`).
type AppKey = (String, String);

/// The scheduler whose placements make an application running.
const SCHEDULER_NAME: &str = "sparkcap-scheduler";

/// A live, bound Spark pod's application, uid, pool and job; none for
/// unbound, finished or deleting pods.
fn app_entry(pod: &Pod) -> Option<(AppKey, String, Pool, Option<String>)> {
    let labels = pod.labels();
    let selector = labels.get(APP_SELECTOR_LABEL)?;
    let pool: Pool = labels.get(POOL_LABEL)?.parse().ok()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    // A running application is one sparkcap admitted and bound: a pod its
    // scheduler placed (no pod can name a node itself in a tenant
    // namespace, nor gain `spark-role` after admission). A placeholder pod
    // that merely carries an application's selector makes nothing running.
    let spec = pod.spec.as_ref()?;
    if spec.scheduler_name.as_deref() != Some(SCHEDULER_NAME) || spec.node_name.as_deref().is_none_or(str::is_empty) {
        return None;
    }
    Some((
        (pod.namespace().unwrap_or_default(), selector.clone()),
        pod.uid().unwrap_or_else(|| pod.name_any()),
        pool,
        labels.get(JOB_LABEL).cloned(),
    ))
}

fn snapshot(apps: &HashMap<AppKey, AppPods>) -> Arc<HashMap<AppKey, RunningApp>> {
    Arc::new(
        apps.iter()
            .filter_map(|(key, pods)| {
                let (pool, job) = pods.values().next()?;
                Some((
                    key.clone(),
                    RunningApp {
                        pool: *pool,
                        job: job.clone(),
                        pods: pods.len(),
                    },
                ))
            })
            .collect(),
    )
}

async fn pod_loop(handle: ViewHandle, api: Api<Pod>) {
    // Only pods sparkcap routed carry a pool label.
    let config = watcher::Config::default().labels(&format!("spark-role,{POOL_LABEL}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut apps: HashMap<AppKey, AppPods> = HashMap::new();
    let mut buffer: HashMap<AppKey, AppPods> = HashMap::new();
    let remove = |apps: &mut HashMap<AppKey, AppPods>, pod: &Pod| {
        let uid = pod.uid().unwrap_or_else(|| pod.name_any());
        let key = (
            pod.namespace().unwrap_or_default(),
            pod.labels().get(APP_SELECTOR_LABEL).cloned().unwrap_or_default(),
        );
        if let Some(pods) = apps.get_mut(&key) {
            pods.remove(&uid);
            if pods.is_empty() {
                apps.remove(&key);
            }
        }
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some((key, uid, pool, job)) = app_entry(&pod) {
                    buffer.entry(key).or_default().insert(uid, (pool, job));
                }
                continue;
            }
            Ok(Event::InitDone) => {
                apps = std::mem::take(&mut buffer);
                handle.pods_listed.store(true, Ordering::Release);
            }
            Ok(Event::Apply(pod)) => match app_entry(&pod) {
                Some((key, uid, pool, job)) => {
                    apps.entry(key).or_default().insert(uid, (pool, job));
                }
                None => remove(&mut apps, &pod),
            },
            Ok(Event::Delete(pod)) => remove(&mut apps, &pod),
            Err(e) => {
                tracing::warn!(error = %e, "Spark pod watch failed; retrying");
                continue;
            }
        }
        let snap = snapshot(&apps);
        handle.update(|v| v.apps = snap.clone());
    }
}
