//! A task's secrets and configs (`--secret`, `--config`), as its own mount namespace gets them.
//!
//! Nothing of them is written to the node's disk. The child, after the task's mounts, mounts a
//! tmpfs of its own on the task directory's empty `files/` (a mount point only), writes every
//! file there with its owner and mode, makes that tmpfs read-only, and binds what the task sees:
//! its `secrets/` directory on `/run/secrets`, and each other file (configs; secrets with an
//! absolute target elsewhere) on its target, read-only. Last, the staging mount is detached:
//! the binds keep the tmpfs alive exactly as long as the task's mount namespace, and it goes
//! with it. The data lives in the agent's memory only until the child is forked; a re-adopted
//! task keeps its mounts, and a task started later gets the data again with its assignment.
//!
//! Tasks have no root filesystem of their own, so a file bound on a target needs an existing
//! file of the node there (as a bind mount's target does): a missing one fails the task, saying
//! so, rather than shoal creating files on the host. The one thing made outside the state dir
//! is the empty directory `/run/secrets` (on the /run tmpfs), the mount point, when the node has
//! none.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs::{self, DirBuilder},
    io,
    os::unix::{ffi::OsStrExt as _, fs::DirBuilderExt as _},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use shoal_control::cluster::{
    Task,
    objects::{FileData, FileReference, ObjectKind, SECRETS_DIR, TaskFiles},
};

use super::store::TaskDir;

/// Flags of the files' tmpfs and of its read-only binds: nothing in it runs or is a device.
const FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
/// Directories of the tmpfs: anyone may look files up; each file's own mode says who reads it.
const DIR_MODE: libc::mode_t = 0o755;
/// The tmpfs's directory of secrets, bound on `/run/secrets`.
const SECRETS: &str = "secrets";

/// One system call of the child, prepared.
enum Op {
    Mount {
        source: CString,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Mkdir(CString),
    Write {
        path: CString,
        data: FileData,
        uid: libc::uid_t,
        gid: libc::gid_t,
        mode: libc::mode_t,
    },
    Detach(CString),
}

struct Step {
    /// What the step does, for the task's error ("writing secret db"); never the data.
    what: String,
    op: Op,
}

/// The child's steps putting a task's files in place, prepared before the fork. Empty for a
/// task with neither secrets nor configs.
#[derive(Default)]
pub struct PreparedFiles {
    steps: Vec<Step>,
}

impl PreparedFiles {
    /// What step `step` (as [`PreparedFiles::apply`] reports it) was doing.
    pub fn describe(&self, step: usize) -> String {
        self.steps
            .get(step)
            .map_or_else(|| format!("file step {step}"), |s| s.what.clone())
    }

    /// Runs the steps. Err: the failed step's index, with the errno.
    ///
    /// # Safety
    /// Runs in a freshly forked child, in the task's new mount namespace with private
    /// propagation, as root: only async-signal-safe syscalls on memory prepared before the
    /// fork.
    pub unsafe fn apply(&self) -> Result<(), (usize, io::Error)> {
        for (i, step) in self.steps.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { step.op.run() }.map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

impl Op {
    /// # Safety
    /// As [`PreparedFiles::apply`].
    unsafe fn run(&self) -> io::Result<()> {
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let check = |ret: libc::c_int| {
            if ret == -1 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain syscalls on NUL-terminated strings and buffers owned by `self`, null
        // where the kernel accepts null.
        unsafe {
            match self {
                Op::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    ptr(fstype),
                    *flags,
                    ptr(data).cast(),
                )),
                Op::Mkdir(path) => {
                    check(libc::mkdir(path.as_ptr(), DIR_MODE))?;
                    // Whatever the umask.
                    check(libc::chmod(path.as_ptr(), DIR_MODE))
                }
                Op::Write {
                    path,
                    data,
                    uid,
                    gid,
                    mode,
                } => {
                    let flags = libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC;
                    let fd = libc::open(path.as_ptr(), flags, 0o600 as libc::c_uint);
                    if fd == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    // The owner first: chown clears the set-id bits a mode may ask for.
                    let result = write_all(fd, data.as_bytes())
                        .and_then(|()| check(libc::fchown(fd, *uid, *gid)))
                        .and_then(|()| check(libc::fchmod(fd, *mode)));
                    libc::close(fd);
                    result
                }
                Op::Detach(target) => check(libc::umount2(target.as_ptr(), libc::MNT_DETACH)),
            }
        }
    }
}

/// write(2) until all of `data` is written.
///
/// # Safety
/// `fd` is an open descriptor; async-signal-safe.
unsafe fn write_all(fd: libc::c_int, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is a live buffer of `data.len()` bytes.
        let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if written < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        data = &data[written.unsigned_abs()..];
    }
    Ok(())
}

fn c_string(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| anyhow!("path {} contains a NUL byte", path.display()))
}

