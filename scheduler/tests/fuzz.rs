//! The scheduler's and meter's readers of tenant-written objects never panic
//! and never produce a number the ledger would refuse (issue 19): pods with
//! any labels, quantities, statuses and times; spark.properties ConfigMaps
//! with any text; nodes with any allocatable. CI runs a bounded number of
//! cases; `SCHEDULER_FUZZ_CASES=100000 cargo test --release -p
//! sparkcap-scheduler --test fuzz` runs a long campaign.

use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use proptest::prelude::*;
use serde_json::{Value, json};
use sparkcap_ledger::{Pool, TenantId};
use sparkcap_scheduler::meter::{self, Life};
use sparkcap_scheduler::observe;

fn cases() -> u32 {
    std::env::var("SCHEDULER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("1")),
        Just(json!("0")),
        Just(json!("-1")),
        Just(json!("500m")),
        Just(json!("1e3")),
        Just(json!("9223372036854775807")),
        Just(json!("100000000")),
        Just(json!("0.0001")),
        Just(json!("1Ki")),
        Just(json!("8Ei")),
        Just(json!("")),
        "[0-9]{1,25}(m|k|M|G|Ki|Gi|e9)?".prop_map(Value::from),
    ]
}

fn time() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..100_000).prop_map(|s| json!(
            (Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::seconds(s))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        Just(json!("0001-01-02T00:00:00Z")),
        Just(json!("9999-12-30T00:00:00Z")),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{0,12}".prop_map(String::from),
        Just("s3\u{0}evil".to_owned()),
        Just("x".repeat(300)),
        Just("driver".to_owned()),
        Just("executor".to_owned()),
    ]
}

fn container_state() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        time().prop_map(|t| json!({"running": {"startedAt": t}})),
        (time(), time(), any::<i32>())
            .prop_map(|(s, f, code)| json!({"terminated": {"startedAt": s, "finishedAt": f, "exitCode": code}})),
        Just(json!({"waiting": {"reason": "ContainerCreating"}})),
    ]
}

prop_compose! {
    fn pod()(
        cpu in quantity(), limit in quantity(), sidecar in proptest::option::of(quantity()), overhead in proptest::option::of(quantity()),
        role in text(), app in text(), pool in text(), tenant in text(), opportunistic in text(),
        start in proptest::option::of(time()), deleted in proptest::option::of(time()), grace in proptest::option::of(-5i64..100_000),
        states in prop::collection::vec(container_state(), 0..3), phase in text(),
        node in proptest::option::of(text()), source in text(), sla in text(), executors in text(),
    ) -> Value {
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "tenant-acme", "uid": "u",
                         "labels": {"spark-role": role, "spark-app-selector": app, "sparkcap.io/pool": pool,
                                    "sparkcap.io/tenant": tenant, "sparkcap.io/opportunistic": opportunistic},
                         "annotations": {"sparkcap.io/source": source, "sparkcap.io/sla": sla,
                                         "sparkcap.io/executor-instances": executors}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": limit}}}]},
            "status": {"phase": phase, "containerStatuses": states.iter().enumerate().map(|(i, s)| json!({
                "name": format!("c{i}"), "ready": false, "restartCount": 0, "image": "i", "imageID": "i", "state": s
            })).collect::<Vec<_>>()}
        });
        if let Some(s) = sidecar {
            p["spec"]["initContainers"] = json!([{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": s}}}]);
        }
        if let Some(o) = overhead {
            p["spec"]["overhead"] = json!({"cpu": o});
        }
        if let Some(s) = start {
            p["status"]["startTime"] = s;
        }
        if let Some(d) = deleted {
            p["metadata"]["deletionTimestamp"] = d;
        }
        if let Some(g) = grace {
            p["metadata"]["deletionGracePeriodSeconds"] = json!(g);
        }
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }
}

/// One node per pool and two tenants (one with dedicated units), lending
/// on: where the fuzzed pods are planned.
fn cluster(now: chrono::DateTime<Utc>) -> sparkcap_scheduler::model::ClusterState {
    use sparkcap_scheduler::model::{ClusterState, TenantState};
    let nodes = ["shared", "dedicated", "draft"]
        .iter()
        .map(|pool| {
            let n: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("{pool}-1"), "labels": {"sparkcap.io/pool": pool}},
                "spec": {"taints": [{"key": "sparkcap.io/pool", "value": pool, "effect": "NoSchedule"}]},
                "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
            observe::node(&n)
        })
        .collect();
    let tenant = |units, weight| TenantState {
        dedicated_units: units,
        weight,
        exhausted: false,
        recent_utilisation: 0,
    };
    ClusterState {
        nodes,
        tenants: [
            (TenantId::new("acme").unwrap(), tenant(0, 100)),
            (TenantId::new("beta").unwrap(), tenant(2, 0)),
        ]
        .into_iter()
        .collect(),
        dedicated_idle_since: Some(now - chrono::TimeDelta::hours(1)),
        ..ClusterState::default()
    }
}

