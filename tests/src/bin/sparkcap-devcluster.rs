//! `sparkcap-devcluster`: a local Kubernetes control plane for trying sparkcap
//! with kubectl and spark-submit. Test infrastructure, not the product.
//!
//!   cargo run -p sparkcap-testkit --bin sparkcap-devcluster -- \
//!       --listen 127.0.0.1:6443 --kubeconfig /tmp/devcluster.kubeconfig [--nodes nodes.yaml]

use anyhow::Context;
use clap::Parser;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{NodesFile, register_node, serve, write_kubeconfig};
use sparkcap_testkit::kubelet::Kubelet;
use std::path::PathBuf;

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
    for n in &nodes.nodes {
        register_node(&server, n)?;
    }
    // One simulated kubelet per node runs the pods bound to it.
    let _kubelets: Vec<Kubelet> = nodes.nodes.iter().map(|n| Kubelet::start(&server, &n.name)).collect();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    write_kubeconfig(&args.kubeconfig, &url)?;
    println!(
        "sparkcap-devcluster serving {url} with {} nodes; KUBECONFIG={}",
        nodes.nodes.len(),
        args.kubeconfig.display()
    );
    tokio::select! {
        r = serve(server, listener) => r.context("serving")?,
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }
    Ok(())
}
