//! The orchestrator: what the Raft leader runs every ~250 ms to move tasks toward what the
//! services ask for, with Docker swarm mode's semantics (spread placement, constraints, node
//! availability, restart policies, rolling updates and rollbacks, task history).
//!
//! [`reconcile`] is a pure function of the cluster state, node readiness and the time: it
//! keeps nothing between calls, so any manager that becomes leader carries on where the last
//! one stopped, and calling it again on the state its commands produce returns nothing.
//!
//! # Layout
//! - `constraints`: parsing `--constraint` and checking nodes against constraints.
//! - `placement`: node eligibility, the "no suitable node" explanation, spread placement.
//! - `pass`: one service's tasks during a pass, and the create / shut down / assign steps.
//! - `replicated`: slots 1..=replicas: scaling, moves off lost nodes, pending tasks.
//! - `global`: one task per eligible node.
//! - `restart`: the restart policy (condition, delay, attempts within a window).
//! - `update`: rolling updates and rollbacks, derived from the update status and tasks.
//! - `history`: pruning stopped tasks to the newest few per slot.
//! - `ticks`: the leader's ticks, passing over only the services that may have something to do.

mod constraints;
mod global;
mod history;
mod pass;
mod placement;
mod replicated;
mod restart;
mod ticks;
mod update;

#[cfg(test)]
pub(crate) mod fixture;

use std::collections::{BTreeMap, BTreeSet};

pub use constraints::{parse_constraint, satisfies};
pub(crate) use pass::PENDING;
pub use pass::same_task_spec;
pub use ticks::Passes;

use crate::cluster::{ClusterState, Command, Service, ServiceMode, Task};

use self::{
    pass::ServicePass,
    placement::{Ctx, Placer},
};

/// What a pass looks at besides the store.
pub struct Inputs<'a> {
    pub state: &'a ClusterState,
    /// Whether a node is Ready (heartbeats); Down nodes are not eligible, and replicated tasks
    /// on them are replaced.
    pub is_ready: &'a dyn Fn(&str) -> bool,
    pub now_ms: u64,
}

/// What a pass decided.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// The commands (`UpdateService`, `PutTasks`, `RemoveTasks`, in that order) that move the
    /// state toward the services' desired state.
    pub commands: Vec<Command>,
    /// Per service passed, the earliest time (ms) a decision its pass put off until then may
    /// be taken (see [`Reconciled::wake_at_ms`]).
    pub wakes: BTreeMap<String, u64>,
    /// The services passed that decided something.
    pub changed: BTreeSet<String>,
    /// The services passed that still have a task waiting for a node.
    pub waiting: BTreeSet<String>,
}

/// One pass over every service. Task IDs come from `new_id`.
pub fn reconcile(inputs: &Inputs, new_id: &mut dyn FnMut() -> String) -> Reconciled {
    reconcile_services(inputs, None, new_id)
}

/// One pass over the services `only` names (every service without it), in ID order as a pass
/// over all. For those services it decides what a pass over all would, as long as the others
/// would decide nothing: see [`Passes`] for when that holds.
pub fn reconcile_services(
    inputs: &Inputs,
    only: Option<&BTreeSet<String>>,
    new_id: &mut dyn FnMut() -> String,
) -> Reconciled {
    let state = inputs.state;
    let ctx = Ctx::new(state, inputs.is_ready, inputs.now_ms);
    // Counts span all services: spread breaks ties by the node's tasks of every service.
    let mut placer = Placer::new(state, only);
    let services: Box<dyn Iterator<Item = &Service>> = match only {
        None => Box::new(state.services.values()),
        Some(ids) => Box::new(ids.iter().filter_map(|id| state.services.get(id))),
    };
    let mut out = Output::default();
    let mut reconciled = Reconciled::default();
    for service in services {
        let tasks: Vec<&Task> = state.tasks.of_service(&service.id).collect();
        let mut pass = ServicePass::new(&ctx, &mut placer, &mut *new_id, service, &tasks);
        update::status(&mut pass);
        match pass.service.spec.mode {
            ServiceMode::Replicated { replicas } => replicated::reconcile(&mut pass, replicas),
            ServiceMode::Global => global::reconcile(&mut pass),
        }
        update::complete(&mut pass);
        history::prune(&mut pass);
        let waits = pass.waits_for_a_node();
        let id = &service.id;
        if pass.finish(&mut out) {
            reconciled.changed.insert(id.clone());
        }
        if waits {
            reconciled.waiting.insert(id.clone());
        }
        if let Some(wake) = ctx.take_wake() {
            reconciled.wakes.insert(id.clone(), wake);
        }
    }
    reconciled.commands = out.into_commands();
    reconciled
}

impl Reconciled {
    /// The earliest time (ms) a decision the pass put off until then may be taken (a restart
    /// delay, attempts leaving the restart window, an update's delay or monitor period).
    /// While the state and node readiness stay as they were, a pass before that time decides
    /// exactly this again (nothing, when `commands` is empty); `None`: no such time.
    pub fn wake_at_ms(&self) -> Option<u64> {
        self.wakes.values().min().copied()
    }
}

/// What the passes decided, gathered into few commands (each one Raft log entry).
#[derive(Default)]
struct Output {
    services: Vec<Service>,
    tasks: Vec<Task>,
    removed: Vec<String>,
}

