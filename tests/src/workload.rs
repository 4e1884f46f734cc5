//! Deterministic pod lifetimes for metering tests: the same seed gives the
//! same pods, so a test can compute the exact analytic charge of what a
//! separate (and repeatedly killed) process accrued.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sparkcap_ledger::{Millicores, PodUsage, Pool, TenantId};
use std::collections::BTreeMap;

/// Start of the workload's virtual day.
pub fn epoch_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).single().expect("valid date")
}

/// One pod's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLife {
    /// What the ledger is told.
    pub pod: PodUsage,
    /// Seconds after [`epoch_start`] it ends.
    pub end: i64,
}

impl PodLife {
    /// Its exact usage in mc·s.
    pub fn usage(&self) -> i64 {
        self.pod.cpu.0 * (self.end - (self.pod.started_at - epoch_start()).num_seconds())
    }
}

/// The tenants the workload uses.
pub fn tenants(count: usize) -> Vec<TenantId> {
    (0..count)
        .map(|i| TenantId::new(format!("crash-{i}")).expect("valid id"))
        .collect()
}

/// `n` pods spread over 10 tenants, starting in the first hour and living
/// one minute to two hours; one in ten is opportunistic.
pub fn pod_lives(seed: u64, n: usize) -> Vec<PodLife> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tenants = tenants(10);
    (0..n)
        .map(|i| {
            let start = rng.random_range(0..3600);
            let end = start + rng.random_range(60..7200);
            let tenant = tenants[rng.random_range(0..tenants.len())].clone();
            PodLife {
                pod: PodUsage {
                    uid: format!("uid-{seed}-{i}"),
                    namespace: format!("ns-{tenant}"),
                    name: format!("app-{}-exec-{i}", i / 8),
                    app_id: Some(format!("spark-{seed}-{}", i / 8)),
                    job: Some(format!("job-{}", i % 17)),
                    role: Some(if i % 8 == 0 { "driver" } else { "executor" }.into()),
                    pool: if i % 3 == 0 { Pool::Dedicated } else { Pool::Shared },
                    cpu: Millicores(rng.random_range(100..8000)),
                    opportunistic: i % 10 == 7,
                    started_at: epoch_start() + TimeDelta::seconds(start),
                    tenant,
                },
                end,
            }
        })
        .collect()
}

/// Exact (charged, opportunistic) mc·s per tenant.
pub fn expected_usage(lives: &[PodLife]) -> BTreeMap<TenantId, (i64, i64)> {
    let mut out: BTreeMap<TenantId, (i64, i64)> = BTreeMap::new();
    for l in lives {
        let e = out.entry(l.pod.tenant.clone()).or_default();
        if l.pod.opportunistic {
            e.1 += l.usage();
        } else {
            e.0 += l.usage();
        }
    }
    out
}
