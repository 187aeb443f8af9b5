//! Stopping a task: first its endpoints leave its service (every node's VIP and published-port
//! maps and DNS drop it), then, once that has spread ([`WITHDRAW_SPREAD`]), the supervisor
//! watches the task's established connections and sends its stop signal (`--stop-signal`,
//! SIGTERM by default) to its process group as soon as they are all closed, or when its
//! grace period (`--stop-grace-period`) has passed since the stop was asked; SIGKILL follows
//! one grace period after the signal, as in Docker. A task that had not joined its service
//! gets its signal at once. Nothing blocks: the supervisor delivers the later steps.

use std::time::{Duration, Instant};

use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};
use tracing::warn;

use shoal_control::{
    cluster::signal::{SIGTERM, parse_signal},
    error_chain::Chain,
};

use super::{
    TaskNetwork,
    proc::{Liveness, ProcessIdentity},
    state::{Drain, TaskEntry},
};

/// How long a withdrawal is given to reach every node before connections are counted: the
/// network DB pushes a change to its members as it is made (UDP broadcasts, relayed on
/// receipt) and each node applies it to its maps at once, which takes milliseconds when
/// nodes are idle; this bounds the wait on busy nodes and retransmits (with 1 s, a heavily
/// loaded test machine still saw a node send a new connection to a task already signalled).
pub const WITHDRAW_SPREAD: Duration = Duration::from_secs(2);

/// `SHOAL_INSTANT_STOP=1` in the agent's environment: stops are a withdrawal and a SIGKILL at
/// once, with no spread, drain or stop signal. Only for the zero-downtime benchmark's "before"
/// row (what the order above buys, measured on the same run); never for real use.
fn instant_stop() -> bool {
    static INSTANT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTANT.get_or_init(|| std::env::var_os("SHOAL_INSTANT_STOP").is_some_and(|v| v == "1"))
}

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
/// Shutdown. A task that joined its service is withdrawn from it first and drained (see the
/// module); one that had not is signalled now.
pub fn request_stop(entry: &mut TaskEntry, grace: Duration, network: &dyn TaskNetwork) {
    if entry.running().is_none() || entry.stopping {
        return;
    }
    entry.stopping = true;
    // Not joined: its endpoints are still pending, and must never be published now.
    let withdrawn = network.withdraw(&entry.task);
    if instant_stop() {
        if let Some((process, adopted)) = entry.running() {
            signal_group(process, adopted, Signal::SIGKILL);
        }
        return;
    }
    if withdrawn && entry.joined {
        let now = Instant::now();
        entry.drain = Some(Drain {
            spread_until: now + WITHDRAW_SPREAD,
            drain_until: now + grace.max(WITHDRAW_SPREAD),
            grace,
        });
        return;
    }
    send_stop_signal(entry, grace);
}

/// The task's stop signal now, SIGKILL after `grace`.
pub fn send_stop_signal(entry: &mut TaskEntry, grace: Duration) {
    let Some((process, adopted)) = entry.running() else {
        return;
    };
    entry.drain = None;
    // Checked by the leader when the spec was accepted; a bad one (from an older leader)
    // still stops the task.
    let signal = parse_signal(&entry.task.spec.stop_signal).unwrap_or_else(|e| {
        warn!(task = %entry.task.id, error = %Chain(&e), "stopping with SIGTERM instead");
        SIGTERM
    });
    signal_group_number(process, adopted, signal);
    entry.kill_at = Some(Instant::now() + grace);
}
