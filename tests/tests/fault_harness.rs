//! The fault harness's metering scenario: the test control plane, the
//! webhook and two scheduler replicas as separate processes on PostgreSQL,
//! 1,000 pods and more of Spark jobs running and finishing while the scheduler is
//! killed at least 20 times (SIGKILL and crash points inside the ledger's
//! commit, the meter, binds and elections), the leader frozen past its
//! lease, the webhook killed, the control plane frozen, PostgreSQL backends
//! terminated, the database slowed and cut, and watches cut, expired and
//! delayed. Every pod is charged cpu × its own run time exactly; the
//! ledger's journal keys are unique and each pod's lines tile its life.
//!
//! The seed is printed first; `FAULT_SEED=<seed>` replays it.

use sparkcap_testkit::harness::jobs::JobMix;
use sparkcap_testkit::harness::{Harness, HarnessConfig, tenant};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_exact_while_the_scheduler_is_killed_twenty_times() {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("fault harness seed {seed} (FAULT_SEED={seed} replays it)");
    let config = HarnessConfig::scheduler_kills(seed);
    let tenants = (0..config.tenants).map(tenant).collect();
    let mut h = Harness::start(config).await.expect("the harness starts");
    let mix = JobMix {
        tenants,
        concurrent: 40,
        total: Some(255),
        run_seconds: (8, 14),
        executors: (3, 3),
        driver_cpu: 500,
        executor_cpu: 1000,
        delete_when_metered: false,
        scale_down: 0.05,
    };
    // Faults go on until the last job is submitted and the plan has killed
    // a scheduler at least 20 times; the jobs in flight then finish.
    let report = h
        .run(mix, Duration::from_secs(600), |stats, h| {
            use sparkcap_testkit::harness::plan::FaultKind::{KillLeader, KillStandby};
            let kills: u64 = [KillLeader, KillStandby]
                .iter()
                .map(|k| h.injected.get(k).copied().unwrap_or(0))
                .sum();
            stats.jobs_started >= 255 && kills >= 20
        })
        .await
        .expect("the harness runs");
    eprintln!("{report}");
    // A driver that ends before all its executors could be made (the
    // webhook down meanwhile) has fewer pods: 255 jobs give at least 1,000.
    assert!(report.check.pods >= 1000, "{report}");
    assert_eq!(
        report.check.pods as u64, report.stats.pods_created,
        "every pod made is checked\n{report}"
    );
    assert!(report.scheduler_kills() >= 20, "{report}");
    assert!(report.check.passed(), "{report}\n{}", h.logs());
    assert!(
        report.crash_points.values().sum::<u64>() > 0,
        "no crash point struck: are the binaries built with the failpoints feature?\n{report}"
    );
    h.finish().await;
}
