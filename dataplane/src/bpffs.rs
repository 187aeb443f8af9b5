//! bpffs: making sure it is mounted, and where each node's pins live.
//!
//! Layout: `<root>/shoal/<node-id>/<MAP_NAME>`, one directory per node so that several agents
//! on one machine (the netns test cluster) never share maps.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::error::Error;

/// Where bpffs is conventionally mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf";

/// Mounts bpffs at `root` unless it is mounted there already.
pub fn ensure_mounted(root: &Path) -> Result<(), Error> {
    if statfs(root).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| Error::MountBpffs {
        path: root.to_path_buf(),
        source,
    })
}

/// The directory holding one node's pinned maps.
pub fn node_pin_dir(root: &Path, node_id: &str) -> PathBuf {
    root.join("shoal").join(node_id)
}

/// Removes a node's pins (for `swarm leave` and test teardown). Missing is fine.
pub fn remove_node_pins(root: &Path, node_id: &str) -> Result<(), Error> {
    let dir = node_pin_dir(root, node_id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: "removing pins",
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}
