//! Job schedules planned in time slices (R7): reserve, replace, remove, list,
//! and find free daily windows. A schedule a tenant asks for is reserved only
//! if every 15-minute slice it needs over the next 30 days has room in its
//! pool and within the tenant's cap; otherwise 409 with the first full slice
//! and the nearest shifts that fit.

use super::ApiState;
use super::auth::Principal;
use super::dto::PoolDto;
use super::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sparkcap_ledger::schedule::parse_go_duration;
use sparkcap_ledger::slices::{Decision, Horizon, JobSchedule, Offset, StoredSchedule, fits, reserved, shifted_text};
use sparkcap_ledger::{Pool, TenantId};
use utoipa::{IntoParams, ToSchema};

type Res<T> = Result<T, ApiError>;

/// A schedule to reserve.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Five cron fields (day of week 0-7, 0 and 7 Sunday), `@hourly`-style, or `@every 2h`.
    pub schedule: String,
    /// `UTC` (default) or a fixed offset such as `+02:00`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Expected run time, e.g. `45m`, `1h30m` (at most 24h).
    pub duration: String,
    /// Driver + executors, in millicores (e.g. 1 driver core + 4 × 2 executor cores = 9000).
    pub cores_millicores: i64,
    /// Pool; by default dedicated when the tenant holds dedicated units, else shared.
    #[serde(default)]
    pub pool: Option<PoolDto>,
    /// Decide only; reserve nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A reserved schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleDto {
    /// Owner.
    pub tenant: String,
    /// Job name.
    pub job: String,
    /// Pool.
    pub pool: PoolDto,
    /// Schedule text.
    pub schedule: String,
    /// Clock of the cron fields, minutes east of UTC.
    pub utc_offset_minutes: i32,
    /// Expected run time, seconds.
    pub duration_seconds: i64,
    /// Driver + executors, millicores.
    pub cores_millicores: i64,
    /// Who asked (`api`, or the ScheduledSparkApplication).
    pub source: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The least room left in any slice it uses, millicores (on reservation only).
    pub headroom_millicores: Option<i64>,
    /// Whether this was a dry run (nothing reserved).
    pub dry_run: bool,
}

impl ScheduleDto {
    fn new(s: &StoredSchedule, headroom: Option<i64>, dry_run: bool) -> Self {
        Self {
            tenant: s.tenant.to_string(),
            job: s.job.clone(),
            pool: s.pool.into(),
            schedule: s.spec.schedule.clone(),
            utc_offset_minutes: s.spec.offset.0,
            duration_seconds: s.spec.duration.num_seconds(),
            cores_millicores: s.spec.cores,
            source: s.source.clone(),
            updated_at: s.updated_at,
            headroom_millicores: headroom,
            dry_run,
        }
    }
}

fn ids(p: Result<Path<(String, String)>, PathRejection>) -> Res<(TenantId, String)> {
    let Path((tenant, job)) = p.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let id = TenantId::new(tenant).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))?;
    if job.is_empty() || job.len() > 63 || !job.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ApiError::bad_request(
            "invalid_job",
            format!("job name {job:?} must be 1-63 letters, digits, '-', '_' or '.' (a label value)"),
        ));
    }
    Ok((id, job))
}

fn cores(n: i64) -> String {
    format!("{}.{:03}", n / 1000, (n % 1000).abs())
}

/// Reserves (or replaces) a job's schedule in its pool's time slices.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/jobs/{job}/schedule", tag = "schedules",
    request_body = ScheduleBody,
    params(("tenant" = String, Path, description = "Tenant id"), ("job" = String, Path, description = "Job name")),
    responses((status = 200, body = ScheduleDto), super::routes::Errors, super::routes::Conflicts))]
