//! The tenant REST API end to end: real Postgres, TokenReview on the test
//! control plane, an OIDC issuer with a JWKS endpoint, over HTTPS.
//!
//! The authorization matrix: every route × every kind of caller, with the
//! exact status each must get and no cross-tenant read or write.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sparkcap_ledger::{LedgerStore, TenantId};
use sparkcap_testkit::api_env::{AUDIENCE, ApiEnv};
use sparkcap_testkit::webhook::ApiOptions;
use sparkcap_webhook::api::RateLimits;
use std::sync::atomic::Ordering;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Own,
    Other,
    Admin,
    OidcOwn,
    OidcAdmin,
    StrayNamespace,
    NoToken,
    Expired,
    WrongAudience,
    AlgNone,
    WrongSignature,
    OidcExpired,
    OidcWrongAudience,
    OidcAlgNone,
    OidcWrongSignature,
    OidcUnknownKid,
    OidcNoTenant,
}

const CALLERS: [Caller; 17] = [
    Caller::Own,
    Caller::Other,
    Caller::Admin,
    Caller::OidcOwn,
    Caller::OidcAdmin,
    Caller::StrayNamespace,
    Caller::NoToken,
    Caller::Expired,
    Caller::WrongAudience,
    Caller::AlgNone,
    Caller::WrongSignature,
    Caller::OidcExpired,
    Caller::OidcWrongAudience,
    Caller::OidcAlgNone,
    Caller::OidcWrongSignature,
    Caller::OidcUnknownKid,
    Caller::OidcNoTenant,
];

