//! Finding the tasks again when the executor opens (after an agent restart, SIGKILL
//! included): a task whose process still runs is re-adopted, never started a second time; one
//! whose process is gone is reported failed.

use std::path::Path;

use shoal_control::{
    cluster::{TaskState, TaskStatus},
    error_chain::Chain,
};
use tracing::{info, warn};

use super::{
    ExecutorError, mounts,
    proc::Liveness,
    state::{Inner, Phase, State, TaskEntry, status},
    stop::signal_group,
    store::{self, TaskDir},
};

/// Loads every task directory under `tasks_dir` into `state`, queueing a report for each.
pub fn load(tasks_dir: &Path, state: &mut State) -> Result<(), ExecutorError> {
    for id in store::list(tasks_dir)? {
        let dir = TaskDir::new(tasks_dir, &id);
        let process = match dir.read_pid() {
            Ok(process) => process,
            Err(e) => {
                warn!(task = %id, error = %Chain(&e), "unreadable pid file: treating the task as exited");
                None
            }
        };
        let task = match dir.read_spec() {
            Ok(task) => task,
            Err(e) => {
                // Without its spec the task can be neither supervised nor reported (spec.json
                // is written before the process starts, so this is a damaged directory).
                warn!(task = %id, error = %Chain(&e), "unreadable task spec: killing and removing the task");
                if let Some(process) = process {
                    signal_group(process, true, nix::sys::signal::Signal::SIGKILL);
                }
                if let Err(e) = dir.remove() {
                    warn!(task = %id, error = %Chain(&e), "removing a damaged task dir");
                }
                continue;
            }
        };
        let last = match dir.read_status() {
            Ok(last) => last,
            Err(e) => {
                warn!(task = %id, error = %Chain(&e), "unreadable task status");
                None
            }
        };
        let running = process.filter(|p| p.liveness() == Liveness::Alive);
        let phase = match running {
            Some(process) => Phase::Running {
                process,
                adopted: true,
            },
            None => Phase::Exited,
        };
        let placeholder = last
            .clone()
            .unwrap_or_else(|| status(TaskState::Preparing, "", String::new(), None));
        state.tasks.insert(
            id.clone(),
            TaskEntry {
                task,
                dir,
                phase,
                status: placeholder,
                stopping: false,
                kill_at: None,
                joined: false,
                started_at: None,
                drain: None,
                health: None,
                unhealthy: false,
            },
        );
        // The previous agent may have died before the leader got its last report: send it
        // again (a repeated status does not move a task, so this is harmless).
        match (last, running) {
            (Some(last), _) if last.state.is_terminal() => state.reports.push_back((id, last)),
            (Some(last), Some(process)) if last.state == TaskState::Running => {
                info!(task = %id, pid = process.pid, "re-adopted running task");
                state.reports.push_back((id, last));
            }
            // Died between spawning and recording Running: it is running now.
            (_, Some(process)) => {
                info!(task = %id, pid = process.pid, "re-adopted running task");
                state.record(&id, running_status());
            }
            (_, None) => {
                let error = "task exited while the agent was down".to_owned();
                state.record(&id, status(TaskState::Failed, "failed", error, None));
            }
        }
    }
    Ok(())
}

pub fn running_status() -> TaskStatus {
    status(TaskState::Running, "started", String::new(), None)
}

/// After [`load`]: re-attaches the running tasks to their networks (and counts them as users
/// of their volumes again, and gives one started by an older agent its cgroup) and releases the
/// networks of those that exited while no agent was watching.
pub fn reconnect(inner: &Inner) {
    let state = inner.lock();
    for entry in state.tasks.values() {
        let netns = inner.task_netns(&entry.task.id);
        if entry.running().is_none() {
            inner.release_network(&entry.task);
            continue;
        }
        for name in mounts::volume_names(&entry.task) {
            inner.volumes.register(name, &entry.task.id);
        }
        if let Some((process, _)) = entry.running() {
            inner.cgroups.adopt(
                &entry.task.id,
                &entry.task.spec.resources,
                process.pid as i32,
            );
        }
        if netns.exists()
            && let Err(e) = inner.network.attach(&entry.task, &netns)
        {
            warn!(task = %entry.task.id, error = %Chain(e.as_ref()), "re-attaching a re-adopted task's networks");
        }
    }
}
