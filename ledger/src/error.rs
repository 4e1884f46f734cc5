//! The ledger's errors. Each message names the value, the rule it broke and,
//! where there is one, the fix: these reach cluster admins and tenants verbatim.

use crate::ids::TenantId;
use crate::units::Millicores;
use chrono::{DateTime, Utc};

/// Result with [`LedgerError`] as the default error.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Everything the ledger refuses or fails at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A tenant id that cannot be a Kubernetes label value.
    #[error("invalid tenant id {value:?}: {reason}; use a DNS label such as \"acme\" or \"team-7\"")]
    InvalidTenantId {
        /// The rejected id.
        value: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A namespace name that Kubernetes would not accept.
    #[error("invalid namespace {value:?}: {reason}")]
    InvalidNamespace {
        /// The rejected name.
        value: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A notification URL that cannot be used.
    #[error(
        "invalid notification URL {0:?}: use an absolute http:// or https:// URL of at most 2048 characters, \
         without spaces or credentials (send credentials in the URL's path or query)"
    )]
    InvalidNotifyUrl(String),
    /// No notice with this id.
    #[error("unknown notice {0}")]
    UnknownNotice(i64),
    /// No tenant with this id.
    #[error(
        "unknown tenant {0}: create it first (POST /api/v1/tenants) or check the namespace label sparkcap.io/tenant"
    )]
    UnknownTenant(TenantId),
    /// Creating a tenant that exists.
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    /// A status change the lifecycle does not allow.
    #[error("tenant {tenant} is {from}; it cannot become {to} (allowed: active <-> suspended, either -> deleted)")]
    InvalidStatusTransition {
        /// The tenant.
        tenant: TenantId,
        /// Its status now.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// A write for a tenant that was deleted.
    #[error("tenant {0} is deleted; deleted tenants cannot buy capacity or own namespaces")]
    TenantDeleted(TenantId),
    /// A namespace already owned by another tenant.
    #[error("namespace {namespace} already belongs to tenant {owner}; unbind it first")]
    NamespaceTaken {
        /// The namespace.
        namespace: String,
        /// Its current tenant.
        owner: TenantId,
    },
    /// Unbinding a namespace the tenant does not own.
    #[error(
        "namespace {namespace} is not bound to tenant {tenant}; only a tenant's own namespaces can be unbound from it"
    )]
    NotTenantsNamespace {
        /// The namespace.
        namespace: String,
        /// The tenant named.
        tenant: TenantId,
    },
    /// A namespace with no tenant binding.
    #[error("namespace {0} is not bound to any tenant")]
    UnboundNamespace(String),
    /// Zero, negative or absurd purchase quantity.
    #[error("invalid quantity {quantity} for {kind}: {rule}")]
    InvalidQuantity {
        /// The quantity asked for.
        quantity: i64,
        /// `dedicated_units` or `vcpu_hours`.
        kind: &'static str,
        /// The rule it broke.
        rule: &'static str,
    },
    /// An explicit end that is not after the start.
    #[error(
        "inverted validity: valid_until {until} is not after valid_from {from}; give an end after the start or omit it to use the period"
    )]
    InvertedValidity {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        until: DateTime<Utc>,
    },
    /// An explicit end that is not a whole number of periods after the start.
    #[error(
        "valid_until {until} does not match the {period} period from {from} (expected {expected}); omit valid_until or use periods"
    )]
    ValidityMismatch {
        /// Start.
        from: DateTime<Utc>,
        /// End given.
        until: DateTime<Utc>,
        /// The period.
        period: &'static str,
        /// The end the period gives.
        expected: DateTime<Utc>,
    },
    /// A purchase whose whole validity lies in the past.
    #[error("purchase validity ended at {until}, before now ({now}); a purchase must be valid now or in the future")]
    ExpiredValidity {
        /// End of validity.
        until: DateTime<Utc>,
        /// The time of the request.
        now: DateTime<Utc>,
    },
    /// Dedicated units would exceed the dedicated pool (R1.5).
    #[error(
        "cannot sell {requested} dedicated units to {tenant}: {allocated} of the dedicated pool's {pool_units} Spark Units are already sold at {at}; at most {available} can be added — add nodes to the dedicated pool or shorten the validity"
    )]
    DedicatedOverAllocation {
        /// The buyer.
        tenant: TenantId,
        /// Units asked for.
        requested: i64,
        /// Units already sold at the busiest instant of the window.
        allocated: i64,
        /// The pool's size in Spark Units.
        pool_units: i64,
        /// The busiest instant.
        at: DateTime<Utc>,
        /// What could still be sold.
        available: i64,
    },
    /// Retried purchase whose body differs from the original.
    #[error(
        "idempotency key {key:?} was already used for a different purchase ({differences}); use a new key for a new purchase"
    )]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// What differs, field by field.
        differences: String,
    },
    /// A purchase without an idempotency key.
    #[error("a purchase needs an idempotency key (1-200 characters) so that a retry cannot buy twice")]
    MissingIdempotencyKey,
    /// A pod whose containers request no CPU cannot be metered.
    #[error(
        "pod {pod} has no cpu request; set resources.requests.cpu on every container (spark.driver.cores / spark.executor.cores)"
    )]
    MissingCpuRequest {
        /// Pod uid or name.
        pod: String,
    },
    /// Text that cannot be stored as it is (a NUL byte, over-long, control
    /// characters): refused alone, before it reaches SQL.
    #[error("{field} {value:?} cannot be recorded: {reason}")]
    InvalidText {
        /// What the text is (for example "pod name" or "annotation sparkcap.io/source").
        field: &'static str,
        /// The text, cut to 80 characters.
        value: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A binding recorded for a pod, asked for again with other facts.
    #[error("pod {pod} was bound with {field} {was}; sparkcap refuses to record it again with {now}")]
    BindingChanged {
        /// Pod uid.
        pod: String,
        /// The field.
        field: &'static str,
        /// Recorded value.
        was: String,
        /// Value asked for.
        now: String,
    },
    /// A pod's immutable facts changed between accruals.
    #[error(
        "pod {pod}: {field} changed from {was} to {now}; a pod's cpu, tenant, pool and opportunistic flag are fixed at bind"
    )]
    PodChanged {
        /// Pod uid.
        pod: String,
        /// The field.
        field: &'static str,
        /// Recorded value.
        was: String,
        /// Value in the request.
        now: String,
    },
    /// An accrual earlier than what was already charged (clock skew or a reordered event).
    #[error(
        "pod {pod}: accrual up to {until} is earlier than already charged ({charged_until}); a running pod's charge only moves forward (its close gives back what was charged past its end)"
    )]
    ClockSkew {
        /// Pod uid.
        pod: String,
        /// Requested end.
        until: DateTime<Utc>,
        /// Checkpoint.
        charged_until: DateTime<Utc>,
    },
    /// An accrual before the pod started.
    #[error("pod {pod}: accrual up to {until} is before the pod started ({started_at})")]
    BeforeStart {
        /// Pod uid.
        pod: String,
        /// Requested end.
        until: DateTime<Utc>,
        /// Pod start.
        started_at: DateTime<Utc>,
    },
    /// An accrual past the recorded end of a finished pod.
    #[error("pod {pod} finished at {finished_at}; it cannot be charged up to {until}")]
    PodFinished {
        /// Pod uid.
        pod: String,
        /// Recorded end.
        finished_at: DateTime<Utc>,
        /// Requested end.
        until: DateTime<Utc>,
    },
    /// CPU outside what any real pod requests.
    #[error("pod {pod}: cpu {cpu} is out of range (1m to 100000 cores)")]
    CpuOutOfRange {
        /// Pod uid.
        pod: String,
        /// The cpu given.
        cpu: Millicores,
    },
    /// A write from a deposed leader.
    #[error(
        "stale writer epoch {epoch}: epoch {current} has been claimed since; this process is no longer the leader and must stop writing"
    )]
    StaleEpoch {
        /// The writer's epoch.
        epoch: i64,
        /// The newest claimed epoch.
        current: i64,
    },
    /// An epoch that was never claimed.
    #[error("writer epoch {epoch} was never claimed (newest is {current}); claim an epoch before writing")]
    UnclaimedEpoch {
        /// The writer's epoch.
        epoch: i64,
        /// The newest claimed epoch.
        current: i64,
    },
    /// An epoch claimed through another store instance (or process).
    #[error("writer epoch {epoch} was not claimed by this ledger connection; each writer claims its own epoch")]
    EpochNotHeld {
        /// The epoch used.
        epoch: i64,
    },
    /// Pool capacity that cannot be right.
    #[error("invalid capacity for pool {pool}: {reason}")]
    InvalidPoolCapacity {
        /// The pool.
        pool: String,
        /// Why.
        reason: String,
    },
    /// Spark Unit size that cannot be right.
    #[error("invalid Spark Unit size: {0}")]
    InvalidSparkUnit(String),
    /// An arithmetic bound was hit (would overflow).
    #[error("amount out of range: {0}")]
    Overflow(String),
    /// A query window that ends before it starts.
    #[error("invalid time range: from {from} is not before to {to}")]
    InvalidRange {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        to: DateTime<Utc>,
    },
    /// Another writer changed what this batch read (a checkpoint remembered
    /// by a writer was stale); the batch was rolled back.
    #[error("concurrent ledger write: {0}; the batch was rolled back, retry it")]
    ConcurrentWrite(String),
    /// A schedule that cannot be planned.
    #[error("{0}")]
    Slices(#[from] crate::slices::SliceError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The process is set up wrong (a missing setting).
    #[error("configuration: {0}")]
    Configuration(String),
    /// Data in the store that violates the schema's own rules.
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// Whether the writer no longer holds the ledger's fencing epoch (an
    /// older epoch, one never claimed, or one claimed by another instance):
    /// a scheduler told so must stop acting as leader.
    pub fn is_deposed(&self) -> bool {
        matches!(
            self,
            Self::StaleEpoch { .. } | Self::EpochNotHeld { .. } | Self::UnclaimedEpoch { .. }
        )
    }

    /// Whether the caller sent something wrong (as opposed to the ledger failing).
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            Self::Database(_)
                | Self::Migration(_)
                | Self::Corrupt(_)
                | Self::Overflow(_)
                | Self::ConcurrentWrite(_)
                | Self::Configuration(_)
        )
    }
}

impl From<sqlx::Error> for LedgerError {
    /// Text PostgreSQL cannot store (a NUL byte, an invalid sequence) is the
    /// caller's input, not a database failure: it must read as a 400 with the
    /// reason, never as "the ledger is unavailable".
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e
            && matches!(d.code().as_deref(), Some("22021" | "22P05"))
        {
            return Self::InvalidText {
                field: "text",
                value: String::new(),
                reason: "it holds a NUL byte or a character PostgreSQL cannot store",
            };
        }
        Self::Database(e)
    }
}
