//! A task's mounts, as its own mount namespace gets them: its resolv.conf first (so a service's
//! own mount of /etc/resolv.conf still wins), then the service's binds, volumes and tmpfs, in
//! order. Everything is checked, volumes are created, and paths and options are made C strings
//! before the fork: the child only makes the mount syscalls ([`PreparedMount::apply`]).
//!
//! Targets must exist on the host (the task has no root filesystem of its own to create them
//! in) and stay unchanged there: mounts are private to the task's namespace.

use std::{
    ffi::{CString, OsStr},
    io,
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::statvfs::{FsFlags, statvfs};
use shoal_control::cluster::{Mount, MountKind, Task};

use super::store::TaskDir;
use crate::volumes::Volumes;

/// Where a task's resolver configuration is, in its view and the host's.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Docker's flags for a tmpfs mount.
const TMPFS_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// One mount, ready for the child.
pub struct PreparedMount {
    /// What the mount does, for the error when the kernel refuses it ("bind-mounting ...").
    what: String,
    target_text: String,
    source: CString,
    target: CString,
    /// The filesystem type (tmpfs), or `None` for a bind.
    fstype: Option<CString>,
    flags: libc::c_ulong,
    /// Filesystem options (a tmpfs's size and mode).
    data: Option<CString>,
    /// Flags of the read-only remount a read-only bind needs (a bind ignores MS_RDONLY).
    remount: Option<libc::c_ulong>,
}

impl PreparedMount {
    /// What the step failed at: mounting, or (`remount`) making the mount read-only.
    pub fn describe(&self, remount: bool) -> String {
        if remount {
            format!("making {:?} read-only", self.target_text)
        } else {
            self.what.clone()
        }
    }

    /// Mounts it. Err(false): the mount failed; Err(true): the read-only remount did.
    ///
    /// # Safety
    /// Runs in a freshly forked child, in the task's new mount namespace: only
    /// async-signal-safe syscalls on memory prepared before the fork.
    pub unsafe fn apply(&self) -> Result<(), (bool, io::Error)> {
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // SAFETY: plain syscalls on NUL-terminated strings owned by `self`, null where the
        // kernel accepts null.
        unsafe {
            if libc::mount(
                self.source.as_ptr(),
                self.target.as_ptr(),
                ptr(&self.fstype),
                self.flags,
                ptr(&self.data).cast(),
            ) == -1
            {
                return Err((false, io::Error::last_os_error()));
            }
            if let Some(flags) = self.remount
                && libc::mount(
                    std::ptr::null(),
                    self.target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) == -1
            {
                return Err((true, io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// The task's mounts, ready for the child. Volumes are acquired for the task (created on
/// first use) only once every target and bind source has been found, so a task refused for a
/// missing path creates no volume; the caller releases them if the task then fails to start.
/// Anonymous volumes must have been named ([`name_anonymous_volumes`]): `anonymous` are the
/// names given, created with Docker's anonymous label.
pub fn prepare(
    task: &Task,
    dir: &TaskDir,
    resolv_conf: Option<&str>,
    volumes: &Volumes,
    anonymous: &[String],
) -> anyhow::Result<Vec<PreparedMount>> {
    for m in &task.spec.mounts {
        check_path("target", &m.target)?;
        if m.kind == MountKind::Bind {
            check_path("source", &m.source)?;
        }
    }
    let mut prepared = Vec::with_capacity(task.spec.mounts.len() + 1);
    if let Some(text) = resolv_conf
        && Path::new(RESOLV_CONF).exists()
    {
        let source = dir.write_resolv_conf(text)?;
        prepared.push(bind(&source, RESOLV_CONF, false)?);
    }
    for m in &task.spec.mounts {
        prepared.push(match m.kind {
            MountKind::Bind => bind(Path::new(&m.source), &m.target, m.readonly)?,
            MountKind::Volume => {
                if m.source.is_empty() {
                    bail!(
                        "invalid mount: the anonymous volume on {:?} has no name",
                        m.target
                    );
                }
                let data = volumes
                    .acquire(&m.source, &task.id, anonymous.contains(&m.source))
                    .with_context(|| format!("volume {}", m.source))?;
                let mut mount = bind(&data, &m.target, m.readonly)?;
                mount.what = format!("mounting volume {} on {:?}", m.source, m.target);
                mount
            }
            MountKind::Tmpfs => tmpfs(m)?,
        });
    }
    Ok(prepared)
}

/// Gives each anonymous volume of the task (a volume mount with no source) a fresh name, as
/// Docker does per container, before the task's spec is saved: the name then stays with the
/// task (across agent restarts) and the volume goes with it. Returns the names given.
pub fn name_anonymous_volumes(task: &mut Task) -> Vec<String> {
    let mut named = Vec::new();
    for m in &mut task.spec.mounts {
        if m.kind == MountKind::Volume && m.source.is_empty() {
            m.source = Volumes::generate_name();
            named.push(m.source.clone());
        }
    }
    named
}

/// The volumes the task mounts, by name.
pub fn volume_names(task: &Task) -> impl Iterator<Item = &str> {
    task.spec
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume && !m.source.is_empty())
        .map(|m| m.source.as_str())
}

fn check_path(what: &str, path: &str) -> anyhow::Result<()> {
    if !Path::new(path).is_absolute() {
        bail!("invalid mount: {what} {path:?} is not absolute");
    }
    if !Path::new(path).exists() {
        bail!("invalid mount: {what} {path:?} does not exist");
    }
    Ok(())
}

fn c_string(s: &OsStr, what: &str) -> anyhow::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| anyhow!("{what} {s:?} contains a NUL byte"))
}

fn bind(source: &Path, target: &str, readonly: bool) -> anyhow::Result<PreparedMount> {
    let remount = if readonly {
        // A read-only remount must keep the flags the source's mount has (nosuid, nodev,
        // ...): the kernel refuses to clear locked ones, and clearing them would loosen the
        // host's policy anyway.
        let source_flags = statvfs(source)
            .with_context(|| format!("invalid mount: source {source:?}"))?
            .flags();
        Some(remount_flags(source_flags))
    } else {
        None
    };
    Ok(PreparedMount {
        what: format!("bind-mounting {source:?} on {target:?}"),
        target_text: target.to_owned(),
        source: c_string(source.as_os_str(), "mount source")?,
        target: c_string(OsStr::new(target), "mount target")?,
        fstype: None,
        // Recursive, as Docker's bind mounts: mounts below the source come along.
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
        remount,
    })
}

fn tmpfs(m: &Mount) -> anyhow::Result<PreparedMount> {
    let mut data = format!("mode={:o}", m.tmpfs.effective_mode());
    if m.tmpfs.size_bytes > 0 {
        data.push_str(&format!(",size={}", m.tmpfs.size_bytes));
    }
    let mut flags = TMPFS_FLAGS;
    if m.readonly {
        flags |= libc::MS_RDONLY;
    }
    Ok(PreparedMount {
        what: format!("mounting a tmpfs on {:?}", m.target),
        target_text: m.target.clone(),
        source: c_string(OsStr::new("tmpfs"), "mount source")?,
        target: c_string(OsStr::new(&m.target), "mount target")?,
        fstype: Some(c_string(OsStr::new("tmpfs"), "filesystem type")?),
        flags,
        data: Some(c_string(OsStr::new(&data), "tmpfs options")?),
        remount: None,
    })
}

pub(super) fn remount_flags(source: FsFlags) -> libc::c_ulong {
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    for (st, ms) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if source.contains(st) {
            flags |= ms;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readonly_remount_keeps_the_source_flags() {
        let flags = remount_flags(FsFlags::ST_NOSUID | FsFlags::ST_NODEV);
        assert_eq!(
            flags,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV
        );
    }

    #[test]
    fn tmpfs_options_are_dockers() {
        let mut m = Mount {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/scratch".into(),
            readonly: false,
            tmpfs: Default::default(),
        };
        let p = tmpfs(&m).unwrap();
        assert_eq!(p.data.as_deref(), Some(c"mode=1777"));
        assert_eq!(p.flags, TMPFS_FLAGS);
        m.tmpfs.size_bytes = 64 << 20;
        m.tmpfs.mode = 0o700;
        m.readonly = true;
        let p = tmpfs(&m).unwrap();
        assert_eq!(p.data.as_deref(), Some(c"mode=700,size=67108864"));
        assert_eq!(p.flags, TMPFS_FLAGS | libc::MS_RDONLY);
        assert_eq!(p.describe(false), "mounting a tmpfs on \"/scratch\"");
    }
}
