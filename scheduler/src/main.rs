//! `sparkcap-scheduler`: places Spark driver and executor pods into pools,
//! meters their vCPU-seconds into the ledger, and simulates a day of traffic.
//!
//! `simulate` runs the real decision code over a simulated cluster in
//! virtual time; `run` schedules and meters against a cluster under Lease
//! leader election; `migrate` and `audit` look after the ledger.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sparkcap_ledger::{LedgerStore, PgStore};
use sparkcap_scheduler::leader::LeaseConfig;
use sparkcap_scheduler::shell::{ShellConfig, run_elected};
use std::path::PathBuf;
use std::sync::Arc;

/// The simulator and the scheduler allocate many small strings and maps per
/// pass; mimalloc measured about a fifth faster than glibc's malloc here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sparkcap-scheduler",
    version,
    about = "sparkcap's secondary scheduler and vCPU ledger writer",
    long_about = "sparkcap's secondary scheduler and vCPU ledger writer.\n\n\
        `simulate`: a day of Spark traffic over a simulated cluster, in seconds, with a report.\n\
        `run`: schedule and meter Spark pods in a cluster (leader-elected replicas).\n\
        `migrate`: apply the ledger schema. `audit`: check the ledger's books."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a trace (or the built-in day) in virtual time through the real admission, scheduling and
    /// metering code; writes report.json and report.html.
    Simulate(SimulateArgs),
    /// Schedule pods that name sparkcap-scheduler and meter them into the ledger, while holding the Lease.
    Run(RunArgs),
    /// Apply the ledger's migrations (under a Postgres advisory lock, so replicas migrate once) and exit.
    Migrate(Db),
    /// Check every invariant of the ledger's books and print what is broken; exits 1 if anything is.
    Audit(AuditArgs),
    /// Before uninstalling: charge every bound pod (ended ones to their real end, running ones up to now,
    /// left open for a reinstall) and remove sparkcap's metering finalizer from every pod. Deposes a
    /// running scheduler. Exits 1 if a finalizer could not be removed.
    ReleaseFinalizers(Db),
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[command(flatten)]
    db: Db,
    /// Also compare the ledger with the pods the cluster reports (KUBECONFIG
    /// or in-cluster): pods that ran unmetered, starts and ends more than a
    /// second off, charges that are not cpu × life, rows open for gone pods.
    #[arg(long)]
    against_cluster: bool,
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
    /// Running pods are charged up to this many seconds ago, so that a pod's
    /// end, reported late by its kubelet, is still ahead of what was charged
    /// (then its close is exact). 0 to 300.
    #[arg(long, default_value_t = 10)]
    charge_lag_seconds: i64,
    /// Plain HTTP address of /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_addr: std::net::SocketAddr,
    /// Dedicated capacity is lent once more than this share of it is idle
    /// (R8.2), percent, 0 to 100 (100: never lend).
    #[arg(long, env = "SPARKCAP_LEND_IDLE_PERCENT", default_value_t = 20)]
    lend_idle_percent: i64,
    /// ... for at least this long, seconds, 0 to 86400.
    #[arg(long, env = "SPARKCAP_LEND_AFTER_SECONDS", default_value_t = 300)]
    lend_after_seconds: i64,
    /// The settings the webhook shares (same flags, same checks).
    #[command(flatten)]
    policy: sparkcap_core::policy::PolicyArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SimulateArgs {
    #[command(subcommand)]
    command: Option<SimulateCommand>,
    /// Trace file (YAML; see examples/trace.yaml). Default: a built-in day of 100 tenants.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Where report.json and report.html go.
    #[arg(long, default_value = "simulate-out")]
    out: PathBuf,
    /// PostgreSQL URL of an empty database for the ledger (default: the embedded in-memory ledger).
    #[arg(long)]
    database_url: Option<String>,
    /// Seed of every random draw: the same seed gives the same report.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulate only this much of the trace (e.g. 6h, 90m).
    #[arg(long)]
    until: Option<String>,
    /// What-if: change a pool's node count: dedicated=+4, shared=-10, draft=8 (repeatable).
    #[arg(long = "scale-pool", value_name = "POOL=±N")]
    scale_pool: Vec<String>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Never lend idle dedicated capacity (to compare with lending).
    #[arg(long)]
    no_lending: bool,
}

