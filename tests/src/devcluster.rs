//! A local control plane people (and tests) can point kubectl and
//! spark-submit at: the test API server on a TCP address, nodes from a
//! small YAML file, and a kubeconfig.

use crate::apiserver::ApiServer;
use crate::apiserver::resources::find;
use crate::tls::ServerCert;
use serde::Deserialize;
use serde_json::json;
use std::path::Path;

/// One node as a devcluster file describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Pool (`sparkcap.io/pool` label): dedicated, shared or draft.
    #[serde(default)]
    pub pool: Option<String>,
    /// Allocatable cpu, as Kubernetes writes it ("16", "15500m").
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Allocatable memory ("64Gi").
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Allocatable pods.
    #[serde(default = "default_pods")]
    pub pods: u32,
    /// Extra labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Taints, as `key=value:Effect` strings.
    #[serde(default)]
    pub taints: Vec<String>,
}

fn default_cpu() -> String {
    "16".into()
}
fn default_memory() -> String {
    "64Gi".into()
}
fn default_pods() -> u32 {
    110
}

/// The nodes file: `nodes: [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
}

impl NodesFile {
    /// Parses a nodes file; errors name the line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("invalid nodes file: {e}"))
    }

    /// Three nodes, one per pool.
    pub fn default_nodes() -> Self {
        let node = |name: &str, pool: &str| NodeSpec {
            name: name.into(),
            pool: Some(pool.into()),
            cpu: default_cpu(),
            memory: default_memory(),
            pods: default_pods(),
            labels: Default::default(),
            taints: vec![format!("sparkcap.io/pool={pool}:NoSchedule")],
        };
        Self {
            nodes: vec![
                node("dedicated-1", "dedicated"),
                node("shared-1", "shared"),
                node("draft-1", "draft"),
            ],
        }
    }
}

/// One tenant as a devcluster tenants file describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant id (DNS label).
    pub id: String,
    /// Name for people.
    #[serde(default)]
    pub name: String,
    /// Namespaces to create, labelled `sparkcap.io/tenant=<id>`; `tenant-<id>` when empty.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// vCPU-hours bought for the current period.
    #[serde(default)]
    pub vcpu_hours: i64,
    /// Dedicated units bought for the current period.
    #[serde(default)]
    pub dedicated_units: i64,
    /// daily, monthly (default) or yearly.
    #[serde(default = "default_period")]
    pub period: String,
}

fn default_period() -> String {
    "monthly".into()
}

/// The tenants file: `tenants: [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    /// The tenants.
    pub tenants: Vec<TenantSpec>,
}

impl TenantsFile {
    /// Parses a tenants file; errors name the line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("invalid tenants file: {e}"))
    }
}

