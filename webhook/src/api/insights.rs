//! What the platform has learned about a tenant's jobs and usage: job
//! profiles with efficiency and recommendations (R5, R11), notices and where
//! they are sent, the resource estimator (R4) and usage forecasts (R12).

use super::ApiState;
use super::auth::Principal;
use super::dto::{Page, PoolDto};
use super::error::ApiError;
use super::paging;
use super::routes::{json_body, query, tenant_path};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sparkcap_ledger::estimate::{EstimateRequest, Prices, estimate};
use sparkcap_ledger::forecast::{Projection, fit, units_to_buy};
use sparkcap_ledger::lifecycle::{JobStage, Notice, RunProfile, recommend};
use sparkcap_ledger::store::NoticeQuery;
use sparkcap_ledger::{Granularity, RunOutcome, TenantId};
use utoipa::{IntoParams, ToSchema};

type Res<T> = Result<T, ApiError>;

/// Runs looked at for a job's profile.
const PROFILE_RUNS: i64 = 20;
/// Days of usage a forecast is fitted to.
const FORECAST_DAYS: i64 = 90;
/// Forecast horizons, days (R12.3).
const HORIZONS: [i64; 3] = [30, 60, 90];
/// Forecast demand above this share of capacity alerts (R12.4).
const ALERT_PCT: i64 = 80;

fn job_path(p: Result<Path<(String, String)>, PathRejection>) -> Res<(TenantId, String)> {
    let Path((tenant, job)) = p.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let id = TenantId::new(tenant).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))?;
    Ok((id, job))
}

/// One profiled run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunProfileDto {
    /// `spark-app-selector`.
    pub app_id: String,
    /// Pool of its driver.
    pub pool: PoolDto,
    /// Driver start.
    pub started_at: DateTime<Utc>,
    /// Driver end.
    pub finished_at: DateTime<Utc>,
    /// Run time, seconds.
    pub duration_seconds: i64,
    /// Cores requested by its pods, millicores.
    pub cores_millicores: i64,
    /// vCPU time of its pods, millicore-seconds.
    pub vcpu_millicore_seconds: i64,
    /// `succeeded`, `failed`, `preempted`, `deleted` or `unknown`.
    pub outcome: String,
    /// The SLA it was held to, seconds.
    pub sla_seconds: Option<i64>,
    /// Whether it succeeded within its SLA.
    pub within_sla: bool,
    /// Mean CPU measured (metrics.k8s.io), millicores.
    pub cpu_used_millicores: Option<i64>,
    /// Peak memory measured, bytes.
    pub memory_used_bytes: Option<i64>,
    /// Used CPU as a percentage of requested.
    pub efficiency_pct: Option<i64>,
    /// Data processed, bytes.
    pub data_bytes: Option<i64>,
}

impl From<&RunProfile> for RunProfileDto {
    fn from(r: &RunProfile) -> Self {
        Self {
            app_id: r.app_id.clone(),
            pool: r.pool.into(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_seconds: r.duration_seconds(),
            cores_millicores: r.cores.0,
            vcpu_millicore_seconds: r.vcpu.0,
            outcome: serde_json::to_value(r.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            sla_seconds: r.sla_seconds,
            within_sla: r.within_sla(),
            cpu_used_millicores: r.cpu_used.map(|c| c.0),
            memory_used_bytes: r.memory_used.map(|b| b.0),
            efficiency_pct: r.efficiency_pct(),
            data_bytes: r.data_bytes,
        }
    }
}

/// A job's lifecycle, its recent runs and what they suggest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobProfileDto {
    /// Job name.
    pub job: String,
    /// `draft` or `production`.
    pub stage: String,
    /// Finished runs.
    pub finished_runs: i64,
    /// Consecutive successful runs within SLA.
    pub streak: i64,
    /// Runs within SLA still needed for promotion (0 once promoted).
    pub runs_to_promotion: i64,
    /// The SLA, seconds.
    pub sla_seconds: Option<i64>,
    /// When it was promoted.
    pub promoted_at: Option<DateTime<Utc>>,
    /// Share of the recent runs that succeeded within SLA, percent (R11.4).
    pub sla_compliance_pct: Option<i64>,
    /// Median efficiency of recent measured runs, percent (R11.2).
    pub efficiency_pct: Option<i64>,
    /// Cores recommended for the next runs, millicores, when a change is advised.
    pub recommended_cores_millicores: Option<i64>,
    /// Why.
    pub recommendation: Option<String>,
    /// Recent runs, newest first.
    pub runs: Vec<RunProfileDto>,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// A job's stage, recent runs, SLA compliance, efficiency and recommendation.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/jobs/{job}/profile", tag = "jobs",
    params(("tenant" = String, Path, description = "Tenant id"), ("job" = String, Path, description = "Job name")),
    responses((status = 200, body = JobProfileDto), super::routes::Errors))]
