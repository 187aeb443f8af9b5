//! Which nodes may run a service's tasks, and which of them gets the next one ("spread").
//!
//! Task counts are kept for the whole pass and updated as tasks are created and shut down, so
//! that every placement in a pass sees the ones made before it: scaling 1 -> 5 on three nodes
//! gives 2/2/1 in a single pass.

use std::{
    cell::Cell,
    collections::{BTreeSet, HashMap},
};

use crate::cluster::{
    Availability, ClusterState, Constraint, NodeRecord, NodeResources, NodeUsage, Resources, Task,
};

use super::constraints::satisfies;

/// The pass's view of the nodes: the store's records plus readiness, asked once per node; and
/// the pass's clock.
pub(super) struct Ctx<'a> {
    pub state: &'a ClusterState,
    pub now: u64,
    ready: HashMap<&'a str, bool>,
    /// The earliest time a decision this pass put off (a restart delay, an update's delay or
    /// monitor period) may be taken, for the service being passed: until then, and while
    /// nothing else changes, another pass decides the same for it.
    wake_at: Cell<Option<u64>>,
}

impl<'a> Ctx<'a> {
    pub fn new(state: &'a ClusterState, is_ready: &dyn Fn(&str) -> bool, now: u64) -> Self {
        let ready = state
            .nodes
            .keys()
            .map(|id| (id.as_str(), is_ready(id)))
            .collect();
        Ctx {
            state,
            now,
            ready,
            wake_at: Cell::new(None),
        }
    }

    /// Whether time `at` (ms) has come; if not, the pass is to run again then. Every decision
    /// that waits for a time asks through this (or [`Ctx::wake_at`]): that is what makes
    /// [`crate::orchestrator::Reconciled::wake_at_ms`] true.
    pub fn reached(&self, at: u64) -> bool {
        let reached = self.now >= at;
        if !reached {
            self.wake_at(at);
        }
        reached
    }

    /// Something this pass decided changes by itself at `at` (ms), later than now.
    pub fn wake_at(&self, at: u64) {
        let earliest = self.wake_at.get().map_or(at, |w| w.min(at));
        self.wake_at.set(Some(earliest));
    }

    /// The earliest time noted by [`Ctx::reached`] and [`Ctx::wake_at`] since the last call:
    /// the pass asks after each service.
    pub fn take_wake(&self) -> Option<u64> {
        self.wake_at.take()
    }

    pub fn node(&self, id: &str) -> Option<&'a NodeRecord> {
        self.state.nodes.get(id)
    }

    fn is_ready(&self, id: &str) -> bool {
        self.ready.get(id).copied().unwrap_or(false)
    }

    /// Whether a task already on `node_id` may stay there: the node exists, is not drained and
    /// still satisfies the constraints. A Down node keeps its tasks here; replicated services
    /// add readiness on top (see [`Ctx::can_keep_replicated`]).
    pub fn can_keep(&self, node_id: &str, constraints: &[Constraint]) -> bool {
        self.node(node_id)
            .is_some_and(|n| n.availability != Availability::Drain && satisfies(n, constraints))
    }

    /// Replicated tasks on a Down node are replaced elsewhere, so they may not stay.
    pub fn can_keep_replicated(&self, node_id: &str, constraints: &[Constraint]) -> bool {
        self.can_keep(node_id, constraints) && self.is_ready(node_id)
    }

    /// Whether a new task may be placed on `node_id`: Active, Ready, constraints satisfied.
    pub fn can_take_new(&self, node_id: &str, constraints: &[Constraint]) -> bool {
        self.node(node_id)
            .is_some_and(|n| self.available(n) && satisfies(n, constraints))
    }

    fn available(&self, node: &NodeRecord) -> bool {
        node.availability == Availability::Active && self.is_ready(&node.id)
    }

    /// The nodes a service's new tasks may go to, and why there are none when there are none.
    pub fn candidates(&self, constraints: &[Constraint]) -> Candidates<'a> {
        let mut nodes = Vec::new();
        let mut indices = Vec::new();
        let mut unavailable = 0;
        let mut unsatisfied = 0;
        for (index, node) in self.state.nodes.values().enumerate() {
            // Docker's filter order: readiness/availability first, then constraints, and a
            // node is counted against the first filter it fails.
            if !self.available(node) {
                unavailable += 1;
            } else if !satisfies(node, constraints) {
                unsatisfied += 1;
            } else {
                nodes.push(node.id.as_str());
                indices.push(index);
            }
        }
        Candidates {
            nodes,
            indices,
            unavailable,
            unsatisfied,
        }
    }
}

/// Why no node fits, counted per node by the first filter it fails.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Refusals {
    pub unavailable: usize,
    /// Too little CPU or memory left for the task's reservations.
    pub insufficient: usize,
    pub unsatisfied: usize,
    /// Nodes that already run `--replicas-max-per-node` of the service's tasks.
    pub full: usize,
}

