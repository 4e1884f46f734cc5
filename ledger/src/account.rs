//! A tenant's prepaid vCPU-hour account: purchases are lots that usage is
//! drawn from, earliest expiry first; usage with no lot to pay for it becomes
//! debt that the next lot pays. Running jobs are never killed for money, so
//! debt is real and must be carried, not dropped.
//!
//! Everything here is pure: both stores load an [`Account`], call these
//! functions, and persist the lots' `consumed` and the debt.

use crate::units::{McSeconds, Millicores};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// A vCPU-hour purchase seen as money to draw from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// The purchase id.
    pub purchase_id: i64,
    /// Start (inclusive).
    pub valid_from: DateTime<Utc>,
    /// End (exclusive); what is left then expires.
    pub valid_until: DateTime<Utc>,
    /// Credit bought.
    pub amount: McSeconds,
    /// Credit used.
    pub consumed: McSeconds,
}

impl Lot {
    /// Credit left.
    pub fn remaining(&self) -> McSeconds {
        self.amount - self.consumed
    }

    pub(crate) fn valid_at(&self, t: DateTime<Utc>) -> bool {
        self.valid_from <= t && t < self.valid_until
    }
}

/// A tenant's lots and debt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its vCPU-hour purchases.
    pub lots: Vec<Lot>,
    /// Usage no lot has paid for yet.
    pub debt: McSeconds,
    /// When the oldest unpaid usage happened.
    pub debt_since: Option<DateTime<Utc>>,
}

/// How a balance stands (R9.3, R9.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalanceState {
    /// More than 20 % left.
    Ok,
    /// 20 % or less left: alert.
    Low,
    /// Nothing left: new drivers are refused until a purchase.
    Exhausted,
}

impl BalanceState {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Low => "low",
            Self::Exhausted => "exhausted",
        }
    }
}

/// A tenant's vCPU-hour balance at one instant (R9.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Credit of the lots valid now.
    pub purchased: McSeconds,
    /// What has been drawn from them, plus unpaid debt.
    pub consumed: McSeconds,
    /// `purchased - consumed`; negative when in debt.
    pub remaining: McSeconds,
    /// Ok / low / exhausted.
    pub state: BalanceState,
    /// Credit of lots that start later.
    pub upcoming: McSeconds,
    /// vCPU-hour usage over the last 24 hours (the dedicated pool's, covered
    /// by units, is not counted).
    pub consumed_last_24h: McSeconds,
    /// Mean CPU in use over the last 24 hours, in millicores.
    pub rate: Millicores,
    /// When the balance reaches zero at that rate (none when idle or exhausted).
    pub depletion_at: Option<DateTime<Utc>>,
    /// When the earliest valid lot with credit left expires.
    pub next_expiry: Option<DateTime<Utc>>,
    /// When the unpaid usage began, if any.
    pub debt_since: Option<DateTime<Utc>>,
}

/// How one charge was paid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeEffect {
    /// Amount taken from each lot.
    pub from_lots: Vec<(i64, McSeconds)>,
    /// Amount added to debt.
    pub to_debt: McSeconds,
}

impl Account {
    /// Puts lots in the order they pay: earliest expiry first, then oldest
    /// purchase. Done in place, once; the order is part of no identity.
    fn order_lots(&mut self) {
        if !self.lots.is_sorted_by_key(|l| (l.valid_until, l.purchase_id)) {
            self.lots.sort_by_key(|l| (l.valid_until, l.purchase_id));
        }
    }

    /// Pays debt from every lot that has started by `at` and was still valid
    /// when the debt arose: the next purchase pays for what ran unpaid.
    pub fn settle(&mut self, at: DateTime<Utc>) {
        let Some(since) = self.debt_since else {
            return;
        };
        self.order_lots();
        for lot in &mut self.lots {
            if self.debt.0 <= 0 {
                break;
            }
            if lot.valid_from <= at && lot.valid_until > since {
                let take = lot.remaining().min(self.debt);
                if take.0 > 0 {
                    lot.consumed += take;
                    self.debt -= take;
                }
            }
        }
        if self.debt.0 <= 0 {
            self.debt = McSeconds::ZERO;
            self.debt_since = None;
        }
    }

