//! Who is calling. A bearer token is either a Kubernetes ServiceAccount
//! token, checked by the API server's TokenReview against sparkcap's own
//! audience, or an OIDC JWT from the configured issuer, checked against its
//! JWKS. Identities become principals: an admin (by group) or one tenant —
//! for a ServiceAccount, the tenant its namespace is bound to, never anything
//! the request says. When TokenReview or the JWKS cannot answer, requests are
//! refused (503), never let through.

use super::error::ApiError;
use super::oidc::{Oidc, OidcError};
use crate::view::TenantView;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use sparkcap_ledger::{TenantId, TenantStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who a verified token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (`system:serviceaccount:ns:name` or the OIDC subject).
    pub username: String,
    /// Groups.
    pub groups: Vec<String>,
    /// A ServiceAccount's namespace.
    pub namespace: Option<String>,
    /// An OIDC token's tenant claim.
    pub tenant_claim: Option<String>,
}

/// What a caller may act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Everything, every tenant.
    Admin {
        /// User name.
        subject: String,
    },
    /// One tenant's own resources.
    Tenant {
        /// The tenant.
        tenant: TenantId,
        /// User name.
        subject: String,
    },
}

impl Principal {
    /// The user name.
    pub fn subject(&self) -> &str {
        match self {
            Self::Admin { subject } | Self::Tenant { subject, .. } => subject,
        }
    }

    /// Object-level check: the caller may read `tenant`'s resources. A tenant
    /// asking for another's gets 403 whether or not that tenant exists.
    pub fn may_read(&self, tenant: &TenantId) -> Result<(), ApiError> {
        match self {
            Self::Admin { .. } => Ok(()),
            Self::Tenant { tenant: own, .. } if own == tenant => Ok(()),
            Self::Tenant { tenant: own, subject } => Err(ApiError::forbidden(format!(
                "{subject} acts for tenant {own} and may not read tenant {tenant}'s resources"
            ))),
        }
    }

    /// Admin-only routes.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        match self {
            Self::Admin { .. } => Ok(()),
            Self::Tenant { subject, .. } => Err(ApiError::forbidden(format!(
                "{what} is for sparkcap admins; {subject} is not in an admin group"
            ))),
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The token is not valid (401).
    Invalid(String),
    /// The verifier could not be asked (503, fail closed).
    Unavailable(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(why) => ApiError::unauthenticated(why),
            AuthError::Unavailable(why) => ApiError::unavailable("authentication_unavailable", why),
        }
    }
}

impl From<OidcError> for AuthError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Invalid(why) => Self::Invalid(why),
            OidcError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// TokenReview settings.
#[derive(Clone)]
pub struct TokenReviewConfig {
    /// The API server.
    pub client: Client,
    /// The audience tokens must be minted for (`kubectl create token --audience`).
    pub audience: String,
    /// How long a review may take before the request is refused.
    pub timeout: Duration,
}

