//! The decoder and the decision never panic: whatever the body, the answer is
//! HTTP 400 or a well-formed AdmissionReview echoing the request's uid.
//! CI runs a bounded number of cases; `WEBHOOK_FUZZ_CASES=1000000 cargo test
//! --release -p sparkcap-webhook --test fuzz` runs the long campaign.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use sparkcap_webhook::admit::Endpoint;
use sparkcap_webhook::server::respond;
use sparkcap_webhook::view::TenantView;

fn cases() -> u32 {
    std::env::var("WEBHOOK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9./~-]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("driver"),
            Just("executor"),
            Just("1"),
            Just("500m"),
            Just("-1"),
            Just("1e99"),
            Just("tenant-acme"),
            Just("spark-role"),
            Just("CREATE"),
            Just("pods"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,8}".boxed(),
                    prop_oneof![
                        Just("metadata"),
                        Just("labels"),
                        Just("spec"),
                        Just("containers"),
                        Just("resources"),
                        Just("requests"),
                        Just("cpu"),
                        Just("spark-role"),
                        Just("spark-app-selector"),
                        Just("name"),
                        Just("schedulerName"),
                        Just("tolerations"),
                        Just("driver"),
                        Just("executor"),
                        Just("cores"),
                        Just("instances"),
                        Just("schedule"),
                        Just("template"),
                        Just("overhead"),
                        Just("initContainers")
                    ]
                    .prop_map(str::to_string)
                    .boxed(),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Grafts `noise` somewhere into a real pod so that most cases get deep into the core.
fn graft(mut pod: Value, path: &[&str], noise: Value) -> Value {
    let mut at = &mut pod;
    for p in path {
        if !at.is_object() {
            *at = json!({});
        }
        at = at.as_object_mut().unwrap().entry(p.to_string()).or_insert(Value::Null);
    }
    *at = noise;
    pod
}

fn check(endpoint: Endpoint, body: &[u8], view: &TenantView) -> Result<(), TestCaseError> {
    let (status, out, _) = respond(endpoint, body, view, now());
    if status == 400 {
        return Ok(());
    }
    prop_assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&out).expect("responses are JSON");
    prop_assert_eq!(&review["apiVersion"], "admission.k8s.io/v1");
    prop_assert_eq!(&review["kind"], "AdmissionReview");
    let sent: Value = serde_json::from_slice(body).unwrap();
    prop_assert_eq!(&review["response"]["uid"], &sent["request"]["uid"]);
    prop_assert!(review["response"]["allowed"].is_boolean());
    if review["response"]["allowed"] == false {
        prop_assert!(
            review["response"]["status"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies(body in arb_json()) {
        let view = view();
        let bytes = serde_json::to_vec(&body).unwrap();
        check(Endpoint::Validate, &bytes, &view)?;
        check(Endpoint::Mutate, &bytes, &view)?;
    }

    #[test]
    fn arbitrary_requests(request in arb_json(), ns in prop_oneof![Just("tenant-acme"), Just("tenant-broke"), Just("ghost"), Just("plain")]) {
        let mut review = review(("", "v1", "pods"), ns, "CREATE", &json!({}));
        review["request"] = graft(review["request"].clone(), &["object"], request);
        let bytes = serde_json::to_vec(&review).unwrap();
        let view = view();
        check(Endpoint::Validate, &bytes, &view)?;
        check(Endpoint::Mutate, &bytes, &view)?;
    }

    #[test]
    fn damaged_spark_pods(noise in arb_json(), at in 0usize..8, ns in prop_oneof![Just("tenant-acme"), Just("tenant-broke"), Just("tenant-dedi")]) {
        let paths: [&[&str]; 8] = [
            &["metadata", "labels"], &["metadata", "labels", "spark-role"], &["spec", "containers"],
            &["spec", "containers", "0"], &["spec", "overhead"], &["spec", "tolerations"], &["metadata"], &["spec"],
        ];
        let pod = graft(fixture("cluster-mode-driver-pod.json"), paths[at], noise);
        let view = view();
        for resource in [("", "v1", "pods"), ("sparkoperator.k8s.io", "v1beta2", "sparkapplications"), ("sparkoperator.k8s.io", "v1beta2", "scheduledsparkapplications")] {
            let bytes = serde_json::to_vec(&review(resource, ns, "CREATE", &pod)).unwrap();
            check(Endpoint::Validate, &bytes, &view)?;
            check(Endpoint::Mutate, &bytes, &view)?;
        }
    }
}

#[test]
fn named_edge_cases() {
    let view = view();
    // No request at all, wrong kind, unknown resource kind.
    for body in [
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}),
    ] {
        assert_eq!(
            respond(Endpoint::Validate, &serde_json::to_vec(&body).unwrap(), &view, now()).0,
            400
        );
    }
    let unknown = review(
        ("example.com", "v1", "widgets"),
        "tenant-acme",
        "CREATE",
        &json!({"spec": {}}),
    );
    let (status, out, _) = respond(Endpoint::Validate, &serde_json::to_vec(&unknown).unwrap(), &view, now());
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap()["response"]["allowed"],
        true
    );
    // A driver with 100 containers: all counted.
    let mut pod = fixture("cluster-mode-driver-pod.json");
    let c = pod["spec"]["containers"][0].clone();
    pod["spec"]["containers"] = Value::Array(
        (0..100)
            .map(|i| {
                let mut c = c.clone();
                c["name"] = json!(format!("c{i}"));
                c["resources"]["requests"]["cpu"] = json!("50m");
                c
            })
            .collect(),
    );
    pod["spec"]["schedulerName"] = json!("sparkcap-scheduler");
    let view = graduated(view, "acme", "ingest-orders");
    let (_, out, decision) = respond(
        Endpoint::Validate,
        &serde_json::to_vec(&review(("", "v1", "pods"), "tenant-acme", "CREATE", &pod)).unwrap(),
        &view,
        now(),
    );
    assert!(decision.unwrap().allowed(), "{}", String::from_utf8_lossy(&out));
    pod["spec"]["containers"][99]["resources"]["requests"]["cpu"] = json!("4");
    let (_, out, _) = respond(
        Endpoint::Validate,
        &serde_json::to_vec(&review(("", "v1", "pods"), "tenant-acme", "CREATE", &pod)).unwrap(),
        &view,
        now(),
    );
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("needs 8.95 cores"),
        "{out}"
    );
}
