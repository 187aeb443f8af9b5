//! `shoal exec`: a command that runs inside a running task's namespaces, with the task's env.
//!
//! The namespace files are opened in the agent (before the fork) and entered with setns(2) in
//! the child; setns into a mount namespace needs a single-threaded process, which the forked
//! child is.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use super::{
    ExecutorError,
    proc::{Liveness, ProcessIdentity},
    spawn::task_env,
    state::Inner,
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
    let Some((program, args)) = argv.split_first() else {
        return Err(ExecutorError::EmptyCommand);
    };
    let (process, env) = {
        let state = inner.lock();
        let entry = state.tasks.get(task_id);
        match entry.and_then(|e| e.running().map(|(p, _)| (p, task_env(&e.task)))) {
            Some(found) => found,
            None => return Err(ExecutorError::NotRunning(task_id.to_owned())),
        }
    };
    let namespaces = open_namespaces(process, task_id)?;

    let mut command = Command::new(program);
    command.args(args).env_clear().envs(env).current_dir("/");
    // SAFETY: setns(2) is a plain syscall on descriptors the closure owns (opened before the
    // fork, CLOEXEC so the command does not inherit them); nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            for (file, nstype) in &namespaces {
                if libc::setns(file.as_raw_fd(), *nstype) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
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
