//! What the scheduler decides over: nodes, bound pods, pending pods, tenants'
//! entitlements and Spark gangs. Plain data, built by the kube I/O shell (or
//! the simulator) and read by [`crate::plan::plan`].

use chrono::{DateTime, Utc};
use sparkcap_ledger::{Pool, TenantId};
use std::collections::{BTreeMap, HashMap};

/// CPU (millicores), memory (bytes) and pod slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Pod count.
    pub pods: i64,
}

impl Resources {
    /// One pod needing `cpu` and `memory`.
    pub fn pod(cpu: i64, memory: i64) -> Self {
        Self { cpu, memory, pods: 1 }
    }

    /// Whether `need` fits in `self`.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cpu <= self.cpu && need.memory <= self.memory && need.pods <= self.pods
    }

    /// `self + o`. Saturating, as are `minus` and `times`: quantities come
    /// from tenants' pods and ConfigMaps, and a saturated need fits nowhere,
    /// where a wrapped one could fit anywhere.
    pub fn plus(&self, o: &Resources) -> Self {
        Self {
            cpu: self.cpu.saturating_add(o.cpu),
            memory: self.memory.saturating_add(o.memory),
            pods: self.pods.saturating_add(o.pods),
        }
    }

    /// `self - o`.
    pub fn minus(&self, o: &Resources) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(o.cpu),
            memory: self.memory.saturating_sub(o.memory),
            pods: self.pods.saturating_sub(o.pods),
        }
    }

    /// `self × n`.
    pub fn times(&self, n: i64) -> Self {
        Self {
            cpu: self.cpu.saturating_mul(n),
            memory: self.memory.saturating_mul(n),
            pods: self.pods.saturating_mul(n),
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Key; empty with operator Exists tolerates everything.
    pub key: String,
    /// Equal (default) or Exists.
    pub operator: String,
    /// Value for Equal.
    pub value: String,
    /// Effect; empty matches all.
    pub effect: String,
}

impl Toleration {
    /// Whether it tolerates `t`.
    pub fn tolerates(&self, t: &Taint) -> bool {
        (self.effect.is_empty() || self.effect == t.effect)
            && match self.operator.as_str() {
                "Exists" => self.key.is_empty() || self.key == t.key,
                _ => self.key == t.key && self.value == t.value,
            }
    }
}

/// One requirement of a required node affinity term (or a nodeSelector entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeRequirement {
    /// Label `key` has one of `values`.
    In(String, Vec<String>),
    /// Label `key` is absent or has none of `values`.
    NotIn(String, Vec<String>),
    /// Label exists.
    Exists(String),
    /// Label absent.
    DoesNotExist(String),
}

impl NodeRequirement {
    /// Whether `labels` satisfy it.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Its `sparkcap.io/pool` label, if a known pool.
    pub pool: Option<Pool>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Allocatable.
    pub allocatable: Resources,
    /// Ready and not cordoned.
    pub schedulable: bool,
}

/// Driver or executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Driver.
    Driver,
    /// Executor.
    Executor,
}

/// A pod holding resources on a node (bound, or assumed until the bind is seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    /// Pod uid.
    pub uid: String,
    /// Namespace/name for events.
    pub name: String,
    /// Owner.
    pub tenant: TenantId,
    /// Pool it was admitted to.
    pub pool: Pool,
    /// Role.
    pub role: Role,
    /// Spark application (`spark-app-selector`).
    pub app: Option<String>,
    /// Node index in [`ClusterState::nodes`].
    pub node: usize,
    /// Requests.
    pub requests: Resources,
    /// Placed on dedicated capacity it does not own: preemptible, not charged.
    pub opportunistic: bool,
    /// When it was bound.
    pub bound_at: DateTime<Utc>,
    /// Being deleted: still holds its resources until gone.
    pub terminating: bool,
}

/// What a driver's application needs besides the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GangSpec {
    /// Executors it starts with.
    pub executors: i64,
    /// Requests of one executor.
    pub executor: Resources,
}

/// A pod waiting for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPod {
    /// Pod uid.
    pub uid: String,
    /// Namespace/name for events.
    pub name: String,
    /// Owner.
    pub tenant: TenantId,
    /// Pool from the webhook's label.
    pub pool: Pool,
    /// Role.
    pub role: Role,
    /// Spark application.
    pub app: Option<String>,
    /// Requests.
    pub requests: Resources,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// nodeSelector and required node affinity (all must hold).
    pub node_requirements: Vec<NodeRequirement>,
    /// The gang, for drivers whose executor count is known.
    pub gang: Option<GangSpec>,
    /// When it was created (queue order, aging).
    pub created_at: DateTime<Utc>,
    /// The last unschedulable reason reported, to report only changes.
    pub last_reason: Option<String>,
    /// The node preemption freed for it (by name, as kube-scheduler's
    /// `nominatedNodeName`: the node list is rebuilt, in another order,
    /// every pass), and until when that holds.
    pub nominated: Option<(String, DateTime<Utc>)>,
}

