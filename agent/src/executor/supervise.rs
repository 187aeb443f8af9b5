//! The supervisor: one thread per executor that notices task exits, reports them, reaps the
//! processes, runs health checks, publishes tasks that became ready, signals drained ones and
//! delivers SIGKILLs that are due.
//!
//! It polls (every [`POLL`], or sooner when a SIGKILL is due) rather than blocking in wait():
//! re-adopted processes are not our children and can only be watched through /proc, and a
//! SIGCHLD handler would compete with tokio's. Our children are checked with
//! `waitid(WNOHANG | WNOWAIT)`: the exit is observed without reaping, so the leader's PID stays
//! held (as a zombie) while what is left of its process group is killed, and only then reaped.

use std::{
    io,
    sync::{Arc, PoisonError, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::Signal,
        wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid},
    },
};
use shoal_control::cluster::{TaskState, TaskStatus, health::Health};
use tracing::info;

use super::{
    adopt::running_status,
    exec,
    health::HealthMonitor,
    proc::{Liveness, ProcessIdentity},
    readiness,
    state::{Inner, Phase, State, TaskEntry, status},
    stop::{request_stop, send_stop_signal, signal_group},
};

/// How often running tasks are checked: the delay before an exit is reported.
const POLL: Duration = Duration::from_millis(50);

pub fn start(inner: Arc<Inner>) -> io::Result<()> {
    thread::Builder::new()
        .name("task-supervisor".to_owned())
        .spawn(move || run(&inner))?;
    Ok(())
}

