//! Integer units. CPU is millicores, usage millicore-seconds, memory bytes:
//! money is never a float, so a balance can be checked to the last unit.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Millicore-seconds in one vCPU-hour.
pub const MCS_PER_VCPU_HOUR: i64 = 3_600_000;

/// CPU in thousandths of a core, as Kubernetes writes `cpu: 500m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millicores(pub i64);

impl Millicores {
    /// `n` whole cores.
    pub const fn cores(n: i64) -> Self {
        Self(n * 1000)
    }

    /// Usage of this much CPU held for `seconds`.
    pub fn for_seconds(self, seconds: i64) -> McSeconds {
        McSeconds(self.0 * seconds)
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// Usage: millicores held for seconds. 1 vCPU-hour = 3,600,000 mc·s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct McSeconds(pub i64);

impl McSeconds {
    /// Zero usage.
    pub const ZERO: Self = Self(0);

    /// `hours` whole vCPU-hours.
    pub const fn from_vcpu_hours(hours: i64) -> Self {
        Self(hours * MCS_PER_VCPU_HOUR)
    }

    /// For display only: never feed this back into arithmetic.
    pub fn as_vcpu_hours(self) -> f64 {
        self.0 as f64 / MCS_PER_VCPU_HOUR as f64
    }
}

impl fmt::Display for McSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} vCPU-hours", self.as_vcpu_hours())
    }
}

impl Add for McSeconds {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0 + rhs.0)
    }
}

impl AddAssign for McSeconds {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

impl Sub for McSeconds {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0 - rhs.0)
    }
}

impl SubAssign for McSeconds {
    fn sub_assign(&mut self, rhs: Self) {
        self.0 -= rhs.0;
    }
}

impl std::iter::Sum for McSeconds {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        Self(iter.map(|m| m.0).sum())
    }
}

/// Memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub i64);

impl Bytes {
    /// `n` GiB.
    pub const fn gib(n: i64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GIB: i64 = 1024 * 1024 * 1024;
        if self.0 % GIB == 0 {
            write!(f, "{}Gi", self.0 / GIB)
        } else {
            write!(f, "{}Mi", self.0 / (1024 * 1024))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_hour_is_3_6_million_mcs() {
        assert_eq!(McSeconds::from_vcpu_hours(1), Millicores::cores(1).for_seconds(3600));
        assert_eq!(Millicores(500).to_string(), "500m");
        assert_eq!(Millicores::cores(4).to_string(), "4");
        assert_eq!(Bytes::gib(16).to_string(), "16Gi");
        assert_eq!(McSeconds::from_vcpu_hours(500).to_string(), "500.0 vCPU-hours");
    }
}
