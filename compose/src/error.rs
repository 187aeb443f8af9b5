//! Errors: [`ComposeError`] for callers, one line each naming the file (and the line and key
//! where known); [`Fault`] inside the crate, which knows the key path but not yet the file.

use std::{fmt, io, path::PathBuf};

use crate::keypath::KeyPath;

/// Why a stack's Compose files could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    #[error("no compose file given")]
    NoFiles,
    /// A Compose file itself could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not YAML, or not one document; the cause says where.
    #[error("{}: invalid YAML", file.display())]
    Yaml {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        #[source]
        source: yaml_serde::Error,
    },
    /// Valid YAML, but not a valid Compose file: `key` is the path to the offending value
    /// (`services.api.deploy.replicas`).
    #[error("{}{}: {key}: {message}", file.display(), LineCol(*line, *column))]
    Invalid {
        file: PathBuf,
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A file the Compose file names (`env_file`, `.env`) could not be read.
    #[error("{}: {key}: cannot read {}", file.display(), path.display())]
    ReadReferenced {
        file: PathBuf,
        key: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An env file (`env_file`, `.env`) has a malformed line.
    #[error("{}:{line}: {message}", path.display())]
    EnvFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// `:LINE:COLUMN` when known.
struct LineCol(Option<usize>, Option<usize>);

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}

/// An error found while reading one file, before it is tied to that file.
#[derive(Debug)]
pub(crate) enum Fault {
    Invalid {
        path: KeyPath,
        message: String,
    },
    ReadReferenced {
        path: KeyPath,
        target: PathBuf,
        source: io::Error,
    },
    /// Already complete (env files carry their own name).
    Done(Box<ComposeError>),
}

pub(crate) type Res<T> = Result<T, Fault>;

/// A validation error at `path`.
pub(crate) fn invalid(path: &KeyPath, message: impl Into<String>) -> Fault {
    Fault::Invalid {
        path: path.clone(),
        message: message.into(),
    }
}

impl Fault {
    /// Ties the fault to `file`, whose text `source` is searched for the key's line.
    pub(crate) fn in_file(self, file: &std::path::Path, source: Option<&str>) -> ComposeError {
        match self {
            Fault::Invalid { path, message } => {
                let at = source.and_then(|text| crate::locate::locate(text, &path));
                ComposeError::Invalid {
                    file: file.to_path_buf(),
                    key: path.to_string(),
                    line: at.map(|(line, _)| line),
                    column: at.map(|(_, column)| column),
                    message,
                }
            }
            Fault::ReadReferenced {
                path,
                target,
                source,
            } => ComposeError::ReadReferenced {
                file: file.to_path_buf(),
                key: path.to_string(),
                path: target,
                source,
            },
            Fault::Done(error) => *error,
        }
    }
}

impl From<ComposeError> for Fault {
    fn from(error: ComposeError) -> Self {
        Fault::Done(Box::new(error))
    }
}
