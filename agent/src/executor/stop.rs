//! Stopping a task: SIGTERM to its process group now, SIGKILL once its grace period is over
//! (delivered by the supervisor, so nothing blocks for the grace period).

use std::time::{Duration, Instant};

use nix::{errno::Errno, sys::signal::Signal};
use tracing::warn;

use shoal_control::error_chain::Chain;

use super::{
    proc::{Liveness, ProcessIdentity},
    state::TaskEntry,
};

/// Sends `signal` to the task's process group (pgid = the task's PID: it is a session leader,
/// which cannot leave its group).
pub fn signal_group(process: ProcessIdentity, adopted: bool, signal: Signal) {
    // Our own child cannot be recycled before we reap it. An adopted process is not our child:
    // check that its PID still is the task before signalling.
    if adopted && process.liveness() == Liveness::Gone {
        return;
    }
    match nix::sys::signal::killpg(process.nix_pid(), signal) {
        // ESRCH: the whole group is gone already.
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(pid = process.pid, %signal, error = %Chain(&e), "signalling a task"),
    }
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
    signal_group(process, adopted, Signal::SIGTERM);
    entry.kill_at = Some(Instant::now() + grace);
}
