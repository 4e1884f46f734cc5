//! The Helm chart, with the real helm binary: it lints, renders with its
//! defaults and variants, refuses bad values by name, and every object it
//! renders parses strictly into its Kubernetes type (round-trip equal: no
//! unknown or misspelt field). Webhook rules never match `pods/binding` or
//! system namespaces and agree with manifests/webhook-configurations.yaml;
//! every container runs under the `restricted` Pod Security profile; and
//! manifests/sparkcap.yaml is exactly what `helm template` renders.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm_available() -> bool {
    Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

macro_rules! need_helm {
    () => {
        if !helm_available() {
            eprintln!(
                "\n*** SKIPPED: helm is not installed; ./scripts/test.sh fetches it (scripts/fetch-kube-tools.sh) ***\n"
            );
            return;
        }
    };
}

/// `helm template` with `--set` values; Ok(stdout) or Err(stderr).
fn render(sets: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("helm");
    cmd.args(["template", "sparkcap"])
        .arg(root().join("charts/sparkcap"))
        .args(["--namespace", "sparkcap-system"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v = Value::deserialize(d).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// Parses `doc` as `T` and back: equal only if every field is known.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    if back != *doc {
        return Err(format!(
            "round trip differs (unknown or misspelt field?):\nrendered {doc:#}\nparsed   {back:#}"
        ));
    }
    Ok(typed)
}

fn pod_spec(doc: &Value) -> Option<PodSpec> {
    serde_json::from_value(doc.pointer("/spec/template/spec")?.clone()).ok()
}

/// Checks every document of one rendering; returns the kinds seen.
fn check_rendering(yaml: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for doc in documents(yaml) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let api = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let what = format!("{kind} {name}");
        let parsed = match (api.as_str(), kind.as_str()) {
            ("apps/v1", "Deployment") => strict::<Deployment>(&doc).map(|_| ()),
            ("v1", "Service") => strict::<Service>(&doc).map(|_| ()),
            ("v1", "ServiceAccount") => strict::<ServiceAccount>(&doc).map(|_| ()),
            ("v1", "ConfigMap") => strict::<ConfigMap>(&doc).map(|_| ()),
            ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(&doc).map(|_| ()),
            ("networking.k8s.io/v1", "NetworkPolicy") => strict::<NetworkPolicy>(&doc).map(|_| ()),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(&doc).map(|_| ()),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => strict::<ClusterRoleBinding>(&doc).map(|_| ()),
            ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(&doc).map(|_| ()),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(&doc).map(|_| ()),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                strict::<MutatingWebhookConfiguration>(&doc).map(|_| ())
            }
            ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
                strict::<ValidatingWebhookConfiguration>(&doc).map(|_| ())
            }
            // Custom resources (cert-manager, Prometheus Operator): no
            // k8s-openapi type; their shape is checked where it matters.
            ("cert-manager.io/v1", "Certificate" | "Issuer")
            | ("monitoring.coreos.com/v1", "ServiceMonitor" | "PrometheusRule") => Ok(()),
            _ => Err(format!("unexpected {api} {kind}")),
        };
        if let Err(e) = parsed {
            panic!("{what}: {e}");
        }
        assert_eq!(
            doc.pointer("/metadata/labels/app.kubernetes.io~1name")
                .and_then(Value::as_str),
            Some("sparkcap"),
            "{what} carries the chart's labels"
        );
        if let Some(spec) = pod_spec(&doc) {
            restricted(&what, &spec);
        }
        if kind.ends_with("WebhookConfiguration") {
            for w in doc["webhooks"].as_array().unwrap() {
                let resources: Vec<&str> = w["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r["resources"].as_array().unwrap())
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    resources.iter().all(|r| !r.contains('/') && *r != "*"),
                    "{what}: {resources:?} must never match subresources such as pods/binding"
                );
                let excluded = w
                    .pointer("/namespaceSelector/matchExpressions")
                    .and_then(Value::as_array)
                    .unwrap()
                    .iter()
                    .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
                    .map(|e| e["values"].clone())
                    .unwrap();
                for ns in ["kube-system", "kube-node-lease", "sparkcap-system"] {
                    assert!(
                        excluded.as_array().unwrap().iter().any(|v| v == ns),
                        "{what}: {ns} excluded"
                    );
                }
            }
        }
        kinds.push(kind);
    }
    kinds
}

