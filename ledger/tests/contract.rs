//! The ledger contract: one suite, run against the in-memory store and
//! against Postgres (a fresh database per test). Every test ends with the
//! store's own audit, so each one also checks the books balance.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use futures::StreamExt;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::store::{Epoch, Granularity};
use sparkcap_ledger::tenant::TenantPatch;
use sparkcap_ledger::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn tenant(store: &dyn LedgerStore, id: &str) -> TenantId {
    store
        .create_tenant(NewTenant::new(tid(id), format!("{id} corp")), t0())
        .await
        .unwrap();
    tid(id)
}

fn buy(tenant: &TenantId, kind: PurchaseKind, quantity: i64, key: &str) -> PurchaseRequest {
    PurchaseRequest {
        tenant: tenant.clone(),
        kind,
        quantity,
        period: Period::Monthly,
        valid_from: Some(t0()),
        valid_until: None,
        idempotency_key: key.into(),
    }
}

/// Buys `hours` vCPU-hours for `tenant`, valid from t0, under `key`.
async fn buy_hours(store: &dyn LedgerStore, tenant: &TenantId, hours: i64, key: &str) {
    store
        .record_purchase(&buy(tenant, PurchaseKind::VcpuHours, hours, key), t0())
        .await
        .unwrap();
}

fn pod(uid: &str, tenant: &TenantId, cpu: i64, start: i64) -> PodUsage {
    PodUsage {
        uid: uid.into(),
        tenant: tenant.clone(),
        namespace: format!("ns-{tenant}"),
        name: format!("pod-{uid}"),
        app_id: Some(format!("app-{}", &uid[..1])),
        job: Some("ingest-orders".into()),
        role: Some("executor".into()),
        pool: Pool::Shared,
        cpu: Millicores(cpu),
        opportunistic: false,
        started_at: at(start),
    }
}

fn acc(p: &PodUsage, until: i64, finished: bool) -> AccrualRequest {
    AccrualRequest {
        pod: p.clone(),
        until: at(until),
        finished,
        outcome: finished.then_some(PodOutcome::Succeeded),
        run: None,
    }
}

async fn assert_books(store: &dyn LedgerStore) {
    let report = store.audit().await.unwrap();
    assert!(report.is_clean(), "ledger audit failed: {:#?}", report.violations);
}

async fn tenants_lifecycle(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let err = s
        .create_tenant(NewTenant::new(a.clone(), String::new()), t0())
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::TenantExists(_)), "{err}");
    assert_eq!(s.tenant(&a).await.unwrap().unwrap().display_name, "acme corp");
    assert_eq!(
        s.set_tenant_status(&a, TenantStatus::Suspended).await.unwrap().status,
        TenantStatus::Suspended
    );
    assert_eq!(
        s.set_tenant_status(&a, TenantStatus::Active).await.unwrap().status,
        TenantStatus::Active
    );
    assert_eq!(
        s.set_tenant_status(&a, TenantStatus::Deleted).await.unwrap().status,
        TenantStatus::Deleted
    );
    let err = s.set_tenant_status(&a, TenantStatus::Active).await.unwrap_err();
    assert!(err.to_string().contains("tenant acme is deleted"), "{err}");
    let err = s
        .set_tenant_status(&tid("ghost"), TenantStatus::Active)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownTenant(_)));
    assert_eq!(s.tenants().await.unwrap().len(), 1);
    assert_books(s).await;
}

