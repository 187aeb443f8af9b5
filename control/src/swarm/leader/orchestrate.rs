//! The orchestration loop: on the leader, every [`ORCHESTRATE_EVERY`], the pure
//! [`crate::orchestrator::reconcile`] turns services into task placements and rollout steps,
//! and new tasks get their network addresses before they are committed. The same loop rotates
//! the network DB's keys when they are due, and ends a root CA rotation once every node has
//! moved.
//!
//! A pass reads every service and task (tens of milliseconds at 10,000 services), so a tick
//! runs one only when its outcome may differ from the last pass that had nothing to do: the
//! state changed (its generation moved), a node went Down or came back, or the time that pass
//! named for a decision it put off has come ([`Idle`]).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Leader, heartbeat_period};
use crate::{
    allocator::address_tasks,
    clock::now_ms,
    cluster::{ClusterState, Command, TaskState, TaskStatus},
    identity::NodeId,
    orchestrator::{Inputs, reconcile},
    swarm::{Active, Swarm},
};

/// How often the leader reconciles services with tasks.
pub const ORCHESTRATE_EVERY: Duration = Duration::from_millis(250);

/// On managers: while this node leads, reconciles every [`ORCHESTRATE_EVERY`].
pub async fn run(swarm: Swarm, active: Arc<Active>, mut stop: watch::Receiver<bool>) {
    let mut passes = Passes::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(ORCHESTRATE_EVERY) => {}
        }
        let Some(leader) = Leader::of(&swarm, &active) else {
            continue;
        };
        leader.rotate_gossip_key_if_due().await;
        leader.finish_root_rotation_if_done().await;
        // Computed on the state in place (a copy of it costs more than the pass at 10,000
        // services), under the read lock, and never across the awaits below.
        let commands = leader.read_versioned(|state, generations| {
            let period = heartbeat_period(state);
            let me = leader.node_id();
            let down = state
                .nodes
                .keys()
                .map(String::as_str)
                .filter(|node| *node != me && active.liveness.is_down(node, period))
                .collect();
            passes.tick(state, generations.state, &down, now_ms())
        });
        for command in commands {
            debug!(?command, "orchestrator");
            if let Err(e) = leader.propose(command).await {
                warn!(cause = %crate::error_chain::Chain(&e), "orchestrator command not committed");
                break;
            }
        }
    }
}

/// The leader's passes, less those that would find nothing to do. Public for the
/// `leader-beat` benchmark.
#[derive(Default)]
pub struct Passes {
    /// The last pass, when it found nothing to do.
    idle: Option<Idle>,
    run: u64,
}

impl Passes {
    /// A tick: the commands of a pass over `state` (at state generation `generation`) with the
    /// nodes `down` not ready, at `now_ms`; none, without a pass, when the last pass found
    /// nothing to do and none of what it read has changed since ([`Idle`]).
    pub fn tick(
        &mut self,
        state: &ClusterState,
        generation: u64,
        down: &BTreeSet<&str>,
        now_ms: u64,
    ) -> Vec<Command> {
        if self
            .idle
            .as_ref()
            .is_some_and(|idle| idle.holds(generation, down, now_ms))
        {
            return Vec::new();
        }
        self.run += 1;
        let is_ready = |node: &str| !down.contains(node);
        let inputs = Inputs {
            state,
            is_ready: &is_ready,
            now_ms,
        };
        let reconciled = reconcile(&inputs, &mut || NodeId::generate().to_string());
        let mut commands = reconciled.commands;
        // A pass with commands runs again next tick: they change the state, or failed to.
        self.idle = commands.is_empty().then(|| Idle {
            generation,
            down: down.iter().map(|n| n.to_string()).collect(),
            wake_at_ms: reconciled.wake_at_ms,
        });
        address_new_tasks(state, &mut commands);
        commands
    }

    /// How many ticks ran a pass.
    pub fn run(&self) -> u64 {
        self.run
    }
}

/// What the last pass that found nothing to do read besides the services and tasks. A pass is
/// a function of the state, the nodes' readiness and the time ([`reconcile`]): while the first
/// two stay the same and the time it named has not come, another pass would find nothing too
/// (the orchestrator's tests check that a pass at any time before then does).
struct Idle {
    /// The state's generation it read.
    generation: u64,
    /// The nodes that were Down.
    down: BTreeSet<String>,
    /// The earliest time a decision it put off may be taken.
    wake_at_ms: Option<u64>,
}

