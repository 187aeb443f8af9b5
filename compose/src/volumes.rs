//! A service's `volumes:`: the short syntax (`data:/data`, `/host:/path:ro`, `./rel:/path`,
//! anonymous `/data`) parsed as Docker's `ParseVolume`, the long syntax (`type` volume, bind or
//! tmpfs), and bind sources made absolute against the first file's directory.

use std::path::Path;

use yaml_serde::Value;

use crate::{
    error::{Res, invalid},
    interpolate::Lookup,
    keypath::KeyPath,
    model::{Mount, MountKind},
    node::Node,
};

/// Bind propagation modes (Docker's `mount.Propagations`).
const PROPAGATIONS: &[&str] = &[
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

/// Reads `volumes:`. `unsupported` gets `volumes.consistency` when used (a macOS setting).
pub(crate) fn parse(
    node: Node,
    working_dir: &Path,
    lookup: Lookup,
    unsupported: &mut Vec<String>,
) -> Res<Vec<Mount>> {
    let mut mounts = Vec::new();
    let mut seen: Vec<&Value> = Vec::new();
    for (item, path) in node.items()? {
        if seen.contains(&item) {
            return Err(invalid(&path, "duplicate volume"));
        }
        seen.push(item);
        let mut mount = match item {
            Value::String(spec) => short(spec, &path)?,
            Value::Mapping(_) => long(Node::new(item, &path), unsupported)?,
            _ => return Err(Node::new(item, &path).wrong_type("a volume string or mapping")),
        };
        if mount.kind == MountKind::Bind {
            let source = mount.source.as_deref().unwrap_or_default();
            if source.is_empty() {
                return Err(invalid(&path, "a bind mount needs a `source`"));
            }
            mount.source = Some(absolute_bind_source(source, working_dir, lookup));
        }
        check(&mount, &path)?;
        mounts.push(mount);
    }
    Ok(mounts)
}

/// What Docker only checks when it creates the service, checked here so that a bad mount is
/// one error at load time.
fn check(mount: &Mount, path: &KeyPath) -> Res<()> {
    if !mount.target.starts_with('/') {
        return Err(invalid(
            path,
            format!("mount target `{}` must be an absolute path", mount.target),
        ));
    }
    let wrong = |option: &str| {
        invalid(
            path,
            format!("{option} does not apply to a {} mount", mount.kind.as_str()),
        )
    };
    match mount.kind {
        MountKind::Volume if mount.propagation.is_some() => Err(wrong("bind propagation")),
        MountKind::Bind if mount.nocopy => Err(wrong("volume nocopy")),
        MountKind::Tmpfs if mount.source.is_some() => Err(wrong("a source")),
        MountKind::Tmpfs if mount.propagation.is_some() || mount.nocopy => {
            Err(wrong("bind and volume options"))
        }
        MountKind::Volume | MountKind::Bind if mount.tmpfs_size.is_some() => {
            Err(wrong("tmpfs size"))
        }
        _ => Ok(()),
    }
}

/// Docker's `ParseVolume`: `[SOURCE:]TARGET[:OPTIONS]`, options `ro`, `rw`, `nocopy` and the
/// bind propagations (others ignored). Like Docker, a one-letter source followed by `:` is a
/// Windows drive (`c:/x`), and a source starting with `.`, `/` or `~` is a bind mount.
fn short(spec: &str, path: &KeyPath) -> Res<Mount> {
    let mut mount = Mount {
        kind: MountKind::Volume,
        source: None,
        target: String::new(),
        read_only: false,
        nocopy: false,
        propagation: None,
        tmpfs_size: None,
    };
    if spec.is_empty() {
        return Err(invalid(path, "empty volume"));
    }
    if spec.len() <= 2 {
        mount.target = spec.to_string();
        return Ok(mount);
    }
    let bad = |why: &str| invalid(path, format!("invalid volume `{spec}`: {why}"));
    let mut source: Option<String> = None;
    let mut target: Option<String> = None;
    let mut buffer = String::new();
    let chars: Vec<char> = spec.chars().collect();
    for i in 0..=chars.len() {
        let c = chars.get(i).copied();
        let drive = c == Some(':')
            && buffer.chars().count() == 1
            && buffer.chars().all(char::is_alphabetic);
        if c.is_some() && (c != Some(':') || drive) {
            buffer.extend(c);
            continue;
        }
        let end = c.is_none();
        let section = std::mem::take(&mut buffer);
        if section.is_empty() {
            return Err(bad("empty section between colons"));
        }
        if source.is_none() && end {
            target = Some(section);
        } else if source.is_none() {
            source = Some(section);
        } else if target.is_none() {
            target = Some(section);
        } else if !end {
            return Err(bad("too many colons"));
        } else {
            for option in section.split(',') {
                match option {
                    "ro" => mount.read_only = true,
                    "rw" => mount.read_only = false,
                    "nocopy" => mount.nocopy = true,
                    _ if PROPAGATIONS.contains(&option) => {
                        mount.propagation = Some(option.to_string())
                    }
                    _ => {}
                }
            }
        }
    }
    mount.target = target.unwrap_or_default();
    if let Some(source) = source {
        if is_file_path(&source) {
            mount.kind = MountKind::Bind;
        }
        mount.source = Some(source);
    }
    Ok(mount)
}

/// Docker's `isFilePath`.
fn is_file_path(source: &str) -> bool {
    if source.starts_with(['.', '/', '~']) {
        return true;
    }
    let mut chars = source.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(':')) => first.is_alphabetic(),
        _ => source.starts_with("\\\\"),
    }
}

