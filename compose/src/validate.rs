//! Checks on the merged stack that no single file can answer: every service has a program to
//! run, and every network, volume, secret and config a service uses is declared. Docker finds
//! the missing declarations only when it deploys; shoal refuses the files up front.

use crate::{
    error::{Res, invalid},
    keypath::KeyPath,
    model::{MountKind, Stack},
};

pub(crate) fn validate(stack: &Stack) -> Res<()> {
    for (name, service) in &stack.services {
        let at = KeyPath::root().key("services").key(name);
        if service.program().is_empty() {
            let why = match &service.image {
                Some(image) => format!(
                    "shoal runs programs, not images: image `{image}` alone gives nothing to run; set `command` (or `entrypoint`)"
                ),
                None => "nothing to run: set `command` (or `entrypoint`)".to_string(),
            };
            return Err(invalid(&at, why));
        }
        for (i, network) in service.networks.iter().enumerate() {
            if network.name != "default" && !stack.networks.contains_key(&network.name) {
                return Err(invalid(
                    &at.key("networks").index(i),
                    format!(
                        "network `{}` is not declared in the top-level `networks`",
                        network.name
                    ),
                ));
            }
        }
        for (i, mount) in service.volumes.iter().enumerate() {
            if let (MountKind::Volume, Some(source)) = (mount.kind, &mount.source)
                && !stack.volumes.contains_key(source)
            {
                return Err(invalid(
                    &at.key("volumes").index(i),
                    format!("volume `{source}` is not declared in the top-level `volumes`"),
                ));
            }
        }
        for (key, refs, declared) in [
            ("secrets", &service.secrets, &stack.secrets),
            ("configs", &service.configs, &stack.configs),
        ] {
            for (i, file_ref) in refs.iter().enumerate() {
                if !declared.contains_key(&file_ref.source) {
                    return Err(invalid(
                        &at.key(key).index(i),
                        format!(
                            "`{}` is not declared in the top-level `{key}`",
                            file_ref.source
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileRef, Service, ServiceNetwork};

    fn stack(service: Service) -> Stack {
        let mut stack = Stack::default();
        stack.services.insert("web".into(), service);
        stack
    }

    fn runnable() -> Service {
        Service {
            name: "web".into(),
            command: Some(vec!["run".into()]),
            ..Service::default()
        }
    }

    #[test]
    fn image_alone_is_refused_with_why() {
        let service = Service {
            name: "web".into(),
            image: Some("nginx".into()),
            ..Service::default()
        };
        let crate::error::Fault::Invalid { path, message } = validate(&stack(service)).unwrap_err()
        else {
            panic!("not an Invalid fault");
        };
        assert_eq!(path.to_string(), "services.web");
        assert!(message.contains("programs, not images"), "{message}");
    }

    #[test]
    fn references_must_be_declared() {
        assert!(validate(&stack(runnable())).is_ok());
        let mut service = runnable();
        service.networks.push(ServiceNetwork {
            name: "front".into(),
            aliases: vec![],
        });
        assert!(validate(&stack(service.clone())).is_err());
        let mut declared = stack(service);
        declared.networks.insert("front".into(), Default::default());
        assert!(validate(&declared).is_ok());
        let mut service = runnable();
        service.secrets.push(FileRef {
            source: "pw".into(),
            target: None,
            uid: None,
            gid: None,
            mode: None,
        });
        assert!(validate(&stack(service)).is_err());
    }
}