pub(super) async fn put_schedule(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<ScheduleBody>, JsonRejection>,
) -> Res<Json<ScheduleDto>> {
    let (tenant, job) = ids(path)?;
    p.may_read(&tenant)?;
    let b = super::routes::json_body(body)?;
    let bad = |code, m: String| ApiError::bad_request(code, m);
    let offset: Offset = b
        .time_zone
        .as_deref()
        .unwrap_or("UTC")
        .parse()
        .map_err(|e: sparkcap_ledger::slices::SliceError| bad("invalid_time_zone", e.to_string()))?;
    let duration = parse_go_duration(b.duration.trim()).map_err(|e| bad("invalid_duration", e))?;
    let now = Utc::now();
    let pool = match b.pool {
        Some(p) => p.into(),
        None => Pool::production(super::routes::dedicated_units(&s, &tenant, now).await?),
    };
    let stored = StoredSchedule {
        tenant: tenant.clone(),
        job,
        pool,
        spec: JobSchedule {
            schedule: b.schedule,
            offset,
            duration,
            cores: b.cores_millicores,
        },
        source: "api".into(),
        updated_at: now,
    };
    reserve(&s, stored, now, b.dry_run).await
}

/// Changes some fields of a job's schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    /// New cron, descriptor or `@every`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// New clock: `UTC` or `+02:00`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// New expected run time.
    #[serde(default)]
    pub duration: Option<String>,
    /// New size, millicores.
    #[serde(default)]
    pub cores_millicores: Option<i64>,
    /// New pool.
    #[serde(default)]
    pub pool: Option<PoolDto>,
    /// Decide only.
    #[serde(default)]
    pub dry_run: bool,
}

/// Changes a reserved schedule: the new shape is decided against everything
/// else; if it does not fit, 409 with alternatives and the old one stays.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/jobs/{job}/schedule", tag = "schedules",
    request_body = SchedulePatch,
    params(("tenant" = String, Path, description = "Tenant id"), ("job" = String, Path, description = "Job name")),
    responses((status = 200, body = ScheduleDto), super::routes::Errors, super::routes::Conflicts))]
pub(super) async fn patch_schedule(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<SchedulePatch>, JsonRejection>,
) -> Res<Json<ScheduleDto>> {
    let (tenant, job) = ids(path)?;
    p.may_read(&tenant)?;
    let b = super::routes::json_body(body)?;
    let Some(mut stored) = s
        .store
        .schedules(Some(&tenant))
        .await?
        .into_iter()
        .find(|x| x.job == job)
    else {
        return Err(ApiError::not_found(format!(
            "tenant {tenant} has no schedule for job {job}; create one with POST"
        )));
    };
    if stored.source != "api" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_elsewhere",
            format!(
                "job {job}'s schedule comes from {}; change that object instead (kubectl edit)",
                stored.source
            ),
        ));
    }
    let bad = |code, m: String| ApiError::bad_request(code, m);
    if let Some(t) = b.schedule {
        stored.spec.schedule = t;
    }
    if let Some(z) = b.time_zone.as_deref() {
        stored.spec.offset = z
            .parse()
            .map_err(|e: sparkcap_ledger::slices::SliceError| bad("invalid_time_zone", e.to_string()))?;
    }
    if let Some(d) = b.duration.as_deref() {
        stored.spec.duration = parse_go_duration(d.trim()).map_err(|e| bad("invalid_duration", e))?;
    }
    if let Some(c) = b.cores_millicores {
        stored.spec.cores = c;
    }
    if let Some(p) = b.pool {
        stored.pool = p.into();
    }
    let now = Utc::now();
    stored.updated_at = now;
    reserve(&s, stored, now, b.dry_run).await
}

/// Reserves `stored` (replacing the job's schedule) or explains why not.
async fn reserve(s: &ApiState, stored: StoredSchedule, now: DateTime<Utc>, dry_run: bool) -> Res<Json<ScheduleDto>> {
    match s.store.put_schedule(None, &stored, &s.slices, now, dry_run).await? {
        Decision::Accepted { headroom } => Ok(Json(ScheduleDto::new(&stored, Some(headroom), dry_run))),
        Decision::Refused {
            shortfall,
            alternatives,
        } => {
            let details = alternatives
                .iter()
                .map(|a| {
                    let m = a.shift.num_minutes();
                    format!(
                        "shift {}{}m{}: {} cores free at the tightest slice",
                        if m > 0 { "+" } else { "" },
                        m,
                        a.schedule
                            .as_deref()
                            .map(|t| format!(" → schedule \"{t}\""))
                            .unwrap_or_default(),
                        cores(a.headroom)
                    )
                })
                .collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_capacity",
                format!(
                    "schedule {:?} does not fit in the {} pool: at {} it needs {} cores but only {} are free ({} limit); {}",
                    stored.spec.schedule,
                    stored.pool,
                    shortfall.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    cores(shortfall.needed),
                    cores(shortfall.free),
                    shortfall.limit,
                    if alternatives.is_empty() {
                        "no start within a day of it fits; try fewer cores or a shorter run, or buy capacity".to_owned()
                    } else {
                        format!("{} alternatives that fit are in details", alternatives.len())
                    }
                ),
            )
            .with_details(details))
        }
    }
}

