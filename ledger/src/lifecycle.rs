//! A job's lifecycle (R5, R11): its first runs go to the draft pool to be
//! profiled; each finished run is compared with the job's SLA; after N
//! consecutive runs within it the job is promoted to production. What a run
//! teaches (an SLA miss with the cores that would have met it, a failure,
//! cores requested but not used) becomes a [`Notice`] for the tenant.
//!
//! Pure: the stores feed [`record_run`] the job's state and the run, inside
//! the accrual transaction that closes the run's driver, and persist what it
//! returns, so a promotion and its audit record are written together or not
//! at all.

use crate::account::Account;
use crate::accrual::{ClosedDriver, PodCheckpoint, PodOutcome};
use crate::ids::TenantId;
use crate::pool::Pool;
use crate::store::RunOutcome;
use crate::units::{Bytes, McSeconds, Millicores};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStage {
    /// Being profiled in the draft pool.
    #[default]
    Draft,
    /// Promoted: runs in its tenant's pool.
    Production,
}

impl JobStage {
    /// The lowercase name used in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Production => "production",
        }
    }

    /// Parses the database name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Self::Draft),
            "production" => Some(Self::Production),
            _ => None,
        }
    }
}

/// Over the SLA by more than this many percent: notify with a
/// recommendation (R5.4).
pub const SLA_NOTIFY_PCT: i64 = 10;
/// Over the SLA by more than this many percent: alert (R11.5).
pub const SLA_ALERT_PCT: i64 = 20;
/// Using less than this share of the cores requested is inefficient (R11.3).
pub const EFFICIENCY_FLOOR_PCT: i64 = 60;
/// This many inefficient runs in a row are "consistent" (R11.3).
pub const EFFICIENCY_RUNS: i64 = 3;

/// Runs in draft before promotion, unless configured (R5.1).
pub const DEFAULT_DRAFT_RUNS: i64 = 3;

fn default_draft_runs() -> i64 {
    DEFAULT_DRAFT_RUNS
}

/// What the scheduler knows about a run that the ledger does not: sent with
/// the accrual that closes the run's driver pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFacts {
    /// The job's SLA: the longest acceptable run (`sparkcap.io/sla`).
    #[serde(default)]
    pub sla_seconds: Option<i64>,
    /// Consecutive runs within SLA that promote a draft job (R5.5).
    #[serde(default = "default_draft_runs")]
    pub promote_after: i64,
    /// Mean CPU the run's pods used, from metrics.k8s.io when the cluster has it.
    #[serde(default)]
    pub cpu_used: Option<Millicores>,
    /// Peak memory the run's pods used, from metrics.k8s.io.
    #[serde(default)]
    pub memory_used: Option<Bytes>,
    /// Data processed (`sparkcap.io/data-volume`), for the estimator (R4.2).
    #[serde(default)]
    pub data_bytes: Option<i64>,
    /// Source kind (`sparkcap.io/source`), e.g. `postgres`, `s3`.
    #[serde(default)]
    pub source: Option<String>,
    /// Target kind (`sparkcap.io/target`), e.g. `iceberg`.
    #[serde(default)]
    pub target: Option<String>,
}

impl Default for RunFacts {
    fn default() -> Self {
        Self {
            sla_seconds: None,
            promote_after: DEFAULT_DRAFT_RUNS,
            cpu_used: None,
            memory_used: None,
            data_bytes: None,
            source: None,
            target: None,
        }
    }
}

/// One finished run, profiled (R5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProfile {
    /// Owner.
    pub tenant: TenantId,
    /// Job.
    pub job: String,
    /// `spark-app-selector`.
    pub app_id: String,
    /// Pool its driver ran in.
    pub pool: Pool,
    /// Driver start.
    pub started_at: DateTime<Utc>,
    /// Driver end.
    pub finished_at: DateTime<Utc>,
    /// Cores requested by the run's pods (driver and executors).
    pub cores: Millicores,
    /// vCPU time of the run's pods metered so far (charged and opportunistic).
    pub vcpu: McSeconds,
    /// How its driver ended.
    pub outcome: RunOutcome,
    /// The SLA it was held to.
    pub sla_seconds: Option<i64>,
    /// Measured CPU, when the cluster has metrics.
    pub cpu_used: Option<Millicores>,
    /// Measured peak memory.
    pub memory_used: Option<Bytes>,
    /// Data processed.
    pub data_bytes: Option<i64>,
    /// Source kind.
    pub source: Option<String>,
    /// Target kind.
    pub target: Option<String>,
}

