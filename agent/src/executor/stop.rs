//! Stopping a task: its stop signal (`--stop-signal`, SIGTERM by default) to its process group
//! now, SIGKILL once its grace period is over (delivered by the supervisor, so nothing blocks
//! for the grace period).

use std::time::{Duration, Instant};

use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};
use tracing::warn;

use shoal_control::{
    cluster::signal::{SIGTERM, parse_signal},
    error_chain::Chain,
};

use super::{
    proc::{Liveness, ProcessIdentity},
    state::TaskEntry,
};

/// Sends `signal` to the task's process group (pgid = the task's PID: it is a session leader,
/// which cannot leave its group).
pub fn signal_group(process: ProcessIdentity, adopted: bool, signal: Signal) {
    signal_group_number(process, adopted, signal as libc::c_int);
}

/// [`signal_group`] by number: also the real-time signals, which nix's `Signal` lacks.
fn signal_group_number(process: ProcessIdentity, adopted: bool, signal: libc::c_int) {
    // Our own child cannot be recycled before we reap it. An adopted process is not our child:
    // check that its PID still is the task before signalling.
    if adopted && process.liveness() == Liveness::Gone {
        return;
    }
    match killpg(process.nix_pid(), signal) {
        // ESRCH: the whole group is gone already.
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(pid = process.pid, signal, error = %Chain(&e), "signalling a task"),
    }
}

fn killpg(group: Pid, signal: libc::c_int) -> nix::Result<()> {
    // SAFETY: a plain syscall on integers.
    Errno::result(unsafe { libc::killpg(group.as_raw(), signal) }).map(drop)
}

/// Starts stopping a running task, unless already stopping. Its exit is then reported as
/// Shutdown.
pub fn request_stop(entry: &mut TaskEntry, grace: Duration) {
    let Some((process, adopted)) = entry.running() else {
        return;
    };
    if entry.stopping {
        return;
    }
    entry.stopping = true;
    // Checked by the leader when the spec was accepted; a bad one (from an older leader)
    // still stops the task.
    let signal = parse_signal(&entry.task.spec.stop_signal).unwrap_or_else(|e| {
        warn!(task = %entry.task.id, error = %Chain(&e), "stopping with SIGTERM instead");
        SIGTERM
    });
    signal_group_number(process, adopted, signal);
    entry.kill_at = Some(Instant::now() + grace);
}
