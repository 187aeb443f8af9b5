//! Binding the agent's unix sockets (its API's and the Engine API's): born with their mode, a
//! stale socket from a killed agent replaced, a live one refused.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, bail};
use nix::sys::stat::{Mode, umask};
use tokio::net::UnixListener;

/// Binds `path` with permissions `mode` (e.g. 0o600). A socket file left by an agent that died
/// is replaced; one that still answers is refused.
pub fn bind_with_mode(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another agent is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    // Born with its mode: a chmod after bind would leave a moment in which anyone may
    // connect. The umask is the process's, so it is put back at once (the agent binds before
    // it starts writing other files).
    let previous = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
    let created = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if created != mode {
        bail!(
            "{} was created with mode {created:o}, not {mode:o}",
            path.display()
        );
    }
    Ok(listener)
}
