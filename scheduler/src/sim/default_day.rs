//! The built-in trace: one day of a mid-sized platform. 100 tenants — a
//! quarter buy dedicated units for office-hours pipelines, the rest prepaid
//! vCPU-hours for ingestion around the clock (a few of them bought too little
//! and run dry mid-day) — over dedicated, shared and draft nodes. Sized so
//! that more than 500 Spark applications run at once at the peak.

use crate::sim::trace::{
    Arrivals, Cpu, Dur, DurationDist, ExecutorSpec, JobSpec, Memory, NodeGroup, PodShape, Pools, Profile, PurchaseSpec,
    ScheduleSpec, Settings, TenantSpec, Trace, UnitSpec, default_start,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sparkcap_ledger::{Period, PurchaseKind, TenantId};

const GIB: i64 = 1 << 30;
const INDUSTRIES: [&str; 20] = [
    "retail",
    "logistics",
    "media",
    "fintech",
    "health",
    "energy",
    "travel",
    "gaming",
    "telco",
    "insure",
    "ads",
    "mobility",
    "food",
    "edu",
    "saas",
    "bank",
    "pharma",
    "auto",
    "farm",
    "music",
];

fn node(count: i64, cores: i64, gib: i64) -> NodeGroup {
    NodeGroup {
        count,
        cpu: Cpu(cores * 1000),
        memory: Memory(gib * GIB),
        pods: 110,
    }
}

/// Dedicated units are a quarter of this pool's Spark Units.
const DEDICATED_NODES: i64 = 96;

/// The default day for `seed`.
pub fn trace(seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let pools = Pools {
        // 32-core / 128 GiB nodes hold 8 Spark Units each.
        dedicated: vec![node(DEDICATED_NODES, 32, 128)],
        // Tight on purpose: at the peaks shared executors wait or borrow idle dedicated capacity.
        shared: vec![node(32, 32, 128), node(8, 16, 64)],
        draft: vec![node(16, 16, 64)],
    };
    let dedicated_su = DEDICATED_NODES * 8;
    let mut tenants = Vec::new();
    let mut dedicated_left = dedicated_su;
    for i in 0..100 {
        let id = TenantId::new(format!("{}-{:02}", INDUSTRIES[i % 20], i / 20 + 1)).expect("a valid id");
        let dedicated = i % 4 == 0;
        let mut purchases = Vec::new();
        let mut jobs = Vec::new();
        let n_jobs = rng.random_range(3..=6);
        if dedicated {
            // 25 tenants share the dedicated pool: 16–40 units each, within its size.
            let units = rng.random_range(16..=40).min(dedicated_left);
            dedicated_left -= units;
            purchases.push(PurchaseSpec {
                kind: PurchaseKind::DedicatedUnits,
                quantity: units,
                period: Period::Monthly,
                at: Dur(0),
            });
            // Office-hours pipelines sized to fill their units at the peak.
            let cores = units * 4;
            for j in 0..n_jobs {
                jobs.push(job(&mut rng, j, Profile::Office, cores / n_jobs));
            }
        } else {
            let profile = [Profile::Night, Profile::Office, Profile::Flat][i % 3];
            let mut cores_hours = 0.0;
            for j in 0..n_jobs {
                let (job, expected) = shared_job(&mut rng, j, profile);
                cores_hours += expected;
                jobs.push(job);
            }
            // Most buy 30–60 % more than they use; every twelfth buys half.
            let factor = if i % 12 == 5 { 0.5 } else { rng.random_range(1.3..1.6) };
            purchases.push(PurchaseSpec {
                kind: PurchaseKind::VcpuHours,
                quantity: ((cores_hours * factor) as i64).max(10),
                period: Period::Daily,
                at: Dur(0),
            });
        }
        tenants.push(TenantSpec { id, purchases, jobs });
    }
    Trace {
        start: default_start(),
        duration: Dur(86_400),
        spark_unit: UnitSpec::default(),
        settings: Settings::default(),
        pools,
        tenants,
        events: Vec::new(),
    }
}

fn shape(cores: i64, gib: i64) -> PodShape {
    PodShape {
        cpu: Cpu(cores * 1000),
        memory: Memory(gib * GIB),
    }
}

/// A job; one in ten is new (its first runs go to the draft pool).
fn base(rng: &mut StdRng, j: i64, executors: i64, executor_cores: i64, median_min: i64) -> JobSpec {
    let kinds = ["ingest", "enrich", "compact", "export", "dedupe", "aggregate"];
    JobSpec {
        name: format!("{}-{j}", kinds[j as usize % kinds.len()]),
        schedule: None,
        arrivals: None,
        driver: shape(1, 4),
        executors: Some(ExecutorSpec {
            count: executors,
            // A third scale out with dynamic allocation once running.
            max: (j % 3 == 1).then_some(executors * 2),
            cpu: Cpu(executor_cores * 1000),
            memory: Memory(executor_cores * 3 * GIB),
        }),
        duration: DurationDist::LogNormal {
            median: Dur(median_min * 60),
            p95: Dur(median_min * 60 * 5 / 2),
        },
        sla: Some(Dur(median_min * 60 * 4)),
        previous_runs: if rng.random_ratio(1, 10) { 0 } else { 30 },
    }
}

/// A dedicated tenant's job: office-hours arrivals sized so that about
/// `cores` run at the peak.
fn job(rng: &mut StdRng, j: i64, profile: Profile, cores: i64) -> JobSpec {
    let executors = rng.random_range(2..=6);
    let executor_cores = rng.random_range(1..=2);
    let median_min = rng.random_range(10..=30);
    let per_run = 1 + executors * executor_cores;
    // Peak concurrency = rate × mean duration (a log-normal's mean is above its median).
    let mean_hours = median_min as f64 * 1.25 / 60.0;
    let per_hour = (cores as f64 / per_run as f64 / mean_hours).max(0.5);
    JobSpec {
        arrivals: Some(Arrivals { per_hour, profile }),
        ..base(rng, j, executors, executor_cores, median_min)
    }
}

/// A vCPU-hour tenant's job and the core-hours it is expected to use in a day.
fn shared_job(rng: &mut StdRng, j: i64, profile: Profile) -> (JobSpec, f64) {
    let executors = rng.random_range(1..=4);
    let executor_cores = rng.random_range(1..=2);
    let median_min = rng.random_range(8..=30);
    let per_run = (1 + executors * executor_cores) as f64;
    let mean_hours = median_min as f64 * 1.25 / 60.0;
    let mut spec = base(rng, j, executors, executor_cores, median_min);
    let runs_per_day = if rng.random_ratio(1, 2) {
        // A cron pipeline.
        let (cron, runs) = match rng.random_range(0..3) {
            0 => (format!("{}/15 * * * *", rng.random_range(0..15)), 96.0),
            1 => (format!("{} * * * *", rng.random_range(0..60)), 24.0),
            _ => (format!("{} */2 * * *", rng.random_range(0..60)), 12.0),
        };
        spec.schedule = Some(ScheduleSpec {
            schedule: cron.parse().expect("a valid cron"),
            text: cron,
        });
        runs
    } else {
        let per_hour = rng.random_range(1.0..5.0);
        spec.arrivals = Some(Arrivals { per_hour, profile });
        per_hour * 24.0 * if profile == Profile::Flat { 1.0 } else { 0.5 }
    };
    (spec, runs_per_day * per_run * mean_hours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_day_is_valid_and_reproducible() {
        let a = trace(7);
        a.check().unwrap();
        assert_eq!(a.tenants.len(), 100);
        let dedicated: i64 = a
            .tenants
            .iter()
            .flat_map(|t| &t.purchases)
            .filter(|p| p.kind == PurchaseKind::DedicatedUnits)
            .map(|p| p.quantity)
            .sum();
        assert!(dedicated <= DEDICATED_NODES * 8 && dedicated > 0);
        let b = trace(7);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{:?}", trace(8)));
    }
}
