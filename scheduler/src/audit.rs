//! The books against what ran (issue 20 item 5). The ledger's own audit
//! proves the journal sums to the balances; it cannot see a pod that ran
//! with no row, or a row whose end is not the pod's. This compares each
//! pod the cluster reports with what the ledger recorded for it:
//!
//! - a pod in a tenant namespace that ran on a pool node (or that sparkcap
//!   bound) with no ledger row: it ran unmetered;
//! - a row whose start, or whose closed end, differs from the kubelet's
//!   report by more than a second, or whose charge is not cpu × that life;
//! - a pod that ended over a minute ago with its row still open;
//! - a row still open for a pod that is gone.
//!
//! [`check`] is pure; [`gather`] reads the ledger for the pods given.

use crate::meter::{Life, life};
use crate::observe::SCHEDULER_NAME;
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sparkcap_ledger::accrual::PodCheckpoint;
use sparkcap_ledger::binding::PodBinding;
use sparkcap_ledger::{LedgerStore, Result};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How far a recorded start or end may be from the kubelet's report.
pub const TOLERANCE: TimeDelta = TimeDelta::seconds(1);
/// How long an ended pod's row may stay open (the meter closes it on the
/// pass that sees the end, within seconds).
pub const CLOSE_GRACE: TimeDelta = TimeDelta::seconds(60);

/// What kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Ran (or was bound by sparkcap) with no ledger row.
    Unrecorded,
    /// The recorded start is not the pod's.
    StartDiffers,
    /// The recorded end is not the pod's.
    EndDiffers,
    /// Charged (with the borrowed time) is not cpu × the pod's life.
    ChargeDiffers,
    /// Ended over [`CLOSE_GRACE`] ago, row still open.
    EndedStillOpen,
    /// Row open, pod gone.
    OpenButGone,
}

impl Kind {
    /// Every kind, for metrics.
    pub const ALL: [Kind; 6] = [
        Kind::Unrecorded,
        Kind::StartDiffers,
        Kind::EndDiffers,
        Kind::ChargeDiffers,
        Kind::EndedStillOpen,
        Kind::OpenButGone,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unrecorded => "unrecorded",
            Kind::StartDiffers => "start_differs",
            Kind::EndDiffers => "end_differs",
            Kind::ChargeDiffers => "charge_differs",
            Kind::EndedStillOpen => "ended_still_open",
            Kind::OpenButGone => "open_but_gone",
        }
    }
}

/// One disagreement between the ledger and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What.
    pub kind: Kind,
    /// Pod uid.
    pub uid: String,
    /// `namespace/name`.
    pub pod: String,
    /// The figures, for a person.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({}): {}", self.kind.as_str(), self.pod, self.uid, self.detail)
    }
}

/// What the ledger holds for one pod.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Its binding, if sparkcap bound it.
    pub binding: Option<PodBinding>,
    /// Its charge so far, once it started.
    pub checkpoint: Option<PodCheckpoint>,
}

/// Everything [`check`] compares.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Every pod the cluster reports.
    pub pods: Vec<Pod>,
    /// Nodes of sparkcap's pools.
    pub pool_nodes: HashSet<String>,
    /// Namespaces the ledger binds to a tenant.
    pub tenant_namespaces: HashSet<String>,
    /// Nodes declared lost, since when.
    pub lost: HashMap<String, DateTime<Utc>>,
    /// The ledger's rows for the pods above, by uid.
    pub rows: HashMap<String, Rows>,
    /// Rows the ledger holds open (bindings and checkpoints), by uid, with
    /// `namespace/name`.
    pub open: HashMap<String, String>,
}

/// The result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Pods compared.
    pub pods: usize,
    /// Ledger rows compared.
    pub rows: usize,
    /// Every disagreement.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the ledger agrees with the cluster.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Findings of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}