impl RunProfile {
    /// Driver run time in seconds.
    pub fn duration_seconds(&self) -> i64 {
        (self.finished_at - self.started_at).num_seconds().max(0)
    }

    /// Finished successfully within its SLA (or with no SLA to miss).
    pub fn within_sla(&self) -> bool {
        self.outcome == RunOutcome::Succeeded && self.sla_seconds.is_none_or(|s| self.duration_seconds() <= s)
    }

    /// Used CPU as a percentage of the cores requested, when measured.
    pub fn efficiency_pct(&self) -> Option<i64> {
        let used = self.cpu_used?;
        (self.cores.0 > 0).then(|| used.0 * 100 / self.cores.0)
    }
}

/// What the ledger remembers of a job between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// Draft or production.
    pub stage: JobStage,
    /// Finished runs.
    pub runs: i64,
    /// Consecutive successful runs within SLA.
    pub streak: i64,
    /// Consecutive runs that used less than [`EFFICIENCY_FLOOR_PCT`] of their cores.
    pub inefficient_streak: i64,
    /// The latest SLA the job declared.
    pub sla_seconds: Option<i64>,
    /// When the latest run finished.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// When it was promoted.
    pub promoted_at: Option<DateTime<Utc>>,
}

/// Kinds of notice, as the API and webhooks name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Promoted from draft to production (the audit record of R5.5).
    Promoted,
    /// Over its SLA by more than 10 %, with the cores that would fit (R5.4).
    SlaExceeded,
    /// Over its SLA by more than 20 % (R11.5).
    SlaAlert,
    /// The run failed (R11.5).
    RunFailed,
    /// Consistently used less than 60 % of its cores (R11.3).
    LowEfficiency,
    /// The vCPU-hour balance fell to 20 % (R9.3).
    BalanceLow,
    /// A schedule lost its reservation race and holds no slices.
    ScheduleRefused,
}

impl NoticeKind {
    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::SlaExceeded => "sla_exceeded",
            Self::SlaAlert => "sla_alert",
            Self::RunFailed => "run_failed",
            Self::LowEfficiency => "low_efficiency",
            Self::BalanceLow => "balance_low",
            Self::ScheduleRefused => "schedule_refused",
        }
    }

    /// Parses the database name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Promoted,
            Self::SlaExceeded,
            Self::SlaAlert,
            Self::RunFailed,
            Self::LowEfficiency,
            Self::BalanceLow,
            Self::ScheduleRefused,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Kubernetes Event type: `Warning` for what needs attention.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Promoted => "Normal",
            _ => "Warning",
        }
    }
}

/// Something a tenant should hear about. Stored in the ledger's outbox in
/// the same transaction as its cause, then delivered (Events, metrics, the
/// tenant's URL) until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Store id (0 before it is stored).
    #[serde(default)]
    pub id: i64,
    /// Whose.
    pub tenant: TenantId,
    /// The job, when about one.
    pub job: Option<String>,
    /// What happened.
    pub kind: NoticeKind,
    /// When.
    pub at: DateTime<Utc>,
    /// For people: what happened and what to do.
    pub message: String,
    /// The cores recommended, when the notice recommends a size.
    pub recommended_cores: Option<Millicores>,
    /// At most one notice per key (e.g. one balance alert per period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// When it was delivered to every configured channel.
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Delivery attempts that failed so far.
    #[serde(default)]
    pub attempts: i32,
    /// When delivery was last tried.
    #[serde(default)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Notice {
    /// A new, undelivered notice.
    pub fn new(tenant: &TenantId, job: Option<&str>, kind: NoticeKind, at: DateTime<Utc>, message: String) -> Self {
        Self {
            id: 0,
            tenant: tenant.clone(),
            job: job.map(str::to_owned),
            kind,
            at,
            message,
            recommended_cores: None,
            dedupe_key: None,
            delivered_at: None,
            attempts: 0,
            last_attempt_at: None,
            last_error: None,
        }
    }
}

