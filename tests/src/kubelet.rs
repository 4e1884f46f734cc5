//! Simulated kubelets: each owns a node and runs the pods bound to it —
//! Pending → Running (startTime, container statuses) → Succeeded or Failed
//! after a duration the test chooses — honours graceful deletion, and can
//! lose its node. Timers are tokio timers, so a test with a paused tokio
//! clock drives them in virtual time.
//!
//! Pod annotations read (test inputs, not part of sparkcap):
//! `sim.sparkcap.io/run-seconds` (absent: runs until deleted),
//! `sim.sparkcap.io/exit-code` (non-zero: ends Failed),
//! `sim.sparkcap.io/start-seconds` (delay before Running, default 1).

use crate::apiserver::ApiServer;
use crate::apiserver::resources::find;
use crate::apiserver::store::{EventType, now_rfc3339};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Seconds the pod runs before its containers exit.
pub const RUN_SECONDS: &str = "sim.sparkcap.io/run-seconds";
/// Exit code of the pod's containers when they exit.
pub const EXIT_CODE: &str = "sim.sparkcap.io/exit-code";
/// Seconds from binding to Running.
pub const START_SECONDS: &str = "sim.sparkcap.io/start-seconds";

/// A running simulated kubelet; dropping it stops the node's pods' lifecycle.
#[derive(Debug)]
pub struct Kubelet {
    node: String,
    server: ApiServer,
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn annotation_u64(pod: &Value, key: &str) -> Option<u64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
}

fn key(pod: &Value) -> (String, String) {
    let g = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    (g("/metadata/namespace"), g("/metadata/name"))
}

fn container_statuses(pod: &Value, state: Value, ready: bool) -> Value {
    let names: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "ready": ready, "restartCount": 0, "image": "sim", "imageID": "sim", "state": state}))
            .collect(),
    )
}

/// Writes a pod's status through the status subresource.
fn set_status(server: &ApiServer, ns: &str, name: &str, f: impl Fn(&mut Value)) -> bool {
    let pods = find("", "v1", "pods").expect("served");
    server
        .store
        .modify(pods, ns, name, Some("status"), false, |pod| {
            f(pod);
            Ok(())
        })
        .is_ok()
}

/// Runs one pod's life on its node.
async fn run_pod(server: ApiServer, pod: Value) {
    let (ns, name) = key(&pod);
    tokio::time::sleep(Duration::from_secs(annotation_u64(&pod, START_SECONDS).unwrap_or(1))).await;
    let started = now_rfc3339();
    let running = set_status(&server, &ns, &name, |p| {
        p["status"]["phase"] = json!("Running");
        p["status"]["startTime"] = json!(started);
        p["status"]["conditions"] = json!([
            {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}]);
        p["status"]["containerStatuses"] = container_statuses(p, json!({"running": {"startedAt": started}}), true);
    });
    if !running {
        return;
    }
    let Some(secs) = annotation_u64(&pod, RUN_SECONDS) else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let code = annotation_u64(&pod, EXIT_CODE).unwrap_or(0);
    let finished = now_rfc3339();
    set_status(&server, &ns, &name, |p| {
        p["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
        p["status"]["containerStatuses"] = container_statuses(
            p,
            json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                  "startedAt": started, "finishedAt": finished}}),
            false,
        );
    });
}