async fn namespace_bindings(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let b = tenant(s, "beta").await;
    s.bind_namespace("tenant-acme", &a).await.unwrap();
    s.bind_namespace("tenant-acme", &a).await.unwrap();
    let err = s.bind_namespace("tenant-acme", &b).await.unwrap_err();
    assert!(err.to_string().contains("already belongs to tenant acme"), "{err}");
    assert!(matches!(
        s.bind_namespace("Bad_NS", &a).await,
        Err(LedgerError::InvalidNamespace { .. })
    ));
    assert!(matches!(
        s.bind_namespace("x", &tid("ghost")).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    s.bind_namespace("beta-1", &b).await.unwrap();
    assert_eq!(s.namespace_bindings().await.unwrap().len(), 2);
    assert!(s.unbind_namespace("beta-1").await.unwrap());
    assert!(!s.unbind_namespace("beta-1").await.unwrap());
    s.set_tenant_status(&a, TenantStatus::Deleted).await.unwrap();
    assert!(s.namespace_bindings().await.unwrap().is_empty());
    assert!(matches!(
        s.bind_namespace("tenant-acme", &a).await,
        Err(LedgerError::TenantDeleted(_))
    ));
}

async fn purchase_idempotency(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let req = buy(&a, PurchaseKind::VcpuHours, 500, "inv-1");
    let first = s.record_purchase(&req, t0()).await.unwrap();
    assert!(!first.replayed);
    let again = s.record_purchase(&req, at(3600)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.purchase, first.purchase);
    let mut other = req.clone();
    other.quantity = 600;
    let err = s.record_purchase(&other, t0()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"inv-1\"") && msg.contains("quantity: original 500, retry 600"),
        "{msg}"
    );
    assert_eq!(s.purchases(&a).await.unwrap().len(), 1);
    let p = &first.purchase;
    assert_eq!(
        (p.valid_from, p.valid_until),
        (t0(), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(
        s.balance(&a, at(10)).await.unwrap().remaining,
        McSeconds::from_vcpu_hours(500)
    );
}

async fn purchase_validation(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    for (q, needle) in [(0, "invalid quantity 0"), (-3, "invalid quantity -3")] {
        let err = s
            .record_purchase(&buy(&a, PurchaseKind::VcpuHours, q, "k"), t0())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let mut inverted = buy(&a, PurchaseKind::VcpuHours, 5, "k");
    inverted.valid_until = Some(t0() - TimeDelta::days(1));
    assert!(matches!(
        s.record_purchase(&inverted, t0()).await,
        Err(LedgerError::InvertedValidity { .. })
    ));
    let expired = buy(&a, PurchaseKind::VcpuHours, 5, "k");
    assert!(matches!(
        s.record_purchase(&expired, t0() + TimeDelta::days(40)).await,
        Err(LedgerError::ExpiredValidity { .. })
    ));
    let ghost = buy(&tid("ghost"), PurchaseKind::VcpuHours, 5, "k");
    assert!(matches!(
        s.record_purchase(&ghost, t0()).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    let mut nokey = buy(&a, PurchaseKind::VcpuHours, 5, "");
    nokey.idempotency_key = "  ".into();
    assert!(matches!(
        s.record_purchase(&nokey, t0()).await,
        Err(LedgerError::MissingIdempotencyKey)
    ));
    s.set_tenant_status(&a, TenantStatus::Deleted).await.unwrap();
    assert!(matches!(
        s.record_purchase(&buy(&a, PurchaseKind::VcpuHours, 5, "k"), t0()).await,
        Err(LedgerError::TenantDeleted(_))
    ));
    // Nothing of any refused purchase was written; the key is still free.
    assert!(s.purchases(&a).await.unwrap().is_empty());
}

async fn dedicated_cannot_exceed_pool(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let b = tenant(s, "beta").await;
    let err = s
        .record_purchase(&buy(&a, PurchaseKind::DedicatedUnits, 1, "d0"), t0())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("0 of the dedicated pool's 0 Spark Units"),
        "{err}"
    );
    let epoch = s.claim_epoch("scheduler-0").await.unwrap();
    s.set_pool_capacity(
        epoch,
        &PoolCapacity {
            pool: Pool::Dedicated,
            nodes: 3,
            cpu: Millicores::cores(40),
            memory: Bytes::gib(160),
            spark_units: 10,
            updated_at: t0(),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.pools().await.unwrap()[0].spark_units, 10);
    s.record_purchase(&buy(&a, PurchaseKind::DedicatedUnits, 6, "d1"), t0())
        .await
        .unwrap();
    let err = s
        .record_purchase(&buy(&b, PurchaseKind::DedicatedUnits, 5, "d2"), t0())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cannot sell 5 dedicated units to beta")
            && msg.contains("6 of the dedicated pool's 10")
            && msg.contains("at most 4"),
        "{msg}"
    );
    s.record_purchase(&buy(&b, PurchaseKind::DedicatedUnits, 4, "d3"), t0())
        .await
        .unwrap();
    // A window after the others end has the whole pool.
    let mut later = buy(&b, PurchaseKind::DedicatedUnits, 10, "d4");
    later.valid_from = Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
    s.record_purchase(&later, t0()).await.unwrap();
    let sums = s.summaries(at(60)).await.unwrap();
    assert_eq!(sums.iter().map(|x| x.dedicated_units).collect::<Vec<_>>(), vec![6, 4]);
    // Dedicated units alone give no vCPU-hours.
    assert_eq!(sums[0].balance.state, BalanceState::Exhausted);
}

async fn accrual_is_exact(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 10, "p").await;
    let e = s.claim_epoch("scheduler-0").await.unwrap();
    let d = pod("d1", &a, 1000, 0);
    let x = pod("x1", &a, 2000, 10);
    let out = s.accrue(e, &[acc(&d, 30, false), acc(&x, 30, false)]).await.unwrap();
    assert!(
        out.iter().all(|o| matches!(o, AccrualOutcome::Applied { .. })),
        "{out:?}"
    );
    s.accrue(e, &[acc(&d, 3600, false), acc(&x, 3610, true)]).await.unwrap();
    s.accrue(e, &[acc(&d, 7200, true)]).await.unwrap();
    // 1 core × 2 h + 2 cores × 1 h = 4 vCPU-hours.
    let b = s.balance(&a, at(7200)).await.unwrap();
    assert_eq!(b.consumed, McSeconds::from_vcpu_hours(4));
    assert_eq!(b.remaining, McSeconds::from_vcpu_hours(6));
    assert_eq!(b.purchased, McSeconds::from_vcpu_hours(10));
    assert_eq!(b.state, BalanceState::Ok);
    assert_eq!(b.consumed_last_24h, McSeconds::from_vcpu_hours(4));
    let hours = s.usage(&a, t0(), at(86_400), Granularity::Hour).await.unwrap();
    assert_eq!(hours.len(), 2);
    assert_eq!(
        hours.iter().map(|h| h.charged).sum::<McSeconds>(),
        McSeconds::from_vcpu_hours(4)
    );
    let days = s.usage(&a, t0(), at(86_400), Granularity::Day).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].start, t0());
    assert!(matches!(
        s.usage(&a, at(5), at(5), Granularity::Hour).await,
        Err(LedgerError::InvalidRange { .. })
    ));
    let runs = s
        .job_runs(
            &a,
            &RunQuery {
                job: Some("ingest-orders"),
                from: t0(),
                to: at(86_400),
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.finished_at.is_some() && r.pods == 1));
    assert!(
        runs.iter().all(|r| r.outcome == RunOutcome::Unknown),
        "no driver: {runs:?}"
    );
    assert!(s.open_pods().await.unwrap().is_empty());
    let cp = s.pod_checkpoint("d1").await.unwrap().unwrap();
    assert_eq!(
        (cp.charged_until, cp.finished_at, cp.charged),
        (at(7200), Some(at(7200)), McSeconds::from_vcpu_hours(2))
    );
    assert_books(s).await;
}

async fn retries_add_nothing(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 10, "p").await;
    let e = s.claim_epoch("s").await.unwrap();
    let p = pod("a1", &a, 1500, 0);
    let batch = [acc(&p, 100, false), acc(&pod("b1", &a, 500, 0), 100, false)];
    s.accrue(e, &batch).await.unwrap();
    let before = s.balance(&a, at(100)).await.unwrap();
    for _ in 0..3 {
        let out = s.accrue(e, &batch).await.unwrap();
        assert!(out.iter().all(|o| matches!(o, AccrualOutcome::Duplicate)), "{out:?}");
    }
    assert_eq!(s.balance(&a, at(100)).await.unwrap(), before);
    assert_eq!(s.open_pods().await.unwrap().len(), 2);
    assert_books(s).await;
}

async fn bad_items_are_refused_alone(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let e = s.claim_epoch("s").await.unwrap();
    let p = pod("a1", &a, 1000, 0);
    s.accrue(e, &[acc(&p, 100, false)]).await.unwrap();
    let out = s
        .accrue(
            e,
            &[
                acc(&p, 50, false),
                acc(&pod("z1", &a, 0, 0), 10, false),
                acc(&pod("g1", &tid("ghost"), 100, 0), 10, false),
                acc(&pod("b1", &a, 100, 200), 100, false),
                acc(&p, 160, true),
                acc(&p, 170, false),
            ],
        )
        .await
        .unwrap();
    let msg = |i: usize| out[i].rejection().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(0).contains("earlier than already charged"), "{}", msg(0));
    assert!(msg(1).contains("no cpu request"), "{}", msg(1));
    assert!(msg(2).contains("unknown tenant ghost"), "{}", msg(2));
    assert!(msg(3).contains("before the pod started"), "{}", msg(3));
    assert!(matches!(out[4], AccrualOutcome::Applied { .. }));
    assert!(msg(5).contains("finished at"), "{}", msg(5));
    assert!(s.pod_checkpoint("z1").await.unwrap().is_none());
    assert!(s.pod_checkpoint("b1").await.unwrap().is_none());
    assert_eq!(
        s.pod_checkpoint("a1").await.unwrap().unwrap().charged,
        McSeconds(160_000)
    );
    // No purchase: the usage is debt, carried, and the state says exhausted.
    let b = s.balance(&a, at(160)).await.unwrap();
    assert_eq!(b.remaining, McSeconds(-160_000));
    assert_eq!(b.state, BalanceState::Exhausted);
    assert_eq!(b.debt_since, Some(t0()));
    assert_books(s).await;
}

async fn stale_epoch_is_refused(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let old = s.claim_epoch("scheduler-0").await.unwrap();
    let new = s.claim_epoch("scheduler-1").await.unwrap();
    assert!(new > old);
    let p = pod("a1", &a, 1000, 0);
    let err = s.accrue(old, &[acc(&p, 100, false)]).await.unwrap_err();
    assert!(matches!(err, LedgerError::StaleEpoch { .. }), "{err}");
    assert!(err.to_string().contains("no longer the leader"));
    let cap = PoolCapacity {
        pool: Pool::Shared,
        nodes: 1,
        cpu: Millicores::cores(4),
        memory: Bytes::gib(16),
        spark_units: 1,
        updated_at: t0(),
    };
    assert!(matches!(
        s.set_pool_capacity(old, &cap).await,
        Err(LedgerError::StaleEpoch { .. })
    ));
    assert!(matches!(
        s.accrue(Epoch(new.0 + 5), &[acc(&p, 100, false)]).await,
        Err(LedgerError::UnclaimedEpoch { .. })
    ));
    assert!(s.pod_checkpoint("a1").await.unwrap().is_none());
    s.accrue(new, &[acc(&p, 100, false)]).await.unwrap();
    assert_eq!(
        s.pod_checkpoint("a1").await.unwrap().unwrap().charged,
        McSeconds(100_000)
    );
    assert_books(s).await;
}