/// The profile of the run a closed driver ends, from the pods of its
/// application (driver included) as the ledger holds them: cores requested
/// by all of them, vCPU time metered for all of them.
pub fn profile<'a>(closed: &ClosedDriver, app: impl IntoIterator<Item = &'a PodCheckpoint>) -> Option<RunProfile> {
    let d = &closed.driver;
    let (mut cores, mut vcpu) = (Millicores(0), McSeconds::ZERO);
    let mut saw_closer = false;
    let client_mode = d.pod.role.as_deref() != Some("driver");
    let (mut started, mut finished) = (d.pod.started_at, d.finished_at.unwrap_or(d.charged_until));
    let mut executors_ended_well = true;
    for p in app {
        if client_mode && p.pod.role.as_deref() == Some("driver") {
            // A driver ran in the cluster: its close ends the run, not an executor's.
            return None;
        }
        saw_closer |= p.pod.uid == d.pod.uid;
        cores = Millicores(cores.0 + p.pod.cpu.0);
        vcpu += p.charged + p.opportunistic;
        started = started.min(p.pod.started_at);
        finished = finished.max(p.finished_at.unwrap_or(p.charged_until));
        executors_ended_well &= matches!(p.outcome, Some(PodOutcome::Succeeded | PodOutcome::Deleted) | None);
    }
    if !saw_closer {
        cores = Millicores(cores.0 + d.pod.cpu.0);
        vcpu += d.charged + d.opportunistic;
    }
    let f = &closed.facts;
    Some(RunProfile {
        tenant: d.pod.tenant.clone(),
        job: closed.job.clone(),
        app_id: d.pod.app_id.clone().unwrap_or_else(|| d.pod.uid.clone()),
        pool: d.pod.pool,
        // A cluster-mode run is its driver's life; a client-mode run (the
        // driver outside the cluster) spans its executors.
        started_at: if client_mode { started } else { d.pod.started_at },
        finished_at: if client_mode {
            finished
        } else {
            d.finished_at.unwrap_or(d.charged_until)
        },
        cores,
        vcpu,
        outcome: match (client_mode, executors_ended_well) {
            // Spark's driver deletes its executors at sc.stop(): that is a normal end.
            (true, true) => RunOutcome::Succeeded,
            (true, false) => RunOutcome::Unknown,
            (false, _) => RunOutcome::of(true, d.outcome),
        },
        sla_seconds: f.sla_seconds,
        cpu_used: f.cpu_used,
        memory_used: f.memory_used,
        data_bytes: f.data_bytes,
        source: f.source.clone(),
        target: f.target.clone(),
    })
}

/// The balance alert for `account` at `now`, if its balance is at 20 % or
/// less (or gone): see [`balance_notice`].
pub fn balance_notice_for(tenant: &TenantId, account: &Account, now: DateTime<Utc>) -> Option<Notice> {
    let newest = account
        .lots
        .iter()
        .filter(|l| l.valid_at(now))
        .map(|l| l.purchase_id)
        .max()?;
    balance_notice(tenant, &account.balance(now, McSeconds::ZERO), newest, now)
}

