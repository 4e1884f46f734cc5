//! The test control plane through the real `kube::Client`: what kube-rs
//! clients (and so sparkcap) rely on must behave as kube-apiserver does.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use sparkcap_testkit::apiserver::ApiServer;
use sparkcap_testkit::apiserver::store::Store;
use std::time::Duration;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "apache/spark:3.5.3",
                  "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
    }))
    .unwrap()
}

async fn ns(client: &kube::Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_crud_conflicts_and_selectors() {
    let server = ApiServer::new();
    let client = server.client();
    ns(&client, "tenant-acme").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "tenant-acme");
    let mut generated = pod("", json!({"spark-role": "driver"}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("ingest-".into());
    let created = pods.create(&PostParams::default(), &generated).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("ingest-") && name.len() == "ingest-".len() + 5);
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    pods.create(
        &PostParams::default(),
        &pod("exec-1", json!({"spark-role": "executor"})),
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            pods.create(&PostParams::default(), &pod("exec-1", json!({})))
                .await
                .unwrap_err()
        ),
        409
    );

    let drivers = pods
        .list(&ListParams::default().labels("spark-role=driver"))
        .await
        .unwrap();
    assert_eq!(drivers.items.len(), 1);
    let not_drivers = pods
        .list(&ListParams::default().labels("spark-role notin (driver)"))
        .await
        .unwrap();
    assert_eq!(not_drivers.items.len(), 1);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=exec-1"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(
        code(
            pods.list(&ListParams::default().fields("spec.bogus=1"))
                .await
                .unwrap_err()
        ),
        400
    );

    // Optimistic concurrency: a write with a stale resourceVersion is refused.
    let mut a = pods.get("exec-1").await.unwrap();
    let mut b = a.clone();
    a.metadata.labels.get_or_insert_default().insert("x".into(), "1".into());
    pods.replace("exec-1", &PostParams::default(), &a).await.unwrap();
    b.metadata.labels.get_or_insert_default().insert("x".into(), "2".into());
    assert_eq!(
        code(pods.replace("exec-1", &PostParams::default(), &b).await.unwrap_err()),
        409
    );

    // Merge, JSON and strategic patches.
    pods.patch(
        "exec-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})),
    )
    .await
    .unwrap();
    let p = pods
        .patch(
            "exec-1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "other"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.spec.as_ref().unwrap().containers.len(), 1);
    assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some("other"));
    assert_eq!(p.metadata.labels.unwrap()["m"], "1");

    // Pagination.
    for i in 0..7 {
        pods.create(&PostParams::default(), &pod(&format!("page-{i}"), json!({"page": "y"})))
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut lp = ListParams::default().labels("page=y").limit(3);
    loop {
        let page = pods.list(&lp).await.unwrap();
        seen += page.items.len();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen, 7);

    // Unbound pods go at once; a namespace that does not exist is 404.
    pods.delete("exec-1", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(pods.get("exec-1").await.unwrap_err()), 404);
    let ghost: Api<Pod> = Api::namespaced(client.clone(), "ghost");
    assert_eq!(
        code(
            ghost
                .create(&PostParams::default(), &pod("p", json!({})))
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn binding_eviction_and_graceful_delete() {
    let server = ApiServer::new();
    let client = server.client();
    ns(&client, "t").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    pods.create(&PostParams::default(), &pod("d", json!({"app": "a"})))
        .await
        .unwrap();
    let uid = pods.get("d").await.unwrap().metadata.uid.unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "d", "uid": uid},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "d", &PostParams::default(), &binding)
        .await
        .unwrap();
    let bound = pods.get("d").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("node-1"));
    let conds = bound.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let again: Result<serde_json::Value, _> = pods
        .create_subresource("binding", "d", &PostParams::default(), &binding)
        .await;
    assert_eq!(code(again.unwrap_err()), 409);

    // A running pod covered by a budget that allows no disruption cannot be evicted.
    pods.patch_status(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "t");
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "b"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}}}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(code(pods.evict("d", &EvictParams::default()).await.unwrap_err()), 429);
    pdbs.delete("b", &DeleteParams::default()).await.unwrap();

    // Evicting a bound, running pod deletes it gracefully: the kubelet finishes it.
    // kube 5's `evict` sends its options as `delete_options` (snake case), which
    // kube-apiserver ignores like any unknown field, so the pod's own grace
    // period applies; a correctly spelt `deleteOptions` is honoured. sparkcap's
    // scheduler must therefore send the Eviction body itself.
    pods.create(&PostParams::default(), &pod("e", json!({}))).await.unwrap();
    let bind_e = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "e"}, "target": {"kind": "Node", "name": "node-1"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "e", &PostParams::default(), &bind_e)
        .await
        .unwrap();
    pods.evict(
        "e",
        &EvictParams {
            delete_options: Some(DeleteParams::default().grace_period(5)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pods.get("e").await.unwrap().metadata.deletion_grace_period_seconds,
        Some(30)
    );
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "d"},
                          "deleteOptions": {"gracePeriodSeconds": 5}});
    let _: serde_json::Value = pods
        .create_subresource("eviction", "d", &PostParams::default(), &eviction)
        .await
        .unwrap();
    let deleting = pods.get("d").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(5));
    // Binding a pod being deleted is refused.
    assert_eq!(
        code(
            pods.create_subresource::<_, serde_json::Value>("binding", "d", &PostParams::default(), &binding)
                .await
                .unwrap_err()
        ),
        409
    );
    server.store.finish_pod_deletion("t", "d").unwrap();
    assert_eq!(code(pods.get("d").await.unwrap_err()), 404);
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let server = ApiServer::new();
    let client = server.client();
    ns(&client, "t").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
    let driver = pods
        .create(&PostParams::default(), &pod("driver", json!({})))
        .await
        .unwrap();
    let owned: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "spark-conf", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "driver", "uid": driver.metadata.uid.unwrap(), "controller": true}]},
        "data": {"spark.properties": "spark.executor.instances=3"}}))
    .unwrap();
    cms.create(&PostParams::default(), &owned).await.unwrap();
    // Server-side apply, as Spark's fabric8 client does it.
    let applied = cms
        .patch(
            "svc-conf",
            &PatchParams::apply("fabric8").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "svc-conf"}, "data": {"a": "1"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], "1");
    pods.delete("driver", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(cms.get("spark-conf").await.unwrap_err()), 404);
    assert!(cms.get("svc-conf").await.is_ok());
}

