//! Simulated kubelets in virtual time (paused tokio clock): pods run, finish,
//! fail, are deleted gracefully, and are lost with their node.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{NodesFile, register_node};
use sparkcap_testkit::kubelet::{EXIT_CODE, Kubelet, RUN_SECONDS};
use std::time::Duration;

async fn bound_pod(pods: &Api<Pod>, name: &str, annotations: serde_json::Value) {
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": "i"}], "terminationGracePeriodSeconds": 30}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": "shared-1"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .unwrap();
}

async fn phase(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name).await.unwrap().and_then(|p| p.status?.phase)
}

#[tokio::test(start_paused = true)]
async fn pods_run_finish_fail_and_terminate_in_virtual_time() {
    let server = ApiServer::new();
    for n in &NodesFile::default_nodes().nodes {
        register_node(&server, n).unwrap();
    }
    let _kubelet = Kubelet::start(&server, "shared-1");
    let client = server.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "t");
    bound_pod(&pods, "ok", json!({RUN_SECONDS: "600"})).await;
    bound_pod(&pods, "bad", json!({RUN_SECONDS: "60", EXIT_CODE: "1"})).await;
    bound_pod(&pods, "forever", json!({})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&pods, "ok").await.as_deref(), Some("Running"));
    let ok = pods.get("ok").await.unwrap();
    assert!(ok.status.as_ref().unwrap().start_time.is_some());
    assert!(
        ok.status.unwrap().container_statuses.unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .running
            .is_some()
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(phase(&pods, "bad").await.as_deref(), Some("Failed"));
    assert_eq!(phase(&pods, "ok").await.as_deref(), Some("Running"));
    tokio::time::sleep(Duration::from_secs(540)).await;
    assert_eq!(phase(&pods, "ok").await.as_deref(), Some("Succeeded"));

    // Graceful deletion: the pod stays (deletionTimestamp) until its kubelet ends it.
    pods.delete("forever", &DeleteParams::default()).await.unwrap();
    assert!(pods.get("forever").await.unwrap().metadata.deletion_timestamp.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods.get_opt("forever").await.unwrap().is_none());
}

/// Node loss as the node lifecycle controller handles it: the node turns
/// Ready=Unknown and tainted unreachable, its pods NotReady but still
/// Running; 300 s later they are deleted and, with no kubelet to confirm,
/// stay terminating.
#[tokio::test(start_paused = true)]
async fn a_lost_node_is_tainted_and_its_pods_evicted_after_five_minutes() {
    let server = ApiServer::new();
    for n in &NodesFile::default_nodes().nodes {
        register_node(&server, n).unwrap();
    }
    let kubelet = Kubelet::start(&server, "shared-1");
    let client = server.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    bound_pod(&pods, "p", json!({})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&pods, "p").await.as_deref(), Some("Running"));
    kubelet.fail_node(Duration::from_secs(300));
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(client)
        .get("shared-1")
        .await
        .unwrap();
    assert_eq!(node.status.unwrap().conditions.unwrap()[0].status, "Unknown");
    let taints = node.spec.unwrap().taints.unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    );
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    let ready = p.status.unwrap().conditions.unwrap();
    assert!(ready.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
    tokio::time::sleep(Duration::from_secs(299)).await;
    assert!(pods.get("p").await.unwrap().metadata.deletion_timestamp.is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pods.get("p").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some(), "evicted after 300 s");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        pods.get_opt("p").await.unwrap().is_some(),
        "no kubelet to confirm: still terminating"
    );
}