/// Writes what a kubelet reports when it has killed a deleted pod's
/// containers: each running container terminated with exit code 143
/// (SIGTERM) at now, the phase Failed (Succeeded kept when it had ended so),
/// Ready false. A pod that never started keeps its status.
fn terminate(server: &ApiServer, ns: &str, name: &str) {
    let finished = now_rfc3339();
    set_status(server, ns, name, |p| {
        let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
        if phase == "Succeeded" || phase == "Failed" || p.pointer("/status/startTime").is_none() {
            return;
        }
        if let Some(cs) = p.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut) {
            for c in cs {
                let started = c
                    .pointer("/state/running/startedAt")
                    .cloned()
                    .unwrap_or_else(|| json!(finished));
                if c.pointer("/state/terminated").is_none() {
                    c["state"] = json!({"terminated": {"exitCode": 143, "reason": "Error",
                        "startedAt": started, "finishedAt": finished}});
                    c["ready"] = json!(false);
                }
            }
        }
        p["status"]["phase"] = json!("Failed");
        p["status"]["conditions"] = json!([
            {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
            {"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
    });
}

impl Kubelet {
    /// Starts the kubelet of `node` (which must be registered).
    pub fn start(server: &ApiServer, node: &str) -> Self {
        let server2 = server.clone();
        let node2 = node.to_owned();
        let task = tokio::spawn(async move {
            let pods = find("", "v1", "pods").expect("served");
            let pods_idx = crate::apiserver::store::index_of(pods);
            let (initial, _, mut events) = server2.store.snapshot_and_watch(pods, None);
            let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
            let mut terminating: HashMap<String, JoinHandle<()>> = HashMap::new();
            let handle = |pod: &Value,
                          deleted: bool,
                          running: &mut HashMap<String, JoinHandle<()>>,
                          terminating: &mut HashMap<String, JoinHandle<()>>| {
                if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node2.as_str()) {
                    return;
                }
                let uid = pod
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if deleted {
                    if let Some(h) = running.remove(&uid) {
                        h.abort();
                    }
                    return;
                }
                if pod.pointer("/metadata/deletionTimestamp").is_some() {
                    if terminating.contains_key(&uid) {
                        return;
                    }
                    if let Some(h) = running.remove(&uid) {
                        h.abort();
                    }
                    let grace = pod
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let (ns, name) = key(pod);
                    let s = server2.clone();
                    terminating.insert(
                        uid,
                        tokio::spawn(async move {
                            // Spark exits promptly on SIGTERM: the simulated
                            // containers stop within a second, never after the grace.
                            tokio::time::sleep(Duration::from_secs(grace.min(1))).await;
                            // As a kubelet does: the containers' terminated state
                            // (143 after SIGTERM), the pod's terminal phase and
                            // conditions, then the final delete, which removes the
                            // object once its finalizers are gone.
                            terminate(&s, &ns, &name);
                            s.store.finish_pod_deletion(&ns, &name);
                        }),
                    );
                    return;
                }
                let phase = pod
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Pending");
                if phase == "Pending" && !running.contains_key(&uid) {
                    running.insert(uid, tokio::spawn(run_pod(server2.clone(), pod.clone())));
                }
            };
            for p in &initial {
                handle(p, false, &mut running, &mut terminating);
            }
            while let Ok(e) = events.recv().await {
                if e.resource != pods_idx {
                    continue;
                }
                handle(&e.object, e.kind == EventType::Deleted, &mut running, &mut terminating);
                running.retain(|_, h| !h.is_finished());
                terminating.retain(|_, h| !h.is_finished());
            }
        });
        Self {
            node: node.to_owned(),
            server: server.clone(),
            task,
        }
    }

    /// The node is lost, as Kubernetes' node lifecycle controller handles
    /// it: this kubelet stops (no more status from it); the node turns
    /// `Ready=Unknown` and is tainted `node.kubernetes.io/unreachable`
    /// (NoSchedule and NoExecute); its pods are marked `Ready=False`, their
    /// phase unchanged; after `eviction_after` (the default toleration of
    /// the NoExecute taint is 300 s) they are deleted gracefully, and, no
    /// kubelet being there to confirm, they stay terminating.
    pub fn fail_node(self, eviction_after: Duration) {
        self.task.abort();
        let nodes = find("", "v1", "nodes").expect("served");
        let now = now_rfc3339();
        let _ = self.server.store.modify(nodes, "", &self.node, None, false, |n| {
            let mut taints = n
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": effect, "timeAdded": now}));
            }
            n["spec"]["taints"] = json!(taints);
            Ok(())
        });
        let _ = self
            .server
            .store
            .modify(nodes, "", &self.node, Some("status"), false, |n| {
                n["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                               "message": "Kubelet stopped posting node status.",
                                               "lastTransitionTime": now}]);
                Ok(())
            });
        let pods = find("", "v1", "pods").expect("served");
        let (all, _) = self.server.store.list(pods, None);
        let mine: Vec<(String, String)> = all
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(self.node.as_str()))
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
            })
            .map(key)
            .collect();
        for (ns, name) in &mine {
            set_status(&self.server, ns, name, |p| {
                let conditions = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "Ready").collect();
                conditions.push(json!({"type": "Ready", "status": "False", "reason": "NodeStatusUnknown"}));
                p["status"]["conditions"] = json!(conditions);
            });
        }
        let server = self.server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(eviction_after).await;
            for (ns, name) in mine {
                let grace = server
                    .store
                    .get(pods, &ns, &name)
                    .ok()
                    .and_then(|p| p.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                    .unwrap_or(30);
                let opts = crate::apiserver::store::DeleteOptions {
                    grace: Some(grace),
                    ..Default::default()
                };
                let _ = server.store.delete(pods, &ns, &name, &opts);
            }
        });
    }
}