pub(super) async fn job_profile(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Res<Json<JobProfileDto>> {
    let (tenant, job) = job_path(path)?;
    p.may_read(&tenant)?;
    let state = s
        .store
        .job_stats(Some(&tenant))
        .await?
        .into_iter()
        .find(|j| j.job == job)
        .map(|j| j.state)
        .ok_or_else(|| ApiError::not_found(format!("tenant {tenant} has no finished run of job {job}")))?;
    let runs = s.store.run_profiles(&tenant, Some(&job), PROFILE_RUNS).await?;
    let draft_runs = s.view.load().settings.draft_runs;
    let judged: Vec<&RunProfile> = runs
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                RunOutcome::Succeeded | RunOutcome::Failed | RunOutcome::Unknown
            )
        })
        .collect();
    // The rule the notices use, over the same runs: one number.
    let recommendation = recommend(&runs.iter().collect::<Vec<_>>());
    Ok(Json(JobProfileDto {
        job,
        stage: state.stage.as_str().to_owned(),
        finished_runs: state.runs,
        streak: state.streak,
        runs_to_promotion: match state.stage {
            JobStage::Production => 0,
            JobStage::Draft => (draft_runs - state.streak).max(0),
        },
        sla_seconds: state.sla_seconds,
        promoted_at: state.promoted_at,
        sla_compliance_pct: (!judged.is_empty())
            .then(|| judged.iter().filter(|r| r.within_sla()).count() as i64 * 100 / judged.len() as i64),
        efficiency_pct: median(runs.iter().filter_map(RunProfile::efficiency_pct).collect()),
        recommended_cores_millicores: recommendation.as_ref().map(|r| r.cores().0),
        recommendation: recommendation.map(|r| r.reason()),
        runs: runs.iter().map(RunProfileDto::from).collect(),
    }))
}

/// One notice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoticeDto {
    /// Id (increasing).
    pub id: i64,
    /// The job, when about one.
    pub job: Option<String>,
    /// `promoted`, `sla_exceeded`, `sla_alert`, `run_failed`, `low_efficiency`, `balance_low` or `schedule_refused`.
    pub kind: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What happened and what to do.
    pub message: String,
    /// Cores recommended, millicores.
    pub recommended_cores_millicores: Option<i64>,
    /// When it was delivered (Event, and the notification URL if set).
    pub delivered_at: Option<DateTime<Utc>>,
    /// Failed deliveries to the notification URL.
    pub delivery_attempts: i32,
    /// Why the last delivery failed.
    pub last_error: Option<String>,
}

impl From<&Notice> for NoticeDto {
    fn from(n: &Notice) -> Self {
        Self {
            id: n.id,
            job: n.job.clone(),
            kind: n.kind.as_str().to_owned(),
            at: n.at,
            message: n.message.clone(),
            recommended_cores_millicores: n.recommended_cores.map(|c| c.0),
            delivered_at: n.delivered_at,
            delivery_attempts: n.attempts,
            last_error: n.last_error.clone(),
        }
    }
}

/// Paging of notices.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct NoticesQuery {
    /// Opaque cursor from the previous page.
    cursor: Option<String>,
    /// Page size (1-500, default 100).
    limit: Option<i64>,
}

/// The tenant's notices, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/notices", tag = "jobs",
    params(("tenant" = String, Path, description = "Tenant id"), NoticesQuery),
    responses((status = 200, body = Page<NoticeDto>), super::routes::Errors))]
pub(super) async fn notices(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<NoticesQuery>, QueryRejection>,
) -> Res<Json<Page<NoticeDto>>> {
    let tenant = tenant_path(path)?;
    p.may_read(&tenant)?;
    let q = query(q)?;
    let limit = paging::limit(q.limit)?;
    let before: Option<i64> = paging::decode(q.cursor.as_deref())?;
    let mut found = s
        .store
        .notices(&NoticeQuery {
            tenant: Some(&tenant),
            undelivered: false,
            cursor: before,
            limit: limit + 1,
        })
        .await?;
    let more = found.len() as i64 > limit;
    found.truncate(limit as usize);
    Ok(Json(Page {
        next_cursor: more.then(|| found.last().map(|n| paging::encode(&n.id))).flatten(),
        items: found.iter().map(NoticeDto::from).collect(),
    }))
}

