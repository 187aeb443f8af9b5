//! One `services.NAME` entry of one file: every key the model carries, read with its type
//! checked; keys shoal ignores are type-checked and noted for the warning; anything else is an
//! unknown key. `env_file` is folded into `environment` here, as Docker does per file.

use std::collections::BTreeMap;

use yaml_serde::Value;

use crate::{
    context::FileCtx,
    error::{Fault, Res, invalid},
    keypath::KeyPath,
    model::{Healthcheck, Service, ServiceNetwork},
    node::Node,
    unsupported,
};

/// The keys the model carries.
const MODEL_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "networks",
    "deploy",
    "healthcheck",
    "configs",
    "secrets",
    "volumes",
    "working_dir",
    "user",
    "hostname",
    "stop_signal",
    "stop_grace_period",
    "labels",
];

/// Reads one service of one file.
pub(crate) fn parse(name: &str, node: Node, ctx: &mut FileCtx) -> Res<Service> {
    let entries = node.entries()?;
    let mut service = Service {
        name: name.to_string(),
        ..Service::default()
    };
    let mut environment: Vec<(String, Option<String>)> = Vec::new();
    for (key, value, path) in &entries {
        let field = Node::new(value, path);
        match key.as_str() {
            "image" => service.image = field.opt_string()?,
            "command" => service.command = program(field)?,
            "entrypoint" => service.entrypoint = program(field)?,
            "environment" => environment = field.list_or_dict()?,
            "env_file" => service.env_file = field.string_or_list()?,
            "ports" => service.ports = crate::ports::parse(field, &mut ctx.notes.warnings)?,
            "networks" => service.networks = networks(field, &mut ctx.notes.unsupported)?,
            "deploy" => service.deploy = crate::deploy::parse(field, &mut ctx.notes.unsupported)?,
            "healthcheck" => service.healthcheck = Some(healthcheck(field)?),
            "configs" => service.configs = crate::filerefs::parse(field)?,
            "secrets" => service.secrets = crate::filerefs::parse(field)?,
            "volumes" => {
                service.volumes = crate::volumes::parse(
                    field,
                    ctx.working_dir,
                    ctx.lookup,
                    &mut ctx.notes.unsupported,
                )?
            }
            "working_dir" => service.working_dir = field.opt_string()?,
            "user" => service.user = field.opt_string()?,
            "hostname" => service.hostname = field.opt_string()?,
            "stop_signal" => service.stop_signal = field.opt_string()?,
            "stop_grace_period" => service.stop_grace_period = Some(field.duration()?),
            "labels" => service.labels = field.labels()?,
            _ if key.starts_with("x-") => {}
            _ if unsupported::is_ignored(key) => {
                unsupported::check_shape(key, field)?;
                if unsupported::DEPRECATED.iter().any(|(k, _)| k == key) {
                    ctx.notes.deprecated.push(key.clone());
                } else {
                    ctx.notes.unsupported.push(key.clone());
                }
            }
            _ => return Err(invalid(path, "unknown key")),
        }
    }
    debug_assert!(MODEL_KEYS.iter().all(|k| !unsupported::is_ignored(k)));
    service.environment = resolve_environment(&service.env_file, environment, node.path, ctx)?;
    Ok(service)
}

/// `command`/`entrypoint`: a list of strings, or a string split as a shell would (without
/// running one). Empty is unset, as in Docker.
fn program(node: Node) -> Res<Option<Vec<String>>> {
    let argv = match node.value {
        Value::String(text) => crate::shellwords::split(text)
            .map_err(|why| invalid(node.path, format!("cannot split `{text}`: it {why}")))?,
        Value::Sequence(_) => node
            .items()?
            .into_iter()
            .map(|(item, path)| Node::new(item, &path).str().map(str::to_string))
            .collect::<Res<_>>()?,
        _ => return Err(node.wrong_type("a string or a list of strings")),
    };
    Ok((!argv.is_empty()).then_some(argv))
}

/// `networks:` as a list of names or a map of name to null or settings.
fn networks(node: Node, unsupported: &mut Vec<String>) -> Res<Vec<ServiceNetwork>> {
    if let Value::Sequence(_) = node.value {
        return Ok(node
            .string_list()?
            .into_iter()
            .map(|name| ServiceNetwork {
                name,
                aliases: Vec::new(),
            })
            .collect());
    }
    let mut out = Vec::new();
    for (name, value, path) in node
        .entries()
        .map_err(|_| node.wrong_type("a list or a mapping"))?
    {
        check_name(&name, &path)?;
        let mut network = ServiceNetwork {
            name,
            aliases: Vec::new(),
        };
        if !value.is_null() {
            let fields = Node::new(value, &path).fields(
                &["aliases", "driver_opts", "ipv4_address", "ipv6_address"],
                false,
            )?;
            if let Some((value, path)) = fields.get("aliases") {
                network.aliases = Node::new(value, path).string_list()?;
            }
            if let Some((value, path)) = fields.get("driver_opts") {
                Node::new(value, path).string_map()?;
                unsupported.push("networks.driver_opts".into());
            }
            for key in ["ipv4_address", "ipv6_address"] {
                if let Some((value, path)) = fields.get(key) {
                    Node::new(value, path).str()?;
                    unsupported.push(format!("networks.{key}"));
                }
            }
        }
        out.push(network);
    }
    Ok(out)
}