/// Regression (issue 21): only accruals and pool sizes carried the epoch; a
/// deposed leader woken from a pause could still release slice
/// reservations and write notices. Every leader write is fenced now, and a
/// refused one changes nothing; the API's writes carry no epoch.
async fn every_leader_write_is_fenced(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    s.set_pool_capacity(
        s.claim_epoch("setup").await.unwrap(),
        &PoolCapacity {
            pool: Pool::Shared,
            nodes: 4,
            cpu: Millicores::cores(64),
            memory: Bytes::gib(256),
            spark_units: 16,
            updated_at: t0(),
        },
    )
    .await
    .unwrap();
    let old = s.claim_epoch("scheduler-0").await.unwrap();
    let new = s.claim_epoch("scheduler-1").await.unwrap();
    let policy = slices::SlicePolicy::default();
    fn stale<T>(r: Result<T, LedgerError>) -> bool {
        matches!(r, Err(LedgerError::StaleEpoch { .. }))
    }
    // Held by the new leader.
    let held = sched(&a, "orders", "0 2 * * *", 60, 2);
    assert!(matches!(
        s.put_schedule(Some(new), &held, &policy, t0(), false).await.unwrap(),
        slices::Decision::Accepted { .. }
    ));
    // The old one can neither release it nor reserve another.
    assert!(stale(s.delete_schedule(Some(old), &a, "orders").await));
    let other = sched(&a, "refunds", "0 3 * * *", 60, 2);
    assert!(stale(s.put_schedule(Some(old), &other, &policy, t0(), false).await));
    assert_eq!(s.schedules(Some(&a)).await.unwrap().len(), 1);
    // Nor add a notice, nor settle one.
    let n = lifecycle::Notice::new(&a, None, lifecycle::NoticeKind::SlaExceeded, t0(), "late".into());
    assert!(stale(s.add_notice(Some(old), &n).await));
    let q = store::NoticeQuery {
        tenant: Some(&a),
        undelivered: true,
        cursor: None,
        limit: 10,
    };
    assert!(s.notices(&q).await.unwrap().is_empty());
    let id = s.add_notice(Some(new), &n).await.unwrap().unwrap();
    assert!(stale(
        s.settle_notice(Some(old), id, &store::Delivery::Delivered, t0()).await
    ));
    assert_eq!(s.notices(&q).await.unwrap().len(), 1, "still undelivered");
    // The new leader and the API write as before.
    s.settle_notice(Some(new), id, &store::Delivery::Delivered, t0())
        .await
        .unwrap();
    assert!(s.notices(&q).await.unwrap().is_empty());
    assert!(s.delete_schedule(None, &a, "orders").await.unwrap());
    assert_books(s).await;
}

async fn opportunistic_is_free(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 1, "p").await;
    let e = s.claim_epoch("s").await.unwrap();
    let mut p = pod("o1", &a, 4000, 0);
    p.opportunistic = true;
    s.accrue(e, &[acc(&p, 3600, true)]).await.unwrap();
    let b = s.balance(&a, at(3600)).await.unwrap();
    assert_eq!(b.remaining, McSeconds::from_vcpu_hours(1));
    let u = s.usage(&a, t0(), at(7200), Granularity::Hour).await.unwrap();
    assert_eq!(u[0].opportunistic, McSeconds::from_vcpu_hours(4));
    assert_eq!(u[0].charged, McSeconds::ZERO);
    let mut flipped = p.clone();
    flipped.opportunistic = false;
    let out = s.accrue(e, &[acc(&flipped, 3600, true)]).await.unwrap();
    assert!(
        out[0]
            .rejection()
            .unwrap()
            .to_string()
            .contains("opportunistic changed")
    );
    assert_books(s).await;
}

/// An end that reaches the ledger after the pod was charged past it (its
/// status came late) closes the pod at its real end and gives the extra
/// seconds back: to the debt first, then to the lots; in every hour they
/// were counted in; for borrowed time and the dedicated pool too.
async fn late_ends_are_given_back(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 1, "p1").await;
    let e = s.claim_epoch("s").await.unwrap();
    // 2 cores charged for 2 h: 1 vCPU-hour from the lot, 3 in debt.
    let p = pod("a1", &a, 2000, 0);
    // 1 core from 50 min to 2 h 5 min: across three hours.
    let q = pod("b1", &a, 1000, 3000);
    let mut lent = pod("c1", &a, 4000, 0);
    lent.opportunistic = true;
    let mut own = pod("d1", &a, 1000, 0);
    own.pool = Pool::Dedicated;
    s.accrue(
        e,
        &[
            acc(&p, 7200, false),
            acc(&q, 7500, false),
            acc(&lent, 7200, false),
            acc(&own, 7200, false),
        ],
    )
    .await
    .unwrap();
    assert_books(s).await;
    // They really ended at 1 h, 1 h 0 min 20 s, 100 s, and before they began.
    let mut own_end = acc(&own, 0, true);
    own_end.until = at(-30);
    let out = s
        .accrue(
            e,
            &[acc(&p, 3600, true), acc(&q, 3620, true), acc(&lent, 100, true), own_end],
        )
        .await
        .unwrap();
    assert!(
        matches!(out[0], AccrualOutcome::Applied { charged, .. } if charged == McSeconds(-2000 * 3600)),
        "{out:?}"
    );
    assert!(
        matches!(out[2], AccrualOutcome::Applied { opportunistic, .. } if opportunistic == McSeconds(-4000 * 7100))
    );
    // Retried closes add nothing.
    let again = s.accrue(e, &[acc(&p, 3600, true), acc(&q, 3620, true)]).await.unwrap();
    assert!(
        again.iter().all(|o| matches!(o, AccrualOutcome::Duplicate)),
        "{again:?}"
    );
    for (uid, end, charged, opp) in [
        ("a1", 3600, 2000 * 3600, 0),
        ("b1", 3620, 620 * 1000, 0),
        ("c1", 100, 0, 4000 * 100),
        ("d1", 0, 0, 0),
    ] {
        let cp = s.pod_checkpoint(uid).await.unwrap().unwrap();
        assert_eq!(
            (cp.charged_until, cp.finished_at, cp.charged, cp.opportunistic),
            (at(end), Some(at(end)), McSeconds(charged), McSeconds(opp)),
            "{uid}"
        );
    }
    // 2 + 0.17 vCPU-hours used of 1 bought: the debt is what is left over.
    let b = s.balance(&a, at(7500)).await.unwrap();
    assert_eq!(b.remaining, McSeconds(3_600_000 - 2000 * 3600 - 620 * 1000));
    assert_eq!(b.debt_since, Some(at(1800)));
    let hours = s.usage(&a, t0(), at(86_400), Granularity::Hour).await.unwrap();
    let per_hour: Vec<(DateTime<Utc>, Pool, i64, i64)> = hours
        .iter()
        .map(|h| (h.start, h.pool, h.charged.0, h.opportunistic.0))
        .collect();
    // Hours whose every second was given back stay, at zero.
    assert_eq!(
        per_hour,
        vec![
            (at(0), Pool::Dedicated, 0, 0),
            (at(0), Pool::Shared, 2000 * 3600 + 600 * 1000, 4000 * 100),
            (at(3600), Pool::Dedicated, 0, 0),
            (at(3600), Pool::Shared, 20 * 1000, 0),
            (at(7200), Pool::Shared, 0, 0),
        ],
        "{hours:?}"
    );
    // A top-up pays the debt left: nothing was given back twice.
    let mut top_up = buy(&a, PurchaseKind::VcpuHours, 10, "p2");
    top_up.valid_from = Some(at(7500));
    s.record_purchase(&top_up, at(7500)).await.unwrap();
    let b = s.balance(&a, at(7501)).await.unwrap();
    assert_eq!(b.remaining, McSeconds(11 * 3_600_000 - 2000 * 3600 - 620 * 1000));
    assert_books(s).await;
}

