//! The simulator: deterministic, conserving, matching hand-computed figures,
//! and the same over Postgres as over the in-memory ledger.

use sparkcap_ledger::MemoryStore;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_scheduler::sim::{self, Options, Report, Trace, default_day};

fn options(seed: u64) -> Options {
    Options {
        seed,
        origin: "test".into(),
        progress: false,
        lending: true,
    }
}

async fn simulate(trace: &Trace, seed: u64) -> Report {
    sim::run(trace, &MemoryStore::new(), &options(seed)).await.unwrap()
}

fn short_day(seed: u64, hours: i64) -> Trace {
    let mut t = default_day::trace(seed);
    t.duration = sim::trace::Dur(hours * 3600);
    t
}

#[tokio::test]
async fn the_same_seed_gives_the_same_report() {
    let a = simulate(&short_day(3, 3), 3).await;
    let b = simulate(&short_day(3, 3), 3).await;
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    let c = simulate(&short_day(4, 3), 4).await;
    assert_ne!(a.jobs.submitted, 0);
    assert_ne!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&c).unwrap());
}

/// Charged vCPU-seconds equal the sum over completed and running pods; no
/// node is ever overcommitted; the ledger's own audit is clean.
#[tokio::test]
async fn usage_is_conserved_and_nodes_never_overcommitted() {
    let r = simulate(&short_day(5, 4), 5).await;
    let c = &r.checks;
    assert_eq!(c.overcommitted_binds, 0);
    assert!(c.accrual_rejections.is_empty(), "{:?}", c.accrual_rejections);
    assert!(c.audit_violations.is_empty(), "{:?}", c.audit_violations);
    assert_eq!(c.ledger_charged_mc_seconds, c.pods_charged_mc_seconds);
    assert_eq!(c.ledger_opportunistic_mc_seconds, c.pods_opportunistic_mc_seconds);
    assert!(c.ledger_charged_mc_seconds > 0);
    let per_tenant: i64 = r.tenants.values().map(|t| t.charged_mc_seconds).sum();
    assert_eq!(per_tenant, c.ledger_charged_mc_seconds);
    assert!(r.jobs.peak_running > 50, "{:?}", r.jobs);
}

const ANALYTIC: &str = r#"
duration: 2h
settings: {pod_startup: 2s, executor_request_delay: 3s, executor_shutdown: 5s, sample_every: 10m}
pools:
  shared: [{count: 1, cpu: 8, memory: 64Gi}]
tenants:
  - id: acme
    purchases: [{kind: vcpu_hours, quantity: 100, period: daily}]
    jobs:
      - name: ingest
        schedule: "*/30 * * * *"
        driver: {cpu: 1, memory: 2Gi}
        executors: {count: 2, cpu: 2, memory: 4g}
        duration: {fixed: 10m}
        sla: 11m
        previous_runs: 10
"#;

/// Four runs on one node, worked out by hand: the driver binds at once,
/// runs from +2 s; executors are created at +5 s, bound at once, run from
/// +7 s for 600 s of work; the driver ends at +607 s and its executors
/// stop 5 s later.
#[tokio::test]
async fn a_small_trace_matches_the_figures_worked_out_by_hand() {
    let trace = Trace::parse(ANALYTIC, "analytic").unwrap();
    let r = simulate(&trace, 1).await;
    assert_eq!(r.jobs.submitted, 4);
    assert_eq!(r.jobs.completed, 4);
    assert_eq!(r.jobs.wait_p95_s, 0);
    assert_eq!(r.jobs.sla_missed, 0, "607 s < 660 s");
    assert_eq!(r.denials, 0);
    let per_run = 1000 * (607 - 2) + 2 * 2000 * (612 - 7);
    let acme = &r.tenants["acme"];
    assert_eq!(acme.charged_mc_seconds, 4 * per_run);
    assert_eq!(
        acme.charged_vcpu_hours,
        ((4 * per_run) as f64 / 3_600_000.0 * 1000.0).round() / 1000.0
    );
    assert_eq!(acme.balance_end_vcpu_hours, 100.0 - acme.charged_vcpu_hours);
    // Held cpu: the driver for 607 s, two executors from +5 s to +612 s.
    let area = 4 * (1000 * 607 + 2 * 2000 * 607);
    let mean = area as f64 / (8000.0 * 7200.0);
    assert_eq!(r.pools["shared"].utilization.mean, (mean * 10_000.0).round() / 10_000.0);
    assert_eq!(r.spark_units["shared"], 2);
    // Samples every 10 minutes, 0 through 2 h inclusive.
    assert_eq!(r.series.t_s.len(), 13);
    assert_eq!(r.pools["shared"].utilization.series[1], 5000.0 / 8000.0);
    assert!(r.checks_passed());

    // With a tighter SLA every run misses it.
    let tight = Trace::parse(&ANALYTIC.replace("sla: 11m", "sla: 10m"), "tight").unwrap();
    assert_eq!(simulate(&tight, 1).await.jobs.sla_missed, 4);
}

