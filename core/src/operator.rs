//! Spark Operator objects (`sparkoperator.k8s.io/v1beta2` SparkApplication and
//! ScheduledSparkApplication): refused at CREATE/UPDATE when they could never
//! run, before any pod exists.

use crate::admit::{Owner, capacity_denial, choose_pool, entitlement_denial, owner};
use crate::review::{Decision, Operation, Request};
use crate::spark::{OPERATOR_SCHEDULED_LABEL, label, quantity_text};
use crate::view::TenantView;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sparkcap_ledger::quantity::parse_cpu;
use sparkcap_ledger::schedule::Schedule;

/// The Spark Operator's API group.
pub const GROUP: &str = "sparkoperator.k8s.io";

/// A SparkApplication spec's gang: the driver and the executors it starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gang {
    /// Driver cpu, millicores.
    pub driver_mc: i64,
    /// Executors requested up front.
    pub executors: i64,
    /// Cpu per executor, millicores.
    pub executor_mc: i64,
}

impl Gang {
    /// Total millicores.
    pub fn total(&self) -> i64 {
        self.driver_mc
            .saturating_add(self.executors.saturating_mul(self.executor_mc))
    }
}

/// Reads the gang from a SparkApplication spec; errors name the field to set.
pub fn gang(spec: &Value, at: &str) -> Result<Gang, String> {
    let cpu = |role: &str| -> Result<Option<i64>, String> {
        let r = spec.get(role);
        if let Some(q) = r.and_then(|r| r.get("coreRequest")) {
            let text =
                quantity_text(q).ok_or_else(|| format!("{at}.{role}.coreRequest must be a quantity such as 500m"))?;
            return parse_cpu(&text)
                .map(|m| Some(m.0))
                .map_err(|e| format!("{at}.{role}.coreRequest: {e}"));
        }
        match r.and_then(|r| r.get("cores")) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|c| (1..=10_000).contains(c))
                .map(|c| Some(c * 1000))
                .ok_or_else(|| {
                    format!("{at}.{role}.cores must be a whole number of cores between 1 and 10000, got {v}")
                }),
        }
    };
    let driver_mc = cpu("driver")?.ok_or_else(|| {
        format!("{at}.driver.cores is missing; sparkcap places and charges by requested cpu, so set {at}.driver.cores (or coreRequest)")
    })?;
    let dynamic = spec.pointer("/dynamicAllocation/enabled").and_then(Value::as_bool) == Some(true);
    let count = |v: Option<&Value>, field: &str| -> Result<Option<i64>, String> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (0..=100_000).contains(n))
                .map(Some)
                .ok_or_else(|| format!("{at}.{field} must be a whole number between 0 and 100000, got {v}")),
        }
    };
    let executors = if dynamic {
        let min = count(
            spec.pointer("/dynamicAllocation/minExecutors"),
            "dynamicAllocation.minExecutors",
        )?;
        let initial = count(
            spec.pointer("/dynamicAllocation/initialExecutors"),
            "dynamicAllocation.initialExecutors",
        )?;
        initial.or(min).unwrap_or(0)
    } else {
        count(spec.pointer("/executor/instances"), "executor.instances")?.unwrap_or(1)
    };
    let executor_mc = match cpu("executor")? {
        Some(mc) => mc,
        None if executors == 0 => 0,
        None => {
            return Err(format!(
                "{at}.executor.cores is missing; sparkcap places and charges by requested cpu, so set {at}.executor.cores (or coreRequest)"
            ));
        }
    };
    Ok(Gang {
        driver_mc,
        executors,
        executor_mc,
    })
}

