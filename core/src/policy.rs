//! The settings both binaries must agree on, parsed and checked in one
//! place: the Spark Unit (what a dedicated unit guarantees, how pools are
//! sized), how many runs a job spends in draft, and which internal hosts
//! tenants' notification URLs may reach. Each binary flattens
//! [`PolicyArgs`] into its command line; a value is refused the same way
//! by both, with the bound named.

use sparkcap_ledger::egress::EgressPolicy;
use sparkcap_ledger::{Bytes, Millicores, SparkUnitSize};

const SPARK_UNIT_CORES: (i64, i64, i64) = (1, 4, 1024);
const SPARK_UNIT_MEMORY_GIB: (i64, i64, i64) = (1, 16, 8192);
const DRAFT_RUNS: (i64, i64, i64) = (0, 3, 1000);

/// The shared flags (each also read from its environment variable); the
/// bounds and defaults are the (min, default, max) constants above.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Spark Unit size: cores (a dedicated unit's guarantee), 1 to 1024.
    #[arg(long, env = "SPARKCAP_SPARK_UNIT_CORES", default_value_t = SPARK_UNIT_CORES.1)]
    pub spark_unit_cores: i64,
    /// Spark Unit size: GiB of memory, 1 to 8192.
    #[arg(long, env = "SPARKCAP_SPARK_UNIT_MEMORY_GIB", default_value_t = SPARK_UNIT_MEMORY_GIB.1)]
    pub spark_unit_memory_gib: i64,
    /// A job's first N runs go to the draft pool, and N consecutive runs
    /// within SLA promote it (0: no draft pool), 0 to 1000.
    #[arg(long, env = "SPARKCAP_DRAFT_RUNS", default_value_t = DRAFT_RUNS.1)]
    pub draft_runs: i64,
    /// Hosts tenants' notification URLs may reach over plain http and at
    /// internal addresses (comma-separated or repeated). Others must be
    /// public https hosts.
    #[arg(long, env = "SPARKCAP_NOTIFY_ALLOW_HOST", value_delimiter = ',')]
    pub notify_allow_host: Vec<String>,
}

impl Default for PolicyArgs {
    fn default() -> Self {
        Self {
            spark_unit_cores: SPARK_UNIT_CORES.1,
            spark_unit_memory_gib: SPARK_UNIT_MEMORY_GIB.1,
            draft_runs: DRAFT_RUNS.1,
            notify_allow_host: Vec::new(),
        }
    }
}

/// [`PolicyArgs`], checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The Spark Unit.
    pub spark_unit: SparkUnitSize,
    /// Draft runs before promotion.
    pub draft_runs: i64,
    /// Where notifications may go.
    pub egress: EgressPolicy,
}

/// A shared flag out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} {value} must be {min} to {max} (default {default})")]
pub struct PolicyError {
    /// The flag.
    pub flag: &'static str,
    /// What was given.
    pub value: i64,
    /// Smallest allowed.
    pub min: i64,
    /// Largest allowed.
    pub max: i64,
    /// The default.
    pub default: i64,
}

impl PolicyArgs {
    /// Checks every bound, once, for both binaries.
    pub fn validate(&self) -> Result<Policy, PolicyError> {
        let check = |flag, value: i64, (min, default, max): (i64, i64, i64)| {
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(PolicyError {
                    flag,
                    value,
                    min,
                    max,
                    default,
                })
            }
        };
        let cores = check("spark-unit-cores", self.spark_unit_cores, SPARK_UNIT_CORES)?;
        let gib = check(
            "spark-unit-memory-gib",
            self.spark_unit_memory_gib,
            SPARK_UNIT_MEMORY_GIB,
        )?;
        let draft_runs = check("draft-runs", self.draft_runs, DRAFT_RUNS)?;
        // Both positive within the bounds just checked.
        let spark_unit = SparkUnitSize {
            cpu: Millicores(cores * 1000),
            memory: Bytes(gib << 30),
        };
        Ok(Policy {
            spark_unit,
            draft_runs,
            egress: EgressPolicy::allowing(&self.notify_allow_host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_binaries_refuse_the_same_values_naming_the_bound() {
        assert!(PolicyArgs::default().validate().is_ok());
        for (args, says) in [
            (
                PolicyArgs {
                    spark_unit_cores: 0,
                    ..Default::default()
                },
                "--spark-unit-cores 0 must be 1 to 1024 (default 4)",
            ),
            (
                PolicyArgs {
                    spark_unit_memory_gib: i64::MAX,
                    ..Default::default()
                },
                "--spark-unit-memory-gib 9223372036854775807 must be 1 to 8192 (default 16)",
            ),
            (
                PolicyArgs {
                    draft_runs: -1,
                    ..Default::default()
                },
                "--draft-runs -1 must be 0 to 1000 (default 3)",
            ),
        ] {
            assert_eq!(args.validate().unwrap_err().to_string(), says);
        }
        let p = PolicyArgs {
            spark_unit_cores: 8,
            spark_unit_memory_gib: 32,
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(p.spark_unit.cpu, Millicores(8000));
    }
}
