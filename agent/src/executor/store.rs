//! A task's directory on disk, `<state_dir>/tasks/<task-id>/`: what the executor needs to find
//! the task again after an agent restart, and its logs.
//!
//! - `spec.json`: the [`Task`] as assigned (command, env, mounts, grace period, name).
//! - `status.json`: the last status reported, rewritten at every transition, so a restarted
//!   agent knows whether the task had finished and can report that again.
//! - `pid`: `<pid> <start time>` of the process, written right after it is spawned.
//! - `stdout.log`, `stderr.log`: the process's output, appended to.
//! - `files/`: an empty mount point (see `files.rs`): a task's secrets and configs are never
//!   written to disk.
//!
//! Files are replaced by writing a temporary file and renaming it over the old one, so an agent
//! killed mid-write leaves the old or the new content, never a torn file.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use shoal_control::cluster::{Task, TaskStatus};

use super::{ExecutorError, proc::ProcessIdentity};

const SPEC: &str = "spec.json";
const STATUS: &str = "status.json";
const PID: &str = "pid";
const STDOUT: &str = "stdout.log";
const STDERR: &str = "stderr.log";
const HEALTH_LOG: &str = "health.log";
const RESOLV_CONF: &str = "resolv.conf";
const FILES: &str = "files";

/// The task ID names a directory, so it must not be able to walk out of `tasks/`.
pub fn validate_task_id(id: &str) -> Result<(), ExecutorError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ExecutorError::InvalidTaskId(id.to_owned()))
    }
}

/// Creates `path` and its parents, private to root: logs and env may hold secrets.
pub fn create_private_dir(path: &Path) -> Result<(), ExecutorError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ExecutorError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// IDs of the task directories under `tasks_dir`, skipping anything that is not one.
pub fn list(tasks_dir: &Path) -> Result<Vec<String>, ExecutorError> {
    let read_err = |source| ExecutorError::Read {
        path: tasks_dir.to_path_buf(),
        source,
    };
    let mut ids = Vec::new();
    for entry in fs::read_dir(tasks_dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let Ok(id) = entry.file_name().into_string() else {
            continue;
        };
        if validate_task_id(&id).is_ok() && entry.path().is_dir() {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

#[derive(Clone, Debug)]
pub struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    /// The directory of task `id` (which must be valid), whether or not it exists.
    pub fn new(tasks_dir: &Path, id: &str) -> TaskDir {
        TaskDir {
            path: tasks_dir.join(id),
        }
    }

    /// Creates the directory and records the task's spec.
    pub fn create(tasks_dir: &Path, task: &Task) -> Result<TaskDir, ExecutorError> {
        validate_task_id(&task.id)?;
        let dir = TaskDir::new(tasks_dir, &task.id);
        create_private_dir(&dir.path)?;
        let bytes = serde_json::to_vec_pretty(task);
        dir.write_json(SPEC, bytes)?;
        Ok(dir)
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.path.join(STDOUT)
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.path.join(STDERR)
    }

    /// What the last health check printed (stdout and stderr together).
    pub fn health_log_path(&self) -> PathBuf {
        self.path.join(HEALTH_LOG)
    }

    pub fn read_spec(&self) -> Result<Task, ExecutorError> {
        let bytes = self.read_file(SPEC)?.ok_or_else(|| ExecutorError::Read {
            path: self.path.join(SPEC),
            source: io::ErrorKind::NotFound.into(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| self.parse_error(SPEC, &e))
    }

    pub fn read_status(&self) -> Result<Option<TaskStatus>, ExecutorError> {
        match self.read_file(STATUS)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.parse_error(STATUS, &e)),
            None => Ok(None),
        }
    }

    pub fn write_status(&self, status: &TaskStatus) -> Result<(), ExecutorError> {
        self.write_json(STATUS, serde_json::to_vec_pretty(status))
    }

    pub fn read_pid(&self) -> Result<Option<ProcessIdentity>, ExecutorError> {
        let path = self.path.join(PID);
        match fs::read_to_string(&path) {
            Ok(text) => {
                ProcessIdentity::parse(&text)
                    .map(Some)
                    .ok_or_else(|| ExecutorError::Parse {
                        path,
                        reason: format!("expected \"<pid> <start time>\", found {text:?}"),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ExecutorError::Read { path, source }),
        }
    }

    pub fn write_pid(&self, process: ProcessIdentity) -> Result<(), ExecutorError> {
        self.write_atomic(PID, process.to_line().as_bytes())
    }

    /// Writes the resolv.conf the task sees (bind-mounted over /etc/resolv.conf in its mount
    /// namespace) and returns its path. World-readable: any user in the task resolves names.
    pub fn write_resolv_conf(&self, text: &str) -> Result<PathBuf, ExecutorError> {
        self.write_atomic(RESOLV_CONF, text.as_bytes())?;
        let path = self.path.join(RESOLV_CONF);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(|source| {
            ExecutorError::Write {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }

    /// `files/`, empty: the mount point where the task's child mounts the tmpfs it writes its
    /// secrets and configs in (in its own mount namespace; nothing is written here).
    pub fn files_mount_point(&self) -> Result<PathBuf, ExecutorError> {
        let path = self.path.join(FILES);
        create_private_dir(&path)?;
        Ok(path)
    }

    /// The log files, opened for appending: a task started again after a failure to record its
    /// pid keeps its earlier output.
    pub fn open_logs(&self) -> Result<(File, File), ExecutorError> {
        let open = |path: PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| ExecutorError::Write { path, source })
        };
        Ok((open(self.stdout_path())?, open(self.stderr_path())?))
    }

    /// Deletes the directory with its logs: the task is gone from the leader's assignments.
    pub fn remove(&self) -> Result<(), ExecutorError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ExecutorError::Remove {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// A file's bytes, or `None` if it does not exist.
    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, ExecutorError> {
        let path = self.path.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ExecutorError::Read { path, source }),
        }
    }

    fn parse_error(&self, name: &str, e: &serde_json::Error) -> ExecutorError {
        ExecutorError::Parse {
            path: self.path.join(name),
            reason: e.to_string(),
        }
    }

    /// Takes the serialization result so callers need not name serde's traits.
    fn write_json(
        &self,
        name: &str,
        bytes: serde_json::Result<Vec<u8>>,
    ) -> Result<(), ExecutorError> {
        let bytes = bytes.map_err(|e| ExecutorError::Write {
            path: self.path.join(name),
            source: io::Error::other(e),
        })?;
        self.write_atomic(name, &bytes)
    }

    /// Write-then-rename. No fsync: the files must survive the agent being killed (which
    /// rename guarantees), not a power loss, after which no task is running anyway.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), ExecutorError> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(bytes)?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|source| ExecutorError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_cannot_escape_the_tasks_dir() {
        assert!(validate_task_id("x7f3k2m9q1w8e5r4t6y0u2i3o").is_ok());
        assert!(validate_task_id("web.1-a_b").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b", "é"] {
            assert!(validate_task_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
