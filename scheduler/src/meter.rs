//! Metering: what each pod on sparkcap's nodes has used, as ledger accrual
//! requests built from the pod's own timestamps (R9.1–R9.2). Pure; the shell
//! sends the batch with its fencing epoch.

use crate::observe;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sparkcap_ledger::lifecycle::RunFacts;
use sparkcap_ledger::{AccrualRequest, Millicores, PodBinding, PodOutcome, PodUsage, Pool, TenantId};

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
pub fn run_facts(
    pod: &Pod,
    usage: &PodUsage,
    promote_after: i64,
    measured: Option<&crate::usage::AppUse>,
) -> Option<RunFacts> {
    if usage.role.as_deref() != Some("driver") {
        return None;
    }
    run_facts_of(pod, usage, promote_after, measured)
}

/// The facts of the run `pod` ends, whatever its role: for the last
/// executor of a client-mode application (its driver runs outside the
/// cluster), whose end is the run's. None for a pod of no job.
pub fn run_facts_of(
    pod: &Pod,
    usage: &PodUsage,
    promote_after: i64,
    measured: Option<&crate::usage::AppUse>,
) -> Option<RunFacts> {
    usage.job.as_ref()?;
    let ann = pod.annotations();
    // Annotations are the tenant's text: what the ledger could not store
    // (a NUL byte, an essay) is dropped here, so the run is still profiled
    // and the charge never waits on it.
    let text = |k: &'static str| {
        ann.get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty() && sparkcap_ledger::binding::check_text(k, v, 63).is_ok())
    };
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

/// What sparkcap records when it binds `pod` to `node`: the tenant the
/// ledger binds its namespace to, the pool it was admitted to, whether the
/// placement is borrowed, and the cpu Kubernetes reserves for it. None for a
/// pod without a uid (never one from the API server).
pub fn binding_for(
    pod: &Pod,
    tenant: TenantId,
    pool: Pool,
    opportunistic: bool,
    node: &str,
    now: DateTime<Utc>,
) -> Option<PodBinding> {
    let labels = pod.labels();
    Some(PodBinding {
        uid: pod.uid()?,
        tenant,
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        app_id: labels.get("spark-app-selector").cloned(),
        job: labels.get("sparkcap.io/job").cloned(),
        role: labels.get("spark-role").cloned(),
        pool,
        cpu: Millicores(observe::requests(pod).cpu),
        opportunistic,
        node: node.to_owned(),
        bound_at: now,
    })
}

/// Where a metered pod is in its life, as the cluster reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Bound, not started: costs nothing yet.
    NotStarted,
    /// Bound and gone (deleted, failed) without ever starting: costs nothing.
    NeverStarted,
    /// Running since `started`; `lost_at` when its node stopped reporting
    /// (charging stops there until the node returns or the pod goes).
    Running {
        /// Start.
        started: DateTime<Utc>,
        /// When its node was declared lost, if it is.
        lost_at: Option<DateTime<Utc>>,
    },
    /// Ended: every second in `[started, ended)` is charged, no other.
    Ended {
        /// Start.
        started: DateTime<Utc>,
        /// Real end.
        ended: DateTime<Utc>,
    },
}

/// How long past a pod's deletion deadline its kubelet may still report
/// the containers' end before the deadline itself is taken as the end (the
/// kubelet kills what is left at the deadline).
pub const KUBELET_OVERDUE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

fn statuses(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    let s = pod.status.as_ref();
    s.and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(s.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten())
}

/// A pod's start: its `startTime`, else its first container's start.
pub fn started_at(pod: &Pod) -> Option<DateTime<Utc>> {
    if let Some(t) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) {
        return Some(observe::time(t));
    }
    statuses(pod)
        .filter_map(|c| {
            let st = c.state.as_ref()?;
            st.running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or_else(|| st.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
        })
        .map(observe::time)
        .min()
}

