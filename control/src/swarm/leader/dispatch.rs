//! The dispatcher: tasks travel to nodes, and their status back, on the heartbeat. Each beat a
//! node sends what its tasks did since the last one and gets every task assigned to it with its
//! desired state; the node's [`TaskRunner`] makes its processes follow.
//!
//! Also the orchestrator loop: on the leader, every [`ORCHESTRATE_EVERY`], the pure
//! [`crate::orchestrator::reconcile`] turns services into task placements and rollout steps.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Active, ManagerRole, Swarm, lifecycle::heartbeat_period, services::now_ms};
use crate::{
    allocator::address_tasks,
    cluster::{Command, Task, TaskState, TaskStatus, gossip::GossipConfig, mesh::RoutingMesh},
    identity::NodeId,
    orchestrator::{Inputs, reconcile},
};

/// How often the leader reconciles services with tasks.
pub const ORCHESTRATE_EVERY: Duration = Duration::from_millis(250);

/// Status reports: (task ID, what happened).
pub type TaskReports = Vec<(String, TaskStatus)>;

/// Runs this node's tasks. The agent implements it with its exec driver; the swarm runtime
/// only moves assignments and reports.
pub trait TaskRunner: Send + Sync + 'static {
    /// Makes local processes follow `assigned`: every task the leader assigned to this node.
    fn reconcile(&self, assigned: &[Task]);
    /// Status changes since the last call.
    fn take_reports(&self) -> TaskReports;
    /// Gives back reports that could not be delivered, to send with the next beat.
    fn requeue(&self, reports: TaskReports);
    /// Stops every task (the node leaves the swarm).
    fn stop_all(&self);
    /// Where a task's stdout and stderr are kept on this node, if it ran here.
    fn log_paths(&self, task_id: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)>;
    /// A command that runs `argv` inside a running task's namespaces on this node.
    fn exec_command(&self, task_id: &str, argv: &[String])
    -> Result<std::process::Command, String>;
    /// The network DB's keys and peers, as the leader sent them with this beat.
    fn gossip(&self, _config: &GossipConfig) {}
    /// What this node needs to serve published ports, as the leader sent it with this beat.
    fn routing_mesh(&self, _mesh: &RoutingMesh) {}
}

/// A node that runs no tasks (tests of the control plane alone).
pub struct NoTasks;

impl TaskRunner for NoTasks {
    fn reconcile(&self, _: &[Task]) {}
    fn take_reports(&self) -> TaskReports {
        Vec::new()
    }
    fn requeue(&self, _: TaskReports) {}
    fn stop_all(&self) {}
    fn log_paths(&self, _: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        None
    }
    fn exec_command(&self, task_id: &str, _: &[String]) -> Result<std::process::Command, String> {
        Err(format!("task {task_id} is not running on this node"))
    }
}

pub(super) fn encode_reports(reports: &TaskReports) -> Vec<u8> {
    postcard::to_allocvec(reports).unwrap_or_default()
}

pub(super) fn decode_reports(bytes: &[u8]) -> Result<TaskReports, tonic::Status> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    postcard::from_bytes(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable task reports: {e}")))
}

pub(super) fn encode_gossip(config: &GossipConfig) -> Vec<u8> {
    postcard::to_allocvec(config).unwrap_or_default()
}

pub(super) fn decode_gossip(bytes: &[u8]) -> Result<GossipConfig, tonic::Status> {
    postcard::from_bytes(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable gossip config: {e}")))
}

/// The keys and peer addresses every node gets with its heartbeat answer.
pub(super) fn gossip_config(state: &crate::cluster::ClusterState) -> GossipConfig {
    GossipConfig {
        keys: state
            .cluster
            .as_ref()
            .map(|c| c.gossip_keys.clone())
            .unwrap_or_default(),
        peers: state
            .nodes
            .values()
            .map(|n| (n.id.clone(), n.addr.ip()))
            .collect(),
    }
}

pub(super) fn encode_mesh(mesh: &RoutingMesh) -> Vec<u8> {
    postcard::to_allocvec(mesh).unwrap_or_default()
}

pub(super) fn decode_mesh(bytes: &[u8]) -> Result<RoutingMesh, tonic::Status> {
    postcard::from_bytes(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable routing mesh: {e}")))
}

pub(super) fn encode_tasks(tasks: &[Task]) -> Vec<u8> {
    postcard::to_allocvec(tasks).unwrap_or_default()
}

pub(super) fn decode_tasks(bytes: &[u8]) -> Result<Vec<Task>, tonic::Status> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    postcard::from_bytes(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable task assignments: {e}")))
}

impl Swarm {
    /// On the leader: records a node's reports and returns its assignments.
    pub(super) async fn dispatch(
        &self,
        manager: &ManagerRole,
        node_id: &str,
        reports: TaskReports,
    ) -> Result<Vec<Task>, tonic::Status> {
        if !reports.is_empty() {
            let command = Command::ReportTasks {
                node_id: node_id.to_string(),
                reports,
            };
            self.propose(manager, command).await?;
        }
        Ok(assigned_to(&manager.state(), node_id))
    }
}

/// The tasks a node must run or stop: those desired running, and those still running there.
fn assigned_to(state: &crate::cluster::ClusterState, node_id: &str) -> Vec<Task> {
    state
        .tasks
        .values()
        .filter(|t| t.node_id == node_id)
        .filter(|t| {
            t.desired_state == crate::cluster::TaskState::Running || !t.status.state.is_terminal()
        })
        .cloned()
        .collect()
}

/// Allocates network addresses for the tasks the orchestrator creates. A task that cannot get
/// them is not sent to its node: it stays Pending with the reason, and the next pass retries.
fn address_new_tasks(state: &crate::cluster::ClusterState, commands: &mut [Command]) {
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
                };
            }
        }
    }
}

/// On managers: while this node leads, reconciles every [`ORCHESTRATE_EVERY`].
pub(super) async fn orchestrate(
    swarm: Swarm,
    active: Arc<Active>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(ORCHESTRATE_EVERY) => {}
        }
        let Some(manager) = active.leading(swarm.node_id()) else {
            continue;
        };
        swarm.rotate_gossip_key_if_due(manager).await;
        // Computed in a block: the inputs borrow non-Send closures that must not live across
        // the awaits below.
        let commands = {
            let state = manager.state();
            let period = heartbeat_period(&state);
            let me = swarm.node_id();
            let is_ready = |node: &str| node == me || !active.liveness.is_down(node, period);
            let inputs = Inputs {
                state: &state,
                is_ready: &is_ready,
                now_ms: now_ms(),
            };
            let mut commands = reconcile(&inputs, &mut || NodeId::generate().to_string());
            address_new_tasks(&state, &mut commands);
            commands
        };
        for command in commands {
            debug!(?command, "orchestrator");
            if let Err(e) = swarm.propose(manager, command).await {
                warn!(cause = %e.message(), "orchestrator command not committed");
                break;
            }
        }
    }
}
