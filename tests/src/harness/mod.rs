//! The fault harness: the test control plane, the webhook and the scheduler
//! replicas as separate processes on a real PostgreSQL, Spark jobs running
//! through them, and a seeded plan of faults — SIGKILL and SIGSTOP of any
//! component, crash points armed inside them, dropped, expired and delayed
//! watches, PostgreSQL backends terminated, the database slowed or cut.
//! At the end, the ledger is checked against the pods' own run times.
//!
//! Everything random comes from the seed, which every report prints first:
//! `FAULT_SEED=<seed>` replays the same plan, job mix and watch-fault draws
//! (timing still varies, as on any real machine).

pub mod jobs;
pub mod plan;
pub mod procs;

use crate::apiserver::watch_faults::{WatchFaultConfig, WatchFaultCounts};
use crate::faults::Outage;
use crate::tls::TestCa;
use anyhow::Context;
use jobs::{JobMix, JobStats, Jobs, PodFacts};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, Client};
use plan::{FaultKind, FaultMix, FaultPlan};
use procs::{FAST_SCHEDULER_ARGS, Proc, WebhookAddrs, binary};
use serde_json::{Value, json};
use sparkcap_ledger::store::AuditReport;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{LedgerStore, PgStore, TenantId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Crash points armed in the scheduler replicas: the ledger's accrual just
/// before and just after its commit, the meter after the ledger answered,
/// a bind between its label and its Binding, an eviction, a new leader's
/// first step.
pub const SCHEDULER_CRASH_POINTS: &str = "ledger.accrue.before_commit=1%return;\
ledger.accrue.after_commit=1%return;scheduler.meter.after_accrue=1%return;\
scheduler.bind.after=0.5%return;scheduler.bind.between_label_and_binding=3%return;\
scheduler.evict.after=5%return;scheduler.leader.elected=3%return";

/// Crash points armed in the webhook: mid-review and after a ledger load.
pub const WEBHOOK_CRASH_POINTS: &str = "webhook.admit.before_response=0.2%return;webhook.sync.after_load=1%return";

/// What to run and which faults to inject.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// The seed of everything random.
    pub seed: u64,
    /// Tenants (each buys `vcpu_hours` and submits into `tenant-tNNN`).
    pub tenants: usize,
    /// vCPU-hours each tenant buys.
    pub vcpu_hours: i64,
    /// Shared-pool nodes of 16 cores.
    pub nodes: usize,
    /// Dedicated-pool nodes of 16 cores; the first tenant buys them all
    /// (4-core units), so its jobs run there and the others borrow them
    /// when the shared pool is full, and are preempted when it needs them.
    pub dedicated_nodes: usize,
    /// Scheduler replicas.
    pub schedulers: usize,
    /// The faults and their gaps.
    pub mix: FaultMix,
    /// Faults in every watch.
    pub watch_faults: WatchFaultConfig,
    /// `FAILPOINTS` of the scheduler replicas.
    pub scheduler_crash_points: String,
    /// `FAILPOINTS` of the webhook.
    pub webhook_crash_points: String,
}

impl HarnessConfig {
    /// The metering scenario's set-up from `seed`: a few tenants, two
    /// replicas, every kind of fault (scheduler kills above all), every
    /// crash point armed, watches cut, expired and delayed.
    pub fn scheduler_kills(seed: u64) -> Self {
        Self {
            seed,
            tenants: 5,
            vcpu_hours: 1000,
            nodes: 8,
            dedicated_nodes: 2,
            schedulers: 2,
            mix: FaultMix::scheduler_kills(),
            watch_faults: WatchFaultConfig {
                seed,
                cut: 0.01,
                expire: 0.2,
                max_delay_ms: 20,
            },
            scheduler_crash_points: SCHEDULER_CRASH_POINTS.into(),
            webhook_crash_points: WEBHOOK_CRASH_POINTS.into(),
        }
    }
}

/// What to undo when.
#[derive(Debug, Clone, Copy)]
enum Undo {
    ResumeScheduler(usize),
    ResumeControlPlane,
    RestoreDatabase,
    UnslowDatabase,
}

