//! A tenant REST API to test against: real Postgres, the test control
//! plane (TokenRequest and TokenReview), the webhook serving the API over
//! TLS, and an OIDC issuer with a JWKS endpoint whose key can be rotated.
//!
//! Seeded with two tenants, `acme` (namespace `acme-etl`) and `beta`
//! (`beta-etl`), each with purchases, finished and running runs, and
//! ServiceAccounts: `acme-etl/reader`, `beta-etl/reader`,
//! `sparkcap-admin/admin` (an admin by group) and `stray/reader` (a
//! namespace with no tenant).

use crate::apiserver::ApiServer;
use crate::apiserver::resources::find;
use crate::webhook::{ApiOptions, RunningWebhook, start_with_api};
use axum::extract::State;
use axum::routing::get;
use chrono::{TimeDelta, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{
    AccrualRequest, Bytes, LedgerStore, Millicores, NewTenant, Period, PodOutcome, PodUsage, Pool, PoolCapacity,
    PurchaseKind, PurchaseRequest, TenantId,
};
use sparkcap_webhook::api::oidc::OidcConfig;
use sparkcap_webhook::view::Settings;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The audience ServiceAccount tokens are minted for.
pub const AUDIENCE: &str = "sparkcap";

/// An OIDC issuer for tests: discovery, JWKS, signing.
#[derive(Debug, Clone)]
pub struct TestOidc {
    /// Issuer URL (`iss`).
    pub issuer: String,
    /// JWKS fetches served.
    pub jwks_hits: Arc<AtomicUsize>,
    keys: Arc<RwLock<Vec<(String, KeyPem)>>>,
}

#[derive(Debug, Clone)]
struct KeyPem(String);

#[derive(Clone)]
struct OidcState {
    issuer: String,
    hits: Arc<AtomicUsize>,
    keys: Arc<RwLock<Vec<(String, KeyPem)>>>,
}

fn jwk(kid: &str, key: &KeyPem) -> Jwk {
    let enc = EncodingKey::from_ec_pem(key.0.as_bytes()).expect("EC PEM");
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    jwk
}

fn new_key() -> (String, KeyPem) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    (uuid::Uuid::new_v4().to_string(), KeyPem(key.serialize_pem()))
}

impl TestOidc {
    /// Serves an issuer on 127.0.0.1 with one ES256 key.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let state = OidcState {
            issuer: issuer.clone(),
            hits: Arc::default(),
            keys: Arc::new(RwLock::new(vec![new_key()])),
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<OidcState>| async move {
                    axum::Json(json!({"issuer": s.issuer, "jwks_uri": format!("{}/jwks.json", s.issuer)}))
                }),
            )
            .route(
                "/jwks.json",
                get(|State(s): State<OidcState>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let keys = s.keys.read().expect("keys").iter().map(|(k, p)| jwk(k, p)).collect();
                    axum::Json(JwkSet { keys })
                }),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            issuer,
            jwks_hits: state.hits,
            keys: state.keys,
        })
    }

    /// A verifier configuration for this issuer and audience `sparkcap`.
    pub fn config(&self) -> OidcConfig {
        let mut c = OidcConfig::new(self.issuer.clone(), AUDIENCE);
        c.refresh_interval = std::time::Duration::from_millis(300);
        c
    }

    /// Adds a new current key (the old one stays published).
    pub fn rotate(&self) {
        self.keys.write().expect("keys").push(new_key());
    }

    /// Signs `claims` with the current key (ES256, its kid).
    pub fn sign(&self, claims: &Value) -> String {
        let keys = self.keys.read().expect("keys");
        let (kid, pem) = keys.last().expect("a key");
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_pem(pem.0.as_bytes()).expect("PEM")).expect("sign")
    }

    /// Standard claims for `sub` (valid for an hour, audience `sparkcap`).
    pub fn claims(&self, sub: &str) -> Value {
        let now = Utc::now().timestamp();
        json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 3600})
    }
}

/// A running API with seeded data.
#[derive(Debug)]
pub struct ApiEnv {
    /// The test control plane.
    pub server: ApiServer,
    /// The ledger.
    pub store: Arc<sparkcap_ledger::PgStore>,
    /// Its database (dropped with [`ApiEnv::stop`]).
    pub db: Option<TestDatabase>,
    /// The webhook serving the API.
    pub webhook: RunningWebhook,
    /// The OIDC issuer.
    pub oidc: TestOidc,
    /// Scratch directory (certificates).
    pub dir: PathBuf,
}