/// How a task's process ended.
enum Outcome {
    /// Exit code, or 128 + signal number, as a shell (and Docker) reports it.
    Code(i32),
    /// Why the exit status is not known.
    Unknown(&'static str),
}

fn run(inner: &Inner) {
    let mut state = inner.lock();
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut exited = Vec::new();
        let mut joined = Vec::new();
        let mut health_changes = Vec::new();
        let mut next_check = now + POLL;
        for (id, entry) in &mut state.tasks {
            let Some((process, adopted)) = entry.running() else {
                continue;
            };
            if let Some(outcome) = check_exit(process, adopted) {
                exited.push((id.clone(), outcome));
                continue;
            }
            if !entry.stopping {
                if let Some(health) = check_health(inner, entry, process, now) {
                    health_changes.push((id.clone(), health));
                }
                if let Some(monitor) = &entry.health {
                    next_check = next_check.min(monitor.due());
                }
            }
            if !entry.joined && !entry.stopping && join_when_ready(inner, entry, process, now) {
                joined.push(id.clone());
            }
            if let Some(drain) = entry.drain
                && now >= drain.spread_until
                && (now >= drain.drain_until
                    || readiness::open_connections(&entry.task, process.pid) == 0)
            {
                let drained = now < drain.drain_until;
                info!(task = %entry.task.id, drained, "withdrawn task: sending its stop signal");
                send_stop_signal(entry, drain.grace);
            }
            match entry.kill_at {
                Some(at) if at <= now => {
                    signal_group(process, adopted, Signal::SIGKILL);
                    // Also what left the task's process group (a daemonized child).
                    inner.cgroups.kill(&entry.task.id);
                    entry.kill_at = None;
                }
                Some(at) => next_check = next_check.min(at),
                None => {}
            }
        }
        for (id, health) in health_changes {
            apply_health(inner, &mut state, &id, health);
        }
        for id in joined {
            // A re-adopted task was Running already.
            if let Some(entry) = state.tasks.get(&id)
                && entry.status.state != TaskState::Running
            {
                let status = TaskStatus {
                    health: entry.health.as_ref().map(HealthMonitor::health),
                    ..running_status()
                };
                state.record(&id, status);
            }
        }
        if !exited.is_empty() {
            for (id, outcome) in exited {
                finish(inner, &mut state, &id, outcome);
                if let Some(entry) = state.tasks.get(&id) {
                    inner.release_network(&entry.task);
                    inner.release_volumes(&entry.task);
                }
            }
            inner.changed.notify_all();
        }
        let timeout = next_check.saturating_duration_since(Instant::now());
        state = inner
            .changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Runs the task's health check, if its service has one (see `health`); the task's health
/// when it changed (or is first known).
fn check_health(
    inner: &Inner,
    entry: &mut TaskEntry,
    process: ProcessIdentity,
    now: Instant,
) -> Option<Health> {
    let Some(monitor) = &mut entry.health else {
        // Most tasks have no check: nothing to build on every poll.
        entry.task.spec.healthcheck.as_ref()?;
        entry.health = HealthMonitor::new(
            entry.task.spec.healthcheck.as_ref(),
            entry.started_at,
            entry.status.health,
            entry.dir.health_log_path(),
            now,
        );
        return entry.health.as_ref().map(HealthMonitor::health);
    };
    let task = &entry.task;
    monitor.poll(
        now,
        |argv| exec::command_in_task(process, task, argv, &inner.cgroups),
        &task.id,
    )
}

/// Reports a task's new health; an unhealthy task is withdrawn and stopped, and its exit
/// reported as a failure (Swarm's "unhealthy container"), for its restart policy to replace.
fn apply_health(inner: &Inner, state: &mut State, id: &str, health: Health) {
    let Some(entry) = state.tasks.get_mut(id) else {
        return;
    };
    if health == Health::Unhealthy {
        info!(task = %id, "task unhealthy: stopping it");
        entry.unhealthy = true;
        let grace = Duration::from_millis(entry.task.spec.stop_grace_ms);
        request_stop(entry, grace, inner.network.as_ref());
    }
    if entry.status.health != Some(health) {
        // The state and its time stay: only the health is new.
        let status = TaskStatus {
            health: Some(health),
            ..entry.status.clone()
        };
        state.record(id, status);
    }
}

/// Publishes the task's endpoints once it is ready (see `readiness`; a task with a health
/// check is ready once healthy). True when it joined.
fn join_when_ready(
    inner: &Inner,
    entry: &mut TaskEntry,
    process: ProcessIdentity,
    now: Instant,
) -> bool {
    let running_for = entry.started_at.map_or(readiness::NO_PORT_WAIT, |at| {
        now.saturating_duration_since(at)
    });
    let ready = match &entry.health {
        Some(monitor) => monitor.health() == Health::Healthy,
        None => readiness::is_ready(&entry.task, process.pid, running_for),
    };
    if !ready {
        return false;
    }
    if !entry.task.networks.is_empty() || !entry.task.spec.ports.is_empty() {
        info!(task = %entry.task.id, "task ready: joining its service");
    }
    inner.network.publish(&entry.task);
    entry.joined = true;
    true
}

fn check_exit(process: ProcessIdentity, adopted: bool) -> Option<Outcome> {
    if adopted {
        return match process.liveness() {
            Liveness::Alive => None,
            Liveness::Zombie | Liveness::Gone => Some(Outcome::Unknown(
                "its exit status is unknown: it was started before the agent restarted",
            )),
        };
    }
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(process.nix_pid()), flags) {
        Ok(WaitStatus::Exited(_, code)) => Some(Outcome::Code(code)),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(Outcome::Code(128 + signal as i32)),
        Ok(_) | Err(Errno::EINTR) => None,
        // ECHILD: someone else in this process reaped it (waitpid(-1)).
        Err(_) => Some(Outcome::Unknown("its exit status was lost")),
    }
}

/// Records a task's exit, reaps its process, and kills and removes what is left in its cgroup.
fn finish(inner: &Inner, state: &mut State, id: &str, outcome: Outcome) {
    let Some(entry) = state.tasks.get_mut(id) else {
        return;
    };
    let Some((process, adopted)) = entry.running() else {
        return;
    };
    // What the task left behind in its process group dies with it, as in a container whose
    // init exits. Safe: a PID number stays allocated while any group member uses it as its
    // pgid, and our child's (the leader's) stays held until reaped below. (An adopted leader
    // that is fully gone with no member left frees the number, but recycling it as another
    // group's ID within one poll would take a whole cycle of the PID space.)
    signal_group(process, false, Signal::SIGKILL);
    inner.cgroups.kill(id);
    let oom_killed = inner.cgroups.oom_killed(id);
    let exit_code = match outcome {
        Outcome::Code(code) => Some(code),
        Outcome::Unknown(_) => None,
    };
    let new_status = match outcome {
        // Swarm's words for a task stopped by its health check.
        _ if entry.unhealthy => status(
            TaskState::Failed,
            "failed",
            "unhealthy container".to_owned(),
            exit_code,
        ),
        _ if entry.stopping => status(TaskState::Shutdown, "shutdown", String::new(), exit_code),
        Outcome::Code(0) => status(TaskState::Complete, "finished", String::new(), exit_code),
        // Docker's State.OOMKilled, in the error `service ps` shows.
        Outcome::Code(code) if oom_killed => status(
            TaskState::Failed,
            "failed",
            format!("task: non-zero exit ({code}): OOM-killed at its memory limit"),
            exit_code,
        ),
        Outcome::Code(code) => status(
            TaskState::Failed,
            "failed",
            format!("task: non-zero exit ({code})"),
            exit_code,
        ),
        Outcome::Unknown(why) => status(
            TaskState::Failed,
            "failed",
            format!("task exited; {why}"),
            None,
        ),
    };
    entry.phase = Phase::Exited;
    entry.kill_at = None;
    // A check still running is killed and reaped.
    entry.health = None;
    state.record(id, new_status);
    if !adopted {
        // Reap: it exited (seen above), so this does not block. An error means it is gone.
        let _ = waitpid(process.nix_pid(), Some(WaitPidFlag::WNOHANG));
    }
    inner.cgroups.remove(id);
}
