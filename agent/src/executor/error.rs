//! The executor's error type: every variant names what was being done and to which path or
//! task; the cause is its `#[source]`, so a failure shown with its chain reads as one line
//! ("writing /var/lib/shoal/tasks/x/pid: No space left on device").

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("parsing {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },

    #[error("invalid task id {0:?}: only ASCII letters, digits, '-', '_' and '.' are allowed")]
    InvalidTaskId(String),

    #[error("task {0} is not running on this node")]
    NotRunning(String),

    #[error("exec needs a command")]
    EmptyCommand,

    #[error("the task's user")]
    User(#[source] super::user::UserError),

    #[error("opening namespace {}", path.display())]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("starting {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}
