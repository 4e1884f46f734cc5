//! A throwaway certificate authority for HTTPS in tests and the devcluster:
//! the API server's listener, webhooks the API server calls, and certificate
//! rotation tests all need certificates a client can verify.

use base64::Engine;

/// A self-signed CA that issues server certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// Certificate chain (leaf only; the CA is distributed separately).
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl TestCa {
    /// A fresh CA with a new key.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sparkcap test CA");
        let key = rcgen::KeyPair::generate().expect("key generation");
        let cert = params.self_signed(&key).expect("self-signing a CA");
        Self { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate as a Kubernetes `caBundle` / `certificate-authority-data` (base64 of PEM).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.cert.pem())
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate().expect("key generation");
        let cert = rcgen::CertificateParams::new(names)
            .expect("valid subject alternative names")
            .signed_by(&key, &self.cert, &self.key)
            .expect("signing a server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
