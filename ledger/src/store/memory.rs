//! The in-memory ledger: the simulator's store, and the reference the
//! Postgres store is held to by the shared contract suite. One mutex makes
//! every call atomic, as one transaction is in Postgres.

use super::{
    AuditReport, Delivery, Epoch, Granularity, JobRun, JobStats, JobSummary, LedgerStore, NoticeQuery, PruneReport,
    RunOutcome, RunQuery, TenantSummary, UsageBucket, check_notify_url, check_range,
};
use crate::account::{Account, Balance, Lot};
use crate::accrual::ClosedDriver;
use crate::accrual::{AccrualOutcome, AccrualRequest, HourlyDelta, PodCheckpoint, PodOutcome, plan_accruals};
use crate::binding::{PodBinding, plan_bindings};
use crate::error::{LedgerError, Result};
use crate::feed::{ChangeKind, LedgerChange};
use crate::ids::{TenantId, validate_namespace};
use crate::lifecycle::{JobState, Notice, RunProfile, balance_notice_for, profile, record_run};
use crate::pool::{Pool, PoolCapacity};
use crate::purchase::{
    Purchase, PurchaseKind, PurchaseReceipt, PurchaseRequest, check_dedicated_room, dedicated_units_at,
};
use crate::slices::{Decision, Horizon, SlicePolicy, StoredSchedule};
use crate::tenant::{
    NamespaceBinding, NewTenant, Tenant, TenantPatch, TenantRecord, TenantStatus, check_namespace_changes,
};
use crate::time::{hour_of, rate_window_start, trunc_secs};
use crate::units::McSeconds;
use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

#[derive(Debug)]
struct TenantRow {
    tenant: Tenant,
    consumed: McSeconds,
    opportunistic: McSeconds,
    debt: McSeconds,
    debt_since: Option<DateTime<Utc>>,
    pruned_charged: McSeconds,
    pruned_opportunistic: McSeconds,
}

#[derive(Debug)]
struct PodRow {
    cp: PodCheckpoint,
    /// Sum and count of the journal lines: the memory store keeps no journal
    /// (a simulated day would hold millions of lines), only what audit checks.
    interval_sum: McSeconds,
    intervals: u64,
}

#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<TenantId, TenantRow>,
    bindings: BTreeMap<String, TenantId>,
    epoch: i64,
    holder: String,
    pools: BTreeMap<Pool, PoolCapacity>,
    purchases: Vec<Purchase>,
    by_key: HashMap<String, (usize, PurchaseRequest)>,
    pods: HashMap<String, PodRow>,
    hourly: BTreeMap<(TenantId, DateTime<Utc>, Pool), HourlyDelta>,
    jobs: BTreeMap<(TenantId, String), JobState>,
    schedules: BTreeMap<(TenantId, String), StoredSchedule>,
    /// Pod uids by application: a run's pods, for its profile.
    apps: HashMap<String, Vec<String>>,
    profiles: Vec<RunProfile>,
    /// Each job's newest runs, newest first, at most
    /// [`crate::lifecycle::EFFICIENCY_RUNS`]: what the sizing rule reads
    /// when a run closes, kept so closing one does not scan every profile.
    recent_runs: HashMap<(TenantId, String), Vec<RunProfile>>,
    notices: Vec<Notice>,
    notice_keys: HashSet<String>,
    notify_urls: BTreeMap<TenantId, String>,
    /// Pod bindings: the record and when it closed without a start.
    pod_bindings: HashMap<String, (PodBinding, Option<DateTime<Utc>>)>,
}

impl State {
    fn tenant_row(&self, id: &TenantId) -> Result<&TenantRow> {
        self.tenants
            .get(id)
            .ok_or_else(|| LedgerError::UnknownTenant(id.clone()))
    }

    fn account(&self, id: &TenantId) -> Account {
        let row = self.tenants.get(id);
        Account {
            lots: self
                .purchases
                .iter()
                .filter(|p| &p.tenant == id && p.kind == PurchaseKind::VcpuHours)
                .map(|p| Lot {
                    purchase_id: p.id,
                    valid_from: p.valid_from,
                    valid_until: p.valid_until,
                    amount: McSeconds::from_vcpu_hours(p.quantity),
                    consumed: p.consumed,
                })
                .collect(),
            debt: row.map_or(McSeconds::ZERO, |r| r.debt),
            debt_since: row.and_then(|r| r.debt_since),
        }
    }

