//! The kube I/O shell: watches nodes and pods, builds the model, runs
//! [`plan`], and carries out its actions — bindings with the pod's uid as
//! precondition, evictions through the Eviction API, Events — remembering
//! what the API server has not shown back yet (assumed binds).

use crate::meter;
use crate::metrics::Metrics;
use crate::model::{ClusterState, GangSpec, Policy, Reservation, TenantState};
use crate::observe::{self, SCHEDULER_NAME};
use crate::plan::{Action, observe_dedicated_idle, plan};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sparkcap_ledger::{AccrualOutcome, AccrualRequest, LedgerError, LedgerStore, PodBinding, PoolCapacity, TenantId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a spark-submit driver waits for its `spark.properties`
/// ConfigMap (which Spark creates right after the pod) before it is placed
/// without knowing its executors.
pub const GANG_CONF_WAIT: TimeDelta = TimeDelta::seconds(10);

/// What the shell remembers between passes.
#[derive(Debug, Default)]
struct Memory {
    reservations: Vec<Reservation>,
    nominated: HashMap<String, (String, DateTime<Utc>)>,
    last_reason: HashMap<String, String>,
    dedicated_idle_since: Option<DateTime<Utc>>,
    /// Binds sent but not yet seen in the watch: uid → (node, until).
    assumed: HashMap<String, (String, DateTime<Utc>)>,
    /// Evictions sent: those pods count as terminating even before the
    /// watch shows it, or the next pass would choose them as victims again.
    evicting: HashMap<String, DateTime<Utc>>,
    /// Gangs read from drivers' ConfigMaps, by pod uid.
    gangs: HashMap<String, Option<GangSpec>>,
    tenants: HashMap<TenantId, TenantState>,
    tenants_at: Option<DateTime<Utc>>,
    /// Pods charged and still open: their last accrual (to close them if they vanish).
    open: HashMap<String, AccrualRequest>,
    /// Open pods loaded from the ledger at start and not yet seen: one gone
    /// before this process saw it is closed where the ledger left it, since
    /// when it ended is unknown (nothing is charged twice or guessed).
    unseen: std::collections::HashSet<String>,
    /// What was recorded in the ledger when each open pod was bound: the
    /// only source of its money facts.
    bound: HashMap<String, PodBinding>,
    /// The ledger's namespace → tenant bindings (an admin's act): a pod is
    /// placed for the tenant its namespace is bound to, never for a label.
    ns_tenants: HashMap<String, TenantId>,
    /// Final states of bound pods from the watch's delete events: a pod
    /// gone between two passes is closed at its real end all the same.
    gone: HashMap<String, Arc<Pod>>,
    /// When each node was first seen missing from the node list.
    node_missing_since: HashMap<String, DateTime<Utc>>,
    /// Closed pods whose metering finalizer could not be removed yet.
    release: std::collections::HashSet<String>,
    metered_at: Option<DateTime<Utc>>,
    /// When the ledger was last audited against the cluster.
    audited_at: Option<DateTime<Utc>>,
    /// Pool sizes last written to the ledger (without their timestamp).
    pools_written: Vec<PoolCapacity>,
}

impl Memory {
    /// What a scheduler taking over knows: it meters bound pods with the
    /// facts the ledger recorded for them, not with whatever their labels
    /// say now.
    async fn load(store: &dyn LedgerStore) -> Result<Self, LedgerError> {
        let mut memory = Memory::default();
        for b in store.open_bindings().await? {
            memory.bound.insert(b.uid.clone(), b);
        }
        for cp in store.open_pods().await? {
            memory.unseen.insert(cp.pod.uid.clone());
            memory.open.insert(
                cp.pod.uid.clone(),
                AccrualRequest {
                    until: cp.charged_until,
                    finished: false,
                    outcome: None,
                    run: None,
                    pod: cp.pod,
                },
            );
        }
        Ok(memory)
    }
}

/// What [`release_finalizers_for_uninstall`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Pods whose metering finalizer was removed.
    pub released: usize,
    /// Pods still running, charged up to now and left open in the ledger (a
    /// reinstalled scheduler goes on metering them from there).
    pub left_running: usize,
    /// Pods whose finalizer could not be removed (see the log).
    pub failed: usize,
}

/// Before sparkcap is uninstalled: charges what every bound pod used — the
/// ended ones to their real end, closed; the running ones up to now — and
/// then removes the metering finalizer from every pod, so that no pod or
/// namespace waits on a scheduler that is gone. Claims the ledger's epoch,
/// so a scheduler still running is deposed first (it stops metering).
pub async fn release_finalizers_for_uninstall(
    client: Client,
    store: Arc<dyn LedgerStore>,
    config: ShellConfig,
) -> anyhow::Result<ReleaseReport> {
    let epoch = store.claim_epoch(&config.holder).await?;
    let now = Utc::now();
    let config = ShellConfig {
        charge_lag: TimeDelta::zero(),
        ..config
    };
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    for p in Api::<Pod>::all(client.clone()).list(&Default::default()).await?.items {
        pod_writer.apply_watcher_event(&watcher::Event::Apply(p));
    }
    let (nodes, mut node_writer) = reflector::store::<Node>();
    for n in Api::<Node>::all(client.clone()).list(&Default::default()).await?.items {
        node_writer.apply_watcher_event(&watcher::Event::Apply(n));
    }
    let had = pods.state().iter().filter(|p| has_metering_finalizer(p)).count();
    let mut memory = Memory::load(store.as_ref()).await?;
    let lost = lost_nodes(&nodes, &mut memory, now);
    let sampler = crate::usage::Sampler::new(client.clone());
    meter(
        &client,
        store.as_ref(),
        epoch,
        &pods,
        &lost,
        &mut memory,
        &sampler,
        &config,
        now,
        true,
    )
    .await?;
    // Whatever still carries the finalizer (running pods, and pods whose
    // release above raced a change): read again and released.
    let mut report = ReleaseReport::default();
    for pod in Api::<Pod>::all(client.clone()).list(&Default::default()).await?.items {
        if !has_metering_finalizer(&pod) {
            continue;
        }
        if pod
            .uid()
            .is_some_and(|u| memory.bound.contains_key(&u) || memory.open.contains_key(&u))
        {
            report.left_running += 1;
        }
        match release_finalizer(&client, &pod).await {
            Ok(()) => {}
            Err(e) => {
                report.failed += 1;
                tracing::warn!(pod = %pod.name_any(), error = %e, "removing the metering finalizer failed");
            }
        }
    }
    report.released = had.saturating_sub(report.failed);
    Ok(report)
}

