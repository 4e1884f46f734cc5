//! Metering: what each pod on sparkcap's nodes has used, as ledger accrual
//! requests built from the pod's own timestamps (R9.1–R9.2). Pure; the shell
//! sends the batch with its fencing epoch.

use crate::observe::{self, OPPORTUNISTIC_LABEL, TENANT_LABEL};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sparkcap_ledger::lifecycle::RunFacts;
use sparkcap_ledger::pool::POOL_LABEL;
use sparkcap_ledger::{AccrualRequest, Millicores, PodOutcome, PodUsage, TenantId};

/// Driver annotation: the job's SLA, the longest acceptable run (`45m`, `2h`).
pub const SLA_ANNOTATION: &str = "sparkcap.io/sla";
/// Driver annotation: data the run processes (`250Gi`), for the estimator.
pub const DATA_VOLUME_ANNOTATION: &str = "sparkcap.io/data-volume";
/// Driver annotation: the source kind (`postgres`, `s3`, ...).
pub const SOURCE_ANNOTATION: &str = "sparkcap.io/source";
/// Driver annotation: the target kind (`iceberg`, `delta`, ...).
pub const TARGET_ANNOTATION: &str = "sparkcap.io/target";

/// What the ledger needs to profile the run a driver pod ends (R5.2): its
/// SLA and data annotations and what metrics measured. None for pods that
/// are not a job's driver.
pub fn run_facts(pod: &Pod, promote_after: i64, measured: Option<&crate::usage::AppUse>) -> Option<RunFacts> {
    let labels = pod.labels();
    if labels.get("spark-role").map(String::as_str) != Some("driver") || !labels.contains_key("sparkcap.io/job") {
        return None;
    }
    let ann = pod.annotations();
    let text = |k: &str| ann.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    Some(RunFacts {
        sla_seconds: text(SLA_ANNOTATION)
            .and_then(|t| sparkcap_ledger::schedule::parse_go_duration(t).ok())
            .map(|d| d.num_seconds())
            .filter(|s| *s > 0),
        promote_after,
        cpu_used: measured.and_then(|m| m.mean_cpu()),
        memory_used: measured.and_then(|m| m.peak_memory()),
        data_bytes: text(DATA_VOLUME_ANNOTATION)
            .and_then(|t| sparkcap_ledger::quantity::parse_memory(t).ok())
            .map(|b| b.0),
        source: text(SOURCE_ANNOTATION).map(|s| s.to_lowercase()),
        target: text(TARGET_ANNOTATION).map(|s| s.to_lowercase()),
    })
}

/// The accrual for `pod` at `now`: up to now while it runs, up to its
/// containers' end once it has finished. `known` is what was metered for it
/// before: its facts stand, whatever its labels say now. None for pods
/// sparkcap does not meter (never metered and no tenant or pool label) or
/// that never started.
pub fn accrual(pod: &Pod, now: DateTime<Utc>, known: Option<&PodUsage>) -> Option<AccrualRequest> {
    let status = pod.status.as_ref()?;
    let started_at = observe::time(status.start_time.as_ref()?);
    let finished = observe::finished(pod);
    let until = if finished {
        status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .map(observe::time)
            .max()
            .unwrap_or(now)
    } else {
        now
    };
    let usage = match known {
        Some(k) => k.clone(),
        None => {
            let labels = pod.labels();
            PodUsage {
                uid: pod.uid()?,
                tenant: TenantId::new(labels.get(TENANT_LABEL)?.clone()).ok()?,
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                app_id: labels.get("spark-app-selector").cloned(),
                job: labels.get("sparkcap.io/job").cloned(),
                role: labels.get("spark-role").cloned(),
                pool: labels.get(POOL_LABEL)?.parse().ok()?,
                cpu: Millicores(observe::requests(pod).cpu),
                opportunistic: labels.get(OPPORTUNISTIC_LABEL).is_some_and(|v| v == "true"),
                started_at,
            }
        }
    };
    Some(AccrualRequest {
        pod: usage,
        until: until.max(started_at),
        finished,
        outcome: finished.then(|| outcome(pod)),
        run: None,
    })
}

/// How a finished pod ended. An eviction (ours, or the kubelet's under node
/// pressure) shows as reason `Evicted` or a `DisruptionTarget` condition.
fn outcome(pod: &Pod) -> PodOutcome {
    let status = pod.status.as_ref();
    let evicted = status.and_then(|s| s.reason.as_deref()) == Some("Evicted")
        || status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
    match status.and_then(|s| s.phase.as_deref()) {
        _ if evicted => PodOutcome::Preempted,
        Some("Succeeded") => PodOutcome::Succeeded,
        _ => PodOutcome::Failed,
    }
}

/// A pod that vanished (deleted) while open: closed at `seen_gone`;
/// `evicted` when sparkcap evicted it to take capacity back.
pub fn close_vanished(last: &AccrualRequest, seen_gone: DateTime<Utc>, evicted: bool) -> AccrualRequest {
    AccrualRequest {
        pod: last.pod.clone(),
        until: seen_gone.max(last.until),
        finished: true,
        outcome: Some(if evicted {
            PodOutcome::Preempted
        } else {
            PodOutcome::Deleted
        }),
        run: last.run.clone(),
    }
}
