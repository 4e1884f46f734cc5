//! The scheduling decision: pure, over the cluster, the queue and the time.
//! Order of business: expired reservations, dedicated pods (each tenant's
//! guarantee, preempting borrowed capacity), draft pods (FIFO), shared pods
//! (weighted fair share with aging), then leftover shared executors on idle
//! dedicated capacity.

use crate::fit::{FreeIndex, Misfit, resource_misfit, static_misfit, unschedulable_message};
use crate::model::{ClusterState, PendingPod, Reservation, Resources, Role};
use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use sparkcap_ledger::{Pool, TenantId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// One thing for the I/O shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bind the pod to the node.
    Bind {
        /// Pod uid (the binding's precondition).
        pod: String,
        /// Node name.
        node: String,
        /// Borrowed dedicated capacity: label it, do not charge it.
        opportunistic: bool,
    },
    /// Evict an opportunistic pod through the Eviction API.
    Evict {
        /// Victim uid.
        pod: String,
        /// Victim namespace/name.
        name: String,
        /// Grace period.
        grace_seconds: i64,
        /// The pod it makes room for.
        for_pod: String,
    },
    /// Hold executor room for an admitted gang.
    Reserve(Reservation),
    /// Drop an application's reservation.
    Release {
        /// Application.
        app: String,
    },
    /// Remember that preemption freed `node` for the pod until `until`.
    Nominate {
        /// Pod uid.
        pod: String,
        /// Node name.
        node: String,
        /// Until.
        until: DateTime<Utc>,
    },
    /// Tell people (a Kubernetes Event on the pod), only when it changed.
    Event {
        /// Pod uid.
        pod: String,
        /// Pod namespace/name.
        name: String,
        /// FailedScheduling, InsufficientBalance, Preempting…
        reason: &'static str,
        /// What and why.
        message: String,
    },
}

/// Pods alike for placement: pool, borrowed placement, tolerations and node
/// requirements, and whether held gang room is theirs to use.
type ShapeKey = (Pool, bool, u64, bool);

/// Working state of one planning pass.
struct Pass<'a> {
    state: &'a ClusterState,
    now: DateTime<Utc>,
    index: FreeIndex,
    /// Non-opportunistic dedicated cpu in use (+ held room) per tenant.
    dedicated_used: FxHashMap<&'a TenantId, i64>,
    /// Shared-pool cpu per tenant.
    shared_used: FxHashMap<&'a TenantId, i64>,
    /// Live reservations by app.
    reservations: HashMap<String, Reservation>,
    /// Held room per pool (not usable by others).
    held: BTreeMap<Pool, Resources>,
    /// Free resources per pool.
    pool_free: BTreeMap<Pool, Resources>,
    /// Equivalence cache: a pod shape that failed at this generation, and why.
    failed: HashMap<ShapeKey, (u64, Resources, String)>,
    generation: u64,
    actions: Vec<Action>,
    /// Borrowed pods by node, built on the first preemption.
    borrowed: Option<Borrowed<'a>>,
}

