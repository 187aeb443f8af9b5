//! `shoal exec`: a command that runs inside a running task's cgroup and namespaces, with the
//! task's env, working directory and user (as `docker exec` without `-u`/`-w`).
//!
//! The namespace files are opened in the agent (before the fork) and entered with setns(2) in
//! the child; setns into a mount namespace needs a single-threaded process, which the forked
//! child is.

use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use shoal_control::cluster::Task;

use super::{
    ExecutorError,
    cgroup::Cgroups,
    proc::{Liveness, ProcessIdentity},
    spawn::task_env,
    state::Inner,
    user::{ExecUser, resolve_on_node},
};

/// The namespaces a task has of its own, in the order they are entered. Mount last: entering
/// it changes the root and cwd, which the others do not care about.
const NAMESPACES: [(&str, libc::c_int); 3] = [
    ("net", libc::CLONE_NEWNET),
    ("uts", libc::CLONE_NEWUTS),
    ("mnt", libc::CLONE_NEWNS),
];

pub fn exec_command(
    inner: &Inner,
    task_id: &str,
    argv: &[String],
) -> Result<Command, ExecutorError> {
    let (process, task) = {
        let state = inner.lock();
        let entry = state.tasks.get(task_id);
        match entry.and_then(|e| e.running().map(|(p, _)| (p, e.task.clone()))) {
            Some(found) => found,
            None => return Err(ExecutorError::NotRunning(task_id.to_owned())),
        }
    };
    command_in_task(process, &task, argv, &inner.cgroups)
}

/// `argv` as a command that runs in the cgroup and namespaces of `task` (running as
/// `process`), with its environment, working directory and user: `shoal exec`, and health
/// checks.
pub fn command_in_task(
    process: ProcessIdentity,
    task: &Task,
    argv: &[String],
    cgroups: &Cgroups,
) -> Result<Command, ExecutorError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ExecutorError::EmptyCommand);
    };
    let user: Option<ExecUser> = match task.spec.user.as_str() {
        "" => None,
        spec => Some(resolve_on_node(spec).map_err(ExecutorError::User)?),
    };
    let env = task_env(task, user.as_ref());
    let workdir = match task.spec.workdir.as_str() {
        "" => None,
        dir => CString::new(dir).ok(),
    };
    let namespaces = open_namespaces(process, &task.id)?;
    let cgroup = cgroups.join(&task.id);

    let mut command = Command::new(program);
    command.args(args).env_clear().envs(env).current_dir("/");
    // SAFETY: write(2) (joining the cgroup), setns(2), chdir(2), setgroups(2), setgid(2) and
    // setuid(2) are plain syscalls on descriptors and memory the closure owns (opened or built
    // before the fork; the descriptors CLOEXEC so the command does not inherit them); nothing
    // is allocated.
    unsafe {
        command.pre_exec(move || {
            let last_error = || Err(std::io::Error::last_os_error());
            cgroup.enter()?;
            for (file, nstype) in &namespaces {
                if libc::setns(file.as_raw_fd(), *nstype) == -1 {
                    return last_error();
                }
            }
            // In the task's mount namespace now: its view of the directory.
            if let Some(dir) = &workdir
                && libc::chdir(dir.as_ptr()) == -1
            {
                return last_error();
            }
            if let Some(user) = &user
                && (libc::setgroups(user.groups.len(), user.groups.as_ptr()) == -1
                    || libc::setgid(user.gid) == -1
                    || libc::setuid(user.uid) == -1)
            {
                return last_error();
            }
            Ok(())
        });
    }
    Ok(command)
}

fn open_namespaces(
    process: ProcessIdentity,
    task_id: &str,
) -> Result<Vec<(File, libc::c_int)>, ExecutorError> {
    let mut files = Vec::with_capacity(NAMESPACES.len());
    for (name, nstype) in NAMESPACES {
        let path = PathBuf::from(format!("/proc/{}/ns/{name}", process.pid));
        let file = File::open(&path).map_err(|source| ExecutorError::OpenNamespace {
            path: path.clone(),
            source,
        })?;
        files.push((file, nstype));
    }
    // Checked after opening: the files then certainly belong to the task, not to a process
    // that got its PID after it exited.
    if process.liveness() != Liveness::Alive {
        return Err(ExecutorError::NotRunning(task_id.to_owned()));
    }
    Ok(files)
}
