//! `--secret` and `--config` in a service spec: checked and resolved to the objects they name
//! when the leader accepts the spec (Docker's CLI resolves names itself; shoal's leader does, so
//! every client gets the same answer), and shown back.

use super::error::Error;
use crate::{
    api,
    cluster::{
        ClusterState,
        objects::{DEFAULT_FILE_MODE, FileReference, ObjectKind, not_found, validate_references},
    },
};

/// The spec's secret and config references, each resolved to its object (an ID kept from the
/// current spec, else the exact name, as Docker's CLI does), with Docker's defaults: the name as
/// the target, uid and gid 0, mode 0444.
pub fn from_api(
    spec: &api::ServiceSpec,
    state: &ClusterState,
) -> Result<(Vec<FileReference>, Vec<FileReference>), Error> {
    let secrets = resolve(ObjectKind::Secret, &spec.secrets, state)?;
    let configs = resolve(ObjectKind::Config, &spec.configs, state)?;
    validate_references(&secrets, &configs).map_err(Error::invalid)?;
    Ok((secrets, configs))
}

fn resolve(
    kind: ObjectKind,
    references: &[api::FileReference],
    state: &ClusterState,
) -> Result<Vec<FileReference>, Error> {
    let objects = state.objects(kind);
    let mut resolved = Vec::with_capacity(references.len());
    let mut missing = Vec::new();
    for r in references {
        if r.name.is_empty() && r.id.is_empty() {
            return Err(Error::invalid(format!(
                "invalid {} reference: source is required",
                kind.as_str()
            )));
        }
        let found = if r.id.is_empty() {
            objects.values().find(|o| o.name == r.name)
        } else {
            objects
                .get(&r.id)
                .filter(|o| r.name.is_empty() || o.name == r.name)
        };
        let Some(object) = found else {
            missing.push(if r.name.is_empty() { &r.id } else { &r.name }.as_str());
            continue;
        };
        resolved.push(FileReference {
            id: object.id.clone(),
            name: object.name.clone(),
            target: if r.target.is_empty() {
                object.name.clone()
            } else {
                r.target.clone()
            },
            uid: r.uid,
            gid: r.gid,
            mode: r.mode.unwrap_or(DEFAULT_FILE_MODE),
        });
    }
    if !missing.is_empty() {
        return Err(Error::invalid(not_found(kind, &missing)));
    }
    Ok(resolved)
}

pub fn to_api(references: &[FileReference]) -> Vec<api::FileReference> {
    references
        .iter()
        .map(|r| api::FileReference {
            name: r.name.clone(),
            id: r.id.clone(),
            target: r.target.clone(),
            uid: r.uid,
            gid: r.gid,
            mode: Some(r.mode),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::objects::{FileData, FileObject};

    fn state() -> ClusterState {
        let mut state = ClusterState::default();
        for (id, name) in [("s1", "db-password"), ("s2", "api-key")] {
            state.secrets.insert(
                id.into(),
                FileObject {
                    id: id.into(),
                    name: name.into(),
                    labels: BTreeMap::new(),
                    data: FileData::new(b"x".to_vec()),
                    created_at_ms: 0,
                    updated_at_ms: 0,
                    version: 1,
                },
            );
        }
        state.configs.insert(
            "c1".into(),
            FileObject {
                id: "c1".into(),
                name: "app.conf".into(),
                labels: BTreeMap::new(),
                data: FileData::new(b"y".to_vec()),
                created_at_ms: 0,
                updated_at_ms: 0,
                version: 1,
            },
        );
        state
    }

    fn named(name: &str) -> api::FileReference {
        api::FileReference {
            name: name.into(),
            ..Default::default()
        }
    }

    fn refused(spec: &api::ServiceSpec) -> String {
        match from_api(spec, &state()) {
            Err(Error::Invalid(message)) => message,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn names_resolve_with_dockers_defaults() {
        let spec = api::ServiceSpec {
            secrets: vec![
                named("db-password"),
                api::FileReference {
                    target: "/etc/api.key".into(),
                    uid: 33,
                    gid: 33,
                    mode: Some(0o400),
                    ..named("api-key")
                },
            ],
            configs: vec![named("app.conf")],
            ..Default::default()
        };
        let (secrets, configs) = from_api(&spec, &state()).unwrap();
        assert_eq!(
            secrets,
            [
                FileReference {
                    id: "s1".into(),
                    name: "db-password".into(),
                    target: "db-password".into(),
                    uid: 0,
                    gid: 0,
                    mode: 0o444,
                },
                FileReference {
                    id: "s2".into(),
                    name: "api-key".into(),
                    target: "/etc/api.key".into(),
                    uid: 33,
                    gid: 33,
                    mode: 0o400,
                },
            ]
        );
        assert_eq!(
            secrets[0].path(ObjectKind::Secret),
            "/run/secrets/db-password"
        );
        assert_eq!(configs[0].path(ObjectKind::Config), "/app.conf");
        // And back: what the API shows, which a later update sends again unchanged.
        let again = api::ServiceSpec {
            secrets: to_api(&secrets),
            configs: to_api(&configs),
            ..Default::default()
        };
        assert_eq!(from_api(&again, &state()).unwrap(), (secrets, configs));
    }

    #[test]
    fn unknown_and_conflicting_references_are_refused_in_dockers_words() {
        let spec = api::ServiceSpec {
            secrets: vec![named("nope"), named("db-password"), named("gone")],
            ..Default::default()
        };
        assert_eq!(refused(&spec), "secrets not found: nope, gone");
        let spec = api::ServiceSpec {
            configs: vec![named("nope")],
            ..Default::default()
        };
        assert_eq!(refused(&spec), "config not found: nope");
        // An ID kept from an earlier spec must still name that object.
        let spec = api::ServiceSpec {
            secrets: vec![api::FileReference {
                id: "s1".into(),
                ..named("api-key")
            }],
            ..Default::default()
        };
        assert_eq!(refused(&spec), "secret not found: api-key");
        let spec = api::ServiceSpec {
            secrets: vec![
                api::FileReference {
                    target: "same".into(),
                    ..named("db-password")
                },
                api::FileReference {
                    target: "same".into(),
                    ..named("api-key")
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            refused(&spec),
            "secret references 'db-password' and 'api-key' have a conflicting target: 'same'"
        );
        for (target, needle) in [
            ("../etc/passwd", "without '.' or '..'"),
            ("/run/secrets", "directory of the task's secrets"),
            ("/", "a file path is needed"),
            ("a/", "without '.' or '..'"),
        ] {
            let spec = api::ServiceSpec {
                secrets: vec![api::FileReference {
                    target: target.into(),
                    ..named("db-password")
                }],
                ..Default::default()
            };
            let message = refused(&spec);
            assert!(message.contains(needle), "{target}: {message}");
            assert_eq!(message.lines().count(), 1);
        }
        let spec = api::ServiceSpec {
            configs: vec![api::FileReference {
                target: "/run/secrets/app.conf".into(),
                ..named("app.conf")
            }],
            ..Default::default()
        };
        assert!(refused(&spec).contains("holds the task's secrets"));
        let spec = api::ServiceSpec {
            configs: vec![api::FileReference {
                mode: Some(0o10000),
                ..named("app.conf")
            }],
            ..Default::default()
        };
        assert!(refused(&spec).contains("invalid mode 10000"));
        let spec = api::ServiceSpec {
            secrets: vec![api::FileReference::default()],
            ..Default::default()
        };
        assert!(refused(&spec).contains("source is required"));
    }
}