/// Plans binds, evictions, reservations and events for the pending pods.
pub fn plan<'a>(state: &'a ClusterState, queue: &'a [PendingPod], now: DateTime<Utc>) -> Vec<Action> {
    let mut used = vec![Resources::default(); state.nodes.len()];
    // Keyed by reference: cloning tenant ids per pass dominated the simulator.
    let mut dedicated_used: FxHashMap<&TenantId, i64> = FxHashMap::default();
    let mut shared_used: FxHashMap<&TenantId, i64> = FxHashMap::default();
    for p in &state.bound {
        if let Some(u) = used.get_mut(p.node) {
            *u = u.plus(&p.requests);
        }
        match (p.pool, p.opportunistic) {
            (Pool::Dedicated, false) => *dedicated_used.entry(&p.tenant).or_default() += p.requests.cpu,
            (Pool::Shared, false) => *shared_used.entry(&p.tenant).or_default() += p.requests.cpu,
            _ => {}
        }
    }

    let index = FreeIndex::new(&state.nodes, &used);
    let mut pool_free: BTreeMap<Pool, Resources> = BTreeMap::new();
    for (i, n) in state.nodes.iter().enumerate() {
        if let (Some(p), true) = (n.pool, n.schedulable) {
            let e = pool_free.entry(p).or_default();
            *e = e.plus(&index.free[i]);
        }
    }
    let mut pass = Pass {
        state,
        now,
        index,
        dedicated_used,
        shared_used,
        reservations: HashMap::new(),
        held: BTreeMap::new(),
        pool_free,
        failed: HashMap::new(),
        generation: 0,
        actions: Vec::new(),
        borrowed: None,
    };
    // An application lives while its driver does (bound or waiting); only
    // drivers are scanned, and only when some room is held.
    let live_apps: FxHashSet<&str> = if state.reservations.is_empty() {
        FxHashSet::default()
    } else {
        state
            .bound
            .iter()
            .filter(|p| p.role == Role::Driver && !p.terminating)
            .filter_map(|p| p.app.as_deref())
            .chain(
                queue
                    .iter()
                    .filter(|p| p.role == Role::Driver)
                    .filter_map(|p| p.app.as_deref()),
            )
            .collect()
    };
    for r in &state.reservations {
        if r.until <= now || !live_apps.contains(r.app.as_str()) {
            pass.actions.push(Action::Release { app: r.app.clone() });
            continue;
        }
        pass.hold(r.pool, &r.tenant, &r.room);
        pass.reservations.insert(r.app.clone(), r.clone());
    }

    let mut by_pool: BTreeMap<Pool, Vec<&PendingPod>> = BTreeMap::new();
    for p in queue {
        by_pool.entry(p.pool).or_default().push(p);
    }
    for pods in by_pool.values_mut() {
        pods.sort_by(|a, b| (a.created_at, &a.uid).cmp(&(b.created_at, &b.uid)));
    }
    let mut leftovers: Vec<&PendingPod> = Vec::new();
    let mut dedicated = by_pool.remove(&Pool::Dedicated).unwrap_or_default();
    // Room preemption frees belongs to the pod it was freed for (as
    // kube-scheduler counts nominated pods on their nodes): it is held for
    // it against every other placement until it binds or the nomination lapses.
    let active = |p: &PendingPod| nominated_node(state, p, now);
    let mut claims: HashMap<&str, (usize, Resources)> = HashMap::new();
    for p in &dedicated {
        if let Some(node) = active(p) {
            let need = preemption_need(state, node, p);
            pass.index.take(&state.nodes, node, &need);
            claims.insert(p.uid.as_str(), (node, need));
        }
    }
    dedicated.sort_by_key(|p| active(p).is_none());
    for pod in dedicated {
        let claim = claims.get(pod.uid.as_str()).copied();
        if let Some((node, need)) = claim {
            pass.index.give(&state.nodes, node, &need);
            // Room grew: what failed before in this pass may fit now.
            pass.generation += 1;
        }
        if !pass.place(pod, false) {
            if let Some((node, need)) = claim {
                pass.index.take(&state.nodes, node, &need);
            }
            pass.preempt_or_report(pod);
        }
    }
    for pod in by_pool.remove(&Pool::Draft).unwrap_or_default() {
        if !pass.place(pod, false) {
            pass.report(pod, pod.pool);
        }
    }
    for pod in pass.fair_order(by_pool.remove(&Pool::Shared).unwrap_or_default()) {
        if !pass.place(pod, false) {
            if pod.role == Role::Executor && pass.lending() {
                leftovers.push(pod);
            } else {
                pass.report(pod, pod.pool);
            }
        }
    }
    // Idle dedicated capacity goes first to the least-served tenants (R8.5).
    leftovers.sort_by_key(|p| {
        (
            state.tenants.get(&p.tenant).map_or(0, |t| t.recent_utilisation),
            p.created_at,
        )
    });
    for pod in leftovers {
        if !pass.place(pod, true) {
            pass.report(pod, pod.pool);
        }
    }
    pass.actions
}

impl<'a> Pass<'a> {
    fn hold(&mut self, pool: Pool, tenant: &'a TenantId, room: &Resources) {
        let e = self.held.entry(pool).or_default();
        *e = e.plus(room);
        if pool == Pool::Dedicated {
            *self.dedicated_used.entry(tenant).or_default() += room.cpu;
        }
    }