/// Compares; pure, `now` passed in.
pub fn check(facts: &Facts, now: DateTime<Utc>) -> Report {
    let mut report = Report {
        pods: 0,
        rows: facts.rows.len(),
        findings: Vec::new(),
    };
    let mut present = HashSet::new();
    for pod in &facts.pods {
        let Some(uid) = pod.metadata.uid.clone() else { continue };
        present.insert(uid.clone());
        let namespace = pod.namespace().unwrap_or_default();
        let name = format!("{namespace}/{}", pod.name_any());
        let spec = pod.spec.as_ref();
        let node = spec.and_then(|s| s.node_name.clone());
        let ours = spec.and_then(|s| s.scheduler_name.as_deref()) == Some(SCHEDULER_NAME) && node.is_some();
        let on_pool = node.as_ref().is_some_and(|n| facts.pool_nodes.contains(n));
        let tenant_pod = facts.tenant_namespaces.contains(&namespace);
        let lost_at = node.as_ref().and_then(|n| facts.lost.get(n).copied());
        let l = life(pod, lost_at, now);
        let ran = matches!(l, Life::Running { .. } | Life::Ended { .. });
        if !(ours || (tenant_pod && on_pool)) {
            continue;
        }
        report.pods += 1;
        let rows = facts.rows.get(&uid).cloned().unwrap_or_default();
        let mut finding = |kind: Kind, detail: String| {
            report.findings.push(Finding {
                kind,
                uid: uid.clone(),
                pod: name.clone(),
                detail,
            })
        };
        if rows.binding.is_none() && rows.checkpoint.is_none() {
            if ran || ours {
                finding(
                    Kind::Unrecorded,
                    format!(
                        "{} on node {} with no ledger row",
                        if ran { "ran" } else { "bound by sparkcap" },
                        node.as_deref().unwrap_or("?")
                    ),
                );
            }
            continue;
        }
        let Some(cp) = rows.checkpoint else {
            if let Life::Ended { started, ended } = l
                && now - ended > CLOSE_GRACE
            {
                finding(
                    Kind::EndedStillOpen,
                    format!("ran {started} to {ended}; the ledger has its binding but never charged it"),
                );
            }
            continue;
        };
        let (started, ended) = match l {
            Life::Running { started, .. } => (Some(started), None),
            Life::Ended { started, ended } => (Some(started), Some(ended)),
            Life::NotStarted | Life::NeverStarted => (None, None),
        };
        if let Some(s) = started
            && (cp.pod.started_at - s).abs() > TOLERANCE
        {
            finding(
                Kind::StartDiffers,
                format!(
                    "the ledger has it starting at {}, the kubelet at {s}",
                    cp.pod.started_at
                ),
            );
        }
        match (ended, cp.finished_at) {
            (Some(e), Some(f)) => {
                if (f - e).abs() > TOLERANCE {
                    finding(
                        Kind::EndDiffers,
                        format!("the ledger closed it at {f}, the kubelet reports its end at {e}"),
                    );
                }
                if let Some(s) = started {
                    let expected = i128::from(cp.pod.cpu.0) * i128::from((e - s).num_milliseconds()) / 1000;
                    let got = i128::from(cp.charged.0) + i128::from(cp.opportunistic.0);
                    let slack = i128::from(cp.pod.cpu.0) * TOLERANCE.num_seconds() as i128;
                    if (got - expected).abs() > slack {
                        finding(
                            Kind::ChargeDiffers,
                            format!(
                                "{got} mc·s recorded for {} mc over {} s ({expected} mc·s)",
                                cp.pod.cpu.0,
                                (e - s).num_seconds()
                            ),
                        );
                    }
                }
            }
            (Some(e), None) if now - e > CLOSE_GRACE => finding(
                Kind::EndedStillOpen,
                format!("ended at {e}; charged only up to {}", cp.charged_until),
            ),
            _ => {}
        }
    }
    for (uid, name) in &facts.open {
        if !present.contains(uid) {
            report.findings.push(Finding {
                kind: Kind::OpenButGone,
                uid: uid.clone(),
                pod: name.clone(),
                detail: "the ledger still meters it; the pod is gone".into(),
            });
        }
    }
    report.findings.sort_by(|a, b| (a.kind, &a.pod).cmp(&(b.kind, &b.pod)));
    report
}

