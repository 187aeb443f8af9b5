//! `--mount`s between the API and the model, checked as Docker's daemon checks them.

use super::Error;
use crate::{
    api,
    cluster::{Mount, MountKind, TmpfsOptions, validate_volume_name},
};

/// Checks `--mount`s as Docker's daemon does (with its words), in the leader, before any task
/// exists: a node then only finds what it cannot know here missing (a path of its own).
pub(super) fn mounts_from_api(mounts: &[api::Mount]) -> Result<Vec<Mount>, Error> {
    let mut targets = std::collections::HashSet::new();
    let mut model = Vec::with_capacity(mounts.len());
    for m in mounts {
        let mount = mount_from_api(m)?;
        // `/data` and `/data/` are one mount point.
        if !targets.insert(m.target.trim_end_matches('/')) {
            return Err(Error::invalid(format!(
                "invalid mount config: duplicate mount point: {}",
                mount.target
            )));
        }
        model.push(mount);
    }
    Ok(model)
}

fn mount_from_api(m: &api::Mount) -> Result<Mount, Error> {
    let kind = match m.r#type.as_str() {
        "" | "bind" => MountKind::Bind,
        "volume" => MountKind::Volume,
        "tmpfs" => MountKind::Tmpfs,
        other => {
            return Err(Error::invalid(format!(
                "invalid mount type {other:?}: expected bind, volume or tmpfs"
            )));
        }
    };
    let invalid = |why: String| {
        Error::invalid(format!(
            "invalid mount config for type \"{}\": {why}",
            kind.as_str()
        ))
    };
    let path_problem = |path: &str| {
        if !path.starts_with('/') {
            Some(format!(
                "invalid mount path: '{path}' mount path must be absolute"
            ))
        } else if path.contains('\0') {
            Some(format!("invalid mount path: {path:?} contains a NUL byte"))
        } else {
            None
        }
    };
    if let Some(why) = path_problem(&m.target) {
        return Err(invalid(why));
    }
    if m.target.trim_end_matches('/').is_empty() {
        return Err(invalid(
            "invalid specification: destination can't be '/'".into(),
        ));
    }
    let has_tmpfs_options = m.tmpfs_size_bytes != 0 || m.tmpfs_mode != 0;
    if has_tmpfs_options && kind != MountKind::Tmpfs {
        return Err(invalid(
            "tmpfs options are only for mounts of type tmpfs".into(),
        ));
    }
    match kind {
        MountKind::Bind => {
            if let Some(why) = path_problem(&m.source) {
                return Err(invalid(why));
            }
        }
        // Empty: an anonymous volume.
        MountKind::Volume if m.source.is_empty() => {}
        MountKind::Volume => validate_volume_name(&m.source)
            .map_err(|e| invalid(format!("invalid volume name {:?}: {e}", m.source)))?,
        MountKind::Tmpfs => {
            if !m.source.is_empty() {
                return Err(invalid("source must not be specified".into()));
            }
            if m.tmpfs_mode > 0o7777 {
                return Err(invalid(format!(
                    "invalid tmpfs mode {:o}: at most 7777 (octal)",
                    m.tmpfs_mode
                )));
            }
        }
    }
    Ok(Mount {
        kind,
        source: m.source.clone(),
        target: m.target.clone(),
        readonly: m.readonly,
        tmpfs: TmpfsOptions {
            size_bytes: m.tmpfs_size_bytes,
            mode: m.tmpfs_mode,
        },
    })
}

pub(super) fn mount_to_api(m: &Mount) -> api::Mount {
    api::Mount {
        source: m.source.clone(),
        target: m.target.clone(),
        readonly: m.readonly,
        r#type: m.kind.as_str().to_string(),
        tmpfs_size_bytes: m.tmpfs.size_bytes,
        tmpfs_mode: m.tmpfs.mode,
    }
}
