//! A leader frozen past its lease (SIGSTOP), a standby taking over, then the
//! old leader resumed (SIGCONT): the scheduler replicas are separate
//! `sparkcap-scheduler run` processes against the test control plane and a
//! real Postgres. The standby takes the Lease; the resumed leader's writes
//! are refused by the ledger's fencing and it steps down; no pod is bound
//! twice and every pod is charged cpu × its run time exactly.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sparkcap_ledger::LedgerStore;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{default_cluster, serve_with_kubeconfig};
use sparkcap_testkit::harness::lease_holder;
use sparkcap_testkit::harness::procs::{FAST_SCHEDULER_ARGS, Proc, binary};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `sparkcap-scheduler run` as `identity`, started, its output in
/// `<dir>/<identity>.log`. Killed when dropped, so a failed assertion
/// leaves no scheduler behind.
fn scheduler(bin: &Path, dir: &Path, kubeconfig: &Path, url: &str, identity: &str) -> Proc {
    let args: Vec<&str> = FAST_SCHEDULER_ARGS
        .iter()
        .copied()
        .chain(["--identity", identity])
        .collect();
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 temporary directory");
    let envs = [("KUBECONFIG", kubeconfig), ("DATABASE_URL", url), ("RUST_LOG", "warn")];
    let mut p = Proc::new(identity, bin.to_path_buf(), &args, &envs, dir);
    p.start().expect("start sparkcap-scheduler");
    p
}

fn driver(name: &str, seconds: u64) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"spark-role": "driver", "spark-app-selector": format!("spark-{name}"), "spark-app-name": name},
                     "annotations": {"sim.sparkcap.io/run-seconds": seconds.to_string(), "sparkcap.io/executor-instances": "0"}},
        "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3",
                                 "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}
    })
}

/// Polls `done` every 100 ms for up to 60 s; how long it took. On a
/// timeout, panics with both schedulers' logs (from `dir`).
async fn wait_until(what: &str, dir: &Path, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if done().await {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: Vec<String> = ["scheduler-a", "scheduler-b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
        .collect();
    panic!(
        "timed out waiting for {what}; scheduler logs:\n{}",
        logs.join("\n---\n")
    );
}

/// Whether every pod of `uids` has a ledger checkpoint matching `closed`.
async fn all_metered(store: &sparkcap_ledger::PgStore, uids: &[String], closed: bool) -> bool {
    for u in uids {
        let ok = store
            .pod_checkpoint(u)
            .await
            .ok()
            .flatten()
            .is_some_and(|c| !closed || c.finished_at.is_some());
        if !ok {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_fenced_out_when_it_wakes() {
    // Not skipped when missing: without the binary this test proves nothing.
    let bin = binary("sparkcap-scheduler").unwrap_or_else(|e| panic!("{e:#}"));
    let db = TestDatabase::create().await.expect("test database");
    let store = Arc::new(db.store().await.unwrap());
    let server = ApiServer::new();
    let _kubelets = default_cluster(&server, store.as_ref(), "tenants:\n- id: acme\n  vcpu_hours: 500\n")
        .await
        .unwrap();
    server.create_namespace("sparkcap-system").unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-pause-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = sparkcap_webhook::view::Settings {
        draft_runs: 0,
        ..Default::default()
    };
    let _webhook = sparkcap_testkit::webhook::start(&server, store.clone(), settings, &dir)
        .await
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    serve_with_kubeconfig(&server, &kubeconfig).await.unwrap();

    let mut a = scheduler(&bin, &dir, &kubeconfig, &db.url, "scheduler-a");
    let leases: Api<Lease> = Api::namespaced(server.client(), "sparkcap-system");
    let pods: Api<Pod> = Api::namespaced(server.client(), "tenant-acme");
    wait_until("scheduler-a to lead", &dir, async || {
        lease_holder(&leases).await.as_deref() == Some("scheduler-a")
    })
    .await;
    let mut uids = Vec::new();
    for i in 0..6 {
        let p: Pod = serde_json::from_value(driver(&format!("before-{i}"), 12)).unwrap();
        uids.push(
            pods.create(&PostParams::default(), &p)
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap(),
        );
    }
    wait_until("a's first charges", &dir, async || {
        all_metered(&store, &uids, false).await
    })
    .await;

    // Freeze the leader; start a standby, which takes the Lease once it expires.
    a.pause();
    assert!(!a.is_running(), "SIGSTOP scheduler-a");
    let mut b = scheduler(&bin, &dir, &kubeconfig, &db.url, "scheduler-b");
    let takeover = wait_until("scheduler-b to take over", &dir, async || {
        lease_holder(&leases).await.as_deref() == Some("scheduler-b")
    })
    .await;
    eprintln!(
        "standby took the Lease {:.1} s after the leader froze",
        takeover.as_secs_f64()
    );
    for i in 0..4 {
        let p: Pod = serde_json::from_value(driver(&format!("after-{i}"), 6)).unwrap();
        uids.push(
            pods.create(&PostParams::default(), &p)
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap(),
        );
    }
    // Wake the old leader: it must step down, its writes refused.
    a.resume();
    assert!(a.is_running(), "SIGCONT scheduler-a");
    let woke = Instant::now();
    let exit = loop {
        // Its exit, noticed once; not supervised again, so not restarted.
        if let Some(status) = a.supervise().unwrap() {
            break status;
        }
        assert!(
            woke.elapsed() < Duration::from_secs(30),
            "the resumed leader did not step down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let said = a.log_text();
    eprintln!(
        "resumed leader stepped down after {:.1} s: {exit}",
        woke.elapsed().as_secs_f64()
    );
    assert!(!exit.success());
    assert!(
        said.contains("deposed") || said.contains("lost the lease"),
        "the old leader says why it stopped: {said}"
    );
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("scheduler-b"));

    // Every pod ran once, bound by one of them, and is charged exactly.
    wait_until("every pod closed in the ledger", &dir, async || {
        all_metered(&store, &uids, true).await
    })
    .await;
    for p in pods.list(&Default::default()).await.unwrap().items {
        let uid = p.metadata.uid.clone().unwrap();
        let cp = store.pod_checkpoint(&uid).await.unwrap().unwrap();
        let st = p.status.unwrap();
        let start = sparkcap_scheduler::observe::time(st.start_time.as_ref().unwrap());
        let end = cp.finished_at.unwrap();
        assert_eq!(
            cp.charged.0,
            500 * (end - start).num_seconds(),
            "{}",
            p.metadata.name.unwrap()
        );
    }
    assert!(store.audit().await.unwrap().is_clean());
    b.stop();
    // The in-process webhook still listens on the change feed: the forced
    // drop ends its connections.
    db.drop_db().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}
