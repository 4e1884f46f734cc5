//! Runs sparkcap-webhook against a test control plane: TLS from a throwaway
//! CA, the view synced from the given ledger and the control plane, and the
//! registration from `manifests/` with the CA and Service address filled in.

use crate::apiserver::ApiServer;
use crate::apiserver::resources::find;
use crate::tls::TestCa;
use serde_json::{Value, json};
use sparkcap_ledger::LedgerStore;
use sparkcap_webhook::api::auth::{Authenticator, TokenReviewConfig};
use sparkcap_webhook::api::oidc::{Oidc, OidcConfig};
use sparkcap_webhook::api::{ApiState, RateLimits};
use sparkcap_webhook::certs::CertFiles;
use sparkcap_webhook::metrics::Metrics;
use sparkcap_webhook::run::{Listeners, run};
use sparkcap_webhook::sync::{self, SyncConfig};
use sparkcap_webhook::view::{Settings, TenantView};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The registration cluster admins apply.
pub const REGISTRATION: &str = include_str!("../../manifests/webhook-configurations.yaml");

/// A running webhook; stops when dropped.
#[derive(Debug)]
pub struct RunningWebhook {
    /// Its HTTPS base URL.
    pub url: String,
    /// Its plain /healthz, /readyz, /metrics base URL.
    pub ops_url: String,
    /// The REST API's HTTPS base URL, when served.
    pub api_url: Option<String>,
    /// The CA that signed its certificate, PEM.
    pub ca_pem: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningWebhook {
    /// An HTTPS client that trusts the webhook's CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM"))
            .build()
            .expect("HTTP client")
    }
}

/// How the REST API is set up in a test.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Address to serve it on (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// Accept ServiceAccount tokens for this audience (TokenReview on the test control plane).
    pub token_audience: Option<String>,
    /// Send TokenReviews to this API server URL instead (e.g. a dead address).
    pub token_review_url: Option<String>,
    /// Accept OIDC tokens.
    pub oidc: Option<OidcConfig>,
    /// Admin groups.
    pub admin_groups: Vec<String>,
    /// Rate limits.
    pub limits: RateLimits,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            token_audience: Some("sparkcap".into()),
            token_review_url: None,
            oidc: None,
            admin_groups: vec!["system:serviceaccounts:sparkcap-admin".into()],
            limits: RateLimits::default(),
        }
    }
}

/// Starts the webhook (certificate files go to `dir`), waits until it is
/// ready, and registers it with `server`.
pub async fn start(
    server: &ApiServer,
    store: Arc<dyn LedgerStore>,
    settings: Settings,
    dir: &Path,
) -> anyhow::Result<RunningWebhook> {
    start_with_api(server, store, settings, dir, None).await
}

/// [`start`], also serving the REST API when `api` is given.
pub async fn start_with_api(
    server: &ApiServer,
    store: Arc<dyn LedgerStore>,
    settings: Settings,
    dir: &Path,
    api: Option<ApiOptions>,
) -> anyhow::Result<RunningWebhook> {
    start_inner(server, store, settings, dir, api, None).await
}

/// The webhook as the Helm chart runs it by default: it makes its own
/// certificate (Secret `sparkcap-webhook-tls` in `namespace`) and puts the
/// CA into the webhook configurations named `sparkcap` already applied to
/// the control plane, which reaches it as the Service
/// `sparkcap-webhook.<namespace>.svc` (verified against that name).
pub async fn start_self_managed(
    server: &ApiServer,
    store: Arc<dyn LedgerStore>,
    settings: Settings,
    dir: &Path,
    namespace: &str,
) -> anyhow::Result<RunningWebhook> {
    start_inner(server, store, settings, dir, None, Some(namespace)).await
}

