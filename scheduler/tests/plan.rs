//! The scheduling policy, rule by rule, and its invariants under random
//! clusters and queues.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use sparkcap_ledger::{Pool, TenantId};
use sparkcap_scheduler::model::*;
use sparkcap_scheduler::plan::{Action, observe_dedicated_idle, plan};
use std::collections::HashMap;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

const GI: i64 = 1 << 30;

fn node(name: &str, pool: Pool, cores: i64) -> Node {
    Node {
        name: name.into(),
        pool: Some(pool),
        labels: [("sparkcap.io/pool".to_string(), pool.to_string())].into(),
        taints: vec![Taint {
            key: "sparkcap.io/pool".into(),
            value: pool.to_string(),
            effect: "NoSchedule".into(),
        }],
        allocatable: Resources {
            cpu: cores * 1000,
            memory: cores * 4 * GI,
            pods: 110,
        },
        schedulable: true,
    }
}

fn pending(uid: &str, tenant: &str, pool: Pool, role: Role, cpu: i64, age_s: i64) -> PendingPod {
    PendingPod {
        uid: uid.into(),
        name: format!("ns/{uid}"),
        tenant: tid(tenant),
        pool,
        role,
        app: Some(format!("app-{uid}")),
        requests: Resources::pod(cpu, GI),
        tolerations: vec![Toleration {
            key: "sparkcap.io/pool".into(),
            operator: "Equal".into(),
            value: pool.to_string(),
            effect: "NoSchedule".into(),
        }],
        node_requirements: vec![],
        gang: None,
        created_at: now() - TimeDelta::seconds(age_s),
        last_reason: None,
        nominated: None,
    }
}

fn bound(uid: &str, tenant: &str, pool: Pool, node: usize, cpu: i64, opportunistic: bool, age_s: i64) -> BoundPod {
    BoundPod {
        uid: uid.into(),
        name: format!("ns/{uid}"),
        tenant: tid(tenant),
        pool,
        role: Role::Executor,
        app: Some(format!("app-{uid}")),
        node,
        requests: Resources::pod(cpu, GI),
        opportunistic,
        bound_at: now() - TimeDelta::seconds(age_s),
        terminating: false,
    }
}

fn tenants(list: &[(&str, i64, i64)]) -> HashMap<TenantId, TenantState> {
    list.iter()
        .map(|(t, units, weight)| {
            (
                tid(t),
                TenantState {
                    dedicated_units: *units,
                    weight: *weight,
                    ..TenantState::default()
                },
            )
        })
        .collect()
}