/// The scheduler loop's settings.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// Policy for `plan`.
    pub policy: Policy,
    /// Time between passes.
    pub period: Duration,
    /// Time between ledger refreshes of tenants' entitlements and balances.
    pub tenants_refresh: TimeDelta,
    /// Time between accruals of running pods (at most 30 s: R9.2).
    pub meter_period: TimeDelta,
    /// How far behind the clock running pods are charged. A kubelet reports
    /// a container's end a moment after it happens (longer when the API
    /// server is slow); charging a running pod up to "now" would charge
    /// those moments, and the pod's real end would then lie behind what
    /// was charged. With the lag, the end lands ahead and the close is exact.
    pub charge_lag: TimeDelta,
    /// Who holds the ledger's writer epoch (pod name in a cluster).
    pub holder: String,
    /// Where passes, binds, preemptions and accrual lag are counted.
    pub metrics: Metrics,
    /// Consecutive runs within SLA that promote a draft job (R5.5).
    pub draft_runs: i64,
    /// How schedules are planned in time slices (the webhook's, too).
    pub slices: sparkcap_ledger::slices::SlicePolicy,
    /// Time between deliveries of the notice outbox.
    pub notify_period: Duration,
    /// Time between reconciliations of tenant namespaces (quota, network policy).
    pub onboarding_period: Duration,
    /// Where tenants' notification URLs may send.
    pub egress: sparkcap_ledger::egress::EgressPolicy,
    /// Time between audits of the ledger against the cluster's pods.
    pub audit_period: TimeDelta,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            period: Duration::from_millis(200),
            tenants_refresh: TimeDelta::seconds(5),
            meter_period: TimeDelta::seconds(10),
            charge_lag: TimeDelta::seconds(10),
            holder: "sparkcap-scheduler".into(),
            metrics: Metrics::default(),
            draft_runs: sparkcap_ledger::lifecycle::DEFAULT_DRAFT_RUNS,
            slices: sparkcap_ledger::slices::SlicePolicy::default(),
            notify_period: Duration::from_secs(2),
            onboarding_period: Duration::from_secs(10),
            egress: sparkcap_ledger::egress::EgressPolicy::default(),
            audit_period: TimeDelta::minutes(5),
        }
    }
}

fn spawn_reflector<K>(api: Api<K>, deleted: Option<tokio::sync::mpsc::UnboundedSender<K>>) -> Store<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(async move {
        let mut s = stream.boxed();
        while let Some(e) = s.next().await {
            match e {
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
                // A deleted object's last state: what a pod that went between
                // two passes reported at its end.
                Ok(watcher::Event::Delete(obj)) => {
                    if let Some(tx) = &deleted {
                        let _ = tx.send(obj);
                    }
                }
                Ok(_) => {}
            }
        }
    });
    reader
}

