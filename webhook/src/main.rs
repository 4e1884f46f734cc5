//! `sparkcap-webhook`: the admission webhook (every Spark pod checked against
//! its tenant's balance) and the tenant REST API.
//!
//! What exists today is `migrate`; `serve` arrives with the webhook issue and
//! is not offered until it does something real.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sparkcap_ledger::PgStore;

#[derive(Debug, Parser)]
#[command(
    name = "sparkcap-webhook",
    version,
    about = "sparkcap's admission webhook and tenant REST API",
    long_about = "sparkcap's admission webhook and tenant REST API.\n\n\
        Available now: `migrate` (apply the ledger schema).\n\
        Coming: `serve` (AdmissionReview /mutate and /validate over TLS, and the tenant REST API)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the ledger's migrations (under a Postgres advisory lock) and exit.
    Migrate {
        /// PostgreSQL URL of the ledger.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Migrate { database_url } => {
            let store = PgStore::connect(&database_url)
                .await
                .context("connecting to the ledger")?;
            store.migrate().await.context("migrating the ledger")?;
            println!("ledger schema is up to date");
        }
    }
    Ok(())
}
