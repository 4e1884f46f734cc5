//! `sparkcap-devcluster`: a local Kubernetes control plane for trying sparkcap
//! with kubectl and spark-submit. Test infrastructure, not the product.
//!
//!   cargo run -p sparkcap-testkit --bin sparkcap-devcluster -- \
//!       --listen 127.0.0.1:6443 --kubeconfig /tmp/devcluster.kubeconfig [--nodes nodes.yaml]

use anyhow::Context;
use clap::Parser;
use sparkcap_ledger::{LedgerStore, MemoryStore, PgStore};
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::apiserver::watch_faults::WatchFaultConfig;
use sparkcap_testkit::devcluster::{NodesFile, TenantsFile, register_node, seed, serve, serve_tls, write_kubeconfig};
use sparkcap_testkit::kubelet::Kubelet;
use sparkcap_testkit::tls::TestCa;
use sparkcap_webhook::view::Settings;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(about = "A local Kubernetes API server with simulated nodes, for kubectl and spark-submit")]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Where to write a kubeconfig pointing at it.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// YAML file of nodes (`nodes: [{name, pool, cpu, memory, pods, labels, taints}]`);
    /// one node per pool when omitted.
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Serve HTTPS with a freshly generated CA (its certificate goes into the
    /// kubeconfig and next to it as `<kubeconfig>.ca.crt`, for spark-submit's
    /// `spark.kubernetes.authenticate.submission.caCertFile`).
    #[arg(long)]
    tls: bool,
    /// Run sparkcap-webhook and sparkcap-scheduler against the cluster, with these tenants
    /// (`tenants: [{id, name, namespaces, vcpu_hours, dedicated_units, period}]`)
    /// seeded into its ledger and their namespaces created.
    #[arg(long)]
    tenants: Option<PathBuf>,
    /// Ledger for the webhook: a PostgreSQL URL (migrated on start); an
    /// in-memory ledger when omitted.
    #[arg(long, env = "DATABASE_URL", requires = "tenants")]
    database_url: Option<String>,
    /// Address of the tenant REST API (HTTPS; its CA goes next to the
    /// kubeconfig as `sparkcap-api-ca.crt`). Served with `--tenants`.
    #[arg(long, default_value = "127.0.0.1:8444", requires = "tenants")]
    api_listen: String,
    /// Seed the tenants into the ledger and create their namespaces, but run
    /// no webhook or scheduler here: they run as their own processes (the
    /// fault harness), registered with this control plane.
    #[arg(long, requires = "database_url")]
    external_sparkcap: bool,
    /// Faults to inject into watches, e.g. `seed=1,cut=0.01,expire=0.3,delay-ms=200`
    /// (also settable at run time: PUT /sparkcap-test/watch-faults).
    #[arg(long, value_parser = WatchFaultConfig::parse)]
    watch_faults: Option<WatchFaultConfig>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nodes = match &args.nodes {
        Some(path) => {
            NodesFile::parse(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?
        }
        None => NodesFile::default_nodes(),
    };
    let server = ApiServer::new();
    if let Some(f) = &args.watch_faults {
        server.watch_faults.set(f.clone());
    }
    for n in &nodes.nodes {
        register_node(&server, n)?;
    }
    let _webhook = match &args.tenants {
        Some(path) if args.external_sparkcap => {
            let tenants = TenantsFile::parse(
                &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            )?;
            let url = args.database_url.as_deref().unwrap_or_default();
            let pg = PgStore::connect(url).await.context("connecting to the ledger")?;
            pg.migrate().await.context("migrating the ledger")?;
            seed(&server, &pg, &nodes, &tenants).await?;
            println!(
                "{} tenants seeded; sparkcap-webhook and sparkcap-scheduler run elsewhere",
                tenants.tenants.len()
            );
            None
        }
        Some(path) => {
            let tenants = TenantsFile::parse(
                &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            )?;
            let store: Arc<dyn LedgerStore> = match &args.database_url {
                Some(url) => {
                    let pg = PgStore::connect(url).await.context("connecting to the ledger")?;
                    pg.migrate().await.context("migrating the ledger")?;
                    Arc::new(pg)
                }
                None => Arc::new(MemoryStore::new()),
            };
            seed(&server, store.as_ref(), &nodes, &tenants).await?;
            let dir = args
                .kubeconfig
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf();
            let api = sparkcap_testkit::webhook::ApiOptions {
                listen: args.api_listen.clone(),
                ..Default::default()
            };
            let webhook =
                sparkcap_testkit::webhook::start_with_api(&server, store.clone(), Settings::default(), &dir, Some(api))
                    .await?;
            let api_ca = dir.join("sparkcap-api-ca.crt");
            std::fs::write(&api_ca, &webhook.ca_pem).with_context(|| format!("writing {}", api_ca.display()))?;
            let client = server.client();
            tokio::spawn(async move {
                let forever = std::future::pending::<()>();
                if let Err(e) = sparkcap_scheduler::shell::run(client, store, Default::default(), forever).await {
                    eprintln!("sparkcap-scheduler stopped: {e:#}");
                }
            });
            println!(
                "sparkcap-webhook admitting and sparkcap-scheduler placing Spark pods for {} tenants ({}; metrics {}/metrics)",
                tenants.tenants.len(),
                webhook.url,
                webhook.ops_url
            );
            println!(
                "tenant REST API: {}/api/v1 (CA {}); tokens: kubectl create token default -n <tenant namespace> --audience sparkcap, \
                 admin: kubectl create token admin -n sparkcap-admin --audience sparkcap",
                webhook.api_url.as_deref().unwrap_or_default(),
                api_ca.display()
            );
            Some(webhook)
        }
        None => None,
    };
    // One simulated kubelet per node runs the pods bound to it.
    let _kubelets: Vec<Kubelet> = nodes.nodes.iter().map(|n| Kubelet::start(&server, &n.name)).collect();
    let listener =
        std::net::TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let serving = if args.tls {
        let ca = TestCa::new();
        let cert = ca.issue(&[&addr.ip().to_string(), "localhost"]);
        let ca_file = PathBuf::from(format!("{}.ca.crt", args.kubeconfig.display()));
        std::fs::write(&ca_file, ca.ca_pem()).with_context(|| format!("writing {}", ca_file.display()))?;
        let url = format!("https://{addr}");
        write_kubeconfig(&args.kubeconfig, &url, Some(&ca.ca_bundle()))?;
        announce(&url, nodes.nodes.len(), &args.kubeconfig);
        println!("CA certificate: {}", ca_file.display());
        tokio::spawn(async move { serve_tls(server, listener, &cert).await })
    } else {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let url = format!("http://{addr}");
        write_kubeconfig(&args.kubeconfig, &url, None)?;
        announce(&url, nodes.nodes.len(), &args.kubeconfig);
        tokio::spawn(serve(server, listener))
    };
    tokio::select! {
        r = serving => r.context("server task")?.context("serving")?,
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }
    Ok(())
}

fn announce(url: &str, nodes: usize, kubeconfig: &std::path::Path) {
    println!(
        "sparkcap-devcluster serving {url} with {nodes} nodes; KUBECONFIG={}",
        kubeconfig.display()
    );
}