/// What a job's runs teach about its size. One rule (R5.4, R11.3), read
/// by the notices a finished run raises and by the job's profile in the
/// API, so a tenant is never told two numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recommendation {
    /// The latest successful run was more than [`SLA_NOTIFY_PCT`] over its
    /// SLA: the whole cores that would have met it.
    MoreCores {
        /// Recommended cores.
        cores: Millicores,
        /// The run's cores.
        was: Millicores,
        /// How long it took.
        duration_s: i64,
        /// Its SLA.
        sla_s: i64,
    },
    /// The last [`EFFICIENCY_RUNS`] measured successful runs each used under
    /// [`EFFICIENCY_FLOOR_PCT`] of their cores: the peak of their use with
    /// 25 % headroom, in whole cores.
    FewerCores {
        /// Recommended cores.
        cores: Millicores,
        /// The latest run's cores.
        was: Millicores,
        /// The most any of those runs used.
        peak_used: Millicores,
    },
}

impl Recommendation {
    /// The cores recommended.
    pub fn cores(&self) -> Millicores {
        match self {
            Self::MoreCores { cores, .. } | Self::FewerCores { cores, .. } => *cores,
        }
    }

    /// Why, in a sentence.
    pub fn reason(&self) -> String {
        match self {
            Self::MoreCores {
                was, duration_s, sla_s, ..
            } => format!(
                "the latest run took {} against an SLA of {} on {} cores",
                mins(*duration_s),
                mins(*sla_s),
                cores_text(*was)
            ),
            Self::FewerCores { was, peak_used, .. } => format!(
                "the last {EFFICIENCY_RUNS} runs used under {EFFICIENCY_FLOOR_PCT} % of their {} cores, {} at most",
                cores_text(*was),
                cores_text(*peak_used)
            ),
        }
    }
}

/// The recommendation, if any, from a job's finished runs, newest first.
pub fn recommend(runs: &[&RunProfile]) -> Option<Recommendation> {
    let last = runs.iter().find(|r| r.outcome == RunOutcome::Succeeded)?;
    let duration = last.duration_seconds();
    if let Some(sla) = last.sla_seconds.filter(|s| *s > 0)
        && duration.saturating_mul(100) > sla.saturating_mul(100 + SLA_NOTIFY_PCT)
    {
        return Some(Recommendation::MoreCores {
            cores: cores_for_sla(last.cores, duration, sla),
            was: last.cores,
            duration_s: duration,
            sla_s: sla,
        });
    }
    let measured: Vec<&&RunProfile> = runs
        .iter()
        .filter(|r| r.outcome == RunOutcome::Succeeded && r.cpu_used.is_some())
        .take(EFFICIENCY_RUNS as usize)
        .collect();
    if measured.len() == EFFICIENCY_RUNS as usize
        && measured
            .iter()
            .all(|r| r.efficiency_pct().is_some_and(|e| e < EFFICIENCY_FLOOR_PCT))
    {
        let peak = measured.iter().filter_map(|r| r.cpu_used).max().unwrap_or_default();
        return Some(Recommendation::FewerCores {
            cores: cores_for_use(peak).min(last.cores),
            was: last.cores,
            peak_used: peak,
        });
    }
    None
}

/// Whole cores that would have met `sla`: the run's cores scaled by how far
/// over it ran, rounded up (Spark executors take whole cores).
pub fn cores_for_sla(cores: Millicores, duration_s: i64, sla_s: i64) -> Millicores {
    if sla_s <= 0 {
        return cores;
    }
    let need = ceil_div_i128(cores.0 as i128 * duration_s as i128, sla_s as i128) as i64;
    Millicores((ceil_div_i128(need as i128, 1000) as i64 * 1000).max(1000))
}

/// Whole cores for a run that used `used` on average, with 25 % headroom.
pub fn cores_for_use(used: Millicores) -> Millicores {
    Millicores((ceil_div_i128((used.0 * 5 / 4) as i128, 1000) as i64).max(1) * 1000)
}

/// `a / b` rounded up, for `a >= 0`, `b > 0`.
fn ceil_div_i128(a: i128, b: i128) -> i128 {
    (a + b - 1) / b
}

fn mins(s: i64) -> String {
    if s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}

fn cores_text(c: Millicores) -> String {
    if c.0 % 1000 == 0 {
        format!("{}", c.0 / 1000)
    } else {
        format!("{:.1}", c.0 as f64 / 1000.0)
    }
}

