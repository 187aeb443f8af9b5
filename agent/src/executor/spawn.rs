//! Starting a task: its process in the network namespace prepared for it (interfaces already
//! configured) and new mount and UTS namespaces, in a session of its own, with the service's
//! mounts (`mounts`), env and logs.
//!
//! Everything that can be checked or allocated is done before the fork; the `pre_exec` hook
//! runs in the forked child of a multi-threaded process, where only async-signal-safe calls
//! are allowed, so it makes raw syscalls on prepared C strings and allocates nothing.

use anyhow::{Context as _, anyhow, bail};
use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{self, Read as _},
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
};

use nix::fcntl::OFlag;
use shoal_control::cluster::Task;

use super::{
    mounts::{self, PreparedMount},
    proc::ProcessIdentity,
    store::TaskDir,
};
use crate::volumes::Volumes;

/// Docker's default PATH, used when the service sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kernel's limit on a hostname (HOST_NAME_MAX).
const HOST_NAME_MAX: usize = 64;

/// The environment a task (and `exec` into it) gets. Not the agent's own: its variables
/// (RUST_LOG, SHOAL_HOST, ...) are none of the task's business, as with Docker.
pub fn task_env(task: &Task) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), hostname(&task.id).to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    env.extend(task.spec.env.iter().cloned());
    env.push(("SHOAL_TASK_ID".to_owned(), task.id.clone()));
    env.push(("SHOAL_TASK_NAME".to_owned(), task.name()));
    env.push(("SHOAL_SERVICE_NAME".to_owned(), task.spec.name.clone()));
    env
}

/// A task's hostname is its ID, as in Docker, cut to what the kernel accepts. Task IDs are
/// ASCII (checked by the store), so cutting at a byte is cutting at a character.
fn hostname(task_id: &str) -> &str {
    &task_id[..task_id.len().min(HOST_NAME_MAX)]
}

/// The program `argv0` names: itself if it has a '/', else the first executable file of that
/// name on `path`. Checked here so a typo reads as "not found" rather than as an errno.
fn find_executable(argv0: &str, path: &str) -> Option<PathBuf> {
    let is_executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if argv0.contains('/') {
        // Relative paths are relative to the task's working directory, "/".
        let p = Path::new("/").join(argv0);
        return is_executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(argv0))
        .find(|p| is_executable(p))
}

fn c_string(s: &OsStr, what: &str) -> anyhow::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| anyhow!("{what} {s:?} contains a NUL byte"))
}

/// Which step of the child's setup failed, sent to the parent over a pipe (the error itself
/// comes back through `spawn`, as an errno without context).
const STEP_SETSID: u32 = 0;
const STEP_UNSHARE: u32 = 1;
const STEP_PRIVATE: u32 = 2;
const STEP_HOSTNAME: u32 = 3;
const STEP_NETNS: u32 = 4;
/// Mount `i`: `STEP_MOUNTS + 2 * i` mounts it, `+ 1` makes a bind read-only.
const STEP_MOUNTS: u32 = 5;

fn describe_step(step: u32, mounts: &[PreparedMount]) -> String {
    match step {
        STEP_SETSID => "creating a session".to_owned(),
        STEP_UNSHARE => "creating the task's namespaces".to_owned(),
        STEP_PRIVATE => "making mount propagation private".to_owned(),
        STEP_HOSTNAME => "setting the hostname".to_owned(),
        STEP_NETNS => "entering the task's network namespace".to_owned(),
        _ => {
            let i = ((step - STEP_MOUNTS) / 2) as usize;
            match mounts.get(i) {
                Some(m) => m.describe(!(step - STEP_MOUNTS).is_multiple_of(2)),
                None => format!("setup step {step}"),
            }
        }
    }
}

/// The child's setup, between fork and exec. Returns the failed step with the errno.
///
/// # Safety
/// Must run in a freshly forked child (it changes the calling process's namespaces and
/// session). Only async-signal-safe syscalls, on memory prepared before the fork.
unsafe fn setup_child(
    netns: RawFd,
    netns_dir: &CString,
    hostname: &CString,
    mounts: &[PreparedMount],
) -> Result<(), (u32, io::Error)> {
    let fail = |step: u32| (step, io::Error::last_os_error());
    // SAFETY (all calls below): plain syscalls, valid NUL-terminated pointers that outlive the
    // calls (owned by the closure), null where the kernel accepts null.
    unsafe {
        // A session of its own: the agent's terminal and process-group signals (Ctrl-C,
        // systemd stopping the agent's group) do not reach the task, and the task's process
        // group (pgid = pid) is what stopping it signals.
        if libc::setsid() == -1 {
            return Err(fail(STEP_SETSID));
        }
        // The network namespace was made and connected before the fork, so the task's
        // interfaces exist when its program starts.
        if libc::setns(netns, libc::CLONE_NEWNET) == -1 {
            return Err(fail(STEP_NETNS));
        }
        // No CLONE_NEWPID: the task's PID stays visible to the agent, which watches it.
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) == -1 {
            return Err(fail(STEP_UNSHARE));
        }
        // Without this, the task's bind mounts would propagate back to the host (systemd
        // makes "/" shared).
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) == -1
        {
            return Err(fail(STEP_PRIVATE));
        }
        // The copies of the namespace mounts (sandboxes, other tasks) this new mount namespace
        // got would keep those namespaces alive after shoal deletes them. Best effort: there
        // is nothing to drop if the directory is not a mount point yet.
        libc::umount2(netns_dir.as_ptr(), libc::MNT_DETACH);
        let name = hostname.as_bytes();
        if libc::sethostname(name.as_ptr().cast(), name.len()) == -1 {
            return Err(fail(STEP_HOSTNAME));
        }
        for (i, m) in (0u32..).zip(mounts) {
            if let Err((remount, err)) = m.apply() {
                return Err((STEP_MOUNTS + 2 * i + u32::from(remount), err));
            }
        }
    }
    Ok(())
}