/// Where a tenant's notices are POSTed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsDto {
    /// An http(s) URL that receives each notice as JSON (with an
    /// `Idempotency-Key` header), or null for Events only.
    pub url: Option<String>,
}

/// Where the tenant's notices are sent.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/notifications", tag = "jobs",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = NotificationsDto), super::routes::Errors))]
pub(super) async fn get_notifications(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<NotificationsDto>> {
    let tenant = tenant_path(path)?;
    p.may_read(&tenant)?;
    if s.store.tenant(&tenant).await?.is_none() {
        return Err(sparkcap_ledger::LedgerError::UnknownTenant(tenant).into());
    }
    let url = s
        .store
        .notify_urls()
        .await?
        .into_iter()
        .find(|(t, _)| *t == tenant)
        .map(|(_, u)| u);
    Ok(Json(NotificationsDto { url }))
}

/// Sets (or clears, with null) the URL the tenant's notices are POSTed to.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/notifications", tag = "jobs",
    request_body = NotificationsDto,
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = NotificationsDto), super::routes::Errors))]
pub(super) async fn put_notifications(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<NotificationsDto>, JsonRejection>,
) -> Res<Json<NotificationsDto>> {
    let tenant = tenant_path(path)?;
    p.may_read(&tenant)?;
    let b = json_body(body)?;
    if let Some(url) = &b.url {
        s.egress
            .check_url(url)
            .map_err(|e| ApiError::bad_request("invalid_notify_url", e.to_string()))?;
    }
    s.store.set_notify_url(&tenant, b.url.as_deref()).await?;
    Ok(Json(b))
}

/// What to estimate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateBody {
    /// Data per run, GiB (1 to 1,000,000).
    pub volume_gib: i64,
    /// Source kind, e.g. `postgres`, `mysql`, `s3` (matches `sparkcap.io/source` of past runs).
    pub source: String,
    /// Target kind, e.g. `iceberg`, `delta` (matches `sparkcap.io/target`).
    pub target: String,
    /// Longest acceptable run, minutes (1 to 1440).
    pub sla_minutes: i64,
    /// Runs per month, for the cost comparison (default 30).
    #[serde(default)]
    pub runs_per_month: Option<i64>,
}

/// A recommendation with its interval and cost either way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EstimateDto {
    /// Cores (driver and executors) recommended, millicores.
    pub recommended_cores_millicores: i64,
    /// 80 % interval, low end, millicores.
    pub cores_low_millicores: i64,
    /// 80 % interval, high end, millicores.
    pub cores_high_millicores: i64,
    /// `history` (similar runs) or `default` (none yet: conservative).
    pub basis: String,
    /// Similar runs the estimate rests on.
    pub similar_runs: usize,
    /// Median throughput assumed, MiB per vCPU-second.
    pub mib_per_core_second: f64,
    /// Dedicated Spark Units that hold the recommendation.
    pub dedicated_units: i64,
    /// Their price per month, cents.
    pub dedicated_cents_per_month: i64,
    /// vCPU-hours a month at the recommendation.
    pub vcpu_hours_per_month: i64,
    /// Their price per month, cents.
    pub vcpu_hours_cents_per_month: i64,
    /// `dedicated_units` or `vcpu_hours`: the cheaper for this frequency.
    pub cheaper: String,
}

