//! Tenants and the namespaces bound to them.

use crate::error::{LedgerError, Result};
use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// May submit and buy.
    Active,
    /// Running pods go on and are charged; new drivers are refused.
    Suspended,
    /// Terminal: nothing new; history kept for billing.
    Deleted,
}

impl TenantStatus {
    /// The lowercase name used in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// Whether a tenant may move from `self` to `to`. Staying put is allowed
    /// so that a retried PATCH succeeds.
    pub fn can_become(self, to: TenantStatus) -> bool {
        use TenantStatus::*;
        matches!(
            (self, to),
            (Active, Active | Suspended | Deleted) | (Suspended, Active | Suspended | Deleted) | (Deleted, Deleted)
        )
    }

    /// Checks a transition, naming both ends when it is refused.
    pub fn transition(self, tenant: &TenantId, to: TenantStatus) -> Result<TenantStatus> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(LedgerError::InvalidStatusTransition {
                tenant: tenant.clone(),
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "deleted" => Ok(Self::Deleted),
            other => Err(LedgerError::Corrupt(format!("unknown tenant status {other:?}"))),
        }
    }
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Stable id, also the namespace label value.
    pub id: TenantId,
    /// Name for people.
    pub display_name: String,
    /// Lifecycle state.
    pub status: TenantStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// What an admin sends to create a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    /// Stable id.
    pub id: TenantId,
    /// Name for people; defaults to the id when empty.
    pub display_name: String,
}

impl NewTenant {
    /// A tenant with the display name checked and defaulted.
    pub fn into_tenant(self, now: DateTime<Utc>) -> Result<Tenant> {
        let display_name = self.display_name.trim().to_owned();
        if display_name.chars().count() > 200 {
            return Err(LedgerError::InvalidTenantId {
                value: self.id.to_string(),
                reason: "display name is longer than 200 characters",
            });
        }
        Ok(Tenant {
            display_name: if display_name.is_empty() {
                self.id.to_string()
            } else {
                display_name
            },
            id: self.id,
            status: TenantStatus::Active,
            created_at: now,
        })
    }
}

/// A namespace owned by a tenant: every Spark pod in it is the tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceBinding {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Its tenant.
    pub tenant: TenantId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_is_terminal() {
        let t = TenantId::new("acme").unwrap();
        assert!(TenantStatus::Active.transition(&t, TenantStatus::Suspended).is_ok());
        assert!(TenantStatus::Suspended.transition(&t, TenantStatus::Active).is_ok());
        let err = TenantStatus::Deleted
            .transition(&t, TenantStatus::Active)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant acme is deleted"), "{err}");
    }
}
