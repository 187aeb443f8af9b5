//! Named network namespaces for sandboxes, created the way iproute2's `ip netns add` does but
//! under our own directory so `ip netns` users and shoal never fight over names.
//!
//! A namespace lives as long as something references it; bind-mounting
//! `/proc/thread-self/ns/net` of a thread that unshared onto a file keeps it alive after the
//! thread exits, and survives agent restarts (re-adoption just reopens the file).

use std::{
    fs::{self, OpenOptions},
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::statfs::{NSFS_MAGIC, statfs},
};

use super::OverlayError;

/// Where sandbox namespaces are mounted.
pub const SANDBOX_NETNS_DIR: &str = "/run/shoal/netns";

pub(crate) fn path_for(name: &str) -> PathBuf {
    Path::new(SANDBOX_NETNS_DIR).join(name)
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OverlayError {
    let path = path.to_path_buf();
    move |source| OverlayError::Netns { what, path, source }
}

/// True when `path` is a mounted network namespace (nsfs) (not merely a leftover empty file).
fn is_mounted_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Makes the directory its own shared mount point, as iproute2 does for `/run/netns`: the
/// namespace bind mounts then propagate to mount namespaces created later (and back), and
/// unmounting them is not blocked by, or leaked into, unrelated peer groups of `/run`.
fn ensure_mount_point(dir: &Path) -> Result<(), OverlayError> {
    fs::create_dir_all(dir).map_err(io_err("creating netns directory", dir))?;
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet; bind it onto itself and try again.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| io_err("bind-mounting netns directory", dir)(e.into()))?;
            make_shared().map_err(|e| io_err("making netns directory shared", dir)(e.into()))
        }
        Err(e) => Err(io_err("making netns directory shared", dir)(e.into())),
    }
}

/// Returns the path of the named netns, creating the namespace if it does not exist yet.
pub(crate) fn ensure_named(name: &str) -> Result<PathBuf, OverlayError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(OverlayError::Invalid(format!("netns name {name:?}")));
    }
    let path = path_for(name);
    if is_mounted_netns(&path) {
        return Ok(path);
    }
    ensure_mount_point(Path::new(SANDBOX_NETNS_DIR))?;
    // The mount target must exist; a leftover file from a crash is reused.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("creating netns file", &path))?;
    // unshare() moves only this thread, which exits right after: the process keeps its netns.
    let target = path.clone();
    let created = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("netns creation thread panicked")));
    if let Err(source) = created {
        let _ = fs::remove_file(&path);
        return Err(OverlayError::Netns {
            what: "creating network namespace",
            path,
            source,
        });
    }
    Ok(path)
}

/// Unmounts and deletes the named netns. Everything inside goes with the last reference.
/// Missing is success, so removal can be retried.
pub(crate) fn remove_named(name: &str) -> Result<(), OverlayError> {
    let path = path_for(name);
    if !path.exists() {
        return Ok(());
    }
    // MNT_DETACH: a process still holding the namespace open must not make removal fail; the
    // namespace is freed when that reference goes.
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(io_err("unmounting network namespace", &path)(e.into())),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing netns file", &path)(e)),
    }
}