/// The `restricted` Pod Security profile, container by container.
fn restricted(what: &str, spec: &PodSpec) {
    let pod = spec.security_context.clone().unwrap_or_default();
    assert_eq!(pod.run_as_non_root, Some(true), "{what}: pod runAsNonRoot");
    assert_eq!(
        pod.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{what}: pod seccomp"
    );
    assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
    for v in spec.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "{what}: no hostPath volumes");
    }
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let sc = c.security_context.clone().unwrap_or_default();
        let who = format!("{what} container {}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{who}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{who}");
        assert_ne!(sc.privileged, Some(true), "{who}");
        assert_ne!(sc.run_as_non_root, Some(false), "{who}");
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()]),
            "{who}: drops all capabilities"
        );
        assert!(sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_none(), "{who}");
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{who}"
        );
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                m.sub_path.is_none(),
                "{who}: whole Secrets, no subPath (rotations must reach the pod)"
            );
        }
    }
}

#[test]
fn the_chart_lints_and_renders_strictly_with_every_variant() {
    need_helm!();
    let out = Command::new("helm")
        .args(["lint", "--strict"])
        .arg(root().join("charts/sparkcap"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Defaults, without cert-manager in the cluster: the webhook manages its certificate.
    let defaults = render(&[]).unwrap();
    let kinds = check_rendering(&defaults);
    for k in [
        "Deployment",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ClusterRole",
        "Role",
    ] {
        assert!(kinds.iter().any(|x| x == k), "defaults render a {k}: {kinds:?}");
    }
    assert!(!kinds.iter().any(|k| k == "Certificate"));
    assert!(defaults.contains("--self-managed-tls") && defaults.contains("resourceNames: [\"sparkcap-webhook-tls\"]"));
    // cert-manager: Certificate, CA injection, the Secret mounted whole.
    let cm = render(&["webhook.tls.mode=certManager"]).unwrap();
    let kinds = check_rendering(&cm);
    assert_eq!(kinds.iter().filter(|k| *k == "Certificate").count(), 2, "{kinds:?}");
    assert!(cm.contains("cert-manager.io/inject-ca-from: sparkcap-system/sparkcap-webhook"));
    assert!(!cm.contains("--self-managed-tls"));
    // A Secret of one's own, and its CA.
    let own = render(&[
        "webhook.tls.mode=existingSecret",
        "webhook.tls.existingSecret=my-tls",
        "webhook.tls.caBundle=TFMwdExTMUNSVWRKVGlCRFJWSlU=",
    ])
    .unwrap();
    let kinds = check_rendering(&own);
    assert!(!kinds.iter().any(|k| k == "Certificate" || k == "Issuer"));
    assert!(own.contains("secretName: my-tls") && own.contains("caBundle: TFMwdExTMUNSVWRKVGlCRFJWSlU="));
    assert!(!own.contains("cert-manager.io/inject-ca-from"));
    // Metrics on: ServiceMonitor and PrometheusRule.
    let kinds = check_rendering(
        &render(&[
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
        ])
        .unwrap(),
    );
    assert!(kinds.iter().any(|k| k == "ServiceMonitor") && kinds.iter().any(|k| k == "PrometheusRule"));
    // Metrics off, API off, an external database's Secret (CloudNativePG's).
    let cnpg = render(&[
        "metrics.dashboard.enabled=false",
        "webhook.api.enabled=false",
        "database.secretName=sparkcap-db-app",
        "database.key=uri",
        "networkPolicy.databaseCIDRs={10.0.0.0/16}",
    ])
    .unwrap();
    let kinds = check_rendering(&cnpg);
    assert!(!kinds.iter().any(|k| k == "ConfigMap"));
    assert!(cnpg.contains("name: sparkcap-db-app") && cnpg.contains("key: uri"));
    assert!(cnpg.contains("--api-listen=off"));
    assert!(cnpg.contains("cidr: 10.0.0.0/16"));
    // Issue 19 item 12: the admission and metrics ports restricted to the
    // API server's and Prometheus's sources; notification hosts allow-listed.
    let locked = render(&[
        "networkPolicy.admissionFrom[0].ipBlock.cidr=172.18.0.0/16",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        "notifications.allowHosts={hooks.platform.svc}",
    ])
    .unwrap();
    check_rendering(&locked);
    let policies: Vec<NetworkPolicy> = documents(&locked)
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .map(|d| strict(d).unwrap())
        .collect();
    let from_of = |policy: &str, port: i32| {
        let p = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(policy))
            .unwrap();
        let rule = p
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .any(|x| x.port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)))
            })
            .unwrap();
        serde_json::to_value(&rule.from).unwrap()
    };
    assert_eq!(
        from_of("sparkcap-webhook", 8443),
        json!([{"ipBlock": {"cidr": "172.18.0.0/16"}}])
    );
    for policy in ["sparkcap-webhook", "sparkcap-scheduler"] {
        assert_eq!(
            from_of(policy, 9090),
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
            "{policy}"
        );
    }
    assert_eq!(locked.matches("--notify-allow-host=hooks.platform.svc").count(), 2);
    // Unset, the install notes warn that both ports are open.
    let notes = std::process::Command::new("helm")
        .args(["install", "t", "--dry-run", "--namespace", "sparkcap"])
        .arg(root().join("charts/sparkcap"))
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&notes.stdout);
    assert!(notes.contains("any pod can call the admission port") && notes.contains("any pod can read /metrics"));
}