/// Schedules until `shutdown` completes.
pub async fn run(
    client: Client,
    store: Arc<dyn LedgerStore>,
    config: ShellConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let nodes = spawn_reflector(Api::<Node>::all(client.clone()), None);
    let (deleted_tx, mut deleted_rx) = tokio::sync::mpsc::unbounded_channel();
    let pods = spawn_reflector(Api::<Pod>::all(client.clone()), Some(deleted_tx));
    tokio::pin!(shutdown);
    // A replica told to stop while starting must not claim the epoch: it
    // would depose the replica that replaced it.
    let start = async {
        nodes.wait_until_ready().await?;
        pods.wait_until_ready().await?;
        // The ledger refuses writes from any older epoch: a deposed scheduler
        // cannot charge anything once another has claimed.
        anyhow::Ok(store.claim_epoch(&config.holder).await?)
    };
    let epoch = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        epoch = start => epoch?,
    };
    let mut memory = Memory::load(store.as_ref()).await?;
    let mut sampler = crate::usage::Sampler::new(client.clone());
    // Leader-only side loops: reservations of ScheduledSparkApplications and
    // delivery of notices. They stop when this leader stops.
    // Their ledger writes carry this leader's epoch. None of them ends while
    // this leader leads: one that does (deposed, or a defect) ends the
    // leader with it, and the process exits for the kubelet to restart,
    // instead of scheduling on with reservations or notices left unserved.
    let fenced = crate::fenced::FencedStore::new(store.clone(), epoch);
    let mut side: tokio::task::JoinSet<(&'static str, Result<(), LedgerError>)> = tokio::task::JoinSet::new();
    let (c, f, cfg) = (client.clone(), fenced.clone(), config.clone());
    side.spawn(async move { ("reservations", crate::reservations::run(c, f, cfg).await) });
    let (c, f, cfg) = (client.clone(), fenced.clone(), config.clone());
    side.spawn(async move { ("notices", crate::notifier::run(c, f, cfg).await) });
    let (c, st, cfg) = (client.clone(), store.clone(), config.clone());
    side.spawn(async move {
        let period = cfg.onboarding_period;
        crate::onboarding::run(c, st, cfg, period).await;
        ("onboarding", Ok(()))
    });
    let mut tick = tokio::time::interval(config.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = config.metrics.clone();
    // At most one audit at a time; aborted when this leader's loop ends.
    let mut audits = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tick.tick() => {}
            Some(ended) = side.join_next() => return Err(side_task_ended(ended)),
        }
        let now = Utc::now();
        // Observed once: the pool sizes and the pass both read them.
        let observed: Vec<crate::model::Node> = nodes.state().iter().map(|n| observe::node(n)).collect();
        match sync_pools(store.as_ref(), epoch, &config, &observed, &mut memory, now).await {
            Ok(()) => {}
            Err(e) if e.is_deposed() => return Err(anyhow::anyhow!("deposed: {e}; stopping")),
            Err(e) => tracing::warn!(error = %e, "registering pool sizes failed; retrying next pass"),
        }
        let lost = lost_nodes(&nodes, &mut memory, now);
        let timer = metrics.pass_duration.start_timer();
        if let Err(e) = pass(&client, store.as_ref(), epoch, &config, observed, &pods, &mut memory).await {
            if let Some(e) = e.downcast_ref::<LedgerError>().filter(|e| e.is_deposed()) {
                return Err(anyhow::anyhow!("deposed: {e}; stopping"));
            }
            tracing::warn!(error = %e, "scheduling pass failed");
        }
        timer.observe_duration();
        metrics.passes.inc();
        while let Ok(pod) = deleted_rx.try_recv() {
            if let Some(uid) = pod.uid()
                && (memory.bound.contains_key(&uid) || memory.open.contains_key(&uid))
            {
                memory.gone.insert(uid, Arc::new(pod));
            }
        }
        // The audit reads the ledger twice per pod: it runs beside the
        // passes, on this pass's snapshot, one at a time.
        while audits.try_join_next().is_some() {}
        if memory.audited_at.is_none_or(|t| now - t >= config.audit_period) && audits.is_empty() {
            memory.audited_at = Some(now);
            let (store, metrics, pods, nodes, lost) = (
                store.clone(),
                metrics.clone(),
                pods.state(),
                nodes.state(),
                lost.clone(),
            );
            audits.spawn(async move {
                match audit_against_cluster(store.as_ref(), &pods, &nodes, lost, now).await {
                    Ok(report) => export_audit(&metrics, &report, now),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "auditing the ledger against the cluster failed; retrying next period"
                    ),
                }
            });
        }
        let periodic = memory.metered_at.is_none_or(|t| now - t >= config.meter_period);
        if periodic {
            let running = pods.state();
            sampler.sample(&running, now).await;
            sampler.retain_running(&running);
        }
        // Ends are closed on the pass that sees them (R9.2: within seconds);
        // running pods are accrued every meter period.
        match meter(
            &client,
            store.as_ref(),
            epoch,
            &pods,
            &lost,
            &mut memory,
            &sampler,
            &config,
            now,
            periodic,
        )
        .await
        {
            Ok(()) if periodic => memory.metered_at = Some(now),
            Ok(()) => {}
            Err(e) if e.is_deposed() => return Err(anyhow::anyhow!("deposed: {e}; stopping")),
            Err(e) => tracing::warn!(error = %e, "metering failed; retrying next period"),
        }
        metrics
            .accrual_lag
            .set(memory.metered_at.map_or(0, |t| (now - t).num_seconds().max(0)));
    }
}

/// Why the leader stops when one of its side tasks ended.
fn side_task_ended(ended: Result<(&'static str, Result<(), LedgerError>), tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok((task, Err(e))) if e.is_deposed() => anyhow::anyhow!("deposed: {e} (seen by the {task} task); stopping"),
        Ok((task, Err(e))) => anyhow::anyhow!("the {task} task failed: {e}; stopping"),
        Ok((task, Ok(()))) => anyhow::anyhow!("the {task} task ended unexpectedly; stopping"),
        Err(e) if e.is_panic() => anyhow::anyhow!("a side task panicked: {e}; stopping"),
        Err(e) => anyhow::anyhow!("a side task was cancelled: {e}; stopping"),
    }
}

/// Registers each pool's size in Spark Units whenever its ready nodes change
/// (R1.1–R1.3): the webhook's draft check, the REST API and dedicated
/// purchases (R1.5) read it from the ledger.
async fn sync_pools(
    store: &dyn LedgerStore,
    epoch: sparkcap_ledger::Epoch,
    config: &ShellConfig,
    nodes: &[crate::model::Node],
    memory: &mut Memory,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let sizes = crate::model::pool_capacities(nodes, config.policy.spark_unit_size()?, now);
    let same = |a: &PoolCapacity, b: &PoolCapacity| {
        (a.pool, a.nodes, a.cpu, a.memory, a.spark_units) == (b.pool, b.nodes, b.cpu, b.memory, b.spark_units)
    };
    for cap in &sizes {
        if !memory.pools_written.iter().any(|w| same(w, cap)) {
            store.set_pool_capacity(epoch, cap).await?;
            tracing::info!(pool = %cap.pool, nodes = cap.nodes, spark_units = cap.spark_units, "pool size registered");
        }
        config
            .metrics
            .spark_units
            .with_label_values(&[cap.pool.as_str()])
            .set(cap.spark_units);
    }
    memory.pools_written = sizes;
    Ok(())
}

