//! A loaded compose [`Stack`] as the API objects `stack deploy` asks for, named and labelled as
//! Docker's `docker stack deploy` does (docker/cli `cli/compose/convert`): everything of stack
//! `web` is called `web_NAME` (unless the file gives a `name:` or the object is external) and
//! carries the label `com.docker.stack.namespace=web`; a service with no network joins
//! `web_default`; each service answers on its networks by its short compose name too (an alias,
//! so `api` reaches `web_api`).
//!
//! Pure: the files of secrets and configs are read here, but nothing asks the API.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use shoal_compose::{
    DeployMode, EndpointMode, FailureAction, FileObject, Healthcheck, MountKind, RestartCondition,
    Stack, UpdateOrder,
};
use shoal_control::api::{
    FileReference, HealthCheckMsg, KeyValue, Mount, NetworkAliases, NetworkSpec, PortConfigMsg,
    ResourcesMsg, RestartPolicyMsg, ServiceSpec, UpdateConfigMsg,
};
use shoal_control::cluster::objects::{ObjectKind, validate_data, validate_name};

/// The label that says which stack an object belongs to (Docker's).
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label on a stack's own secrets and configs that says what data they were created with
/// (`sha256:HEX`): they cannot change, so a re-deploy with other data is refused, as Docker
/// refuses it ("only updates to Labels are allowed"), instead of silently keeping the old.
pub const DIGEST_LABEL: &str = "com.shoal.stack.digest";
/// The network a service joins when it names none.
const DEFAULT_NETWORK: &str = "default";

/// What one deploy of a stack asks for, in creation order.
#[derive(Debug, Default)]
pub struct Plan {
    /// Networks the stack's services use, by full name.
    pub networks: Vec<PlannedNetwork>,
    pub secrets: Vec<PlannedFile>,
    pub configs: Vec<PlannedFile>,
    /// Services by full name; their networks are full network names.
    pub services: Vec<ServiceSpec>,
    /// What shoal leaves out of the file, one line each (Docker's "Ignoring ..." style).
    pub notes: Vec<String>,
}

/// A network a service of the stack uses.
#[derive(Debug, PartialEq)]
pub enum PlannedNetwork {
    /// The stack's own: created when missing.
    Own(NetworkSpec),
    /// Declared `external`: must exist already.
    External(String),
}

/// A secret or config a service of the stack uses.
#[derive(Debug, PartialEq)]
pub enum PlannedFile {
    /// The stack's own, read from its file: created when missing.
    Own {
        name: String,
        data: Vec<u8>,
        labels: Vec<KeyValue>,
    },
    /// Declared `external`: must exist already.
    External(String),
}

impl PlannedNetwork {
    pub fn name(&self) -> &str {
        match self {
            PlannedNetwork::Own(spec) => &spec.name,
            PlannedNetwork::External(name) => name,
        }
    }
}

