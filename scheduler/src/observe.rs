//! Kubernetes objects → the scheduler's model. Pure: the shell feeds it what
//! its watches hold.

use crate::model::{BoundPod, GangSpec, Node, NodeRequirement, PendingPod, Resources, Role, Taint, Toleration};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Node as KubeNode, Pod};
use kube::ResourceExt;
use sparkcap_ledger::pool::POOL_LABEL;
use sparkcap_ledger::quantity::{parse_cpu, parse_memory};
use sparkcap_ledger::{Pool, TenantId};
use std::collections::BTreeMap;

/// The scheduler's name in `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "sparkcap-scheduler";
/// Tenant label the webhook sets.
pub const TENANT_LABEL: &str = "sparkcap.io/tenant";
/// Borrowed-placement label the scheduler sets.
pub const OPPORTUNISTIC_LABEL: &str = "sparkcap.io/opportunistic";
/// The volume holding a spark-submit driver's `spark.properties`.
pub const DRIVER_CONF_VOLUME: &str = "spark-conf-volume-driver";

fn quantity(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
    cpu: bool,
) -> i64 {
    map.and_then(|m| m.get(key))
        .and_then(|q| {
            if cpu {
                parse_cpu(&q.0).ok().map(|m| m.0)
            } else {
                parse_memory(&q.0).ok().map(|b| b.0)
            }
        })
        .unwrap_or(0)
}

/// A node as the scheduler sees it: schedulable only when Ready and not cordoned.
pub fn node(n: &KubeNode) -> Node {
    let status = n.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let spec = n.spec.as_ref();
    Node {
        name: n.name_any(),
        pool: n.labels().get(POOL_LABEL).and_then(|p| p.parse().ok()),
        labels: n.labels().clone(),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone(),
            })
            .collect(),
        allocatable: Resources {
            cpu: quantity(alloc, "cpu", true),
            memory: quantity(alloc, "memory", false),
            pods: quantity(alloc, "pods", false),
        },
        schedulable: ready && !spec.and_then(|s| s.unschedulable).unwrap_or(false),
    }
}

/// A pod's requests as Kubernetes reserves them (sidecars, init
/// containers, overhead): [`sparkcap_ledger::podres`], the rule admission
/// and metering apply too.
pub fn requests(pod: &Pod) -> Resources {
    let r = resources(pod);
    Resources::pod(r.cpu.0, r.memory.0)
}

/// The shared reader's full answer for a typed pod (what is missing too).
pub fn resources(pod: &Pod) -> sparkcap_ledger::podres::PodResources {
    use sparkcap_ledger::podres::{ContainerKind, ContainerQuantities, pod_resources};
    let Some(spec) = pod.spec.as_ref() else {
        return pod_resources([], None, None);
    };
    fn q<'a>(c: &'a k8s_openapi::api::core::v1::Container, key: &str) -> Option<&'a str> {
        let r = c.resources.as_ref()?;
        r.requests
            .as_ref()
            .and_then(|m| m.get(key))
            .or_else(|| r.limits.as_ref().and_then(|m| m.get(key)))
            .map(|v| v.0.as_str())
    }
    let init = spec.init_containers.iter().flatten().map(|c| ContainerQuantities {
        name: &c.name,
        kind: if c.restart_policy.as_deref() == Some("Always") {
            ContainerKind::Sidecar
        } else {
            ContainerKind::Init
        },
        cpu: q(c, "cpu"),
        memory: q(c, "memory"),
    });
    let app = spec.containers.iter().map(|c| ContainerQuantities {
        name: &c.name,
        kind: ContainerKind::App,
        cpu: q(c, "cpu"),
        memory: q(c, "memory"),
    });
    let overhead = spec.overhead.as_ref();
    pod_resources(
        init.chain(app),
        overhead.and_then(|o| o.get("cpu")).map(|v| v.0.as_str()),
        overhead.and_then(|o| o.get("memory")).map(|v| v.0.as_str()),
    )
}

