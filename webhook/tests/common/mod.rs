//! A realistic tenant view and review builders for the webhook's tests and
//! benchmark.
#![allow(dead_code)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};
use sparkcap_ledger::{
    Balance, BalanceState, McSeconds, Millicores, Period, Pool, Purchase, PurchaseKind, Tenant, TenantId, TenantStatus,
};
use sparkcap_webhook::review::{self, Request};
use sparkcap_webhook::view::{LedgerFacts, RunningApp, Settings, TenantFacts, TenantView};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

pub(crate) fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

pub(crate) fn purchase(
    tenant: &str,
    kind: PurchaseKind,
    quantity: i64,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Purchase {
    Purchase {
        id: 1,
        tenant: TenantId::new(tenant).unwrap(),
        kind,
        quantity,
        period: Period::Monthly,
        valid_from: from,
        valid_until: until,
        idempotency_key: format!("{tenant}-{quantity}"),
        created_at: from,
        consumed: McSeconds::ZERO,
    }
}

pub(crate) fn balance(purchased_h: i64, remaining_mcs: i64, state: BalanceState) -> Balance {
    Balance {
        at: now(),
        purchased: McSeconds::from_vcpu_hours(purchased_h),
        consumed: McSeconds(McSeconds::from_vcpu_hours(purchased_h).0 - remaining_mcs),
        remaining: McSeconds(remaining_mcs),
        state,
        upcoming: McSeconds::ZERO,
        consumed_last_24h: McSeconds::ZERO,
        rate: Millicores(0),
        depletion_at: None,
        next_expiry: None,
        debt_since: None,
    }
}

pub(crate) fn tenant(id: &str, status: TenantStatus, balance: Balance, purchases: Vec<Purchase>) -> TenantFacts {
    TenantFacts {
        tenant: Tenant {
            id: TenantId::new(id).unwrap(),
            display_name: id.into(),
            status,
            tier: Default::default(),
            created_at: now() - TimeDelta::days(30),
        },
        balance,
        purchases,
        promoted: HashSet::new(),
    }
}

/// Tenants: acme (vCPU-hours, plenty), dedi (2 dedicated units only), broke
/// (exhausted), low (12 % left), susp (suspended), gone (deleted), old
/// (expired), soon (starts next month). Pools: dedicated 32, shared 8, draft 4 cores.
pub(crate) fn view() -> TenantView {
    let (month_ago, in_month) = (now() - TimeDelta::days(20), now() + TimeDelta::days(10));
    let vcpu = |t: &str| vec![purchase(t, PurchaseKind::VcpuHours, 500, month_ago, in_month)];
    let h = McSeconds::from_vcpu_hours(1).0;
    let mut broke_balance = balance(500, 0, BalanceState::Exhausted);
    broke_balance.debt_since = Some(Utc.with_ymd_and_hms(2026, 11, 20, 10, 15, 0).unwrap());
    let mut low_balance = balance(500, 60 * h, BalanceState::Low);
    low_balance.depletion_at = Some(Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap());
    let tenants = [
        tenant(
            "acme",
            TenantStatus::Active,
            balance(500, 400 * h, BalanceState::Ok),
            vcpu("acme"),
        ),
        tenant(
            "dedi",
            TenantStatus::Active,
            balance(0, 0, BalanceState::Exhausted),
            vec![purchase("dedi", PurchaseKind::DedicatedUnits, 2, month_ago, in_month)],
        ),
        tenant("broke", TenantStatus::Active, broke_balance, vcpu("broke")),
        tenant("low", TenantStatus::Active, low_balance, vcpu("low")),
        tenant(
            "susp",
            TenantStatus::Suspended,
            balance(500, 400 * h, BalanceState::Ok),
            vcpu("susp"),
        ),
        tenant(
            "gone",
            TenantStatus::Deleted,
            balance(500, 400 * h, BalanceState::Ok),
            vcpu("gone"),
        ),
        tenant(
            "old",
            TenantStatus::Active,
            balance(0, 0, BalanceState::Exhausted),
            vec![purchase(
                "old",
                PurchaseKind::VcpuHours,
                500,
                now() - TimeDelta::days(60),
                Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            )],
        ),
        tenant(
            "soon",
            TenantStatus::Active,
            balance(0, 0, BalanceState::Exhausted),
            vec![purchase(
                "soon",
                PurchaseKind::VcpuHours,
                500,
                Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            )],
        ),
    ];
    let mut ledger = LedgerFacts::default();
    let mut namespaces = HashMap::new();
    for t in tenants {
        namespaces.insert(format!("tenant-{}", t.tenant.id), Some(t.tenant.id.to_string()));
        ledger
            .bindings
            .insert(format!("tenant-{}", t.tenant.id), t.tenant.id.clone());
        ledger.tenants.insert(t.tenant.id.clone(), t);
    }
    namespaces.insert("plain".into(), None);
    namespaces.insert("ghost".into(), Some("nobody".into()));
    ledger.pool_cpu = [(Pool::Dedicated, 32_000), (Pool::Shared, 8_000), (Pool::Draft, 4_000)].into();
    TenantView {
        ledger: Arc::new(ledger),
        namespaces: Arc::new(namespaces),
        apps: Arc::new(HashMap::new()),
        ledger_fresh_at: Some(now() - TimeDelta::seconds(2)),
        settings: Arc::new(Settings::default()),
    }
}

/// Marks `job` of `tenant` as past its draft runs.
pub(crate) fn graduated(mut v: TenantView, tenant: &str, job: &str) -> TenantView {
    let mut ledger = LedgerFacts::clone(&v.ledger);
    ledger
        .tenants
        .get_mut(&TenantId::new(tenant).unwrap())
        .unwrap()
        .promoted
        .insert(job.into());
    v.ledger = Arc::new(ledger);
    v
}

/// Records a running application.
pub(crate) fn running(mut v: TenantView, namespace: &str, selector: &str, pool: Pool) -> TenantView {
    let mut apps = HashMap::clone(&v.apps);
    apps.insert(
        (namespace.into(), selector.into()),
        RunningApp {
            pool,
            job: None,
            pods: 1,
        },
    );
    v.apps = Arc::new(apps);
    v
}

pub(crate) fn review(resource: (&str, &str, &str), namespace: &str, operation: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": resource.0, "version": resource.1, "kind": "X"},
            "resource": {"group": resource.0, "version": resource.1, "resource": resource.2},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:spark:spark"},
            "object": object,
            "dryRun": false
        }
    })
}

