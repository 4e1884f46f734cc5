//! The Spark jobs the harness keeps running, as tenants' drivers do: a
//! driver pod, then its executors once it runs, resubmitted when refused
//! (the webhook down or failing closed) as an operator or a retrying
//! `spark-submit` would. Each finished pod's facts (cpu, real start, real
//! end) are kept for the ledger check.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sparkcap_ledger::LedgerStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Label on every pod the harness makes.
pub const HARNESS_LABEL: &str = "fault-harness";
/// The harness's own finalizer on every pod it makes: a deleted or evicted
/// pod stays (ended, with the kubelet's final status) until the harness
/// has read that status, as any observer that must not miss an end holds it.
pub const OBSERVE_FINALIZER: &str = "harness.sparkcap.io/observe";

/// The jobs to run.
#[derive(Debug, Clone)]
pub struct JobMix {
    /// Tenants and the namespace each submits into.
    pub tenants: Vec<(String, String)>,
    /// Jobs kept in flight.
    pub concurrent: usize,
    /// Jobs in all (None: until stopped).
    pub total: Option<usize>,
    /// Driver run time, seconds.
    pub run_seconds: (u64, u64),
    /// Executors per job.
    pub executors: (u32, u32),
    /// Driver cpu, millicores.
    pub driver_cpu: i64,
    /// Executor cpu, millicores.
    pub executor_cpu: i64,
    /// Delete a job's pods once the ledger closed them (bounds a long soak's pod count).
    pub delete_when_metered: bool,
    /// Chance per round that a running job deletes one of its running
    /// executors, as Spark's dynamic allocation scales down (`kubectl
    /// delete` looks the same to the kubelet).
    pub scale_down: f64,
}

/// A finished pod's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// Pod uid.
    pub uid: String,
    /// namespace/name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Requested cpu, millicores.
    pub cpu: i64,
    /// Its containers' start.
    pub start: chrono::DateTime<chrono::Utc>,
    /// Its containers' end.
    pub end: chrono::DateTime<chrono::Utc>,
}

impl PodFacts {
    /// What it must be charged: cpu × whole seconds run.
    pub fn expected(&self) -> i64 {
        self.cpu * (self.end - self.start).num_seconds()
    }
}

/// What the jobs did.
#[derive(Debug, Default, Clone)]
pub struct JobStats {
    /// Jobs submitted (a driver created).
    pub jobs_started: u64,
    /// Jobs whose pods all finished.
    pub jobs_finished: u64,
    /// Pods created.
    pub pods_created: u64,
    /// Most pods running at once.
    pub peak_running: usize,
    /// Most jobs in flight at once.
    pub peak_jobs: usize,
    /// Creations refused, by cause.
    pub refused: BTreeMap<String, u64>,
    /// One message of each refusal cause.
    pub refusal_examples: BTreeMap<String, String>,
    /// Pods deleted after the ledger closed them.
    pub deleted_when_metered: u64,
    /// Running executors deleted (scale-down).
    pub scaled_down: u64,
    /// For deleted pods: from the first listing that shows their end to the
    /// first that shows the metering finalizer gone (the listing's period,
    /// 200 ms plus a list, bounds the resolution).
    pub release_latencies: Vec<Duration>,
    /// Finished pods' facts.
    pub finished: Vec<PodFacts>,
}

#[derive(Debug)]
enum Stage {
    Submit {
        next_try: Instant,
    },
    Running {
        driver_uid: String,
        executors_made: u32,
        scaled_down: bool,
    },
    Done,
}

#[derive(Debug)]
struct Job {
    tenant: String,
    ns: String,
    name: String,
    executors: u32,
    run_seconds: u64,
    stage: Stage,
    /// Every end seen so far, by uid: a pod released while the job's other
    /// ends are still being charged is gone from later listings.
    ended: BTreeMap<String, PodFacts>,
    /// Deleted pods whose end was seen while they still held the metering
    /// finalizer: when.
    releasing: HashMap<String, Instant>,
}