/// Validates a SparkApplication or ScheduledSparkApplication.
pub fn validate(req: &Request, view: &TenantView, now: DateTime<Utc>) -> Decision {
    let Some(obj) = req.object.as_ref() else {
        return Decision::deny(400, "BadRequest", "review carries no object");
    };
    let kind = req.resource.resource.as_str();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| obj.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("");
    let facts = match owner(namespace, view, now) {
        Owner::NotTenant => return Decision::allow(),
        Owner::Refuse(d) => return d,
        Owner::Tenant(f) => f,
    };
    let scheduled = kind == "scheduledsparkapplications";
    let (spec, at) = if scheduled {
        (obj.pointer("/spec/template"), "spec.template")
    } else {
        (obj.get("spec"), "spec")
    };
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        return Decision::deny(
            422,
            "Invalid",
            format!("{kind} {name} has no {at}; it cannot start any Spark pod"),
        );
    };
    if scheduled {
        let Some(text) = obj.pointer("/spec/schedule").and_then(Value::as_str) else {
            return Decision::deny(
                422,
                "Invalid",
                format!("ScheduledSparkApplication {name} has no spec.schedule"),
            );
        };
        if let Err(e) = text.parse::<Schedule>() {
            return Decision::deny(
                422,
                "Invalid",
                format!("ScheduledSparkApplication {name}: spec.schedule: {e}"),
            );
        }
    }
    let gang = match gang(spec, at) {
        Ok(g) => g,
        Err(e) => return Decision::deny(422, "Invalid", format!("{kind} {name}: {e}")),
    };
    let job = label(obj, OPERATOR_SCHEDULED_LABEL).unwrap_or(name);
    let pool = choose_pool(facts, Some(job), view, now);
    // New submissions are refused for money; edits of existing ones and
    // schedules (which run later, perhaps after the next purchase) are not.
    if req.operation == Operation::Create
        && !scheduled
        && let Some(d) = capacity_denial(facts, pool, now)
    {
        return d;
    }
    let what = format!(
        "{kind} {name} (driver {} + {} executors × {} cores)",
        crate::spark::cores(gang.driver_mc),
        gang.executors,
        crate::spark::cores(gang.executor_mc)
    );
    if let Some(d) = entitlement_denial(facts, pool, gang.total(), &what, view, now) {
        return d;
    }
    // Reservations are planned where the job runs once out of draft: its
    // first (profiling) runs are ad hoc, later ones recur for months.
    let planned_pool = sparkcap_ledger::Pool::production(facts.dedicated_units(now));
    if scheduled && let Some(d) = slice_denial(obj, name, facts, planned_pool, view, now) {
        return d;
    }
    Decision::allow()
}

/// Annotation giving a ScheduledSparkApplication's expected run time (`45m`, `1h30m`).
pub const EXPECTED_DURATION: &str = "sparkcap.io/expected-duration";
/// Annotation giving the clock of its cron fields (`UTC`, `+02:00`).
pub const TIME_ZONE: &str = "sparkcap.io/time-zone";
/// Run time assumed when the annotation is absent.
pub const DEFAULT_DURATION: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The schedule a ScheduledSparkApplication asks to reserve: its cron, clock
/// and expected run time (annotations), and its gang's cores. The webhook
/// checks it; the scheduler's controller stores it. Errors name the field.
pub fn planned_schedule(
    obj: &Value,
    tenant: &sparkcap_ledger::TenantId,
    pool: sparkcap_ledger::Pool,
    now: DateTime<Utc>,
) -> Result<sparkcap_ledger::slices::StoredSchedule, String> {
    use sparkcap_ledger::slices::{JobSchedule, Offset, StoredSchedule};
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let namespace = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let annotation = |k: &str| {
        obj.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
    };
    let duration = match annotation(EXPECTED_DURATION) {
        None => DEFAULT_DURATION,
        Some(t) => sparkcap_ledger::schedule::parse_go_duration(t.trim())
            .map_err(|e| format!("annotation {EXPECTED_DURATION}: {e}"))?,
    };
    let offset: Offset = annotation(TIME_ZONE)
        .unwrap_or("UTC")
        .parse()
        .map_err(|e| format!("annotation {TIME_ZONE}: {e}"))?;
    let spec = obj
        .pointer("/spec/template")
        .filter(|s| s.is_object())
        .ok_or("it has no spec.template; it cannot start any Spark pod")?;
    let cores = gang(spec, "spec.template")?.total();
    Ok(StoredSchedule {
        tenant: tenant.clone(),
        job: label(obj, OPERATOR_SCHEDULED_LABEL).unwrap_or(name).to_owned(),
        pool,
        spec: JobSchedule {
            schedule: obj
                .pointer("/spec/schedule")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            offset,
            duration,
            cores,
        },
        source: format!("{SSA_SOURCE}{namespace}/{name}"),
        updated_at: now,
    })
}