impl Output {
    fn into_commands(self) -> Vec<Command> {
        // Services first: a rollback's tasks run the spec it restores.
        let mut commands: Vec<Command> = self
            .services
            .into_iter()
            .map(Command::UpdateService)
            .collect();
        if !self.tasks.is_empty() {
            commands.push(Command::PutTasks(self.tasks));
        }
        if !self.removed.is_empty() {
            commands.push(Command::RemoveTasks(self.removed));
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::fixture::{Sim, global, replicated};
    use crate::cluster::{Availability, ServiceMode, TaskState, UpdateOrder};

    #[test]
    fn nothing_to_do_without_services() {
        let mut sim = Sim::new(3);
        assert!(sim.pass().is_empty());
    }

    /// Random events (nodes down and up, drained, relabelled; tasks failing; scaling; updates)
    /// with checks after every pass: idempotence (in `step`), no task wanted running on a
    /// drained node, one task per slot unless a start-first update is under way, bounded
    /// history, and in the end every service converged.
    #[test]
    fn survives_churn_and_converges() {
        for seed in [1, 7, 42, 1234, 99, 5, 6, 8, 9, 10] {
            churn(seed);
        }
    }

    fn churn(mut seed: u64) {
        let mut sim = Sim::new(5);
        let mut spec = replicated("web", 6);
        spec.update.order = UpdateOrder::StartFirst;
        spec.update.parallelism = 2;
        sim.create("web", spec);
        let mut spec = replicated("db", 2);
        spec.constraints = vec![super::parse_constraint("node.labels.db==yes").unwrap()];
        sim.create("db", spec);
        sim.create("agent", global("agent"));
        // Services of one task each: a node's change concerns some services, not all, so the
        // leader's ticks pass over a part of them (checked against a pass over all in `step`).
        for name in ["one1", "one2", "one3", "one4"] {
            sim.create(name, replicated(name, 1));
        }
        let mut random = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let node = format!("n{}", random(5) + 1);
            match random(10) {
                0 => {
                    if sim.down.contains(&node) {
                        sim.down.remove(&node);
                    } else {
                        sim.down.insert(node);
                    }
                }
                1 => {
                    let a = [
                        Availability::Active,
                        Availability::Pause,
                        Availability::Drain,
                    ];
                    sim.node_mut(&node).availability = a[usize::try_from(random(3)).unwrap()];
                }
                2 => {
                    let labels = &mut sim.node_mut(&node).labels;
                    if labels.remove("db").is_none() {
                        labels.insert("db".into(), "yes".into());
                    }
                }
                3 => {
                    let replicas = random(8);
                    sim.update("web", |s| s.mode = ServiceMode::Replicated { replicas });
                }
                4 => sim.update("web", |s| s.force_update += 1),
                5 | 6 => {
                    let wanted: Vec<String> =
                        sim.wanted("web").iter().map(|t| t.id.clone()).collect();
                    if !wanted.is_empty() {
                        let i = usize::try_from(random(wanted.len() as u64)).unwrap();
                        sim.report(&wanted[i], TaskState::Failed);
                    }
                }
                _ => {}
            }
            sim.now += random(3_000);
            sim.step();
            check_invariants(&sim);
            sim.nodes_act();
        }
        sim.down.clear();
        let ids: Vec<String> = sim.state.nodes.keys().cloned().collect();
        for id in ids {
            let node = sim.node_mut(&id);
            node.availability = Availability::Active;
            node.labels.insert("db".into(), "yes".into());
        }
        for _ in 0..30 {
            sim.now += 1_000;
            sim.settle();
        }
        let ServiceMode::Replicated { replicas } = sim.service("web").spec.mode else {
            panic!("web is replicated");
        };
        let web = &sim.service("web").spec;
        assert_eq!(sim.wanted("web").len(), usize::try_from(replicas).unwrap());
        assert!(sim.wanted("web").iter().all(
            |t| t.spec.force_update == web.force_update && t.status.state == TaskState::Running
        ));
        assert_eq!(sim.wanted("db").len(), 2);
        assert_eq!(sim.wanted("agent").len(), 5);
        for name in ["one1", "one2", "one3", "one4"] {
            assert_eq!(sim.wanted(name).len(), 1, "{name}");
        }
        // None when the last change was a scale (nothing to roll out).
        assert!(matches!(
            sim.update_state("web"),
            None | Some(crate::cluster::UpdateState::Completed)
        ));
    }

    fn check_invariants(sim: &Sim) {
        let mut per_slot: BTreeMap<(&str, u64, &str), usize> = BTreeMap::new();
        for task in sim.state.tasks.values() {
            if task.desired_state != TaskState::Running {
                continue;
            }
            if let Some(node) = sim.state.nodes.get(&task.node_id) {
                assert_ne!(node.availability, Availability::Drain, "{task:?}");
            }
            let node = if task.slot == 0 {
                task.node_id.as_str()
            } else {
                ""
            };
            *per_slot
                .entry((&task.service_id, task.slot, node))
                .or_default() += 1;
        }
        for ((service, slot, node), count) in per_slot {
            let limit = if service == "web" { 2 } else { 1 };
            assert!(
                count <= limit,
                "{service} slot {slot} {node}: {count} tasks"
            );
        }
        let mut history: BTreeMap<(&str, u64, &str), usize> = BTreeMap::new();
        for task in sim.state.tasks.values() {
            if task.status.state.is_terminal() {
                let node = if task.slot == 0 {
                    task.node_id.as_str()
                } else {
                    ""
                };
                *history
                    .entry((&task.service_id, task.slot, node))
                    .or_default() += 1;
            }
        }
        // Five stopped tasks, plus the current one when it has stopped too.
        assert!(history.values().all(|n| *n <= 6), "{history:?}");
    }
}