/// Nodes not Ready, with when they were declared lost (their Ready
/// condition's last transition), and nodes gone from the list, since first
/// seen missing.
/// The ledger against the pods and nodes given (the reflectors' state, or
/// a fresh list for the CLI).
pub async fn audit_against_cluster(
    store: &dyn LedgerStore,
    pods: &[Arc<Pod>],
    nodes: &[Arc<Node>],
    lost: HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> sparkcap_ledger::Result<crate::audit::Report> {
    let pool_nodes = nodes
        .iter()
        .filter(|n| n.labels().contains_key(sparkcap_ledger::pool::POOL_LABEL))
        .map(|n| n.name_any())
        .collect();
    let pods = pods.iter().map(|p| Pod::clone(p)).collect();
    let facts = crate::audit::gather(store, pods, pool_nodes, lost).await?;
    Ok(crate::audit::check(&facts, now))
}

/// Sets the audit's gauges and logs what it found.
fn export_audit(metrics: &Metrics, report: &crate::audit::Report, now: DateTime<Utc>) {
    for kind in crate::audit::Kind::ALL {
        metrics
            .audit_findings
            .with_label_values(&[kind.as_str()])
            .set(report.count(kind) as i64);
    }
    metrics.audit_last_run.set(now.timestamp());
    for f in report.findings.iter().take(20) {
        tracing::warn!(finding = %f, "the ledger disagrees with the cluster");
    }
}

/// Client mode (the driver runs outside the cluster): an application's run
/// ends with its last executor. When every pod sparkcap bound for an
/// application with no driver in the cluster ends in this batch, the one
/// that ends last carries the run's facts, so the ledger records the run
/// (its profile, its job's lifecycle) as it does at a driver's end. The
/// application's pods come from the bindings, never from labels.
fn client_mode_run_ends(
    batch: &mut [AccrualRequest],
    finishing: &HashMap<String, Arc<Pod>>,
    memory: &Memory,
    sampler: &crate::usage::Sampler,
    config: &ShellConfig,
) {
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, req) in batch.iter().enumerate() {
        let p = &req.pod;
        if !req.finished || req.run.is_some() || p.role.as_deref() == Some("driver") || p.job.is_none() {
            continue;
        }
        let Some(app) = p.app_id.as_deref() else { continue };
        let key = (p.namespace.as_str(), app);
        let later = last.get(&key).is_none_or(|&j| batch[j].until <= req.until);
        if later {
            last.insert(key, i);
        }
    }
    let ends: Vec<usize> = last
        .into_iter()
        .filter(|((ns, app), _)| {
            !memory.bound.values().any(|b| {
                b.namespace == *ns
                    && b.app_id.as_deref() == Some(*app)
                    && (b.role.as_deref() == Some("driver") || !finishing.contains_key(&b.uid))
            })
        })
        .map(|(_, i)| i)
        .collect();
    for i in ends {
        let Some(pod) = finishing.get(&batch[i].pod.uid) else {
            continue;
        };
        let measured = batch[i].pod.app_id.as_deref().and_then(|a| sampler.apps.get(a));
        batch[i].run = meter::run_facts_of(pod, &batch[i].pod, config.draft_runs, measured);
    }
}

/// `sparkcap-scheduler audit --against-cluster`: lists every pod and node
/// and compares them with the ledger now. Read-only: claims no epoch.
pub async fn audit_cluster_now(client: Client, store: &dyn LedgerStore) -> anyhow::Result<crate::audit::Report> {
    let pods: Vec<Arc<Pod>> = Api::<Pod>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let nodes: Vec<Arc<Node>> = Api::<Node>::all(client)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let now = Utc::now();
    let mut memory = Memory::load(store).await?;
    let lost = lost_nodes_of(&nodes, &mut memory, now);
    Ok(audit_against_cluster(store, &pods, &nodes, lost, now).await?)
}

/// Nodes that are not Ready, or gone while pods are bound to them, with
/// when that was first seen.
fn lost_nodes_of(nodes: &[Arc<Node>], memory: &mut Memory, now: DateTime<Utc>) -> HashMap<String, DateTime<Utc>> {
    lost_nodes_in(nodes.iter().map(|n| n.as_ref()), memory, now)
}

fn lost_nodes(nodes: &Store<Node>, memory: &mut Memory, now: DateTime<Utc>) -> HashMap<String, DateTime<Utc>> {
    lost_nodes_of(&nodes.state(), memory, now)
}

fn lost_nodes_in<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    memory: &mut Memory,
    now: DateTime<Utc>,
) -> HashMap<String, DateTime<Utc>> {
    let mut lost = HashMap::new();
    let mut present = std::collections::HashSet::new();
    for n in nodes {
        present.insert(n.name_any());
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => {
                lost.insert(n.name_any(), c.last_transition_time.as_ref().map_or(now, observe::time));
            }
            None => {}
        }
    }
    // Only nodes pods are bound to matter; forget the rest.
    let wanted: std::collections::HashSet<&str> = memory.bound.values().map(|b| b.node.as_str()).collect();
    memory
        .node_missing_since
        .retain(|n, _| !present.contains(n) && wanted.contains(n.as_str()));
    for n in wanted {
        if !present.contains(n) {
            let since = *memory.node_missing_since.entry(n.to_owned()).or_insert(now);
            lost.insert(n.to_owned(), since);
        }
    }
    lost
}

