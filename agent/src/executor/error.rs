//! The executor's error type: every variant names what was being done and to which path or
//! task, so a failure reads as one line ("writing /var/lib/shoal/tasks/x/pid: ...").

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("removing {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },

    #[error("parsing {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },

    #[error("invalid task id {0:?}: only ASCII letters, digits, '-', '_' and '.' are allowed")]
    InvalidTaskId(String),

    #[error("task {0} is not running on this node")]
    NotRunning(String),

    #[error("exec needs a command")]
    EmptyCommand,

    #[error("opening namespace {}: {source}", path.display())]
    OpenNamespace { path: PathBuf, source: io::Error },

    #[error("starting {what}: {source}")]
    Spawn {
        what: &'static str,
        source: io::Error,
    },
}
