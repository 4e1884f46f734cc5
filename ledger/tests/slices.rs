//! Properties of the slice calendar: cron expansion against a brute-force
//! minute-by-minute check (month ends, `@every`, the daily fast path),
//! slice coverage against interval overlap, and every alternative offered
//! for a refused schedule really fitting.

use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
use proptest::prelude::*;
use sparkcap_ledger::slices::*;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 30, 0, 0, 0).unwrap()
}

fn job(s: &str, minutes: i64, cores: i64) -> JobSchedule {
    JobSchedule {
        schedule: s.into(),
        offset: Offset(0),
        duration: TimeDelta::minutes(minutes),
        cores,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// "m h * * *" and "m * * * *" runs are exactly the matching minutes.
    #[test]
    fn cron_runs_are_the_matching_minutes(m in 0u32..60, h in proptest::option::of(0u32..24), start_min in 0i64..1440) {
        let hour = h.map_or("*".to_owned(), |h| h.to_string());
        let text = format!("{m} {hour} * * *");
        let horizon = Horizon::new(base() + TimeDelta::minutes(start_min), DEFAULT_SLICE, 3).unwrap();
        let runs = job(&text, 1, 1000).plan().unwrap().runs(&horizon, TimeDelta::zero());
        let mut want = Vec::new();
        let mut t = horizon.start - TimeDelta::minutes(1);
        while t < horizon.end() {
            if t.minute() == m && h.is_none_or(|h| t.hour() == h) && t >= horizon.start - TimeDelta::minutes(1) {
                want.push(t);
            }
            t += TimeDelta::minutes(1);
        }
        // Runs that overlap the horizon: start in [start - duration, end).
        let want: Vec<_> = want.into_iter().filter(|t| *t + TimeDelta::minutes(1) > horizon.start).collect();
        prop_assert_eq!(runs, want, "{}", text);
    }

    /// `*/k` steps and day-of-week lists take the slow path and agree with brute force.
    #[test]
    fn stepped_and_weekday_crons(k in prop::sample::select(vec![5u32, 10, 15, 20, 30]), dow in 0u32..7) {
        let text = format!("*/{k} 9-10 * * {dow}");
        let horizon = Horizon::new(base(), DEFAULT_SLICE, 14).unwrap();
        let runs = job(&text, 1, 1000).plan().unwrap().runs(&horizon, TimeDelta::zero());
        use chrono::Datelike;
        let mut want = Vec::new();
        let mut t = horizon.start;
        while t < horizon.end() {
            if t.minute().is_multiple_of(k) && (9..=10).contains(&t.hour()) && t.weekday().num_days_from_sunday() == dow {
                want.push(t);
            }
            t += TimeDelta::minutes(1);
        }
        prop_assert_eq!(runs, want);
    }

    /// A run over [t, t + d) needs exactly the slices it overlaps.
    #[test]
    fn covering_is_interval_overlap(off in -7200i64..(2 * 86_400), d in 1i64..86_400, len in prop::sample::select(vec![60i64, 300, 900, 1800, 3600])) {
        let h = Horizon::new(base(), TimeDelta::seconds(len), 1).unwrap();
        let t = h.start + TimeDelta::seconds(off);
        let want: Vec<usize> = (0..h.slices)
            .filter(|&i| {
                let s = h.slice_start(i);
                s < t + TimeDelta::seconds(d) && s + h.slice > t
            })
            .collect();
        let got: Vec<usize> = h.covering(t, TimeDelta::seconds(d)).map_or(vec![], |(a, b)| (a..=b).collect());
        prop_assert_eq!(&got, &want);
        if off >= 0 && off % len == 0 && !got.is_empty() && *got.last().unwrap() + 1 < h.slices {
            prop_assert_eq!(got.len() as i64, (d + len - 1) / len, "aligned: ceil(duration / slice)");
        }
    }

    /// Every alternative offered fits, and its cron text means the same shift.
    #[test]
    fn every_alternative_fits(
        background in prop::collection::vec((0u32..24, prop::sample::select(vec![0u32, 15, 30, 45]), 15i64..180, 1i64..12), 1..12),
        hour in 0u32..24,
        minutes in 15i64..120,
        cores in 1i64..8,
    ) {
        let h = Horizon::new(base(), DEFAULT_SLICE, 3).unwrap();
        let limits = Limits { pool: 16_000, tenant: 12_000 };
        let mut pool = Demand::zero(&h);
        for (bh, bm, bd, bc) in &background {
            pool.add(&job(&format!("{bm} {bh} * * *"), *bd, bc * 1000).plan().unwrap().demand(&h, TimeDelta::zero()));
        }
        let tenant = Demand::zero(&h);
        let j = job(&format!("0 {hour} * * *"), minutes, cores * 1000);
        let p = j.plan().unwrap();
        for alt in alternatives(&h, &j, &p, &pool, &tenant, limits, MAX_ALTERNATIVES) {
            let d = p.demand(&h, alt.shift);
            prop_assert_eq!(fits(&h, &d, &pool, &tenant, limits), Ok(alt.headroom));
            if let Some(text) = &alt.schedule {
                let rewritten = JobSchedule { schedule: text.clone(), ..j.clone() }.plan().unwrap();
                prop_assert_eq!(rewritten.demand(&h, TimeDelta::zero()), d, "{}", text);
            }
        }
    }
}

#[test]
fn month_ends_and_leap_days() {
    let year = Horizon::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), DEFAULT_SLICE, 365).unwrap();
    let runs = |s: &str| job(s, 10, 1000).plan().unwrap().runs(&year, TimeDelta::zero());
    assert_eq!(runs("0 0 31 * *").len(), 7, "seven months have a 31st");
    assert!(runs("0 0 29 2 *").is_empty(), "2026 is not a leap year");
    assert_eq!(runs("@monthly").len(), 12);
    let leap = Horizon::new(Utc.with_ymd_and_hms(2028, 1, 1, 0, 0, 0).unwrap(), DEFAULT_SLICE, 366).unwrap();
    assert_eq!(
        job("0 0 29 2 *", 10, 1000)
            .plan()
            .unwrap()
            .runs(&leap, TimeDelta::zero())
            .len(),
        1
    );
}

#[test]
fn every_interval_is_evenly_spaced() {
    let h = Horizon::new(base(), DEFAULT_SLICE, 2).unwrap();
    let runs = job("@every 1h30m", 10, 1000)
        .plan()
        .unwrap()
        .runs(&h, TimeDelta::zero());
    assert_eq!(runs.len(), 32, "48 h / 1.5 h");
    assert!(runs.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(90)));
}