    /// vCPU-hour usage (not the dedicated pool's) since `since`.
    fn consumed_since(&self, id: &TenantId, since: DateTime<Utc>) -> McSeconds {
        Pool::ALL
            .iter()
            .filter(|&&p| p != Pool::Dedicated)
            .flat_map(|&pool| {
                self.hourly
                    .range((id.clone(), since, pool)..)
                    .take_while(move |((t, _, _), _)| t == id)
                    .filter(move |((_, _, p), _)| *p == pool)
                    .map(|(_, d)| d.charged)
            })
            .sum()
    }

    fn balance(&self, id: &TenantId, now: DateTime<Utc>) -> Result<Balance> {
        self.tenant_row(id)?;
        let now = trunc_secs(now);
        Ok(self
            .account(id)
            .balance(now, self.consumed_since(id, rate_window_start(now))))
    }

    fn check_epoch(&self, epoch: Epoch) -> Result<()> {
        check_epoch(epoch.0, self.epoch)
    }

    /// A fenced (leader) write checks its epoch; the API's writes carry none.
    fn check_fence(&self, fence: Option<Epoch>) -> Result<()> {
        fence.map_or(Ok(()), |e| self.check_epoch(e))
    }

    /// Stores `n` unless its dedupe key is taken.
    fn add_notice(&mut self, mut n: Notice) -> Option<i64> {
        if let Some(k) = &n.dedupe_key
            && !self.notice_keys.insert(k.clone())
        {
            return None;
        }
        n.id = self.notices.len() as i64 + 1;
        let id = n.id;
        self.notices.push(n);
        Some(id)
    }

    /// Profiles the runs that `closed` end and applies them to their jobs.
    fn finish_runs(&mut self, closed: &[ClosedDriver]) {
        for c in closed {
            let app = c.driver.pod.app_id.as_deref().and_then(|a| self.apps.get(a));
            let pods = app
                .into_iter()
                .flatten()
                .filter_map(|uid| self.pods.get(uid))
                .map(|r| &r.cp);
            let Some(run) = profile(c, pods) else { continue };
            let key = (run.tenant.clone(), run.job.clone());
            let state = self.jobs.remove(&key).unwrap_or_default();
            let earlier = self.recent_runs.entry(key.clone()).or_default();
            let (state, notices) = record_run(state, &run, earlier, c.facts.promote_after);
            earlier.push(run.clone());
            newest_first(earlier, crate::lifecycle::EFFICIENCY_RUNS);
            self.jobs.insert(key, state);
            self.profiles.push(run);
            for n in notices {
                self.add_notice(n);
            }
        }
    }
}

/// Sorts runs newest first (then by app id) and keeps `limit`.
fn newest_first(runs: &mut Vec<RunProfile>, limit: i64) {
    runs.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(a.app_id.cmp(&b.app_id)));
    runs.truncate(limit.max(0) as usize);
}

/// Refuses a write whose epoch is not the newest claimed.
pub(crate) fn check_epoch(epoch: i64, current: i64) -> Result<()> {
    if epoch < current {
        return Err(LedgerError::StaleEpoch { epoch, current });
    }
    if epoch > current {
        return Err(LedgerError::UnclaimedEpoch { epoch, current });
    }
    Ok(())
}

