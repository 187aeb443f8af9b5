//! Starting a task: its process in its cgroup (`cgroup`, with its limits), the network
//! namespace prepared for it (interfaces already configured) and new mount and UTS namespaces,
//! in a session of its own, with the service's mounts (`mounts`), env, logs, hostname, working
//! directory and user (`user`).
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
use shoal_control::cluster::{
    Task,
    template::{self, TemplateContext},
};

use super::{
    cgroup::Cgroups,
    files::{self, PreparedFiles},
    mounts::{self, PreparedMount},
    proc::ProcessIdentity,
    store::TaskDir,
    user::{self, ExecUser},
};
use crate::volumes::Volumes;

/// Docker's default PATH, used when the service sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kernel's limit on a hostname (HOST_NAME_MAX).
const HOST_NAME_MAX: usize = 64;

/// The environment a task (and `exec` into it) gets. Not the agent's own: its variables
/// (RUST_LOG, SHOAL_HOST, ...) are none of the task's business, as with Docker. HOME is the
/// `--user`'s home (`user`), else root's.
pub fn task_env(task: &Task, user: Option<&ExecUser>) -> Vec<(String, String)> {
    let home = user.map_or("/root", |u| u.home.as_str());
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), hostname(task).to_owned()),
        ("HOME".to_owned(), home.to_owned()),
    ];
    env.extend(task.spec.env.iter().cloned());
    env.push(("SHOAL_TASK_ID".to_owned(), task.id.clone()));
    env.push(("SHOAL_TASK_NAME".to_owned(), task.name()));
    env.push(("SHOAL_SERVICE_NAME".to_owned(), task.spec.name.clone()));
    env
}

/// A task's hostname: its `--hostname` (expanded by [`expand_hostname`] in the executor's
/// copy), else its ID, as Docker uses the container's, cut to what the kernel accepts. Task
/// IDs are ASCII (checked by the store), so cutting at a byte is cutting at a character.
fn hostname(task: &Task) -> &str {
    if !task.spec.hostname.is_empty() {
        return &task.spec.hostname;
    }
    &task.id[..task.id.len().min(HOST_NAME_MAX)]
}

/// Fills the placeholders of the task's `--hostname` in (the executor's copy of the task,
/// before its spec is saved), as swarmkit does on the task's node.
pub fn expand_hostname(task: &mut Task, node_hostname: &str) -> anyhow::Result<()> {
    if !template::has_placeholders(&task.spec.hostname) {
        return Ok(());
    }
    let cx = TemplateContext {
        service_id: task.service_id.clone(),
        service_name: task.spec.name.clone(),
        node_id: task.node_id.clone(),
        node_hostname: node_hostname.to_owned(),
        task_id: task.id.clone(),
        task_name: task.name(),
        // A global service's task has no slot: its node stands in, as in swarmkit.
        task_slot: if task.slot > 0 {
            task.slot.to_string()
        } else {
            task.node_id.clone()
        },
    };
    let expanded = template::expand(&task.spec.hostname, &cx)
        .with_context(|| format!("hostname {:?}", task.spec.hostname))?;
    if expanded.is_empty() || expanded.len() > HOST_NAME_MAX {
        bail!(
            "hostname {:?} is {:?}: a hostname has 1 to {HOST_NAME_MAX} characters",
            task.spec.hostname,
            expanded
        );
    }
    task.spec.hostname = expanded;
    Ok(())
}

