//! What sparkcap decided when it bound a pod — tenant, pool, cpu, borrowed
//! or not, application — recorded in the ledger before the binding is sent.
//! Every charge for the pod is built from this record, never from the pod's
//! labels, which a tenant can change; and a pod sparkcap bound can never
//! lack a ledger row, since the row exists before the pod can start.

use crate::accrual::PodUsage;
use crate::error::{LedgerError, Result};
use crate::ids::TenantId;
use crate::pool::Pool;
use crate::units::Millicores;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The finalizer sparkcap-scheduler adds when it binds a pod and removes
/// once the pod's final charge is committed (as Kueue's
/// `kueue.x-k8s.io/managed` does for plain pods): no bound pod's object can
/// go before its last second is charged. The webhook keeps tenants from
/// stripping it off a running pod.
pub const METERING_FINALIZER: &str = "sparkcap.io/metering";

/// The facts fixed when sparkcap binds a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodBinding {
    /// Kubernetes uid.
    pub uid: String,
    /// The tenant the ledger binds the pod's namespace to.
    pub tenant: TenantId,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// `spark-app-selector`.
    pub app_id: Option<String>,
    /// Stable job identity across runs.
    pub job: Option<String>,
    /// `driver` or `executor`.
    pub role: Option<String>,
    /// The pool it was placed in.
    pub pool: Pool,
    /// What Kubernetes reserves for it ([`crate::podres`]).
    pub cpu: Millicores,
    /// Placed on borrowed dedicated capacity (R8.3: recorded, not charged).
    pub opportunistic: bool,
    /// The node it was bound to.
    pub node: String,
    /// When sparkcap bound it.
    pub bound_at: DateTime<Utc>,
}

impl PodBinding {
    /// The pod's usage facts once it started at `started_at`.
    pub fn usage(&self, started_at: DateTime<Utc>) -> PodUsage {
        PodUsage {
            uid: self.uid.clone(),
            tenant: self.tenant.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            app_id: self.app_id.clone(),
            job: self.job.clone(),
            role: self.role.clone(),
            pool: self.pool,
            cpu: self.cpu,
            opportunistic: self.opportunistic,
            started_at,
        }
    }

    /// Refuses a binding whose text or cpu the ledger cannot hold (the
    /// rule accruals are checked by, plus the node's name).
    pub fn check(&self) -> Result<()> {
        crate::accrual::check_usage(&self.usage(self.bound_at))?;
        check_text("node name", &self.node, 253)
    }

    /// The first fact of `other` that differs from this record, as an error.
    pub fn same_as(&self, other: &PodBinding) -> Result<()> {
        let differs = |field: &'static str, was: String, now: String| {
            Err(LedgerError::BindingChanged {
                pod: self.uid.clone(),
                field,
                was,
                now,
            })
        };
        if self.tenant != other.tenant {
            return differs("tenant", self.tenant.to_string(), other.tenant.to_string());
        }
        if self.pool != other.pool {
            return differs("pool", self.pool.to_string(), other.pool.to_string());
        }
        if self.cpu != other.cpu {
            return differs("cpu", self.cpu.to_string(), other.cpu.to_string());
        }
        if self.opportunistic != other.opportunistic {
            return differs(
                "opportunistic",
                self.opportunistic.to_string(),
                other.opportunistic.to_string(),
            );
        }
        if self.app_id != other.app_id {
            return differs(
                "application",
                format!("{:?}", self.app_id),
                format!("{:?}", other.app_id),
            );
        }
        Ok(())
    }
}

/// Decides a batch of bindings against what the ledger holds (`known`:
/// the record, and whether it is fixed — its pod started or it closed):
/// each item's outcome, and the records to write, one per uid (the last).
/// A started pod's facts are fixed; before it starts, a new bind of the
/// same pod (the last one failed, and it is placed again, maybe elsewhere
/// or borrowed) replaces the record, so a failed bind never blocks the next.
pub fn plan_bindings(
    bindings: &[PodBinding],
    known: impl Fn(&str) -> Option<(PodBinding, bool)>,
    tenant_exists: impl Fn(&TenantId) -> bool,
) -> (Vec<Result<()>>, Vec<&PodBinding>) {
    let mut outcomes = Vec::with_capacity(bindings.len());
    let mut write: Vec<&PodBinding> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for b in bindings {
        let outcome = (|| {
            b.check()?;
            if !tenant_exists(&b.tenant) {
                return Err(LedgerError::UnknownTenant(b.tenant.clone()));
            }
            if let Some((old, true)) = known(&b.uid) {
                return old.same_as(b);
            }
            match at.get(b.uid.as_str()) {
                Some(&i) => write[i] = b,
                None => {
                    at.insert(&b.uid, write.len());
                    write.push(b);
                }
            }
            Ok(())
        })();
        outcomes.push(outcome);
    }
    (outcomes, write)
}

/// Refuses text PostgreSQL cannot store or that no Kubernetes name could
/// be: a NUL byte, control characters, more than `max` bytes. One bad pod's
/// annotation must be refused alone, never fail the batch it rides in.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    let reason = if value.contains('\0') {
        Some("it holds a NUL byte")
    } else if value.chars().any(char::is_control) {
        Some("it holds control characters")
    } else if value.len() > max {
        Some("it is too long")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(LedgerError::InvalidText {
            field,
            value: value.chars().take(80).collect(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_control_and_long_text_is_refused_with_the_field_named() {
        let e = check_text("annotation sparkcap.io/source", "s3\u{0}evil", 63).unwrap_err();
        assert!(e.to_string().contains("annotation sparkcap.io/source"), "{e}");
        assert!(e.to_string().contains("NUL"), "{e}");
        assert!(check_text("job", "a\nb", 63).is_err());
        assert!(check_text("job", &"x".repeat(64), 63).is_err());
        assert!(check_text("job", "nightly-load", 63).is_ok());
    }
}
