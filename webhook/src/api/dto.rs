//! What the API sends and accepts. Amounts are exact integers
//! (millicore-seconds, millicores) with a decimal vCPU-hour string beside
//! them for people; nothing is a float.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sparkcap_ledger::{
    Balance, BalanceState, JobRun, McSeconds, Period, Pool, Purchase, PurchaseKind, RunOutcome, Tenant, TenantStatus,
    Tier, UsageBucket,
};
use utoipa::ToSchema;

/// An amount of CPU time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CpuTime {
    /// Exact: millicore-seconds (1 vCPU-hour = 3,600,000).
    pub mcs: i64,
    /// The same in vCPU-hours, three decimals, for people.
    pub vcpu_hours: String,
}

impl From<McSeconds> for CpuTime {
    fn from(v: McSeconds) -> Self {
        Self {
            mcs: v.0,
            vcpu_hours: vcpu_hours(v),
        }
    }
}

/// `mcs` as vCPU-hours with three decimals, exactly (integer arithmetic).
pub fn vcpu_hours(v: McSeconds) -> String {
    let per_milli_hour = 3_600; // mc·s in 0.001 vCPU-hour
    let milli = v.0 / per_milli_hour; // truncated toward zero
    let sign = if milli < 0 { "-" } else { "" };
    let m = milli.unsigned_abs();
    format!("{sign}{}.{:03}", m / 1000, m % 1000)
}

/// Balance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// More than 20 % left.
    Ok,
    /// 20 % or less left.
    Low,
    /// Nothing left: new drivers are refused.
    Exhausted,
}

impl From<BalanceState> for State {
    fn from(s: BalanceState) -> Self {
        match s {
            BalanceState::Ok => Self::Ok,
            BalanceState::Low => Self::Low,
            BalanceState::Exhausted => Self::Exhausted,
        }
    }
}

/// A tenant's balance (R9.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceDto {
    /// The tenant.
    pub tenant: String,
    /// When the ledger computed it.
    pub as_of: DateTime<Utc>,
    /// ok / low / exhausted.
    pub state: State,
    /// vCPU-hours bought in purchases valid now.
    pub purchased: CpuTime,
    /// Drawn from them, plus unpaid usage.
    pub consumed: CpuTime,
    /// purchased − consumed; negative when in debt.
    pub remaining: CpuTime,
    /// vCPU-hours bought for later periods.
    pub upcoming: CpuTime,
    /// Dedicated units held now.
    pub dedicated_units: i64,
    /// vCPU-hour usage over the last 24 hours (dedicated-pool use is covered by units, not counted).
    pub consumed_last_24h: CpuTime,
    /// Mean CPU in use over the last 24 hours, in millicores.
    pub rate_millicores: i64,
    /// When the balance reaches zero at that rate; null when idle or exhausted.
    pub depletion_at: Option<DateTime<Utc>>,
    /// When the earliest purchase with credit left expires.
    pub next_expiry: Option<DateTime<Utc>>,
    /// When unpaid usage began, if any.
    pub debt_since: Option<DateTime<Utc>>,
}

impl BalanceDto {
    /// From the ledger's balance.
    pub fn new(tenant: &str, b: &Balance, dedicated_units: i64) -> Self {
        Self {
            tenant: tenant.to_owned(),
            as_of: b.at,
            state: b.state.into(),
            purchased: b.purchased.into(),
            consumed: b.consumed.into(),
            remaining: b.remaining.into(),
            upcoming: b.upcoming.into(),
            dedicated_units,
            consumed_last_24h: b.consumed_last_24h.into(),
            rate_millicores: b.rate.0,
            depletion_at: b.depletion_at,
            next_expiry: b.next_expiry,
            debt_since: b.debt_since,
        }
    }
}

/// What is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Dedicated units (1:1 Spark Units, R2.1).
    DedicatedUnits,
    /// Prepaid vCPU-hours (R2.2).
    VcpuHours,
}

impl From<Kind> for PurchaseKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::DedicatedUnits => Self::DedicatedUnits,
            Kind::VcpuHours => Self::VcpuHours,
        }
    }
}

impl From<PurchaseKind> for Kind {
    fn from(k: PurchaseKind) -> Self {
        match k {
            PurchaseKind::DedicatedUnits => Self::DedicatedUnits,
            PurchaseKind::VcpuHours => Self::VcpuHours,
        }
    }
}

/// Validity period of a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeriodDto {
    /// One day.
    Daily,
    /// One calendar month.
    Monthly,
    /// One calendar year.
    Yearly,
}

impl From<PeriodDto> for Period {
    fn from(p: PeriodDto) -> Self {
        match p {
            PeriodDto::Daily => Self::Daily,
            PeriodDto::Monthly => Self::Monthly,
            PeriodDto::Yearly => Self::Yearly,
        }
    }
}

impl From<Period> for PeriodDto {
    fn from(p: Period) -> Self {
        match p {
            Period::Daily => Self::Daily,
            Period::Monthly => Self::Monthly,
            Period::Yearly => Self::Yearly,
        }
    }
}

