//! The reservation controller: ScheduledSparkApplications become time-slice
//! reservations in the ledger once they exist (R7.3). The webhook already
//! refused what did not fit when the object was written; between its check
//! and this write another schedule may have taken the slices (two creates
//! racing), so the ledger decides again under its pool lock and a loser is
//! told by an Event and a status condition, with the alternatives.
//! Reservations are released when the object is deleted, suspended or
//! changed (a changed schedule is reserved anew or, if it no longer fits,
//! released).

use crate::fenced::FencedStore;
use crate::shell::ShellConfig;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use sparkcap_core::operator::{SSA_SOURCE, planned_schedule, refusal_text};
use sparkcap_ledger::lifecycle::{Notice, NoticeKind};
use sparkcap_ledger::purchase::dedicated_units_at;
use sparkcap_ledger::slices::{Decision, StoredSchedule};
use sparkcap_ledger::{LedgerError, LedgerStore, Pool, TenantId};
use std::collections::HashSet;

/// The condition type written into a ScheduledSparkApplication's status.
pub const CONDITION: &str = "SlicesReserved";

/// The Spark Operator's ScheduledSparkApplication resource.
pub fn resource() -> ApiResource {
    ApiResource {
        group: "sparkoperator.k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "sparkoperator.k8s.io/v1beta2".into(),
        kind: "ScheduledSparkApplication".into(),
        plural: "scheduledsparkapplications".into(),
    }
}

/// What reconciling one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its runs hold their slices.
    Reserved,
    /// Already reserved exactly so: nothing written.
    Unchanged,
    /// Its runs do not fit (lost a race, or changed to a shape that does not fit).
    Refused(String),
    /// The object cannot be planned (bad annotation, no gang).
    Invalid(String),
    /// Not a tenant's, or suspended: holds nothing.
    Released,
}

fn source_of(obj: &DynamicObject) -> String {
    format!("{SSA_SOURCE}{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

async fn tenant_of(store: &dyn LedgerStore, namespace: &str) -> Result<Option<TenantId>, LedgerError> {
    Ok(store
        .namespace_bindings()
        .await?
        .into_iter()
        .find(|b| b.namespace == namespace)
        .map(|b| b.tenant))
}

/// Releases whatever `source` holds.
async fn release(store: &FencedStore, source: &str) -> Result<bool, LedgerError> {
    let mut any = false;
    for s in store
        .reads()
        .schedules(None)
        .await?
        .into_iter()
        .filter(|s| s.source == source)
    {
        any |= store.delete_schedule(&s.tenant, &s.job).await?;
    }
    Ok(any)
}

/// Brings the ledger in line with one object.
pub async fn reconcile(
    store: &FencedStore,
    config: &ShellConfig,
    obj: &DynamicObject,
    now: DateTime<Utc>,
) -> Result<Outcome, LedgerError> {
    let source = source_of(obj);
    let namespace = obj.namespace().unwrap_or_default();
    let suspended = obj.data.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let Some(tenant) = tenant_of(store.reads(), &namespace).await?.filter(|_| !suspended) else {
        release(store, &source).await?;
        return Ok(Outcome::Released);
    };
    let units = dedicated_units_at(&store.reads().purchases(&tenant).await?, now);
    let value = serde_json::to_value(obj).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
    let planned = match planned_schedule(&value, &tenant, Pool::production(units), now) {
        Ok(p) => p,
        Err(e) => {
            release(store, &source).await?;
            return Ok(Outcome::Invalid(e));
        }
    };
    let mine = store.reads().schedules(Some(&tenant)).await?;
    if mine
        .iter()
        .any(|s| s.job == planned.job && s.source == source && s.pool == planned.pool && s.spec == planned.spec)
    {
        return Ok(Outcome::Unchanged);
    }
    if let Some(other) = mine.iter().find(|s| s.job == planned.job && s.source != source) {
        return Ok(Outcome::Refused(format!(
            "job {} already has a schedule from {}; delete that one first or give this object another name",
            planned.job, other.source
        )));
    }
    match store.put_schedule(&planned, &config.slices, now).await {
        Ok(Decision::Accepted { .. }) => Ok(Outcome::Reserved),
        Ok(Decision::Refused {
            shortfall,
            alternatives,
        }) => {
            // What it held before described another schedule: let it go.
            release(store, &source).await?;
            let what = format!("ScheduledSparkApplication {}", obj.name_any());
            Ok(Outcome::Refused(refusal_text(
                &what,
                &planned,
                &shortfall,
                &alternatives,
            )))
        }
        Err(e) if e.is_bad_input() => {
            release(store, &source).await?;
            Ok(Outcome::Invalid(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Writes the outcome where the tenant looks: a status condition, and for a
/// refusal an Event and a notice.
async fn report(
    client: &Client,
    store: &FencedStore,
    config: &ShellConfig,
    obj: &DynamicObject,
    outcome: &Outcome,
    now: DateTime<Utc>,
) {
    let (status, reason, message) = match outcome {
        Outcome::Unchanged => return,
        Outcome::Reserved => (
            "True",
            "Reserved",
            "every run in the next 30 days holds its time slices".to_owned(),
        ),
        Outcome::Refused(m) => ("False", "SlicesUnavailable", m.clone()),
        Outcome::Invalid(m) => ("False", "InvalidSchedule", m.clone()),
        Outcome::Released => (
            "False",
            "Released",
            "suspended or not in a tenant's namespace: no slices held".to_owned(),
        ),
    };
    // Our own status write comes back as a watch event: report a result once.
    let current = obj
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| c["type"] == CONDITION).map(|c| {
                (
                    c["status"].as_str() == Some(status),
                    c["reason"].as_str() == Some(reason),
                    c["message"].as_str() == Some(message.as_str()),
                )
            })
        });
    if current == Some((true, true, true)) {
        return;
    }
    config.metrics.reservations.with_label_values(&[reason]).inc();
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource());
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"conditions": [{
        "type": CONDITION, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": stamp, "observedGeneration": obj.metadata.generation,
    }]}});
    if let Err(e) = api
        .patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(object = %obj.name_any(), error = %e, "could not write the reservation condition");
    }
    if status == "False" && reason != "Released" {
        let involved = json!({
            "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "ScheduledSparkApplication",
            "name": obj.name_any(), "namespace": ns, "uid": obj.uid(),
        });
        if let Err(e) =
            crate::shell::record_event(client, &ns, involved, &obj.name_any(), reason, &message, "Warning", now).await
        {
            tracing::warn!(error = %e, "could not record the reservation Event");
        }
        if let Ok(Some(tenant)) = tenant_of(store.reads(), &ns).await {
            let mut n = Notice::new(
                &tenant,
                Some(&obj.name_any()),
                NoticeKind::ScheduleRefused,
                now,
                message.clone(),
            );
            n.dedupe_key = Some(format!(
                "schedule_refused/{}/{}",
                source_of(obj),
                obj.resource_version().unwrap_or_default()
            ));
            if let Err(e) = store.add_notice(&n).await {
                tracing::warn!(error = %e, "could not store the reservation notice");
            }
        }
    }
}