/// Applies one finished run to its job's state: the new state and the
/// notices it raises. `earlier`: the job's previous runs, newest first (at
/// least [`EFFICIENCY_RUNS`] of them when there are), which the sizing
/// rule reads with this one.
pub fn record_run(
    mut state: JobState,
    run: &RunProfile,
    earlier: &[RunProfile],
    promote_after: i64,
) -> (JobState, Vec<Notice>) {
    let mut notices = Vec::new();
    let runs: Vec<&RunProfile> = std::iter::once(run).chain(earlier).collect();
    let advice = recommend(&runs);
    let notice = |kind: NoticeKind, message: String, recommended_cores| {
        let mut n = Notice::new(&run.tenant, Some(&run.job), kind, run.finished_at, message);
        n.recommended_cores = recommended_cores;
        n.dedupe_key = Some(format!("{}/{}/{}", kind.as_str(), run.tenant, run.app_id));
        n
    };
    state.runs += 1;
    state.last_finished_at = Some(
        state
            .last_finished_at
            .map_or(run.finished_at, |t| t.max(run.finished_at)),
    );
    if run.sla_seconds.is_some() {
        state.sla_seconds = run.sla_seconds;
    }
    let duration = run.duration_seconds();
    match run.outcome {
        RunOutcome::Succeeded => {
            if run.within_sla() {
                state.streak += 1;
            } else {
                state.streak = 0;
            }
            if let (Some(sla), Some(Recommendation::MoreCores { cores: rec, .. })) = (run.sla_seconds, &advice) {
                let over_pct = (duration - sla) * 100 / sla;
                let kind = if duration * 100 > sla * (100 + SLA_ALERT_PCT) {
                    NoticeKind::SlaAlert
                } else {
                    NoticeKind::SlaExceeded
                };
                notices.push(notice(
                    kind,
                    format!(
                        "job {} run {} took {}, {over_pct} % over its SLA of {}, on {} cores; \
                         request {} cores (driver plus executors) to finish within the SLA",
                        run.job,
                        run.app_id,
                        mins(duration),
                        mins(sla),
                        cores_text(run.cores),
                        cores_text(*rec),
                    ),
                    Some(*rec),
                ));
            }
        }
        RunOutcome::Failed | RunOutcome::Unknown => {
            state.streak = 0;
            notices.push(notice(
                NoticeKind::RunFailed,
                format!(
                    "job {} run {} failed after {}; see the driver's log (kubectl logs -l spark-app-selector={})",
                    run.job,
                    run.app_id,
                    mins(duration),
                    run.app_id
                ),
                None,
            ));
        }
        // Taken away, not failed: neither counts for nor against the job.
        RunOutcome::Preempted | RunOutcome::Deleted | RunOutcome::Running => {}
    }
    match run.efficiency_pct() {
        Some(pct) if pct < EFFICIENCY_FLOOR_PCT && run.outcome == RunOutcome::Succeeded => {
            state.inefficient_streak += 1;
            if state.inefficient_streak >= EFFICIENCY_RUNS
                && let Some(Recommendation::FewerCores { cores: rec, .. }) = advice
            {
                state.inefficient_streak = 0;
                notices.push(notice(
                    NoticeKind::LowEfficiency,
                    format!(
                        "job {} used under {EFFICIENCY_FLOOR_PCT} % of its {} cores in each of its last \
                         {EFFICIENCY_RUNS} runs ({pct} % in the latest); {} cores would do and cost less",
                        run.job,
                        cores_text(run.cores),
                        cores_text(rec)
                    ),
                    Some(rec),
                ));
            }
        }
        Some(_) => state.inefficient_streak = 0,
        None => {}
    }
    if state.stage == JobStage::Draft && state.streak >= promote_after.max(0) {
        state.stage = JobStage::Production;
        state.promoted_at = Some(run.finished_at);
        let why = match state.sla_seconds {
            Some(s) => format!("within its SLA of {}", mins(s)),
            None => "successful (no SLA declared)".to_owned(),
        };
        let mut n = notice(
            NoticeKind::Promoted,
            format!(
                "job {} promoted from draft to production after {} consecutive runs {why}; \
                 its next runs go to the tenant's pool",
                run.job, state.streak
            ),
            None,
        );
        n.dedupe_key = Some(format!("promoted/{}/{}", run.tenant, run.job));
        notices.push(n);
    }
    (state, notices)
}

