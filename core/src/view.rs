//! The tenant view: everything an admission decision reads, held in memory so
//! that no admission ever waits on SQL or on the API server. `sync` keeps it
//! current; `admit` only reads it.

use chrono::{DateTime, TimeDelta, Utc};
use sparkcap_ledger::slices::{SlicePolicy, StoredSchedule};
use sparkcap_ledger::{Balance, Pool, Purchase, PurchaseKind, SparkUnitSize, Tenant, TenantId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Policy knobs an admin sets (Helm values / flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A job's first this-many runs go to the draft pool (R5.1).
    pub draft_runs: i64,
    /// Without a successful ledger refresh for this long, drivers are refused.
    pub stale_after: TimeDelta,
    /// The scheduler's name, written into every Spark pod.
    pub scheduler_name: String,
    /// The user sparkcap-scheduler acts as (its ServiceAccount): it may
    /// remove the metering finalizer from any pod (`release-finalizers`
    /// before an uninstall); tenants only from pods that ended.
    pub scheduler_user: String,
    /// Size of one Spark Unit (dedicated entitlement = units × this).
    pub spark_unit: SparkUnitSize,
    /// How schedules are planned in time slices.
    pub slices: SlicePolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            draft_runs: 3,
            stale_after: TimeDelta::seconds(30),
            scheduler_name: "sparkcap-scheduler".into(),
            scheduler_user: "system:serviceaccount:sparkcap-system:sparkcap-scheduler".into(),
            spark_unit: SparkUnitSize::default(),
            slices: SlicePolicy::default(),
        }
    }
}

/// What the ledger says about one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFacts {
    /// The tenant.
    pub tenant: Tenant,
    /// vCPU-hour balance, as of `balance.at`.
    pub balance: Balance,
    /// Every purchase (for validity and expiry messages).
    pub purchases: Vec<Purchase>,
    /// Jobs promoted out of the draft pool (R5.5); every other job is in draft.
    pub promoted: HashSet<String>,
}

impl TenantFacts {
    /// Dedicated units in force at `now`.
    pub fn dedicated_units(&self, now: DateTime<Utc>) -> i64 {
        sparkcap_ledger::purchase::dedicated_units_at(&self.purchases, now)
    }

    /// Whether any vCPU-hour purchase is in force at `now`.
    pub fn has_vcpu_hours(&self, now: DateTime<Utc>) -> bool {
        self.purchases
            .iter()
            .any(|p| p.kind == PurchaseKind::VcpuHours && p.valid_at(now))
    }
}

/// Everything the ledger holds that admission needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFacts {
    /// Tenants by id (deleted ones included, to say so).
    pub tenants: HashMap<TenantId, TenantFacts>,
    /// Namespace bindings recorded in the ledger.
    pub bindings: HashMap<String, TenantId>,
    /// Allocatable cpu per pool, in millicores.
    pub pool_cpu: HashMap<Pool, i64>,
    /// Every job schedule reserved in time slices.
    pub schedules: Vec<StoredSchedule>,
    /// `schedules` parsed and expanded once per reload, off the admission
    /// path (each driver admission reads them).
    pub planned: PlannedSchedules,
}

/// Schedules parsed and expanded, index-aligned with [`LedgerFacts::schedules`].
#[derive(Debug, Clone, Default)]
pub struct PlannedSchedules(pub sparkcap_ledger::slices::Prepared);

impl PlannedSchedules {
    /// Parses `schedules` and expands them over the two days from `now`'s slice.
    pub fn of(schedules: &[StoredSchedule], now: DateTime<Utc>, slice: TimeDelta) -> Self {
        Self(sparkcap_ledger::slices::Prepared::new(schedules, now, slice))
    }
}

/// Derived from `schedules`, which the facts' equality already compares.
impl PartialEq for PlannedSchedules {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for PlannedSchedules {}

/// A Spark application with pods in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningApp {
    /// Its pool (the driver's `sparkcap.io/pool` label).
    pub pool: Pool,
    /// Its job label.
    pub job: Option<String>,
    /// Pods seen.
    pub pods: usize,
}

/// The whole view. Cheap to clone: each part is shared and replaced whole.
#[derive(Debug, Clone, Default)]
pub struct TenantView {
    /// From the ledger.
    pub ledger: Arc<LedgerFacts>,
    /// Every namespace → its `sparkcap.io/tenant` label, if any (from the namespace reflector).
    pub namespaces: Arc<HashMap<String, Option<String>>>,
    /// (namespace, `spark-app-selector`) → application.
    pub apps: Arc<HashMap<(String, String), RunningApp>>,
    /// Last time the ledger part was confirmed current.
    pub ledger_fresh_at: Option<DateTime<Utc>>,
    /// Policy.
    pub settings: Arc<Settings>,
}

impl TenantView {
    /// An empty view with these settings.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings: Arc::new(settings),
            ..Self::default()
        }
    }

    /// How old the ledger part is at `now`, if it was ever loaded.
    pub fn ledger_age(&self, now: DateTime<Utc>) -> Option<TimeDelta> {
        self.ledger_fresh_at.map(|t| now - t)
    }
}
