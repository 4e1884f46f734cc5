//! The admission decision: pure, over the request, the tenant view and the
//! time. The HTTP handler only decodes, calls [`admit`] and encodes.

use crate::operator;
use crate::review::{Decision, Operation, Request};
use crate::spark::{
    self, APP_SELECTOR_LABEL, JOB_LABEL, OPPORTUNISTIC_LABEL, POOL_LABEL, Role, TENANT_LABEL, cores, label,
};
use crate::view::{TenantFacts, TenantView};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sparkcap_ledger::binding::METERING_FINALIZER;
use sparkcap_ledger::{BalanceState, McSeconds, Pool, TenantId, TenantStatus};

/// Which webhook endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/mutate`: route and label; never refuses.
    Mutate,
    /// `/validate`: refuse what was not paid for.
    Validate,
}

/// Decides one admission request.
pub fn admit(endpoint: Endpoint, req: &Request, view: &TenantView, now: DateTime<Utc>) -> Decision {
    if req.sub_resource.is_some() {
        return Decision::allow();
    }
    match (
        req.resource.group.as_str(),
        req.resource.resource.as_str(),
        req.operation,
    ) {
        ("", "pods", Operation::Create) => pod(endpoint, req, view, now),
        ("", "pods", Operation::Update) if endpoint == Endpoint::Validate => pod_update(req, view),
        (
            operator::GROUP,
            "sparkapplications" | "scheduledsparkapplications",
            Operation::Create | Operation::Update,
        ) if endpoint == Endpoint::Validate => operator::validate(req, view, now),
        _ => Decision::allow(),
    }
}

/// Who a namespace belongs to, or why that cannot be said.
pub(crate) enum Owner<'a> {
    /// Not a tenant namespace: not sparkcap's business.
    NotTenant,
    /// The tenant's facts.
    Tenant(&'a TenantFacts),
    /// A refusal for drivers (and nothing to patch).
    Refuse(Decision),
}

pub(crate) fn owner<'a>(namespace: &str, view: &'a TenantView, now: DateTime<Utc>) -> Owner<'a> {
    let Some(value) = view.namespaces.get(namespace) else {
        // The API server only calls us for namespaces carrying the tenant
        // label, so an unknown one is a namespace our reflector has not seen yet.
        return if view.namespaces.is_empty() && view.ledger_fresh_at.is_none() {
            Owner::Refuse(unavailable("sparkcap-webhook is still loading its tenant view".into()))
        } else {
            Owner::Refuse(Decision::deny(
                503,
                "ServiceUnavailable",
                format!(
                    "namespace {namespace} is not yet known to sparkcap (was it just created?); retry in a few seconds"
                ),
            ))
        };
    };
    let Some(value) = value else {
        return Owner::NotTenant;
    };
    let id = match TenantId::new(value.clone()) {
        Ok(id) => id,
        Err(e) => {
            return Owner::Refuse(Decision::deny(
                403,
                "Forbidden",
                format!(
                    "namespace {namespace} has label {TENANT_LABEL}={value:?}, which is not a valid tenant id ({e}); ask your platform admin to correct the label"
                ),
            ));
        }
    };
    match view.ledger_age(now) {
        None => return Owner::Refuse(unavailable("sparkcap-webhook has not loaded the ledger yet".into())),
        Some(age) if age > view.settings.stale_after => {
            return Owner::Refuse(unavailable(format!(
                "sparkcap cannot confirm tenant {id}'s capacity: its view of the ledger is {} s old (limit {} s)",
                age.num_seconds(),
                view.settings.stale_after.num_seconds()
            )));
        }
        Some(_) => {}
    }
    if let Some(bound) = view.ledger.bindings.get(namespace).filter(|b| **b != id) {
        return Owner::Refuse(Decision::deny(
            403,
            "Forbidden",
            format!(
                "namespace {namespace} is labelled {TENANT_LABEL}={id} but sparkcap's ledger binds it to tenant {bound}; \
                 ask your platform admin to fix the label or the binding"
            ),
        ));
    }
    if !view.ledger.bindings.contains_key(namespace) && view.ledger.tenants.contains_key(&id) {
        // The label alone never makes a namespace a tenant's: anyone who can
        // label a namespace could then spend that tenant's money.
        return Owner::Refuse(Decision::deny(
            403,
            "Forbidden",
            format!(
                "namespace {namespace} is labelled {TENANT_LABEL}={id} but is not bound to tenant {id} in sparkcap's \
                 ledger; binding a namespace is a platform admin's act: ask them to bind it \
                 (PATCH /api/v1/tenants/{id} with {{\"bind_namespaces\": [\"{namespace}\"]}})"
            ),
        ));
    }
    let Some(facts) = view.ledger.tenants.get(&id) else {
        return Owner::Refuse(Decision::deny(
            403,
            "Forbidden",
            format!(
                "namespace {namespace} is labelled {TENANT_LABEL}={id}, but sparkcap has no tenant {id}; \
                 ask your platform admin to create tenant {id} or correct the namespace label"
            ),
        ));
    };
    match facts.tenant.status {
        TenantStatus::Active => Owner::Tenant(facts),
        TenantStatus::Suspended => Owner::Refuse(Decision::deny(
            403,
            "Forbidden",
            format!("tenant {id} is suspended; its Spark jobs cannot start until a platform admin reactivates it"),
        )),
        TenantStatus::Deleted => Owner::Refuse(Decision::deny(
            403,
            "Forbidden",
            format!(
                "tenant {id} has been deleted; ask your platform admin to move namespace {namespace} to an active tenant"
            ),
        )),
    }
}

