//! End-to-end binds/s: the scheduler's kube shell against the test control
//! plane. 2,000 Spark pods (routed as the webhook would, with its metering
//! finalizer) wait on 100 shared nodes; a scheduler replica starts, records
//! each binding in the ledger and binds them through the binding
//! subresource, one API call each. Prints the figures; run with
//! `cargo bench -p sparkcap-testkit --bench binds`.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use sparkcap_ledger::{LedgerStore, MemoryStore};
use sparkcap_scheduler::shell::{self, ShellConfig};
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{NodesFile, TenantsFile, register_node, seed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PODS: usize = 2_000;
const NODES: usize = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run());
}

async fn run() {
    let server = ApiServer::new();
    let mut nodes = NodesFile::default_nodes();
    let shape = nodes
        .nodes
        .iter()
        .find(|n| n.pool.as_deref() == Some("shared"))
        .cloned()
        .unwrap();
    nodes.nodes.clear();
    for i in 0..NODES {
        let mut n = shape.clone();
        n.name = format!("shared-{i:03}");
        nodes.nodes.push(n);
    }
    for n in &nodes.nodes {
        register_node(&server, n).unwrap();
    }
    let store: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let tenants = TenantsFile::parse("tenants:\n- id: acme\n  vcpu_hours: 100000\n").unwrap();
    seed(&server, store.as_ref(), &nodes, &tenants).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "tenant-acme");
    let toleration =
        json!([{"key": "sparkcap.io/pool", "operator": "Equal", "value": "shared", "effect": "NoSchedule"}]);
    for i in 0..PODS {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("exec-{i:05}"), "finalizers": ["sparkcap.io/metering"], "labels": {
                "spark-role": "executor", "spark-app-selector": format!("spark-{}", i / 20),
                "sparkcap.io/tenant": "acme", "sparkcap.io/pool": "shared"}},
            "spec": {"schedulerName": "sparkcap-scheduler", "tolerations": toleration,
                     "containers": [{"name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3",
                                     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (client, s) = (server.client(), store.clone());
    let started = Instant::now();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        let _ = shell::run(client, s, ShellConfig::default(), stopped).await;
    });
    let mut first = None;
    loop {
        let bound = pods
            .list(&ListParams::default().fields("spec.nodeName!="))
            .await
            .unwrap()
            .items
            .len();
        if bound > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if bound == PODS {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "only {bound} bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let first = first.unwrap_or_default();
    drop(stop);
    println!(
        "binds: {PODS} pods on {NODES} nodes bound in {:.2} s from scheduler start (first bind after {:.2} s: \
         watch sync and epoch claim); {:.0} binds/s over the binding phase",
        total.as_secs_f64(),
        first.as_secs_f64(),
        PODS as f64 / (total - first).as_secs_f64().max(1e-9)
    );
}
