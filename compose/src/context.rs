//! What reading one file needs besides the file: where relative paths start, where variables
//! come from, and where warnings go.

use std::path::Path;

use crate::interpolate::Lookup;

/// Shared by everything that reads one file.
pub(crate) struct FileCtx<'a> {
    /// The first file's directory (Docker resolves every file's relative paths against it).
    pub working_dir: &'a Path,
    /// The variables: the caller's environment, then `.env`.
    pub lookup: Lookup<'a>,
    pub notes: Notes,
}

/// Warnings gathered while reading.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Complete lines (an ignored host IP, ...).
    pub warnings: Vec<String>,
    /// Ignored keys, for one "Ignoring unsupported options" line.
    pub unsupported: Vec<String>,
    /// Deprecated keys, for Docker's "Ignoring deprecated options" paragraph.
    pub deprecated: Vec<String>,
}