/// A purchase as an admin's billing system records it. The tenant is the
/// path's; the idempotency key is the `Idempotency-Key` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    /// Dedicated units or vCPU-hours.
    pub kind: Kind,
    /// Units, or whole vCPU-hours; positive.
    #[schema(minimum = 1)]
    pub quantity: i64,
    /// Validity period.
    pub period: PeriodDto,
    /// Start; now when omitted.
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// End; one period after the start when omitted, else a whole number of periods.
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
}

/// A recorded purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurchaseDto {
    /// Ledger id.
    pub id: i64,
    /// Buyer.
    pub tenant: String,
    /// What was bought.
    pub kind: Kind,
    /// How much.
    pub quantity: i64,
    /// Period.
    pub period: PeriodDto,
    /// Start (inclusive).
    pub valid_from: DateTime<Utc>,
    /// End (exclusive).
    pub valid_until: DateTime<Utc>,
    /// The key it was recorded under.
    pub idempotency_key: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// Credit used so far (vCPU-hours only).
    pub consumed: CpuTime,
}

impl From<&Purchase> for PurchaseDto {
    fn from(p: &Purchase) -> Self {
        Self {
            id: p.id,
            tenant: p.tenant.to_string(),
            kind: p.kind.into(),
            quantity: p.quantity,
            period: p.period.into(),
            valid_from: p.valid_from,
            valid_until: p.valid_until,
            idempotency_key: p.idempotency_key.clone(),
            created_at: p.created_at,
            consumed: p.consumed.into(),
        }
    }
}

/// A node pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolDto {
    /// Sold as dedicated units; idle room is lent.
    Dedicated,
    /// vCPU-hour tenants, weighted fair share.
    Shared,
    /// New jobs' first runs.
    Draft,
}

impl From<PoolDto> for Pool {
    fn from(p: PoolDto) -> Self {
        match p {
            PoolDto::Dedicated => Self::Dedicated,
            PoolDto::Shared => Self::Shared,
            PoolDto::Draft => Self::Draft,
        }
    }
}

impl From<Pool> for PoolDto {
    fn from(p: Pool) -> Self {
        match p {
            Pool::Dedicated => Self::Dedicated,
            Pool::Shared => Self::Shared,
            Pool::Draft => Self::Draft,
        }
    }
}

/// Usage in one pool over one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageBucketDto {
    /// Bucket start.
    pub start: DateTime<Utc>,
    /// Pool the pods asked for.
    pub pool: PoolDto,
    /// Metered to the tenant: drawn from vCPU-hours, except in the dedicated
    /// pool, where the tenant's units cover it.
    pub charged: CpuTime,
    /// Run on borrowed dedicated capacity: recorded, not charged (R8.3).
    pub opportunistic: CpuTime,
}

impl From<&UsageBucket> for UsageBucketDto {
    fn from(b: &UsageBucket) -> Self {
        Self {
            start: b.start,
            pool: b.pool.into(),
            charged: b.charged.into(),
            opportunistic: b.opportunistic.into(),
        }
    }
}

/// Bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GranularityDto {
    /// Hourly buckets (at most 31 days).
    Hour,
    /// UTC-day buckets (at most 366 days).
    Day,
}

/// A tenant's usage history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageDto {
    /// The tenant.
    pub tenant: String,
    /// Window start (inclusive).
    pub from: DateTime<Utc>,
    /// Window end (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket size.
    pub granularity: GranularityDto,
    /// Non-empty buckets, by start then pool.
    pub buckets: Vec<UsageBucketDto>,
    /// Sum charged over the window.
    pub total_charged: CpuTime,
    /// Sum opportunistic over the window.
    pub total_opportunistic: CpuTime,
}

/// Where a job runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Its first runs, profiled in the draft pool (R5.1).
    Draft,
    /// Promoted to its tenant's pool.
    Production,
}

/// One of a tenant's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobDto {
    /// Job name (`sparkcap.io/job`).
    pub job: String,
    /// Draft or production.
    pub stage: Stage,
    /// Finished driver runs.
    pub finished_runs: i64,
    /// When the latest finished.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Runs with pods still running.
    pub running_runs: i64,
    /// Consecutive successful runs within its SLA (promotion needs N, R5.5).
    pub streak: i64,
    /// Its SLA (`sparkcap.io/sla` on its driver), in seconds.
    pub sla_seconds: Option<i64>,
    /// When it was promoted to production.
    pub promoted_at: Option<DateTime<Utc>>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
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
    /// All pods ended; no driver outcome was recorded.
    Unknown,
}

impl From<RunOutcome> for Outcome {
    fn from(o: RunOutcome) -> Self {
        match o {
            RunOutcome::Running => Self::Running,
            RunOutcome::Succeeded => Self::Succeeded,
            RunOutcome::Failed => Self::Failed,
            RunOutcome::Preempted => Self::Preempted,
            RunOutcome::Deleted => Self::Deleted,
            RunOutcome::Unknown => Self::Unknown,
        }
    }
}

