//! [`TaskRunner`]: the seam between the swarm runtime, which moves assignments and reports,
//! and whatever runs the processes (the agent's exec driver).

use std::{path::PathBuf, process::Command};

use crate::cluster::{
    Task, TaskStatus, gossip::GossipConfig, mesh::RoutingMesh, objects::TaskFiles,
};

/// Status reports: (task ID, what happened).
pub type TaskReports = Vec<(String, TaskStatus)>;

/// Why a runner cannot give a command for a task (not running here, namespaces gone...).
pub type RunnerError = Box<dyn std::error::Error + Send + Sync>;

/// Runs this node's tasks. The agent implements it with its exec driver; the swarm runtime
/// only moves assignments and reports.
pub trait TaskRunner: Send + Sync + 'static {
    /// Makes local processes follow `assigned`: every task the leader assigned to this node.
    /// `files` holds the data of the secrets and configs of the tasks not running yet: keep it
    /// in memory only, and only while a task is started with it.
    fn reconcile(&self, assigned: &[Task], files: &TaskFiles);
    /// Status changes since the last call.
    fn take_reports(&self) -> TaskReports;
    /// Gives back reports that could not be delivered, to send with the next beat.
    fn requeue(&self, reports: TaskReports);
    /// Stops every task (the node leaves the swarm).
    fn stop_all(&self);
    /// Where a task's stdout and stderr are kept on this node, if it ran here.
    fn log_paths(&self, task_id: &str) -> Option<(PathBuf, PathBuf)>;
    /// A command that runs `argv` inside a running task's namespaces on this node.
    fn exec_command(&self, task_id: &str, argv: &[String]) -> Result<Command, RunnerError>;
    /// The network DB's keys and peers, as the leader sent them with this beat.
    fn gossip(&self, _config: &GossipConfig) {}
    /// What this node needs to serve published ports, as the leader sent it with this beat.
    fn routing_mesh(&self, _mesh: &RoutingMesh) {}
    /// This node's TLS private key (PEM), in the clear, whenever a membership starts (after a
    /// join, a restart, an unlock or a renewal): the network DB signs the node's entries with
    /// it. Handed over in memory, since on a locked manager the file on disk is sealed.
    fn node_key(&self, _key_pem: &str) {}
}

/// A node that runs no tasks (tests of the control plane alone).
pub struct NoTasks;

#[derive(Debug, thiserror::Error)]
#[error("task {0} is not running on this node")]
struct NotHere(String);

impl TaskRunner for NoTasks {
    fn reconcile(&self, _: &[Task], _: &TaskFiles) {}
    fn take_reports(&self) -> TaskReports {
        Vec::new()
    }
    fn requeue(&self, _: TaskReports) {}
    fn stop_all(&self) {}
    fn log_paths(&self, _: &str) -> Option<(PathBuf, PathBuf)> {
        None
    }
    fn exec_command(&self, task_id: &str, _: &[String]) -> Result<Command, RunnerError> {
        Err(Box::new(NotHere(task_id.to_string())))
    }
}
