//! The exec driver and the overlay networking as the swarm's task runner: the swarm runtime
//! moves assignments, reports and gossip settings on heartbeats; the executor runs the
//! processes and the networking connects them.

use std::{path::PathBuf, process::Command, sync::Arc};

use shoal_control::{
    cluster::{Task, gossip::GossipConfig, mesh::RoutingMesh, objects::TaskFiles},
    swarm::{RunnerError, TaskReports, TaskRunner},
};

use crate::{executor::Executor, networking::NodeNetworking};

pub struct NodeTasks {
    pub executor: Executor,
    pub networking: Arc<NodeNetworking>,
}

impl TaskRunner for NodeTasks {
    fn reconcile(&self, assigned: &[Task], files: &TaskFiles) {
        self.executor.reconcile_with_files(assigned, files);
    }

    fn take_reports(&self) -> TaskReports {
        self.executor.take_reports()
    }

    fn requeue(&self, reports: TaskReports) {
        self.executor.requeue(reports);
    }

    fn stop_all(&self) {
        if !self.executor.stop_all() {
            tracing::warn!("some tasks did not stop in time while leaving the swarm");
        }
        self.networking.leave();
    }

    fn log_paths(&self, task_id: &str) -> Option<(PathBuf, PathBuf)> {
        self.executor.log_paths(task_id)
    }

    fn exec_command(&self, task_id: &str, argv: &[String]) -> Result<Command, RunnerError> {
        Ok(self.executor.exec_command(task_id, argv)?)
    }

    fn gossip(&self, config: &GossipConfig) {
        self.networking.on_gossip(config);
    }

    fn routing_mesh(&self, mesh: &RoutingMesh) {
        self.networking.on_routing_mesh(mesh);
    }

    fn node_key(&self, key_pem: &str) {
        self.networking.on_node_key(key_pem);
    }
}
