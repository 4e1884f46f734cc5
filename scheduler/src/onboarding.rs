//! Tenant onboarding: a namespace labelled `sparkcap.io/tenant=<id>` is
//! bound to that tenant in the ledger (when it is not bound to another) and
//! gets, kept current with the tenant's purchases:
//! - a ResourceQuota `sparkcap` bounding the CPU and memory its pods may
//!   request to the capacity the purchases reach (R6.3, R10.1): dedicated
//!   units, plus the shared and draft pools and idle dedicated capacity when
//!   it holds vCPU-hours;
//! - a NetworkPolicy `sparkcap-default-deny` letting its pods talk to each
//!   other (driver ↔ executors), to DNS and to the API server, and nothing
//!   else (R10.4). Tenants add their own policies for their sources and
//!   targets (policies add up).
//!
//! [`desired`] is the rule; [`run`] applies it with server-side apply.

use crate::shell::ShellConfig;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sparkcap_ledger::purchase::dedicated_units_at;
use sparkcap_ledger::{LedgerStore, Pool, PoolCapacity, PurchaseKind, TenantId, TenantStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The label that onboards a namespace.
pub const TENANT_LABEL: &str = "sparkcap.io/tenant";
/// Field manager of what sparkcap applies.
pub const MANAGER: &str = "sparkcap-onboarding";
/// Name of the quota and of the policy.
pub const QUOTA: &str = "sparkcap";
/// Name of the default-deny policy.
pub const POLICY: &str = "sparkcap-default-deny";

/// What a tenant's purchases reach, in millicores and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// CPU its pods may request at once.
    pub cpu: i64,
    /// Memory.
    pub memory: i64,
}

/// What a tenant holding `units` dedicated units (of `unit_cpu`/`unit_memory`)
/// and, if `vcpu_hours`, prepaid vCPU-hours, may request at once given the
/// pools: its units; with vCPU-hours also the shared and draft pools and the
/// dedicated capacity others leave idle (borrowed, R8).
pub fn desired(units: i64, vcpu_hours: bool, unit_cpu: i64, unit_memory: i64, pools: &[PoolCapacity]) -> Reach {
    let pool = |p: Pool| pools.iter().find(|c| c.pool == p);
    let (own_cpu, own_memory) = (units * unit_cpu, units * unit_memory);
    let (mut cpu, mut memory) = (own_cpu, own_memory);
    if vcpu_hours {
        for p in [Pool::Shared, Pool::Draft] {
            if let Some(c) = pool(p) {
                cpu += c.cpu.0;
                memory += c.memory.0;
            }
        }
        // The rest of the dedicated pool, when its owners leave it idle.
        if let Some(c) = pool(Pool::Dedicated) {
            cpu += (c.cpu.0 - own_cpu).max(0);
            memory += (c.memory.0 - own_memory).max(0);
        }
    }
    Reach { cpu, memory }
}

/// The ResourceQuota object.
pub fn quota(namespace: &str, tenant: &TenantId, reach: Reach) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": QUOTA, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "sparkcap", TENANT_LABEL: tenant.as_str()}},
        "spec": {"hard": {
            "requests.cpu": format!("{}m", reach.cpu),
            "requests.memory": reach.memory.to_string(),
        }}
    })
}

/// The default-deny NetworkPolicy with what Spark needs.
pub fn network_policy(namespace: &str, tenant: &TenantId) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "sparkcap", TENANT_LABEL: tenant.as_str()}},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            // Driver <-> executors (block manager, RPC, shuffle): within the namespace.
            "ingress": [{"from": [{"podSelector": {}}]}],
            "egress": [
                {"to": [{"podSelector": {}}]},
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                // The driver creates and watches its executors through the API server.
                {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
            ]
        }
    })
}