fn unavailable(why: String) -> Decision {
    Decision::deny(
        503,
        "ServiceUnavailable",
        format!(
            "{why}; retry in a minute, and if this persists ask your platform admin to check sparkcap-webhook's \
             connection to its database"
        ),
    )
}

/// The pool a new application of `job` goes to: draft for a job's first runs
/// (when the tenant can pay for them from vCPU-hours and a draft pool
/// exists), else dedicated when the tenant holds dedicated units, else shared.
pub fn choose_pool(facts: &TenantFacts, job: Option<&str>, view: &TenantView, now: DateTime<Utc>) -> Pool {
    let in_draft = view.settings.draft_runs > 0 && job.is_some_and(|j| !facts.promoted.contains(j));
    let draft_exists = view.ledger.pool_cpu.get(&Pool::Draft).copied().unwrap_or(0) > 0;
    if in_draft && draft_exists && facts.has_vcpu_hours(now) && facts.balance.state != BalanceState::Exhausted {
        Pool::Draft
    } else {
        Pool::production(facts.dedicated_units(now))
    }
}

fn pod(endpoint: Endpoint, req: &Request, view: &TenantView, now: DateTime<Utc>) -> Decision {
    let Some(obj) = req.object.as_ref() else {
        return Decision::deny(400, "BadRequest", "pod CREATE review carries no object");
    };
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| obj.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("");
    let Some(role) = spark::role(obj) else {
        // Not a Spark pod: none of sparkcap's business, unless it would run
        // on sparkcap's pools without passing its admission.
        return match endpoint {
            Endpoint::Validate => {
                unadmitted_placement(obj, &view.settings.scheduler_name).map_or_else(Decision::allow, |why| {
                    Decision::deny(
                        403,
                        "Forbidden",
                        format!(
                            "pod {} in tenant namespace {namespace} {why}; only Spark pods (label spark-role) run on \
                             sparkcap's pools, placed and metered by sparkcap: create it with spark-submit or the \
                             Spark Operator, or remove that from the pod",
                            spark::display_name(obj)
                        ),
                    )
                })
            }
            Endpoint::Mutate => Decision::allow(),
        };
    };
    let owner = owner(namespace, view, now);
    let facts = match owner {
        Owner::NotTenant => return Decision::allow(),
        Owner::Tenant(f) => f,
        Owner::Refuse(d) => {
            return match endpoint {
                // Mutation never refuses; validation refuses what mutation could not route.
                Endpoint::Mutate => Decision::allow(),
                Endpoint::Validate => d,
            };
        }
    };
    let job = spark::job(obj);
    let app = label(obj, APP_SELECTOR_LABEL).and_then(|sel| view.apps.get(&(namespace.to_string(), sel.to_string())));
    let pool = match (role, app) {
        (Role::Executor, Some(app)) => app.pool,
        _ => choose_pool(facts, job, view, now),
    };
    match endpoint {
        Endpoint::Mutate => Decision::Allow {
            patch: mutation(obj, facts, pool, job, &view.settings.scheduler_name),
            warnings: Vec::new(),
        },
        Endpoint::Validate => validate_pod(obj, role, app.is_some(), facts, pool, view, now),
    }
}