async fn debt_is_paid_by_the_next_purchase(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 1, "p1").await;
    let e = s.claim_epoch("s").await.unwrap();
    let p = pod("a1", &a, 2000, 0);
    s.accrue(e, &[acc(&p, 3600, false)]).await.unwrap();
    let b = s.balance(&a, at(3600)).await.unwrap();
    assert_eq!(
        (b.remaining, b.state),
        (McSeconds::from_vcpu_hours(-1), BalanceState::Exhausted)
    );
    assert_eq!(b.debt_since, Some(at(1800)));
    let mut top_up = buy(&a, PurchaseKind::VcpuHours, 10, "p2");
    top_up.valid_from = Some(at(3600));
    s.record_purchase(&top_up, at(3600)).await.unwrap();
    let b = s.balance(&a, at(3601)).await.unwrap();
    // The top-up paid the 1 vCPU-hour of debt.
    assert_eq!(b.remaining, McSeconds::from_vcpu_hours(9));
    assert_eq!(b.debt_since, None);
    s.accrue(e, &[acc(&p, 7200, true)]).await.unwrap();
    let b = s.balance(&a, at(7200)).await.unwrap();
    assert_eq!(b.remaining, McSeconds::from_vcpu_hours(7));
    assert_eq!(b.purchased, McSeconds::from_vcpu_hours(11));
    assert_eq!(b.consumed, McSeconds::from_vcpu_hours(4));
    assert_books(s).await;
}

async fn low_balance_rate_and_depletion(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 100, "p").await;
    let e = s.claim_epoch("s").await.unwrap();
    // 4 cores for 20 h = 80 vCPU-hours: 20 % left, low.
    let p = pod("a1", &a, 4000, 0);
    let mut t = 0;
    while t < 20 * 3600 {
        t += 1800;
        s.accrue(e, &[acc(&p, t, false)]).await.unwrap();
    }
    let b = s.balance(&a, at(t)).await.unwrap();
    assert_eq!(b.remaining, McSeconds::from_vcpu_hours(20));
    assert_eq!(b.state, BalanceState::Low);
    // Measured over the current hour and the 23 before it: all 80 vCPU-hours.
    assert_eq!(b.consumed_last_24h, McSeconds::from_vcpu_hours(80));
    assert_eq!(b.rate, Millicores(80 * 3_600_000 / 86_400));
    let eta = b.depletion_at.unwrap();
    assert_eq!(eta, at(t) + TimeDelta::seconds(20 * 3_600_000 / b.rate.0));
    // A purchase that expired is not counted.
    let b = s
        .balance(&a, Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap())
        .await
        .unwrap();
    assert_eq!(b.purchased, McSeconds::ZERO);
    assert_eq!(b.state, BalanceState::Exhausted);
    assert_books(s).await;
}

async fn prune_keeps_totals(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let e = s.claim_epoch("s").await.unwrap();
    let old = pod("a1", &a, 1000, 0);
    let live = pod("b1", &a, 1000, 0);
    s.accrue(e, &[acc(&old, 100, true), acc(&live, 100, false)])
        .await
        .unwrap();
    let report = s.prune_history(at(101)).await.unwrap();
    assert_eq!((report.pods, report.intervals > 0), (1, true));
    assert!(s.pod_checkpoint("a1").await.unwrap().is_none());
    assert!(s.pod_checkpoint("b1").await.unwrap().is_some());
    assert_eq!(s.balance(&a, at(200)).await.unwrap().consumed, McSeconds(200_000));
    assert_books(s).await;
}

async fn next_change(feed: &mut futures::stream::BoxStream<'static, LedgerChange>) -> LedgerChange {
    tokio::time::timeout(std::time::Duration::from_secs(1), feed.next())
        .await
        .expect("a change within 1 s")
        .expect("feed open")
}

async fn change_feed_reports_writes(s: &dyn LedgerStore) {
    let mut feed = s.subscribe().await.unwrap();
    let a = tenant(s, "acme").await;
    assert_eq!(next_change(&mut feed).await, LedgerChange::of(ChangeKind::Tenant, &a));
    buy_hours(s, &a, 1, "p").await;
    assert_eq!(next_change(&mut feed).await, LedgerChange::of(ChangeKind::Purchase, &a));
    let e = s.claim_epoch("s").await.unwrap();
    s.accrue(e, &[acc(&pod("a1", &a, 10, 0), 10, false)]).await.unwrap();
    assert_eq!(next_change(&mut feed).await, LedgerChange::of(ChangeKind::Usage, &a));
    s.bind_namespace("ns", &a).await.unwrap();
    assert_eq!(next_change(&mut feed).await, LedgerChange::of(ChangeKind::Binding, &a));
}

async fn summaries_cover_live_tenants(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let b = tenant(s, "beta").await;
    tenant(s, "gone").await;
    s.set_tenant_status(&tid("gone"), TenantStatus::Deleted).await.unwrap();
    s.bind_namespace("a1", &a).await.unwrap();
    s.bind_namespace("a2", &a).await.unwrap();
    s.record_purchase(&buy(&b, PurchaseKind::VcpuHours, 7, "p"), t0())
        .await
        .unwrap();
    let sums = s.summaries(at(5)).await.unwrap();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0].namespaces, vec!["a1", "a2"]);
    assert_eq!(sums[1].balance.remaining, McSeconds::from_vcpu_hours(7));
}

/// Finished driver runs are counted per job, once per driver however often
/// its close is retried; executors and job-less pods do not count.
async fn finished_driver_runs_are_counted_once(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let e = s.claim_epoch("w").await.unwrap();
    let mut feed = s.subscribe().await.unwrap();
    let driver = |uid: &str, job: Option<&str>| PodUsage {
        role: Some("driver".into()),
        job: job.map(Into::into),
        ..pod(uid, &a, 1000, 0)
    };
    let (d1, d2, d3) = (
        driver("d1", Some("orders")),
        driver("d2", Some("orders")),
        driver("d3", None),
    );
    let exec = pod("x1", &a, 1000, 0);
    // d1 opens in one batch and closes in the next; d2 opens and closes at once.
    s.accrue(e, &[acc(&d1, 10, false), acc(&exec, 10, false)])
        .await
        .unwrap();
    assert!(s.job_stats(None).await.unwrap().is_empty());
    let batch = [
        acc(&d1, 60, true),
        acc(&d2, 30, true),
        acc(&d3, 30, true),
        acc(&exec, 60, true),
    ];
    s.accrue(e, &batch).await.unwrap();
    s.accrue(e, &batch).await.unwrap();
    let stats = s.job_stats(Some(&a)).await.unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(
        (
            stats[0].job.as_str(),
            stats[0].state.runs,
            stats[0].state.last_finished_at
        ),
        ("orders", 2, Some(at(60)))
    );
    assert!(s.job_stats(Some(&tenant(s, "beta").await)).await.unwrap().is_empty());
    // The feed says a job changed (the panic in next_change fails the test otherwise).
    while next_change(&mut feed).await != LedgerChange::of(ChangeKind::Job, &a) {}
    assert_books(s).await;
}

