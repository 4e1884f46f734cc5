//! sparkcap-scheduler end to end on the test control plane with the webhook
//! and simulated kubelets: Spark pods routed by the webhook are bound by the
//! scheduler and run; what cannot fit gets kube-scheduler's kind of Event;
//! the real spark-submit's driver is bound with its gang's room held.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sparkcap_ledger::{LedgerStore, MemoryStore};
use sparkcap_scheduler::shell::{self, ShellConfig};
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{NodesFile, TenantsFile, register_node, seed};
use sparkcap_testkit::kubelet::Kubelet;
use sparkcap_testkit::spark::{java_available, spark_home, submit_cluster_mode};
use sparkcap_webhook::view::Settings;
use std::sync::Arc;
use std::time::Duration;

struct Cluster {
    server: ApiServer,
    store: Arc<dyn LedgerStore>,
    _kubelets: Vec<Kubelet>,
    _webhook: sparkcap_testkit::webhook::RunningWebhook,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn cluster(name: &str) -> Cluster {
    let server = ApiServer::new();
    let store: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let kubelets = sparkcap_testkit::devcluster::default_cluster(
        &server,
        store.as_ref(),
        "tenants:\n- id: acme\n  vcpu_hours: 500\n",
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-sched-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let webhook = sparkcap_testkit::webhook::start(&server, store.clone(), Settings::default(), &dir)
        .await
        .unwrap();
    let stop = start_scheduler(&server, &store, "scheduler-a");
    Cluster {
        server,
        store,
        _kubelets: kubelets,
        _webhook: webhook,
        _stop: stop,
    }
}

/// Starts a scheduler replica; it stops when the returned sender is dropped.
fn start_scheduler(server: &ApiServer, store: &Arc<dyn LedgerStore>, holder: &str) -> tokio::sync::oneshot::Sender<()> {
    start_scheduler_with(
        server,
        store,
        ShellConfig {
            meter_period: chrono::TimeDelta::seconds(1),
            holder: holder.into(),
            // The tests' notification receivers listen on loopback, as an
            // admin's internal receiver would be allow-listed.
            egress: sparkcap_ledger::egress::EgressPolicy::allowing(["127.0.0.1"]),
            ..ShellConfig::default()
        },
    )
}

fn start_scheduler_with(
    server: &ApiServer,
    store: &Arc<dyn LedgerStore>,
    config: ShellConfig,
) -> tokio::sync::oneshot::Sender<()> {
    sparkcap_testkit::scheduler::start(server, store, config)
}

fn driver(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"spark-role": "driver", "spark-app-selector": format!("spark-{name}"), "spark-app-name": name},
                     "annotations": {"sim.sparkcap.io/run-seconds": "3600", "sparkcap.io/executor-instances": "0"}},
        "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3",
                                 "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}
    }))
    .unwrap()
}