/// One run of a job (R11.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunDto {
    /// Spark application id (`spark-app-selector`).
    pub app_id: String,
    /// Job name.
    pub job: String,
    /// Pool.
    pub pool: PoolDto,
    /// First pod start.
    pub started_at: DateTime<Utc>,
    /// Last pod end; null while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds from start to end (or to the time of the answer while running).
    pub duration_seconds: i64,
    /// Pods in the run.
    pub pods: i64,
    /// Charged.
    pub charged: CpuTime,
    /// On borrowed capacity, not charged.
    pub opportunistic: CpuTime,
    /// How it ended.
    pub outcome: Outcome,
}

impl RunDto {
    /// From the ledger's run, with `now` for running ones.
    pub fn new(r: &JobRun, now: DateTime<Utc>) -> Self {
        Self {
            app_id: r.app_id.clone(),
            job: r.job.clone(),
            pool: r.pool.into(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_seconds: (r.finished_at.unwrap_or(now) - r.started_at).num_seconds().max(0),
            pods: r.pods,
            charged: r.charged.into(),
            opportunistic: r.opportunistic.into(),
            outcome: r.outcome.into(),
        }
    }
}

/// One pool in the Spark Unit registry (R1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolInfo {
    /// Pool.
    pub pool: PoolDto,
    /// Ready nodes.
    pub nodes: i64,
    /// Allocatable CPU, millicores.
    pub cpu_millicores: i64,
    /// Size in Spark Units.
    pub spark_units: i64,
    /// Units sold as dedicated units now (dedicated pool only).
    pub allocated_units: i64,
    /// Units not sold.
    pub free_units: i64,
    /// CPU of metered pods of this pool running now, millicores.
    pub in_use_millicores: i64,
    /// CPU of borrowed (opportunistic) pods running on this pool's nodes, millicores.
    pub opportunistic_millicores: i64,
    /// When the scheduler last registered the size.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolsDto {
    /// One entry per pool.
    pub pools: Vec<PoolInfo>,
}

/// Tenant lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusDto {
    /// May submit and buy.
    Active,
    /// New drivers refused; running ones go on.
    Suspended,
    /// Terminal.
    Deleted,
}

impl From<StatusDto> for TenantStatus {
    fn from(s: StatusDto) -> Self {
        match s {
            StatusDto::Active => Self::Active,
            StatusDto::Suspended => Self::Suspended,
            StatusDto::Deleted => Self::Deleted,
        }
    }
}

impl From<TenantStatus> for StatusDto {
    fn from(s: TenantStatus) -> Self {
        match s {
            TenantStatus::Active => Self::Active,
            TenantStatus::Suspended => Self::Suspended,
            TenantStatus::Deleted => Self::Deleted,
        }
    }
}

/// API tier (its rate limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierDto {
    /// Default limits.
    #[default]
    Standard,
    /// Higher limits.
    Premium,
}

impl From<TierDto> for Tier {
    fn from(t: TierDto) -> Self {
        match t {
            TierDto::Standard => Self::Standard,
            TierDto::Premium => Self::Premium,
        }
    }
}

impl From<Tier> for TierDto {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Standard => Self::Standard,
            Tier::Premium => Self::Premium,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantDto {
    /// Id (also the `sparkcap.io/tenant` label value).
    pub id: String,
    /// Name for people.
    pub display_name: String,
    /// Lifecycle state.
    pub status: StatusDto,
    /// API tier.
    pub tier: TierDto,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Namespaces bound to it.
    pub namespaces: Vec<String>,
}

impl TenantDto {
    /// From the ledger's tenant and its namespaces.
    pub fn new(t: &Tenant, namespaces: Vec<String>) -> Self {
        Self {
            id: t.id.to_string(),
            display_name: t.display_name.clone(),
            status: t.status.into(),
            tier: t.tier.into(),
            created_at: t.created_at,
            namespaces,
        }
    }
}

/// A new tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenantBody {
    /// Id: a DNS label (lowercase letters, digits, '-'; at most 63).
    pub id: String,
    /// Name for people; the id when omitted.
    #[serde(default)]
    pub display_name: String,
    /// API tier.
    #[serde(default)]
    pub tier: TierDto,
    /// Namespaces to bind, in the same transaction.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// A change to a tenant; absent fields stay as they are. All or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatchBody {
    /// New name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// active <-> suspended, either -> deleted.
    #[serde(default)]
    pub status: Option<StatusDto>,
    /// New tier.
    #[serde(default)]
    pub tier: Option<TierDto>,
    /// Namespaces to bind.
    #[serde(default)]
    pub bind_namespaces: Vec<String>,
    /// Namespaces to unbind (must be this tenant's).
    #[serde(default)]
    pub unbind_namespaces: Vec<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_hours_are_exact() {
        assert_eq!(vcpu_hours(McSeconds::from_vcpu_hours(12)), "12.000");
        assert_eq!(vcpu_hours(McSeconds(3_600 * 1_500)), "1.500");
        assert_eq!(vcpu_hours(McSeconds(-3_600 * 250)), "-0.250");
        assert_eq!(vcpu_hours(McSeconds(-3_600 * 2_250)), "-2.250");
        assert_eq!(vcpu_hours(McSeconds(0)), "0.000");
    }
}
