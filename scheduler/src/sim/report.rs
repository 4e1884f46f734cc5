//! What a simulation measured: collected while it runs ([`Recorder`]) and
//! written as `report.json` ([`Report`]). Everything in the report comes
//! from virtual time and the seed, never the wall clock, so the same trace
//! and seed give the same file byte for byte.

use crate::sim::engine::Options;
use crate::sim::trace::Trace;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sparkcap_core::view::LedgerFacts;
use sparkcap_ledger::{Balance, McSeconds, Pool, TenantId};
use std::collections::{BTreeMap, HashMap};

const MCS_PER_HOUR: f64 = McSeconds::from_vcpu_hours(1).0 as f64;

/// Upper bounds (seconds) of the wait-time histogram's buckets; the last is open.
pub const WAIT_BUCKETS: [i64; 9] = [10, 30, 60, 120, 300, 600, 1800, 3600, i64::MAX];

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The trace (file, or the built-in day).
    pub trace: String,
    /// Seed.
    pub seed: u64,
    /// Virtual start.
    pub start: DateTime<Utc>,
    /// Virtual end.
    pub end: DateTime<Utc>,
    /// Spark Units per pool (at the end).
    pub spark_units: BTreeMap<String, i64>,
    /// Per pool.
    pub pools: BTreeMap<String, PoolReport>,
    /// Preemptions of borrowed capacity.
    pub preemptions: Preemptions,
    /// Spark drivers the webhook refused.
    pub denials: i64,
    /// Fair share in the shared pool.
    pub fairness: Fairness,
    /// Spark applications.
    pub jobs: Jobs,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantReport>,
    /// Over time, one point per sample.
    pub series: Series,
    /// Invariants checked at the end.
    pub checks: Checks,
    /// How much production code ran.
    pub engine: EngineCounts,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolReport {
    /// Schedulable nodes at the end.
    pub nodes: i64,
    /// Their cores.
    pub cpu_cores: f64,
    /// Whole Spark Units.
    pub spark_units: i64,
    /// Requested cpu of bound pods / allocatable cpu.
    pub utilization: Utilization,
    /// The part of `utilization.mean` held by borrowed (opportunistic) pods.
    pub opportunistic_mean: f64,
}

/// Utilisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utilization {
    /// Time-weighted mean over the run.
    pub mean: f64,
    /// Highest sample.
    pub peak: f64,
    /// One value per sample (`series.t_s`).
    pub series: Vec<f64>,
}

/// Preemptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preemptions {
    /// Opportunistic pods evicted.
    pub count: i64,
    /// Longest time from a dedicated pod's creation to its bind, over pods that needed preemption.
    pub max_free_latency_s: i64,
    /// Median of the same.
    pub p50_free_latency_s: i64,
    /// Dedicated pods that needed preemption and were still waiting at the end.
    pub unmet: i64,
    /// Evicted pods per tenant that owned them.
    pub by_tenant: BTreeMap<String, i64>,
}

/// Fairness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    /// Jain's index (1 = perfectly fair) of `measure` over `tenants`.
    pub jain_index: f64,
    /// Tenants counted.
    pub tenants: usize,
    /// What is compared.
    pub measure: String,
}

/// One wait-time histogram bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound in seconds (none: open).
    pub le_s: Option<i64>,
    /// Drivers.
    pub count: i64,
}

