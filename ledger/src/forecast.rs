//! Usage trend and capacity forecast (R12): an ordinary least-squares line
//! through daily usage, projected 30, 60 and 90 days ahead with 90 %
//! prediction intervals. Statistics are floats; what leaves this module for
//! people is rounded to millicores.

use serde::{Deserialize, Serialize};

/// z for a two-sided 90 % interval.
const Z90: f64 = 1.645;

/// A line through daily values: `value(day) = intercept + slope × day`,
/// day 0 the first observed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Change per day.
    pub slope: f64,
    /// Value at day 0.
    pub intercept: f64,
    /// Standard deviation of the residuals.
    pub residual_sd: f64,
    /// Days observed.
    pub n: usize,
    mean_x: f64,
    sxx: f64,
}

/// A projected value with its interval, clamped at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    /// Days after the last observed day.
    pub days_ahead: i64,
    /// Expected value.
    pub expected: i64,
    /// Lower end of the 90 % prediction interval.
    pub low: i64,
    /// Upper end.
    pub high: i64,
}

/// Fits the trend of `values` (one per day, oldest first). Needs two days;
/// with fewer there is no trend to speak of.
pub fn fit(values: &[i64]) -> Option<Trend> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean_x = (nf - 1.0) / 2.0;
    let mean_y = values.iter().map(|v| *v as f64).sum::<f64>() / nf;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (*v as f64 - mean_y);
        sxx += dx * dx;
    }
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let sse: f64 = values
        .iter()
        .enumerate()
        .map(|(i, v)| (*v as f64 - (intercept + slope * i as f64)).powi(2))
        .sum();
    let residual_sd = if n > 2 { (sse / (nf - 2.0)).sqrt() } else { 0.0 };
    Some(Trend {
        slope,
        intercept,
        residual_sd,
        n,
        mean_x,
        sxx,
    })
}

impl Trend {
    /// The value `days_ahead` after the last observed day, with a 90 %
    /// prediction interval that widens with distance from the data.
    pub fn project(&self, days_ahead: i64) -> Projection {
        let x = (self.n - 1) as f64 + days_ahead as f64;
        let expected = self.intercept + self.slope * x;
        let se = self.residual_sd * (1.0 + 1.0 / self.n as f64 + (x - self.mean_x).powi(2) / self.sxx).sqrt();
        let clamp = |v: f64| v.max(0.0).round() as i64;
        Projection {
            days_ahead,
            expected: clamp(expected),
            low: clamp(expected - Z90 * se),
            high: clamp(expected + Z90 * se),
        }
    }
}

/// Spark Units to buy so that `demand` stays within `target_pct` of the
/// capacity (`capacity` and `demand` in millicores, `unit` per Spark Unit).
pub fn units_to_buy(demand: i64, capacity: i64, unit: i64, target_pct: i64) -> i64 {
    if unit <= 0 || target_pct <= 0 {
        return 0;
    }
    let needed = (demand as i128 * 100).div_euclid(target_pct as i128) + 1 - capacity as i128;
    if needed <= 0 {
        0
    } else {
        ((needed + unit as i128 - 1) / unit as i128) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_is_recovered_with_no_spread() {
        let t = fit(&[10, 20, 30, 40]).unwrap();
        assert!((t.slope - 10.0).abs() < 1e-9 && (t.intercept - 10.0).abs() < 1e-9);
        let p = t.project(30);
        assert_eq!((p.expected, p.low, p.high), (340, 340, 340));
    }

    #[test]
    fn noise_widens_the_interval_with_distance() {
        let values: Vec<i64> = (0..60)
            .map(|d| 1000 + 10 * d + if d % 2 == 0 { 50 } else { -50 })
            .collect();
        let t = fit(&values).unwrap();
        let (p30, p90) = (t.project(30), t.project(90));
        assert!(p30.low < p30.expected && p30.expected < p30.high);
        assert!(p90.high - p90.low > p30.high - p30.low);
        assert!((p30.expected - (1000 + 10 * 89)).abs() <= 10, "{p30:?}");
    }

    #[test]
    fn too_little_data_has_no_trend() {
        assert!(fit(&[]).is_none() && fit(&[5]).is_none());
    }

    #[test]
    fn units_keep_demand_under_the_target() {
        // 90 cores of demand, 100 cores, 80 %: 112.5 cores needed → 13 more cores → 4 units of 4.
        assert_eq!(units_to_buy(90_000, 100_000, 4000, 80), 4);
        assert_eq!(units_to_buy(70_000, 100_000, 4000, 80), 0);
    }
}
