//! Making local processes follow the leader's assignments: start what should run, stop what
//! should not (desired Shutdown, or no longer assigned here at all), forget what is over.

use std::{collections::HashSet, path::Path, time::Duration};

use nix::sys::{signal::Signal, wait::waitpid};
use shoal_control::{
    cluster::{Task, TaskState, objects::TaskFiles},
    error_chain::Chain,
};
use tracing::warn;

use anyhow::Context as _;

use super::{
    mounts, spawn,
    state::{Inner, Phase, State, TaskEntry, status},
    stop::{request_stop, signal_group},
    store::{TaskDir, validate_task_id},
};

pub fn reconcile(inner: &Inner, assigned: &[Task], files: &TaskFiles) {
    let mut state = inner.lock();
    let mut wanted = HashSet::new();
    for task in assigned {
        wanted.insert(task.id.as_str());
        if let Some(entry) = state.tasks.get_mut(&task.id) {
            // Known here: it runs or has run. Never started twice; only stopped on request.
            if task.desired_state > TaskState::Running {
                let grace = Duration::from_millis(task.spec.stop_grace_ms);
                request_stop(entry, grace, inner.network.as_ref());
            }
            continue;
        }
        if let Err(e) = validate_task_id(&task.id) {
            refuse(&mut state, &task.id, Chain(&e).to_string());
            continue;
        }
        // Over already (as far as the leader knows): nothing left to do here.
        if task.status.state.is_terminal() {
            continue;
        }
        match task.desired_state {
            TaskState::Running => start(inner, &mut state, task, files),
            // Told to stop before it was started: it never will be, which the leader (waiting
            // for it to be terminal) must hear.
            desired if desired > TaskState::Running => {
                never_started(&inner.tasks_dir, &mut state, task);
            }
            // Not to be started yet.
            _ => {}
        }
    }

    let unassigned: Vec<String> = state
        .tasks
        .keys()
        .filter(|id| !wanted.contains(id.as_str()))
        .cloned()
        .collect();
    for id in unassigned {
        let Some(entry) = state.tasks.get_mut(&id) else {
            continue;
        };
        if entry.running().is_some() {
            // An orphan: the leader no longer has it here (removed service, task moved while
            // this node was cut off). Stopped with the grace period it was started with.
            let grace = Duration::from_millis(entry.task.spec.stop_grace_ms);
            request_stop(entry, grace, inner.network.as_ref());
        } else {
            // Over, and the leader has dropped it: its directory (and logs) can go, and its
            // anonymous volumes.
            if let Err(e) = entry.dir.remove() {
                warn!(task = %id, error = %Chain(&e), "removing a finished task's directory");
            }
            inner.remove_anonymous_volumes(&entry.task);
            state.tasks.remove(&id);
        }
    }
    state.rejected.retain(|id| wanted.contains(id.as_str()));
}

/// Reports a task that cannot even get a directory, once.
fn refuse(state: &mut State, id: &str, error: String) {
    if state.rejected.insert(id.to_owned()) {
        let rejected = status(TaskState::Rejected, "rejected", error, None);
        state.reports.push_back((id.to_owned(), rejected));
    }
}

/// Creates the task's directory and entry (not running yet), with its anonymous volumes named
/// and its hostname's placeholders filled in (with `node_hostname`) in its copy of the spec.
/// The names given, or `None` if it was refused.
fn add(
    tasks_dir: &Path,
    node_hostname: &str,
    state: &mut State,
    task: &Task,
) -> Option<Vec<String>> {
    let mut task = task.clone();
    let anonymous = mounts::name_anonymous_volumes(&mut task);
    if let Err(e) = spawn::expand_hostname(&mut task, node_hostname) {
        let error = format!("preparing task failed: {}", Chain(e.as_ref()));
        refuse(state, &task.id, error);
        return None;
    }
    let dir = match TaskDir::create(tasks_dir, &task) {
        Ok(dir) => dir,
        Err(e) => {
            refuse(
                state,
                &task.id,
                format!("preparing task failed: {}", Chain(&e)),
            );
            return None;
        }
    };
    let preparing = status(TaskState::Preparing, "preparing", String::new(), None);
    state.tasks.insert(
        task.id.clone(),
        TaskEntry {
            task,
            dir,
            phase: Phase::Exited,
            status: preparing,
            stopping: false,
            kill_at: None,
            joined: false,
            started_at: None,
            drain: None,
            health: None,
            unhealthy: false,
        },
    );
    Some(anonymous)
}

/// Records, once, that a task will never start here: reported Shutdown.
fn never_started(tasks_dir: &Path, state: &mut State, task: &Task) {
    // Never runs: its hostname does not matter.
    if add(tasks_dir, "", state, task).is_some() {
        let shutdown = status(TaskState::Shutdown, "shutdown", String::new(), None);
        state.record(&task.id, shutdown);
    }
}

/// Preparing -> Starting -> Running, or Failed. Spawning is quick (fork + exec), so it is done
/// here, under the lock: the supervisor cannot see the process before its entry exists.
fn start(inner: &Inner, state: &mut State, assigned: &Task, files: &TaskFiles) {
    let Some(anonymous_volumes) = add(&inner.tasks_dir, &inner.node_hostname, state, assigned)
    else {
        return;
    };
    let id = assigned.id.as_str();
    state.record(
        id,
        status(TaskState::Preparing, "preparing", String::new(), None),
    );
    state.record(
        id,
        status(TaskState::Starting, "starting", String::new(), None),
    );
    // The executor's copy: its anonymous volumes have names.
    let Some((dir, task)) = state.tasks.get(id).map(|e| (e.dir.clone(), e.task.clone())) else {
        return;
    };
    let task = &task;
    let netns = inner.task_netns(id);
    let result = connect(inner, task, &netns)
        .and_then(|()| {
            let resolv_conf = inner.network.resolv_conf();
            let cx = spawn::SpawnContext {
                dir: &dir,
                netns: &netns,
                netns_dir: &inner.netns_dir,
                resolv_conf: resolv_conf.as_deref(),
                volumes: &inner.volumes,
                anonymous_volumes: &anonymous_volumes,
                files,
                cgroups: &inner.cgroups,
            };
            spawn::spawn(task, &cx)
        })
        .and_then(|process| match dir.write_pid(process) {
            Ok(()) => Ok(process),
            Err(e) => {
                // Unrecorded, the process could not be found again after a restart: do not let
                // it run. SIGKILL makes the wait short.
                signal_group(process, false, Signal::SIGKILL);
                let _ = waitpid(process.nix_pid(), None);
                Err(e.into())
            }
        });
    match result {
        Ok(process) => {
            if let Some(entry) = state.tasks.get_mut(id) {
                entry.phase = Phase::Running {
                    process,
                    adopted: false,
                };
                entry.started_at = Some(std::time::Instant::now());
            }
            // Running is reported by the supervisor once the task is ready (`readiness`).
            inner.changed.notify_all();
        }
        Err(e) => {
            inner.release_network(task);
            inner.release_volumes(task);
            inner.cgroups.kill(id);
            inner.cgroups.remove(id);
            let error = format!("starting task failed: {}", Chain(e.as_ref()));
            state.record(id, status(TaskState::Failed, "failed", error, None));
        }
    }
}

/// The task's network namespace, with its interfaces, before the process exists.
fn connect(inner: &Inner, task: &Task, netns: &Path) -> anyhow::Result<()> {
    shoal_dataplane::overlay::create_netns(netns).context("creating the network namespace")?;
    inner
        .network
        .attach(task, netns)
        .context("connecting to networks")
}