/// `source` of schedules that come from ScheduledSparkApplications.
pub const SSA_SOURCE: &str = "scheduledsparkapplication/";

/// Why a schedule does not fit, and what would (R7.4): one sentence a
/// person can act on, for the webhook's refusal and the controller's Event.
pub fn refusal_text(
    what: &str,
    planned: &sparkcap_ledger::slices::StoredSchedule,
    shortfall: &sparkcap_ledger::slices::Shortfall,
    alternatives: &[sparkcap_ledger::slices::Alternative],
) -> String {
    let alts: Vec<String> = alternatives
        .iter()
        .map(|a| match &a.schedule {
            Some(t) => format!("schedule \"{t}\" ({} cores spare)", crate::spark::cores(a.headroom)),
            None => format!(
                "runs {:+} min later ({} cores spare)",
                a.shift.num_minutes(),
                crate::spark::cores(a.headroom)
            ),
        })
        .collect();
    format!(
        "{what} does not fit in the {} pool's time slices: at {} its runs of {} min need {} cores but only {} are free (limited by {}); {}",
        planned.pool,
        shortfall.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        planned.spec.duration.num_minutes(),
        crate::spark::cores(shortfall.needed),
        crate::spark::cores(shortfall.free),
        if shortfall.limit == "pool" {
            "the pool's reservable room".to_owned()
        } else {
            format!("tenant {}'s cap", planned.tenant)
        },
        if alts.is_empty() {
            "no start within a day of it fits: use fewer executors, a shorter run or buy more capacity".to_owned()
        } else {
            format!("these would fit: {}", alts.join("; "))
        }
    )
}

/// Refuses a ScheduledSparkApplication whose runs do not fit its pool's time
/// slices over the next 30 days (R7.3), with the nearest shifts that would
/// (R7.4). Read-only: the scheduler's controller reserves once the object
/// exists; this check sees the reservations in the tenant view.
fn slice_denial(
    obj: &Value,
    name: &str,
    facts: &crate::view::TenantFacts,
    pool: sparkcap_ledger::Pool,
    view: &TenantView,
    now: DateTime<Utc>,
) -> Option<Decision> {
    use sparkcap_ledger::slices::{self, Horizon, StoredSchedule};
    let invalid = |m: String| {
        Some(Decision::deny(
            422,
            "Invalid",
            format!("ScheduledSparkApplication {name}: {m}"),
        ))
    };
    let new = match planned_schedule(obj, &facts.tenant.id, pool, now) {
        Ok(s) => s,
        Err(e) => return invalid(e),
    };
    let pool_cpu = view.ledger.pool_cpu.get(&pool).copied().unwrap_or(0);
    if pool_cpu <= 0 {
        return None; // pool size not reported yet: nothing to plan against
    }
    let others: Vec<StoredSchedule> = view
        .ledger
        .schedules
        .iter()
        .filter(|s| !(s.tenant == new.tenant && s.job == new.job))
        .cloned()
        .collect();
    let policy = view.settings.slices;
    let limits = policy.limits(pool, pool_cpu, facts.dedicated_units(now));
    let decision =
        Horizon::new(now, policy.slice, policy.horizon_days).and_then(|h| slices::decide(&h, &new, &others, limits));
    match decision {
        Err(e) => invalid(e.to_string()),
        Ok(slices::Decision::Accepted { .. }) => None,
        Ok(slices::Decision::Refused {
            shortfall,
            alternatives,
        }) => Some(Decision::deny(
            403,
            "Forbidden",
            refusal_text(
                &format!("ScheduledSparkApplication {name}"),
                &new,
                &shortfall,
                &alternatives,
            ),
        )),
    }
}
