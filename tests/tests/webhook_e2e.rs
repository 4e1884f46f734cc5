//! sparkcap-webhook end to end: the registration in `manifests/`, the test
//! control plane calling the webhook over TLS, a real Postgres ledger whose
//! change feed refreshes the webhook's view, and the real spark-submit.

use chrono::{TimeDelta, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{
    AccrualRequest, LedgerStore, Millicores, NewTenant, Period, PgStore, PodUsage, Pool, PurchaseKind, PurchaseRequest,
    TenantId,
};
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::apiserver::resources::find;
use sparkcap_testkit::devcluster::{serve, write_kubeconfig};
use sparkcap_testkit::spark::{java_available, spark_home, submit_cluster_mode};
use sparkcap_webhook::view::Settings;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct Env {
    server: ApiServer,
    store: Arc<PgStore>,
    db: TestDatabase,
    webhook: sparkcap_testkit::webhook::RunningWebhook,
    dir: PathBuf,
}

async fn buy(store: &PgStore, tenant: &str, hours: i64, key: &str) {
    store
        .record_purchase(
            &PurchaseRequest {
                tenant: TenantId::new(tenant).unwrap(),
                kind: PurchaseKind::VcpuHours,
                quantity: hours,
                period: Period::Monthly,
                valid_from: Some(Utc::now() - TimeDelta::days(1)),
                valid_until: None,
                idempotency_key: key.into(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
}

/// acme has 500 vCPU-hours; broke bought 1 and used 2.
async fn setup(name: &str) -> Env {
    let db = TestDatabase::create().await.expect("test database");
    let store = Arc::new(db.store().await.unwrap());
    for t in ["acme", "broke"] {
        store
            .create_tenant(
                NewTenant::new(TenantId::new(t).unwrap(), t),
                Utc::now() - TimeDelta::days(2),
            )
            .await
            .unwrap();
        // An admin's binding: the namespace label alone is not enough.
        store
            .bind_namespace(&format!("tenant-{t}"), &TenantId::new(t).unwrap())
            .await
            .unwrap();
    }
    buy(&store, "acme", 500, "acme-1").await;
    buy(&store, "broke", 1, "broke-1").await;
    let epoch = store.claim_epoch("e2e").await.unwrap();
    let start = Utc::now() - TimeDelta::hours(3);
    store
        .accrue(
            epoch,
            &[AccrualRequest {
                pod: PodUsage {
                    uid: "old-run".into(),
                    tenant: TenantId::new("broke").unwrap(),
                    namespace: "tenant-broke".into(),
                    name: "old-run-driver".into(),
                    app_id: Some("spark-old".into()),
                    job: Some("old".into()),
                    role: Some("driver".into()),
                    pool: Pool::Shared,
                    cpu: Millicores(1000),
                    opportunistic: false,
                    started_at: start,
                },
                until: start + TimeDelta::hours(2),
                finished: true,
                outcome: None,
                run: None,
            }],
        )
        .await
        .unwrap();

    let server = ApiServer::new();
    let ns = find("", "v1", "namespaces").unwrap();
    for t in ["acme", "broke"] {
        server
            .store
            .create(
                ns,
                "",
                json!({"metadata": {"name": format!("tenant-{t}"), "labels": {"sparkcap.io/tenant": t}}}),
                false,
            )
            .unwrap();
    }

    let dir = std::env::temp_dir().join(format!("sparkcap-webhook-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let webhook = sparkcap_testkit::webhook::start(&server, store.clone(), Settings::default(), &dir)
        .await
        .expect("webhook starts");
    Env {
        server,
        store,
        db,
        webhook,
        dir,
    }
}

fn driver_fixture() -> Pod {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../webhook/tests/fixtures/cluster-mode-driver-pod.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_routed_refused_and_readmitted_after_a_purchase() {
    let env = setup("kube").await;
    let client = env.server.client();
    let created = Api::<Pod>::namespaced(client.clone(), "tenant-acme")
        .create(&PostParams::default(), &driver_fixture())
        .await
        .expect("acme may run");
    let spec = created.spec.unwrap();
    assert_eq!(spec.scheduler_name.as_deref(), Some("sparkcap-scheduler"));
    let labels = created.metadata.labels.unwrap();
    assert_eq!(labels["sparkcap.io/tenant"], "acme");
    assert_eq!(labels["sparkcap.io/pool"], "shared");
    assert_eq!(labels["sparkcap.io/job"], "ingest-orders");

    let broke = Api::<Pod>::namespaced(client.clone(), "tenant-broke");
    let err = broke
        .create(&PostParams::default(), &driver_fixture())
        .await
        .expect_err("broke is out of vCPU-hours");
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status.message.starts_with(
            "admission webhook \"pods.validate.sparkcap.io\" denied the request: tenant broke has 0.0 of 1 vCPU-hours left (exhausted "
        ) && status.message.ends_with("); purchase more capacity or wait for the next period"),
        "{}",
        status.message
    );

    // A purchase reaches the webhook through the ledger's change feed.
    buy(&env.store, "broke", 10, "broke-2").await;
    let mut admitted = false;
    for _ in 0..50 {
        if broke.create(&PostParams::default(), &driver_fixture()).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "broke's new purchase was not seen within 5 s");

    let metrics = reqwest::get(format!("{}/metrics", env.webhook.ops_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("sparkcap_webhook_admissions_total{endpoint=\"validate\",outcome=\"denied\",resource=\"any\"}"),
        "{metrics}"
    );
    drop(env.store);
    env.db.drop_db().await.unwrap();
    let _ = std::fs::remove_dir_all(env.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_spark_submit_is_routed_or_refused_with_our_message() {
    if !java_available() {
        eprintln!("\n*** SKIPPED: java is not installed, so the real spark-submit cannot run ***\n");
        return;
    }
    let spark = spark_home();
    let env = setup("spark").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let kubeconfig = env.dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &url, None).unwrap();
    tokio::spawn(serve(env.server.clone(), listener));

    let (ok, log) = submit_cluster_mode(&spark, &kubeconfig, &url, "tenant-acme").await;
    assert!(ok, "spark-submit into tenant-acme failed:\n{log}");
    let (pods, _) = env
        .server
        .store
        .list(find("", "v1", "pods").unwrap(), Some("tenant-acme"));
    assert_eq!(pods.len(), 1, "one driver pod");
    assert_eq!(pods[0]["spec"]["schedulerName"], "sparkcap-scheduler");
    assert_eq!(pods[0]["metadata"]["labels"]["sparkcap.io/tenant"], "acme");
    assert_eq!(pods[0]["metadata"]["labels"]["sparkcap.io/job"], "ingest-orders");

    let (ok, log) = submit_cluster_mode(&spark, &kubeconfig, &url, "tenant-broke").await;
    assert!(!ok, "spark-submit into tenant-broke should fail:\n{log}");
    assert!(
        log.contains("admission webhook \\\"pods.validate.sparkcap.io\\\" denied the request: tenant broke has 0.0 of 1 vCPU-hours left")
            || log.contains("admission webhook \"pods.validate.sparkcap.io\" denied the request: tenant broke has 0.0 of 1 vCPU-hours left"),
        "spark-submit did not print sparkcap's message:\n{log}"
    );
    let (pods, _) = env
        .server
        .store
        .list(find("", "v1", "pods").unwrap(), Some("tenant-broke"));
    assert!(pods.is_empty());
    drop(env.store);
    env.db.drop_db().await.unwrap();
    let _ = std::fs::remove_dir_all(env.dir);
}
