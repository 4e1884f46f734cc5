//! What a Spark pod or Spark Operator object says about itself: role,
//! application, job, requested CPU. Read from raw JSON so that any object the
//! API server accepts can be inspected without a panic.

use serde_json::Value;
use sparkcap_ledger::quantity::parse_cpu;

/// Pod label Spark sets to `driver` or `executor`.
pub const ROLE_LABEL: &str = "spark-role";
/// Pod label Spark sets to the application id on every pod of an application.
pub const APP_SELECTOR_LABEL: &str = "spark-app-selector";
/// Pod label Spark sets to the application name.
pub const APP_NAME_LABEL: &str = "spark-app-name";
/// Label the Spark Operator puts on pods of a SparkApplication.
pub const OPERATOR_APP_LABEL: &str = "sparkoperator.k8s.io/app-name";
/// Label the Spark Operator puts on SparkApplications (and their pods) created by a ScheduledSparkApplication.
pub const OPERATOR_SCHEDULED_LABEL: &str = "sparkoperator.k8s.io/scheduled-app-name";
/// Namespace label naming the tenant.
pub const TENANT_LABEL: &str = "sparkcap.io/tenant";
/// Pod label: the pool sparkcap placed the pod in.
pub const POOL_LABEL: &str = "sparkcap.io/pool";
/// Pod label: the job (stable identity across runs).
pub const JOB_LABEL: &str = "sparkcap.io/job";
/// Pod label the scheduler sets on borrowed placements; never set by tenants.
pub const OPPORTUNISTIC_LABEL: &str = "sparkcap.io/opportunistic";

/// Driver annotation declaring how many executors the application starts with
/// (`--conf spark.kubernetes.driver.annotation.sparkcap.io/executor-instances=3`).
pub const EXECUTORS_ANNOTATION: &str = "sparkcap.io/executor-instances";
/// Driver annotation declaring each executor's cpu request ("2", "1500m").
pub const EXECUTOR_CPU_ANNOTATION: &str = "sparkcap.io/executor-cpu";

/// The executors a driver pod declares by annotation: (count, millicores
/// each). A plain spark-submit driver pod does not say; its ConfigMap, which
/// the scheduler reads, does.
pub fn declared_executors(pod: &Value) -> Result<Option<(i64, i64)>, String> {
    let ann = |k: &str| {
        pod.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
    };
    let Some(count) = ann(EXECUTORS_ANNOTATION) else {
        return Ok(None);
    };
    let count: i64 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=sparkcap_ledger::podres::MAX_EXECUTORS).contains(n))
        .ok_or_else(|| {
            format!(
                "annotation {EXECUTORS_ANNOTATION}={count:?} must be a whole number between 0 and {}",
                sparkcap_ledger::podres::MAX_EXECUTORS
            )
        })?;
    let cpu = match ann(EXECUTOR_CPU_ANNOTATION) {
        Some(q) => {
            parse_cpu(q)
                .map_err(|e| format!("annotation {EXECUTOR_CPU_ANNOTATION}: {e}"))?
                .0
        }
        None => 1000, // Spark's default spark.executor.cores
    };
    Ok(Some((count, cpu)))
}

/// Driver or executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The application's driver.
    Driver,
    /// One of its executors.
    Executor,
}

/// A label of an object, if set and a string.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// The role a pod declares, if it is a Spark pod at all. Unknown values are
/// treated as executors: they cannot start an application on their own.
pub fn role(pod: &Value) -> Option<Role> {
    match label(pod, ROLE_LABEL)? {
        "driver" => Some(Role::Driver),
        _ => Some(Role::Executor),
    }
}

/// The job a pod belongs to: the ScheduledSparkApplication, else the
/// SparkApplication, else the `spark-app-name` label.
pub fn job(pod: &Value) -> Option<&str> {
    [OPERATOR_SCHEDULED_LABEL, OPERATOR_APP_LABEL, APP_NAME_LABEL]
        .iter()
        .find_map(|k| label(pod, k).filter(|v| !v.is_empty()))
}

/// A pod's name for messages: its name, else its generateName prefix.
pub fn display_name(obj: &Value) -> String {
    let meta = obj.get("metadata");
    meta.and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            meta.and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
                .map(|g| format!("{g}*"))
        })
        .unwrap_or_else(|| "(unnamed)".into())
}

