//! Admission load benchmark: sparkcap-webhook's real router and decision over
//! TLS, side by side with a bare allow-all axum+rustls server, each in its own
//! child process (so resident memory is the server's alone), driven by the
//! same HTTP/1.1 keep-alive client load in this process.
//!
//!   cargo bench -p sparkcap-webhook --bench admission_load
//!   ADMISSION_BENCH_SECONDS=10 ADMISSION_BENCH_ROUNDS=3 ADMISSION_BENCH_CONNECTIONS=16 cargo bench ...
//!
//! Prints, per server: reviews/s, client-side p50/p99, server-side p99 (from
//! the webhook's own histogram: the bucket bound it falls in), peak and
//! current RSS; and the throughput ratio. Medians over rounds, alternating
//! servers each round.

#[path = "../tests/common/mod.rs"]
mod common;

use axum::body::Bytes;
use axum::routing::post;
use serde_json::{Value, json};
use sparkcap_webhook::certs::CertFiles;
use sparkcap_webhook::metrics::Metrics;
use sparkcap_webhook::run::{Listeners, run};
use sparkcap_webhook::sync::ViewHandle;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROLE: &str = "SPARKCAP_ADMISSION_BENCH_ROLE";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a child is told its role by env.
    match std::env::var(ROLE).as_deref() {
        Ok("webhook") => serve_child(true),
        Ok("baseline") => serve_child(false),
        _ => drive(),
    }
}

fn make_cert(dir: &std::path::Path) -> String {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// Child: serve until stdin closes. Prints `PORT <admission> <ops>`.
fn serve_child(webhook: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = std::path::PathBuf::from(std::env::var("BENCH_CERT_DIR").unwrap());
        let admission = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ops = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        println!("PORT {} {}", admission.local_addr().unwrap().port(), ops.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        let stdin_closed = async {
            tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            })
            .await
            .unwrap();
        };
        if webhook {
            let view = common::realistic_view(100, 500);
            let files = CertFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
            run(Listeners { admission, ops, api: None, limits: Default::default() }, files, Duration::from_secs(5), ViewHandle::fixed(view), Metrics::new(), stdin_closed)
                .await
                .unwrap();
        } else {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(dir.join("tls.crt"), dir.join("tls.key")).await.unwrap();
            let allow = |body: Bytes| async move {
                let uid = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.pointer("/request/uid").cloned())
                    .unwrap_or(Value::Null);
                axum::Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, "allowed": true}}))
            };
            let app = axum::Router::new().route("/mutate", post(allow)).route("/validate", post(allow));
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move { stdin_closed.await; h.shutdown(); });
            drop(ops);
            admission.set_nonblocking(true).unwrap();
            axum_server::from_tcp_rustls(admission, config).handle(handle).serve(app.into_make_service()).await.unwrap();
        }
    });
}

struct ChildServer {
    child: Child,
    port: u16,
    ops: u16,
}

