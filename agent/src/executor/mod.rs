//! The exec driver: runs a task as a process tree in network, mount and UTS namespaces of its
//! own (like Nomad's exec driver), not as a container image.
//!
//! The agent hands [`Executor::reconcile`] every task the leader assigned to this node; the
//! executor starts and stops processes to match, and queues status changes that the agent
//! takes with [`Executor::take_reports`] and sends to the leader.
//!
//! Tasks outlive the agent: their processes are in sessions of their own, with no
//! parent-death signal, and everything needed to find them again is on disk, so a restarted
//! agent (even after SIGKILL) re-adopts them instead of starting them twice.
//!
//! On disk, `<state_dir>/tasks/<task-id>/` holds `spec.json` (the task), `status.json` (its
//! last status), `pid` (`<pid> <start time>`), `stdout.log`, `stderr.log` (with
//! `stdout.log.stamps` and `stderr.log.stamps`: when their bytes were written) and `health.log`
//! (what the last health check printed); the task's
//! network namespace is mounted at `<state_dir>/netns/task-<task-id>` from before its process
//! starts (so its interfaces are there when it runs) until it has exited.
//!
//! # Layout
//! - `error`: [`ExecutorError`].
//! - `store`: a task's directory and its files.
//! - `proc`: a process's identity (PID + start time) and whether it still runs.
//! - `state`: the shared state, and recording a status (persisted, then queued).
//! - `adopt`: loading the task directories when the executor opens.
//! - `reconcile`: following the assignments: start, stop, forget.
//! - `mounts`: a task's mounts (binds, volumes, tmpfs), prepared for the child.
//! - `files`: a task's secrets and configs, on a tmpfs of its own, prepared for the child.
//! - `cgroup`: a cgroup per task (its limits, its whole process tree, OOM kills), under a
//!   subtree beside the agent's own cgroup.
//! - `spawn`: starting a task's process in its namespaces and cgroup.
//! - `user`: `--user`, resolved from the node's /etc/passwd and /etc/group.
//! - `readiness`: when a task joins its service (listening on its ports), when a draining one
//!   has no connection left.
//! - `health`: a task's health check, run in its namespaces (healthy: ready; unhealthy: stopped
//!   and failed).
//! - `stop`: withdraw, drain, then SIGTERM, and SIGKILL after the grace period.
//! - `supervise`: the thread that notices exits, reaps, publishes tasks that became ready,
//!   signals drained ones, and delivers due SIGKILLs.
//! - `log_stamps`: the thread that notes when each task's output was written.
//! - `exec`: a command inside a running task's namespaces (`shoal exec`).

mod adopt;
mod cgroup;
mod error;
mod exec;
mod files;
mod health;
mod log_stamps;
mod mounts;
mod proc;
mod readiness;
mod reconcile;
mod spawn;
mod state;
mod stop;
mod store;
mod supervise;
mod user;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Condvar, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

pub use cgroup::Cgroups;
pub use error::ExecutorError;
use shoal_control::cluster::{Task, TaskStatus, health::Health, objects::TaskFiles};

use crate::volumes::Volumes;

use state::{Inner, State};

/// Extra time `stop_all` waits beyond the longest grace period, for SIGKILL to take effect.
const KILL_MARGIN: Duration = Duration::from_secs(5);

/// Connects a task's network namespace to its networks (the agent's overlay networking).
pub trait TaskNetwork: Send + Sync {
    /// Called before the task's process starts, and again for a re-adopted running task after
    /// an agent restart (so it must be idempotent). An error fails the task.
    fn attach(&self, task: &Task, netns: &Path) -> anyhow::Result<()>;
    /// Called once the task's process has exited for good, before its namespace is deleted.
    fn detach(&self, task: &Task, netns: &Path);
    /// The task is ready (see `readiness`): its endpoints join its service's backends. Until
    /// then `attach` keeps them to itself.
    fn publish(&self, _task: &Task) {}
    /// The task is about to stop: its endpoints leave its service's backends (and are never
    /// published afterwards): out of DNS and of every load balancer's round robin, while the
    /// connections it has go on until `detach`. True if endpoints other nodes may have seen
    /// were withdrawn, so the withdrawal has to spread before the task is signalled.
    fn withdraw(&self, _task: &Task) -> bool {
        false
    }
    /// What the task's /etc/resolv.conf says (a private bind mount in its mount namespace);
    /// `None` leaves the host's file in view.
    fn resolv_conf(&self) -> Option<String> {
        None
    }
}