/// Recommends cores for a job from similar jobs' runs, with an interval and
/// the cost as dedicated units or vCPU-hours (R4). Estimates improve as runs
/// with `sparkcap.io/data-volume` arrive.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/estimate", tag = "capacity",
    request_body = EstimateBody,
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = EstimateDto), super::routes::Errors))]
pub(super) async fn estimate_route(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<EstimateBody>, JsonRejection>,
) -> Res<Json<EstimateDto>> {
    let tenant = tenant_path(path)?;
    p.may_read(&tenant)?;
    let b = json_body(body)?;
    let bad = |m: String| ApiError::bad_request("invalid_request", m);
    if !(1..=1_000_000).contains(&b.volume_gib) {
        return Err(bad(format!("volume_gib {} must be 1 to 1000000", b.volume_gib)));
    }
    if !(1..=1440).contains(&b.sla_minutes) {
        return Err(bad(format!("sla_minutes {} must be 1 to 1440", b.sla_minutes)));
    }
    let runs_per_month = b.runs_per_month.unwrap_or(30);
    if !(1..=44_640).contains(&runs_per_month) {
        return Err(bad(format!(
            "runs_per_month {runs_per_month} must be 1 to 44640 (one a minute)"
        )));
    }
    let kind = |k: &str, what: &str| -> Res<String> {
        let k = k.trim().to_lowercase();
        if k.is_empty() || k.len() > 63 || !k.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
            return Err(bad(format!(
                "{what} {k:?} must be 1-63 letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(k)
    };
    let (source, target) = (kind(&b.source, "source")?, kind(&b.target, "target")?);
    if s.store.tenant(&tenant).await?.is_none() {
        return Err(sparkcap_ledger::LedgerError::UnknownTenant(tenant).into());
    }
    let history = s.store.similar_runs(Some(&source), Some(&target), 200).await?;
    // The tenant's own jobs say most about its data; others' fill in.
    let own: Vec<RunProfile> = history.iter().filter(|r| r.tenant == tenant).cloned().collect();
    let used = if own.len() >= sparkcap_ledger::estimate::MIN_HISTORY {
        own
    } else {
        history
    };
    let req = EstimateRequest {
        data_bytes: b.volume_gib << 30,
        sla_seconds: b.sla_minutes * 60,
        runs_per_month,
    };
    let e = estimate(&req, &used, s.prices);
    Ok(Json(EstimateDto {
        recommended_cores_millicores: e.cores,
        cores_low_millicores: e.cores_low,
        cores_high_millicores: e.cores_high,
        basis: e.basis.to_owned(),
        similar_runs: e.runs_used,
        mib_per_core_second: e.bytes_per_core_second as f64 / (1 << 20) as f64,
        dedicated_units: e.dedicated_units,
        dedicated_cents_per_month: e.dedicated_cents_per_month,
        vcpu_hours_per_month: e.vcpu_hours_per_month,
        vcpu_hours_cents_per_month: e.vcpu_hours_cents_per_month,
        cheaper: e.cheaper.to_owned(),
    }))
}

/// A forecast point: mean cores in use over a day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectionDto {
    /// Days from today.
    pub days_ahead: i64,
    /// Expected mean cores in use that day, millicores.
    pub expected_millicores: i64,
    /// 90 % prediction interval, low end.
    pub low_millicores: i64,
    /// High end.
    pub high_millicores: i64,
}

impl From<Projection> for ProjectionDto {
    fn from(p: Projection) -> Self {
        Self {
            days_ahead: p.days_ahead,
            expected_millicores: p.expected,
            low_millicores: p.low,
            high_millicores: p.high,
        }
    }
}

/// A usage trend and where it leads (R12).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForecastDto {
    /// Whose (absent: the whole platform).
    pub tenant: Option<String>,
    /// Days of history fitted.
    pub history_days: i64,
    /// Mean cores in use per day over those days, oldest first, millicores.
    pub daily_millicores: Vec<i64>,
    /// Trend, millicores per day per day (growth).
    pub trend_millicores_per_day: f64,
    /// Projections 30, 60 and 90 days ahead (empty with under 2 days of history).
    pub projections: Vec<ProjectionDto>,
    /// Capacity compared against, millicores (the tenant's dedicated units, or every pool).
    pub capacity_millicores: i64,
    /// A projection's expected demand exceeds 80 % of the capacity.
    pub alert: bool,
    /// Spark Units to buy so the 90-day upper bound stays within 80 %.
    pub recommended_units: i64,
    /// For people.
    pub message: String,
}

fn forecast_of(tenant: Option<&TenantId>, daily: Vec<i64>, capacity: i64, unit_cpu: i64) -> ForecastDto {
    let trend = fit(&daily);
    let projections: Vec<Projection> = trend
        .map(|t| HORIZONS.iter().map(|d| t.project(*d)).collect())
        .unwrap_or_default();
    let alert = capacity > 0 && projections.iter().any(|p| p.expected * 100 > capacity * ALERT_PCT);
    let worst = projections.iter().map(|p| p.high).max().unwrap_or(0);
    let recommended_units = units_to_buy(worst, capacity, unit_cpu, ALERT_PCT);
    let who = tenant.map_or("the platform".to_owned(), |t| format!("tenant {t}"));
    let message = match projections.last() {
        None => format!("{who} has under 2 days of usage: no trend yet"),
        Some(p) if alert || recommended_units > 0 => format!(
            "{who} is forecast to use {:.1} cores on average in 90 days (90 % interval {:.1}–{:.1}) against {:.1} cores; buy {recommended_units} Spark Units to stay under {ALERT_PCT} %",
            p.expected as f64 / 1000.0,
            p.low as f64 / 1000.0,
            p.high as f64 / 1000.0,
            capacity as f64 / 1000.0
        ),
        Some(p) => format!(
            "{who} is forecast to use {:.1} cores on average in 90 days (90 % interval {:.1}–{:.1}), within {ALERT_PCT} % of its {:.1} cores",
            p.expected as f64 / 1000.0,
            p.low as f64 / 1000.0,
            p.high as f64 / 1000.0,
            capacity as f64 / 1000.0
        ),
    };
    ForecastDto {
        tenant: tenant.map(ToString::to_string),
        history_days: daily.len() as i64,
        trend_millicores_per_day: trend.map_or(0.0, |t| t.slope),
        daily_millicores: daily,
        projections: projections.into_iter().map(Into::into).collect(),
        capacity_millicores: capacity,
        alert,
        recommended_units,
        message,
    }
}

/// Mean millicores in use per day over the last [`FORECAST_DAYS`] whole days,
/// from the tenant's first day of use.
async fn daily_use(s: &ApiState, tenant: &TenantId, today: DateTime<Utc>) -> Res<Vec<i64>> {
    let from = today - TimeDelta::days(FORECAST_DAYS);
    let buckets = s.store.usage(tenant, from, today, Granularity::Day).await?;
    let mut days = vec![0_i64; FORECAST_DAYS as usize];
    for b in &buckets {
        let i = (b.start - from).num_days();
        if (0..FORECAST_DAYS).contains(&i) {
            days[i as usize] += (b.charged.0 + b.opportunistic.0) / 86_400;
        }
    }
    let first = days.iter().position(|d| *d > 0).unwrap_or(days.len());
    Ok(days.split_off(first))
}

fn today() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::days(1)).unwrap_or(now)
}

