//! `sparkcap-webhook`: the admission webhook (every Spark pod checked against
//! its tenant's balance and routed to sparkcap's scheduler) and the tenant
//! REST API on its own HTTPS port.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sparkcap_ledger::{LedgerStore, PgStore};
use sparkcap_webhook::api::auth::{Authenticator, TokenReviewConfig};
use sparkcap_webhook::api::oidc::{Oidc, OidcConfig, parse_algorithm};
use sparkcap_webhook::api::{ApiState, RateLimits};
use sparkcap_webhook::certs::CertFiles;
use sparkcap_webhook::metrics::Metrics;
use sparkcap_webhook::run::{Listeners, run};
use sparkcap_webhook::sync::{self, SyncConfig};
use sparkcap_webhook::view::{Settings, TenantView};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "sparkcap-webhook",
    version,
    about = "sparkcap's admission webhook",
    long_about = "sparkcap's admission webhook.\n\n\
        `serve`: AdmissionReview /mutate and /validate over TLS; the tenant REST API (/api/v1) over TLS on its own \
        port; /healthz, /readyz and /metrics on a plain port.\n\
        `migrate`: apply the ledger schema."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve admission reviews.
    Serve(Box<ServeArgs>),
    /// Apply the ledger's migrations (under a Postgres advisory lock) and exit.
    Migrate {
        /// PostgreSQL URL of the ledger.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// PostgreSQL URL of the ledger.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// HTTPS address for AdmissionReviews.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: String,
    /// Plain address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    ops_listen: String,
    /// PEM certificate chain (reloaded when it changes).
    #[arg(long, default_value = "/tls/tls.crt")]
    tls_cert: PathBuf,
    /// PEM private key (reloaded when it changes).
    #[arg(long, default_value = "/tls/tls.key")]
    tls_key: PathBuf,
    /// How often the certificate files are checked for rotation, in seconds.
    #[arg(long, default_value_t = 5)]
    cert_poll_seconds: u64,
    /// Make and rotate the serving certificate itself (no cert-manager): kept in
    /// --tls-secret, written to --tls-cert/--tls-key, its CA put into the
    /// webhook configurations named --webhook-configurations.
    #[arg(long)]
    self_managed_tls: bool,
    /// Secret of the self-managed certificate.
    #[arg(long, default_value = "sparkcap-webhook-tls")]
    tls_secret: String,
    /// The webhook's Service (the certificate's DNS names).
    #[arg(long, default_value = "sparkcap-webhook")]
    webhook_service: String,
    /// Mutating and Validating webhook configurations to put the CA in.
    #[arg(long, default_value = "sparkcap")]
    webhook_configurations: String,
    /// The webhook's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sparkcap-system")]
    namespace: String,
    /// Refuse drivers when the ledger view is older than this, in seconds.
    #[arg(long, default_value_t = 30)]
    stale_after_seconds: i64,
    /// Full ledger reload period, in seconds (also the freshness heartbeat).
    #[arg(long, default_value_t = 10)]
    reload_seconds: u64,
    /// schedulerName written into Spark pods.
    #[arg(long, default_value = "sparkcap-scheduler")]
    scheduler_name: String,
    /// The user sparkcap-scheduler acts as (default: its ServiceAccount
    /// sparkcap-scheduler in --namespace); only it, and cluster admins
    /// (system:masters), may remove the metering finalizer from a running pod.
    #[arg(long, env = "SPARKCAP_SCHEDULER_USER")]
    scheduler_user: Option<String>,
    /// The settings the scheduler shares (same flags, same checks).
    #[command(flatten)]
    policy: sparkcap_core::policy::PolicyArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    conn: ConnArgs,
}

/// What one connection to the HTTPS ports may hold (see `guard.rs`).
#[derive(Debug, clap::Args)]
struct ConnArgs {
    /// Open connections per HTTPS port; more are closed at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds for a request's head (and the TLS handshake).
    #[arg(long, default_value_t = 5)]
    header_timeout_seconds: u64,
    /// Seconds for a request's body.
    #[arg(long, default_value_t = 10)]
    body_timeout_seconds: u64,
    /// Seconds a connection may send nothing before it is closed.
    #[arg(long, default_value_t = 90)]
    idle_timeout_seconds: u64,
    /// MiB of request bodies held at once per HTTPS port.
    #[arg(long, default_value_t = 64)]
    body_budget_mib: usize,
}

