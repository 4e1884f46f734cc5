//! The handlers, one per route, each documented for the OpenAPI document.
//! Each checks who may do what first (object-level: a tenant reads only its
//! own), then decodes, then asks the ledger or the tenant view.

use super::ApiState;
use super::auth::Principal;
use super::dto::*;
use super::error::{ApiError, ErrorBody};
use super::paging;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sparkcap_ledger::lifecycle::{JobStage, JobState};
use sparkcap_ledger::store::HISTORY_DAYS;
use sparkcap_ledger::{
    Granularity, McSeconds, NewTenant, Pool, PurchaseKind, PurchaseRequest, RunCursor, RunQuery, TenantId, TenantPatch,
};
use std::collections::HashMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Where the OpenAPI document is served (without authentication).
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Errors any authenticated route may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Errors {
    /// Malformed request: the message names the field or parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid bearer token.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The caller may not do this (another tenant's data, or admin-only).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such tenant or route.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Over the tenant's rate limit; see Retry-After.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The ledger, TokenReview or the OIDC issuer cannot answer now.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Errors of writes that can conflict with what exists.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Conflicts {
    /// Conflicts with what exists (names the conflict).
    #[response(status = 409)]
    Conflict(ErrorBody),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sparkcap tenant API",
        description = "Balances, purchases, usage and run history of sparkcap tenants. \
            Authenticate with `Authorization: Bearer <token>`: a Kubernetes ServiceAccount token minted for \
            sparkcap's audience (`kubectl create token <sa> --audience sparkcap`) or an OIDC JWT.",
        license(name = "Apache-2.0")
    ),
    paths(
        whoami, list_tenants, create_tenant, get_tenant, patch_tenant, balance, list_purchases,
        create_purchase, usage, jobs, runs, pools, super::schedules::put_schedule,
        super::schedules::patch_schedule, super::schedules::delete_schedule, super::schedules::list_schedules,
        super::schedules::slots, super::insights::job_profile, super::insights::notices,
        super::insights::get_notifications, super::insights::put_notifications, super::insights::estimate_route,
        super::insights::tenant_forecast, super::insights::platform_forecast
    ),
    modifiers(&Security),
    security(("bearer" = []))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The routes (without the gate).
pub(super) fn routes() -> Router<ApiState> {
    let doc = serde_json::to_vec(&openapi()).expect("OpenAPI serializes");
    let doc: &'static [u8] = Box::leak(doc.into_boxed_slice());
    Router::new()
        .route(
            OPENAPI_PATH,
            get(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }),
        )
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tenants", get(list_tenants).post(create_tenant))
        .route("/api/v1/tenants/{tenant}", get(get_tenant).patch(patch_tenant))
        .route("/api/v1/tenants/{tenant}/balance", get(balance))
        .route(
            "/api/v1/tenants/{tenant}/purchases",
            get(list_purchases).post(create_purchase),
        )
        .route("/api/v1/tenants/{tenant}/usage", get(usage))
        .route("/api/v1/tenants/{tenant}/jobs", get(jobs))
        .route("/api/v1/tenants/{tenant}/jobs/{job}/runs", get(runs))
        .route("/api/v1/pools", get(pools))
        .route(
            "/api/v1/tenants/{tenant}/jobs/{job}/schedule",
            axum::routing::post(super::schedules::put_schedule)
                .patch(super::schedules::patch_schedule)
                .delete(super::schedules::delete_schedule),
        )
        .route(
            "/api/v1/tenants/{tenant}/jobs/{job}/profile",
            get(super::insights::job_profile),
        )
        .route("/api/v1/tenants/{tenant}/notices", get(super::insights::notices))
        .route(
            "/api/v1/tenants/{tenant}/notifications",
            get(super::insights::get_notifications).put(super::insights::put_notifications),
        )
        .route(
            "/api/v1/tenants/{tenant}/estimate",
            axum::routing::post(super::insights::estimate_route),
        )
        .route(
            "/api/v1/tenants/{tenant}/forecast",
            get(super::insights::tenant_forecast),
        )
        .route("/api/v1/forecast", get(super::insights::platform_forecast))
        .route(
            "/api/v1/tenants/{tenant}/schedules",
            get(super::schedules::list_schedules),
        )
        .route("/api/v1/tenants/{tenant}/slots", get(super::schedules::slots))
}

