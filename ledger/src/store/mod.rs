//! The ledger store: one trait, two implementations (Postgres for
//! production, memory for the simulator), one contract suite for both.

pub mod memory;
pub mod postgres;
pub mod testdb;

use crate::account::Balance;
use crate::accrual::{AccrualOutcome, AccrualRequest, PodCheckpoint, PodOutcome};
use crate::binding::PodBinding;
use crate::error::{LedgerError, Result};
use crate::feed::LedgerChange;
use crate::ids::TenantId;
use crate::lifecycle::{JobState, Notice, RunProfile};
use crate::pool::{Pool, PoolCapacity};
use crate::purchase::{Purchase, PurchaseReceipt, PurchaseRequest};
use crate::slices::{Decision, SlicePolicy, StoredSchedule};
use crate::tenant::{NamespaceBinding, NewTenant, Tenant, TenantPatch, TenantRecord, TenantStatus};
use crate::units::McSeconds;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use postgres::PgStore;

/// A writer's fencing token. Claimed when a process becomes leader; the
/// store refuses writes carrying an epoch older than the newest claimed, so a
/// deposed leader that has not noticed yet cannot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub i64);

/// Bucket size for usage history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One bucket per hour.
    Hour,
    /// One bucket per UTC day.
    Day,
}

/// Usage of one tenant in one pool over one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBucket {
    /// Bucket start.
    pub start: DateTime<Utc>,
    /// Pool.
    pub pool: Pool,
    /// Charged.
    pub charged: McSeconds,
    /// On borrowed capacity, not charged.
    pub opportunistic: McSeconds,
}

/// One Spark application run, summed from its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// `spark-app-selector`.
    pub app_id: String,
    /// Job identity.
    pub job: String,
    /// Pool of its pods.
    pub pool: Pool,
    /// First pod start.
    pub started_at: DateTime<Utc>,
    /// Last pod end, when all have ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Pods in the run.
    pub pods: i64,
    /// Charged.
    pub charged: McSeconds,
    /// Opportunistic, not charged.
    pub opportunistic: McSeconds,
    /// How it ended.
    pub outcome: RunOutcome,
}

/// How a run ended: its driver's outcome (R11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Some pod still runs.
    Running,
    /// The driver succeeded.
    Succeeded,
    /// The driver failed.
    Failed,
    /// The driver was evicted.
    Preempted,
    /// The driver was deleted while running.
    Deleted,
    /// Every pod ended but no driver outcome was recorded.
    Unknown,
}

impl RunOutcome {
    /// A run's outcome from whether it has ended and its driver's outcome.
    pub fn of(finished: bool, driver: Option<PodOutcome>) -> Self {
        match (finished, driver) {
            (false, _) => Self::Running,
            (true, Some(PodOutcome::Succeeded)) => Self::Succeeded,
            (true, Some(PodOutcome::Failed)) => Self::Failed,
            (true, Some(PodOutcome::Preempted)) => Self::Preempted,
            (true, Some(PodOutcome::Deleted)) => Self::Deleted,
            (true, None) => Self::Unknown,
        }
    }
}

/// Where a page of runs starts: after this run in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCursor {
    /// The last run's start.
    pub started_at: DateTime<Utc>,
    /// The last run's app id (breaks ties).
    pub app_id: String,
}

impl RunCursor {
    /// Whether `run` comes after the cursor in newest-first order.
    pub fn precedes(&self, run: &JobRun) -> bool {
        run.started_at < self.started_at || (run.started_at == self.started_at && run.app_id > self.app_id)
    }
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunQuery<'a> {
    /// One job, or all of the tenant's.
    pub job: Option<&'a str>,
    /// Runs that started at or after this.
    pub from: DateTime<Utc>,
    /// Runs that started before this.
    pub to: DateTime<Utc>,
    /// Continue after this run.
    pub after: Option<RunCursor>,
    /// At most this many.
    pub limit: i64,
}

/// One of a tenant's jobs, as its history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job name.
    pub job: String,
    /// Driver runs that have finished.
    pub finished_runs: i64,
    /// When the latest finished.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Runs with pods still running.
    pub running_runs: i64,
}

impl JobSummary {
    /// A job with no runs counted yet.
    pub fn named(job: &str) -> Self {
        Self {
            job: job.to_owned(),
            finished_runs: 0,
            last_finished_at: None,
            running_runs: 0,
        }
    }
}