fn role(pod: &Pod) -> Role {
    match pod.labels().get("spark-role").map(String::as_str) {
        Some("driver") => Role::Driver,
        _ => Role::Executor,
    }
}

fn tenant(pod: &Pod) -> TenantId {
    pod.labels()
        .get(TENANT_LABEL)
        .and_then(|t| TenantId::new(t.clone()).ok())
        .unwrap_or_else(|| TenantId::new("unowned").expect("valid id"))
}

/// Why a pod naming sparkcap-scheduler was not admitted by sparkcap's
/// webhook (None when it was): the webhook always writes `spark-role`'s
/// companions `sparkcap.io/tenant` and `sparkcap.io/pool`.
pub fn not_admitted(pod: &Pod) -> Option<String> {
    let labels = pod.labels();
    let missing: Vec<&str> = ["spark-role", TENANT_LABEL, POOL_LABEL]
        .into_iter()
        .filter(|k| labels.get(*k).is_none_or(|v| v.is_empty()))
        .collect();
    let bad_pool = labels.get(POOL_LABEL).is_some_and(|p| p.parse::<Pool>().is_err());
    if missing.is_empty() && !bad_pool {
        return None;
    }
    Some(format!(
        "pod {} names {SCHEDULER_NAME} but was not admitted by sparkcap's webhook ({}); sparkcap places only Spark pods \
         (label spark-role) created in a tenant's namespace, which its webhook labels and meters; create it with \
         spark-submit or the Spark Operator, or leave spec.schedulerName unset for other pods",
        name(pod),
        if bad_pool {
            format!("label {POOL_LABEL} is not dedicated, shared or draft")
        } else {
            format!("missing label {}", missing.join(", "))
        }
    ))
}

/// The pool the webhook routed the pod to (shared when unlabelled).
pub fn pool(pod: &Pod) -> Pool {
    pod.labels()
        .get(POOL_LABEL)
        .and_then(|p| p.parse().ok())
        .unwrap_or(Pool::Shared)
}

fn name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// An API timestamp as chrono time.
pub fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Whether the pod has ended (its resources are free).
pub fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pod holding resources on node `node`.
pub fn bound(pod: &Pod, node: usize) -> BoundPod {
    BoundPod {
        uid: pod.uid().unwrap_or_default(),
        name: name(pod),
        tenant: tenant(pod),
        pool: pool(pod),
        role: role(pod),
        app: pod.labels().get("spark-app-selector").cloned(),
        node,
        requests: requests(pod),
        opportunistic: pod.labels().get(OPPORTUNISTIC_LABEL).is_some_and(|v| v == "true"),
        bound_at: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(time)
            .or_else(|| pod.creation_timestamp().map(|t| time(&t)))
            .unwrap_or_default(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

/// The name of a spark-submit driver's `spark.properties` ConfigMap.
pub fn driver_conf_map(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == DRIVER_CONF_VOLUME)?
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
}

/// The gang from driver annotations (they win) or its `spark.properties`;
/// an error names a count beyond [`sparkcap_ledger::podres::MAX_EXECUTORS`]
/// (the ConfigMap is the tenant's: the webhook never sees it).
pub fn gang(pod: &Pod, conf: Option<&ConfigMap>) -> Result<Option<GangSpec>, String> {
    let ann = pod.annotations();
    let props: BTreeMap<String, String> = conf
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("spark.properties"))
        .map(|text| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('=').or_else(|| l.split_once(':')))
                .map(|(k, v)| (k.trim().to_string(), v.trim().replace("\\:", ":")))
                .collect()
        })
        .unwrap_or_default();
    let Some((source, text)) = ann
        .get("sparkcap.io/executor-instances")
        .map(|t| ("annotation sparkcap.io/executor-instances", t))
        .or_else(|| {
            props
                .get("spark.executor.instances")
                .map(|t| ("spark.executor.instances", t))
        })
    else {
        return Ok(None);
    };
    let max = sparkcap_ledger::podres::MAX_EXECUTORS;
    let executors: i64 = match text.trim().parse::<i128>() {
        Ok(n) if n > i128::from(max) => {
            return Err(format!(
                "{source}={} asks for more than {max} executors, the most sparkcap places for one application; \
                 ask for fewer (spark.executor.instances) or use dynamic allocation",
                text.chars().take(40).collect::<String>()
            ));
        }
        Ok(n) => i64::try_from(n.max(0)).unwrap_or(0),
        Err(_) => return Ok(None),
    };
    let cpu = ann
        .get("sparkcap.io/executor-cpu")
        .or_else(|| props.get("spark.kubernetes.executor.request.cores"))
        .or_else(|| props.get("spark.executor.cores"))
        .and_then(|q| parse_cpu(q).ok())
        .map_or(1000, |m| m.0);
    let memory = props
        .get("spark.executor.memory")
        .and_then(|m| parse_memory(&spark_memory(m)).ok())
        .map_or(1 << 30, |b| b.0);
    let memory = with_spark_overhead(memory);
    Ok(Some(GangSpec {
        executors,
        executor: Resources::pod(cpu, memory),
    }))
}

