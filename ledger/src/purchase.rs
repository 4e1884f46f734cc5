//! Purchases (R2): what a tenant bought, for how long, and the rules a
//! purchase must pass before it is recorded.

use crate::error::{LedgerError, Result};
use crate::ids::TenantId;
use crate::time::trunc_secs;
use crate::units::McSeconds;
use chrono::{DateTime, Days, Months, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Largest vCPU-hour purchase accepted; keeps every sum far from `i64::MAX`.
pub const MAX_VCPU_HOURS: i64 = 1_000_000_000;
/// Largest dedicated-unit purchase accepted.
pub const MAX_DEDICATED_UNITS: i64 = 100_000;
/// Longest validity accepted, in periods (e.g. 120 months).
pub const MAX_PERIODS: u32 = 120;

/// What was bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseKind {
    /// Dedicated Ingestion Units, 1 DIU = 1 Spark Unit, reserved for the buyer.
    DedicatedUnits,
    /// Prepaid vCPU-hours in the shared pool.
    VcpuHours,
}

impl PurchaseKind {
    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DedicatedUnits => "dedicated_units",
            Self::VcpuHours => "vcpu_hours",
        }
    }
}

impl fmt::Display for PurchaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PurchaseKind {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dedicated_units" => Ok(Self::DedicatedUnits),
            "vcpu_hours" => Ok(Self::VcpuHours),
            other => Err(LedgerError::Corrupt(format!("unknown purchase kind {other:?}"))),
        }
    }
}

/// How long one period of a purchase lasts, in calendar terms (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// One calendar day.
    Daily,
    /// One calendar month; 31 Jan + 1 month = 28/29 Feb.
    Monthly,
    /// Twelve calendar months; 29 Feb + 1 year = 28 Feb.
    Yearly,
}

impl Period {
    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    /// The end of `n` periods from `from`. Computed in one step from the start
    /// (not period by period) so that 31 Jan + 2 months is 31 Mar, not 28 Mar.
    pub fn end_after(self, from: DateTime<Utc>, n: u32) -> Result<DateTime<Utc>> {
        let end = match self {
            Self::Daily => from.checked_add_days(Days::new(u64::from(n))),
            Self::Monthly => from.checked_add_months(Months::new(n)),
            Self::Yearly => n.checked_mul(12).and_then(|m| from.checked_add_months(Months::new(m))),
        };
        end.ok_or_else(|| LedgerError::Overflow(format!("{n} {self} periods from {from}")))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "daily" => Ok(Self::Daily),
            "monthly" => Ok(Self::Monthly),
            "yearly" => Ok(Self::Yearly),
            other => Err(LedgerError::Corrupt(format!("unknown period {other:?}"))),
        }
    }
}

/// A purchase as an admin's billing system sends it. Stored verbatim so that a
/// retry is compared with what was sent, not with defaults filled in later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRequest {
    /// The buyer.
    pub tenant: TenantId,
    /// Dedicated units or vCPU-hours.
    pub kind: PurchaseKind,
    /// Units or whole vCPU-hours.
    pub quantity: i64,
    /// Validity period.
    pub period: Period,
    /// Start; now when omitted. May be in the future.
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// End; one period after the start when omitted, else a whole number of periods.
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
    /// Required; a retry with the same key returns the original purchase.
    pub idempotency_key: String,
}

/// A purchase that passed the rules, with its validity resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedPurchase {
    /// The request as sent.
    pub request: PurchaseRequest,
    /// Resolved start.
    pub valid_from: DateTime<Utc>,
    /// Resolved end (exclusive).
    pub valid_until: DateTime<Utc>,
}

impl ValidatedPurchase {
    /// The credit a vCPU-hour purchase brings; zero for dedicated units.
    pub fn amount(&self) -> McSeconds {
        match self.request.kind {
            PurchaseKind::VcpuHours => McSeconds::from_vcpu_hours(self.request.quantity),
            PurchaseKind::DedicatedUnits => McSeconds::ZERO,
        }
    }
}