type Res<T> = Result<T, ApiError>;

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Res<T> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("{}; see /api/v1/openapi.json", e.body_text())))
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Res<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

pub(super) fn tenant_path(p: Result<Path<String>, PathRejection>) -> Res<TenantId> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    TenantId::new(raw).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))
}

/// The caller as sparkcap sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// User name from the token.
    pub subject: String,
    /// `admin` or `tenant`.
    pub role: String,
    /// The tenant acted for (tenants only).
    pub tenant: Option<String>,
}

/// Who the token belongs to and what it may act as.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = WhoAmI), Errors))]
async fn whoami(Extension(p): Extension<Principal>) -> Json<WhoAmI> {
    Json(match &p {
        Principal::Admin { subject } => WhoAmI {
            subject: subject.clone(),
            role: "admin".into(),
            tenant: None,
        },
        Principal::Tenant { tenant, subject } => WhoAmI {
            subject: subject.clone(),
            role: "tenant".into(),
            tenant: Some(tenant.to_string()),
        },
    })
}

/// Tenant list filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TenantsQuery {
    /// Only tenants in this state.
    status: Option<StatusDto>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Every tenant, by id (admin).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(TenantsQuery),
    responses((status = 200, body = Page<TenantDto>), Errors))]
async fn list_tenants(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<TenantsQuery>, QueryRejection>,
) -> Res<Json<Page<TenantDto>>> {
    p.require_admin("listing tenants")?;
    let q = query(q)?;
    let limit = paging::limit(q.limit)?;
    let after: Option<String> = paging::decode(q.cursor.as_deref())?;
    let bindings = s.store.namespace_bindings().await?;
    let mut tenants = s.store.tenants().await?;
    if let Some(status) = q.status {
        let status: sparkcap_ledger::TenantStatus = status.into();
        tenants.retain(|t| t.status == status);
    }
    let (items, next_cursor) = paging::page(
        tenants,
        |t| after.as_deref().is_some_and(|a| t.id.as_str() <= a),
        limit,
        |t| t.id.to_string(),
    );
    let items = items
        .iter()
        .map(|t| {
            let ns = bindings
                .iter()
                .filter(|b| b.tenant == t.id)
                .map(|b| b.namespace.clone())
                .collect();
            TenantDto::new(t, ns)
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

/// Creates a tenant and binds its namespaces, all or nothing (admin).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = NewTenantBody,
    responses((status = 201, body = TenantDto), Errors, Conflicts))]
async fn create_tenant(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewTenantBody>, JsonRejection>,
) -> Res<(StatusCode, Json<TenantDto>)> {
    p.require_admin("creating tenants")?;
    let b = json_body(body)?;
    let id = TenantId::new(b.id).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))?;
    let mut new = NewTenant::new(id, b.display_name);
    new.tier = b.tier.into();
    new.namespaces = b.namespaces;
    let mut namespaces = new.namespaces.clone();
    namespaces.sort();
    namespaces.dedup();
    let tenant = s.store.create_tenant(new, Utc::now()).await?;
    s.view.refresh(s.store.as_ref(), None).await;
    tracing::info!(tenant = %tenant.id, by = p.subject(), "tenant created");
    Ok((StatusCode::CREATED, Json(TenantDto::new(&tenant, namespaces))))
}

async fn tenant_dto(s: &ApiState, id: &TenantId) -> Res<TenantDto> {
    let tenant = s
        .store
        .tenant(id)
        .await?
        .ok_or_else(|| ApiError::from(sparkcap_ledger::LedgerError::UnknownTenant(id.clone())))?;
    let ns = s
        .store
        .namespace_bindings()
        .await?
        .into_iter()
        .filter(|b| &b.tenant == id)
        .map(|b| b.namespace)
        .collect();
    Ok(TenantDto::new(&tenant, ns))
}

