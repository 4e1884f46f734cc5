//! Real kubectl against the devcluster: get, apply (client- and server-side),
//! get -w and delete. Default `kubectl apply` validation needs the OpenAPI v3
//! documents, which the control plane does not serve yet, hence
//! `--validate=false` (kubectl says so itself when it is missing).

use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::devcluster::{NodesFile, register_node, serve_tls, write_kubeconfig};
use sparkcap_testkit::tls::TestCa;
use std::time::Duration;
use tokio::process::Command;

use sparkcap_testkit::kubectl::{available as kubectl_available, run as kubectl, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_apply_watch_delete() {
    if !kubectl_available() {
        eprintln!(
            "\n*** SKIPPED: kubectl is not installed; install it (Debian package kubectl) to run this test ***\n"
        );
        return;
    }
    let server = ApiServer::new();
    for n in &NodesFile::default_nodes().nodes {
        register_node(&server, n).unwrap();
    }
    // Over HTTPS, as kubectl always meets kube-apiserver: it verifies the
    // certificate against the kubeconfig's certificate-authority-data.
    let ca = TestCa::new();
    let cert = ca.issue(&["127.0.0.1"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("sparkcap-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    write_kubeconfig(&kc, &url, Some(&ca.ca_bundle())).unwrap();
    let srv = server.clone();
    tokio::spawn(async move { serve_tls(srv, listener, &cert).await });
    // A kubeconfig with the wrong CA is refused: the TLS is real.
    let wrong = dir.join("wrong-ca");
    write_kubeconfig(&wrong, &url, Some(&TestCa::new().ca_bundle())).unwrap();
    let out = kubectl(&wrong, &["get", "nodes"]).await;
    assert!(
        !out.status.success() && text(&out).contains("certificate"),
        "{}",
        text(&out)
    );

    let out = kubectl(&kc, &["get", "nodes", "-o", "name"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).lines().count(), 3, "{}", text(&out));

    let manifest = dir.join("cm.yaml");
    let write = |v: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: default\ndata:\n  a: \"{v}\"\n"
            ),
        )
        .unwrap()
    };
    write("1");
    let m = manifest.to_str().unwrap();
    let out = kubectl(&kc, &["apply", "--validate=false", "-f", m]).await;
    assert!(text(&out).contains("configmap/demo created"), "{}", text(&out));
    write("2");
    let out = kubectl(&kc, &["apply", "--validate=false", "-f", m]).await;
    assert!(text(&out).contains("configmap/demo configured"), "{}", text(&out));
    let out = kubectl(&kc, &["get", "cm", "demo", "-o", "jsonpath={.data.a}"]).await;
    assert_eq!(text(&out), "2");

    // A watch sees the deletion.
    let watcher = Command::new("kubectl")
        .env("KUBECONFIG", &kc)
        .args([
            "get",
            "cm",
            "demo",
            "-w",
            "-o",
            "jsonpath={.metadata.name}{\" \"}{.data.a}{\"\\n\"}",
            "--request-timeout=4s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = kubectl(&kc, &["delete", "cm", "demo"]).await;
    assert!(text(&out).contains("configmap \"demo\" deleted"), "{}", text(&out));
    let watched = tokio::time::timeout(Duration::from_secs(10), watcher.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&watched.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 2, "watch printed {lines:?}");
    let out = kubectl(&kc, &["get", "cm", "demo"]).await;
    assert!(text(&out).contains("NotFound"), "{}", text(&out));

    write("3");
    let out = kubectl(&kc, &["apply", "--server-side", "--validate=false", "-f", m]).await;
    assert!(text(&out).contains("serverside-applied"), "{}", text(&out));
    let out = kubectl(&kc, &["get", "cm", "demo", "-o", "jsonpath={.data.a}"]).await;
    assert_eq!(text(&out), "3");
    std::fs::remove_dir_all(&dir).ok();
}

/// The `sparkcap-devcluster` binary as people run it (`--tls --tenants`):
/// kubectl over HTTPS creates a Spark driver pod that the webhook routes, and
/// is refused, with sparkcap's words, for a tenant that bought nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devcluster_binary_runs_the_webhook_for_kubectl() {
    if !kubectl_available() {
        eprintln!(
            "\n*** SKIPPED: kubectl is not installed; install it (Debian package kubectl) to run this test ***\n"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("sparkcap-devcluster-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tenants = dir.join("tenants.yaml");
    std::fs::write(
        &tenants,
        "tenants:\n- id: acme\n  vcpu_hours: 500\n- id: idle\n  namespaces: [idle-jobs]\n",
    )
    .unwrap();
    let kc = dir.join("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparkcap-devcluster"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--tls", "--kubeconfig"])
        .arg(&kc)
        .arg("--tenants")
        .arg(&tenants)
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let mut banner = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("sparkcap-devcluster serving") {
            break;
        }
    }
    assert!(
        banner.contains("sparkcap-webhook admitting and sparkcap-scheduler placing Spark pods for 2 tenants"),
        "{banner}"
    );
    let pod = dir.join("driver.json");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../webhook/tests/fixtures/cluster-mode-driver-pod.json"
        ),
        &pod,
    )
    .unwrap();
    let p = pod.to_str().unwrap();
    let out = kubectl(
        &kc,
        &["create", "--validate=false", "-n", "tenant-acme", "-f", p, "-o", "json"],
    )
    .await;
    // kubectl create sends JSON for a JSON manifest.
    assert!(out.status.success(), "{}", text(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["spec"]["schedulerName"], "sparkcap-scheduler");
    assert_eq!(created["metadata"]["labels"]["sparkcap.io/tenant"], "acme");
    // The scheduler binds it and the simulated kubelet runs it.
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    let mut phase = String::new();
    for _ in 0..100 {
        let out = kubectl(
            &kc,
            &[
                "get",
                "pod",
                "-n",
                "tenant-acme",
                &name,
                "-o",
                "jsonpath={.status.phase} {.spec.nodeName}",
            ],
        )
        .await;
        phase = text(&out);
        if phase.starts_with("Running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(phase, "Running draft-1");
    let out = kubectl(&kc, &["create", "--validate=false", "-n", "idle-jobs", "-f", p]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "admission webhook \"pods.validate.sparkcap.io\" denied the request: tenant idle has no capacity: no dedicated units and no vCPU-hours; purchase capacity before running Spark jobs"
        ),
        "{}",
        text(&out)
    );
    // A ScheduledSparkApplication that fits its slices is admitted and the
    // scheduler's controller reserves them; one that would overlap it beyond
    // the tenant's cap (3.2 of the shared pool's 16 cores) is refused, and
    // kubectl prints the alternatives.
    let ssa = |name: &str, schedule: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: sparkoperator.k8s.io/v1beta2\nkind: ScheduledSparkApplication\nmetadata:\n  name: {name}\n  \
                 namespace: tenant-acme\n  annotations:\n    sparkcap.io/expected-duration: 30m\nspec:\n  schedule: \"{schedule}\"\n  \
                 template:\n    type: Scala\n    mode: cluster\n    image: apache/spark:3.5.3\n    sparkVersion: 3.5.3\n    \
                 mainApplicationFile: local:///opt/spark/examples/jars/spark-examples.jar\n    \
                 driver: {{cores: 1, memory: 512m}}\n    executor: {{cores: 1, instances: 1, memory: 512m}}\n"
            ),
        )
        .unwrap();
        path
    };
    let first = ssa("nightly-orders", "0 2 * * *");
    let out = kubectl(&kc, &["apply", "--validate=false", "-f", first.to_str().unwrap()]).await;
    assert!(
        text(&out).contains("scheduledsparkapplication.sparkoperator.k8s.io/nightly-orders created"),
        "{}",
        text(&out)
    );
    let mut reason = String::new();
    for _ in 0..100 {
        let out = kubectl(
            &kc,
            &[
                "get",
                "scheduledsparkapplication",
                "-n",
                "tenant-acme",
                "nightly-orders",
                "-o",
                "jsonpath={.status.conditions[0].type}={.status.conditions[0].reason}",
            ],
        )
        .await;
        reason = text(&out);
        if reason == "SlicesReserved=Reserved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reason, "SlicesReserved=Reserved");
    let second = ssa("nightly-refunds", "15 2 * * *");
    let mut refused = String::new();
    for _ in 0..50 {
        // The webhook sees the reservation once its view has reloaded (a second at most).
        let out = kubectl(&kc, &["apply", "--validate=false", "-f", second.to_str().unwrap()]).await;
        refused = text(&out);
        if !out.status.success() {
            break;
        }
        kubectl(&kc, &["delete", "-f", second.to_str().unwrap()]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        refused.contains("denied the request: ScheduledSparkApplication nightly-refunds does not fit in the shared pool's time slices")
            && refused.contains("limited by tenant acme's cap")
            && refused.contains("these would fit: schedule \"30 2 * * *\""),
        "{refused}"
    );
    child.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}