    fn unhold(&mut self, pool: Pool, tenant: &'a TenantId, r: &Resources) {
        let e = self.held.entry(pool).or_default();
        *e = e.minus(r);
        if pool == Pool::Dedicated {
            *self.dedicated_used.entry(tenant).or_default() -= r.cpu;
        }
    }

    /// Room of `pool` free now and held for no admitted gang: what a new
    /// pod may take (of the dedicated pool, what borrowers may use while
    /// [`Pass::lending`]; its owners take it back by preemption).
    fn unheld(&self, pool: Pool) -> Resources {
        let free = self.pool_free.get(&pool).copied().unwrap_or_default();
        free.minus(&self.held.get(&pool).copied().unwrap_or_default())
    }

    /// Whether dedicated capacity has been idle enough, long enough, to lend.
    fn lending(&self) -> bool {
        self.state
            .dedicated_idle_since
            .is_some_and(|since| self.now - since >= self.state.policy.lend_after)
    }

    fn guarantee(&self, tenant: &TenantId) -> i64 {
        self.state.tenants.get(tenant).map_or(0, |t| {
            t.dedicated_units.saturating_mul(self.state.policy.spark_unit.cpu)
        })
    }

    /// Weighted fair order over tenants: least usage per unit of weight
    /// first, a tenant waiting longer than the aging period counting as idle.
    fn fair_order<'q>(&self, pods: Vec<&'q PendingPod>) -> Vec<&'q PendingPod> {
        let mut per_tenant: BTreeMap<&TenantId, std::collections::VecDeque<&'q PendingPod>> = BTreeMap::new();
        for p in pods {
            per_tenant.entry(&p.tenant).or_default().push_back(p);
        }
        let aging = self.state.policy.aging.num_seconds().max(1);
        let key = |tenant: &TenantId, usage: i64, head: &PendingPod| -> i64 {
            let weight = self.state.tenants.get(tenant).map_or(1, |t| t.weight.max(1));
            let waited = (self.now - head.created_at).num_seconds().clamp(0, aging);
            // usage/weight, scaled down linearly to zero as the head ages.
            (usage.saturating_mul(1_000_000) / weight).saturating_mul(aging - waited) / aging
        };
        let mut usage: HashMap<&TenantId, i64> = HashMap::new();
        let mut heap = BinaryHeap::new();
        // Ordered by each tenant's usage per weight *after* its next pod (the
        // virtual finish time of weighted fair queueing): with usage before
        // the pod, every tenant took one pod first whatever its weight.
        for (t, q) in &per_tenant {
            let u = self.shared_used.get(*t).copied().unwrap_or(0);
            usage.insert(t, u);
            heap.push(Reverse((key(t, u + q[0].requests.cpu, q[0]), q[0].created_at, *t)));
        }
        let mut out = Vec::new();
        while let Some(Reverse((_, _, t))) = heap.pop() {
            let q = per_tenant.get_mut(t).expect("queued tenant");
            let pod = q.pop_front().expect("non-empty");
            out.push(pod);
            // Assume it binds: the next pick sees its share grow.
            let u = usage.entry(t).or_default();
            *u += pod.requests.cpu;
            if let Some(next) = q.front() {
                heap.push(Reverse((key(t, *u + next.requests.cpu, next), next.created_at, t)));
            }
        }
        out
    }

    fn shape(pod: &PendingPod) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pod.tolerations.hash(&mut h);
        pod.node_requirements.hash(&mut h);
        h.finish()
    }

    /// Places one pod if it may and can; records why not otherwise.
    fn place(&mut self, pod: &'a PendingPod, opportunistic: bool) -> bool {
        let tenant = self.state.tenants.get(&pod.tenant).cloned().unwrap_or_default();
        let target = if opportunistic { Pool::Dedicated } else { pod.pool };
        let app_reservation = pod
            .app
            .as_ref()
            .filter(|_| pod.role == Role::Executor && !opportunistic)
            .and_then(|a| self.reservations.get(a))
            // Held room is its own tenant's: an app id copied into another
            // tenant's pod labels does not unlock it.
            .filter(|r| r.tenant == pod.tenant && r.room.fits(&pod.requests))
            .cloned();
        // The money check at bind: admission may be minutes old.
        if pod.role == Role::Driver && pod.pool != Pool::Dedicated && tenant.exhausted {
            self.event(
                pod,
                "InsufficientBalance",
                format!(
                    "tenant {} has no vCPU-hours left; the driver waits until a purchase (running applications are not affected)",
                    pod.tenant
                ),
            );
            return true;
        }
        let gang_room = match (pod.role, pod.gang) {
            (Role::Driver, Some(g)) => g.executor.times(g.executors),
            _ => Resources::default(),
        };
        let need_total = pod.requests.plus(&gang_room);
        // The part of the gang held in the pod's own pool. A shared gang
        // that does not fit there while dedicated capacity is lendable is
        // admitted on shared plus lendable room (R8.2): what shared room can
        // take is held, the rest of its executors borrow when they come.
        let mut held_room = gang_room;
        if app_reservation.is_none() {
            // Entitlement: dedicated pods within their tenant's units.
            if target == Pool::Dedicated && !opportunistic {
                let used = self.dedicated_used.get(&pod.tenant).copied().unwrap_or(0);
                let guarantee = self.guarantee(&pod.tenant);
                if used + need_total.cpu > guarantee {
                    self.event(
                        pod,
                        "FailedScheduling",
                        format!(
                            "tenant {}'s dedicated units are in use: this needs {} mCPU{}, {} of {} mCPU are free",
                            pod.tenant,
                            need_total.cpu,
                            if gang_room.cpu > 0 { " with its executors" } else { "" },
                            (guarantee - used).max(0),
                            guarantee
                        ),
                    );
                    return true;
                }
            }
            // Room held for other gangs is not ours to take.
            let spare = self.unheld(target);
            if !spare.fits(&need_total) {
                let Some(g) = pod
                    .gang
                    .filter(|_| pod.role == Role::Driver && target == Pool::Shared && !opportunistic && self.lending())
                else {
                    return false;
                };
                if !spare.fits(&pod.requests) || !spare.plus(&self.unheld(Pool::Dedicated)).fits(&need_total) {
                    return false;
                }
                held_room = g
                    .executor
                    .times(executors_within(&g.executor, &spare.minus(&pod.requests)).min(g.executors));
            }
        }
        let key = (target, opportunistic, Self::shape(pod), app_reservation.is_some());
        // A pod at least as big as one of the same shape that found no node
        // in this generation finds none either; a smaller one may. One that
        // is smaller only in cpu need only look at nodes the other could not
        // use for cpu: every node with more free was refused for a reason
        // (a taint, a selector, memory, pod slots) that holds for it too.
        let mut below = i64::MAX;
        if let Some((generation, failed_need, _)) = self.failed.get(&key)
            && *generation == self.generation
        {
            if pod.requests.fits(failed_need) {
                return false;
            }
            if pod.requests.memory >= failed_need.memory && pod.requests.pods >= failed_need.pods {
                below = failed_need.cpu;
            }
        }
        let spread = pod.role == Role::Driver && target != Pool::Dedicated;
        let fits = |i: usize| {
            static_misfit(&self.state.nodes[i], pod, target, opportunistic).is_none()
                && resource_misfit(&self.index.free[i], &pod.requests).is_none()
        };
        // The node preemption freed for the pod comes first: it was emptied for it.
        let mut chosen = nominated_node(self.state, pod, self.now).filter(|&i| fits(i));
        if chosen.is_none() {
            chosen = self
                .index
                .candidates_below(target, pod.requests.cpu, below, spread)
                .find(|&i| fits(i));
        }
        let Some(i) = chosen else {
            self.failed.insert(key, (self.generation, pod.requests, String::new()));
            return false;
        };
        self.generation += 1;
        self.index.take(&self.state.nodes, i, &pod.requests);
        let pf = self.pool_free.entry(target).or_default();
        *pf = pf.minus(&pod.requests);
        match (target, opportunistic) {
            (Pool::Dedicated, false) if app_reservation.is_none() => {
                *self.dedicated_used.entry(&pod.tenant).or_default() += pod.requests.cpu
            }
            (Pool::Shared, _) => *self.shared_used.entry(&pod.tenant).or_default() += pod.requests.cpu,
            _ => {}
        }
        if let Some(mut r) = app_reservation {
            // The executor's room was held for it: move it from held to used.
            // (The reservation is the pod's application's: the same tenant.)
            self.unhold(r.pool, &pod.tenant, &pod.requests);
            if r.pool == Pool::Dedicated {
                *self.dedicated_used.entry(&pod.tenant).or_default() += pod.requests.cpu;
            }
            r.room = r.room.minus(&pod.requests);
            if r.room.pods <= 0 || r.room.cpu <= 0 {
                self.reservations.remove(&r.app);
                self.actions.push(Action::Release { app: r.app.clone() });
            } else {
                self.reservations.insert(r.app.clone(), r.clone());
                self.actions.push(Action::Reserve(r));
            }
        }
        self.actions.push(Action::Bind {
            pod: pod.uid.clone(),
            node: self.state.nodes[i].name.clone(),
            opportunistic,
        });
        if let (Some(app), true) = (&pod.app, held_room.pods > 0 && held_room.cpu > 0) {
            let r = Reservation {
                app: app.clone(),
                tenant: pod.tenant.clone(),
                pool: pod.pool,
                room: held_room,
                until: self.now + self.state.policy.reservation_ttl,
            };
            self.hold(r.pool, &pod.tenant, &r.room);
            self.reservations.insert(app.clone(), r.clone());
            self.actions.push(Action::Reserve(r));
        }
        true
    }

    fn event(&mut self, pod: &PendingPod, reason: &'static str, message: String) {
        if pod.last_reason.as_deref() != Some(message.as_str()) {
            self.actions.push(Action::Event {
                pod: pod.uid.clone(),
                name: pod.name.clone(),
                reason,
                message,
            });
        }
    }

    /// Reports why no node fits, counting each node's first misfit.
    fn report(&mut self, pod: &PendingPod, pool: Pool) {
        let reserved =
            pod.role == Role::Executor && pod.app.as_ref().is_some_and(|a| self.reservations.contains_key(a));
        let key = (pool, false, Self::shape(pod), reserved);
        if let Some((generation, smaller, reason)) = self.failed.get(&key)
            && *generation == self.generation
            && smaller.fits(&pod.requests)
            && !reason.is_empty()
        {
            let reason = reason.clone();
            self.event(pod, "FailedScheduling", reason);
            return;
        }
        let mut counts: BTreeMap<Misfit, usize> = BTreeMap::new();
        for (i, node) in self.state.nodes.iter().enumerate() {
            let m =
                static_misfit(node, pod, pool, false).or_else(|| resource_misfit(&self.index.free[i], &pod.requests));
            *counts.entry(m.unwrap_or(Misfit::Cpu)).or_default() += 1;
        }
        let free = self.pool_free.get(&pool).copied().unwrap_or_default();
        let held = self.held.get(&pool).copied().unwrap_or_default();
        let mut message = unschedulable_message(self.state.nodes.len(), &counts, pool);
        if held.cpu > 0 && !free.minus(&held).fits(&pod.requests) && free.fits(&pod.requests) {
            message.push_str(&format!(
                " {} mCPU of pool {pool} are held for admitted Spark applications' executors.",
                held.cpu
            ));
        }
        self.failed
            .insert(key, (self.generation, pod.requests, message.clone()));
        self.event(pod, "FailedScheduling", message);
    }

    /// A dedicated pod that does not fit: evict the fewest, newest borrowed
    /// pods on one node so that it does, unless that is already under way.
    fn preempt_or_report(&mut self, pod: &'a PendingPod) {
        if let Some(node) = nominated_node(self.state, pod, self.now)
            && self.state.bound.iter().any(|b| b.node == node && b.terminating)
        {
            return; // victims are still terminating: their room is coming.
        }
        let Some(chosen) = self.choose_victims(pod) else {
            self.report(pod, Pool::Dedicated);
            return;
        };
        // The pod takes what is free on the node now (held against every
        // other placement of this pass), then what earlier evictions of the
        // pass free, then its own victims' room; the rest is left for others.
        let node = chosen.node;
        let from_free = least(&chosen.need, &self.index.free[node]);
        self.index.take(&self.state.nodes, node, &from_free);
        let borrowed = self.borrowed.as_mut().expect("built by choose_victims");
        let incoming = borrowed.incoming.get(&node).copied().unwrap_or_default();
        let still = chosen.need.minus(&from_free);
        let from_incoming = least(&still, &incoming);
        let from_victims = still.minus(&from_incoming);
        borrowed.commit(&chosen, from_incoming.plus(&from_victims));
        let victims = chosen.pods;
        let grace = self.state.policy.eviction_grace_seconds;
        for v in &victims {
            self.actions.push(Action::Evict {
                pod: v.0.clone(),
                name: v.1.clone(),
                grace_seconds: grace,
                for_pod: pod.uid.clone(),
            });
        }
        self.actions.push(Action::Nominate {
            pod: pod.uid.clone(),
            node: self.state.nodes[node].name.clone(),
            until: self.now + chrono::TimeDelta::seconds(grace + 10),
        });
        self.event(
            pod,
            "Preempting",
            if victims.is_empty() {
                format!(
                    "borrowed pods being evicted on {} make room for tenant {}'s dedicated capacity",
                    self.state.nodes[node].name, pod.tenant
                )
            } else {
                format!(
                    "evicting {} borrowed pod(s) on {} to give tenant {} its dedicated capacity",
                    victims.len(),
                    self.state.nodes[node].name,
                    pod.tenant
                )
            },
        );
    }

    /// The node needing the fewest opportunistic victims (newest first), ties
    /// broken by newer victims.
    fn choose_victims(&mut self, pod: &PendingPod) -> Option<Victims> {
        let borrowed = self.borrowed.get_or_insert_with(|| Borrowed::new(self.state));
        choose_victims(self.state, borrowed, &self.index.free, pod)
    }
}

