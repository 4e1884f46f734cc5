//! Admission through the test control plane: real HTTPS webhooks (their CA in
//! caBundle) called for writes, with kube-apiserver's wording on the way back.

use axum::Json;
use axum::routing::post;
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sparkcap_testkit::apiserver::ApiServer;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Webhook {
    url: String,
    ca_bundle: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

/// An HTTPS AdmissionReview server: denies pods labelled `deny=yes`, patches
/// in a label and schedulerName on /mutate, sleeps 3 s on /slow.
async fn start_webhook() -> Webhook {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.pem().into_bytes(), key.serialize_pem().into_bytes())
            .await
            .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let respond = move |review: Value, allowed: bool, patch: Option<Value>| {
        log.lock().unwrap().push(review["request"].clone());
        let mut response = json!({"uid": review["request"]["uid"], "allowed": allowed});
        if !allowed {
            response["status"] =
                json!({"code": 403, "reason": "Forbidden", "message": "tenant acme has 0.0 of 500 vCPU-hours left"});
        }
        if let Some(p) = patch {
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p.to_string()));
        }
        Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
    };
    let (r1, r2, r3) = (respond.clone(), respond.clone(), respond);
    let app = axum::Router::new()
        .route(
            "/validate",
            post(move |Json(review): Json<Value>| async move {
                let deny = review.pointer("/request/object/metadata/labels/deny") == Some(&json!("yes"));
                r1(review, !deny, None)
            }),
        )
        .route(
            "/mutate",
            post(move |Json(review): Json<Value>| async move {
                let has_labels = review.pointer("/request/object/metadata/labels").is_some();
                let mut ops = vec![];
                if !has_labels {
                    ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
                }
                ops.push(json!({"op": "add", "path": "/metadata/labels/sparkcap.io~1tenant", "value": "acme"}));
                ops.push(json!({"op": "add", "path": "/spec/schedulerName", "value": "sparkcap-scheduler"}));
                r2(review, true, Some(Value::Array(ops)))
            }),
        )
        .route(
            "/slow",
            post(move |Json(review): Json<Value>| async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                r3(review, true, None)
            }),
        );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum_server::from_tcp_rustls(listener, config).serve(app.into_make_service()));
    Webhook {
        url: format!("https://{addr}"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca.pem()),
        seen,
    }
}

fn webhook_config(kind: &str, name: &str, url: &str, ca: &str, extra: Value) -> Value {
    let mut hook = json!({
        "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "timeoutSeconds": 1,
        "clientConfig": {"url": url, "caBundle": ca},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchExpressions": [{"key": "sparkcap.io/tenant", "operator": "Exists"}]},
    });
    json_patch::merge(&mut hook, &extra);
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": [hook]})
}

/// Registers a webhook configuration over HTTP, so the registration itself
/// is validated as the API server would; the error is (code, message).
async fn register(server: &ApiServer, plural: &str, config: Value) -> Result<Value, (u16, String)> {
    let req = http::Request::post(format!("/apis/admissionregistration.k8s.io/v1/{plural}"))
        .header("content-type", "application/json")
        .body(config.to_string().into_bytes())
        .unwrap();
    server.client().request::<Value>(req).await.map_err(api_err)
}

async fn tenant_ns(client: &kube::Client, name: &str, tenant: bool) {
    let labels = if tenant {
        json!({"sparkcap.io/tenant": "acme"})
    } else {
        json!({})
    };
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
        .await
        .unwrap();
}

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .unwrap()
}

