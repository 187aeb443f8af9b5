//! The top-level `networks`, `volumes`, `secrets` and `configs` of one file, with Docker's
//! rules for external objects: `external: true` takes its name from the key, the deprecated
//! `external: {name: x}` form moves to `name`, and external objects carry no settings.

use std::collections::BTreeMap;

use crate::{
    context::FileCtx,
    error::{Res, invalid},
    keypath::KeyPath,
    model::{FileObject, Network, Volume},
    node::{Fields, Node},
    service::check_name,
};

/// Reads `external:` (a boolean, or the deprecated `{name: ...}`) and the `name:` beside it;
/// returns (external, name), the name defaulting to `key` for external objects.
fn external_and_name(fields: &Fields, key: &str, what: &str) -> Res<(bool, Option<String>)> {
    let mut name = match fields.get("name") {
        Some((value, path)) => Node::new(value, path).opt_string()?,
        None => None,
    };
    let external = match fields.get("external") {
        None => false,
        Some((value, path)) => match value {
            yaml_serde::Value::Mapping(_) => {
                let external = Node::new(value, path).fields(&["name"], false)?;
                if let Some((value, name_path)) = external.get("name") {
                    let external_name = Node::new(value, name_path).opt_string()?;
                    if external_name.is_some() && name.is_some() {
                        return Err(invalid(
                            name_path,
                            format!(
                                "{what}.external.name and {what}.name conflict; only use {what}.name"
                            ),
                        ));
                    }
                    name = name.or(external_name);
                }
                true
            }
            _ => Node::new(value, path).bool()?,
        },
    };
    if external && name.is_none() {
        name = Some(key.to_string());
    }
    Ok((external, name))
}

/// Refuses settings an external object cannot have.
fn refuse_with_external(fields: &Fields, keys: &[&str], what: &str) -> Res<()> {
    for key in keys {
        if let Some((_, path)) = fields.get(key) {
            return Err(invalid(
                path,
                format!("an external {what} is created elsewhere: `{key}` cannot be set"),
            ));
        }
    }
    Ok(())
}

/// The entries of a top-level section, names checked.
fn entries<'a>(node: Node<'a>) -> Res<Vec<(String, &'a yaml_serde::Value, KeyPath)>> {
    let entries = node.entries()?;
    for (name, _, path) in &entries {
        check_name(name, path)?;
    }
    Ok(entries)
}

pub(crate) fn networks(node: Node) -> Res<BTreeMap<String, Network>> {
    let mut out = BTreeMap::new();
    for (key, value, path) in entries(node)? {
        let mut network = Network::default();
        if !value.is_null() {
            let fields = Node::new(value, &path).fields(
                &[
                    "name",
                    "driver",
                    "driver_opts",
                    "ipam",
                    "external",
                    "internal",
                    "attachable",
                    "labels",
                ],
                true,
            )?;
            (network.external, network.name) = external_and_name(&fields, &key, "network")?;
            if let Some((value, path)) = fields.get("driver") {
                network.driver = Node::new(value, path).opt_string()?;
                if let Some(driver) = network.driver.as_deref().filter(|d| *d != "overlay") {
                    return Err(invalid(
                        path,
                        format!("shoal networks are overlays: driver `{driver}` is not supported"),
                    ));
                }
            }
            if let Some((value, path)) = fields.get("driver_opts") {
                network.driver_opts = Node::new(value, path).string_map()?;
            }
            if let Some((value, path)) = fields.get("ipam") {
                let ipam = Node::new(value, path).fields(&["driver", "config"], false)?;
                if let Some((value, path)) = ipam.get("driver") {
                    network.ipam_driver = Node::new(value, path).opt_string()?;
                }
                if let Some((value, path)) = ipam.get("config") {
                    for (pool, path) in Node::new(value, path).items()? {
                        let pool = Node::new(pool, &path).fields(&["subnet"], false)?;
                        if let Some((value, path)) = pool.get("subnet") {
                            let subnet = Node::new(value, path).str()?;
                            subnet.parse::<ipnet::IpNet>().map_err(|_| {
                                invalid(path, format!("`{subnet}` is not a subnet (CIDR)"))
                            })?;
                            network.subnets.push(subnet.to_string());
                        }
                    }
                }
            }
            for (key, flag) in [
                ("internal", &mut network.internal),
                ("attachable", &mut network.attachable),
            ] {
                if let Some((value, path)) = fields.get(key) {
                    *flag = Node::new(value, path).bool()?;
                }
            }
            if let Some((value, path)) = fields.get("labels") {
                network.labels = Node::new(value, path).labels()?;
            }
        }
        out.insert(key, network);
    }
    Ok(out)
}

