//! Faults the test control plane injects into watches, as a busy,
//! restarting or load-balanced kube-apiserver shows them to clients:
//!
//! - **cut**: the watch connection ends right after an event. The client
//!   resumes from the last version it saw, and whatever the server had not
//!   sent on that connection comes on the next one (or not at all, if the
//!   client does not resume).
//! - **expire**: a resumed watch is told 410 Gone (its version was
//!   compacted), so the client must list again.
//! - **delay**: each event is held back up to `max_delay_ms` before it is
//!   sent. Order within one stream is kept (kube-apiserver guarantees it),
//!   but streams fall out of step with each other: a pod's deletion can
//!   reach the scheduler after the node update that followed it, or reach
//!   the webhook long after the scheduler.
//!
//! What a real API server never does, this does not do either: skip an
//! event inside a stream that goes on, or reorder one stream.
//!
//! Decisions come from one RNG seeded by `seed`, so a seed gives the same
//! mix of faults; which watch each lands on depends on timing.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often each fault strikes. All zero (the default): none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WatchFaultConfig {
    /// Seed of the decisions.
    #[serde(default)]
    pub seed: u64,
    /// Chance, per event sent, that the connection ends right after it.
    #[serde(default)]
    pub cut: f64,
    /// Chance that a watch resuming from a version is told 410 Gone.
    #[serde(default)]
    pub expire: f64,
    /// Longest an event is held back before it is sent, in milliseconds.
    #[serde(default)]
    pub max_delay_ms: u64,
}

impl WatchFaultConfig {
    /// Parses `seed=1,cut=0.01,expire=0.2,delay-ms=300` (any subset).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut c = Self::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("watch fault {part:?}: expected key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("watch fault {k}={v}: {e}");
            let chance = |v: &str| -> Result<f64, String> {
                let p: f64 = v.parse().map_err(|e| bad(&e))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(bad(&"a chance between 0 and 1"))
                }
            };
            match k {
                "seed" => c.seed = v.parse().map_err(|e| bad(&e))?,
                "cut" => c.cut = chance(v)?,
                "expire" => c.expire = chance(v)?,
                "delay-ms" => c.max_delay_ms = v.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("watch fault {k:?}: known keys are seed, cut, expire, delay-ms")),
            }
        }
        Ok(c)
    }
}

/// How many faults struck.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFaultCounts {
    /// Connections ended after an event.
    pub cuts: u64,
    /// Resumed watches told 410 Gone.
    pub expiries: u64,
    /// Events held back.
    pub delayed: u64,
}

/// The faults in force and their tallies.
#[derive(Debug)]
pub struct WatchFaults {
    config: Mutex<WatchFaultConfig>,
    rng: Mutex<StdRng>,
    cuts: AtomicU64,
    expiries: AtomicU64,
    delayed: AtomicU64,
}

impl Default for WatchFaults {
    fn default() -> Self {
        Self {
            config: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(0)),
            cuts: AtomicU64::new(0),
            expiries: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        }
    }
}

impl WatchFaults {
    /// Puts `config` in force, its RNG reseeded.
    pub fn set(&self, config: WatchFaultConfig) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(config.seed);
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// What is in force.
    pub fn config(&self) -> WatchFaultConfig {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The tallies so far.
    pub fn counts(&self) -> WatchFaultCounts {
        WatchFaultCounts {
            cuts: self.cuts.load(Ordering::Relaxed),
            expiries: self.expiries.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
        }
    }

    fn roll(&self, chance: f64) -> bool {
        chance > 0.0 && self.rng.lock().unwrap_or_else(|p| p.into_inner()).random_bool(chance)
    }

    /// Whether to end the connection after the event just sent.
    pub fn cut_now(&self) -> bool {
        let hit = self.roll(self.config().cut);
        if hit {
            self.cuts.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Whether to answer a resuming watch with 410 Gone.
    pub fn expire_now(&self) -> bool {
        let hit = self.roll(self.config().expire);
        if hit {
            self.expiries.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// How long to hold the next event back.
    pub fn delay(&self) -> Option<Duration> {
        let max = self.config().max_delay_ms;
        if max == 0 {
            return None;
        }
        let ms = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random_range(0..=max);
        self.delayed.fetch_add(1, Ordering::Relaxed);
        Some(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_wrong() {
        let c = WatchFaultConfig::parse("seed=7, cut=0.05,expire=0.5,delay-ms=200").unwrap();
        assert_eq!(
            c,
            WatchFaultConfig {
                seed: 7,
                cut: 0.05,
                expire: 0.5,
                max_delay_ms: 200
            }
        );
        assert_eq!(WatchFaultConfig::parse("").unwrap(), WatchFaultConfig::default());
        assert!(
            WatchFaultConfig::parse("cut=2")
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!(WatchFaultConfig::parse("drop=0.1").unwrap_err().contains("known keys"));
        assert!(WatchFaultConfig::parse("cut").unwrap_err().contains("key=value"));
    }

    #[test]
    fn a_seed_gives_the_same_faults() {
        let run = || {
            let f = WatchFaults::default();
            f.set(WatchFaultConfig::parse("seed=3,cut=0.3").unwrap());
            (0..50).map(|_| f.cut_now()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(run().iter().any(|c| *c) && !run().iter().all(|c| *c));
    }
}
