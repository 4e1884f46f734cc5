//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it:
//! acquire when absent or expired, renew while held, stand by otherwise. A
//! Lease alone cannot guarantee a single actor (client-go says so), so the
//! leader also claims the ledger's fencing epoch: a deposed leader's writes
//! are refused even if it has not noticed yet.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

/// Lease timing (defaults as kube-scheduler's: 15 s lease, 10 s renew deadline, 2 s retry).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: TimeDelta,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: TimeDelta,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Defaults for `identity`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: TimeDelta::seconds(15),
            renew_deadline: TimeDelta::seconds(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do about the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live lease.
    Standby,
}

/// Decides from the Lease's holder and renew time.
pub fn step(
    holder: Option<&str>,
    renewed: Option<DateTime<Utc>>,
    duration: TimeDelta,
    me: &str,
    now: DateTime<Utc>,
) -> Step {
    match (holder, renewed) {
        (Some(h), _) if h == me => Step::Renew,
        (Some(h), Some(r)) if !h.is_empty() && r + duration > now => Step::Standby,
        _ => Step::Acquire,
    }
}

fn micro(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn micro_time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// One attempt: returns whether we hold the lease afterwards. Every write
/// carries the resourceVersion it read, so two candidates cannot both win.
pub async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaseConfig, now: DateTime<Utc>) -> kube::Result<bool> {
    let current = api.get_opt(&cfg.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let holder = spec.and_then(|s| s.holder_identity.as_deref());
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(micro_time);
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .map_or(cfg.lease_duration, |s| TimeDelta::seconds(s.into()));
    let decision = step(holder, renewed, duration, &cfg.identity, now);
    if decision == Step::Standby {
        return Ok(false);
    }
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let acquired = match decision {
        Step::Renew => spec
            .and_then(|s| s.acquire_time.as_ref())
            .map(micro_time)
            .unwrap_or(now),
        _ => now,
    };
    let body: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": cfg.name, "namespace": cfg.namespace,
            "resourceVersion": current.as_ref().and_then(|l| l.metadata.resource_version.clone()),
        },
        "spec": {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": cfg.lease_duration.num_seconds(),
            "acquireTime": micro(acquired),
            "renewTime": micro(now),
            "leaseTransitions": if decision == Step::Acquire && holder.is_some() { transitions + 1 } else { transitions },
        }
    }))
    .expect("a valid Lease");
    let result = match current {
        None => api.create(&PostParams::default(), &body).await,
        Some(_) => api.replace(&cfg.name, &PostParams::default(), &body).await,
    };
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote first: they won this round.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if we hold it (on a clean shutdown), so that a standby
/// takes over at its next retry instead of waiting for expiry.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> kube::Result<()> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease
        .spec
        .as_mut()
        .filter(|s| s.holder_identity.as_deref() == Some(cfg.identity.as_str()))
    else {
        return Ok(());
    };
    spec.holder_identity = Some(String::new());
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Keeps trying; `leading` says whether we lead. Once a leader cannot renew
/// within the renew deadline it reports `false` at once and keeps competing.
pub async fn elect(client: Client, cfg: LeaseConfig, leading: tokio::sync::watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renew: Option<DateTime<Utc>> = None;
    loop {
        let now = Utc::now();
        match try_acquire_or_renew(&api, &cfg, now).await {
            Ok(true) => {
                last_renew = Some(now);
                leading.send_replace(true);
            }
            Ok(false) => {
                last_renew = None;
                leading.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease request failed");
                if last_renew.is_none_or(|t| now - t > cfg.renew_deadline) {
                    leading.send_replace(false);
                }
            }
        }
        if leading.is_closed() {
            return;
        }
        // Leaders renew, candidates retry, every retry period (as client-go).
        tokio::time::sleep(cfg.retry_period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_renew_standby() {
        let now = Utc::now();
        let d = TimeDelta::seconds(15);
        assert_eq!(step(None, None, d, "a", now), Step::Acquire);
        assert_eq!(step(Some("a"), Some(now), d, "a", now), Step::Renew);
        assert_eq!(
            step(Some("b"), Some(now - TimeDelta::seconds(5)), d, "a", now),
            Step::Standby
        );
        assert_eq!(
            step(Some("b"), Some(now - TimeDelta::seconds(16)), d, "a", now),
            Step::Acquire
        );
        assert_eq!(step(Some(""), Some(now), d, "a", now), Step::Acquire, "released");
    }
}
