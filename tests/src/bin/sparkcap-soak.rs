//! `sparkcap-soak`: the seeded soak. The test control plane, the webhook and
//! two scheduler replicas run as their own processes on PostgreSQL; many
//! tenants keep hundreds of Spark jobs in flight while a fault strikes every
//! few seconds (SIGKILL and SIGSTOP of any component, crash points, watch
//! cuts and expiries, PostgreSQL backends terminated, the database slowed or
//! cut). At the end it prints the load held, the faults injected and the
//! ledger check, and exits non-zero unless every pod was charged exactly.
//!
//!   ./scripts/soak.sh --minutes 30 --tenants 100 --jobs 500 [--seed N]
//!
//! Not part of CI: it runs for as long as it is told.

use clap::Parser;
use sparkcap_testkit::apiserver::watch_faults::WatchFaultConfig;
use sparkcap_testkit::harness::jobs::JobMix;
use sparkcap_testkit::harness::plan::FaultMix;
use sparkcap_testkit::harness::{Harness, HarnessConfig, SCHEDULER_CRASH_POINTS, WEBHOOK_CRASH_POINTS, tenant};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(about = "Seeded soak of sparkcap under random faults; prints the load held, the faults and the ledger check")]
struct Args {
    /// How long faults strike (the jobs in flight then finish and the ledger is checked).
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Tenants, each with 10,000 prepaid vCPU-hours.
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Spark jobs kept in flight.
    #[arg(long, default_value_t = 500)]
    jobs: usize,
    /// Executors per job.
    #[arg(long, default_value_t = 2)]
    executors: u32,
    /// Shortest and longest driver run, seconds (`60-180`).
    #[arg(long, default_value = "60-180", value_parser = parse_range)]
    run_seconds: (u64, u64),
    /// Shared-pool nodes of 16 cores (default: room for every job in flight).
    #[arg(long)]
    nodes: Option<usize>,
    /// Seed of the faults, the jobs and the watch faults (random when omitted).
    #[arg(long)]
    seed: Option<u64>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected LOW-HIGH seconds, e.g. 60-180"))?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?,
        b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?,
    );
    if a == 0 || a > b {
        return Err(format!("{s:?}: need 0 < LOW <= HIGH"));
    }
    Ok((a, b))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tenants == 0 || args.jobs == 0 {
        anyhow::bail!("--tenants and --jobs must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let (driver_cpu, executor_cpu) = (500i64, 1000i64);
    let cores_in_flight = args.jobs as i64 * (driver_cpu + executor_cpu * args.executors as i64) / 1000;
    let nodes = args.nodes.unwrap_or((cores_in_flight as usize).div_ceil(16) + 2);
    println!(
        "soak: seed {seed} (--seed {seed} replays it), {} min of faults, {} tenants, {} jobs in flight \
         ({} executors, {}-{} s), {nodes} nodes",
        args.minutes, args.tenants, args.jobs, args.executors, args.run_seconds.0, args.run_seconds.1
    );
    let config = HarnessConfig {
        seed,
        tenants: args.tenants,
        vcpu_hours: 10_000,
        nodes,
        dedicated_nodes: 2,
        schedulers: 2,
        mix: FaultMix::soak(),
        watch_faults: WatchFaultConfig {
            seed,
            cut: 0.002,
            expire: 0.2,
            max_delay_ms: 10,
        },
        scheduler_crash_points: SCHEDULER_CRASH_POINTS.into(),
        webhook_crash_points: WEBHOOK_CRASH_POINTS.into(),
    };
    let tenants = (0..args.tenants).map(tenant).collect();
    let mut h = Harness::start(config).await?;
    println!("components up (logs in {})", h.dir.display());
    let mix = JobMix {
        tenants,
        concurrent: args.jobs,
        total: None,
        run_seconds: args.run_seconds,
        executors: (args.executors, args.executors),
        driver_cpu,
        executor_cpu,
        delete_when_metered: true,
        scale_down: 0.02,
    };
    let faults_for = Duration::from_secs(args.minutes * 60);
    let limit = faults_for + Duration::from_secs(args.run_seconds.1 * 3 + 600);
    let last_print = std::cell::Cell::new(std::time::Instant::now());
    let report = h
        .run(mix, limit, |stats, h| {
            if last_print.get().elapsed() >= Duration::from_secs(60) {
                last_print.set(std::time::Instant::now());
                println!(
                    "  {:>4.0} s: {} jobs finished, {} pods created, {} faults injected",
                    h.elapsed().as_secs_f64(),
                    stats.jobs_finished,
                    stats.pods_created,
                    h.injected.values().sum::<u64>()
                );
            }
            h.elapsed() >= faults_for
        })
        .await?;
    println!("{report}");
    let passed = report.check.passed();
    h.finish().await;
    if !passed {
        anyhow::bail!("the ledger check failed");
    }
    Ok(())
}
