//! The fault plan: which fault strikes next, and when, drawn from one seed.
//! Pure: the harness carries the faults out.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// A fault the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the scheduler replica holding the Lease.
    KillLeader,
    /// SIGKILL a standby replica.
    KillStandby,
    /// SIGSTOP the leader past its lease, then SIGCONT it.
    PauseLeader,
    /// SIGKILL the webhook.
    KillWebhook,
    /// SIGSTOP the control plane (API server and kubelets) a few seconds.
    PauseControlPlane,
    /// Terminate every PostgreSQL backend of the ledger's database.
    TerminateBackends,
    /// Hold every database round trip.
    SlowDatabase,
    /// Cut the database off.
    CutDatabase,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillStandby,
        FaultKind::PauseLeader,
        FaultKind::KillWebhook,
        FaultKind::PauseControlPlane,
        FaultKind::TerminateBackends,
        FaultKind::SlowDatabase,
        FaultKind::CutDatabase,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "scheduler leader SIGKILL",
            FaultKind::KillStandby => "scheduler standby SIGKILL",
            FaultKind::PauseLeader => "scheduler leader SIGSTOP past its lease",
            FaultKind::KillWebhook => "webhook SIGKILL",
            FaultKind::PauseControlPlane => "control plane SIGSTOP",
            FaultKind::TerminateBackends => "PostgreSQL backends terminated",
            FaultKind::SlowDatabase => "database slowed",
            FaultKind::CutDatabase => "database cut off",
        }
    }
}

/// One fault, with how long it lasts (or how long the victim stays down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// Down, frozen, slowed or cut for this long.
    pub lasts: Duration,
    /// For [`FaultKind::SlowDatabase`]: the hold per round trip.
    pub latency: Duration,
    /// For kills: the victim comes back as a new pod (new identity), not
    /// as a restarted container of the same one.
    pub rescheduled: bool,
}

/// How often each fault comes, and the gaps between them.
#[derive(Debug, Clone)]
pub struct FaultMix {
    /// Relative weights.
    pub weights: Vec<(FaultKind, u32)>,
    /// Shortest gap between two faults.
    pub min_gap: Duration,
    /// Longest gap.
    pub max_gap: Duration,
}

impl FaultMix {
    /// Scheduler kills above all (the metering scenario), every other kind now and then.
    pub fn scheduler_kills() -> Self {
        use FaultKind::*;
        Self {
            weights: vec![
                (KillLeader, 8),
                (KillStandby, 4),
                (PauseLeader, 1),
                (KillWebhook, 1),
                (PauseControlPlane, 1),
                (TerminateBackends, 1),
                (SlowDatabase, 1),
                (CutDatabase, 1),
            ],
            min_gap: Duration::from_millis(1500),
            max_gap: Duration::from_millis(3500),
        }
    }

    /// Every kind alike, a fault every 5 to 20 s (the soak).
    pub fn soak() -> Self {
        Self {
            weights: FaultKind::ALL.iter().map(|k| (*k, 1)).collect(),
            min_gap: Duration::from_secs(5),
            max_gap: Duration::from_secs(20),
        }
    }
}

/// The seeded sequence of faults.
#[derive(Debug)]
pub struct FaultPlan {
    rng: StdRng,
    mix: FaultMix,
}

impl FaultPlan {
    /// The plan `seed` gives under `mix`.
    pub fn new(seed: u64, mix: FaultMix) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            mix,
        }
    }

    /// The wait before the next fault, and the fault.
    pub fn next_fault(&mut self) -> (Duration, Fault) {
        let gap = self.rng.random_range(self.mix.min_gap..=self.mix.max_gap);
        let total: u32 = self.mix.weights.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.random_range(0..total.max(1));
        let mut kind = self.mix.weights[0].0;
        for (k, w) in &self.mix.weights {
            if pick < *w {
                kind = *k;
                break;
            }
            pick -= w;
        }
        let ms = |lo: u64, hi: u64, rng: &mut StdRng| Duration::from_millis(rng.random_range(lo..=hi));
        let lasts = match kind {
            FaultKind::KillLeader | FaultKind::KillStandby | FaultKind::KillWebhook => ms(0, 2000, &mut self.rng),
            // Past the 4 s lease, so that a standby takes over.
            FaultKind::PauseLeader => ms(5000, 8000, &mut self.rng),
            FaultKind::PauseControlPlane => ms(500, 3000, &mut self.rng),
            FaultKind::TerminateBackends => Duration::ZERO,
            FaultKind::SlowDatabase => ms(2000, 8000, &mut self.rng),
            FaultKind::CutDatabase => ms(1000, 6000, &mut self.rng),
        };
        let latency = if kind == FaultKind::SlowDatabase {
            ms(20, 250, &mut self.rng)
        } else {
            Duration::ZERO
        };
        let rescheduled = self.rng.random_bool(0.5);
        (
            gap,
            Fault {
                kind,
                lasts,
                latency,
                rescheduled,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_faults_and_the_mix_is_honoured() {
        let draw = |seed| {
            let mut p = FaultPlan::new(seed, FaultMix::scheduler_kills());
            (0..400).map(|_| p.next_fault()).collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
        let faults = draw(9);
        let kills = faults.iter().filter(|(_, f)| f.kind == FaultKind::KillLeader).count();
        // 8 of 18 by weight: about 178 of 400.
        assert!((130..230).contains(&kills), "{kills}");
        for kind in FaultKind::ALL {
            assert!(faults.iter().any(|(_, f)| f.kind == kind), "{kind:?} never drawn");
        }
        for (gap, f) in &faults {
            assert!((Duration::from_millis(1500)..=Duration::from_millis(3500)).contains(gap));
            if f.kind == FaultKind::PauseLeader {
                assert!(f.lasts > Duration::from_secs(4), "past the lease");
            }
        }
    }
}
