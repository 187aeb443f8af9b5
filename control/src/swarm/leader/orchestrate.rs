//! The orchestration loop: on the leader, every [`ORCHESTRATE_EVERY`], the pure
//! [`crate::orchestrator::reconcile`] turns services into task placements and rollout steps,
//! and new tasks get their network addresses before they are committed. The same loop rotates
//! the network DB's keys when they are due, and ends a root CA rotation once every node has
//! moved.
//!
//! A tick passes only over the services that may have something to do
//! ([`Passes`](crate::orchestrator::Passes)): those the commands applied since touched (the
//! state machine notes them), every one when a node changed or went Down or came back.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Leader, heartbeat_period};
use crate::{
    allocator::address_tasks,
    clock::now_ms,
    cluster::{ClusterState, Command, TaskState, TaskStatus},
    identity::NodeId,
    orchestrator::Passes,
    swarm::{Active, Swarm},
};

/// How often the leader reconciles services with tasks.
pub const ORCHESTRATE_EVERY: Duration = Duration::from_millis(250);

/// On managers: while this node leads, reconciles every [`ORCHESTRATE_EVERY`].
pub async fn run(swarm: Swarm, active: Arc<Active>, mut stop: watch::Receiver<bool>) {
    let mut passes = Passes::default();
    let mut leading = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(ORCHESTRATE_EVERY) => {}
        }
        let Some(leader) = Leader::of(&swarm, &active) else {
            leading = false;
            continue;
        };
        if !leading {
            // What the passes know is from before: start afresh with a pass over everything.
            passes = Passes::default();
            leading = true;
        }
        leader.rotate_gossip_key_if_due().await;
        leader.finish_root_rotation_if_done().await;
        // Computed on the state in place (a copy of it costs more than the pass at 10,000
        // services), under the read lock, and never across the awaits below.
        let commands = leader.read_touched(|state, generations, touched| {
            let period = heartbeat_period(state);
            let me = leader.node_id();
            let down = state
                .nodes
                .keys()
                .map(String::as_str)
                .filter(|node| *node != me && active.liveness.is_down(node, period))
                .collect();
            let mut new_id = || NodeId::generate().to_string();
            let mut commands = passes.tick(
                state,
                generations.state,
                touched,
                &down,
                now_ms(),
                &mut new_id,
            );
            address_new_tasks(state, &mut commands);
            commands
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