/// Everything a webhook replica keeps in memory about one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSummary {
    /// The tenant.
    pub tenant: Tenant,
    /// Its vCPU-hour balance.
    pub balance: Balance,
    /// Dedicated units valid now.
    pub dedicated_units: i64,
    /// Its namespaces.
    pub namespaces: Vec<String>,
}

/// A job's lifecycle: the draft pool holds a job until it has run within
/// its SLA often enough (R5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// Owner.
    pub tenant: TenantId,
    /// Job name.
    pub job: String,
    /// Stage, runs, streak, SLA.
    pub state: JobState,
}

/// Which notices to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeQuery<'a> {
    /// One tenant's, or everyone's.
    pub tenant: Option<&'a TenantId>,
    /// Only those not yet delivered (the outbox), oldest first; otherwise newest first.
    pub undelivered: bool,
    /// Newest first: ids below this; oldest first: ids above this.
    pub cursor: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// How one delivery attempt of a notice went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered everywhere it had to go.
    Delivered,
    /// Failed; tried again later.
    Failed(String),
    /// Failed for the last time: no more attempts.
    GaveUp(String),
}

/// What the ledger found when checking its own books.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Tenants checked.
    pub tenants: usize,
    /// Pods checked.
    pub pods: usize,
    /// Every broken invariant, described.
    pub violations: Vec<String>,
}

impl AuditReport {
    /// No invariant broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What a history prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Finished pods removed.
    pub pods: u64,
    /// Journal lines removed.
    pub intervals: u64,
    /// Monthly journal partitions dropped (Postgres only).
    pub partitions: u64,
}

/// How long run and usage history is kept (R14.5).
pub const HISTORY_DAYS: i64 = 90;

/// The ledger's contract. Every method is atomic: it writes all or nothing.
#[async_trait]
pub trait LedgerStore: Send + Sync + std::fmt::Debug {
    /// Creates a tenant and binds its namespaces, all or nothing.
    async fn create_tenant(&self, new: NewTenant, now: DateTime<Utc>) -> Result<Tenant>;
    /// One tenant.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;
    /// All tenants, by id.
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    /// Suspends, reactivates or deletes a tenant (deleting unbinds its namespaces).
    async fn set_tenant_status(&self, id: &TenantId, status: TenantStatus) -> Result<Tenant> {
        let patch = TenantPatch {
            status: Some(status),
            ..TenantPatch::default()
        };
        Ok(self.update_tenant(id, &patch).await?.tenant)
    }
    /// Applies an admin's change to a tenant (status, tier, name, namespaces)
    /// in one transaction.
    async fn update_tenant(&self, id: &TenantId, patch: &TenantPatch) -> Result<TenantRecord>;
    /// Binds a namespace to a tenant (idempotent for the same tenant).
    async fn bind_namespace(&self, namespace: &str, tenant: &TenantId) -> Result<NamespaceBinding>;
    /// Removes a namespace's binding; false when it had none.
    async fn unbind_namespace(&self, namespace: &str) -> Result<bool>;
    /// All bindings, by namespace.
    async fn namespace_bindings(&self) -> Result<Vec<NamespaceBinding>>;

    /// Claims a new fencing epoch for `holder`, deposing every older one.
    async fn claim_epoch(&self, holder: &str) -> Result<Epoch>;
    /// Registers a pool's size (the scheduler does, fenced).
    async fn set_pool_capacity(&self, epoch: Epoch, capacity: &PoolCapacity) -> Result<()>;
    /// Registered pool sizes.
    async fn pools(&self) -> Result<Vec<PoolCapacity>>;

    /// Records a purchase, or returns the original on a retry with the same key.
    async fn record_purchase(&self, request: &PurchaseRequest, now: DateTime<Utc>) -> Result<PurchaseReceipt>;
    /// A tenant's purchases, newest first.
    async fn purchases(&self, tenant: &TenantId) -> Result<Vec<Purchase>>;

