//! sparkcap's ledger: the domain model (tenants, pools, purchases, balances,
//! usage accrual) as pure functions, and the store that persists it.
//!
//! Units are integers throughout: CPU in millicores, usage in
//! millicore-seconds (1 vCPU-hour = 3,600,000 mc·s).

pub mod account;
pub mod accrual;
pub mod binding;
pub mod egress;
pub mod error;
pub mod estimate;
pub mod faults;
pub mod feed;
pub mod forecast;
pub mod ids;
pub mod lifecycle;
pub mod podres;
pub mod pool;
pub mod purchase;
pub mod quantity;
pub mod schedule;
pub mod slices;
pub mod store;
pub mod tenant;
pub mod time;
pub mod units;

pub use account::{Account, Balance, BalanceState, Lot};
pub use accrual::{AccrualOutcome, AccrualRequest, PodCheckpoint, PodOutcome, PodUsage};
pub use binding::PodBinding;
pub use error::{LedgerError, Result};
pub use feed::{ChangeKind, LedgerChange};
pub use ids::TenantId;
pub use pool::{NodeAllocatable, Pool, PoolCapacity, SparkUnitSize};
pub use purchase::{Period, Purchase, PurchaseKind, PurchaseReceipt, PurchaseRequest};
pub use store::{
    Epoch, Granularity, JobRun, JobStats, JobSummary, LedgerStore, MemoryStore, PgStore, RunCursor, RunOutcome,
    RunQuery, TenantSummary, UsageBucket,
};
pub use tenant::{NamespaceBinding, NewTenant, Tenant, TenantPatch, TenantRecord, TenantStatus, Tier};
pub use units::{Bytes, McSeconds, Millicores};