    /// Charges `cpu` held over `[from, to)`. The interval is cut at every lot
    /// boundary so each piece is paid by the lots valid for all of it.
    pub fn charge(&mut self, from: DateTime<Utc>, to: DateTime<Utc>, cpu: Millicores) -> ChargeEffect {
        let mut effect = ChargeEffect::default();
        if to <= from {
            return effect;
        }
        self.order_lots();
        let inside = |t: &DateTime<Utc>| from < *t && *t < to;
        if !self
            .lots
            .iter()
            .any(|l| inside(&l.valid_from) || inside(&l.valid_until))
        {
            self.charge_piece(from, to, cpu, &mut effect);
            return effect;
        }
        let mut cuts: Vec<DateTime<Utc>> = self
            .lots
            .iter()
            .flat_map(|l| [l.valid_from, l.valid_until])
            .filter(inside)
            .collect();
        cuts.push(to);
        cuts.sort();
        cuts.dedup();
        let mut start = from;
        for end in cuts {
            self.charge_piece(start, end, cpu, &mut effect);
            start = end;
        }
        effect
    }

    fn charge_piece(&mut self, from: DateTime<Utc>, to: DateTime<Utc>, cpu: Millicores, effect: &mut ChargeEffect) {
        self.settle(from);
        let mut due = cpu.for_seconds((to - from).num_seconds());
        for lot in &mut self.lots {
            if due.0 == 0 {
                break;
            }
            if lot.valid_from <= from && to <= lot.valid_until {
                let take = lot.remaining().min(due);
                if take.0 > 0 {
                    lot.consumed += take;
                    due -= take;
                    match effect.from_lots.iter_mut().find(|(id, _)| *id == lot.purchase_id) {
                        Some((_, m)) => *m += take,
                        None => effect.from_lots.push((lot.purchase_id, take)),
                    }
                }
            }
        }
        if due.0 > 0 {
            if self.debt.0 == 0 {
                // The lots ran dry partway: debt starts at that second.
                let paid = cpu.for_seconds((to - from).num_seconds()) - due;
                self.debt_since = Some(from + TimeDelta::seconds(paid.0 / cpu.0));
            }
            self.debt += due;
            effect.to_debt += due;
        }
    }

    /// Gives back a charge of `cpu` over `[from, to)` that should not have
    /// been made (a pod's end reached the ledger after it was charged past
    /// it). What was charged last is given back first: the debt, then the
    /// lots valid over the interval, the ones drawn last (latest in paying
    /// order) first, then any other lot. Returns what could not be given
    /// back, which is zero whenever the amount was charged to this account
    /// before: drawn + debt only grows by charges.
    pub fn refund(&mut self, from: DateTime<Utc>, to: DateTime<Utc>, cpu: Millicores) -> McSeconds {
        if to <= from {
            return McSeconds::ZERO;
        }
        let mut due = cpu.for_seconds((to - from).num_seconds());
        let back = self.debt.min(due);
        self.debt -= back;
        due -= back;
        if self.debt.0 == 0 {
            self.debt_since = None;
        }
        self.order_lots();
        let overlaps = |l: &Lot| l.valid_from < to && from < l.valid_until;
        for pass in [true, false] {
            for lot in self.lots.iter_mut().rev() {
                if due.0 == 0 {
                    return due;
                }
                if overlaps(lot) == pass {
                    let back = lot.consumed.min(due);
                    lot.consumed -= back;
                    due -= back;
                }
            }
        }
        due
    }

    /// The balance at `now`, given the usage of the last 24 hours. Debt that
    /// a lot valid now could pay is shown as paid, as the next write will do.
    pub fn balance(&self, now: DateTime<Utc>, consumed_last_24h: McSeconds) -> Balance {
        let mut acct = self.clone();
        acct.settle(now);
        let valid: Vec<&Lot> = acct.lots.iter().filter(|l| l.valid_at(now)).collect();
        let purchased: McSeconds = valid.iter().map(|l| l.amount).sum();
        let remaining = valid.iter().map(|l| l.remaining()).sum::<McSeconds>() - acct.debt;
        let upcoming = acct.lots.iter().filter(|l| l.valid_from > now).map(|l| l.amount).sum();
        let state = if remaining.0 <= 0 {
            BalanceState::Exhausted
        } else if remaining.0.saturating_mul(5) <= purchased.0 {
            BalanceState::Low
        } else {
            BalanceState::Ok
        };
        let rate = Millicores(consumed_last_24h.0 / 86_400);
        let depletion_at = (rate.0 > 0 && remaining.0 > 0).then(|| now + TimeDelta::seconds(remaining.0 / rate.0));
        let next_expiry = valid
            .iter()
            .filter(|l| l.remaining().0 > 0)
            .map(|l| l.valid_until)
            .min();
        Balance {
            at: now,
            purchased,
            consumed: purchased - remaining,
            remaining,
            state,
            upcoming,
            consumed_last_24h,
            rate,
            depletion_at,
            next_expiry,
            debt_since: acct.debt_since,
        }
    }

