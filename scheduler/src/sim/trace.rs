//! The trace a simulation replays: nodes per pool, tenants with their
//! purchases and Spark jobs, and events. Read from YAML (see
//! `examples/trace.yaml`); every value is checked while it is read, so a bad
//! trace is refused with the line it is on.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sparkcap_ledger::quantity::{parse_cpu, parse_memory};
use sparkcap_ledger::schedule::{Schedule, parse_go_duration};
use sparkcap_ledger::{Period, Pool, PurchaseKind, TenantId};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// A trace that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Unreadable file.
    #[error("cannot read trace {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad YAML or a bad value; serde_yaml's message names the field path and line.
    #[error("trace {origin}: {message}")]
    Invalid {
        /// File name or "built-in".
        origin: String,
        /// What is wrong, where.
        message: String,
    },
}

/// Text read as a string whatever YAML scalar it was written as (`2`, `"2"`, `0.5`).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// CPU in millicores, written as a Kubernetes quantity (`2`, `500m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu(pub i64);

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Scalar::deserialize(d)?.0;
        match parse_cpu(&s) {
            Ok(m) if m.0 > 0 => Ok(Cpu(m.0)),
            Ok(_) => Err(de::Error::custom(format!("cpu {s:?} must be more than zero"))),
            Err(e) => Err(de::Error::custom(e)),
        }
    }
}

/// Memory in bytes, written as a Kubernetes quantity (`8Gi`, `512Mi`) or as
/// Spark writes sizes (`4g`, `512m`: binary units; a memory size in
/// thousandths of a byte would be meaningless, so `m` is read as Spark means it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory(pub i64);

fn spark_size(s: &str) -> Option<String> {
    let (digits, suffix) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let unit = match suffix {
        "k" | "kb" => "Ki",
        "m" | "mb" => "Mi",
        "g" | "gb" => "Gi",
        "t" | "tb" => "Ti",
        _ => return None,
    };
    (!digits.is_empty()).then(|| format!("{digits}{unit}"))
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Scalar::deserialize(d)?.0;
        let text = spark_size(s.trim()).unwrap_or_else(|| s.clone());
        match parse_memory(&text) {
            Ok(b) if b.0 > 0 => Ok(Memory(b.0)),
            Ok(_) => Err(de::Error::custom(format!("memory {s:?} must be more than zero"))),
            Err(e) => Err(de::Error::custom(e)),
        }
    }
}

/// A length of time: `90s`, `20m`, `1h30m`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub i64);

impl Dur {
    /// As a chrono delta.
    pub fn delta(self) -> TimeDelta {
        TimeDelta::seconds(self.0)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return if n >= 0 {
                Ok(Dur(n))
            } else {
                Err(format!("duration {s} must not be negative"))
            };
        }
        if s.is_empty() {
            return Err("empty duration; write e.g. 90s, 20m or 1h30m".into());
        }
        parse_go_duration(s).map(|d| Dur(d.num_seconds()))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Scalar::deserialize(d)?.0.parse().map_err(de::Error::custom)
    }
}

/// A cron schedule (5 fields, `@hourly`, `@every 2h`) as the Spark Operator takes it.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// As written.
    pub text: String,
    /// Parsed.
    pub schedule: Schedule,
}

impl<'de> Deserialize<'de> for ScheduleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let schedule = text.parse().map_err(de::Error::custom)?;
        Ok(Self { text, schedule })
    }
}

/// Identifiers in a trace: tenant ids, job names (lowercase DNS labels, as
/// they become namespace and pod names).
fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?} must be 1-40 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

/// Nodes alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// How many.
    #[serde(default = "one")]
    pub count: i64,
    /// Allocatable cpu of each.
    pub cpu: Cpu,
    /// Allocatable memory of each.
    pub memory: Memory,
    /// Pod slots of each.
    #[serde(default = "default_pods")]
    pub pods: i64,
}

fn one() -> i64 {
    1
}
fn default_pods() -> i64 {
    110
}

/// Nodes of each pool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pools {
    /// Dedicated pool.
    #[serde(default)]
    pub dedicated: Vec<NodeGroup>,
    /// Shared pool.
    #[serde(default)]
    pub shared: Vec<NodeGroup>,
    /// Draft pool.
    #[serde(default)]
    pub draft: Vec<NodeGroup>,
}

