//! Self-managed serving certificate, for clusters without cert-manager: a
//! CA and a serving certificate for the webhook Service, kept in a Secret
//! (so every replica serves the same one and a restart keeps it), with the
//! CA written into the `caBundle` of sparkcap's webhook configurations, and
//! renewed a month before it expires. Each replica writes the Secret's pair
//! to its certificate files, which the server reloads (see [`crate::certs`]).
//!
//! Replicas race safely: the Secret is created once (409 → read theirs) and
//! replaced with its resourceVersion (409 → read theirs).

use crate::certs::CertFiles;
use base64::Engine;
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Annotation on the Secret: when its serving certificate expires.
pub const NOT_AFTER: &str = "sparkcap.io/not-after";
/// Serving certificates last this long.
pub const VALIDITY: TimeDelta = TimeDelta::days(365);
/// And are renewed this long before they expire.
pub const RENEW_BEFORE: TimeDelta = TimeDelta::days(30);

/// Where the certificate lives and what it is for.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Namespace of the webhook (and its Secret and Service).
    pub namespace: String,
    /// Secret holding `tls.crt`, `tls.key`, `ca.crt`.
    pub secret: String,
    /// The webhook Service's name: the certificate's DNS names.
    pub service: String,
    /// Name of the Mutating and Validating webhook configurations to patch.
    pub configurations: String,
    /// Files the server loads.
    pub files: CertFiles,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SelfCertError {
    /// The API server refused or failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Generating the certificate failed.
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the files failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Secret lacks a key.
    #[error("Secret {0} has no {1}; delete it and sparkcap-webhook makes a new one")]
    Incomplete(String, &'static str),
}

/// A generated pair and its CA, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Serving certificate.
    pub cert: String,
    /// Its key.
    pub key: String,
    /// The CA that signed it.
    pub ca: String,
    /// When the serving certificate expires.
    pub not_after: DateTime<Utc>,
}

/// A new CA and a serving certificate for the Service's DNS names, valid
/// from a day before `now` (clock skew) for [`VALIDITY`].
pub fn generate(service: &str, namespace: &str, now: DateTime<Utc>) -> Result<Generated, rcgen::Error> {
    // rcgen takes whole days (midnight UTC).
    let rcgen_date = |t: DateTime<Utc>| rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8);
    let midnight = |t: DateTime<Utc>| t.date_naive().and_hms_opt(0, 0, 0).map_or(t, |d| d.and_utc());
    let not_before = now - TimeDelta::days(1);
    let not_after = midnight(now + VALIDITY);
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("sparkcap webhook CA ({namespace})"));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen_date(not_before);
    ca_params.not_after = rcgen_date(not_after + TimeDelta::days(365));
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let names = vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen_date(not_before);
    params.not_after = rcgen_date(not_after);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(Generated {
        cert: cert.pem(),
        key: key.serialize_pem(),
        ca: ca.pem(),
        not_after,
    })
}

/// Whether a Secret's certificate must be replaced at `now`.
pub fn needs_renewal(secret: &Secret, now: DateTime<Utc>) -> bool {
    let has = |k: &str| secret.data.as_ref().is_some_and(|d| d.contains_key(k));
    let not_after = secret
        .annotations()
        .get(NOT_AFTER)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    !(has("tls.crt") && has("tls.key") && has("ca.crt")) || not_after.is_none_or(|t| t - now < RENEW_BEFORE)
}

fn secret_of(cfg: &SelfManaged, g: &Generated, resource_version: Option<String>) -> Secret {
    let data: BTreeMap<String, ByteString> = [("tls.crt", &g.cert), ("tls.key", &g.key), ("ca.crt", &g.ca)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let mut s = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    };
    s.metadata.name = Some(cfg.secret.clone());
    s.metadata.namespace = Some(cfg.namespace.clone());
    s.metadata.resource_version = resource_version;
    s.metadata.annotations = Some(
        [(
            NOT_AFTER.to_owned(),
            g.not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )]
        .into(),
    );
    s.metadata.labels = Some([("app.kubernetes.io/name".to_owned(), "sparkcap".to_owned())].into());
    s
}

fn field(secret: &Secret, key: &'static str) -> Result<Vec<u8>, SelfCertError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or_else(|| SelfCertError::Incomplete(secret.name_any(), key))
}

