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

/// A tenant's service tier: what its API rate limit is (R13.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The default.
    #[default]
    Standard,
    /// Higher API limits.
    Premium,
}

impl Tier {
    /// The lowercase name used in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Premium => "premium",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "standard" => Ok(Self::Standard),
            "premium" => Ok(Self::Premium),
            other => Err(LedgerError::Corrupt(format!("unknown tenant tier {other:?}"))),
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
    /// Service tier.
    #[serde(default)]
    pub tier: Tier,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// What an admin sends to create a tenant. Its namespaces are bound in the
/// same transaction: a tenant never exists half-onboarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    /// Stable id.
    pub id: TenantId,
    /// Name for people; defaults to the id when empty.
    pub display_name: String,
    /// Service tier.
    #[serde(default)]
    pub tier: Tier,
    /// Namespaces to bind.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// Longest display name accepted.
const MAX_DISPLAY_NAME: usize = 200;

fn check_display_name(id: &TenantId, name: &str) -> Result<String> {
    let name = name.trim();
    if name.chars().count() > MAX_DISPLAY_NAME {
        return Err(LedgerError::InvalidTenantId {
            value: id.to_string(),
            reason: "display name is longer than 200 characters",
        });
    }
    Ok(if name.is_empty() {
        id.to_string()
    } else {
        name.to_owned()
    })
}

impl NewTenant {
    /// A standard-tier tenant with no namespaces yet.
    pub fn new(id: TenantId, display_name: impl Into<String>) -> Self {
        Self {
            id,
            display_name: display_name.into(),
            tier: Tier::Standard,
            namespaces: Vec::new(),
        }
    }

    /// A tenant with the display name checked and defaulted.
    pub fn into_tenant(self, now: DateTime<Utc>) -> Result<Tenant> {
        Ok(Tenant {
            display_name: check_display_name(&self.id, &self.display_name)?,
            id: self.id,
            status: TenantStatus::Active,
            tier: self.tier,
            created_at: now,
        })
    }
}

/// An admin's change to a tenant, applied in one transaction: every field
/// or none. Absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPatch {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// New lifecycle state.
    #[serde(default)]
    pub status: Option<TenantStatus>,
    /// New tier.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Namespaces to bind to the tenant (idempotent).
    #[serde(default)]
    pub bind_namespaces: Vec<String>,
    /// Namespaces to unbind; each must belong to the tenant.
    #[serde(default)]
    pub unbind_namespaces: Vec<String>,
}

impl TenantPatch {
    /// Applies the scalar fields to `tenant`, checking each; namespaces are
    /// the store's part.
    pub fn apply(&self, tenant: &mut Tenant) -> Result<()> {
        if let Some(name) = &self.display_name {
            tenant.display_name = check_display_name(&tenant.id, name)?;
        }
        if let Some(status) = self.status {
            tenant.status = tenant.status.transition(&tenant.id, status)?;
        }
        if let Some(tier) = self.tier {
            tenant.tier = tier;
        }
        if tenant.status == TenantStatus::Deleted && !self.bind_namespaces.is_empty() {
            return Err(LedgerError::TenantDeleted(tenant.id.clone()));
        }
        if let Some(ns) = self.bind_namespaces.iter().find(|n| self.unbind_namespaces.contains(n)) {
            return Err(LedgerError::InvalidNamespace {
                value: ns.clone(),
                reason: "listed both to bind and to unbind",
            });
        }
        Ok(())
    }
}

/// Checks the namespace part of a patch (or of a new tenant's list) against
/// the current owners: names valid, none owned by another tenant, every
/// namespace to unbind owned by `tenant`.
pub fn check_namespace_changes(
    tenant: &TenantId,
    bind: &[String],
    unbind: &[String],
    owner_of: impl Fn(&str) -> Option<TenantId>,
) -> Result<()> {
    for ns in bind.iter().chain(unbind) {
        crate::ids::validate_namespace(ns)?;
    }
    for ns in bind {
        if let Some(owner) = owner_of(ns).filter(|o| o != tenant) {
            return Err(LedgerError::NamespaceTaken {
                namespace: ns.clone(),
                owner,
            });
        }
    }
    for ns in unbind {
        if owner_of(ns).as_ref() != Some(tenant) {
            return Err(LedgerError::NotTenantsNamespace {
                namespace: ns.clone(),
                tenant: tenant.clone(),
            });
        }
    }
    Ok(())
}

/// A tenant with the namespaces bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The tenant.
    pub tenant: Tenant,
    /// Its namespaces, sorted.
    pub namespaces: Vec<String>,
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
