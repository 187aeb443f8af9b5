//! The executor's shared state: what it knows of each task, the reports not yet taken, and the
//! one place a status changes (persisted to the task dir, then queued for the leader).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{Condvar, Mutex, MutexGuard, PoisonError, atomic::AtomicBool},
    time::{Duration, Instant},
};

use shoal_control::{
    clock::now_ms,
    cluster::{Task, TaskState, TaskStatus},
    error_chain::Chain,
};
use tracing::warn;

use super::{proc::ProcessIdentity, store::TaskDir};

/// Shared by the [`super::Executor`] handle and its supervisor thread.
pub struct Inner {
    pub tasks_dir: PathBuf,
    /// Where each task's network namespace is bind-mounted (`task-<id>`), next to the
    /// networking's sandboxes: tasks drop this whole directory from their mount view.
    pub netns_dir: PathBuf,
    pub network: std::sync::Arc<dyn super::TaskNetwork>,
    /// This node's volumes: tasks are registered as users while their process runs.
    pub volumes: std::sync::Arc<crate::volumes::Volumes>,
    /// This node's hostname, for `{{.Node.Hostname}}` in a task's hostname.
    pub node_hostname: String,
    /// The node's task cgroups.
    pub cgroups: super::cgroup::Cgroups,
    pub state: Mutex<State>,
    /// Notified when a task exits (for `stop_all`) and when a stop is requested (so the
    /// supervisor re-computes when its next SIGKILL is due).
    pub changed: Condvar,
    /// Set when the executor is dropped: the supervisor stops, as it would if the agent died.
    pub closed: AtomicBool,
}

impl Inner {
    /// Where the task's network namespace is mounted while the task lives.
    pub fn task_netns(&self, task_id: &str) -> PathBuf {
        self.netns_dir.join(format!("task-{task_id}"))
    }

    /// Disconnects an exited task from its networks and deletes its network namespace. Safe to
    /// repeat; failures are logged (the namespace is retried the next time).
    pub fn release_network(&self, task: &Task) {
        let netns = self.task_netns(&task.id);
        if !netns.exists() {
            return;
        }
        self.network.detach(task, &netns);
        if let Err(e) = shoal_dataplane::overlay::remove_netns(&netns) {
            warn!(task = %task.id, error = %Chain(&e), "removing the task's network namespace");
        }
    }

    /// The task's process is gone for good: it no longer holds its volumes (a named volume
    /// can be removed from now on).
    pub fn release_volumes(&self, task: &Task) {
        self.volumes.release(&task.id);
    }

    /// The task is forgotten here (its directory is gone): its anonymous volumes go with it,
    /// as Docker removes a swarm task's container with its anonymous volumes.
    pub fn remove_anonymous_volumes(&self, task: &Task) {
        for name in super::mounts::volume_names(task) {
            if let Err(e) = self.volumes.remove_anonymous(name) {
                warn!(task = %task.id, volume = name, error = %Chain(&e), "removing an anonymous volume");
            }
        }
    }

    /// The state, even if a thread panicked while holding it: every update leaves it
    /// consistent, and refusing to supervise tasks after one panic would only leak them.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub struct State {
    pub tasks: HashMap<String, TaskEntry>,
    /// Status changes not taken yet, oldest first.
    pub reports: VecDeque<(String, TaskStatus)>,
    /// Tasks refused before they had a directory (invalid ID): reported once, not every time
    /// they are assigned again.
    pub rejected: HashSet<String>,
}

pub struct TaskEntry {
    /// The task as it was assigned when it was started (its spec never changes afterwards).
    pub task: Task,
    pub dir: TaskDir,
    pub phase: Phase,
    /// The last status recorded.
    pub status: TaskStatus,
    /// A stop was requested: the exit is reported as Shutdown, and signals are not resent.
    pub stopping: bool,
    /// When the process group gets SIGKILL if it has not exited by then.
    pub kill_at: Option<Instant>,
    /// Its endpoints joined the service's backends (it was found ready, see `readiness`).
    pub joined: bool,
    /// When this executor started its process; `None` for one re-adopted after a restart
    /// (which has run long enough for any wait to be over).
    pub started_at: Option<Instant>,
    /// Withdrawn from its service and not signalled yet (see `stop`).
    pub drain: Option<Drain>,
    /// Its service's health check, once the supervisor has seen it running.
    pub health: Option<super::health::HealthMonitor>,
    /// Stopped for failing its health check: its exit is reported as a failure.
    pub unhealthy: bool,
}

/// A stopping task between the withdrawal of its endpoints and its stop signal.
#[derive(Clone, Copy, Debug)]
pub struct Drain {
    /// Until then the withdrawal is still spreading to the other nodes: nothing is counted.
    pub spread_until: Instant,
    /// The signal is sent then even if clients still hold connections.
    pub drain_until: Instant,
    /// SIGKILL comes this long after the signal.
    pub grace: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `adopted`: found running by `Executor::open`, so not our child: watched via /proc
    /// rather than waited for.
    Running {
        process: ProcessIdentity,
        adopted: bool,
    },
    Exited,
}

impl TaskEntry {
    pub fn running(&self) -> Option<(ProcessIdentity, bool)> {
        match self.phase {
            Phase::Running { process, adopted } => Some((process, adopted)),
            Phase::Exited => None,
        }
    }
}

impl State {
    /// Records a new status of a known task: in its directory (so a restarted agent knows it)
    /// and in the report queue.
    pub fn record(&mut self, id: &str, status: TaskStatus) {
        let Some(entry) = self.tasks.get_mut(id) else {
            return;
        };
        if let Err(e) = entry.dir.write_status(&status) {
            // The report still reaches the leader; only a restart would lose it.
            warn!(task = id, error = %Chain(&e), "recording task status");
        }
        entry.status = status.clone();
        self.reports.push_back((id.to_owned(), status));
    }
}

pub fn status(
    state: TaskState,
    message: &str,
    error: String,
    exit_code: Option<i32>,
) -> TaskStatus {
    TaskStatus {
        state,
        message: message.to_owned(),
        error,
        exit_code,
        timestamp_ms: now_ms(),
        health: None,
    }
}
