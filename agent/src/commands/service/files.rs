//! A service's `--secret` and `--config` references as `service inspect` shows them, in
//! Docker's shapes (for `render`).

use std::fmt::Write as _;

use shoal_control::api::{FileReference, ServiceSpec};

/// `ContainerSpec.Secrets` and `ContainerSpec.Configs`, when there are any (Docker's
/// `omitempty`): references, never data.
pub(super) fn add_json(container_spec: &mut serde_json::Value, spec: &ServiceSpec) {
    for (key, id, name, references) in [
        ("Secrets", "SecretID", "SecretName", &spec.secrets),
        ("Configs", "ConfigID", "ConfigName", &spec.configs),
    ] {
        if references.is_empty() {
            continue;
        }
        let shaped: Vec<serde_json::Value> = references
            .iter()
            .map(|r| {
                serde_json::json!({
                    "File": {
                        "Name": r.target,
                        "UID": r.uid.to_string(),
                        "GID": r.gid.to_string(),
                        "Mode": mode(r),
                    },
                    id: r.id,
                    name: r.name,
                })
            })
            .collect();
        container_spec[key] = shaped.into();
    }
}

/// `--pretty`'s ` Secrets:` and ` Configs:` blocks (Docker's template).
pub(super) fn pretty(out: &mut String, spec: &ServiceSpec) {
    for (title, references) in [("Secrets", &spec.secrets), ("Configs", &spec.configs)] {
        if references.is_empty() {
            continue;
        }
        let _ = writeln!(out, " {title}:");
        for r in references {
            let _ = writeln!(out, "  Target:\t{}\n   Source:\t{}", r.target, r.name);
        }
    }
}

/// Docker's default when the leader sent none.
fn mode(r: &FileReference) -> u32 {
    r.mode.unwrap_or(0o444)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_have_dockers_shape() {
        let spec = ServiceSpec {
            secrets: vec![FileReference {
                name: "db".into(),
                id: "s1".into(),
                target: "db".into(),
                uid: 33,
                gid: 0,
                mode: Some(0o400),
            }],
            ..Default::default()
        };
        let mut container = serde_json::json!({});
        add_json(&mut container, &spec);
        assert_eq!(
            container,
            serde_json::json!({
                "Secrets": [{
                    "File": { "Name": "db", "UID": "33", "GID": "0", "Mode": 256 },
                    "SecretID": "s1",
                    "SecretName": "db",
                }],
            })
        );
        let mut out = String::new();
        pretty(&mut out, &spec);
        assert_eq!(out, " Secrets:\n  Target:\tdb\n   Source:\tdb\n");
    }
}
