//! The Postgres ledger. Every method is one transaction; accruals are fenced
//! by the writer's epoch, and the change feed is `LISTEN/NOTIFY` on
//! [`crate::feed::CHANNEL`], sent inside the writing transaction so a
//! listener never hears of a change that did not commit.
//!
//! Transactions are never wrapped in `tokio::time::timeout` or `select!`:
//! sqlx's `begin` is not cancel-safe and a cancelled begin can leave a
//! connection idle in transaction. Time limits are set server-side instead
//! (`statement_timeout`, `idle_in_transaction_session_timeout`).

use super::{
    AuditReport, Delivery, Epoch, Granularity, JobRun, JobStats, JobSummary, LedgerStore, NoticeQuery, PruneReport,
    RunOutcome, RunQuery, TenantBooks, TenantSummary, UsageBucket, check_notify_url, check_range, pod_violations,
    tenant_violations,
};
use crate::account::{Account, Balance, Lot};
use crate::accrual::{
    AccrualOutcome, AccrualRequest, ClosedDriver, PodCheckpoint, PodOutcome, PodUsage, plan_accruals,
};
use crate::binding::{PodBinding, plan_bindings};
use crate::error::{LedgerError, Result};
use crate::feed::{CHANNEL, ChangeKind, LedgerChange};
use crate::ids::{TenantId, validate_namespace};
use crate::lifecycle::{JobStage, JobState, Notice, NoticeKind, RunProfile, balance_notice_for, profile, record_run};
use crate::pool::PoolCapacity;
use crate::purchase::{Purchase, PurchaseKind, PurchaseReceipt, PurchaseRequest, check_dedicated_room};
use crate::slices::{Decision, Horizon, JobSchedule, Offset, SlicePolicy, StoredSchedule};
use crate::store::memory::check_epoch;
use crate::tenant::{
    NamespaceBinding, NewTenant, Tenant, TenantPatch, TenantRecord, TenantStatus, check_namespace_changes,
};
use crate::time::{rate_window_start, trunc_secs};
use crate::units::{Bytes, McSeconds, Millicores};
use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// The embedded migrations (`ledger/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres ledger.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Journal partitions known to exist, as (year, month).
    partitions: std::sync::Arc<Mutex<HashSet<(i32, u32)>>>,
    /// Checkpoints of open pods, trusted only for the epoch this instance
    /// claimed. Accruals through one instance run one at a time.
    writer: std::sync::Arc<tokio::sync::Mutex<WriterCache>>,
}

/// What the fenced writer remembers between batches, so that a batch of
/// running pods needs no checkpoint read (a read of every running pod per
/// batch halves accrual throughput). It is the truth because only the
/// instance that claimed an epoch writes with it, one batch at a time, and
/// a batch that fails forgets its pods. Belt and braces: the journal key
/// `(pod_uid, from_ts)` makes a stale checkpoint collide rather than charge.
#[derive(Debug, Default)]
struct WriterCache {
    epoch: Option<i64>,
    open: crate::accrual::Checkpoints,
}

impl PgStore {
    /// Connects with production settings: server-side time limits so a stuck
    /// statement or an abandoned transaction is ended by Postgres itself.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("sparkcap").options([
            ("statement_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "60s"),
            ("lock_timeout", "10s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            partitions: Default::default(),
            writer: Default::default(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. sqlx holds a Postgres advisory lock while
    /// it migrates, so replicas starting together migrate once.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Makes sure the journal has a partition for every month in `times`,
    /// inside the accrual transaction (a month's first batch takes the DDL
    /// lock; every other batch finds the month in the cache). Returns the
    /// months to remember once the transaction commits.
    async fn ensure_partitions(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        times: impl Iterator<Item = DateTime<Utc>>,
    ) -> Result<Vec<(i32, u32)>> {
        let mut months: Vec<((i32, u32), DateTime<Utc>)> = times.map(|t| ((t.year(), t.month()), t)).collect();
        months.sort_by_key(|m| m.0);
        months.dedup_by_key(|m| m.0);
        let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut created = Vec::new();
        for (month, t) in months.into_iter().filter(|(m, _)| !known.contains(m)) {
            sqlx::query("SELECT sparkcap_ensure_interval_partition($1)")
                .bind(t)
                .execute(&mut **tx)
                .await?;
            created.push(month);
        }
        Ok(created)
    }

    async fn fence(tx: &mut Transaction<'_, Postgres>, epoch: Epoch) -> Result<()> {
        // FOR SHARE: writers of the same epoch run side by side; a claim
        // (UPDATE) waits for them, and every write after it sees the new epoch.
        let current: i64 = sqlx::query_scalar("SELECT epoch FROM ledger_fence FOR SHARE")
            .fetch_one(&mut **tx)
            .await?;
        check_epoch(epoch.0, current)
    }

    /// A fenced (leader) write checks its epoch in its own transaction; the
    /// API's writes carry none.
    async fn check_fence(tx: &mut Transaction<'_, Postgres>, fence: Option<Epoch>) -> Result<()> {
        match fence {
            Some(e) => Self::fence(tx, e).await,
            None => Ok(()),
        }
    }

    async fn notify(tx: &mut Transaction<'_, Postgres>, changes: &[LedgerChange]) -> Result<()> {
        let payloads: Vec<String> = changes
            .iter()
            .map(|c| serde_json::to_string(c).expect("a change serializes"))
            .collect();
        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn load_lots(
        conn: &mut sqlx::PgConnection,
        tenants: &[String],
        horizon: DateTime<Utc>,
    ) -> Result<HashMap<TenantId, Vec<Lot>>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, valid_from, valid_until, amount_mcs, consumed_mcs FROM purchases \
             WHERE tenant_id = ANY($1) AND kind = 'vcpu_hours' AND valid_until > $2 ORDER BY id",
        )
        .bind(tenants)
        .bind(horizon)
        .fetch_all(conn)
        .await?;
        let mut out: HashMap<TenantId, Vec<Lot>> = HashMap::new();
        for r in rows {
            out.entry(TenantId::new(r.try_get::<String, _>("tenant_id")?)?)
                .or_default()
                .push(Lot {
                    purchase_id: r.try_get("id")?,
                    valid_from: r.try_get("valid_from")?,
                    valid_until: r.try_get("valid_until")?,
                    amount: McSeconds(r.try_get("amount_mcs")?),
                    consumed: McSeconds(r.try_get("consumed_mcs")?),
                });
        }
        Ok(out)
    }

    async fn balances(
        &self,
        ids: &[String],
        debts: &HashMap<String, (i64, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Balance>> {
        let horizon = debts.values().filter_map(|(_, s)| *s).min().map_or(now, |s| s.min(now));
        let mut conn = self.pool.acquire().await?;
        let mut lots = Self::load_lots(&mut conn, ids, horizon).await?;
        let rates: HashMap<String, i64> = sqlx::query(
            "SELECT tenant_id, SUM(charged_mcs)::bigint AS c FROM usage_hourly \
             WHERE tenant_id = ANY($1) AND hour >= $2 AND pool <> 'dedicated' GROUP BY tenant_id",
        )
        .bind(ids)
        .bind(rate_window_start(now))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("c")?)))
        .collect::<Result<_>>()?;
        ids.iter()
            .map(|id| {
                let tid = TenantId::new(id.clone())?;
                let (debt, debt_since) = debts.get(id).copied().unwrap_or((0, None));
                let account = Account {
                    lots: lots.remove(&tid).unwrap_or_default(),
                    debt: McSeconds(debt),
                    debt_since,
                };
                let last24 = McSeconds(rates.get(id).copied().unwrap_or(0));
                Ok((id.clone(), account.balance(now, last24)))
            })
            .collect()
    }
}

fn tenant_from_row(r: &sqlx::postgres::PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::new(r.try_get::<String, _>("id")?)?,
        display_name: r.try_get("display_name")?,
        status: r.try_get::<String, _>("status")?.parse()?,
        tier: r.try_get::<String, _>("tier")?.parse()?,
        created_at: r.try_get("created_at")?,
    })
}

fn purchase_from_row(r: &sqlx::postgres::PgRow) -> Result<Purchase> {
    Ok(Purchase {
        id: r.try_get("id")?,
        tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
        kind: r.try_get::<String, _>("kind")?.parse()?,
        quantity: r.try_get("quantity")?,
        period: r.try_get::<String, _>("period")?.parse()?,
        valid_from: r.try_get("valid_from")?,
        valid_until: r.try_get("valid_until")?,
        idempotency_key: r.try_get("idempotency_key")?,
        created_at: r.try_get("created_at")?,
        consumed: McSeconds(r.try_get("consumed_mcs")?),
    })
}

fn checkpoint_from_row(r: &sqlx::postgres::PgRow) -> Result<PodCheckpoint> {
    Ok(PodCheckpoint {
        pod: PodUsage {
            uid: r.try_get("pod_uid")?,
            tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
            namespace: r.try_get("namespace")?,
            name: r.try_get("pod_name")?,
            app_id: r.try_get("app_id")?,
            job: r.try_get("job")?,
            role: r.try_get("role")?,
            pool: r.try_get::<String, _>("pool")?.parse()?,
            cpu: Millicores(r.try_get("cpu_mc")?),
            opportunistic: r.try_get("opportunistic")?,
            started_at: r.try_get("started_at")?,
        },
        charged_until: r.try_get("charged_until")?,
        finished_at: r.try_get("finished_at")?,
        outcome: r
            .try_get::<Option<String>, _>("outcome")?
            .map(|o| o.parse())
            .transpose()?,
        charged: McSeconds(r.try_get("charged_mcs")?),
        opportunistic: McSeconds(r.try_get("opportunistic_mcs")?),
    })
}

