//! Postgres under concurrent writers: the same purchase retried in parallel
//! is recorded once, and racing dedicated sales never oversell the pool.

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
