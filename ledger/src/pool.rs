//! Pools and their size in Spark Units (R1.1–R1.5).

use crate::error::{LedgerError, Result};
use crate::units::{Bytes, Millicores};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The node label that puts a node in a pool.
pub const POOL_LABEL: &str = "sparkcap.io/pool";

/// Where a pod runs. Opportunistic is a placement flag, not a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Tenants' guaranteed dedicated units.
    Dedicated,
    /// Prepaid vCPU-hours, weighted fair share.
    Shared,
    /// A new job's first runs, for profiling.
    Draft,
}

impl Pool {
    /// Every pool, in a stable order.
    pub const ALL: [Pool; 3] = [Pool::Dedicated, Pool::Shared, Pool::Draft];

    /// Where a tenant's jobs run once out of draft: its dedicated units when
    /// it holds any, else the shared pool.
    pub fn production(dedicated_units: i64) -> Pool {
        if dedicated_units > 0 {
            Pool::Dedicated
        } else {
            Pool::Shared
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dedicated => "dedicated",
            Self::Shared => "shared",
            Self::Draft => "draft",
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pool {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dedicated" => Ok(Self::Dedicated),
            "shared" => Ok(Self::Shared),
            "draft" => Ok(Self::Draft),
            other => Err(LedgerError::InvalidPoolCapacity {
                pool: other.to_owned(),
                reason: "unknown pool; use dedicated, shared or draft".into(),
            }),
        }
    }
}

/// The size of one Spark Unit (config; default 4 cores / 16 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparkUnitSize {
    /// CPU per unit.
    pub cpu: Millicores,
    /// Memory per unit.
    pub memory: Bytes,
}

impl Default for SparkUnitSize {
    fn default() -> Self {
        Self {
            cpu: Millicores::cores(4),
            memory: Bytes::gib(16),
        }
    }
}

impl SparkUnitSize {
    /// A checked size: both parts positive.
    pub fn new(cpu: Millicores, memory: Bytes) -> Result<Self> {
        if cpu.0 <= 0 || memory.0 <= 0 {
            return Err(LedgerError::InvalidSparkUnit(format!(
                "cpu {cpu} and memory {memory} must both be positive"
            )));
        }
        Ok(Self { cpu, memory })
    }

    /// How many whole units fit in `cpu` and `memory`: the scarcer resource decides.
    pub fn units_in(self, cpu: Millicores, memory: Bytes) -> i64 {
        (cpu.0.max(0) / self.cpu.0).min(memory.0.max(0) / self.memory.0)
    }
}

/// What one node offers to pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAllocatable {
    /// Node name.
    pub name: String,
    /// Its pool, from the `sparkcap.io/pool` label.
    pub pool: Pool,
    /// Allocatable cpu.
    pub cpu: Millicores,
    /// Allocatable memory.
    pub memory: Bytes,
    /// Ready and schedulable: only those count.
    pub ready: bool,
}

/// A pool's size, as registered in the ledger by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCapacity {
    /// The pool.
    pub pool: Pool,
    /// Ready nodes counted.
    pub nodes: i64,
    /// Their allocatable cpu.
    pub cpu: Millicores,
    /// Their allocatable memory.
    pub memory: Bytes,
    /// Whole Spark Units.
    pub spark_units: i64,
    /// When this was computed.
    pub updated_at: DateTime<Utc>,
}

impl PoolCapacity {
    /// Sizes every pool from its ready nodes. Units are counted per node and
    /// summed: a Spark pod cannot span nodes, so two half-empty nodes do not
    /// make a unit a tenant could use.
    pub fn from_nodes(unit: SparkUnitSize, nodes: &[NodeAllocatable], now: DateTime<Utc>) -> Vec<PoolCapacity> {
        Pool::ALL
            .iter()
            .map(|&pool| {
                let ready = nodes.iter().filter(|n| n.pool == pool && n.ready);
                let mut cap = PoolCapacity {
                    pool,
                    nodes: 0,
                    cpu: Millicores(0),
                    memory: Bytes(0),
                    spark_units: 0,
                    updated_at: now,
                };
                for n in ready {
                    cap.nodes += 1;
                    cap.cpu.0 += n.cpu.0.max(0);
                    cap.memory.0 += n.memory.0.max(0);
                    cap.spark_units += unit.units_in(n.cpu, n.memory);
                }
                cap
            })
            .collect()
    }

    /// Rejects figures no real cluster reports.
    pub fn validate(&self) -> Result<()> {
        if self.nodes < 0 || self.cpu.0 < 0 || self.memory.0 < 0 || self.spark_units < 0 {
            return Err(LedgerError::InvalidPoolCapacity {
                pool: self.pool.to_string(),
                reason: format!(
                    "negative figures (nodes {}, cpu {}, memory {}, units {})",
                    self.nodes, self.cpu, self.memory, self.spark_units
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, pool: Pool, cores: i64, gib: i64) -> NodeAllocatable {
        NodeAllocatable {
            name: name.into(),
            pool,
            cpu: Millicores::cores(cores),
            memory: Bytes::gib(gib),
            ready: true,
        }
    }

    #[test]
    fn units_per_node_scarcer_resource_decides() {
        let su = SparkUnitSize::default();
        let mut nodes = vec![
            node("a", Pool::Dedicated, 16, 64),
            node("b", Pool::Dedicated, 16, 32), // memory-bound: 2 units
            node("c", Pool::Dedicated, 6, 64),  // cpu-bound: 1 unit
            node("d", Pool::Shared, 32, 128),
        ];
        nodes.push(NodeAllocatable {
            ready: false,
            ..node("e", Pool::Dedicated, 16, 64)
        });
        let caps = PoolCapacity::from_nodes(su, &nodes, Utc::now());
        assert_eq!(caps[0].pool, Pool::Dedicated);
        assert_eq!(caps[0].spark_units, 4 + 2 + 1);
        assert_eq!(caps[0].nodes, 3);
        assert_eq!(caps[1].spark_units, 8);
        assert_eq!(caps[2].spark_units, 0);
    }
}