/// Records the nodes' pool sizes and the tenants (with their purchases and
/// namespace bindings) in the ledger, and creates their namespaces. Safe to
/// repeat against the same ledger: purchases carry idempotency keys.
pub async fn seed(
    server: &ApiServer,
    store: &dyn sparkcap_ledger::LedgerStore,
    nodes: &NodesFile,
    tenants: &TenantsFile,
) -> anyhow::Result<()> {
    use sparkcap_ledger::quantity::{parse_cpu, parse_memory};
    use sparkcap_ledger::*;
    let now = chrono::Utc::now();
    let allocatable = nodes
        .nodes
        .iter()
        .filter_map(|n| Some((n, n.pool.as_deref()?.parse::<Pool>().ok()?)))
        .map(|(n, pool)| {
            Ok(NodeAllocatable {
                name: n.name.clone(),
                pool,
                cpu: parse_cpu(&n.cpu).map_err(|e| anyhow::anyhow!("node {}: {e}", n.name))?,
                memory: parse_memory(&n.memory).map_err(|e| anyhow::anyhow!("node {}: {e}", n.name))?,
                ready: true,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let epoch = store.claim_epoch("sparkcap-devcluster").await?;
    for capacity in PoolCapacity::from_nodes(SparkUnitSize::default(), &allocatable, now) {
        store.set_pool_capacity(epoch, &capacity).await?;
    }
    let ns_def = find("", "v1", "namespaces").expect("namespaces served");
    for t in &tenants.tenants {
        let id = TenantId::new(t.id.clone())?;
        if store.tenant(&id).await?.is_none() {
            store
                .create_tenant(NewTenant::new(id.clone(), t.name.clone()), now)
                .await?;
        }
        let period: Period = t.period.parse()?;
        for (kind, quantity) in [
            (PurchaseKind::VcpuHours, t.vcpu_hours),
            (PurchaseKind::DedicatedUnits, t.dedicated_units),
        ] {
            if quantity > 0 {
                store
                    .record_purchase(
                        &PurchaseRequest {
                            tenant: id.clone(),
                            kind,
                            quantity,
                            period,
                            valid_from: Some(now),
                            valid_until: None,
                            idempotency_key: format!("devcluster-{id}-{}-{quantity}", kind.as_str()),
                        },
                        now,
                    )
                    .await?;
            }
        }
        let namespaces = if t.namespaces.is_empty() {
            vec![format!("tenant-{id}")]
        } else {
            t.namespaces.clone()
        };
        for ns in namespaces {
            store.bind_namespace(&ns, &id).await?;
            let obj = json!({"metadata": {"name": ns, "labels": {"sparkcap.io/tenant": id.as_str()}}});
            if server.store.get(ns_def, "", &ns).is_err() {
                server
                    .store
                    .create(ns_def, "", obj, false)
                    .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {}", e.message))?;
            }
            ensure_service_account(server, &ns, "default")?;
        }
    }
    // Admins: ServiceAccounts of this namespace are in group
    // system:serviceaccounts:sparkcap-admin, the REST API's default admin group here.
    if server.store.get(ns_def, "", "sparkcap-admin").is_err() {
        server
            .store
            .create(ns_def, "", json!({"metadata": {"name": "sparkcap-admin"}}), false)
            .map_err(|e| anyhow::anyhow!("creating namespace sparkcap-admin: {}", e.message))?;
    }
    ensure_service_account(server, "sparkcap-admin", "admin")?;
    Ok(())
}

/// Creates a ServiceAccount if missing (kube-controller-manager makes
/// `default` in every namespace; the test control plane has no controllers).
fn ensure_service_account(server: &ApiServer, ns: &str, name: &str) -> anyhow::Result<()> {
    let def = find("", "v1", "serviceaccounts").expect("served");
    if server.store.get(def, ns, name).is_err() {
        server
            .store
            .create(def, ns, json!({"metadata": {"name": name, "namespace": ns}}), false)
            .map_err(|e| anyhow::anyhow!("creating service account {ns}/{name}: {}", e.message))?;
    }
    Ok(())
}

/// The default nodes (one per pool), each run by a simulated kubelet, and
/// the tenants of `tenants_yaml` (a tenants file) seeded: the cluster most
/// end-to-end tests start from. The kubelets stop when dropped.
pub async fn default_cluster(
    server: &ApiServer,
    store: &dyn sparkcap_ledger::LedgerStore,
    tenants_yaml: &str,
) -> anyhow::Result<Vec<crate::kubelet::Kubelet>> {
    let nodes = NodesFile::default_nodes();
    for n in &nodes.nodes {
        register_node(server, n)?;
    }
    let kubelets = nodes
        .nodes
        .iter()
        .map(|n| crate::kubelet::Kubelet::start(server, &n.name))
        .collect();
    seed(server, store, &nodes, &TenantsFile::parse(tenants_yaml)?).await?;
    Ok(kubelets)
}

/// Registers a node as Ready with its allocatable resources.
pub fn register_node(server: &ApiServer, spec: &NodeSpec) -> anyhow::Result<()> {
    let mut labels = spec.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), spec.name.clone());
    if let Some(pool) = &spec.pool {
        labels.insert("sparkcap.io/pool".into(), pool.clone());
    }
    let taints: Vec<serde_json::Value> = spec
        .taints
        .iter()
        .map(|t| {
            let (kv, effect) = t
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("node {}: taint {t:?} must be key=value:Effect", spec.name))?;
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            Ok(json!({"key": key, "value": value, "effect": effect}))
        })
        .collect::<anyhow::Result<_>>()?;
    let capacity = json!({"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods.to_string()});
    let node = json!({
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                   "message": "simulated kubelet is ready"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0-sparkcap-testkit", "architecture": "amd64", "operatingSystem": "linux"}}
    });
    let def = find("", "v1", "nodes").expect("nodes served");
    server
        .store
        .create(def, "", node, false)
        .map_err(|e| anyhow::anyhow!("registering node {}: {}", spec.name, e.message))?;
    Ok(())
}

/// A kubeconfig for `server_url`. With `ca_bundle` (base64 PEM, as
/// [`crate::tls::TestCa::ca_bundle`] returns) clients verify the server's
/// certificate; without it the URL is plain HTTP. No auth: a local playground.
pub fn kubeconfig(server_url: &str, ca_bundle: Option<&str>) -> String {
    let ca = ca_bundle
        .map(|b| format!("    certificate-authority-data: {b}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sparkcap-devcluster\n  cluster:\n    server: {server_url}\n{ca}\
         users:\n- name: developer\n  user:\n    token: {token}\ncontexts:\n- name: sparkcap-devcluster\n  context:\n    \
         cluster: sparkcap-devcluster\n    user: developer\n    namespace: default\ncurrent-context: sparkcap-devcluster\n",
        token = crate::apiserver::authn::ADMIN_TOKEN
    )
}

/// Writes the kubeconfig file.
pub fn write_kubeconfig(path: &Path, server_url: &str, ca_bundle: Option<&str>) -> anyhow::Result<()> {
    std::fs::write(path, kubeconfig(server_url, ca_bundle))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Serves `server` over plain HTTP on a free local port, in the
/// background, for processes that reach it as a cluster (kubectl,
/// spark-submit, sparkcap's own binaries), and writes their kubeconfig to
/// `kubeconfig`. Returns the server's URL.
pub async fn serve_with_kubeconfig(server: &ApiServer, kubeconfig: &Path) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    write_kubeconfig(kubeconfig, &url, None)?;
    tokio::spawn(serve(server.clone(), listener));
    Ok(url)
}

/// Serves `server` over plain HTTP on `listener` until the task is dropped.
pub async fn serve(server: ApiServer, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, server.router()).await
}

/// Serves `server` over HTTPS (rustls, HTTP/1.1 and HTTP/2 by ALPN) on
/// `listener` with the given certificate, as kube-apiserver always does.
pub async fn serve_tls(server: ApiServer, listener: std::net::TcpListener, cert: &ServerCert) -> std::io::Result<()> {
    crate::tls::install_crypto_provider();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.cert_pem.clone().into_bytes(),
        cert.key_pem.clone().into_bytes(),
    )
    .await?;
    listener.set_nonblocking(true)?;
    axum_server::from_tcp_rustls(listener, config)
        .serve(server.router().into_make_service())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_file_parses_and_rejects_typos_with_location() {
        let f = NodesFile::parse("nodes:\n- name: a\n  pool: dedicated\n  cpu: \"8\"\n  taints: [\"sparkcap.io/pool=dedicated:NoSchedule\"]\n")
            .unwrap();
        assert_eq!(f.nodes[0].memory, "64Gi");
        let err = NodesFile::parse("nodes:\n- name: a\n  cpus: 8\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpus`") && err.contains("line 3"), "{err}");
        let server = ApiServer::new();
        let mut bad = f.nodes[0].clone();
        bad.taints = vec!["no-effect".into()];
        let err = register_node(&server, &bad).unwrap_err().to_string();
        assert!(err.contains("must be key=value:Effect"), "{err}");
    }
}
