//! A Kubernetes API server for tests, in process: real resourceVersions,
//! watches, conflicts, selectors and subresources, reached through the real
//! `kube::Client` (as a tower service, no socket) or over TCP for kubectl.

pub mod admission;
pub mod authn;
pub mod http;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod status;
pub mod store;
pub mod watch_faults;

use serde_json::json;
use std::sync::Arc;
use store::Store;

/// The test control plane's API server.
#[derive(Debug, Clone)]
pub struct ApiServer {
    /// Its objects.
    pub store: Arc<Store>,
    /// Its admission chain (webhook Service addresses live here).
    pub admission: admission::Admission,
    /// Every request served, as `METHOD path?query`.
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
    /// ServiceAccount token issuer.
    pub tokens: Arc<authn::TokenIssuer>,
    /// Faults injected into watches (none unless set; also settable over
    /// HTTP at `/sparkcap-test/watch-faults`, for a control plane in another process).
    pub watch_faults: Arc<watch_faults::WatchFaults>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    /// A server with the namespaces every cluster has.
    pub fn new() -> Self {
        Self::with_store(Store::default())
    }

    /// A server over `store` (e.g. with a small event history to test 410).
    pub fn with_store(store: Store) -> Self {
        let server = Self {
            store: Arc::new(store),
            admission: admission::Admission::default(),
            requests: Default::default(),
            tokens: Arc::new(authn::TokenIssuer::new()),
            watch_faults: Arc::default(),
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            server.create_namespace(name).expect("fresh store");
        }
        server
    }

    /// The HTTP router (a tower service).
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback(http::handle).with_state(http::Shared {
            store: self.store.clone(),
            admission: self.admission.clone(),
            requests: self.requests.clone(),
            tokens: self.tokens.clone(),
            watch_faults: self.watch_faults.clone(),
        })
    }

    /// A `kube::Client` talking to this server in process.
    /// Creates namespace `name`, as an admin would before installing into it.
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let ns = resources::find("", "v1", "namespaces").expect("namespaces served");
        self.store
            .create(ns, "", json!({"metadata": {"name": name}}), false)
            .map_err(|e| anyhow::anyhow!("creating namespace {name}: {e:?}"))?;
        Ok(())
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// A `kube::Client` that calls with `token` (a ServiceAccount token this
    /// server issued): admission sees that ServiceAccount as the user.
    pub fn client_as(&self, token: &str, namespace: &str) -> kube::Client {
        let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value");
        let router = self
            .router()
            .layer(axum::middleware::map_request(move |mut req: axum::extract::Request| {
                let value = value.clone();
                async move {
                    req.headers_mut().insert(axum::http::header::AUTHORIZATION, value);
                    req
                }
            }));
        kube::Client::new(router, namespace)
    }

    /// A token for ServiceAccount `namespace/name` (created if missing),
    /// valid for an hour, for this server's own audience.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let def = resources::find("", "v1", "serviceaccounts").expect("served");
        let sa = match self.store.get(def, namespace, name) {
            Ok(sa) => sa,
            Err(_) => self
                .store
                .create(
                    def,
                    namespace,
                    serde_json::json!({"metadata": {"name": name, "namespace": namespace}}),
                    false,
                )
                .expect("a new ServiceAccount"),
        };
        let uid = sa
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let now = chrono::Utc::now();
        self.tokens.mint(
            namespace,
            name,
            uid,
            &[authn::ISSUER.to_owned()],
            now,
            now + chrono::TimeDelta::hours(1),
        )
    }
}