pub(crate) fn pod_request(namespace: &str, pod: &Value) -> Request {
    review::decode(&serde_json::to_vec(&review(("", "v1", "pods"), namespace, "CREATE", pod)).unwrap()).unwrap()
}

/// The benchmark's view: `tenants` tenants (`t000`…) each with vCPU-hours and
/// namespace `tenant-tNNN`, every third also with dedicated units, and `apps`
/// running applications spread over them. Fresh as of the real clock.
pub(crate) fn realistic_view(tenants: usize, apps: usize) -> TenantView {
    let now = Utc::now();
    let h = McSeconds::from_vcpu_hours(1).0;
    let mut ledger = LedgerFacts::default();
    let mut namespaces = HashMap::new();
    for i in 0..tenants {
        let id = format!("t{i:03}");
        let mut purchases = vec![purchase(
            &id,
            PurchaseKind::VcpuHours,
            1000,
            now - TimeDelta::days(10),
            now + TimeDelta::days(20),
        )];
        if i % 3 == 0 {
            purchases.push(purchase(
                &id,
                PurchaseKind::DedicatedUnits,
                4,
                now - TimeDelta::days(10),
                now + TimeDelta::days(20),
            ));
        }
        let mut t = tenant(
            &id,
            TenantStatus::Active,
            balance(1000, 700 * h, BalanceState::Ok),
            purchases,
        );
        for j in 0..20 {
            t.promoted.insert(format!("job-{j}"));
        }
        namespaces.insert(format!("tenant-{id}"), Some(id.clone()));
        ledger.bindings.insert(format!("tenant-{id}"), t.tenant.id.clone());
        ledger.tenants.insert(t.tenant.id.clone(), t);
    }
    for i in 0..50 {
        namespaces.insert(format!("other-{i}"), None);
    }
    ledger.pool_cpu = [
        (Pool::Dedicated, 640_000),
        (Pool::Shared, 960_000),
        (Pool::Draft, 64_000),
    ]
    .into();
    let apps = (0..apps)
        .map(|i| {
            (
                (format!("tenant-t{:03}", i % tenants), format!("spark-{i:032x}")),
                RunningApp {
                    pool: Pool::Shared,
                    job: Some(format!("job-{}", i % 20)),
                    pods: 5,
                },
            )
        })
        .collect();
    TenantView {
        ledger: Arc::new(ledger),
        namespaces: Arc::new(namespaces),
        apps: Arc::new(apps),
        ledger_fresh_at: Some(now),
        settings: Arc::new(Settings::default()),
    }
}
