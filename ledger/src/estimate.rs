//! The resource estimator (R4): cores for a job from the throughput similar
//! runs achieved (bytes per vCPU-second), with an interval from their
//! spread, or a conservative default when there is no history; and what the
//! job would cost as dedicated units or as vCPU-hours.

use crate::lifecycle::RunProfile;
use serde::{Deserialize, Serialize};

/// Throughput assumed without history: 8 MiB per vCPU-second, a cautious
/// figure for JDBC extraction into a table format.
pub const DEFAULT_BYTES_PER_CORE_SECOND: i64 = 8 << 20;
/// Runs of similar jobs needed before history replaces the default.
pub const MIN_HISTORY: usize = 3;

/// What is being estimated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstimateRequest {
    /// Data per run, bytes.
    pub data_bytes: i64,
    /// Longest acceptable run, seconds.
    pub sla_seconds: i64,
    /// Runs per month (for the cost).
    pub runs_per_month: i64,
}

/// Prices, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// One dedicated Spark Unit for a month.
    pub unit_month_cents: i64,
    /// One vCPU-hour.
    pub vcpu_hour_cents: i64,
    /// Cores in a Spark Unit, millicores.
    pub unit_cpu: i64,
}

/// The estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    /// Cores recommended (driver and executors), millicores, whole cores.
    pub cores: i64,
    /// Lower end of the 80 % interval, millicores.
    pub cores_low: i64,
    /// Upper end, millicores.
    pub cores_high: i64,
    /// `history` or `default`.
    pub basis: &'static str,
    /// Similar runs used.
    pub runs_used: usize,
    /// Median throughput used, bytes per vCPU-second.
    pub bytes_per_core_second: i64,
    /// Dedicated units that hold `cores`.
    pub dedicated_units: i64,
    /// Their monthly price, cents.
    pub dedicated_cents_per_month: i64,
    /// vCPU-hours a month at `cores` for `runs_per_month` runs of the SLA's length.
    pub vcpu_hours_per_month: i64,
    /// Their price, cents.
    pub vcpu_hours_cents_per_month: i64,
    /// `dedicated_units` or `vcpu_hours`, whichever costs less.
    pub cheaper: &'static str,
}

fn quantile(sorted: &[i64], q: f64) -> i64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Whole cores (millicores) to move `bytes` in `sla_s` at `per_core_s`, plus the driver's core.
fn cores_for(bytes: i64, sla_s: i64, per_core_s: i64) -> i64 {
    // Rounded to the nearest core-second: the rate itself is rounded down.
    let rate = per_core_s.max(1) as i128;
    let core_seconds = (bytes as i128 * 2 + rate) / (2 * rate);
    let cores = (core_seconds + sla_s.max(1) as i128 - 1) / sla_s.max(1) as i128;
    (cores as i64 + 1) * 1000
}

/// Estimates from `history` (similar runs, newest first).
pub fn estimate(req: &EstimateRequest, history: &[RunProfile], prices: Prices) -> Estimate {
    let mut rates: Vec<i64> = history
        .iter()
        .filter_map(|r| {
            let core_seconds = r.vcpu.0 / 1000;
            let bytes = r.data_bytes?;
            (core_seconds > 0).then(|| bytes / core_seconds)
        })
        .filter(|r| *r > 0)
        .collect();
    rates.sort_unstable();
    let (basis, median, slow, fast) = if rates.len() >= MIN_HISTORY {
        (
            "history",
            quantile(&rates, 0.5),
            quantile(&rates, 0.1),
            quantile(&rates, 0.9),
        )
    } else {
        // No history: assume the cautious rate, and that reality may be
        // half or double it.
        let d = DEFAULT_BYTES_PER_CORE_SECOND;
        ("default", d, d / 2, d * 2)
    };
    let cores = cores_for(req.data_bytes, req.sla_seconds, median);
    let cores_high = cores_for(req.data_bytes, req.sla_seconds, slow);
    let cores_low = cores_for(req.data_bytes, req.sla_seconds, fast);
    let unit = prices.unit_cpu.max(1);
    let dedicated_units = (cores + unit - 1) / unit;
    // A run at the recommended size takes about the SLA.
    let vcpu_hours = (cores as i128 * req.sla_seconds as i128 * req.runs_per_month.max(0) as i128)
        .div_euclid(3_600_000)
        .max(0) as i64;
    let dedicated_cents = dedicated_units * prices.unit_month_cents;
    let vcpu_cents = vcpu_hours.saturating_mul(prices.vcpu_hour_cents);
    Estimate {
        cores,
        cores_low,
        cores_high,
        basis,
        runs_used: if basis == "history" { rates.len() } else { 0 },
        bytes_per_core_second: median,
        dedicated_units,
        dedicated_cents_per_month: dedicated_cents,
        vcpu_hours_per_month: vcpu_hours,
        vcpu_hours_cents_per_month: vcpu_cents,
        cheaper: if dedicated_cents < vcpu_cents {
            "dedicated_units"
        } else {
            "vcpu_hours"
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;
    use crate::pool::Pool;
    use crate::store::RunOutcome;
    use crate::units::{McSeconds, Millicores};
    use chrono::Utc;

    const PRICES: Prices = Prices {
        unit_month_cents: 10_000,
        vcpu_hour_cents: 6,
        unit_cpu: 4000,
    };

    fn run(data_gib: i64, core_seconds: i64) -> RunProfile {
        RunProfile {
            tenant: TenantId::new("acme").unwrap(),
            job: "j".into(),
            app_id: "a".into(),
            pool: Pool::Shared,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            cores: Millicores(4000),
            vcpu: McSeconds(core_seconds * 1000),
            outcome: RunOutcome::Succeeded,
            sla_seconds: None,
            cpu_used: None,
            memory_used: None,
            data_bytes: Some(data_gib << 30),
            source: None,
            target: None,
        }
    }

    #[test]
    fn without_history_the_default_is_conservative_and_wide() {
        let req = EstimateRequest {
            data_bytes: 100 << 30,
            sla_seconds: 3600,
            runs_per_month: 30,
        };
        let e = estimate(&req, &[], PRICES);
        assert_eq!(e.basis, "default");
        // 100 GiB / 8 MiB/s = 12,800 core-s / 3600 s = 3.6 → 4 cores + driver = 5.
        assert_eq!(e.cores, 5000);
        assert!(e.cores_low < e.cores && e.cores < e.cores_high);
        assert_eq!(e.dedicated_units, 2);
        assert_eq!(e.vcpu_hours_per_month, 150);
        assert_eq!(e.cheaper, "vcpu_hours");
    }

    #[test]
    fn history_replaces_the_default_and_narrows_with_agreement() {
        // 32 MiB per core-second in every run.
        let history: Vec<RunProfile> = (0..5).map(|_| run(32, 1024)).collect();
        let req = EstimateRequest {
            data_bytes: 320 << 30,
            sla_seconds: 3600,
            runs_per_month: 720,
        };
        let e = estimate(&req, &history, PRICES);
        assert_eq!((e.basis, e.runs_used), ("history", 5));
        assert_eq!(e.bytes_per_core_second, 32 << 20);
        // 320 GiB / 32 MiB/s = 10,240 core-s / 3600 s = 2.8 → 3 + driver = 4.
        assert_eq!((e.cores_low, e.cores, e.cores_high), (4000, 4000, 4000));
        assert_eq!((e.dedicated_units, e.vcpu_hours_per_month), (1, 2880));
        assert_eq!(e.cheaper, "dedicated_units", "hourly runs: units are cheaper");
    }
}