/// The balance alert (R9.3), once per purchase period: the key names the
/// newest lot in force, so a top-up re-arms it.
pub fn balance_notice(
    tenant: &TenantId,
    balance: &crate::account::Balance,
    newest_lot: i64,
    now: DateTime<Utc>,
) -> Option<Notice> {
    if balance.state == crate::account::BalanceState::Ok || balance.purchased.0 <= 0 {
        return None;
    }
    let pct = balance.remaining.0.max(0) * 100 / balance.purchased.0;
    let eta = balance
        .depletion_at
        .map(|t| {
            format!(
                ", at the last 24 h's rate it runs out at {}",
                t.format("%Y-%m-%d %H:%M UTC")
            )
        })
        .unwrap_or_default();
    let mut n = Notice::new(
        tenant,
        None,
        NoticeKind::BalanceLow,
        now,
        format!(
            "tenant {tenant} has {pct} % of its vCPU-hours left ({} of {} vCPU-h){eta}; buy more to keep new drivers admitted",
            balance.remaining.0.max(0) / 3_600_000,
            balance.purchased.0 / 3_600_000
        ),
    );
    n.dedupe_key = Some(format!("balance_low/{tenant}/{newest_lot}"));
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn run(n: i64, minutes: i64, outcome: RunOutcome, sla_min: Option<i64>) -> RunProfile {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::hours(n);
        RunProfile {
            tenant: TenantId::new("acme").unwrap(),
            job: "ingest".into(),
            app_id: format!("spark-{n}"),
            pool: Pool::Draft,
            started_at: start,
            finished_at: start + TimeDelta::minutes(minutes),
            cores: Millicores(5000),
            vcpu: McSeconds(5000 * 60 * minutes),
            outcome,
            sla_seconds: sla_min.map(|m| m * 60),
            cpu_used: None,
            memory_used: None,
            data_bytes: None,
            source: None,
            target: None,
        }
    }

    #[test]
    fn three_runs_within_sla_promote_once() {
        let mut s = JobState::default();
        let mut all = Vec::new();
        for n in 0..4 {
            let (next, notices) = record_run(s, &run(n, 20, RunOutcome::Succeeded, Some(30)), &[], 3);
            s = next;
            all.push(notices);
        }
        assert!(all[0].is_empty() && all[1].is_empty());
        assert_eq!(all[2].len(), 1);
        assert_eq!(all[2][0].kind, NoticeKind::Promoted);
        assert!(
            all[2][0]
                .message
                .contains("after 3 consecutive runs within its SLA of 30 min")
        );
        assert!(all[3].is_empty(), "promoted once");
        assert_eq!(s.stage, JobStage::Production);
        assert_eq!(s.runs, 4);
    }

    #[test]
    fn a_miss_resets_the_streak_and_recommends_cores() {
        let (s, _) = record_run(
            JobState::default(),
            &run(0, 20, RunOutcome::Succeeded, Some(30)),
            &[],
            3,
        );
        let (s, n) = record_run(s, &run(1, 34, RunOutcome::Succeeded, Some(30)), &[], 3);
        assert_eq!(s.streak, 0);
        assert_eq!(n[0].kind, NoticeKind::SlaExceeded);
        // 5 cores × 34 / 30 = 5.67 → 6 whole cores.
        assert_eq!(n[0].recommended_cores, Some(Millicores(6000)));
        assert!(n[0].message.contains("13 % over its SLA of 30 min"), "{}", n[0].message);
        let (s, n) = record_run(s, &run(2, 40, RunOutcome::Succeeded, Some(30)), &[], 3);
        assert_eq!(n[0].kind, NoticeKind::SlaAlert);
        // 10 % over is still within the notify threshold: no notice, but not within SLA either.
        let (s, n) = record_run(s, &run(3, 33, RunOutcome::Succeeded, Some(30)), &[], 3);
        assert!(n.is_empty());
        assert_eq!(s.streak, 0);
        assert_eq!(s.stage, JobStage::Draft);
    }

    #[test]
    fn failures_alert_and_preemptions_are_neutral() {
        let (s, _) = record_run(JobState::default(), &run(0, 5, RunOutcome::Succeeded, None), &[], 3);
        let (s, _) = record_run(s, &run(1, 5, RunOutcome::Preempted, None), &[], 3);
        assert_eq!(s.streak, 1);
        let (s, n) = record_run(s, &run(2, 5, RunOutcome::Failed, None), &[], 3);
        assert_eq!(s.streak, 0);
        assert_eq!(n[0].kind, NoticeKind::RunFailed);
    }

    #[test]
    fn consistent_low_use_recommends_fewer_cores() {
        let mut s = JobState {
            stage: JobStage::Production,
            ..JobState::default()
        };
        let mut last = Vec::new();
        let mut earlier: Vec<RunProfile> = Vec::new();
        for (n, used) in [(0, 1000), (1, 2000), (2, 1500)] {
            let mut r = run(n, 10, RunOutcome::Succeeded, None);
            r.cpu_used = Some(Millicores(used));
            (s, last) = record_run(s, &r, &earlier, 3);
            earlier.insert(0, r);
        }
        assert_eq!(last[0].kind, NoticeKind::LowEfficiency);
        // The peak of the three, 2 cores, × 1.25 = 2.5 → 3 cores (not the
        // latest run's 1.5 → 2: it must hold the busiest of them).
        assert_eq!(last[0].recommended_cores, Some(Millicores(3000)));
        assert!(
            last[0].message.contains("under 60 % of its 5 cores"),
            "{}",
            last[0].message
        );
        // The job's profile reads the same rule over the same runs: one number.
        let runs: Vec<&RunProfile> = earlier.iter().collect();
        assert_eq!(recommend(&runs).map(|r| r.cores()), last[0].recommended_cores);
    }

    /// Regression (issue 21): the notices and the job profile had two rules
    /// (over 10 % vs any overrun, the last run vs the peak of three) and
    /// could tell a tenant two numbers. Whatever the runs, every notice
    /// that recommends cores says what the profile says after that run.
    #[test]
    fn notices_and_the_profile_recommend_one_number() {
        let mut s = JobState::default();
        let mut earlier: Vec<RunProfile> = Vec::new();
        let mut recommended = 0;
        for n in 0..200i64 {
            let minutes = 15 + (n * 7) % 25;
            let outcome = if n % 11 == 5 {
                RunOutcome::Failed
            } else {
                RunOutcome::Succeeded
            };
            let mut r = run(n, minutes, outcome, Some(30));
            r.cpu_used = (n % 3 != 0).then(|| Millicores(500 + (n * 371) % 4000));
            let (next, notices) = record_run(s, &r, &earlier, 3);
            s = next;
            earlier.insert(0, r);
            let runs: Vec<&RunProfile> = earlier.iter().collect();
            for notice in notices.iter().filter(|n| n.recommended_cores.is_some()) {
                recommended += 1;
                assert_eq!(
                    recommend(&runs).map(|r| r.cores()),
                    notice.recommended_cores,
                    "run {n}: {}",
                    notice.message
                );
            }
        }
        assert!(recommended > 20, "the runs must raise such notices: {recommended}");
    }

    #[test]
    fn zero_draft_runs_promotes_on_the_first_success() {
        let (s, n) = record_run(JobState::default(), &run(0, 5, RunOutcome::Succeeded, None), &[], 0);
        assert_eq!(s.stage, JobStage::Production);
        assert_eq!(n[0].kind, NoticeKind::Promoted);
    }
}
