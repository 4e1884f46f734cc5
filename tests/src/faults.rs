//! Faults the reliability tests inject. [`Outage`] is a TCP proxy in front
//! of a server (PostgreSQL): cut, it drops every open connection and resets
//! new ones at once, as a failed or restarting database host does; restored,
//! it forwards again. Slowed, it holds every chunk it forwards, in both
//! directions, as a saturated link or an overloaded database does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A cuttable TCP proxy.
#[derive(Debug, Clone)]
pub struct Outage {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    refused: Arc<AtomicU64>,
    latency_ms: Arc<AtomicU64>,
}

impl Outage {
    /// Proxies `127.0.0.1:<free port>` to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (generation, _) = watch::channel(0u64);
        let o = Self {
            addr: listener.local_addr()?,
            cut: Arc::new(AtomicBool::new(false)),
            generation,
            refused: Arc::new(AtomicU64::new(0)),
            latency_ms: Arc::new(AtomicU64::new(0)),
        };
        let me = o.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if me.cut.load(Ordering::Acquire) {
                    me.refused.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let mut cancelled = me.generation.subscribe();
                let latency = me.latency_ms.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_rx, client_tx) = client.into_split();
                    let (server_rx, server_tx) = server.into_split();
                    tokio::select! {
                        _ = pump(client_rx, server_tx, latency.clone()) => {}
                        _ = pump(server_rx, client_tx, latency) => {}
                        _ = cancelled.changed() => {}
                    }
                });
            }
        });
        Ok(o)
    }

    /// Drops every connection and refuses new ones until [`Outage::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }

    /// Holds every chunk forwarded this long (zero: none).
    pub fn slow(&self, latency: std::time::Duration) {
        self.latency_ms.store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// `url` (a postgres:// URL) pointed at this proxy instead.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (auth_host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let auth = auth_host
            .rsplit_once('@')
            .map(|(a, _)| format!("{a}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}{}/{path}", self.addr)
    }
}

/// Copies `from` to `to`, holding each chunk for the latency in force.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let hold = latency_ms.load(Ordering::Relaxed);
        if hold > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
