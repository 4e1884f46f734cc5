//! Usage accrual (R9.1, R9.2). Each running pod has a checkpoint,
//! `charged_until`; accruing up to `t` charges `(t - charged_until) × cpu` and
//! moves the checkpoint to `t`. Re-applying the same `t` adds nothing, and an
//! earlier `t` is refused, so a retried or replayed batch can never charge a
//! second twice or skip one.
//!
//! [`plan_accruals`] is the whole rule: both stores feed it what they hold and
//! persist what it returns in one transaction.

use crate::account::Account;
use crate::error::LedgerError;
use crate::ids::TenantId;
use crate::lifecycle::RunFacts;
use crate::pool::Pool;
use crate::time::{split_by_hour, trunc_secs};
use crate::units::{McSeconds, Millicores};
use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Checkpoints by pod uid, as a batch is planned over them.
pub type Checkpoints = FxHashMap<String, PodCheckpoint>;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Largest cpu a pod may be metered for (100,000 cores).
pub const MAX_POD_CPU: Millicores = Millicores(100_000_000);

/// The facts about a pod that are fixed once it is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUsage {
    /// Kubernetes uid: the key of everything charged for the pod.
    pub uid: String,
    /// Owner.
    pub tenant: TenantId,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// `spark-app-selector`: the application run the pod belongs to.
    pub app_id: Option<String>,
    /// Stable job identity across runs.
    pub job: Option<String>,
    /// `driver` or `executor`.
    pub role: Option<String>,
    /// Where it runs.
    pub pool: Pool,
    /// Container requests plus pod overhead.
    pub cpu: Millicores,
    /// On borrowed dedicated capacity: recorded, never charged (R8.3).
    pub opportunistic: bool,
    /// When it started running.
    pub started_at: DateTime<Utc>,
}

/// How a pod ended: what a run's history shows as its outcome (R11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodOutcome {
    /// Phase Succeeded.
    Succeeded,
    /// Phase Failed (not by eviction).
    Failed,
    /// Evicted to return borrowed capacity, or by node pressure.
    Preempted,
    /// Deleted while running (by its owner or with its node).
    Deleted,
}

impl PodOutcome {
    /// The lowercase name used in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Preempted => "preempted",
            Self::Deleted => "deleted",
        }
    }
}

impl std::str::FromStr for PodOutcome {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        match s {
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "preempted" => Ok(Self::Preempted),
            "deleted" => Ok(Self::Deleted),
            other => Err(LedgerError::Corrupt(format!("unknown pod outcome {other:?}"))),
        }
    }
}

/// Charge `pod` up to `until`; `finished` closes the pod at `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrualRequest {
    /// The pod.
    pub pod: PodUsage,
    /// Charge up to here.
    pub until: DateTime<Utc>,
    /// The pod ended at `until`.
    pub finished: bool,
    /// How it ended, when `finished` (recorded once, with the close).
    #[serde(default)]
    pub outcome: Option<PodOutcome>,
    /// For a driver's close: what the scheduler knows about the run (SLA,
    /// measured use), for profiling and promotion (R5).
    #[serde(default)]
    pub run: Option<RunFacts>,
}

/// What the ledger holds for one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCheckpoint {
    /// Its facts.
    pub pod: PodUsage,
    /// Everything before this has been charged.
    pub charged_until: DateTime<Utc>,
    /// Set once the pod ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended, when known.
    #[serde(default)]
    pub outcome: Option<PodOutcome>,
    /// Usage charged to the tenant.
    pub charged: McSeconds,
    /// Usage recorded on borrowed capacity, not charged.
    pub opportunistic: McSeconds,
}

/// One accrued interval: the journal line behind every charge. The lines
/// of a pod walk its checkpoint from its start: each begins where the one
/// before ended. A correction (an end that reached the ledger after the pod
/// was charged past it) walks back: `to < from`, negative amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageInterval {
    /// Pod uid.
    pub pod_uid: String,
    /// Owner.
    pub tenant: TenantId,
    /// Pool.
    pub pool: Pool,
    /// Start (the checkpoint before).
    pub from: DateTime<Utc>,
    /// End (the checkpoint after).
    pub to: DateTime<Utc>,
    /// CPU held.
    pub cpu: Millicores,
    /// Charged (negative in a correction).
    pub charged: McSeconds,
    /// Recorded but not charged (negative in a correction).
    pub opportunistic: McSeconds,
}

