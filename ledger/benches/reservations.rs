//! Reservation write throughput against a real PostgreSQL (printed figures):
//! 500 schedules written one by one as the REST API and the reservation
//! controller write them (each decided against every other schedule of its
//! pool, under the pool's lock), then the same with 8 concurrent writers.
//!
//!   DATABASE_URL=postgres://… cargo bench -p sparkcap-ledger --bench reservations

use chrono::{TimeDelta, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use sparkcap_ledger::slices::{Decision, JobSchedule, Offset, SlicePolicy, StoredSchedule};
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANTS: usize = 100;
const SCHEDULES: usize = 500;

fn schedule(i: usize, rng: &mut rand::rngs::StdRng) -> StoredSchedule {
    let text = match i % 4 {
        0 => format!("{} {} * * *", rng.random_range(0..4) * 15, rng.random_range(0..24)),
        1 => format!("{} * * * *", rng.random_range(0..60)),
        2 => format!("{} {} * * 1-5", rng.random_range(0..60), rng.random_range(0..24)),
        _ => format!("@every {}m", rng.random_range(2..12) * 15),
    };
    StoredSchedule {
        tenant: TenantId::new(format!("t{:03}", i % TENANTS)).unwrap(),
        job: format!("job-{i}"),
        pool: Pool::Shared,
        spec: JobSchedule {
            schedule: text,
            offset: Offset(0),
            duration: TimeDelta::minutes(rng.random_range(5..60)),
            cores: rng.random_range(1..5) * 1000,
        },
        source: "api".into(),
        updated_at: Utc::now(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let store = Arc::new(db.store().await?);
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
    for t in 0..TENANTS {
        store
            .create_tenant(NewTenant::new(TenantId::new(format!("t{t:03}"))?, String::new()), now)
            .await?;
    }
    let epoch = store.claim_epoch("bench").await?;
    let nodes: Vec<NodeAllocatable> = (0..125)
        .map(|i| NodeAllocatable {
            name: format!("shared-{i}"),
            pool: Pool::Shared,
            cpu: Millicores(32_000),
            memory: Bytes(128 << 30),
            ready: true,
        })
        .collect();
    for c in PoolCapacity::from_nodes(SparkUnitSize::default(), &nodes, now) {
        store.set_pool_capacity(epoch, &c).await?;
    }
    let policy = SlicePolicy::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let all: Vec<StoredSchedule> = (0..SCHEDULES).map(|i| schedule(i, &mut rng)).collect();

    // Sequential: latency per write as the pool fills.
    let mut lat = Vec::with_capacity(SCHEDULES);
    let mut accepted = 0;
    let t0 = Instant::now();
    for s in &all {
        let t = Instant::now();
        if matches!(
            store.put_schedule(None, s, &policy, now, false).await?,
            Decision::Accepted { .. }
        ) {
            accepted += 1;
        }
        lat.push(t.elapsed());
    }
    let seq = t0.elapsed();
    let first: Vec<Duration> = lat[..50].to_vec();
    let mut last: Vec<Duration> = lat[SCHEDULES - 50..].to_vec();
    last.sort();
    lat.sort();
    println!(
        "sequential: {SCHEDULES} writes ({accepted} accepted) in {:.2} s = {:.0} writes/s; \
         latency p50 {:.1} ms, p99 {:.1} ms; with 450+ schedules in the pool p50 {:.1} ms (first 50: {:.1} ms)",
        seq.as_secs_f64(),
        SCHEDULES as f64 / seq.as_secs_f64(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        pct(&last, 0.5).as_secs_f64() * 1e3,
        {
            let mut f = first;
            f.sort();
            pct(&f, 0.5).as_secs_f64() * 1e3
        }
    );

    // Concurrent: 8 writers replacing the same 500 schedules (each a new shape).
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let again: Vec<StoredSchedule> = (0..SCHEDULES).map(|i| schedule(i, &mut rng)).collect();
    let again = Arc::new(again);
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (store, again) = (store.clone(), again.clone());
        tasks.spawn(async move {
            for s in again.iter().skip(w).step_by(8) {
                store.put_schedule(None, s, &SlicePolicy::default(), now, false).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let conc = t0.elapsed();
    println!(
        "8 concurrent writers: {SCHEDULES} writes in {:.2} s = {:.0} writes/s (one pool: serialized by its lock)",
        conc.as_secs_f64(),
        SCHEDULES as f64 / conc.as_secs_f64()
    );
    store.pool().close().await;
    db.drop_db().await?;
    Ok(())
}
