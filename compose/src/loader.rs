//! One file from text to model: read, parse as YAML (with `<<` merge keys), check the
//! version and Docker's forbidden keys, interpolate, then type every section.

use std::path::{Path, PathBuf};

use yaml_serde::Value;

use crate::{
    context::FileCtx,
    error::{ComposeError, Res, invalid},
    keypath::KeyPath,
    model::Stack,
    node::{Node, go_number},
};

/// Docker's latest 3.x: the version of a file that gives none, or just `3`.
pub const DEFAULT_VERSION: &str = "3.13";

/// A file as read, kept for locating errors found after the merge.
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
    /// The `version` the file gives, normalized; `None` when it gives none.
    pub version: Option<String>,
}

/// Reads and types one file.
pub(crate) fn load_file(path: &Path, ctx: &mut FileCtx) -> Result<(Source, Stack), ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ComposeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let yaml_error = |source: yaml_serde::Error| ComposeError::Yaml {
        file: path.to_path_buf(),
        line: source.location().map(|l| l.line()),
        column: source.location().map(|l| l.column()),
        source,
    };
    let mut root: Value = yaml_serde::from_str(&text).map_err(yaml_error)?;
    root.apply_merge().map_err(yaml_error)?;
    let mut source = Source {
        path: path.to_path_buf(),
        text,
        version: None,
    };
    match read(&mut root, ctx) {
        Ok((version, stack)) => {
            source.version = version;
            Ok((source, stack))
        }
        Err(fault) => Err(fault.in_file(path, Some(&source.text))),
    }
}

/// Types an interpolated document; returns the version it gives and its model.
fn read(root: &mut Value, ctx: &mut FileCtx) -> Res<(Option<String>, Stack)> {
    let top = KeyPath::root();
    if !root.is_mapping() {
        return Err(Node::new(root, &top).wrong_type("a mapping"));
    }
    let version = match root.get("version") {
        None => None,
        Some(value) => Some(version(value)?),
    };
    crate::unsupported::check_forbidden(root)?;
    crate::interpolate::interpolate(root, &top, ctx.lookup)?;
    let fields = Node::new(root, &top).fields(
        &[
            "version", "services", "networks", "volumes", "secrets", "configs",
        ],
        true,
    )?;
    let mut stack = Stack {
        version: version.clone().unwrap_or_else(|| DEFAULT_VERSION.into()),
        ..Stack::default()
    };
    if let Some((value, path)) = fields.get("version") {
        Node::new(value, path).str()?;
    }
    if let Some((value, path)) = fields.get("services") {
        for (name, value, path) in Node::new(value, path).entries()? {
            crate::service::check_name(&name, &path)?;
            let service = crate::service::parse(&name, Node::new(value, &path), ctx)?;
            stack.services.insert(name, service);
        }
    }
    if let Some((value, path)) = fields.get("networks") {
        stack.networks = crate::toplevel::networks(Node::new(value, path))?;
    }
    if let Some((value, path)) = fields.get("volumes") {
        stack.volumes = crate::toplevel::volumes(Node::new(value, path))?;
    }
    if let Some((value, path)) = fields.get("secrets") {
        stack.secrets = crate::toplevel::file_objects(Node::new(value, path), "secret", ctx)?;
    }
    if let Some((value, path)) = fields.get("configs") {
        stack.configs = crate::toplevel::file_objects(Node::new(value, path), "config", ctx)?;
    }
    Ok((version, stack))
}

/// The `version` key, normalized as Docker does (`3` and empty mean 3.13; a YAML number is
/// printed as Go prints it, so `3.10` unquoted is 3.1). Only 3.x files are Compose files
/// `stack deploy` reads; shoal accepts every 3.x key whatever the minor version says.
fn version(value: &Value) -> Res<String> {
    let path = KeyPath::root().key("version");
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => go_number(number),
        other => return Err(Node::new(other, &path).wrong_type("a string")),
    };
    let normalized = match text.as_str() {
        "" | "3" => DEFAULT_VERSION.to_string(),
        _ => text,
    };
    // Docker has one schema per version, 3.0 to 3.13, named by its exact text.
    if (0..=13).any(|minor| normalized == format!("3.{minor}")) {
        Ok(normalized)
    } else {
        Err(invalid(
            &path,
            format!("unsupported Compose file version `{normalized}` (3.0 to 3.13)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_of(text: &str) -> Res<String> {
        version(&yaml_serde::from_str(text).unwrap())
    }

    #[test]
    fn versions() {
        assert_eq!(version_of("'3'").unwrap(), "3.13");
        assert_eq!(version_of("3").unwrap(), "3.13");
        assert_eq!(version_of("'3.8'").unwrap(), "3.8");
        assert_eq!(version_of("3.10").unwrap(), "3.1");
        for bad in ["'2.4'", "'3.14'", "'4'", "[3]", "'3.x'", "'3.08'"] {
            assert!(version_of(bad).is_err(), "{bad}");
        }
    }
}