/// JSON Patch that routes a Spark pod to sparkcap: scheduler, labels, the
/// pool's toleration. Empty when the pod already says all of it.
pub fn mutation(obj: &Value, facts: &TenantFacts, pool: Pool, job: Option<&str>, scheduler: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    if labels.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    let mut want = vec![(TENANT_LABEL, facts.tenant.id.as_str()), (POOL_LABEL, pool.as_str())];
    if let Some(j) = job.filter(|j| valid_label_value(j)) {
        want.push((JOB_LABEL, j));
    }
    for (key, value) in want {
        if labels.and_then(|l| l.get(key)).and_then(Value::as_str) != Some(value) {
            ops.push(json!({"op": "add", "path": format!("/metadata/labels/{}", escape(key)), "value": value}));
        }
    }
    // Only the scheduler may say a placement is borrowed.
    if labels.is_some_and(|l| l.contains_key(OPPORTUNISTIC_LABEL)) {
        ops.push(json!({"op": "remove", "path": format!("/metadata/labels/{}", escape(OPPORTUNISTIC_LABEL))}));
    }
    if obj.pointer("/spec/schedulerName").and_then(Value::as_str) != Some(scheduler) {
        ops.push(json!({"op": "add", "path": "/spec/schedulerName", "value": scheduler}));
    }
    // The metering finalizer from the start: the scheduler binds without a
    // round trip to add it, and the pod's object cannot go before its last
    // second is charged (the scheduler still adds it when this was skipped).
    match obj.pointer("/metadata/finalizers").and_then(Value::as_array) {
        Some(fs) if fs.iter().any(|f| f.as_str() == Some(METERING_FINALIZER)) => {}
        Some(_) => ops.push(json!({"op": "add", "path": "/metadata/finalizers/-", "value": METERING_FINALIZER})),
        None => ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": [METERING_FINALIZER]})),
    }
    let toleration = json!({"key": POOL_LABEL, "operator": "Equal", "value": pool.as_str(), "effect": "NoSchedule"});
    match obj.pointer("/spec/tolerations").and_then(Value::as_array) {
        Some(ts) if ts.contains(&toleration) => {}
        Some(_) => ops.push(json!({"op": "add", "path": "/spec/tolerations/-", "value": toleration})),
        None => ops.push(json!({"op": "add", "path": "/spec/tolerations", "value": [toleration]})),
    }
    ops
}

/// Labels whose values decide placement and money: written at admission
/// (by the tenant's tools and sparkcap's mutation) and never changed after.
pub const PROTECTED_LABELS: [&str; 5] = [
    spark::ROLE_LABEL,
    APP_SELECTOR_LABEL,
    TENANT_LABEL,
    POOL_LABEL,
    JOB_LABEL,
];