impl ConnArgs {
    fn limits(&self) -> sparkcap_webhook::guard::ConnLimits {
        sparkcap_webhook::guard::ConnLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: Duration::from_secs(self.header_timeout_seconds.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout_seconds.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds.max(1)),
            body_budget: self.body_budget_mib.clamp(8, 4096) * 1024 * 1024,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// HTTPS address of the tenant REST API (same certificate); "off" to not serve it.
    #[arg(long, default_value = "0.0.0.0:8444")]
    api_listen: String,
    /// Audience ServiceAccount tokens must be minted for (`kubectl create token SA --audience ...`).
    #[arg(long, default_value = "sparkcap")]
    token_audience: String,
    /// Do not accept ServiceAccount tokens (OIDC only).
    #[arg(long)]
    no_token_review: bool,
    /// OIDC issuer URL; enables OIDC JWTs.
    #[arg(long)]
    oidc_issuer: Option<String>,
    /// Audience OIDC tokens must carry.
    #[arg(long, default_value = "sparkcap")]
    oidc_audience: String,
    /// JWKS URL (default: discovered from the issuer).
    #[arg(long)]
    oidc_jwks_url: Option<String>,
    /// Accepted JWT algorithms, comma-separated (asymmetric only).
    #[arg(long, default_value = "RS256,ES256")]
    oidc_algorithms: String,
    /// Claim naming the caller's tenant.
    #[arg(long, default_value = "sparkcap_tenant")]
    oidc_tenant_claim: String,
    /// Claim listing the caller's groups.
    #[arg(long, default_value = "groups")]
    oidc_groups_claim: String,
    /// Claim used as the user name.
    #[arg(long, default_value = "sub")]
    oidc_username_claim: String,
    /// Groups whose members are sparkcap admins (repeat or comma-separate). A
    /// ServiceAccount's groups are `system:serviceaccounts:<namespace>`.
    #[arg(long, value_delimiter = ',', default_value = "sparkcap:admins")]
    admin_group: Vec<String>,
    /// API requests per minute of a standard-tier tenant (burst: a third of it).
    #[arg(long, default_value_t = 100)]
    rate_limit_standard: u32,
    /// API requests per minute of a premium-tier tenant.
    #[arg(long, default_value_t = 500)]
    rate_limit_premium: u32,
    /// API requests per minute of each admin identity.
    #[arg(long, default_value_t = 1000)]
    rate_limit_admin: u32,
    /// Price of one dedicated Spark Unit for a month, in cents (the estimator's cost comparison).
    #[arg(long, default_value_t = 10_000)]
    price_unit_month_cents: i64,
    /// Price of one vCPU-hour, in cents.
    #[arg(long, default_value_t = 6)]
    price_vcpu_hour_cents: i64,
}

fn authenticator(args: &ApiArgs, kube: &kube::Client) -> anyhow::Result<Authenticator> {
    let token_review = (!args.no_token_review).then(|| TokenReviewConfig {
        client: kube.clone(),
        audience: args.token_audience.clone(),
        timeout: Duration::from_secs(5),
    });
    let oidc = match &args.oidc_issuer {
        None => None,
        Some(issuer) => {
            let mut c = OidcConfig::new(issuer.clone(), args.oidc_audience.clone());
            c.jwks_url = args.oidc_jwks_url.clone();
            c.algorithms = args
                .oidc_algorithms
                .split(',')
                .filter(|a| !a.trim().is_empty())
                .map(parse_algorithm)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("--oidc-algorithms: {e}"))?;
            c.tenant_claim = args.oidc_tenant_claim.clone();
            c.groups_claim = args.oidc_groups_claim.clone();
            c.username_claim = args.oidc_username_claim.clone();
            Some(Oidc::new(c).map_err(|e| anyhow::anyhow!("--oidc-*: {e}"))?)
        }
    };
    if token_review.is_none() && oidc.is_none() {
        anyhow::bail!("--no-token-review needs --oidc-issuer: the API would accept no token at all");
    }
    Ok(Authenticator::new(token_review, oidc, args.admin_group.clone()))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.reload_seconds as i64 * 2 >= args.stale_after_seconds {
        anyhow::bail!(
            "--reload-seconds {} must be less than half of --stale-after-seconds {}, or a single slow reload would refuse drivers",
            args.reload_seconds,
            args.stale_after_seconds
        );
    }
    let policy = args.policy.validate()?;
    let spark_unit = policy.spark_unit;
    let settings = Settings {
        draft_runs: policy.draft_runs,
        stale_after: chrono::TimeDelta::seconds(args.stale_after_seconds),
        scheduler_name: args.scheduler_name,
        scheduler_user: args
            .scheduler_user
            .unwrap_or_else(|| format!("system:serviceaccount:{}:sparkcap-scheduler", args.namespace)),
        spark_unit,
        slices: sparkcap_ledger::slices::SlicePolicy {
            unit_cpu: spark_unit.cpu.0,
            ..Default::default()
        },
    };
    let admission =
        std::net::TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let ops =
        std::net::TcpListener::bind(&args.ops_listen).with_context(|| format!("listening on {}", args.ops_listen))?;
    let store: Arc<dyn LedgerStore> = Arc::new(
        PgStore::connect(&args.database_url)
            .await
            .context("connecting to the ledger")?,
    );
    let kube = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
    let auth = authenticator(&args.api, &kube)?;
    let api = if args.api.api_listen == "off" {
        None
    } else {
        Some(
            std::net::TcpListener::bind(&args.api.api_listen)
                .with_context(|| format!("listening on {}", args.api.api_listen))?,
        )
    };
    let (view, mut sync_tasks) = sync::start(
        TenantView::new(settings),
        store.clone(),
        kube.clone(),
        SyncConfig {
            full_reload: Duration::from_secs(args.reload_seconds.max(1)),
            ..SyncConfig::default()
        },
    );
    tracing::info!(listen = %args.listen, ops = %args.ops_listen, api = %args.api.api_listen, "sparkcap-webhook serving");
    let metrics = Metrics::new();
    let limits = RateLimits {
        standard: args.api.rate_limit_standard,
        premium: args.api.rate_limit_premium,
        admin: args.api.rate_limit_admin,
    };
    if args.api.price_unit_month_cents < 0 || args.api.price_vcpu_hour_cents < 0 {
        anyhow::bail!("--price-unit-month-cents and --price-vcpu-hour-cents must not be negative");
    }
    let api = api.map(|l| {
        let mut state = ApiState::new(store, view.clone(), auth, limits, metrics.clone());
        state.prices.unit_month_cents = args.api.price_unit_month_cents;
        state.prices.vcpu_hour_cents = args.api.price_vcpu_hour_cents;
        state.egress = policy.egress.clone();
        (l, state)
    });
    let files = CertFiles {
        cert: args.tls_cert,
        key: args.tls_key,
    };
    if args.self_managed_tls {
        let cfg = sparkcap_webhook::selfcert::SelfManaged {
            namespace: args.namespace,
            secret: args.tls_secret,
            service: args.webhook_service,
            configurations: args.webhook_configurations,
            files: files.clone(),
        };
        sync_tasks.spawn(sparkcap_webhook::selfcert::run(
            kube.clone(),
            cfg,
            Duration::from_secs(600),
        ));
    }
    // The ledger and cluster sync and the certificate rotation never end
    // while the webhook serves: one that does would leave it answering from
    // stale facts while /readyz says ok. It stops the process instead (the
    // kubelet restarts it), after draining what is in flight.
    let (dead_tx, dead_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let why = match sync_tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => format!("a background task panicked: {e}"),
            Some(Err(e)) => format!("a background task was cancelled: {e}"),
            Some(Ok(())) | None => "a background task ended unexpectedly".to_owned(),
        };
        let _ = dead_tx.send(why);
        // Keep the others running while the servers drain.
        std::future::pending::<()>().await;
    });
    let (died_tx, mut died_rx) = tokio::sync::watch::channel(None::<String>);
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            why = dead_rx => {
                let why = why.unwrap_or_else(|_| "the task supervisor ended".to_owned());
                tracing::error!(reason = %why, "stopping");
                let _ = died_tx.send(Some(why));
            }
        }
    };
    run(
        Listeners {
            admission,
            ops,
            api,
            limits: args.conn.limits(),
        },
        files,
        Duration::from_secs(args.cert_poll_seconds.max(1)),
        view,
        metrics,
        shutdown,
    )
    .await
    .context("serving")?;
    if let Some(why) = died_rx.borrow_and_update().clone() {
        anyhow::bail!("{why}");
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One rustls crypto provider for every TLS client and server (kube,
    // reqwest, the listeners), chosen before the first is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let _crash_points = sparkcap_ledger::faults::arm_from_env();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await?,
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
