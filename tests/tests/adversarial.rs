//! A hostile tenant against the devcluster with PostgreSQL (issue 19).
//!
//! The attacker holds a ServiceAccount token of its own namespace — a
//! tenant's ordinary rights — and plays generated sequences of create,
//! label, patch, replace and delete on pods, namespaces, ConfigMaps,
//! SparkApplications and ScheduledSparkApplications, with odd quantities
//! and strings. After each sequence every pod is ended, and the oracle
//! compares the ledger with what the cluster ran (each pod's last state,
//! from the store's own event stream, kept after the object is gone):
//!
//! - nothing ran on a pool node without a ledger row;
//! - every row's start and end are the kubelet's, its charge cpu × life;
//! - every row is charged to the tenant the ledger binds the pod's
//!   namespace to, never another (the victim's usage stays 0);
//! - no row is left open, and the ledger's own audit is clean;
//! - the webhook answered every review (no 5xx), and a plain driver still
//!   runs afterwards (nothing blocks scheduling).
//!
//! Seeded and replayable: `SPARKCAP_ADVERSARY_SEED` (default 19) and
//! `SPARKCAP_ADVERSARY_CASES` (default 12) choose the sequences; the test
//! prints the cases, actions and leaks.

use chrono::Utc;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{LedgerStore, TenantId};
use sparkcap_scheduler::shell::ShellConfig;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::apiserver::resources::find;
use sparkcap_webhook::view::Settings;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: &str = "tenant-acme";
const POOL_NODES: [&str; 3] = ["dedicated-1", "shared-1", "draft-1"];

/// One step of a hostile sequence.
#[derive(Debug, Clone)]
enum Action {
    CreatePod(Value),
    Label(String, String, Option<String>),
    StripFinalizer(String),
    AddToleration(String),
    Replace(String, String, String),
    Delete(String),
    Namespace(String, String),
    PodIn(String, Value),
    SparkConf(String, String),
    SparkApplication(Value),
    Scheduled(String, String, String),
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::CreatePod(_) => "create pod",
            Action::Label(..) => "label pod",
            Action::StripFinalizer(_) => "strip finalizer",
            Action::AddToleration(_) => "add pool toleration",
            Action::Replace(..) => "replace pod",
            Action::Delete(_) => "delete pod",
            Action::Namespace(..) => "create namespace",
            Action::PodIn(..) => "pod in new namespace",
            Action::SparkConf(..) => "spark.properties ConfigMap",
            Action::SparkApplication(_) => "SparkApplication",
            Action::Scheduled(..) => "ScheduledSparkApplication",
        }
    }
}

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

const CPUS: [&str; 9] = [
    "0",
    "1m",
    "-1",
    "2",
    "500m",
    "0.5",
    "100000000",
    "9223372036854775807",
    "1e3",
];
const ODD_TEXT: [&str; 5] = ["s3\u{0}evil", "x", "", "..", "ä\u{7f}"];
const LABELS: [(&str, &[&str]); 6] = [
    ("sparkcap.io/tenant", &["victim", "acme", "nobody"]),
    ("sparkcap.io/pool", &["dedicated", "shared", "draft", "gold"]),
    ("sparkcap.io/opportunistic", &["true", "false"]),
    ("spark-role", &["driver", "executor", "client"]),
    ("spark-app-selector", &["spark-forged", "spark-0", "spark-1"]),
    ("sparkcap.io/job", &["nightly", "x"]),
];