/// Why a pod that did not pass sparkcap's Spark admission would still land
/// on sparkcap's pools (None when it would not): a preset node (the kubelet
/// admits it despite the pools' NoSchedule taints), sparkcap's scheduler, or
/// a toleration of the pool taint.
pub fn unadmitted_placement(obj: &Value, scheduler: &str) -> Option<String> {
    if let Some(node) = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Some(format!(
            "sets spec.nodeName={node}, which bypasses every scheduler and sparkcap's metering"
        ));
    }
    if obj.pointer("/spec/schedulerName").and_then(Value::as_str) == Some(scheduler) {
        return Some(format!("names spec.schedulerName={scheduler}"));
    }
    pool_toleration(obj).map(|t| format!("tolerates sparkcap's pool taint ({t})"))
}

/// The first toleration of `obj` that matches the `sparkcap.io/pool` taint:
/// its key, or an empty key with `operator: Exists` (tolerates everything).
fn pool_toleration(obj: &Value) -> Option<String> {
    obj.pointer("/spec/tolerations")
        .and_then(Value::as_array)?
        .iter()
        .find(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (key == POOL_LABEL || key.is_empty() && exists) && (effect.is_empty() || effect == "NoSchedule")
        })
        .map(|t| t.to_string())
}

/// A pod UPDATE (PUT or PATCH, never `pods/status` or `pods/binding`):
/// sparkcap's labels and `spark-role` cannot be added, changed or removed
/// after admission, and no pool toleration can be added to a pod that was
/// not admitted with it. `sparkcap.io/opportunistic=true` may be added only
/// to a pod sparkcap schedules and has not bound yet (the scheduler does,
/// just before binding): it informs, the ledger's binding decides.
fn pod_update(req: &Request, view: &TenantView) -> Decision {
    let (Some(new), Some(old)) = (req.object.as_ref(), req.old_object.as_ref()) else {
        return Decision::deny(400, "BadRequest", "pod UPDATE review needs object and oldObject");
    };
    let name = spark::display_name(new);
    let refuse = |why: String| {
        Decision::deny(
            403,
            "Forbidden",
            format!(
                "pod {name}: {why}; sparkcap decides a pod's placement and charge when it admits it, so these \
                 cannot change afterwards: delete the pod and create it again"
            ),
        )
    };
    for key in PROTECTED_LABELS {
        let (was, now) = (label(old, key), label(new, key));
        if was != now {
            return refuse(match (was, now) {
                (None, Some(v)) => format!("label {key}={v} cannot be added after the pod was created"),
                (Some(v), None) => format!("label {key}={v} cannot be removed"),
                (Some(a), Some(b)) => format!("label {key} cannot change from {a} to {b}"),
                (None, None) => unreachable!("differ"),
            });
        }
    }
    let (was, now) = (label(old, OPPORTUNISTIC_LABEL), label(new, OPPORTUNISTIC_LABEL));
    if was != now {
        let unbound = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        let sparkcap_pod =
            old.pointer("/spec/schedulerName").and_then(Value::as_str) == Some(view.settings.scheduler_name.as_str());
        if !(was.is_none() && now == Some("true") && unbound && sparkcap_pod) {
            return refuse(format!(
                "label {OPPORTUNISTIC_LABEL} is sparkcap-scheduler's to set, once, before it binds"
            ));
        }
    }
    if pool_toleration(old).is_none()
        && let Some(t) = pool_toleration(new)
    {
        return refuse(format!("a toleration of sparkcap's pool taint ({t}) cannot be added"));
    }
    // The metering finalizer holds a pod's object until its last charge is
    // committed; sparkcap-scheduler removes it from pods that ended or are
    // being deleted (and from every pod, as itself, before an uninstall).
    // Stripped by a tenant from a running pod, the pod could vanish
    // uncharged while no scheduler watches.
    let has = |o: &Value| {
        o.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|fs| fs.iter().any(|f| f.as_str() == Some(METERING_FINALIZER)))
    };
    let ended = matches!(
        old.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) || old.pointer("/metadata/deletionTimestamp").is_some();
    let trusted = req.user_info.username == view.settings.scheduler_user
        || req.user_info.groups.iter().any(|g| g == "system:masters");
    if has(old) && !has(new) && !ended && !trusted {
        return refuse(format!(
            "finalizer {METERING_FINALIZER} cannot be removed while the pod runs (sparkcap removes it once the pod's \
             last second is charged); delete the pod instead"
        ));
    }
    Decision::allow()
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn validate_pod(
    obj: &Value,
    role: Role,
    app_running: bool,
    facts: &TenantFacts,
    pool: Pool,
    view: &TenantView,
    now: DateTime<Utc>,
) -> Decision {
    let name = spark::display_name(obj);
    let cpu = spark::pod_cpu(obj);
    let setting = match role {
        Role::Driver => "spark.driver.cores or spark.kubernetes.driver.request.cores",
        Role::Executor => "spark.executor.cores or spark.kubernetes.executor.request.cores",
    };
    if let Some((container, err)) = cpu.invalid.first() {
        return Decision::deny(
            422,
            "Invalid",
            format!("container {container} of pod {name}: {err}; set {setting} to a valid cpu amount"),
        );
    }
    if !cpu.missing.is_empty() {
        return Decision::deny(
            422,
            "Invalid",
            format!(
                "container {} of pod {name} has no cpu request; sparkcap places and charges Spark pods by requested cpu, \
                 so set {setting} (or resources.requests.cpu)",
                cpu.missing.join(", ")
            ),
        );
    }
    if let Some(node) = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Decision::deny(
            403,
            "Forbidden",
            format!(
                "pod {name} sets spec.nodeName={node}, which would bypass sparkcap's scheduler and its metering; \
                 remove spec.nodeName (use a nodeSelector if the pod must run on particular nodes)"
            ),
        );
    }
    let scheduler = &view.settings.scheduler_name;
    if obj.pointer("/spec/schedulerName").and_then(Value::as_str) != Some(scheduler.as_str()) {
        return Decision::deny(
            503,
            "ServiceUnavailable",
            format!(
                "pod {name} was not routed to {scheduler} (sparkcap's mutating webhook did not run or was bypassed); \
                 retry, and if this persists ask your platform admin to check the sparkcap-webhook deployment"
            ),
        );
    }
    // What the mutating webhook writes must be there and be its own: when it
    // did not run (failurePolicy Ignore), a pod carrying hand-made sparkcap
    // labels must not get through (another tenant's label would charge that
    // tenant; `opportunistic` would charge nobody).
    let label_of = |k: &str| {
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    let forged = if label_of(TENANT_LABEL).is_some_and(|t| t != facts.tenant.id.as_str()) {
        Some(format!(
            "label {TENANT_LABEL}={} is not this namespace's tenant {}",
            label_of(TENANT_LABEL).unwrap_or("(none)"),
            facts.tenant.id
        ))
    } else {
        label_of(OPPORTUNISTIC_LABEL).map(|_| format!("label {OPPORTUNISTIC_LABEL} is set by sparkcap-scheduler only"))
    };
    if let Some(why) = forged {
        return Decision::deny(
            403,
            "Forbidden",
            format!(
                "pod {name}: {why}; remove the sparkcap.io/ labels from the pod and let sparkcap's mutating webhook set them \
                 (if this persists, ask your platform admin to check the sparkcap-webhook deployment)"
            ),
        );
    }
    // A running application's executors are never refused for money: the
    // application was admitted, and starving it would waste what it used.
    if role == Role::Executor && app_running {
        return Decision::allow();
    }
    if let Some(d) = capacity_denial(facts, pool, now) {
        return d;
    }
    let (needed, what) = match (role, spark::declared_executors(obj)) {
        (_, Err(e)) => return Decision::deny(422, "Invalid", format!("pod {name}: {e}")),
        (Role::Driver, Ok(Some((n, each)))) => (
            cpu.millicores.saturating_add(n.saturating_mul(each)),
            format!(
                "pod {name} (driver {} + {n} executors × {} cores)",
                cores(cpu.millicores),
                cores(each)
            ),
        ),
        _ => (cpu.millicores, format!("pod {name}")),
    };
    if let Some(d) = entitlement_denial(facts, pool, needed, &what, view, now) {
        return d;
    }
    if role == Role::Driver {
        if let Some(d) = sla_denial(obj, &name) {
            return d;
        }
        if let Some(d) = slice_room_denial(facts, pool, spark::job(obj), needed, &what, view, now) {
            return d;
        }
    }
    Decision::Allow {
        patch: Vec::new(),
        warnings: low_balance_warning(facts, pool).into_iter().collect(),
    }
}