/// Watches ScheduledSparkApplications and keeps their reservations, until
/// cancelled or deposed (the error says so). A cluster without the Spark
/// Operator's CRD is retried quietly.
pub async fn run(client: Client, store: FencedStore, config: ShellConfig) -> Result<(), LedgerError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: HashSet<String> = HashSet::new();
    let mut listing: HashSet<String> = HashSet::new();
    // The watcher retries forever: this ends only when deposed.
    while let Some(ev) = events.next().await {
        sparkcap_ledger::faults::crash_point("scheduler.reservations.event");
        let now = Utc::now();
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "watching ScheduledSparkApplications failed; retrying");
                continue;
            }
        };
        match ev {
            Event::Init => listing.clear(),
            Event::InitApply(obj) | Event::Apply(obj) => {
                let source = source_of(&obj);
                listing.insert(source.clone());
                seen.insert(source);
                match reconcile(&store, &config, &obj, now).await {
                    Ok(outcome) => report(&client, &store, &config, &obj, &outcome, now).await,
                    Err(e) if e.is_deposed() => return Err(e),
                    Err(e) => tracing::warn!(object = %obj.name_any(), error = %e, "reconciling a schedule failed"),
                }
            }
            Event::Delete(obj) => {
                let source = source_of(&obj);
                seen.remove(&source);
                match release(&store, &source).await {
                    Err(e) if e.is_deposed() => return Err(e),
                    Err(e) => tracing::warn!(%source, error = %e, "releasing a schedule failed"),
                    Ok(_) => {}
                }
            }
            Event::InitDone => {
                // Objects deleted while nobody watched still hold slices.
                seen = std::mem::take(&mut listing);
                match store.reads().schedules(None).await {
                    Ok(all) => {
                        let stale: Vec<StoredSchedule> = all
                            .into_iter()
                            .filter(|s| s.source.starts_with(SSA_SOURCE) && !seen.contains(&s.source))
                            .collect();
                        for s in stale {
                            match store.delete_schedule(&s.tenant, &s.job).await {
                                Err(e) if e.is_deposed() => return Err(e),
                                Err(e) => {
                                    tracing::warn!(source = %s.source, error = %e, "releasing a stale schedule failed")
                                }
                                Ok(_) => {}
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "listing schedules failed"),
                }
            }
        }
    }
    Ok(())
}
