//! The simulation loop: virtual time over a trace, driving the production
//! decision code — the webhook's `admit` for every pod Spark creates, the
//! scheduler's `plan` for every pass, the ledger's accruals from the pods'
//! own timestamps — with a simulated kubelet and Spark driver around them.
//! Time jumps from event to event; nothing sleeps.

use crate::meter;
use crate::model::{BoundPod, ClusterState, PendingPod, Policy, Resources, Role, TenantState};
use crate::observe;
use crate::plan::{Action, observe_dedicated_idle, plan};
use crate::sim::report::{Recorder, Report};
use crate::sim::spark_pods::AppPods;
use crate::sim::trace::{DurationDist, Trace};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde_json::{Value, json};
use sparkcap_core::admit::{Endpoint, admit};
use sparkcap_core::review::{Decision, Gvr, Operation, Request};
use sparkcap_core::view::{RunningApp, Settings as WebhookSettings, TenantView};
use sparkcap_ledger::{
    AccrualOutcome, Epoch, LedgerError, LedgerStore, NewTenant, Pool, PurchaseRequest, SparkUnitSize, TenantId,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The trace cannot be set up as given.
    #[error("{0}")]
    Setup(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed of every random draw (arrivals, durations).
    pub seed: u64,
    /// What the trace is (file name or "built-in default day"), for the report.
    pub origin: String,
    /// Print progress on stderr.
    pub progress: bool,
    /// Lend idle dedicated capacity (R8.2); off for `--no-lending`.
    pub lending: bool,
}

/// Virtual seconds since the trace start.
type Secs = i64;
/// Simulator pod id.
type PodId = u64;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive { tenant: usize, job: usize },
    Started(PodId),
    RequestExecutors { run: usize, count: i64 },
    Finish { run: usize, generation: u64 },
    Gone(PodId),
    Purchase { tenant: usize, purchase: usize },
    Nodes(usize),
    Meter,
    Refresh,
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Waiting,
    Running,
    Done,
}

/// One run of a job: a Spark application.
#[derive(Debug)]
struct Run {
    tenant: usize,
    job: usize,
    app_id: String,
    submitted: Secs,
    driver: PodId,
    driver_uid: String,
    driver_name: String,
    executors: (i64, i64, i64),
    next_exec: i64,
    running_executors: i64,
    /// Work left, in executor-seconds (seconds for a driver-only job).
    work_left: i64,
    rate: i64,
    last_progress: Secs,
    generation: u64,
    live_executors: BTreeSet<PodId>,
    state: RunState,
}

/// A pod the simulated cluster holds.
#[derive(Debug)]
struct SimPod {
    pod: Pod,
    run: usize,
    role: Role,
    tenant: usize,
    cpu: i64,
    opportunistic: bool,
    node: Option<usize>,
    started: Option<Secs>,
    /// What was recorded at bind: the meter charges by it.
    binding: Option<sparkcap_ledger::PodBinding>,
    /// Told to stop (evicted, or its application ended): progress no longer counts.
    ending: bool,
    evicted: bool,
}

struct Sim<'a> {
    trace: &'a Trace,
    store: &'a dyn LedgerStore,
    epoch: Epoch,
    start: DateTime<Utc>,
    end: Secs,
    now: Secs,
    rng: StdRng,
    heap: BinaryHeap<Reverse<(Secs, u64, Ev)>>,
    seq: u64,
    state: ClusterState,
    node_used: Vec<Resources>,
    node_index: HashMap<String, usize>,
    bound_pos: HashMap<PodId, usize>,
    queue: Vec<PendingPod>,
    queue_pos: HashMap<PodId, usize>,
    pods: BTreeMap<PodId, SimPod>,
    closing: Vec<PodId>,
    runs: Vec<Run>,
    view: TenantView,
    namespaces: Vec<String>,
    tenant_index: HashMap<TenantId, usize>,
    previous_runs: HashMap<TenantId, HashMap<String, i64>>,
    dirty: bool,
    /// Dedicated capacity or its use changed: its idle share must be looked at again.
    dedicated_changed: bool,
    next_wake: Secs,
    next_pod: PodId,
    rec: Recorder,
    progress: bool,
    wall: std::time::Instant,
}

fn uid(id: PodId) -> String {
    format!("sim-{id:08}")
}

fn pod_id(uid: &str) -> PodId {
    uid.strip_prefix("sim-")
        .and_then(|n| n.parse().ok())
        .expect("a simulator uid")
}

fn k8s_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).expect("a time within jiff's range"))
}

/// Runs `trace` over `store` (which must hold no tenants yet).
pub async fn run(trace: &Trace, store: &dyn LedgerStore, options: &Options) -> Result<Report, SimError> {
    let mut sim = Sim::setup(trace, store, options).await?;
    sim.run().await?;
    sim.finish(options).await
}

