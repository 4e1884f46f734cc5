//! Property: whatever the batching, duplication and reordering of accrual
//! events, every tenant is charged exactly Σ cpu × lifetime of its pods —
//! no second charged twice, none lost — on both stores.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::store::{Epoch, Granularity};
use sparkcap_ledger::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone)]
struct PodSpec {
    tenant: usize,
    cpu: i64,
    start: i64,
    duration: i64,
    step: i64,
    opportunistic: bool,
}

#[derive(Debug, Clone)]
struct Case {
    pods: Vec<PodSpec>,
    /// Seeds for duplication, reordering and batching.
    dup_every: usize,
    swaps: Vec<(usize, usize)>,
    batch_sizes: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let pod = (
        0usize..3,
        1i64..4000,
        0i64..3600,
        1i64..7200,
        10i64..900,
        prop::bool::weighted(0.15),
    )
        .prop_map(|(tenant, cpu, start, duration, step, opportunistic)| PodSpec {
            tenant,
            cpu,
            start,
            duration,
            step,
            opportunistic,
        });
    (
        prop::collection::vec(pod, 1..12),
        2usize..6,
        prop::collection::vec((0usize..1000, 0usize..1000), 0..40),
        prop::collection::vec(1usize..25, 1..10),
    )
        .prop_map(|(pods, dup_every, swaps, batch_sizes)| Case {
            pods,
            dup_every,
            swaps,
            batch_sizes,
        })
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

static CASE_NO: AtomicUsize = AtomicUsize::new(0);

async fn check(store: &dyn LedgerStore, epoch: Epoch, case: Case) -> Result<(), TestCaseError> {
    let n = CASE_NO.fetch_add(1, Ordering::Relaxed);
    let tenants: Vec<TenantId> = (0..3).map(|i| TenantId::new(format!("c{n}-t{i}")).unwrap()).collect();
    for t in &tenants {
        store
            .create_tenant(NewTenant::new(t.clone(), String::new()), t0())
            .await
            .unwrap();
    }
    store
        .record_purchase(
            &PurchaseRequest {
                tenant: tenants[0].clone(),
                kind: PurchaseKind::VcpuHours,
                quantity: 3,
                period: Period::Daily,
                valid_from: Some(t0()),
                valid_until: None,
                idempotency_key: format!("c{n}"),
            },
            t0(),
        )
        .await
        .unwrap();
    let mut expected: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    let mut events: Vec<AccrualRequest> = Vec::new();
    for (i, p) in case.pods.iter().enumerate() {
        let pod = PodUsage {
            uid: format!("c{n}-p{i}"),
            tenant: tenants[p.tenant].clone(),
            namespace: "ns".into(),
            name: format!("p{i}"),
            app_id: Some(format!("c{n}-app")),
            job: Some("job".into()),
            role: Some("executor".into()),
            pool: Pool::Shared,
            cpu: Millicores(p.cpu),
            opportunistic: p.opportunistic,
            started_at: t0() + TimeDelta::seconds(p.start),
        };
        let e = expected.entry(p.tenant).or_default();
        if p.opportunistic {
            e.1 += p.cpu * p.duration;
        } else {
            e.0 += p.cpu * p.duration;
        }
        let mut t = p.start;
        loop {
            t = (t + p.step).min(p.start + p.duration);
            let finished = t == p.start + p.duration;
            events.push(AccrualRequest {
                pod: pod.clone(),
                until: t0() + TimeDelta::seconds(t),
                finished,
                outcome: None,
                run: None,
            });
            if finished {
                break;
            }
        }
    }
    events.sort_by_key(|e| e.until);
    // Duplicate every k-th event (a retry), then reorder by swaps.
    let dups: Vec<AccrualRequest> = events.iter().step_by(case.dup_every).cloned().collect();
    for (i, d) in dups.into_iter().enumerate() {
        let at = (i * 7919) % (events.len() + 1);
        events.insert(at.max(1).min(events.len()), d);
    }
    let len = events.len();
    for (a, b) in &case.swaps {
        events.swap(a % len, b % len);
    }
    let mut i = 0;
    let mut k = 0;
    while i < events.len() {
        let size = case.batch_sizes[k % case.batch_sizes.len()];
        let end = (i + size).min(events.len());
        let outcomes = store.accrue(epoch, &events[i..end]).await.unwrap();
        for o in &outcomes {
            // Only reordering may be refused, and only as clock skew.
            if let Some(e) = o.rejection() {
                prop_assert!(matches!(e, LedgerError::ClockSkew { .. }), "unexpected refusal: {e}");
            }
        }
        i = end;
        k += 1;
    }
    for (idx, t) in tenants.iter().enumerate() {
        let usage = store
            .usage(
                t,
                t0() - TimeDelta::days(1),
                t0() + TimeDelta::days(2),
                Granularity::Day,
            )
            .await
            .unwrap();
        let charged: i64 = usage.iter().map(|u| u.charged.0).sum();
        let opp: i64 = usage.iter().map(|u| u.opportunistic.0).sum();
        let (want_c, want_o) = expected.get(&idx).copied().unwrap_or_default();
        prop_assert_eq!(charged, want_c, "tenant {} charged", t);
        prop_assert_eq!(opp, want_o, "tenant {} opportunistic", t);
        let b = store.balance(t, t0() + TimeDelta::hours(12)).await.unwrap();
        if idx == 0 {
            prop_assert_eq!(b.remaining.0, 3 * 3_600_000 - want_c);
        }
    }
    let audit = store.audit().await.unwrap();
    prop_assert!(audit.is_clean(), "{:#?}", audit.violations);
    Ok(())
}

#[test]
fn memory_store_charges_exactly_under_any_interleaving() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(Config::with_cases(256));
    runner
        .run(&case(), |c| {
            rt.block_on(async {
                let store = MemoryStore::new();
                let epoch = store.claim_epoch("prop").await.unwrap();
                check(&store, epoch, c).await
            })
        })
        .unwrap();
}

#[test]
fn postgres_store_charges_exactly_under_any_interleaving() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDatabase::create()).expect("test database");
    let store = rt.block_on(db.store()).unwrap();
    let epoch = rt.block_on(store.claim_epoch("prop")).unwrap();
    let mut runner = TestRunner::new(Config::with_cases(32));
    let result = runner.run(&case(), |c| rt.block_on(check(&store, epoch, c)));
    rt.block_on(store.pool().close());
    rt.block_on(db.drop_db()).unwrap();
    result.unwrap();
}
