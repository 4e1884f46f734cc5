//! Every schema change upgrades, in place, a ledger written by the previous
//! release: this builds such a ledger with the migrations that had landed
//! before, fills it, then runs today's migrations over it.

use sparkcap_ledger::store::postgres::MIGRATOR;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{AccrualRequest, LedgerStore, McSeconds, Millicores, PodBinding, Pool, TenantId};

/// The migrations of the release before pod bindings (1–5).
const BEFORE_BINDINGS: i64 = 20261123000005;
/// The migrations of the release before journal corrections (1–6).
const BEFORE_CORRECTIONS: i64 = 20261205000006;

/// A database holding the schema a release up to `version` left.
async fn ledger_of_release(version: i64) -> (TestDatabase, sqlx::PgPool) {
    let db = TestDatabase::create_empty().await.expect("test database");
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let mut old = sqlx::migrate::Migrator::DEFAULT;
    old.migrations = std::borrow::Cow::Owned(MIGRATOR.iter().filter(|m| m.version <= version).cloned().collect());
    old.run(&pool).await.unwrap();
    (db, pool)
}

#[tokio::test]
async fn a_ledger_of_the_release_before_bindings_upgrades_in_place() {
    let (db, pool) = ledger_of_release(BEFORE_BINDINGS).await;
    // What the previous release wrote: a tenant, a binding, a running pod.
    for sql in [
        "INSERT INTO tenants (id, display_name, status, created_at, consumed_mcs) VALUES ('acme', 'Acme', 'active', now(), 0)",
        "INSERT INTO namespace_bindings (namespace, tenant_id) VALUES ('acme-etl', 'acme')",
        "INSERT INTO pod_usage (pod_uid, tenant_id, namespace, pod_name, pool, cpu_mc, opportunistic, started_at, \
         charged_until, charged_mcs, opportunistic_mcs, epoch) VALUES ('old-pod', 'acme', 'acme-etl', 'exec-1', \
         'shared', 1000, false, '2026-11-30T00:00:00Z', '2026-11-30T00:00:00Z', 0, 0, 1)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let store = db.store().await.unwrap();
    store.migrate().await.unwrap();
    // Nothing lost: the open pod is still open with its charge.
    let open = store.open_pods().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].pod.uid, "old-pod");
    assert_eq!(open[0].charged, McSeconds(0));
    assert_eq!(open[0].charged_until.to_rfc3339(), "2026-11-30T00:00:00+00:00");
    assert_eq!(store.namespace_bindings().await.unwrap().len(), 1);
    // And the new table works on the upgraded ledger.
    let e = store.claim_epoch("s").await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    let b = PodBinding {
        uid: "new-pod".into(),
        tenant: acme,
        namespace: "acme-etl".into(),
        name: "exec-2".into(),
        app_id: None,
        job: None,
        role: Some("executor".into()),
        pool: Pool::Shared,
        cpu: Millicores(1000),
        opportunistic: false,
        node: "n1".into(),
        bound_at: chrono::Utc::now(),
    };
    store.record_binding(e, &b).await.unwrap();
    assert_eq!(store.open_bindings().await.unwrap().len(), 1);
    assert!(store.audit().await.unwrap().is_clean());
    store.pool().close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_ledger_of_the_release_before_corrections_upgrades_in_place() {
    let (db, pool) = ledger_of_release(BEFORE_CORRECTIONS).await;
    // What that release wrote: a tenant with 1 vCPU-hour, a pod charged for
    // its first 100 s, its journal line in a monthly partition.
    for sql in [
        "INSERT INTO tenants (id, display_name, status, created_at, consumed_mcs) VALUES ('acme', 'Acme', 'active', now(), 200000)",
        "INSERT INTO namespace_bindings (namespace, tenant_id) VALUES ('acme-etl', 'acme')",
        "INSERT INTO purchases (tenant_id, kind, quantity, period, valid_from, valid_until, amount_mcs, consumed_mcs, \
         idempotency_key, request, created_at) VALUES ('acme', 'vcpu_hours', 1, 'monthly', '2026-11-01T00:00:00Z', \
         '2026-12-31T00:00:00Z', 3600000, 200000, 'k1', '{}', '2026-11-01T00:00:00Z')",
        "INSERT INTO pod_usage (pod_uid, tenant_id, namespace, pod_name, pool, cpu_mc, opportunistic, started_at, \
         charged_until, charged_mcs, opportunistic_mcs, epoch) VALUES ('old-pod', 'acme', 'acme-etl', 'exec-1', \
         'shared', 2000, false, '2026-11-30T00:00:00Z', '2026-11-30T00:00:00Z', 0, 0, 1)",
        "SELECT sparkcap_ensure_interval_partition('2026-11-30T00:00:00Z')",
        "INSERT INTO usage_intervals (pod_uid, tenant_id, pool, from_ts, to_ts, cpu_mc, charged_mcs, opportunistic_mcs, epoch) \
         VALUES ('old-pod', 'acme', 'shared', '2026-11-30T00:00:00Z', '2026-11-30T00:01:40Z', 2000, 200000, 0, 1)",
        "INSERT INTO usage_hourly (tenant_id, hour, pool, charged_mcs) VALUES ('acme', '2026-11-30T00:00:00Z', 'shared', 200000)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let store = db.store().await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.audit().await.unwrap().is_clean());
    // The pod's end arrives late: it ended at 60 s. The old line stays, a
    // correcting line walks back, and the books still balance.
    let open = store.open_pods().await.unwrap();
    assert_eq!(open[0].charged_until.to_rfc3339(), "2026-11-30T00:01:40+00:00");
    let e = store.claim_epoch("s").await.unwrap();
    let close = AccrualRequest {
        pod: open[0].pod.clone(),
        until: open[0].pod.started_at + chrono::TimeDelta::seconds(60),
        finished: true,
        outcome: None,
        run: None,
    };
    store.accrue(e, &[close]).await.unwrap();
    let cp = store.pod_checkpoint("old-pod").await.unwrap().unwrap();
    assert_eq!(cp.charged, McSeconds(120_000));
    let acme = TenantId::new("acme").unwrap();
    let b = store.balance(&acme, cp.charged_until).await.unwrap();
    assert_eq!(b.remaining, McSeconds(3_600_000 - 120_000));
    let report = store.audit().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    store.pool().close().await;
    db.drop_db().await.unwrap();
}