/// Docker's message, most frequent reason first:
/// `no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not available
/// for new tasks)` (Docker's filter order, and its words; the max-replicas one names no
/// count).
pub(super) fn no_suitable_node(refusals: Refusals) -> String {
    let Refusals {
        unavailable,
        insufficient,
        unsatisfied,
        full,
    } = refusals;
    let plural = |n: usize| if n == 1 { "node" } else { "nodes" };
    let mut reasons = Vec::new();
    if unavailable > 0 {
        reasons.push((
            unavailable,
            format!(
                "{unavailable} {} not available for new tasks",
                plural(unavailable)
            ),
        ));
    }
    if insufficient > 0 {
        reasons.push((
            insufficient,
            format!(
                "insufficient resources on {insufficient} {}",
                plural(insufficient)
            ),
        ));
    }
    if unsatisfied > 0 {
        reasons.push((
            unsatisfied,
            format!(
                "scheduling constraints not satisfied on {unsatisfied} {}",
                plural(unsatisfied)
            ),
        ));
    }
    if full > 0 {
        reasons.push((full, "max replicas per node limit exceed".to_string()));
    }
    // Stable: on a tie the earlier filter's reason stays first.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    if reasons.is_empty() {
        return "no suitable node".to_string();
    }
    let reasons: Vec<String> = reasons.into_iter().map(|(_, r)| r).collect();
    format!("no suitable node ({})", reasons.join("; "))
}

pub(super) struct Candidates<'a> {
    /// Eligible node IDs, in ID order.
    pub nodes: Vec<&'a str>,
    /// Their positions among the store's nodes (see [`Placer`]).
    indices: Vec<usize>,
    /// Nodes left out, by the first filter they failed: for the Pending error.
    unavailable: usize,
    unsatisfied: usize,
}

/// One more (`add`) or one less.
fn step(n: usize, add: bool) -> usize {
    if add { n + 1 } else { n.saturating_sub(1) }
}

/// Task counts and reservations per node, of each service and of all services. Nodes are
/// numbered by their position in the store's (ordered) node map, as in [`Candidates`], so that
/// choosing a node compares array entries rather than hashing node IDs: placement is the hot
/// loop.
pub(super) struct Placer {
    index: HashMap<String, usize>,
    total: Vec<usize>,
    /// Service ID -> tasks per node.
    per_service: HashMap<String, Vec<usize>>,
    /// What each node has for tasks, and what its tasks reserve of it (CPUs, memory).
    capacity: Vec<NodeResources>,
    reserved: Vec<NodeResources>,
}

impl Placer {
    /// The counts of `state`, each service's for the services `only` names (all without it):
    /// a pass over some services compares per-service counts of those alone. The totals and
    /// reservations are every service's, as the store keeps them per node.
    pub fn new(state: &ClusterState, only: Option<&BTreeSet<String>>) -> Self {
        let usage: Vec<NodeUsage> = state
            .nodes
            .keys()
            .map(|id| state.tasks.usage_of(id))
            .collect();
        let mut placer = Placer {
            index: state
                .nodes
                .keys()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            total: usage.iter().map(|u| u.tasks).collect(),
            per_service: HashMap::new(),
            capacity: state.nodes.values().map(|n| n.resources).collect(),
            reserved: usage
                .iter()
                .map(|u| NodeResources {
                    nano_cpus: u.nano_cpus,
                    memory_bytes: u.memory_bytes,
                })
                .collect(),
        };
        let services: Box<dyn Iterator<Item = &String>> = match only {
            None => Box::new(state.services.keys()),
            Some(ids) => Box::new(ids.iter()),
        };
        for id in services {
            for task in state.tasks.of_service(id) {
                placer.count_service(task, true);
            }
        }
        placer
    }

    /// Adds (`add`) or removes a task from the counts, if it occupies a node of the store.
    pub fn count(&mut self, task: &Task, add: bool) {
        self.count_service(task, add);
        self.count_node(task, add);
    }

    /// The node at `task`'s index, if it occupies one of the store.
    fn occupied(&self, task: &Task) -> Option<usize> {
        task.occupies_node()
            .then(|| self.index.get(&task.node_id).copied())
            .flatten()
    }

    /// The task's service's count on its node.
    fn count_service(&mut self, task: &Task, add: bool) {
        let Some(node) = self.occupied(task) else {
            return;
        };
        let nodes = self.total.len();
        let mine = self
            .per_service
            .entry(task.service_id.clone())
            .or_insert_with(|| vec![0; nodes]);
        if let Some(mine) = mine.get_mut(node) {
            *mine = step(*mine, add);
        }
    }

    /// The node's count of all tasks, and what they reserve.
    fn count_node(&mut self, task: &Task, add: bool) {
        let Some(node) = self.occupied(task) else {
            return;
        };
        if let Some(all) = self.total.get_mut(node) {
            *all = step(*all, add);
        }
        let wants = &task.spec.resources;
        if let Some(reserved) = self.reserved.get_mut(node) {
            let moved = |n: u64, by: u64| if add { n + by } else { n.saturating_sub(by) };
            reserved.nano_cpus = moved(reserved.nano_cpus, wants.reserve_nano_cpus);
            reserved.memory_bytes = moved(reserved.memory_bytes, wants.reserve_memory_bytes);
        }
    }

