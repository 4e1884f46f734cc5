//! Every schema change upgrades, in place, a ledger written by the previous
//! release: this builds such a ledger with the migrations that had landed
//! before, fills it, then runs today's migrations over it.

use sparkcap_ledger::store::postgres::MIGRATOR;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{LedgerStore, McSeconds, Millicores, PodBinding, Pool, TenantId};

/// The migrations of the release before pod bindings (1–5).
const PREVIOUS_RELEASE: i64 = 20261123000005;

#[tokio::test]
async fn a_ledger_of_the_previous_release_upgrades_in_place() {
    let db = TestDatabase::create_empty().await.expect("test database");
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let mut old = sqlx::migrate::Migrator::DEFAULT;
    old.migrations = std::borrow::Cow::Owned(
        MIGRATOR
            .iter()
            .filter(|m| m.version <= PREVIOUS_RELEASE)
            .cloned()
            .collect(),
    );
    old.run(&pool).await.unwrap();
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
