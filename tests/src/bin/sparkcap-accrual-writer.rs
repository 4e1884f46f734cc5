//! A metering writer for the crash test: accrues a deterministic workload in
//! virtual time, every 30 virtual seconds, as the scheduler will. It claims a
//! new epoch at start (as a new leader does) and replays from the beginning,
//! so whatever a killed predecessor committed is found again and not charged
//! twice. Prints `DONE` when every pod is closed.

use anyhow::Context;
use clap::Parser;
use sparkcap_ledger::{
    AccrualRequest, LedgerError, LedgerStore, NewTenant, Period, PgStore, PurchaseKind, PurchaseRequest,
};
use sparkcap_testkit::workload::{epoch_start, pod_lives, tenants};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 1000)]
    pods: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = PgStore::connect(&args.database_url).await.context("connect")?;
    for t in tenants(10) {
        match store
            .create_tenant(NewTenant::new(t.clone(), String::new()), epoch_start())
            .await
        {
            Ok(_) | Err(LedgerError::TenantExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        store
            .record_purchase(
                &PurchaseRequest {
                    tenant: t.clone(),
                    kind: PurchaseKind::VcpuHours,
                    quantity: 20,
                    period: Period::Monthly,
                    valid_from: Some(epoch_start()),
                    valid_until: None,
                    idempotency_key: format!("crash-{t}"),
                },
                epoch_start(),
            )
            .await?;
    }
    let epoch = store.claim_epoch(&format!("writer-{}", std::process::id())).await?;
    let lives = pod_lives(args.seed, args.pods);
    let last = lives.iter().map(|l| l.end).max().unwrap_or(0);
    let mut tick = 0;
    while tick < last + 30 {
        tick += 30;
        let batch: Vec<AccrualRequest> = lives
            .iter()
            .filter(|l| (l.pod.started_at - epoch_start()).num_seconds() < tick && l.end > tick - 30)
            .map(|l| AccrualRequest {
                pod: l.pod.clone(),
                until: epoch_start() + chrono::TimeDelta::seconds(tick.min(l.end)),
                finished: tick >= l.end,
                outcome: None,
                run: None,
            })
            .collect();
        for chunk in batch.chunks(1000) {
            for outcome in store.accrue(epoch, chunk).await? {
                // Replaying ticks a killed predecessor already charged past is
                // refused as clock skew and adds nothing; anything else is a bug.
                match outcome.rejection() {
                    None | Some(LedgerError::ClockSkew { .. }) => {}
                    Some(e) => anyhow::bail!("unexpected refusal: {e}"),
                }
            }
        }
        println!("tick {tick}");
    }
    println!("DONE");
    Ok(())
}
