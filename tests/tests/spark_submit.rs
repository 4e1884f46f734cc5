//! The real spark-submit (Spark 3.5.3 from PyPI's pyspark, the machine's
//! Java) against the test control plane, in cluster mode: what it sends must
//! be stored as kube-apiserver would store it.

use serde_json::json;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::apiserver::resources::find;
use sparkcap_testkit::devcluster::serve_with_kubeconfig;
use sparkcap_testkit::spark::{java_available, spark_home, submit_cluster_mode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_submission_is_stored_faithfully() {
    if !java_available() {
        eprintln!("\n*** SKIPPED: java is not installed, so the real spark-submit cannot run ***\n");
        return;
    }
    let spark = spark_home();
    let server = ApiServer::new();
    server.create_namespace("tenant-acme").unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-spark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let url = serve_with_kubeconfig(&server, &kubeconfig).await.unwrap();

    let (ok, log) = submit_cluster_mode(&spark, &kubeconfig, &url, "tenant-acme").await;
    assert!(ok, "spark-submit failed:\n{log}");

    let pods = find("", "v1", "pods").unwrap();
    let (items, _) = server.store.list(pods, Some("tenant-acme"));
    assert_eq!(items.len(), 1, "one driver pod");
    let driver = &items[0];
    let labels = &driver["metadata"]["labels"];
    assert_eq!(labels["spark-role"], "driver");
    assert_eq!(labels["spark-app-name"], "ingest-orders");
    assert!(labels["spark-app-selector"].as_str().unwrap().starts_with("spark-"));
    let volume = driver["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "spark-conf-volume-driver")
        .expect("the driver mounts its spark.properties ConfigMap");
    let cm_name = volume["configMap"]["name"].as_str().unwrap().to_owned();

    let cms = find("", "v1", "configmaps").unwrap();
    let cm = server.store.get(cms, "tenant-acme", &cm_name).unwrap();
    let props = cm["data"]["spark.properties"].as_str().unwrap();
    assert!(
        props.contains("spark.executor.instances=3") && props.contains("spark.executor.cores=2"),
        "{props}"
    );
    let owner = &cm["metadata"]["ownerReferences"][0];
    assert_eq!(
        owner["uid"], driver["metadata"]["uid"],
        "the ConfigMap is owned by the driver pod"
    );
    assert_eq!(
        cm["metadata"]["managedFields"][0]["manager"],
        json!("fabric8"),
        "server-side applied"
    );

    let svcs = find("", "v1", "services").unwrap();
    let (services, _) = server.store.list(svcs, Some("tenant-acme"));
    assert_eq!(services.len(), 1);
    assert_eq!(
        services[0]["metadata"]["ownerReferences"][0]["uid"],
        driver["metadata"]["uid"]
    );
    assert_eq!(
        services[0]["spec"]["clusterIP"],
        json!("None"),
        "headless driver service"
    );

    // Deleting the driver collects what it owns.
    let name = driver["metadata"]["name"].as_str().unwrap().to_owned();
    server
        .store
        .delete(pods, "tenant-acme", &name, &Default::default())
        .unwrap();
    assert!(server.store.get(cms, "tenant-acme", &cm_name).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// `SPARK_HOME`, the pyspark distribution around it (for `PYTHONPATH`)
/// and the py4j it ships.
fn pyspark(spark: std::path::PathBuf) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dist = spark.parent().unwrap().to_path_buf();
    let py4j = std::fs::read_dir(dist.join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("py4j-")))
        .expect("py4j ships with pyspark");
    (spark, dist, py4j)
}

/// A client-mode pyspark app in `dir`: a driver here asking the API server
/// at `url` for two executors of Spark `version`, waiting `seconds`, then
/// stopping (which deletes them).
fn client_app(dir: &std::path::Path, url: &str, version: &str, seconds: u32) -> std::path::PathBuf {
    let app = dir.join("app.py");
    std::fs::write(
        &app,
        format!(
            "from pyspark import SparkConf, SparkContext\n\
             conf = (SparkConf().setMaster('k8s://{url}').setAppName('ingest-client')\n\
                 .set('spark.kubernetes.namespace', 'tenant-acme')\n\
                 .set('spark.kubernetes.container.image', 'apache/spark:{version}')\n\
                 .set('spark.executor.instances', '2').set('spark.driver.host', '127.0.0.1')\n\
                 .set('spark.scheduler.maxRegisteredResourcesWaitingTime', '2s'))\n\
             sc = SparkContext(conf=conf)\n\
             import time; time.sleep({seconds})\n\
             sc.stop()\n\
             print('CLIENT-DONE')\n"
        ),
    )
    .unwrap();
    app
}

/// Client mode: the driver runs here (pyspark + py4j from the same
/// distribution), creates executor pods, lists and watches them by label
/// selector, and at exit deletes them (and their ConfigMap) by collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_driver_manages_its_executors() {
    if !java_available() {
        eprintln!("\n*** SKIPPED: java is not installed, so the real Spark driver cannot run ***\n");
        return;
    }
    let (spark, dist, py4j) = pyspark(spark_home());
    let server = ApiServer::new();
    server.create_namespace("tenant-acme").unwrap();
    let pods = find("", "v1", "pods").unwrap();
    let (_, _, mut events) = server.store.snapshot_and_watch(pods, Some("tenant-acme"));
    let dir = std::env::temp_dir().join(format!("sparkcap-spark-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let url = serve_with_kubeconfig(&server, &kubeconfig).await.unwrap();
    let app = client_app(&dir, &url, "3.5.3", 3);
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("python3")
            .arg(&app)
            .env("SPARK_HOME", &spark)
            .env("KUBECONFIG", &kubeconfig)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env("PYTHONPATH", format!("{}:{}", dist.display(), py4j.display()))
            .output(),
    )
    .await
    .expect("driver finished within 180 s")
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && log.contains("CLIENT-DONE"),
        "driver failed:\n{log}"
    );

    let mut added = 0;
    let mut deleted = 0;
    while let Ok(e) = events.try_recv() {
        if e.object.pointer("/metadata/labels/spark-role") == Some(&json!("executor")) {
            match e.kind {
                sparkcap_testkit::apiserver::store::EventType::Added => added += 1,
                sparkcap_testkit::apiserver::store::EventType::Deleted => deleted += 1,
                _ => {}
            }
        }
    }
    // Spark's allocator may replace executors that never register (none can
    // here: no container runs), so: at least the two asked for, all removed.
    assert!(
        added >= 2 && added == deleted,
        "executors created {added}, deleted {deleted}"
    );
    assert!(server.store.list(pods, Some("tenant-acme")).0.is_empty());
    let requests = server.requests.lock().unwrap().clone();
    let watched = requests.iter().any(|r| {
        r.starts_with("GET /api/v1/namespaces/tenant-acme/pods?")
            && r.contains("watch=true")
            && r.contains("spark-role%3Dexecutor")
    });
    assert!(
        watched,
        "the driver watches its executors by label selector: {requests:#?}"
    );
    let collection_delete = requests
        .iter()
        .any(|r| r.starts_with("DELETE /api/v1/namespaces/tenant-acme/pods?") && r.contains("labelSelector"));
    assert!(
        collection_delete,
        "the driver deletes its executors by collection: {requests:#?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 20: a real client-mode driver (pyspark `version`, the driver here,
/// executors in the devcluster through sparkcap's webhook and scheduler)
/// asks for two executors and, at `sc.stop()`, deletes them. Each is charged
/// exactly its real life as the kubelet reports it, the application is a
/// job with one run, and the ledger agrees with the cluster.
async fn client_mode_executors_are_charged_to_their_real_end(version: &str) {
    use k8s_openapi::api::core::v1::Pod;
    use sparkcap_ledger::LedgerStore;
    use std::sync::{Arc, Mutex};
    if !java_available() {
        eprintln!("\n*** SKIPPED: java is not installed, so the real Spark driver cannot run ***\n");
        return;
    }
    let (spark, dist, py4j) = pyspark(sparkcap_testkit::spark::spark_home_of(version));
    let server = ApiServer::new();
    let store: Arc<dyn LedgerStore> = Arc::new(sparkcap_ledger::MemoryStore::new());
    let _kubelets = sparkcap_testkit::devcluster::default_cluster(
        &server,
        store.as_ref(),
        "tenants:\n- id: acme\n  vcpu_hours: 500\n",
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-spark-client-{version}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _webhook = sparkcap_testkit::webhook::start(&server, store.clone(), Default::default(), &dir)
        .await
        .unwrap();
    let _scheduler = sparkcap_testkit::scheduler::start(
        &server,
        &store,
        sparkcap_scheduler::shell::ShellConfig {
            meter_period: chrono::TimeDelta::seconds(1),
            ..Default::default()
        },
    );
    let pods_def = find("", "v1", "pods").unwrap();
    let (_, _, mut events) = server.store.snapshot_and_watch(pods_def, Some("tenant-acme"));
    let last: Arc<Mutex<std::collections::HashMap<String, serde_json::Value>>> = Arc::default();
    let seen = last.clone();
    let recorder = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let Some(uid) = e.object.pointer("/metadata/uid").and_then(serde_json::Value::as_str) {
                seen.lock().unwrap().insert(uid.to_owned(), e.object.clone());
            }
        }
    });
    let kubeconfig = dir.join("kubeconfig");
    let url = serve_with_kubeconfig(&server, &kubeconfig).await.unwrap();
    let app = client_app(&dir, &url, version, 6);
    let log_path = dir.join("driver.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut driver = tokio::process::Command::new("python3")
        .arg(&app)
        .env("SPARK_HOME", &spark)
        .env("KUBECONFIG", &kubeconfig)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("PYTHONPATH", format!("{}:{}", dist.display(), py4j.display()))
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(120), driver.wait()).await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let ok = matches!(&status, Ok(Ok(s)) if s.success());
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        ok && log.contains("CLIENT-DONE"),
        "driver failed ({status:?}):\n{log}\nlast requests:\n{}",
        requests
            .iter()
            .filter(|r| r.contains("tenant-acme") && !r.contains("metrics.k8s.io"))
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The executors go once charged (the metering finalizer holds them until then).
    let pods: kube::Api<Pod> = kube::Api::namespaced(server.client(), "tenant-acme");
    for _ in 0..300 {
        if pods.list(&Default::default()).await.unwrap().items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pods.list(&Default::default()).await.unwrap().items.is_empty(),
        "executors left behind"
    );
    let finals: Vec<serde_json::Value> = last.lock().unwrap().values().cloned().collect();
    let executors: Vec<&serde_json::Value> = finals
        .iter()
        .filter(|v| v.pointer("/metadata/labels/spark-role") == Some(&json!("executor")))
        .collect();
    let ran: Vec<&&serde_json::Value> = executors
        .iter()
        .filter(|v| v.pointer("/status/startTime").is_some())
        .collect();
    assert!(ran.len() >= 2, "Spark's two executors ran: {executors:#?}");
    let time = |v: &serde_json::Value, p: &str| {
        chrono::DateTime::parse_from_rfc3339(v.pointer(p).and_then(serde_json::Value::as_str).unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    for v in &ran {
        let uid = v.pointer("/metadata/uid").and_then(serde_json::Value::as_str).unwrap();
        let cp = store
            .pod_checkpoint(uid)
            .await
            .unwrap()
            .expect("every executor that ran is charged");
        let (start, end) = (
            time(v, "/status/startTime"),
            time(v, "/status/containerStatuses/0/state/terminated/finishedAt"),
        );
        assert_eq!(
            v.pointer("/status/containerStatuses/0/state/terminated/exitCode"),
            Some(&json!(143)),
            "deleted by Spark: SIGTERM"
        );
        assert_eq!((cp.pod.started_at, cp.finished_at), (start, Some(end)));
        assert_eq!(cp.outcome, Some(sparkcap_ledger::PodOutcome::Deleted));
        assert_eq!(
            cp.charged.0,
            cp.pod.cpu.0 * (end - start).num_seconds(),
            "its real life"
        );
    }
    let acme = sparkcap_ledger::TenantId::new("acme").unwrap();
    let stats = store.job_stats(Some(&acme)).await.unwrap();
    assert!(
        stats.iter().any(|j| j.job == "ingest-client" && j.state.runs == 1),
        "the client-mode application is a job with one run: {stats:?}"
    );
    let report = sparkcap_scheduler::shell::audit_cluster_now(server.client(), store.as_ref())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    recorder.abort();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_3_5_3_executors_deleted_by_spark_are_charged_to_their_real_end() {
    client_mode_executors_are_charged_to_their_real_end("3.5.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_4_3_0_executors_deleted_by_spark_are_charged_to_their_real_end() {
    client_mode_executors_are_charged_to_their_real_end("4.3.0").await;
}