/// Charges bound pods from their recorded facts: closes every pod that
/// ended (at its real end) or never started, and, when `periodic`, accrues
/// the running ones up to `now − charge lag`; all in one ledger batch. Then
/// releases the metering finalizer of every pod whose close committed.
#[allow(clippy::too_many_arguments)]
async fn meter(
    client: &Client,
    store: &dyn LedgerStore,
    epoch: sparkcap_ledger::Epoch,
    pods: &Store<Pod>,
    lost: &HashMap<String, DateTime<Utc>>,
    memory: &mut Memory,
    sampler: &crate::usage::Sampler,
    config: &ShellConfig,
    now: DateTime<Utc>,
    periodic: bool,
) -> Result<(), LedgerError> {
    let metrics = &config.metrics;
    let live: HashMap<String, Arc<Pod>> = pods.state().into_iter().filter_map(|p| Some((p.uid()?, p))).collect();
    let charge_to = now - config.charge_lag;
    let mut batch = Vec::new();
    let mut never_started = Vec::new();
    let mut finishing: HashMap<String, Arc<Pod>> = HashMap::new();
    for (uid, b) in &memory.bound {
        let (pod, gone) = match (live.get(uid), memory.gone.get(uid)) {
            (Some(p), _) => (p.clone(), false),
            (None, Some(p)) => (p.clone(), true),
            (None, None) => {
                // Gone with no end seen (its finalizer removed by hand while
                // no scheduler watched): closed where the ledger left it.
                match memory.open.get(uid) {
                    Some(last) => batch.push(meter::close_vanished(
                        last,
                        last.until,
                        memory.evicting.contains_key(uid),
                    )),
                    None => never_started.push(uid.clone()),
                }
                continue;
            }
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or(&b.node);
        let mut life = meter::life(&pod, lost.get(node).copied(), now);
        if gone {
            // Removed without an end reported: it ended when it was deleted.
            life = match life {
                meter::Life::Running { started, lost_at } => {
                    let deleted = pod.metadata.deletion_timestamp.as_ref().map(observe::time);
                    meter::Life::Ended {
                        started,
                        ended: [Some(now), deleted, lost_at]
                            .into_iter()
                            .flatten()
                            .min()
                            .unwrap_or(now)
                            .max(started),
                    }
                }
                meter::Life::NotStarted => meter::Life::NeverStarted,
                other => other,
            };
        }
        match life {
            meter::Life::NotStarted => {}
            meter::Life::NeverStarted => never_started.push(uid.clone()),
            meter::Life::Running { .. } if !periodic => {}
            _ => {
                let Some(mut req) = meter::accrual_of(b, &pod, life, charge_to) else {
                    continue;
                };
                if req.finished {
                    if memory.evicting.contains_key(uid) {
                        req.outcome = Some(sparkcap_ledger::PodOutcome::Preempted);
                    }
                    let app = req.pod.app_id.as_deref().and_then(|a| sampler.apps.get(a));
                    req.run = meter::run_facts(&pod, &req.pod, config.draft_runs, app);
                    finishing.insert(uid.clone(), pod.clone());
                } else if let Some(k) = memory.open.get(uid) {
                    // Never behind what was charged already (a lag raised since).
                    req.until = req.until.max(k.until);
                }
                batch.push(req);
            }
        }
    }
    client_mode_run_ends(&mut batch, &finishing, memory, sampler, config);
    // Pods metered by an earlier version, with no binding recorded.
    for (uid, last) in &memory.open {
        if memory.bound.contains_key(uid) {
            continue;
        }
        match live.get(uid).or_else(|| memory.gone.get(uid)) {
            Some(pod) => {
                if let Some(mut req) = meter::accrual(pod, charge_to, &last.pod)
                    && (req.finished || periodic)
                {
                    if !req.finished {
                        req.until = req.until.max(last.until);
                    }
                    batch.push(req);
                }
            }
            None => {
                let gone_at = if memory.unseen.contains(uid) { last.until } else { now };
                batch.push(meter::close_vanished(last, gone_at, memory.evicting.contains_key(uid)));
            }
        }
    }
    memory.unseen.retain(|uid| !live.contains_key(uid));
    for uid in never_started {
        store.close_binding(epoch, &uid, now).await?;
        memory.bound.remove(&uid);
        memory.gone.remove(&uid);
        memory.release.insert(uid);
    }
    if !batch.is_empty() {
        sparkcap_ledger::faults::crash_point("scheduler.meter.before_accrue");
        let outcomes = store.accrue(epoch, &batch).await?;
        sparkcap_ledger::faults::crash_point("scheduler.meter.after_accrue");
        for (req, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                AccrualOutcome::Rejected(e) => {
                    metrics.accrual_rejections.inc();
                    tracing::warn!(pod = %req.pod.name, error = %e, "ledger refused an accrual");
                }
                _ if req.finished => {
                    let uid = req.pod.uid;
                    memory.open.remove(&uid);
                    memory.bound.remove(&uid);
                    memory.gone.remove(&uid);
                    memory.release.insert(uid);
                }
                _ => {
                    memory.open.insert(req.pod.uid.clone(), req);
                }
            }
        }
    }
    memory
        .gone
        .retain(|uid, _| memory.bound.contains_key(uid) || memory.open.contains_key(uid));
    release_finalizers(client, &live, memory, now, config).await;
    Ok(())
}

/// Removes sparkcap's metering finalizer from pods whose final charge is
/// committed, and from pods that carry it but that sparkcap does not meter
/// (closed before a restart), once they ended or are being deleted. A
/// failure is retried on the next pass; `sparkcap_metering_finalizers_stuck`
/// counts pods being deleted that still wait.
async fn release_finalizers(
    client: &Client,
    live: &HashMap<String, Arc<Pod>>,
    memory: &mut Memory,
    now: DateTime<Utc>,
    config: &ShellConfig,
) {
    let mut stuck = 0;
    for (uid, pod) in live {
        if !has_metering_finalizer(pod) {
            memory.release.remove(uid);
            continue;
        }
        let tracked = memory.bound.contains_key(uid) || memory.open.contains_key(uid);
        let ended = observe::finished(pod) || pod.metadata.deletion_timestamp.is_some();
        if !(memory.release.contains(uid) || !tracked && ended) {
            if let Some(d) = pod.metadata.deletion_timestamp.as_ref().map(observe::time)
                && now - d > TimeDelta::seconds(60)
            {
                stuck += 1;
            }
            continue;
        }
        match release_finalizer(client, pod).await {
            Ok(()) => {
                memory.release.remove(uid);
            }
            Err(e) => {
                stuck += 1;
                tracing::warn!(pod = %pod.name_any(), error = %e, "removing the metering finalizer failed; retrying");
            }
        }
    }
    memory.release.retain(|uid| live.contains_key(uid));
    config.metrics.finalizers_stuck.set(stuck);
}