/// Removes a job's schedule and its reservations.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/jobs/{job}/schedule", tag = "schedules",
    params(("tenant" = String, Path, description = "Tenant id"), ("job" = String, Path, description = "Job name")),
    responses((status = 204, description = "Removed"), super::routes::Errors))]
pub(super) async fn delete_schedule(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Res<StatusCode> {
    let (tenant, job) = ids(path)?;
    p.may_read(&tenant)?;
    if s.store.delete_schedule(None, &tenant, &job).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "tenant {tenant} has no schedule for job {job}"
        )))
    }
}

/// The tenant's reserved schedules.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/schedules", tag = "schedules",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = Vec<ScheduleDto>), super::routes::Errors))]
pub(super) async fn list_schedules(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Res<Json<Vec<ScheduleDto>>> {
    let tenant = super::routes::tenant_path(path)?;
    p.may_read(&tenant)?;
    let all = s.store.schedules(Some(&tenant)).await?;
    Ok(Json(all.iter().map(|x| ScheduleDto::new(x, None, false)).collect()))
}

/// What daily window to look for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SlotsQuery {
    /// Pool (default shared).
    pool: Option<PoolDto>,
    /// Driver + executors, millicores.
    cores_millicores: i64,
    /// Run time, e.g. `45m`.
    duration: String,
    /// At most this many windows (1-96, default 20).
    limit: Option<i64>,
}

/// A daily start time at which a run would fit every day of the horizon.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SlotDto {
    /// Cron for a daily run at this time (UTC).
    pub schedule: String,
    /// The least room left in any slice it would use, millicores.
    pub headroom_millicores: i64,
}

/// Daily start times (UTC, on slice boundaries) at which a run of this size
/// fits every day of the next 30, roomiest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/slots", tag = "schedules",
    params(("tenant" = String, Path, description = "Tenant id"), SlotsQuery),
    responses((status = 200, body = Vec<SlotDto>), super::routes::Errors))]
pub(super) async fn slots(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<SlotsQuery>, QueryRejection>,
) -> Res<Json<Vec<SlotDto>>> {
    let tenant = super::routes::tenant_path(path)?;
    p.may_read(&tenant)?;
    let q = super::routes::query(q)?;
    let duration = parse_go_duration(q.duration.trim()).map_err(|e| ApiError::bad_request("invalid_duration", e))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=96).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit {limit} is out of range; use 1 to 96"),
        ));
    }
    let pool: Pool = q.pool.map_or(Pool::Shared, Into::into);
    let now = Utc::now();
    let h = Horizon::new(now, s.slices.slice, s.slices.horizon_days)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let pool_cpu = s
        .store
        .pools()
        .await?
        .iter()
        .find(|c| c.pool == pool)
        .map_or(0, |c| c.cpu.0);
    let units = super::routes::dedicated_units(&s, &tenant, now).await?;
    let limits = s.slices.limits(pool, pool_cpu, units);
    let (total, mine) = reserved(&h, pool, &tenant, &s.store.schedules(None).await?);
    let mut out = Vec::new();
    for i in 0..h.per_day() {
        let start = h.slice_start(i);
        let midnight = start.duration_trunc(TimeDelta::days(1)).unwrap_or(start);
        let text = shifted_text("0 0 * * *", start - midnight).unwrap_or_default();
        let spec = JobSchedule {
            schedule: text.clone(),
            offset: Offset(0),
            duration,
            cores: q.cores_millicores,
        };
        let planned = spec
            .plan()
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
        if let Ok(headroom) = fits(&h, &planned.demand(&h, TimeDelta::zero()), &total, &mine, limits) {
            out.push(SlotDto {
                schedule: text,
                headroom_millicores: headroom,
            });
        }
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.headroom_millicores));
    out.truncate(limit as usize);
    Ok(Json(out))
}