fn binds(actions: &[Action]) -> Vec<(String, String, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Bind {
                pod,
                node,
                opportunistic,
            } => Some((pod.clone(), node.clone(), *opportunistic)),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<(String, &'static str, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event {
                pod, reason, message, ..
            } => Some((pod.clone(), *reason, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn binds_into_the_pods_pool_and_explains_misfits_like_kube_scheduler() {
    let state = ClusterState {
        nodes: vec![
            node("d1", Pool::Dedicated, 16),
            node("s1", Pool::Shared, 4),
            node("s2", Pool::Shared, 16),
        ],
        tenants: tenants(&[("acme", 0, 100)]),
        ..ClusterState::default()
    };
    let a = plan(
        &state,
        &[pending("p1", "acme", Pool::Shared, Role::Driver, 8000, 0)],
        now(),
    );
    assert_eq!(binds(&a), vec![("p1".into(), "s2".into(), false)]);
    let a = plan(
        &state,
        &[pending("p2", "acme", Pool::Shared, Role::Driver, 20_000, 0)],
        now(),
    );
    assert!(binds(&a).is_empty());
    assert_eq!(
        events(&a),
        vec![(
            "p2".into(),
            "FailedScheduling",
            "0/3 nodes are available: 1 node(s) didn't match pool shared, 2 Insufficient cpu.".into()
        )]
    );
    // The same reason is not repeated.
    let mut p = pending("p2", "acme", Pool::Shared, Role::Driver, 20_000, 0);
    p.last_reason = Some(events(&a)[0].2.clone());
    assert!(events(&plan(&state, &[p], now())).is_empty());
}

/// Regression: a pod that found no node once made every smaller pod of the
/// same shape in the pass skip the search too.
#[test]
fn a_bigger_pods_misfit_does_not_block_a_smaller_one() {
    let state = ClusterState {
        nodes: vec![node("x1", Pool::Draft, 16), node("x2", Pool::Draft, 16)],
        bound: vec![
            bound("b1", "acme", Pool::Draft, 0, 4000, false, 60),
            bound("b2", "acme", Pool::Draft, 1, 4000, false, 60),
        ],
        tenants: tenants(&[("acme", 0, 100)]),
        ..ClusterState::default()
    };
    // Same creation time: the uid orders them, the bigger first. 24 cores
    // are free in the pool, but at most 12 on one node.
    let queue = [
        pending("a-big", "acme", Pool::Draft, Role::Driver, 13_000, 0),
        pending("b-small", "acme", Pool::Draft, Role::Driver, 12_000, 0),
    ];
    let a = plan(&state, &queue, now());
    let b = binds(&a);
    assert_eq!(b.len(), 1, "{a:?}");
    assert_eq!(b[0].0, "b-small");
    assert_eq!(events(&a).len(), 1);
    assert_eq!(events(&a)[0].0, "a-big");
}

#[test]
fn dedicated_pods_preempt_the_fewest_newest_borrowed_pods() {
    let mut state = ClusterState {
        nodes: vec![node("d1", Pool::Dedicated, 8), node("d2", Pool::Dedicated, 8)],
        tenants: tenants(&[("acme", 2, 0), ("beta", 0, 100)]),
        ..ClusterState::default()
    };
    // d1: three 2-core borrowed pods + 2 free; d2: one 6-core borrowed pod + 2 free.
    state.bound = vec![
        bound("o1", "beta", Pool::Shared, 0, 2000, true, 300),
        bound("o2", "beta", Pool::Shared, 0, 2000, true, 200),
        bound("o3", "beta", Pool::Shared, 0, 2000, true, 100),
        bound("o4", "beta", Pool::Shared, 1, 6000, true, 50),
    ];
    let want = pending("ded", "acme", Pool::Dedicated, Role::Executor, 6000, 0);
    let a = plan(&state, std::slice::from_ref(&want), now());
    let evicted: Vec<&String> = a
        .iter()
        .filter_map(|x| match x {
            Action::Evict { pod, grace_seconds, .. } => {
                assert!(*grace_seconds <= 20, "capacity must be free within 30 s");
                Some(pod)
            }
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec!["o4"], "one victim on d2 beats two on d1");
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Nominate { node, .. } if node == "d2"))
    );
    // While the victim terminates, nothing more is evicted.
    state.bound[3].terminating = true;
    let mut again = want.clone();
    again.nominated = Some(("d2".into(), now() + TimeDelta::seconds(30)));
    let a = plan(&state, &[again], now());
    assert!(!a.iter().any(|x| matches!(x, Action::Evict { .. })), "{a:?}");
    // Once gone, it binds there.
    state.bound.pop();
    let a = plan(&state, &[want], now());
    assert_eq!(binds(&a), vec![("ded".into(), "d2".into(), false)]);
}

/// Regression: several dedicated pods preempting in one pass each chose the
/// same victim and the same free room, so some needed a second round (a
/// second grace period, past 30 s).
#[test]
fn pods_preempting_in_one_pass_share_out_victims_and_room() {
    let mut state = ClusterState {
        nodes: vec![node("d1", Pool::Dedicated, 16)],
        tenants: tenants(&[("acme", 3, 0), ("beta", 0, 100)]),
        ..ClusterState::default()
    };
    // 2 cores free, two 7-core borrowed pods.
    state.bound = vec![
        bound("o1", "beta", Pool::Shared, 0, 7000, true, 200),
        bound("o2", "beta", Pool::Shared, 0, 7000, true, 100),
    ];
    let queue: Vec<PendingPod> = ["p1", "p2", "p3"]
        .iter()
        .map(|u| pending(u, "acme", Pool::Dedicated, Role::Executor, 4000, 0))
        .collect();
    let a = plan(&state, &queue, now());
    let evicted: Vec<String> = a
        .iter()
        .filter_map(|x| match x {
            Action::Evict { pod, .. } => Some(pod.clone()),
            _ => None,
        })
        .collect();
    // p1 takes the 2 free cores and 2 of o2's 7; p2 the other 4 of o2's;
    // p3 needs o1 too. 2 + 14 = 16 cores hold all three (12).
    assert_eq!(evicted, vec!["o2".to_string(), "o1".to_string()], "{a:?}");
    let nominated = a
        .iter()
        .filter(|x| matches!(x, Action::Nominate { node, .. } if node == "d1"))
        .count();
    assert_eq!(nominated, 3, "{a:?}");
    assert!(binds(&a).is_empty());
    // Once both are gone all three bind in one pass.
    state.bound.clear();
    assert_eq!(binds(&plan(&state, &queue, now())).len(), 3);
}

/// Regression: room freed by preemption went to whichever dedicated pod came
/// first in the queue, and the pod it was freed for preempted again.
#[test]
fn room_freed_by_preemption_goes_to_the_pod_it_was_freed_for() {
    let state = ClusterState {
        nodes: vec![node("d1", Pool::Dedicated, 8), node("d2", Pool::Dedicated, 8)],
        tenants: tenants(&[("acme", 4, 0)]),
        bound: vec![bound("busy", "acme", Pool::Dedicated, 1, 8000, false, 60)],
        ..ClusterState::default()
    };
    let older = pending("a-older", "acme", Pool::Dedicated, Role::Executor, 6000, 30);
    let mut nominated = pending("b-nominated", "acme", Pool::Dedicated, Role::Executor, 6000, 5);
    nominated.nominated = Some(("d1".into(), now() + TimeDelta::seconds(20)));
    let a = plan(&state, &[older.clone(), nominated.clone()], now());
    assert_eq!(binds(&a), vec![("b-nominated".into(), "d1".into(), false)], "{a:?}");
    // Regression (issue 21): the nomination was a position in the node list,
    // which a relist rebuilds in another order; the held room then sat on
    // the wrong node. By name it follows d1 wherever the list puts it.
    let mut relisted = state.clone();
    relisted.nodes.reverse();
    for b in &mut relisted.bound {
        b.node = 1 - b.node;
    }
    let a = plan(&relisted, &[older.clone(), nominated.clone()], now());
    assert_eq!(binds(&a), vec![("b-nominated".into(), "d1".into(), false)], "{a:?}");
    // A nominated node that left the cluster holds nothing.
    relisted.nodes.retain(|n| n.name != "d1");
    for b in &mut relisted.bound {
        b.node = 0;
    }
    let a = plan(&relisted, &[older, nominated], now());
    assert!(binds(&a).is_empty(), "d2 is full: {a:?}");
}

#[test]
fn dedicated_pods_beyond_the_tenants_units_wait() {
    let state = ClusterState {
        nodes: vec![node("d1", Pool::Dedicated, 32)],
        tenants: tenants(&[("acme", 1, 0)]),
        bound: vec![bound("x", "acme", Pool::Dedicated, 0, 3000, false, 10)],
        ..ClusterState::default()
    };
    let a = plan(
        &state,
        &[pending("p", "acme", Pool::Dedicated, Role::Executor, 2000, 0)],
        now(),
    );
    assert!(binds(&a).is_empty());
    assert_eq!(
        events(&a)[0].2,
        "tenant acme's dedicated units are in use: this needs 2000 mCPU, 1000 of 4000 mCPU are free"
    );
}

#[test]
fn gangs_are_all_or_nothing_and_their_room_is_held() {
    let mut state = ClusterState {
        nodes: vec![node("s1", Pool::Shared, 8)],
        tenants: tenants(&[("acme", 0, 100), ("beta", 0, 100)]),
        ..ClusterState::default()
    };
    let mut driver = pending("drv", "acme", Pool::Shared, Role::Driver, 1000, 10);
    driver.app = Some("app-1".into());
    driver.gang = Some(GangSpec {
        executors: 4,
        executor: Resources::pod(2000, GI),
    });
    // 1 + 4 × 2 = 9 cores > 8: the driver is not bound at all.
    let a = plan(&state, std::slice::from_ref(&driver), now());
    assert!(binds(&a).is_empty(), "{a:?}");
    driver.gang = Some(GangSpec {
        executors: 3,
        executor: Resources::pod(2000, GI),
    });
    let other = pending("other", "beta", Pool::Shared, Role::Driver, 2000, 5);
    let a = plan(&state, &[driver.clone(), other.clone()], now());
    assert_eq!(
        binds(&a),
        vec![("drv".into(), "s1".into(), false)],
        "beta cannot take the held room: {a:?}"
    );
    let reservation = a
        .iter()
        .find_map(|x| match x {
            Action::Reserve(r) => Some(r.clone()),
            _ => None,
        })
        .expect("room held");
    assert_eq!(reservation.room.cpu, 6000);
    // Executors bind from the held room; the reservation shrinks to nothing.
    state.bound.push(BoundPod {
        app: Some("app-1".into()),
        role: Role::Driver,
        ..bound("drv", "acme", Pool::Shared, 0, 1000, false, 0)
    });
    state.reservations.push(reservation);
    let execs: Vec<PendingPod> = (0..3)
        .map(|i| PendingPod {
            app: Some("app-1".into()),
            ..pending(&format!("e{i}"), "acme", Pool::Shared, Role::Executor, 2000, 0)
        })
        .collect();
    let mut queue = execs.clone();
    queue.push(other);
    let a = plan(&state, &queue, now());
    assert_eq!(binds(&a).len(), 3, "{a:?}");
    assert!(a.iter().any(|x| matches!(x, Action::Release { app } if app == "app-1")));
    // An expired reservation is released.
    let mut expired = state.clone();
    expired.reservations[0].until = now() - TimeDelta::seconds(1);
    assert!(
        plan(&expired, &execs, now())
            .iter()
            .any(|x| matches!(x, Action::Release { .. }))
    );
    // So is one whose driver is gone, even with executors still waiting.
    let mut orphaned = state.clone();
    orphaned.bound.clear();
    assert!(
        plan(&orphaned, &execs, now())
            .iter()
            .any(|x| matches!(x, Action::Release { app } if app == "app-1"))
    );
}

#[test]
fn shared_capacity_follows_purchased_weights() {
    let state = ClusterState {
        nodes: (0..5).map(|i| node(&format!("s{i}"), Pool::Shared, 8)).collect(),
        tenants: tenants(&[("small", 0, 100), ("big", 0, 300)]),
        ..ClusterState::default()
    };
    let mut queue = Vec::new();
    for i in 0..100 {
        queue.push(pending(
            &format!("s{i}"),
            "small",
            Pool::Shared,
            Role::Executor,
            1000,
            60 - i % 60,
        ));
        queue.push(pending(
            &format!("b{i}"),
            "big",
            Pool::Shared,
            Role::Executor,
            1000,
            60 - i % 60,
        ));
    }
    let a = plan(&state, &queue, now());
    let b = binds(&a);
    assert_eq!(b.len(), 40);
    let small = b.iter().filter(|(p, ..)| p.starts_with('s')).count();
    assert_eq!((small, b.len() - small), (10, 30), "1:3 weights");
}

#[test]
fn aging_keeps_a_low_weight_tenant_from_starving() {
    let state = ClusterState {
        nodes: vec![node("s0", Pool::Shared, 4)],
        tenants: tenants(&[("small", 0, 1), ("big", 0, 1000)]),
        bound: vec![bound("x", "small", Pool::Shared, 0, 0, false, 0)],
        ..ClusterState::default()
    };
    // small already uses a lot relative to its weight, but has waited past the aging period.
    let mut state = state;
    state.bound[0].requests = Resources::pod(0, 0);
    state.nodes.push(node("s1", Pool::Shared, 100));
    state.bound.push(bound("y", "small", Pool::Shared, 1, 50_000, false, 0));
    let queue = vec![
        pending("old", "small", Pool::Shared, Role::Executor, 1000, 3600),
        pending("new", "big", Pool::Shared, Role::Executor, 1000, 0),
    ];
    let a = plan(&state, &queue, now());
    assert_eq!(binds(&a)[0].0, "old");
}

#[test]
fn idle_dedicated_capacity_is_lent_to_executors_only_least_served_first() {
    let mut state = ClusterState {
        nodes: vec![node("d1", Pool::Dedicated, 4), node("s1", Pool::Shared, 1)],
        tenants: tenants(&[("acme", 1, 0), ("busy", 0, 100), ("quiet", 0, 100)]),
        ..ClusterState::default()
    };
    state.tenants.get_mut(&tid("busy")).unwrap().recent_utilisation = 900;
    state.tenants.get_mut(&tid("quiet")).unwrap().recent_utilisation = 100;
    let queue = vec![
        pending("busy-e", "busy", Pool::Shared, Role::Executor, 3000, 100),
        pending("quiet-e", "quiet", Pool::Shared, Role::Executor, 3000, 10),
        pending("quiet-d", "quiet", Pool::Shared, Role::Driver, 3000, 10),
    ];
    // Not idle long enough yet: nothing is lent.
    state.dedicated_idle_since = observe_dedicated_idle(&state, now());
    assert_eq!(state.dedicated_idle_since, Some(now()));
    assert!(binds(&plan(&state, &queue, now())).is_empty());
    let later = now() + TimeDelta::minutes(6);
    state.dedicated_idle_since = observe_dedicated_idle(&state, later);
    let a = plan(&state, &queue, later);
    assert_eq!(binds(&a), vec![("quiet-e".into(), "d1".into(), true)], "{a:?}");
    // Busy dedicated capacity is not lent.
    state
        .bound
        .push(bound("own", "acme", Pool::Dedicated, 0, 4000, false, 0));
    assert_eq!(observe_dedicated_idle(&state, later), None);
}

/// Issue 22: a shared gang that does not fit in shared room is admitted on
/// shared plus lendable dedicated room; the shared part is held, the rest of
/// its executors borrow. Its driver never borrows.
#[test]
fn a_shared_gang_counts_on_lendable_room_for_its_executors() {
    let mut state = ClusterState {
        nodes: vec![node("d1", Pool::Dedicated, 8), node("s1", Pool::Shared, 4)],
        tenants: tenants(&[("acme", 2, 0), ("beta", 0, 100)]),
        ..ClusterState::default()
    };
    let mut driver = pending("drv", "beta", Pool::Shared, Role::Driver, 1000, 10);
    driver.app = Some("app-b".into());
    driver.gang = Some(GangSpec {
        executors: 3,
        executor: Resources::pod(2000, GI),
    });
    // Not lending: 1 + 3 × 2 = 7 cores > 4 shared, the driver waits.
    assert!(binds(&plan(&state, std::slice::from_ref(&driver), now())).is_empty());
    state.dedicated_idle_since = Some(now() - TimeDelta::minutes(10));
    let a = plan(&state, std::slice::from_ref(&driver), now());
    assert_eq!(binds(&a), vec![("drv".into(), "s1".into(), false)], "{a:?}");
    // Shared room left after the driver (3 cores) holds one executor.
    let held: Vec<Resources> = a
        .iter()
        .filter_map(|x| match x {
            Action::Reserve(r) => Some(r.room),
            _ => None,
        })
        .collect();
    assert_eq!(held, vec![Resources::pod(2000, GI)]);
    // Its executors: one in the held shared room, two borrowed.
    state.bound.push(bound("drv", "beta", Pool::Shared, 1, 1000, false, 0));
    state.reservations = a
        .iter()
        .filter_map(|x| match x {
            Action::Reserve(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let execs: Vec<PendingPod> = (0..3)
        .map(|i| {
            let mut e = pending(&format!("e{i}"), "beta", Pool::Shared, Role::Executor, 2000, 5);
            e.app = Some("app-b".into());
            e
        })
        .collect();
    let mut placed = binds(&plan(&state, &execs, now()));
    placed.sort();
    assert_eq!(
        placed,
        vec![
            ("e0".into(), "s1".into(), false),
            ("e1".into(), "d1".into(), true),
            ("e2".into(), "d1".into(), true)
        ]
    );
}

#[test]
fn exhausted_tenants_drivers_wait_but_executors_run() {
    let mut state = ClusterState {
        nodes: vec![node("s1", Pool::Shared, 8)],
        tenants: tenants(&[("broke", 0, 100)]),
        ..ClusterState::default()
    };
    state.tenants.get_mut(&tid("broke")).unwrap().exhausted = true;
    let a = plan(
        &state,
        &[
            pending("d", "broke", Pool::Shared, Role::Driver, 1000, 0),
            pending("e", "broke", Pool::Shared, Role::Executor, 1000, 0),
        ],
        now(),
    );
    assert_eq!(binds(&a), vec![("e".into(), "s1".into(), false)]);
    assert_eq!(events(&a)[0].1, "InsufficientBalance");
}

#[test]
fn taints_selectors_and_cordons_are_honoured() {
    let mut state = ClusterState {
        nodes: vec![
            node("s1", Pool::Shared, 8),
            node("s2", Pool::Shared, 8),
            node("s3", Pool::Shared, 8),
        ],
        tenants: tenants(&[("acme", 0, 100)]),
        ..ClusterState::default()
    };
    state.nodes[0].schedulable = false;
    state.nodes[1].taints.push(Taint {
        key: "gpu".into(),
        value: "".into(),
        effect: "NoSchedule".into(),
    });
    state.nodes[2].labels.insert("zone".into(), "a".into());
    let mut p = pending("p", "acme", Pool::Shared, Role::Executor, 1000, 0);
    p.node_requirements = vec![NodeRequirement::In("zone".into(), vec!["b".into()])];
    let a = plan(&state, std::slice::from_ref(&p), now());
    assert_eq!(
        events(&a)[0].2,
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint, 1 node(s) were unschedulable."
    );
    p.node_requirements = vec![NodeRequirement::In("zone".into(), vec!["a".into()])];
    assert_eq!(
        binds(&plan(&state, &[p], now())),
        vec![("p".into(), "s3".into(), false)]
    );
}

fn arb_state() -> impl Strategy<Value = (ClusterState, Vec<PendingPod>)> {
    let pools = prop_oneof![Just(Pool::Dedicated), Just(Pool::Shared), Just(Pool::Draft)];
    (
        prop::collection::vec((pools.clone(), 1i64..16), 1..12),
        prop::collection::vec((pools, 0usize..3, 1i64..6000, any::<bool>(), 0i64..600), 0..60),
        prop::collection::vec((0usize..3, 1i64..4000, 0usize..12, any::<bool>()), 0..30),
        0i64..3,
    )
        .prop_map(|(nodes, pods, bounds, idle_minutes)| {
            let names = ["a", "b", "c"];
            let nodes: Vec<Node> = nodes
                .iter()
                .enumerate()
                .map(|(i, (p, c))| node(&format!("n{i}"), *p, *c))
                .collect();
            let mut state = ClusterState {
                tenants: tenants(&[("a", 2, 100), ("b", 1, 300), ("c", 0, 50)]),
                ..ClusterState::default()
            };
            for (i, (t, cpu, n, opp)) in bounds.into_iter().enumerate() {
                let n = n % nodes.len();
                let pool = nodes[n].pool.unwrap();
                let used: i64 = state.bound.iter().filter(|b| b.node == n).map(|b| b.requests.cpu).sum();
                if used + cpu <= nodes[n].allocatable.cpu {
                    let opp = opp && pool == Pool::Dedicated;
                    state.bound.push(bound(
                        &format!("b{i}"),
                        names[t],
                        if opp { Pool::Shared } else { pool },
                        n,
                        cpu,
                        opp,
                        i as i64,
                    ));
                }
            }
            state.nodes = nodes;
            state.dedicated_idle_since = Some(now() - TimeDelta::minutes(idle_minutes * 5));
            let queue = pods
                .into_iter()
                .enumerate()
                .map(|(i, (pool, t, cpu, driver, age))| {
                    let mut p = pending(
                        &format!("p{i}"),
                        names[t],
                        pool,
                        if driver { Role::Driver } else { Role::Executor },
                        cpu,
                        age,
                    );
                    if driver && i % 3 == 0 {
                        p.gang = Some(GangSpec {
                            executors: (i % 4) as i64,
                            executor: Resources::pod(1000, GI),
                        });
                    }
                    p
                })
                .collect();
            (state, queue)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Shared-pool tenants that all want more than the pool converge to their
    /// weights: weighted fair queueing's bound — a tenant of weight w among n
    /// gets its share of the cores, at most n·w/W pods over, under n short.
    #[test]
    fn fair_shares_converge_to_the_weights(
        weights in prop::collection::vec(1i64..1000, 2..6),
        node_count in 1usize..8,
    ) {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("t{i}")).collect();
        let list: Vec<(&str, i64, i64)> = names.iter().zip(&weights).map(|(n, w)| (n.as_str(), 0, *w)).collect();
        let state = ClusterState {
            nodes: (0..node_count).map(|i| node(&format!("s{i}"), Pool::Shared, 8)).collect(),
            tenants: tenants(&list),
            ..ClusterState::default()
        };
        let cores = node_count as i64 * 8;
        let mut queue = Vec::new();
        for n in &names {
            for k in 0..=cores {
                queue.push(pending(&format!("{n}-{k:03}"), n, Pool::Shared, Role::Executor, 1000, 0));
            }
        }
        let b = binds(&plan(&state, &queue, now()));
        prop_assert_eq!(b.len() as i64, cores);
        let total: i64 = weights.iter().sum();
        for (n, w) in names.iter().zip(&weights) {
            let got = b.iter().filter(|(p, ..)| p.starts_with(&format!("{n}-"))).count() as f64;
            let share = (cores * w) as f64 / total as f64;
            let tenants_n = weights.len() as f64;
            let over = tenants_n * *w as f64 / total as f64;
            prop_assert!(
                got <= share + over + 1e-9 && got > share - tenants_n,
                "{n}: {got} cores for a share of {share:.2}"
            );
        }
    }

    /// No node is overcommitted; every bind is in the pod's pool (or borrowed
    /// dedicated capacity, executors only); dedicated tenants stay within
    /// their units; gangs bind their driver only with room for all executors.
    #[test]
    fn plans_respect_capacity_pools_guarantees_and_gangs((state, queue) in arb_state()) {
        let actions = plan(&state, &queue, now());
        let mut used: Vec<Resources> = vec![Resources::default(); state.nodes.len()];
        for b in &state.bound { used[b.node] = used[b.node].plus(&b.requests); }
        let mut dedicated: HashMap<TenantId, i64> = HashMap::new();
        for b in state.bound.iter().filter(|b| b.pool == Pool::Dedicated && !b.opportunistic) {
            *dedicated.entry(b.tenant.clone()).or_default() += b.requests.cpu;
        }
        let by_uid: HashMap<&str, &PendingPod> = queue.iter().map(|p| (p.uid.as_str(), p)).collect();
        let mut bound_uids = std::collections::HashSet::new();
        for (uid, node_name, opportunistic) in binds(&actions) {
            prop_assert!(bound_uids.insert(uid.clone()), "bound twice");
            let pod = by_uid[uid.as_str()];
            let n = state.nodes.iter().position(|n| n.name == node_name).unwrap();
            used[n] = used[n].plus(&pod.requests);
            prop_assert!(state.nodes[n].allocatable.fits(&used[n]), "node {} overcommitted", node_name);
            if opportunistic {
                prop_assert_eq!(state.nodes[n].pool, Some(Pool::Dedicated));
                prop_assert_eq!(pod.role, Role::Executor);
                prop_assert_eq!(pod.pool, Pool::Shared);
            } else {
                prop_assert_eq!(state.nodes[n].pool, Some(pod.pool));
            }
            if pod.pool == Pool::Dedicated && !opportunistic {
                let gang = pod.gang.map_or(0, |g| g.executors * g.executor.cpu);
                let d = dedicated.entry(pod.tenant.clone()).or_default();
                *d += pod.requests.cpu + gang;
                let units = state.tenants[&pod.tenant].dedicated_units;
                prop_assert!(*d <= units * 4000, "tenant {} over its dedicated units", pod.tenant);
            }
            if let (Role::Driver, Some(g)) = (pod.role, pod.gang)
                && g.executors > 0
            {
                // The whole gang is held in the driver's pool; or, for a
                // shared gang while dedicated capacity is lent, the part
                // shared room could take (the rest borrows).
                let full = g.executors * g.executor.cpu;
                let held = actions
                    .iter()
                    .find_map(|a| match a {
                        Action::Reserve(r) if Some(&r.app) == pod.app.as_ref() => Some(r.room.cpu),
                        _ => None,
                    })
                    .unwrap_or(0);
                prop_assert!(
                    held == full || (pod.pool == Pool::Shared && state.dedicated_idle_since.is_some() && held < full),
                    "gang of {} mCPU, {} held", full, held
                );
            }
        }
    }

    /// Victim choice is minimal: no node could have been freed with fewer evictions.
    #[test]
    fn preemption_is_minimal((mut state, _) in arb_state(), cpu in 1000i64..8000) {
        state.tenants.get_mut(&tid("a")).unwrap().dedicated_units = 100;
        let want = pending("want", "a", Pool::Dedicated, Role::Executor, cpu, 0);
        let actions = plan(&state, std::slice::from_ref(&want), now());
        let evicted = actions.iter().filter(|a| matches!(a, Action::Evict { .. })).count();
        if evicted > 0 {
            // Brute force: per node, the fewest borrowed pods (largest first) that make room.
            let mut best = usize::MAX;
            for (i, n) in state.nodes.iter().enumerate().filter(|(_, n)| n.pool == Some(Pool::Dedicated)) {
                let used: i64 = state.bound.iter().filter(|b| b.node == i).map(|b| b.requests.cpu).sum();
                let mut borrowed: Vec<i64> = state.bound.iter().filter(|b| b.node == i && b.opportunistic).map(|b| b.requests.cpu).collect();
                borrowed.sort_unstable_by(|a, b| b.cmp(a));
                let mut free = n.allocatable.cpu - used;
                for (k, c) in borrowed.iter().enumerate() {
                    if free >= cpu { best = best.min(k); break; }
                    free += c;
                    if free >= cpu { best = best.min(k + 1); break; }
                }
            }
            // Newest-first is the policy; it may need more than largest-first, never fewer.
            prop_assert!(evicted >= best);
            prop_assert!(binds(&actions).is_empty());
        }
    }
}