/// A job's runs are profiled from all their pods, held to its SLA, and the
/// job is promoted after 3 consecutive runs within it, with the audit record
/// and notices written in the same transaction as the driver's close.
async fn runs_are_profiled_and_promote_jobs(s: &dyn LedgerStore) {
    use sparkcap_ledger::lifecycle::{JobStage, NoticeKind, RunFacts};
    use sparkcap_ledger::store::{Delivery, NoticeQuery};
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 100, "p").await;
    let e = s.claim_epoch("w").await.unwrap();
    let facts = RunFacts {
        sla_seconds: Some(600),
        promote_after: 3,
        cpu_used: Some(Millicores(4000)),
        data_bytes: Some(10_000_000_000),
        source: Some("postgres".into()),
        target: Some("iceberg".into()),
        ..RunFacts::default()
    };
    // Runs 1–4 start an hour apart: driver 1 core + two 2-core executors.
    // Run 2 takes 700 s (17 % over 600 s), the others 500 s.
    for n in 0..4_i64 {
        let start = n * 3600;
        let len = if n == 1 { 700 } else { 500 };
        let mk = |uid: String, role: &str, cpu: i64| PodUsage {
            app_id: Some(format!("spark-{n}")),
            job: Some("orders".into()),
            role: Some(role.into()),
            ..pod(&uid, &a, cpu, start)
        };
        let d = mk(format!("d{n}"), "driver", 1000);
        let x1 = mk(format!("x{n}a"), "executor", 2000);
        let x2 = mk(format!("x{n}b"), "executor", 2000);
        s.accrue(
            e,
            &[
                acc(&d, start + 100, false),
                acc(&x1, start + 100, false),
                acc(&x2, start + 100, false),
            ],
        )
        .await
        .unwrap();
        let mut close = acc(&d, start + len, true);
        close.run = Some(facts.clone());
        // Executors end with the driver, in the same batch; retried whole.
        let batch = [acc(&x1, start + len, true), acc(&x2, start + len, true), close];
        s.accrue(e, &batch).await.unwrap();
        s.accrue(e, &batch).await.unwrap();
        let stage = s.job_stats(Some(&a)).await.unwrap()[0].state.stage;
        // Run 2 missed: runs 3 and 4 make a streak of 2, so still draft after
        // 4 runs; the miss reset what runs 1 had.
        assert_eq!(stage, JobStage::Draft, "after run {n}");
    }
    let st = &s.job_stats(Some(&a)).await.unwrap()[0].state;
    assert_eq!((st.runs, st.streak, st.sla_seconds), (4, 2, Some(600)));
    let profiles = s.run_profiles(&a, Some("orders"), 10).await.unwrap();
    assert_eq!(profiles.len(), 4, "a retried close profiles a run once");
    assert_eq!(profiles[0].app_id, "spark-3");
    assert_eq!(profiles[0].cores, Millicores(5000));
    assert_eq!(profiles[0].vcpu, McSeconds(5000 * 500));
    assert_eq!(profiles[0].duration_seconds(), 500);
    assert_eq!(profiles[2].duration_seconds(), 700);
    // One more run within SLA: promoted, once.
    let start = 4 * 3600;
    let mut d = pod("d4", &a, 1000, start);
    d.app_id = Some("spark-4".into());
    d.job = Some("orders".into());
    d.role = Some("driver".into());
    let mut close = acc(&d, start + 300, true);
    close.run = Some(facts.clone());
    s.accrue(e, &[close]).await.unwrap();
    let st = &s.job_stats(Some(&a)).await.unwrap()[0].state;
    assert_eq!(st.stage, JobStage::Production);
    assert_eq!(st.promoted_at, Some(at(start + 300)));
    let all = s
        .notices(&NoticeQuery {
            tenant: Some(&a),
            undelivered: false,
            cursor: None,
            limit: 100,
        })
        .await
        .unwrap();
    let kinds: Vec<NoticeKind> = all.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, vec![NoticeKind::Promoted, NoticeKind::SlaExceeded], "{all:#?}");
    assert!(
        all[1].message.contains("16 % over its SLA of 10 min"),
        "{}",
        all[1].message
    );
    // 5 cores × 700 / 600 = 5.83 → 6.
    assert_eq!(all[1].recommended_cores, Some(Millicores(6000)));
    let similar = s.similar_runs(Some("postgres"), Some("iceberg"), 10).await.unwrap();
    assert_eq!(
        similar.len(),
        5,
        "every successful run with a data volume, run 5 (no executors) too"
    );
    assert!(s.similar_runs(Some("s3"), None, 10).await.unwrap().is_empty());
    // The outbox: oldest first, settled one by one.
    let q = NoticeQuery {
        tenant: None,
        undelivered: true,
        cursor: None,
        limit: 10,
    };
    let pending = s.notices(&q).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending[0].id < pending[1].id);
    s.settle_notice(None, pending[0].id, &Delivery::Failed("HTTP 503".into()), at(20_000))
        .await
        .unwrap();
    s.settle_notice(None, pending[1].id, &Delivery::Delivered, at(20_000))
        .await
        .unwrap();
    let pending = s.notices(&q).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].attempts, pending[0].last_error.as_deref()),
        (1, Some("HTTP 503"))
    );
    assert!(matches!(
        s.settle_notice(None, 9_999, &Delivery::Delivered, at(1)).await,
        Err(LedgerError::UnknownNotice(9_999))
    ));
    // Notification URLs are checked.
    s.set_notify_url(&a, Some("https://hooks.acme.example/sparkcap"))
        .await
        .unwrap();
    for bad in ["ftp://x", "https://user:pw@host/", "https://a b", "hooks.acme"] {
        let err = s.set_notify_url(&a, Some(bad)).await.unwrap_err();
        assert!(err.to_string().contains("invalid notification URL"), "{bad}: {err}");
    }
    assert_eq!(
        s.notify_urls().await.unwrap(),
        vec![(a.clone(), "https://hooks.acme.example/sparkcap".to_owned())]
    );
    s.set_notify_url(&a, None).await.unwrap();
    assert!(s.notify_urls().await.unwrap().is_empty());
    assert_books(s).await;
}

/// Falling to 20 % of the vCPU-hours bought raises one alert per purchase
/// period; a top-up re-arms it.
async fn low_balance_alerts_once_per_period(s: &dyn LedgerStore) {
    use sparkcap_ledger::lifecycle::NoticeKind;
    use sparkcap_ledger::store::NoticeQuery;
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 10, "p1").await;
    let e = s.claim_epoch("w").await.unwrap();
    let p = pod("a1", &a, 1000, 0);
    async fn low(s: &dyn LedgerStore, a: &TenantId) -> Vec<sparkcap_ledger::lifecycle::Notice> {
        s.notices(&NoticeQuery {
            tenant: Some(a),
            undelivered: false,
            cursor: None,
            limit: 10,
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == NoticeKind::BalanceLow)
        .collect()
    }
    // 7 of 10 h used: 30 % left, no alert.
    s.accrue(e, &[acc(&p, 7 * 3600, false)]).await.unwrap();
    assert!(low(s, &a).await.is_empty());
    // 8.5 h: 15 % left, one alert; more use in the same period adds none.
    s.accrue(e, &[acc(&p, 8 * 3600 + 1800, false)]).await.unwrap();
    s.accrue(e, &[acc(&p, 9 * 3600, false)]).await.unwrap();
    let alerts = low(s, &a).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(
        alerts[0]
            .message
            .contains("has 15 % of its vCPU-hours left (1 of 10 vCPU-h)"),
        "{}",
        alerts[0].message
    );
    // A top-up re-arms it.
    s.record_purchase(&buy(&a, PurchaseKind::VcpuHours, 2, "p2"), at(9 * 3600))
        .await
        .unwrap();
    s.accrue(e, &[acc(&p, 10 * 3600, false)]).await.unwrap();
    assert_eq!(low(s, &a).await.len(), 2);
    assert_books(s).await;
}