/// Drives the jobs; share its stats.
pub struct Jobs {
    client: Client,
    ledger: Arc<dyn LedgerStore>,
    mix: JobMix,
    rng: StdRng,
    jobs: Vec<Job>,
    made: usize,
    /// What they did so far.
    pub stats: Arc<Mutex<JobStats>>,
}

fn refusal_cause(e: &kube::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("failed calling webhook") || text.contains("failed to call webhook") {
        "webhook unreachable"
    } else if text.contains("cannot confirm") || text.contains("has not loaded the ledger") {
        "fail-closed: ledger view not current"
    } else if text.contains("was not routed to") {
        "mutating webhook skipped while down; validation refused"
    } else if matches!(e, kube::Error::Api(s) if s.code == 403 || s.code == 400) {
        "denied by the webhook"
    } else {
        "API server unreachable or slow"
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("mix", &self.mix)
            .field("made", &self.made)
            .finish_non_exhaustive()
    }
}

impl Jobs {
    /// Jobs of `mix` from `seed`, created through `client`; `ledger` says
    /// when a finished pod is metered.
    pub fn new(client: Client, ledger: Arc<dyn LedgerStore>, mix: JobMix, seed: u64) -> Self {
        Self {
            client,
            ledger,
            mix,
            rng: StdRng::seed_from_u64(seed ^ 0x6a6f6273),
            jobs: Vec::new(),
            made: 0,
            stats: Arc::default(),
        }
    }

    /// Whether every job asked for has finished.
    pub fn all_done(&self) -> bool {
        self.mix.total.is_some_and(|t| self.made >= t) && self.jobs.iter().all(|j| matches!(j.stage, Stage::Done))
    }

    /// Stops making new jobs; those in flight finish.
    pub fn stop_new(&mut self) {
        self.mix.total = Some(self.made);
    }

    fn top_up(&mut self) {
        self.jobs.retain(|j| !matches!(j.stage, Stage::Done));
        while self.jobs.len() < self.mix.concurrent && self.mix.total.is_none_or(|t| self.made < t) {
            let (tenant, ns) = self.mix.tenants[self.rng.random_range(0..self.mix.tenants.len())].clone();
            let job = Job {
                tenant,
                ns,
                name: format!("job-{:06}", self.made),
                executors: self.rng.random_range(self.mix.executors.0..=self.mix.executors.1),
                run_seconds: self.rng.random_range(self.mix.run_seconds.0..=self.mix.run_seconds.1),
                stage: Stage::Submit {
                    next_try: Instant::now(),
                },
                ended: BTreeMap::new(),
                releasing: HashMap::new(),
            };
            self.made += 1;
            self.jobs.push(job);
        }
    }