/// What a route allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    AnyAuthenticated,
    OwnOrAdmin,
    AdminOnly,
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn corrupt_signature(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes[5] ^= 0x55;
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn token(env: &ApiEnv, c: Caller) -> Option<String> {
    let now = Utc::now();
    let sa_uid = |ns: &str, name: &str| {
        let def = sparkcap_testkit::apiserver::resources::find("", "v1", "serviceaccounts").unwrap();
        env.server.store.get(def, ns, name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let oidc = &env.oidc;
    let oidc_tenant = |t: &str| {
        let mut c = oidc.claims("alice@acme");
        c["sparkcap_tenant"] = json!(t);
        c
    };
    Some(match c {
        Caller::Own => env.sa_token("acme-etl", "reader", AUDIENCE),
        Caller::Other => env.sa_token("beta-etl", "reader", AUDIENCE),
        Caller::Admin => env.admin_token(),
        Caller::StrayNamespace => env.sa_token("stray", "reader", AUDIENCE),
        Caller::NoToken => return None,
        Caller::Expired => env.server.tokens.mint(
            "acme-etl",
            "reader",
            &sa_uid("acme-etl", "reader"),
            &[AUDIENCE.to_owned()],
            now - TimeDelta::hours(2),
            now - TimeDelta::hours(1),
        ),
        Caller::WrongAudience => env.sa_token("acme-etl", "reader", "https://kubernetes.default.svc.cluster.local"),
        Caller::AlgNone => {
            let good = env.sa_token("acme-etl", "reader", AUDIENCE);
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(good.split('.').nth(1).unwrap()).unwrap()).unwrap();
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims)
        }
        Caller::WrongSignature => corrupt_signature(&env.sa_token("acme-etl", "reader", AUDIENCE)),
        Caller::OidcOwn => oidc.sign(&oidc_tenant("acme")),
        Caller::OidcAdmin => {
            let mut c = oidc.claims("root@platform");
            c["groups"] = json!(["sparkcap:admins", "everyone"]);
            oidc.sign(&c)
        }
        Caller::OidcExpired => {
            let mut c = oidc_tenant("acme");
            c["exp"] = json!(now.timestamp() - 3600);
            oidc.sign(&c)
        }
        Caller::OidcWrongAudience => {
            let mut c = oidc_tenant("acme");
            c["aud"] = json!("someone-else");
            oidc.sign(&c)
        }
        Caller::OidcAlgNone => unsigned(&json!({"alg": "none", "typ": "JWT"}), &oidc_tenant("acme")),
        Caller::OidcWrongSignature => corrupt_signature(&oidc.sign(&oidc_tenant("acme"))),
        Caller::OidcUnknownKid => {
            let good = oidc.sign(&oidc_tenant("acme"));
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
            header["kid"] = json!("made-up");
            parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
            parts.join(".")
        }
        Caller::OidcNoTenant => oidc.sign(&oidc.claims("bob@nowhere")),
    })
}

/// The status `c` must get on a route with `access` whose success is `ok`.
fn expected(c: Caller, access: Access, ok: StatusCode) -> StatusCode {
    use Caller::*;
    match c {
        NoToken | Expired | WrongAudience | AlgNone | WrongSignature | OidcExpired | OidcWrongAudience
        | OidcAlgNone | OidcWrongSignature | OidcUnknownKid => StatusCode::UNAUTHORIZED,
        StrayNamespace | OidcNoTenant => StatusCode::FORBIDDEN,
        Admin | OidcAdmin => ok,
        Own | OidcOwn => match access {
            Access::AdminOnly => StatusCode::FORBIDDEN,
            _ => ok,
        },
        Other => match access {
            Access::AnyAuthenticated => ok,
            _ => StatusCode::FORBIDDEN,
        },
    }
}

struct Route {
    method: Method,
    path: &'static str,
    access: Access,
    ok: StatusCode,
}

fn routes() -> Vec<Route> {
    let r = |method: Method, path: &'static str, access: Access, ok: StatusCode| Route {
        method,
        path,
        access,
        ok,
    };
    use Access::*;
    vec![
        r(Method::GET, "/whoami", AnyAuthenticated, StatusCode::OK),
        r(Method::GET, "/pools", AnyAuthenticated, StatusCode::OK),
        r(Method::GET, "/tenants", AdminOnly, StatusCode::OK),
        r(Method::POST, "/tenants", AdminOnly, StatusCode::CREATED),
        r(Method::GET, "/tenants/acme", OwnOrAdmin, StatusCode::OK),
        r(Method::PATCH, "/tenants/acme", AdminOnly, StatusCode::OK),
        r(Method::GET, "/tenants/acme/balance", OwnOrAdmin, StatusCode::OK),
        r(Method::GET, "/tenants/acme/purchases", OwnOrAdmin, StatusCode::OK),
        r(Method::POST, "/tenants/acme/purchases", AdminOnly, StatusCode::CREATED),
        r(Method::GET, "/tenants/acme/usage", OwnOrAdmin, StatusCode::OK),
        r(Method::GET, "/tenants/acme/jobs", OwnOrAdmin, StatusCode::OK),
        r(
            Method::GET,
            "/tenants/acme/jobs/orders/runs",
            OwnOrAdmin,
            StatusCode::OK,
        ),
        r(
            Method::POST,
            "/tenants/acme/jobs/orders/schedule",
            OwnOrAdmin,
            StatusCode::OK,
        ),
        r(
            Method::PATCH,
            "/tenants/acme/jobs/orders/schedule",
            OwnOrAdmin,
            StatusCode::OK,
        ),
        r(Method::GET, "/tenants/acme/schedules", OwnOrAdmin, StatusCode::OK),
        r(
            Method::GET,
            "/tenants/acme/jobs/orders/profile",
            OwnOrAdmin,
            StatusCode::OK,
        ),
        r(Method::GET, "/tenants/acme/notices", OwnOrAdmin, StatusCode::OK),
        r(Method::GET, "/tenants/acme/notifications", OwnOrAdmin, StatusCode::OK),
        r(Method::PUT, "/tenants/acme/notifications", OwnOrAdmin, StatusCode::OK),
        r(Method::POST, "/tenants/acme/estimate", OwnOrAdmin, StatusCode::OK),
        r(Method::GET, "/tenants/acme/forecast", OwnOrAdmin, StatusCode::OK),
        r(Method::GET, "/forecast", AdminOnly, StatusCode::OK),
        r(
            Method::GET,
            "/tenants/acme/slots?cores_millicores=1000&duration=30m",
            OwnOrAdmin,
            StatusCode::OK,
        ),
    ]
}

/// Sends `body` (if any) with `token`; the status and the JSON answer.
async fn send(
    http: &reqwest::Client,
    url: String,
    token: &str,
    method: Method,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json::<Value>().await.unwrap_or(Value::Null))
}

