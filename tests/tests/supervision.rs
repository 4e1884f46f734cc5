//! Background tasks nobody watched (issue 21): a scheduler whose
//! reservations or notice task died, or a webhook whose ledger sync died,
//! carried on serving with stale data while `/readyz` said ok. Each binary
//! now stops with a non-zero exit when one of its background tasks ends,
//! so the kubelet restarts it. Here the task is made to panic through a
//! crash point (`FAILPOINTS=name=panic`) in the real binaries.

use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{default_cluster, serve_with_kubeconfig};
use sparkcap_testkit::harness::procs::{FAST_SCHEDULER_ARGS, Proc, WebhookAddrs, binary};
use sparkcap_testkit::kubelet::Kubelet;
use sparkcap_testkit::tls::TestCa;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A control plane with the default cluster, served over HTTP, and a
/// kubeconfig for it in a fresh directory.
async fn control_plane(name: &str, db: &TestDatabase) -> (ApiServer, Vec<Kubelet>, PathBuf, PathBuf) {
    let store = db.store().await.unwrap();
    let server = ApiServer::new();
    let kubelets = default_cluster(&server, &store, "tenants:\n- id: acme\n  vcpu_hours: 10\n")
        .await
        .unwrap();
    server.create_namespace("sparkcap-system").unwrap();
    let dir = std::env::temp_dir().join(format!("sparkcap-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    serve_with_kubeconfig(&server, &kubeconfig).await.unwrap();
    (server, kubelets, dir, kubeconfig)
}

/// Waits up to 60 s for `p` to exit by itself.
async fn exit_of(p: &mut Proc) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = p.supervise().unwrap() {
            return status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} kept running with a dead background task:\n{}",
            p.name,
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kubeconfig_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_stops_when_a_side_task_dies() {
    let bin = binary("sparkcap-scheduler").unwrap_or_else(|e| panic!("{e:#}"));
    let db = TestDatabase::create().await.expect("test database");
    let (_server, _kubelets, dir, kubeconfig) = control_plane("supervise-scheduler", &db).await;
    for point in ["scheduler.notifier.tick", "scheduler.reservations.event"] {
        let args: Vec<&str> = FAST_SCHEDULER_ARGS
            .iter()
            .copied()
            .chain(["--identity", point])
            .collect();
        let failpoints = format!("{point}=panic");
        let envs = [
            ("KUBECONFIG", kubeconfig_str(&kubeconfig)),
            ("DATABASE_URL", db.url()),
            ("RUST_LOG", "warn"),
            ("FAILPOINTS", failpoints.as_str()),
        ];
        let mut p = Proc::new(point, bin.clone(), &args, &envs, &dir);
        p.start().unwrap();
        let status = exit_of(&mut p).await;
        let said = p.log_text();
        assert!(!status.success(), "{point}: {status}\n{said}");
        assert!(
            said.contains("a side task panicked") && said.contains("stopping"),
            "{point}: says why it stopped:\n{said}"
        );
    }
    db.drop_db().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_stops_when_its_ledger_sync_dies() {
    let bin = binary("sparkcap-webhook").unwrap_or_else(|e| panic!("{e:#}"));
    let db = TestDatabase::create().await.expect("test database");
    let (_server, _kubelets, dir, kubeconfig) = control_plane("supervise-webhook", &db).await;
    let addrs = WebhookAddrs::new(&TestCa::new(), &dir).unwrap();
    let ops = &addrs.ops;
    let args = addrs.serve_args(&["--reload-seconds", "1"]);
    // Without the fault it serves and stays up: the check below is not
    // passing because the webhook cannot start here.
    let envs = [
        ("KUBECONFIG", kubeconfig_str(&kubeconfig)),
        ("DATABASE_URL", db.url()),
        ("RUST_LOG", "warn"),
    ];
    let mut healthy = Proc::new("webhook-healthy", bin.clone(), &args, &envs, &dir);
    healthy.start().unwrap();
    let http = reqwest::Client::new();
    let ready = async {
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("http://{ops}/readyz")).send().await
                && r.status() == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(ready.await, "the webhook never got ready:\n{}", healthy.log_text());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(healthy.supervise().unwrap().is_none(), "{}", healthy.log_text());
    healthy.stop();

    // The second full reload of the ledger panics.
    let envs = [
        ("KUBECONFIG", kubeconfig_str(&kubeconfig)),
        ("DATABASE_URL", db.url()),
        ("RUST_LOG", "warn"),
        ("FAILPOINTS", "webhook.sync.ledger_loop=1*off->panic"),
    ];
    let mut p = Proc::new("webhook", bin, &args, &envs, &dir);
    p.start().unwrap();
    let status = exit_of(&mut p).await;
    let said = p.log_text();
    assert!(!status.success(), "{status}\n{said}");
    assert!(
        said.contains("a background task panicked"),
        "says why it stopped:\n{said}"
    );
    db.drop_db().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}
