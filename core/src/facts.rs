//! What admission reads from the ledger, gathered in one place: the
//! webhook's sync loads it on a timer and on change notices, the simulator
//! at each step of virtual time.

use crate::view::{LedgerFacts, TenantFacts};
use chrono::{DateTime, Utc};
use sparkcap_ledger::lifecycle::JobStage;
use sparkcap_ledger::{LedgerStore, Tenant, TenantId};
use std::collections::{HashMap, HashSet};

/// Everything the ledger knows that admission reads, as of `now` (the
/// simulator passes its virtual time), schedules expanded over the slices
/// of length `slice` from `now`'s.
pub async fn load_ledger(
    store: &dyn LedgerStore,
    now: DateTime<Utc>,
    slice: chrono::TimeDelta,
) -> sparkcap_ledger::Result<LedgerFacts> {
    let mut facts = LedgerFacts::default();
    let mut promoted: HashMap<TenantId, HashSet<String>> = HashMap::new();
    for s in store.job_stats(None).await? {
        if s.state.stage == JobStage::Production {
            promoted.entry(s.tenant).or_default().insert(s.job);
        }
    }
    for tenant in store.tenants().await? {
        let id = tenant.id.clone();
        let promoted = promoted.remove(&id).unwrap_or_default();
        facts
            .tenants
            .insert(id, tenant_facts(store, tenant, now, promoted).await?);
    }
    facts.bindings = store
        .namespace_bindings()
        .await?
        .into_iter()
        .map(|b| (b.namespace, b.tenant))
        .collect();
    facts.pool_cpu = store.pools().await?.into_iter().map(|p| (p.pool, p.cpu.0)).collect();
    facts.schedules = store.schedules(None).await?;
    facts.planned = crate::view::PlannedSchedules::of(&facts.schedules, now, slice);
    Ok(facts)
}

/// One tenant's facts, as of now: what a change-feed notice reloads.
pub async fn load_tenant(store: &dyn LedgerStore, id: &TenantId) -> sparkcap_ledger::Result<Option<TenantFacts>> {
    let Some(tenant) = store.tenant(id).await? else {
        return Ok(None);
    };
    let promoted = store
        .job_stats(Some(id))
        .await?
        .into_iter()
        .filter(|s| s.state.stage == JobStage::Production)
        .map(|s| s.job)
        .collect();
    Ok(Some(tenant_facts(store, tenant, Utc::now(), promoted).await?))
}

/// A tenant's balance at `now` and purchases, with its promoted jobs.
async fn tenant_facts(
    store: &dyn LedgerStore,
    tenant: Tenant,
    now: DateTime<Utc>,
    promoted: HashSet<String>,
) -> sparkcap_ledger::Result<TenantFacts> {
    Ok(TenantFacts {
        balance: store.balance(&tenant.id, now).await?,
        purchases: store.purchases(&tenant.id).await?,
        promoted,
        tenant,
    })
}