pub(crate) fn volumes(node: Node) -> Res<BTreeMap<String, Volume>> {
    let mut out = BTreeMap::new();
    for (key, value, path) in entries(node)? {
        let mut volume = Volume::default();
        if !value.is_null() {
            let fields = Node::new(value, &path).fields(
                &[
                    "name",
                    "driver",
                    "driver_opts",
                    "external",
                    "labels",
                    "x-cluster-spec",
                ],
                true,
            )?;
            (volume.external, volume.name) = external_and_name(&fields, &key, "volume")?;
            if volume.external {
                refuse_with_external(&fields, &["driver", "driver_opts", "labels"], "volume")?;
            }
            if let Some((_, path)) = fields.get("x-cluster-spec") {
                return Err(invalid(path, "shoal has no cluster (CSI) volumes"));
            }
            if let Some((value, path)) = fields.get("driver") {
                volume.driver = Node::new(value, path).opt_string()?;
            }
            if let Some((value, path)) = fields.get("driver_opts") {
                volume.driver_opts = Node::new(value, path).string_map()?;
            }
            if let Some((value, path)) = fields.get("labels") {
                volume.labels = Node::new(value, path).labels()?;
            }
        }
        out.insert(key, volume);
    }
    Ok(out)
}

/// `secrets` (`what` = "secret") or `configs` ("config").
pub(crate) fn file_objects(
    node: Node,
    what: &str,
    ctx: &FileCtx,
) -> Res<BTreeMap<String, FileObject>> {
    let mut out = BTreeMap::new();
    for (key, value, path) in entries(node)? {
        let node = Node::new(value, &path);
        let fields = node.fields(
            &[
                "name",
                "file",
                "external",
                "labels",
                "driver",
                "driver_opts",
                "template_driver",
            ],
            true,
        )?;
        for key in ["driver", "driver_opts", "template_driver"] {
            if let Some((_, path)) = fields.get(key) {
                return Err(invalid(path, format!("shoal has no {what} drivers")));
            }
        }
        let mut object = FileObject::default();
        (object.external, object.name) = external_and_name(&fields, &key, what)?;
        if let Some((value, path)) = fields.get("labels") {
            object.labels = Node::new(value, path).labels()?;
        }
        let file = match fields.get("file") {
            Some((value, path)) => Node::new(value, path).opt_string()?,
            None => None,
        };
        match (object.external, file) {
            (false, Some(file)) => {
                object.file = Some(crate::paths::resolve(ctx.working_dir, &file));
            }
            // Docker would point a file-less object at the working directory itself.
            (false, None) => {
                return Err(invalid(
                    &path,
                    format!("a {what} needs `file` or `external: true`"),
                ));
            }
            (true, _) => {}
        }
        out.insert(key, object);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Notes;
    use std::path::Path;

    fn yaml(text: &str) -> yaml_serde::Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn external_names() {
        let path = KeyPath::root().key("networks");
        let value =
            yaml("{a: {external: true}, b: {external: {name: real}}, c: {name: fixed}, d: }");
        let networks = networks(Node::new(&value, &path)).unwrap();
        assert_eq!(networks["a"].name.as_deref(), Some("a"));
        assert!(networks["b"].external);
        assert_eq!(networks["b"].name.as_deref(), Some("real"));
        assert_eq!(networks["c"].name.as_deref(), Some("fixed"));
        assert!(!networks["c"].external);
        assert_eq!(networks["d"], Network::default());
        let conflict = yaml("{a: {external: {name: x}, name: y}}");
        assert!(super::networks(Node::new(&conflict, &path)).is_err());
    }

    #[test]
    fn networks_settings() {
        let path = KeyPath::root().key("networks");
        let value = yaml(
            "{a: {driver: overlay, attachable: true, internal: true, ipam: {config: [{subnet: 10.9.0.0/24}]}, labels: [k=v]}}",
        );
        let network = &networks(Node::new(&value, &path)).unwrap()["a"];
        assert!(network.attachable && network.internal);
        assert_eq!(network.subnets, ["10.9.0.0/24"]);
        assert_eq!(network.labels["k"], "v");
        for bad in [
            "{a: {driver: bridge}}",
            "{a: {ipam: {config: [{subnet: nope}]}}}",
            "{a: {internal: yes}}",
            "{a: {extra: 1}}",
        ] {
            assert!(
                super::networks(Node::new(&yaml(bad), &path)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn volumes_and_files() {
        let path = KeyPath::root().key("x");
        let value = yaml("{v: {external: true, driver: local}}");
        assert!(volumes(Node::new(&value, &path)).is_err());
        let env = |_: &str| None;
        let ctx = FileCtx {
            working_dir: Path::new("/stack"),
            lookup: &env,
            notes: Notes::default(),
        };
        let value = yaml("{s: {file: ./s.txt}, e: {external: true}}");
        let secrets = file_objects(Node::new(&value, &path), "secret", &ctx).unwrap();
        assert_eq!(
            secrets["s"].file.as_deref(),
            Some(Path::new("/stack/s.txt"))
        );
        assert_eq!(secrets["e"].name.as_deref(), Some("e"));
        for bad in ["{s: {}}", "{s: {file: a, driver: vault}}", "{s: }"] {
            assert!(
                file_objects(Node::new(&yaml(bad), &path), "secret", &ctx).is_err(),
                "{bad}"
            );
        }
    }
}