#[test]
fn bad_values_fail_at_install_naming_the_value() {
    need_helm!();
    for (set, says) in [
        ("webhook.replicas=1", "/webhook/replicas': minimum: got 1, want 2"),
        (
            "scheduler.meterSeconds=60",
            "/scheduler/meterSeconds': maximum: got 60, want 30",
        ),
        ("draftRuns=-1", "/draftRuns': minimum: got -1, want 0"),
        ("sparkUnit.corez=4", "additional properties 'corez' not allowed"),
        ("webhook.api.oidc.issuer=http://insecure", "/webhook/api/oidc/issuer'"),
        (
            "webhook.tls.mode=existingSecret",
            "/webhook/tls/existingSecret': minLength: got 0, want 1",
        ),
        ("webhook.tls.mode=vault", "/webhook/tls/mode': value must be one of"),
    ] {
        let err = render(&[set]).expect_err(set);
        assert!(err.contains(says), "{set}: {err}");
    }
}

#[test]
fn webhook_rules_match_the_registration_the_tests_use() {
    need_helm!();
    let rendered = documents(&render(&[]).unwrap());
    let registration = documents(sparkcap_testkit::webhook::REGISTRATION);
    let webhooks = |docs: &[Value], kind: &str| -> Vec<Value> {
        let d = docs.iter().find(|d| d["kind"] == kind).unwrap();
        d["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let mut w = w.clone();
                w["clientConfig"].as_object_mut().unwrap().remove("caBundle");
                w
            })
            .collect()
    };
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        assert_eq!(webhooks(&rendered, kind), webhooks(&registration, kind), "{kind}");
    }
}