/// What [`spawn`] needs besides the task: where its namespace and files are, and what it
/// mounts.
pub struct SpawnContext<'a> {
    pub dir: &'a TaskDir,
    /// The task's network namespace, ready.
    pub netns: &'a Path,
    /// Where network namespaces are mounted: dropped from the task's mount view.
    pub netns_dir: &'a Path,
    pub resolv_conf: Option<&'a str>,
    pub volumes: &'a Volumes,
    /// The anonymous volumes named for this task, created with Docker's label.
    pub anonymous_volumes: &'a [String],
}

/// Starts the task's process. The error, with its causes, is the status error's text after
/// "starting task failed: ". Volumes the task mounts count it as a user from here on, also
/// when this fails: the caller releases them.
pub fn spawn(task: &Task, cx: &SpawnContext<'_>) -> anyhow::Result<ProcessIdentity> {
    let dir = cx.dir;
    let Some(argv0) = task.spec.command.first() else {
        bail!("the service has no command");
    };
    let env = task_env(task);
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let Some(program) = find_executable(argv0, path) else {
        bail!("executable {argv0:?} not found");
    };
    let mounts = Arc::new(mounts::prepare(
        task,
        dir,
        cx.resolv_conf,
        cx.volumes,
        cx.anonymous_volumes,
    )?);
    let child_mounts = mounts.clone();
    let hostname = c_string(OsStr::new(hostname(&task.id)), "hostname")?;
    let netns_dir = c_string(cx.netns_dir.as_os_str(), "netns directory")?;
    // CLOEXEC: used by setns() before the exec, never inherited by the task.
    let netns = File::open(cx.netns)
        .with_context(|| format!("opening the network namespace {}", cx.netns.display()))?;
    let (stdout, stderr) = dir.open_logs()?;
    let (step_read, step_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;

    let mut command = Command::new(&program);
    command
        .arg0(argv0)
        .args(&task.spec.command[1..])
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let step_fd: RawFd = step_write.as_raw_fd();
    let netns_fd: RawFd = netns.as_raw_fd();
    // SAFETY: `setup_child` makes only async-signal-safe syscalls on data prepared above (the
    // closure owns it: no allocation in the child); the failure report is a single write(2)
    // to a pipe whose write end the closure keeps open (CLOEXEC: the task does not inherit
    // it). No parent-death signal is set: the task must outlive an agent restart.
    unsafe {
        command.pre_exec(move || {
            let _keep_open = (&step_write, &netns);
            match setup_child(netns_fd, &netns_dir, &hostname, &child_mounts) {
                Ok(()) => Ok(()),
                Err((step, err)) => {
                    let bytes = step.to_ne_bytes();
                    libc::write(step_fd, bytes.as_ptr().cast(), bytes.len());
                    Err(err)
                }
            }
        });
    }
    let spawned = command.spawn();
    // Closes the parent's write end, so reading below sees EOF rather than blocking.
    drop(command);
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let mut step = [0u8; 4];
            let context = match File::from(step_read).read_exact(&mut step) {
                Ok(()) => describe_step(u32::from_ne_bytes(step), &mounts),
                // No step reported: the setup succeeded and exec itself failed.
                Err(_) => format!("executing {}", program.display()),
            };
            return Err(anyhow::Error::new(e).context(context));
        }
    };
    // The child is not reaped until the supervisor has seen it exit, so its /proc entry is
    // there even if it already exited.
    let pid = child.id();
    ProcessIdentity::of(pid).ok_or_else(|| {
        anyhow!("process {pid} vanished right after starting (reaped by someone else?)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_on_the_path_only() {
        assert_eq!(
            find_executable("sh", "/nonexistent:/bin:/usr/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(find_executable("no-such-program-x", DEFAULT_PATH), None);
        assert_eq!(
            find_executable("/bin/sh", ""),
            Some(PathBuf::from("/bin/sh"))
        );
        // A directory or a non-executable file is not a program.
        assert_eq!(find_executable("/etc", DEFAULT_PATH), None);
        assert_eq!(find_executable("/proc/self/status", DEFAULT_PATH), None);
    }

    #[test]
    fn long_task_ids_are_cut_for_the_hostname() {
        let id = "a".repeat(100);
        assert_eq!(hostname(&id).len(), HOST_NAME_MAX);
        assert_eq!(hostname("abc"), "abc");
    }
}