/// Where preemption makes room, and whom it evicts (uid, namespace/name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victims {
    /// Node index.
    pub node: usize,
    /// The pods to evict (none when earlier evictions of this pass free enough).
    pub pods: Vec<(String, String)>,
    /// What their eviction frees.
    pub freed: Resources,
    /// What the preempting pod needs there (with its gang when one node holds it).
    pub need: Resources,
}

/// Live opportunistic pods per node, newest first: built once per pass so
/// that each preemption decision only walks the dedicated nodes. It also
/// remembers this pass's evictions, so that two pods never count on the
/// same victim and room one pod was promised is not promised again.
#[derive(Debug, Default)]
pub struct Borrowed<'a> {
    by_node: Vec<(usize, Vec<&'a crate::model::BoundPod>)>,
    /// Room evictions chosen earlier in the pass free beyond what their pods take.
    incoming: HashMap<usize, Resources>,
}

impl<'a> Borrowed<'a> {
    /// Indexes `state`'s borrowed pods.
    pub fn new(state: &'a ClusterState) -> Self {
        let mut map: HashMap<usize, Vec<&crate::model::BoundPod>> = HashMap::new();
        for b in &state.bound {
            if b.opportunistic && !b.terminating {
                map.entry(b.node).or_default().push(b);
            }
        }
        let mut by_node: Vec<_> = map.into_iter().collect();
        for (_, v) in &mut by_node {
            v.sort_by(|a, b| b.bound_at.cmp(&a.bound_at).then_with(|| a.uid.cmp(&b.uid)));
        }
        by_node.sort_by_key(|(n, _)| *n);
        Self {
            by_node,
            incoming: HashMap::new(),
        }
    }