/// One tenant with its namespaces.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantDto), Errors))]
async fn get_tenant(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<TenantDto>> {
    let id = tenant_path(path)?;
    p.may_read(&id)?;
    Ok(Json(tenant_dto(&s, &id).await?))
}

/// Suspends, reactivates, deletes, renames, re-tiers a tenant and binds or
/// unbinds namespaces, all or nothing (admin).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}", tag = "tenants", request_body = TenantPatchBody,
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantDto), Errors, Conflicts))]
async fn patch_tenant(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<TenantPatchBody>, JsonRejection>,
) -> Res<Json<TenantDto>> {
    let id = tenant_path(path)?;
    p.require_admin("changing tenants")?;
    let b = json_body(body)?;
    let patch = TenantPatch {
        display_name: b.display_name,
        status: b.status.map(Into::into),
        tier: b.tier.map(Into::into),
        bind_namespaces: b.bind_namespaces,
        unbind_namespaces: b.unbind_namespaces,
    };
    let rec = s.store.update_tenant(&id, &patch).await?;
    s.view.refresh(s.store.as_ref(), None).await;
    tracing::info!(tenant = %id, by = p.subject(), ?patch, "tenant changed");
    Ok(Json(TenantDto::new(&rec.tenant, rec.namespaces)))
}

/// Balance, consumption rate and depletion estimate (R9.4).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/balance", tag = "capacity",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = BalanceDto), Errors))]
async fn balance(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<BalanceDto>> {
    let id = tenant_path(path)?;
    p.may_read(&id)?;
    let now = Utc::now();
    let view = s.view.load();
    let fresh = view.ledger_age(now).is_some_and(|a| a <= view.settings.stale_after);
    if fresh && let Some(f) = view.ledger.tenants.get(&id) {
        return Ok(Json(BalanceDto::new(id.as_str(), &f.balance, f.dedicated_units(now))));
    }
    // The view is stale or does not have the tenant yet: ask the ledger.
    let b = s.store.balance(&id, now).await?;
    let units = dedicated_units(&s, &id, now).await?;
    Ok(Json(BalanceDto::new(id.as_str(), &b, units)))
}

/// Dedicated units `tenant` holds at `now`, from the ledger.
pub(super) async fn dedicated_units(s: &ApiState, tenant: &TenantId, now: DateTime<Utc>) -> Res<i64> {
    let purchases = s.store.purchases(tenant).await?;
    Ok(sparkcap_ledger::purchase::dedicated_units_at(&purchases, now))
}

/// Purchase list filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PurchasesQuery {
    /// Only this kind.
    kind: Option<Kind>,
    /// true: only purchases valid now; false: only those not valid now.
    active: Option<bool>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Purchases, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/purchases", tag = "capacity",
    params(("tenant" = String, Path, description = "Tenant id"), PurchasesQuery),
    responses((status = 200, body = Page<PurchaseDto>), Errors))]
async fn list_purchases(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PurchasesQuery>, QueryRejection>,
) -> Res<Json<Page<PurchaseDto>>> {
    let id = tenant_path(path)?;
    p.may_read(&id)?;
    let q = query(q)?;
    let limit = paging::limit(q.limit)?;
    let after: Option<i64> = paging::decode(q.cursor.as_deref())?;
    s.store
        .tenant(&id)
        .await?
        .ok_or_else(|| ApiError::from(sparkcap_ledger::LedgerError::UnknownTenant(id.clone())))?;
    let now = Utc::now();
    let mut all = s.store.purchases(&id).await?;
    all.retain(|p| {
        q.kind.is_none_or(|k| p.kind == PurchaseKind::from(k)) && q.active.is_none_or(|a| p.valid_at(now) == a)
    });
    all.sort_by_key(|p| std::cmp::Reverse(p.id));
    let (items, next_cursor) = paging::page(all, |x| after.is_some_and(|a| x.id >= a), limit, |x| x.id);
    Ok(Json(Page {
        items: items.iter().map(PurchaseDto::from).collect(),
        next_cursor,
    }))
}

/// Records a purchase (admin). The `Idempotency-Key` header is required: a
/// retry with the same key and body returns the original purchase (same
/// status and body, header `Idempotent-Replayed: true`); the same key with a
/// different body is refused with 409.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/purchases", tag = "capacity", request_body = PurchaseBody,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("Idempotency-Key" = String, Header, description = "Unique per purchase (1-200 characters), e.g. the billing system's order id")
    ),
    responses((status = 201, body = PurchaseDto), Errors, Conflicts))]