const PREEMPTION: &str = r#"
duration: 1h
pools:
  dedicated: [{count: 1, cpu: 16, memory: 64Gi}]
  shared: [{count: 1, cpu: 4, memory: 16Gi}]
tenants:
  - id: owner
    purchases: [{kind: dedicated_units, quantity: 2}]
    jobs:
      - name: report
        schedule: "30 * * * *"
        driver: {cpu: 1, memory: 2Gi}
        executors: {count: 3, cpu: 2, memory: 4g}
        duration: {fixed: 10m}
        previous_runs: 10
  - id: borrower
    purchases: [{kind: vcpu_hours, quantity: 1000, period: daily}]
    jobs:
      - name: etl
        schedule: "10 * * * *"
        driver: {cpu: 1, memory: 2Gi}
        executors: {count: 1, max: 7, cpu: 2, memory: 4g}
        duration: {fixed: 6h}   # executor-time at the initial size: ~50 min with 7
        previous_runs: 10
"#;

/// The borrower's dynamic executors overflow the shared pool onto the idle
/// dedicated node (not charged); the owner's job at :30 takes it back.
#[tokio::test]
async fn borrowed_capacity_is_taken_back_within_30_seconds() {
    let trace = Trace::parse(PREEMPTION, "preemption").unwrap();
    let r = simulate(&trace, 1).await;
    let borrower = &r.tenants["borrower"];
    assert!(borrower.opportunistic_vcpu_hours > 0.0, "{borrower:?}");
    assert!(r.preemptions.count >= 1, "{:?} {:?}", r.preemptions, r.engine);
    assert_eq!(r.preemptions.unmet, 0);
    assert!(r.preemptions.max_free_latency_s <= 30, "{:?}", r.preemptions);
    assert_eq!(r.preemptions.by_tenant.get("borrower"), Some(&r.preemptions.count));
    assert_eq!(r.tenants["owner"].jobs_completed, 1);
    assert!(r.checks_passed(), "{:?}", r.checks);
}

/// With `--database-url` the accruals go through the Postgres store; the
/// report is the same as over the in-memory ledger.
#[tokio::test]
async fn postgres_and_memory_ledgers_give_the_same_report() {
    let db = TestDatabase::create().await.unwrap();
    let store = db.store().await.unwrap();
    store.migrate().await.unwrap();
    let trace = Trace::parse(PREEMPTION, "preemption").unwrap();
    let pg = sim::run(&trace, &store, &options(1)).await.unwrap();
    let mem = simulate(&trace, 1).await;
    assert_eq!(serde_json::to_value(&pg).unwrap(), serde_json::to_value(&mem).unwrap());
    // A database that already holds tenants is refused.
    let again = sim::run(&trace, &store, &options(1)).await.unwrap_err().to_string();
    assert!(again.contains("needs an empty database"), "{again}");
    drop(store);
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn the_html_report_is_self_contained() {
    let r = simulate(&Trace::parse(ANALYTIC, "analytic").unwrap(), 1).await;
    let dir = std::env::temp_dir().join(format!("sparkcap-sim-{}", std::process::id()));
    let (json, html) = sim::write_outputs(&r, &dir).unwrap();
    let back: Report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(back, r);
    let page = std::fs::read_to_string(html).unwrap();
    assert_eq!(page.matches("<svg").count(), 5);
    for forbidden in ["<script", "http://", "https://", "<link", "src="] {
        assert!(!page.contains(forbidden), "{forbidden}");
    }
    let text = sim::compare::compare(&r, &back);
    assert!(text.contains("jobs completed"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_example_trace_reads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/trace.yaml");
    let t = Trace::load(std::path::Path::new(path)).unwrap();
    assert_eq!(t.tenants.len(), 2);
    assert_eq!(t.events.len(), 2);
}
