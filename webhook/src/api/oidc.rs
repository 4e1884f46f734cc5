//! OIDC JWT verification against the issuer's JWKS: algorithms pinned
//! (asymmetric only, so a public key can never be used as an HMAC secret),
//! `exp`, `iss` and `aud` required, keys fetched again when a token names an
//! unknown `kid` — at most once per refresh interval, so a flood of made-up
//! kids cannot hammer the issuer. No keys and no way to fetch them means 503.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// How an OIDC issuer is trusted.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `iss` tokens must carry (also where discovery starts).
    pub issuer: String,
    /// `aud` tokens must include.
    pub audience: String,
    /// JWKS URL; discovered from `{issuer}/.well-known/openid-configuration` when absent.
    pub jwks_url: Option<String>,
    /// Accepted signing algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Claim naming the caller's tenant.
    pub tenant_claim: String,
    /// Claim listing the caller's groups.
    pub groups_claim: String,
    /// Claim used as the user name.
    pub username_claim: String,
    /// Least time between two JWKS fetches.
    pub refresh_interval: Duration,
    /// HTTP timeout for discovery and JWKS.
    pub http_timeout: Duration,
}

impl OidcConfig {
    /// Defaults for `issuer` and `audience`: RS256 and ES256, claims
    /// `sparkcap_tenant`, `groups`, `sub`; refresh at most every 10 s.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            tenant_claim: "sparkcap_tenant".into(),
            groups_claim: "groups".into(),
            username_claim: "sub".into(),
            refresh_interval: Duration::from_secs(10),
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a token failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcError {
    /// Not a valid token (401).
    Invalid(String),
    /// The issuer's keys cannot be had (503).
    Unavailable(String),
}

/// Parses an `--oidc-algorithms` entry; symmetric algorithms are refused.
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = s
        .trim()
        .parse()
        .map_err(|_| format!("unknown JWT algorithm {s:?} (use e.g. RS256, ES256, PS256, EdDSA)"))?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(format!(
            "{s} is symmetric; OIDC tokens are verified with the issuer's public keys only"
        ));
    }
    Ok(alg)
}

/// A verifier for one issuer.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Option<JwkSet>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

impl Oidc {
    /// A verifier; keys are fetched on first use.
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        if config.algorithms.is_empty() {
            return Err("no OIDC algorithm accepted; give at least one (e.g. RS256)".into());
        }
        for alg in &config.algorithms {
            parse_algorithm(&format!("{alg:?}"))?;
        }
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            config,
            http,
            keys: RwLock::new(None),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The trusted issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Whether the token says it comes from this issuer (unverified: only
    /// picks the verifier).
    pub fn claims_issuer(&self, token: &str) -> bool {
        jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .ok()
            .and_then(|c| c.iss)
            .is_some_and(|iss| iss == self.config.issuer)
    }

    /// Verifies `token` and returns its identity.
    pub async fn verify(&self, token: &str) -> Result<super::auth::Identity, OidcError> {
        let header = decode_header(token).map_err(|e| OidcError::Invalid(format!("malformed JWT: {e}")))?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(OidcError::Invalid(format!(
                "JWT algorithm {:?} is not accepted (accepted: {:?})",
                header.alg, self.config.algorithms
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| OidcError::Invalid("JWT header has no kid; the issuer's keys are chosen by kid".into()))?;
        let key = self.key(&kid, header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = 30;
        let data = decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            OidcError::Invalid(match e.kind() {
                K::ExpiredSignature => "the token has expired; get a new one from your identity provider".into(),
                K::InvalidAudience => format!("the token's aud does not include {}", self.config.audience),
                K::InvalidIssuer => format!("the token's iss is not {}", self.config.issuer),
                K::InvalidSignature => "the token's signature does not verify".into(),
                K::MissingRequiredClaim(c) => format!("the token has no {c} claim (exp, iss and aud are required)"),
                K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
                other => format!("invalid token: {other:?}"),
            })
        })?;
        let claims = data.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let groups = match claims.get(&self.config.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(super::auth::Identity {
            username: text(&self.config.username_claim).unwrap_or_else(|| "(no subject)".into()),
            groups,
            namespace: None,
            tenant_claim: text(&self.config.tenant_claim),
        })
    }

    fn lookup(&self, kid: &str, alg: Algorithm) -> Option<Result<DecodingKey, OidcError>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let jwk = keys.as_ref()?.find(kid)?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && format!("{key_alg:?}") != format!("{alg:?}")
        {
            return Some(Err(OidcError::Invalid(format!(
                "key {kid} is for {key_alg:?}, but the token says {alg:?}"
            ))));
        }
        Some(DecodingKey::from_jwk(jwk).map_err(|e| OidcError::Invalid(format!("key {kid} is unusable: {e}"))))
    }

    async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, OidcError> {
        if let Some(k) = self.lookup(kid, alg) {
            return k;
        }
        let _one = self.fetching.lock().await;
        if let Some(k) = self.lookup(kid, alg) {
            return k; // another request fetched meanwhile
        }
        let due = self
            .last_fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= self.config.refresh_interval);
        let have_keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).is_some();
        if due {
            *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(set),
                Err(e) => {
                    tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS fetch failed");
                    return Err(OidcError::Unavailable(format!(
                        "cannot fetch the signing keys of {}: {e}; retry shortly",
                        self.config.issuer
                    )));
                }
            }
        } else if !have_keys {
            return Err(OidcError::Unavailable(format!(
                "the signing keys of {} could not be fetched; retry shortly",
                self.config.issuer
            )));
        }
        self.lookup(kid, alg).unwrap_or_else(|| {
            Err(OidcError::Invalid(format!(
                "no signing key {kid:?} at {}",
                self.config.issuer
            )))
        })
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let url = match &self.config.jwks_url {
            Some(u) => u.clone(),
            None => {
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let d: Discovery = self.get_json(&url).await?;
                if d.issuer != self.config.issuer {
                    return Err(format!(
                        "discovery document at {url} names issuer {}, not {}",
                        d.issuer, self.config.issuer
                    ));
                }
                d.jwks_uri
            }
        };
        self.get_json(&url).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let r = self.http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", r.status()));
        }
        r.json().await.map_err(|e| format!("GET {url}: {e}"))
    }
}
