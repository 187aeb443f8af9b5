//! The exec driver as the swarm's task runner: the swarm runtime moves assignments and
//! reports on heartbeats, the executor runs the processes.

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
}