async fn tenant_patch_is_all_or_nothing(s: &dyn LedgerStore) {
    let mut new = NewTenant::new(tid("acme"), "Acme");
    new.namespaces = vec!["acme-etl".into(), "acme-ml".into()];
    new.tier = Tier::Premium;
    let acme = s.create_tenant(new, t0()).await.unwrap();
    assert_eq!(acme.tier, Tier::Premium);
    // A new tenant claiming a taken namespace is not created at all.
    let mut clash = NewTenant::new(tid("beta"), "");
    clash.namespaces = vec!["beta-etl".into(), "acme-ml".into()];
    let err = s.create_tenant(clash, t0()).await.unwrap_err();
    assert!(matches!(err, LedgerError::NamespaceTaken { .. }), "{err}");
    assert!(s.tenant(&tid("beta")).await.unwrap().is_none());
    assert!(
        s.namespace_bindings()
            .await
            .unwrap()
            .iter()
            .all(|b| b.namespace != "beta-etl")
    );
    let beta = tenant(s, "beta").await;
    // A patch with one bad part changes nothing.
    let bad = TenantPatch {
        status: Some(TenantStatus::Suspended),
        bind_namespaces: vec!["beta-new".into(), "acme-etl".into()],
        ..TenantPatch::default()
    };
    let err = s.update_tenant(&beta, &bad).await.unwrap_err();
    assert!(
        err.to_string().contains("acme-etl already belongs to tenant acme"),
        "{err}"
    );
    let unchanged = s.tenant(&beta).await.unwrap().unwrap();
    assert_eq!(unchanged.status, TenantStatus::Active);
    let not_mine = TenantPatch {
        unbind_namespaces: vec!["acme-ml".into()],
        ..TenantPatch::default()
    };
    let err = s.update_tenant(&beta, &not_mine).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotTenantsNamespace { .. }), "{err}");
    // A good patch applies every part.
    let good = TenantPatch {
        display_name: Some("Beta GmbH".into()),
        status: Some(TenantStatus::Suspended),
        tier: Some(Tier::Premium),
        bind_namespaces: vec!["beta-etl".into(), "beta-ml".into()],
        unbind_namespaces: vec![],
    };
    let rec = s.update_tenant(&beta, &good).await.unwrap();
    assert_eq!(
        (rec.tenant.display_name.as_str(), rec.tenant.status, rec.tenant.tier),
        ("Beta GmbH", TenantStatus::Suspended, Tier::Premium)
    );
    assert_eq!(rec.namespaces, vec!["beta-etl".to_owned(), "beta-ml".to_owned()]);
    assert_eq!(
        s.update_tenant(&beta, &good).await.unwrap(),
        rec,
        "a retried patch is idempotent"
    );
    let rec = s
        .update_tenant(
            &beta,
            &TenantPatch {
                unbind_namespaces: vec!["beta-ml".into()],
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rec.namespaces, vec!["beta-etl".to_owned()]);
    let gone = s
        .update_tenant(
            &beta,
            &TenantPatch {
                status: Some(TenantStatus::Deleted),
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(gone.namespaces.is_empty(), "deleting unbinds");
    assert_eq!(s.tenant(&beta).await.unwrap().unwrap().tier, Tier::Premium);
    assert_books(s).await;
}

async fn runs_page_with_outcomes(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let e = s.claim_epoch("w").await.unwrap();
    // Five runs of "orders", two sharing a start second; one still running,
    // one failed, one preempted.
    let run = |i: usize, start: i64| {
        let base = PodUsage {
            app_id: Some(format!("spark-{i}")),
            job: Some("orders".into()),
            ..pod(&format!("{i}d"), &a, 1000, start)
        };
        let driver = PodUsage {
            role: Some("driver".into()),
            ..base.clone()
        };
        let exec = PodUsage {
            uid: format!("{i}x"),
            ..base
        };
        (driver, exec)
    };
    let outcomes = [
        Some(PodOutcome::Succeeded),
        Some(PodOutcome::Failed),
        Some(PodOutcome::Preempted),
        Some(PodOutcome::Succeeded),
        None,
    ];
    let starts = [0, 100, 100, 200, 300];
    let mut batch = Vec::new();
    for (i, (start, outcome)) in starts.iter().zip(outcomes).enumerate() {
        let (d, x) = run(i, *start);
        let mut rd = acc(&d, start + 50, outcome.is_some());
        rd.outcome = outcome;
        batch.push(rd);
        batch.push(acc(&x, start + 50, outcome.is_some()));
    }
    s.accrue(e, &batch).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .job_runs(
                &a,
                &RunQuery {
                    job: Some("orders"),
                    from: t0(),
                    to: at(86_400),
                    after: after.clone(),
                    limit: 2,
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| RunCursor {
            started_at: r.started_at,
            app_id: r.app_id.clone(),
        });
        seen.extend(page);
    }
    let got: Vec<(&str, RunOutcome)> = seen.iter().map(|r| (r.app_id.as_str(), r.outcome)).collect();
    assert_eq!(
        got,
        vec![
            ("spark-4", RunOutcome::Running),
            ("spark-3", RunOutcome::Succeeded),
            ("spark-1", RunOutcome::Failed),
            ("spark-2", RunOutcome::Preempted),
            ("spark-0", RunOutcome::Succeeded),
        ]
    );
    assert!(seen.iter().all(|r| r.pods == 2));
    let jobs = s.jobs(&a).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        (jobs[0].job.as_str(), jobs[0].finished_runs, jobs[0].running_runs),
        ("orders", 4, 1)
    );
    assert!(matches!(
        s.jobs(&tid("nobody")).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    assert_books(s).await;
}

async fn dedicated_pool_usage_is_covered_by_units(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    buy_hours(s, &a, 10, "v").await;
    let e = s.claim_epoch("w").await.unwrap();
    let dedicated = PodUsage {
        pool: Pool::Dedicated,
        ..pod("d1", &a, 2000, 0)
    };
    let shared = pod("s1", &a, 1000, 0);
    s.accrue(e, &[acc(&dedicated, 7200, true), acc(&shared, 3600, true)])
        .await
        .unwrap();
    let b = s.balance(&a, at(7200)).await.unwrap();
    assert_eq!(
        b.consumed,
        McSeconds::from_vcpu_hours(1),
        "only the shared pod draws vCPU-hours"
    );
    assert_eq!(b.remaining, McSeconds::from_vcpu_hours(9));
    assert_eq!(b.consumed_last_24h, McSeconds::from_vcpu_hours(1));
    let usage = s.usage(&a, t0(), at(86_400), Granularity::Day).await.unwrap();
    let in_pool = |p: Pool| {
        usage
            .iter()
            .filter(|u| u.pool == p)
            .map(|u| u.charged)
            .sum::<McSeconds>()
    };
    assert_eq!(
        in_pool(Pool::Dedicated),
        McSeconds::from_vcpu_hours(4),
        "still metered and reported"
    );
    assert_eq!(in_pool(Pool::Shared), McSeconds::from_vcpu_hours(1));
    assert_books(s).await;
}

fn sched(tenant: &TenantId, job: &str, text: &str, minutes: i64, cores: i64) -> slices::StoredSchedule {
    slices::StoredSchedule {
        tenant: tenant.clone(),
        job: job.into(),
        pool: Pool::Shared,
        spec: slices::JobSchedule {
            schedule: text.into(),
            offset: slices::Offset(0),
            duration: TimeDelta::minutes(minutes),
            cores: cores * 1000,
        },
        source: "api".into(),
        updated_at: t0(),
    }
}

async fn schedules_reserve_slices(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let b = tenant(s, "beta").await;
    let epoch = s.claim_epoch("scheduler-0").await.unwrap();
    s.set_pool_capacity(
        epoch,
        &PoolCapacity {
            pool: Pool::Shared,
            nodes: 2,
            cpu: Millicores::cores(20),
            memory: Bytes::gib(80),
            spark_units: 5,
            updated_at: t0(),
        },
    )
    .await
    .unwrap();
    let policy = slices::SlicePolicy {
        reservable_pct: 100,
        tenant_pct: 50,
        ..slices::SlicePolicy::default()
    };
    use slices::Decision;
    let put = |x: slices::StoredSchedule, dry: bool| async move {
        s.put_schedule(None, &x, &policy, t0(), dry).await.unwrap()
    };
    assert_eq!(
        put(sched(&a, "orders", "0 2 * * *", 60, 8), false).await,
        Decision::Accepted { headroom: 2000 }
    );
    // acme's cap is 10 cores: a second 4-core job at 02:30 does not fit, 03:00 does.
    let Decision::Refused {
        shortfall,
        alternatives,
    } = put(sched(&a, "refunds", "30 2 * * *", 30, 4), false).await
    else {
        panic!("over the tenant cap")
    };
    assert_eq!(
        (shortfall.limit, shortfall.free, shortfall.needed),
        ("tenant cap", 2000, 4000)
    );
    assert_eq!(alternatives[0].schedule.as_deref(), Some("0 3 * * *"));
    // beta fills the pool at 02:00 up to its own cap; then the pool is what is short.
    assert_eq!(
        put(sched(&b, "load", "0 2 * * *", 60, 10), false).await,
        Decision::Accepted { headroom: 0 }
    );
    let Decision::Refused { shortfall, .. } = put(sched(&b, "late", "15 2 * * *", 15, 3), false).await else {
        panic!("over the cap")
    };
    assert_eq!(shortfall.at, t0() + TimeDelta::minutes(135));
    // A dry run decides and stores nothing.
    assert!(matches!(
        put(sched(&b, "dry", "0 5 * * *", 15, 1), true).await,
        Decision::Accepted { .. }
    ));
    assert_eq!(s.schedules(None).await.unwrap().len(), 2);
    // Replacing acme's schedule frees its old slices in the same decision.
    assert!(matches!(
        put(sched(&a, "orders", "0 6 * * *", 60, 8), false).await,
        Decision::Accepted { .. }
    ));
    assert!(matches!(
        put(sched(&a, "refunds", "30 2 * * *", 30, 4), false).await,
        Decision::Accepted { .. }
    ));
    let mine = s.schedules(Some(&a)).await.unwrap();
    assert_eq!(
        mine.iter().map(|x| x.job.as_str()).collect::<Vec<_>>(),
        ["orders", "refunds"]
    );
    assert_eq!(mine[0].spec.schedule, "0 6 * * *");
    assert!(s.delete_schedule(None, &a, "orders").await.unwrap());
    assert!(!s.delete_schedule(None, &a, "orders").await.unwrap());
    let bad = s
        .put_schedule(None, &sched(&a, "x", "0 2 * *", 10, 1), &policy, t0(), false)
        .await
        .unwrap_err();
    assert!(
        bad.is_bad_input() && bad.to_string().contains("expected 5 fields"),
        "{bad}"
    );
    let nobody = s
        .put_schedule(None, &sched(&tid("nobody"), "x", "@daily", 10, 1), &policy, t0(), false)
        .await;
    assert!(matches!(nobody, Err(LedgerError::UnknownTenant(_))));
    assert_books(s).await;
}

fn binding(uid: &str, tenant: &TenantId, cpu: i64) -> PodBinding {
    PodBinding {
        uid: uid.into(),
        tenant: tenant.clone(),
        namespace: format!("ns-{tenant}"),
        name: format!("pod-{uid}"),
        app_id: Some("app-1".into()),
        job: Some("ingest-orders".into()),
        role: Some("executor".into()),
        pool: Pool::Shared,
        cpu: Millicores(cpu),
        opportunistic: false,
        node: "node-1".into(),
        bound_at: at(0),
    }
}

/// A pod's money facts are recorded once, at bind, fenced; asked again with
/// other facts (a relabelled pod) they are refused; open bindings are what a
/// restarted scheduler meters by.
async fn bindings_are_fixed_once_the_pod_starts_and_fenced(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let b = tenant(s, "beta").await;
    let old = s.claim_epoch("s0").await.unwrap();
    let e = s.claim_epoch("s1").await.unwrap();
    let rec = binding("u1", &a, 2000);
    assert!(matches!(
        s.record_binding(old, &rec).await,
        Err(LedgerError::StaleEpoch { .. })
    ));
    assert!(s.binding("u1").await.unwrap().is_none());
    s.record_binding(e, &rec).await.unwrap();
    s.record_binding(e, &rec).await.unwrap(); // a retried bind
    // Before the pod starts, a new bind (the last failed) replaces the record.
    let elsewhere = PodBinding {
        opportunistic: true,
        node: "node-2".into(),
        ..rec.clone()
    };
    s.record_binding(e, &elsewhere).await.unwrap();
    assert_eq!(s.binding("u1").await.unwrap(), Some(elsewhere));
    s.record_binding(e, &rec).await.unwrap();
    assert_eq!(s.binding("u1").await.unwrap(), Some(rec.clone()));
    let ghost = binding("u2", &tid("ghost"), 1000);
    assert!(matches!(
        s.record_binding(e, &ghost).await,
        Err(LedgerError::UnknownTenant(_))
    ));
    let zero = binding("u3", &a, 0);
    assert!(s.record_binding(e, &zero).await.is_err());
    let nul = PodBinding {
        name: "x\u{0}y".into(),
        ..binding("u4", &a, 1000)
    };
    let err = s.record_binding(e, &nul).await.unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    // Never started: closed with nothing charged.
    s.record_binding(e, &binding("u5", &a, 1000)).await.unwrap();
    s.record_binding(e, &binding("u6", &a, 1000)).await.unwrap();
    let open: Vec<String> = s.open_bindings().await.unwrap().into_iter().map(|b| b.uid).collect();
    assert_eq!(open, vec!["u1", "u5", "u6"]);
    s.close_binding(e, "u5", at(5)).await.unwrap();
    assert!(matches!(
        s.close_binding(old, "u6", at(5)).await,
        Err(LedgerError::StaleEpoch { .. })
    ));
    // Started and finished: the binding closes with its pod.
    s.accrue(e, &[acc(&rec.usage(at(10)), 70, true)]).await.unwrap();
    let open: Vec<String> = s.open_bindings().await.unwrap().into_iter().map(|b| b.uid).collect();
    assert_eq!(open, vec!["u6"]);
    // Once its pod started, a binding's facts are fixed.
    let moved = PodBinding {
        tenant: b.clone(),
        ..rec.clone()
    };
    let err = s.record_binding(e, &moved).await.unwrap_err();
    assert!(err.to_string().contains("tenant acme"), "{err}");
    let free = PodBinding {
        opportunistic: true,
        ..rec.clone()
    };
    assert!(s.record_binding(e, &free).await.is_err());
    assert!(
        s.record_binding(e, &rec).await.is_ok(),
        "the same facts again are a retry"
    );
    // A batch: each item decided alone, the last of a uid wins.
    let out = s
        .record_bindings(
            e,
            &[
                binding("v1", &a, 1000),
                binding("v2", &tid("ghost"), 1000),
                PodBinding {
                    role: Some("exec\u{0}".into()),
                    ..binding("v3", &a, 1000)
                },
                PodBinding {
                    node: "node-9".into(),
                    ..binding("v1", &a, 1000)
                },
            ],
        )
        .await
        .unwrap();
    assert!(out[0].is_ok() && out[3].is_ok());
    assert!(matches!(out[1], Err(LedgerError::UnknownTenant(_))));
    assert!(matches!(out[2], Err(LedgerError::InvalidText { .. })));
    assert_eq!(s.binding("v1").await.unwrap().unwrap().node, "node-9");
    assert!(s.binding("v3").await.unwrap().is_none());
    assert_eq!(
        s.pod_checkpoint("u1").await.unwrap().unwrap().charged,
        McSeconds(120_000)
    );
    assert!(s.pod_checkpoint("u5").await.unwrap().is_none());
    // History pruning takes bindings with their pods, and closed ones; an
    // open binding stays whatever its age.
    s.prune_history(at(100)).await.unwrap();
    assert!(s.binding("u1").await.unwrap().is_none());
    assert!(s.binding("v1").await.unwrap().is_some(), "open, not pruned");
    assert!(s.binding("u5").await.unwrap().is_none());
    assert!(s.binding("u6").await.unwrap().is_some());
    assert_books(s).await;
}

/// The attack: a driver annotated `sparkcap.io/source: "s3\0evil"` made
/// PostgreSQL refuse the whole batch, so no pod in the cluster was charged.
/// Such text is refused alone; the rest of the batch is charged.
async fn a_nul_byte_is_refused_alone(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let e = s.claim_epoch("s").await.unwrap();
    let good = pod("g1", &a, 1000, 0);
    let mut bad = acc(&pod("b1", &a, 1000, 0), 30, true);
    bad.pod.role = Some("driver".into());
    bad.run = Some(sparkcap_ledger::lifecycle::RunFacts {
        sla_seconds: None,
        promote_after: 3,
        cpu_used: None,
        memory_used: None,
        data_bytes: None,
        source: Some("s3\u{0}evil".into()),
        target: None,
    });
    let mut nul_name = acc(&pod("n1", &a, 1000, 0), 30, false);
    nul_name.pod.namespace = "ns\u{0}".into();
    let out = s.accrue(e, &[bad, acc(&good, 30, false), nul_name]).await.unwrap();
    let msg = |i: usize| out[i].rejection().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(0).contains("source kind") && msg(0).contains("NUL"), "{}", msg(0));
    assert!(matches!(out[1], AccrualOutcome::Applied { .. }));
    assert!(msg(2).contains("namespace"), "{}", msg(2));
    assert_eq!(
        s.pod_checkpoint("g1").await.unwrap().unwrap().charged,
        McSeconds(30_000)
    );
    assert_books(s).await;
}

/// Client mode: executors only, the run's facts sent with the last one's
/// close, record one run spanning them; an executor sent with facts in an
/// application whose driver ran in the cluster records nothing more.
async fn client_mode_runs_end_with_their_last_executor(s: &dyn LedgerStore) {
    let a = tenant(s, "acme").await;
    let e = s.claim_epoch("w").await.unwrap();
    let facts = sparkcap_ledger::lifecycle::RunFacts {
        sla_seconds: Some(600),
        ..Default::default()
    };
    let (x1, x2) = (pod("c1", &a, 1000, 0), pod("c2", &a, 2000, 5));
    s.accrue(e, &[acc(&x1, 20, true), acc(&x2, 20, false)]).await.unwrap();
    assert!(
        s.job_stats(Some(&a)).await.unwrap().is_empty(),
        "an executor still runs"
    );
    let mut last = acc(&x2, 50, true);
    last.outcome = Some(PodOutcome::Deleted);
    last.run = Some(facts.clone());
    s.accrue(e, &[last.clone()]).await.unwrap();
    s.accrue(e, &[last]).await.unwrap();
    let stats = s.job_stats(Some(&a)).await.unwrap();
    assert_eq!((stats.len(), stats[0].state.runs), (1, 1), "{stats:?}");
    let runs = s.run_profiles(&a, Some("ingest-orders"), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].started_at, runs[0].finished_at), (at(0), at(50)));
    assert_eq!(runs[0].outcome, sparkcap_ledger::store::RunOutcome::Succeeded);
    assert_eq!(runs[0].vcpu.0, 1000 * 20 + 2000 * 45);
    // Cluster mode: the driver's close recorded the run; an executor that
    // outlives it with facts (as an orphan would) adds none.
    let driver = PodUsage {
        role: Some("driver".into()),
        ..pod("d9", &a, 1000, 0)
    };
    let orphan = pod("d8", &a, 1000, 0);
    s.accrue(e, &[acc(&driver, 30, true), acc(&orphan, 30, false)])
        .await
        .unwrap();
    let mut end = acc(&orphan, 40, true);
    end.run = Some(facts);
    s.accrue(e, &[end]).await.unwrap();
    assert_eq!(
        s.job_stats(Some(&a)).await.unwrap()[0].state.runs,
        2,
        "the driver's run only"
    );
    assert_books(s).await;
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&sparkcap_ledger::MemoryStore::new()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDatabase::create().await.expect("test database");
                    let store = db.store().await.expect("connect");
                    super::$name(&store).await;
                    store.pool().close().await;
                    db.drop_db().await.expect("drop test database");
                }
            )*
        }
    };
}