/// The running harness.
pub struct Harness {
    /// Its set-up.
    pub config: HarnessConfig,
    /// Logs, kubeconfig, certificates.
    pub dir: PathBuf,
    /// The ledger's database (dropped by [`Harness::finish`]).
    db: Option<TestDatabase>,
    /// The ledger, reached directly (not through the faults).
    pub store: Arc<PgStore>,
    /// The cuttable, slowable link the components reach the database through.
    pub proxy: Outage,
    /// A client of the control plane.
    pub client: Client,
    /// The control plane's URL.
    pub url: String,
    /// The test control plane (API server and kubelets).
    pub control_plane: Proc,
    /// sparkcap-webhook.
    pub webhook: Proc,
    /// sparkcap-scheduler replicas.
    pub schedulers: Vec<Proc>,
    plan: FaultPlan,
    next_fault: Instant,
    undo: Vec<(Instant, Undo)>,
    /// Faults injected, by kind.
    pub injected: BTreeMap<FaultKind, u64>,
    holder: Option<String>,
    holder_checked: Instant,
    /// Times the Lease changed hands.
    pub leader_changes: u64,
    started: Instant,
}

/// Tenant `i`'s id and namespace.
pub fn tenant(i: usize) -> (String, String) {
    let id = format!("t{i:03}");
    let ns = format!("tenant-{id}");
    (id, ns)
}

async fn wait<T>(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{what} did not happen within {limit:?} {last}")
}

impl Harness {
    /// Starts every component as its own process and waits until a
    /// scheduler leads.
    pub async fn start(config: HarnessConfig) -> anyhow::Result<Self> {
        // One rustls provider for the kube and HTTP clients of this process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("sparkcap-harness-{}-{}", std::process::id(), config.seed));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let db = TestDatabase::create().await.context("creating the test database")?;
        let store = Arc::new(db.store().await?);
        store.migrate().await?;
        let target = {
            let rest = db.url.split_once("://").map_or("", |r| r.1);
            let host = rest
                .split('/')
                .next()
                .unwrap_or_default()
                .rsplit('@')
                .next()
                .unwrap_or_default();
            tokio::net::lookup_host(host)
                .await?
                .next()
                .context("resolving the database host")?
        };
        let proxy = Outage::start(target).await?;
        let proxied = proxy.url_for(&db.url);

        let mut nodes = String::from("nodes:\n");
        for i in 0..config.nodes {
            nodes.push_str(&format!(
                "- name: shared-{i:02}\n  pool: shared\n  cpu: \"16\"\n  memory: 64Gi\n  taints: [\"sparkcap.io/pool=shared:NoSchedule\"]\n"
            ));
        }
        for i in 0..config.dedicated_nodes {
            nodes.push_str(&format!(
                "- name: dedicated-{i:02}\n  pool: dedicated\n  cpu: \"16\"\n  memory: 64Gi\n  taints: [\"sparkcap.io/pool=dedicated:NoSchedule\"]\n"
            ));
        }
        std::fs::write(dir.join("nodes.yaml"), nodes)?;
        let mut tenants = String::from("tenants:\n");
        for i in 0..config.tenants {
            let (id, _) = tenant(i);
            tenants.push_str(&format!("- id: {id}\n  vcpu_hours: {}\n", config.vcpu_hours));
            if i == 0 && config.dedicated_nodes > 0 {
                tenants.push_str(&format!("  dedicated_units: {}\n", config.dedicated_nodes * 4));
            }
        }
        std::fs::write(dir.join("tenants.yaml"), tenants)?;

        let kubeconfig = dir.join("kubeconfig");
        let wf = &config.watch_faults;
        let watch_faults = format!(
            "seed={},cut={},expire={},delay-ms={}",
            wf.seed, wf.cut, wf.expire, wf.max_delay_ms
        );
        let (kc, nf, tf) = (
            kubeconfig.display().to_string(),
            dir.join("nodes.yaml").display().to_string(),
            dir.join("tenants.yaml").display().to_string(),
        );
        let mut control_plane = Proc::new(
            "control-plane",
            binary("sparkcap-devcluster")?,
            &[
                "--listen",
                "127.0.0.1:0",
                "--kubeconfig",
                &kc,
                "--nodes",
                &nf,
                "--tenants",
                &tf,
                "--database-url",
                &db.url,
                "--external-sparkcap",
                "--watch-faults",
                &watch_faults,
            ],
            &[("RUST_LOG", "warn")],
            &dir,
        );
        control_plane.start()?;
        let url = wait("the control plane to serve", Duration::from_secs(60), async || {
            if !kubeconfig.exists() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&kubeconfig)?;
            Ok(text
                .lines()
                .find_map(|l| l.trim().strip_prefix("server: "))
                .map(|s| s.trim_matches('"').to_owned()))
        })
        .await
        .with_context(|| control_plane.log_text())?;
        let kcfg = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let client = Client::try_from(
            kube::Config::from_custom_kubeconfig(kcfg, &kube::config::KubeConfigOptions::default()).await?,
        )?;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let system = serde_json::from_value(json!({"metadata": {"name": "sparkcap-system"}}))?;
        namespaces.create(&PostParams::default(), &system).await?;