pub use sparkcap_ledger::binding::METERING_FINALIZER;

fn has_metering_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == METERING_FINALIZER)
}

/// Removes the metering finalizer, with the pod's resourceVersion as
/// precondition so that no other finalizer written meanwhile is lost.
async fn release_finalizer(client: &Client, pod: &Pod) -> kube::Result<()> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let keep: Vec<&String> = pod.finalizers().iter().filter(|f| *f != METERING_FINALIZER).collect();
    let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "finalizers": keep}});
    match api
        .patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs [`run`] only while this replica holds the Lease. Losing it stops
/// scheduling and metering at once and returns an error, so that the process
/// restarts as a candidate (as kube-scheduler does).
pub async fn run_elected(
    client: Client,
    store: Arc<dyn LedgerStore>,
    config: ShellConfig,
    lease: crate::leader::LeaseConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let identity = lease.identity.clone();
    let lease_api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let lease_cfg = lease.clone();
    let elector = tokio::spawn(crate::leader::elect(client.clone(), lease, tx));
    tokio::pin!(shutdown);
    let mut rx_lead = rx.clone();
    let became_leader = async move { rx_lead.wait_for(|l| *l).await.map(|_| ()) };
    tokio::select! {
        _ = &mut shutdown => { elector.abort(); return Ok(()); }
        r = became_leader => r.map_err(|_| anyhow::anyhow!("leader election stopped"))?,
    }
    tracing::info!(%identity, "leading: scheduling and metering");
    sparkcap_ledger::faults::crash_point("scheduler.leader.elected");
    let leader_gauge = config.metrics.leader.clone();
    leader_gauge.set(1);
    let mut rx_lost = rx.clone();
    let lost = async move {
        let _ = rx_lost.wait_for(|l| !*l).await;
    };
    let config = ShellConfig {
        holder: identity,
        ..config
    };
    let outcome = tokio::select! {
        r = run(client, store, config, std::future::pending()) => r,
        _ = lost => Err(anyhow::anyhow!("lost the lease; stopped scheduling and metering")),
        _ = &mut shutdown => Ok(()),
    };
    elector.abort();
    leader_gauge.set(0);
    if let Err(e) = crate::leader::release(&lease_api, &lease_cfg).await {
        tracing::warn!(error = %e, "could not release the lease; a standby takes over when it expires");
    }
    outcome
}

async fn refresh_tenants(store: &dyn LedgerStore, memory: &mut Memory, now: DateTime<Utc>) -> anyhow::Result<()> {
    let mut tenants = HashMap::new();
    for s in store.summaries(now).await? {
        tenants.insert(
            s.tenant.id.clone(),
            TenantState::from_balance(&s.balance, s.dedicated_units),
        );
    }
    memory.tenants = tenants;
    memory.ns_tenants = store
        .namespace_bindings()
        .await?
        .into_iter()
        .map(|b| (b.namespace, b.tenant))
        .collect();
    memory.tenants_at = Some(now);
    Ok(())
}