async fn start_inner(
    server: &ApiServer,
    store: Arc<dyn LedgerStore>,
    settings: Settings,
    dir: &Path,
    api: Option<ApiOptions>,
    self_managed: Option<&str>,
) -> anyhow::Result<RunningWebhook> {
    let files = CertFiles {
        cert: dir.join("webhook-tls.crt"),
        key: dir.join("webhook-tls.key"),
    };
    let ca = TestCa::new();
    if self_managed.is_none() {
        let cert = ca.issue(&["127.0.0.1", "localhost"]);
        std::fs::write(&files.cert, &cert.cert_pem)?;
        std::fs::write(&files.key, &cert.key_pem)?;
    }
    let admission = std::net::TcpListener::bind("127.0.0.1:0")?;
    let admission_addr = admission.local_addr()?;
    let ops = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("https://{}", admission.local_addr()?);
    let ops_url = format!("http://{}", ops.local_addr()?);
    let (view, tasks) = sync::start(
        TenantView::new(settings),
        store.clone(),
        server.client(),
        SyncConfig {
            full_reload: Duration::from_secs(1),
            ..SyncConfig::default()
        },
    );
    let metrics = Metrics::new();
    let mut api_url = None;
    let api = match api {
        None => None,
        Some(o) => {
            let listener = std::net::TcpListener::bind(&o.listen)?;
            api_url = Some(format!("https://{}", listener.local_addr()?));
            let client = match &o.token_review_url {
                None => server.client(),
                Some(url) => kube::Client::try_from(kube::Config::new(url.parse()?))?,
            };
            let token_review = o.token_audience.map(|audience| TokenReviewConfig {
                client,
                audience,
                timeout: Duration::from_secs(2),
            });
            let oidc = o.oidc.map(Oidc::new).transpose().map_err(anyhow::Error::msg)?;
            let auth = Authenticator::new(token_review, oidc, o.admin_groups);
            Some((
                listener,
                ApiState::new(store, view.clone(), auth, o.limits, metrics.clone()),
            ))
        }
    };
    let mut self_ca = None;
    if let Some(namespace) = self_managed {
        let cfg = sparkcap_webhook::selfcert::SelfManaged {
            namespace: namespace.to_owned(),
            secret: "sparkcap-webhook-tls".into(),
            service: "sparkcap-webhook".into(),
            configurations: "sparkcap".into(),
            files: files.clone(),
        };
        let ca = sparkcap_webhook::selfcert::ensure(&server.client(), &cfg, chrono::Utc::now()).await?;
        self_ca = Some(String::from_utf8(ca)?);
        tokio::spawn(sparkcap_webhook::selfcert::run(
            server.client(),
            cfg,
            Duration::from_secs(600),
        ));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _tasks = tasks;
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = run(
            Listeners {
                admission,
                ops,
                api,
                limits: Default::default(),
            },
            files,
            Duration::from_millis(200),
            view,
            metrics,
            shutdown,
        )
        .await
        {
            tracing::error!(error = %e, "webhook stopped");
        }
    });
    wait_ready(&ops_url).await?;
    let ca_pem = match (self_managed, self_ca) {
        (Some(namespace), Some(ca)) => {
            // As kube-apiserver reaches a Service: by its DNS name, here resolved to the listener.
            server
                .admission
                .service_urls
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(format!("{namespace}/sparkcap-webhook"), admission_addr.to_string());
            ca
        }
        _ => {
            register(server, &url, &ca.ca_bundle())?;
            ca.ca_pem()
        }
    };
    Ok(RunningWebhook {
        url,
        ops_url,
        api_url,
        ca_pem,
        _stop: stop,
    })
}

async fn wait_ready(ops_url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut last = String::new();
    for _ in 0..200 {
        match client.get(format!("{ops_url}/readyz")).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => last = r.text().await.unwrap_or_default(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("webhook not ready within 10 s: {last}")
}

/// Stores the manifests' webhook configurations, pointed at `url` with `ca_bundle`.
pub fn register(server: &ApiServer, url: &str, ca_bundle: &str) -> anyhow::Result<()> {
    server
        .admission
        .service_urls
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert("sparkcap-system/sparkcap-webhook".into(), url.to_string());
    for doc in serde_yaml::Deserializer::from_str(REGISTRATION) {
        let mut config: Value = serde::Deserialize::deserialize(doc)?;
        for w in config["webhooks"].as_array_mut().into_iter().flatten() {
            w["clientConfig"]["caBundle"] = json!(ca_bundle);
        }
        let plural = match config["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => "mutatingwebhookconfigurations",
            Some("ValidatingWebhookConfiguration") => "validatingwebhookconfigurations",
            other => anyhow::bail!("unexpected kind {other:?} in manifests/webhook-configurations.yaml"),
        };
        let def = find("admissionregistration.k8s.io", "v1", plural).expect("served");
        server
            .store
            .create(def, "", config, false)
            .map_err(|e| anyhow::anyhow!("registering the webhook: {}", e.message))?;
    }
    Ok(())
}