/// Refusal of a driver whose `sparkcap.io/sla` annotation cannot be read:
/// its runs would be profiled against no SLA without anyone knowing.
fn sla_denial(obj: &Value, name: &str) -> Option<Decision> {
    let key = "sparkcap.io/sla";
    let text = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))?
        .as_str()?;
    match sparkcap_ledger::schedule::parse_go_duration(text.trim()) {
        Ok(d) if d.num_seconds() > 0 => None,
        Ok(_) => Some(Decision::deny(
            422,
            "Invalid",
            format!("pod {name}: annotation {key} must be a positive duration such as 45m or 2h, got {text:?}"),
        )),
        Err(e) => Some(Decision::deny(
            422,
            "Invalid",
            format!(
                "pod {name}: annotation {key} {text:?}: {e}; set spark.kubernetes.driver.annotation.{key} to a duration such as 45m"
            ),
        )),
    }
}

/// Refusal of an unreserved driver when the current time slice of its pool
/// has too little room left by reservations (R7): reserved runs keep their
/// slices. A run of the job's own schedule, within its window, is admitted
/// on its reservation.
fn slice_room_denial(
    facts: &TenantFacts,
    pool: Pool,
    job: Option<&str>,
    needed: i64,
    what: &str,
    view: &TenantView,
    now: DateTime<Utc>,
) -> Option<Decision> {
    use sparkcap_ledger::slices::{RunWindow, run_window};
    let ledger = &view.ledger;
    if !ledger.schedules.iter().any(|s| s.pool == pool) {
        return None;
    }
    let pool_cpu = ledger.pool_cpu.get(&pool).copied().filter(|c| *c > 0)?;
    let tenant_cpu = (pool == Pool::Dedicated).then(|| facts.dedicated_units(now) * view.settings.spark_unit.cpu.0);
    let window = run_window(
        now,
        view.settings.slices.slice,
        pool,
        pool_cpu,
        &facts.tenant.id,
        tenant_cpu,
        job,
        needed,
        &ledger.schedules,
        &ledger.planned.0,
    );
    let RunWindow::Full {
        free,
        slice_end,
        next_fit,
    } = window
    else {
        return None;
    };
    let hm = |t: DateTime<Utc>| t.format("%H:%M UTC").to_string();
    Some(Decision::deny(
        403,
        "Forbidden",
        format!(
            "{what} needs {} cores, but the {pool} pool's time slice until {} has only {} cores not reserved by scheduled jobs; {}",
            cores(needed),
            hm(slice_end),
            cores(free),
            match next_fit {
                Some(t) => format!(
                    "submit at {} or later, when the reservations leave room, or reserve a schedule for this job (POST /api/v1/tenants/{}/jobs/{{job}}/schedule)",
                    hm(t),
                    facts.tenant.id
                ),
                None => "no slice in the next 24 hours has room for it: use fewer executors or buy dedicated units"
                    .to_owned(),
            }
        ),
    ))
}