async fn create_purchase(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<PurchaseBody>, JsonRejection>,
) -> Res<Response> {
    let id = tenant_path(path)?;
    p.require_admin("recording purchases")?;
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::trim).unwrap_or(""))
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_idempotency_key",
                "header Idempotency-Key (1-200 visible ASCII characters) is required so that a retry cannot buy twice; \
                 use e.g. your billing system's order id",
            )
        })?
        .to_owned();
    let b = json_body(body)?;
    let request = PurchaseRequest {
        tenant: id.clone(),
        kind: b.kind.into(),
        quantity: b.quantity,
        period: b.period.into(),
        valid_from: b.valid_from,
        valid_until: b.valid_until,
        idempotency_key: key,
    };
    let receipt = s.store.record_purchase(&request, Utc::now()).await?;
    if !receipt.replayed {
        s.view.refresh(s.store.as_ref(), Some(&id)).await;
        tracing::info!(tenant = %id, purchase = receipt.purchase.id, by = p.subject(), "purchase recorded");
    }
    let mut r = (StatusCode::CREATED, Json(PurchaseDto::from(&receipt.purchase))).into_response();
    if receipt.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// Usage window.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// Start (RFC 3339); default: 24 h (hour) or 30 days (day) before `to`.
    from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive); default now.
    to: Option<DateTime<Utc>>,
    /// `hour` (default, at most 31 days) or `day` (at most 366 days).
    granularity: Option<GranularityDto>,
}

/// vCPU-hours by pool and bucket; opportunistic use shown apart.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/usage", tag = "history",
    params(("tenant" = String, Path, description = "Tenant id"), UsageQuery),
    responses((status = 200, body = UsageDto), Errors))]
async fn usage(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Res<Json<UsageDto>> {
    let id = tenant_path(path)?;
    p.may_read(&id)?;
    let q = query(q)?;
    let g = q.granularity.unwrap_or(GranularityDto::Hour);
    let (default_span, max_days, granularity) = match g {
        GranularityDto::Hour => (TimeDelta::hours(24), 31, Granularity::Hour),
        GranularityDto::Day => (TimeDelta::days(30), 366, Granularity::Day),
    };
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - default_span);
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("from {from} is not before to {to}"),
        ));
    }
    if to - from > TimeDelta::days(max_days) {
        return Err(ApiError::bad_request(
            "range_too_long",
            format!("a {g:?} usage window may span at most {max_days} days; narrow from/to or use granularity=day")
                .to_lowercase(),
        ));
    }
    let buckets = s.store.usage(&id, from, to, granularity).await?;
    let total = |f: fn(&sparkcap_ledger::UsageBucket) -> McSeconds| {
        CpuTime::from(buckets.iter().map(f).fold(McSeconds::ZERO, |a, b| a + b))
    };
    Ok(Json(UsageDto {
        tenant: id.to_string(),
        from,
        to,
        granularity: g,
        total_charged: total(|b| b.charged),
        total_opportunistic: total(|b| b.opportunistic),
        buckets: buckets.iter().map(UsageBucketDto::from).collect(),
    }))
}

/// Job list filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// Only jobs in this stage.
    stage: Option<Stage>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The tenant's jobs, by name, with their draft/production stage.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/jobs", tag = "history",
    params(("tenant" = String, Path, description = "Tenant id"), JobsQuery),
    responses((status = 200, body = Page<JobDto>), Errors))]