/// Makes sure a current certificate is in the Secret, its pair in the
/// files and its CA in the webhook configurations. Returns the CA (PEM).
pub async fn ensure(client: &Client, cfg: &SelfManaged, now: DateTime<Utc>) -> Result<Vec<u8>, SelfCertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut secret = api.get_opt(&cfg.secret).await?;
    if secret.as_ref().is_none_or(|s| needs_renewal(s, now)) {
        let generated = generate(&cfg.service, &cfg.namespace, now)?;
        let written = match &secret {
            None => {
                api.create(&PostParams::default(), &secret_of(cfg, &generated, None))
                    .await
            }
            Some(old) => {
                let rv = old.resource_version();
                api.replace(&cfg.secret, &PostParams::default(), &secret_of(cfg, &generated, rv))
                    .await
            }
        };
        secret = Some(match written {
            Ok(s) => {
                tracing::info!(secret = %cfg.secret, not_after = %generated.not_after, "issued the webhook's serving certificate");
                s
            }
            // Another replica got there first: use theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => api.get(&cfg.secret).await?,
            Err(e) => return Err(e.into()),
        });
    }
    let secret = secret.expect("read or written above");
    let (cert, key, ca) = (
        field(&secret, "tls.crt")?,
        field(&secret, "tls.key")?,
        field(&secret, "ca.crt")?,
    );
    for (path, bytes) in [(&cfg.files.cert, &cert), (&cfg.files.key, &key)] {
        let same = tokio::fs::read(path).await.is_ok_and(|old| old == *bytes);
        if !same {
            // Write then rename: the reloader never sees half a file.
            let tmp = path.with_extension("tmp");
            let write = async {
                tokio::fs::write(&tmp, bytes).await?;
                tokio::fs::rename(&tmp, path).await
            };
            write.await.map_err(|source| SelfCertError::Write {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    inject_ca(client, &cfg.configurations, &ca).await?;
    Ok(ca)
}

/// Writes `ca` into every webhook of the named configurations (get, change,
/// replace with its resourceVersion; retried on conflict).
async fn inject_ca(client: &Client, name: &str, ca: &[u8]) -> Result<(), SelfCertError> {
    let bundle = ByteString(ca.to_vec());
    for _ in 0..5 {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let result = match api.get_opt(name).await? {
            Some(mut m)
                if m.webhooks
                    .iter()
                    .flatten()
                    .any(|w| w.client_config.ca_bundle.as_ref() != Some(&bundle)) =>
            {
                for w in m.webhooks.iter_mut().flatten() {
                    w.client_config.ca_bundle = Some(bundle.clone());
                }
                api.replace(name, &PostParams::default(), &m).await.map(|_| ())
            }
            _ => Ok(()),
        };
        let result = match result {
            Ok(()) => {
                let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                match api.get_opt(name).await? {
                    Some(mut v)
                        if v.webhooks
                            .iter()
                            .flatten()
                            .any(|w| w.client_config.ca_bundle.as_ref() != Some(&bundle)) =>
                    {
                        for w in v.webhooks.iter_mut().flatten() {
                            w.client_config.ca_bundle = Some(bundle.clone());
                        }
                        api.replace(name, &PostParams::default(), &v).await.map(|_| ())
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Keeps the certificate current: at once, then every `every`. Failures
/// are logged and retried; the server keeps its last good pair meanwhile.
pub async fn run(client: Client, cfg: SelfManaged, every: Duration) {
    loop {
        match ensure(&client, &cfg, Utc::now()).await {
            Ok(ca) => {
                tracing::debug!(ca = %base64::engine::general_purpose::STANDARD.encode(&ca).len(), "certificate current")
            }
            Err(e) => tracing::warn!(error = %e, "keeping the webhook's certificate current failed; retrying"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn generated_pairs_verify_and_name_the_service() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let g = generate("sparkcap-webhook", "sparkcap-system", now).unwrap();
        crate::certs::check_pair(g.cert.as_bytes(), g.key.as_bytes()).unwrap();
        assert!(g.not_after > now + TimeDelta::days(364));
        let cfg = SelfManaged {
            namespace: "sparkcap-system".into(),
            secret: "sparkcap-webhook-tls".into(),
            service: "sparkcap-webhook".into(),
            configurations: "sparkcap".into(),
            files: CertFiles {
                cert: "/x".into(),
                key: "/y".into(),
            },
        };
        let s = secret_of(&cfg, &g, None);
        assert!(!needs_renewal(&s, now));
        assert!(!needs_renewal(&s, now + TimeDelta::days(300)));
        assert!(
            needs_renewal(&s, now + TimeDelta::days(340)),
            "renewed a month before expiry"
        );
        let mut broken = s.clone();
        broken.data.as_mut().unwrap().remove("ca.crt");
        assert!(needs_renewal(&broken, now));
    }
}
