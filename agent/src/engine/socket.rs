//! The Engine API's unix socket: `docker.sock` beside the agent's API socket unless
//! `--engine-socket` says otherwise, born with mode 0660 (as dockerd's) and, when a `docker`
//! group exists, owned by it, so that its members can use the docker CLI as with dockerd.
//! A stale socket from a killed agent is replaced; a live one is refused.

use std::path::{Path, PathBuf};

use nix::unistd::{Group, chown};
use tokio::net::UnixListener;
use tracing::{info, warn};

/// Where the Engine API listens when `--engine-socket` is not given.
pub fn default_path(api_socket: &Path) -> PathBuf {
    api_socket.with_file_name("docker.sock")
}

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let listener = crate::unix_socket::bind_with_mode(path, 0o660)?;
    match Group::from_name("docker") {
        Ok(Some(group)) => match chown(path, None, Some(group.gid)) {
            Ok(()) => info!(socket = %path.display(), "Engine API socket group: docker"),
            Err(e) => {
                warn!(socket = %path.display(), error = %e, "cannot give the Engine API socket to group docker")
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "looking up group docker"),
    }
    Ok(listener)
}

pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(socket = %path.display(), error = %e, "removing the Engine API socket");
    }
}