fn spawn(role: &str, cert_dir: &std::path::Path) -> ChildServer {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env("BENCH_CERT_DIR", cert_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace().skip(1).map(|p| p.parse::<u16>().unwrap());
    ChildServer {
        child,
        port: parts.next().unwrap(),
        ops: parts.next().unwrap(),
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Round {
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

/// Bodies: the mutate and validate reviews of a real driver pod for tenants spread over the view.
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..64 {
        let ns = format!("tenant-t{:03}", (i * 7) % 100);
        let mut pod = common::fixture("cluster-mode-driver-pod.json");
        pod["metadata"]["labels"]["spark-app-name"] = json!(format!("job-{}", i % 20));
        out.push((
            "mutate",
            serde_json::to_vec(&common::review(("", "v1", "pods"), &ns, "CREATE", &pod)).unwrap(),
        ));
        pod["spec"]["schedulerName"] = json!("sparkcap-scheduler");
        out.push((
            "validate",
            serde_json::to_vec(&common::review(("", "v1", "pods"), &ns, "CREATE", &pod)).unwrap(),
        ));
        let mut exec = common::fixture("client-mode-executor-pod.json");
        exec["metadata"]["labels"]["spark-app-selector"] = json!(format!("spark-{:032x}", i * 5));
        exec["spec"]["schedulerName"] = json!("sparkcap-scheduler");
        out.push((
            "validate",
            serde_json::to_vec(&common::review(("", "v1", "pods"), &ns, "CREATE", &exec)).unwrap(),
        ));
    }
    out
}

async fn load(port: u16, ca_pem: &str, connections: usize, seconds: u64) -> Round {
    let bodies = Arc::new(bodies());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut i = c;
            while Instant::now() < deadline {
                let (path, body) = &bodies[i % bodies.len()];
                i += 1;
                let t = Instant::now();
                match client
                    .post(format!("https://127.0.0.1:{port}/{path}"))
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Round {
        throughput: all.len() as f64 / elapsed,
        p50_us: q(0.50),
        p99_us: q(0.99),
        errors,
    }
}

/// Server-side p99 from the webhook's histogram: the upper bound of the bucket holding it.
async fn server_p99(ops: u16) -> String {
    let text = reqwest::get(format!("http://127.0.0.1:{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut buckets: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("sparkcap_webhook_review_duration_seconds_bucket"))
    {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(0.0)
        };
        let e = buckets.entry(le.to_string()).or_insert((bound, 0.0));
        e.1 += count;
    }
    let mut v: Vec<(f64, f64)> = buckets.into_values().collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = v.last().map_or(0.0, |b| b.1);
    let bound = v.iter().find(|b| b.1 >= total * 0.99).map_or(f64::NAN, |b| b.0);
    let p50 = v.iter().find(|b| b.1 >= total * 0.50).map_or(f64::NAN, |b| b.0);
    format!(
        "server-side p50 ≤ {:.0} µs, p99 ≤ {:.0} µs over {total} reviews",
        p50 * 1e6,
        bound * 1e6
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn drive() {
    let seconds = env_or("ADMISSION_BENCH_SECONDS", 5);
    let rounds = env_or("ADMISSION_BENCH_ROUNDS", 3) as usize;
    let connections = env_or("ADMISSION_BENCH_CONNECTIONS", 16) as usize;
    let dir = tempfile::tempdir().unwrap();
    let ca = make_cert(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let webhook = spawn("webhook", dir.path());
    let baseline = spawn("baseline", dir.path());
    println!(
        "admission load: {connections} keep-alive TLS connections, {seconds} s × {rounds} rounds per server; \
         view of 100 tenants and 500 running apps; mutate + validate of real Spark 3.5.3 pods"
    );
    let (mut w, mut b) = (Vec::new(), Vec::new());
    rt.block_on(async {
        // Wait for the webhook's certificate to load.
        for _ in 0..100 {
            if reqwest::get(format!("http://127.0.0.1:{}/readyz", webhook.ops))
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..rounds {
            b.push(load(baseline.port, &ca, connections, seconds).await);
            w.push(load(webhook.port, &ca, connections, seconds).await);
        }
    });
    let report = |name: &str, rs: &[Round], pid: u32| {
        let (hwm, rss) = rss_kib(pid);
        let tput = median(rs.iter().map(|r| r.throughput).collect());
        println!(
            "{name:>9}: {tput:>8.0} reviews/s   client p50 {:>5} µs  p99 {:>6} µs   errors {}   RSS peak {:.1} MiB, now {:.1} MiB",
            median(rs.iter().map(|r| r.p50_us as f64).collect()),
            median(rs.iter().map(|r| r.p99_us as f64).collect()),
            rs.iter().map(|r| r.errors).sum::<u64>(),
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
        tput
    };
    let tb = report("baseline", &b, baseline.child.id());
    let tw = report("webhook", &w, webhook.child.id());
    println!("  webhook: {}", rt.block_on(server_p99(webhook.ops)));
    println!("    ratio: webhook/baseline throughput = {:.2}", tw / tb);
    for mut c in [webhook, baseline] {
        drop(c.child.stdin.take());
        let _ = c.child.wait();
    }
}