    /// Records `chosen` as decided: its victims are gone from the candidates
    /// and what they free beyond `taken_from_them` waits for the next pod.
    pub fn commit(&mut self, chosen: &Victims, taken_from_them: Resources) {
        if let Some((_, victims)) = self.by_node.iter_mut().find(|(n, _)| *n == chosen.node) {
            victims.retain(|v| !chosen.pods.iter().any(|(uid, _)| *uid == v.uid));
        }
        let e = self.incoming.entry(chosen.node).or_default();
        *e = e.plus(&chosen.freed).minus(&taken_from_them);
    }
}

/// What preemption frees on `node` for `pod`: a driver is admitted with its
/// executors, so room for the whole gang when the node can hold it (else for
/// the driver alone).
/// Where the pod's live nomination points in this pass's node list: looked
/// up by name, so a relist that reorders the nodes (or drops the node) never
/// moves held room to another node.
fn nominated_node(state: &ClusterState, pod: &PendingPod, now: DateTime<Utc>) -> Option<usize> {
    let (name, until) = pod.nominated.as_ref()?;
    if *until <= now {
        return None;
    }
    state.nodes.iter().position(|n| n.name == *name)
}

fn preemption_need(state: &ClusterState, node: usize, pod: &PendingPod) -> Resources {
    match (pod.role, pod.gang) {
        (Role::Driver, Some(g)) => Some(pod.requests.plus(&g.executor.times(g.executors))),
        _ => None,
    }
    .filter(|g| state.nodes[node].allocatable.fits(g))
    .unwrap_or(pod.requests)
}