/// Spark applications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    /// Submitted (driver pods created).
    pub submitted: i64,
    /// Refused by the webhook.
    pub denied: i64,
    /// Finished.
    pub completed: i64,
    /// Lost with their node.
    pub failed: i64,
    /// Still running at the end.
    pub running_at_end: i64,
    /// Driver still pending at the end.
    pub waiting_at_end: i64,
    /// Most applications running at once.
    pub peak_running: i64,
    /// Took longer than their SLA (submission to end, or still running past it).
    pub sla_missed: i64,
    /// Driver wait (creation to bind), median, all tenants.
    pub wait_p50_s: i64,
    /// 95th percentile.
    pub wait_p95_s: i64,
    /// Distribution.
    pub wait_histogram: Vec<Bucket>,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantReport {
    /// Dedicated units held.
    pub dedicated_units: i64,
    /// vCPU-hours in force at the end.
    pub purchased_vcpu_hours: f64,
    /// Charged by the ledger.
    pub charged_vcpu_hours: f64,
    /// Recorded on borrowed capacity, not charged.
    pub opportunistic_vcpu_hours: f64,
    /// Charged, exactly (millicore-seconds).
    pub charged_mc_seconds: i64,
    /// vCPU-hours left (negative: in debt).
    pub balance_end_vcpu_hours: f64,
    /// ok / low / exhausted.
    pub balance_state: String,
    /// Driver wait, median.
    pub wait_p50_s: i64,
    /// 95th percentile.
    pub wait_p95_s: i64,
    /// Drivers refused.
    pub denials: i64,
    /// The first refusal's message.
    pub denial_example: Option<String>,
    /// Executors refused.
    pub executor_denials: i64,
    /// Runs submitted.
    pub jobs_submitted: i64,
    /// Runs finished.
    pub jobs_completed: i64,
    /// Runs over their SLA.
    pub sla_missed: i64,
    /// Its pods evicted from borrowed capacity.
    pub preempted_pods: i64,
}

/// Time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Sample times, seconds after the start.
    pub t_s: Vec<i64>,
    /// Pods waiting.
    pub queue_pods: Vec<i64>,
    /// Drivers waiting.
    pub queue_drivers: Vec<i64>,
    /// Applications running.
    pub running_jobs: Vec<i64>,
    /// Preemptions since the previous sample.
    pub preemptions: Vec<i64>,
    /// vCPU-hours left of the ten busiest vCPU-hour tenants.
    pub balances: BTreeMap<String, Vec<f64>>,
}

/// End-of-run invariants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// Binds that would have overcommitted a node (must be 0).
    pub overcommitted_binds: i64,
    /// Accruals the ledger refused (must be empty).
    pub accrual_rejections: Vec<String>,
    /// Broken ledger invariants (must be empty).
    pub audit_violations: Vec<String>,
    /// What the ledger charged.
    pub ledger_charged_mc_seconds: i64,
    /// cpu × run time over every non-opportunistic pod that ran.
    pub pods_charged_mc_seconds: i64,
    /// What the ledger recorded as opportunistic.
    pub ledger_opportunistic_mc_seconds: i64,
    /// cpu × run time over every opportunistic pod.
    pub pods_opportunistic_mc_seconds: i64,
    /// Both pairs equal, to the millicore-second.
    pub ledger_matches_pods: bool,
}

/// Counts of the production code's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineCounts {
    /// `plan` calls.
    pub plan_passes: i64,
    /// `admit` calls.
    pub admission_reviews: i64,
    /// Events the scheduler would record, by reason.
    pub events: BTreeMap<String, i64>,
}

#[derive(Debug, Default, Clone)]
struct PoolRec {
    alloc: i64,
    nodes: i64,
    used: i64,
    opportunistic: i64,
    used_area: i128,
    opp_area: i128,
    alloc_area: i128,
    spark_units: i64,
    series: Vec<f64>,
}

#[derive(Debug, Default, Clone)]
struct TenantRec {
    submitted: i64,
    denied: i64,
    denial_example: Option<String>,
    executor_denials: i64,
    waits: Vec<i64>,
    completed: i64,
    failed: i64,
    sla_missed: i64,
    preempted: i64,
    /// (pool, opportunistic) → mc·s of pods that ran.
    used: BTreeMap<(Pool, bool), i64>,
    balance: f64,
    balance_series: Vec<f64>,
}