/// A 1-core driver that runs `seconds` and ends by itself.
fn short_driver(name: &str, seconds: u32) -> Pod {
    let mut p = driver(name, "1");
    p.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("sim.sparkcap.io/run-seconds".into(), seconds.to_string());
    p
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..150 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The first Event in `namespace` with `reason`, once there is one.
async fn event(server: &ApiServer, namespace: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(server.client(), namespace);
    wait_for(&format!("an Event {reason}"), async || {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// The ledger's closed checkpoint of the pod with `uid`, once it is there.
async fn closed_checkpoint(store: &Arc<dyn LedgerStore>, uid: &str) -> sparkcap_ledger::PodCheckpoint {
    wait_for("the pod's close in the ledger", async || {
        store
            .pod_checkpoint(uid)
            .await
            .ok()
            .flatten()
            .filter(|cp| cp.finished_at.is_some())
    })
    .await
}

/// A finished pod's own start and container end.
fn run_window(pod: &Pod) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let status = pod.status.as_ref().unwrap();
    let start = sparkcap_scheduler::observe::time(status.start_time.as_ref().unwrap());
    let end = status.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(sparkcap_scheduler::observe::time)
        .unwrap();
    (start, end)
}

/// The first FailedScheduling Event's message in tenant-acme.
async fn failed_scheduling(server: &ApiServer) -> String {
    event(server, "tenant-acme", "FailedScheduling")
        .await
        .message
        .unwrap_or_default()
}

/// Every pod's pool, node and phase and every Event in tenant-acme, for a failure message.
async fn explain(server: &ApiServer) -> String {
    let pods: Api<Pod> = Api::namespaced(server.client(), "tenant-acme");
    let events: Api<Event> = Api::namespaced(server.client(), "tenant-acme");
    let mut out = String::new();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        out.push_str(&format!(
            "pod {} pool={:?} scheduler={:?} node={:?} phase={:?} requests={:?}\n",
            p.metadata.name.unwrap_or_default(),
            p.metadata.labels.unwrap_or_default().get("sparkcap.io/pool"),
            p.spec.as_ref().and_then(|s| s.scheduler_name.clone()),
            p.spec.as_ref().and_then(|s| s.node_name.clone()),
            p.status.and_then(|s| s.phase),
            p.spec
                .map(|s| s.containers.into_iter().map(|c| c.resources).collect::<Vec<_>>()),
        ));
    }
    for e in events.list(&ListParams::default()).await.unwrap().items {
        out.push_str(&format!(
            "event {:?} {:?}: {:?}\n",
            e.involved_object.name, e.reason, e.message
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_pods_are_bound_and_run_or_told_why_not() {
    let c = cluster("bind").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    pods.create(&PostParams::default(), &driver("ingest", "2"))
        .await
        .unwrap();
    let running = wait_for("the driver to run", async || {
        let p = pods.get("ingest").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let spec = running.spec.unwrap();
    // A new job's first runs go to the draft pool (the webhook's choice), and the scheduler honours it.
    assert_eq!(running.metadata.labels.unwrap()["sparkcap.io/pool"], "draft");
    assert_eq!(spec.node_name.as_deref(), Some("draft-1"));

    // 14 more cores fill the 16-core draft node; 15 more fit nowhere: that
    // pod stays Pending with a kube-scheduler-style Event.
    pods.create(&PostParams::default(), &driver("huge", "14"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &driver("huge2", "15"))
        .await
        .unwrap();
    let message = failed_scheduling(&c.server).await;
    assert_eq!(
        message,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match pool draft."
    );
    // The Event and the bind are separate API calls in one pass; wait for both.
    let mut bound = Vec::new();
    for _ in 0..150 {
        bound = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .map(|p| p.metadata.name.unwrap())
            .collect();
        if bound.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        bound.len(),
        2,
        "ingest and the 14-core driver: {bound:?}\n{}",
        explain(&c.server).await
    );
    assert!(!bound.contains(&"huge2".to_string()));
}

/// A pod's charge equals cpu × (its containers' end − its start), to the
/// millicore-second, even with the scheduler replaced while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metering_is_exact_across_a_scheduler_restart() {
    let mut c = cluster("meter").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let mut pod = driver("metered", "1500m");
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("sim.sparkcap.io/run-seconds".into(), "4".into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = wait_for("the pod to run", async || {
        let p = pods.get("metered").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let uid = running.metadata.uid.clone().unwrap();
    // Charged while running...
    wait_for("a first accrual", async || {
        c.store.pod_checkpoint(&uid).await.ok().flatten()
    })
    .await;
    // ...then the scheduler is replaced mid-run by another replica.
    c._stop = start_scheduler(&c.server, &c.store, "scheduler-b");
    let done = wait_for("the pod to finish", async || {
        let p = pods.get("metered").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(p)
    })
    .await;
    let cp = closed_checkpoint(&c.store, &uid).await;
    let (start, end) = run_window(&done);
    assert_eq!(cp.finished_at, Some(end));
    assert_eq!(
        cp.charged.0,
        1500 * (end - start).num_seconds(),
        "cpu × seconds, exactly"
    );
    assert!(c.store.audit().await.unwrap().is_clean());
}

/// The real spark-submit: its driver is routed by the webhook, held until its
/// `spark.properties` ConfigMap says how many executors it will start, then
/// bound with their room held, and run by the simulated kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_spark_submit_driver_is_scheduled_with_its_gang() {
    if !java_available() {
        eprintln!("\n*** SKIPPED: java is not installed, so the real spark-submit cannot run ***\n");
        return;
    }
    let spark = spark_home();
    let c = cluster("spark").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("sparkcap-sched-spark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    sparkcap_testkit::devcluster::write_kubeconfig(&kubeconfig, &url, None).unwrap();
    tokio::spawn(sparkcap_testkit::devcluster::serve(c.server.clone(), listener));
    let (ok, log) = submit_cluster_mode(&spark, &kubeconfig, &url, "tenant-acme").await;
    assert!(ok, "{log}");
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let running = wait_for("the spark-submit driver to run", async || {
        let p = pods.list(&ListParams::default()).await.ok()?.items.into_iter().next()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    assert_eq!(running.spec.unwrap().node_name.as_deref(), Some("draft-1"));
    // Its 3 × 2 executor cores are held: a 10-core pod does not fit in the 16 − 1 − 6 left.
    pods.create(&PostParams::default(), &driver("late", "10"))
        .await
        .unwrap();
    let message = failed_scheduling(&c.server).await;
    assert!(
        message.contains("6000 mCPU of pool draft are held for admitted Spark applications' executors"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Two replicas compete for the Lease; only the leader schedules. When it
/// dies without releasing, the standby takes over after the lease expires;
/// when it stops cleanly, it releases and the standby takes over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_goes() {
    use k8s_openapi::api::coordination::v1::Lease;
    use sparkcap_scheduler::leader::LeaseConfig;
    let c = cluster("lease").await;
    drop(c._stop); // the unelected replica of `cluster` stops; elected ones take over
    let replica = |id: &str| {
        let (client, store) = (c.server.client(), c.store.clone());
        let lease = LeaseConfig {
            lease_duration: chrono::TimeDelta::seconds(2),
            renew_deadline: chrono::TimeDelta::milliseconds(1500),
            retry_period: Duration::from_millis(200),
            ..LeaseConfig::new("default", "sparkcap-scheduler", id)
        };
        let config = ShellConfig {
            meter_period: chrono::TimeDelta::seconds(1),
            ..ShellConfig::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = shell::run_elected(client, store, config, lease, async move {
                let _ = stopped.await;
            })
            .await;
        });
        (stop, task)
    };
    let leases: Api<Lease> = Api::namespaced(c.server.client(), "default");
    let holder = async || {
        leases
            .get_opt("sparkcap-scheduler")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty())
    };
    let (stop_a, task_a) = replica("replica-a");
    wait_for("replica-a to lead", async || {
        holder().await.filter(|h| h == "replica-a")
    })
    .await;
    let (stop_b, task_b) = replica("replica-b");
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let bound = |name: &'static str| {
        let pods = pods.clone();
        async move || pods.get(name).await.ok()?.spec?.node_name
    };
    pods.create(&PostParams::default(), &driver("first", "1"))
        .await
        .unwrap();
    wait_for("first to be bound by the leader", bound("first")).await;
    assert_eq!(
        holder().await.as_deref(),
        Some("replica-a"),
        "the standby did not take the lease"
    );
    // The leader dies without releasing: the standby waits out the lease.
    task_a.abort();
    drop(stop_a);
    wait_for("replica-b to take over", async || {
        holder().await.filter(|h| h == "replica-b")
    })
    .await;
    pods.create(&PostParams::default(), &driver("second", "1"))
        .await
        .unwrap();
    wait_for("second to be bound by the new leader", bound("second")).await;
    let lease = leases.get("sparkcap-scheduler").await.unwrap().spec.unwrap();
    assert!(lease.lease_transitions.unwrap_or(0) >= 1, "{lease:?}");
    // A clean stop releases the lease for the next candidate.
    drop(stop_b);
    task_b.await.unwrap();
    let released = leases.get("sparkcap-scheduler").await.unwrap().spec.unwrap();
    assert_eq!(released.holder_identity.as_deref(), Some(""), "{released:?}");
}

/// A node joining a pool is registered in the ledger in Spark Units within
/// seconds (R1.1–R1.3), and /metrics counts binds, queue and pool sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_sizes_follow_nodes_and_metrics_count_binds() {
    let mut c = cluster("pools").await;
    // The cluster's own replica is replaced by one whose metrics we read.
    let (tx, _) = tokio::sync::oneshot::channel();
    c._stop = tx;
    let metrics = sparkcap_scheduler::metrics::Metrics::new();
    let _stop = start_scheduler_with(
        &c.server,
        &c.store,
        ShellConfig {
            holder: "scheduler-m".into(),
            metrics: metrics.clone(),
            ..ShellConfig::default()
        },
    );
    let shared_units = async || {
        c.store
            .pools()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.pool == sparkcap_ledger::Pool::Shared)
            .map_or(0, |p| p.spark_units)
    };
    assert_eq!(shared_units().await, 4, "one 16-core, 64 GiB shared node");
    let mut spec = NodesFile::default_nodes()
        .nodes
        .into_iter()
        .find(|n| n.name == "shared-1")
        .unwrap();
    spec.name = "shared-2".into();
    register_node(&c.server, &spec).unwrap();
    let started = std::time::Instant::now();
    wait_for("the ledger to count the new node", async || {
        (shared_units().await == 8).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    pods.create(&PostParams::default(), &driver("counted", "1"))
        .await
        .unwrap();
    wait_for("the pod to be bound", async || {
        pods.get("counted").await.ok()?.spec?.node_name
    })
    .await;
    let text = metrics.render();
    for line in [
        "sparkcap_scheduler_binds_total{borrowed=\"false\",pool=\"draft\"} 1",
        "sparkcap_scheduler_spark_units{pool=\"shared\"} 8",
        "sparkcap_scheduler_queue_depth{pool=\"dedicated\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(text.contains("sparkcap_scheduler_passes_total "));
    // Served over HTTP as Prometheus scrapes it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(metrics.clone().serve(listener));
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("sparkcap_scheduler_pass_duration_seconds_bucket"),
        "{body}"
    );
}

/// 40 pods of different sizes and lengths run while the scheduler is killed
/// and replaced twice (each replica claiming the ledger's epoch, as a new
/// leader does): every pod's charge equals cpu × its own run time, to the
/// millicore-second, and so does the tenant's total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_equals_the_analytic_sum_across_scheduler_kills() {
    let mut c = cluster("kills").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    for i in 0..40 {
        let mut pod = driver(&format!("run-{i:02}"), &format!("{}m", 50 + 11 * i));
        let ann = pod.metadata.annotations.as_mut().unwrap();
        ann.insert("sim.sparkcap.io/run-seconds".into(), (2 + i % 5).to_string());
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c._stop = start_scheduler(&c.server, &c.store, "scheduler-b"); // the first is killed
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (tx, _) = tokio::sync::oneshot::channel();
    c._stop = tx; // killed; nobody meters for a while
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c._stop = start_scheduler(&c.server, &c.store, "scheduler-c");
    let finished = wait_for("every pod to finish", async || {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        all.iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .then_some(all)
    })
    .await;
    let mut expected_total = 0;
    for p in &finished {
        let uid = p.metadata.uid.clone().unwrap();
        let cp = closed_checkpoint(&c.store, &uid).await;
        let (start, end) = run_window(p);
        let cpu = sparkcap_scheduler::observe::requests(p).cpu;
        let expected = cpu * (end - start).num_seconds();
        assert_eq!(cp.charged.0, expected, "{}", p.metadata.name.as_deref().unwrap_or(""));
        expected_total += expected;
    }
    let acme = sparkcap_ledger::TenantId::new("acme").unwrap();
    let charged: i64 = c
        .store
        .usage(
            &acme,
            chrono::Utc::now() - chrono::TimeDelta::hours(1),
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
            sparkcap_ledger::Granularity::Hour,
        )
        .await
        .unwrap()
        .iter()
        .map(|b| b.charged.0)
        .sum();
    assert_eq!(charged, expected_total);
    assert!(c.store.audit().await.unwrap().is_clean());
}

/// R5 end to end: a new job's first three runs go to the draft pool; the
/// scheduler's meter closes each with its SLA; after three consecutive runs
/// within it the ledger promotes the job, the notice becomes an Event in
/// the tenant's namespace, and the next run goes to the tenant's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_three_times_in_draft_and_is_promoted() {
    let c = cluster("promote").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let acme = sparkcap_ledger::TenantId::new("acme").unwrap();
    // The tenant's notification receiver: down for the first POST, then up.
    let received = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (received, calls) = (received.clone(), calls.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                received.lock().unwrap().push(body.0);
                axum::http::StatusCode::NO_CONTENT
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    c.store.set_notify_url(&acme, Some(&hook)).await.unwrap();
    // metrics-server's view of each driver: 0.9 of its core and 1 GiB in use.
    let metrics: Api<kube::api::DynamicObject> = Api::namespaced_with(
        c.server.client(),
        "tenant-acme",
        &kube::api::ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        },
    );
    let run = |n: usize| {
        let mut p = driver(&format!("nightly-{n}"), "1");
        let meta = &mut p.metadata;
        meta.labels
            .as_mut()
            .unwrap()
            .insert("spark-app-name".into(), "nightly".into());
        let ann = meta.annotations.as_mut().unwrap();
        ann.insert("sim.sparkcap.io/run-seconds".into(), "2".into());
        ann.insert("sparkcap.io/sla".into(), "10m".into());
        p
    };
    for n in 1..=4 {
        let created = pods.create(&PostParams::default(), &run(n)).await.unwrap();
        let sample = json!({
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
            "metadata": {"name": format!("nightly-{n}"), "namespace": "tenant-acme", "labels": {"spark-role": "driver"}},
            "containers": [{"name": "spark-kubernetes-driver", "usage": {"cpu": "900m", "memory": "1Gi"}}]
        });
        metrics
            .create(&PostParams::default(), &serde_json::from_value(sample).unwrap())
            .await
            .unwrap();
        let pool = created.metadata.labels.as_ref().unwrap()["sparkcap.io/pool"].clone();
        if n <= 3 {
            assert_eq!(pool, "draft", "run {n} profiles in draft");
            closed_checkpoint(&c.store, created.metadata.uid.as_deref().unwrap()).await;
            let stats = wait_for("the run in the job's lifecycle", async || {
                let s = c
                    .store
                    .job_stats(Some(&acme))
                    .await
                    .ok()?
                    .into_iter()
                    .find(|j| j.job == "nightly")?;
                (s.state.runs == n as i64).then_some(s)
            })
            .await;
            assert_eq!(stats.state.sla_seconds, Some(600));
        } else {
            assert_eq!(pool, "shared", "promoted: the 4th run goes to the tenant's pool");
        }
        if n == 3 {
            let s = c.store.job_stats(Some(&acme)).await.unwrap();
            assert_eq!(s[0].state.stage, sparkcap_ledger::lifecycle::JobStage::Production);
            // The webhook's view has to see the promotion before run 4.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    // The promotion's notice is an Event in the tenant's namespace.
    let promoted = event(&c.server, "tenant-acme", "Promoted").await;
    assert!(
        promoted.message.unwrap().contains(
            "job nightly promoted from draft to production after 3 consecutive runs within its SLA of 10 min"
        ),
    );
    let profiles = c.store.run_profiles(&acme, Some("nightly"), 10).await.unwrap();
    assert!(
        profiles
            .iter()
            .all(|p| p.within_sla() && p.pool == sparkcap_ledger::Pool::Draft)
    );
    // Measured use from metrics.k8s.io is in each profile.
    for p in &profiles {
        assert_eq!(
            (p.cpu_used, p.memory_used),
            (
                Some(sparkcap_ledger::Millicores(900)),
                Some(sparkcap_ledger::Bytes(1 << 30))
            ),
            "{p:?}"
        );
    }
    // The notice reached the tenant's URL on the retry after a 503.
    let delivered = wait_for("the notice delivered to the URL", async || {
        let all = c
            .store
            .notices(&sparkcap_ledger::store::NoticeQuery {
                tenant: Some(&acme),
                undelivered: false,
                cursor: None,
                limit: 10,
            })
            .await
            .ok()?;
        all.into_iter().find(|n| n.delivered_at.is_some())
    })
    .await;
    assert_eq!(delivered.attempts, 1);
    assert!(
        delivered.last_error.as_deref().unwrap().contains("HTTP 503"),
        "{delivered:?}"
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["kind"], "promoted");
    assert_eq!(got[0]["id"], delivered.id);
}

/// A ScheduledSparkApplication admitted while its slices were free, but
/// taken by another schedule before the controller could reserve them, is
/// told so by an Event and a status condition with the alternatives; one
/// that fits is reserved, and deleting it releases the slices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_applications_reserve_slices_and_losers_are_told() {
    use kube::api::{DeleteParams, DynamicObject};
    use sparkcap_ledger::slices::{JobSchedule, Offset, SlicePolicy, StoredSchedule};
    let server = ApiServer::new();
    let nodes = NodesFile::default_nodes();
    for n in &nodes.nodes {
        register_node(&server, n).unwrap();
    }
    let store: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let tenants =
        TenantsFile::parse("tenants:\n- id: acme\n  vcpu_hours: 500\n- id: beta\n  vcpu_hours: 500\n").unwrap();
    seed(&server, store.as_ref(), &nodes, &tenants).await.unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-sched-ssa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _webhook = sparkcap_testkit::webhook::start(&server, store.clone(), Settings::default(), &dir)
        .await
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "tenant-acme",
        &sparkcap_scheduler::reservations::resource(),
    );
    let ssa = |name: &str, schedule: &str| -> DynamicObject {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../webhook/tests/fixtures/scheduled-spark-application.json"
        ))
        .unwrap();
        v["metadata"]["name"] = json!(name);
        v["metadata"]["annotations"] = json!({"sparkcap.io/expected-duration": "30m"});
        v["spec"]["schedule"] = json!(schedule);
        serde_json::from_value(v).unwrap()
    };
    // Admitted (nothing reserved yet), before any scheduler runs.
    api.create(&PostParams::default(), &ssa("nightly-orders", "0 2 * * *"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &ssa("nightly-refunds", "0 4 * * *"))
        .await
        .unwrap();
    // Meanwhile another client reserves acme's whole cap at 04:00 over the API.
    let taken = StoredSchedule {
        tenant: sparkcap_ledger::TenantId::new("acme").unwrap(),
        job: "warehouse".into(),
        pool: sparkcap_ledger::Pool::Shared,
        spec: JobSchedule {
            schedule: "0 4 * * *".into(),
            offset: Offset(0),
            duration: chrono::TimeDelta::hours(1),
            cores: 3000,
        },
        source: "api".into(),
        updated_at: chrono::Utc::now(),
    };
    let d = store
        .put_schedule(None, &taken, &SlicePolicy::default(), chrono::Utc::now(), false)
        .await
        .unwrap();
    assert!(matches!(d, sparkcap_ledger::slices::Decision::Accepted { .. }), "{d:?}");
    let _stop = start_scheduler(&server, &store, "scheduler-a");
    let reason = |name: &'static str| {
        let api = api.clone();
        async move {
            let o = api.get(name).await.ok()?;
            let c = o.data.pointer("/status/conditions/0")?.clone();
            Some((c["reason"].as_str()?.to_owned(), c["message"].as_str()?.to_owned()))
        }
    };
    let (r, _) = wait_for("nightly-orders reserved", async || reason("nightly-orders").await).await;
    assert_eq!(r, "Reserved");
    let (r, m) = wait_for("nightly-refunds refused", async || reason("nightly-refunds").await).await;
    assert_eq!(r, "SlicesUnavailable");
    assert!(
        m.contains("ScheduledSparkApplication nightly-refunds does not fit in the shared pool's time slices")
            && m.contains("these would fit"),
        "{m}"
    );
    let ev = event(&server, "tenant-acme", "SlicesUnavailable").await;
    assert_eq!(ev.involved_object.name.as_deref(), Some("nightly-refunds"));
    // The controller's own status write comes back as a watch event: it is told once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events: Api<Event> = Api::namespaced(server.client(), "tenant-acme");
    let refusals = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SlicesUnavailable"))
        .count();
    assert_eq!(refusals, 1);
    let sources: Vec<String> = store
        .schedules(None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.source)
        .collect();
    assert_eq!(
        sources,
        vec![
            "scheduledsparkapplication/tenant-acme/nightly-orders".to_owned(),
            "api".to_owned()
        ]
    );
    // Deleting the object releases its slices.
    api.delete("nightly-orders", &DeleteParams::default()).await.unwrap();
    wait_for("the reservation released", async || {
        let left = store.schedules(None).await.ok()?;
        (left.len() == 1).then_some(())
    })
    .await;
}

/// A tenant cannot run unmetered or charge someone else by labelling its
/// pods: hand-set sparkcap labels at creation are replaced or refused, a pod
/// naming sparkcap-scheduler without the webhook is never placed, and
/// labels changed on a running pod move no charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_dodge_metering_with_labels() {
    use kube::api::Patch;
    let mut c = cluster("dodge").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    // 1. No spark-role, but sparkcap's scheduler and a pool toleration by
    //    hand, or a node named outright: refused at creation.
    let sneaky = |name: &str, spec: serde_json::Value| -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]);
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"sparkcap.io/tenant": "acme", "sparkcap.io/pool": "dedicated"}},
            "spec": spec
        }))
        .unwrap()
    };
    for (name, spec, why) in [
        (
            "sneaky",
            json!({"schedulerName": "sparkcap-scheduler"}),
            "names spec.schedulerName=sparkcap-scheduler",
        ),
        (
            "tolerant",
            json!({"tolerations": [{"key": "sparkcap.io/pool", "operator": "Exists"}]}),
            "tolerates sparkcap's pool taint",
        ),
        (
            "wildcard",
            json!({"tolerations": [{"operator": "Exists"}]}),
            "tolerates sparkcap's pool taint",
        ),
        (
            "preset",
            json!({"nodeName": "dedicated-0"}),
            "sets spec.nodeName=dedicated-0",
        ),
    ] {
        let err = pods
            .create(&PostParams::default(), &sneaky(name, spec))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{name}: {err}");
    }
    // A Spark driver with a node preset is refused too.
    let mut preset = driver("preset-driver", "1");
    preset.spec.as_mut().unwrap().node_name = Some("dedicated-0".into());
    let err = pods.create(&PostParams::default(), &preset).await.unwrap_err();
    assert!(err.to_string().contains("spec.nodeName=dedicated-0"), "{err}");
    // A plain pod is allowed, but cannot become a Spark pod or gain a pool toleration later.
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &plain).await.unwrap();
    for (patch, why) in [
        (
            json!({"metadata": {"labels": {"spark-role": "executor", "sparkcap.io/tenant": "acme"}}}),
            "cannot be added",
        ),
        (
            json!({"spec": {"tolerations": [{"key": "sparkcap.io/pool", "operator": "Exists", "effect": "NoSchedule"}]}}),
            "toleration",
        ),
    ] {
        let err = pods
            .patch("plain", &kube::api::PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    // 2. A Spark driver claiming to be borrowed and another tenant's: relabelled by the webhook.
    let mut forged = driver("forged", "1");
    let labels = forged.metadata.labels.as_mut().unwrap();
    labels.insert("sparkcap.io/opportunistic".into(), "true".into());
    labels.insert("sparkcap.io/tenant".into(), "someone-else".into());
    forged
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("sim.sparkcap.io/run-seconds".into(), "5".into());
    let created = pods.create(&PostParams::default(), &forged).await.unwrap();
    let l = created.metadata.labels.as_ref().unwrap();
    assert_eq!(l.get("sparkcap.io/tenant").map(String::as_str), Some("acme"));
    assert!(!l.contains_key("sparkcap.io/opportunistic"));
    let uid = created.metadata.uid.clone().unwrap();
    wait_for("a first accrual", async || {
        c.store.pod_checkpoint(&uid).await.ok().flatten()
    })
    .await;
    // 3. Relabelling it while it runs is refused, label by label; then the
    //    scheduler restarts: still acme's, still charged by its recorded binding.
    for labels in [
        json!({"sparkcap.io/opportunistic": "true"}),
        json!({"sparkcap.io/tenant": "someone-else"}),
        json!({"sparkcap.io/pool": "dedicated"}),
        json!({"spark-role": null}),
    ] {
        let err = pods
            .patch(
                "forged",
                &kube::api::PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("denied the request"), "{labels}: {err}");
    }
    let recorded = c
        .store
        .binding(&uid)
        .await
        .unwrap()
        .expect("bound pods have a ledger binding");
    assert_eq!(recorded.tenant.as_str(), "acme");
    assert!(!recorded.opportunistic);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c._stop = start_scheduler(&c.server, &c.store, "scheduler-b");
    let done = wait_for("the pod to finish", async || {
        let p = pods.get("forged").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(p)
    })
    .await;
    let cp = closed_checkpoint(&c.store, &uid).await;
    let (start, end) = run_window(&done);
    assert_eq!(cp.pod.tenant.as_str(), "acme");
    assert!(!cp.pod.opportunistic);
    assert_eq!(cp.charged.0, 1000 * (end - start).num_seconds(), "every second charged");
    // Its object went once its charge was committed: the finalizer released.
    wait_for("the finalizer released", async || {
        let p = pods.get("forged").await.ok()?;
        (!p.finalizers().iter().any(|f| f == "sparkcap.io/metering")).then_some(())
    })
    .await;
    assert!(c.store.audit().await.unwrap().is_clean());
}

/// Every way a pod ends is charged to its real end: a pod deleted while it
/// runs (as Spark deletes executors, as people delete drivers) is charged to
/// the `finishedAt` its kubelet reports, its object stays (finalizer) until
/// that charge is committed, and a pod deleted before it started costs
/// nothing and goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pods_are_charged_to_their_real_end() {
    let c = cluster("deleted").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    // What the cluster reports, from the store's own event stream: each
    // pod's last state, kept after the object is gone.
    let def = sparkcap_testkit::apiserver::resources::find("", "v1", "pods").unwrap();
    let (_, _, mut events) = c.server.store.snapshot_and_watch(def, Some("tenant-acme"));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        serde_json::Value,
    >::new()));
    let seen2 = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let Some(uid) = e.object.pointer("/metadata/uid").and_then(serde_json::Value::as_str) {
                seen2.lock().unwrap().insert(uid.to_owned(), e.object.clone());
            }
        }
    });
    let mut uids = Vec::new();
    for i in 0..4 {
        let created = pods
            .create(&PostParams::default(), &driver(&format!("del-{i}"), "1"))
            .await
            .unwrap();
        uids.push(created.metadata.uid.unwrap());
    }
    // One that is deleted after its bind but before it starts.
    let mut slow = driver("never", "1");
    slow.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("sim.sparkcap.io/start-seconds".into(), "600".into());
    let never = pods
        .create(&PostParams::default(), &slow)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    for i in 0..4 {
        let name = format!("del-{i}");
        wait_for("running", async || {
            let p = pods.get(&name).await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let p = pods.get(&name).await.unwrap();
        assert!(
            p.finalizers().iter().any(|f| f == "sparkcap.io/metering"),
            "a bound pod carries the metering finalizer"
        );
    }
    wait_for("the slow pod bound", async || {
        c.store.binding(&never).await.ok().flatten().map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let started = std::time::Instant::now();
    for i in 0..4 {
        pods.delete(&format!("del-{i}"), &Default::default()).await.unwrap();
    }
    pods.delete("never", &Default::default()).await.unwrap();
    let mut finals = Vec::new();
    for (i, uid) in uids.iter().enumerate() {
        // The kubelet reports the end; the meter closes and releases; the object goes.
        let cp = closed_checkpoint(&c.store, uid).await;
        wait_for("the object to go", async || {
            pods.get_opt(&format!("del-{i}")).await.ok()?.is_none().then_some(())
        })
        .await;
        finals.push(cp);
    }
    let released_in = started.elapsed();
    wait_for("the unstarted pod to go", async || {
        pods.get_opt("never").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        c.store.pod_checkpoint(&never).await.unwrap().is_none(),
        "never started: nothing charged"
    );
    assert!(
        c.store.open_bindings().await.unwrap().is_empty(),
        "every binding closed"
    );
    let time = |v: &serde_json::Value, p: &str| {
        chrono::DateTime::parse_from_rfc3339(v.pointer(p).and_then(serde_json::Value::as_str).unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    for cp in &finals {
        let last = seen.lock().unwrap()[&cp.pod.uid].clone();
        // Against the cluster: the kubelet's startTime and finishedAt.
        let start = time(&last, "/status/startTime");
        let end = time(&last, "/status/containerStatuses/0/state/terminated/finishedAt");
        assert_eq!(
            last.pointer("/status/containerStatuses/0/state/terminated/exitCode"),
            Some(&json!(143))
        );
        assert_eq!(cp.outcome, Some(sparkcap_ledger::PodOutcome::Deleted));
        assert_eq!((cp.pod.started_at, cp.finished_at), (start, Some(end)));
        assert_eq!(
            cp.charged.0,
            1000 * (end - start).num_seconds(),
            "charged exactly its life"
        );
    }
    assert!(released_in < Duration::from_secs(15), "released in {released_in:?}");
    assert!(c.store.audit().await.unwrap().is_clean());
    // And against the cluster: nothing ran unmetered, every end agrees.
    let report = sparkcap_scheduler::shell::audit_cluster_now(c.server.client(), c.store.as_ref())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    watcher.abort();
}

/// Issue 20 item 5: `audit --against-cluster` finds what the ledger's own
/// audit cannot: a pod that ran on a pool node with no ledger row (created
/// past admission, as a tenant could before issue 19), and a closed row
/// whose end the cluster contradicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_against_the_cluster_finds_unmetered_pods_and_wrong_ends() {
    let c = cluster("audit").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let quick = short_driver("metered", 2);
    let metered = pods
        .create(&PostParams::default(), &quick)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    closed_checkpoint(&c.store, &metered).await;
    let clean = sparkcap_scheduler::shell::audit_cluster_now(c.server.client(), c.store.as_ref())
        .await
        .unwrap();
    assert!(clean.is_clean() && clean.pods >= 1, "{clean:?}");
    // Straight into the store, past the webhook: on a pool node, no row.
    let def = sparkcap_testkit::apiserver::resources::find("", "v1", "pods").unwrap();
    let forged = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "forged", "namespace": "tenant-acme", "annotations": {"sim.sparkcap.io/run-seconds": "3600"}},
        "spec": {"nodeName": "shared-1", "containers": [{"name": "c", "image": "busybox",
                 "resources": {"requests": {"cpu": "2"}}}],
                 "tolerations": [{"key": "sparkcap.io/pool", "operator": "Exists"}]}
    });
    c.server.store.create(def, "tenant-acme", forged, false).unwrap();
    wait_for("the forged pod running", async || {
        let p = pods.get("forged").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let report = sparkcap_scheduler::shell::audit_cluster_now(c.server.client(), c.store.as_ref())
        .await
        .unwrap();
    assert_eq!(
        report.count(sparkcap_scheduler::audit::Kind::Unrecorded),
        1,
        "{report:?}"
    );
    assert!(report.findings[0].pod == "tenant-acme/forged", "{report:?}");
    // A row whose end the kubelet contradicts: the pod object rewritten to
    // say it ran 30 s longer than the ledger closed it.
    let mut p = c.server.store.get(def, "tenant-acme", "metered").unwrap();
    let end = p
        .pointer("/status/containerStatuses/0/state/terminated/finishedAt")
        .and_then(serde_json::Value::as_str)
        .unwrap()
        .to_owned();
    let later = (chrono::DateTime::parse_from_rfc3339(&end).unwrap() + chrono::TimeDelta::seconds(30))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = json!(later);
    c.server
        .store
        .update(def, "tenant-acme", "metered", p, Some("status"), false)
        .unwrap();
    let report = sparkcap_scheduler::shell::audit_cluster_now(c.server.client(), c.store.as_ref())
        .await
        .unwrap();
    assert_eq!(
        report.count(sparkcap_scheduler::audit::Kind::EndDiffers),
        1,
        "{report:?}"
    );
    assert_eq!(
        report.count(sparkcap_scheduler::audit::Kind::ChargeDiffers),
        1,
        "{report:?}"
    );
}

/// Uninstalling: `release-finalizers` charges what ran and removes the
/// metering finalizer from every pod, so nothing waits on a scheduler that
/// is gone; a running pod is charged up to then and left open for a reinstall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_finalizers_charges_then_frees_every_pod() {
    let c = cluster("release").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let quick = short_driver("quick", 2);
    let quick_uid = pods
        .create(&PostParams::default(), &quick)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let long_uid = pods
        .create(&PostParams::default(), &driver("long", "2"))
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let done = wait_for("quick to finish", async || {
        let p = pods.get("quick").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(p)
    })
    .await;
    // The scheduler stops (as helm uninstall would stop it); nothing metered it since.
    let Cluster {
        server,
        store,
        _kubelets,
        _webhook,
        _stop,
    } = c;
    drop(_stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = chrono::Utc::now();
    let report = shell::release_finalizers_for_uninstall(
        server.client(),
        store.clone(),
        ShellConfig {
            holder: "release".into(),
            ..ShellConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((report.failed, report.left_running), (0, 1), "{report:?}");
    assert_eq!(report.released, 2, "{report:?}");
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        assert!(
            !p.finalizers().iter().any(|f| f == "sparkcap.io/metering"),
            "{}",
            p.name_any()
        );
    }
    let (start, end) = run_window(&done);
    let q = store.pod_checkpoint(&quick_uid).await.unwrap().unwrap();
    assert_eq!(q.finished_at, Some(end));
    assert_eq!(q.charged.0, 1000 * (end - start).num_seconds());
    let l = store.pod_checkpoint(&long_uid).await.unwrap().unwrap();
    assert!(l.finished_at.is_none(), "a running pod stays open for a reinstall");
    assert!(
        l.charged_until >= before - chrono::TimeDelta::seconds(1),
        "charged up to the release"
    );
    // Deleting it now waits for nobody.
    pods.delete("long", &Default::default()).await.unwrap();
    wait_for("the pod to go", async || {
        pods.get_opt("long").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(store.audit().await.unwrap().is_clean());
}

/// Restart recovery: while no scheduler runs, one pod finishes and the
/// tenant is pushed over its balance by other usage. The next scheduler
/// charges each pod from its real start to its real end, exactly once,
/// into debt if need be: a tenant over balance is refused new drivers, not
/// let off what already ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_charges_what_ran_while_it_was_down() {
    use sparkcap_ledger::{AccrualRequest, Millicores, PodOutcome, PodUsage, Pool, TenantId};
    let mut c = cluster("recover").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let mut uids = Vec::new();
    for (name, secs) in [("runner", "8"), ("quick", "2")] {
        let mut p = driver(name, "1");
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("sim.sparkcap.io/run-seconds".into(), secs.into());
        uids.push(
            pods.create(&PostParams::default(), &p)
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap(),
        );
    }
    for name in ["runner", "quick"] {
        wait_for("the pod to run", async || {
            let p = pods.get(name).await.ok()?;
            p.spec?.node_name.map(|_| ())
        })
        .await;
    }
    // No scheduler for a while; meanwhile 600 vCPU-hours of other usage
    // (the tenant bought 500) are recorded by another writer.
    c._stop = tokio::sync::oneshot::channel().0;
    let acme = TenantId::new("acme").unwrap();
    let epoch = c.store.claim_epoch("other-writer").await.unwrap();
    let t0 = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let big = PodUsage {
        uid: "elsewhere".into(),
        tenant: acme.clone(),
        namespace: "tenant-acme".into(),
        name: "elsewhere".into(),
        app_id: None,
        job: None,
        role: None,
        pool: Pool::Shared,
        cpu: Millicores(600_000),
        opportunistic: false,
        started_at: t0,
    };
    c.store
        .accrue(
            epoch,
            &[AccrualRequest {
                pod: big,
                until: t0 + chrono::TimeDelta::hours(1),
                finished: true,
                outcome: Some(PodOutcome::Succeeded),
                run: None,
            }],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c._stop = start_scheduler(&c.server, &c.store, "scheduler-b");
    for (uid, name) in uids.iter().zip(["runner", "quick"]) {
        let cp = closed_checkpoint(&c.store, uid).await;
        let done = pods.get(name).await.unwrap();
        let (start, end) = run_window(&done);
        assert_eq!(cp.pod.started_at, start, "{name}: from its real start");
        assert_eq!(cp.finished_at, Some(end), "{name}: to its real end");
        assert_eq!(
            cp.charged.0,
            1000 * (end - start).num_seconds(),
            "{name}: every second, once"
        );
    }
    let b = c.store.balance(&acme, chrono::Utc::now()).await.unwrap();
    assert!(b.remaining.0 < 0, "in debt: {b:?}");
    assert!(c.store.audit().await.unwrap().is_clean());
}

/// Issue 19 item 11: a tenant's notification URL cannot make the scheduler
/// POST to loopback (or any internal address) unless an admin allow-listed
/// the host, and a redirect from an allowed receiver is not followed; each
/// refusal is recorded on the notice with its reason, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_urls_cannot_reach_internal_addresses_or_redirect() {
    use sparkcap_ledger::lifecycle::{Notice, NoticeKind};
    use sparkcap_ledger::store::NoticeQuery;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = ApiServer::new();
    let store: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let acme = sparkcap_ledger::TenantId::new("acme").unwrap();
    store
        .create_tenant(
            sparkcap_ledger::NewTenant {
                id: acme.clone(),
                display_name: "Acme".into(),
                tier: Default::default(),
                namespaces: vec![],
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    // An internal service that must never be reached, and an allowed
    // receiver that redirects to it.
    let internal_hits = Arc::new(AtomicUsize::new(0));
    let internal = {
        let hits = internal_hits.clone();
        axum::Router::new().fallback(move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "secret"
        })
    };
    let internal_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_url = format!(
        "http://127.0.0.1:{}/admin",
        internal_listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(internal_listener, internal).await });
    let redirector = {
        let to = internal_url.clone();
        axum::Router::new().fallback(move || async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
        })
    };
    let redirector_listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let redirector_url = format!(
        "http://127.0.0.2:{}/hook",
        redirector_listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(redirector_listener, redirector).await });

    let mut config = ShellConfig::default();
    let notify = |config: &ShellConfig| {
        let (server, store, config) = (&server, store.clone(), config.clone());
        async move {
            let n = Notice::new(
                &acme_id(),
                None,
                NoticeKind::SlaExceeded,
                chrono::Utc::now(),
                "late".into(),
            );
            let id = store.add_notice(None, &n).await.unwrap().unwrap();
            let http = sparkcap_scheduler::notifier::http_client(&config.egress);
            let epoch = store.claim_epoch("notifier").await.unwrap();
            let fenced = sparkcap_scheduler::fenced::FencedStore::new(store.clone(), epoch);
            sparkcap_scheduler::notifier::deliver_due(&server.client(), &http, &fenced, &config, chrono::Utc::now())
                .await
                .unwrap();
            let all = store
                .notices(&NoticeQuery {
                    tenant: None,
                    undelivered: false,
                    cursor: None,
                    limit: 100,
                })
                .await
                .unwrap();
            all.into_iter().find(|x| x.id == id).unwrap()
        }
    };
    // No allow-list: loopback over http and over https, the cloud's
    // metadata address, and cluster names are refused before any request.
    for url in [
        internal_url.clone(),
        internal_url.replace("http://", "https://"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://sparkcap-webhook.sparkcap.svc:8444/api/v1/tenants".to_owned(),
    ] {
        store.set_notify_url(&acme, Some(&url)).await.unwrap();
        let n = notify(&config).await;
        // Given up at once (settled on the first attempt), with the reason.
        assert!(n.delivered_at.is_some() && n.attempts == 1, "{url}: {n:?}");
        let why = n.last_error.unwrap_or_default();
        assert!(
            why.contains("must use https://") || why.contains("address") || why.contains("internal"),
            "{url}: {why}"
        );
    }
    // The admin allow-lists the receiver's host only: its redirect to the
    // internal service is not followed.
    config.egress = sparkcap_ledger::egress::EgressPolicy::allowing(["127.0.0.2"]);
    store.set_notify_url(&acme, Some(&redirector_url)).await.unwrap();
    let n = notify(&config).await;
    assert!(n.delivered_at.is_none(), "{n:?}");
    assert!(
        n.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("redirects are not followed"),
        "{n:?}"
    );
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "the internal service was never reached"
    );
}

fn acme_id() -> sparkcap_ledger::TenantId {
    sparkcap_ledger::TenantId::new("acme").unwrap()
}

/// Issue 20 item 6: a client-mode application (its driver outside the
/// cluster, executors only) is a job with runs like any other: its
/// executors are charged to their real ends, deleted by the driver's
/// `sc.stop()` or ended by themselves, and when the last one ends the run
/// is recorded (profile, job lifecycle), so `GET /jobs` lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_applications_are_jobs_with_runs() {
    let c = cluster("client").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let acme = sparkcap_ledger::TenantId::new("acme").unwrap();
    let executor = |n: usize, run_seconds: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("pythonpi-exec-{n}"),
                         "labels": {"spark-role": "executor", "spark-app-selector": "spark-client-1",
                                    "spark-app-name": "pythonpi", "spark-exec-id": n.to_string()},
                         "annotations": {"sim.sparkcap.io/run-seconds": run_seconds, "sparkcap.io/sla": "10m"}},
            "spec": {"containers": [{"name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3",
                                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
        }))
        .unwrap()
    };
    // One ends by itself; the other runs until the driver deletes it.
    let quick = pods.create(&PostParams::default(), &executor(1, "2")).await.unwrap();
    let held = pods.create(&PostParams::default(), &executor(2, "3600")).await.unwrap();
    wait_for("the held executor running", async || {
        let p = pods.get("pythonpi-exec-2").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let quick_cp = closed_checkpoint(&c.store, quick.metadata.uid.as_deref().unwrap()).await;
    assert!(
        c.store.job_stats(Some(&acme)).await.unwrap().is_empty(),
        "one executor still runs: the run goes on"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pods.delete("pythonpi-exec-2", &Default::default()).await.unwrap();
    let held_cp = closed_checkpoint(&c.store, held.metadata.uid.as_deref().unwrap()).await;
    assert_eq!(held_cp.outcome, Some(sparkcap_ledger::PodOutcome::Deleted));
    for cp in [&quick_cp, &held_cp] {
        let life = cp.finished_at.unwrap() - cp.pod.started_at;
        assert_eq!(cp.charged.0, 1000 * life.num_seconds(), "charged its real life");
    }
    let stats = wait_for("the client-mode run recorded", async || {
        let s = c.store.job_stats(Some(&acme)).await.ok()?;
        s.into_iter().find(|j| j.job == "pythonpi" && j.state.runs == 1)
    })
    .await;
    assert_eq!(stats.state.sla_seconds, Some(600));
    let profiles = c.store.run_profiles(&acme, Some("pythonpi"), 10).await.unwrap();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    let run = &profiles[0];
    assert_eq!(run.app_id, "spark-client-1");
    assert_eq!(run.outcome, sparkcap_ledger::store::RunOutcome::Succeeded);
    assert_eq!(
        (run.started_at, run.finished_at),
        (
            quick_cp.pod.started_at.min(held_cp.pod.started_at),
            held_cp.finished_at.unwrap().max(quick_cp.finished_at.unwrap())
        ),
        "a client-mode run spans its executors"
    );
    assert_eq!(run.vcpu.0, quick_cp.charged.0 + held_cp.charged.0);
    let jobs = c.store.jobs(&acme).await.unwrap();
    assert!(
        jobs.iter().any(|j| j.job == "pythonpi" && j.finished_runs == 1),
        "GET /jobs lists it: {jobs:?}"
    );
    let runs = c
        .store
        .job_runs(
            &acme,
            &sparkcap_ledger::store::RunQuery {
                job: Some("pythonpi"),
                from: chrono::Utc::now() - chrono::TimeDelta::hours(1),
                to: chrono::Utc::now() + chrono::TimeDelta::hours(1),
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "GET /runs lists it: {runs:?}");
}

/// Issue 20: a pod whose node is lost is charged up to the node's loss —
/// not for the minutes until the node lifecycle controller evicts it, nor
/// for however long it stays terminating with no kubelet to confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_a_lost_node_is_charged_up_to_the_loss() {
    let mut c = cluster("lost").await;
    let pods: Api<Pod> = Api::namespaced(c.server.client(), "tenant-acme");
    let uid = pods
        .create(&PostParams::default(), &driver("stranded", "2"))
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let node = wait_for("running", async || {
        let p = pods.get("stranded").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p.spec?.node_name?)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // default_nodes: dedicated-1, shared-1, draft-1.
    let index = ["dedicated-1", "shared-1", "draft-1"]
        .iter()
        .position(|n| *n == node)
        .unwrap();
    let kubelet = c._kubelets.remove(index);
    kubelet.fail_node(Duration::from_secs(2));
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.server.client());
    let lost_at = nodes.get(&node).await.unwrap().status.unwrap().conditions.unwrap()[0]
        .last_transition_time
        .clone()
        .unwrap()
        .0;
    let cp = closed_checkpoint(&c.store, &uid).await;
    let lost_at = chrono::DateTime::<chrono::Utc>::from_timestamp(lost_at.as_second(), 0).unwrap();
    assert_eq!(cp.finished_at, Some(lost_at), "closed at the node's loss");
    assert_eq!(cp.charged.0, 2000 * (lost_at - cp.pod.started_at).num_seconds());
    let p = pods.get("stranded").await.unwrap();
    assert!(
        p.metadata.deletion_timestamp.is_some(),
        "evicted by the node lifecycle controller"
    );
    // Released once charged, though no kubelet confirms the end (the
    // release follows the close on the same pass or the next).
    wait_for("the metering finalizer released", async || {
        let p = pods.get("stranded").await.ok()?;
        (!p.finalizers().iter().any(|f| f == "sparkcap.io/metering")).then_some(())
    })
    .await;
}