/// Plans `pods` and checks what any plan must hold: no node given more than
/// it has, each pod bound at most once.
fn plan_holds(pods: &[sparkcap_scheduler::model::PendingPod], now: chrono::DateTime<Utc>) -> Result<(), TestCaseError> {
    use sparkcap_scheduler::plan::{Action, plan};
    let state = cluster(now);
    let mut used: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut bound = std::collections::HashSet::new();
    for a in plan(&state, pods, now) {
        if let Action::Bind { pod, node, .. } = a {
            prop_assert!(bound.insert(pod.clone()), "{pod} bound twice");
            let p = pods.iter().find(|p| p.uid == pod).unwrap();
            *used.entry(node).or_default() += p.requests.cpu;
        }
    }
    for (node, cpu) in used {
        prop_assert!(cpu <= 16_000, "{node} given {cpu} mCPU of 16000");
    }
    Ok(())
}

prop_compose! {
    /// A pod's containers with odd cpu quantities: request and limit, a
    /// limit alone, an init container, a sidecar, pod overhead.
    fn cpu_shapes()(
        request in proptest::option::of(quantity()), limit in proptest::option::of(quantity()),
        second in proptest::option::of(quantity()), init in proptest::option::of(quantity()),
        sidecar in proptest::option::of(quantity()), overhead in proptest::option::of(quantity()),
    ) -> Value {
        let res = |request: &Option<Value>, limit: &Option<Value>| {
            let mut r = json!({});
            if let Some(q) = request { r["requests"] = json!({"cpu": q}); }
            if let Some(q) = limit { r["limits"] = json!({"cpu": q}); }
            r
        };
        let mut containers = vec![json!({"name": "main", "resources": res(&request, &limit)})];
        if let Some(q) = second {
            containers.push(json!({"name": "second", "resources": res(&None, &Some(q))}));
        }
        let mut inits = Vec::new();
        if let Some(q) = init {
            inits.push(json!({"name": "init", "resources": res(&Some(q), &None)}));
        }
        if let Some(q) = sidecar {
            inits.push(json!({"name": "side", "restartPolicy": "Always", "resources": res(&Some(q), &None)}));
        }
        let mut p = json!({"metadata": {"name": "p", "namespace": "tenant-acme", "uid": "u"},
                           "spec": {"containers": containers, "initContainers": inits}});
        if let Some(q) = overhead {
            p["spec"]["overhead"] = json!({"cpu": q});
        }
        p
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Admission (from the review's JSON), placement and metering (from the
    /// typed pod) read one cpu, whatever the quantities: what a tenant is
    /// refused for, placed by and charged for never disagree (issue 21).
    #[test]
    fn admission_placement_and_metering_read_one_cpu(v in cpu_shapes()) {
        let admitted = sparkcap_core::spark::pod_cpu(&v);
        let Ok(pod) = serde_json::from_value::<Pod>(v) else { return Ok(()) };
        let placed = observe::resources(&pod).cpu.0;
        prop_assert_eq!(admitted.millicores, placed);
        prop_assert_eq!(observe::requests(&pod).cpu, placed);
        let b = meter::binding_for(&pod, TenantId::new("acme").unwrap(), Pool::Shared, false, "n", Utc::now()).unwrap();
        prop_assert_eq!(b.cpu.0, placed);
    }

    /// Whatever a tenant writes into a pod: reading it never panics, its
    /// cpu is within what the ledger accepts or refused, and its life never
    /// ends before it starts.
    #[test]
    fn pods_are_read_without_panics_or_impossible_numbers(v in pod(), now in 0i64..200_000, lost in proptest::option::of(0i64..200_000)) {
        let Ok(pod) = serde_json::from_value::<Pod>(v) else { return Ok(()) };
        let t = |s: i64| Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::seconds(s);
        let r = observe::resources(&pod);
        prop_assert!(r.cpu.0 >= 0 && r.memory.0 >= 0);
        let _ = observe::requests(&pod);
        let _ = observe::pool(&pod);
        let _ = observe::not_admitted(&pod);
        let _ = observe::finished(&pod);
        let _ = observe::gang(&pod, None);
        let l = meter::life(&pod, lost.map(t), t(now));
        if let Life::Ended { started, ended } = l {
            prop_assert!(ended >= started);
        }
        if let Some(b) = meter::binding_for(&pod, TenantId::new("acme").unwrap(), Pool::Shared, false, "n", t(now)) {
            // What the ledger refuses is refused there, one item alone;
            // what it accepts is within its bounds.
            if b.check().is_ok() {
                prop_assert!(b.cpu.0 > 0 && b.cpu.0 <= 100_000_000);
                if let Some(a) = meter::accrual_of(&b, &pod, l, t(now)) {
                    prop_assert!(a.until >= a.pod.started_at);
                    let facts = meter::run_facts(&pod, &a.pod, 3, None);
                    if let Some(f) = facts {
                        for s in [f.source, f.target].into_iter().flatten() {
                            prop_assert!(!s.contains('\0'));
                        }
                    }
                }
            }
        }
    }

    /// Any spark.properties a tenant writes gives a bounded gang or an error.
    #[test]
    fn spark_conf_maps_give_a_bounded_gang_or_an_error(
        instances in prop_oneof![Just("9223372036854775807".to_owned()), Just("-3".to_owned()), "[0-9]{0,22}".prop_map(String::from), text()],
        cores in prop_oneof![Just("1".to_owned()), Just("0".to_owned()), Just("1e300".to_owned()), "[0-9]{0,22}".prop_map(String::from)],
        request in prop_oneof![Just("500m".to_owned()), Just("-1".to_owned()), "[0-9]{0,22}m?".prop_map(String::from)],
        junk in text(),
    ) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "tenant-acme", "uid": "u", "labels": {"spark-role": "driver", "spark-app-selector": "spark-1"}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
                     "volumes": [{"name": "spark-conf-volume-driver", "configMap": {"name": "conf"}}]}
        })).unwrap();
        let conf: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "conf", "namespace": "tenant-acme"},
            "data": {"spark.properties": format!(
                "spark.executor.instances={instances}\nspark.executor.cores={cores}\nspark.kubernetes.executor.request.cores={request}\n{junk}\n")}
        })).unwrap();
        let gang = observe::gang(&pod, Some(&conf));
        if let Ok(Some(g)) = &gang {
            prop_assert!(g.executors <= sparkcap_ledger::podres::MAX_EXECUTORS);
        }
        // And through placement: a driver with whatever gang it declared.
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let mut driver = observe::pending(&pod, gang.ok().flatten(), now);
        driver.tenant = TenantId::new("acme").unwrap();
        plan_holds(&[driver], now)?;
    }

    /// Whatever pods a tenant writes, planning them (after the reads the
    /// shell does) never panics and never overcommits a node.
    #[test]
    fn hostile_pods_are_planned_safely(vs in prop::collection::vec(pod(), 1..4)) {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let pending: Vec<_> = vs
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let pod = serde_json::from_value::<Pod>(v).ok()?;
                let mut p = observe::pending(&pod, observe::gang(&pod, None).ok().flatten(), now);
                p.uid = format!("u{i}");
                Some(p)
            })
            .collect();
        plan_holds(&pending, now)?;
    }

    /// Any node a cluster reports is read without panics, its capacity non-negative.
    #[test]
    fn nodes_are_read_without_panics(cpu in quantity(), memory in quantity(), pods in quantity(), pool in text(), ready in text()) {
        let Ok(n) = serde_json::from_value::<Node>(json!({
            "metadata": {"name": "n", "labels": {"sparkcap.io/pool": pool}},
            "spec": {"taints": [{"key": "sparkcap.io/pool", "value": "shared", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                       "conditions": [{"type": "Ready", "status": ready}]}
        })) else { return Ok(()) };
        let node = observe::node(&n);
        prop_assert!(node.allocatable.cpu >= 0 && node.allocatable.memory >= 0);
    }
}