impl PurchaseRequest {
    /// Checks quantity, key and validity, resolving defaults against `now`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<ValidatedPurchase> {
        let key = self.idempotency_key.trim();
        if key.is_empty() || key.len() > 200 {
            return Err(LedgerError::MissingIdempotencyKey);
        }
        let max = match self.kind {
            PurchaseKind::VcpuHours => MAX_VCPU_HOURS,
            PurchaseKind::DedicatedUnits => MAX_DEDICATED_UNITS,
        };
        if self.quantity <= 0 {
            return Err(LedgerError::InvalidQuantity {
                quantity: self.quantity,
                kind: self.kind.as_str(),
                rule: "it must be a positive whole number",
            });
        }
        if self.quantity > max {
            return Err(LedgerError::InvalidQuantity {
                quantity: self.quantity,
                kind: self.kind.as_str(),
                rule: match self.kind {
                    PurchaseKind::VcpuHours => "at most 1,000,000,000 vCPU-hours in one purchase",
                    PurchaseKind::DedicatedUnits => "at most 100,000 units in one purchase",
                },
            });
        }
        let from = trunc_secs(self.valid_from.unwrap_or(now));
        let until = match self.valid_until {
            None => self.period.end_after(from, 1)?,
            Some(until) => {
                let until = trunc_secs(until);
                if until <= from {
                    return Err(LedgerError::InvertedValidity { from, until });
                }
                whole_periods_end(self.period, from, until)?
            }
        };
        if until <= trunc_secs(now) {
            return Err(LedgerError::ExpiredValidity { until, now });
        }
        Ok(ValidatedPurchase {
            request: self.clone(),
            valid_from: from,
            valid_until: until,
        })
    }

    /// Field-by-field differences from an earlier request with the same key.
    pub fn differences(&self, original: &PurchaseRequest) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: original {b}, retry {a}"));
            }
        };
        cmp("tenant", self.tenant.to_string(), original.tenant.to_string());
        cmp("kind", self.kind.to_string(), original.kind.to_string());
        cmp("quantity", self.quantity.to_string(), original.quantity.to_string());
        cmp("period", self.period.to_string(), original.period.to_string());
        cmp("valid_from", show(self.valid_from), show(original.valid_from));
        cmp("valid_until", show(self.valid_until), show(original.valid_until));
        out
    }
}

fn show(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "(omitted)".into(), |t| t.to_rfc3339())
}

/// `until` if it is a whole number of periods after `from`.
fn whole_periods_end(period: Period, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<DateTime<Utc>> {
    for n in 1..=MAX_PERIODS {
        let end = period.end_after(from, n)?;
        if end == until {
            return Ok(end);
        }
        if end > until {
            return Err(LedgerError::ValidityMismatch {
                from,
                until,
                period: period.as_str(),
                expected: period.end_after(from, n.saturating_sub(1).max(1))?,
            });
        }
    }
    Err(LedgerError::ValidityMismatch {
        from,
        until,
        period: period.as_str(),
        expected: period.end_after(from, MAX_PERIODS)?,
    })
}

/// A recorded purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// Ledger id.
    pub id: i64,
    /// The buyer.
    pub tenant: TenantId,
    /// What was bought.
    pub kind: PurchaseKind,
    /// How much.
    pub quantity: i64,
    /// Validity period.
    pub period: Period,
    /// Start (inclusive).
    pub valid_from: DateTime<Utc>,
    /// End (exclusive).
    pub valid_until: DateTime<Utc>,
    /// The key it was recorded under.
    pub idempotency_key: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// Usage charged to it so far (vCPU-hours only).
    pub consumed: McSeconds,
}

impl Purchase {
    /// Whether it is in force at `t`.
    pub fn valid_at(&self, t: DateTime<Utc>) -> bool {
        self.valid_from <= t && t < self.valid_until
    }
}

/// Dedicated units in force at `now` among `purchases` (of one tenant).
pub fn dedicated_units_at<'a>(purchases: impl IntoIterator<Item = &'a Purchase>, now: DateTime<Utc>) -> i64 {
    purchases
        .into_iter()
        .filter(|p| p.kind == PurchaseKind::DedicatedUnits && p.valid_at(now))
        .map(|p| p.quantity)
        .sum()
}

/// The receipt for a purchase call: the purchase and whether this call was a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseReceipt {
    /// The purchase (the original one on a retry).
    pub purchase: Purchase,
    /// True when the key had been used before with the same body.
    pub replayed: bool,
}