/// The full name of a stack's object `name`: `STACK_NAME`.
pub fn scoped(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// The plan for deploying `stack` as `namespace`. Fails, before anything is created, on what
/// the API would refuse later (a service without a program, a secret file that cannot be read).
pub fn plan(stack: &Stack, namespace: &str) -> anyhow::Result<Plan> {
    check_namespace(namespace)?;
    let mut plan = Plan::default();
    let used_networks: BTreeSet<&str> = stack
        .services
        .values()
        .flat_map(|s| {
            let names: Vec<&str> = if s.networks.is_empty() {
                vec![DEFAULT_NETWORK]
            } else {
                s.networks.iter().map(|n| n.name.as_str()).collect()
            };
            names
        })
        .collect();
    for key in used_networks {
        plan.networks.push(network(stack, namespace, key));
    }
    let used = |pick: fn(&shoal_compose::Service) -> &Vec<shoal_compose::FileRef>| {
        stack
            .services
            .values()
            .flat_map(|s| pick(s).iter().map(|r| r.source.as_str()))
            .collect::<BTreeSet<&str>>()
    };
    for key in used(|s| &s.secrets) {
        plan.secrets.push(file_object(
            &stack.secrets,
            namespace,
            key,
            ObjectKind::Secret,
        )?);
    }
    for key in used(|s| &s.configs) {
        plan.configs.push(file_object(
            &stack.configs,
            namespace,
            key,
            ObjectKind::Config,
        )?);
    }
    for (key, service) in &stack.services {
        plan.services
            .push(service_spec(stack, namespace, key, service)?);
        if !service.labels.is_empty() {
            plan.notes.push(format!(
                "Ignoring labels of service {key}: shoal's tasks carry no labels of their own \
                 (deploy.labels are the service's)"
            ));
        }
        if service
            .healthcheck
            .as_ref()
            .is_some_and(|h| h.start_interval.is_some())
        {
            plan.notes.push(format!(
                "Ignoring healthcheck.start_interval of service {key}: checks run every interval \
                 from the start"
            ));
        }
    }
    Ok(plan)
}

/// Docker's rule for stack names: they become prefixes of object names.
fn check_namespace(namespace: &str) -> anyhow::Result<()> {
    let valid = namespace
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !valid {
        bail!(
            "invalid stack name {namespace:?}: use letters, digits, '_', '-' and '.', starting \
             with a letter or digit"
        );
    }
    Ok(())
}

/// `labels` and the stack's label, as the API takes them.
fn namespace_labels(namespace: &str, labels: &BTreeMap<String, String>) -> Vec<KeyValue> {
    let mut labels = labels.clone();
    labels.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
    labels
        .into_iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect()
}

fn network(stack: &Stack, namespace: &str, key: &str) -> PlannedNetwork {
    let declared = stack.networks.get(key);
    match declared {
        Some(n) if n.external => PlannedNetwork::External(n.name.clone().unwrap_or(key.into())),
        _ => {
            let declared = declared.cloned().unwrap_or_default();
            PlannedNetwork::Own(NetworkSpec {
                name: declared.name.clone().unwrap_or(scoped(namespace, key)),
                driver: "overlay".into(),
                subnet: declared.subnets.first().cloned().unwrap_or_default(),
                gateway: String::new(),
                attachable: declared.attachable,
                internal: declared.internal,
                labels: namespace_labels(namespace, &declared.labels),
                // `driver_opts`: kept by the network; the MTU takes effect.
                options: declared
                    .driver_opts
                    .iter()
                    .map(|(key, value)| KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                ingress: false,
            })
        }
    }
}

/// The full name of the stack's secret or config `key`.
fn file_object_name(stack: &Stack, namespace: &str, key: &str, kind: ObjectKind) -> String {
    let declared = match kind {
        ObjectKind::Secret => stack.secrets.get(key),
        ObjectKind::Config => stack.configs.get(key),
    };
    match declared {
        Some(FileObject {
            name: Some(name), ..
        }) => name.clone(),
        Some(object) if object.external => key.to_string(),
        _ => scoped(namespace, key),
    }
}

fn file_object(
    declared: &BTreeMap<String, FileObject>,
    namespace: &str,
    key: &str,
    kind: ObjectKind,
) -> anyhow::Result<PlannedFile> {
    let what = kind.as_str();
    let Some(object) = declared.get(key) else {
        bail!("{what} {key} is used by a service but not declared in the file's top-level {what}s");
    };
    if object.external {
        return Ok(PlannedFile::External(
            object.name.clone().unwrap_or(key.into()),
        ));
    }
    let Some(path) = &object.file else {
        bail!("{what} {key}: neither `file` nor `external` is set");
    };
    let data =
        std::fs::read(path).with_context(|| format!("{what} {key}: reading {}", path.display()))?;
    let name = object.name.clone().unwrap_or(scoped(namespace, key));
    validate_name(&name).map_err(|e| anyhow::anyhow!("{what} {name}: {e}"))?;
    validate_data(kind, &data)
        .map_err(|e| anyhow::anyhow!("{what} {key}: {}: {e}", path.display()))?;
    let mut labels = object.labels.clone();
    labels.insert(DIGEST_LABEL.to_string(), digest_of(&data));
    Ok(PlannedFile::Own {
        name,
        data,
        labels: namespace_labels(namespace, &labels),
    })
}

fn digest_of(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn service_spec(
    stack: &Stack,
    namespace: &str,
    key: &str,
    service: &shoal_compose::Service,
) -> anyhow::Result<ServiceSpec> {
    let command = service.program();
    if command.is_empty() {
        bail!(
            "service {key}: no command: shoal runs programs, not images; give the service a \
             `command` or an `entrypoint`"
        );
    }
    let global = service.deploy.mode == Some(DeployMode::Global);
    let mut spec = ServiceSpec {
        name: scoped(namespace, key),
        command,
        env: service
            .environment
            .iter()
            .filter_map(|(key, value)| {
                value.as_ref().map(|value| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect(),
        mounts: service
            .volumes
            .iter()
            .map(|m| mount(stack, namespace, m))
            .collect(),
        mode: if global { "global" } else { "replicated" }.into(),
        replicas: if global {
            0
        } else {
            service.deploy.replicas.unwrap_or(1)
        },
        constraints: service.deploy.placement.constraints.clone(),
        restart: Some(restart_policy(service.deploy.restart_policy)),
        update: Some(update_config(service.deploy.update_config)),
        rollback: service
            .deploy
            .rollback_config
            .map(|c| update_config(Some(c))),
        stop_grace_ms: service
            .stop_grace_period
            .map_or(0, |d| d.as_millis() as u64),
        labels: namespace_labels(namespace, &service.deploy.labels),
        workdir: service.working_dir.clone().unwrap_or_default(),
        user: service.user.clone().unwrap_or_default(),
        hostname: service.hostname.clone().unwrap_or_default(),
        stop_signal: service.stop_signal.clone().unwrap_or_default(),
        healthcheck: service
            .healthcheck
            .as_ref()
            .map(healthcheck)
            .transpose()
            .with_context(|| format!("service {key}"))?,
        max_replicas_per_node: service.deploy.placement.max_replicas_per_node.unwrap_or(0),
        resources: resources(&service.deploy.resources),
        secrets: file_references(stack, namespace, &service.secrets, ObjectKind::Secret)?,
        configs: file_references(stack, namespace, &service.configs, ObjectKind::Config)?,
        networks: Vec::new(),
        endpoint_mode: match service.deploy.endpoint_mode {
            Some(EndpointMode::Dnsrr) => "dnsrr",
            _ => "vip",
        }
        .into(),
        ports: service
            .ports
            .iter()
            .map(|p| PortConfigMsg {
                protocol: p.protocol.as_str().into(),
                target_port: p.target.into(),
                published_port: p.published.map_or(0, u32::from),
                publish_mode: p.mode.as_str().into(),
                // Compose has no word for it: the default, the client's address kept.
                source: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    let networks: Vec<(String, Vec<String>)> = if service.networks.is_empty() {
        vec![(DEFAULT_NETWORK.to_string(), Vec::new())]
    } else {
        service
            .networks
            .iter()
            .map(|n| (n.name.clone(), n.aliases.clone()))
            .collect()
    };
    for (network_key, mut aliases) in networks {
        let name = network(stack, namespace, &network_key).name().to_string();
        // Docker adds the short service name, so the stack's services find each other by it.
        if !aliases.iter().any(|a| a == key) {
            aliases.push(key.to_string());
        }
        spec.networks.push(name.clone());
        spec.network_aliases.push(NetworkAliases {
            network: name,
            aliases,
        });
    }
    Ok(spec)
}

/// A service's secrets or configs as the API takes them: the full name, and the target
/// Docker gives when the file names none (the compose key: `/run/secrets/KEY`, `/KEY`).
fn file_references(
    stack: &Stack,
    namespace: &str,
    refs: &[shoal_compose::FileRef],
    kind: ObjectKind,
) -> anyhow::Result<Vec<FileReference>> {
    let id = |what: &str, value: &Option<String>| -> anyhow::Result<u32> {
        value.as_deref().map_or(Ok(0), |v| {
            v.parse()
                .with_context(|| format!("{} {}: {what} {v:?} is not a number", kind.as_str(), v))
        })
    };
    refs.iter()
        .map(|r| {
            let target = r.target.clone().unwrap_or_else(|| match kind {
                ObjectKind::Secret => r.source.clone(),
                ObjectKind::Config => format!("/{}", r.source),
            });
            Ok(FileReference {
                name: file_object_name(stack, namespace, &r.source, kind),
                id: String::new(),
                target,
                uid: id("uid", &r.uid)?,
                gid: id("gid", &r.gid)?,
                mode: r.mode,
            })
        })
        .collect()
}

fn mount(stack: &Stack, namespace: &str, m: &shoal_compose::Mount) -> Mount {
    let source = match (m.kind, &m.source) {
        (MountKind::Volume, Some(key)) => match stack.volumes.get(key) {
            Some(v) if v.external => v.name.clone().unwrap_or(key.clone()),
            Some(v) => v.name.clone().unwrap_or(scoped(namespace, key)),
            None => scoped(namespace, key),
        },
        (_, source) => source.clone().unwrap_or_default(),
    };
    Mount {
        source,
        target: m.target.clone(),
        readonly: m.read_only,
        r#type: m.kind.as_str().into(),
        tmpfs_size_bytes: m.tmpfs_size.unwrap_or(0),
        tmpfs_mode: 0,
    }
}

/// `deploy.resources` (the loader checked the values); absent: none.
fn resources(r: &shoal_compose::Resources) -> Option<ResourcesMsg> {
    if *r == shoal_compose::Resources::default() {
        return None;
    }
    let limits = r.limits.clone().unwrap_or_default();
    let reservations = r.reservations.clone().unwrap_or_default();
    Some(ResourcesMsg {
        limit_nano_cpus: limits.nano_cpus().unwrap_or(0),
        limit_memory_bytes: limits.memory.unwrap_or(0),
        // Docker's -1 (or any negative): unlimited.
        limit_pids: limits.pids.and_then(|p| u64::try_from(p).ok()).unwrap_or(0),
        reserve_nano_cpus: reservations.nano_cpus().unwrap_or(0),
        reserve_memory_bytes: reservations.memory.unwrap_or(0),
    })
}

/// Docker's `convertHealthcheck`: `disable: true` is `["NONE"]` and takes no test.
fn healthcheck(check: &Healthcheck) -> anyhow::Result<HealthCheckMsg> {
    if check.disable {
        if !check.test.is_empty() {
            bail!("test and disable can't be set at the same time");
        }
        return Ok(HealthCheckMsg {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    let ms = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_millis() as u64);
    Ok(HealthCheckMsg {
        test: check.test.clone(),
        interval_ms: ms(check.interval),
        timeout_ms: ms(check.timeout),
        start_period_ms: ms(check.start_period),
        retries: check
            .retries
            .map_or(Ok(0), u32::try_from)
            .context("healthcheck.retries is too large")?,
    })
}

fn restart_policy(policy: Option<shoal_compose::RestartPolicy>) -> RestartPolicyMsg {
    let policy = policy.unwrap_or_default();
    let ms = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_millis() as u64);
    RestartPolicyMsg {
        condition: match policy.condition {
            Some(RestartCondition::None) => "none",
            Some(RestartCondition::OnFailure) => "on-failure",
            Some(RestartCondition::Any) | None => "any",
        }
        .into(),
        // Swarm's default delay, as `service create`.
        delay_ms: policy.delay.map_or(5_000, |d| d.as_millis() as u64),
        max_attempts: policy.max_attempts.unwrap_or(0),
        window_ms: ms(policy.window),
    }
}

/// Docker's defaults where the file says nothing: parallelism 1, pause, stop-first.
fn update_config(config: Option<shoal_compose::UpdateConfig>) -> UpdateConfigMsg {
    let config = config.unwrap_or_default();
    let ms = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_millis() as u64);
    UpdateConfigMsg {
        parallelism: config.parallelism.unwrap_or(1),
        delay_ms: ms(config.delay),
        failure_action: match config.failure_action {
            Some(FailureAction::Continue) => "continue",
            Some(FailureAction::Rollback) => "rollback",
            Some(FailureAction::Pause) | None => "pause",
        }
        .into(),
        monitor_ms: ms(config.monitor),
        max_failure_ratio_milli: config
            .max_failure_ratio
            .map_or(0, |r| (r * 1000.0).round() as u64),
        order: match config.order {
            Some(UpdateOrder::StartFirst) => "start-first",
            Some(UpdateOrder::StopFirst) | None => "stop-first",
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Loads `yaml` (written to a temp dir with `files` beside it) and plans it as `web`.
    fn plan_of(yaml: &str, files: &[(&str, &str)]) -> anyhow::Result<Plan> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("stack.yml");
        std::fs::write(&path, yaml).unwrap();
        let loaded = shoal_compose::load(&[path], &HashMap::new())?;
        plan(&loaded.stack, "web")
    }

    #[test]
    fn names_are_scoped_and_a_service_without_networks_joins_the_default_one() {
        let plan = plan_of(
            "services:\n  api:\n    command: [sleep, '60']\n    deploy: {replicas: 3}\n",
            &[],
        )
        .unwrap();
        assert_eq!(plan.services.len(), 1);
        let api = &plan.services[0];
        assert_eq!(api.name, "web_api");
        assert_eq!(api.command, ["sleep", "60"]);
        assert_eq!((api.mode.as_str(), api.replicas), ("replicated", 3));
        assert_eq!(api.networks, ["web_default"]);
        match plan.networks.as_slice() {
            [PlannedNetwork::Own(spec)] => {
                assert_eq!(spec.name, "web_default");
                assert_eq!(spec.driver, "overlay");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_networks_driver_opts_become_its_options() {
        let yaml = "services:\n  api:\n    command: [x]\n    networks: [front]\n\
                    networks:\n  front:\n    driver: overlay\n    driver_opts:\n      \
                    com.docker.network.driver.mtu: 1300\n      x.other: kept\n";
        let plan = plan_of(yaml, &[]).unwrap();
        match plan.networks.as_slice() {
            [PlannedNetwork::Own(spec)] => {
                let options: Vec<(&str, &str)> = spec
                    .options
                    .iter()
                    .map(|o| (o.key.as_str(), o.value.as_str()))
                    .collect();
                assert_eq!(
                    options,
                    [
                        ("com.docker.network.driver.mtu", "1300"),
                        ("x.other", "kept")
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn external_objects_keep_their_names_and_own_ones_are_read_from_their_files() {
        let yaml = "services:\n  api:\n    command: [x]\n    networks: [front, shared]\n    \
                    secrets: [pw, token]\n    volumes: ['data:/data', 'logs:/logs']\n\
                    networks:\n  front: {}\n  shared: {external: true, name: corp}\n\
                    secrets:\n  pw: {file: ./pw.txt}\n  token: {external: true}\n\
                    volumes:\n  data: {}\n  logs: {external: true}\n";
        let plan = plan_of(yaml, &[("pw.txt", "hunter2")]).unwrap();
        let names: Vec<&str> = plan.networks.iter().map(PlannedNetwork::name).collect();
        assert_eq!(names, ["web_front", "corp"]);
        assert_eq!(plan.services[0].networks, ["web_front", "corp"]);
        assert!(matches!(&plan.networks[1], PlannedNetwork::External(n) if n == "corp"));
        match &plan.secrets[0] {
            PlannedFile::Own { name, data, labels } => {
                assert_eq!(name, "web_pw");
                assert_eq!(data, b"hunter2");
                let label = |key: &str| labels.iter().find(|l| l.key == key).map(|l| &l.value);
                assert_eq!(label(NAMESPACE_LABEL).unwrap(), "web");
                assert_eq!(
                    label(DIGEST_LABEL).unwrap(),
                    "sha256:f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.secrets[1], PlannedFile::External("token".into()));
        let sources: Vec<&str> = plan.services[0]
            .mounts
            .iter()
            .map(|m| m.source.as_str())
            .collect();
        assert_eq!(sources, ["web_data", "logs"]);
    }

    #[test]
    fn healthchecks_become_the_specs_as_docker_converts_them() {
        let yaml = "services:\n  a:\n    command: [x]\n    healthcheck:\n      \
                    test: test -f /ok\n      interval: 2s\n      retries: 4\n      \
                    start_interval: 1s\n  b:\n    command: [x]\n    healthcheck: {disable: true}\n";
        let plan = plan_of(yaml, &[]).unwrap();
        let a = plan.services[0].healthcheck.clone().unwrap();
        assert_eq!(a.test, ["CMD-SHELL", "test -f /ok"]);
        assert_eq!((a.interval_ms, a.timeout_ms, a.retries), (2_000, 0, 4));
        assert_eq!(plan.services[1].healthcheck.clone().unwrap().test, ["NONE"]);
        assert_eq!(
            plan.notes,
            [
                "Ignoring healthcheck.start_interval of service a: checks run every interval from \
              the start"
            ]
        );
        let both = "services:\n  a:\n    command: [x]\n    \
                    healthcheck: {disable: true, test: [CMD, 'true']}\n";
        let err = format!("{:#}", plan_of(both, &[]).unwrap_err());
        assert!(
            err.ends_with("test and disable can't be set at the same time"),
            "{err}"
        );
    }

    #[test]
    fn compose_settings_become_the_specs_and_docker_defaults_fill_the_rest() {
        let yaml = "services:\n  api:\n    entrypoint: [shoal]\n    command: [whoami]\n    \
                    environment: {A: '1'}\n    ports: ['8080:80/udp']\n    \
                    stop_grace_period: 20s\n    deploy:\n      mode: global\n      \
                    endpoint_mode: dnsrr\n      restart_policy: {condition: on-failure}\n      \
                    update_config: {order: start-first, delay: 5s}\n";
        let plan = plan_of(yaml, &[]).unwrap();
        let api = &plan.services[0];
        assert_eq!(api.command, ["shoal", "whoami"]);
        assert_eq!((api.mode.as_str(), api.replicas), ("global", 0));
        assert_eq!(api.endpoint_mode, "dnsrr");
        assert_eq!(api.env[0].key, "A");
        assert_eq!(api.stop_grace_ms, 20_000);
        let port = &api.ports[0];
        assert_eq!(
            (
                port.published_port,
                port.target_port,
                port.protocol.as_str()
            ),
            (8080, 80, "udp")
        );
        let restart = api.restart.as_ref().unwrap();
        assert_eq!(
            (restart.condition.as_str(), restart.delay_ms),
            ("on-failure", 5_000)
        );
        let update = api.update.as_ref().unwrap();
        assert_eq!(
            (update.parallelism, update.delay_ms, update.order.as_str()),
            (1, 5_000, "start-first")
        );
        assert_eq!(update.failure_action, "pause");
        assert!(api.rollback.is_none());
    }

    #[test]
    fn what_cannot_be_deployed_is_refused_before_anything_is_asked() {
        let no_program = plan_of("services:\n  api:\n    entrypoint: []\n", &[]);
        assert!(no_program.is_err());
        let empty_secret = plan_of(
            "services:\n  api:\n    command: [x]\n    secrets: [pw]\nsecrets:\n  pw: {file: ./pw}\n",
            &[("pw", "")],
        )
        .unwrap_err();
        assert!(
            empty_secret.to_string().contains("larger than 0"),
            "{empty_secret}"
        );
        let bad_stack = plan(&Stack::default(), "-web").unwrap_err();
        assert!(
            bad_stack.to_string().contains("invalid stack name"),
            "{bad_stack}"
        );
    }
}