impl Pools {
    /// The groups of `pool`.
    pub fn of(&self, pool: Pool) -> &Vec<NodeGroup> {
        match pool {
            Pool::Dedicated => &self.dedicated,
            Pool::Shared => &self.shared,
            Pool::Draft => &self.draft,
        }
    }

    /// The groups of `pool`, to change.
    pub fn of_mut(&mut self, pool: Pool) -> &mut Vec<NodeGroup> {
        match pool {
            Pool::Dedicated => &mut self.dedicated,
            Pool::Shared => &mut self.shared,
            Pool::Draft => &mut self.draft,
        }
    }
}

/// The size of one Spark Unit.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    /// Cores.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
}

impl Default for UnitSpec {
    fn default() -> Self {
        Self {
            cpu: Cpu(4000),
            memory: Memory(16 << 30),
        }
    }
}

/// A purchase: at the start of the trace, or at `at` after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseSpec {
    /// `dedicated_units` or `vcpu_hours`.
    pub kind: PurchaseKind,
    /// Units or whole vCPU-hours.
    pub quantity: i64,
    /// `daily`, `monthly` or `yearly`.
    #[serde(default = "monthly")]
    pub period: Period,
    /// When it is made (and starts), after the trace start.
    #[serde(default = "zero")]
    pub at: Dur,
}

fn monthly() -> Period {
    Period::Monthly
}
fn zero() -> Dur {
    Dur(0)
}

/// A pod's requests.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodShape {
    /// CPU request.
    pub cpu: Cpu,
    /// Memory request (for executors: `spark.executor.memory`; Spark adds its overhead).
    pub memory: Memory,
}

/// A job's executors.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    /// `spark.executor.instances` (with dynamic allocation: the initial executors).
    pub count: i64,
    /// Dynamic allocation's `maxExecutors`: the driver asks for the rest a
    /// minute after it starts, beyond the gang it was admitted with.
    #[serde(default)]
    pub max: Option<i64>,
    /// `spark.executor.cores` / request.
    pub cpu: Cpu,
    /// `spark.executor.memory`.
    pub memory: Memory,
}

/// How long a run takes with all its executors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DurationDist {
    /// Always this.
    Fixed(Dur),
    /// Log-normal with this median and 95th percentile.
    LogNormal {
        /// Median.
        median: Dur,
        /// 95th percentile.
        p95: Dur,
    },
    /// Uniform between the two.
    Uniform {
        /// Shortest.
        min: Dur,
        /// Longest.
        max: Dur,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist {
    fixed: Option<Dur>,
    median: Option<Dur>,
    p95: Option<Dur>,
    min: Option<Dur>,
    max: Option<Dur>,
}

impl<'de> Deserialize<'de> for DurationDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawDist::deserialize(d)?;
        let bad = |m: &str| de::Error::custom(format!("duration: {m}"));
        let dist = match (r.fixed, r.median, r.p95, r.min, r.max) {
            (Some(f), None, None, None, None) => DurationDist::Fixed(f),
            (None, Some(median), Some(p95), None, None) => {
                if p95 < median {
                    return Err(bad("p95 must be at least the median"));
                }
                DurationDist::LogNormal { median, p95 }
            }
            (None, None, None, Some(min), Some(max)) => {
                if max < min {
                    return Err(bad("max must be at least min"));
                }
                DurationDist::Uniform { min, max }
            }
            _ => {
                return Err(bad(
                    "write exactly one of {fixed: 10m}, {median: 20m, p95: 45m} or {min: 5m, max: 30m}",
                ));
            }
        };
        let shortest = match dist {
            DurationDist::Fixed(f) => f,
            DurationDist::LogNormal { median, .. } => median,
            DurationDist::Uniform { min, .. } => min,
        };
        if shortest.0 < 1 {
            return Err(bad("runs last at least 1s"));
        }
        Ok(dist)
    }
}

/// How arrivals spread over the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The same rate all day.
    Flat,
    /// Office hours: peak around 13:00 UTC, quiet at night.
    Office,
    /// Night batch: peak around 02:00 UTC.
    Night,
}