/// One long-syntax entry.
fn long(node: Node, unsupported: &mut Vec<String>) -> Res<Mount> {
    let fields = node.fields(
        &[
            "type",
            "source",
            "target",
            "read_only",
            "consistency",
            "bind",
            "volume",
            "tmpfs",
        ],
        false,
    )?;
    let (kind_value, kind_path) = fields
        .get("type")
        .ok_or_else(|| invalid(node.path, "a long-syntax volume needs a `type`"))?;
    let kind = match Node::new(kind_value, kind_path).str()? {
        "volume" => MountKind::Volume,
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        other => {
            return Err(invalid(
                kind_path,
                format!("shoal does not mount `{other}` (volume, bind or tmpfs)"),
            ));
        }
    };
    let text = |key: &str| -> Res<Option<String>> {
        fields
            .get(key)
            .map(|(value, path)| Node::new(value, path).opt_string())
            .transpose()
            .map(Option::flatten)
    };
    let mut mount = Mount {
        kind,
        source: text("source")?,
        target: text("target")?.unwrap_or_default(),
        read_only: match fields.get("read_only") {
            Some((value, path)) => Node::new(value, path).bool()?,
            None => false,
        },
        nocopy: false,
        propagation: None,
        tmpfs_size: None,
    };
    if let Some((value, path)) = fields.get("consistency") {
        Node::new(value, path).str()?;
        unsupported.push("volumes.consistency".into());
    }
    if let Some((value, path)) = fields.get("bind") {
        let bind = Node::new(value, path).fields(&["propagation"], false)?;
        if let Some((value, path)) = bind.get("propagation") {
            let propagation = Node::new(value, path).str()?;
            if !PROPAGATIONS.contains(&propagation) {
                return Err(invalid(
                    path,
                    format!("unknown propagation `{propagation}`"),
                ));
            }
            mount.propagation = Some(propagation.to_string());
        }
    }
    if let Some((value, path)) = fields.get("volume") {
        let volume = Node::new(value, path).fields(&["nocopy"], false)?;
        if let Some((value, path)) = volume.get("nocopy") {
            mount.nocopy = Node::new(value, path).bool()?;
        }
    }
    if let Some((value, path)) = fields.get("tmpfs") {
        let tmpfs = Node::new(value, path).fields(&["size"], false)?;
        if let Some((value, path)) = tmpfs.get("size") {
            // Docker's schema takes bytes as an integer; a size string (`64m`) is accepted too.
            mount.tmpfs_size = Some(match value {
                Value::String(text) => {
                    crate::size::parse_bytes(text).map_err(|why| invalid(path, why))?
                }
                _ => Node::new(value, path).u64()?,
            });
        }
    }
    Ok(mount)
}

/// A bind source as Docker resolves it: `~` becomes HOME, a relative path is joined to the
/// working directory (and cleaned, as Go's `filepath.Join` does); an absolute one is kept.
fn absolute_bind_source(source: &str, working_dir: &Path, lookup: Lookup) -> String {
    let mut source = source.to_string();
    if source.starts_with('~')
        && let Some(home) = lookup("HOME")
    {
        source = source.replacen('~', &home, 1);
    }
    if source.starts_with('/') {
        return source;
    }
    crate::paths::join_clean(working_dir, &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Res<Vec<Mount>> {
        let value: Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("volumes");
        let home = |name: &str| (name == "HOME").then(|| "/home/me".to_string());
        parse(
            Node::new(&value, &path),
            Path::new("/stack"),
            &home,
            &mut Vec::new(),
        )
    }

    fn summary(mount: &Mount) -> (MountKind, Option<&str>, &str, bool) {
        (
            mount.kind,
            mount.source.as_deref(),
            &mount.target,
            mount.read_only,
        )
    }

    #[test]
    fn short_syntax() {
        let mounts = read(r#"["data:/data", "/host:/x:ro", "./rel/../d:/d", "~/c:/c", "/anon", "vol:/v:nocopy,rw"]"#)
            .unwrap();
        let got: Vec<_> = mounts.iter().map(summary).collect();
        assert_eq!(
            got,
            [
                (MountKind::Volume, Some("data"), "/data", false),
                (MountKind::Bind, Some("/host"), "/x", true),
                (MountKind::Bind, Some("/stack/d"), "/d", false),
                (MountKind::Bind, Some("/home/me/c"), "/c", false),
                (MountKind::Volume, None, "/anon", false),
                (MountKind::Volume, Some("vol"), "/v", false),
            ]
        );
        assert!(mounts[5].nocopy);
    }

    #[test]
    fn long_syntax() {
        let mounts = read(
            "[{type: tmpfs, target: /t, tmpfs: {size: 64m}}, {type: bind, source: ./b, target: /b, bind: {propagation: rshared}}]",
        )
        .unwrap();
        assert_eq!(mounts[0].tmpfs_size, Some(64 << 20));
        assert_eq!(mounts[1].source.as_deref(), Some("/stack/b"));
        assert_eq!(mounts[1].propagation.as_deref(), Some("rshared"));
    }

    #[test]
    fn bad_volumes() {
        for bad in [
            r#"["a::b"]"#,
            r#"["a:/b:ro:x"]"#,
            r#"["data:relative"]"#,
            "[{target: /x}]",
            "[{type: npipe, target: /x}]",
            "[{type: bind, target: /x}]",
            "[{type: tmpfs, source: s, target: /x}]",
            "[{type: volume, source: v, target: /x, tmpfs: {size: 1}}]",
            "[{type: volume, target: /x, extra: 1}]",
            r#"["/a:/a", "/a:/a"]"#,
            "[1]",
        ] {
            assert!(read(bad).is_err(), "{bad} was accepted");
        }
    }
}