impl std::fmt::Debug for TokenReviewConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewConfig")
            .field("audience", &self.audience)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How positive reviews are remembered (kube-apiserver's webhook
/// authenticator caches 2 minutes; we keep less so revocation bites sooner).
const CACHE_OK: Duration = Duration::from_secs(30);
/// How long a refusal is remembered, to blunt floods of bad tokens.
const CACHE_BAD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Cached {
    result: Result<Identity, String>,
    until: Instant,
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    token_review: Option<TokenReviewConfig>,
    oidc: Option<Arc<Oidc>>,
    admin_groups: Vec<String>,
    cache: Cache<[u8; 32], Cached>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("token_review", &self.token_review.as_ref().map(|t| &t.audience))
            .field("oidc", &self.oidc.as_ref().map(|o| o.issuer().to_owned()))
            .field("admin_groups", &self.admin_groups)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator with either or both verifiers.
    pub fn new(token_review: Option<TokenReviewConfig>, oidc: Option<Oidc>, admin_groups: Vec<String>) -> Self {
        Self {
            token_review,
            oidc: oidc.map(Arc::new),
            admin_groups,
            cache: Cache::builder().max_capacity(100_000).time_to_live(CACHE_OK).build(),
        }
    }

    /// The identity behind `Authorization: Bearer <token>`.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let token = bearer(header)?;
        if let Some(oidc) = &self.oidc
            && oidc.claims_issuer(token)
        {
            return Ok(oidc.verify(token).await?);
        }
        let Some(tr) = &self.token_review else {
            return Err(AuthError::Invalid(match &self.oidc {
                Some(o) => format!("the token was not issued by {}, the only issuer accepted", o.issuer()),
                None => "no authentication method is configured".into(),
            }));
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(c) = self.cache.get(&key).filter(|c| c.until > Instant::now()) {
            return c.result.map_err(AuthError::Invalid);
        }
        let result = review(tr, token).await;
        let keep = match &result {
            Ok(_) => CACHE_OK,
            Err(AuthError::Invalid(_)) => CACHE_BAD,
            Err(AuthError::Unavailable(_)) => return result,
        };
        let until = Instant::now() + keep.min(token_lifetime_left(token).unwrap_or(keep));
        self.cache.insert(
            key,
            Cached {
                result: result.clone().map_err(|e| match e {
                    AuthError::Invalid(w) | AuthError::Unavailable(w) => w,
                }),
                until,
            },
        );
        result
    }

    /// The principal for an identity, as the tenant view stands.
    pub fn principal(&self, id: &Identity, view: &TenantView) -> Result<Principal, ApiError> {
        if id.groups.iter().any(|g| self.admin_groups.contains(g)) {
            return Ok(Principal::Admin {
                subject: id.username.clone(),
            });
        }
        let tenant = if let Some(ns) = &id.namespace {
            tenant_of_namespace(ns, view).map_err(|why| {
                ApiError::forbidden(format!(
                    "service account {} cannot act for a tenant: {why}",
                    id.username
                ))
            })?
        } else if let Some(claim) = &id.tenant_claim {
            TenantId::new(claim.clone()).map_err(|e| {
                ApiError::forbidden(format!(
                    "{}'s tenant claim {claim:?} is not a tenant id: {e}",
                    id.username
                ))
            })?
        } else {
            return Err(ApiError::forbidden(format!(
                "{} is neither in an admin group nor tied to a tenant (no tenant claim)",
                id.username
            )));
        };
        match view.ledger.tenants.get(&tenant).map(|t| t.tenant.status) {
            Some(TenantStatus::Active | TenantStatus::Suspended) => Ok(Principal::Tenant {
                tenant,
                subject: id.username.clone(),
            }),
            Some(TenantStatus::Deleted) => Err(ApiError::forbidden(format!("tenant {tenant} has been deleted"))),
            None => Err(ApiError::forbidden(format!(
                "{} belongs to tenant {tenant}, which sparkcap does not know; ask a platform admin to create it",
                id.username
            ))),
        }
    }
}

/// The tenant a namespace belongs to: its ledger binding, else its
/// `sparkcap.io/tenant` label; both must agree when both exist.
pub fn tenant_of_namespace(ns: &str, view: &TenantView) -> Result<TenantId, String> {
    let bound = view.ledger.bindings.get(ns);
    let label = view.namespaces.get(ns).cloned().flatten();
    match (bound, label) {
        (Some(b), Some(l)) if b.as_str() != l => Err(format!(
            "namespace {ns} is labelled for tenant {l} but bound to tenant {b} in the ledger"
        )),
        (Some(b), _) => Ok(b.clone()),
        (None, Some(l)) => TenantId::new(l.clone()).map_err(|e| format!("namespace {ns}'s label {l:?}: {e}")),
        (None, None) => Err(format!("namespace {ns} belongs to no sparkcap tenant")),
    }
}

fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or_else(|| {
        AuthError::Invalid(
            "missing Authorization header; send `Authorization: Bearer <token>` (e.g. from `kubectl create token`)"
                .into(),
        )
    })?;
    let (scheme, token) = h
        .split_once(' ')
        .ok_or_else(|| AuthError::Invalid("Authorization header must be `Bearer <token>`".into()))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid(
            "Authorization header must be `Bearer <token>`".into(),
        ));
    }
    if token.len() > 16 * 1024 {
        return Err(AuthError::Invalid("bearer token longer than 16 KiB".into()));
    }
    Ok(token)
}

/// Seconds until a JWT's `exp`, read without verifying (only to bound the cache).
fn token_lifetime_left(token: &str) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: Option<i64>,
    }
    let claims: Exp = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    let left = claims.exp? - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(left.max(0) as u64))
}

async fn review(tr: &TokenReviewConfig, token: &str) -> Result<Identity, AuthError> {
    let api: Api<TokenReview> = Api::all(tr.client.clone());
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(vec![tr.audience.clone()]),
        },
        ..TokenReview::default()
    };
    let answer = tokio::time::timeout(tr.timeout, api.create(&PostParams::default(), &request))
        .await
        .map_err(|_| AuthError::Unavailable("the Kubernetes TokenReview did not answer in time; retry".into()))?
        .map_err(|e| AuthError::Unavailable(format!("the Kubernetes TokenReview failed ({e}); retry")))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "token rejected".into());
        return Err(AuthError::Invalid(format!(
            "the Kubernetes API server did not accept the token: {why}; mint one with `kubectl create token <serviceaccount> --audience {}`",
            tr.audience
        )));
    }
    if let Some(auds) = status.audiences.as_ref().filter(|a| !a.is_empty())
        && !auds.contains(&tr.audience)
    {
        return Err(AuthError::Invalid(format!(
            "the token is not for audience {}; mint one with `--audience {}`",
            tr.audience, tr.audience
        )));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let namespace = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns.to_owned());
    Ok(Identity {
        username,
        groups: user.groups.unwrap_or_default(),
        namespace,
        tenant_claim: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_parsed_strictly() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert!(matches!(bearer(None), Err(AuthError::Invalid(_))));
        assert!(matches!(bearer(Some("Basic abc")), Err(AuthError::Invalid(_))));
        assert!(matches!(bearer(Some("Bearer ")), Err(AuthError::Invalid(_))));
        assert!(matches!(bearer(Some("Bearer")), Err(AuthError::Invalid(_))));
    }
}
