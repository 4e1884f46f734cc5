//! Load command for the tenant REST API: an open-loop `GET balance` at a
//! fixed rate (default 1,000 req/s for 10 s) over HTTPS with keep-alive,
//! against the real webhook process code, Postgres and TokenReview on the
//! test control plane; then the job submission path (driver pods created
//! through the API server, each admitted by the webhook's /mutate and
//! /validate over HTTPS) at a fixed rate (default 100/s for 10 s).
//! Latency counts from each request's scheduled start, so a stall shows up
//! (no coordinated omission). Prints the figures; run with
//! `cargo bench -p sparkcap-testkit --bench api_load [-- RATE SECONDS SUBMIT_RATE]`.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use sparkcap_testkit::api_env::{AUDIENCE, ApiEnv};
use sparkcap_testkit::webhook::ApiOptions;
use sparkcap_webhook::api::RateLimits;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rate = args.first().copied().unwrap_or(1000.0);
    let seconds = args.get(1).copied().unwrap_or(10.0);
    let submit_rate = args.get(2).copied().unwrap_or(100.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(rate, seconds, submit_rate));
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, target: f64, lat: &mut [Duration], errors: usize, elapsed: Duration) {
    lat.sort();
    let done = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{what}: target {target:.0}/s, achieved {done:.0}/s over {:.1} s, {} ok, {errors} errors; \
         latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        elapsed.as_secs_f64(),
        lat.len(),
        pct(lat, 0.5),
        pct(lat, 0.9),
        pct(lat, 0.99),
        pct(lat, 0.999),
        pct(lat, 1.0)
    );
}

/// Fires `make(i)` at `rate` per second for `seconds`, open loop.
async fn open_loop<F, Fut>(rate: f64, seconds: f64, make: F) -> (Vec<Duration>, usize, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let fut = make(i);
        tasks.spawn(async move {
            let ok = fut.await;
            (ok, due.elapsed())
        });
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((true, d)) => lat.push(d),
            _ => errors += 1,
        }
    }
    (lat, errors, start.elapsed())
}

async fn run(rate: f64, seconds: f64, submit_rate: f64) {
    let env = ApiEnv::start(ApiOptions {
        limits: RateLimits {
            standard: 10_000_000,
            premium: 10_000_000,
            admin: 10_000_000,
        },
        ..ApiOptions::default()
    })
    .await
    .expect("API environment");
    let http = env.webhook.client();
    let token = env.sa_token("acme-etl", "reader", AUDIENCE);
    let url = env.url("/tenants/acme/balance");
    // Warm up: connections, TLS sessions, the TokenReview cache.
    for _ in 0..200 {
        let r = http.get(&url).bearer_auth(&token).send().await.expect("warm-up");
        assert!(r.status().is_success(), "warm-up: {}", r.status());
    }
    let started = Instant::now();
    let (mut lat, errors, elapsed) = open_loop(rate, seconds, |_| {
        let req = http.get(&url).bearer_auth(&token);
        async move {
            match req.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    let _ = started;
    report("GET /tenants/acme/balance", rate, &mut lat, errors, elapsed);

    let fixture: Pod = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../webhook/tests/fixtures/cluster-mode-driver-pod.json"
        ))
        .expect("driver fixture"),
    )
    .expect("a pod");
    let pods: Api<Pod> = Api::namespaced(env.server.client(), "acme-etl");
    let (mut lat, errors, elapsed) = open_loop(submit_rate, seconds, |i| {
        let mut pod = fixture.clone();
        pod.metadata.name = Some(format!("load-driver-{i}"));
        pod.metadata.namespace = Some("acme-etl".into());
        let pods = pods.clone();
        async move {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(p) => p.spec.and_then(|s| s.scheduler_name).as_deref() == Some("sparkcap-scheduler"),
                Err(e) => {
                    eprintln!("submission refused: {e}");
                    false
                }
            }
        }
    })
    .await;
    report(
        "driver pod submissions (API server + webhook mutate/validate)",
        submit_rate,
        &mut lat,
        errors,
        elapsed,
    );
    env.stop().await;
}