/// Per resource, the smaller of the two (negative counts as zero).
/// How many pods of `each` fit in `room` (0 for an empty `each`).
fn executors_within(each: &Resources, room: &Resources) -> i64 {
    let per = |have: i64, need: i64| if need > 0 { (have / need).max(0) } else { i64::MAX };
    let n = per(room.cpu, each.cpu)
        .min(per(room.memory, each.memory))
        .min(per(room.pods, each.pods));
    if n == i64::MAX { 0 } else { n }
}

fn least(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpu: a.cpu.min(b.cpu).max(0),
        memory: a.memory.min(b.memory).max(0),
        pods: a.pods.min(b.pods).max(0),
    }
}

/// Victim selection: for every dedicated node the pod could use, take its
/// borrowed pods newest first until the pod fits; pick the node needing the
/// fewest (ties: the newer victims).
pub fn choose_victims(
    state: &ClusterState,
    borrowed: &Borrowed<'_>,
    free: &[Resources],
    pod: &PendingPod,
) -> Option<Victims> {
    let mut best: Option<(usize, usize, DateTime<Utc>, Resources)> = None; // (entry, victims, oldest victim, need)
    for (entry, (node, victims)) in borrowed.by_node.iter().enumerate() {
        let need = preemption_need(state, *node, pod);
        let incoming = borrowed.incoming.get(node).copied().unwrap_or_default();
        let mut room = free[*node].plus(&incoming);
        let mut count = 0;
        for v in victims {
            if room.fits(&need) {
                break;
            }
            room = room.plus(&v.requests);
            count += 1;
        }
        // Without victims, a node only helps if this pass's evictions free it.
        let useful = count > 0 || incoming != Resources::default();
        if !useful || !room.fits(&need) || best.is_some_and(|(_, n, _, _)| count > n) {
            continue;
        }
        if static_misfit(&state.nodes[*node], pod, Pool::Dedicated, false).is_some() {
            continue;
        }
        let oldest = victims
            .get(count.wrapping_sub(1))
            .map_or(DateTime::<Utc>::MAX_UTC, |v| v.bound_at);
        if best.is_none_or(|(_, n, o, _)| count < n || oldest > o) {
            best = Some((entry, count, oldest, need));
        }
    }
    best.map(|(entry, count, _, need)| {
        let (node, victims) = &borrowed.by_node[entry];
        Victims {
            node: *node,
            pods: victims[..count]
                .iter()
                .map(|v| (v.uid.clone(), v.name.clone()))
                .collect(),
            freed: victims[..count]
                .iter()
                .fold(Resources::default(), |a, v| a.plus(&v.requests)),
            need,
        }
    })
}

/// Tracks since when dedicated capacity has been idle above the lending
/// threshold: the new `dedicated_idle_since`.
pub fn observe_dedicated_idle(state: &ClusterState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let capacity: i64 = state
        .nodes
        .iter()
        .filter(|n| n.pool == Some(Pool::Dedicated) && n.schedulable)
        .map(|n| n.allocatable.cpu)
        .sum();
    let used: i64 = state
        .bound
        .iter()
        .filter(|b| b.pool == Pool::Dedicated && !b.opportunistic)
        .map(|b| b.requests.cpu)
        .sum();
    let idle_permille = if capacity > 0 {
        (capacity - used) * 1000 / capacity
    } else {
        0
    };
    if idle_permille > state.policy.lend_idle_permille {
        Some(state.dedicated_idle_since.unwrap_or(now))
    } else {
        None
    }
}