/// The tenant's daily usage trend and 30/60/90-day forecast against its
/// dedicated units, with a purchase recommendation (R12).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/forecast", tag = "capacity",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = ForecastDto), super::routes::Errors))]
pub(super) async fn tenant_forecast(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<ForecastDto>> {
    let tenant = tenant_path(path)?;
    p.may_read(&tenant)?;
    let today = today();
    let daily = daily_use(&s, &tenant, today).await?;
    let units = super::routes::dedicated_units(&s, &tenant, Utc::now()).await?;
    let unit = s.slices.unit_cpu;
    Ok(Json(forecast_of(Some(&tenant), daily, units * unit, unit)))
}

/// The platform's daily usage trend and 30/60/90-day forecast against every
/// pool's Spark Units; `alert` when demand is forecast above 80 % (R12.3–R12.5).
#[utoipa::path(get, path = "/api/v1/forecast", tag = "capacity",
    responses((status = 200, body = ForecastDto), super::routes::Errors))]
pub(super) async fn platform_forecast(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
) -> Res<Json<ForecastDto>> {
    p.require_admin("the platform forecast")?;
    let today = today();
    let mut total = vec![0_i64; FORECAST_DAYS as usize];
    for t in s.store.tenants().await? {
        let d = daily_use(&s, &t.id, today).await?;
        let offset = total.len() - d.len();
        for (i, v) in d.into_iter().enumerate() {
            total[offset + i] += v;
        }
    }
    let first = total.iter().position(|d| *d > 0).unwrap_or(total.len());
    let capacity: i64 = s.store.pools().await?.iter().map(|c| c.cpu.0).sum();
    let out = forecast_of(None, total.split_off(first), capacity, s.slices.unit_cpu);
    if out.alert {
        tracing::warn!(message = %out.message, "capacity forecast above 80 %");
    }
    Ok(Json(out))
}

/// Default prices: a dedicated unit $100 a month, a vCPU-hour 6 cents.
pub fn default_prices(unit_cpu: i64) -> Prices {
    Prices {
        unit_month_cents: 10_000,
        vcpu_hour_cents: 6,
        unit_cpu,
    }
}
