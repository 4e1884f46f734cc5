//! HTTP plumbing: the HTTPS admission router and the plain metrics/health
//! router. Handlers decode, call [`admit`], encode, and count.

use crate::admit::{Endpoint, admit};
use crate::metrics::Metrics;
use crate::review::{self, Decision};
use crate::sync::ViewHandle;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Largest review body accepted. Objects reach 3 MiB in etcd and an UPDATE
/// review carries two of them, plus the envelope.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tenant view.
    pub view: ViewHandle,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether a serving certificate is loaded.
    pub cert_loaded: Arc<AtomicBool>,
}

/// Answers one review body: the status and JSON to send.
pub fn respond(
    endpoint: Endpoint,
    body: &[u8],
    view: &crate::view::TenantView,
    now: chrono::DateTime<Utc>,
) -> (StatusCode, Vec<u8>, Option<Decision>) {
    match review::decode(body) {
        Ok(req) => {
            let decision = admit(endpoint, &req, view, now);
            let json = review::encode(&req.uid, &decision);
            (
                StatusCode::OK,
                serde_json::to_vec(&json).expect("JSON serializes"),
                Some(decision),
            )
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string().into_bytes(), None),
    }
}

async fn handle(state: &AppState, endpoint: Endpoint, body: Bytes) -> Response {
    let started = Instant::now();
    let view = state.view.load_full();
    // Deciding is pure and bounded, but a ScheduledSparkApplication's check
    // expands a month of runs: it runs on the blocking pool, so the async
    // workers keep answering `/healthz` and other reviews meanwhile.
    let answered = tokio::task::spawn_blocking(move || respond(endpoint, &body, &view, Utc::now())).await;
    let (status, out, decision) = match answered {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "an admission review panicked");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                b"the review could not be decided; see the webhook's log".to_vec(),
                None,
            )
        }
    };
    sparkcap_ledger::faults::crash_point("webhook.admit.before_response");
    let name = match endpoint {
        Endpoint::Mutate => "mutate",
        Endpoint::Validate => "validate",
    };
    state
        .metrics
        .duration
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    match decision {
        Some(d) => {
            let outcome = match &d {
                Decision::Deny(_) => "denied",
                Decision::Allow { patch, .. } if !patch.is_empty() => "patched",
                Decision::Allow { .. } => "allowed",
            };
            state
                .metrics
                .admissions
                .with_label_values(&[name, "any", outcome])
                .inc();
            (status, [(header::CONTENT_TYPE, "application/json")], out).into_response()
        }
        None => {
            state.metrics.bad_requests.inc();
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response()
        }
    }
}

/// The admission router (served over TLS).
pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(|State(s): State<AppState>, body: Bytes| async move { handle(&s, Endpoint::Mutate, body).await }),
        )
        .route(
            "/validate",
            post(|State(s): State<AppState>, body: Bytes| async move { handle(&s, Endpoint::Validate, body).await }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A gauge's name, help and value (millicore-seconds) of a balance.
type BalanceGauge = (&'static str, &'static str, fn(&sparkcap_ledger::Balance) -> i64);

/// Every live tenant's vCPU-hour balance as the view holds it (the
/// dashboards' balances, and alerts on them).
fn balance_gauges(ledger: &crate::view::LedgerFacts) -> String {
    use std::fmt::Write;
    let mut tenants: Vec<_> = ledger
        .tenants
        .values()
        .filter(|t| t.tenant.status != sparkcap_ledger::TenantStatus::Deleted)
        .collect();
    tenants.sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
    let mut out = String::new();
    let gauges: [BalanceGauge; 2] = [
        (
            "sparkcap_tenant_balance_remaining_vcpu_hours",
            "vCPU-hours left of the purchases in force (negative: debt)",
            |b| b.remaining.0,
        ),
        (
            "sparkcap_tenant_balance_purchased_vcpu_hours",
            "vCPU-hours of the purchases in force",
            |b| b.purchased.0,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for t in &tenants {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\"}} {}",
                t.tenant.id,
                value(&t.balance) as f64 / 3_600_000.0
            );
        }
    }
    out
}

/// Health, readiness and metrics (served plain, for probes and Prometheus).
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if !s.cert_loaded.load(Ordering::Acquire) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "no serving certificate yet").into_response();
                }
                match s.view.ready() {
                    Ok(()) => "ok".into_response(),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                let view = s.view.load();
                let age = view
                    .ledger_age(Utc::now())
                    .map_or(-1.0, |a| a.num_milliseconds() as f64 / 1000.0);
                let extra = format!(
                    "# HELP sparkcap_webhook_view_age_seconds Age of the ledger part of the tenant view (-1: never loaded)\n\
                     # TYPE sparkcap_webhook_view_age_seconds gauge\nsparkcap_webhook_view_age_seconds {age}\n\
                     # HELP sparkcap_webhook_view_tenants Tenants in the view\n\
                     # TYPE sparkcap_webhook_view_tenants gauge\nsparkcap_webhook_view_tenants {}\n\
                     # HELP sparkcap_webhook_view_apps Running Spark applications in the view\n\
                     # TYPE sparkcap_webhook_view_apps gauge\nsparkcap_webhook_view_apps {}\n",
                    view.ledger.tenants.len(),
                    view.apps.len()
                );
                let extra = extra + &balance_gauges(&view.ledger);
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(&extra))
            }),
        )
        .with_state(state)
}