/// Reads what the ledger holds for `pods` (those in tenant namespaces, on
/// pool nodes or named for sparkcap) and every open row.
pub async fn gather(
    store: &dyn LedgerStore,
    pods: Vec<Pod>,
    pool_nodes: HashSet<String>,
    lost: HashMap<String, DateTime<Utc>>,
) -> Result<Facts> {
    let tenant_namespaces: HashSet<String> = store
        .namespace_bindings()
        .await?
        .into_iter()
        .map(|b| b.namespace)
        .collect();
    let mut rows = HashMap::new();
    for pod in &pods {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            continue;
        };
        let spec = pod.spec.as_ref();
        let relevant = tenant_namespaces.contains(&pod.namespace().unwrap_or_default())
            || spec.and_then(|s| s.scheduler_name.as_deref()) == Some(SCHEDULER_NAME);
        if !relevant {
            continue;
        }
        let r = Rows {
            binding: store.binding(uid).await?,
            checkpoint: store.pod_checkpoint(uid).await?,
        };
        if r.binding.is_some() || r.checkpoint.is_some() {
            rows.insert(uid.to_owned(), r);
        }
    }
    let mut open = HashMap::new();
    for b in store.open_bindings().await? {
        open.insert(b.uid.clone(), format!("{}/{}", b.namespace, b.name));
    }
    for c in store.open_pods().await? {
        open.insert(c.pod.uid.clone(), format!("{}/{}", c.pod.namespace, c.pod.name));
    }
    Ok(Facts {
        pods,
        pool_nodes,
        tenant_namespaces,
        lost,
        rows,
        open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;
    use sparkcap_ledger::accrual::PodUsage;
    use sparkcap_ledger::{McSeconds, Millicores, Pool, TenantId};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(s)
    }

    fn ts(s: i64) -> String {
        t(s).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// A pod in `tenant-a` on `node`, started at 10, ended at `end` if given.
    fn pod(uid: &str, node: &str, sparkcap: bool, end: Option<i64>) -> Pod {
        let state = match end {
            Some(e) => json!({"terminated": {"exitCode": 0, "startedAt": ts(10), "finishedAt": ts(e)}}),
            None => json!({"running": {"startedAt": ts(10)}}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "tenant-a", "uid": uid},
            "spec": {"nodeName": node, "schedulerName": if sparkcap { SCHEDULER_NAME } else { "default-scheduler" },
                     "containers": [{"name": "c"}]},
            "status": {"phase": if end.is_some() { "Succeeded" } else { "Running" }, "startTime": ts(10),
                       "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": "i",
                                              "state": state}]}
        }))
        .unwrap()
    }

    fn checkpoint(uid: &str, start: i64, end: Option<i64>, charged: i64) -> PodCheckpoint {
        PodCheckpoint {
            pod: PodUsage {
                uid: uid.into(),
                tenant: TenantId::new("a").unwrap(),
                namespace: "tenant-a".into(),
                name: uid.into(),
                app_id: None,
                job: None,
                role: Some("driver".into()),
                pool: Pool::Shared,
                cpu: Millicores(1000),
                opportunistic: false,
                started_at: t(start),
            },
            charged_until: t(end.unwrap_or(50)),
            finished_at: end.map(t),
            outcome: None,
            charged: McSeconds(charged),
            opportunistic: McSeconds(0),
        }
    }

    fn facts(pods: Vec<Pod>, rows: Vec<(&str, PodCheckpoint)>) -> Facts {
        Facts {
            pods,
            pool_nodes: ["shared-1".to_owned()].into(),
            tenant_namespaces: ["tenant-a".to_owned()].into(),
            rows: rows
                .into_iter()
                .map(|(u, c)| {
                    (
                        u.to_owned(),
                        Rows {
                            binding: None,
                            checkpoint: Some(c),
                        },
                    )
                })
                .collect(),
            ..Facts::default()
        }
    }

    #[test]
    fn agreeing_books_are_clean_and_each_disagreement_is_named() {
        let now = t(1000);
        // Metered exactly: 1 core from 10 to 70.
        let ok = facts(
            vec![pod("ok", "shared-1", true, Some(70))],
            vec![("ok", checkpoint("ok", 10, Some(70), 60_000))],
        );
        assert!(check(&ok, now).is_clean(), "{:?}", check(&ok, now));
        // A pod that ran on a pool node with no row; one bound by sparkcap
        // with no row; a pod off the pools outside sparkcap is not ours.
        let r = check(
            &facts(
                vec![
                    pod("forged", "shared-1", false, None),
                    pod("lost-row", "other-node", true, None),
                    pod("elsewhere", "other-node", false, None),
                ],
                vec![],
            ),
            now,
        );
        assert_eq!((r.pods, r.count(Kind::Unrecorded)), (2, 2), "{r:?}");
        // Wrong start, wrong end and charge, ended long ago but still open.
        let r = check(
            &facts(
                vec![
                    pod("start", "shared-1", true, Some(70)),
                    pod("end", "shared-1", true, Some(70)),
                    pod("open", "shared-1", true, Some(70)),
                ],
                vec![
                    ("start", checkpoint("start", 13, Some(70), 57_000)),
                    ("end", checkpoint("end", 10, Some(80), 70_000)),
                    ("open", checkpoint("open", 10, None, 40_000)),
                ],
            ),
            now,
        );
        assert_eq!(r.count(Kind::StartDiffers), 1, "{r:?}");
        assert_eq!(r.count(Kind::EndDiffers), 1, "{r:?}");
        assert_eq!(r.count(Kind::ChargeDiffers), 2, "start and end: {r:?}");
        assert_eq!(r.count(Kind::EndedStillOpen), 1, "{r:?}");
        // Within a second, and an end the meter has not had time to close.
        let r = check(
            &facts(
                vec![
                    pod("near", "shared-1", true, Some(70)),
                    pod("fresh", "shared-1", true, Some(990)),
                ],
                vec![
                    ("near", checkpoint("near", 10, Some(71), 61_000)),
                    ("fresh", checkpoint("fresh", 10, None, 900_000)),
                ],
            ),
            now,
        );
        assert!(r.is_clean(), "{r:?}");
        // An open row whose pod is gone.
        let mut f = facts(vec![], vec![]);
        f.open.insert("gone".into(), "tenant-a/gone".into());
        assert_eq!(check(&f, now).count(Kind::OpenButGone), 1);
    }
}