fn big_limits() -> ApiOptions {
    ApiOptions {
        limits: RateLimits {
            standard: 1_000_000,
            premium: 1_000_000,
            admin: 1_000_000,
        },
        ..ApiOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_times_every_caller() {
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let acme = TenantId::new("acme").unwrap();
    let before = env.store.purchases(&acme).await.unwrap().len();
    let tenants_before = env.store.tenants().await.unwrap().len();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut admin_writes = (0, 0);
    for route in routes() {
        for (i, caller) in CALLERS.iter().enumerate() {
            let mut req = http.request(route.method.clone(), env.url(route.path));
            if let Some(t) = token(&env, *caller) {
                req = req.bearer_auth(t);
            }
            let n = checked;
            req = match (route.method.as_str(), route.path) {
                ("POST", "/tenants") => {
                    req.json(&json!({"id": format!("made-{n}"), "namespaces": [format!("made-{n}-ns")]}))
                }
                ("PATCH", "/tenants/acme/jobs/orders/schedule") => req.json(&json!({"duration": "20m"})),
                ("PATCH", _) => req.json(&json!({"display_name": format!("Acme {n}")})),
                ("PUT", _) => req.json(&json!({"url": null})),
                ("POST", "/tenants/acme/estimate") => {
                    req.json(&json!({"volume_gib": 50, "source": "postgres", "target": "iceberg", "sla_minutes": 30}))
                }
                ("POST", "/tenants/acme/jobs/orders/schedule") => {
                    req.json(&json!({"schedule": "0 4 * * *", "duration": "30m", "cores_millicores": 1000}))
                }
                ("POST", _) => req
                    .header("Idempotency-Key", format!("matrix-{n}-{i}"))
                    .json(&json!({"kind": "vcpu_hours", "quantity": 5, "period": "monthly"})),
                _ => req,
            };
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let www = resp.headers().get("www-authenticate").cloned();
            let rid = resp.headers().get("x-request-id").cloned();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let want = expected(*caller, route.access, route.ok);
            checked += 1;
            if status != want {
                failures.push(format!(
                    "{} {} as {caller:?}: got {status}, want {want}: {body}",
                    route.method, route.path
                ));
                continue;
            }
            assert!(rid.is_some(), "every response carries X-Request-Id");
            if !status.is_success() {
                // One error shape, with the request id, and nothing of the tenant's data.
                assert!(
                    body["code"].is_string() && body["message"].is_string() && body["request_id"].is_string(),
                    "{caller:?} {}: {body}",
                    route.path
                );
                assert!(body.get("remaining").is_none() && body.get("items").is_none());
                if status == StatusCode::UNAUTHORIZED {
                    assert!(www.is_some(), "401 carries WWW-Authenticate");
                }
            } else if matches!(caller, Caller::Admin | Caller::OidcAdmin) && route.method != Method::GET {
                match route.path {
                    "/tenants" => admin_writes.0 += 1,
                    "/tenants/acme/purchases" => admin_writes.1 += 1,
                    _ => {}
                }
            }
            if route.path == "/tenants/acme/balance" && status.is_success() {
                assert_eq!(body["tenant"], "acme");
                assert_eq!(body["purchased"]["vcpu_hours"], "100.000", "{body}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, routes().len() * CALLERS.len());
    // Zero writes by anyone but admins.
    let after = env.store.purchases(&acme).await.unwrap().len();
    assert_eq!(after - before, admin_writes.1, "only admins' purchases were recorded");
    assert_eq!(admin_writes.1, 2);
    assert_eq!(
        env.store.tenants().await.unwrap().len() - tenants_before,
        admin_writes.0
    );
    let beta = env.store.purchases(&TenantId::new("beta").unwrap()).await.unwrap();
    assert_eq!(beta.len(), 1, "nothing written to the other tenant");
    eprintln!("authorization matrix: {checked} requests, all as due");
    // The OpenAPI document needs no token.
    let doc = http.get(env.url("/openapi.json")).send().await.unwrap();
    assert_eq!(doc.status(), StatusCode::OK);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_reads_its_history() {
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let t = env.sa_token("acme-etl", "reader", AUDIENCE);
    let get = |path: &str| {
        let req = http.get(env.url(path)).bearer_auth(&t);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, who) = get("/whoami").await;
    assert_eq!((s, who["tenant"].as_str()), (StatusCode::OK, Some("acme")), "{who}");
    // Issue 19 item 7: a NUL in the path or query is the caller's error (400),
    // never "the ledger is unavailable" (503).
    for path in [
        "/tenants/acme/runs?job=orders%00evil",
        "/tenants/acme%00/balance",
        "/tenants/acme/jobs/orders%00/runs",
        "/tenants/acme/usage?from=2026-01-01T00:00:00Z%1f",
    ] {
        let (s, e) = get(path).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{path}: {e}"
        );
    }
    let (_, b) = get("/tenants/acme/balance").await;
    // Two finished runs × (1 + 2 cores) × 1 h, and the running one's first hour.
    assert_eq!(b["consumed"]["vcpu_hours"], "9.000", "{b}");
    assert_eq!(b["remaining"]["vcpu_hours"], "91.000", "{b}");
    assert_eq!(b["state"], "ok");
    let (_, runs) = get("/tenants/acme/jobs/orders/runs?limit=2").await;
    let items = runs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["outcome"], "running", "{runs}");
    assert_eq!(items[1]["outcome"], "succeeded");
    assert_eq!(items[1]["duration_seconds"], 3600);
    assert_eq!(items[1]["charged"]["vcpu_hours"], "3.000");
    let cursor = runs["next_cursor"].as_str().expect("a second page");
    let (_, rest) = get(&format!("/tenants/acme/jobs/orders/runs?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"][0]["outcome"], "failed", "{rest}");
    assert!(rest["next_cursor"].is_null());
    let (s, bad) = get("/tenants/acme/jobs/orders/runs?cursor=garbage").await;
    assert_eq!(
        (s, bad["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
    let (_, jobs) = get("/tenants/acme/jobs").await;
    assert_eq!(jobs["items"][0]["job"], "orders");
    assert_eq!(jobs["items"][0]["finished_runs"], 2, "{jobs}");
    assert_eq!(jobs["items"][0]["running_runs"], 1);
    assert_eq!(jobs["items"][0]["stage"], "draft", "2 of the 3 draft runs done");
    let (_, none) = get("/tenants/acme/jobs?stage=production").await;
    assert_eq!(none["items"], json!([]), "filtered by stage");
    let (_, p) = get("/tenants/acme/purchases?kind=vcpu_hours&active=true").await;
    assert_eq!(p["items"].as_array().unwrap().len(), 1, "{p}");
    let (_, p) = get("/tenants/acme/purchases?kind=dedicated_units").await;
    assert_eq!(p["items"], json!([]));
    let (_, usage) = get("/tenants/acme/usage?granularity=day").await;
    assert_eq!(usage["total_charged"]["vcpu_hours"], "9.000", "{usage}");
    let (s, e) = get("/tenants/acme/usage?granularity=hour&from=2020-01-01T00:00:00Z").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("range_too_long")),
        "{e}"
    );
    let (s, e) = get("/tenants/acme/usage?granularity=week").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["message"].as_str().unwrap().contains("granularity"), "{e}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_retried_a_thousand_times_is_bought_once() {
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let admin = env.admin_token();
    let body = json!({"kind": "vcpu_hours", "quantity": 40, "period": "monthly"});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let req = http
            .post(env.url("/tenants/acme/purchases"))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "order-2026-11-0042")
            .json(&body);
        tasks.spawn(async move {
            let r = req.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status(), r.text().await.unwrap(), replayed)
        });
    }
    let answers = tasks.join_all().await;
    let first = &answers[0].1;
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::CREATED), "all 201");
    assert!(answers.iter().all(|(_, b, _)| b == first), "identical bodies");
    assert_eq!(answers.iter().filter(|a| !a.2).count(), 1, "exactly one original");
    let acme = TenantId::new("acme").unwrap();
    let bought: Vec<_> = env
        .store
        .purchases(&acme)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.idempotency_key == "order-2026-11-0042")
        .collect();
    assert_eq!(bought.len(), 1);
    // The balance shows it at once (read-your-writes on this replica).
    let b: Value = http
        .get(env.url("/tenants/acme/balance"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["purchased"]["vcpu_hours"], "140.000", "{b}");
    // Same key, different body: 409 naming the difference.
    let r = http
        .post(env.url("/tenants/acme/purchases"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "order-2026-11-0042")
        .json(&json!({"kind": "vcpu_hours", "quantity": 400, "period": "monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "idempotency_conflict");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("quantity: original 40, retry 400"),
        "{e}"
    );
    // No key: refused with the header named.
    let r = http
        .post(env.url("/tenants/acme/purchases"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Idempotency-Key"));
    // A misspelt field is named.
    let r = http
        .post(env.url("/tenants/acme/purchases"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "typo")
        .json(&json!({"kind": "vcpu_hours", "quantity": 4, "period": "monthly", "valid_form": "2026-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("unknown field `valid_form`"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_by_tier_with_headers() {
    let env = ApiEnv::start(ApiOptions {
        limits: RateLimits {
            standard: 60,
            premium: 300,
            admin: 1_000_000,
        },
        ..ApiOptions::default()
    })
    .await
    .unwrap();
    let http = env.webhook.client();
    let acme = env.sa_token("acme-etl", "reader", AUDIENCE);
    let mut allowed = 0;
    let mut refused = None;
    for _ in 0..40 {
        let r = http
            .get(env.url("/tenants/acme/balance"))
            .bearer_auth(&acme)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["ratelimit-limit"], "60");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        allowed += 1;
    }
    // Burst of a third of the per-minute limit (one more per second the loop
    // takes on a slow machine; the exact arithmetic is unit-tested).
    assert!((20..=21).contains(&allowed), "{allowed}");
    let r = refused.expect("refused after the burst");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "rate_limited");
    // Another tenant is not affected; promoting beta to premium raises its limit.
    let admin = env.admin_token();
    let r = http
        .patch(env.url("/tenants/beta"))
        .bearer_auth(&admin)
        .json(&json!({"tier": "premium"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let beta = env.sa_token("beta-etl", "reader", AUDIENCE);
    let r = http
        .get(env.url("/tenants/beta/balance"))
        .bearer_auth(&beta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["ratelimit-limit"], "300");
    assert_eq!(r.headers()["ratelimit-remaining"], "99");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_when_token_review_or_jwks_is_unreachable() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut options = big_limits();
    options.token_review_url = Some(dead_url.clone());
    let env = ApiEnv::start(options).await.unwrap();
    let http = env.webhook.client();
    let r = http
        .get(env.url("/tenants/acme/balance"))
        .bearer_auth(env.sa_token("acme-etl", "reader", AUDIENCE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "authentication_unavailable", "{e}");
    env.stop().await;

    let mut options = big_limits();
    let issuer_env = ApiEnv::start(big_limits()).await.unwrap();
    let mut oidc = issuer_env.oidc.config();
    oidc.jwks_url = Some(format!("{dead_url}/jwks.json"));
    options.oidc = Some(oidc);
    let env = ApiEnv::start(options).await.unwrap();
    let mut c = issuer_env.oidc.claims("alice");
    c["sparkcap_tenant"] = json!("acme");
    let r = env
        .webhook
        .client()
        .get(env.url("/tenants/acme/balance"))
        .bearer_auth(issuer_env.oidc.sign(&c))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    env.stop().await;
    issuer_env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_refetched_for_new_keys_but_not_for_every_unknown_kid() {
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let oidc = &env.oidc;
    let mut c = oidc.claims("alice");
    c["sparkcap_tenant"] = json!("acme");
    let ok = |t: String| {
        let req = http.get(env.url("/whoami")).bearer_auth(t);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(ok(oidc.sign(&c)).await, StatusCode::OK);
    let hits = oidc.jwks_hits.load(Ordering::SeqCst);
    assert_eq!(hits, 1);
    // Fifty tokens with made-up kids at once: at most one more fetch.
    let mut forged = Vec::new();
    for i in 0..50 {
        let good = oidc.sign(&c);
        let parts: Vec<&str> = good.split('.').collect();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": format!("forged-{i}")});
        forged.push(format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            parts[1],
            parts[2]
        ));
    }
    let statuses = futures::future::join_all(forged.into_iter().map(ok)).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert!(oidc.jwks_hits.load(Ordering::SeqCst) <= hits + 1);
    // The issuer rotates its key: the new kid is fetched once the interval has passed.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    oidc.rotate();
    assert_eq!(ok(oidc.sign(&c)).await, StatusCode::OK);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_suspend_and_bind_all_or_nothing() {
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let admin = env.admin_token();
    let send = |m: Method, path: &str, body: Value| {
        let req = http.request(m, env.url(path)).bearer_auth(&admin).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, t) = send(
        Method::POST,
        "/tenants",
        json!({"id": "gamma", "namespaces": ["gamma-etl"], "tier": "premium"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["namespaces"], json!(["gamma-etl"]));
    let (s, e) = send(Method::POST, "/tenants", json!({"id": "gamma"})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("tenant_exists")));
    let (s, e) = send(Method::POST, "/tenants", json!({"id": "Bad_Id"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_tenant_id")),
        "{e}"
    );
    // Binding a namespace another tenant owns fails, and the suspension in the same patch is not applied.
    let (s, e) = send(
        Method::PATCH,
        "/tenants/gamma",
        json!({"status": "suspended", "bind_namespaces": ["acme-etl"]}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("namespace_taken")),
        "{e}"
    );
    let (_, g) = send(Method::GET, "/tenants/gamma", json!(null)).await;
    assert_eq!(g["status"], "active");
    let (s, g) = send(Method::PATCH, "/tenants/gamma", json!({"status": "suspended"})).await;
    assert_eq!((s, g["status"].as_str()), (StatusCode::OK, Some("suspended")));
    let (s, g) = send(Method::PATCH, "/tenants/gamma", json!({"status": "deleted"})).await;
    assert_eq!((s, g["namespaces"].clone()), (StatusCode::OK, json!([])));
    let (s, e) = send(Method::PATCH, "/tenants/gamma", json!({"status": "active"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_status_transition"))
    );
    let (s, e) = send(Method::PATCH, "/tenants/nobody", json!({"status": "active"})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_tenant")));
    // Pages of tenants.
    let (_, p1) = send(Method::GET, "/tenants?limit=2", json!(null)).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let c = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = send(Method::GET, &format!("/tenants?limit=2&cursor={c}"), json!(null)).await;
    assert_eq!(p2["items"][0]["id"], "gamma", "{p2}");
    let (_, deleted) = send(Method::GET, "/tenants?status=deleted", json!(null)).await;
    assert_eq!(deleted["items"].as_array().unwrap().len(), 1, "{deleted}");
    assert_eq!(deleted["items"][0]["id"], "gamma");
    let (s, e) = send(Method::GET, "/tenants?limit=0", json!(null)).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_limit"))
    );
    env.stop().await;
}

/// The README's flow, with the real clients: `kubectl create token` against
/// the control plane, then curl against the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_then_curl() {
    let have = |bin: &str| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("curl")
        || !std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        eprintln!("\n*** SKIPPED: kubectl and curl are needed for this test ***\n");
        return;
    }
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let ca = sparkcap_testkit::tls::TestCa::new();
    let cert = ca.issue(&["127.0.0.1"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let srv = env.server.clone();
    tokio::spawn(async move { sparkcap_testkit::devcluster::serve_tls(srv, listener, &cert).await });
    let kc = env.dir.join("kubeconfig");
    sparkcap_testkit::devcluster::write_kubeconfig(&kc, &url, Some(&ca.ca_bundle())).unwrap();
    let api_ca = env.dir.join("api-ca.pem");
    std::fs::write(&api_ca, &env.webhook.ca_pem).unwrap();
    let run = |cmd: &str, args: Vec<String>| {
        let kc = kc.clone();
        let cmd = cmd.to_owned();
        async move {
            let out = tokio::process::Command::new(cmd)
                .env("KUBECONFIG", kc)
                .args(args)
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let token = run(
        "kubectl",
        [
            "create",
            "token",
            "reader",
            "-n",
            "acme-etl",
            "--audience",
            "sparkcap",
            "--duration",
            "10m",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let token = token.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let body = run(
        "curl",
        vec![
            "-sS".into(),
            "--fail-with-body".into(),
            "--cacert".into(),
            api_ca.display().to_string(),
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            env.url("/tenants/acme/balance"),
        ],
    )
    .await;
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (b["tenant"].as_str(), b["state"].as_str()),
        (Some("acme"), Some("ok")),
        "{b}"
    );
    // The same token cannot read another tenant.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&api_ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(env.url("/tenants/beta/balance"))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_reserved_refused_with_alternatives_and_removed() {
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let t = env.sa_token("acme-etl", "reader", AUDIENCE);
    let call = |m: Method, path: &str, body: Option<Value>| send(&http, env.url(path), &t, m, body);
    // Shared pool: 16 cores, 80 % reservable = 12.8, acme's cap 25 % of that = 3.2 cores.
    let (s, ok) = call(
        Method::POST,
        "/tenants/acme/jobs/orders/schedule",
        Some(json!({"schedule": "0 2 * * *", "duration": "1h", "cores_millicores": 3000})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ok}");
    assert_eq!(
        (ok["pool"].as_str(), ok["headroom_millicores"].as_i64()),
        (Some("shared"), Some(200))
    );
    let (s, no) = call(
        Method::POST,
        "/tenants/acme/jobs/refunds/schedule",
        Some(json!({"schedule": "30 2 * * *", "duration": "30m", "cores_millicores": 1000})),
    )
    .await;
    assert_eq!(
        (s, no["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_capacity")),
        "{no}"
    );
    let msg = no["message"].as_str().unwrap();
    assert!(
        msg.contains("needs 1.000 cores but only 0.200 are free (tenant cap limit)"),
        "{msg}"
    );
    assert!(
        no["details"][0].as_str().unwrap().contains("→ schedule \"0 3 * * *\""),
        "{no}"
    );
    // The alternative offered is accepted.
    let (s, _) = call(
        Method::POST,
        "/tenants/acme/jobs/refunds/schedule",
        Some(json!({"schedule": "0 3 * * *", "duration": "30m", "cores_millicores": 1000})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = call(Method::GET, "/tenants/acme/schedules", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (_, slots) = call(
        Method::GET,
        "/tenants/acme/slots?cores_millicores=3000&duration=1h",
        None,
    )
    .await;
    let slots = slots.as_array().unwrap();
    assert!(
        !slots.is_empty() && slots.iter().all(|x| x["schedule"] != "0 2 * * *"),
        "{slots:?}"
    );
    let (s, e) = call(
        Method::POST,
        "/tenants/acme/jobs/x/schedule",
        Some(json!({"schedule": "0 2 * *", "duration": "1h", "cores_millicores": 1000})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["message"].as_str().unwrap().contains("expected 5 fields"), "{e}");
    let (s, e) = call(
        Method::POST,
        "/tenants/acme/jobs/x/schedule",
        Some(json!({"schedule": "@daily", "time_zone": "Europe/Paris", "duration": "1h", "cores_millicores": 1000})),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_time_zone"))
    );
    // Issue 19 item 9: a dry run of a schedule that never ends, and cores
    // past any pool, are refused up front with the bound.
    for (body, says) in [
        (
            json!({"schedule": "@every 1s", "duration": "24h", "cores_millicores": 401_000, "dry_run": true}),
            "at least 1m",
        ),
        (
            json!({"schedule": "0 2 * * *", "duration": "1h", "cores_millicores": i64::MAX}),
            "at most 100000000m",
        ),
    ] {
        let (s, e) = call(Method::POST, "/tenants/acme/jobs/x/schedule", Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    }
    let (s, _) = call(Method::DELETE, "/tenants/acme/jobs/orders/schedule", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(Method::DELETE, "/tenants/acme/jobs/orders/schedule", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.stop().await;
}

/// A job's runs, closed by the ledger writer as the scheduler's meter closes
/// them, show up as its profile, promote it after 3 runs within SLA with a
/// notice, feed the estimator, and the tenant sets where notices go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_profiled_promoted_estimated_and_forecast() {
    use sparkcap_ledger::lifecycle::RunFacts;
    use sparkcap_ledger::{AccrualRequest, Millicores, PodOutcome, PodUsage, Pool};
    let env = ApiEnv::start(big_limits()).await.unwrap();
    let http = env.webhook.client();
    let t = env.sa_token("acme-etl", "reader", AUDIENCE);
    let call = |m: Method, path: &str, body: Option<Value>| send(&http, env.url(path), &t, m, body);
    let acme = TenantId::new("acme").unwrap();
    let epoch = env.store.claim_epoch("test-meter").await.unwrap();
    let now = Utc::now();
    // Three runs of 20 minutes, 1 driver core + 3 executor cores, 10 GiB
    // from postgres to iceberg each, SLA 30 minutes.
    for run in 0..3_i64 {
        let started = now - TimeDelta::hours(6 - run);
        let pod = |role: &str, cpu: i64| PodUsage {
            uid: format!("ingest-{run}-{role}"),
            tenant: acme.clone(),
            namespace: "acme-etl".into(),
            name: format!("ingest-{run}-{role}"),
            app_id: Some(format!("spark-ingest-{run}")),
            job: Some("ingest".into()),
            role: Some(role.into()),
            pool: Pool::Draft,
            cpu: Millicores(cpu),
            opportunistic: false,
            started_at: started,
        };
        let close = |p: PodUsage, run_facts: Option<RunFacts>| AccrualRequest {
            pod: p,
            until: started + TimeDelta::minutes(20),
            finished: true,
            outcome: Some(PodOutcome::Succeeded),
            run: run_facts,
        };
        let facts = RunFacts {
            sla_seconds: Some(1800),
            data_bytes: Some(10 << 30),
            source: Some("postgres".into()),
            target: Some("iceberg".into()),
            ..RunFacts::default()
        };
        env.store
            .accrue(
                epoch,
                &[
                    close(pod("executor", 3000), None),
                    close(pod("driver", 1000), Some(facts)),
                ],
            )
            .await
            .unwrap();
    }
    let (s, p) = call(Method::GET, "/tenants/acme/jobs/ingest/profile", None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (
            p["stage"].as_str(),
            p["streak"].as_i64(),
            p["runs_to_promotion"].as_i64()
        ),
        (Some("production"), Some(3), Some(0)),
        "{p}"
    );
    assert_eq!(p["sla_compliance_pct"], 100);
    assert_eq!(p["runs"].as_array().unwrap().len(), 3);
    assert_eq!(p["runs"][0]["cores_millicores"], 4000);
    assert_eq!(p["runs"][0]["vcpu_millicore_seconds"], 4000 * 1200);
    let (_, jobs) = call(Method::GET, "/tenants/acme/jobs?stage=production", None).await;
    assert_eq!(jobs["items"][0]["job"], "ingest", "{jobs}");
    let (_, n) = call(Method::GET, "/tenants/acme/notices", None).await;
    assert_eq!(n["items"][0]["kind"], "promoted", "{n}");
    assert!(
        n["items"][0]["message"]
            .as_str()
            .unwrap()
            .contains("promoted from draft to production after 3 consecutive runs within its SLA of 30 min"),
        "{n}"
    );
    // The estimator learns from those runs: 10 GiB took 4,800 core-seconds.
    let est = |body: Value| call(Method::POST, "/tenants/acme/estimate", Some(body));
    let (s, e) = est(json!({"volume_gib": 10, "source": "postgres", "target": "iceberg", "sla_minutes": 10})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(
        (e["basis"].as_str(), e["similar_runs"].as_i64()),
        (Some("history"), Some(3))
    );
    // 4,800 core-s in 600 s = 8 cores, plus the driver's.
    assert_eq!(e["recommended_cores_millicores"], 9000, "{e}");
    let (_, e) = est(json!({"volume_gib": 10, "source": "s3", "target": "iceberg", "sla_minutes": 10})).await;
    assert_eq!(e["basis"], "default", "no similar runs: the conservative default");
    assert!(e["cores_low_millicores"].as_i64() < e["cores_high_millicores"].as_i64());
    let (s, e) = est(json!({"volume_gib": 0, "source": "s3", "target": "iceberg", "sla_minutes": 10})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("volume_gib 0 must be"), "{e}");
    // Where notices go.
    let (s, e) = call(
        Method::PUT,
        "/tenants/acme/notifications",
        Some(json!({"url": "ftp://x"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("must use https://"), "{e}");
    // Issue 19 item 11: no internal address or plain http without the
    // admin's allow-list.
    for (bad, says) in [
        ("http://hooks.acme.example/sparkcap", "must use https://"),
        ("https://127.0.0.1:9090/metrics", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://kubernetes.default.svc/api", "internal to the cluster"),
    ] {
        let (s, e) = call(Method::PUT, "/tenants/acme/notifications", Some(json!({"url": bad}))).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_notify_url")),
            "{bad}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(says), "{bad}: {e}");
    }
    let url = json!({"url": "https://hooks.acme.example/sparkcap"});
    let (s, _) = call(Method::PUT, "/tenants/acme/notifications", Some(url.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(call(Method::GET, "/tenants/acme/notifications", None).await.1, url);
    // The forecast has the two days of seeded history.
    let (s, f) = call(Method::GET, "/tenants/acme/forecast", None).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert!(f["history_days"].as_i64().unwrap() >= 1, "{f}");
    assert!(f["message"].as_str().unwrap().starts_with("tenant acme"), "{f}");
    // Only API schedules are changed over the API, and only existing ones.
    let (s, _) = call(
        Method::PATCH,
        "/tenants/acme/jobs/nope/schedule",
        Some(json!({"duration": "1h"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.stop().await;
}