contract!(
    tenants_lifecycle,
    namespace_bindings,
    purchase_idempotency,
    purchase_validation,
    dedicated_cannot_exceed_pool,
    accrual_is_exact,
    retries_add_nothing,
    bad_items_are_refused_alone,
    stale_epoch_is_refused,
    every_leader_write_is_fenced,
    opportunistic_is_free,
    debt_is_paid_by_the_next_purchase,
    late_ends_are_given_back,
    low_balance_rate_and_depletion,
    prune_keeps_totals,
    change_feed_reports_writes,
    summaries_cover_live_tenants,
    finished_driver_runs_are_counted_once,
    tenant_patch_is_all_or_nothing,
    runs_page_with_outcomes,
    dedicated_pool_usage_is_covered_by_units,
    schedules_reserve_slices,
    runs_are_profiled_and_promote_jobs,
    low_balance_alerts_once_per_period,
    bindings_are_fixed_once_the_pod_starts_and_fenced,
    a_nul_byte_is_refused_alone,
    client_mode_runs_end_with_their_last_executor,
);

/// Postgres only: the writer remembers checkpoints between batches, so the
/// ledger must make sure nobody else wrote with its epoch and that a
/// deposed writer's memory can never be used.
#[tokio::test]
async fn postgres_writer_memory_cannot_go_stale() {
    let db = TestDatabase::create().await.expect("test database");
    let a = db.store().await.unwrap();
    let b = db.store().await.unwrap();
    let t = tenant(&a, "acme").await;
    let p = pod("a1", &t, 1000, 0);
    let ea = a.claim_epoch("a").await.unwrap();
    a.accrue(ea, &[acc(&p, 100, false)]).await.unwrap();
    // Another instance cannot borrow a's epoch.
    let err = b.accrue(ea, &[acc(&p, 200, false)]).await.unwrap_err();
    assert!(matches!(err, LedgerError::EpochNotHeld { .. }), "{err}");
    // It claims its own; a is deposed, and b reads the truth, not a's memory.
    let eb = b.claim_epoch("b").await.unwrap();
    assert!(matches!(
        a.accrue(ea, &[acc(&p, 300, false)]).await,
        Err(LedgerError::StaleEpoch { .. })
    ));
    b.accrue(eb, &[acc(&p, 300, true)]).await.unwrap();
    // a comes back as leader again: its memory was dropped at the claim.
    let ea2 = a.claim_epoch("a").await.unwrap();
    let out = a.accrue(ea2, &[acc(&p, 400, false)]).await.unwrap();
    assert!(out[0].rejection().unwrap().to_string().contains("finished at"));
    assert_eq!(
        a.pod_checkpoint("a1").await.unwrap().unwrap().charged,
        McSeconds(300_000)
    );
    assert_books(&a).await;
    a.pool().close().await;
    b.pool().close().await;
    db.drop_db().await.unwrap();
}