    /// Total ever drawn from lots plus debt: what the tenant has been charged.
    pub fn total_charged(&self) -> McSeconds {
        self.lots.iter().map(|l| l.consumed).sum::<McSeconds>() + self.debt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn h(hour: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::hours(hour)
    }

    fn lot(id: i64, from: i64, until: i64, hours: i64) -> Lot {
        Lot {
            purchase_id: id,
            valid_from: h(from),
            valid_until: h(until),
            amount: McSeconds::from_vcpu_hours(hours),
            consumed: McSeconds::ZERO,
        }
    }

    #[test]
    fn earliest_expiry_pays_first() {
        let mut a = Account {
            lots: vec![lot(1, 0, 100, 10), lot(2, 0, 50, 10)],
            ..Default::default()
        };
        let e = a.charge(h(1), h(2), Millicores::cores(4));
        assert_eq!(e.from_lots, vec![(2, McSeconds::from_vcpu_hours(4))]);
        let b = a.balance(h(2), McSeconds::ZERO);
        assert_eq!(b.remaining, McSeconds::from_vcpu_hours(16));
        assert_eq!(b.state, BalanceState::Ok);
    }

    #[test]
    fn charge_is_cut_at_lot_boundaries_and_overflow_is_debt() {
        // lot 1 covers hours 0..2, lot 2 starts at hour 2.
        let mut a = Account {
            lots: vec![lot(1, 0, 2, 100), lot(2, 2, 10, 1)],
            ..Default::default()
        };
        let e = a.charge(h(1), h(4), Millicores::cores(1));
        assert_eq!(
            e.from_lots,
            vec![(1, McSeconds::from_vcpu_hours(1)), (2, McSeconds::from_vcpu_hours(1))]
        );
        assert_eq!(e.to_debt, McSeconds::from_vcpu_hours(1));
        assert_eq!(a.debt_since, Some(h(3)));
        let b = a.balance(h(4), McSeconds::ZERO);
        assert_eq!(b.state, BalanceState::Exhausted);
        assert_eq!(b.remaining, McSeconds::from_vcpu_hours(-1));
        // A later purchase pays the debt.
        a.lots.push(lot(3, 5, 20, 10));
        let b = a.balance(h(6), McSeconds::ZERO);
        assert_eq!(b.remaining, McSeconds::from_vcpu_hours(9));
        a.settle(h(6));
        assert_eq!(a.debt, McSeconds::ZERO);
        assert_eq!(a.total_charged(), McSeconds::from_vcpu_hours(3));
    }

    #[test]
    fn low_and_depletion() {
        let a = Account {
            lots: vec![lot(1, 0, 1000, 100)],
            ..Default::default()
        };
        let mut a2 = a.clone();
        a2.charge(h(0), h(20), Millicores::cores(4));
        let b = a2.balance(h(20), McSeconds::from_vcpu_hours(48));
        assert_eq!(b.remaining, McSeconds::from_vcpu_hours(20));
        assert_eq!(b.state, BalanceState::Low);
        assert_eq!(b.rate, Millicores::cores(2));
        assert_eq!(b.depletion_at, Some(h(30)));
        assert_eq!(a.balance(h(0), McSeconds::ZERO).state, BalanceState::Ok);
        assert_eq!(
            Account::default().balance(h(0), McSeconds::ZERO).state,
            BalanceState::Exhausted
        );
    }

    proptest! {
        /// Whatever the lots, charges and refunds, nothing is created or
        /// lost: drawn + debt equals the charges less the refunds, and no lot
        /// is overdrawn or drawn below zero.
        #[test]
        fn charges_are_conserved(
            lots in prop::collection::vec((0i64..48, 1i64..48, 0i64..20), 0..5),
            charges in prop::collection::vec((0i64..100, 1i64..10, 1i64..8000, 0i64..12), 1..30),
        ) {
            let mut a = Account {
                lots: lots.iter().enumerate()
                    .map(|(i, &(from, len, hours))| lot(i as i64, from, from + len, hours))
                    .collect(),
                ..Default::default()
            };
            let mut expected = McSeconds::ZERO;
            let mut t = 0;
            for (gap, len, mc, back) in charges {
                let from = t + gap;
                a.charge(h(from), h(from + len), Millicores(mc));
                expected += Millicores(mc).for_seconds(len * 3600);
                // Sometimes the tail of that charge is given back (a late end).
                let back = back.min(len);
                prop_assert_eq!(a.refund(h(from + len - back), h(from + len), Millicores(mc)), McSeconds::ZERO);
                expected -= Millicores(mc).for_seconds(back * 3600);
                t = from + len - back;
            }
            prop_assert_eq!(a.total_charged(), expected);
            for l in &a.lots {
                prop_assert!(l.consumed.0 >= 0 && l.consumed <= l.amount);
            }
            prop_assert!(a.debt.0 >= 0);
            prop_assert_eq!(a.debt.0 > 0, a.debt_since.is_some());
        }
    }
}