impl<'a> Sim<'a> {
    async fn setup(trace: &'a Trace, store: &'a dyn LedgerStore, options: &Options) -> Result<Self, SimError> {
        if let Some(t) = store.tenants().await?.first() {
            return Err(SimError::Setup(format!(
                "the ledger already holds tenants (e.g. {}); simulate needs an empty database — create one \
                 (createdb sparkcap_sim) and pass its URL",
                t.id
            )));
        }
        let epoch = store.claim_epoch("sparkcap-simulate").await?;
        let start = trace.start;
        let unit = SparkUnitSize::new(
            sparkcap_ledger::Millicores(trace.spark_unit.cpu.0),
            sparkcap_ledger::Bytes(trace.spark_unit.memory.0),
        )?;
        let policy = Policy {
            spark_unit: Resources {
                cpu: trace.spark_unit.cpu.0,
                memory: trace.spark_unit.memory.0,
                pods: 0,
            },
            eviction_grace_seconds: trace.settings.eviction_grace.0,
            // Idle above 100 % never happens: nothing is lent.
            lend_idle_permille: if options.lending {
                Policy::default().lend_idle_permille
            } else {
                1000
            },
            ..Policy::default()
        };
        let settings = WebhookSettings {
            draft_runs: trace.settings.draft_runs,
            stale_after: TimeDelta::seconds(trace.settings.ledger_refresh.0 + 1),
            spark_unit: unit,
            ..WebhookSettings::default()
        };
        let mut sim = Sim {
            trace,
            store,
            epoch,
            start,
            end: trace.duration.0,
            now: 0,
            rng: StdRng::seed_from_u64(options.seed ^ 0x05ee_d0f5_ca1e),
            heap: BinaryHeap::new(),
            seq: 0,
            state: ClusterState {
                policy,
                ..ClusterState::default()
            },
            node_used: Vec::new(),
            node_index: HashMap::new(),
            bound_pos: HashMap::new(),
            queue: Vec::new(),
            queue_pos: HashMap::new(),
            pods: BTreeMap::new(),
            closing: Vec::new(),
            runs: Vec::new(),
            view: TenantView::new(settings),
            namespaces: Vec::new(),
            tenant_index: HashMap::new(),
            previous_runs: HashMap::new(),
            dirty: false,
            dedicated_changed: true,
            next_wake: Secs::MAX,
            next_pod: 1,
            rec: Recorder::new(trace),
            progress: options.progress,
            wall: std::time::Instant::now(),
        };
        for pool in Pool::ALL {
            for (g, group) in trace.pools.of(pool).iter().enumerate() {
                for k in 0..group.count {
                    sim.add_node(
                        pool,
                        &format!("{pool}-{g}-{k:03}"),
                        group.cpu.0,
                        group.memory.0,
                        group.pods,
                    );
                }
            }
        }
        sim.register_pools().await?;
        let mut namespaces = HashMap::new();
        for (i, t) in trace.tenants.iter().enumerate() {
            let ns = format!("tenant-{}", t.id);
            store
                .create_tenant(NewTenant::new(t.id.clone(), String::new()), start)
                .await?;
            store.bind_namespace(&ns, &t.id).await?;
            namespaces.insert(ns.clone(), Some(t.id.to_string()));
            sim.namespaces.push(ns);
            sim.tenant_index.insert(t.id.clone(), i);
            let prev: HashMap<String, i64> = t
                .jobs
                .iter()
                .filter(|j| j.previous_runs > 0)
                .map(|j| (j.name.clone(), j.previous_runs))
                .collect();
            sim.previous_runs.insert(t.id.clone(), prev);
            for (p, purchase) in t.purchases.iter().enumerate() {
                if purchase.at.0 == 0 {
                    sim.purchase(i, p).await?;
                } else {
                    sim.push(purchase.at.0, Ev::Purchase { tenant: i, purchase: p });
                }
            }
        }
        sim.view.namespaces = Arc::new(namespaces);
        for (i, e) in trace.events.iter().enumerate() {
            sim.push(e.at.0, Ev::Nodes(i));
        }
        sim.plan_arrivals();
        sim.refresh().await?;
        let s = &trace.settings;
        sim.push(s.meter_every.0, Ev::Meter);
        sim.push(s.ledger_refresh.0, Ev::Refresh);
        sim.push(0, Ev::Sample);
        Ok(sim)
    }

    fn at(&self, t: Secs) -> DateTime<Utc> {
        self.start + TimeDelta::seconds(t)
    }