/// Dedicated units already sold, at the busiest instant of `[from, until)`.
/// Sales only rise at a purchase's start, so the peak is at `from` or at one
/// of the starts inside the window.
pub fn dedicated_peak(
    sold: &[(DateTime<Utc>, DateTime<Utc>, i64)],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (i64, DateTime<Utc>) {
    let instants = std::iter::once(from).chain(
        sold.iter()
            .map(|&(start, _, _)| start)
            .filter(|&s| from < s && s < until),
    );
    instants
        .map(|t| {
            let at_t = sold
                .iter()
                .filter(|&&(start, end, _)| start <= t && t < end)
                .map(|&(_, _, q)| q)
                .sum::<i64>();
            (at_t, t)
        })
        .max_by_key(|&(q, t)| (q, std::cmp::Reverse(t)))
        .unwrap_or((0, from))
}

/// Refuses a dedicated purchase that would sell more units than the pool has (R1.5, R2.4).
pub fn check_dedicated_room(
    purchase: &ValidatedPurchase,
    sold: &[(DateTime<Utc>, DateTime<Utc>, i64)],
    pool_units: i64,
) -> Result<()> {
    let (allocated, at) = dedicated_peak(sold, purchase.valid_from, purchase.valid_until);
    let requested = purchase.request.quantity;
    if allocated + requested > pool_units {
        return Err(LedgerError::DedicatedOverAllocation {
            tenant: purchase.request.tenant.clone(),
            requested,
            allocated,
            pool_units,
            at,
            available: (pool_units - allocated).max(0),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn req(kind: PurchaseKind, quantity: i64, period: Period) -> PurchaseRequest {
        PurchaseRequest {
            tenant: TenantId::new("acme").unwrap(),
            kind,
            quantity,
            period,
            valid_from: None,
            valid_until: None,
            idempotency_key: "k1".into(),
        }
    }

    #[test]
    fn calendar_correct_periods() {
        assert_eq!(Period::Monthly.end_after(at(2026, 1, 31), 1).unwrap(), at(2026, 2, 28));
        assert_eq!(Period::Monthly.end_after(at(2028, 1, 31), 1).unwrap(), at(2028, 2, 29));
        assert_eq!(Period::Monthly.end_after(at(2026, 1, 31), 2).unwrap(), at(2026, 3, 31));
        assert_eq!(Period::Yearly.end_after(at(2028, 2, 29), 1).unwrap(), at(2029, 2, 28));
        assert_eq!(Period::Daily.end_after(at(2026, 12, 31), 1).unwrap(), at(2027, 1, 1));
    }

    #[test]
    fn bad_purchases_name_the_rule() {
        let now = at(2026, 11, 1);
        let mut r = req(PurchaseKind::VcpuHours, 0, Period::Monthly);
        assert!(r.validate(now).unwrap_err().to_string().contains("invalid quantity 0"));
        r.quantity = -5;
        assert!(r.validate(now).unwrap_err().to_string().contains("positive"));
        r.quantity = 10;
        r.idempotency_key = " ".into();
        assert!(matches!(r.validate(now), Err(LedgerError::MissingIdempotencyKey)));
        r.idempotency_key = "k".into();
        r.valid_from = Some(at(2026, 11, 5));
        r.valid_until = Some(at(2026, 11, 4));
        assert!(matches!(r.validate(now), Err(LedgerError::InvertedValidity { .. })));
        r.valid_until = Some(at(2026, 11, 20));
        let e = r.validate(now).unwrap_err().to_string();
        assert!(e.contains("does not match the monthly period"), "{e}");
        r.valid_until = Some(at(2027, 2, 5));
        assert_eq!(r.validate(now).unwrap().valid_until, at(2027, 2, 5));
        r.valid_from = Some(at(2026, 9, 1));
        r.valid_until = None;
        assert!(matches!(r.validate(now), Err(LedgerError::ExpiredValidity { .. })));
    }

    #[test]
    fn future_start_allowed() {
        let now = at(2026, 11, 1);
        let mut r = req(PurchaseKind::VcpuHours, 10, Period::Daily);
        r.valid_from = Some(at(2026, 12, 1));
        let v = r.validate(now).unwrap();
        assert_eq!((v.valid_from, v.valid_until), (at(2026, 12, 1), at(2026, 12, 2)));
        assert_eq!(v.amount(), McSeconds::from_vcpu_hours(10));
    }

    #[test]
    fn dedicated_cannot_exceed_pool() {
        let sold = vec![
            (at(2026, 1, 1), at(2026, 2, 1), 6),
            (at(2026, 1, 20), at(2026, 3, 1), 3),
        ];
        assert_eq!(
            dedicated_peak(&sold, at(2026, 1, 10), at(2026, 2, 10)),
            (9, at(2026, 1, 20))
        );
        let mut r = req(PurchaseKind::DedicatedUnits, 2, Period::Monthly);
        r.valid_from = Some(at(2026, 1, 10));
        let v = r.validate(at(2026, 1, 1)).unwrap();
        let e = check_dedicated_room(&v, &sold, 10).unwrap_err().to_string();
        assert!(e.contains("9 of the dedicated pool's 10 Spark Units"), "{e}");
        assert!(e.contains("at most 1 can be added"), "{e}");
        assert!(check_dedicated_room(&v, &sold, 11).is_ok());
    }

    #[test]
    fn retry_differences_are_named() {
        let a = req(PurchaseKind::VcpuHours, 10, Period::Monthly);
        let mut b = a.clone();
        b.quantity = 20;
        assert_eq!(b.differences(&a), vec!["quantity: original 10, retry 20"]);
        assert!(a.differences(&a).is_empty());
    }
}