/// Executor room held for an admitted gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Application.
    pub app: String,
    /// Owner.
    pub tenant: TenantId,
    /// Pool.
    pub pool: Pool,
    /// Room still held (shrinks as executors bind).
    pub room: Resources,
    /// Released when this passes.
    pub until: DateTime<Utc>,
}

/// What the scheduler knows about a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantState {
    /// Dedicated units in force.
    pub dedicated_units: i64,
    /// vCPU-hours purchased for the current period: the shared-pool weight.
    pub weight: i64,
    /// Balance exhausted: new drivers outside its dedicated units wait.
    pub exhausted: bool,
    /// Recent utilisation of what it bought, per mille (opportunistic order, R8.5).
    pub recent_utilisation: i64,
}

impl TenantState {
    /// What the scheduler needs from a tenant's balance and the dedicated
    /// units it holds.
    pub fn from_balance(b: &sparkcap_ledger::Balance, dedicated_units: i64) -> Self {
        use sparkcap_ledger::McSeconds;
        let recent = if b.purchased > McSeconds::ZERO {
            (b.consumed_last_24h.0.saturating_mul(1000) / b.purchased.0).clamp(0, 1000)
        } else {
            0
        };
        Self {
            dedicated_units,
            weight: b.purchased.0 / McSeconds::from_vcpu_hours(1).0,
            exhausted: b.state == sparkcap_ledger::BalanceState::Exhausted,
            recent_utilisation: recent,
        }
    }
}

/// Policy knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Spark Unit CPU (dedicated guarantee = units × this).
    pub spark_unit: Resources,
    /// Idle share of dedicated capacity above which it may be lent, per mille.
    pub lend_idle_permille: i64,
    /// For at least this long.
    pub lend_after: chrono::TimeDelta,
    /// Evicted opportunistic pods get at most this grace.
    pub eviction_grace_seconds: i64,
    /// Executor room of an admitted gang is held this long.
    pub reservation_ttl: chrono::TimeDelta,
    /// A shared-pool tenant waiting this long counts as if it had no usage.
    pub aging: chrono::TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            spark_unit: Resources {
                cpu: 4000,
                memory: 16 << 30,
                pods: 0,
            },
            lend_idle_permille: 200,
            lend_after: chrono::TimeDelta::minutes(5),
            eviction_grace_seconds: 20,
            reservation_ttl: chrono::TimeDelta::minutes(5),
            aging: chrono::TimeDelta::minutes(10),
        }
    }
}

impl Policy {
    /// The Spark Unit as the ledger counts it.
    pub fn spark_unit_size(&self) -> sparkcap_ledger::Result<sparkcap_ledger::SparkUnitSize> {
        sparkcap_ledger::SparkUnitSize::new(
            sparkcap_ledger::Millicores(self.spark_unit.cpu),
            sparkcap_ledger::Bytes(self.spark_unit.memory),
        )
    }
}

/// Each pool's size in Spark Units from its nodes, as the ledger registers it.
pub fn pool_capacities(
    nodes: &[Node],
    unit: sparkcap_ledger::SparkUnitSize,
    now: DateTime<Utc>,
) -> Vec<sparkcap_ledger::PoolCapacity> {
    let allocatable: Vec<sparkcap_ledger::NodeAllocatable> = nodes
        .iter()
        .filter_map(|n| {
            Some(sparkcap_ledger::NodeAllocatable {
                name: n.name.clone(),
                pool: n.pool?,
                cpu: sparkcap_ledger::Millicores(n.allocatable.cpu),
                memory: sparkcap_ledger::Bytes(n.allocatable.memory),
                ready: n.schedulable,
            })
        })
        .collect();
    sparkcap_ledger::PoolCapacity::from_nodes(unit, &allocatable, now)
}

/// Everything `plan` reads.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Pods holding resources.
    pub bound: Vec<BoundPod>,
    /// Tenants.
    pub tenants: HashMap<TenantId, TenantState>,
    /// Gang reservations.
    pub reservations: Vec<Reservation>,
    /// Since when dedicated capacity has been more than the lending threshold idle.
    pub dedicated_idle_since: Option<DateTime<Utc>>,
    /// Policy.
    pub policy: Policy,
}
