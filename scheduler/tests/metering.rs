//! Every pod charged for its real life, however it ends (issue 20), in
//! virtual time: generated pod lives × meter periods × end modes, the
//! cluster's view of each pod at every meter tick written as a kubelet and
//! the control plane would write it, metered with the scheduler's own
//! decision functions (`life`, `accrual_of`) into a real ledger — the
//! embedded one and PostgreSQL. Each pod's charge must be cpu × its real
//! life, to the second (the ledger's resolution), and none may be missing.
//!
//! End modes: by itself (exit 0); deleted — by kubectl, by Spark's
//! executor scale-down or by garbage collection of its owner, which the
//! kubelet sees alike — with the kubelet stopping its containers somewhere
//! in the grace period (exit 143); evicted for preemption (the same, with
//! Spark 4's 30 s grace); its node lost (no end ever reported; the node
//! controller deletes it minutes later); deleted before it started; and
//! each of them while the scheduler is down (no meter tick for a while),
//! or seen by the meter up to 25 s late, after it charged past the end
//! (the ledger gives those seconds back).

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::json;
use sparkcap_ledger::binding::PodBinding;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_ledger::{AccrualRequest, LedgerStore, Millicores, NewTenant, Pool, TenantId};
use sparkcap_scheduler::meter::{self, Life};

fn cases() -> u32 {
    std::env::var("METERING_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(s)
}

fn ts(s: i64) -> String {
    t(s).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How a pod ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Its containers exit by themselves.
    Itself,
    /// Deleted at its end with `grace`; the kubelet stops it `after` seconds later.
    Deleted { grace: i64, after: i64 },
    /// Its node is lost at its end; the node controller deletes it later.
    NodeLost,
    /// Deleted before it started.
    NeverStarted,
}

#[derive(Debug, Clone)]
struct Life_ {
    start: i64,
    length: i64,
    cpu: i64,
    end: End,
}

impl Life_ {
    /// The real end, as the kubelet (or the node's loss) fixes it.
    fn real_end(&self) -> Option<i64> {
        match self.end {
            End::Itself | End::NodeLost => Some(self.start + self.length),
            End::Deleted { after, .. } => Some(self.start + self.length + after),
            End::NeverStarted => None,
        }
    }

    /// The pod as the API server shows it at `now`.
    fn pod_at(&self, uid: &str, now: i64) -> Pod {
        let mut p = json!({
            "metadata": {"name": uid, "namespace": "tenant-acme", "uid": uid,
                         "labels": {"spark-role": "executor", "spark-app-selector": "spark-1"}},
            "spec": {"nodeName": "shared-1", "containers": [{"name": "c", "resources": {"requests": {"cpu": format!("{}m", self.cpu)}}}]},
            "status": {"phase": "Pending"}
        });
        let running = |p: &mut serde_json::Value| {
            p["status"] = json!({"phase": "Running", "startTime": ts(self.start),
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": "i",
                                       "state": {"running": {"startedAt": ts(self.start)}}}]});
        };
        let terminated = |p: &mut serde_json::Value, at: i64, code: i64| {
            p["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            p["status"]["containerStatuses"][0]["state"] =
                json!({"terminated": {"exitCode": code, "startedAt": ts(self.start), "finishedAt": ts(at)}});
        };
        let end_at = self.start + self.length;
        match self.end {
            End::NeverStarted => {
                if now >= self.start {
                    p["metadata"]["deletionTimestamp"] = json!(ts(self.start));
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                }
            }
            End::Itself => {
                if now >= self.start {
                    running(&mut p);
                }
                if now >= end_at {
                    terminated(&mut p, end_at, 0);
                }
            }
            End::Deleted { grace, after } => {
                if now >= self.start {
                    running(&mut p);
                }
                if now >= end_at {
                    p["metadata"]["deletionTimestamp"] = json!(ts(end_at + grace));
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                }
                if now >= end_at + after {
                    terminated(&mut p, end_at + after, 143);
                }
            }
            End::NodeLost => {
                // The kubelet's last word was "running"; 300 s after the
                // loss the taint manager deletes the pod, grace 30.
                if now >= self.start {
                    running(&mut p);
                }
                if now >= end_at + 300 {
                    p["metadata"]["deletionTimestamp"] = json!(ts(end_at + 330));
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                }
            }
        }
        serde_json::from_value(p).unwrap()
    }
}

fn life_strategy() -> impl Strategy<Value = Life_> {
    let end = prop_oneof![
        Just(End::Itself),
        (0i64..=30)
            .prop_flat_map(|g| (Just(g), 0..=g))
            .prop_map(|(grace, after)| End::Deleted { grace, after }),
        Just(End::Deleted { grace: 30, after: 30 }),
        Just(End::NodeLost),
        Just(End::NeverStarted),
    ];
    (
        0i64..300,
        1i64..400,
        prop::sample::select(vec![500i64, 1000, 2500]),
        end,
    )
        .prop_map(|(start, length, cpu, end)| Life_ {
            start,
            length,
            cpu,
            end,
        })
}