impl Profile {
    /// Relative rate (0..=1) at seconds-of-day `s`; the mean over a day is 1/2 for
    /// the curved profiles, so `per_hour` is their peak rate.
    pub fn factor(self, seconds_of_day: i64) -> f64 {
        let hour = seconds_of_day as f64 / 3600.0;
        let peak = match self {
            Profile::Flat => return 1.0,
            Profile::Office => 13.0,
            Profile::Night => 2.0,
        };
        let phase = (hour - peak) / 24.0 * std::f64::consts::TAU;
        0.5 + 0.5 * phase.cos()
    }
}

/// Random ad-hoc arrivals.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// Peak rate (runs per hour); a Poisson process shaped by `profile`.
    pub per_hour: f64,
    /// Shape over the day.
    #[serde(default = "flat")]
    pub profile: Profile,
}

fn flat() -> Profile {
    Profile::Flat
}

/// A Spark job: how it is started, what it asks for, how long it runs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name (`spark-app-name`).
    pub name: String,
    /// Started by a cron schedule, or
    pub schedule: Option<ScheduleSpec>,
    /// by random arrivals.
    pub arrivals: Option<Arrivals>,
    /// Driver requests.
    pub driver: PodShape,
    /// Executors (none: a driver-only job).
    pub executors: Option<ExecutorSpec>,
    /// Run time with all executors running.
    pub duration: DurationDist,
    /// Longest acceptable time from submission to end.
    pub sla: Option<Dur>,
    /// Runs finished before the trace starts (a job with fewer than the
    /// draft threshold starts in the draft pool).
    pub previous_runs: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    #[serde(default)]
    schedule: Option<ScheduleSpec>,
    #[serde(default)]
    arrivals: Option<Arrivals>,
    driver: PodShape,
    #[serde(default)]
    executors: Option<ExecutorSpec>,
    duration: DurationDist,
    #[serde(default)]
    sla: Option<Dur>,
    #[serde(default)]
    previous_runs: i64,
}

impl<'de> Deserialize<'de> for JobSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawJob::deserialize(d)?;
        check_name("job name", &r.name).map_err(de::Error::custom)?;
        let fail = |m: String| de::Error::custom(format!("job {}: {m}", r.name));
        match (&r.schedule, &r.arrivals) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(fail(
                    "give exactly one of schedule (cron) or arrivals ({per_hour: 4, profile: office})".into(),
                ));
            }
            (None, Some(a)) if !(a.per_hour > 0.0 && a.per_hour <= 3600.0) => {
                return Err(fail(format!(
                    "arrivals.per_hour {} must be more than 0 and at most 3600",
                    a.per_hour
                )));
            }
            _ => {}
        }
        if let Some(e) = &r.executors
            && !(0..=1000).contains(&e.count)
        {
            return Err(fail(format!("executors.count {} must be 0 to 1000", e.count)));
        }
        if let Some(e) = &r.executors
            && e.max.is_some_and(|m| m < e.count || m > 1000)
        {
            return Err(fail(format!(
                "executors.max {} must be at least executors.count ({}) and at most 1000",
                e.max.unwrap_or_default(),
                e.count
            )));
        }
        if r.previous_runs < 0 {
            return Err(fail("previous_runs must not be negative".into()));
        }
        Ok(JobSpec {
            name: r.name,
            schedule: r.schedule,
            arrivals: r.arrivals,
            driver: r.driver,
            executors: r.executors.filter(|e| e.count > 0),
            duration: r.duration,
            sla: r.sla,
            previous_runs: r.previous_runs,
        })
    }
}

/// A tenant: its purchases and its jobs. Its namespace is `tenant-<id>`.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    /// Tenant id.
    pub id: TenantId,
    /// Purchases.
    pub purchases: Vec<PurchaseSpec>,
    /// Jobs.
    pub jobs: Vec<JobSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    #[serde(default)]
    purchases: Vec<PurchaseSpec>,
    #[serde(default)]
    jobs: Vec<JobSpec>,
}

impl<'de> Deserialize<'de> for TenantSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawTenant::deserialize(d)?;
        check_name("tenant id", &r.id).map_err(de::Error::custom)?;
        let id = TenantId::new(r.id.clone()).map_err(de::Error::custom)?;
        let mut names = HashSet::new();
        for j in &r.jobs {
            if !names.insert(j.name.as_str()) {
                return Err(de::Error::custom(format!(
                    "tenant {id}: job {} is listed twice",
                    j.name
                )));
            }
        }
        Ok(Self {
            id,
            purchases: r.purchases,
            jobs: r.jobs,
        })
    }
}

