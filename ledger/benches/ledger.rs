//! Ledger load benchmark, printed figures (run against a real PostgreSQL):
//!
//!   DATABASE_URL=postgres://… cargo bench -p sparkcap-ledger --bench ledger [-- --quick]
//!
//! 1. Accrual throughput of the production batched path vs a raw batched
//!    INSERT of the same journal rows, alternated round by round (which goes
//!    first alternates too, so drift in the machine cancels); the median of
//!    the per-round ratios, with its spread, and the targets (accrual at
//!    least 0.5x the raw INSERT and 100,000 rows/s).
//! 2. With 90 days of history for 100 tenants × 500 jobs: balance latency
//!    p50/p99, usage-history and job-run query latency, and their plans.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use sparkcap_ledger::store::Granularity;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::*;
use std::time::{Duration, Instant};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let db = TestDatabase::create().await?;
    let store = db.store().await?;
    let result = run(&store, quick).await;
    store.pool().close().await;
    db.drop_db().await?;
    result
}

async fn run(store: &PgStore, quick: bool) -> anyhow::Result<()> {
    let tenants: Vec<TenantId> = (0..100).map(|i| TenantId::new(format!("t{i:03}")).unwrap()).collect();
    let start = now() - TimeDelta::days(90);
    for t in &tenants {
        store
            .create_tenant(NewTenant::new(t.clone(), String::new()), start)
            .await?;
        for m in 0..4 {
            store
                .record_purchase(
                    &PurchaseRequest {
                        tenant: t.clone(),
                        kind: PurchaseKind::VcpuHours,
                        quantity: 1_000_000,
                        period: Period::Monthly,
                        valid_from: Some(start + TimeDelta::days(30 * m)),
                        valid_until: None,
                        idempotency_key: format!("{t}-{m}"),
                    },
                    start,
                )
                .await?;
        }
    }
    let epoch = store.claim_epoch("bench").await?;
    accrual_throughput(store, epoch, &tenants, quick).await?;
    if std::env::var_os("ACCRUAL_ONLY").is_some() {
        return Ok(());
    }
    history_queries(store, &tenants, quick).await?;
    Ok(())
}

