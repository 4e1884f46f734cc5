//! The tenant REST API (`/api/v1`): balances, purchases, usage and run
//! history, the pool registry and tenant administration, served on its own
//! HTTPS port. Every request is authenticated ([`auth`]), rate-limited per
//! tenant ([`ratelimit`]) and answered with JSON; every error has one shape
//! ([`error::ErrorBody`]) carrying the request id.

pub mod auth;
pub mod dto;
pub mod error;
pub mod insights;
pub mod oidc;
pub mod paging;
pub mod ratelimit;
pub mod routes;
pub mod schedules;

use crate::metrics::Metrics;
use crate::sync::ViewHandle;
use auth::{Authenticator, Principal};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use error::ApiError;
use ratelimit::{Limiter, Quota, Verdict};
use sparkcap_ledger::slices::SlicePolicy;
use sparkcap_ledger::{LedgerStore, Tier};
use std::sync::Arc;
use std::time::Instant;

/// Rate limits by tier (requests per minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Standard tenants (R13.5: 100).
    pub standard: u32,
    /// Premium tenants (R13.5: 500).
    pub premium: u32,
    /// Each admin identity.
    pub admin: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            standard: 100,
            premium: 500,
            admin: 1_000,
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The ledger (history, writes).
    pub store: Arc<dyn LedgerStore>,
    /// The tenant view (balances, namespaces, settings).
    pub view: ViewHandle,
    /// Token verification.
    pub auth: Authenticator,
    /// Limits.
    pub limits: RateLimits,
    /// Limiter state.
    pub limiter: Arc<Limiter>,
    /// Metrics.
    pub metrics: Metrics,
    /// Origin of the limiter's clock.
    pub started: Instant,
    /// How schedules are planned in time slices.
    pub slices: SlicePolicy,
    /// Prices the estimator compares.
    pub prices: sparkcap_ledger::estimate::Prices,
    /// Where tenants' notification URLs may send (checked when set; the
    /// scheduler checks again on every send).
    pub egress: sparkcap_ledger::egress::EgressPolicy,
}

impl ApiState {
    /// State over these parts.
    pub fn new(
        store: Arc<dyn LedgerStore>,
        view: ViewHandle,
        auth: Authenticator,
        limits: RateLimits,
        metrics: Metrics,
    ) -> Self {
        let settings = view.load().settings.clone();
        let slices = SlicePolicy {
            unit_cpu: settings.spark_unit.cpu.0,
            ..settings.slices
        };
        Self {
            store,
            view,
            auth,
            limits,
            limiter: Arc::new(Limiter::default()),
            metrics,
            started: Instant::now(),
            prices: insights::default_prices(slices.unit_cpu),
            slices,
            egress: sparkcap_ledger::egress::EgressPolicy::default(),
        }
    }
}

/// The request's id: the caller's `X-Request-Id` when it is sane, else new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(headers: &HeaderMap) -> RequestId {
    let given = headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    });
    RequestId(given.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned))
}

/// The API router, mounted at `/api/v1`.
pub fn router(state: ApiState) -> Router {
    routes::routes()
        .fallback(|| async { ApiError::not_found("no such API route; see /api/v1/openapi.json for the routes served") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method; see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// A NUL (or another control character) in the path or query can name no
/// tenant, job or window; refused before anything reads it, so that it can
/// never reach SQL and read as the ledger failing.
fn control_characters(uri: &axum::http::Uri) -> Option<ApiError> {
    let raw = uri.path_and_query().map_or("", |p| p.as_str());
    let bytes = raw.as_bytes();
    let decoded_control = bytes.windows(3).any(|w| {
        w[0] == b'%' && matches!(w[1], b'0' | b'1') && w[2].is_ascii_hexdigit()
            || w[0] == b'%' && w[1] == b'7' && matches!(w[2], b'f' | b'F')
    });
    (decoded_control || raw.chars().any(char::is_control)).then(|| {
        ApiError::bad_request(
            "invalid_request",
            "the path or query holds a control character (such as %00); tenant ids, job names and times never do",
        )
    })
}

/// Authenticates, rate-limits, and renders errors with the request id.
async fn gate(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let rid = request_id(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let mut verdict = None;
    let response = if let Some(e) = control_characters(req.uri()) {
        e.into_response()
    } else if route == routes::OPENAPI_PATH {
        next.run(req).await
    } else {
        let authorization = req.headers().get(axum::http::header::AUTHORIZATION).cloned();
        match admit(&s, authorization).await {
            Err(e) => e.into_response(),
            Ok((principal, v)) => {
                verdict = Some(v);
                if v.allowed {
                    req.extensions_mut().insert(principal);
                    req.extensions_mut().insert(rid.clone());
                    next.run(req).await
                } else {
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "more than {} requests per minute (burst {}); retry after {} s",
                            v.quota.per_minute,
                            v.quota.burst,
                            v.retry_after.as_secs()
                        ),
                    )
                    .into_response()
                }
            }
        }
    };
    let response = finish(response, &rid, verdict);
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(request_id = %rid.0, %route, %status, "API request failed");
    }
    s.metrics
        .api_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    s.metrics
        .api_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn admit(s: &ApiState, authorization: Option<HeaderValue>) -> Result<(Principal, Verdict), ApiError> {
    let header = authorization
        .as_ref()
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::unauthenticated("Authorization header is not ASCII"))
        })
        .transpose()?;
    let identity = s.auth.authenticate(header).await?;
    let view = s.view.load();
    let principal = s.auth.principal(&identity, &view)?;
    let (key, quota) = match &principal {
        Principal::Admin { subject } => (format!("admin:{subject}"), Quota::per_minute(s.limits.admin)),
        Principal::Tenant { tenant, .. } => {
            let tier = view
                .ledger
                .tenants
                .get(tenant)
                .map(|t| t.tenant.tier)
                .unwrap_or_default();
            let per_minute = match tier {
                Tier::Standard => s.limits.standard,
                Tier::Premium => s.limits.premium,
            };
            (format!("tenant:{tenant}"), Quota::per_minute(per_minute))
        }
    };
    let now_ns = s.started.elapsed().as_nanos() as i64;
    Ok((principal, s.limiter.check(&key, quota, now_ns)))
}

/// Renders an [`ApiError`] into its JSON body and adds the request id and
/// rate-limit headers.
fn finish(response: Response, rid: &RequestId, verdict: Option<Verdict>) -> Response {
    let mut response = match response.extensions().get::<ApiError>().cloned() {
        Some(e) => {
            let mut r = (e.status, axum::Json(e.body(&rid.0))).into_response();
            if e.status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"sparkcap\""),
                );
            }
            r
        }
        None => response,
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid.0) {
        h.insert(REQUEST_ID, v);
    }
    if let Some(v) = verdict {
        let num = |n: u64| HeaderValue::from_str(&n.to_string()).expect("digits");
        h.insert("ratelimit-limit", num(u64::from(v.quota.per_minute)));
        h.insert("ratelimit-remaining", num(u64::from(v.remaining)));
        h.insert("ratelimit-reset", num(v.reset.as_secs()));
        if let Ok(p) = HeaderValue::from_str(&format!("{};w=60;burst={}", v.quota.per_minute, v.quota.burst)) {
            h.insert("ratelimit-policy", p);
        }
        if !v.allowed {
            h.insert(axum::http::header::RETRY_AFTER, num(v.retry_after.as_secs().max(1)));
        }
    }
    response
}
