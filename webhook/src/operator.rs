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
    Decision::allow()
}