/// Refusal when the tenant cannot pay for a new application in `pool`.
pub(crate) fn capacity_denial(facts: &TenantFacts, pool: Pool, now: DateTime<Utc>) -> Option<Decision> {
    let id = &facts.tenant.id;
    if !facts.purchases.iter().any(|p| p.valid_at(now)) {
        let upcoming = facts
            .purchases
            .iter()
            .filter(|p| p.valid_from > now)
            .map(|p| p.valid_from)
            .min();
        let expired = facts
            .purchases
            .iter()
            .filter(|p| p.valid_until <= now)
            .map(|p| p.valid_until)
            .max();
        let message = match (upcoming, expired) {
            (Some(start), _) => format!(
                "tenant {id} has no capacity in force now; its next purchase starts {}; wait for it or purchase capacity for the current period",
                stamp(start)
            ),
            (None, Some(end)) => format!(
                "tenant {id}'s purchases have expired (the last on {}); purchase capacity for the current period",
                stamp(end)
            ),
            (None, None) => format!(
                "tenant {id} has no capacity: no dedicated units and no vCPU-hours; purchase capacity before running Spark jobs"
            ),
        };
        return Some(Decision::deny(403, "Forbidden", message));
    }
    if pool == Pool::Dedicated {
        return None;
    }
    let b = &facts.balance;
    if b.state == BalanceState::Exhausted || b.remaining <= McSeconds::ZERO {
        let since = b
            .debt_since
            .map(|t| format!(" (exhausted {})", stamp(t)))
            .unwrap_or_default();
        let hint = if facts.has_vcpu_hours(now) {
            "purchase more capacity or wait for the next period"
        } else {
            "its vCPU-hours have expired; purchase vCPU-hours or dedicated units"
        };
        return Some(Decision::deny(
            403,
            "Forbidden",
            format!(
                "tenant {id} has {} of {} vCPU-hours left{since}; {hint}",
                hours(b.remaining.max(McSeconds::ZERO)),
                whole_hours(b.purchased)
            ),
        ));
    }
    None
}