/// The pod's life at `now`. The end is the latest container `finishedAt`
/// the kubelet reports, however the pod ended (by itself, deleted by a
/// person, by Spark or by garbage collection, evicted); for a pod whose node
/// was lost, when the node was declared lost or the pod deleted, whichever
/// came first. `node_lost_at` is when the pod's node stopped being Ready
/// (None while it is Ready).
pub fn life(pod: &Pod, node_lost_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Life {
    let deleting = pod.metadata.deletion_timestamp.as_ref().map(observe::time);
    let terminal = observe::finished(pod);
    let Some(started) = started_at(pod) else {
        return if terminal || deleting.is_some() {
            Life::NeverStarted
        } else {
            Life::NotStarted
        };
    };
    let mut any = false;
    let mut all_terminated = true;
    let mut last_end: Option<DateTime<Utc>> = None;
    for c in pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        any = true;
        match c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            Some(t) => {
                if let Some(f) = t.finished_at.as_ref().map(observe::time) {
                    last_end = Some(last_end.map_or(f, |l| l.max(f)));
                }
            }
            None => all_terminated = false,
        }
    }
    // Sidecars stop after the app containers: they reserve cpu until then.
    for c in pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(f) = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref()?.finished_at.as_ref())
        {
            let f = observe::time(f);
            last_end = Some(last_end.map_or(f, |l| l.max(f)));
        }
    }
    let ended = |at: DateTime<Utc>| Life::Ended {
        started,
        ended: at.max(started),
    };
    if any
        && all_terminated
        && let Some(end) = last_end
    {
        return ended(end);
    }
    // The deletion was asked for at deadline − grace.
    let asked = deleting
        .map(|d| d - chrono::TimeDelta::seconds(pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0)));
    if let Some(lost) = node_lost_at {
        if terminal || deleting.is_some() {
            return ended(asked.map_or(lost, |a| a.min(lost)));
        }
        return Life::Running {
            started,
            lost_at: Some(lost),
        };
    }
    if terminal {
        // Ended with no container end reported (a kubelet that lost its
        // containers' state): the last end seen, else now.
        return ended(last_end.unwrap_or(now));
    }
    if let Some(deadline) = deleting
        && now > deadline + KUBELET_OVERDUE
    {
        return ended(last_end.map_or(deadline, |l| l.max(deadline)));
    }
    Life::Running { started, lost_at: None }
}

/// The accrual of a bound pod at `now` from its recorded binding: up to
/// `now` (or where its node was lost) while it runs, up to its real end once
/// it ended. None while it has not started or when it never did.
pub fn accrual_of(binding: &PodBinding, pod: &Pod, life: Life, now: DateTime<Utc>) -> Option<AccrualRequest> {
    let (started, until, finished) = match life {
        Life::NotStarted | Life::NeverStarted => return None,
        Life::Running { started, lost_at } => (started, lost_at.map_or(now, |l| l.min(now)), false),
        Life::Ended { started, ended } => (started, ended, true),
    };
    Some(AccrualRequest {
        pod: binding.usage(started),
        until: until.max(started),
        finished,
        outcome: finished.then(|| outcome(pod)),
        run: None,
    })
}

