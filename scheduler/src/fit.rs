//! Node filtering with kube-scheduler's reasons, and the per-pool free-CPU
//! index that makes placement O(log n) instead of a scan of every node.

use crate::model::{Node, NodeRequirement, PendingPod, Resources, Taint};
use sparkcap_ledger::Pool;
use sparkcap_ledger::pool::POOL_LABEL;
use std::collections::{BTreeMap, BTreeSet};

/// Why a node does not fit a pod, worded as kube-scheduler words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Misfit {
    /// Cordoned or not ready.
    Unschedulable,
    /// Not in the pod's pool.
    Pool,
    /// A taint the pod does not tolerate.
    Taint,
    /// nodeSelector / required affinity.
    Affinity,
    /// Not enough cpu.
    Cpu,
    /// Not enough memory.
    Memory,
    /// No pod slots.
    Pods,
}

impl Misfit {
    /// The phrase after the count in "0/12 nodes are available: 3 Insufficient cpu".
    pub fn phrase(self, pool: Pool) -> String {
        match self {
            Self::Unschedulable => "node(s) were unschedulable".into(),
            Self::Pool => format!("node(s) didn't match pool {pool}"),
            Self::Taint => "node(s) had untolerated taint".into(),
            Self::Affinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Self::Cpu => "Insufficient cpu".into(),
            Self::Memory => "Insufficient memory".into(),
            Self::Pods => "Too many pods".into(),
        }
    }
}

/// Checks everything but resources. `opportunistic` skips the pool match and
/// the pool's own taint: lending dedicated capacity is the scheduler's choice.
pub fn static_misfit(node: &Node, pod: &PendingPod, pool: Pool, opportunistic: bool) -> Option<Misfit> {
    if !node.schedulable {
        return Some(Misfit::Unschedulable);
    }
    if node.pool != Some(pool) {
        return Some(Misfit::Pool);
    }
    let tolerated = |t: &Taint| {
        t.effect == "PreferNoSchedule"
            || (opportunistic && t.key == POOL_LABEL)
            || pod.tolerations.iter().any(|tol| tol.tolerates(t))
    };
    if !node.taints.iter().all(tolerated) {
        return Some(Misfit::Taint);
    }
    if !pod
        .node_requirements
        .iter()
        .all(|r: &NodeRequirement| r.matches(&node.labels))
    {
        return Some(Misfit::Affinity);
    }
    None
}

/// The first resource that does not fit.
pub fn resource_misfit(free: &Resources, need: &Resources) -> Option<Misfit> {
    if need.cpu > free.cpu {
        Some(Misfit::Cpu)
    } else if need.memory > free.memory {
        Some(Misfit::Memory)
    } else if need.pods > free.pods {
        Some(Misfit::Pods)
    } else {
        None
    }
}

/// "0/12 nodes are available: 3 Insufficient cpu, 9 node(s) didn't match pool dedicated."
pub fn unschedulable_message(total: usize, counts: &BTreeMap<Misfit, usize>, pool: Pool) -> String {
    let mut parts: Vec<String> = counts.iter().map(|(m, n)| format!("{n} {}", m.phrase(pool))).collect();
    parts.sort();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

/// Free resources per node, and per pool an ordered index of (free cpu, node).
#[derive(Debug, Clone)]
pub struct FreeIndex {
    /// Free resources by node index.
    pub free: Vec<Resources>,
    by_pool: BTreeMap<Pool, BTreeSet<(i64, usize)>>,
}

impl FreeIndex {
    /// Builds the index from nodes and their used resources.
    pub fn new(nodes: &[Node], used: &[Resources]) -> Self {
        let free: Vec<Resources> = nodes.iter().zip(used).map(|(n, u)| n.allocatable.minus(u)).collect();
        let mut by_pool: BTreeMap<Pool, BTreeSet<(i64, usize)>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if let (Some(p), true) = (n.pool, n.schedulable) {
                by_pool.entry(p).or_default().insert((free[i].cpu, i));
            }
        }
        Self { free, by_pool }
    }

    /// Takes `r` from node `i`.
    pub fn take(&mut self, nodes: &[Node], i: usize, r: &Resources) {
        self.adjust(nodes, i, |f| f.minus(r));
    }

    /// Gives `r` back to node `i`.
    pub fn give(&mut self, nodes: &[Node], i: usize, r: &Resources) {
        self.adjust(nodes, i, |f| f.plus(r));
    }

    fn adjust(&mut self, nodes: &[Node], i: usize, f: impl Fn(&Resources) -> Resources) {
        let before = self.free[i];
        self.free[i] = f(&before);
        if let (Some(p), true) = (nodes[i].pool, nodes[i].schedulable)
            && let Some(set) = self.by_pool.get_mut(&p)
        {
            set.remove(&(before.cpu, i));
            set.insert((self.free[i].cpu, i));
        }
    }

    /// Nodes of `pool` with at least `cpu` free: tightest first (packing) or
    /// loosest first (spreading).
    pub fn candidates(&self, pool: Pool, cpu: i64, spread: bool) -> Box<dyn Iterator<Item = usize> + '_> {
        self.candidates_below(pool, cpu, i64::MAX, spread)
    }

    /// [`Self::candidates`] with less than `below` cpu free.
    pub fn candidates_below(
        &self,
        pool: Pool,
        cpu: i64,
        below: i64,
        spread: bool,
    ) -> Box<dyn Iterator<Item = usize> + '_> {
        let Some(set) = self.by_pool.get(&pool) else {
            return Box::new(std::iter::empty());
        };
        if below <= cpu {
            return Box::new(std::iter::empty());
        }
        let range = set.range((cpu, 0)..(below, 0));
        if spread {
            Box::new(range.rev().map(|(_, i)| *i))
        } else {
            Box::new(range.map(|(_, i)| *i))
        }
    }
}
