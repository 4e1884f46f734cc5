//! `sparkcap-scheduler`: places Spark driver and executor pods into pools,
//! meters their vCPU-seconds into the ledger, and simulates a day of traffic.
//!
//! `run` schedules and meters against a cluster under Lease leader election;
//! `migrate` and `audit` look after the ledger. The virtual-time simulator
//! (`simulate`) arrives with its issue and is not offered until then.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sparkcap_ledger::{LedgerStore, PgStore};
use sparkcap_scheduler::leader::LeaseConfig;
use sparkcap_scheduler::shell::{ShellConfig, run_elected};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "sparkcap-scheduler",
    version,
    about = "sparkcap's secondary scheduler and vCPU ledger writer",
    long_about = "sparkcap's secondary scheduler and vCPU ledger writer.\n\n\
        `run`: schedule and meter Spark pods in a cluster (leader-elected replicas).\n\
        `migrate`: apply the ledger schema. `audit`: check the ledger's books.\n\
        Coming: `simulate` (a day of traffic in virtual time) and a metrics endpoint."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Schedule pods that name sparkcap-scheduler and meter them into the ledger, while holding the Lease.
    Run(RunArgs),
    /// Apply the ledger's migrations (under a Postgres advisory lock, so replicas migrate once) and exit.
    Migrate(Db),
    /// Check every invariant of the ledger's books and print what is broken; exits 1 if anything is.
    Audit(Db),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// PostgreSQL URL of the ledger.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sparkcap-system")]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "sparkcap-scheduler")]
    lease_name: String,
    /// This replica's identity (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: String,
    /// Lease duration, seconds.
    #[arg(long, default_value_t = 15)]
    lease_seconds: i64,
    /// A leader that cannot renew for this long steps down, seconds.
    #[arg(long, default_value_t = 10)]
    renew_deadline_seconds: i64,
    /// Time between lease attempts, seconds.
    #[arg(long, default_value_t = 2)]
    retry_seconds: u64,
    /// Time between accruals of running pods, seconds (at most 30).
    #[arg(long, default_value_t = 10)]
    meter_seconds: i64,
    /// Spark Unit size: cores (a dedicated unit's guarantee).
    #[arg(long, default_value_t = 4)]
    spark_unit_cores: i64,
}

#[derive(Debug, Args)]
struct Db {
    /// PostgreSQL URL of the ledger.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => {
            if !(1..=30).contains(&args.meter_seconds) {
                anyhow::bail!(
                    "--meter-seconds {} must be between 1 and 30: balances must be current within a minute",
                    args.meter_seconds
                );
            }
            if args.renew_deadline_seconds >= args.lease_seconds
                || args.retry_seconds as i64 >= args.renew_deadline_seconds
            {
                anyhow::bail!(
                    "need --retry-seconds < --renew-deadline-seconds < --lease-seconds (defaults 2 < 10 < 15)"
                );
            }
            let store = PgStore::connect(&args.database_url)
                .await
                .context("connecting to the ledger")?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
            let lease = LeaseConfig {
                lease_duration: chrono::TimeDelta::seconds(args.lease_seconds),
                renew_deadline: chrono::TimeDelta::seconds(args.renew_deadline_seconds),
                retry_period: std::time::Duration::from_secs(args.retry_seconds),
                ..LeaseConfig::new(&args.lease_namespace, &args.lease_name, &args.identity)
            };
            let mut config = ShellConfig {
                meter_period: chrono::TimeDelta::seconds(args.meter_seconds),
                ..ShellConfig::default()
            };
            config.policy.spark_unit.cpu = args.spark_unit_cores.saturating_mul(1000);
            // SIGTERM (Kubernetes) or Ctrl-C: stop and release the Lease.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
            let shutdown = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            run_elected(client, Arc::new(store), config, lease, shutdown).await?;
        }
        Command::Migrate(db) => {
            let store = PgStore::connect(&db.database_url)
                .await
                .context("connecting to the ledger")?;
            store.migrate().await.context("migrating the ledger")?;
            println!("ledger schema is up to date");
        }
        Command::Audit(db) => {
            let store = PgStore::connect(&db.database_url)
                .await
                .context("connecting to the ledger")?;
            let report = store.audit().await.context("auditing the ledger")?;
            println!("checked {} tenants and {} pods", report.tenants, report.pods);
            if !report.is_clean() {
                for v in &report.violations {
                    println!("VIOLATION: {v}");
                }
                std::process::exit(1);
            }
            println!("the books balance");
        }
    }
    Ok(())
}