/// One file of the task: its reference, where it goes, and its data.
struct File<'a> {
    kind: ObjectKind,
    reference: &'a FileReference,
    data: &'a FileData,
}

impl File<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.reference.name)
    }

    fn write(&self, path: &Path) -> anyhow::Result<Step> {
        Ok(Step {
            what: format!("writing {}", self.name()),
            op: Op::Write {
                path: c_string(path)?,
                data: self.data.clone(),
                uid: self.reference.uid,
                gid: self.reference.gid,
                mode: self.reference.mode,
            },
        })
    }
}

/// The task's files, checked (their data came with the assignment, bound targets exist) and
/// turned into the child's steps. Nothing is created for a task that fails these checks.
pub fn prepare(task: &Task, dir: &TaskDir, files: &TaskFiles) -> anyhow::Result<PreparedFiles> {
    let references = task
        .spec
        .secrets
        .iter()
        .map(|r| (ObjectKind::Secret, r))
        .chain(task.spec.configs.iter().map(|r| (ObjectKind::Config, r)));
    // Secrets under /run/secrets (by their path there), and files bound on targets.
    let mut in_secrets_dir: Vec<(PathBuf, File<'_>)> = Vec::new();
    let mut bound: Vec<(String, File<'_>)> = Vec::new();
    for (kind, reference) in references {
        let data = files.get(kind, &reference.id).ok_or_else(|| {
            anyhow!(
                "{} {}: its data did not come with the task's assignment",
                kind.as_str(),
                reference.name
            )
        })?;
        let file = File {
            kind,
            reference,
            data,
        };
        let path = reference.path(kind);
        match Path::new(&path).strip_prefix(SECRETS_DIR) {
            Ok(relative) if kind == ObjectKind::Secret => {
                if relative.as_os_str().is_empty()
                    || !relative
                        .components()
                        .all(|c| matches!(c, Component::Normal(_)))
                {
                    bail!("invalid {}: target {path:?}", file.name());
                }
                in_secrets_dir.push((relative.to_path_buf(), file));
            }
            _ => {
                if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    bail!(
                        "invalid {}: target {path:?} is not a file of this node (tasks see the \
                         node's files: the target must exist, as a bind mount's does)",
                        file.name()
                    );
                }
                bound.push((path, file));
            }
        }
    }
    if in_secrets_dir.is_empty() && bound.is_empty() {
        return Ok(PreparedFiles::default());
    }
    if !in_secrets_dir.is_empty() {
        ensure_secrets_mount_point()?;
    }
    let staging = dir.files_mount_point()?;
    let staging_c = c_string(&staging)?;
    let mut steps = vec![Step {
        what: "mounting the tmpfs of the task's secrets and configs".to_owned(),
        op: Op::Mount {
            source: c"tmpfs".to_owned(),
            target: staging_c.clone(),
            fstype: Some(c"tmpfs".to_owned()),
            flags: FLAGS,
            data: Some(c"mode=700".to_owned()),
        },
    }];
    let secrets_dir = staging.join(SECRETS);
    if !in_secrets_dir.is_empty() {
        let mut made = BTreeSet::new();
        let mut mkdir = |relative: &Path, steps: &mut Vec<Step>| -> anyhow::Result<()> {
            if made.insert(relative.to_path_buf()) {
                steps.push(Step {
                    what: format!(
                        "creating {}",
                        Path::new(SECRETS_DIR).join(relative).display()
                    ),
                    op: Op::Mkdir(c_string(&secrets_dir.join(relative))?),
                });
            }
            Ok(())
        };
        mkdir(Path::new(""), &mut steps)?;
        for (relative, file) in &in_secrets_dir {
            // Parents first: "a", then "a/b", for "a/b/key".
            let mut parents: Vec<&Path> = relative
                .ancestors()
                .skip(1)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            parents.reverse();
            for parent in parents {
                mkdir(parent, &mut steps)?;
            }
            steps.push(file.write(&secrets_dir.join(relative))?);
        }
    }
    for (i, (_, file)) in bound.iter().enumerate() {
        steps.push(file.write(&staging.join(i.to_string()))?);
    }
    steps.push(Step {
        what: "making the tmpfs of the task's secrets and configs read-only".to_owned(),
        op: Op::Mount {
            source: c"none".to_owned(),
            target: staging_c.clone(),
            fstype: None,
            flags: libc::MS_REMOUNT | libc::MS_RDONLY | FLAGS,
            data: None,
        },
    });
    let mut bind = |source: &Path, target: &str, what: String| -> anyhow::Result<()> {
        let target_c = c_string(Path::new(target))?;
        steps.push(Step {
            what: format!("mounting {what} on {target:?}"),
            op: Op::Mount {
                source: c_string(source)?,
                target: target_c.clone(),
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            },
        });
        steps.push(Step {
            what: format!("making {target:?} read-only"),
            op: Op::Mount {
                source: c"none".to_owned(),
                target: target_c,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | FLAGS,
                data: None,
            },
        });
        Ok(())
    };
    if !in_secrets_dir.is_empty() {
        bind(&secrets_dir, SECRETS_DIR, "the task's secrets".to_owned())?;
    }
    for (i, (target, file)) in bound.iter().enumerate() {
        bind(&staging.join(i.to_string()), target, file.name())?;
    }
    steps.push(Step {
        what: "detaching the staging mount of the task's files".to_owned(),
        op: Op::Detach(staging_c),
    });
    Ok(PreparedFiles { steps })
}

/// `/run/secrets` must exist to be mounted on: made empty (on the /run tmpfs) if missing.
fn ensure_secrets_mount_point() -> anyhow::Result<()> {
    match fs::metadata(SECRETS_DIR) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{SECRETS_DIR} on this node is not a directory: secrets cannot be mounted"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match DirBuilder::new().mode(0o755).create(SECRETS_DIR) {
                Ok(()) => Ok(()),
                // Another task's start made it meanwhile.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e).with_context(|| format!("creating the mount point {SECRETS_DIR}")),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {SECRETS_DIR}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_say_what_they_do_and_never_the_data() {
        let r = FileReference {
            id: "s1".into(),
            name: "db".into(),
            target: "app/db".into(),
            uid: 0,
            gid: 0,
            mode: 0o400,
        };
        let data = FileData::new(b"hunter2".to_vec());
        let file = File {
            kind: ObjectKind::Secret,
            reference: &r,
            data: &data,
        };
        let step = file.write(Path::new("/x/secrets/app/db")).unwrap();
        assert_eq!(step.what, "writing secret db");
        let prepared = PreparedFiles { steps: vec![step] };
        assert_eq!(prepared.describe(0), "writing secret db");
        assert_eq!(prepared.describe(7), "file step 7");
    }
}