#[test]
fn committed_manifests_are_the_rendered_chart() {
    need_helm!();
    let committed = std::fs::read_to_string(root().join("manifests/sparkcap.yaml")).unwrap();
    let body: String = committed
        .lines()
        .skip_while(|l| l.starts_with('#') && !l.starts_with("# Source"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == render(&[]).unwrap(),
        "manifests/sparkcap.yaml is stale: run ./scripts/render-manifests.sh and commit it"
    );
}

/// The committed manifests (the chart with its defaults) applied with the
/// real kubectl to the test control plane; then sparkcap's two components,
/// run as the chart runs them: the webhook makes its certificate and puts its
/// CA into the applied webhook configurations, the control plane calls it as
/// the Service `sparkcap-webhook.sparkcap-system.svc`, and labelling a
/// namespace onboards it (binding, quota, network policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_installs_on_the_test_control_plane() {
    use sparkcap_ledger::*;
    use sparkcap_testkit::apiserver::ApiServer;
    use sparkcap_testkit::devcluster::{NodesFile, TenantsFile, register_node, seed};
    use sparkcap_testkit::kubectl::{self, text};
    use std::sync::Arc;
    use std::time::Duration;
    if !kubectl::available() {
        eprintln!("\n*** SKIPPED: kubectl is not installed; ./scripts/test.sh fetches it ***\n");
        return;
    }
    let server = ApiServer::new();
    let nodes = NodesFile::default_nodes();
    for n in &nodes.nodes {
        register_node(&server, n).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("sparkcap-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = kubectl::serve_with_kubeconfig(&server, &dir);
    // (`kubectl create namespace` sends protobuf, which the test control plane
    // does not decode; a manifest is sent as JSON.)
    let create_namespace = |name: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
        )
        .unwrap();
        let kc = kc.clone();
        async move {
            let out = kubectl::run(&kc, &["apply", "--validate=false", "-f", path.to_str().unwrap()]).await;
            assert!(out.status.success(), "{}", text(&out));
        }
    };
    create_namespace("sparkcap-system").await;
    let manifests = root().join("manifests/sparkcap.yaml");
    let out = kubectl::run(&kc, &["apply", "--validate=false", "-f", manifests.to_str().unwrap()]).await;
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    for line in [
        "deployment.apps/sparkcap-webhook created",
        "deployment.apps/sparkcap-scheduler created",
        "clusterrole.rbac.authorization.k8s.io/sparkcap-scheduler created",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/sparkcap created",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/sparkcap created",
        "poddisruptionbudget.policy/sparkcap-webhook created",
    ] {
        assert!(printed.contains(line), "{line}:\n{printed}");
    }

    // The ledger: pools sized from the nodes, tenant acme with vCPU-hours.
    let store: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    seed(
        &server,
        store.as_ref(),
        &nodes,
        &TenantsFile::parse("tenants: []\n").unwrap(),
    )
    .await
    .unwrap();
    let acme = TenantId::new("acme").unwrap();
    let now = chrono::Utc::now();
    store
        .create_tenant(NewTenant::new(acme.clone(), "Acme"), now)
        .await
        .unwrap();
    store
        .record_purchase(
            &PurchaseRequest {
                tenant: acme.clone(),
                kind: PurchaseKind::VcpuHours,
                quantity: 500,
                period: Period::Monthly,
                valid_from: Some(now),
                valid_until: None,
                idempotency_key: "chart".into(),
            },
            now,
        )
        .await
        .unwrap();
    let webhook = sparkcap_testkit::webhook::start_self_managed(
        &server,
        store.clone(),
        sparkcap_webhook::view::Settings::default(),
        &dir,
        "sparkcap-system",
    )
    .await
    .unwrap();
    let _scheduler = sparkcap_testkit::scheduler::start(
        &server,
        &store,
        sparkcap_scheduler::shell::ShellConfig {
            onboarding_period: Duration::from_millis(200),
            ..Default::default()
        },
    );
    // The CA is in both applied configurations, the pair in a TLS Secret.
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&webhook.ca_pem);
    for kind in ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"] {
        let out = kubectl::run(
            &kc,
            &[
                "get",
                kind,
                "sparkcap",
                "-o",
                "jsonpath={.webhooks[*].clientConfig.caBundle}",
            ],
        )
        .await;
        for b in text(&out).split_whitespace() {
            assert_eq!(b, bundle, "{kind}");
        }
    }
    let out = kubectl::run(
        &kc,
        &[
            "get",
            "secret",
            "-n",
            "sparkcap-system",
            "sparkcap-webhook-tls",
            "-o",
            "jsonpath={.type}",
        ],
    )
    .await;
    assert_eq!(text(&out), "kubernetes.io/tls");

    // Onboarding: an admin binds the namespace in the ledger (a label alone
    // never does), then labels it so that the webhooks see it.
    create_namespace("acme-etl").await;
    store
        .bind_namespace("acme-etl", &sparkcap_ledger::TenantId::new("acme").unwrap())
        .await
        .unwrap();
    let out = kubectl::run(&kc, &["label", "namespace", "acme-etl", "sparkcap.io/tenant=acme"]).await;
    assert!(out.status.success(), "{}", text(&out));
    // vCPU-hours reach the shared and draft pools and borrowable dedicated
    // capacity: every pool's cpu, as the scheduler registered it.
    let (mut quota, mut want) = (String::new(), String::new());
    for _ in 0..100 {
        let pools: i64 = store.pools().await.unwrap().iter().map(|p| p.cpu.0).sum();
        want = format!("{pools}m");
        let out = kubectl::run(
            &kc,
            &[
                "get",
                "resourcequota",
                "sparkcap",
                "-n",
                "acme-etl",
                "-o",
                "jsonpath={.spec.hard.requests\\.cpu}",
            ],
        )
        .await;
        quota = text(&out);
        if quota == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(quota, want);
    assert_ne!(quota, "0m");
    let out = kubectl::run(
        &kc,
        &[
            "get",
            "networkpolicy",
            "sparkcap-default-deny",
            "-n",
            "acme-etl",
            "-o",
            "jsonpath={.spec.policyTypes}",
        ],
    )
    .await;
    assert_eq!(text(&out), r#"["Ingress","Egress"]"#);
    assert!(
        store
            .namespace_bindings()
            .await
            .unwrap()
            .iter()
            .any(|b| b.namespace == "acme-etl" && b.tenant == acme)
    );

    // A Spark driver in it goes through the chart's webhook configuration,
    // over TLS verified against the self-managed CA.
    let pod = dir.join("driver.json");
    std::fs::copy(root().join("webhook/tests/fixtures/cluster-mode-driver-pod.json"), &pod).unwrap();
    let mut created = String::new();
    for _ in 0..50 {
        // The webhook's view learns the new binding within its reload period.
        let out = kubectl::run(
            &kc,
            &[
                "create",
                "--validate=false",
                "-n",
                "acme-etl",
                "-f",
                pod.to_str().unwrap(),
                "-o",
                "jsonpath={.spec.schedulerName}",
            ],
        )
        .await;
        created = text(&out);
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(created, "sparkcap-scheduler");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every metric the dashboard and the alerts query is one the binaries
/// export (names taken from their sources), so no panel stays empty.
#[test]
fn dashboard_and_alerts_query_exported_metrics() {
    need_helm!();
    let mut exported = std::collections::BTreeSet::new();
    for src in [
        "scheduler/src/metrics.rs",
        "webhook/src/metrics.rs",
        "webhook/src/server.rs",
    ] {
        let text = std::fs::read_to_string(root().join(src)).unwrap();
        for part in text.split('"').skip(1).step_by(2) {
            if part.starts_with("sparkcap_") && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                exported.insert(part.to_owned());
            }
        }
        // Names written into exposition text by hand (`# TYPE name gauge`).
        for line in text.lines() {
            if let Some(rest) = line.trim().trim_start_matches('"').strip_prefix("# TYPE ") {
                exported.insert(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    }
    let rendered = render(&["metrics.prometheusRule.enabled=true"]).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for token in rendered.split(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
        if token.starts_with("sparkcap_") && token.len() > "sparkcap_".len() {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| token.strip_suffix(s))
                .unwrap_or(token);
            queried.insert(base.to_owned());
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "queried but never exported: {missing:?}\nexported: {exported:?}"
    );
}
