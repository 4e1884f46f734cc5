//! PostgreSQL unavailable for 60 s under a running cluster (webhook and
//! scheduler on the real ledger, through a cuttable proxy): new drivers are
//! refused with a message a person can act on once the webhook's view is
//! older than its limit, everything recovers by itself when the database
//! returns, and the pod that ran throughout is charged every second exactly.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{LedgerStore, PgStore};
use sparkcap_scheduler::shell::ShellConfig;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::default_cluster;
use sparkcap_testkit::faults::Outage;
use sparkcap_webhook::view::Settings;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds the database is away.
const OUTAGE: u64 = 60;

fn driver(name: &str, seconds: u64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"spark-role": "driver", "spark-app-selector": format!("spark-{name}"), "spark-app-name": name},
                     "annotations": {"sim.sparkcap.io/run-seconds": seconds.to_string(), "sparkcap.io/executor-instances": "0"}},
        "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3",
                                 "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_postgres_fails_closed_and_loses_nothing() {
    let db = TestDatabase::create().await.expect("test database");
    let direct = db.store().await.unwrap();
    let target = {
        let rest = db.url.split_once("://").unwrap().1;
        let host = rest.split('/').next().unwrap().rsplit('@').next().unwrap();
        tokio::net::lookup_host(host).await.unwrap().next().unwrap()
    };
    let outage = Outage::start(target).await.unwrap();
    let proxied_pg = Arc::new(PgStore::connect(&outage.url_for(&db.url)).await.unwrap());
    let proxied: Arc<dyn LedgerStore> = proxied_pg.clone();

    let server = ApiServer::new();
    let _kubelets = default_cluster(&server, &direct, "tenants:\n- id: acme\n  vcpu_hours: 500\n")
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = Settings {
        stale_after: chrono::TimeDelta::seconds(5),
        draft_runs: 0,
        ..Settings::default()
    };
    let _webhook = sparkcap_testkit::webhook::start(&server, proxied.clone(), settings, &dir)
        .await
        .unwrap();
    let _scheduler = sparkcap_testkit::scheduler::start(
        &server,
        &proxied,
        ShellConfig {
            meter_period: chrono::TimeDelta::seconds(1),
            ..ShellConfig::default()
        },
    );
    let pods: Api<Pod> = Api::namespaced(server.client(), "tenant-acme");
    // A driver that runs through the outage.
    let long = pods
        .create(&PostParams::default(), &driver("through", OUTAGE + 20))
        .await
        .unwrap();
    let uid = long.metadata.uid.clone().unwrap();
    let mut charged = false;
    for _ in 0..100 {
        if direct.pod_checkpoint(&uid).await.unwrap().is_some() {
            charged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(charged, "charged before the outage");

    outage.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Fails closed: a new driver is refused, saying why and what to do.
    let err = pods
        .create(&PostParams::default(), &driver("during", 5))
        .await
        .expect_err("no driver is admitted without the ledger");
    let msg = err.to_string();
    assert!(
        msg.contains("sparkcap cannot confirm tenant acme's capacity: its view of the ledger is")
            && msg.contains("retry in a minute"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(OUTAGE).saturating_sub(cut_at.elapsed())).await;
    assert!(outage.refused() > 0, "the components kept trying");
    outage.restore();

    // Recovers by itself: drivers are admitted again within seconds.
    let back = Instant::now();
    let mut admitted = None;
    while back.elapsed() < Duration::from_secs(30) {
        match pods.create(&PostParams::default(), &driver("after", 2)).await {
            Ok(p) => {
                admitted = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let after = admitted.expect("admitted again after the database returned");
    eprintln!(
        "admission back {:.1} s after the database",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(
        after.spec.unwrap().scheduler_name.as_deref(),
        Some("sparkcap-scheduler")
    );

    // The pod that ran throughout is charged every second of its run.
    let mut closed = None;
    for _ in 0..600 {
        if let Some(cp) = direct
            .pod_checkpoint(&uid)
            .await
            .unwrap()
            .filter(|c| c.finished_at.is_some())
        {
            closed = Some(cp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cp = closed.expect("closed after the outage");
    let done = pods.get("through").await.unwrap();
    let status = done.status.unwrap();
    let start = sparkcap_scheduler::observe::time(status.start_time.as_ref().unwrap());
    let end = cp.finished_at.unwrap();
    assert!(
        end - start >= chrono::TimeDelta::seconds(OUTAGE as i64),
        "it ran through the outage"
    );
    assert_eq!(cp.charged.0, 1000 * (end - start).num_seconds(), "every second, once");
    assert!(direct.audit().await.unwrap().is_clean());
    direct.pool().close().await;
    // The components still hold their connections (the change feed never
    // returns its): cut them, then drop the database (it forces).
    outage.cut();
    drop(proxied_pg);
    db.drop_db().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}
