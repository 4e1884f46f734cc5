//! The change feed: what a webhook replica needs to know to refresh its
//! in-memory tenant view without polling.

use crate::ids::TenantId;
use serde::{Deserialize, Serialize};

/// Postgres channel the ledger notifies on.
pub const CHANNEL: &str = "sparkcap_ledger";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A tenant was created or its status changed.
    Tenant,
    /// A namespace was bound or unbound.
    Binding,
    /// A purchase was recorded.
    Purchase,
    /// Usage was charged.
    Usage,
    /// A pool's size changed.
    Pool,
    /// A job finished a run (its draft state may have changed).
    Job,
    /// A job's schedule (time-slice reservation) was set or removed.
    Schedule,
    /// Changes may have been missed (the feed reconnected): reload everything.
    Resync,
}

/// One change notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LedgerChange {
    /// What changed.
    pub kind: ChangeKind,
    /// Whose, when it concerns one tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

impl LedgerChange {
    /// A change of one tenant's data.
    pub fn of(kind: ChangeKind, tenant: &TenantId) -> Self {
        Self {
            kind,
            tenant: Some(tenant.clone()),
        }
    }

    /// A change not tied to one tenant.
    pub fn global(kind: ChangeKind) -> Self {
        Self { kind, tenant: None }
    }
}
