//! `plan` at scale: 5,000 nodes and 10,000 pending pods (decisions/s = pods
//! decided per second of `plan`), victim selection over 1,000 dedicated nodes
//! full of borrowed pods (p50/p99), and the process's peak memory.
//!
//!   cargo bench -p sparkcap-scheduler --bench plan

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use sparkcap_ledger::{Pool, TenantId};
use sparkcap_scheduler::fit::FreeIndex;
use sparkcap_scheduler::model::*;
use sparkcap_scheduler::plan::{Borrowed, choose_victims, plan};
use std::time::Instant;

const GI: i64 = 1 << 30;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tol(pool: Pool) -> Vec<Toleration> {
    vec![Toleration {
        key: "sparkcap.io/pool".into(),
        operator: "Equal".into(),
        value: pool.to_string(),
        effect: "NoSchedule".into(),
    }]
}

/// 5,000 nodes of 32 cores (1,000 dedicated, 3,500 shared, 500 draft), 100
/// tenants, the cluster about half full, and `pending` pods of 1–4 cores.
fn cluster(pending: usize) -> (ClusterState, Vec<PendingPod>) {
    let mut state = ClusterState::default();
    for i in 0..5000 {
        let pool = match i % 10 {
            0 | 1 => Pool::Dedicated,
            9 => Pool::Draft,
            _ => Pool::Shared,
        };
        state.nodes.push(Node {
            name: format!("node-{i:04}"),
            pool: Some(pool),
            labels: [
                ("sparkcap.io/pool".to_string(), pool.to_string()),
                ("zone".into(), format!("z{}", i % 3)),
            ]
            .into(),
            taints: vec![Taint {
                key: "sparkcap.io/pool".into(),
                value: pool.to_string(),
                effect: "NoSchedule".into(),
            }],
            allocatable: Resources {
                cpu: 32_000,
                memory: 128 * GI,
                pods: 110,
            },
            schedulable: true,
        });
    }
    for t in 0..100 {
        state.tenants.insert(
            TenantId::new(format!("t{t:03}")).unwrap(),
            TenantState {
                dedicated_units: if t % 4 == 0 { 300 } else { 0 },
                weight: 100 + t,
                exhausted: false,
                recent_utilisation: t * 7 % 1000,
            },
        );
    }
    // Half full: 4 pods of 4 cores on every node.
    for (n, node) in state.nodes.iter().enumerate() {
        for k in 0..4 {
            let t = (n * 4 + k) % 100;
            let pool = node.pool.unwrap();
            state.bound.push(BoundPod {
                uid: format!("b-{n}-{k}"),
                name: format!("ns/b-{n}-{k}"),
                tenant: TenantId::new(format!("t{:03}", if pool == Pool::Dedicated { t / 4 * 4 } else { t })).unwrap(),
                pool,
                role: Role::Executor,
                app: Some(format!("bapp-{n}")),
                node: n,
                requests: Resources::pod(4000, 8 * GI),
                opportunistic: false,
                bound_at: now() - TimeDelta::seconds((n * 4 + k) as i64),
                terminating: false,
            });
        }
    }
    let queue = (0..pending)
        .map(|i| {
            let t = i % 100;
            let pool = match i % 10 {
                0 if t % 4 == 0 => Pool::Dedicated,
                9 => Pool::Draft,
                _ => Pool::Shared,
            };
            PendingPod {
                uid: format!("p-{i}"),
                name: format!("ns/p-{i}"),
                tenant: TenantId::new(format!("t{t:03}")).unwrap(),
                pool,
                role: if i % 8 == 0 { Role::Driver } else { Role::Executor },
                app: Some(format!("app-{}", i / 8)),
                requests: Resources::pod(1000 * (1 + (i % 4) as i64), 4 * GI),
                tolerations: tol(pool),
                node_requirements: if i % 5 == 0 {
                    vec![NodeRequirement::In("zone".into(), vec!["z1".into()])]
                } else {
                    vec![]
                },
                gang: None,
                created_at: now() - TimeDelta::seconds((i % 600) as i64),
                last_reason: None,
                nominated: None,
            }
        })
        .collect();
    (state, queue)
}

fn bench_plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    for pending in [1_000usize, 10_000] {
        let (state, queue) = cluster(pending);
        g.throughput(Throughput::Elements(pending as u64));
        g.bench_with_input(BenchmarkId::new("5000_nodes", pending), &pending, |b, _| {
            b.iter(|| plan(&state, &queue, now()))
        });
    }
    // An overfull queue: most pods cannot be placed and get a reason.
    let (mut state, queue) = cluster(10_000);
    for n in &mut state.nodes {
        n.allocatable.cpu = 17_000;
    }
    g.bench_function("5000_nodes_10000_pending_mostly_unschedulable", |b| {
        b.iter(|| plan(&state, &queue, now()))
    });
    g.finish();
}

fn victims_report() {
    // 1,000 dedicated nodes each full: 8 borrowed pods of 4 cores.
    let (mut state, _) = cluster(0);
    state.bound.retain(|b| b.pool != Pool::Dedicated);
    let dedicated: Vec<usize> = (0..state.nodes.len())
        .filter(|&i| state.nodes[i].pool == Some(Pool::Dedicated))
        .collect();
    for (k, &n) in dedicated.iter().enumerate() {
        for j in 0..8 {
            state.bound.push(BoundPod {
                uid: format!("o-{n}-{j}"),
                name: format!("ns/o-{n}-{j}"),
                tenant: TenantId::new("t001").unwrap(),
                pool: Pool::Shared,
                role: Role::Executor,
                app: Some(format!("oapp-{k}")),
                node: n,
                requests: Resources::pod(4000, 8 * GI),
                opportunistic: true,
                bound_at: now() - TimeDelta::seconds((k * 8 + j) as i64),
                terminating: false,
            });
        }
    }
    let mut used = vec![Resources::default(); state.nodes.len()];
    for b in &state.bound {
        used[b.node] = used[b.node].plus(&b.requests);
    }
    let free = FreeIndex::new(&state.nodes, &used).free;
    let t = Instant::now();
    let borrowed = Borrowed::new(&state);
    println!(
        "indexing 8,000 borrowed pods among {} (once per plan pass): {} µs",
        state.bound.len(),
        t.elapsed().as_micros()
    );
    let mut times = Vec::new();
    for i in 0..200 {
        let pod = PendingPod {
            uid: format!("want-{i}"),
            name: "ns/want".into(),
            tenant: TenantId::new("t000").unwrap(),
            pool: Pool::Dedicated,
            role: Role::Executor,
            app: None,
            requests: Resources::pod(2000 + 1000 * (i % 12) as i64, 4 * GI),
            tolerations: tol(Pool::Dedicated),
            node_requirements: vec![],
            gang: None,
            created_at: now(),
            last_reason: None,
            nominated: None,
        };
        let t = Instant::now();
        let chosen = choose_victims(&state, &borrowed, &free, &pod);
        times.push(t.elapsed().as_micros() as u64);
        assert!(chosen.is_some());
    }
    times.sort_unstable();
    println!(
        "victim selection over 1,000 dedicated nodes / 8,000 borrowed pods: p50 {} µs, p99 {} µs, max {} µs",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
}

fn peak_memory() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(l) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        println!(
            "peak resident memory of the benchmark process: {}",
            l.trim_start_matches("VmHWM:").trim()
        );
    }
}

criterion_group!(benches, bench_plan);

fn main() {
    victims_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
    peak_memory();
}