    /// Whether the node at `index` has what `wants` reserves left (a node that reported no
    /// capacity, an older agent's, is not limited).
    fn has_room(&self, index: usize, wants: &Resources) -> bool {
        let (Some(capacity), Some(reserved)) = (self.capacity.get(index), self.reserved.get(index))
        else {
            return true;
        };
        let fits = |capacity: u64, reserved: u64, wanted: u64| {
            wanted == 0 || capacity == 0 || reserved.saturating_add(wanted) <= capacity
        };
        fits(
            capacity.nano_cpus,
            reserved.nano_cpus,
            wants.reserve_nano_cpus,
        ) && fits(
            capacity.memory_bytes,
            reserved.memory_bytes,
            wants.reserve_memory_bytes,
        )
    }

    /// Whether `node_id` has room for the reservations of `wants`: else the Pending error.
    pub fn room_on(&self, node_id: &str, wants: &Resources) -> Result<(), String> {
        match self.index.get(node_id) {
            Some(&i) if !self.has_room(i, wants) => Err(no_suitable_node(Refusals {
                insufficient: 1,
                ..Refusals::default()
            })),
            _ => Ok(()),
        }
    }

    /// The service's tasks on the node at `index`.
    fn count_of(&self, service_id: &str, index: usize) -> usize {
        self.per_service
            .get(service_id)
            .and_then(|v| v.get(index))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `node_id` may take one more of the service's tasks under `max_per_node` (0: no
    /// limit), with what `wants` reserves.
    pub fn fits(
        &self,
        service_id: &str,
        node_id: &str,
        max_per_node: u64,
        wants: &Resources,
    ) -> bool {
        self.index.get(node_id).is_none_or(|&i| {
            self.has_room(i, wants)
                && (max_per_node == 0 || (self.count_of(service_id, i) as u64) < max_per_node)
        })
    }

    /// The spread choice among `candidates` that have room for what `wants` reserves and
    /// hold fewer than `max_per_node` of the service's tasks (0: no limit): fewest tasks of
    /// this service, then fewest tasks overall, then node ID (candidates are in ID order, and
    /// the first minimum wins). Else the Pending error: why no node fits.
    pub fn choose<'c>(
        &self,
        service_id: &str,
        candidates: &Candidates<'c>,
        max_per_node: u64,
        wants: &Resources,
    ) -> Result<&'c str, String> {
        let full =
            |i: usize| max_per_node > 0 && self.count_of(service_id, i) as u64 >= max_per_node;
        let total = |i: usize| self.total.get(i).copied().unwrap_or(0);
        candidates
            .indices
            .iter()
            .enumerate()
            .filter(|(_, i)| self.has_room(**i, wants) && !full(**i))
            .min_by_key(|(_, i)| (self.count_of(service_id, **i), total(**i)))
            .and_then(|(pos, _)| candidates.nodes.get(pos).copied())
            .ok_or_else(|| {
                // Docker's filter order: resources before the per-node limit.
                let insufficient = candidates
                    .indices
                    .iter()
                    .filter(|i| !self.has_room(**i, wants))
                    .count();
                no_suitable_node(Refusals {
                    unavailable: candidates.unavailable,
                    insufficient,
                    unsatisfied: candidates.unsatisfied,
                    full: candidates.nodes.len() - insufficient,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(unavailable: usize, unsatisfied: usize, full: usize) -> Refusals {
        Refusals {
            unavailable,
            unsatisfied,
            full,
            ..Refusals::default()
        }
    }

    #[test]
    fn explains_why_no_node_fits() {
        assert_eq!(
            no_suitable_node(Refusals {
                insufficient: 3,
                unavailable: 1,
                ..Refusals::default()
            }),
            "no suitable node (insufficient resources on 3 nodes; 1 node not available for new tasks)"
        );
        assert_eq!(
            no_suitable_node(refusals(3, 0, 0)),
            "no suitable node (3 nodes not available for new tasks)"
        );
        assert_eq!(
            no_suitable_node(refusals(0, 1, 0)),
            "no suitable node (scheduling constraints not satisfied on 1 node)"
        );
        assert_eq!(
            no_suitable_node(refusals(1, 2, 0)),
            "no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not available for new tasks)"
        );
        assert_eq!(no_suitable_node(refusals(0, 0, 0)), "no suitable node");
        assert_eq!(
            no_suitable_node(refusals(0, 0, 3)),
            "no suitable node (max replicas per node limit exceed)"
        );
        assert_eq!(
            no_suitable_node(refusals(1, 0, 2)),
            "no suitable node (max replicas per node limit exceed; 1 node not available for new tasks)"
        );
    }
}