/// The program `argv0` names: itself if it has a '/' (relative to `workdir`), else the first
/// executable file of that name on `path`. Checked here so a typo reads as "not found" rather
/// than as an errno.
fn find_executable(argv0: &str, path: &str, workdir: &str) -> Option<PathBuf> {
    let is_executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if argv0.contains('/') {
        // Relative paths are relative to the task's working directory.
        let p = Path::new(workdir).join(argv0);
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
const STEP_WORKDIR: u32 = 5;
const STEP_USER: u32 = 6;
/// Mount `i`: `STEP_MOUNTS + 2 * i` mounts it, `+ 1` makes a bind read-only.
const STEP_MOUNTS: u32 = 7;
/// Step `i` of putting the task's secrets and configs in place (`files`): `STEP_FILES + i`.
const STEP_FILES: u32 = 1 << 20;
const STEP_CGROUP: u32 = STEP_FILES - 1;

fn describe_step(
    step: u32,
    mounts: &[PreparedMount],
    files: &PreparedFiles,
    task: &Task,
) -> String {
    match step {
        STEP_SETSID => "creating a session".to_owned(),
        STEP_UNSHARE => "creating the task's namespaces".to_owned(),
        STEP_PRIVATE => "making mount propagation private".to_owned(),
        STEP_HOSTNAME => "setting the hostname".to_owned(),
        STEP_NETNS => "entering the task's network namespace".to_owned(),
        STEP_WORKDIR => format!("changing to the working directory {:?}", task.spec.workdir),
        STEP_USER => format!("switching to user {:?}", task.spec.user),
        STEP_CGROUP => "entering the task's cgroup".to_owned(),
        _ if step >= STEP_FILES => files.describe((step - STEP_FILES) as usize),
        _ => {
            let i = ((step - STEP_MOUNTS) / 2) as usize;
            match mounts.get(i) {
                Some(m) => m.describe(!(step - STEP_MOUNTS).is_multiple_of(2)),
                None => format!("setup step {step}"),
            }
        }
    }
}

/// `--user`, resolved before the fork: what the child's setgroups/setgid/setuid take.
struct Credentials {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl From<&ExecUser> for Credentials {
    fn from(user: &ExecUser) -> Self {
        Credentials {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
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
    files: &PreparedFiles,
    workdir: Option<&CString>,
    user: Option<&Credentials>,
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
        // Over the mounts (a secret's file wins over a volume), before the user switch.
        if let Err((i, err)) = files.apply() {
            return Err((STEP_FILES.saturating_add(i as u32), err));
        }
        // After the mounts (the directory may be in one), and as root, as runc does first.
        if let Some(dir) = workdir
            && libc::chdir(dir.as_ptr()) == -1
        {
            return Err(fail(STEP_WORKDIR));
        }
        // Last: everything above needs root. Groups, then the group, then the user.
        if let Some(user) = user
            && (libc::setgroups(user.groups.len(), user.groups.as_ptr()) == -1
                || libc::setgid(user.gid) == -1
                || libc::setuid(user.uid) == -1)
        {
            return Err(fail(STEP_USER));
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
    /// The data of the task's secrets and configs, as its assignment brought it.
    pub files: &'a shoal_control::cluster::objects::TaskFiles,
    /// The node's task cgroups, in which the task gets its own.
    pub cgroups: &'a Cgroups,
}

/// Starts the task's process. The error, with its causes, is the status error's text after
/// "starting task failed: ". Volumes the task mounts count it as a user from here on, and its
/// cgroup exists, also when this fails: the caller releases them.
pub fn spawn(task: &Task, cx: &SpawnContext<'_>) -> anyhow::Result<ProcessIdentity> {
    let dir = cx.dir;
    let Some(argv0) = task.spec.command.first() else {
        bail!("the service has no command");
    };
    let user = match task.spec.user.as_str() {
        "" => None,
        spec => Some(user::resolve_on_node(spec)?),
    };
    let env = task_env(task, user.as_ref());
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let workdir = match task.spec.workdir.as_str() {
        "" => "/",
        dir => dir,
    };
    let Some(program) = find_executable(argv0, path, workdir) else {
        bail!("executable {argv0:?} not found");
    };
    let credentials = user.as_ref().map(Credentials::from);
    let workdir = match task.spec.workdir.as_str() {
        "" => None,
        dir => Some(c_string(OsStr::new(dir), "working directory")?),
    };
    let mounts = Arc::new(mounts::prepare(
        task,
        dir,
        cx.resolv_conf,
        cx.volumes,
        cx.anonymous_volumes,
    )?);
    let child_mounts = mounts.clone();
    let prepared_files = Arc::new(files::prepare(task, dir, cx.files)?);
    let child_files = prepared_files.clone();
    let hostname = c_string(OsStr::new(hostname(task)), "hostname")?;
    let cgroup = cx.cgroups.prepare(&task.id, &task.spec.resources)?;
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
            // The cgroup first, so that everything the task does is within its limits.
            let setup = cgroup.enter().map_err(|e| (STEP_CGROUP, e)).and_then(|()| {
                setup_child(
                    netns_fd,
                    &netns_dir,
                    &hostname,
                    &child_mounts,
                    &child_files,
                    workdir.as_ref(),
                    credentials.as_ref(),
                )
            });
            match setup {
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
                Ok(()) => describe_step(u32::from_ne_bytes(step), &mounts, &prepared_files, task),
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
            find_executable("sh", "/nonexistent:/bin:/usr/bin", "/"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            find_executable("no-such-program-x", DEFAULT_PATH, "/"),
            None
        );
        assert_eq!(
            find_executable("/bin/sh", "", "/tmp"),
            Some(PathBuf::from("/bin/sh"))
        );
        // Relative to the working directory.
        assert_eq!(
            find_executable("./sh", "", "/bin"),
            Some(PathBuf::from("/bin/./sh"))
        );
        // A directory or a non-executable file is not a program.
        assert_eq!(find_executable("/etc", DEFAULT_PATH, "/"), None);
        assert_eq!(
            find_executable("/proc/self/status", DEFAULT_PATH, "/"),
            None
        );
    }

    fn task(id: &str, hostname: &str, slot: u64) -> Task {
        let json = serde_json::json!({
            "id": id, "service_id": "svc1", "slot": slot, "node_id": "node1",
            "service_version": 1, "networks": [], "desired_state": "Running",
            "status": { "state": "Assigned", "message": "", "error": "", "exit_code": null,
                        "timestamp_ms": 0 },
            "created_at_ms": 0,
            "spec": {
                "name": "web_api", "command": ["sleep"], "env": [], "mounts": [],
                "mode": { "Replicated": { "replicas": 1 } }, "constraints": [], "networks": [],
                "endpoint_mode": "Vip",
                "restart": { "condition": "Any", "delay_ms": 0, "max_attempts": 0,
                             "window_ms": 0 },
                "update": { "parallelism": 1, "delay_ms": 0, "failure_action": "Pause",
                            "monitor_ms": 0, "max_failure_ratio_milli": 0,
                            "order": "StopFirst" },
                "rollback": { "parallelism": 1, "delay_ms": 0, "failure_action": "Pause",
                              "monitor_ms": 0, "max_failure_ratio_milli": 0,
                              "order": "StopFirst" },
                "stop_grace_ms": 0, "force_update": 0, "ports": [], "hostname": hostname,
            },
        });
        serde_json::from_value(json).expect("a task as an older agent saved it")
    }

    #[test]
    fn the_hostname_is_the_task_id_cut_or_the_expanded_template() {
        let long = "a".repeat(100);
        assert_eq!(hostname(&task(&long, "", 1)).len(), HOST_NAME_MAX);
        assert_eq!(hostname(&task("abc", "", 1)), "abc");
        let mut t = task(
            "t1",
            "{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}",
            3,
        );
        expand_hostname(&mut t, "host-a").unwrap();
        assert_eq!(hostname(&t), "web_api-3.host-a");
        // Global: the node ID stands in for the slot.
        let mut t = task("t1", "{{.Task.Slot}}", 0);
        expand_hostname(&mut t, "host-a").unwrap();
        assert_eq!(t.spec.hostname, "node1");
        // Task names are long: two make more than the kernel takes.
        let id = "x".repeat(25);
        let mut t = task(&id, "{{.Task.Name}}-{{.Task.Name}}", 1);
        let err = expand_hostname(&mut t, "h").unwrap_err().to_string();
        assert!(err.contains("a hostname has 1 to 64 characters"), "{err}");
        let env = task_env(&task("t2", "plain", 1), None);
        assert!(env.contains(&("HOSTNAME".into(), "plain".into())));
        assert!(env.contains(&("HOME".into(), "/root".into())));
    }
}