    fn push(&mut self, t: Secs, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    fn add_node(&mut self, pool: Pool, name: &str, cpu: i64, memory: i64, pods: i64) {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"sparkcap.io/pool": pool.as_str(), "kubernetes.io/hostname": name}},
            "spec": {"taints": [{"key": "sparkcap.io/pool", "value": pool.as_str(), "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": format!("{cpu}m"), "memory": memory.to_string(), "pods": pods.to_string()},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("a valid Node");
        self.node_index.insert(name.to_string(), self.state.nodes.len());
        self.state.nodes.push(observe::node(&node));
        self.node_used.push(Resources::default());
    }

    /// Registers pool sizes in the ledger, as the scheduler does on node changes.
    async fn register_pools(&mut self) -> Result<(), SimError> {
        let now = self.at(self.now);
        let caps = crate::model::pool_capacities(&self.state.nodes, self.view.settings.spark_unit, now);
        for cap in &caps {
            self.store.set_pool_capacity(self.epoch, cap).await?;
        }
        self.rec.pools(&caps);
        Ok(())
    }

    async fn purchase(&mut self, tenant: usize, p: usize) -> Result<(), SimError> {
        let t = &self.trace.tenants[tenant];
        let spec = &t.purchases[p];
        let now = self.at(self.now);
        let request = PurchaseRequest {
            tenant: t.id.clone(),
            kind: spec.kind,
            quantity: spec.quantity,
            period: spec.period,
            valid_from: Some(now),
            valid_until: None,
            idempotency_key: format!("simulate-{}-{p}", t.id),
        };
        self.store.record_purchase(&request, now).await.map_err(|e| {
            SimError::Setup(format!(
                "tenant {}: purchase {} ({} {}) refused by the ledger: {e}",
                t.id,
                p + 1,
                spec.quantity,
                spec.kind.as_str()
            ))
        })?;
        Ok(())
    }

    /// Every job's arrivals over the trace: cron runs, or a Poisson process
    /// shaped by its daily profile (thinning).
    fn plan_arrivals(&mut self) {
        let end = self.trace.end();
        for (ti, t) in self.trace.tenants.iter().enumerate() {
            for (ji, j) in t.jobs.iter().enumerate() {
                if let Some(s) = &j.schedule {
                    let from = self.start - TimeDelta::seconds(1);
                    for at in s.schedule.runs_between(from, end, usize::MAX) {
                        let secs = (at - self.start).num_seconds();
                        self.seq += 1;
                        self.heap
                            .push(Reverse((secs, self.seq, Ev::Arrive { tenant: ti, job: ji })));
                    }
                } else if let Some(a) = j.arrivals {
                    let rate = a.per_hour / 3600.0;
                    let mut t = 0.0f64;
                    loop {
                        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
                        t += -u.ln() / rate;
                        if t >= self.end as f64 {
                            break;
                        }
                        let secs = t as Secs;
                        let of_day = (self.start + TimeDelta::seconds(secs)).timestamp().rem_euclid(86_400);
                        if self.rng.random::<f64>() < a.profile.factor(of_day) {
                            self.seq += 1;
                            self.heap
                                .push(Reverse((secs, self.seq, Ev::Arrive { tenant: ti, job: ji })));
                        }
                    }
                }
            }
        }
    }

    async fn run(&mut self) -> Result<(), SimError> {
        let mut next_progress = 3600;
        loop {
            let next_event = self.heap.peek().map_or(Secs::MAX, |Reverse((t, _, _))| *t);
            let t = next_event.min(self.next_wake);
            if t > self.end {
                break;
            }
            self.advance(t);
            while let Some(Reverse((at, _, _))) = self.heap.peek() {
                if *at != t {
                    break;
                }
                let Some(Reverse((_, _, ev))) = self.heap.pop() else {
                    break;
                };
                self.handle(ev).await?;
            }
            if std::mem::take(&mut self.dedicated_changed) {
                let now = self.at(self.now);
                self.state.dedicated_idle_since = observe_dedicated_idle(&self.state, now);
            }
            if self.dirty || self.now >= self.next_wake {
                self.pass();
            }
            if self.progress && self.now >= next_progress {
                eprintln!(
                    "simulate: {:>3}h of {}h virtual, {} runs submitted, {} pending pods, {:.1} s",
                    self.now / 3600,
                    (self.end + 3599) / 3600,
                    self.runs.len(),
                    self.queue.len(),
                    self.wall.elapsed().as_secs_f64()
                );
                next_progress += 3600;
            }
        }
        self.advance(self.end);
        self.meter().await
    }

    /// Moves the clock, integrating what the report averages over time.
    fn advance(&mut self, t: Secs) {
        if t > self.now {
            self.rec.integrate(t - self.now);
            self.now = t;
        }
    }

    async fn handle(&mut self, ev: Ev) -> Result<(), SimError> {
        let s = &self.trace.settings;
        match ev {
            Ev::Arrive { tenant, job } => self.submit(tenant, job),
            Ev::Started(id) => self.started(id),
            Ev::RequestExecutors { run, count } => {
                for _ in 0..count {
                    self.create_executor(run);
                }
            }
            Ev::Finish { run, generation } => {
                if self.runs[run].generation == generation && self.runs[run].state == RunState::Running {
                    self.end_run(run, true);
                }
            }
            Ev::Gone(id) => self.gone(id),
            Ev::Purchase { tenant, purchase } => {
                self.purchase(tenant, purchase).await?;
                self.refresh().await?;
            }
            Ev::Nodes(i) => self.node_event(i).await?,
            Ev::Meter => {
                self.meter().await?;
                let next = self.now + s.meter_every.0;
                self.push(next, Ev::Meter);
            }
            Ev::Refresh => {
                self.refresh().await?;
                let next = self.now + s.ledger_refresh.0;
                self.push(next, Ev::Refresh);
            }
            Ev::Sample => {
                self.sample();
                let next = self.now + s.sample_every.0;
                self.push(next, Ev::Sample);
            }
        }
        Ok(())
    }

    /// Reloads balances and entitlements as the webhook's and scheduler's
    /// ledger refresh do.
    async fn refresh(&mut self) -> Result<(), SimError> {
        let now = self.at(self.now);
        let slice = self.view.settings.slices.slice;
        let mut facts = sparkcap_core::facts::load_ledger(self.store, now, slice).await?;
        let mut tenants = HashMap::new();
        for (id, f) in &mut facts.tenants {
            // Jobs that ran often enough before the simulated day are out of draft.
            if let Some(prev) = self.previous_runs.get(id) {
                for (job, n) in prev {
                    if *n >= self.view.settings.draft_runs {
                        f.promoted.insert(job.clone());
                    }
                }
            }
            tenants.insert(
                id.clone(),
                TenantState::from_balance(&f.balance, f.dedicated_units(now)),
            );
        }
        if tenants != self.state.tenants {
            self.state.tenants = tenants;
            self.dirty = true;
        }
        self.rec.balances(&facts);
        self.view.ledger = Arc::new(facts);
        self.view.ledger_fresh_at = Some(now);
        Ok(())
    }

    /// Sends a pod through the webhook's mutate and validate endpoints and
    /// returns what the API server would store, or the refusal.
    fn admit(&mut self, object: Value, namespace: &str) -> Result<Pod, String> {
        let now = self.at(self.now);
        let mut request = Request {
            uid: object["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
            resource: Gvr {
                group: String::new(),
                version: "v1".into(),
                resource: "pods".into(),
            },
            sub_resource: None,
            namespace: Some(namespace.to_string()),
            name: object["metadata"]["name"].as_str().map(str::to_string),
            operation: Operation::Create,
            object: Some(object),
            old_object: None,
            dry_run: None,
            user_info: Default::default(),
        };
        self.rec.admission_reviews += 2;
        if let Decision::Allow { patch, .. } = admit(Endpoint::Mutate, &request, &self.view, now)
            && !patch.is_empty()
        {
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(patch)).map_err(|e| format!("webhook patch unreadable: {e}"))?;
            let obj = request.object.as_mut().expect("set above");
            json_patch::patch(obj, &patch).map_err(|e| format!("webhook patch does not apply: {e}"))?;
        }
        match admit(Endpoint::Validate, &request, &self.view, now) {
            Decision::Deny(d) => Err(d.message),
            Decision::Allow { .. } => serde_json::from_value(request.object.take().expect("set above"))
                .map_err(|e| format!("admitted pod unreadable: {e}")),
        }
    }

    fn new_pod_id(&mut self) -> PodId {
        let id = self.next_pod;
        self.next_pod += 1;
        id
    }

    fn sample_duration(&mut self, d: DurationDist) -> i64 {
        let secs = match d {
            DurationDist::Fixed(f) => f.0 as f64,
            DurationDist::Uniform { min, max } => self.rng.random_range(min.0 as f64..=max.0 as f64),
            DurationDist::LogNormal { median, p95 } => {
                // ln X ~ N(mu, sigma): median = e^mu, p95 = e^(mu + 1.645 sigma).
                let mu = (median.0.max(1) as f64).ln();
                let sigma = ((p95.0.max(1) as f64).ln() - mu) / 1.644_853_6;
                LogNormal::new(mu, sigma.max(1e-9))
                    .expect("finite parameters")
                    .sample(&mut self.rng)
            }
        };
        (secs.round() as i64).clamp(1, 366 * 86_400)
    }

    /// A job run is submitted: spark-submit creates its driver pod.
    fn submit(&mut self, tenant: usize, job: usize) {
        let spec = &self.trace.tenants[tenant].jobs[job];
        let run = self.runs.len();
        let app_id = format!("spark-{:032x}", (run as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
        let executors = spec
            .executors
            .map_or((0, 1000, 1 << 30), |e| (e.count, e.cpu.0, e.memory.0));
        let duration = self.sample_duration(spec.duration);
        let id = self.new_pod_id();
        let namespace = self.namespaces[tenant].clone();
        let app = AppPods {
            namespace: &namespace,
            job: &spec.name,
            app_id: &app_id,
            driver: (spec.driver.cpu.0, spec.driver.memory.0),
            executors,
        };
        let created = self.at(self.now).to_rfc3339_opts(SecondsFormat::Secs, true);
        let object = app.driver_pod(&uid(id), &created);
        let conf = app.conf_map();
        let driver_name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        self.rec.submitted(tenant);
        self.runs.push(Run {
            tenant,
            job,
            app_id: app_id.clone(),
            submitted: self.now,
            driver: id,
            driver_uid: uid(id),
            driver_name,
            executors,
            next_exec: 1,
            running_executors: 0,
            work_left: duration * executors.0.max(1),
            rate: 0,
            last_progress: self.now,
            generation: 0,
            live_executors: BTreeSet::new(),
            state: RunState::Waiting,
        });
        match self.admit(object, &namespace) {
            Err(message) => {
                self.rec.denied(tenant, &message);
                self.runs[run].state = RunState::Done;
            }
            Ok(pod) => {
                // The simulator's traffic is generated, never over the bound.
                let gang = observe::gang(&pod, Some(&conf)).unwrap_or_default();
                Arc::make_mut(&mut self.view.apps).insert(
                    (namespace, app_id),
                    RunningApp {
                        pool: observe::pool(&pod),
                        job: pod.labels().get(sparkcap_core::spark::JOB_LABEL).cloned(),
                        pods: 1,
                    },
                );
                self.enqueue(id, pod, run, Role::Driver, gang);
            }
        }
    }

    /// The driver asks for an executor; the webhook decides.
    fn create_executor(&mut self, run: usize) {
        let r = &self.runs[run];
        if r.state != RunState::Running {
            return;
        }
        let spec = &self.trace.tenants[r.tenant].jobs[r.job];
        let namespace = self.namespaces[r.tenant].clone();
        let n = r.next_exec;
        let id = self.next_pod;
        let app = AppPods {
            namespace: &namespace,
            job: &spec.name,
            app_id: &r.app_id,
            driver: (spec.driver.cpu.0, spec.driver.memory.0),
            executors: r.executors,
        };
        let created = self.at(self.now).to_rfc3339_opts(SecondsFormat::Secs, true);
        let object = app.executor_pod(n, &uid(id), &created, &r.driver_uid, &r.driver_name);
        let tenant = r.tenant;
        self.next_pod += 1;
        self.runs[run].next_exec += 1;
        match self.admit(object, &namespace) {
            Err(message) => self.rec.executor_denied(tenant, &message),
            Ok(pod) => {
                self.runs[run].live_executors.insert(id);
                self.enqueue(id, pod, run, Role::Executor, None);
            }
        }
    }

    fn enqueue(&mut self, id: PodId, pod: Pod, run: usize, role: Role, gang: Option<crate::model::GangSpec>) {
        let pending = observe::pending(&pod, gang, self.at(self.now));
        let tenant = self.runs[run].tenant;
        self.pods.insert(
            id,
            SimPod {
                cpu: pending.requests.cpu,
                pod,
                run,
                role,
                tenant,
                opportunistic: false,
                node: None,
                started: None,
                binding: None,
                ending: false,
                evicted: false,
            },
        );
        self.queue_pos.insert(id, self.queue.len());
        self.queue.push(pending);
        self.dirty = true;
    }

    fn dequeue(&mut self, id: PodId) -> Option<PendingPod> {
        let i = self.queue_pos.remove(&id)?;
        let p = self.queue.swap_remove(i);
        if let Some(moved) = self.queue.get(i) {
            self.queue_pos.insert(pod_id(&moved.uid), i);
        }
        Some(p)
    }

    /// One scheduling pass: the production `plan`, its actions carried out.
    fn pass(&mut self) {
        self.dirty = false;
        let now = self.at(self.now);
        if self.queue.is_empty() && self.state.reservations.is_empty() {
            self.next_wake = Secs::MAX;
            return;
        }
        self.rec.plan_passes += 1;
        let actions = plan(&self.state, &self.queue, now);
        for action in actions {
            match action {
                Action::Bind {
                    pod,
                    node,
                    opportunistic,
                } => self.bind(pod_id(&pod), &node, opportunistic),
                Action::Evict {
                    pod,
                    grace_seconds,
                    for_pod,
                    ..
                } => self.evict(pod_id(&pod), grace_seconds, pod_id(&for_pod)),
                Action::Reserve(r) => {
                    self.state.reservations.retain(|x| x.app != r.app);
                    self.state.reservations.push(r);
                }
                Action::Release { app } => self.state.reservations.retain(|x| x.app != app),
                Action::Nominate { pod, node, until } => {
                    if let Some(&i) = self.queue_pos.get(&pod_id(&pod)) {
                        self.queue[i].nominated = Some((node, until));
                    }
                }
                Action::Event {
                    pod, reason, message, ..
                } => {
                    self.rec.event(reason);
                    if let Some(&i) = self.queue_pos.get(&pod_id(&pod)) {
                        self.queue[i].last_reason = Some(message);
                    }
                }
            }
        }
        // Plans change with time alone only when held room or a nomination
        // lapses, or lending starts; otherwise only events change them.
        let mut wake = self.now + 60;
        let secs = |t: DateTime<Utc>| (t - self.start).num_seconds();
        for r in &self.state.reservations {
            wake = wake.min(secs(r.until));
        }
        for p in &self.queue {
            if let Some((_, until)) = &p.nominated {
                wake = wake.min(secs(*until));
            }
        }
        if let Some(since) = self.state.dedicated_idle_since {
            let lend = secs(since + self.state.policy.lend_after);
            if lend > self.now {
                wake = wake.min(lend);
            }
        }
        self.next_wake = wake.max(self.now + 1);
    }

    fn bind(&mut self, id: PodId, node_name: &str, opportunistic: bool) {
        let Some(pending) = self.dequeue(id) else { return };
        let Some(&node) = self.node_index.get(node_name) else {
            return;
        };
        let used = self.node_used[node].plus(&pending.requests);
        if !self.state.nodes[node].allocatable.fits(&used) || !self.state.nodes[node].schedulable {
            self.rec.overcommitted_binds += 1;
        }
        self.node_used[node] = used;
        let sim_pod = self.pods.get_mut(&id).expect("a queued pod exists");
        sim_pod.node = Some(node);
        sim_pod.opportunistic = opportunistic;
        if opportunistic {
            sim_pod
                .pod
                .metadata
                .labels
                .get_or_insert_default()
                .insert(observe::OPPORTUNISTIC_LABEL.into(), "true".into());
        }
        if let Some(spec) = sim_pod.pod.spec.as_mut() {
            spec.node_name = Some(node_name.to_string());
        }
        let pool = pending.pool;
        sim_pod.binding = meter::binding_for(
            &sim_pod.pod,
            pending.tenant.clone(),
            pool,
            opportunistic,
            node_name,
            self.start + TimeDelta::seconds(self.now),
        );
        let (tenant, role, run) = (sim_pod.tenant, sim_pod.role, sim_pod.run);
        self.dedicated_changed |= pool == Pool::Dedicated || opportunistic;
        self.rec.bound(pool, pending.requests.cpu, opportunistic);
        if role == Role::Driver {
            let r = &mut self.runs[run];
            r.state = RunState::Running;
            self.rec.driver_waited(tenant, self.now - r.submitted);
            self.rec.running_runs(1);
        }
        self.rec.demand_met(&pending.uid, self.now);
        self.bound_pos.insert(id, self.state.bound.len());
        self.state.bound.push(BoundPod {
            uid: pending.uid,
            name: pending.name,
            tenant: pending.tenant,
            pool,
            role,
            app: pending.app,
            node,
            requests: pending.requests,
            opportunistic,
            bound_at: self.at(self.now),
            terminating: false,
        });
        let startup = self.trace.settings.pod_startup.0;
        self.push(self.now + startup, Ev::Started(id));
    }

    fn started(&mut self, id: PodId) {
        let now = self.at(self.now);
        let Some(p) = self.pods.get_mut(&id) else { return };
        if p.ending || p.node.is_none() {
            return;
        }
        p.started = Some(self.now);
        p.pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            start_time: Some(k8s_time(now)),
            ..PodStatus::default()
        });
        let (role, run) = (p.role, p.run);
        match role {
            Role::Driver => {
                let count = self.runs[run].executors.0;
                if count > 0 {
                    let delay = self.trace.settings.executor_request_delay.0;
                    self.push(self.now + delay, Ev::RequestExecutors { run, count });
                    let r = &self.runs[run];
                    let extra = self.trace.tenants[r.tenant].jobs[r.job]
                        .executors
                        .and_then(|e| e.max)
                        .map_or(0, |m| m - count);
                    if extra > 0 {
                        self.push(self.now + delay + 60, Ev::RequestExecutors { run, count: extra });
                    }
                } else {
                    self.progress(run);
                }
            }
            Role::Executor => {
                self.runs[run].running_executors += 1;
                self.progress(run);
            }
        }
    }

    /// Moves a run's work forward at its old rate and reschedules its end at the new one.
    fn progress(&mut self, run: usize) {
        let now = self.now;
        let r = &mut self.runs[run];
        r.work_left -= r.rate * (now - r.last_progress);
        r.last_progress = now;
        r.rate = if r.executors.0 == 0 { 1 } else { r.running_executors };
        r.generation += 1;
        if r.rate > 0 && r.state == RunState::Running {
            let at = now + (r.work_left.max(0) + r.rate - 1) / r.rate;
            let generation = r.generation;
            self.push(at.max(now), Ev::Finish { run, generation });
        }
    }

    /// A run ends: its driver exits (or died), and it deletes its executors.
    fn end_run(&mut self, run: usize, succeeded: bool) {
        let r = &mut self.runs[run];
        r.state = RunState::Done;
        let (tenant, job, submitted, driver) = (r.tenant, r.job, r.submitted, r.driver);
        let executors: Vec<PodId> = r.live_executors.iter().copied().collect();
        let sla = self.trace.tenants[tenant].jobs[job].sla;
        self.rec
            .run_ended(tenant, succeeded, sla.is_some_and(|s| self.now - submitted > s.0));
        self.rec.running_runs(-1);
        if self.pods.get(&driver).is_some_and(|p| !p.ending) {
            self.stop(driver, 0, false);
        }
        let shutdown = self.trace.settings.executor_shutdown.0.min(30);
        for e in executors {
            self.stop(e, shutdown, false);
        }
        let ns = self.namespaces[tenant].clone();
        Arc::make_mut(&mut self.view.apps).remove(&(ns, self.runs[run].app_id.clone()));
    }

    /// Tells a pod to stop; it holds its node until `after` seconds pass.
    fn stop(&mut self, id: PodId, after: Secs, evicted: bool) {
        if self.dequeue(id).is_some() {
            // Never bound: deleted at once.
            let p = self.pods.remove(&id).expect("queued pods exist");
            self.runs[p.run].live_executors.remove(&id);
            return;
        }
        let Some(p) = self.pods.get_mut(&id) else { return };
        if p.ending {
            return;
        }
        p.ending = true;
        p.evicted = evicted;
        let (run, role, was_running) = (p.run, p.role, p.started.is_some());
        if let Some(&i) = self.bound_pos.get(&id) {
            self.state.bound[i].terminating = true;
        }
        if role == Role::Executor {
            self.runs[run].live_executors.remove(&id);
            if was_running && self.runs[run].state == RunState::Running {
                self.runs[run].running_executors -= 1;
                self.progress(run);
            }
        }
        if after == 0 {
            self.gone(id);
        } else {
            self.push(self.now + after, Ev::Gone(id));
        }
    }

    /// A pod's containers have exited: its node is free of it and its usage is closed.
    fn gone(&mut self, id: PodId) {
        let now = self.at(self.now);
        let Some(p) = self.pods.get_mut(&id) else { return };
        if p.node.is_none() {
            return; // already gone
        }
        let node = p.node.take().expect("checked");
        let phase = if p.evicted || p.role == Role::Executor && !p.ending {
            "Failed"
        } else {
            "Succeeded"
        };
        let status = p.pod.status.get_or_insert_default();
        status.phase = Some(phase.into());
        status.container_statuses = Some(vec![ContainerStatus {
            name: "spark".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    finished_at: Some(k8s_time(now)),
                    exit_code: 0,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        let (run, evicted, tenant, cpu, opportunistic) = (p.run, p.evicted, p.tenant, p.cpu, p.opportunistic);
        let pool = self.state.bound[self.bound_pos[&id]].pool;
        if let Some(started) = p.started {
            self.rec.used(tenant, pool, opportunistic, cpu * (self.now - started));
            self.closing.push(id);
        } else {
            self.pods.remove(&id);
        }
        let i = self.bound_pos.remove(&id).expect("a bound pod");
        let b = self.state.bound.swap_remove(i);
        if let Some(moved) = self.state.bound.get(i) {
            self.bound_pos.insert(pod_id(&moved.uid), i);
        }
        self.node_used[node] = self.node_used[node].minus(&b.requests);
        self.dedicated_changed |= b.pool == Pool::Dedicated || b.opportunistic;
        self.rec.unbound(b.pool, b.requests.cpu, b.opportunistic);
        self.dirty = true;
        // Spark replaces a lost executor while its application runs.
        if evicted && self.runs[run].state == RunState::Running {
            self.push(self.now + 1, Ev::RequestExecutors { run, count: 1 });
        }
    }

    fn evict(&mut self, victim: PodId, grace: i64, for_pod: PodId) {
        let Some(p) = self.pods.get(&victim) else { return };
        if p.ending {
            return;
        }
        let tenant = p.tenant;
        let demand_since = self.pods.get(&for_pod).map(|d| {
            let created = d.pod.metadata.creation_timestamp.as_ref().map(observe::time);
            created.map_or(self.now, |c| (c - self.start).num_seconds())
        });
        self.rec
            .preempted(tenant, &uid(for_pod), demand_since.unwrap_or(self.now));
        let after = grace.min(self.trace.settings.executor_shutdown.0).max(0);
        self.stop(victim, after, true);
    }

    async fn node_event(&mut self, i: usize) -> Result<(), SimError> {
        let e = &self.trace.events[i];
        if let Some(lose) = e.lose_nodes {
            let victims: Vec<usize> = (0..self.state.nodes.len())
                .rev()
                .filter(|&n| self.state.nodes[n].pool == Some(lose.pool) && self.state.nodes[n].schedulable)
                .take(lose.count as usize)
                .collect();
            for n in &victims {
                self.state.nodes[*n].schedulable = false;
            }
            let on_them: Vec<(PodId, Role, usize)> = self
                .pods
                .iter()
                .filter(|(_, p)| p.node.is_some_and(|n| victims.contains(&n)))
                .map(|(id, p)| (*id, p.role, p.run))
                .collect();
            for (id, role, run) in on_them {
                if role == Role::Driver {
                    if self.runs[run].state == RunState::Running {
                        self.end_run(run, false);
                    } else {
                        self.stop(id, 0, false);
                    }
                } else {
                    self.stop(id, 0, true);
                }
            }
        }
        if let Some(add) = e.add_nodes {
            let base = self.state.nodes.len();
            for k in 0..add.group.count {
                let name = format!("{}-added-{i}-{:03}", add.pool, base as i64 + k);
                self.add_node(add.pool, &name, add.group.cpu.0, add.group.memory.0, 110);
            }
        }
        self.dedicated_changed = true;
        self.register_pools().await?;
        self.refresh().await?;
        self.dirty = true;
        Ok(())
    }

    /// Accrues every running pod up to now and closes the ones that ended,
    /// in one ledger batch, from the pods' own timestamps (as the scheduler does).
    async fn meter(&mut self) -> Result<(), SimError> {
        let now = self.at(self.now);
        let mut batch = Vec::new();
        let accrual = |p: &SimPod| {
            let b = p.binding.as_ref()?;
            meter::accrual_of(b, &p.pod, meter::life(&p.pod, None, now), now)
        };
        for p in self.pods.values() {
            if p.started.is_some() && p.node.is_some() {
                batch.extend(accrual(p));
            }
        }
        let draft_runs = self.view.settings.draft_runs;
        for id in std::mem::take(&mut self.closing) {
            if let Some(p) = self.pods.remove(&id) {
                // A driver's close carries what profiles its run, as the scheduler's meter sends.
                batch.extend(accrual(&p).map(|mut r| {
                    r.run = meter::run_facts(&p.pod, &r.pod, draft_runs, None);
                    r
                }));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        for outcome in self.store.accrue(self.epoch, &batch).await? {
            if let AccrualOutcome::Rejected(e) = outcome {
                self.rec.accrual_rejected(e.to_string());
            }
        }
        Ok(())
    }

    fn sample(&mut self) {
        let pending_drivers = self.queue.iter().filter(|p| p.role == Role::Driver).count();
        self.rec.sample(self.now, self.queue.len(), pending_drivers);
    }

    async fn finish(mut self, options: &Options) -> Result<Report, SimError> {
        // Runs still going, pods still waiting: what they used so far counts.
        let running: Vec<(usize, Pool, bool, i64)> = self
            .pods
            .iter()
            .filter_map(|(id, p)| {
                let started = p.started?;
                p.node?;
                let pool = self.state.bound[self.bound_pos[id]].pool;
                Some((p.tenant, pool, p.opportunistic, p.cpu * (self.end - started)))
            })
            .collect();
        for (tenant, pool, opportunistic, used) in running {
            self.rec.used(tenant, pool, opportunistic, used);
        }
        for r in &self.runs {
            if r.state == RunState::Waiting {
                self.rec.driver_waited(r.tenant, self.end - r.submitted);
            }
            if r.state != RunState::Done {
                let sla = self.trace.tenants[r.tenant].jobs[r.job].sla;
                self.rec.unfinished(
                    r.tenant,
                    r.state.started(),
                    sla.is_some_and(|s| self.end - r.submitted > s.0),
                );
            }
        }
        let end = self.at(self.end);
        let mut ledger = BTreeMap::new();
        for (i, t) in self.trace.tenants.iter().enumerate() {
            let mut charged = 0;
            let mut opportunistic = 0;
            for b in self
                .store
                .usage(
                    &t.id,
                    self.start,
                    end + TimeDelta::hours(1),
                    sparkcap_ledger::Granularity::Day,
                )
                .await?
            {
                charged += b.charged.0;
                opportunistic += b.opportunistic.0;
            }
            // Just before the end: a daily purchase made at the start has lapsed at it.
            let balance = self.store.balance(&t.id, end - TimeDelta::seconds(1)).await?;
            ledger.insert(i, (charged, opportunistic, balance));
        }
        let audit = self.store.audit().await?;
        Ok(self.rec.report(options, self.trace, ledger, audit.violations))
    }
}

impl RunState {
    /// Whether the run's driver was placed.
    pub(crate) fn started(self) -> bool {
        self == RunState::Running
    }
}