#[tokio::test]
async fn lease_replace_is_optimistic() {
    let server = ApiServer::new();
    let leases: Api<Lease> = Api::namespaced(server.client(), "kube-system");
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "sparkcap-scheduler"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}}))
    .unwrap();
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    let mut mine = created.clone();
    let mut theirs = created;
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    theirs.spec.as_mut().unwrap().holder_identity = Some("c".into());
    leases
        .replace("sparkcap-scheduler", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_eq!(
        code(
            leases
                .replace("sparkcap-scheduler", &PostParams::default(), &theirs)
                .await
                .unwrap_err()
        ),
        409
    );
}

#[tokio::test]
async fn watch_events_follow_selectors_and_410_is_in_stream() {
    let server = ApiServer::with_store(Store::new(20));
    let client = server.client();
    ns(&client, "t").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    let start = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = pods
        .watch(&WatchParams::default().fields("spec.nodeName="), &start)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("p", json!({}))).await.unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "p", &PostParams::default(), &binding)
        .await
        .unwrap();
    // Progress bookmarks may come in between on a slow machine.
    let mut events = stream.try_filter(|e| futures::future::ready(!matches!(e, WatchEvent::Bookmark(_))));
    assert!(matches!(
        events.try_next().await.unwrap().unwrap(),
        WatchEvent::Added(_)
    ));
    // Bound: it leaves the `spec.nodeName=` watch as DELETED.
    assert!(matches!(
        events.try_next().await.unwrap().unwrap(),
        WatchEvent::Deleted(_)
    ));

    for i in 0..30 {
        pods.create(&PostParams::default(), &pod(&format!("q{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut old = pods.watch(&WatchParams::default(), &start).await.unwrap().boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 in the stream, got {other:?}"),
    }
}

/// A reflector's store stays equal to the server's state through 10,000
/// changes, including a dropped stream that must resume and a resume point
/// that has been compacted away, which must relist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_stays_in_sync_through_10000_changes_drops_and_410() {
    let server = ApiServer::with_store(Store::new(500));
    let client = server.client();
    ns(&client, "t").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
    let (reader, writer) = reflector::store::<ConfigMap>();
    // Short server-side timeout: the stream is dropped and resumed every second.
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().timeout(1)).default_backoff(),
    );
    let (pause_tx, mut pause_rx) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(async move {
        let mut stream = stream.boxed();
        loop {
            while *pause_rx.borrow() {
                if pause_rx.changed().await.is_err() {
                    return;
                }
            }
            tokio::select! {
                ev = stream.next() => if ev.is_none() { return },
                _ = pause_rx.changed() => {}
            }
        }
    });
    let cm = |name: &str, v: usize| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v.to_string()}})).unwrap()
    };
    let mut changes = 0;
    for round in 0..20 {
        if round == 10 {
            // Stop reading past the server's timeout, then make more changes
            // than the event history holds: the resume point is gone (410).
            pause_tx.send(true).unwrap();
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        for i in 0..250 {
            let name = format!("cm-{i}");
            match round % 4 {
                0 => {
                    let _ = cms.create(&PostParams::default(), &cm(&name, round)).await;
                }
                1 | 2 => {
                    cms.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"v": round.to_string()}})),
                    )
                    .await
                    .unwrap();
                }
                _ => {
                    cms.delete(&name, &DeleteParams::default()).await.unwrap();
                }
            }
            changes += 1;
        }
        if round == 10 {
            pause_tx.send(false).unwrap();
        }
    }
    assert!(changes >= 5000);
    // Then 5,000 more updates on a steady set.
    for i in 0..250 {
        cms.create(&PostParams::default(), &cm(&format!("final-{i}"), 0))
            .await
            .unwrap();
    }
    for v in 1..=20 {
        for i in 0..250 {
            cms.patch(
                &format!("final-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": v.to_string()}})),
            )
            .await
            .unwrap();
        }
        changes += 250;
    }
    assert!(changes >= 10_000, "{changes}");
    let want = cms.list(&ListParams::default()).await.unwrap().items;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut have: Vec<(String, String)> = reader
            .state()
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap(), c.data.as_ref().unwrap()["v"].clone()))
            .collect();
        have.sort();
        let mut exp: Vec<(String, String)> = want
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap(), c.data.as_ref().unwrap()["v"].clone()))
            .collect();
        exp.sort();
        if have == exp {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector out of sync: {} vs {} objects",
            have.len(),
            exp.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.abort();
}
