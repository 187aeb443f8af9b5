//! Running code inside another network namespace.
//!
//! `setns()` moves only the calling thread, so it must never run on a tokio worker or any
//! thread that is reused afterwards. [`run_in`] gives the closure a fresh thread that enters
//! the namespace, runs, and exits; sockets and links it creates keep that namespace.

use std::{fs::File, path::Path};

use nix::sched::{CloneFlags, setns};

use crate::error::Error;

/// Runs `f` on a new thread inside the network namespace at `netns` (for example
/// `/run/netns/NAME` or `/proc/PID/ns/net`) and returns what it returned.
pub fn run_in<T, F>(netns: &Path, f: F) -> Result<T, Error>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let enter_error = |source| Error::EnterNetns {
        path: netns.to_path_buf(),
        source,
    };
    let ns = File::open(netns).map_err(enter_error)?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| enter_error(e.into()))?;
            Ok(f())
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
