//! Time helpers. Charging works in whole seconds: Kubernetes timestamps are
//! whole seconds, and dropping a fraction can only undercharge, never twice.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// `t` with its sub-second part dropped.
pub fn trunc_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// The start of the hour containing `t`.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Splits `[from, to)` at hour boundaries: `(hour start, seconds in that hour)`.
pub fn split_by_hour(from: DateTime<Utc>, to: DateTime<Utc>) -> impl Iterator<Item = (DateTime<Utc>, i64)> {
    let mut cursor = from;
    std::iter::from_fn(move || {
        if cursor >= to {
            return None;
        }
        let hour = hour_of(cursor);
        let next = (hour + TimeDelta::hours(1)).min(to);
        let piece = (hour, (next - cursor).num_seconds());
        cursor = next;
        Some(piece)
    })
}

/// Start of the 24-hour window the consumption rate is measured over: the
/// current (partial) hour and the 23 before it.
pub fn rate_window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    hour_of(now) - TimeDelta::hours(23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hour_split_sums_to_interval() {
        let a = Utc.with_ymd_and_hms(2026, 1, 1, 10, 59, 30).unwrap();
        let b = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 10).unwrap();
        let parts: Vec<_> = split_by_hour(a, b).collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), (b - a).num_seconds());
        assert_eq!(parts[0].1, 30);
        assert_eq!(parts[2].1, 10);
        assert_eq!(split_by_hour(b, a).count(), 0);
    }
}