    /// Applies a batch of accruals in one transaction. A bad item is refused
    /// in its outcome without affecting the others; a stale epoch refuses all.
    async fn accrue(&self, epoch: Epoch, batch: &[AccrualRequest]) -> Result<Vec<AccrualOutcome>>;
    /// Records what sparkcap decided when binding pods, before the bindings
    /// are sent, in one transaction (fenced; a stale epoch refuses all).
    /// Each item is refused alone (bad text, unknown tenant, a started
    /// pod's facts changed); see [`crate::binding::plan_bindings`].
    async fn record_bindings(&self, epoch: Epoch, bindings: &[PodBinding]) -> Result<Vec<Result<()>>>;
    /// [`LedgerStore::record_bindings`] of one binding.
    async fn record_binding(&self, epoch: Epoch, binding: &PodBinding) -> Result<()> {
        self.record_bindings(epoch, std::slice::from_ref(binding))
            .await?
            .pop()
            .unwrap_or(Ok(()))
    }
    /// One pod's binding record.
    async fn binding(&self, uid: &str) -> Result<Option<PodBinding>>;
    /// Bindings still open: pods bound and not yet closed (never started and
    /// not yet gone, or started and not yet finished), by uid.
    async fn open_bindings(&self) -> Result<Vec<PodBinding>>;
    /// Closes the binding of a pod that went without ever starting: nothing
    /// to charge (fenced). Idempotent.
    async fn close_binding(&self, epoch: Epoch, uid: &str, at: DateTime<Utc>) -> Result<()>;
    /// One pod's checkpoint.
    async fn pod_checkpoint(&self, uid: &str) -> Result<Option<PodCheckpoint>>;
    /// Pods not yet finished: what a restarted scheduler must keep accruing.
    async fn open_pods(&self) -> Result<Vec<PodCheckpoint>>;

    /// A tenant's vCPU-hour balance at `now`.
    async fn balance(&self, tenant: &TenantId, now: DateTime<Utc>) -> Result<Balance>;
    /// Balance, dedicated units and namespaces of every tenant not deleted.
    async fn summaries(&self, now: DateTime<Utc>) -> Result<Vec<TenantSummary>>;
    /// A tenant's usage per pool in `[from, to)`.
    async fn usage(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
    ) -> Result<Vec<UsageBucket>>;
    /// A tenant's runs of one job (or all jobs), newest first (then by app
    /// id): each run summed over its pods that started in `[from, to)`.
    async fn job_runs(&self, tenant: &TenantId, query: &RunQuery<'_>) -> Result<Vec<JobRun>>;
    /// A tenant's jobs by name: finished runs (`job_stats`) and runs still going.
    async fn jobs(&self, tenant: &TenantId) -> Result<Vec<JobSummary>>;

    /// Lifecycle of a tenant's jobs, or of every tenant's.
    async fn job_stats(&self, tenant: Option<&TenantId>) -> Result<Vec<JobStats>>;
    /// Profiles of a tenant's finished runs (of one job or all), newest first.
    async fn run_profiles(&self, tenant: &TenantId, job: Option<&str>, limit: i64) -> Result<Vec<RunProfile>>;
    /// Successful runs of any tenant that recorded their data volume, from
    /// `source` to `target` when given, newest first: the estimator's history (R4.2).
    async fn similar_runs(&self, source: Option<&str>, target: Option<&str>, limit: i64) -> Result<Vec<RunProfile>>;

    /// Stores a notice in the outbox; None when one with its dedupe key
    /// exists. `fence`: the epoch of the scheduler writing it (leader code
    /// always passes its own; a deposed leader's write is refused and
    /// changes nothing), None for the API and admins.
    async fn add_notice(&self, fence: Option<Epoch>, notice: &Notice) -> Result<Option<i64>>;
    /// Notices, by the query.
    async fn notices(&self, query: &NoticeQuery<'_>) -> Result<Vec<Notice>>;
    /// Records a delivery attempt (`fence` as for [`LedgerStore::add_notice`]).
    async fn settle_notice(&self, fence: Option<Epoch>, id: i64, delivery: &Delivery, at: DateTime<Utc>) -> Result<()>;
    /// Sets or clears the URL a tenant's notices are POSTed to.
    async fn set_notify_url(&self, tenant: &TenantId, url: Option<&str>) -> Result<()>;
    /// Every tenant's notification URL.
    async fn notify_urls(&self) -> Result<Vec<(TenantId, String)>>;

    /// Plans a job's schedule in its pool's time slices (R7.3): reserved when
    /// every slice has room after the pool's other schedules and within the
    /// tenant's cap, else refused with alternatives (R7.4). Replaces the
    /// job's earlier schedule; decided and written under the pool's lock, so
    /// concurrent requests never overcommit. With `dry_run`, only decides.
    /// `fence` as for [`LedgerStore::add_notice`].
    async fn put_schedule(
        &self,
        fence: Option<Epoch>,
        schedule: &StoredSchedule,
        policy: &SlicePolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Decision>;
    /// Removes a job's schedule (its reservations go with it); false when it
    /// had none. `fence` as for [`LedgerStore::add_notice`].
    async fn delete_schedule(&self, fence: Option<Epoch>, tenant: &TenantId, job: &str) -> Result<bool>;
    /// Stored schedules, of one tenant or all, by tenant and job.
    async fn schedules(&self, tenant: Option<&TenantId>) -> Result<Vec<StoredSchedule>>;

    /// Checks every invariant of the books.
    async fn audit(&self) -> Result<AuditReport>;
    /// Removes pods that finished before `before`, with their journal lines.
    async fn prune_history(&self, before: DateTime<Utc>) -> Result<PruneReport>;
    /// Changes from now on.
    async fn subscribe(&self) -> Result<BoxStream<'static, LedgerChange>>;
}

/// Checks a notification URL: absolute http(s), no credentials in it.
pub(crate) fn check_notify_url(url: &str) -> Result<()> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.contains(char::is_whitespace)
        && url
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.split('/').next().unwrap_or("").contains('@'));
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidNotifyUrl(url.chars().take(200).collect()))
    }
}