fn api_err(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deny_patch_and_are_scoped() {
    let hook = start_webhook().await;
    let server = ApiServer::new();
    let client = server.client();
    tenant_ns(&client, "tenant-acme", true).await;
    tenant_ns(&client, "other", false).await;
    register(
        &server,
        "mutatingwebhookconfigurations",
        webhook_config(
            "MutatingWebhookConfiguration",
            "mutate.sparkcap.io",
            &format!("{}/mutate", hook.url),
            &hook.ca_bundle,
            json!({}),
        ),
    )
    .await
    .unwrap();
    register(
        &server,
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "validate.sparkcap.io",
            &format!("{}/validate", hook.url),
            &hook.ca_bundle,
            json!({}),
        ),
    )
    .await
    .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "tenant-acme");
    let mut p = pod("", json!({"spark-role": "driver"}));
    p.metadata.name = None;
    p.metadata.generate_name = Some("drv-".into());
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(created.metadata.labels.unwrap()["sparkcap.io/tenant"], "acme");
    assert_eq!(
        created.spec.unwrap().scheduler_name.as_deref(),
        Some("sparkcap-scheduler")
    );
    // On CREATE the webhook sees no name yet (generateName) and no uid.
    let first = hook.seen.lock().unwrap()[0].clone();
    assert_eq!(first["name"], "");
    assert!(first["object"]["metadata"].get("uid").is_none());
    assert_eq!(first["operation"], "CREATE");

    let (code, msg) = api_err(
        pods.create(&PostParams::default(), &pod("x", json!({"deny": "yes"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "admission webhook \"validate.sparkcap.io\" denied the request: tenant acme has 0.0 of 500 vCPU-hours left"
    );
    assert!(pods.get_opt("x").await.unwrap().is_none());

    // Out of scope: a namespace without the tenant label is not sent.
    let before = hook.seen.lock().unwrap().len();
    let other: Api<Pod> = Api::namespaced(client.clone(), "other");
    other
        .create(&PostParams::default(), &pod("y", json!({"deny": "yes"})))
        .await
        .unwrap();
    assert_eq!(hook.seen.lock().unwrap().len(), before);

    // dryRun: sideEffects None is called and nothing is stored.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let d = pods.create(&dry, &pod("dry", json!({}))).await.unwrap();
    assert_eq!(d.spec.unwrap().scheduler_name.as_deref(), Some("sparkcap-scheduler"));
    assert!(pods.get_opt("dry").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_timeout_dry_run_and_refused_features() {
    let hook = start_webhook().await;
    let server = ApiServer::new();
    let client = server.client();
    tenant_ns(&client, "t", true).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");

    // Unreachable, failurePolicy Ignore: admitted.
    register(
        &server,
        "mutatingwebhookconfigurations",
        webhook_config(
            "MutatingWebhookConfiguration",
            "ignore.test",
            "https://127.0.0.1:9/x",
            &hook.ca_bundle,
            json!({"failurePolicy": "Ignore"}),
        ),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("a", json!({}))).await.unwrap();

    // Slow with timeoutSeconds 1 and failurePolicy Fail: refused.
    register(
        &server,
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "slow.test",
            &format!("{}/slow", hook.url),
            &hook.ca_bundle,
            json!({"failurePolicy": "Fail"}),
        ),
    )
    .await
    .unwrap();
    let (code, msg) = api_err(
        pods.create(&PostParams::default(), &pod("b", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 500);
    assert!(
        msg.contains("failed calling webhook \"slow.test\"") && msg.contains("context deadline exceeded"),
        "{msg}"
    );

    // A webhook with side effects cannot serve dry runs.
    let server2 = ApiServer::new();
    let c2 = server2.client();
    tenant_ns(&c2, "t", true).await;
    register(
        &server2,
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "effects.test",
            &format!("{}/validate", hook.url),
            &hook.ca_bundle,
            json!({"sideEffects": "Some"}),
        ),
    )
    .await
    .unwrap();
    let p2: Api<Pod> = Api::namespaced(c2.clone(), "t");
    let (code, msg) = api_err(
        p2.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod("c", json!({})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (400, "admission webhook \"effects.test\" does not support dry run")
    );
    // A wrong CA fails the TLS handshake: failurePolicy Fail refuses.
    let wrong_ca = base64::engine::general_purpose::STANDARD.encode(
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem(),
    );
    let server3 = ApiServer::new();
    let c3 = server3.client();
    tenant_ns(&c3, "t", true).await;
    register(
        &server3,
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "tls.test",
            &format!("{}/validate", hook.url),
            &wrong_ca,
            json!({}),
        ),
    )
    .await
    .unwrap();
    let (code, _) = api_err(
        Api::<Pod>::namespaced(c3, "t")
            .create(&PostParams::default(), &pod("d", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 500);

    // matchConditions are refused at registration, not silently ignored.
    let err = register(
        &server,
        "validatingwebhookconfigurations",
        webhook_config(
            "ValidatingWebhookConfiguration",
            "cel.test",
            &format!("{}/validate", hook.url),
            &hook.ca_bundle,
            json!({"matchConditions": [{"name": "x", "expression": "true"}]}),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, 422);
}