fn binding_from_row(r: &sqlx::postgres::PgRow) -> Result<PodBinding> {
    Ok(PodBinding {
        uid: r.try_get("pod_uid")?,
        tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
        namespace: r.try_get("namespace")?,
        name: r.try_get("pod_name")?,
        app_id: r.try_get("app_id")?,
        job: r.try_get("job")?,
        role: r.try_get("role")?,
        pool: r.try_get::<String, _>("pool")?.parse()?,
        cpu: Millicores(r.try_get("cpu_mc")?),
        opportunistic: r.try_get("opportunistic")?,
        node: r.try_get("node")?,
        bound_at: r.try_get("bound_at")?,
    })
}

const BINDING_COLUMNS: &str = "b.pod_uid, b.tenant_id, b.namespace, b.pod_name, b.app_id, b.job, b.role, b.pool, b.cpu_mc, b.opportunistic, b.node, b.bound_at";

fn job_state_from_row(r: &sqlx::postgres::PgRow) -> Result<JobState> {
    let stage: String = r.try_get("stage")?;
    Ok(JobState {
        stage: JobStage::parse(&stage).ok_or_else(|| LedgerError::Corrupt(format!("unknown job stage {stage:?}")))?,
        runs: r.try_get("finished_runs")?,
        streak: r.try_get("streak")?,
        inefficient_streak: r.try_get("inefficient_streak")?,
        sla_seconds: r.try_get("sla_seconds")?,
        last_finished_at: r.try_get("last_finished_at")?,
        promoted_at: r.try_get("promoted_at")?,
    })
}

const PROFILE_COLUMNS: &str = "tenant_id, app_id, job, pool, started_at, finished_at, cores_mc, vcpu_mcs, outcome, \
     sla_seconds, cpu_used_mc, memory_used_bytes, data_bytes, source_type, target_type";

fn profile_from_row(r: &sqlx::postgres::PgRow) -> Result<RunProfile> {
    let outcome: String = r.try_get("outcome")?;
    Ok(RunProfile {
        tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
        job: r.try_get("job")?,
        app_id: r.try_get("app_id")?,
        pool: r.try_get::<String, _>("pool")?.parse()?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        cores: Millicores(r.try_get("cores_mc")?),
        vcpu: McSeconds(r.try_get("vcpu_mcs")?),
        outcome: serde_json::from_value(serde_json::Value::String(outcome.clone()))
            .map_err(|_| LedgerError::Corrupt(format!("unknown run outcome {outcome:?}")))?,
        sla_seconds: r.try_get("sla_seconds")?,
        cpu_used: r.try_get::<Option<i64>, _>("cpu_used_mc")?.map(Millicores),
        memory_used: r.try_get::<Option<i64>, _>("memory_used_bytes")?.map(Bytes),
        data_bytes: r.try_get("data_bytes")?,
        source: r.try_get("source_type")?,
        target: r.try_get("target_type")?,
    })
}

const NOTICE_COLUMNS: &str = "id, tenant_id, job, kind, at, message, recommended_mc, dedupe_key, attempts, \
     last_attempt_at, last_error, delivered_at";