async fn pass(
    client: &Client,
    store: &dyn LedgerStore,
    epoch: sparkcap_ledger::Epoch,
    config: &ShellConfig,
    nodes: Vec<crate::model::Node>,
    pods: &Store<Pod>,
    memory: &mut Memory,
) -> anyhow::Result<()> {
    let now = Utc::now();
    if memory.tenants_at.is_none_or(|t| now - t >= config.tenants_refresh) {
        refresh_tenants(store, memory, now).await?;
    }
    let mut state = ClusterState {
        nodes,
        tenants: memory.tenants.clone(),
        reservations: memory.reservations.clone(),
        dedicated_idle_since: memory.dedicated_idle_since,
        policy: config.policy.clone(),
        ..ClusterState::default()
    };
    let index: HashMap<String, usize> = state
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let mut queue = Vec::new();
    let mut by_uid: HashMap<String, Arc<Pod>> = HashMap::new();
    memory.assumed.retain(|_, (_, until)| *until > now);
    for pod in pods.state() {
        if observe::finished(&pod) {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let node_name = spec
            .and_then(|s| s.node_name.clone())
            .or_else(|| memory.assumed.get(&uid).map(|a| a.0.clone()));
        if let Some(n) = node_name {
            if spec.and_then(|s| s.node_name.as_ref()).is_some() {
                memory.assumed.remove(&uid); // the bind is visible now
            }
            if let Some(&i) = index.get(&n) {
                let mut b = observe::bound(&pod, i);
                b.terminating |= memory.evicting.contains_key(&uid);
                // What sparkcap recorded at bind, not what the labels say now.
                if let Some(rec) = memory.bound.get(&uid) {
                    b.tenant = rec.tenant.clone();
                    b.pool = rec.pool;
                    b.opportunistic = rec.opportunistic;
                }
                state.bound.push(b);
            }
            continue;
        }
        if spec.and_then(|s| s.scheduler_name.as_deref()) != Some(SCHEDULER_NAME)
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        // Only what sparkcap's webhook admitted is placed (and so metered):
        // a pod naming sparkcap-scheduler by hand, without the labels the
        // webhook writes, would run on sparkcap's nodes uncharged.
        let why = observe::not_admitted(&pod).or_else(|| {
            // The namespace's tenant is the ledger's binding (an admin's
            // act); a label saying otherwise was not written by sparkcap.
            let ns = pod.namespace().unwrap_or_default();
            let label = pod.labels().get(observe::TENANT_LABEL).map(String::as_str);
            match memory.ns_tenants.get(&ns) {
                Some(t) if Some(t.as_str()) == label => None,
                Some(t) => Some(format!(
                    "pod {ns}/{} is labelled {}={} but sparkcap's ledger binds namespace {ns} to tenant {t}; \
                     sparkcap places it only for its namespace's tenant: recreate it without sparkcap.io/ labels",
                    pod.name_any(),
                    observe::TENANT_LABEL,
                    label.unwrap_or("")
                )),
                None => Some(format!(
                    "namespace {ns} is not bound to any tenant in sparkcap's ledger, so sparkcap places none of its \
                     pods; ask your platform admin to bind it (PATCH /api/v1/tenants/{{id}} with bind_namespaces)"
                )),
            }
        });
        if let Some(why) = why {
            warn_once(client, &pod, "NotAdmitted", why, memory, config, now).await;
            continue;
        }
        let mut gang = None;
        if pod.labels().get("spark-role").map(String::as_str) == Some("driver") {
            match memory.gangs.get(&uid) {
                Some(g) => gang = *g,
                None => {
                    let conf = match observe::driver_conf_map(&pod) {
                        Some(name) => {
                            Api::<ConfigMap>::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
                                .get_opt(&name)
                                .await?
                        }
                        None => None,
                    };
                    let age = now - pod.creation_timestamp().map_or(now, |t| observe::time(&t));
                    if conf.is_none()
                        && observe::driver_conf_map(&pod).is_some()
                        && age < GANG_CONF_WAIT
                        && !pod.annotations().contains_key("sparkcap.io/executor-instances")
                    {
                        continue; // its ConfigMap is on its way
                    }
                    match observe::gang(&pod, conf.as_ref()) {
                        Ok(g) => {
                            gang = g;
                            memory.gangs.insert(uid.clone(), gang);
                        }
                        Err(why) => {
                            // Refused alone, with the reason on the pod.
                            warn_once(client, &pod, "GangTooLarge", why, memory, config, now).await;
                            continue;
                        }
                    }
                }
            }
        }
        let mut p = observe::pending(&pod, gang, now);
        p.last_reason = memory.last_reason.get(&uid).cloned();
        p.nominated = memory.nominated.get(&uid).cloned();
        by_uid.insert(uid, pod.clone());
        queue.push(p);
    }
    // Forget what concerned pods that are gone.
    let live: std::collections::HashSet<String> = pods.state().iter().filter_map(|p| p.uid()).collect();
    memory.gangs.retain(|uid, _| live.contains(uid));
    memory.last_reason.retain(|uid, _| live.contains(uid));
    memory.nominated.retain(|uid, _| live.contains(uid));
    // Kept past the pod's disappearance (until the grace bound) so that
    // metering closes it as preempted rather than deleted.
    memory.evicting.retain(|_, until| *until > now);
    memory.dedicated_idle_since = observe_dedicated_idle(&state, now);
    state.dedicated_idle_since = memory.dedicated_idle_since;
    let metrics = &config.metrics;
    for pool in sparkcap_ledger::Pool::ALL {
        let waiting = queue.iter().filter(|p| p.pool == pool).count() as i64;
        metrics.queue_depth.with_label_values(&[pool.as_str()]).set(waiting);
    }
    if queue.is_empty() && state.reservations.is_empty() {
        return Ok(());
    }
    let pool_of: HashMap<String, sparkcap_ledger::Pool> = queue.iter().map(|p| (p.uid.clone(), p.pool)).collect();
    let all_pods: HashMap<String, Arc<Pod>> = pods
        .state()
        .into_iter()
        .map(|p| (p.uid().unwrap_or_default(), p))
        .collect();
    let actions = plan(&state, &queue, now);
    // The money facts of this pass's binds go to the ledger, in one write,
    // before any binding: no bound pod can lack its row, and none is ever
    // read again from the pod's labels.
    let records: Vec<PodBinding> = actions
        .iter()
        .filter_map(|a| {
            let Action::Bind {
                pod,
                node,
                opportunistic,
            } = a
            else {
                return None;
            };
            let p = by_uid.get(pod)?;
            let tenant = memory.ns_tenants.get(&p.namespace().unwrap_or_default())?;
            let pool = pool_of.get(pod).copied()?;
            meter::binding_for(p, tenant.clone(), pool, *opportunistic, node, now)
        })
        .collect();
    let mut recorded: HashMap<String, PodBinding> = HashMap::new();
    if !records.is_empty() {
        let outcomes = store.record_bindings(epoch, &records).await?;
        for (record, outcome) in records.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    recorded.insert(record.uid.clone(), record);
                }
                Err(e) => {
                    metrics.bind_errors.inc();
                    tracing::warn!(pod = %record.name, error = %e, "recording the binding failed; will retry");
                }
            }
        }
    }
    // Binds go out side by side, as kube-scheduler's binding cycles do: each
    // is a call or two to the API server, and the pass's decisions do not
    // depend on their answers. Every pod is in `memory.bound` (metered by its
    // recorded row) before its binding is sent.
    let mut binds = Vec::new();
    let mut rest = Vec::new();
    for action in actions {
        match action {
            Action::Bind {
                pod,
                node,
                opportunistic,
            } => {
                let (Some(p), Some(record)) = (by_uid.get(&pod), recorded.remove(&pod)) else {
                    continue;
                };
                memory.bound.insert(pod.clone(), record);
                binds.push((pod, p.clone(), node, opportunistic));
            }
            other => rest.push(other),
        }
    }
    let results: Vec<_> = futures::stream::iter(binds)
        .map(|(pod, p, node, opportunistic)| async move {
            let r = bind(client, &p, &node, opportunistic).await;
            (pod, p, node, opportunistic, r)
        })
        .buffer_unordered(BINDS_IN_FLIGHT)
        .collect()
        .await;
    for (pod, p, node, opportunistic, r) in results {
        match r {
            Ok(()) => {
                sparkcap_ledger::faults::crash_point("scheduler.bind.after");
                let pool = pool_of.get(&pod).map_or("unknown", |p| p.as_str());
                let borrowed = if opportunistic { "true" } else { "false" };
                metrics.binds.with_label_values(&[pool, borrowed]).inc();
                memory.assumed.insert(pod.clone(), (node, now + TimeDelta::seconds(30)));
                memory.last_reason.remove(&pod);
                memory.nominated.remove(&pod);
            }
            Err(e) => {
                metrics.bind_errors.inc();
                tracing::warn!(pod = %p.name_any(), error = %e, "bind failed; will retry");
            }
        }
    }
    for action in rest {
        match action {
            Action::Bind { .. } => {} // sent above
            Action::Evict { pod, grace_seconds, .. } => {
                if let Some(p) = all_pods.get(&pod) {
                    match evict(client, p, grace_seconds).await {
                        Ok(()) => {
                            sparkcap_ledger::faults::crash_point("scheduler.evict.after");
                            memory
                                .evicting
                                .insert(pod.clone(), now + TimeDelta::seconds(grace_seconds + 30));
                            let tenant = p.labels().get(observe::TENANT_LABEL).cloned().unwrap_or_default();
                            metrics.preemptions.with_label_values(&[tenant.as_str()]).inc();
                        }
                        Err(e) => tracing::warn!(pod = %p.name_any(), error = %e, "eviction failed"),
                    }
                }
            }
            Action::Reserve(r) => {
                memory.reservations.retain(|x| x.app != r.app);
                memory.reservations.push(r);
            }
            Action::Release { app } => memory.reservations.retain(|x| x.app != app),
            Action::Nominate { pod, node, until } => {
                memory.nominated.insert(pod, (node, until));
            }
            Action::Event {
                pod, reason, message, ..
            } => {
                let Some(p) = by_uid.get(&pod) else { continue };
                match event(client, p, reason, &message, now).await {
                    Ok(()) => {
                        metrics.events.with_label_values(&[reason]).inc();
                        memory.last_reason.insert(pod, message);
                    }
                    Err(e) => tracing::warn!(error = %e, "recording an event failed"),
                }
            }
        }
    }
    Ok(())
}