/// A pod a hostile tenant might write.
fn hostile_pod(rng: &mut StdRng, name: &str) -> Value {
    let cpu = if rng.random_bool(0.6) { "1" } else { *pick(rng, &CPUS) };
    let mut labels = serde_json::Map::new();
    let role = *pick(rng, &["driver", "executor", "none"]);
    if role != "none" {
        labels.insert("spark-role".into(), json!(role));
        labels.insert(
            "spark-app-selector".into(),
            json!(format!("spark-{}", rng.random_range(0..3))),
        );
        labels.insert("spark-app-name".into(), json!("etl"));
    }
    for (k, vs) in LABELS {
        if rng.random_bool(0.25) {
            labels.insert(k.into(), json!(*pick(rng, vs)));
        }
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "sim.sparkcap.io/run-seconds".into(),
        json!(rng.random_range(1..4).to_string()),
    );
    annotations.insert("sparkcap.io/executor-instances".into(), json!("0"));
    if rng.random_bool(0.3) {
        annotations.insert("sparkcap.io/source".into(), json!(*pick(rng, &ODD_TEXT)));
    }
    let mut spec = json!({
        "containers": [{"name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3",
                        "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]
    });
    if rng.random_bool(0.3) {
        spec["schedulerName"] = json!(*pick(rng, &["sparkcap-scheduler", "default-scheduler"]));
    }
    if rng.random_bool(0.25) {
        spec["nodeName"] = json!(*pick(rng, &POOL_NODES));
    }
    if rng.random_bool(0.25) {
        spec["tolerations"] = json!([{"key": "sparkcap.io/pool", "operator": "Exists"}]);
    }
    if rng.random_bool(0.2) {
        // A sidecar (KEP-753) that reserves cpu of its own, or none.
        let side = if rng.random_bool(0.5) {
            json!({"requests": {"cpu": "3"}})
        } else {
            json!({})
        };
        spec["initContainers"] =
            json!([{"name": "sidecar", "image": "busybox", "restartPolicy": "Always", "resources": side}]);
    }
    if rng.random_bool(0.15) {
        spec["overhead"] = json!({"cpu": *pick(rng, &["250m", "-1", "0"])});
    }
    if role == "driver" && rng.random_bool(0.2) {
        spec["volumes"] = json!([{"name": "spark-conf-volume-driver", "configMap": {"name": format!("{name}-conf")}}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels, "annotations": annotations},
           "spec": spec})
}

/// A sequence of `n` steps over the pods it creates.
fn sequence(rng: &mut StdRng, case: usize, n: usize) -> Vec<Action> {
    let mut pods: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for step in 0..n {
        let name = format!("c{case}-p{step}");
        let roll = rng.random_range(0..100);
        let target = (!pods.is_empty()).then(|| pick(rng, &pods).clone());
        let action = match (roll, target) {
            (0..35, _) | (_, None) => {
                pods.push(name.clone());
                Action::CreatePod(hostile_pod(rng, &name))
            }
            (35..55, Some(t)) => {
                let (k, vs) = *pick(rng, &LABELS);
                let v = rng.random_bool(0.8).then(|| (*pick(rng, vs)).to_owned());
                Action::Label(t, k.to_owned(), v)
            }
            (55..62, Some(t)) => Action::StripFinalizer(t),
            (62..68, Some(t)) => Action::AddToleration(t),
            (68..74, Some(t)) => {
                let (k, vs) = *pick(rng, &LABELS);
                Action::Replace(t, k.to_owned(), (*pick(rng, vs)).to_owned())
            }
            (74..84, Some(t)) => Action::Delete(t),
            (84..88, _) => {
                let ns = format!("evil-{case}-{step}");
                Action::Namespace(ns, (*pick(rng, &["victim", "acme"])).to_owned())
            }
            (88..91, _) => Action::PodIn(format!("evil-{case}"), hostile_pod(rng, &name)),
            (91..94, _) => Action::SparkConf(
                format!("c{case}-p{}-conf", rng.random_range(0..n)),
                (*pick(rng, &["9223372036854775807", "-5", "100000", "2", "x"])).to_owned(),
            ),
            (94..97, _) => Action::SparkApplication(json!({
                "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
                "metadata": {"name": name},
                "spec": {"type": "Scala", "mode": "cluster", "sparkVersion": "3.5.3",
                         "driver": {"cores": rng.random_range(-2..3), "coreLimit": *pick(rng, &CPUS)},
                         "executor": {"cores": 1, "instances": *pick(rng, &[2_i64, -1, i64::MAX, 100_000])}}
            })),
            _ => Action::Scheduled(
                name,
                (*pick(rng, &["@every 1s", "* * * * *", "@every 1m", "0 2 * * *", "61 * * * *"])).to_owned(),
                (*pick(rng, &["24h", "1s", "10m", "9999999h", "-1m"])).to_owned(),
            ),
        };
        out.push(action);
    }
    out
}

/// What the attacker's calls came to.
#[derive(Debug, Default)]
struct Tally {
    actions: BTreeMap<&'static str, u64>,
    refused: u64,
    accepted: u64,
    webhook_failures: Vec<String>,
}

impl Tally {
    fn record<T>(&mut self, action: &Action, r: Result<T, kube::Error>) {
        *self.actions.entry(action.kind()).or_default() += 1;
        match r {
            Ok(_) => self.accepted += 1,
            Err(kube::Error::Api(e)) if e.code >= 500 => {
                self.webhook_failures
                    .push(format!("{}: {} {}", action.kind(), e.code, e.message))
            }
            Err(_) => self.refused += 1,
        }
    }
}

async fn play(attacker: &kube::Client, action: &Action, tally: &mut Tally) {
    let pods: Api<Pod> = Api::namespaced(attacker.clone(), NS);
    let pp = PostParams::default();
    let merge = |v: Value| Patch::Merge(v);
    match action {
        Action::CreatePod(v) => {
            let r = match serde_json::from_value::<Pod>(v.clone()) {
                Ok(p) => pods.create(&pp, &p).await.map(|_| ()),
                Err(_) => Ok(()),
            };
            tally.record(action, r);
        }
        Action::Label(p, k, v) => {
            let r = pods
                .patch(
                    p,
                    &PatchParams::default(),
                    &merge(json!({"metadata": {"labels": {k: v}}})),
                )
                .await;
            tally.record(action, r);
        }
        Action::StripFinalizer(p) => {
            let r = pods
                .patch(
                    p,
                    &PatchParams::default(),
                    &merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
            tally.record(action, r);
        }
        Action::AddToleration(p) => {
            let patch = json!({"spec": {"tolerations": [{"key": "sparkcap.io/pool", "operator": "Exists"}]}});
            let r = pods.patch(p, &PatchParams::default(), &merge(patch)).await;
            tally.record(action, r);
        }
        Action::Replace(p, k, v) => {
            let r = match pods.get(p).await {
                Ok(mut pod) => {
                    pod.labels_mut().insert(k.clone(), v.clone());
                    pods.replace(p, &pp, &pod).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            tally.record(action, r);
        }
        Action::Delete(p) => {
            let r = pods.delete(p, &DeleteParams::default()).await.map(|_| ());
            tally.record(action, r);
        }
        Action::Namespace(ns, tenant) => {
            let api: Api<Namespace> = Api::all(attacker.clone());
            let obj = json!({"metadata": {"name": ns, "labels": {"sparkcap.io/tenant": tenant}}});
            let r = api.create(&pp, &serde_json::from_value(obj).unwrap()).await.map(|_| ());
            tally.record(action, r);
        }
        Action::PodIn(ns, v) => {
            let api: Api<Namespace> = Api::all(attacker.clone());
            let obj = json!({"metadata": {"name": ns, "labels": {"sparkcap.io/tenant": "victim"}}});
            let _ = api.create(&pp, &serde_json::from_value(obj).unwrap()).await;
            let there: Api<Pod> = Api::namespaced(attacker.clone(), ns);
            let r = match serde_json::from_value::<Pod>(v.clone()) {
                Ok(p) => there.create(&pp, &p).await.map(|_| ()),
                Err(_) => Ok(()),
            };
            tally.record(action, r);
        }
        Action::SparkConf(name, instances) => {
            let api: Api<ConfigMap> = Api::namespaced(attacker.clone(), NS);
            let cm = json!({"metadata": {"name": name},
                            "data": {"spark.properties": format!("spark.executor.instances={instances}\nspark.executor.cores=1\n")}});
            let r = api.create(&pp, &serde_json::from_value(cm).unwrap()).await.map(|_| ());
            tally.record(action, r);
        }
        Action::SparkApplication(v) => {
            let api: Api<DynamicObject> = Api::namespaced_with(attacker.clone(), NS, &operator("sparkapplications"));
            let r = api
                .create(&pp, &serde_json::from_value(v.clone()).unwrap())
                .await
                .map(|_| ());
            tally.record(action, r);
        }
        Action::Scheduled(name, schedule, duration) => {
            let mut v: Value = serde_json::from_str(include_str!(
                "../../webhook/tests/fixtures/scheduled-spark-application.json"
            ))
            .unwrap();
            v["metadata"]["name"] = json!(name);
            v["metadata"]["namespace"] = json!(NS);
            v["metadata"]["annotations"] = json!({"sparkcap.io/expected-duration": duration});
            v["spec"]["schedule"] = json!(schedule);
            let api: Api<DynamicObject> =
                Api::namespaced_with(attacker.clone(), NS, &operator("scheduledsparkapplications"));
            let r = api.create(&pp, &serde_json::from_value(v).unwrap()).await.map(|_| ());
            tally.record(action, r);
        }
    }
}

fn operator(plural: &str) -> kube::api::ApiResource {
    let kind = if plural == "sparkapplications" {
        "SparkApplication"
    } else {
        "ScheduledSparkApplication"
    };
    kube::api::ApiResource {
        group: "sparkoperator.k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "sparkoperator.k8s.io/v1beta2".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn wait_until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("timed out waiting for {what}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_gets_nothing_free_and_bills_nobody_else() {
    let seed = env_or("SPARKCAP_ADVERSARY_SEED", 19);
    let cases = env_or("SPARKCAP_ADVERSARY_CASES", 12) as usize;
    let db = TestDatabase::create().await.expect("test database");
    let store: Arc<dyn LedgerStore> = Arc::new(db.store().await.unwrap());
    let server = ApiServer::new();
    let _kubelets = sparkcap_testkit::devcluster::default_cluster(
        &server,
        store.as_ref(),
        "tenants:\n- id: acme\n  vcpu_hours: 500\n- id: victim\n  vcpu_hours: 500\n",
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-adversary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _webhook = sparkcap_testkit::webhook::start(&server, store.clone(), Settings::default(), &dir)
        .await
        .unwrap();
    let _scheduler = sparkcap_testkit::scheduler::start(
        &server,
        &store,
        ShellConfig {
            meter_period: chrono::TimeDelta::seconds(1),
            ..ShellConfig::default()
        },
    );
    let attacker = server.client_as(&server.service_account_token(NS, "attacker"), NS);
    let admin = server.client();
    // Every pod's last state, from the store's own event stream.
    let def = find("", "v1", "pods").unwrap();
    let (_, _, mut events) = server.store.snapshot_and_watch(def, None);
    let last: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let seen = last.clone();
    let recorder = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let Some(uid) = e.object.pointer("/metadata/uid").and_then(Value::as_str) {
                seen.lock().unwrap().insert(uid.to_owned(), e.object.clone());
            }
        }
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut leaks: Vec<String> = Vec::new();
    let mut reported = std::collections::HashSet::new();
    let mut pods_ran = 0;
    for case in 0..cases {
        let steps = sequence(&mut rng, case, 8);
        for a in &steps {
            play(&attacker, a, &mut tally).await;
        }
        // Let the pods run and end, then end whatever is left (as an admin,
        // as a namespace's deletion would).
        tokio::time::sleep(Duration::from_secs(4)).await;
        let namespaces: Vec<String> = Api::<Namespace>::all(admin.clone())
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|n| n.metadata.name.unwrap())
            .filter(|n| n == NS || n.starts_with("evil-"))
            .collect();
        for ns in &namespaces {
            let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
            let _ = api
                .delete_collection(&DeleteParams::default(), &Default::default())
                .await;
        }
        let all_gone = wait_until("the case's pods to go", 60, async || {
            let mut left = 0;
            for ns in &namespaces {
                let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
                left += api.list(&Default::default()).await.map_or(1, |l| l.items.len());
            }
            left == 0
        })
        .await;
        if !all_gone {
            leaks.push(format!("case {case}: pods left waiting (a finalizer never released)"));
        }
        // The oracle, over every pod's last state.
        let finals: Vec<Pod> = last
            .lock()
            .unwrap()
            .values()
            .filter(|v| {
                v.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n == NS || n.starts_with("evil-"))
            })
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        pods_ran = finals
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some())
            .count();
        let facts = sparkcap_scheduler::audit::gather(
            store.as_ref(),
            finals.clone(),
            POOL_NODES.iter().map(|s| (*s).to_owned()).collect(),
            HashMap::new(),
        )
        .await
        .unwrap();
        // Every pod that ran did so on a pool node (the devcluster has no
        // other): the audit's "unrecorded" covers every namespace here.
        let mut facts = facts;
        facts.tenant_namespaces.extend(namespaces.iter().cloned());
        let report = sparkcap_scheduler::audit::check(&facts, Utc::now());
        for f in &report.findings {
            // A pod stays in the event record: report it once.
            if reported.insert(f.uid.clone()) {
                leaks.push(format!("case {case}: {f}"));
            }
        }
        let acme = TenantId::new("acme").unwrap();
        for p in &finals {
            let Some(uid) = p.metadata.uid.as_deref() else { continue };
            if let Some(cp) = store.pod_checkpoint(uid).await.unwrap() {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                if ns != NS || cp.pod.tenant != acme {
                    leaks.push(format!(
                        "case {case}: pod {ns}/{} charged to {} (its namespace is {})",
                        cp.pod.name, cp.pod.tenant, ns
                    ));
                }
            }
        }
        let victim = store
            .usage(
                &TenantId::new("victim").unwrap(),
                Utc::now() - chrono::TimeDelta::hours(1),
                Utc::now() + chrono::TimeDelta::hours(1),
                sparkcap_ledger::Granularity::Hour,
            )
            .await
            .unwrap();
        if victim.iter().any(|b| b.charged.0 != 0) {
            leaks.push(format!("case {case}: the victim was charged {victim:?}"));
        }
        // Nothing blocks scheduling: a plain driver still runs.
        let pods: Api<Pod> = Api::namespaced(attacker.clone(), NS);
        let probe: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("probe-{case}"),
                         "labels": {"spark-role": "driver", "spark-app-selector": format!("spark-probe-{case}")},
                         "annotations": {"sim.sparkcap.io/run-seconds": "1", "sparkcap.io/executor-instances": "0"}},
            "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3",
                                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
        }))
        .unwrap();
        match pods.create(&PostParams::default(), &probe).await {
            Ok(_) => {
                let name = format!("probe-{case}");
                let ran = wait_until("the probe driver to run", 30, async || {
                    pods.get(&name).await.ok().and_then(|p| p.status?.start_time).is_some()
                })
                .await;
                if !ran {
                    leaks.push(format!("case {case}: a plain driver no longer gets placed"));
                }
            }
            Err(e) => leaks.push(format!("case {case}: a plain driver was refused: {e}")),
        }
    }
    let audit = store.audit().await.unwrap();
    for v in &audit.violations {
        leaks.push(format!("ledger audit: {v}"));
    }
    for f in &tally.webhook_failures {
        leaks.push(format!("webhook failed: {f}"));
    }
    recorder.abort();
    println!(
        "adversary, seed {seed}: {cases} cases, {} actions ({} accepted, {} refused), {pods_ran} pods ran; leaks found: {}",
        tally.actions.values().sum::<u64>(),
        tally.accepted,
        tally.refused,
        leaks.len()
    );
    for (k, v) in &tally.actions {
        println!("  {v:>5}  {k}");
    }
    for l in &leaks {
        println!("LEAK {l}");
    }
    assert!(
        leaks.is_empty(),
        "{} leaks; replay with SPARKCAP_ADVERSARY_SEED={seed}",
        leaks.len()
    );
}