    fn pod(&self, job: &Job, role: &str, name: &str, run_seconds: u64, cpu: i64, owner: Option<&str>) -> Pod {
        let mut meta = json!({
            "name": name,
            "finalizers": [OBSERVE_FINALIZER],
            "labels": {"spark-role": role, "spark-app-selector": format!("spark-{}", job.name),
                       "spark-app-name": job.name, HARNESS_LABEL: "1"},
            "annotations": {"sim.sparkcap.io/run-seconds": run_seconds.to_string(),
                            "sparkcap.io/executor-instances": job.executors.to_string()}
        });
        if let Some(uid) = owner {
            meta["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod", "name": job.name,
                                              "uid": uid, "controller": true}]);
        }
        let container = if role == "driver" {
            "spark-kubernetes-driver"
        } else {
            "spark-kubernetes-executor"
        };
        serde_json::from_value(json!({
            "metadata": meta,
            "spec": {"containers": [{"name": container, "image": "apache/spark:3.5.3",
                                     "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": "1Gi"}}}]}
        }))
        .expect("a pod")
    }

    fn refused(&self, e: &kube::Error) {
        let cause = refusal_cause(e);
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *s.refused.entry(cause.into()).or_default() += 1;
        s.refusal_examples.entry(cause.into()).or_insert_with(|| e.to_string());
    }

    async fn closed(&self, uid: &str) -> bool {
        self.ledger
            .pod_checkpoint(uid)
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.finished_at.is_some())
    }

    /// One round: submit what is due, start executors of running drivers,
    /// record what finished, delete what the ledger closed (if asked).
    pub async fn step(&mut self) -> kube::Result<()> {
        self.top_up();
        let all: Api<Pod> = Api::all(self.client.clone());
        let pods = all.list(&ListParams::default().labels(HARNESS_LABEL)).await?.items;
        let running = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        let by_app: HashMap<String, Vec<&Pod>> = pods.iter().fold(HashMap::new(), |mut m, p| {
            m.entry(p.labels().get("spark-app-name").cloned().unwrap_or_default())
                .or_default()
                .push(p);
            m
        });
        {
            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            s.peak_running = s.peak_running.max(running);
            s.peak_jobs = s.peak_jobs.max(self.jobs.len());
        }
        let now = Instant::now();
        for i in 0..self.jobs.len() {
            let job = &self.jobs[i];
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &job.ns);
            let mine = by_app.get(&job.name).cloned().unwrap_or_default();
            match &job.stage {
                Stage::Submit { next_try } if now >= *next_try => {
                    let driver = self.pod(job, "driver", &job.name, job.run_seconds, self.mix.driver_cpu, None);
                    let outcome = api.create(&PostParams::default(), &driver).await;
                    let next = match outcome {
                        Ok(p) => Stage::Running {
                            driver_uid: p.uid().unwrap_or_default(),
                            executors_made: 0,
                            scaled_down: false,
                        },
                        Err(kube::Error::Api(s)) if s.code == 409 => match api.get(&job.name).await {
                            Ok(p) => Stage::Running {
                                driver_uid: p.uid().unwrap_or_default(),
                                executors_made: 0,
                                scaled_down: false,
                            },
                            Err(_) => continue,
                        },
                        Err(e) => {
                            self.refused(&e);
                            Stage::Submit {
                                next_try: now + Duration::from_millis(self.rng.random_range(500..2000)),
                            }
                        }
                    };
                    if matches!(next, Stage::Running { .. }) {
                        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                        s.jobs_started += 1;
                        s.pods_created += 1;
                    }
                    self.jobs[i].stage = next;
                }
                Stage::Submit { .. } | Stage::Done => {}
                Stage::Running {
                    driver_uid,
                    executors_made,
                    scaled_down,
                } => {
                    let (driver_uid, mut made, mut scaled) = (driver_uid.clone(), *executors_made, *scaled_down);
                    let driver = mine.iter().find(|p| p.name_any() == job.name);
                    let phase = driver.and_then(|p| p.status.as_ref()?.phase.clone());
                    if phase.as_deref() == Some("Running") {
                        while made < job.executors {
                            let name = format!("{}-exec-{}", job.name, made + 1);
                            let exec = self.pod(
                                job,
                                "executor",
                                &name,
                                job.run_seconds.saturating_sub(2).max(1),
                                self.mix.executor_cpu,
                                Some(&driver_uid),
                            );
                            match api.create(&PostParams::default(), &exec).await {
                                Ok(_) => {
                                    self.stats.lock().unwrap_or_else(|p| p.into_inner()).pods_created += 1;
                                    made += 1;
                                }
                                Err(kube::Error::Api(s)) if s.code == 409 => made += 1,
                                Err(e) => {
                                    self.refused(&e);
                                    break;
                                }
                            }
                        }
                    }
                    // Scale-down: one running executor deleted while the job runs.
                    if !scaled && made == job.executors && self.rng.random_bool(self.mix.scale_down.clamp(0.0, 1.0)) {
                        let victim = mine.iter().find(|p| {
                            p.labels().get("spark-role").map(String::as_str) == Some("executor")
                                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                                && p.metadata.deletion_timestamp.is_none()
                        });
                        if let Some(v) = victim
                            && api.delete(&v.name_any(), &DeleteParams::default()).await.is_ok()
                        {
                            scaled = true;
                            self.stats.lock().unwrap_or_else(|p| p.into_inner()).scaled_down += 1;
                        }
                    }
                    // Ended: by itself, or deleted (by the harness, or evicted
                    // by the scheduler) with the kubelet's final status; or
                    // deleted before it ever started.
                    let finished = |p: &&Pod| {
                        matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        ) || (p.metadata.deletion_timestamp.is_some()
                            && p.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none())
                    };
                    let driver_done = driver.is_some_and(finished);
                    let done = driver_done && mine.iter().all(finished);
                    let mut stage = Stage::Running {
                        driver_uid,
                        executors_made: made,
                        scaled_down: scaled,
                    };
                    let tenant = job.tenant.clone();
                    for p in mine.iter().filter(|p| finished(p)) {
                        if let Some(f) = facts(p, &tenant) {
                            self.jobs[i].ended.insert(f.uid.clone(), f);
                        }
                        if p.metadata.deletion_timestamp.is_none() {
                            continue;
                        }
                        let uid = p.uid().unwrap_or_default();
                        let held = p.finalizers().iter().any(|f| f == "sparkcap.io/metering");
                        match (held, self.jobs[i].releasing.get(&uid).copied()) {
                            (true, None) => {
                                self.jobs[i].releasing.insert(uid, now);
                            }
                            (false, Some(since)) => {
                                self.jobs[i].releasing.remove(&uid);
                                self.stats
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .release_latencies
                                    .push(Instant::now().saturating_duration_since(since));
                            }
                            _ => {}
                        }
                    }
                    let job = &self.jobs[i];
                    if done {
                        let facts: Vec<PodFacts> = job.ended.values().cloned().collect();
                        let mut metered = true;
                        if self.mix.delete_when_metered {
                            for f in &facts {
                                metered &= self.closed(&f.uid).await;
                            }
                        }
                        // Every end read and charged: the harness lets its pods go.
                        for f in &facts {
                            metered &= self.closed(&f.uid).await;
                        }
                        if metered {
                            for p in &mine {
                                metered &= release_observer(&api, p).await;
                            }
                        }
                        if metered {
                            if self.mix.delete_when_metered {
                                for p in &mine {
                                    let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
                                }
                            }
                            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                            if self.mix.delete_when_metered {
                                s.deleted_when_metered += mine.len() as u64;
                            }
                            s.jobs_finished += 1;
                            s.finished.extend(facts);
                            stage = Stage::Done;
                        }
                    }
                    self.jobs[i].stage = stage;
                }
            }
        }
        Ok(())
    }
}

