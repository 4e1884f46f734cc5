//! Crash test: a separate writer process accruing 1,000 pods' lifetimes is
//! SIGKILLed at random points (at least 20 kills that land mid-run), restarted each time, then
//! allowed to finish. The ledger must equal the analytic sum exactly, its
//! audit must be clean (journal keys unique, each pod's lines tiling its
//! life), and no connection may be left idle in transaction.

use rand::{Rng, SeedableRng};
use sparkcap_ledger::LedgerStore;
use sparkcap_ledger::store::Granularity;
use sparkcap_ledger::store::testdb::TestDatabase;
use sparkcap_testkit::workload::{epoch_start, expected_usage, pod_lives};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: u64 = 7;
const PODS: usize = 1000;
const KILLS: usize = 20;

fn writer(url: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sparkcap-accrual-writer"))
        .args([
            "--database-url",
            url,
            "--seed",
            &SEED.to_string(),
            "--pods",
            &PODS.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_never_loses_or_doubles_a_second() {
    let db = TestDatabase::create().await.expect("test database");
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(42),
    );
    let mut kills = 0;
    let mut mid_run_kills = 0;
    while mid_run_kills < KILLS {
        assert!(
            kills < 4 * KILLS,
            "{kills} kills but only {mid_run_kills} landed mid-run"
        );
        let mut child = writer(&db.url);
        let stdout = child.stdout.take().unwrap();
        // Wait until it has made progress, then kill it somewhere in the next stretch.
        let progress = std::thread::spawn(move || {
            let mut lines = 0;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap_or_default();
                lines += 1;
                if line == "DONE" {
                    return (lines, true);
                }
            }
            (lines, false)
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let _ = child.kill();
        let status = child.wait().unwrap();
        let (lines, done) = progress.join().unwrap();
        kills += 1;
        if !done && !status.success() && lines > 0 {
            mid_run_kills += 1;
        }
    }

    // Let the last writer finish.
    let out = Command::new(env!("CARGO_BIN_EXE_sparkcap-accrual-writer"))
        .args([
            "--database-url",
            &db.url,
            "--seed",
            &SEED.to_string(),
            "--pods",
            &PODS.to_string(),
        ])
        .output()
        .expect("final writer");
    assert!(
        out.status.success(),
        "final writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("DONE\n"));

    let store = db.store().await.unwrap();
    let expected = expected_usage(&pod_lives(SEED, PODS));
    for (tenant, (charged, opp)) in &expected {
        let usage = store
            .usage(
                tenant,
                epoch_start(),
                epoch_start() + chrono::TimeDelta::days(1),
                Granularity::Day,
            )
            .await
            .unwrap();
        assert_eq!(
            usage.iter().map(|u| u.charged.0).sum::<i64>(),
            *charged,
            "tenant {tenant} charged"
        );
        assert_eq!(
            usage.iter().map(|u| u.opportunistic.0).sum::<i64>(),
            *opp,
            "tenant {tenant} opportunistic"
        );
    }
    let audit = store.audit().await.unwrap();
    assert!(audit.is_clean(), "{:#?}", audit.violations);
    assert_eq!(audit.pods, PODS);
    assert!(store.open_pods().await.unwrap().is_empty());
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pod_uid, from_ts FROM usage_intervals GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(dup, 0, "duplicate journal keys");

    // The server notices killed clients at once (their sockets close); give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let idle: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if idle == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{idle} connections left idle in transaction");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("crash test: {kills} kills ({mid_run_kills} mid-run), ledger exact for {PODS} pods");
    store.pool().close().await;
    db.drop_db().await.unwrap();
}