/// Collects the report while the simulation runs.
#[derive(Debug)]
pub struct Recorder {
    ids: Vec<TenantId>,
    index: HashMap<TenantId, usize>,
    pools: BTreeMap<Pool, PoolRec>,
    tenants: Vec<TenantRec>,
    running: i64,
    peak_running: i64,
    running_at_end: i64,
    waiting_at_end: i64,
    preemptions: i64,
    preemptions_since_sample: i64,
    demand: HashMap<String, i64>,
    latencies: Vec<i64>,
    events: BTreeMap<String, i64>,
    accrual_rejections: Vec<String>,
    series: Series,
    /// `admit` calls.
    pub admission_reviews: i64,
    /// `plan` calls.
    pub plan_passes: i64,
    /// Binds past a node's allocatable.
    pub overcommitted_binds: i64,
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn hours(mcs: i64) -> f64 {
    round(mcs as f64 / MCS_PER_HOUR, 3)
}

/// Nearest-rank percentile of `v` (sorted in place); 0 when empty.
pub fn percentile(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Jain's fairness index of `x`: (Σx)² / (n·Σx²).
pub fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || squares == 0.0 {
        1.0
    } else {
        sum * sum / (x.len() as f64 * squares)
    }
}

impl Recorder {
    /// For `trace`'s tenants.
    pub fn new(trace: &Trace) -> Self {
        let ids: Vec<TenantId> = trace.tenants.iter().map(|t| t.id.clone()).collect();
        Self {
            index: ids.iter().cloned().enumerate().map(|(i, id)| (id, i)).collect(),
            tenants: vec![TenantRec::default(); ids.len()],
            ids,
            pools: Pool::ALL.iter().map(|p| (*p, PoolRec::default())).collect(),
            running: 0,
            peak_running: 0,
            running_at_end: 0,
            waiting_at_end: 0,
            preemptions: 0,
            preemptions_since_sample: 0,
            demand: HashMap::new(),
            latencies: Vec::new(),
            events: BTreeMap::new(),
            accrual_rejections: Vec::new(),
            series: Series {
                t_s: Vec::new(),
                queue_pods: Vec::new(),
                queue_drivers: Vec::new(),
                running_jobs: Vec::new(),
                preemptions: Vec::new(),
                balances: BTreeMap::new(),
            },
            admission_reviews: 0,
            plan_passes: 0,
            overcommitted_binds: 0,
        }
    }

    /// The pools' sizes, as just registered in the ledger.
    pub(crate) fn pools(&mut self, caps: &[sparkcap_ledger::PoolCapacity]) {
        for cap in caps {
            let rec = self.pools.entry(cap.pool).or_default();
            rec.nodes = cap.nodes;
            rec.alloc = cap.cpu.0;
            rec.spark_units = cap.spark_units;
        }
    }

    pub(crate) fn integrate(&mut self, dt: i64) {
        for rec in self.pools.values_mut() {
            rec.used_area += rec.used as i128 * dt as i128;
            rec.opp_area += rec.opportunistic as i128 * dt as i128;
            rec.alloc_area += rec.alloc as i128 * dt as i128;
        }
    }

    pub(crate) fn bound(&mut self, pool: Pool, cpu: i64, opportunistic: bool) {
        // Borrowed pods run on dedicated nodes.
        let on = if opportunistic { Pool::Dedicated } else { pool };
        let rec = self.pools.entry(on).or_default();
        rec.used += cpu;
        if opportunistic {
            rec.opportunistic += cpu;
        }
    }

    pub(crate) fn unbound(&mut self, pool: Pool, cpu: i64, opportunistic: bool) {
        self.bound(pool, -cpu, opportunistic);
    }

    pub(crate) fn submitted(&mut self, tenant: usize) {
        self.tenants[tenant].submitted += 1;
    }

    pub(crate) fn denied(&mut self, tenant: usize, message: &str) {
        let t = &mut self.tenants[tenant];
        t.denied += 1;
        t.denial_example.get_or_insert_with(|| message.to_string());
    }

    pub(crate) fn executor_denied(&mut self, tenant: usize, message: &str) {
        let t = &mut self.tenants[tenant];
        t.executor_denials += 1;
        t.denial_example.get_or_insert_with(|| message.to_string());
    }

    pub(crate) fn driver_waited(&mut self, tenant: usize, secs: i64) {
        self.tenants[tenant].waits.push(secs);
    }

    pub(crate) fn running_runs(&mut self, delta: i64) {
        self.running += delta;
        self.peak_running = self.peak_running.max(self.running);
    }

    pub(crate) fn run_ended(&mut self, tenant: usize, succeeded: bool, sla_missed: bool) {
        let t = &mut self.tenants[tenant];
        if succeeded {
            t.completed += 1;
        } else {
            t.failed += 1;
        }
        t.sla_missed += sla_missed as i64;
    }