/// The accrual for `pod` at `now` of a pod metered before bindings were
/// recorded (a ledger written by an earlier version): its facts are the
/// ones first recorded in `known`, never its labels.
pub fn accrual(pod: &Pod, now: DateTime<Utc>, known: &PodUsage) -> Option<AccrualRequest> {
    let life = life(pod, None, now);
    let (until, finished) = match life {
        Life::NotStarted | Life::NeverStarted => return None,
        Life::Running { .. } => (now, false),
        Life::Ended { ended, .. } => (ended, true),
    };
    Some(AccrualRequest {
        pod: known.clone(),
        until: until.max(known.started_at),
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
    let phase = status.and_then(|s| s.phase.as_deref());
    match phase {
        _ if evicted => PodOutcome::Preempted,
        Some("Succeeded") => PodOutcome::Succeeded,
        _ if pod.metadata.deletion_timestamp.is_some() => PodOutcome::Deleted,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::seconds(s)
    }

    fn ts(s: i64) -> String {
        t(s).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn running(start: i64) -> serde_json::Value {
        json!({"metadata": {"name": "p", "uid": "u"},
               "status": {"phase": "Running", "startTime": ts(start),
                          "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": "i",
                                                 "state": {"running": {"startedAt": ts(start)}}}]}})
    }

    fn terminated(mut p: serde_json::Value, end: i64, code: i64) -> serde_json::Value {
        p["status"]["containerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": code, "startedAt": p["status"]["startTime"], "finishedAt": ts(end)}});
        p
    }

    #[test]
    fn every_end_mode_ends_at_the_real_end() {
        // Ran by itself to completion.
        let mut p = terminated(running(10), 70, 0);
        p["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            life(&pod(p), None, t(500)),
            Life::Ended {
                started: t(10),
                ended: t(70)
            }
        );
        // Deleted (kubectl, Spark's scale-down, garbage collection): the kubelet's finishedAt.
        let mut p = terminated(running(10), 44, 143);
        p["metadata"]["deletionTimestamp"] = json!(ts(70));
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert_eq!(
            life(&pod(p.clone()), None, t(45)),
            Life::Ended {
                started: t(10),
                ended: t(44)
            }
        );
        assert_eq!(outcome(&pod(p)), PodOutcome::Deleted);
        // Deleted, the kubelet has not reported yet: still running until it does...
        let mut p = running(10);
        p["metadata"]["deletionTimestamp"] = json!(ts(70));
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert!(matches!(life(&pod(p.clone()), None, t(80)), Life::Running { .. }));
        // ...unless it is long overdue: then its deadline.
        assert_eq!(
            life(&pod(p.clone()), None, t(101)),
            Life::Ended {
                started: t(10),
                ended: t(70)
            }
        );
        // Its node lost: when it was declared lost or deleted, whichever first.
        assert_eq!(
            life(&pod(p.clone()), Some(t(30)), t(80)),
            Life::Ended {
                started: t(10),
                ended: t(30)
            }
        );
        assert_eq!(
            life(&pod(p), Some(t(55)), t(80)),
            Life::Ended {
                started: t(10),
                ended: t(40)
            }
        );
        // A lost node with the pod not deleted yet: charged up to the loss, still open.
        assert_eq!(
            life(&pod(running(10)), Some(t(30)), t(80)),
            Life::Running {
                started: t(10),
                lost_at: Some(t(30))
            }
        );
        // Evicted.
        let mut p = terminated(running(10), 20, 143);
        p["status"]["phase"] = json!("Failed");
        p["status"]["reason"] = json!("Evicted");
        assert_eq!(outcome(&pod(p)), PodOutcome::Preempted);
    }

    #[test]
    fn a_pod_that_never_started_costs_nothing() {
        let pending = json!({"metadata": {"name": "p", "uid": "u"}, "status": {"phase": "Pending"}});
        assert_eq!(life(&pod(pending.clone()), None, t(5)), Life::NotStarted);
        let mut deleted = pending;
        deleted["metadata"]["deletionTimestamp"] = json!(ts(5));
        assert_eq!(life(&pod(deleted), None, t(5)), Life::NeverStarted);
    }

    #[test]
    fn a_sidecar_ending_last_ends_the_pod() {
        let mut p = terminated(running(0), 30, 0);
        p["status"]["phase"] = json!("Succeeded");
        p["status"]["initContainerStatuses"] = json!([{"name": "proxy", "ready": false, "restartCount": 0, "image": "i", "imageID": "i",
            "state": {"terminated": {"exitCode": 0, "startedAt": ts(0), "finishedAt": ts(33)}}}]);
        assert_eq!(
            life(&pod(p), None, t(90)),
            Life::Ended {
                started: t(0),
                ended: t(33)
            }
        );
    }
}
