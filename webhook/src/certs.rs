//! The serving certificate: read from files and reloaded when they change
//! (cert-manager rewrites the Secret; the kubelet swaps the mounted files).
//! Connections already open keep their session; new handshakes get the new
//! certificate. A broken pair is logged and the previous one kept.

use crate::metrics::Metrics;
use axum_server::tls_rustls::RustlsConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Where the certificate and key live.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl CertFiles {
    async fn read(&self) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        Ok((tokio::fs::read(&self.cert).await?, tokio::fs::read(&self.key).await?))
    }

    /// Loads the pair, waiting (and saying so) until both files exist.
    pub async fn load_when_present(&self) -> RustlsConfig {
        let mut warned = false;
        loop {
            match self.read().await {
                Ok((c, k)) => match check_pair(&c, &k).map_err(std::io::Error::other) {
                    Err(e) => {
                        tracing::error!(cert = %self.cert.display(), error = %e, "serving certificate is not usable; waiting for a valid one")
                    }
                    Ok(()) => match RustlsConfig::from_pem(c, k).await {
                        Ok(config) => return config,
                        Err(e) => {
                            tracing::error!(cert = %self.cert.display(), error = %e, "serving certificate is invalid; waiting for a valid one")
                        }
                    },
                },
                Err(e) if !warned => {
                    tracing::warn!(cert = %self.cert.display(), key = %self.key.display(), error = %e, "waiting for the serving certificate");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reloads `config` whenever either file's content changes; runs forever.
    pub async fn watch(self, config: RustlsConfig, every: Duration, metrics: Metrics) {
        let mut last = self.read().await.ok();
        let mut rejected = None;
        loop {
            tokio::time::sleep(every).await;
            let Ok(now) = self.read().await else { continue };
            if last.as_ref() == Some(&now) || rejected.as_ref() == Some(&now) {
                continue;
            }
            if let Err(why) = check_pair(&now.0, &now.1) {
                // Often a half-finished rotation (new key, old certificate):
                // serving it would fail every handshake. Wait for the rest.
                tracing::warn!(%why, "certificate files do not form a usable pair yet; keeping the old one");
                continue;
            }
            match config.reload_from_pem(now.0.clone(), now.1.clone()).await {
                Ok(()) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    metrics.cert_reloads.with_label_values(&["ok"]).inc();
                    last = Some(now);
                }
                Err(e) => {
                    // Often a half-written rotation: try again next tick.
                    tracing::warn!(error = %e, "new serving certificate is not usable yet; keeping the old one");
                    metrics.cert_reloads.with_label_values(&["error"]).inc();
                    rejected = Some(now);
                }
            }
        }
    }
}

/// Whether `cert` and `key` parse and belong together.
pub fn check_pair(cert: &[u8], key: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("key: {e}"))?;
    rustls::sign::CertifiedKey::new(certs, signing)
        .keys_match()
        .map_err(|e| format!("key does not match certificate: {e}"))
}
