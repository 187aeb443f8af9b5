//! The exec driver as the swarm's task runner: the swarm runtime moves assignments and
//! reports on heartbeats, the executor runs the processes.

use std::{path::PathBuf, process::Command};

use shoal_control::{
    cluster::Task,
    swarm::{TaskReports, TaskRunner},
};

use crate::executor::Executor;

impl TaskRunner for Executor {
    fn reconcile(&self, assigned: &[Task]) {
        Executor::reconcile(self, assigned);
    }

    fn take_reports(&self) -> TaskReports {
        Executor::take_reports(self)
    }

    fn requeue(&self, reports: TaskReports) {
        Executor::requeue(self, reports);
    }

    fn stop_all(&self) {
        if !Executor::stop_all(self) {
            tracing::warn!("some tasks did not stop in time while leaving the swarm");
        }
    }

    fn log_paths(&self, task_id: &str) -> Option<(PathBuf, PathBuf)> {
        Executor::log_paths(self, task_id)
    }

    fn exec_command(&self, task_id: &str, argv: &[String]) -> Result<Command, String> {
        Executor::exec_command(self, task_id, argv).map_err(|e| e.to_string())
    }
}
