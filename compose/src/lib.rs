//! Reads the Compose files of `shoal stack deploy -c FILE [-c FILE]... STACK` into one
//! validated, normalized [`Stack`], with Docker's semantics: Docker's own reader
//! (`docker stack config`, docker/cli `cli/compose`) is the reference, and a differential test
//! runs both on the same files. Where shoal differs on purpose, the module that does it says so.
//!
//! ```no_run
//! # fn main() -> Result<(), shoal_compose::ComposeError> {
//! let env: std::collections::HashMap<String, String> = std::env::vars().collect();
//! let loaded = shoal_compose::load(&["web-stack.yml".into()], &env)?;
//! for warning in &loaded.warnings {
//!     eprintln!("{warning}\n");
//! }
//! for (name, service) in &loaded.stack.services {
//!     println!("{name}: {:?}", service.program());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Variables
//! Interpolation takes the caller's environment, then the `.env` file beside the first file
//! for names the environment lacks (as `docker compose` does). `docker stack` reads no
//! `.env`: shoal does, on purpose, because stacks written for Compose rely on it. `.env` has
//! the `env_file` format (`KEY=VALUE` lines, `#` comments), except that one pair of quotes
//! around a value is removed (`TAG="1.2"` is `1.2`), as Compose does.
//!
//! # Layout
//! - [`model`]: the normalized model ([`Stack`], [`Service`], ...).
//! - `loader`: one file from text to model; `context`: what reading a file shares.
//! - `interpolate`: `${VAR}` and friends, and the casts Docker applies after them.
//! - `service`, `deploy`, `ports`, `volumes`, `filerefs`, `toplevel`: the typed sections.
//! - `node`: typed access to YAML values; `keypath`: where a value sits; `locate`: its line.
//! - `unsupported`: keys shoal ignores (warnings) or refuses (Docker's forbidden keys).
//! - `merge`: how later files override earlier ones; `validate`: checks across files.
//! - `duration`, `size`, `shellwords`, `envfile`, `paths`: Docker's small formats.
//! - [`docker_shape`]: the model rendered as `docker stack config` prints it.
//! - `error`: [`ComposeError`], one line naming the file, line and key.

#![forbid(unsafe_code)]

mod context;
mod deploy;
pub mod docker_shape;
pub mod duration;
mod envfile;
mod error;
mod filerefs;
pub mod interpolate;
mod keypath;
mod loader;
mod locate;
mod merge;
pub mod model;
mod node;
mod paths;
mod ports;
mod service;
pub mod shellwords;
pub mod size;
mod toplevel;
pub mod unsupported;
mod validate;
mod volumes;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

pub use error::ComposeError;
pub use loader::DEFAULT_VERSION;
pub use model::*;

/// A stack's files, loaded.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub stack: Stack,
    /// What the user should know but does not stop the deploy, each ready to print (Docker
    /// prints each followed by a blank line): ignored keys in Docker's words first.
    pub warnings: Vec<String>,
}

impl Stack {
    /// The stack as `docker stack config` prints it (see [`docker_shape`]).
    pub fn to_docker_value(&self) -> yaml_serde::Value {
        docker_shape::to_docker_value(self)
    }
}

/// Loads `files` in order, later ones overriding earlier ones, with variables from `env` (the
/// process environment, normally) and the `.env` beside the first file.
pub fn load(files: &[PathBuf], env: &HashMap<String, String>) -> Result<Loaded, ComposeError> {
    let first = files.first().ok_or(ComposeError::NoFiles)?;
    let working_dir = std::path::absolute(first)
        .map_err(|source| ComposeError::Read {
            path: first.clone(),
            source,
        })?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let dotenv = read_dotenv(first, &working_dir, env)?;
    let lookup = |name: &str| env.get(name).or_else(|| dotenv.get(name)).cloned();
    let mut ctx = context::FileCtx {
        working_dir: &working_dir,
        lookup: &lookup,
        notes: context::Notes::default(),
    };
    let mut sources: Vec<loader::Source> = Vec::new();
    let mut stack: Option<Stack> = None;
    let mut warnings = Vec::new();
    for file in files {
        let (source, file_stack) = loader::load_file(file, &mut ctx)?;
        warnings.extend(
            ctx.notes
                .warnings
                .drain(..)
                .map(|w| format!("{}: {w}", file.display())),
        );
        check_version(&sources, &source)?;
        sources.push(source);
        match &mut stack {
            None => stack = Some(file_stack),
            Some(stack) => merge::merge(stack, file_stack),
        }
    }
    let mut stack = stack.ok_or(ComposeError::NoFiles)?;
    if let Some(version) = sources.iter().find_map(|s| s.version.clone()) {
        stack.version = version;
    }
    if let Err(fault) = validate::validate(&stack) {
        return Err(attribute(fault, &sources));
    }
    let mut all = Vec::new();
    all.extend(unsupported::unsupported_warning(&ctx.notes.unsupported));
    all.extend(unsupported::deprecated_warning(&ctx.notes.deprecated));
    all.extend(warnings);
    Ok(Loaded {
        stack,
        warnings: all,
    })
}

/// Files that give a `version` must give the same one (Docker also counts a file without
/// one as 3.13; shoal lets such a file go with any).
fn check_version(earlier: &[loader::Source], source: &loader::Source) -> Result<(), ComposeError> {
    let Some(version) = &source.version else {
        return Ok(());
    };
    match earlier
        .iter()
        .find(|s| s.version.as_ref().is_some_and(|v| v != version))
    {
        Some(other) => Err(error::invalid(
            &keypath::KeyPath::root().key("version"),
            format!(
                "version {version} does not match version {} of {}",
                other.version.as_deref().unwrap_or_default(),
                other.path.display()
            ),
        )
        .in_file(&source.path, Some(&source.text))),
        None => Ok(()),
    }
}

/// Ties an error found after the merge to the last file that has the key (else the first).
fn attribute(fault: error::Fault, sources: &[loader::Source]) -> ComposeError {
    let key = match &fault {
        error::Fault::Invalid { path, .. } => Some(path.clone()),
        _ => None,
    };
    let source = key
        .and_then(|key| {
            sources
                .iter()
                .rev()
                .find(|s| locate::locate(&s.text, &key).is_some())
        })
        .or(sources.first());
    match source {
        Some(source) => fault.in_file(&source.path, Some(&source.text)),
        None => fault.in_file(Path::new("-"), None),
    }
}

/// The variables of `.env` in `dir`, if there is one; see the crate doc for its format.
fn read_dotenv(
    first: &Path,
    dir: &Path,
    env: &HashMap<String, String>,
) -> Result<HashMap<String, String>, ComposeError> {
    let path = dir.join(".env");
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let lookup = |name: &str| env.get(name).cloned();
    let vars = envfile::read(&path, &lookup).map_err(|error| match error {
        envfile::EnvFileError::Read(source) => ComposeError::ReadReferenced {
            file: first.to_path_buf(),
            key: ".env".into(),
            path: path.clone(),
            source,
        },
        envfile::EnvFileError::Parse(error) => error,
    })?;
    Ok(vars
        .into_iter()
        .map(|(key, value)| (key, envfile::unquote(&value).to_string()))
        .collect())
}