/// Removes the harness's finalizer from `p` (guarded by its
/// resourceVersion); true when it is gone.
async fn release_observer(api: &Api<Pod>, p: &Pod) -> bool {
    if !p.finalizers().iter().any(|f| f == OBSERVE_FINALIZER) {
        return true;
    }
    let keep: Vec<&String> = p.finalizers().iter().filter(|f| *f != OBSERVE_FINALIZER).collect();
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": p.resource_version()},
        {"op": "replace", "path": "/metadata/finalizers", "value": keep},
    ]);
    let patch: json_patch::Patch = match serde_json::from_value(patch) {
        Ok(p) => p,
        Err(_) => return false,
    };
    match api
        .patch(
            &p.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(_) => false,
    }
}

/// A finished pod's facts, from its own status.
pub fn facts(p: &Pod, tenant: &str) -> Option<PodFacts> {
    let status = p.status.as_ref()?;
    let start = sparkcap_scheduler::observe::time(status.start_time.as_ref()?);
    let end = status
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .finished_at
        .as_ref()
        .map(sparkcap_scheduler::observe::time)?;
    Some(PodFacts {
        uid: p.uid()?,
        name: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
        tenant: tenant.to_owned(),
        cpu: sparkcap_scheduler::observe::requests(p).cpu,
        start,
        end,
    })
}
