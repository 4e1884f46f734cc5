//! `sparkcap-scheduler`: places Spark driver and executor pods into pools,
//! meters their vCPU-seconds into the ledger, and simulates a day of traffic.
//!
//! What exists today is the ledger side: `migrate` and `audit`. Scheduling
//! against a cluster (`run`) and the virtual-time simulator (`simulate`)
//! arrive with their issues; until then they are not offered at all.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sparkcap_ledger::{LedgerStore, PgStore};

#[derive(Debug, Parser)]
#[command(
    name = "sparkcap-scheduler",
    version,
    about = "sparkcap's secondary scheduler and vCPU ledger writer",
    long_about = "sparkcap's secondary scheduler and vCPU ledger writer.\n\n\
        Available now: `migrate` (apply the ledger schema) and `audit` (check the ledger's books).\n\
        Coming: `run` (schedule and meter Spark pods in a cluster) and `simulate` (a day of traffic in virtual time)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the ledger's migrations (under a Postgres advisory lock, so replicas migrate once) and exit.
    Migrate(Db),
    /// Check every invariant of the ledger's books and print what is broken; exits 1 if anything is.
    Audit(Db),
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
