//! Per-tenant API rate limits (R13.5) as GCRA, the token bucket in one
//! timestamp per key. Hand-written rather than `governor` because the
//! `RateLimit-*` headers need the remaining allowance and the time to a full
//! bucket, and a pure function of time is what the tests drive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A limit: a sustained rate and a burst an idle client may spend at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once from a full bucket.
    pub burst: u32,
}

impl Quota {
    /// `per_minute` sustained; the burst lets an idle client run at twice the
    /// rate for 10 s (R13.5): a third of the per-minute figure, at least 1.
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            per_minute,
            burst: (per_minute / 3).max(1),
        }
    }

    fn interval_ns(self) -> i64 {
        60_000_000_000 / i64::from(self.per_minute)
    }

    fn tolerance_ns(self) -> i64 {
        self.interval_ns() * i64::from(self.burst.saturating_sub(1))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether it may proceed.
    pub allowed: bool,
    /// The quota applied.
    pub quota: Quota,
    /// Requests that could be made right now after this one.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: how long until one request is allowed.
    pub retry_after: Duration,
}

/// GCRA step: `tat` is the key's theoretical arrival time (ns); `now` in ns.
/// Pure, so the arithmetic is tested without clocks.
pub fn check(tat: Option<i64>, quota: Quota, now: i64) -> (Option<i64>, Verdict) {
    let t = quota.interval_ns();
    let tau = quota.tolerance_ns();
    let tat = tat.unwrap_or(now).max(now);
    let ceil_secs = |ns: i64| Duration::from_secs(((ns.max(0) + 999_999_999) / 1_000_000_000) as u64);
    if tat - now > tau {
        let wait = tat - tau - now;
        let verdict = Verdict {
            allowed: false,
            quota,
            remaining: 0,
            reset: ceil_secs(tat - now),
            retry_after: ceil_secs(wait),
        };
        return (Some(tat), verdict);
    }
    let next = tat + t;
    let remaining = ((now + tau + t - next) / t).max(0) as u32;
    let verdict = Verdict {
        allowed: true,
        quota,
        remaining,
        reset: ceil_secs(next - now),
        retry_after: Duration::ZERO,
    };
    (Some(next), verdict)
}

/// Keyed limiter state shared by all request handlers.
#[derive(Debug, Default)]
pub struct Limiter {
    tats: Mutex<HashMap<String, i64>>,
}

/// Keys kept before idle ones (full buckets) are dropped.
const PRUNE_AT: usize = 10_000;

impl Limiter {
    /// Counts one request by `key` at `now` (ns since any fixed origin).
    pub fn check(&self, key: &str, quota: Quota, now: i64) -> Verdict {
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        if tats.len() >= PRUNE_AT {
            tats.retain(|_, tat| *tat > now);
        }
        let (tat, verdict) = check(tats.get(key).copied(), quota, now);
        if let Some(tat) = tat {
            tats.insert(key.to_owned(), tat);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn burst_then_sustained_rate() {
        let q = Quota::per_minute(60); // 1/s, burst 20
        assert_eq!(q.burst, 20);
        let mut tat = None;
        for i in 0..20 {
            let (t, v) = check(tat, q, 0);
            tat = t;
            assert!(v.allowed, "request {i} of the burst");
            assert_eq!(v.remaining, 19 - i);
        }
        let (t, v) = check(tat, q, 0);
        tat = t;
        assert!(!v.allowed);
        assert_eq!(v.retry_after, Duration::from_secs(1));
        assert_eq!(v.reset, Duration::from_secs(20));
        // One more each second, never two.
        let (t, v) = check(tat, q, S);
        tat = t;
        assert!(v.allowed);
        let (_, v) = check(tat, q, S);
        assert!(!v.allowed);
    }

    #[test]
    fn idle_refills_to_the_burst_only() {
        let q = Quota::per_minute(100);
        let (tat, _) = check(None, q, 0);
        let (_, v) = check(tat, q, 3600 * S);
        assert!(v.allowed);
        assert_eq!(v.remaining, q.burst - 1);
    }

    #[test]
    fn sustained_rate_matches_the_quota() {
        let q = Quota::per_minute(500);
        let mut tat = None;
        let mut allowed = 0;
        // Hammer every 10 ms for 10 minutes.
        for step in 0..60_000 {
            let (t, v) = check(tat, q, step * 10_000_000);
            tat = t;
            allowed += i64::from(v.allowed);
        }
        let expected = 500 * 10 + i64::from(q.burst);
        assert!((allowed - expected).abs() <= 1, "{allowed} vs {expected}");
    }
}
