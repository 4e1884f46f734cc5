//! Time-slice planning speed: 500 job schedules over 30 days of 15-minute
//! slices (R14.4: all scheduled jobs validated within 10 s; our target
//! 200 ms). Measures the full validation (expand every schedule, sum per
//! slice, check the pool and each tenant's cap) and one incremental check
//! with alternatives for a schedule that does not fit.
//!
//!   cargo bench -p sparkcap-ledger --bench slices

use chrono::{TimeDelta, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use sparkcap_ledger::slices::*;
use std::hint::black_box;

fn schedules(n: usize) -> Vec<(usize, JobSchedule)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n)
        .map(|i| {
            let text = match i % 5 {
                0 => format!("{} {} * * *", rng.random_range(0..4) * 15, rng.random_range(0..24)),
                1 => format!("{} * * * *", rng.random_range(0..60)),
                2 => "*/15 * * * *".to_owned(),
                3 => format!("{} {} * * 1-5", rng.random_range(0..60), rng.random_range(0..24)),
                _ => format!("@every {}m", rng.random_range(2..12) * 15),
            };
            let job = JobSchedule {
                schedule: text,
                offset: Offset(0),
                duration: TimeDelta::minutes(rng.random_range(5..90)),
                cores: rng.random_range(1..9) * 1000,
            };
            (i % 100, job)
        })
        .collect()
}

/// Validates everything: per-tenant and pool totals, each within limits.
fn validate_all(h: &Horizon, all: &[(usize, JobSchedule)], limits: Limits) -> (i64, usize) {
    let mut pool = Demand::zero(h);
    let mut tenants = vec![Demand::zero(h); 100];
    for (t, j) in all {
        let d = j.plan().expect("valid").demand(h, TimeDelta::zero());
        pool.add(&d);
        tenants[*t].add(&d);
    }
    let over = tenants.iter().filter(|d| d.peak() > limits.tenant).count();
    (pool.peak(), over)
}

fn bench(c: &mut Criterion) {
    let h = Horizon::new(Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap(), DEFAULT_SLICE, 30).unwrap();
    let all = schedules(500);
    let limits = Limits {
        pool: 2_000_000,
        tenant: 200_000,
    };
    let (peak, over) = validate_all(&h, &all, limits);
    println!(
        "500 schedules × 30 days ({} slices): pool peak {} cores, {over} tenants over their cap",
        h.slices,
        peak / 1000
    );
    c.bench_function("validate 500 schedules x 30 days", |b| {
        b.iter(|| black_box(validate_all(&h, &all, limits)))
    });
    // One more schedule against the other 499, refused, with alternatives.
    let mut pool = Demand::zero(&h);
    for (_, j) in &all[1..] {
        pool.add(&j.plan().unwrap().demand(&h, TimeDelta::zero()));
    }
    // Room for 4 more cores at 02:00 on the first day: an 8-core job there is refused.
    let tight = Limits {
        pool: pool.0[8..12].iter().copied().min().unwrap_or(0) + 4000,
        tenant: i64::MAX,
    };
    let job = JobSchedule {
        schedule: "0 2 * * *".into(),
        offset: Offset(0),
        duration: TimeDelta::minutes(60),
        cores: 8000,
    };
    {
        let p = job.plan().unwrap();
        let d = p.demand(&h, TimeDelta::zero());
        let z = Demand::zero(&h);
        let refused = fits(&h, &d, &pool, &z, tight).is_err();
        let alts = alternatives(&h, &job, &p, &pool, &z, tight, MAX_ALTERNATIVES);
        println!(
            "one 8-core schedule against 499: refused {refused}, alternatives {:?}",
            alts.iter().map(|a| a.shift.num_minutes()).collect::<Vec<_>>()
        );
    }
    c.bench_function("check one schedule + 5 alternatives", |b| {
        b.iter(|| {
            let p = job.plan().unwrap();
            let d = p.demand(&h, TimeDelta::zero());
            let tenant = Demand::zero(&h);
            match fits(&h, &d, &pool, &tenant, tight) {
                Ok(x) => black_box((x, Vec::new())),
                Err(_) => black_box((0, alternatives(&h, &job, &p, &pool, &tenant, tight, MAX_ALTERNATIVES))),
            }
        })
    });
    // The costliest schedule a tenant can ask for: a run every minute, each
    // a day long, at the most cores, against the 499 others, refused (so
    // the alternatives are searched too). Its cost is what one review of a
    // hostile ScheduledSparkApplication (or one REST dry run) takes.
    let worst = JobSchedule {
        schedule: "* * * * *".into(),
        offset: Offset(0),
        duration: TimeDelta::hours(24),
        cores: MAX_SCHEDULE_CORES,
    };
    c.bench_function("check the costliest schedule + alternatives", |b| {
        b.iter(|| {
            let p = worst.plan().unwrap();
            let d = p.demand(&h, TimeDelta::zero());
            let tenant = Demand::zero(&h);
            match fits(&h, &d, &pool, &tenant, limits) {
                Ok(x) => black_box((x, Vec::new())),
                Err(_) => black_box((
                    0,
                    alternatives(&h, &worst, &p, &pool, &tenant, limits, MAX_ALTERNATIVES),
                )),
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