    pub(crate) fn unfinished(&mut self, tenant: usize, started: bool, sla_missed: bool) {
        if started {
            self.running_at_end += 1;
        } else {
            self.waiting_at_end += 1;
        }
        self.tenants[tenant].sla_missed += sla_missed as i64;
    }

    pub(crate) fn used(&mut self, tenant: usize, pool: Pool, opportunistic: bool, mcs: i64) {
        *self.tenants[tenant].used.entry((pool, opportunistic)).or_default() += mcs;
    }

    pub(crate) fn preempted(&mut self, victim_tenant: usize, for_pod: &str, demand_since: i64) {
        self.preemptions += 1;
        self.preemptions_since_sample += 1;
        self.tenants[victim_tenant].preempted += 1;
        self.demand.entry(for_pod.to_string()).or_insert(demand_since);
    }

    pub(crate) fn demand_met(&mut self, pod: &str, now: i64) {
        if let Some(since) = self.demand.remove(pod) {
            self.latencies.push(now - since);
        }
    }

    pub(crate) fn event(&mut self, reason: &str) {
        *self.events.entry(reason.to_string()).or_default() += 1;
    }

    pub(crate) fn accrual_rejected(&mut self, e: String) {
        if self.accrual_rejections.len() < 20 {
            self.accrual_rejections.push(e);
        }
    }

    pub(crate) fn balances(&mut self, facts: &LedgerFacts) {
        for (id, f) in &facts.tenants {
            if let Some(&i) = self.index.get(id) {
                self.tenants[i].balance = round(f.balance.remaining.0 as f64 / MCS_PER_HOUR, 3);
            }
        }
    }

    pub(crate) fn sample(&mut self, t: i64, queue: usize, drivers: usize) {
        self.series.t_s.push(t);
        self.series.queue_pods.push(queue as i64);
        self.series.queue_drivers.push(drivers as i64);
        self.series.running_jobs.push(self.running);
        self.series
            .preemptions
            .push(std::mem::take(&mut self.preemptions_since_sample));
        for rec in self.pools.values_mut() {
            let u = if rec.alloc > 0 {
                rec.used as f64 / rec.alloc as f64
            } else {
                0.0
            };
            rec.series.push(round(u, 4));
        }
        for t in &mut self.tenants {
            t.balance_series.push(t.balance);
        }
    }