impl Idle {
    fn holds(&self, generation: u64, down: &BTreeSet<&str>, now_ms: u64) -> bool {
        self.generation == generation
            && self.wake_at_ms.is_none_or(|wake| now_ms < wake)
            && self.down.len() == down.len()
            && self.down.iter().zip(down).all(|(a, b)| a == b)
    }
}

/// Allocates network addresses for the tasks the orchestrator creates. A task that cannot get
/// them is not sent to its node: it stays Pending with the reason, and the next pass retries.
fn address_new_tasks(state: &ClusterState, commands: &mut [Command]) {
    for command in commands {
        let Command::PutTasks(tasks) = command else {
            continue;
        };
        for (id, error) in address_tasks(state, tasks) {
            if let Some(task) = tasks.iter_mut().find(|t| t.id == id) {
                task.node_id.clear();
                task.status = TaskStatus {
                    state: TaskState::Pending,
                    message: crate::orchestrator::PENDING.to_string(),
                    error: error.to_string(),
                    exit_code: None,
                    timestamp_ms: now_ms(),
                    health: None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Passes;
    use crate::cluster::{Command, RestartPolicy, TaskState};
    use crate::orchestrator::fixture::{Sim, replicated};

    /// A tick as the leader's: the sim's state and down nodes, its time; the commands applied.
    fn tick(passes: &mut Passes, sim: &mut Sim, generation: u64) -> Vec<Command> {
        let down: BTreeSet<&str> = sim.down.iter().map(String::as_str).collect();
        let commands = passes.tick(&sim.state, generation, &down, sim.now);
        for command in &commands {
            sim.apply(command);
        }
        commands
    }

    #[test]
    fn a_tick_passes_again_only_when_the_state_readiness_or_a_named_time_moved() {
        let mut sim = Sim::new(2);
        let mut spec = replicated("web", 2);
        spec.restart = RestartPolicy {
            delay_ms: 5_000,
            ..spec.restart
        };
        sim.create("web", spec);
        let mut passes = Passes::default();
        let mut generation = 1;
        assert!(
            !tick(&mut passes, &mut sim, generation).is_empty(),
            "placed"
        );
        generation += 1;
        assert!(tick(&mut passes, &mut sim, generation).is_empty());
        assert_eq!(passes.run(), 2);

        // Nothing moved: no pass, however many ticks.
        for _ in 0..10 {
            sim.now += 250;
            assert!(tick(&mut passes, &mut sim, generation).is_empty());
        }
        assert_eq!(passes.run(), 2, "skipped");

        // A node goes down: a pass, which moves its task.
        sim.nodes_act();
        generation += 1;
        assert!(
            tick(&mut passes, &mut sim, generation).is_empty(),
            "running"
        );
        sim.down.insert("n2".into());
        assert!(
            !tick(&mut passes, &mut sim, generation).is_empty(),
            "moved off n2"
        );
        assert_eq!(passes.run(), 4);
        generation += 1;
        sim.down.clear();
        sim.nodes_act();
        generation += 1;
        assert!(tick(&mut passes, &mut sim, generation).is_empty());

        // A task fails: the pass puts its restart off by the delay, and the tick before
        // that time does not pass; the tick at it does, and restarts it.
        let failed = sim.current("web", 1).id.clone();
        sim.report(&failed, TaskState::Failed);
        generation += 1;
        let failed_at = sim.now;
        assert!(
            tick(&mut passes, &mut sim, generation).is_empty(),
            "delayed"
        );
        let run = passes.run();
        sim.now = failed_at + 4_999;
        assert!(tick(&mut passes, &mut sim, generation).is_empty());
        assert_eq!(passes.run(), run, "skipped until the delay is over");
        sim.now = failed_at + 5_000;
        assert!(
            !tick(&mut passes, &mut sim, generation).is_empty(),
            "restarted"
        );
        assert_ne!(sim.current("web", 1).id, failed);
        // A pass with commands does not count as idle: the next tick passes again.
        assert!(tick(&mut passes, &mut sim, generation).is_empty());
        assert_eq!(passes.run(), run + 2);
    }
}