/// Reconciles every labelled namespace once; returns how many were applied.
pub async fn reconcile_all(
    client: &Client,
    store: &dyn LedgerStore,
    config: &ShellConfig,
    applied: &mut HashMap<String, Reach>,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = namespaces.list(&ListParams::default().labels(TENANT_LABEL)).await?;
    let pools = store.pools().await?;
    let bindings: HashMap<String, TenantId> = store
        .namespace_bindings()
        .await?
        .into_iter()
        .map(|b| (b.namespace, b.tenant))
        .collect();
    let unit = config.policy.spark_unit_size()?;
    let mut done = 0;
    for ns in labelled.items {
        let name = ns.name_any();
        let Some(tenant) = ns
            .labels()
            .get(TENANT_LABEL)
            .and_then(|t| TenantId::new(t.clone()).ok())
        else {
            continue;
        };
        let Some(t) = store.tenant(&tenant).await? else {
            tracing::warn!(namespace = %name, %tenant, "namespace names a tenant the ledger does not have");
            continue;
        };
        if t.status == TenantStatus::Deleted {
            continue;
        }
        match bindings.get(&name) {
            Some(owner) if *owner != tenant => {
                tracing::warn!(namespace = %name, label = %tenant, %owner, "namespace label disagrees with its ledger binding; not onboarded");
                continue;
            }
            Some(_) => {}
            None => {
                // A label alone never binds: anyone able to label a
                // namespace would then spend the named tenant's money.
                // Binding is an admin's act (the REST API's
                // bind_namespaces, or the tenant's creation).
                tracing::info!(namespace = %name, %tenant, "namespace labelled for a tenant but not bound in the ledger; waiting for an admin to bind it");
                continue;
            }
        }
        let purchases = store.purchases(&tenant).await?;
        let vcpu = purchases
            .iter()
            .any(|p| p.kind == PurchaseKind::VcpuHours && p.valid_at(now));
        let reach = desired(
            dedicated_units_at(&purchases, now),
            vcpu,
            unit.cpu.0,
            unit.memory.0,
            &pools,
        );
        if applied.get(&name) == Some(&reach) {
            continue;
        }
        let params = PatchParams::apply(MANAGER).force();
        Api::<ResourceQuota>::namespaced(client.clone(), &name)
            .patch(QUOTA, &params, &Patch::Apply(quota(&name, &tenant, reach)))
            .await?;
        Api::<NetworkPolicy>::namespaced(client.clone(), &name)
            .patch(POLICY, &params, &Patch::Apply(network_policy(&name, &tenant)))
            .await?;
        applied.insert(name, reach);
        done += 1;
    }
    Ok(done)
}

/// Reconciles every `period` until cancelled (a label, a purchase or a pool
/// change shows within one period).
pub async fn run(client: Client, store: Arc<dyn LedgerStore>, config: ShellConfig, period: Duration) {
    let mut applied = HashMap::new();
    loop {
        if let Err(e) = reconcile_all(&client, store.as_ref(), &config, &mut applied, Utc::now()).await {
            tracing::warn!(error = %e, "onboarding tenant namespaces failed; retrying");
            // Whatever was applied may have been changed meanwhile: apply all again.
            applied.clear();
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkcap_ledger::{Bytes, Millicores};

    fn pool(p: Pool, cores: i64) -> PoolCapacity {
        PoolCapacity {
            pool: p,
            nodes: 1,
            cpu: Millicores(cores * 1000),
            memory: Bytes(cores << 32),
            spark_units: cores / 4,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn reach_follows_what_was_bought() {
        let pools = [pool(Pool::Dedicated, 64), pool(Pool::Shared, 32), pool(Pool::Draft, 16)];
        let (c, m) = (4000, 16 << 30);
        assert_eq!(desired(0, false, c, m, &pools), Reach { cpu: 0, memory: 0 });
        assert_eq!(desired(2, false, c, m, &pools).cpu, 8000, "dedicated only: its units");
        assert_eq!(
            desired(0, true, c, m, &pools).cpu,
            112_000,
            "vCPU-hours: shared, draft and borrowable dedicated"
        );
        assert_eq!(
            desired(2, true, c, m, &pools).cpu,
            112_000,
            "units are part of the dedicated pool"
        );
    }

    #[test]
    fn the_policy_denies_by_default_and_allows_what_spark_needs() {
        let p: NetworkPolicy =
            serde_json::from_value(network_policy("acme-etl", &TenantId::new("acme").unwrap())).unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), vec!["Ingress", "Egress"]);
        assert_eq!(spec.egress.unwrap().len(), 3);
    }
}