/// Something that happens at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceEvent {
    /// When, after the trace start.
    pub at: Dur,
    /// Nodes of a pool fail (their pods with them).
    #[serde(default)]
    pub lose_nodes: Option<NodeChange>,
    /// Nodes join a pool.
    #[serde(default)]
    pub add_nodes: Option<NodeAdd>,
}

/// Nodes lost.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeChange {
    /// Pool.
    pub pool: Pool,
    /// How many (the last ones of the pool).
    pub count: i64,
}

/// Nodes added.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAdd {
    /// Pool.
    pub pool: Pool,
    /// Their shape and number.
    #[serde(flatten)]
    pub group: NodeGroupFlat,
}

/// [`NodeGroup`] fields, flattened into an event.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct NodeGroupFlat {
    /// How many.
    pub count: i64,
    /// Allocatable cpu.
    pub cpu: Cpu,
    /// Allocatable memory.
    pub memory: Memory,
}

/// Knobs of the simulated cluster and of sparkcap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A job's first this-many runs go to the draft pool.
    pub draft_runs: i64,
    /// Grace period given to preempted executors.
    pub eviction_grace: Dur,
    /// How long an executor takes to stop once told to (capped by the grace period).
    pub executor_shutdown: Dur,
    /// From bind to containers running.
    pub pod_startup: Dur,
    /// From driver running to its executor pods being created.
    pub executor_request_delay: Dur,
    /// Metering period (the scheduler accrues running pods this often).
    pub meter_every: Dur,
    /// The webhook's and scheduler's refresh of balances from the ledger.
    pub ledger_refresh: Dur,
    /// Report sampling period.
    pub sample_every: Dur,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            draft_runs: 3,
            eviction_grace: Dur(20),
            executor_shutdown: Dur(5),
            pod_startup: Dur(2),
            executor_request_delay: Dur(3),
            meter_every: Dur(600),
            ledger_refresh: Dur(120),
            sample_every: Dur(300),
        }
    }
}

/// A whole trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Virtual start time (UTC).
    pub start: DateTime<Utc>,
    /// How long it runs.
    pub duration: Dur,
    /// Spark Unit size.
    pub spark_unit: UnitSpec,
    /// Knobs.
    pub settings: Settings,
    /// Nodes.
    pub pools: Pools,
    /// Tenants.
    pub tenants: Vec<TenantSpec>,
    /// Events.
    pub events: Vec<TraceEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrace {
    #[serde(default = "default_start")]
    start: DateTime<Utc>,
    #[serde(default = "one_day")]
    duration: Dur,
    #[serde(default)]
    spark_unit: UnitSpec,
    #[serde(default)]
    settings: Settings,
    pools: Pools,
    tenants: Vec<TenantSpec>,
    #[serde(default)]
    events: Vec<TraceEvent>,
}

/// A Monday: traces without a start begin here, so runs are comparable.
pub fn default_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}
fn one_day() -> Dur {
    Dur(86_400)
}

impl<'de> Deserialize<'de> for Trace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawTrace::deserialize(d)?;
        let t = Trace {
            start: r.start,
            duration: r.duration,
            spark_unit: r.spark_unit,
            settings: r.settings,
            pools: r.pools,
            tenants: r.tenants,
            events: r.events,
        };
        t.check().map_err(de::Error::custom)?;
        Ok(t)
    }
}

/// The most nodes one simulated cluster may have (all pools, and every
/// node an event adds): what a 24 GiB machine simulates comfortably.
pub const MAX_NODES: i64 = 100_000;

