//! Named network namespaces (sandboxes and tasks), created the way iproute2's `ip netns add`
//! does but under a directory of the agent's own, so `ip netns` users, shoal, and several
//! agents on one host never fight over names.
//!
//! A namespace lives as long as something references it; bind-mounting
//! `/proc/thread-self/ns/net` of a thread that unshared onto a file keeps it alive after the
//! thread exits, and survives agent restarts (re-adoption just reopens the file).

use std::{
    fs::{self, OpenOptions},
    io,
    path::Path,
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::statfs::{NSFS_MAGIC, statfs},
};

use super::OverlayError;

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

/// Creates a network namespace kept alive by a bind mount at `path`, unless one is already
/// mounted there. The parent directory becomes a shared mount point of its own (see
/// `ensure_mount_point`), so a process can drop every namespace under it from its view with one
/// detaching unmount (tasks do: otherwise their private mount namespace would keep a copy of
/// every sandbox's mount, and with it the sandbox, alive after shoal removed it).
pub fn create_netns(path: &Path) -> Result<(), OverlayError> {
    let Some(dir) = path.parent().filter(|_| path.file_name().is_some()) else {
        return Err(OverlayError::Invalid(format!("netns path {path:?}")));
    };
    if is_mounted_netns(path) {
        return Ok(());
    }
    ensure_mount_point(dir)?;
    let path = path.to_path_buf();
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
    Ok(())
}

/// Unmounts and deletes the netns at `path`. Everything inside goes with the last reference.
/// Missing is success, so removal can be retried.
pub fn remove_netns(path: &Path) -> Result<(), OverlayError> {
    if !path.exists() {
        return Ok(());
    }
    // MNT_DETACH: a process still holding the namespace open must not make removal fail; the
    // namespace is freed when that reference goes.
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(io_err("unmounting network namespace", path)(e.into())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing netns file", path)(e)),
    }
}