/// Runs this node's tasks. One per state dir (the agent's state-dir lock guarantees it).
///
/// Reports follow a take-and-requeue model: [`Executor::take_reports`] hands over the pending
/// status changes, and a caller that fails to deliver them gives them back with
/// [`Executor::requeue`], so none is lost.
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// Opens (creating if needed) `<state_dir>/tasks/`, re-adopts the tasks whose process
    /// still runs, reports those whose process is gone as failed ("task exited while the
    /// agent was down"), and starts the supervisor thread. Every known task's current status
    /// is queued as a report, since the previous agent may have died before sending it.
    ///
    /// Re-adopted tasks are attached to their networks again (idempotently: working traffic is
    /// not disturbed) and counted as users of their volumes, and the namespaces of tasks that
    /// exited meanwhile are released. `node_hostname` fills `{{.Node.Hostname}}` in tasks'
    /// hostnames; `node_id` names the node's task cgroups (see `cgroup`), whose processes are
    /// killed unless they belong to a re-adopted task.
    pub fn open(
        state_dir: &Path,
        network: Arc<dyn TaskNetwork>,
        volumes: Arc<Volumes>,
        node_hostname: String,
        node_id: &str,
    ) -> Result<Executor, ExecutorError> {
        let tasks_dir = state_dir.join("tasks");
        store::create_private_dir(&tasks_dir)?;
        let mut state = State::default();
        adopt::load(&tasks_dir, &mut state)?;
        let cgroups = Cgroups::open(state_dir, node_id);
        // What a task left running after it exited while no agent watched, or a task whose
        // directory is gone.
        cgroups.sweep(&|id| state.tasks.get(id).is_some_and(|e| e.running().is_some()));
        let inner = Arc::new(Inner {
            cgroups,
            tasks_dir,
            netns_dir: state_dir.join("netns"),
            network,
            volumes,
            node_hostname,
            state: Mutex::new(state),
            changed: Condvar::new(),
            closed: Default::default(),
        });
        adopt::reconnect(&inner);
        supervise::start(inner.clone()).map_err(|source| ExecutorError::Spawn {
            what: "the task supervisor thread",
            source,
        })?;
        log_stamps::start(inner.clone()).map_err(|source| ExecutorError::Spawn {
            what: "the log stamper thread",
            source,
        })?;
        Ok(Executor { inner })
    }

    /// Makes local processes follow `assigned`, every task the leader assigned to this node:
    /// starts those desired Running that were never started here, stops (in the background:
    /// withdrawn from its service and drained, then its stop signal to the process group,
    /// SIGKILL `stop_grace_ms` later; see `stop`) those desired Shutdown and
    /// the running ones missing from `assigned` (orphans), and deletes the directories of
    /// finished tasks missing from `assigned`. A task is never started twice, whatever
    /// `assigned` says later.
    #[cfg(test)]
    pub fn reconcile(&self, assigned: &[Task]) {
        self.reconcile_with_files(assigned, &TaskFiles::default());
    }

    /// [`Executor::reconcile`], with the data of the secrets and configs of the tasks to
    /// start (kept in memory only, see `files`).
    pub fn reconcile_with_files(&self, assigned: &[Task], files: &TaskFiles) {
        reconcile::reconcile(&self.inner, assigned, files);
    }

    /// Status changes since the last call, oldest first, by task ID.
    pub fn take_reports(&self) -> Vec<(String, TaskStatus)> {
        self.inner.lock().reports.drain(..).collect()
    }

    /// Gives back reports from [`Executor::take_reports`] that could not be delivered: they
    /// are taken again, before any newer ones, by the next call.
    pub fn requeue(&self, reports: Vec<(String, TaskStatus)>) {
        let mut state = self.inner.lock();
        for report in reports.into_iter().rev() {
            state.reports.push_front(report);
        }
    }

    /// The task's stdout and stderr logs, if the task is known here.
    pub fn log_paths(&self, task_id: &str) -> Option<(PathBuf, PathBuf)> {
        let state = self.inner.lock();
        let dir = &state.tasks.get(task_id)?.dir;
        Some((dir.stdout_path(), dir.stderr_path()))
    }

    /// A command that runs `argv` inside the task's network, mount and UTS namespaces, with
    /// the task's env, in `/`. Stdio is the caller's to set. Error if the task is not running
    /// here.
    /// This node's running tasks that have a health check, counted per service name and
    /// health (for `shoal_task_health`).
    pub fn health_counts(&self) -> BTreeMap<(String, Health), u64> {
        let state = self.inner.lock();
        let mut counts = BTreeMap::new();
        for entry in state.tasks.values() {
            if let (Some(_), Some(monitor)) = (entry.running(), &entry.health) {
                *counts
                    .entry((entry.task.spec.name.clone(), monitor.health()))
                    .or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn exec_command(&self, task_id: &str, argv: &[String]) -> Result<Command, ExecutorError> {
        exec::exec_command(&self.inner, task_id, argv)
    }

    /// The node's task cgroup subtree in the cgroup v2 hierarchy, if tasks are placed there
    /// (see `cgroup`): every task's processes are below it.
    pub fn task_cgroup_v2(&self) -> Option<PathBuf> {
        self.inner.cgroups.unified_node_dir().map(Path::to_path_buf)
    }

    /// The PID of a running task (its namespaces are `/proc/<pid>/ns/*`).
    #[cfg(test)]
    pub fn pid(&self, task_id: &str) -> Option<u32> {
        let state = self.inner.lock();
        state.tasks.get(task_id)?.running().map(|(p, _)| p.pid)
    }

    /// Stops every task (the node is leaving the swarm) and waits until they have exited, at
    /// most the longest drain and grace periods plus a few seconds. False if some are still
    /// running.
    /// Agent shutdown does not call this: tasks keep running across agent restarts.
    pub fn stop_all(&self) -> bool {
        let mut state = self.inner.lock();
        let mut longest = Duration::ZERO;
        for entry in state.tasks.values_mut() {
            let grace = Duration::from_millis(entry.task.spec.stop_grace_ms);
            // Drained for at most a grace period, then signalled, then killed a grace period
            // later.
            longest = longest.max(grace.max(stop::WITHDRAW_SPREAD) + grace);
            stop::request_stop(entry, grace, self.inner.network.as_ref());
        }
        self.inner.changed.notify_all();
        let deadline = Instant::now() + longest + KILL_MARGIN;
        loop {
            if state.tasks.values().all(|e| e.running().is_none()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Executor {
    /// Stops the supervisor, as if the agent had exited: tasks keep running, unsupervised,
    /// until an executor opens the state dir again.
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.changed.notify_all();
    }
}
