//! Service keys shoal does not carry, and how it says so: the warnings Docker prints for
//! `stack deploy` ("Ignoring unsupported options: build, links", "Ignoring deprecated
//! options: ..."), and the keys Docker refuses outright (`extends`, `volumes_from`, ...).
//!
//! Docker's lists are `UnsupportedProperties`, `DeprecatedProperties` and
//! `ForbiddenProperties` in docker/cli `cli/compose/types/types.go`. Shoal ignores more than
//! Docker does (it runs programs, not containers: no capabilities, no ulimits, no logging
//! drivers...), and names those in the same warning rather than dropping them silently.
//! Ignored keys are still type-checked as Docker's schema does, so a file shoal accepts is one
//! Docker accepts.

use yaml_serde::Value;

use crate::{
    error::{Res, invalid},
    keypath::KeyPath,
    node::Node,
};

/// Docker's `UnsupportedProperties`: keys `docker stack deploy` ignores with a warning.
pub const DOCKER_UNSUPPORTED: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// Keys Docker uses for swarm services but shoal does not (Docker applies them to the
/// container; shoal's tasks are processes, or the feature is not there yet).
pub const SHOAL_UNSUPPORTED: &[&str] = &[
    "cap_add",
    "cap_drop",
    "credential_spec",
    "depends_on",
    "dns",
    "dns_search",
    "extra_hosts",
    "init",
    "isolation",
    "logging",
    "oom_score_adj",
    "read_only",
    "stdin_open",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
];

/// Docker's `DeprecatedProperties`, with its explanations.
pub const DEPRECATED: &[(&str, &str)] = &[
    (
        "container_name",
        "Setting the container name is not supported.",
    ),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

/// Docker's `ForbiddenProperties`: a file using them is refused.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    (
        "memswap_limit",
        "Set resource limits using deploy.resources",
    ),
];

/// Whether `key` is a service key shoal ignores (with a warning).
pub(crate) fn is_ignored(key: &str) -> bool {
    DOCKER_UNSUPPORTED.contains(&key)
        || SHOAL_UNSUPPORTED.contains(&key)
        || DEPRECATED.iter().any(|(k, _)| *k == key)
}

/// Refuses a file whose services use a forbidden key, as Docker does before anything else.
pub(crate) fn check_forbidden(root: &Value) -> Res<()> {
    let Some(Value::Mapping(services)) = root.get("services") else {
        return Ok(());
    };
    for (name, service) in services {
        let (Value::String(name), Value::Mapping(service)) = (name, service) else {
            continue;
        };
        for (key, why) in FORBIDDEN {
            if service.contains_key(*key) {
                let path = KeyPath::root().key("services").key(name).key(key);
                return Err(invalid(&path, format!("not supported: {why}")));
            }
        }
    }
    Ok(())
}

/// Checks an ignored key's value against the type Docker's schema wants there.
pub(crate) fn check_shape(key: &str, node: Node) -> Res<()> {
    match key {
        "build" => match node.value {
            Value::String(_) | Value::Mapping(_) => Ok(()),
            _ => Err(node.wrong_type("a string or a mapping")),
        },
        "cap_add" | "cap_drop" | "devices" | "external_links" | "links" | "security_opt"
        | "depends_on" => node.string_list().map(drop),
        "dns" | "dns_search" | "tmpfs" => node.string_or_list().map(drop),
        "extra_hosts" | "sysctls" => node.list_or_dict().map(drop),
        "init" | "privileged" | "read_only" | "stdin_open" | "tty" => node.bool().map(drop),
        "oom_score_adj" => node.i64().map(drop),
        "credential_spec" | "logging" | "ulimits" => node.entries().map(drop),
        "pid" if node.is_null() => Ok(()),
        "shm_size" => node.scalar_text().map(drop),
        "expose" => {
            for (item, path) in node.items()? {
                Node::new(item, &path).scalar_text()?;
            }
            Ok(())
        }
        _ => node.str().map(drop),
    }
}

/// Docker's warning for the ignored keys (sorted bytewise, as Go's `sort.Strings`).
pub fn unsupported_warning(keys: &[String]) -> Option<String> {
    let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    keys.sort_unstable();
    keys.dedup();
    (!keys.is_empty()).then(|| format!("Ignoring unsupported options: {}", keys.join(", ")))
}

/// Docker's warning for deprecated keys: `key: explanation` paragraphs, sorted.
pub fn deprecated_warning(keys: &[String]) -> Option<String> {
    let mut lines: Vec<String> = DEPRECATED
        .iter()
        .filter(|(key, _)| keys.iter().any(|k| k == key))
        .map(|(key, why)| format!("{key}: {why}"))
        .collect();
    lines.sort_unstable();
    (!lines.is_empty()).then(|| format!("Ignoring deprecated options:\n\n{}", lines.join("\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_sorted_like_docker() {
        let keys = vec!["links".to_string(), "build".into(), "links".into()];
        assert_eq!(
            unsupported_warning(&keys).unwrap(),
            "Ignoring unsupported options: build, links"
        );
        assert_eq!(unsupported_warning(&[]), None);
        assert_eq!(
            deprecated_warning(&["container_name".into()]).unwrap(),
            "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported."
        );
    }

    #[test]
    fn forbidden_keys_are_errors() {
        let root: Value =
            yaml_serde::from_str("services: {a: {image: x, extends: {service: b}}}").unwrap();
        assert!(check_forbidden(&root).is_err());
    }

    #[test]
    fn ignored_keys_are_type_checked() {
        let path = KeyPath::root();
        let list: Value = yaml_serde::from_str("[a]").unwrap();
        let text: Value = yaml_serde::from_str("a").unwrap();
        assert!(check_shape("links", Node::new(&list, &path)).is_ok());
        assert!(check_shape("links", Node::new(&text, &path)).is_err());
        assert!(check_shape("restart", Node::new(&text, &path)).is_ok());
        assert!(check_shape("privileged", Node::new(&text, &path)).is_err());
    }
}
