//! Postgres under concurrent writers: the same purchase retried in parallel
//! is recorded once, racing dedicated sales never oversell the pool, and
//! racing schedules never overcommit a time slice.

use chrono::{DateTime, TimeZone, Utc};
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::*;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

async fn setup() -> (TestDatabase, Arc<PgStore>) {
    let db = TestDatabase::create().await.expect("test database");
    let store = Arc::new(db.store().await.unwrap());
    (db, store)
}

fn req(tenant: &str, kind: PurchaseKind, quantity: i64, key: &str) -> PurchaseRequest {
    PurchaseRequest {
        tenant: TenantId::new(tenant).unwrap(),
        kind,
        quantity,
        period: Period::Monthly,
        valid_from: Some(t0()),
        valid_until: None,
        idempotency_key: key.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_record_one_purchase() {
    let (db, store) = setup().await;
    store
        .create_tenant(NewTenant::new(TenantId::new("acme").unwrap(), String::new()), t0())
        .await
        .unwrap();
    let r = req("acme", PurchaseKind::VcpuHours, 500, "invoice-42");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (s, r) = (store.clone(), r.clone());
            tokio::spawn(async move { s.record_purchase(&r, t0()).await })
        })
        .collect();
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.push(t.await.unwrap().expect("every retry succeeds"));
    }
    assert_eq!(receipts.iter().filter(|r| !r.replayed).count(), 1);
    assert!(receipts.iter().all(|r| r.purchase == receipts[0].purchase));
    assert_eq!(store.purchases(&TenantId::new("acme").unwrap()).await.unwrap().len(), 1);
    store.pool().close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_dedicated_sales_never_oversell() {
    let (db, store) = setup().await;
    let epoch = store.claim_epoch("s").await.unwrap();
    store
        .set_pool_capacity(
            epoch,
            &PoolCapacity {
                pool: Pool::Dedicated,
                nodes: 5,
                cpu: Millicores::cores(40),
                memory: Bytes::gib(160),
                spark_units: 10,
                updated_at: t0(),
            },
        )
        .await
        .unwrap();
    for i in 0..20 {
        store
            .create_tenant(
                NewTenant::new(TenantId::new(format!("t{i}")).unwrap(), String::new()),
                t0(),
            )
            .await
            .unwrap();
    }
    // 20 tenants each try to buy 3 units at once: at most 3 can win (9 of 10).
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.record_purchase(
                    &req(&format!("t{i}"), PurchaseKind::DedicatedUnits, 3, &format!("d{i}")),
                    t0(),
                )
                .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(LedgerError::DedicatedOverAllocation { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 3);
    let sold: i64 = store
        .summaries(t0())
        .await
        .unwrap()
        .iter()
        .map(|s| s.dedicated_units)
        .sum();
    assert_eq!(sold, 9);
    store.pool().close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_schedules_racing_for_the_last_slices_never_overcommit() {
    use chrono::TimeDelta;
    use sparkcap_ledger::slices::*;
    let (db, store) = setup().await;
    let epoch = store.claim_epoch("s").await.unwrap();
    store
        .set_pool_capacity(
            epoch,
            &PoolCapacity {
                pool: Pool::Shared,
                nodes: 1,
                cpu: Millicores::cores(20),
                memory: Bytes::gib(80),
                spark_units: 5,
                updated_at: t0(),
            },
        )
        .await
        .unwrap();
    for i in 0..50 {
        store
            .create_tenant(
                NewTenant::new(TenantId::new(format!("t{i}")).unwrap(), String::new()),
                t0(),
            )
            .await
            .unwrap();
    }
    let policy = SlicePolicy {
        reservable_pct: 100,
        tenant_pct: 100,
        ..SlicePolicy::default()
    };
    // Each wants 1 core at 02:00 daily for an hour: room for exactly 20.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let x = StoredSchedule {
                    tenant: TenantId::new(format!("t{i}")).unwrap(),
                    job: "nightly".into(),
                    pool: Pool::Shared,
                    spec: JobSchedule {
                        schedule: "0 2 * * *".into(),
                        offset: Offset(0),
                        duration: TimeDelta::minutes(60),
                        cores: 1000,
                    },
                    source: "api".into(),
                    updated_at: t0(),
                };
                s.put_schedule(None, &x, &policy, t0(), false).await.unwrap()
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Decision::Accepted { .. } => accepted += 1,
            Decision::Refused {
                shortfall,
                alternatives,
            } => {
                assert_eq!((shortfall.free, shortfall.limit), (0, "pool"));
                assert!(!alternatives.is_empty(), "losers get alternatives");
                assert_eq!(alternatives[0].headroom, 19_000, "an empty hour next to the full one");
            }
        }
    }
    assert_eq!(accepted, 20);
    let stored = store.schedules(None).await.unwrap();
    assert_eq!(stored.len(), 20, "exactly the accepted ones are stored");
    store.pool().close().await;
    db.drop_db().await.unwrap();
}