/// Checks a query window.
pub(crate) fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<()> {
    if from >= to {
        return Err(LedgerError::InvalidRange { from, to });
    }
    Ok(())
}

/// The sums the audit compares for one tenant.
#[derive(Debug)]
pub(crate) struct TenantBooks {
    pub(crate) consumed: McSeconds,
    pub(crate) opportunistic: McSeconds,
    pub(crate) pods_charged: McSeconds,
    pub(crate) pods_opportunistic: McSeconds,
    pub(crate) hourly_charged: McSeconds,
    pub(crate) hourly_opportunistic: McSeconds,
    /// Charged usage in the dedicated pool (covered by units, not drawn).
    pub(crate) hourly_dedicated: McSeconds,
    pub(crate) account: crate::account::Account,
}

/// Broken invariants of one pod: usage is exactly cpu × seconds charged, and
/// the journal lines add up to it.
pub(crate) fn pod_violations(cp: &PodCheckpoint, expected: McSeconds, journal: McSeconds) -> Vec<String> {
    let mut v = Vec::new();
    let total = cp.charged + cp.opportunistic;
    if total != expected {
        v.push(format!(
            "pod {}: recorded {} mc·s but cpu {} × {} s = {} mc·s",
            cp.pod.uid,
            total.0,
            cp.pod.cpu,
            (cp.charged_until - cp.pod.started_at).num_seconds(),
            expected.0
        ));
    }
    if cp.pod.opportunistic && cp.charged.0 != 0 {
        v.push(format!(
            "pod {}: opportunistic but charged {} mc·s",
            cp.pod.uid, cp.charged.0
        ));
    }
    if journal != total {
        v.push(format!(
            "pod {}: journal sums to {} mc·s, checkpoint says {}",
            cp.pod.uid, journal.0, total.0
        ));
    }
    v
}

/// Broken invariants of one tenant: every view of its usage agrees, and
/// purchased − consumed = balance (lots drawn plus debt = charged outside
/// the dedicated pool, whose usage its units cover).
pub(crate) fn tenant_violations(id: &TenantId, b: &TenantBooks) -> Vec<String> {
    let mut v = Vec::new();
    let mut eq = |what: &str, a: McSeconds, c: McSeconds| {
        if a != c {
            v.push(format!("tenant {id}: {what}: {} != {} mc·s", a.0, c.0));
        }
    };
    eq("charged total vs pods", b.consumed, b.pods_charged);
    eq("charged total vs hourly", b.consumed, b.hourly_charged);
    eq(
        "charged total outside the dedicated pool vs lots drawn + debt",
        b.consumed - b.hourly_dedicated,
        b.account.total_charged(),
    );
    eq("opportunistic total vs pods", b.opportunistic, b.pods_opportunistic);
    eq("opportunistic total vs hourly", b.opportunistic, b.hourly_opportunistic);
    for lot in &b.account.lots {
        if lot.consumed.0 < 0 || lot.consumed > lot.amount {
            v.push(format!(
                "tenant {id}: purchase {} drawn {} of {} mc·s",
                lot.purchase_id, lot.consumed.0, lot.amount.0
            ));
        }
    }
    if b.account.debt.0 < 0 || (b.account.debt.0 > 0) != b.account.debt_since.is_some() {
        v.push(format!(
            "tenant {id}: debt {} mc·s with debt_since {:?}",
            b.account.debt.0, b.account.debt_since
        ));
    }
    v
}