fn notice_from_row(r: &sqlx::postgres::PgRow) -> Result<Notice> {
    let kind: String = r.try_get("kind")?;
    Ok(Notice {
        id: r.try_get("id")?,
        tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
        job: r.try_get("job")?,
        kind: NoticeKind::parse(&kind).ok_or_else(|| LedgerError::Corrupt(format!("unknown notice kind {kind:?}")))?,
        at: r.try_get("at")?,
        message: r.try_get("message")?,
        recommended_cores: r.try_get::<Option<i64>, _>("recommended_mc")?.map(Millicores),
        dedupe_key: r.try_get("dedupe_key")?,
        attempts: r.try_get("attempts")?,
        last_attempt_at: r.try_get("last_attempt_at")?,
        last_error: r.try_get("last_error")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// Inserts notices, skipping those whose dedupe key is taken.
async fn insert_notices(tx: &mut Transaction<'_, Postgres>, notices: &[Notice]) -> Result<Vec<Option<i64>>> {
    let mut ids = Vec::with_capacity(notices.len());
    for n in notices {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO notices (tenant_id, job, kind, at, message, recommended_mc, dedupe_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(n.tenant.as_str())
        .bind(n.job.as_deref())
        .bind(n.kind.as_str())
        .bind(trunc_secs(n.at))
        .bind(&n.message)
        .bind(n.recommended_cores.map(|c| c.0))
        .bind(n.dedupe_key.as_deref())
        .fetch_optional(&mut **tx)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Profiles the runs `closed` end, applies them to their jobs' lifecycle and
/// stores profiles, states and notices: inside the accrual transaction.
async fn finish_runs(tx: &mut Transaction<'_, Postgres>, closed: &[ClosedDriver]) -> Result<()> {
    let apps: Vec<&str> = closed.iter().filter_map(|c| c.driver.pod.app_id.as_deref()).collect();
    let mut pods: HashMap<String, Vec<PodCheckpoint>> = HashMap::new();
    for row in sqlx::query(sqlx::AssertSqlSafe(checkpoint_sql("WHERE p.app_id = ANY($1)")))
        .bind(&apps)
        .fetch_all(&mut **tx)
        .await?
    {
        let cp = checkpoint_from_row(&row)?;
        if let Some(app) = cp.pod.app_id.clone() {
            pods.entry(app).or_default().push(cp);
        }
    }
    let tenants: Vec<&str> = closed.iter().map(|c| c.driver.pod.tenant.as_str()).collect();
    let jobs: Vec<&str> = closed.iter().map(|c| c.job.as_str()).collect();
    let mut states: HashMap<(TenantId, String), JobState> = HashMap::new();
    for r in sqlx::query(
        "SELECT * FROM job_stats WHERE (tenant_id, job) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
         ORDER BY tenant_id, job FOR UPDATE",
    )
    .bind(&tenants)
    .bind(&jobs)
    .fetch_all(&mut **tx)
    .await?
    {
        let key = (TenantId::new(r.try_get::<String, _>("tenant_id")?)?, r.try_get("job")?);
        states.insert(key, job_state_from_row(&r)?);
    }
    // Each job's latest runs, newest first: the sizing rule reads them.
    let mut recent: HashMap<(TenantId, String), Vec<RunProfile>> = HashMap::new();
    for r in sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.* FROM (SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[])) AS k(t, j) \
         CROSS JOIN LATERAL (SELECT {PROFILE_COLUMNS} FROM run_profiles WHERE tenant_id = k.t AND job = k.j \
         ORDER BY finished_at DESC, app_id LIMIT $3) p"
    )))
    .bind(&tenants)
    .bind(&jobs)
    .bind(crate::lifecycle::EFFICIENCY_RUNS)
    .fetch_all(&mut **tx)
    .await?
    {
        let p = profile_from_row(&r)?;
        recent.entry((p.tenant.clone(), p.job.clone())).or_default().push(p);
    }
    let mut profiles = Vec::with_capacity(closed.len());
    let mut notices = Vec::new();
    for c in closed {
        let app = c.driver.pod.app_id.as_deref().and_then(|a| pods.get(a));
        let Some(run) = profile(c, app.into_iter().flatten()) else {
            continue;
        };
        let key = (run.tenant.clone(), run.job.clone());
        let state = states.remove(&key).unwrap_or_default();
        let earlier = recent.entry(key.clone()).or_default();
        let (state, raised) = record_run(state, &run, earlier, c.facts.promote_after);
        // A second run of the job in this batch sees this one first.
        earlier.insert(0, run.clone());
        earlier.truncate(crate::lifecycle::EFFICIENCY_RUNS as usize);
        states.insert(key, state);
        notices.extend(raised);
        profiles.push(run);
    }
    let touched: Vec<(&(TenantId, String), &JobState)> = states.iter().collect();
    sqlx::query(
        "INSERT INTO job_stats (tenant_id, job, finished_runs, last_finished_at, stage, streak, inefficient_streak, \
         sla_seconds, promoted_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], \
         $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::timestamptz[]) \
         ON CONFLICT (tenant_id, job) DO UPDATE SET finished_runs = EXCLUDED.finished_runs, \
         last_finished_at = EXCLUDED.last_finished_at, stage = EXCLUDED.stage, streak = EXCLUDED.streak, \
         inefficient_streak = EXCLUDED.inefficient_streak, sla_seconds = EXCLUDED.sla_seconds, \
         promoted_at = EXCLUDED.promoted_at",
    )
    .bind(touched.iter().map(|((t, _), _)| t.as_str()).collect::<Vec<_>>())
    .bind(touched.iter().map(|((_, j), _)| j.as_str()).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.runs).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.last_finished_at).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.stage.as_str()).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.streak).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.inefficient_streak).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.sla_seconds).collect::<Vec<_>>())
    .bind(touched.iter().map(|(_, s)| s.promoted_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    let p = &profiles;
    let outcome = |r: &RunProfile| {
        serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO run_profiles ({PROFILE_COLUMNS}) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], \
         $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], \
         $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[]) ON CONFLICT DO NOTHING"
    )))
    .bind(p.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.app_id.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.job.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.pool.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.finished_at).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.cores.0.max(1)).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.vcpu.0).collect::<Vec<_>>())
    .bind(p.iter().map(outcome).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.sla_seconds).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.cpu_used.map(|c| c.0)).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.memory_used.map(|b| b.0)).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.data_bytes).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.source.as_deref()).collect::<Vec<_>>())
    .bind(p.iter().map(|r| r.target.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    insert_notices(tx, &notices).await?;
    Ok(())
}

fn schedule_from_row(r: &sqlx::postgres::PgRow) -> Result<StoredSchedule> {
    Ok(StoredSchedule {
        tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
        job: r.try_get("job")?,
        pool: r.try_get::<String, _>("pool")?.parse()?,
        spec: JobSchedule {
            schedule: r.try_get("schedule")?,
            offset: Offset(r.try_get("utc_offset_minutes")?),
            duration: chrono::TimeDelta::seconds(r.try_get("duration_seconds")?),
            cores: r.try_get("cores_mc")?,
        },
        source: r.try_get("source")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Journal lines in PostgreSQL's binary `COPY` format (header, one tuple
/// of 9 fields per line, trailer): texts as UTF-8, timestamps as
/// microseconds since 2000-01-01 UTC, integers big-endian.
fn journal_copy_data(lines: &[crate::accrual::UsageInterval], epoch: i64) -> Vec<u8> {
    fn text(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as i32).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    fn int8(b: &mut Vec<u8>, v: i64) {
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&v.to_be_bytes());
    }
    let pg_epoch = DateTime::<Utc>::from_timestamp(946_684_800, 0).expect("2000-01-01 is a valid time");
    let micros = |t: DateTime<Utc>| (t - pg_epoch).num_microseconds().unwrap_or(i64::MAX);
    let mut b = Vec::with_capacity(21 + lines.len() * (2 + 9 * 4 + 6 * 8 + 64));
    b.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    for l in lines {
        b.extend_from_slice(&9i16.to_be_bytes());
        text(&mut b, &l.pod_uid);
        text(&mut b, l.tenant.as_str());
        text(&mut b, l.pool.as_str());
        int8(&mut b, micros(l.from));
        int8(&mut b, micros(l.to));
        int8(&mut b, l.cpu.0);
        int8(&mut b, l.charged.0);
        int8(&mut b, l.opportunistic.0);
        int8(&mut b, epoch);
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

/// Pods with their checkpoint. While a pod runs, its checkpoint is the end
/// of its newest journal line (its row is written only when it appears and
/// when it closes), and its usage is cpu × seconds up to there.
/// `filter` is a `WHERE` clause over `pod_usage p`.
fn checkpoint_sql(filter: &str) -> String {
    format!(
        "SELECT pod_uid, tenant_id, namespace, pod_name, app_id, job, role, pool, cpu_mc, opportunistic, started_at, \
         charged_until, finished_at, outcome, \
         CASE WHEN finished_at IS NOT NULL THEN charged_mcs WHEN opportunistic THEN 0 ELSE usage END AS charged_mcs, \
         CASE WHEN finished_at IS NOT NULL THEN opportunistic_mcs WHEN opportunistic THEN usage ELSE 0 END AS opportunistic_mcs \
         FROM (SELECT p.pod_uid, p.tenant_id, p.namespace, p.pod_name, p.app_id, p.job, p.role, p.pool, p.cpu_mc, \
               p.opportunistic, p.started_at, p.finished_at, p.outcome, p.charged_mcs, p.opportunistic_mcs, j.cu AS charged_until, \
               p.cpu_mc * EXTRACT(EPOCH FROM j.cu - p.started_at)::bigint AS usage \
               FROM pod_usage p CROSS JOIN LATERAL (SELECT CASE WHEN p.finished_at IS NOT NULL THEN p.charged_until \
                   ELSE COALESCE((SELECT u.to_ts FROM usage_intervals u WHERE u.pod_uid = p.pod_uid \
                   ORDER BY u.from_ts DESC LIMIT 1), p.started_at) END AS cu) j {filter}) c"
    )
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn create_tenant(&self, new: NewTenant, now: DateTime<Utc>) -> Result<Tenant> {
        let namespaces = new.namespaces.clone();
        let tenant = new.into_tenant(trunc_secs(now))?;
        check_namespace_changes(&tenant.id, &namespaces, &[], |_| None)?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, display_name, status, tier, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant.id.as_str())
        .bind(&tenant.display_name)
        .bind(tenant.status.as_str())
        .bind(tenant.tier.as_str())
        .bind(tenant.created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(LedgerError::TenantExists(tenant.id));
        }
        Self::bind_all(&mut tx, &tenant.id, &namespaces).await?;
        let mut changes = vec![LedgerChange::of(ChangeKind::Tenant, &tenant.id)];
        if !namespaces.is_empty() {
            changes.push(LedgerChange::of(ChangeKind::Binding, &tenant.id));
        }
        Self::notify(&mut tx, &changes).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query("SELECT id, display_name, status, tier, created_at FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| tenant_from_row(&r))
            .transpose()
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        sqlx::query("SELECT id, display_name, status, tier, created_at FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn update_tenant(&self, id: &TenantId, patch: &TenantPatch) -> Result<TenantRecord> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT id, display_name, status, tier, created_at FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| LedgerError::UnknownTenant(id.clone()))?;
        let mut tenant = tenant_from_row(&row)?;
        patch.apply(&mut tenant)?;
        let mentioned: Vec<&str> = patch
            .bind_namespaces
            .iter()
            .chain(&patch.unbind_namespaces)
            .map(String::as_str)
            .collect();
        let owners: HashMap<String, String> =
            sqlx::query("SELECT namespace, tenant_id FROM namespace_bindings WHERE namespace = ANY($1) FOR UPDATE")
                .bind(&mentioned)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get("namespace")?, r.try_get("tenant_id")?)))
                .collect::<Result<_>>()?;
        check_namespace_changes(id, &patch.bind_namespaces, &patch.unbind_namespaces, |ns| {
            owners.get(ns).and_then(|t| TenantId::new(t.clone()).ok())
        })?;
        sqlx::query("UPDATE tenants SET display_name = $2, status = $3, tier = $4 WHERE id = $1")
            .bind(id.as_str())
            .bind(&tenant.display_name)
            .bind(tenant.status.as_str())
            .bind(tenant.tier.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM namespace_bindings WHERE tenant_id = $1 AND (namespace = ANY($2) OR $3)")
            .bind(id.as_str())
            .bind(&patch.unbind_namespaces)
            .bind(tenant.status == TenantStatus::Deleted)
            .execute(&mut *tx)
            .await?;
        Self::bind_all(&mut tx, id, &patch.bind_namespaces).await?;
        let namespaces: Vec<String> =
            sqlx::query_scalar("SELECT namespace FROM namespace_bindings WHERE tenant_id = $1 ORDER BY namespace")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await?;
        Self::notify(
            &mut tx,
            &[
                LedgerChange::of(ChangeKind::Tenant, id),
                LedgerChange::of(ChangeKind::Binding, id),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(TenantRecord { tenant, namespaces })
    }

    async fn bind_namespace(&self, namespace: &str, tenant: &TenantId) -> Result<NamespaceBinding> {
        validate_namespace(namespace)?;
        let mut tx = self.pool.begin().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1 FOR SHARE")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => return Err(LedgerError::UnknownTenant(tenant.clone())),
            Some("deleted") => return Err(LedgerError::TenantDeleted(tenant.clone())),
            Some(_) => {}
        }
        sqlx::query("INSERT INTO namespace_bindings (namespace, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(namespace)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let owner: String = sqlx::query_scalar("SELECT tenant_id FROM namespace_bindings WHERE namespace = $1")
            .bind(namespace)
            .fetch_one(&mut *tx)
            .await?;
        if owner != tenant.as_str() {
            return Err(LedgerError::NamespaceTaken {
                namespace: namespace.to_owned(),
                owner: TenantId::new(owner)?,
            });
        }
        Self::notify(&mut tx, &[LedgerChange::of(ChangeKind::Binding, tenant)]).await?;
        tx.commit().await?;
        Ok(NamespaceBinding {
            namespace: namespace.to_owned(),
            tenant: tenant.clone(),
        })
    }

    async fn unbind_namespace(&self, namespace: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let owner: Option<String> =
            sqlx::query_scalar("DELETE FROM namespace_bindings WHERE namespace = $1 RETURNING tenant_id")
                .bind(namespace)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(owner) = &owner {
            Self::notify(
                &mut tx,
                &[LedgerChange::of(ChangeKind::Binding, &TenantId::new(owner.clone())?)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(owner.is_some())
    }

    async fn namespace_bindings(&self) -> Result<Vec<NamespaceBinding>> {
        sqlx::query("SELECT namespace, tenant_id FROM namespace_bindings ORDER BY namespace")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(NamespaceBinding {
                    namespace: r.try_get("namespace")?,
                    tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
                })
            })
            .collect()
    }

    async fn claim_epoch(&self, holder: &str) -> Result<Epoch> {
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE ledger_fence SET epoch = epoch + 1, holder = $1, claimed_at = now() RETURNING epoch",
        )
        .bind(holder)
        .fetch_one(&self.pool)
        .await?;
        let mut w = self.writer.lock().await;
        w.epoch = Some(epoch);
        w.open.clear();
        Ok(Epoch(epoch))
    }

    async fn set_pool_capacity(&self, epoch: Epoch, capacity: &PoolCapacity) -> Result<()> {
        capacity.validate()?;
        let mut tx = self.pool.begin().await?;
        Self::fence(&mut tx, epoch).await?;
        sqlx::query(
            "INSERT INTO pools (pool, nodes, cpu_mc, memory_bytes, spark_units, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pool) DO UPDATE SET nodes = EXCLUDED.nodes, \
             cpu_mc = EXCLUDED.cpu_mc, memory_bytes = EXCLUDED.memory_bytes, \
             spark_units = EXCLUDED.spark_units, updated_at = EXCLUDED.updated_at",
        )
        .bind(capacity.pool.as_str())
        .bind(capacity.nodes)
        .bind(capacity.cpu.0)
        .bind(capacity.memory.0)
        .bind(capacity.spark_units)
        .bind(trunc_secs(capacity.updated_at))
        .execute(&mut *tx)
        .await?;
        Self::notify(&mut tx, &[LedgerChange::global(ChangeKind::Pool)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pools(&self) -> Result<Vec<PoolCapacity>> {
        let mut out: Vec<PoolCapacity> = sqlx::query("SELECT * FROM pools")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(PoolCapacity {
                    pool: r.try_get::<String, _>("pool")?.parse()?,
                    nodes: r.try_get("nodes")?,
                    cpu: Millicores(r.try_get("cpu_mc")?),
                    memory: Bytes(r.try_get("memory_bytes")?),
                    spark_units: r.try_get("spark_units")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|p| p.pool);
        Ok(out)
    }

    async fn record_purchase(&self, request: &PurchaseRequest, now: DateTime<Utc>) -> Result<PurchaseReceipt> {
        // Two racing first attempts with one key: the loser hits the unique
        // index, rolls back, and on its second pass finds the winner's row.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_record_purchase(request, now).await {
                Err(LedgerError::Database(e)) if attempt < 3 && is_unique_violation(&e) => continue,
                other => return other,
            }
        }
    }

    async fn purchases(&self, tenant: &TenantId) -> Result<Vec<Purchase>> {
        self.require_tenant(tenant).await?;
        sqlx::query("SELECT * FROM purchases WHERE tenant_id = $1 ORDER BY id DESC")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(purchase_from_row)
            .collect()
    }

    async fn accrue(&self, epoch: Epoch, batch: &[AccrualRequest]) -> Result<Vec<AccrualOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.writer.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.accrue_once(&mut writer, epoch, batch).await {
                Ok(outcomes) => return Ok(outcomes),
                Err(e) => {
                    // The outcome is unknown (it may even have committed):
                    // forget these pods and read them back next time.
                    for r in batch {
                        writer.open.remove(&r.pod.uid);
                    }
                    match e {
                        // A remembered checkpoint was stale: the journal key
                        // caught it. Read the truth and try once more.
                        LedgerError::Database(ref d) if attempt < 2 && is_unique_violation(d) => continue,
                        LedgerError::ConcurrentWrite(_) if attempt < 2 => continue,
                        e => return Err(e),
                    }
                }
            }
        }
    }

    async fn record_bindings(&self, epoch: Epoch, bindings: &[PodBinding]) -> Result<Vec<Result<()>>> {
        let mut tx = self.pool.begin().await?;
        Self::fence(&mut tx, epoch).await?;
        let uids: Vec<&str> = bindings.iter().map(|b| b.uid.as_str()).collect();
        let mut known: HashMap<String, (PodBinding, bool)> = HashMap::new();
        for row in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BINDING_COLUMNS}, (b.closed_at IS NOT NULL OR p.pod_uid IS NOT NULL) AS fixed \
             FROM pod_bindings b LEFT JOIN pod_usage p ON p.pod_uid = b.pod_uid WHERE b.pod_uid = ANY($1)"
        )))
        .bind(&uids)
        .fetch_all(&mut *tx)
        .await?
        {
            let b = binding_from_row(&row)?;
            known.insert(b.uid.clone(), (b, row.try_get("fixed")?));
        }
        let names: Vec<&str> = bindings.iter().map(|b| b.tenant.as_str()).collect();
        let tenants: HashSet<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE id = ANY($1)")
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let (outcomes, write) = plan_bindings(
            bindings,
            |uid| known.get(uid).cloned(),
            |t| tenants.contains(t.as_str()),
        );
        if !write.is_empty() {
            let col = |f: &dyn Fn(&PodBinding) -> Option<String>| write.iter().map(|b| f(b)).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO pod_bindings (pod_uid, tenant_id, namespace, pod_name, app_id, job, role, pool, cpu_mc, \
                 opportunistic, node, bound_at, epoch) \
                 SELECT u, t, n, pn, a, j, r, pl, c, o, nd, ba, $13 FROM UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bool[], $11::text[], \
                 $12::timestamptz[]) AS x(u, t, n, pn, a, j, r, pl, c, o, nd, ba) \
                 ON CONFLICT (pod_uid) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, namespace = EXCLUDED.namespace, \
                 pod_name = EXCLUDED.pod_name, app_id = EXCLUDED.app_id, job = EXCLUDED.job, role = EXCLUDED.role, \
                 pool = EXCLUDED.pool, cpu_mc = EXCLUDED.cpu_mc, opportunistic = EXCLUDED.opportunistic, \
                 node = EXCLUDED.node, bound_at = EXCLUDED.bound_at, epoch = EXCLUDED.epoch",
            )
            .bind(col(&|b| Some(b.uid.clone())))
            .bind(col(&|b| Some(b.tenant.to_string())))
            .bind(col(&|b| Some(b.namespace.clone())))
            .bind(col(&|b| Some(b.name.clone())))
            .bind(col(&|b| b.app_id.clone()))
            .bind(col(&|b| b.job.clone()))
            .bind(col(&|b| b.role.clone()))
            .bind(col(&|b| Some(b.pool.as_str().to_owned())))
            .bind(write.iter().map(|b| b.cpu.0).collect::<Vec<i64>>())
            .bind(write.iter().map(|b| b.opportunistic).collect::<Vec<bool>>())
            .bind(col(&|b| Some(b.node.clone())))
            .bind(write.iter().map(|b| trunc_secs(b.bound_at)).collect::<Vec<_>>())
            .bind(epoch.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn binding(&self, uid: &str) -> Result<Option<PodBinding>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BINDING_COLUMNS} FROM pod_bindings b WHERE b.pod_uid = $1"
        )))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| binding_from_row(&r))
        .transpose()
    }

    async fn open_bindings(&self) -> Result<Vec<PodBinding>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BINDING_COLUMNS} FROM pod_bindings b LEFT JOIN pod_usage p ON p.pod_uid = b.pod_uid \
             WHERE b.closed_at IS NULL AND p.finished_at IS NULL ORDER BY b.pod_uid"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(binding_from_row)
        .collect()
    }

    async fn close_binding(&self, epoch: Epoch, uid: &str, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::fence(&mut tx, epoch).await?;
        sqlx::query("UPDATE pod_bindings SET closed_at = $2 WHERE pod_uid = $1 AND closed_at IS NULL")
            .bind(uid)
            .bind(trunc_secs(at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pod_checkpoint(&self, uid: &str) -> Result<Option<PodCheckpoint>> {
        sqlx::query(sqlx::AssertSqlSafe(checkpoint_sql("WHERE p.pod_uid = $1")))
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| checkpoint_from_row(&r))
            .transpose()
    }

    async fn open_pods(&self) -> Result<Vec<PodCheckpoint>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} ORDER BY pod_uid",
            checkpoint_sql("WHERE p.finished_at IS NULL")
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(checkpoint_from_row)
        .collect()
    }

    async fn balance(&self, tenant: &TenantId, now: DateTime<Utc>) -> Result<Balance> {
        let now = trunc_secs(now);
        let row = sqlx::query("SELECT debt_mcs, debt_since FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))?;
        let id = tenant.to_string();
        let debts = HashMap::from([(id.clone(), (row.try_get("debt_mcs")?, row.try_get("debt_since")?))]);
        let mut balances = self.balances(std::slice::from_ref(&id), &debts, now).await?;
        balances
            .remove(&id)
            .ok_or_else(|| LedgerError::Corrupt(format!("no balance computed for {id}")))
    }

    async fn summaries(&self, now: DateTime<Utc>) -> Result<Vec<TenantSummary>> {
        let now = trunc_secs(now);
        let rows = sqlx::query(
            "SELECT id, display_name, status, tier, created_at, debt_mcs, debt_since FROM tenants \
             WHERE status <> 'deleted' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut tenants = Vec::with_capacity(rows.len());
        let mut debts = HashMap::new();
        for r in &rows {
            let t = tenant_from_row(r)?;
            debts.insert(t.id.to_string(), (r.try_get("debt_mcs")?, r.try_get("debt_since")?));
            tenants.push(t);
        }
        let ids: Vec<String> = tenants.iter().map(|t| t.id.to_string()).collect();
        let mut balances = self.balances(&ids, &debts, now).await?;
        let dedicated: HashMap<String, i64> = sqlx::query(
            "SELECT tenant_id, SUM(quantity)::bigint AS q FROM purchases WHERE kind = 'dedicated_units' \
             AND valid_from <= $1 AND valid_until > $1 GROUP BY tenant_id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("q")?)))
        .collect::<Result<_>>()?;
        let mut namespaces: HashMap<String, Vec<String>> = HashMap::new();
        for b in self.namespace_bindings().await? {
            namespaces.entry(b.tenant.to_string()).or_default().push(b.namespace);
        }
        tenants
            .into_iter()
            .map(|tenant| {
                let id = tenant.id.to_string();
                Ok(TenantSummary {
                    balance: balances
                        .remove(&id)
                        .ok_or_else(|| LedgerError::Corrupt(format!("no balance computed for {id}")))?,
                    dedicated_units: dedicated.get(&id).copied().unwrap_or(0),
                    namespaces: namespaces.remove(&id).unwrap_or_default(),
                    tenant,
                })
            })
            .collect()
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
    ) -> Result<Vec<UsageBucket>> {
        check_range(from, to)?;
        self.require_tenant(tenant).await?;
        let width = match granularity {
            Granularity::Hour => "1 hour",
            Granularity::Day => "1 day",
        };
        sqlx::query(
            "SELECT date_bin($4::interval, hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS start, pool, \
             SUM(charged_mcs)::bigint AS charged, SUM(opportunistic_mcs)::bigint AS opportunistic \
             FROM usage_hourly WHERE tenant_id = $1 AND hour >= date_trunc('hour', $2::timestamptz) AND hour < $3 \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(tenant.as_str())
        .bind(from)
        .bind(to)
        .bind(width)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(UsageBucket {
                start: r.try_get("start")?,
                pool: r.try_get::<String, _>("pool")?.parse()?,
                charged: McSeconds(r.try_get("charged")?),
                opportunistic: McSeconds(r.try_get("opportunistic")?),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(|mut v| {
            v.sort_by_key(|b| (b.start, b.pool));
            v
        })
    }

    async fn job_runs(&self, tenant: &TenantId, q: &RunQuery<'_>) -> Result<Vec<JobRun>> {
        check_range(q.from, q.to)?;
        self.require_tenant(tenant).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM (SELECT app_id, min(job) AS job, min(pool) AS pool, min(started_at) AS started_at, \
             CASE WHEN bool_and(finished_at IS NOT NULL) THEN max(finished_at) END AS finished_at, \
             bool_and(finished_at IS NOT NULL) AS ended, min(outcome) FILTER (WHERE role = 'driver') AS driver_outcome, \
             count(*) AS pods, SUM(charged_mcs)::bigint AS charged, SUM(opportunistic_mcs)::bigint AS opportunistic \
             FROM ({}) c GROUP BY app_id) r \
             WHERE $6::timestamptz IS NULL OR r.started_at < $6 OR (r.started_at = $6 AND r.app_id > $7) \
             ORDER BY started_at DESC, app_id LIMIT $5",
            checkpoint_sql(
                "WHERE p.tenant_id = $1 AND ($2::text IS NULL OR p.job = $2) AND p.job IS NOT NULL \
                 AND p.app_id IS NOT NULL AND p.started_at >= $3 AND p.started_at < $4"
            )
        )))
        .bind(tenant.as_str())
        .bind(q.job)
        .bind(q.from)
        .bind(q.to)
        .bind(q.limit.max(0))
        .bind(q.after.as_ref().map(|c| c.started_at))
        .bind(q.after.as_ref().map(|c| c.app_id.as_str()))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            let driver: Option<PodOutcome> = r
                .try_get::<Option<String>, _>("driver_outcome")?
                .map(|o| o.parse())
                .transpose()?;
            Ok(JobRun {
                app_id: r.try_get("app_id")?,
                job: r.try_get("job")?,
                pool: r.try_get::<String, _>("pool")?.parse()?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                pods: r.try_get("pods")?,
                charged: McSeconds(r.try_get("charged")?),
                opportunistic: McSeconds(r.try_get("opportunistic")?),
                outcome: RunOutcome::of(r.try_get("ended")?, driver),
            })
        })
        .collect()
    }

    async fn jobs(&self, tenant: &TenantId) -> Result<Vec<JobSummary>> {
        self.require_tenant(tenant).await?;
        sqlx::query(
            "SELECT job, max(finished_runs)::bigint AS finished_runs, max(last_finished_at) AS last_finished_at, \
             count(DISTINCT app_id) AS running_runs FROM ( \
               SELECT job, finished_runs, last_finished_at, NULL::text AS app_id FROM job_stats WHERE tenant_id = $1 \
               UNION ALL \
               SELECT job, 0, NULL, app_id FROM pod_usage \
               WHERE tenant_id = $1 AND finished_at IS NULL AND job IS NOT NULL AND app_id IS NOT NULL \
             ) u GROUP BY job ORDER BY job",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(JobSummary {
                job: r.try_get("job")?,
                finished_runs: r.try_get("finished_runs")?,
                last_finished_at: r.try_get("last_finished_at")?,
                running_runs: r.try_get("running_runs")?,
            })
        })
        .collect()
    }

    async fn job_stats(&self, tenant: Option<&TenantId>) -> Result<Vec<JobStats>> {
        sqlx::query("SELECT * FROM job_stats WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, job")
            .bind(tenant.map(TenantId::as_str))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok(JobStats {
                    tenant: TenantId::new(r.try_get::<String, _>("tenant_id")?)?,
                    job: r.try_get("job")?,
                    state: job_state_from_row(&r)?,
                })
            })
            .collect()
    }

    async fn run_profiles(&self, tenant: &TenantId, job: Option<&str>, limit: i64) -> Result<Vec<RunProfile>> {
        self.require_tenant(tenant).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROFILE_COLUMNS} FROM run_profiles WHERE tenant_id = $1 AND ($2::text IS NULL OR job = $2) \
             ORDER BY finished_at DESC, app_id LIMIT $3"
        )))
        .bind(tenant.as_str())
        .bind(job)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
        .and_then(|rows| rows.iter().map(profile_from_row).collect())
    }

    async fn similar_runs(&self, source: Option<&str>, target: Option<&str>, limit: i64) -> Result<Vec<RunProfile>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROFILE_COLUMNS} FROM run_profiles WHERE data_bytes IS NOT NULL AND outcome = 'succeeded' \
             AND ($1::text IS NULL OR source_type = $1) AND ($2::text IS NULL OR target_type = $2) \
             ORDER BY finished_at DESC, app_id LIMIT $3"
        )))
        .bind(source)
        .bind(target)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
        .and_then(|rows| rows.iter().map(profile_from_row).collect())
    }

    async fn add_notice(&self, fence: Option<Epoch>, notice: &Notice) -> Result<Option<i64>> {
        self.require_tenant(&notice.tenant).await?;
        let mut tx = self.pool.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        let id = insert_notices(&mut tx, std::slice::from_ref(notice))
            .await?
            .pop()
            .flatten();
        tx.commit().await?;
        Ok(id)
    }

    async fn notices(&self, q: &NoticeQuery<'_>) -> Result<Vec<Notice>> {
        if let Some(t) = q.tenant {
            self.require_tenant(t).await?;
        }
        let order = if q.undelivered {
            "delivered_at IS NULL AND ($2::bigint IS NULL OR id > $2) ORDER BY id"
        } else {
            "($2::bigint IS NULL OR id < $2) ORDER BY id DESC"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {NOTICE_COLUMNS} FROM notices WHERE ($1::text IS NULL OR tenant_id = $1) AND {order} LIMIT $3"
        )))
        .bind(q.tenant.map(TenantId::as_str))
        .bind(q.cursor)
        .bind(q.limit.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(notice_from_row)
        .collect()
    }

    async fn settle_notice(&self, fence: Option<Epoch>, id: i64, delivery: &Delivery, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        let (done, error) = match delivery {
            Delivery::Delivered => (true, None),
            Delivery::Failed(why) => (false, Some(why.as_str())),
            Delivery::GaveUp(why) => (true, Some(why.as_str())),
        };
        let n = sqlx::query(
            "UPDATE notices SET last_attempt_at = $2, \
             delivered_at = CASE WHEN $3 THEN $2 ELSE delivered_at END, \
             attempts = attempts + CASE WHEN $4::text IS NULL THEN 0 ELSE 1 END, \
             last_error = COALESCE($4, last_error) WHERE id = $1",
        )
        .bind(id)
        .bind(trunc_secs(at))
        .bind(done)
        .bind(error)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(LedgerError::UnknownNotice(id));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_notify_url(&self, tenant: &TenantId, url: Option<&str>) -> Result<()> {
        if let Some(u) = url {
            check_notify_url(u)?;
        }
        self.require_tenant(tenant).await?;
        match url {
            Some(u) => {
                sqlx::query(
                    "INSERT INTO tenant_notify (tenant_id, url) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url",
                )
                .bind(tenant.as_str())
                .bind(u)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM tenant_notify WHERE tenant_id = $1")
                    .bind(tenant.as_str())
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn notify_urls(&self) -> Result<Vec<(TenantId, String)>> {
        sqlx::query("SELECT tenant_id, url FROM tenant_notify ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((TenantId::new(r.try_get::<String, _>("tenant_id")?)?, r.try_get("url")?)))
            .collect()
    }

    async fn put_schedule(
        &self,
        fence: Option<Epoch>,
        schedule: &StoredSchedule,
        policy: &SlicePolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Decision> {
        let now = trunc_secs(now);
        let horizon = Horizon::new(now, policy.slice, policy.horizon_days)?;
        schedule.spec.plan()?;
        let mut tx = self.pool.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        // One writer per pool at a time: what is checked is what is written.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sparkcap_slices'), hashtext($1))")
            .bind(schedule.pool.as_str())
            .execute(&mut *tx)
            .await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1")
            .bind(schedule.tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => return Err(LedgerError::UnknownTenant(schedule.tenant.clone())),
            Some("deleted") => return Err(LedgerError::TenantDeleted(schedule.tenant.clone())),
            Some(_) => {}
        }
        let pool_cpu: i64 = sqlx::query_scalar("SELECT cpu_mc FROM pools WHERE pool = $1")
            .bind(schedule.pool.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        let units: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(quantity), 0)::bigint FROM purchases WHERE tenant_id = $1 \
             AND kind = 'dedicated_units' AND valid_from <= $2 AND valid_until > $2",
        )
        .bind(schedule.tenant.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let others = sqlx::query("SELECT * FROM job_schedules WHERE pool = $1 AND NOT (tenant_id = $2 AND job = $3)")
            .bind(schedule.pool.as_str())
            .bind(schedule.tenant.as_str())
            .bind(&schedule.job)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(schedule_from_row)
            .collect::<Result<Vec<_>>>()?;
        let limits = policy.limits(schedule.pool, pool_cpu, units);
        // A month of every schedule's runs: bounded, but not for an async worker.
        let new = schedule.clone();
        let decision = tokio::task::spawn_blocking(move || crate::slices::decide(&horizon, &new, &others, limits))
            .await
            .map_err(|e| LedgerError::Corrupt(format!("the schedule check failed: {e}")))??;
        if matches!(decision, Decision::Accepted { .. }) && !dry_run {
            sqlx::query(
                "INSERT INTO job_schedules (tenant_id, job, pool, schedule, utc_offset_minutes, duration_seconds, \
                 cores_mc, source, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (tenant_id, job) DO UPDATE SET pool = EXCLUDED.pool, schedule = EXCLUDED.schedule, \
                 utc_offset_minutes = EXCLUDED.utc_offset_minutes, duration_seconds = EXCLUDED.duration_seconds, \
                 cores_mc = EXCLUDED.cores_mc, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
            )
            .bind(schedule.tenant.as_str())
            .bind(&schedule.job)
            .bind(schedule.pool.as_str())
            .bind(&schedule.spec.schedule)
            .bind(schedule.spec.offset.0)
            .bind(schedule.spec.duration.num_seconds())
            .bind(schedule.spec.cores)
            .bind(&schedule.source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Self::notify(&mut tx, &[LedgerChange::of(ChangeKind::Schedule, &schedule.tenant)]).await?;
            tx.commit().await?;
        }
        Ok(decision)
    }

    async fn delete_schedule(&self, fence: Option<Epoch>, tenant: &TenantId, job: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        let gone = sqlx::query("DELETE FROM job_schedules WHERE tenant_id = $1 AND job = $2")
            .bind(tenant.as_str())
            .bind(job)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            Self::notify(&mut tx, &[LedgerChange::of(ChangeKind::Schedule, tenant)]).await?;
        }
        tx.commit().await?;
        Ok(gone > 0)
    }

    async fn schedules(&self, tenant: Option<&TenantId>) -> Result<Vec<StoredSchedule>> {
        sqlx::query("SELECT * FROM job_schedules WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, job")
            .bind(tenant.map(TenantId::as_str))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(schedule_from_row)
            .collect()
    }

    async fn audit(&self) -> Result<AuditReport> {
        let mut conn = self.pool.acquire().await?;
        let pods: i64 = sqlx::query_scalar("SELECT count(*) FROM pod_usage")
            .fetch_one(&mut *conn)
            .await?;
        let mut report = AuditReport {
            tenants: 0,
            pods: pods as usize,
            violations: Vec::new(),
        };
        // Pods whose usage is not exactly cpu × seconds, or whose journal
        // does not add up to it: only offenders are fetched.
        let bad = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT c.*, COALESCE(j.total, 0)::bigint AS journal FROM ({}) c \
             LEFT JOIN (SELECT pod_uid, SUM(charged_mcs + opportunistic_mcs) AS total FROM usage_intervals GROUP BY pod_uid) j \
             USING (pod_uid) WHERE c.charged_mcs + c.opportunistic_mcs <> \
             c.cpu_mc * EXTRACT(EPOCH FROM c.charged_until - c.started_at)::bigint \
             OR COALESCE(j.total, 0) <> c.charged_mcs + c.opportunistic_mcs OR (c.opportunistic AND c.charged_mcs <> 0) \
             LIMIT 100",
            checkpoint_sql("")
        )))
        .fetch_all(&mut *conn)
        .await?;
        for r in &bad {
            let cp = checkpoint_from_row(r)?;
            let expected = cp
                .pod
                .cpu
                .for_seconds((cp.charged_until - cp.pod.started_at).num_seconds());
            report
                .violations
                .extend(pod_violations(&cp, expected, McSeconds(r.try_get("journal")?)));
        }
        // The journal tiles each pod's life: no gap, no overlap.
        let gaps = sqlx::query(
            "SELECT pod_uid, from_ts, prev_to FROM (SELECT u.pod_uid, u.from_ts, \
             lag(u.to_ts) OVER (PARTITION BY u.pod_uid ORDER BY u.from_ts) AS prev_to, p.started_at \
             FROM usage_intervals u JOIN pod_usage p USING (pod_uid)) s \
             WHERE from_ts <> COALESCE(prev_to, started_at) LIMIT 100",
        )
        .fetch_all(&mut *conn)
        .await?;
        for r in gaps {
            report.violations.push(format!(
                "pod {}: journal line at {} does not start where the previous ended ({:?})",
                r.try_get::<String, _>("pod_uid")?,
                r.try_get::<DateTime<Utc>, _>("from_ts")?,
                r.try_get::<Option<DateTime<Utc>>, _>("prev_to")?,
            ));
        }
        let tenants = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t.id, t.consumed_mcs, t.opportunistic_mcs, t.debt_mcs, t.debt_since, \
             t.pruned_charged_mcs + COALESCE(p.c, 0) AS pods_charged, t.pruned_opportunistic_mcs + COALESCE(p.o, 0) AS pods_opp, \
             COALESCE(h.c, 0) AS hourly_charged, COALESCE(h.o, 0) AS hourly_opp, COALESCE(h.d, 0) AS hourly_dedicated FROM tenants t \
             LEFT JOIN (SELECT tenant_id, SUM(charged_mcs)::bigint c, SUM(opportunistic_mcs)::bigint o FROM ({}) pc GROUP BY 1) p ON p.tenant_id = t.id \
             LEFT JOIN (SELECT tenant_id, SUM(charged_mcs)::bigint c, SUM(opportunistic_mcs)::bigint o, \
                 (SUM(charged_mcs) FILTER (WHERE pool = 'dedicated'))::bigint d FROM usage_hourly GROUP BY 1) h ON h.tenant_id = t.id \
             ORDER BY t.id",
            checkpoint_sql("")
        )))
        .fetch_all(&mut *conn)
        .await?;
        report.tenants = tenants.len();
        let ids: Vec<String> = tenants.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
        let mut lots = Self::load_lots(&mut conn, &ids, DateTime::UNIX_EPOCH).await?;
        for r in &tenants {
            let id = TenantId::new(r.try_get::<String, _>("id")?)?;
            let books = TenantBooks {
                consumed: McSeconds(r.try_get("consumed_mcs")?),
                opportunistic: McSeconds(r.try_get("opportunistic_mcs")?),
                pods_charged: McSeconds(r.try_get("pods_charged")?),
                pods_opportunistic: McSeconds(r.try_get("pods_opp")?),
                hourly_charged: McSeconds(r.try_get("hourly_charged")?),
                hourly_opportunistic: McSeconds(r.try_get("hourly_opp")?),
                hourly_dedicated: McSeconds(r.try_get("hourly_dedicated")?),
                account: Account {
                    lots: lots.remove(&id).unwrap_or_default(),
                    debt: McSeconds(r.try_get("debt_mcs")?),
                    debt_since: r.try_get("debt_since")?,
                },
            };
            report.violations.extend(tenant_violations(&id, &books));
        }
        Ok(report)
    }

    async fn prune_history(&self, before: DateTime<Utc>) -> Result<PruneReport> {
        let mut tx = self.pool.begin().await?;
        // Bindings go with their pods' history (so before it), or when closed
        // without a start.
        sqlx::query(
            "DELETE FROM pod_bindings b WHERE b.bound_at < $1 AND (b.closed_at IS NOT NULL \
             OR EXISTS (SELECT 1 FROM pod_usage p WHERE p.pod_uid = b.pod_uid AND p.finished_at < $1))",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "WITH gone AS (DELETE FROM pod_usage WHERE finished_at < $1 \
                 RETURNING pod_uid, tenant_id, charged_mcs, opportunistic_mcs), \
             moved AS (UPDATE tenants t SET pruned_charged_mcs = t.pruned_charged_mcs + g.c, \
                 pruned_opportunistic_mcs = t.pruned_opportunistic_mcs + g.o \
                 FROM (SELECT tenant_id, SUM(charged_mcs)::bigint c, SUM(opportunistic_mcs)::bigint o FROM gone GROUP BY 1) g \
                 WHERE t.id = g.tenant_id RETURNING 1), \
             lines AS (DELETE FROM usage_intervals u USING gone WHERE u.pod_uid = gone.pod_uid RETURNING 1) \
             SELECT (SELECT count(*) FROM gone) AS pods, (SELECT count(*) FROM lines) AS lines, \
                    (SELECT count(*) FROM moved) AS moved",
        )
        .bind(before)
        .fetch_one(&mut *tx)
        .await?;
        // Run profiles and delivered notices age out with the runs (R14.5).
        sqlx::query("DELETE FROM run_profiles WHERE finished_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM notices WHERE delivered_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        // Monthly journal partitions that ended before the cutoff and are
        // now empty go whole: that is what the partitioning is for.
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'usage_intervals'::regclass AND c.relname ~ '^usage_intervals_[0-9]{4}_[0-9]{2}$' \
             AND to_timestamp(substr(c.relname, 17), 'YYYY_MM') AT TIME ZONE 'UTC' + interval '1 month' <= $1",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        let mut dropped = 0;
        for name in old {
            let empty: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT NOT EXISTS (SELECT 1 FROM \"{name}\")"
            )))
            .fetch_one(&mut *tx)
            .await?;
            if empty {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE \"{name}\"")))
                    .execute(&mut *tx)
                    .await?;
                dropped += 1;
            }
        }
        tx.commit().await?;
        if dropped > 0 {
            // Forget them: a late accrual into such a month recreates its partition.
            self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        Ok(PruneReport {
            pods: row.try_get::<i64, _>("pods")? as u64,
            intervals: row.try_get::<i64, _>("lines")? as u64,
            partitions: dropped,
        })
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, LedgerChange>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        // After any gap (reconnect), say Resync once: changes may have been missed.
        let stream = futures::stream::unfold((listener, false), |(mut l, mut lost)| async move {
            loop {
                match l.try_recv().await {
                    Ok(Some(n)) => {
                        if lost {
                            return Some((LedgerChange::global(ChangeKind::Resync), (l, false)));
                        }
                        match serde_json::from_str::<LedgerChange>(n.payload()) {
                            Ok(change) => return Some((change, (l, lost))),
                            Err(e) => {
                                tracing::warn!(payload = n.payload(), error = %e, "unreadable ledger notification")
                            }
                        }
                    }
                    Ok(None) => lost = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "ledger change feed lost; retrying");
                        lost = true;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(stream.boxed())
    }
}

impl PgStore {
    async fn accrue_once(
        &self,
        writer: &mut WriterCache,
        epoch: Epoch,
        batch: &[AccrualRequest],
    ) -> Result<Vec<AccrualOutcome>> {
        let mut tenant_ids: Vec<&str> = batch.iter().map(|r| r.pod.tenant.as_str()).collect();
        tenant_ids.sort_unstable();
        tenant_ids.dedup();

        let mut tx = self.pool.begin().await?;
        Self::fence(&mut tx, epoch).await?;
        // One writer per epoch, and it is this instance: what it remembers is
        // then the whole truth (see `WriterCache`).
        if writer.epoch != Some(epoch.0) {
            return Err(LedgerError::EpochNotHeld { epoch: epoch.0 });
        }
        // Lock the tenants touched, in id order (no deadlock with each other
        // or with a purchase, which locks one tenant row).
        let trows =
            sqlx::query("SELECT id, debt_mcs, debt_since FROM tenants WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&tenant_ids)
                .fetch_all(&mut *tx)
                .await?;
        let mut known = HashSet::new();
        let mut debts: HashMap<TenantId, (McSeconds, Option<DateTime<Utc>>)> = HashMap::new();
        for r in &trows {
            let id = TenantId::new(r.try_get::<String, _>("id")?)?;
            debts.insert(
                id.clone(),
                (McSeconds(r.try_get("debt_mcs")?), r.try_get("debt_since")?),
            );
            known.insert(id);
        }
        // Remembered checkpoints move into the batch; they come back
        // (advanced) only if it commits, so a failure forgets them.
        let mut checkpoints = crate::accrual::Checkpoints::with_capacity_and_hasher(batch.len(), Default::default());
        let mut missing: Vec<&str> = Vec::new();
        for r in batch {
            if checkpoints.contains_key(&r.pod.uid) {
                continue;
            }
            match writer.open.remove(&r.pod.uid) {
                Some(cp) => {
                    checkpoints.insert(r.pod.uid.clone(), cp);
                }
                None => missing.push(&r.pod.uid),
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            for row in sqlx::query(sqlx::AssertSqlSafe(checkpoint_sql("WHERE p.pod_uid = ANY($1)")))
                .bind(&missing)
                .fetch_all(&mut *tx)
                .await?
            {
                let cp = checkpoint_from_row(&row)?;
                checkpoints.insert(cp.pod.uid.clone(), cp);
            }
        }

        // Lots that could pay: valid after the earliest second charged here,
        // or after the oldest unpaid debt. A close that gives seconds back
        // (its end came late) may return them to any lot that paid, so then
        // every lot is loaded; that is rare and a tenant has few lots.
        let corrects = batch.iter().any(|r| {
            r.finished
                && checkpoints
                    .get(&r.pod.uid)
                    .is_some_and(|cp| cp.finished_at.is_none() && trunc_secs(r.until) < cp.charged_until)
        });
        let earliest_charge = batch
            .iter()
            .map(|r| {
                checkpoints
                    .get(&r.pod.uid)
                    .map_or(trunc_secs(r.pod.started_at), |cp| cp.charged_until)
            })
            .min();
        let horizon = debts
            .values()
            .filter_map(|(_, s)| *s)
            .chain(earliest_charge)
            .min()
            .filter(|_| !corrects)
            .unwrap_or(DateTime::UNIX_EPOCH);
        let known_ids: Vec<String> = known.iter().map(|t| t.to_string()).collect();
        let mut lots = Self::load_lots(&mut tx, &known_ids, horizon).await?;
        let accounts: HashMap<TenantId, Account> = debts
            .iter()
            .map(|(id, &(debt, debt_since))| {
                (
                    id.clone(),
                    Account {
                        lots: lots.remove(id).unwrap_or_default(),
                        debt,
                        debt_since,
                    },
                )
            })
            .collect();

        let plan = plan_accruals(checkpoints, &accounts, &known, batch);
        if !plan.is_empty() {
            let created = self
                .ensure_partitions(&mut tx, plan.intervals.iter().map(|i| i.from))
                .await?;
            let mut changes: Vec<LedgerChange> = plan
                .tenant_totals
                .keys()
                .map(|t| LedgerChange::of(ChangeKind::Usage, t))
                .collect();
            let job_tenants: BTreeSet<&TenantId> = plan.closed_drivers.iter().map(|c| &c.driver.pod.tenant).collect();
            changes.extend(job_tenants.into_iter().map(|t| LedgerChange::of(ChangeKind::Job, t)));
            write_plan(&mut tx, epoch, &accounts, &plan).await?;
            if !plan.closed_drivers.is_empty() {
                finish_runs(&mut tx, &plan.closed_drivers).await?;
            }
            if let Some(now) = batch.iter().map(|r| trunc_secs(r.until)).max() {
                let low: Vec<Notice> = plan
                    .accounts
                    .iter()
                    .filter_map(|(t, a)| balance_notice_for(t, a, now))
                    .collect();
                insert_notices(&mut tx, &low).await?;
            }
            Self::notify(&mut tx, &changes).await?;
            crate::faults::crash_point("ledger.accrue.before_commit");
            tx.commit().await?;
            crate::faults::crash_point("ledger.accrue.after_commit");
            self.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(created);
        } else {
            tx.commit().await?;
        }
        for cp in plan.untouched.into_iter().chain(plan.new_pods).chain(plan.updated_pods) {
            if cp.finished_at.is_none() {
                writer.open.insert(cp.pod.uid.clone(), cp);
            }
        }
        Ok(plan.outcomes)
    }
}

impl PgStore {
    /// Refuses a read for a tenant that does not exist.
    /// Binds `namespaces` to `tenant` inside `tx`, refusing any another tenant owns.
    async fn bind_all(tx: &mut Transaction<'_, Postgres>, tenant: &TenantId, namespaces: &[String]) -> Result<()> {
        if namespaces.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO namespace_bindings (namespace, tenant_id) SELECT n, $2 FROM UNNEST($1::text[]) n \
             ON CONFLICT DO NOTHING",
        )
        .bind(namespaces)
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
        let taken: Option<(String, String)> = sqlx::query_as(
            "SELECT namespace, tenant_id FROM namespace_bindings WHERE namespace = ANY($1) AND tenant_id <> $2 \
             ORDER BY namespace LIMIT 1",
        )
        .bind(namespaces)
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        match taken {
            Some((namespace, owner)) => Err(LedgerError::NamespaceTaken {
                namespace,
                owner: TenantId::new(owner)?,
            }),
            None => Ok(()),
        }
    }

    async fn require_tenant(&self, tenant: &TenantId) -> Result<()> {
        match self.tenant(tenant).await? {
            Some(_) => Ok(()),
            None => Err(LedgerError::UnknownTenant(tenant.clone())),
        }
    }

    async fn try_record_purchase(&self, request: &PurchaseRequest, now: DateTime<Utc>) -> Result<PurchaseReceipt> {
        let now = trunc_secs(now);
        let key = request.idempotency_key.trim();
        let mut tx = self.pool.begin().await?;
        if let Some(row) = sqlx::query("SELECT * FROM purchases WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
        {
            let original: PurchaseRequest = serde_json::from_value(row.try_get("request")?)
                .map_err(|e| LedgerError::Corrupt(format!("purchase request of key {key:?}: {e}")))?;
            let diff = request.differences(&original);
            if !diff.is_empty() {
                return Err(LedgerError::IdempotencyConflict {
                    key: request.idempotency_key.clone(),
                    differences: diff.join("; "),
                });
            }
            return Ok(PurchaseReceipt {
                purchase: purchase_from_row(&row)?,
                replayed: true,
            });
        }
        let valid = request.validate(now)?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(request.tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => return Err(LedgerError::UnknownTenant(request.tenant.clone())),
            Some("deleted") => return Err(LedgerError::TenantDeleted(request.tenant.clone())),
            Some(_) => {}
        }
        if request.kind == PurchaseKind::DedicatedUnits {
            // All dedicated sales compete for one pool: serialize them.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sparkcap_dedicated_sales'))")
                .execute(&mut *tx)
                .await?;
            let units: i64 = sqlx::query_scalar("SELECT spark_units FROM pools WHERE pool = 'dedicated'")
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
            let sold: Vec<(DateTime<Utc>, DateTime<Utc>, i64)> = sqlx::query(
                "SELECT valid_from, valid_until, quantity FROM purchases WHERE kind = 'dedicated_units' \
                 AND valid_until > $1 AND valid_from < $2",
            )
            .bind(valid.valid_from)
            .bind(valid.valid_until)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| {
                Ok((
                    r.try_get("valid_from")?,
                    r.try_get("valid_until")?,
                    r.try_get("quantity")?,
                ))
            })
            .collect::<Result<_>>()?;
            check_dedicated_room(&valid, &sold, units)?;
        }
        let row = sqlx::query(
            "INSERT INTO purchases (tenant_id, kind, quantity, period, valid_from, valid_until, amount_mcs, \
             idempotency_key, request, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        )
        .bind(request.tenant.as_str())
        .bind(request.kind.as_str())
        .bind(request.quantity)
        .bind(request.period.as_str())
        .bind(valid.valid_from)
        .bind(valid.valid_until)
        .bind(valid.amount().0)
        .bind(key)
        .bind(serde_json::to_value(request).expect("a request serializes"))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        Self::notify(&mut tx, &[LedgerChange::of(ChangeKind::Purchase, &request.tenant)]).await?;
        tx.commit().await?;
        Ok(PurchaseReceipt {
            purchase: purchase_from_row(&row)?,
            replayed: false,
        })
    }
}

/// Persists an accrual plan: checkpoints, journal, hourly buckets, lots and
/// tenant totals, each as one set-based statement over arrays.
async fn write_plan(
    tx: &mut Transaction<'_, Postgres>,
    epoch: Epoch,
    loaded: &HashMap<TenantId, Account>,
    plan: &crate::accrual::AccrualPlan,
) -> Result<()> {
    if !plan.new_pods.is_empty() {
        let p = &plan.new_pods;
        sqlx::query(
            "INSERT INTO pod_usage (pod_uid, tenant_id, namespace, pod_name, app_id, job, role, pool, cpu_mc, \
             opportunistic, started_at, charged_until, finished_at, charged_mcs, opportunistic_mcs, outcome, epoch) \
             SELECT u.*, $16 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::bigint[], $10::bool[], $11::timestamptz[], $12::timestamptz[], \
             $13::timestamptz[], $14::bigint[], $15::bigint[], $17::text[]) AS u",
        )
        .bind(p.iter().map(|c| c.pod.uid.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.tenant.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.namespace.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.name.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.app_id.as_deref()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.job.as_deref()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.role.as_deref()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.pool.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.cpu.0).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.opportunistic).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.pod.started_at).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.charged_until).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.finished_at).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.charged.0).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.opportunistic.0).collect::<Vec<_>>())
        .bind(epoch.0)
        .bind(p.iter().map(|c| c.outcome.map(PodOutcome::as_str)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    // A running pod's row is not touched: its journal is its checkpoint.
    // Only pods closing now get their final figures written.
    let closing_ids: HashSet<&str> = plan.closing.iter().map(String::as_str).collect();
    let closing: Vec<&PodCheckpoint> = plan
        .updated_pods
        .iter()
        .filter(|cp| closing_ids.contains(cp.pod.uid.as_str()))
        .collect();
    if !closing.is_empty() {
        let p = &closing;
        let closed = sqlx::query(
            "UPDATE pod_usage p SET charged_until = u.charged_until, finished_at = u.finished_at, \
             charged_mcs = u.charged, opportunistic_mcs = u.opp, outcome = u.outcome, epoch = $6 \
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bigint[], $5::bigint[], $7::text[]) \
             AS u(uid, charged_until, finished_at, charged, opp, outcome) WHERE p.pod_uid = u.uid AND p.finished_at IS NULL",
        )
        .bind(p.iter().map(|c| c.pod.uid.as_str()).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.charged_until).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.finished_at).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.charged.0).collect::<Vec<_>>())
        .bind(p.iter().map(|c| c.opportunistic.0).collect::<Vec<_>>())
        .bind(epoch.0)
        .bind(p.iter().map(|c| c.outcome.map(PodOutcome::as_str)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if closed != closing.len() as u64 {
            return Err(LedgerError::ConcurrentWrite(format!(
                "{} of {} pods closing in this batch were already closed",
                closing.len() as u64 - closed,
                closing.len()
            )));
        }
    }
    if !plan.intervals.is_empty() {
        // The journal is most of what a batch writes: binary COPY, not an
        // INSERT of parameter arrays (about a third faster here).
        let mut copy = (**tx)
            .copy_in_raw(
                "COPY usage_intervals (pod_uid, tenant_id, pool, from_ts, to_ts, cpu_mc, charged_mcs, \
                 opportunistic_mcs, epoch) FROM STDIN (FORMAT binary)",
            )
            .await?;
        copy.send(journal_copy_data(&plan.intervals, epoch.0)).await?;
        copy.finish().await?;
    }
    if !plan.hourly.is_empty() {
        let h: Vec<_> = plan.hourly.iter().collect();
        sqlx::query(
            "INSERT INTO usage_hourly (tenant_id, pool, hour, charged_mcs, opportunistic_mcs) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (tenant_id, hour, pool) DO UPDATE SET \
             charged_mcs = usage_hourly.charged_mcs + EXCLUDED.charged_mcs, \
             opportunistic_mcs = usage_hourly.opportunistic_mcs + EXCLUDED.opportunistic_mcs",
        )
        .bind(h.iter().map(|((t, _, _), _)| t.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|((_, p, _), _)| p.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|((_, _, hr), _)| *hr).collect::<Vec<_>>())
        .bind(h.iter().map(|(_, d)| d.charged.0).collect::<Vec<_>>())
        .bind(h.iter().map(|(_, d)| d.opportunistic.0).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    // Lots whose drawn amount moved, and the debt of each account charged.
    let mut lot_ids = Vec::new();
    let mut lot_consumed = Vec::new();
    for (tenant, acct) in &plan.accounts {
        let before = loaded.get(tenant);
        for lot in &acct.lots {
            let was = before
                .and_then(|a| a.lots.iter().find(|l| l.purchase_id == lot.purchase_id))
                .map(|l| l.consumed);
            if was != Some(lot.consumed) {
                lot_ids.push(lot.purchase_id);
                lot_consumed.push(lot.consumed.0);
            }
        }
    }
    if !lot_ids.is_empty() {
        sqlx::query(
            "UPDATE purchases p SET consumed_mcs = u.c FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, c) \
             WHERE p.id = u.id",
        )
        .bind(&lot_ids)
        .bind(&lot_consumed)
        .execute(&mut **tx)
        .await?;
    }
    let totals: Vec<_> = plan.tenant_totals.iter().collect();
    sqlx::query(
        "UPDATE tenants t SET consumed_mcs = t.consumed_mcs + u.c, opportunistic_mcs = t.opportunistic_mcs + u.o, \
         debt_mcs = CASE WHEN u.has_acct THEN u.debt ELSE t.debt_mcs END, \
         debt_since = CASE WHEN u.has_acct THEN u.debt_since ELSE t.debt_since END \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[], $6::timestamptz[]) \
         AS u(id, c, o, has_acct, debt, debt_since) WHERE t.id = u.id",
    )
    .bind(totals.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>())
    .bind(totals.iter().map(|(_, d)| d.charged.0).collect::<Vec<_>>())
    .bind(totals.iter().map(|(_, d)| d.opportunistic.0).collect::<Vec<_>>())
    .bind(
        totals
            .iter()
            .map(|(t, _)| plan.accounts.contains_key(*t))
            .collect::<Vec<_>>(),
    )
    .bind(
        totals
            .iter()
            .map(|(t, _)| plan.accounts.get(*t).map_or(0, |a| a.debt.0))
            .collect::<Vec<_>>(),
    )
    .bind(
        totals
            .iter()
            .map(|(t, _)| plan.accounts.get(*t).and_then(|a| a.debt_since))
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