/// Refusal when an application needing `needed_mc` can never fit what the
/// tenant may use in `pool`.
pub(crate) fn entitlement_denial(
    facts: &TenantFacts,
    pool: Pool,
    needed_mc: i64,
    what: &str,
    view: &TenantView,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let id = &facts.tenant.id;
    let (limit, basis) = match pool {
        Pool::Dedicated => {
            let units = facts.dedicated_units(now);
            let per = view.settings.spark_unit.cpu.0;
            (
                units.saturating_mul(per),
                format!(
                    "tenant {id}'s dedicated entitlement is {} cores ({units} units × {} cores)",
                    cores(units.saturating_mul(per)),
                    cores(per)
                ),
            )
        }
        Pool::Shared | Pool::Draft => {
            let size = view.ledger.pool_cpu.get(&pool).copied().unwrap_or(0);
            if size <= 0 {
                // Pool size not reported yet: the scheduler will queue or refuse.
                return None;
            }
            (size, format!("the whole {pool} pool has {} cores", cores(size)))
        }
    };
    (needed_mc > limit).then(|| {
        let fix = if pool == Pool::Dedicated {
            "reduce the cores or executors it asks for, or purchase more dedicated units"
        } else {
            "reduce the cores or executors it asks for"
        };
        Decision::deny(
            403,
            "Forbidden",
            format!(
                "{what} needs {} cores but {basis}, so it could never run; {fix}",
                cores(needed_mc)
            ),
        )
    })
}

fn low_balance_warning(facts: &TenantFacts, pool: Pool) -> Option<String> {
    let b = &facts.balance;
    (pool != Pool::Dedicated && b.state == BalanceState::Low).then(|| {
        let eta = b
            .depletion_at
            .map(|t| format!("; at the current rate it runs out {}", stamp(t)))
            .unwrap_or_default();
        format!(
            "tenant {} has {} of {} vCPU-hours left{eta}",
            facts.tenant.id,
            hours(b.remaining),
            whole_hours(b.purchased)
        )
    })
}

/// vCPU-hours with one decimal, rounded down (never claims more than is left).
pub fn hours(v: McSeconds) -> String {
    let tenths = v.0.div_euclid(360_000);
    format!("{}.{}", tenths.div_euclid(10), tenths.rem_euclid(10))
}

/// vCPU-hours as bought: "500", or "12.5" when not whole.
pub fn whole_hours(v: McSeconds) -> String {
    let h = hours(v);
    h.strip_suffix(".0").map(str::to_string).unwrap_or(h)
}

/// Minute-precision UTC time for messages.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}