/// Names of services, networks, volumes, secrets and configs: Docker's schema pattern.
pub(crate) fn check_name(name: &str, path: &KeyPath) -> Res<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            path,
            "invalid name (letters, digits, `.`, `_` and `-` only)",
        ));
    }
    Ok(())
}

fn healthcheck(node: Node) -> Res<Healthcheck> {
    let fields = node.fields(
        &[
            "disable",
            "interval",
            "retries",
            "test",
            "timeout",
            "start_period",
            "start_interval",
        ],
        false,
    )?;
    let mut check = Healthcheck::default();
    let duration = |key: &str| {
        fields
            .get(key)
            .map(|(value, path)| Node::new(value, path).duration())
            .transpose()
    };
    check.interval = duration("interval")?;
    check.timeout = duration("timeout")?;
    check.start_period = duration("start_period")?;
    check.start_interval = duration("start_interval")?;
    if let Some((value, path)) = fields.get("retries") {
        check.retries = Some(Node::new(value, path).u64()?);
    }
    if let Some((value, path)) = fields.get("disable") {
        check.disable = Node::new(value, path).bool()?;
    }
    if let Some((value, path)) = fields.get("test") {
        let test = Node::new(value, path);
        check.test = match value {
            Value::String(text) => vec!["CMD-SHELL".to_string(), text.clone()],
            _ => program(test)?.unwrap_or_default(),
        };
    }
    Ok(check)
}

/// Docker's `resolveEnvironment`: `env_file` variables first (files in order), then
/// `environment` over them; a variable with no value (or an empty one) takes the
/// environment's value when it has one.
fn resolve_environment(
    env_files: &[String],
    environment: Vec<(String, Option<String>)>,
    service_path: &KeyPath,
    ctx: &FileCtx,
) -> Res<BTreeMap<String, Option<String>>> {
    let mut resolved = BTreeMap::new();
    let mut update = |vars: Vec<(String, Option<String>)>| {
        for (key, value) in vars {
            let value = match value {
                Some(v) if !v.is_empty() => Some(v),
                other => (ctx.lookup)(&key).or(other),
            };
            resolved.insert(key, value);
        }
    };
    let mut from_files = Vec::new();
    for file in env_files {
        let path = crate::paths::resolve(ctx.working_dir, file);
        let vars = crate::envfile::read(&path, ctx.lookup).map_err(|error| match error {
            crate::envfile::EnvFileError::Read(source) => Fault::ReadReferenced {
                path: service_path.key("env_file"),
                target: path.clone(),
                source,
            },
            crate::envfile::EnvFileError::Parse(error) => Fault::from(error),
        })?;
        from_files.extend(vars.into_iter().map(|(k, v)| (k, Some(v))));
    }
    update(from_files);
    update(environment);
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Notes;
    use std::path::Path;

    fn read(text: &str) -> (Res<Service>, Notes) {
        let value: Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("services").key("web");
        let env = |name: &str| (name == "FROM_ENV").then(|| "env".to_string());
        let mut ctx = FileCtx {
            working_dir: Path::new("/stack"),
            lookup: &env,
            notes: Notes::default(),
        };
        let service = parse("web", Node::new(&value, &path), &mut ctx);
        (service, ctx.notes)
    }

    #[test]
    fn reads_programs_and_environment() {
        let (service, _) = read(
            "{image: x, entrypoint: shoal, command: 'whoami --port \"80\"', environment: [A=1, FROM_ENV, NONE, E=], labels: {l: }}",
        );
        let service = service.unwrap();
        assert_eq!(service.program(), ["shoal", "whoami", "--port", "80"]);
        assert_eq!(service.environment["A"].as_deref(), Some("1"));
        assert_eq!(service.environment["FROM_ENV"].as_deref(), Some("env"));
        assert_eq!(service.environment["NONE"], None);
        assert_eq!(service.environment["E"].as_deref(), Some(""));
        assert_eq!(service.labels["l"], "");
    }

    #[test]
    fn reads_networks_and_healthcheck() {
        let (service, notes) = read(
            "{networks: {front: {aliases: [www]}, back: , side: {ipv4_address: 10.0.0.9}}, healthcheck: {test: curl -f localhost, interval: 5s, retries: 3}}",
        );
        let service = service.unwrap();
        assert_eq!(service.networks[0].aliases, ["www"]);
        assert_eq!(service.networks[1].name, "back");
        let check = service.healthcheck.unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(check.retries, Some(3));
        assert_eq!(notes.unsupported, ["networks.ipv4_address"]);
    }

    #[test]
    fn notes_ignored_keys() {
        let (service, notes) = read("{command: [x], build: ., links: [a], container_name: c}");
        service.unwrap();
        assert_eq!(notes.unsupported, ["build", "links"]);
        assert_eq!(notes.deprecated, ["container_name"]);
    }

    #[test]
    fn refuses_bad_services() {
        for bad in [
            "{command: [x], bogus: 1}",
            "{command: [1]}",
            "{command: 'unclosed \"quote'}",
            "{command: [x], links: a}",
            "{command: [x], networks: {'bad name': }}",
            "{command: [x], image: }",
            "{command: [x], env_file: missing.env}",
            "{command: [x], stop_grace_period: 10}",
            "{command: [x], healthcheck: {test: [CMD], interval: soon}}",
        ] {
            assert!(read(bad).0.is_err(), "{bad} was accepted");
        }
    }
}