async fn accrual_throughput(
    store: &PgStore,
    epoch: store::Epoch,
    tenants: &[TenantId],
    quick: bool,
) -> anyhow::Result<()> {
    let pods_n = if quick { 5_000 } else { 20_000 };
    let rounds = if quick { 9 } else { 21 };
    let batch = 5_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let base = now();
    let pods: Vec<PodUsage> = (0..pods_n)
        .map(|i| PodUsage {
            uid: format!("bench-{i}"),
            tenant: tenants[i % tenants.len()].clone(),
            namespace: "ns".into(),
            name: format!("p{i}"),
            app_id: Some(format!("app-{}", i / 10)),
            job: Some(format!("job-{}", i % 500)),
            role: Some("executor".into()),
            pool: Pool::Shared,
            cpu: Millicores(rng.random_range(500..8000)),
            opportunistic: false,
            started_at: base,
        })
        .collect();
    sqlx::query("CREATE TABLE raw_intervals (LIKE usage_intervals INCLUDING ALL)")
        .execute(store.pool())
        .await?;
    // First round creates the checkpoints; not timed.
    let first: Vec<AccrualRequest> = pods
        .iter()
        .map(|p| AccrualRequest {
            pod: p.clone(),
            until: base + TimeDelta::seconds(30),
            finished: false,
            outcome: None,
            run: None,
        })
        .collect();
    for c in first.chunks(batch) {
        store.accrue(epoch, c).await?;
    }
    let (mut ours, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=rounds {
        let until = base + TimeDelta::seconds(30 * (r + 1));
        let from = base + TimeDelta::seconds(30 * r);
        let reqs: Vec<AccrualRequest> = pods
            .iter()
            .map(|p| AccrualRequest {
                pod: p.clone(),
                until,
                finished: false,
                outcome: None,
                run: None,
            })
            .collect();
        let accrue = async {
            let t = Instant::now();
            for c in reqs.chunks(batch) {
                store.accrue(epoch, c).await?;
            }
            anyhow::Ok(pods_n as f64 / t.elapsed().as_secs_f64())
        };
        let insert = async {
            let t = Instant::now();
            for c in pods.chunks(batch) {
                let mut tx = store.pool().begin().await?;
                sqlx::query(
                    "INSERT INTO raw_intervals (pod_uid, tenant_id, pool, from_ts, to_ts, cpu_mc, charged_mcs, \
                     opportunistic_mcs, epoch) SELECT u.*, 1 FROM UNNEST($1::text[], $2::text[], $3::text[], \
                     $4::timestamptz[], $5::timestamptz[], $6::bigint[], $7::bigint[], $8::bigint[]) AS u",
                )
                .bind(c.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>())
                .bind(c.iter().map(|p| p.tenant.as_str()).collect::<Vec<_>>())
                .bind(c.iter().map(|p| p.pool.as_str()).collect::<Vec<_>>())
                .bind(vec![from; c.len()])
                .bind(vec![until; c.len()])
                .bind(c.iter().map(|p| p.cpu.0).collect::<Vec<_>>())
                .bind(c.iter().map(|p| p.cpu.0 * 30).collect::<Vec<_>>())
                .bind(vec![0i64; c.len()])
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            anyhow::Ok(pods_n as f64 / t.elapsed().as_secs_f64())
        };
        let (o, w) = if r % 2 == 0 {
            let o = accrue.await?;
            (o, insert.await?)
        } else {
            let w = insert.await?;
            (accrue.await?, w)
        };
        ours.push(o);
        raw.push(w);
        ratios.push(o / w);
    }
    let (o, r) = (median(&mut ours), median(&mut raw));
    let ratio = median(&mut ratios);
    let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!("accrual throughput ({pods_n} pods, batches of {batch}, {rounds} alternated rounds, median):");
    println!(
        "  sparkcap batched accrual : {o:>10.0} rows/s  (rounds {:.0}..{:.0})",
        ours[0],
        ours[ours.len() - 1]
    );
    println!(
        "  raw batched INSERT       : {r:>10.0} rows/s  (rounds {:.0}..{:.0})",
        raw[0],
        raw[raw.len() - 1]
    );
    println!(
        "  ratio, median of rounds  : {ratio:>10.2}x  (quartiles {:.2}..{:.2}, all {:.2}..{:.2})",
        q(&ratios, 0.25),
        q(&ratios, 0.75),
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "  targets                  : ratio >= 0.50 {}, accrual >= 100000 rows/s {}",
        if ratio >= 0.5 { "PASS" } else { "FAIL" },
        if o >= 100_000.0 { "PASS" } else { "FAIL" }
    );
    let audit = store.audit().await?;
    anyhow::ensure!(audit.is_clean(), "audit after accrual bench: {:?}", audit.violations);
    Ok(())
}

async fn history_queries(store: &PgStore, tenants: &[TenantId], quick: bool) -> anyhow::Result<()> {
    let jobs = if quick { 50 } else { 500 };
    let t = Instant::now();
    // One run a day per job for 90 days, a driver and an executor per run,
    // one tenant per statement (the store's 30 s statement timeout is lifted
    // for these bulk loads only).
    for t in 0..100i32 {
        let mut tx = store.pool().begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO pod_usage (pod_uid, tenant_id, namespace, pod_name, app_id, job, role, pool, cpu_mc, \
             opportunistic, started_at, charged_until, finished_at, charged_mcs, opportunistic_mcs, epoch) \
             SELECT format('h-%s-%s-%s-%s', $3, j, d, r), format('t%s', lpad($3::text, 3, '0')), 'ns', 'p', \
             format('app-%s-%s-%s', $3, j, d), format('job-%s', j), CASE r WHEN 0 THEN 'driver' ELSE 'executor' END, \
             'shared', 1000, false, ts, ts + interval '20 minutes', ts + interval '20 minutes', 1200000, 0, 1 \
             FROM generate_series(0, $1 - 1) j, generate_series(1, 90) d, generate_series(0, 1) r, \
             LATERAL (SELECT $2::timestamptz - make_interval(days => d) + make_interval(mins => (j * 7) % 1440)) AS x(ts)",
        )
        .bind(jobs as i32)
        .bind(now())
        .bind(t)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    sqlx::query(
        "INSERT INTO usage_hourly (tenant_id, hour, pool, charged_mcs, opportunistic_mcs) \
         SELECT format('t%s', lpad(t::text, 3, '0')), h, p, 3600000, 0 FROM generate_series(0, 99) t, \
         generate_series($1::timestamptz - interval '90 days', $1::timestamptz, interval '1 hour') h, \
         unnest(ARRAY['shared', 'dedicated']) p ON CONFLICT DO NOTHING",
    )
    .bind(now())
    .execute(store.pool())
    .await?;
    let mut tx = store.pool().begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    sqlx::query("ANALYZE").execute(&mut *tx).await?;
    tx.commit().await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pod_usage")
        .fetch_one(store.pool())
        .await?;
    println!(
        "history: {rows} pod rows over 90 days for 100 tenants x {jobs} jobs (generated in {:.1?})",
        t.elapsed()
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut lat = Vec::new();
    for _ in 0..2_000 {
        let tenant = &tenants[rng.random_range(0..tenants.len())];
        let t = Instant::now();
        store.balance(tenant, now()).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "balance query (2,000 calls): p50 {:?}  p99 {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );

    let mut usage_lat = Vec::new();
    let mut runs_lat = Vec::new();
    for i in 0..50 {
        let tenant = &tenants[(i * 7) % tenants.len()];
        let t = Instant::now();
        store
            .usage(tenant, now() - TimeDelta::days(90), now(), Granularity::Day)
            .await?;
        usage_lat.push(t.elapsed());
        let t = Instant::now();
        let job = format!("job-{}", i % jobs);
        for job in [Some(job.as_str()), None] {
            let query = RunQuery {
                job,
                from: now() - TimeDelta::days(90),
                to: now(),
                after: None,
                limit: 100,
            };
            store.job_runs(tenant, &query).await?;
        }
        runs_lat.push(t.elapsed());
    }
    usage_lat.sort();
    runs_lat.sort();
    println!(
        "usage history, 90 days by day (50 calls): p50 {:?}  max {:?}",
        pct(&usage_lat, 0.5),
        usage_lat[usage_lat.len() - 1]
    );
    println!(
        "job runs, 90 days, one job + all jobs (50 calls): p50 {:?}  max {:?}",
        pct(&runs_lat, 0.5),
        runs_lat[runs_lat.len() - 1]
    );

    for (name, sql) in [
        (
            "balance lots",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT id, tenant_id, valid_from, valid_until, amount_mcs, consumed_mcs FROM purchases WHERE tenant_id = ANY('{t042}') AND kind = 'vcpu_hours' AND valid_until > now() ORDER BY id",
        ),
        (
            "balance 24h rate",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT tenant_id, SUM(charged_mcs)::bigint FROM usage_hourly WHERE tenant_id = ANY('{t042}') AND hour >= now() - interval '24 hours' GROUP BY tenant_id",
        ),
        (
            "job runs",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT app_id, count(*) FROM pod_usage WHERE tenant_id = 't042' AND job = 'job-7' AND started_at >= now() - interval '90 days' GROUP BY app_id",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(store.pool())
            .await?;
        println!("plan [{name}]:");
        for line in plan {
            println!("    {line}");
        }
    }
    Ok(())
}
