//! The webhook server over real TLS: health and readiness, body limits, bad
//! bodies, and certificate rotation under load without a failed request.

mod common;

use chrono::Utc;
use serde_json::{Value, json};
use sparkcap_webhook::certs::CertFiles;
use sparkcap_webhook::guard::ConnLimits;
use sparkcap_webhook::metrics::Metrics;
use sparkcap_webhook::run::{Listeners, run};
use sparkcap_webhook::sync::ViewHandle;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes a fresh leaf for 127.0.0.1 to `dir` the way the kubelet updates
    /// a mounted Secret: new files, then an atomic rename over the old ones.
    fn write_leaf(&self, dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        std::fs::write(dir.join("tls.crt.new"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key.new"), key.serialize_pem()).unwrap();
        std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
        std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
    }

    fn client(&self, fresh_connections: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap())
            .timeout(Duration::from_secs(5));
        if fresh_connections {
            b = b.pool_max_idle_per_host(0);
        }
        b.build().unwrap()
    }
}

struct Server {
    url: String,
    ops: String,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(with_cert: Option<&Ca>) -> Server {
    start_with(with_cert, ConnLimits::default()).await
}

async fn start_with(with_cert: Option<&Ca>, limits: ConnLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    if let Some(ca) = with_cert {
        ca.write_leaf(dir.path());
    }
    let admission = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ops = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", admission.local_addr().unwrap());
    let ops_url = format!("http://{}", ops.local_addr().unwrap());
    let mut view = common::view();
    view.ledger_fresh_at = Some(Utc::now());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let files = CertFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    tokio::spawn(run(
        Listeners {
            admission,
            ops,
            api: None,
            limits,
        },
        files,
        Duration::from_millis(100),
        ViewHandle::fixed(view),
        Metrics::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        url,
        ops: ops_url,
        dir,
        _stop: stop,
    }
}

fn body() -> Vec<u8> {
    let mut pod = common::fixture("cluster-mode-driver-pod.json");
    pod["spec"]["schedulerName"] = json!("sparkcap-scheduler");
    serde_json::to_vec(&common::review(("", "v1", "pods"), "tenant-acme", "CREATE", &pod)).unwrap()
}

async fn wait_status(url: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if status == want {
                return text;
            }
            assert!(Instant::now() < deadline, "{url} stayed {status}: {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reviews_over_tls_with_limits_and_metrics() {
    let ca = Ca::new();
    let s = start(Some(&ca)).await;
    wait_status(&format!("{}/readyz", s.ops), 200).await;
    assert_eq!(wait_status(&format!("{}/healthz", s.ops), 200).await, "ok");
    let client = ca.client(false);
    let r = client
        .post(format!("{}/validate", s.url))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let review: Value = r.json().await.unwrap();
    assert_eq!(review["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    let r = client
        .post(format!("{}/mutate", s.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("body is not an AdmissionReview"));
    // 3 MiB objects fit (an UPDATE carries two); beyond 8 MiB is refused.
    let mut big = common::fixture("cluster-mode-driver-pod.json");
    big["metadata"]["annotations"] = json!({"blob": "x".repeat(3 << 20)});
    let big_body = serde_json::to_vec(&common::review(("", "v1", "pods"), "tenant-acme", "CREATE", &big)).unwrap();
    let r = client
        .post(format!("{}/validate", s.url))
        .body(big_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The server answers 413 from the Content-Length and closes without
    // reading 9 MiB; the client may see that answer, or the closed socket
    // while it is still writing (which of the two is a race).
    match client
        .post(format!("{}/validate", s.url))
        .body(vec![b' '; 9 << 20])
        .send()
        .await
    {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => {
            let chain = format!("{e:?}");
            assert!(
                chain.contains("BrokenPipe") || chain.contains("ConnectionReset"),
                "{chain}"
            );
        }
    }
    // Plain HTTP on the TLS port is not served.
    assert!(
        reqwest::get(format!("{}/validate", s.url.replace("https", "http")))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );
    let metrics = wait_status(&format!("{}/metrics", s.ops), 200).await;
    assert!(metrics.contains("sparkcap_webhook_bad_requests_total 1"), "{metrics}");
    assert!(
        metrics.contains("sparkcap_webhook_review_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("sparkcap_webhook_view_tenants 8"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_certificate_is_served() {
    let ca = Ca::new();
    let s = start(None).await;
    assert_eq!(
        wait_status(&format!("{}/readyz", s.ops), 503).await,
        "no serving certificate yet"
    );
    ca.write_leaf(s.dir.path());
    wait_status(&format!("{}/readyz", s.ops), 200).await;
    let r = ca
        .client(false)
        .post(format!("{}/validate", s.url))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let ca = Ca::new();
    let s = start(Some(&ca)).await;
    wait_status(&format!("{}/readyz", s.ops), 200).await;
    let ok = Arc::new(AtomicU64::new(0));
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..6 {
        // Half reuse connections (sessions keep their certificate), half
        // handshake on every request (they must see a valid one every time).
        let client = ca.client(i % 2 == 0);
        let (url, ok, failed, stop, body) = (s.url.clone(), ok.clone(), failed.clone(), stop.clone(), body());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.post(format!("{url}/validate")).body(body.clone()).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ca.write_leaf(s.dir.path());
    }
    // Finally rotate to a certificate from a new CA: only a client trusting
    // the new CA gets through, which proves new handshakes use new files.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failures = failed.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    let new_ca = Ca::new();
    new_ca.write_leaf(s.dir.path());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if new_ca
            .client(true)
            .post(format!("{}/validate", s.url))
            .body(body())
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the new CA's certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ca.client(true)
            .post(format!("{}/validate", s.url))
            .body(body())
            .send()
            .await
            .is_err()
    );
    let metrics = reqwest::get(format!("{}/metrics", s.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sparkcap_webhook_certificate_reloads_total{result=\"ok\"}"),
        "{metrics}"
    );
}

use std::sync::Mutex;

/// A TLS connection to the webhook that trusts `ca`, or None when the
/// server closed it during the handshake (no connection slot left).
async fn tls_connect(ca: &Ca, url: &str) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.cert.der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()
}

/// Whether the server has closed `conn` (EOF or an error on read).
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(conn: &mut S, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // a 408/503 answer first; the close follows
        }
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Issue 19 item 10: 100 connections that trickle their headers, then 40
/// that each send a review of 8 MiB − 2 bytes but the last bytes. The
/// slots cap holds connections, the header and body timeouts close them,
/// memory grows by at most the body budget (plus per-connection buffers),
/// and the webhook answers a real review as soon as the attack stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_held_bodies_are_cut_off_and_memory_stays_bounded() {
    use tokio::io::AsyncWriteExt;
    let ca = Ca::new();
    let limits = ConnLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        body_budget: 16 * 1024 * 1024,
    };
    let s = start_with(Some(&ca), limits).await;
    wait_status(&format!("{}/readyz", s.ops), 200).await;

    // Slow headers: no more than 64 connections are served at once: the
    // others wait for a slot (their handshakes do not complete while the
    // first 64 hold theirs)...
    let handshakes = futures::future::join_all((0..100).map(|_| async {
        tokio::time::timeout(Duration::from_millis(300), tls_connect(&ca, &s.url))
            .await
            .ok()
            .flatten()
    }))
    .await;
    let mut open: Vec<_> = handshakes.into_iter().flatten().collect();
    assert!(
        (1..=64).contains(&open.len()),
        "{} of 100 connections were served at once with 64 slots",
        open.len()
    );
    for c in &mut open {
        c.write_all(b"POST /validate HTTP/1.1\r\nHost: webhook\r\n")
            .await
            .unwrap();
        c.flush().await.unwrap();
    }
    // ...and each is closed once its head is late.
    let mut closed = 0;
    for c in &mut open {
        closed += usize::from(closed_by_server(c, Duration::from_secs(15)).await);
    }
    assert_eq!(closed, open.len(), "every slow-header connection is closed");
    drop(open);

    // Held bodies: each declares 8 MiB − 2 bytes and sends all but 2.
    let before = resident_bytes();
    let body_len = sparkcap_webhook::server::MAX_BODY - 2;
    let mut attackers = Vec::new();
    for _ in 0..40 {
        let Some(mut c) = tls_connect(&ca, &s.url).await else {
            continue;
        };
        attackers.push(tokio::spawn(async move {
            let head = format!(
                "POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
            );
            let _ = c.write_all(head.as_bytes()).await;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent + chunk.len() <= body_len - 2 {
                if c.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            closed_by_server(&mut c, Duration::from_secs(30)).await
        }));
    }
    assert!(attackers.len() >= 40, "all 40 held-body connections were accepted");
    let mut peak = before;
    let sampler = async {
        loop {
            peak = peak.max(resident_bytes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let results = tokio::select! {
        r = futures::future::join_all(attackers) => r,
        _ = sampler => unreachable!(),
    };
    let cut = results.into_iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(cut, 40, "every held body is answered (408 or 503) and closed");
    let grown = peak.saturating_sub(before);
    println!(
        "held bodies: 40 × {} MiB declared; resident grew by {} MiB (budget 16 MiB)",
        body_len / (1024 * 1024),
        grown / (1024 * 1024)
    );
    // Without the budget this grew by 265 MiB; allow the budget, 64 KiB
    // read buffers and TLS state per connection, and the allocator's slack.
    assert!(
        grown < 48 * 1024 * 1024,
        "resident memory grew by {} MiB",
        grown / (1024 * 1024)
    );

    // The real review is answered at once after the attack.
    let r = ca
        .client(true)
        .post(format!("{}/validate", s.url))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