/// Postgres only: pruning drops journal partitions that ended before the
/// cutoff once they are empty, and keeps the books whole.
#[tokio::test]
async fn postgres_prune_drops_old_partitions() {
    let db = TestDatabase::create().await.expect("test database");
    let s = db.store().await.unwrap();
    let t = tenant(&s, "acme").await;
    let e = s.claim_epoch("s").await.unwrap();
    // A pod in October (t0 is 1 Nov), one in November.
    let mut old = pod("a1", &t, 1000, 0);
    old.started_at = t0() - TimeDelta::days(20);
    let old_req = AccrualRequest {
        pod: old,
        until: t0() - TimeDelta::days(19),
        finished: true,
        outcome: None,
        run: None,
    };
    s.accrue(e, &[old_req, acc(&pod("b1", &t, 1000, 0), 100, true)])
        .await
        .unwrap();
    let parts = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_intervals'::regclass")
            .fetch_one(s.pool())
            .await
            .unwrap()
    };
    assert_eq!(parts().await, 2);
    let report = s.prune_history(t0() + TimeDelta::seconds(50)).await.unwrap();
    assert_eq!((report.pods, report.partitions), (1, 1));
    assert_eq!(parts().await, 1);
    assert_books(&s).await;
    // A late accrual into the dropped month still lands.
    let mut late = pod("c1", &t, 1000, 0);
    late.started_at = t0() - TimeDelta::days(3);
    s.accrue(
        e,
        &[AccrualRequest {
            pod: late,
            until: t0() - TimeDelta::days(2),
            finished: false,
            outcome: None,
            run: None,
        }],
    )
    .await
    .unwrap();
    assert_books(&s).await;
    s.pool().close().await;
    db.drop_db().await.unwrap();
}