#[derive(Debug, Subcommand)]
enum SimulateCommand {
    /// Print what changed between two report.json files (A = before, B = after).
    Compare {
        /// Report A.
        a: PathBuf,
        /// Report B.
        b: PathBuf,
    },
}

#[derive(Debug, Args)]
struct Db {
    /// PostgreSQL URL of the ledger.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube's and reqwest's rustls must agree on one crypto provider; with
    // more than one compiled in, rustls refuses to guess and the first TLS
    // client panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let _crash_points = sparkcap_ledger::faults::arm_from_env();
    match Cli::parse().command {
        Command::Simulate(args) => simulate(args).await?,
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
            let lease = LeaseConfig {
                lease_duration: chrono::TimeDelta::seconds(args.lease_seconds),
                renew_deadline: chrono::TimeDelta::seconds(args.renew_deadline_seconds),
                retry_period: std::time::Duration::from_secs(args.retry_seconds),
                ..LeaseConfig::new(&args.lease_namespace, &args.lease_name, &args.identity)
            };
            if !(0..=300).contains(&args.charge_lag_seconds) {
                anyhow::bail!(
                    "--charge-lag-seconds {} must be 0 to 300 (default 10)",
                    args.charge_lag_seconds
                );
            }
            let mut config = ShellConfig {
                meter_period: chrono::TimeDelta::seconds(args.meter_seconds),
                charge_lag: chrono::TimeDelta::seconds(args.charge_lag_seconds),
                ..ShellConfig::default()
            };
            if !(0..=100).contains(&args.lend_idle_percent) || !(0..=86_400).contains(&args.lend_after_seconds) {
                anyhow::bail!(
                    "--lend-idle-percent {} must be 0 to 100 and --lend-after-seconds {} 0 to 86400 (defaults 20 and 300)",
                    args.lend_idle_percent,
                    args.lend_after_seconds
                );
            }
            config.policy.lend_idle_permille = args.lend_idle_percent * 10;
            config.policy.lend_after = chrono::TimeDelta::seconds(args.lend_after_seconds);
            let policy = args.policy.validate()?;
            config.draft_runs = policy.draft_runs;
            config.egress = policy.egress;
            config.slices.unit_cpu = policy.spark_unit.cpu.0;
            config.policy.spark_unit.cpu = policy.spark_unit.cpu.0;
            config.policy.spark_unit.memory = policy.spark_unit.memory.0;
            // Every flag is checked above, before anything is reached.
            let store = PgStore::connect(&args.database_url)
                .await
                .context("connecting to the ledger")?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
            let listener = tokio::net::TcpListener::bind(args.metrics_addr)
                .await
                .with_context(|| format!("listening on --metrics-addr {}", args.metrics_addr))?;
            let mut metrics_server = tokio::spawn(config.metrics.clone().serve(listener));
            // SIGTERM (Kubernetes) or Ctrl-C: stop and release the Lease.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
            let shutdown = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            // The metrics server never ends by itself: if it does, the
            // process stops (the kubelet restarts it) instead of running on
            // unobserved.
            tokio::select! {
                r = run_elected(client, Arc::new(store), config, lease, shutdown) => r?,
                r = &mut metrics_server => anyhow::bail!("the metrics server ended: {r:?}"),
            }
        }
        Command::Migrate(db) => {
            let store = PgStore::connect(&db.database_url)
                .await
                .context("connecting to the ledger")?;
            store.migrate().await.context("migrating the ledger")?;
            println!("ledger schema is up to date");
        }
        Command::ReleaseFinalizers(db) => {
            let store = PgStore::connect(&db.database_url)
                .await
                .context("connecting to the ledger")?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (in-cluster or kubeconfig)")?;
            let config = ShellConfig {
                holder: "sparkcap-scheduler release-finalizers".into(),
                ..ShellConfig::default()
            };
            let report =
                sparkcap_scheduler::shell::release_finalizers_for_uninstall(client, Arc::new(store), config).await?;
            println!(
                "released the metering finalizer of {} pods ({} still running: charged up to now, left open in the ledger)",
                report.released, report.left_running
            );
            if report.failed > 0 {
                anyhow::bail!(
                    "{} pods still carry sparkcap.io/metering; see the log and run this again",
                    report.failed
                );
            }
        }
        Command::Audit(args) => {
            let store = PgStore::connect(&args.db.database_url)
                .await
                .context("connecting to the ledger")?;
            let report = store.audit().await.context("auditing the ledger")?;
            println!("checked {} tenants and {} pods", report.tenants, report.pods);
            let mut clean = report.is_clean();
            for v in &report.violations {
                println!("VIOLATION: {v}");
            }
            if args.against_cluster {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API (in-cluster or kubeconfig)")?;
                let cluster = sparkcap_scheduler::shell::audit_cluster_now(client, &store)
                    .await
                    .context("auditing the ledger against the cluster")?;
                println!("compared {} pods with {} ledger rows", cluster.pods, cluster.rows);
                for f in &cluster.findings {
                    println!("DISAGREES: {f}");
                }
                clean &= cluster.is_clean();
            }
            if !clean {
                std::process::exit(1);
            }
            println!(
                "{}",
                if args.against_cluster {
                    "the books balance and match what the cluster ran"
                } else {
                    "the books balance"
                }
            );
        }
    }
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use sparkcap_scheduler::sim::{self, Report, Trace, default_day};
    if let Some(SimulateCommand::Compare { a, b }) = args.command {
        let read = |p: &PathBuf| -> anyhow::Result<Report> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a sparkcap simulate report.json", p.display()))
        };
        print!("{}", sim::compare::compare(&read(&a)?, &read(&b)?));
        return Ok(());
    }
    let (mut trace, mut origin) = match &args.trace {
        Some(path) => (Trace::load(path)?, path.display().to_string()),
        None => (default_day::trace(args.seed), "built-in default day".to_string()),
    };
    for spec in &args.scale_pool {
        trace.scale_pool(spec).map_err(anyhow::Error::msg)?;
        origin.push_str(&format!(", --scale-pool {spec}"));
    }
    if let Some(until) = &args.until {
        let d: sim::trace::Dur = until.parse().map_err(|e| anyhow::anyhow!("--until {until:?}: {e}"))?;
        trace.duration = d;
        trace.events.retain(|e| e.at <= d);
        trace.check().map_err(|e| anyhow::anyhow!("--until {until:?}: {e}"))?;
        origin.push_str(&format!(", first {until}"));
    }
    let store: Arc<dyn LedgerStore> = match &args.database_url {
        Some(url) => {
            let store = PgStore::connect(url).await.context("connecting to the ledger")?;
            store.migrate().await.context("migrating the ledger")?;
            Arc::new(store)
        }
        None => Arc::new(sparkcap_ledger::MemoryStore::new()),
    };
    let options = sim::Options {
        seed: args.seed,
        origin,
        progress: !args.quiet,
        lending: !args.no_lending,
    };
    let wall = std::time::Instant::now();
    let report = sim::run(&trace, store.as_ref(), &options).await?;
    let elapsed = wall.elapsed();
    let (json, html) = sim::write_outputs(&report, &args.out)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    print!("{}", report.summary());
    println!(
        "\n  simulated {} h in {:.2} s ({} plan passes, {} admission reviews)\n  wrote {} and {}",
        trace.duration.0 / 3600,
        elapsed.as_secs_f64(),
        report.engine.plan_passes,
        report.engine.admission_reviews,
        json.display(),
        html.display()
    );
    if !report.checks_passed() {
        anyhow::bail!("the simulation broke an invariant; see checks in {}", json.display());
    }
    Ok(())
}