/// Bindings sent at once, at most: kube-scheduler's default parallelism
/// (16), which keeps the API server's in-flight limit far away.
const BINDS_IN_FLIGHT: usize = 16;

/// Records a Warning Event `reason` on `pod` unless the same message was
/// the last one recorded for it (a refusal repeats every pass).
async fn warn_once(
    client: &Client,
    pod: &Pod,
    reason: &'static str,
    why: String,
    memory: &mut Memory,
    config: &ShellConfig,
    now: DateTime<Utc>,
) {
    let uid = pod.uid().unwrap_or_default();
    if memory.last_reason.get(&uid) == Some(&why) {
        return;
    }
    match event(client, pod, reason, &why, now).await {
        Ok(()) => {
            config.metrics.events.with_label_values(&[reason]).inc();
            memory.last_reason.insert(uid, why);
        }
        Err(e) => tracing::warn!(error = %e, "recording an event failed"),
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str, opportunistic: bool) -> kube::Result<()> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    // The metering finalizer keeps the pod's object until its final charge
    // is committed, however it ends: the mutating webhook adds it, and this
    // adds it when the mutation was skipped. The label tells people a
    // placement is borrowed (the ledger's binding, not the label, decides
    // the charge).
    if !has_metering_finalizer(pod) || opportunistic {
        let mut finalizers: Vec<String> = pod.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == METERING_FINALIZER) {
            finalizers.push(METERING_FINALIZER.to_owned());
        }
        let mut meta = json!({"resourceVersion": pod.resource_version(), "finalizers": finalizers});
        if opportunistic {
            meta["labels"] = json!({observe::OPPORTUNISTIC_LABEL: "true"});
        }
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": meta})))
            .await?;
        sparkcap_ledger::faults::crash_point("scheduler.bind.between_label_and_binding");
    }
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    match api
        .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => Ok(()),
        // Ambiguous or lost race: what the server holds decides.
        Err(e) => match api.get_opt(&name).await? {
            Some(now) if now.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) => Ok(()),
            _ => Err(e),
        },
    }
}

/// Evicts through the Eviction API. The body is built by hand: kube 5's
/// `Api::evict` sends its options as `delete_options`, which the API server
/// ignores, so the grace period would be lost.
async fn evict(client: &Client, pod: &Pod, grace_seconds: i64) -> kube::Result<()> {
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod.name_any(), "namespace": pod.namespace()},
        "deleteOptions": {"gracePeriodSeconds": grace_seconds, "preconditions": {"uid": pod.uid()}}
    });
    api.create_subresource::<_, serde_json::Value>("eviction", &pod.name_any(), &PostParams::default(), &body)
        .await
        .map(|_| ())
}

async fn event(client: &Client, pod: &Pod, reason: &str, message: &str, now: DateTime<Utc>) -> kube::Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let involved =
        json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()});
    let kind = if reason == "Preempting" { "Normal" } else { "Warning" };
    record_event(client, &ns, involved, &pod.name_any(), reason, message, kind, now).await
}

/// Records a core/v1 Event about `involved` in `namespace`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_event(
    client: &Client,
    namespace: &str,
    involved: serde_json::Value,
    name_prefix: &str,
    reason: &str,
    message: &str,
    kind: &str,
    now: DateTime<Utc>,
) -> kube::Result<()> {
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": format!("{name_prefix}."), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        // Events carry at most 1 KiB of message.
        "message": message.chars().take(1024).collect::<String>(),
        "type": kind,
        "source": {"component": SCHEDULER_NAME},
        "reportingComponent": SCHEDULER_NAME,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1
    }))
    .expect("a valid Event");
    Api::<Event>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &ev)
        .await
        .map(|_| ())
}