/// The memory Spark requests for a JVM of `memory` bytes: it adds
/// max(10 %, 384 MiB) of overhead, in whole MiB as Spark computes it.
pub fn with_spark_overhead(memory: i64) -> i64 {
    let mib = memory >> 20;
    mib.saturating_add((mib / 10).max(384)).saturating_mul(1 << 20)
}

/// Spark's memory strings ("1g", "512m") as Kubernetes quantities.
fn spark_memory(m: &str) -> String {
    let m = m.trim().to_ascii_lowercase();
    for (suffix, k8s) in [("g", "Gi"), ("m", "Mi"), ("k", "Ki"), ("t", "Ti")] {
        if let Some(n) = m.strip_suffix(&format!("{suffix}b")).or_else(|| m.strip_suffix(suffix)) {
            return format!("{n}{k8s}");
        }
    }
    format!("{m}Mi")
}

/// A pod waiting for sparkcap to place it.
pub fn pending(pod: &Pod, gang: Option<GangSpec>, now: DateTime<Utc>) -> PendingPod {
    let spec = pod.spec.as_ref();
    let mut node_requirements: Vec<NodeRequirement> = spec
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| NodeRequirement::In(k.clone(), vec![v.clone()]))
        .collect();
    // Required node affinity: the first term (ORed terms beyond it are rare for Spark).
    if let Some(term) = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .and_then(|r| r.node_selector_terms.first())
    {
        for e in term.match_expressions.iter().flatten() {
            let vals = e.values.clone().unwrap_or_default();
            node_requirements.push(match e.operator.as_str() {
                "In" => NodeRequirement::In(e.key.clone(), vals),
                "NotIn" => NodeRequirement::NotIn(e.key.clone(), vals),
                "Exists" => NodeRequirement::Exists(e.key.clone()),
                _ => NodeRequirement::DoesNotExist(e.key.clone()),
            });
        }
    }
    PendingPod {
        uid: pod.uid().unwrap_or_default(),
        name: name(pod),
        tenant: tenant(pod),
        pool: pool(pod),
        role: role(pod),
        app: pod.labels().get("spark-app-selector").cloned(),
        requests: requests(pod),
        tolerations: spec
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .map(|t| Toleration {
                key: t.key.clone().unwrap_or_default(),
                operator: t.operator.clone().unwrap_or_else(|| "Equal".into()),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone().unwrap_or_default(),
            })
            .collect(),
        node_requirements,
        gang,
        created_at: pod.creation_timestamp().map_or(now, |t| time(&t)),
        last_reason: None,
        nominated: None,
    }
}