async fn jobs(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Res<Json<Page<JobDto>>> {
    let id = tenant_path(path)?;
    p.may_read(&id)?;
    let q = query(q)?;
    let limit = paging::limit(q.limit)?;
    let after: Option<String> = paging::decode(q.cursor.as_deref())?;
    let mut states: HashMap<String, JobState> = s
        .store
        .job_stats(Some(&id))
        .await?
        .into_iter()
        .map(|j| (j.job, j.state))
        .collect();
    let all: Vec<JobDto> = s
        .store
        .jobs(&id)
        .await?
        .into_iter()
        .map(|j| {
            let st = states.remove(&j.job).unwrap_or_default();
            JobDto {
                stage: match st.stage {
                    JobStage::Production => Stage::Production,
                    JobStage::Draft => Stage::Draft,
                },
                job: j.job,
                finished_runs: j.finished_runs,
                last_finished_at: j.last_finished_at,
                running_runs: j.running_runs,
                streak: st.streak,
                sla_seconds: st.sla_seconds,
                promoted_at: st.promoted_at,
            }
        })
        .filter(|j| q.stage.is_none_or(|s| s == j.stage))
        .collect();
    let (items, next_cursor) = paging::page(
        all,
        |j| after.as_deref().is_some_and(|a| j.job.as_str() <= a),
        limit,
        |j| j.job.clone(),
    );
    Ok(Json(Page { items, next_cursor }))
}

/// Run-history window and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Runs that started at or after this (RFC 3339); default 90 days ago.
    from: Option<DateTime<Utc>>,
    /// Runs that started before this (RFC 3339); default now.
    to: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Runs of one job, newest first: start, end, duration, vCPU-hours, pool, outcome (R11.1).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/jobs/{job}/runs", tag = "history",
    params(("tenant" = String, Path, description = "Tenant id"), ("job" = String, Path, description = "Job name"), RunsQuery),
    responses((status = 200, body = Page<RunDto>), Errors))]
async fn runs(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Res<Json<Page<RunDto>>> {
    let Path((tenant, job)) = path.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let id = TenantId::new(tenant).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))?;
    p.may_read(&id)?;
    let q = query(q)?;
    let limit = paging::limit(q.limit)?;
    let now = Utc::now();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - TimeDelta::days(HISTORY_DAYS));
    let after: Option<RunCursor> = paging::decode(q.cursor.as_deref())?;
    let query = RunQuery {
        job: Some(&job),
        from,
        to,
        after,
        limit: limit + 1,
    };
    let mut found = s.store.job_runs(&id, &query).await?;
    let more = found.len() as i64 > limit;
    found.truncate(limit as usize);
    let next_cursor = more.then(|| found.last()).flatten().map(|r| {
        paging::encode(&RunCursor {
            started_at: r.started_at,
            app_id: r.app_id.clone(),
        })
    });
    Ok(Json(Page {
        items: found.iter().map(|r| RunDto::new(r, now)).collect(),
        next_cursor,
    }))
}

/// The Spark Unit registry: per pool its size, units sold, free units, and
/// CPU in use, opportunistic apart (R1).
#[utoipa::path(get, path = "/api/v1/pools", tag = "capacity",
    responses((status = 200, body = PoolsDto), Errors))]
async fn pools(State(s): State<ApiState>) -> Res<Json<PoolsDto>> {
    let now = Utc::now();
    let registered = s.store.pools().await?;
    let open = s.store.open_pods().await?;
    let sold: i64 = s
        .view
        .load()
        .ledger
        .tenants
        .values()
        .map(|t| t.dedicated_units(now))
        .sum();
    let pools = [Pool::Dedicated, Pool::Shared, Pool::Draft]
        .into_iter()
        .map(|pool| {
            let cap = registered.iter().find(|c| c.pool == pool);
            let in_use = open
                .iter()
                .filter(|c| c.pod.pool == pool && !c.pod.opportunistic)
                .map(|c| c.pod.cpu.0)
                .sum();
            // Borrowed pods run on the dedicated pool's nodes.
            let borrowed = if pool == Pool::Dedicated {
                open.iter().filter(|c| c.pod.opportunistic).map(|c| c.pod.cpu.0).sum()
            } else {
                0
            };
            let units = cap.map_or(0, |c| c.spark_units);
            let allocated = if pool == Pool::Dedicated { sold } else { 0 };
            PoolInfo {
                pool: pool.into(),
                nodes: cap.map_or(0, |c| c.nodes),
                cpu_millicores: cap.map_or(0, |c| c.cpu.0),
                spark_units: units,
                allocated_units: allocated,
                free_units: (units - allocated).max(0),
                in_use_millicores: in_use,
                opportunistic_millicores: borrowed,
                updated_at: cap.map(|c| c.updated_at),
            }
        })
        .collect();
    Ok(Json(PoolsDto { pools }))
}