/// Meters `lives` every `period` s (none in `down`), `lag` s behind the
/// clock while they run, as the scheduler's shell does, seeing the cluster
/// as it was `seen_late` s ago (a slow watch, a busy scheduler: an end can
/// reach the meter after it charged past it); returns the batches' refusals.
async fn meter_all(
    store: &dyn LedgerStore,
    case: &str,
    lives: &[Life_],
    period: i64,
    down: (i64, i64),
    (lag, seen_late): (i64, i64),
) -> Vec<String> {
    let epoch = store.claim_epoch(&format!("metering-{case}")).await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    let uid = |i: usize| format!("{case}-{i}");
    let bindings: Vec<PodBinding> = lives
        .iter()
        .enumerate()
        .map(|(i, l)| PodBinding {
            uid: uid(i),
            tenant: acme.clone(),
            namespace: "tenant-acme".into(),
            name: uid(i),
            app_id: Some("spark-1".into()),
            job: None,
            role: Some("executor".into()),
            pool: Pool::Shared,
            cpu: Millicores(l.cpu),
            opportunistic: false,
            node: "shared-1".into(),
            bound_at: t(l.start - 1),
        })
        .collect();
    let mut closed = vec![false; lives.len()];
    let mut last_until: Vec<Option<DateTime<Utc>>> = vec![None; lives.len()];
    let mut refusals = Vec::new();
    let horizon = 300 + 400 + 400 + period + lag + seen_late;
    let mut now = 0;
    while now <= horizon {
        if !(down.0..down.1).contains(&now) {
            let mut batch: Vec<AccrualRequest> = Vec::new();
            let mut idx = Vec::new();
            for (i, l) in lives.iter().enumerate() {
                if closed[i] {
                    continue;
                }
                let seen = now - seen_late;
                let pod = l.pod_at(&uid(i), seen);
                let lost = matches!(l.end, End::NodeLost).then(|| l.start + l.length);
                let lost_at = lost.filter(|n| seen >= *n).map(t);
                let life = meter::life(&pod, lost_at, t(now));
                match life {
                    Life::NotStarted => {}
                    Life::NeverStarted => closed[i] = true,
                    _ => {
                        if let Some(mut req) = meter::accrual_of(&bindings[i], &pod, life, t(now - lag)) {
                            // As the shell: a running pod is never charged
                            // behind its checkpoint; an end is sent as it is.
                            if let Some(u) = last_until[i]
                                && !req.finished
                            {
                                req.until = req.until.max(u);
                            }
                            idx.push(i);
                            batch.push(req);
                        }
                    }
                }
            }
            if !batch.is_empty() {
                let outcomes = store.accrue(epoch, &batch).await.unwrap();
                for ((i, req), o) in idx.into_iter().zip(&batch).zip(outcomes) {
                    match o {
                        sparkcap_ledger::AccrualOutcome::Applied { .. }
                        | sparkcap_ledger::AccrualOutcome::Duplicate => {
                            last_until[i] = Some(req.until);
                            closed[i] |= req.finished;
                        }
                        sparkcap_ledger::AccrualOutcome::Rejected(reason) => {
                            refusals.push(format!("{}: {reason}", req.pod.uid));
                        }
                    }
                }
            }
        }
        now += period;
    }
    refusals
}

async fn ledger_for(db: Option<&TestDatabase>) -> Box<dyn LedgerStore> {
    let store: Box<dyn LedgerStore> = match db {
        Some(db) => Box::new(db.store().await.unwrap()),
        None => Box::new(sparkcap_ledger::MemoryStore::new()),
    };
    let acme = TenantId::new("acme").unwrap();
    if store.tenant(&acme).await.unwrap().is_none() {
        store
            .create_tenant(NewTenant::new(acme, "Acme"), t(-86_400))
            .await
            .unwrap();
    }
    store
}

fn check(lives: &[Life_], cps: &[Option<sparkcap_ledger::PodCheckpoint>]) -> Result<(), TestCaseError> {
    for (l, cp) in lives.iter().zip(cps) {
        match (l.real_end(), cp) {
            (None, None) => {}
            (None, Some(cp)) => prop_assert!(false, "{l:?} never started but was charged {cp:?}"),
            (Some(_), None) => prop_assert!(false, "{l:?} ran and was never charged"),
            (Some(end), Some(cp)) => {
                prop_assert_eq!(cp.finished_at, Some(t(end)), "{:?}", l);
                prop_assert_eq!(cp.pod.started_at, t(l.start), "{:?}", l);
                prop_assert_eq!(cp.charged.0, l.cpu * (end - l.start), "{:?}", l);
            }
        }
    }
    Ok(())
}

fn run(db: Option<&TestDatabase>, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(ledger_for(db));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::collection::vec(life_strategy(), 1..12),
        prop::sample::select(vec![1i64, 5, 10, 30]),
        proptest::option::of((0i64..700, 10i64..300)),
        (
            prop::sample::select(vec![0i64, 10]),
            prop::sample::select(vec![0i64, 3, 25]),
        ),
    );
    runner
        .run(&strategy, |(lives, period, down, lag)| {
            let id = format!("{name}{}", rand_suffix());
            let down = down.map_or((-1, -1), |(from, len)| (from, from + len));
            let refusals = rt.block_on(meter_all(store.as_ref(), &id, &lives, period, down, lag));
            prop_assert!(refusals.is_empty(), "{refusals:?}");
            let cps: Vec<_> = (0..lives.len())
                .map(|i| rt.block_on(store.pod_checkpoint(&format!("{id}-{i}"))).unwrap())
                .collect();
            check(&lives, &cps)
        })
        .unwrap();
    let audit = rt.block_on(store.audit()).unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
}

/// Pod uids must differ between shrinking attempts too.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn every_end_mode_is_charged_its_real_life_on_the_embedded_ledger() {
    run(None, "m");
}

#[test]
fn every_end_mode_is_charged_its_real_life_on_postgres() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(TestDatabase::create())
        .expect("test database (DATABASE_URL)");
    run(Some(&db), "p");
    rt.block_on(db.drop_db()).unwrap();
}