    /// The report, with the ledger's own figures per tenant: (charged,
    /// opportunistic, balance just before the end).
    pub(crate) fn report(
        self,
        options: &Options,
        trace: &Trace,
        ledger: BTreeMap<usize, (i64, i64, Balance)>,
        audit_violations: Vec<String>,
    ) -> Report {
        let mut all_waits = Vec::new();
        let mut tenants = BTreeMap::new();
        let (mut ledger_charged, mut ledger_opp, mut pods_charged, mut pods_opp) = (0i64, 0i64, 0i64, 0i64);
        let mut fair = Vec::new();
        let mut busiest: Vec<(i64, usize)> = Vec::new();
        let mut denials = 0;
        let mut jobs = Jobs {
            submitted: 0,
            denied: 0,
            completed: 0,
            failed: 0,
            running_at_end: self.running_at_end,
            waiting_at_end: self.waiting_at_end,
            peak_running: self.peak_running,
            sla_missed: 0,
            wait_p50_s: 0,
            wait_p95_s: 0,
            wait_histogram: Vec::new(),
        };
        for (i, t) in self.tenants.iter().enumerate() {
            let (charged, opp, balance) = ledger.get(&i).cloned().expect("every tenant read back");
            ledger_charged += charged;
            ledger_opp += opp;
            let sim_charged: i64 = t.used.iter().filter(|((_, o), _)| !o).map(|(_, v)| v).sum();
            let sim_opp: i64 = t.used.iter().filter(|((_, o), _)| *o).map(|(_, v)| v).sum();
            pods_charged += sim_charged;
            pods_opp += sim_opp;
            let purchased = balance.purchased.0;
            let shared = t.used.get(&(Pool::Shared, false)).copied().unwrap_or(0);
            if purchased > 0 && t.submitted > 0 {
                fair.push(shared as f64 / purchased as f64);
            }
            if purchased > 0 {
                busiest.push((charged, i));
            }
            let mut waits = t.waits.clone();
            all_waits.extend_from_slice(&waits);
            denials += t.denied;
            jobs.submitted += t.submitted;
            jobs.denied += t.denied;
            jobs.completed += t.completed;
            jobs.failed += t.failed;
            jobs.sla_missed += t.sla_missed;
            let spec = &trace.tenants[i];
            tenants.insert(
                self.ids[i].to_string(),
                TenantReport {
                    dedicated_units: spec
                        .purchases
                        .iter()
                        .filter(|p| p.kind == sparkcap_ledger::PurchaseKind::DedicatedUnits)
                        .map(|p| p.quantity)
                        .sum(),
                    purchased_vcpu_hours: hours(purchased),
                    charged_vcpu_hours: hours(charged),
                    opportunistic_vcpu_hours: hours(opp),
                    charged_mc_seconds: charged,
                    balance_end_vcpu_hours: hours(balance.remaining.0),
                    balance_state: balance.state.as_str().to_string(),
                    wait_p50_s: percentile(&mut waits, 50.0),
                    wait_p95_s: percentile(&mut waits, 95.0),
                    denials: t.denied,
                    denial_example: t.denial_example.clone(),
                    executor_denials: t.executor_denials,
                    jobs_submitted: t.submitted,
                    jobs_completed: t.completed,
                    sla_missed: t.sla_missed,
                    preempted_pods: t.preempted,
                },
            );
        }
        jobs.wait_p50_s = percentile(&mut all_waits, 50.0);
        jobs.wait_p95_s = percentile(&mut all_waits, 95.0);
        let mut lower = i64::MIN;
        for le in WAIT_BUCKETS {
            let count = all_waits.iter().filter(|w| **w > lower && **w <= le).count() as i64;
            jobs.wait_histogram.push(Bucket {
                le_s: (le != i64::MAX).then_some(le),
                count,
            });
            lower = le;
        }
        busiest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut series = self.series;
        for (_, i) in busiest.iter().take(10) {
            series
                .balances
                .insert(self.ids[*i].to_string(), self.tenants[*i].balance_series.clone());
        }
        let mut latencies = self.latencies;
        let pools = self
            .pools
            .iter()
            .map(|(pool, r)| {
                let mean = if r.alloc_area > 0 {
                    r.used_area as f64 / r.alloc_area as f64
                } else {
                    0.0
                };
                let opp = if r.alloc_area > 0 {
                    r.opp_area as f64 / r.alloc_area as f64
                } else {
                    0.0
                };
                (
                    pool.to_string(),
                    PoolReport {
                        nodes: r.nodes,
                        cpu_cores: round(r.alloc as f64 / 1000.0, 3),
                        spark_units: r.spark_units,
                        utilization: Utilization {
                            mean: round(mean, 4),
                            peak: r.series.iter().copied().fold(0.0, f64::max),
                            series: r.series.clone(),
                        },
                        opportunistic_mean: round(opp, 4),
                    },
                )
            })
            .collect();
        let mut by_tenant = BTreeMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if t.preempted > 0 {
                by_tenant.insert(self.ids[i].to_string(), t.preempted);
            }
        }
        Report {
            trace: options.origin.clone(),
            seed: options.seed,
            start: trace.start,
            end: trace.end(),
            spark_units: self.pools.iter().map(|(p, r)| (p.to_string(), r.spark_units)).collect(),
            pools,
            preemptions: Preemptions {
                count: self.preemptions,
                max_free_latency_s: latencies.iter().copied().max().unwrap_or(0),
                p50_free_latency_s: percentile(&mut latencies, 50.0),
                unmet: self.demand.len() as i64,
                by_tenant,
            },
            denials,
            fairness: Fairness {
                jain_index: round(jain(&fair), 4),
                tenants: fair.len(),
                measure: "shared-pool vCPU-hours used per vCPU-hour purchased, over tenants that bought vCPU-hours \
                          and submitted work"
                    .into(),
            },
            jobs,
            tenants,
            series,
            checks: Checks {
                overcommitted_binds: self.overcommitted_binds,
                accrual_rejections: self.accrual_rejections,
                audit_violations,
                ledger_charged_mc_seconds: ledger_charged,
                pods_charged_mc_seconds: pods_charged,
                ledger_opportunistic_mc_seconds: ledger_opp,
                pods_opportunistic_mc_seconds: pods_opp,
                ledger_matches_pods: ledger_charged == pods_charged && ledger_opp == pods_opp,
            },
            engine: EngineCounts {
                plan_passes: self.plan_passes,
                admission_reviews: self.admission_reviews,
                events: self.events,
            },
        }
    }
}

