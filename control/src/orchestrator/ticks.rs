//! The leader's ticks: a pass reads every service and task (tens of milliseconds at 10,000
//! services), so a tick passes only over the services that may have something to do, and
//! not at all when none may.
//!
//! A service's pass is a function of its record and tasks, the nodes, their readiness, the
//! time, and (for where a new task goes, or whether one fits at all) the other services'
//! tasks on each node. So after a pass, a service that decided nothing decides nothing again
//! until its record or tasks change (the state machine notes them: [`Touched`]), a node it
//! has a task on changes or goes Down or comes back, or the time its pass named comes
//! ([`Reconciled::wakes`]). A service whose pass decided something is passed again next tick
//! (its commands may not have been committed), and one with a task waiting for a node is
//! passed with every change (another service's task stopping, or a node joining or coming
//! back, may free the room it waits for). A global service is passed whenever any node
//! changes (it may need a task there, or none). The orchestrator's tests check that the
//! commands of every tick are those of a pass over all services, on every step of every
//! scenario.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{ClusterState, Command, touched::Touched};

use super::{Inputs, Reconciled, reconcile_services};

/// The leader's passes, over the services that may have something to do. A new leader starts
/// afresh: its first tick passes over every service.
#[derive(Default)]
pub struct Passes {
    /// Whether a tick has passed yet.
    started: bool,
    /// The Down nodes the last pass saw.
    down: BTreeSet<String>,
    /// Services passed next time whatever changed: those whose last pass decided something,
    /// or left a task waiting for a node.
    again: BTreeSet<String>,
    /// The time each service's last pass named.
    wakes: BTreeMap<String, u64>,
    /// The last tick, when it decided nothing.
    idle: Option<Idle>,
    run: u64,
    passed: usize,
}

/// A tick that decided nothing: until the state's generation or the Down nodes move, or the
/// earliest time a service's pass named comes, a tick has nothing to pass over.
struct Idle {
    generation: u64,
    wake_at_ms: Option<u64>,
}

impl Passes {
    /// A tick at `now_ms` on `state` (at generation `generation`, with `touched`: what the
    /// commands applied since the last tick noted), the nodes `down` not ready: the commands
    /// of a pass over the services that may have something to do. Task IDs come from
    /// `new_id`.
    pub fn tick(
        &mut self,
        state: &ClusterState,
        generation: u64,
        touched: Touched,
        down: &BTreeSet<&str>,
        now_ms: u64,
        new_id: &mut dyn FnMut() -> String,
    ) -> Vec<Command> {
        let same_down =
            self.down.len() == down.len() && self.down.iter().zip(down).all(|(a, b)| a == b);
        let nothing_moved = self.idle.as_ref().is_some_and(|idle| {
            idle.generation == generation && idle.wake_at_ms.is_none_or(|wake| now_ms < wake)
        }) && same_down
            && touched == Touched::default();
        if nothing_moved {
            return Vec::new();
        }
        let only = (self.started && !touched.all).then(|| {
            let mut services = touched.services;
            services.extend(std::mem::take(&mut self.again));
            services.extend(
                self.wakes
                    .iter()
                    .filter(|(_, wake)| **wake <= now_ms)
                    .map(|(id, _)| id.clone()),
            );
            // The nodes that changed, or went Down, or came back.
            let mut nodes: BTreeSet<&str> = touched.nodes.iter().map(String::as_str).collect();
            nodes.extend(
                self.down
                    .iter()
                    .map(String::as_str)
                    .filter(|n| !down.contains(n)),
            );
            nodes.extend(down.iter().filter(|n| !self.down.contains(**n)));
            if !nodes.is_empty() {
                services.extend(state.services.global().cloned());
                for node in nodes {
                    services.extend(state.tasks.on_node(node).map(|t| t.service_id.clone()));
                }
            }
            services
        });
        let reconciled = match &only {
            Some(services) if services.is_empty() => Reconciled::default(),
            _ => {
                self.run += 1;
                let is_ready = |node: &str| !down.contains(node);
                let inputs = Inputs {
                    state,
                    is_ready: &is_ready,
                    now_ms,
                };
                reconcile_services(&inputs, only.as_ref(), new_id)
            }
        };
        match &only {
            None => {
                self.wakes = reconciled.wakes;
                self.passed = state.services.len();
            }
            Some(services) => {
                for id in services {
                    self.wakes.remove(id);
                }
                self.wakes.extend(reconciled.wakes);
                self.passed = services.len();
            }
        }
        self.started = true;
        self.down = down.iter().map(|n| n.to_string()).collect();
        self.again = reconciled.changed;
        self.again.extend(reconciled.waiting);
        let commands = reconciled.commands;
        self.idle = commands.is_empty().then(|| Idle {
            generation,
            wake_at_ms: self.wakes.values().min().copied(),
        });
        commands
    }

    /// How many ticks ran a pass.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// How many services the last pass went over.
    pub fn passed(&self) -> usize {
        self.passed
    }
}