/// A pod's CPU request as the scheduler and the ledger count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCpu {
    /// Effective request in millicores: max(sum of containers, largest init
    /// container) + overhead. Kubernetes defaults a missing request to the limit.
    pub millicores: i64,
    /// App containers and sidecars reserving no cpu (none asked, or 0).
    pub missing: Vec<String>,
    /// Containers whose cpu quantity does not parse: (container, error).
    pub invalid: Vec<(String, String)>,
}

/// Reads a pod's CPU requests with the rule placement and metering use
/// ([`sparkcap_ledger::podres`]): sidecars, init containers and overhead
/// counted as Kubernetes reserves them.
pub fn pod_cpu(pod: &Value) -> PodCpu {
    use sparkcap_ledger::podres::{ContainerKind, ContainerQuantities, pod_resources};
    let spec = pod.get("spec");
    let mut invalid = Vec::new();
    // Quantities as text: (name, kind, cpu, memory).
    let mut texts: Vec<(String, ContainerKind, Option<String>, Option<String>)> = Vec::new();
    let mut read = |c: &Value, kind: ContainerKind| {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("(unnamed)").to_string();
        let res = c.get("resources");
        let q = |key: &str| {
            ["requests", "limits"]
                .iter()
                .find_map(|k| res.and_then(|r| r.get(*k)).and_then(|r| r.get(key)))
        };
        let text = |key: &str, invalid: &mut Vec<(String, String)>| match q(key) {
            None => None,
            Some(v) => match quantity_text(v) {
                Some(t) => Some(t),
                None => {
                    invalid.push((name.clone(), format!("{key} quantity {v} is not a string or number")));
                    None
                }
            },
        };
        let cpu = text("cpu", &mut invalid);
        let memory = text("memory", &mut invalid);
        texts.push((name, kind, cpu, memory));
    };
    for c in spec
        .and_then(|s| s.get("initContainers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let sidecar = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        read(
            c,
            if sidecar {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            },
        );
    }
    for c in spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        read(c, ContainerKind::App);
    }
    let overhead = |k: &str| {
        spec.and_then(|s| s.get("overhead"))
            .and_then(|o| o.get(k))
            .and_then(quantity_text)
    };
    let (ocpu, omem) = (overhead("cpu"), overhead("memory"));
    let r = pod_resources(
        texts.iter().map(|(name, kind, cpu, memory)| ContainerQuantities {
            name,
            kind: *kind,
            cpu: cpu.as_deref(),
            memory: memory.as_deref(),
        }),
        ocpu.as_deref(),
        omem.as_deref(),
    );
    invalid.extend(r.invalid);
    PodCpu {
        millicores: r.cpu.0,
        missing: r.missing_cpu,
        invalid,
    }
}

/// Kubernetes accepts quantities as JSON strings or numbers.
pub fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Formats millicores for people: "4", "2.5", "0.25".
pub fn cores(mc: i64) -> String {
    let whole = mc / 1000;
    let frac = (mc % 1000).abs();
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}").trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_counts_limits_init_containers_and_overhead() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "1500m"}}},
                {"name": "b", "resources": {"limits": {"cpu": 1}}},
                {"name": "c"}
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "4"}}}],
            "overhead": {"cpu": "250m"}
        }});
        let cpu = pod_cpu(&pod);
        assert_eq!(cpu.millicores, 4250);
        assert_eq!(cpu.missing, vec!["c"]);
        let bad =
            pod_cpu(&json!({"spec": {"containers": [{"name": "x", "resources": {"requests": {"cpu": "lots"}}}]}}));
        assert_eq!(bad.invalid.len(), 1);
        assert_eq!(pod_cpu(&json!({"spec": {}})).missing, vec!["(no containers)"]);
    }

    #[test]
    fn job_prefers_operator_labels() {
        let pod = json!({"metadata": {"labels": {APP_NAME_LABEL: "a", OPERATOR_APP_LABEL: "b"}}});
        assert_eq!(job(&pod), Some("b"));
        let pod = json!({"metadata": {"labels": {APP_NAME_LABEL: "a", OPERATOR_APP_LABEL: "b", OPERATOR_SCHEDULED_LABEL: "c"}}});
        assert_eq!(job(&pod), Some("c"));
        assert_eq!(cores(2500), "2.5");
        assert_eq!(cores(4000), "4");
        assert_eq!(cores(250), "0.25");
    }
}