impl Report {
    /// The summary printed on stdout.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "sparkcap simulate — {} (seed {})", self.trace, self.seed);
        let _ = writeln!(s, "  {} → {}", self.start.format("%F %R"), self.end.format("%F %R UTC"));
        let _ = writeln!(
            s,
            "\n  pool        nodes  cores   SU   utilisation mean / peak   borrowed"
        );
        for (name, p) in &self.pools {
            let _ = writeln!(
                s,
                "  {name:<10} {:>6} {:>6} {:>4}   {:>5.1} % / {:>5.1} %          {:>5.1} %",
                p.nodes,
                p.cpu_cores,
                p.spark_units,
                p.utilization.mean * 100.0,
                p.utilization.peak * 100.0,
                p.opportunistic_mean * 100.0
            );
        }
        let j = &self.jobs;
        let _ = writeln!(
            s,
            "\n  jobs: {} submitted, {} completed, {} refused, {} failed, {} running and {} waiting at the end; \
             peak {} running at once",
            j.submitted, j.completed, j.denied, j.failed, j.running_at_end, j.waiting_at_end, j.peak_running
        );
        let _ = writeln!(
            s,
            "  driver wait: p50 {} s, p95 {} s; {} runs over their SLA",
            j.wait_p50_s, j.wait_p95_s, j.sla_missed
        );
        let _ = writeln!(
            s,
            "  preemptions: {} (capacity free within {} s at worst, p50 {} s; {} unmet)",
            self.preemptions.count,
            self.preemptions.max_free_latency_s,
            self.preemptions.p50_free_latency_s,
            self.preemptions.unmet
        );
        let _ = writeln!(
            s,
            "  fairness (shared pool): Jain index {:.3} over {} tenants",
            self.fairness.jain_index, self.fairness.tenants
        );
        let charged: f64 = self.tenants.values().map(|t| t.charged_vcpu_hours).sum();
        let borrowed: f64 = self.tenants.values().map(|t| t.opportunistic_vcpu_hours).sum();
        let _ = writeln!(
            s,
            "  charged {charged:.1} vCPU-hours; {borrowed:.1} vCPU-hours on borrowed capacity, not charged"
        );
        let mut refused: Vec<(&String, &TenantReport)> = self.tenants.iter().filter(|(_, t)| t.denials > 0).collect();
        refused.sort_by(|a, b| b.1.denials.cmp(&a.1.denials).then(a.0.cmp(b.0)));
        if !refused.is_empty() {
            let _ = writeln!(s, "  refused: {} drivers", self.denials);
            for (id, t) in refused.iter().take(5) {
                let _ = writeln!(
                    s,
                    "    {id}: {} refused, e.g. \"{}\"",
                    t.denials,
                    t.denial_example.as_deref().unwrap_or("")
                );
            }
        }
        let c = &self.checks;
        let ok = self.checks_passed();
        let _ = writeln!(
            s,
            "  checks: {} (overcommitted binds {}, accrual rejections {}, audit violations {}, ledger = pods: {})",
            if ok { "passed" } else { "FAILED" },
            c.overcommitted_binds,
            c.accrual_rejections.len(),
            c.audit_violations.len(),
            c.ledger_matches_pods
        );
        s
    }

    /// Whether every invariant held.
    pub fn checks_passed(&self) -> bool {
        let c = &self.checks;
        c.overcommitted_binds == 0
            && c.accrual_rejections.is_empty()
            && c.audit_violations.is_empty()
            && c.ledger_matches_pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_jain() {
        assert_eq!(percentile(&mut [], 50.0), 0);
        assert_eq!(percentile(&mut [5, 1, 3], 50.0), 3);
        assert_eq!(percentile(&mut (1..=100).collect::<Vec<_>>(), 95.0), 95);
        assert!((jain(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }
}