/// Seeds the ledger and the control plane.
async fn seed(server: &ApiServer, store: &dyn LedgerStore) -> anyhow::Result<()> {
    let ns_def = find("", "v1", "namespaces").expect("served");
    let sa_def = find("", "v1", "serviceaccounts").expect("served");
    let now = Utc::now();
    for (ns, tenant) in [
        ("acme-etl", Some("acme")),
        ("beta-etl", Some("beta")),
        ("sparkcap-admin", None),
        ("stray", None),
    ] {
        let labels = tenant.map_or(json!({}), |t| json!({"sparkcap.io/tenant": t}));
        server
            .store
            .create(ns_def, "", json!({"metadata": {"name": ns, "labels": labels}}), false)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    for (ns, name) in [
        ("acme-etl", "reader"),
        ("beta-etl", "reader"),
        ("sparkcap-admin", "admin"),
        ("stray", "reader"),
    ] {
        server
            .store
            .create(sa_def, ns, json!({"metadata": {"name": name, "namespace": ns}}), false)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let epoch = store.claim_epoch("api-env").await?;
    store
        .set_pool_capacity(
            epoch,
            &PoolCapacity {
                pool: Pool::Shared,
                nodes: 1,
                cpu: Millicores::cores(16),
                memory: Bytes::gib(64),
                spark_units: 4,
                updated_at: now,
            },
        )
        .await?;
    for t in ["acme", "beta"] {
        let id = TenantId::new(t)?;
        let mut new = NewTenant::new(id.clone(), format!("{t} corp"));
        new.namespaces = vec![format!("{t}-etl")];
        store.create_tenant(new, now - TimeDelta::days(3)).await?;
        store
            .record_purchase(
                &PurchaseRequest {
                    tenant: id.clone(),
                    kind: PurchaseKind::VcpuHours,
                    quantity: 100,
                    period: Period::Monthly,
                    valid_from: Some(now - TimeDelta::days(2)),
                    valid_until: None,
                    idempotency_key: format!("seed-{t}"),
                },
                now - TimeDelta::days(2),
            )
            .await?;
        // Two finished runs of "orders" and one still running.
        let mut batch = Vec::new();
        for run in 0..3i64 {
            let started = now - TimeDelta::hours(30 - run * 10);
            for (role, cpu) in [("driver", 1000), ("executor", 2000)] {
                let running = run == 2;
                batch.push(AccrualRequest {
                    pod: PodUsage {
                        uid: format!("{t}-{run}-{role}"),
                        tenant: id.clone(),
                        namespace: format!("{t}-etl"),
                        name: format!("orders-{run}-{role}"),
                        app_id: Some(format!("spark-{t}-{run}")),
                        job: Some("orders".into()),
                        role: Some(role.into()),
                        pool: Pool::Shared,
                        cpu: Millicores(cpu),
                        opportunistic: false,
                        started_at: started,
                    },
                    until: started + TimeDelta::hours(1),
                    finished: !running,
                    outcome: (!running).then_some(if run == 0 {
                        PodOutcome::Failed
                    } else {
                        PodOutcome::Succeeded
                    }),
                    run: None,
                });
            }
        }
        store.accrue(epoch, &batch).await?;
    }
    Ok(())
}

impl ApiEnv {
    /// Starts everything with `options` (its OIDC setting is replaced by this env's issuer).
    pub async fn start(mut options: ApiOptions) -> anyhow::Result<Self> {
        let db = TestDatabase::create().await?;
        let store = Arc::new(db.store().await?);
        let server = ApiServer::new();
        seed(&server, store.as_ref()).await?;
        let oidc = TestOidc::start().await?;
        if options.oidc.is_none() {
            options.oidc = Some(oidc.config());
        }
        if !options.admin_groups.iter().any(|g| g == "sparkcap:admins") {
            options.admin_groups.push("sparkcap:admins".into());
        }
        let dir = std::env::temp_dir().join(format!("sparkcap-api-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let webhook = start_with_api(&server, store.clone(), Settings::default(), &dir, Some(options)).await?;
        Ok(Self {
            server,
            store,
            db: Some(db),
            webhook,
            oidc,
            dir,
        })
    }

    /// `https://…/api/v1{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.webhook.api_url.as_deref().expect("API served"))
    }

    /// A ServiceAccount token as `kubectl create token NAME -n NS --audience AUD` returns it.
    pub fn sa_token(&self, ns: &str, name: &str, audience: &str) -> String {
        let r = self
            .server
            .tokens
            .token_request(
                &self.server.store,
                ns,
                name,
                &json!({"spec": {"audiences": [audience]}}),
            )
            .expect("token request");
        r["status"]["token"].as_str().expect("token").to_owned()
    }

    /// An admin's token (ServiceAccount in `sparkcap-admin`).
    pub fn admin_token(&self) -> String {
        self.sa_token("sparkcap-admin", "admin", AUDIENCE)
    }

    /// Stops the webhook and drops the database (ending the sessions the
    /// webhook's change feed may still hold).
    pub async fn stop(self) {
        let Self {
            store,
            db,
            webhook,
            dir,
            ..
        } = self;
        drop(webhook);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), store.pool().close()).await;
        if let Some(db) = db {
            let _ = db.drop_db().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