impl Trace {
    /// Reads a trace file.
    pub fn load(path: &std::path::Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TraceError> {
        serde_yaml::from_str(text).map_err(|e| TraceError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// The rules that span several parts of the trace.
    pub fn check(&self) -> Result<(), String> {
        if self.duration.0 < 60 || self.duration.0 > 366 * 86_400 {
            return Err(format!(
                "duration {} s: simulate between 1 minute and 366 days",
                self.duration.0
            ));
        }
        let mut ids = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if !ids.insert(t.id.as_str()) {
                return Err(format!("tenants[{i}]: tenant {} is listed twice", t.id));
            }
        }
        for pool in Pool::ALL {
            for (i, g) in self.pools.of(pool).iter().enumerate() {
                if !(0..=100_000).contains(&g.count) || g.pods < 1 {
                    return Err(format!(
                        "pools.{pool}[{i}]: count must be 0 to 100000 and pods at least 1"
                    ));
                }
            }
        }
        // One bound on the whole cluster, not only per group: each node is
        // simulated, and 20 groups of 100,000 would not fit in memory.
        let nodes = Pool::ALL
            .iter()
            .flat_map(|p| self.pools.of(*p))
            .map(|g| g.count)
            .chain(
                self.events
                    .iter()
                    .filter_map(|e| e.add_nodes.as_ref())
                    .map(|n| n.group.count),
            )
            .fold(0i64, |a, c| a.saturating_add(c.max(0)));
        if nodes > MAX_NODES {
            return Err(format!(
                "pools and add_nodes events: {nodes} nodes in all; a simulated cluster has at most {MAX_NODES}"
            ));
        }
        if Pool::ALL.iter().all(|p| self.pools.of(*p).iter().all(|g| g.count == 0)) {
            return Err("pools: the cluster has no nodes; give at least one pool a node group".into());
        }
        for (i, e) in self.events.iter().enumerate() {
            if e.at > self.duration {
                return Err(format!(
                    "events[{i}]: at {} s is after the trace ends ({} s)",
                    e.at.0, self.duration.0
                ));
            }
            match (&e.lose_nodes, &e.add_nodes) {
                (Some(n), None) if n.count < 1 => {
                    return Err(format!("events[{i}].lose_nodes.count must be at least 1"));
                }
                (None, Some(n)) if !(1..=100_000).contains(&n.group.count) => {
                    return Err(format!("events[{i}].add_nodes.count must be 1 to 100000"));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(format!("events[{i}]: give exactly one of lose_nodes or add_nodes"));
                }
            }
        }
        let s = &self.settings;
        if !(0..=1000).contains(&s.draft_runs) {
            return Err("settings.draft_runs must be 0 to 1000".into());
        }
        for (name, v) in [
            ("meter_every", s.meter_every),
            ("ledger_refresh", s.ledger_refresh),
            ("sample_every", s.sample_every),
        ] {
            if v.0 < 1 {
                return Err(format!("settings.{name} must be at least 1s"));
            }
        }
        Ok(())
    }

    /// Applies `--scale-pool` changes: `dedicated=+4`, `shared=-10`, `draft=8`
    /// (nodes added to or removed from the pool's last group, or its total set).
    pub fn scale_pool(&mut self, spec: &str) -> Result<(), String> {
        if spec.len() > 64 {
            return Err(format!(
                "--scale-pool {:?}…: write POOL=+N, POOL=-N or POOL=N",
                &spec[..spec.floor_char_boundary(32)]
            ));
        }
        let (pool, change) = spec
            .split_once('=')
            .ok_or_else(|| format!("--scale-pool {spec:?}: write POOL=+N, POOL=-N or POOL=N"))?;
        let pool: Pool = pool
            .trim()
            .parse()
            .map_err(|_| format!("--scale-pool {spec:?}: pool must be dedicated, shared or draft"))?;
        let change = change.trim();
        let n: i64 = change
            .trim_start_matches(['+', '-'])
            .parse()
            .map_err(|_| format!("--scale-pool {spec:?}: {change:?} is not +N, -N or N"))?;
        let groups = self.pools.of_mut(pool);
        let total: i64 = groups.iter().map(|g| g.count).sum();
        let target = match change.as_bytes()[0] {
            b'+' => total.checked_add(n),
            b'-' => total.checked_sub(n),
            _ => Some(n),
        }
        .filter(|t| *t <= MAX_NODES)
        .ok_or_else(|| format!("--scale-pool {spec:?}: a simulated cluster has at most {MAX_NODES} nodes"))?;
        if target < 0 {
            return Err(format!(
                "--scale-pool {spec:?}: pool {pool} has {total} nodes; cannot remove {n}"
            ));
        }
        let Some(last) = groups.last_mut() else {
            return Err(format!(
                "--scale-pool {spec:?}: pool {pool} has no node group to copy the node shape from"
            ));
        };
        // Remove from the last groups first; add copies of the last group's shape.
        let mut delta = target - total;
        if delta >= 0 {
            last.count += delta;
        } else {
            for g in groups.iter_mut().rev() {
                let take = (-delta).min(g.count);
                g.count -= take;
                delta += take;
            }
        }
        self.check()
    }

    /// The trace's end.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + self.duration.delta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
pools:
  shared: [{count: 2, cpu: 8, memory: 32Gi}]
tenants:
  - id: acme
    purchases: [{kind: vcpu_hours, quantity: 100, period: daily}]
    jobs:
      - name: ingest
        schedule: "*/30 * * * *"
        driver: {cpu: 1, memory: 2Gi}
        executors: {count: 2, cpu: 2, memory: 4g}
        duration: {fixed: 10m}
"#;

    #[test]
    fn a_small_trace_reads_with_defaults() {
        let t = Trace::parse(SMALL, "small").unwrap();
        assert_eq!(t.duration, Dur(86_400));
        assert_eq!(t.pools.shared[0].cpu, Cpu(8000));
        assert_eq!(t.tenants[0].jobs[0].executors.unwrap().memory, Memory(4 << 30));
        assert_eq!(t.settings.eviction_grace, Dur(20));
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let bad = SMALL.replace("cpu: 2, memory: 4g", "cpu: two, memory: 4g");
        let e = Trace::parse(&bad, "bad.yaml").unwrap_err().to_string();
        assert!(e.contains("line 11"), "{e}");
        assert!(e.contains("bad.yaml"), "{e}");
        let bad = SMALL.replace("{fixed: 10m}", "{fixed: 10m, median: 5m}");
        let e = Trace::parse(&bad, "t").unwrap_err().to_string();
        // Whole-value rules point at the job they are in.
        assert!(
            e.contains("jobs[0]: duration") && e.contains("exactly one of") && e.contains("line 8"),
            "{e}"
        );
        let bad = SMALL.replace("schedule: \"*/30 * * * *\"", "schedule: \"*/30 * *\"");
        let e = Trace::parse(&bad, "t").unwrap_err().to_string();
        assert!(e.contains("expected 5 fields") && e.contains("line 8"), "{e}");
        let bad = SMALL.replace("quantity: 100", "quantity: 100, colour: red");
        let e = Trace::parse(&bad, "t").unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`") && e.contains("line 6"), "{e}");
        let bad = SMALL.replace("id: acme", "id: Acme_Corp");
        let e = Trace::parse(&bad, "t").unwrap_err().to_string();
        assert!(e.contains("a-z, 0-9"), "{e}");
    }

    #[test]
    fn pools_scale_up_down_and_to_a_total() {
        let mut t = Trace::parse(SMALL, "small").unwrap();
        t.scale_pool("shared=+3").unwrap();
        assert_eq!(t.pools.shared[0].count, 5);
        t.scale_pool("shared=-4").unwrap();
        assert_eq!(t.pools.shared[0].count, 1);
        t.scale_pool("shared=7").unwrap();
        assert_eq!(t.pools.shared[0].count, 7);
        assert!(t.scale_pool("shared=-8").unwrap_err().contains("has 7 nodes"));
        assert!(t.scale_pool("dedicated=+1").unwrap_err().contains("no node group"));
        assert!(
            t.scale_pool("gpu=+1")
                .unwrap_err()
                .contains("dedicated, shared or draft")
        );
    }

    /// The attacks on the CLI: an overflowing change panicked; 20 node groups
    /// of 100,000 aborted on allocation. Both are clear errors now.
    #[test]
    fn cluster_size_is_bounded_as_a_whole() {
        let mut t = Trace::parse(SMALL, "small").unwrap();
        for spec in [
            "shared=+9223372036854775807",
            "shared=9223372036854775807",
            "shared=+100000",
        ] {
            let e = t.scale_pool(spec).unwrap_err();
            assert!(e.contains("at most 100000 nodes"), "{spec}: {e}");
        }
        assert_eq!(t.pools.shared[0].count, 2, "unchanged");
        assert!(t.scale_pool(&"x".repeat(10_000)).is_err());
        let groups = "    - {count: 100000, cpu: 8, memory: 32Gi}\n".repeat(20);
        let big = SMALL.replacen("pools:\n", &format!("pools:\n  draft:\n{groups}"), 1);
        let e = Trace::parse(&big, "big").unwrap_err().to_string();
        assert!(e.contains("a simulated cluster has at most 100000"), "{e}");
    }
}