        // The webhook, with a certificate from a throwaway CA, registered by URL.
        let ca = TestCa::new();
        let addrs = WebhookAddrs::new(&ca, &dir)?;
        let (listen, ops) = (&addrs.listen, &addrs.ops);
        let mut webhook = Proc::new(
            "webhook",
            binary("sparkcap-webhook")?,
            &addrs.serve_args(&[
                "--draft-runs",
                "0",
                "--stale-after-seconds",
                "10",
                "--reload-seconds",
                "2",
            ]),
            &[
                ("DATABASE_URL", &proxied),
                ("KUBECONFIG", &kc),
                ("RUST_LOG", "warn"),
                ("FAILPOINTS", &config.webhook_crash_points),
            ],
            &dir,
        );
        webhook.start()?;
        let http = reqwest::Client::new();
        wait("the webhook to be ready", Duration::from_secs(60), async || {
            let r = http.get(format!("http://{ops}/readyz")).send().await?;
            Ok((r.status() == 200).then_some(()))
        })
        .await
        .with_context(|| webhook.log_text())?;
        register_webhook(&client, &format!("https://{listen}"), &ca.ca_bundle()).await?;

        let schedulers = (0..config.schedulers)
            .map(|i| {
                let identity = format!("scheduler-{i}");
                let mut p = Proc::new(
                    &identity,
                    binary("sparkcap-scheduler")?,
                    &[&FAST_SCHEDULER_ARGS[..], &["--identity", "{identity}"]].concat(),
                    &[
                        ("DATABASE_URL", &proxied),
                        ("KUBECONFIG", &kc),
                        ("RUST_LOG", "warn"),
                        ("FAILPOINTS", &config.scheduler_crash_points),
                    ],
                    &dir,
                );
                p.start()?;
                Ok(p)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let plan = FaultPlan::new(config.seed, config.mix.clone());
        let mut h = Self {
            config,
            dir,
            db: Some(db),
            store,
            proxy,
            client,
            url,
            control_plane,
            webhook,
            schedulers,
            plan,
            next_fault: Instant::now(),
            undo: Vec::new(),
            injected: BTreeMap::new(),
            holder: None,
            holder_checked: Instant::now() - Duration::from_secs(1),
            leader_changes: 0,
            started: Instant::now(),
        };
        let leases: Api<Lease> = Api::namespaced(h.client.clone(), "sparkcap-system");
        let holder = wait("a scheduler to lead", Duration::from_secs(60), async || {
            Ok(lease_holder(&leases).await)
        })
        .await
        .with_context(|| h.logs())?;
        h.holder = Some(holder);
        // The first fault 2 s in; the plan draws every later gap.
        h.next_fault = Instant::now() + Duration::from_secs(2);
        Ok(h)
    }

    /// Time since the harness started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every component's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in std::iter::once(&self.control_plane)
            .chain(std::iter::once(&self.webhook))
            .chain(&self.schedulers)
        {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last 40 lines)\n", p.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// One supervision round: restart what is due, undo what has lasted
    /// its time, follow the Lease, and inject the next fault when due
    /// (`faults`: whether to inject at all).
    pub async fn tick(&mut self, faults: bool) -> anyhow::Result<()> {
        for p in std::iter::once(&mut self.webhook).chain(self.schedulers.iter_mut()) {
            p.supervise()?;
        }
        if let Some(status) = self.control_plane.supervise()? {
            anyhow::bail!("the control plane exited ({status}):\n{}", self.logs());
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.undo.drain(..).partition(|(t, _)| *t <= now);
        self.undo = later;
        for (_, u) in due {
            match u {
                Undo::ResumeScheduler(i) => self.schedulers[i].resume(),
                Undo::ResumeControlPlane => self.control_plane.resume(),
                Undo::RestoreDatabase => self.proxy.restore(),
                Undo::UnslowDatabase => self.proxy.slow(Duration::ZERO),
            }
        }
        if self.control_plane.is_running() && self.holder_checked.elapsed() >= Duration::from_millis(500) {
            self.holder_checked = Instant::now();
            let leases: Api<Lease> = Api::namespaced(self.client.clone(), "sparkcap-system");
            if let Ok(Some(h)) = tokio::time::timeout(Duration::from_secs(1), lease_holder(&leases)).await
                && self.holder.as_ref() != Some(&h)
            {
                self.leader_changes += 1;
                self.holder = Some(h);
            }
        }
        if faults && now >= self.next_fault {
            let (gap, fault) = self.plan.next_fault();
            self.next_fault = now + gap;
            self.inject(fault).await;
        }
        Ok(())
    }

    fn leader_index(&self) -> Option<usize> {
        let h = self.holder.as_deref()?;
        self.schedulers.iter().position(|p| p.identity() == h && p.is_running())
    }

    async fn inject(&mut self, fault: plan::Fault) {
        let now = Instant::now();
        let leader = self.leader_index();
        let done = match fault.kind {
            FaultKind::KillLeader => leader
                .map(|i| self.schedulers[i].kill(fault.lasts, fault.rescheduled))
                .is_some(),
            FaultKind::KillStandby => {
                let standby =
                    (0..self.schedulers.len()).find(|i| Some(*i) != leader && self.schedulers[*i].is_running());
                standby
                    .map(|i| self.schedulers[i].kill(fault.lasts, fault.rescheduled))
                    .is_some()
            }
            FaultKind::PauseLeader => leader
                .map(|i| {
                    self.schedulers[i].pause();
                    self.undo.push((now + fault.lasts, Undo::ResumeScheduler(i)));
                })
                .is_some(),
            FaultKind::KillWebhook => {
                self.webhook.kill(fault.lasts, false);
                true
            }
            FaultKind::PauseControlPlane => {
                self.control_plane.pause();
                self.undo.push((now + fault.lasts, Undo::ResumeControlPlane));
                true
            }
            FaultKind::TerminateBackends => {
                let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                           WHERE datname = current_database() AND pid <> pg_backend_pid()";
                sqlx::query(sql).execute(self.store.pool()).await.is_ok()
            }
            FaultKind::SlowDatabase => {
                self.proxy.slow(fault.latency);
                self.undo.push((now + fault.lasts, Undo::UnslowDatabase));
                true
            }
            FaultKind::CutDatabase => {
                self.proxy.cut();
                self.undo.push((now + fault.lasts, Undo::RestoreDatabase));
                true
            }
        };
        if done {
            *self.injected.entry(fault.kind).or_default() += 1;
        }
    }

    /// Stops every process and drops the database and the logs.
    pub async fn finish(mut self) {
        self.heal();
        for p in std::iter::once(&mut self.webhook).chain(self.schedulers.iter_mut()) {
            p.stop();
        }
        self.control_plane.stop();
        if let Some(db) = self.db.take() {
            let _ = db.drop_db().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Ends every fault in force (the database back, nothing frozen).
    pub fn heal(&mut self) {
        for (_, u) in std::mem::take(&mut self.undo) {
            match u {
                Undo::ResumeScheduler(i) => self.schedulers[i].resume(),
                Undo::ResumeControlPlane => self.control_plane.resume(),
                Undo::RestoreDatabase => self.proxy.restore(),
                Undo::UnslowDatabase => self.proxy.slow(Duration::ZERO),
            }
        }
    }

    /// Runs `mix` while injecting faults until `enough` says so (given the
    /// jobs' stats and this harness), then heals, lets the jobs in flight
    /// finish, and checks the ledger. Gives up after `limit`.
    pub async fn run(
        &mut self,
        mix: JobMix,
        limit: Duration,
        enough: impl Fn(&JobStats, &Harness) -> bool,
    ) -> anyhow::Result<Report> {
        let stop_new = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open_ended = mix.total.is_none();
        let mut jobs = Jobs::new(self.client.clone(), self.store.clone(), mix, self.config.seed);
        let stats = jobs.stats.clone();
        let stop = stop_new.clone();
        let worker = tokio::spawn(async move {
            loop {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    jobs.stop_new();
                }
                if jobs.all_done() {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), jobs.step()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let deadline = Instant::now() + limit;
        let mut faulting = true;
        while !worker.is_finished() {
            if Instant::now() > deadline {
                worker.abort();
                anyhow::bail!("gave up after {limit:?}: {:?}\n{}", summary(&stats), self.logs());
            }
            if faulting && enough(&stats.lock().unwrap_or_else(|p| p.into_inner()), self) {
                // Faults end; an open-ended job mix stops growing, a
                // counted one runs to its count.
                faulting = false;
                self.heal();
                stop_new.store(open_ended, std::sync::atomic::Ordering::Relaxed);
            }
            self.tick(faulting).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.heal();
        let stats = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let check = check_ledger(&self.store, &self.client, &stats.finished, Duration::from_secs(90)).await?;
        let watch = self.watch_fault_counts().await.unwrap_or_default();
        let mut crash_points = BTreeMap::new();
        for p in std::iter::once(&self.webhook).chain(&self.schedulers) {
            for c in p.crash_points_hit() {
                *crash_points.entry(c).or_default() += 1;
            }
        }
        Ok(Report {
            seed: self.config.seed,
            elapsed: self.started.elapsed(),
            stats,
            injected: self.injected.iter().map(|(k, v)| (k.name(), *v)).collect(),
            crash_points,
            watch,
            leader_changes: self.leader_changes,
            scheduler_starts: self.schedulers.iter().map(|p| p.starts as u64).sum(),
            check,
        })
    }

    /// The control plane's watch-fault tallies.
    pub async fn watch_fault_counts(&self) -> anyhow::Result<WatchFaultCounts> {
        let v: Value = reqwest::get(format!("{}{}", self.url, crate::apiserver::http::WATCH_FAULTS_PATH))
            .await?
            .json()
            .await?;
        Ok(serde_json::from_value(v["counts"].clone())?)
    }
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("config", &self.config)
            .field("url", &self.url)
            .field("injected", &self.injected)
            .finish_non_exhaustive()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.heal();
    }
}

fn summary(stats: &Arc<Mutex<JobStats>>) -> String {
    let s = stats.lock().unwrap_or_else(|p| p.into_inner());
    format!(
        "{} jobs started, {} finished, {} pods created, refused {:?}",
        s.jobs_started, s.jobs_finished, s.pods_created, s.refused
    )
}

/// Who holds the scheduler's Lease (`sparkcap-scheduler`), if anyone.
pub async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("sparkcap-scheduler")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Stores the manifests' webhook configurations, pointed at `url`.
async fn register_webhook(client: &Client, url: &str, ca_bundle: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    for doc in serde_yaml::Deserializer::from_str(crate::webhook::REGISTRATION) {
        let mut config: Value = serde::Deserialize::deserialize(doc)?;
        for w in config["webhooks"].as_array_mut().into_iter().flatten() {
            let path = w["clientConfig"]["service"]["path"].as_str().unwrap_or("/").to_owned();
            w["clientConfig"] = json!({"url": format!("{url}{path}"), "caBundle": ca_bundle});
        }
        match config["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => {
                let c: MutatingWebhookConfiguration = serde_json::from_value(config)?;
                Api::all(client.clone()).create(&PostParams::default(), &c).await?;
            }
            Some("ValidatingWebhookConfiguration") => {
                let c: ValidatingWebhookConfiguration = serde_json::from_value(config)?;
                Api::all(client.clone()).create(&PostParams::default(), &c).await?;
            }
            other => anyhow::bail!("unexpected kind {other:?} in manifests/webhook-configurations.yaml"),
        }
    }
    Ok(())
}

/// The ledger against the pods' own run times.
#[derive(Debug, Clone)]
pub struct LedgerCheck {
    /// Finished pods checked.
    pub pods: usize,
    /// Σ cpu × run time, millicore-seconds.
    pub expected: i64,
    /// What their checkpoints say was charged.
    pub charged: i64,
    /// What the tenants' usage totals say was charged (catches charges to
    /// pods the harness never made, and double counting).
    pub tenant_usage: i64,
    /// Pods charged other than cpu × run time.
    pub mismatches: Vec<String>,
    /// Finished pods the ledger never closed.
    pub unclosed: Vec<String>,
    /// The ledger's own audit (journal keys unique, each pod's lines tile its life).
    pub audit: AuditReport,
    /// The ledger against the pods the cluster reports (`audit --against-cluster`).
    pub cluster: sparkcap_scheduler::audit::Report,
    /// Pods by how they ended (the ledger's outcome), and those that ran on
    /// borrowed dedicated capacity.
    pub ends: BTreeMap<String, i64>,
    /// Ends that reached the meter after it had charged past them, and the
    /// seconds given back by their correcting journal lines.
    pub corrected: (i64, i64),
}

impl LedgerCheck {
    /// Exact, complete and clean.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
            && self.unclosed.is_empty()
            && self.audit.is_clean()
            && self.cluster.is_clean()
            && self.charged == self.expected
            && self.tenant_usage == self.expected
    }
}

/// Waits up to `wait` for the ledger to close every pod of `facts`, then
/// compares each charge with cpu × its run time.
pub async fn check_ledger(
    store: &PgStore,
    client: &Client,
    facts: &[PodFacts],
    wait: Duration,
) -> anyhow::Result<LedgerCheck> {
    let t = Instant::now();
    let mut unclosed: Vec<String>;
    loop {
        unclosed = Vec::new();
        for f in facts {
            let closed = store
                .pod_checkpoint(&f.uid)
                .await?
                .is_some_and(|c| c.finished_at.is_some());
            if !closed {
                unclosed.push(f.name.clone());
            }
        }
        if unclosed.is_empty() || t.elapsed() > wait {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (mut expected, mut charged, mut mismatches) = (0, 0, Vec::new());
    let mut tenants = std::collections::BTreeSet::new();
    for f in facts {
        tenants.insert(f.tenant.clone());
        expected += f.expected();
        if let Some(cp) = store.pod_checkpoint(&f.uid).await? {
            // Borrowed time is recorded, not charged: both are its life.
            let metered = cp.charged.0 + cp.opportunistic.0;
            charged += metered;
            if metered != f.expected() {
                mismatches.push(format!(
                    "{}: metered {} mc·s, ran {} mc·s ({} m × {} s)",
                    f.name,
                    metered,
                    f.expected(),
                    f.cpu,
                    (f.end - f.start).num_seconds()
                ));
            }
        }
    }
    // Pods the ledger charged that the harness never saw end.
    let seen: std::collections::HashSet<&str> = facts.iter().map(|f| f.uid.as_str()).collect();
    type Row = (String, String, i64, Option<String>, Option<Time>, Time);
    type Time = chrono::DateTime<chrono::Utc>;
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT pod_uid, namespace || '/' || pod_name, charged_mcs + opportunistic_mcs, outcome, finished_at, started_at \
             FROM pod_usage",
        )
        .fetch_all(store.pool())
        .await?;
    for (uid, name, metered, outcome, finished, started) in rows {
        if !seen.contains(uid.as_str()) && metered > 0 {
            mismatches.push(format!(
                "{name}: metered {metered} mc·s ({started} to {finished:?}, {outcome:?}) but the harness never saw it end"
            ));
        }
    }
    let mut ends = BTreeMap::new();
    for (k, n) in sqlx::query_as::<_, (String, i64)>(
        "SELECT coalesce(outcome, 'open') || CASE WHEN opportunistic THEN ' (borrowed)' ELSE '' END, count(*) \
         FROM pod_usage GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await?
    {
        ends.insert(k, n);
    }
    let corrected: (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(SUM(EXTRACT(EPOCH FROM from_ts - to_ts)), 0)::bigint \
         FROM usage_intervals WHERE to_ts < from_ts",
    )
    .fetch_one(store.pool())
    .await?;
    let mut tenant_usage = 0;
    let (from, to) = (
        chrono::Utc::now() - chrono::TimeDelta::days(1),
        chrono::Utc::now() + chrono::TimeDelta::hours(1),
    );
    for t in tenants {
        let id = TenantId::new(t)?;
        tenant_usage += store
            .usage(&id, from, to, sparkcap_ledger::Granularity::Hour)
            .await?
            .iter()
            .map(|b| b.charged.0 + b.opportunistic.0)
            .sum::<i64>();
    }
    Ok(LedgerCheck {
        pods: facts.len(),
        expected,
        charged,
        tenant_usage,
        mismatches,
        unclosed,
        audit: store.audit().await?,
        cluster: sparkcap_scheduler::shell::audit_cluster_now(client.clone(), store).await?,
        ends,
        corrected,
    })
}

/// What a harness run held, survived and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its seed.
    pub seed: u64,
    /// From start to the ledger check.
    pub elapsed: Duration,
    /// What the jobs did.
    pub stats: JobStats,
    /// Faults injected, by name.
    pub injected: BTreeMap<&'static str, u64>,
    /// Crash points the components died at.
    pub crash_points: BTreeMap<String, u64>,
    /// Watch faults.
    pub watch: WatchFaultCounts,
    /// Times the Lease changed hands.
    pub leader_changes: u64,
    /// Scheduler process starts, over all replicas.
    pub scheduler_starts: u64,
    /// The ledger check.
    pub check: LedgerCheck,
}

impl Report {
    /// Scheduler processes killed: by the plan, and at crash points.
    pub fn scheduler_kills(&self) -> u64 {
        let planned = ["scheduler leader SIGKILL", "scheduler standby SIGKILL"]
            .iter()
            .map(|k| self.injected.get(k).copied().unwrap_or(0))
            .sum::<u64>();
        let crashed = self
            .crash_points
            .iter()
            .filter(|(k, _)| k.starts_with("scheduler.") || k.starts_with("ledger."))
            .map(|(_, v)| v)
            .sum::<u64>();
        planned + crashed
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        let c = &self.check;
        writeln!(
            f,
            "fault harness, seed {}: {:.0} s",
            self.seed,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "held: {} jobs, {} pods created, peak {} pods running and {} jobs in flight",
            s.jobs_finished, s.pods_created, s.peak_running, s.peak_jobs
        )?;
        let mut lat = s.release_latencies.clone();
        lat.sort();
        let pct = |p: f64| {
            lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        writeln!(
            f,
            "ends: {} running executors deleted (scale-down); metering finalizer released after the end in p50 {:.1?}, p99 {:.1?} over {} deleted pods",
            s.scaled_down,
            pct(0.5),
            pct(0.99),
            lat.len()
        )?;
        writeln!(f, "faults injected: {} in all", self.injected.values().sum::<u64>())?;
        for (k, v) in &self.injected {
            writeln!(f, "  {v:>5}  {k}")?;
        }
        writeln!(f, "crash points hit: {}", self.crash_points.values().sum::<u64>())?;
        for (k, v) in &self.crash_points {
            writeln!(f, "  {v:>5}  {k}")?;
        }
        writeln!(
            f,
            "scheduler processes killed: {} ({} starts, the Lease changed hands {} times)",
            self.scheduler_kills(),
            self.scheduler_starts,
            self.leader_changes
        )?;
        writeln!(
            f,
            "watches: {} cut, {} told 410 Gone, {} events delayed",
            self.watch.cuts, self.watch.expiries, self.watch.delayed
        )?;
        writeln!(f, "creations refused (retried): {}", s.refused.values().sum::<u64>())?;
        for (k, v) in &s.refused {
            writeln!(f, "  {v:>5}  {k}")?;
        }
        writeln!(
            f,
            "ledger: {} pods; Σ cpu × run time {} mc·s; charged {} (checkpoints), {} (tenant usage); \
             {} mismatched, {} unclosed; audit {}",
            c.pods,
            c.expected,
            c.charged,
            c.tenant_usage,
            c.mismatches.len(),
            c.unclosed.len(),
            if c.audit.is_clean() {
                format!(
                    "clean over {} pods (journal keys unique, lines tile each life)",
                    c.audit.pods
                )
            } else {
                format!("{} violations", c.audit.violations.len())
            }
        )?;
        writeln!(
            f,
            "pod ends in the ledger: {}; {} reached the meter after it charged past them ({} s given back)",
            c.ends
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.corrected.0,
            c.corrected.1
        )?;
        writeln!(
            f,
            "against the cluster: {} pods and {} ledger rows compared, {} disagreements",
            c.cluster.pods,
            c.cluster.rows,
            c.cluster.findings.len()
        )?;
        for d in c.cluster.findings.iter().take(20) {
            writeln!(f, "  {d}")?;
        }
        for m in c
            .mismatches
            .iter()
            .chain(&c.unclosed)
            .chain(&c.audit.violations)
            .take(20)
        {
            writeln!(f, "  {m}")?;
        }
        write!(f, "verdict: {}", if c.passed() { "EXACT" } else { "FAILED" })
    }
}