/// The in-memory ledger.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    feed: broadcast::Sender<LedgerChange>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty ledger.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            feed: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half a write: every
        // method computes first and mutates last. Keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, change: LedgerChange) {
        // No subscriber is not an error.
        let _ = self.feed.send(change);
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn create_tenant(&self, new: NewTenant, now: DateTime<Utc>) -> Result<Tenant> {
        let namespaces = new.namespaces.clone();
        let tenant = new.into_tenant(trunc_secs(now))?;
        {
            let mut s = self.lock();
            if s.tenants.contains_key(&tenant.id) {
                return Err(LedgerError::TenantExists(tenant.id));
            }
            check_namespace_changes(&tenant.id, &namespaces, &[], |ns| s.bindings.get(ns).cloned())?;
            for ns in namespaces.iter().cloned() {
                s.bindings.insert(ns, tenant.id.clone());
            }
            s.tenants.insert(
                tenant.id.clone(),
                TenantRow {
                    tenant: tenant.clone(),
                    consumed: McSeconds::ZERO,
                    opportunistic: McSeconds::ZERO,
                    debt: McSeconds::ZERO,
                    debt_since: None,
                    pruned_charged: McSeconds::ZERO,
                    pruned_opportunistic: McSeconds::ZERO,
                },
            );
        }
        self.notify(LedgerChange::of(ChangeKind::Tenant, &tenant.id));
        if !namespaces.is_empty() {
            self.notify(LedgerChange::of(ChangeKind::Binding, &tenant.id));
        }
        Ok(tenant)
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        Ok(self.lock().tenants.get(id).map(|r| r.tenant.clone()))
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.lock().tenants.values().map(|r| r.tenant.clone()).collect())
    }

    async fn update_tenant(&self, id: &TenantId, patch: &TenantPatch) -> Result<TenantRecord> {
        let record = {
            let mut s = self.lock();
            let mut tenant = s.tenant_row(id)?.tenant.clone();
            patch.apply(&mut tenant)?;
            check_namespace_changes(id, &patch.bind_namespaces, &patch.unbind_namespaces, |ns| {
                s.bindings.get(ns).cloned()
            })?;
            for ns in &patch.unbind_namespaces {
                s.bindings.remove(ns);
            }
            for ns in &patch.bind_namespaces {
                s.bindings.insert(ns.clone(), id.clone());
            }
            if tenant.status == TenantStatus::Deleted {
                s.bindings.retain(|_, owner| owner != id);
            }
            s.tenants.get_mut(id).expect("checked above").tenant = tenant.clone();
            let namespaces = s
                .bindings
                .iter()
                .filter(|(_, t)| *t == id)
                .map(|(ns, _)| ns.clone())
                .collect();
            TenantRecord { tenant, namespaces }
        };
        self.notify(LedgerChange::of(ChangeKind::Tenant, id));
        self.notify(LedgerChange::of(ChangeKind::Binding, id));
        Ok(record)
    }

    async fn bind_namespace(&self, namespace: &str, tenant: &TenantId) -> Result<NamespaceBinding> {
        validate_namespace(namespace)?;
        {
            let mut s = self.lock();
            if s.tenant_row(tenant)?.tenant.status == TenantStatus::Deleted {
                return Err(LedgerError::TenantDeleted(tenant.clone()));
            }
            if let Some(owner) = s.bindings.get(namespace)
                && owner != tenant
            {
                return Err(LedgerError::NamespaceTaken {
                    namespace: namespace.to_owned(),
                    owner: owner.clone(),
                });
            }
            s.bindings.insert(namespace.to_owned(), tenant.clone());
        }
        self.notify(LedgerChange::of(ChangeKind::Binding, tenant));
        Ok(NamespaceBinding {
            namespace: namespace.to_owned(),
            tenant: tenant.clone(),
        })
    }

    async fn unbind_namespace(&self, namespace: &str) -> Result<bool> {
        let removed = self.lock().bindings.remove(namespace);
        if let Some(t) = &removed {
            self.notify(LedgerChange::of(ChangeKind::Binding, t));
        }
        Ok(removed.is_some())
    }

    async fn namespace_bindings(&self) -> Result<Vec<NamespaceBinding>> {
        Ok(self
            .lock()
            .bindings
            .iter()
            .map(|(ns, t)| NamespaceBinding {
                namespace: ns.clone(),
                tenant: t.clone(),
            })
            .collect())
    }

    async fn claim_epoch(&self, holder: &str) -> Result<Epoch> {
        let mut s = self.lock();
        s.epoch += 1;
        s.holder = holder.to_owned();
        Ok(Epoch(s.epoch))
    }

    async fn set_pool_capacity(&self, epoch: Epoch, capacity: &PoolCapacity) -> Result<()> {
        capacity.validate()?;
        {
            let mut s = self.lock();
            s.check_epoch(epoch)?;
            let mut cap = capacity.clone();
            cap.updated_at = trunc_secs(cap.updated_at);
            s.pools.insert(capacity.pool, cap);
        }
        self.notify(LedgerChange::global(ChangeKind::Pool));
        Ok(())
    }

    async fn pools(&self) -> Result<Vec<PoolCapacity>> {
        Ok(self.lock().pools.values().cloned().collect())
    }

    async fn record_purchase(&self, request: &PurchaseRequest, now: DateTime<Utc>) -> Result<PurchaseReceipt> {
        let now = trunc_secs(now);
        let receipt = {
            let mut s = self.lock();
            if let Some((idx, original)) = s.by_key.get(request.idempotency_key.trim()) {
                let diff = request.differences(original);
                if !diff.is_empty() {
                    return Err(LedgerError::IdempotencyConflict {
                        key: request.idempotency_key.clone(),
                        differences: diff.join("; "),
                    });
                }
                return Ok(PurchaseReceipt {
                    purchase: s.purchases[*idx].clone(),
                    replayed: true,
                });
            }
            let valid = request.validate(now)?;
            let row = s.tenant_row(&request.tenant)?;
            if row.tenant.status == TenantStatus::Deleted {
                return Err(LedgerError::TenantDeleted(request.tenant.clone()));
            }
            if request.kind == PurchaseKind::DedicatedUnits {
                let units = s.pools.get(&Pool::Dedicated).map_or(0, |p| p.spark_units);
                let sold: Vec<_> = s
                    .purchases
                    .iter()
                    .filter(|p| p.kind == PurchaseKind::DedicatedUnits)
                    .map(|p| (p.valid_from, p.valid_until, p.quantity))
                    .collect();
                check_dedicated_room(&valid, &sold, units)?;
            }
            let purchase = Purchase {
                id: s.purchases.len() as i64 + 1,
                tenant: request.tenant.clone(),
                kind: request.kind,
                quantity: request.quantity,
                period: request.period,
                valid_from: valid.valid_from,
                valid_until: valid.valid_until,
                idempotency_key: request.idempotency_key.trim().to_owned(),
                created_at: now,
                consumed: McSeconds::ZERO,
            };
            let idx = s.purchases.len();
            s.purchases.push(purchase.clone());
            s.by_key
                .insert(purchase.idempotency_key.clone(), (idx, request.clone()));
            PurchaseReceipt {
                purchase,
                replayed: false,
            }
        };
        self.notify(LedgerChange::of(ChangeKind::Purchase, &request.tenant));
        Ok(receipt)
    }

    async fn purchases(&self, tenant: &TenantId) -> Result<Vec<Purchase>> {
        let s = self.lock();
        s.tenant_row(tenant)?;
        let mut out: Vec<Purchase> = s.purchases.iter().filter(|p| &p.tenant == tenant).cloned().collect();
        out.reverse();
        Ok(out)
    }

    async fn accrue(&self, epoch: Epoch, batch: &[AccrualRequest]) -> Result<Vec<AccrualOutcome>> {
        let (outcomes, changed) = {
            let mut s = self.lock();
            s.check_epoch(epoch)?;
            // Checkpoints are moved out and back (every one comes back in the
            // plan), not cloned: a simulated day accrues millions of them.
            let mut journal: HashMap<String, (McSeconds, u64)> = HashMap::with_capacity(batch.len());
            let mut checkpoints =
                crate::accrual::Checkpoints::with_capacity_and_hasher(batch.len(), Default::default());
            for r in batch {
                if let Some(row) = s.pods.remove(&r.pod.uid) {
                    journal.insert(r.pod.uid.clone(), (row.interval_sum, row.intervals));
                    checkpoints.insert(r.pod.uid.clone(), row.cp);
                }
            }
            let names: HashSet<&TenantId> = batch.iter().map(|r| &r.pod.tenant).collect();
            let accounts: HashMap<TenantId, Account> = names
                .into_iter()
                .filter(|t| s.tenants.contains_key(*t))
                .map(|t| (t.clone(), s.account(t)))
                .collect();
            let known: HashSet<TenantId> = accounts.keys().cloned().collect();
            let plan = plan_accruals(checkpoints, &accounts, &known, batch);

            for cp in &plan.new_pods {
                if let Some(app) = &cp.pod.app_id {
                    s.apps.entry(app.clone()).or_default().push(cp.pod.uid.clone());
                }
            }
            for cp in plan.new_pods.into_iter().chain(plan.updated_pods).chain(plan.untouched) {
                let uid = cp.pod.uid.clone();
                let (interval_sum, intervals) = journal.remove(&uid).unwrap_or((McSeconds::ZERO, 0));
                s.pods.insert(
                    uid,
                    PodRow {
                        cp,
                        interval_sum,
                        intervals,
                    },
                );
            }
            debug_assert!(journal.is_empty(), "every checkpoint comes back from the plan");
            for iv in &plan.intervals {
                if let Some(row) = s.pods.get_mut(&iv.pod_uid) {
                    row.interval_sum += iv.charged + iv.opportunistic;
                    row.intervals += 1;
                }
            }
            for ((tenant, pool, hour), d) in plan.hourly {
                let e = s.hourly.entry((tenant, hour, pool)).or_default();
                e.charged += d.charged;
                e.opportunistic += d.opportunistic;
            }
            for (tenant, acct) in &plan.accounts {
                for lot in &acct.lots {
                    if let Some(p) = s.purchases.iter_mut().find(|p| p.id == lot.purchase_id) {
                        p.consumed = lot.consumed;
                    }
                }
                if let Some(row) = s.tenants.get_mut(tenant) {
                    row.debt = acct.debt;
                    row.debt_since = acct.debt_since;
                }
            }
            let mut changed: Vec<LedgerChange> = plan
                .tenant_totals
                .keys()
                .map(|t| LedgerChange::of(ChangeKind::Usage, t))
                .collect();
            let job_tenants: std::collections::BTreeSet<&TenantId> =
                plan.closed_drivers.iter().map(|c| &c.driver.pod.tenant).collect();
            changed.extend(job_tenants.into_iter().map(|t| LedgerChange::of(ChangeKind::Job, t)));
            s.finish_runs(&plan.closed_drivers);
            if let Some(now) = batch.iter().map(|r| trunc_secs(r.until)).max() {
                for tenant in plan.accounts.keys() {
                    let acct = s.account(tenant);
                    if let Some(n) = balance_notice_for(tenant, &acct, now) {
                        s.add_notice(n);
                    }
                }
            }
            for (tenant, d) in plan.tenant_totals {
                if let Some(row) = s.tenants.get_mut(&tenant) {
                    row.consumed += d.charged;
                    row.opportunistic += d.opportunistic;
                }
            }
            (plan.outcomes, changed)
        };
        for c in changed {
            self.notify(c);
        }
        Ok(outcomes)
    }

    async fn pod_checkpoint(&self, uid: &str) -> Result<Option<PodCheckpoint>> {
        Ok(self.lock().pods.get(uid).map(|r| r.cp.clone()))
    }

    async fn record_bindings(&self, epoch: Epoch, bindings: &[PodBinding]) -> Result<Vec<Result<()>>> {
        let mut s = self.lock();
        s.check_epoch(epoch)?;
        let (outcomes, write) = plan_bindings(
            bindings,
            |uid| {
                let (b, closed) = s.pod_bindings.get(uid)?;
                Some((b.clone(), closed.is_some() || s.pods.contains_key(uid)))
            },
            |t| s.tenants.contains_key(t),
        );
        let write: Vec<PodBinding> = write
            .into_iter()
            .map(|b| PodBinding {
                bound_at: trunc_secs(b.bound_at),
                ..b.clone()
            })
            .collect();
        for b in write {
            s.pod_bindings.insert(b.uid.clone(), (b, None));
        }
        Ok(outcomes)
    }

    async fn binding(&self, uid: &str) -> Result<Option<PodBinding>> {
        Ok(self.lock().pod_bindings.get(uid).map(|(b, _)| b.clone()))
    }

    async fn open_bindings(&self) -> Result<Vec<PodBinding>> {
        let s = self.lock();
        let mut out: Vec<PodBinding> = s
            .pod_bindings
            .values()
            .filter(|(b, closed)| closed.is_none() && s.pods.get(&b.uid).is_none_or(|r| r.cp.finished_at.is_none()))
            .map(|(b, _)| b.clone())
            .collect();
        out.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok(out)
    }

    async fn close_binding(&self, epoch: Epoch, uid: &str, at: DateTime<Utc>) -> Result<()> {
        let mut s = self.lock();
        s.check_epoch(epoch)?;
        if let Some((_, closed)) = s.pod_bindings.get_mut(uid) {
            closed.get_or_insert(trunc_secs(at));
        }
        Ok(())
    }

    async fn open_pods(&self) -> Result<Vec<PodCheckpoint>> {
        let mut out: Vec<PodCheckpoint> = self
            .lock()
            .pods
            .values()
            .filter(|r| r.cp.finished_at.is_none())
            .map(|r| r.cp.clone())
            .collect();
        out.sort_by(|a, b| a.pod.uid.cmp(&b.pod.uid));
        Ok(out)
    }

    async fn balance(&self, tenant: &TenantId, now: DateTime<Utc>) -> Result<Balance> {
        self.lock().balance(tenant, now)
    }

    async fn summaries(&self, now: DateTime<Utc>) -> Result<Vec<TenantSummary>> {
        let s = self.lock();
        let now = trunc_secs(now);
        s.tenants
            .values()
            .filter(|r| r.tenant.status != TenantStatus::Deleted)
            .map(|r| {
                let id = &r.tenant.id;
                Ok(TenantSummary {
                    tenant: r.tenant.clone(),
                    balance: s.balance(id, now)?,
                    dedicated_units: dedicated_units_at(s.purchases.iter().filter(|p| &p.tenant == id), now),
                    namespaces: s
                        .bindings
                        .iter()
                        .filter(|(_, t)| *t == id)
                        .map(|(ns, _)| ns.clone())
                        .collect(),
                })
            })
            .collect()
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
    ) -> Result<Vec<UsageBucket>> {
        check_range(from, to)?;
        let s = self.lock();
        s.tenant_row(tenant)?;
        let mut out: BTreeMap<(DateTime<Utc>, Pool), UsageBucket> = BTreeMap::new();
        for ((_, hour, pool), d) in s
            .hourly
            .range((tenant.clone(), hour_of(from), Pool::Dedicated)..)
            .take_while(|((t, h, _), _)| t == tenant && *h < to)
        {
            let start = match granularity {
                Granularity::Hour => *hour,
                Granularity::Day => hour.duration_trunc(TimeDelta::days(1)).unwrap_or(*hour),
            };
            let b = out.entry((start, *pool)).or_insert(UsageBucket {
                start,
                pool: *pool,
                charged: McSeconds::ZERO,
                opportunistic: McSeconds::ZERO,
            });
            b.charged += d.charged;
            b.opportunistic += d.opportunistic;
        }
        Ok(out.into_values().collect())
    }

    async fn job_runs(&self, tenant: &TenantId, q: &RunQuery<'_>) -> Result<Vec<JobRun>> {
        let (job, from, to) = (q.job, q.from, q.to);
        check_range(from, to)?;
        let s = self.lock();
        s.tenant_row(tenant)?;
        let mut runs: HashMap<&str, (JobRun, bool, Option<PodOutcome>)> = HashMap::new();
        for row in s.pods.values() {
            let p = &row.cp.pod;
            let (Some(app), Some(j)) = (p.app_id.as_deref(), p.job.as_deref()) else {
                continue;
            };
            // Like Postgres: a run is the pods of it that started in the window.
            if &p.tenant != tenant || job.is_some_and(|want| want != j) || p.started_at < from || p.started_at >= to {
                continue;
            }
            let (run, open, driver) = runs.entry(app).or_insert_with(|| {
                (
                    JobRun {
                        app_id: app.to_owned(),
                        job: j.to_owned(),
                        pool: p.pool,
                        started_at: p.started_at,
                        finished_at: None,
                        pods: 0,
                        charged: McSeconds::ZERO,
                        opportunistic: McSeconds::ZERO,
                        outcome: RunOutcome::Running,
                    },
                    false,
                    None,
                )
            });
            if p.role.as_deref() == Some("driver") {
                *driver = driver.or(row.cp.outcome);
            }
            run.started_at = run.started_at.min(p.started_at);
            run.finished_at = run.finished_at.max(row.cp.finished_at);
            *open |= row.cp.finished_at.is_none();
            run.pods += 1;
            run.charged += row.cp.charged;
            run.opportunistic += row.cp.opportunistic;
        }
        let mut out: Vec<JobRun> = runs
            .into_values()
            .map(|(mut r, open, driver)| {
                if open {
                    r.finished_at = None;
                }
                r.outcome = RunOutcome::of(!open, driver);
                r
            })
            .filter(|r| q.after.as_ref().is_none_or(|c| c.precedes(r)))
            .collect();
        out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.app_id.cmp(&b.app_id)));
        out.truncate(q.limit.max(0) as usize);
        Ok(out)
    }

    async fn jobs(&self, tenant: &TenantId) -> Result<Vec<JobSummary>> {
        let s = self.lock();
        s.tenant_row(tenant)?;
        let mut jobs: BTreeMap<&str, (JobSummary, HashSet<&str>)> = BTreeMap::new();
        for ((t, job), state) in &s.jobs {
            if t == tenant {
                let e = jobs
                    .entry(job.as_str())
                    .or_insert_with(|| (JobSummary::named(job), HashSet::new()));
                e.0.finished_runs = state.runs;
                e.0.last_finished_at = state.last_finished_at;
            }
        }
        for row in s.pods.values() {
            let p = &row.cp.pod;
            if &p.tenant != tenant || row.cp.finished_at.is_some() {
                continue;
            }
            if let (Some(job), Some(app)) = (p.job.as_deref(), p.app_id.as_deref()) {
                jobs.entry(job)
                    .or_insert_with(|| (JobSummary::named(job), HashSet::new()))
                    .1
                    .insert(app);
            }
        }
        Ok(jobs
            .into_values()
            .map(|(mut j, running)| {
                j.running_runs = running.len() as i64;
                j
            })
            .collect())
    }

    async fn job_stats(&self, tenant: Option<&TenantId>) -> Result<Vec<JobStats>> {
        let s = self.lock();
        Ok(s.jobs
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|want| want == t))
            .map(|((t, job), state)| JobStats {
                tenant: t.clone(),
                job: job.clone(),
                state: state.clone(),
            })
            .collect())
    }

    async fn run_profiles(&self, tenant: &TenantId, job: Option<&str>, limit: i64) -> Result<Vec<RunProfile>> {
        let s = self.lock();
        s.tenant_row(tenant)?;
        let mut out: Vec<RunProfile> = s
            .profiles
            .iter()
            .filter(|p| &p.tenant == tenant && job.is_none_or(|j| j == p.job))
            .cloned()
            .collect();
        newest_first(&mut out, limit);
        Ok(out)
    }

    async fn similar_runs(&self, source: Option<&str>, target: Option<&str>, limit: i64) -> Result<Vec<RunProfile>> {
        let s = self.lock();
        let mut out: Vec<RunProfile> = s
            .profiles
            .iter()
            .filter(|p| {
                p.outcome == RunOutcome::Succeeded
                    && p.data_bytes.is_some()
                    && source.is_none_or(|x| p.source.as_deref() == Some(x))
                    && target.is_none_or(|x| p.target.as_deref() == Some(x))
            })
            .cloned()
            .collect();
        newest_first(&mut out, limit);
        Ok(out)
    }

    async fn add_notice(&self, fence: Option<Epoch>, notice: &Notice) -> Result<Option<i64>> {
        let mut s = self.lock();
        s.check_fence(fence)?;
        s.tenant_row(&notice.tenant)?;
        Ok(s.add_notice(notice.clone()))
    }

    async fn notices(&self, q: &NoticeQuery<'_>) -> Result<Vec<Notice>> {
        let s = self.lock();
        if let Some(t) = q.tenant {
            s.tenant_row(t)?;
        }
        let keep =
            |n: &&Notice| q.tenant.is_none_or(|t| *t == n.tenant) && (!q.undelivered || n.delivered_at.is_none());
        let limit = q.limit.max(0) as usize;
        Ok(if q.undelivered {
            s.notices
                .iter()
                .filter(|n| q.cursor.is_none_or(|c| n.id > c))
                .filter(keep)
                .take(limit)
                .cloned()
                .collect()
        } else {
            s.notices
                .iter()
                .rev()
                .filter(|n| q.cursor.is_none_or(|c| n.id < c))
                .filter(keep)
                .take(limit)
                .cloned()
                .collect()
        })
    }

    async fn settle_notice(&self, fence: Option<Epoch>, id: i64, delivery: &Delivery, at: DateTime<Utc>) -> Result<()> {
        let mut s = self.lock();
        s.check_fence(fence)?;
        let Some(n) = s.notices.iter_mut().find(|n| n.id == id) else {
            return Err(LedgerError::UnknownNotice(id));
        };
        n.last_attempt_at = Some(trunc_secs(at));
        match delivery {
            Delivery::Delivered => n.delivered_at = Some(trunc_secs(at)),
            Delivery::Failed(why) => {
                n.attempts += 1;
                n.last_error = Some(why.clone());
            }
            Delivery::GaveUp(why) => {
                n.attempts += 1;
                n.last_error = Some(why.clone());
                n.delivered_at = Some(trunc_secs(at));
            }
        }
        Ok(())
    }

    async fn set_notify_url(&self, tenant: &TenantId, url: Option<&str>) -> Result<()> {
        if let Some(u) = url {
            check_notify_url(u)?;
        }
        let mut s = self.lock();
        s.tenant_row(tenant)?;
        match url {
            Some(u) => s.notify_urls.insert(tenant.clone(), u.to_owned()),
            None => s.notify_urls.remove(tenant),
        };
        Ok(())
    }

    async fn notify_urls(&self) -> Result<Vec<(TenantId, String)>> {
        Ok(self
            .lock()
            .notify_urls
            .iter()
            .map(|(t, u)| (t.clone(), u.clone()))
            .collect())
    }

    async fn put_schedule(
        &self,
        fence: Option<Epoch>,
        schedule: &StoredSchedule,
        policy: &SlicePolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Decision> {
        let now = trunc_secs(now);
        let mut s = self.lock();
        s.check_fence(fence)?;
        if s.tenant_row(&schedule.tenant)?.tenant.status == TenantStatus::Deleted {
            return Err(LedgerError::TenantDeleted(schedule.tenant.clone()));
        }
        let pool_cpu = s.pools.get(&schedule.pool).map_or(0, |c| c.cpu.0);
        let units = dedicated_units_at(s.purchases.iter().filter(|p| p.tenant == schedule.tenant), now);
        let key = (schedule.tenant.clone(), schedule.job.clone());
        let others: Vec<StoredSchedule> = s
            .schedules
            .iter()
            .filter(|(k, o)| **k != key && o.pool == schedule.pool)
            .map(|(_, o)| o.clone())
            .collect();
        let horizon = Horizon::new(now, policy.slice, policy.horizon_days)?;
        let limits = policy.limits(schedule.pool, pool_cpu, units);
        let decision = crate::slices::decide(&horizon, schedule, &others, limits)?;
        if matches!(decision, Decision::Accepted { .. }) && !dry_run {
            let mut stored = schedule.clone();
            stored.updated_at = now;
            s.schedules.insert(key, stored);
            drop(s);
            self.notify(LedgerChange::of(ChangeKind::Schedule, &schedule.tenant));
        }
        Ok(decision)
    }

    async fn delete_schedule(&self, fence: Option<Epoch>, tenant: &TenantId, job: &str) -> Result<bool> {
        let gone = {
            let mut s = self.lock();
            s.check_fence(fence)?;
            s.schedules.remove(&(tenant.clone(), job.to_owned())).is_some()
        };
        if gone {
            self.notify(LedgerChange::of(ChangeKind::Schedule, tenant));
        }
        Ok(gone)
    }

    async fn schedules(&self, tenant: Option<&TenantId>) -> Result<Vec<StoredSchedule>> {
        Ok(self
            .lock()
            .schedules
            .values()
            .filter(|o| tenant.is_none_or(|t| *t == o.tenant))
            .cloned()
            .collect())
    }

    async fn audit(&self) -> Result<AuditReport> {
        let s = self.lock();
        let mut report = AuditReport {
            tenants: s.tenants.len(),
            pods: s.pods.len(),
            violations: Vec::new(),
        };
        let mut per_tenant: HashMap<&TenantId, (McSeconds, McSeconds)> = HashMap::new();
        for row in s.pods.values() {
            let cp = &row.cp;
            let expected = cp
                .pod
                .cpu
                .for_seconds((cp.charged_until - cp.pod.started_at).num_seconds());
            report
                .violations
                .extend(super::pod_violations(cp, expected, row.interval_sum));
            let e = per_tenant.entry(&cp.pod.tenant).or_default();
            e.0 += cp.charged;
            e.1 += cp.opportunistic;
        }
        let mut hourly: HashMap<&TenantId, (McSeconds, McSeconds, McSeconds)> = HashMap::new();
        for ((t, _, pool), d) in &s.hourly {
            let e = hourly.entry(t).or_default();
            e.0 += d.charged;
            e.1 += d.opportunistic;
            if *pool == Pool::Dedicated {
                e.2 += d.charged;
            }
        }
        for (id, row) in &s.tenants {
            let pods = per_tenant.get(id).copied().unwrap_or_default();
            let hours = hourly.get(id).copied().unwrap_or_default();
            report.violations.extend(super::tenant_violations(
                id,
                &super::TenantBooks {
                    consumed: row.consumed,
                    opportunistic: row.opportunistic,
                    pods_charged: pods.0 + row.pruned_charged,
                    pods_opportunistic: pods.1 + row.pruned_opportunistic,
                    hourly_charged: hours.0,
                    hourly_opportunistic: hours.1,
                    hourly_dedicated: hours.2,
                    account: s.account(id),
                },
            ));
        }
        Ok(report)
    }

    async fn prune_history(&self, before: DateTime<Utc>) -> Result<PruneReport> {
        let mut s = self.lock();
        let old: Vec<String> = s
            .pods
            .iter()
            .filter(|(_, r)| r.cp.finished_at.is_some_and(|f| f < before))
            .map(|(uid, _)| uid.clone())
            .collect();
        // Bindings go with their pods' history, or when closed without a start.
        let State { pod_bindings, pods, .. } = &mut *s;
        pod_bindings.retain(|uid, (b, closed)| {
            let history_gone = pods
                .get(uid)
                .is_some_and(|r| r.cp.finished_at.is_some_and(|f| f < before));
            !(b.bound_at < before && (closed.is_some() || history_gone))
        });
        let mut report = PruneReport::default();
        s.profiles.retain(|p| p.finished_at >= before);
        s.recent_runs.retain(|_, runs| {
            runs.retain(|p| p.finished_at >= before);
            !runs.is_empty()
        });
        s.notices.retain(|n| n.delivered_at.is_none_or(|d| d >= before));
        for uid in old {
            if let Some(row) = s.pods.remove(&uid) {
                if let Some(app) = &row.cp.pod.app_id
                    && let Some(uids) = s.apps.get_mut(app)
                {
                    uids.retain(|u| *u != uid);
                    if uids.is_empty() {
                        s.apps.remove(app);
                    }
                }
                report.pods += 1;
                report.intervals += row.intervals;
                if let Some(t) = s.tenants.get_mut(&row.cp.pod.tenant) {
                    t.pruned_charged += row.cp.charged;
                    t.pruned_opportunistic += row.cp.opportunistic;
                }
            }
        }
        Ok(report)
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, LedgerChange>> {
        Ok(BroadcastStream::new(self.feed.subscribe())
            .map(|r| r.unwrap_or_else(|_lagged| LedgerChange::global(ChangeKind::Resync)))
            .boxed())
    }
}