/// What happened to one request.
#[derive(Debug)]
pub enum AccrualOutcome {
    /// The checkpoint moved (or the pod was closed).
    Applied {
        /// Charged by this request (negative when its close gave back
        /// seconds charged past the pod's end).
        charged: McSeconds,
        /// Recorded, uncharged, by this request.
        opportunistic: McSeconds,
    },
    /// Already charged up to there: a retry, nothing added.
    Duplicate,
    /// Refused; nothing of it was written.
    Rejected(LedgerError),
}

impl AccrualOutcome {
    /// The refusal, if any.
    pub fn rejection(&self) -> Option<&LedgerError> {
        match self {
            Self::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// Usage added to one (tenant, pool, hour) bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourlyDelta {
    /// Charged.
    pub charged: McSeconds,
    /// Opportunistic.
    pub opportunistic: McSeconds,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct AccrualPlan {
    /// One per request, in order.
    pub outcomes: Vec<AccrualOutcome>,
    /// Checkpoints to insert (pods the ledger did not know).
    pub new_pods: Vec<PodCheckpoint>,
    /// Checkpoints to update, final state.
    pub updated_pods: Vec<PodCheckpoint>,
    /// Journal lines.
    pub intervals: Vec<UsageInterval>,
    /// Usage per (tenant, pool, hour).
    pub hourly: BTreeMap<(TenantId, Pool, DateTime<Utc>), HourlyDelta>,
    /// Tenants whose account changed, with the account's final state.
    pub accounts: BTreeMap<TenantId, Account>,
    /// Charged and opportunistic totals per tenant in this batch.
    pub tenant_totals: BTreeMap<TenantId, HourlyDelta>,
    /// Known pods this batch closed.
    pub closing: Vec<String>,
    /// Checkpoints given to the plan that it did not change.
    pub untouched: Vec<PodCheckpoint>,
    /// Driver pods of a job that closed in this batch, in order: each ends a
    /// run, which the store profiles and applies to the job's lifecycle.
    pub closed_drivers: Vec<ClosedDriver>,
}

/// A job's driver pod that closed: the end of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedDriver {
    /// The driver's checkpoint, closed.
    pub driver: PodCheckpoint,
    /// Job name.
    pub job: String,
    /// What the scheduler sent with the close.
    pub facts: RunFacts,
}

impl AccrualPlan {
    /// Whether the batch writes anything.
    pub fn is_empty(&self) -> bool {
        self.new_pods.is_empty() && self.updated_pods.is_empty()
    }
}

/// Checks the facts of a request before anything else.
fn check_request(req: &AccrualRequest) -> Result<(), LedgerError> {
    check_usage(&req.pod)?;
    if let Some(run) = &req.run {
        for (field, v) in [("source kind", &run.source), ("target kind", &run.target)] {
            if let Some(v) = v {
                crate::binding::check_text(field, v, 63)?;
            }
        }
    }
    Ok(())
}

/// Refuses pod facts the ledger cannot hold: text PostgreSQL cannot store
/// (checked before SQL, so one bad pod never fails its batch), cpu ≤ 0 or
/// beyond [`MAX_POD_CPU`]. Accruals and bindings both check with it.
pub(crate) fn check_usage(p: &PodUsage) -> Result<(), LedgerError> {
    use crate::binding::check_text;
    check_text("pod uid", &p.uid, 128)?;
    check_text("namespace", &p.namespace, 63)?;
    check_text("pod name", &p.name, 253)?;
    for (field, v) in [("application id", &p.app_id), ("job", &p.job), ("role", &p.role)] {
        if let Some(v) = v {
            check_text(field, v, 253)?;
        }
    }
    if p.cpu.0 <= 0 {
        return Err(LedgerError::MissingCpuRequest { pod: pod_ref(p) });
    }
    if p.cpu > MAX_POD_CPU {
        return Err(LedgerError::CpuOutOfRange {
            pod: pod_ref(p),
            cpu: p.cpu,
        });
    }
    Ok(())
}

fn pod_ref(pod: &PodUsage) -> String {
    format!("{}/{} (uid {})", pod.namespace, pod.name, pod.uid)
}

fn changed(pod: &PodUsage, field: &'static str, was: impl ToString, now: impl ToString) -> LedgerError {
    LedgerError::PodChanged {
        pod: pod_ref(pod),
        field,
        was: was.to_string(),
        now: now.to_string(),
    }
}

/// Refuses a request whose fixed facts differ from the checkpoint's.
fn check_same_pod(cp: &PodUsage, req: &PodUsage) -> Result<(), LedgerError> {
    if cp.tenant != req.tenant {
        return Err(changed(req, "tenant", &cp.tenant, &req.tenant));
    }
    if cp.pool != req.pool {
        return Err(changed(req, "pool", cp.pool, req.pool));
    }
    if cp.cpu != req.cpu {
        return Err(changed(req, "cpu", cp.cpu, req.cpu));
    }
    if cp.opportunistic != req.opportunistic {
        return Err(changed(req, "opportunistic", cp.opportunistic, req.opportunistic));
    }
    if cp.started_at != trunc_secs(req.started_at) {
        return Err(changed(req, "started_at", cp.started_at, req.started_at));
    }
    Ok(())
}

/// One pod's working state inside a batch.
#[derive(Debug)]
struct Slot {
    cp: PodCheckpoint,
    /// The store did not know the pod.
    is_new: bool,
    /// Not yet applied in this batch (a new pod's first request creates it
    /// even when it charges nothing).
    fresh: bool,
    /// Changed by this batch.
    touched: bool,
    /// Open when the batch began.
    was_open: bool,
}

/// Applies `requests` in order to the checkpoints and accounts given.
/// `checkpoints` must hold every known pod named in `requests` (it is
/// consumed: what the batch does not change comes back in
/// [`AccrualPlan::untouched`]); `accounts` every tenant whose pods are named,
/// with the lots that could pay; `tenants` the tenants that exist.
/// Duplicates inside one batch are handled as if they came in separate batches.
pub fn plan_accruals(
    mut checkpoints: Checkpoints,
    accounts: &HashMap<TenantId, Account>,
    tenants: &HashSet<TenantId>,
    requests: &[AccrualRequest],
) -> AccrualPlan {
    let mut plan = AccrualPlan {
        outcomes: Vec::with_capacity(requests.len()),
        intervals: Vec::with_capacity(requests.len()),
        ..Default::default()
    };
    // FxHash: the keys are uids and small tuples the ledger itself built,
    // hashed once per request on the hot path (SipHash was 6 % of a batch).
    let mut pods: FxHashMap<&str, Slot> = FxHashMap::with_capacity_and_hasher(requests.len(), Default::default());
    let mut order: Vec<&str> = Vec::with_capacity(requests.len());
    // Tenants by index: the per-request work clones no tenant id.
    let mut tix: FxHashMap<&TenantId, usize> = FxHashMap::default();
    let mut tnames: Vec<&TenantId> = Vec::new();
    let mut accts: Vec<Option<Account>> = Vec::new();
    let mut totals: Vec<HourlyDelta> = Vec::new();
    let mut hourly: FxHashMap<(usize, Pool, DateTime<Utc>), HourlyDelta> = FxHashMap::default();
    let mut run_facts: FxHashMap<&str, &RunFacts> = FxHashMap::default();

    for req in requests {
        let outcome = (|| -> Result<AccrualOutcome, LedgerError> {
            check_request(req)?;
            let until = trunc_secs(req.until);
            let uid = req.pod.uid.as_str();
            if !pods.contains_key(uid) {
                let slot = match checkpoints.remove(uid) {
                    Some(cp) => Slot {
                        was_open: cp.finished_at.is_none(),
                        cp,
                        is_new: false,
                        fresh: false,
                        touched: false,
                    },
                    None => {
                        if !tenants.contains(&req.pod.tenant) {
                            return Err(LedgerError::UnknownTenant(req.pod.tenant.clone()));
                        }
                        let started = trunc_secs(req.pod.started_at);
                        if until < started {
                            return Err(LedgerError::BeforeStart {
                                pod: pod_ref(&req.pod),
                                until,
                                started_at: started,
                            });
                        }
                        let mut pod = req.pod.clone();
                        pod.started_at = started;
                        Slot {
                            cp: PodCheckpoint {
                                pod,
                                charged_until: started,
                                finished_at: None,
                                outcome: None,
                                charged: McSeconds::ZERO,
                                opportunistic: McSeconds::ZERO,
                            },
                            is_new: true,
                            fresh: true,
                            touched: false,
                            was_open: true,
                        }
                    }
                };
                pods.insert(uid, slot);
                order.push(uid);
            }
            let slot = pods.get_mut(uid).expect("inserted above");
            let cp = &mut slot.cp;
            check_same_pod(&cp.pod, &req.pod)?;
            if let Some(fin) = cp.finished_at
                && until > fin
            {
                return Err(LedgerError::PodFinished {
                    pod: pod_ref(&req.pod),
                    finished_at: fin,
                    until,
                });
            }
            let closes = req.finished && cp.finished_at.is_none();
            // A pod whose end reached the ledger only after it was charged
            // past it (its status came late) closes at its real end: the
            // seconds charged beyond it are given back by a correcting
            // journal line that runs backwards, from the checkpoint to the
            // end. The meter charges running pods a lag behind the clock so
            // that this stays rare; when it happens, the books stay exact.
            let until = if closes { until.max(cp.pod.started_at) } else { until };
            if until < cp.charged_until && !closes {
                return Err(LedgerError::ClockSkew {
                    pod: pod_ref(&req.pod),
                    until,
                    charged_until: cp.charged_until,
                });
            }
            if until == cp.charged_until && !closes && !slot.fresh {
                return Ok(AccrualOutcome::Duplicate);
            }
            let from = cp.charged_until;
            // Forward, +1; a correction, -1.
            let (lo, hi, sign) = if until >= from {
                (from, until, 1)
            } else {
                (until, from, -1)
            };
            let secs = (hi - lo).num_seconds();
            let usage = McSeconds(cp.pod.cpu.for_seconds(secs).0 * sign);
            let (charged, opportunistic) = if cp.pod.opportunistic {
                (McSeconds::ZERO, usage)
            } else {
                (usage, McSeconds::ZERO)
            };
            if secs > 0 {
                let ti = *tix.entry(&req.pod.tenant).or_insert_with(|| {
                    tnames.push(&req.pod.tenant);
                    accts.push(None);
                    totals.push(HourlyDelta::default());
                    tnames.len() - 1
                });
                // The dedicated pool is the tenant's own prepaid units: its
                // usage is metered and reported, never drawn from vCPU-hours.
                if charged.0 != 0 && cp.pod.pool != Pool::Dedicated {
                    let acct =
                        accts[ti].get_or_insert_with(|| accounts.get(&req.pod.tenant).cloned().unwrap_or_default());
                    if sign > 0 {
                        acct.charge(lo, hi, cp.pod.cpu);
                    } else {
                        // Always zero: those seconds were charged to it.
                        let _ = acct.refund(lo, hi, cp.pod.cpu);
                    }
                }
                for (hour, s) in split_by_hour(lo, hi) {
                    let d = hourly.entry((ti, cp.pod.pool, hour)).or_default();
                    let m = McSeconds(cp.pod.cpu.for_seconds(s).0 * sign);
                    if cp.pod.opportunistic {
                        d.opportunistic += m;
                    } else {
                        d.charged += m;
                    }
                }
                totals[ti].charged += charged;
                totals[ti].opportunistic += opportunistic;
                plan.intervals.push(UsageInterval {
                    pod_uid: cp.pod.uid.clone(),
                    tenant: cp.pod.tenant.clone(),
                    pool: cp.pod.pool,
                    from,
                    to: until,
                    cpu: cp.pod.cpu,
                    charged,
                    opportunistic,
                });
            }
            cp.charged_until = until;
            cp.charged += charged;
            cp.opportunistic += opportunistic;
            if closes {
                cp.finished_at = Some(until);
                cp.outcome = req.outcome;
                if let Some(f) = &req.run {
                    run_facts.insert(uid, f);
                }
            }
            slot.fresh = false;
            slot.touched = true;
            Ok(AccrualOutcome::Applied { charged, opportunistic })
        })();
        plan.outcomes.push(outcome.unwrap_or_else(AccrualOutcome::Rejected));
    }

    for uid in order {
        let Some(slot) = pods.remove(uid) else { continue };
        let finishes_now = slot.touched && slot.cp.finished_at.is_some() && (slot.is_new || slot.was_open);
        // A run ends with its driver, or (client mode: the driver runs outside
        // the cluster) with the pod the scheduler sends the run's facts with.
        let ends_run = slot.cp.pod.role.as_deref() == Some("driver") || run_facts.contains_key(uid);
        if let (true, true, Some(job)) = (finishes_now, ends_run, &slot.cp.pod.job) {
            plan.closed_drivers.push(ClosedDriver {
                driver: slot.cp.clone(),
                job: job.clone(),
                facts: run_facts.get(uid).map(|f| (*f).clone()).unwrap_or_default(),
            });
        }
        if !slot.touched {
            plan.untouched.push(slot.cp);
        } else if slot.is_new {
            plan.new_pods.push(slot.cp);
        } else {
            if slot.was_open && slot.cp.finished_at.is_some() {
                plan.closing.push(slot.cp.pod.uid.clone());
            }
            plan.updated_pods.push(slot.cp);
        }
    }
    plan.untouched.extend(checkpoints.into_values());
    for ((ti, pool, hour), d) in hourly {
        plan.hourly.insert((tnames[ti].clone(), pool, hour), d);
    }
    for (ti, name) in tnames.iter().enumerate() {
        if let Some(acct) = accts[ti].take() {
            plan.accounts.insert((*name).clone(), acct);
        }
        plan.tenant_totals.insert((*name).clone(), totals[ti]);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Lot;
    use chrono::{TimeDelta, TimeZone};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(s)
    }

    fn pod(uid: &str, cpu: i64, opportunistic: bool) -> PodUsage {
        PodUsage {
            uid: uid.into(),
            tenant: TenantId::new("acme").unwrap(),
            namespace: "tenant-acme".into(),
            name: format!("p-{uid}"),
            app_id: Some("spark-1".into()),
            job: Some("ingest".into()),
            role: Some("executor".into()),
            pool: Pool::Shared,
            cpu: Millicores(cpu),
            opportunistic,
            started_at: t(0),
        }
    }

    fn req(p: &PodUsage, until: i64, finished: bool) -> AccrualRequest {
        AccrualRequest {
            pod: p.clone(),
            until: t(until),
            finished,
            outcome: None,
            run: None,
        }
    }

    fn tenants() -> HashSet<TenantId> {
        [TenantId::new("acme").unwrap()].into_iter().collect()
    }

    fn accounts() -> HashMap<TenantId, Account> {
        let mut m = HashMap::new();
        m.insert(
            TenantId::new("acme").unwrap(),
            Account {
                lots: vec![Lot {
                    purchase_id: 1,
                    valid_from: t(-10),
                    valid_until: t(1_000_000),
                    amount: McSeconds::from_vcpu_hours(10),
                    consumed: McSeconds::ZERO,
                }],
                ..Default::default()
            },
        );
        m
    }

    #[test]
    fn duplicates_in_one_batch_charge_once() {
        let p = pod("a", 2000, false);
        let plan = plan_accruals(
            Checkpoints::default(),
            &accounts(),
            &tenants(),
            &[
                req(&p, 30, false),
                req(&p, 30, false),
                req(&p, 60, true),
                req(&p, 60, true),
            ],
        );
        assert!(matches!(plan.outcomes[0], AccrualOutcome::Applied { charged, .. } if charged == McSeconds(60_000)));
        assert!(matches!(plan.outcomes[1], AccrualOutcome::Duplicate));
        assert!(matches!(plan.outcomes[2], AccrualOutcome::Applied { .. }));
        assert!(matches!(plan.outcomes[3], AccrualOutcome::Duplicate));
        assert_eq!(plan.new_pods.len(), 1);
        assert_eq!(plan.new_pods[0].charged, McSeconds(120_000));
        assert_eq!(plan.new_pods[0].finished_at, Some(t(60)));
        assert_eq!(plan.intervals.len(), 2);
        let acct = &plan.accounts[&TenantId::new("acme").unwrap()];
        assert_eq!(acct.total_charged(), McSeconds(120_000));
    }

    /// The checkpoints of `p` (1 core) charged for its first 100 s.
    fn charged_to_100(p: &PodUsage, finished_at: Option<DateTime<Utc>>) -> Checkpoints {
        let cp = PodCheckpoint {
            pod: p.clone(),
            charged_until: t(100),
            finished_at,
            outcome: None,
            charged: McSeconds(100_000),
            opportunistic: McSeconds::ZERO,
        };
        Checkpoints::from_iter([(p.uid.clone(), cp)])
    }

    #[test]
    fn an_end_reported_after_charging_past_it_gives_the_extra_seconds_back() {
        let p = pod("a", 1000, false);
        let cps = charged_to_100(&p, None);
        let acme = TenantId::new("acme").unwrap();
        let mut accts = accounts();
        accts.get_mut(&acme).unwrap().lots[0].consumed = McSeconds(100_000);
        let plan = plan_accruals(
            cps,
            &accts,
            &tenants(),
            &[
                req(&p, 98, true),
                req(&p, 98, true),
                req(&p, 97, false),
                req(&p, 99, false),
            ],
        );
        assert!(
            matches!(plan.outcomes[0], AccrualOutcome::Applied { charged, .. } if charged == McSeconds(-2_000)),
            "{:?}",
            plan.outcomes[0]
        );
        // The retried close adds nothing; accruals after the close are refused.
        assert!(matches!(plan.outcomes[1], AccrualOutcome::Duplicate));
        assert!(plan.outcomes[2].rejection().is_some());
        assert!(plan.outcomes[3].rejection().is_some());
        let closed = &plan.updated_pods[0];
        assert_eq!(closed.finished_at, Some(t(98)));
        assert_eq!(closed.charged_until, t(98));
        assert_eq!(closed.charged, McSeconds(98_000));
        // The correcting line walks back from the checkpoint to the end.
        assert_eq!(plan.intervals.len(), 1);
        let line = &plan.intervals[0];
        assert_eq!((line.from, line.to, line.charged), (t(100), t(98), McSeconds(-2_000)));
        assert_eq!(plan.accounts[&acme].total_charged(), McSeconds(98_000));
        assert_eq!(plan.tenant_totals[&acme].charged, McSeconds(-2_000));
        let hourly: McSeconds = plan.hourly.values().map(|d| d.charged).sum();
        assert_eq!(hourly, McSeconds(-2_000));
    }

    #[test]
    fn an_end_before_the_start_closes_at_the_start_and_gives_everything_back() {
        let p = pod("a", 1000, true);
        let mut cps = charged_to_100(&p, None);
        let cp = cps.get_mut("a").unwrap();
        (cp.charged, cp.opportunistic) = (McSeconds::ZERO, McSeconds(100_000));
        let mut early = req(&p, 0, true);
        early.until = t(-5);
        let plan = plan_accruals(cps, &accounts(), &tenants(), &[early]);
        let closed = &plan.updated_pods[0];
        assert_eq!(closed.finished_at, Some(t(0)));
        assert_eq!(closed.opportunistic, McSeconds::ZERO);
        assert!(plan.accounts.is_empty(), "borrowed time touches no account");
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let p = pod("a", 1000, false);
        let cps = charged_to_100(&p, Some(t(100)));
        let no_cpu = pod("b", 0, false);
        let mut stranger = pod("c", 1000, false);
        stranger.tenant = TenantId::new("nobody").unwrap();
        let mut resized = p.clone();
        resized.cpu = Millicores(2000);
        let plan = plan_accruals(
            cps,
            &accounts(),
            &tenants(),
            &[
                req(&p, 50, false),
                req(&p, 150, false),
                req(&no_cpu, 10, false),
                req(&stranger, 10, false),
                req(&resized, 100, false),
                req(&p, 100, true),
            ],
        );
        let msgs: Vec<String> = plan
            .outcomes
            .iter()
            .map(|o| o.rejection().map(|e| e.to_string()).unwrap_or_default())
            .collect();
        assert!(msgs[0].contains("earlier than already charged"), "{}", msgs[0]);
        assert!(msgs[1].contains("finished at"), "{}", msgs[1]);
        assert!(msgs[2].contains("no cpu request"), "{}", msgs[2]);
        assert!(msgs[3].contains("unknown tenant nobody"), "{}", msgs[3]);
        assert!(msgs[4].contains("cpu changed from 1 to 2"), "{}", msgs[4]);
        assert!(matches!(plan.outcomes[5], AccrualOutcome::Duplicate));
        assert!(plan.is_empty());
    }

    #[test]
    fn opportunistic_recorded_not_charged() {
        let p = pod("o", 4000, true);
        let plan = plan_accruals(Checkpoints::default(), &accounts(), &tenants(), &[req(&p, 3600, true)]);
        assert!(plan.accounts.is_empty());
        assert_eq!(plan.new_pods[0].opportunistic, McSeconds::from_vcpu_hours(4));
        assert_eq!(plan.new_pods[0].charged, McSeconds::ZERO);
        let (_, d) = plan.hourly.iter().next().unwrap();
        assert_eq!(d.opportunistic, McSeconds::from_vcpu_hours(4));
    }
}
