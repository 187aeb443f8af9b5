//! Between the API's messages and the cluster model: service specs in both directions (with
//! validation and Docker's defaults), tasks and services out.

mod mounts;
mod policies;
mod resources;

use self::{
    mounts::{mount_to_api, mounts_from_api},
    policies::{restart_from_api, update_from_api, update_to_api},
};
use super::{error::Error, lookup::resolve_network, spec_fields};
use crate::{
    api,
    cluster::{
        ClusterState, CommandShape, EndpointMode, PortConfig, PortProtocol, PortSource,
        PublishMode, RestartCondition, Role, Service, ServiceMode, ServiceSpec, Task, limits,
    },
    orchestrator::parse_constraint,
};

/// Docker's default stop grace period.
const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// Checks an API spec and turns it into the model, with Docker's defaults for what is unset.
pub fn spec_from_api(spec: &api::ServiceSpec, state: &ClusterState) -> Result<ServiceSpec, Error> {
    let invalid = |m: String| Error::invalid(m);
    validate_name("service", &spec.name)?;
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return Err(invalid(
            "a service needs a command: shoal service create ... -- COMMAND [ARG...]".into(),
        ));
    }
    check_bounds(spec)?;
    let mode = match spec.mode.as_str() {
        "" | "replicated" => ServiceMode::Replicated {
            replicas: spec.replicas,
        },
        "global" => {
            if spec.replicas != 0 {
                return Err(invalid(
                    "replicas can only be used with replicated mode".into(),
                ));
            }
            ServiceMode::Global
        }
        other => {
            return Err(invalid(format!(
                "invalid mode {other:?}: expected replicated or global"
            )));
        }
    };
    let constraints = spec
        .constraints
        .iter()
        .map(|c| parse_constraint(c).map_err(invalid))
        .collect::<Result<_, _>>()?;
    let mounts = mounts_from_api(&spec.mounts)?;
    for kv in &spec.env {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(invalid(format!(
                "invalid environment variable {:?}",
                kv.key
            )));
        }
    }
    let update = update_from_api(spec.update.as_ref())?;
    let networks = networks_from_api(&spec.networks, state)?;
    let fields = spec_fields::from_api(spec, &mode, &networks, state)?;
    let (secrets, configs) = super::file_refs::from_api(spec, state)?;
    let endpoint_mode = match spec.endpoint_mode.as_str() {
        "" | "vip" => EndpointMode::Vip,
        "dnsrr" => EndpointMode::Dnsrr,
        other => {
            return Err(invalid(format!(
                "invalid endpoint mode {other:?}: expected vip or dnsrr"
            )));
        }
    };
    let ports = spec
        .ports
        .iter()
        .map(port_from_api)
        .collect::<Result<Vec<_>, _>>()?;
    if endpoint_mode == EndpointMode::Dnsrr && ports.iter().any(|p| p.mode == PublishMode::Ingress)
    {
        // Docker's words.
        return Err(invalid(
            "EndpointSpec: port published with ingress mode can't be used with dnsrr mode".into(),
        ));
    }
    let model = ServiceSpec {
        name: spec.name.clone(),
        command: spec.command.clone(),
        env: spec
            .env
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect(),
        mounts,
        mode,
        constraints,
        networks,
        endpoint_mode,
        restart: restart_from_api(spec.restart.as_ref())?,
        update,
        rollback: match &spec.rollback {
            Some(r) => update_from_api(Some(r))?,
            None => update,
        },
        stop_grace_ms: if spec.stop_grace_ms == 0 {
            DEFAULT_STOP_GRACE_MS
        } else {
            spec.stop_grace_ms
        },
        force_update: spec.force_update,
        ports,
        labels: fields.labels,
        network_aliases: fields.network_aliases,
        workdir: fields.workdir,
        user: fields.user,
        hostname: fields.hostname,
        stop_signal: fields.stop_signal,
        max_replicas_per_node: fields.max_replicas_per_node,
        secrets,
        configs,
        healthcheck: fields.healthcheck,
        command_shape: command_shape_from_api(spec)?,
        resources: resources::from_api(spec.resources.as_ref())?,
    };
    // Whatever the counts, the template as it is stored and sent must stay small.
    let encoded = postcard::to_allocvec(&model).map_or(usize::MAX, |bytes| bytes.len());
    if encoded > limits::MAX_SPEC_BYTES {
        return Err(invalid(format!(
            "the service's spec is too large: {encoded} bytes encoded, at most {} \
             (command, environment, mounts, constraints and ports together)",
            limits::MAX_SPEC_BYTES
        )));
    }
    Ok(model)
}

fn port_from_api(p: &api::PortConfigMsg) -> Result<PortConfig, Error> {
    let invalid = |m: String| Error::invalid(m);
    let protocol = match p.protocol.as_str() {
        "" | "tcp" => PortProtocol::Tcp,
        "udp" => PortProtocol::Udp,
        other => {
            return Err(invalid(format!(
                "invalid protocol {other:?}: expected tcp or udp"
            )));
        }
    };
    let mode = match p.publish_mode.as_str() {
        "" | "ingress" => PublishMode::Ingress,
        "host" => PublishMode::Host,
        other => {
            return Err(invalid(format!(
                "invalid publish mode {other:?}: expected ingress or host"
            )));
        }
    };
    let source = match (p.source.as_str(), mode) {
        ("" | "client", _) => PortSource::Client,
        ("snat", PublishMode::Ingress) => PortSource::Snat,
        ("snat", PublishMode::Host) => {
            return Err(invalid(
                "invalid source \"snat\": host mode always keeps the client's address".into(),
            ));
        }
        (other, _) => {
            return Err(invalid(format!(
                "invalid source {other:?}: expected client or snat"
            )));
        }
    };
    let port = |value: u32, what: &str| {
        u16::try_from(value)
            .map_err(|_| invalid(format!("invalid {what} port {value}: at most 65535")))
    };
    let target = port(p.target_port, "target")?;
    if target == 0 {
        return Err(invalid(
            "a published port needs a target port (1-65535)".into(),
        ));
    }
    Ok(PortConfig {
        protocol,
        target,
        published: port(p.published_port, "published")?,
        mode,
        source,
    })
}

fn port_to_api(p: &PortConfig) -> api::PortConfigMsg {
    api::PortConfigMsg {
        protocol: p.protocol.as_str().to_string(),
        target_port: p.target.into(),
        published_port: p.published.into(),
        publish_mode: p.mode.as_str().to_string(),
        source: p.source.as_str().to_string(),
    }
}

/// Refuses counts the cluster could not hold (see [`limits`]), before anything is built.
fn check_bounds(spec: &api::ServiceSpec) -> Result<(), Error> {
    if spec.replicas > limits::MAX_REPLICAS {
        return Err(Error::invalid(format!(
            "invalid replicas {}: a service may have at most {} replicas",
            spec.replicas,
            limits::MAX_REPLICAS
        )));
    }
    for (what, count, max) in [
        ("published ports", spec.ports.len(), limits::MAX_PORTS),
        ("networks", spec.networks.len(), limits::MAX_NETWORKS),
        ("mounts", spec.mounts.len(), limits::MAX_MOUNTS),
        ("environment variables", spec.env.len(), limits::MAX_ENV),
        (
            "constraints",
            spec.constraints.len(),
            limits::MAX_CONSTRAINTS,
        ),
        (
            "command words",
            spec.command.len(),
            limits::MAX_COMMAND_WORDS,
        ),
    ] {
        if count > max {
            return Err(Error::invalid(format!(
                "too many {what}: {count}, a service may have at most {max}"
            )));
        }
    }
    Ok(())
}

/// `--network` references (names, IDs or ID prefixes) to network IDs, in order. The routing
/// mesh network is Swarm's to attach (published ports), not the user's, as in Docker.
fn networks_from_api(references: &[String], state: &ClusterState) -> Result<Vec<String>, Error> {
    let mut ids: Vec<String> = Vec::with_capacity(references.len());
    for reference in references {
        let network = resolve_network(state, reference)?;
        if network.ingress {
            return Err(Error::invalid(format!(
                "service cannot be explicitly attached to the ingress network {:?}",
                network.name
            )));
        }
        if ids.contains(&network.id) {
            return Err(Error::invalid(format!(
                "network {} is given more than once",
                network.name
            )));
        }
        ids.push(network.id.clone());
    }
    Ok(ids)
}

/// A role as the API spells it.
pub fn parse_role(s: &str) -> Result<Role, Error> {
    match s {
        "worker" => Ok(Role::Worker),
        "manager" => Ok(Role::Manager),
        other => Err(Error::invalid(format!(
            "invalid role {other:?}: expected worker or manager"
        ))),
    }
}

/// Docker's rule for service and network names: letters, digits, `_`, `.`, `-`, starting
/// with a letter or digit, at most 63 characters (they become DNS labels). `kind` names the
/// object in the error.
pub fn validate_name(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {kind} name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 63 characters"
        )))
    }
}

pub fn spec_to_api(spec: &ServiceSpec) -> api::ServiceSpec {
    let (mode, replicas) = match spec.mode {
        ServiceMode::Replicated { replicas } => ("replicated", replicas),
        ServiceMode::Global => ("global", 0),
    };
    api::ServiceSpec {
        name: spec.name.clone(),
        command: spec.command.clone(),
        env: spec
            .env
            .iter()
            .map(|(key, value)| api::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: spec.mounts.iter().map(mount_to_api).collect(),
        mode: mode.to_string(),
        replicas,
        constraints: spec.constraints.iter().map(ToString::to_string).collect(),
        networks: spec.networks.clone(),
        endpoint_mode: spec.endpoint_mode.as_str().to_string(),
        restart: Some(api::RestartPolicyMsg {
            condition: match spec.restart.condition {
                RestartCondition::None => "none",
                RestartCondition::OnFailure => "on-failure",
                RestartCondition::Any => "any",
            }
            .to_string(),
            delay_ms: spec.restart.delay_ms,
            max_attempts: spec.restart.max_attempts,
            window_ms: spec.restart.window_ms,
        }),
        update: Some(update_to_api(&spec.update)),
        rollback: Some(update_to_api(&spec.rollback)),
        stop_grace_ms: spec.stop_grace_ms,
        force_update: spec.force_update,
        ports: spec.ports.iter().map(port_to_api).collect(),
        labels: spec_fields::labels_to_api(&spec.labels),
        network_aliases: spec_fields::aliases_to_api(&spec.network_aliases),
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        stop_signal: spec.stop_signal.clone(),
        max_replicas_per_node: spec.max_replicas_per_node,
        secrets: super::file_refs::to_api(&spec.secrets),
        configs: super::file_refs::to_api(&spec.configs),
        healthcheck: spec
            .healthcheck
            .as_ref()
            .map(spec_fields::healthcheck_to_api),
        command_shape: spec.command_shape.as_ref().map(|s| api::CommandShape {
            image: s.image.clone(),
            command_len: s.command_len,
        }),
        resources: resources::to_api(&spec.resources),
    }
}

/// The Docker split of the command, which must split the command the spec has.
fn command_shape_from_api(spec: &api::ServiceSpec) -> Result<Option<CommandShape>, Error> {
    let Some(shape) = &spec.command_shape else {
        return Ok(None);
    };
    if shape.command_len as usize > spec.command.len() {
        return Err(Error::invalid(format!(
            "the command shape names {} words of a command of {}",
            shape.command_len,
            spec.command.len()
        )));
    }
    Ok(Some(CommandShape {
        image: shape.image.clone(),
        command_len: shape.command_len,
    }))
}

/// `eligible_nodes`: for global services, how many nodes should run a task (Docker shows
/// global REPLICAS as running/eligible, even before the orchestrator has placed them).
pub fn service_to_api(
    service: &Service,
    state: &ClusterState,
    eligible_nodes: u64,
) -> api::ServiceInfo {
    let tasks = state
        .tasks
        .of_service(&service.id)
        .filter(|t| t.desired_state == crate::cluster::TaskState::Running);
    let (mut desired, mut running) = (0u64, 0u64);
    for task in tasks {
        desired += 1;
        if task.status.state == crate::cluster::TaskState::Running {
            running += 1;
        }
    }
    desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => eligible_nodes.max(desired),
    };
    let (update_state, update_message) = match &service.update_status {
        Some(u) => (u.state.as_str(), u.message.clone()),
        None => ("", String::new()),
    };
    api::ServiceInfo {
        id: service.id.clone(),
        spec: Some(spec_to_api(&service.spec)),
        version: service.version,
        created_at_ms: service.created_at_ms,
        updated_at_ms: service.updated_at_ms,
        desired_tasks: desired,
        running_tasks: running,
        update_state: update_state.to_string(),
        update_message,
        previous_spec: service.previous_spec.as_ref().map(spec_to_api),
        virtual_ips: service
            .virtual_ips
            .iter()
            .map(|v| api::VirtualIp {
                network_id: v.network_id.clone(),
                addr: v.addr.to_string(),
            })
            .collect(),
        endpoint_ports: service.endpoint_ports.iter().map(port_to_api).collect(),
    }
}

pub fn task_to_api(task: &Task, state: &ClusterState) -> api::TaskInfo {
    api::TaskInfo {
        id: task.id.clone(),
        service_id: task.service_id.clone(),
        service_name: task.spec.name.clone(),
        slot: task.slot,
        node_id: task.node_id.clone(),
        node_hostname: state
            .nodes
            .get(&task.node_id)
            .map(|n| n.hostname.clone())
            .unwrap_or_default(),
        desired_state: task.desired_state.as_str().to_string(),
        state: task.status.state.as_str().to_string(),
        message: task.status.message.clone(),
        error: task.status.error.clone(),
        exit_code: task.status.exit_code.unwrap_or_default(),
        has_exit_code: task.status.exit_code.is_some(),
        timestamp_ms: task.status.timestamp_ms,
        created_at_ms: task.created_at_ms,
        service_version: task.service_version,
        name: task.name(),
        networks: task
            .networks
            .iter()
            .map(|a| api::TaskNetwork {
                network_id: a.network.id.clone(),
                network_name: a.network.name.clone(),
                addr: a.addr.to_string(),
            })
            .collect(),
        health: task
            .status
            .health
            .map(|h| h.as_str().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{MountKind, TmpfsOptions};

    fn mount(kind: &str, source: &str, target: &str) -> api::Mount {
        api::Mount {
            r#type: kind.into(),
            source: source.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    fn refusal(mounts: &[api::Mount]) -> String {
        match mounts_from_api(mounts) {
            Err(Error::Invalid(message)) => message,
            other => panic!("{mounts:?} not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn mounts_of_each_kind_are_taken_as_docker_takes_them() {
        let tmpfs = api::Mount {
            tmpfs_size_bytes: 1 << 20,
            tmpfs_mode: 0o700,
            readonly: true,
            ..mount("tmpfs", "", "/scratch")
        };
        let model = mounts_from_api(&[
            // No type: a bind, as every mount was before kinds.
            mount("", "/srv", "/data"),
            mount("volume", "db-data", "/var/lib/db"),
            mount("volume", "", "/cache"),
            tmpfs.clone(),
        ])
        .unwrap();
        let kinds: Vec<MountKind> = model.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MountKind::Bind,
                MountKind::Volume,
                MountKind::Volume,
                MountKind::Tmpfs
            ]
        );
        assert_eq!(
            model[3].tmpfs,
            TmpfsOptions {
                size_bytes: 1 << 20,
                mode: 0o700
            }
        );
        // And back, unchanged but for the type, now spelled out.
        assert_eq!(mount_to_api(&model[3]), tmpfs);
        assert_eq!(mount_to_api(&model[0]).r#type, "bind");
    }

    #[test]
    fn bad_mounts_are_refused_with_one_line() {
        for (mounts, needle) in [
            (vec![mount("nfs", "x", "/y")], "invalid mount type \"nfs\""),
            (
                vec![mount("bind", "rel", "/y")],
                "'rel' mount path must be absolute",
            ),
            (
                vec![mount("volume", "v1", "rel")],
                "'rel' mount path must be absolute",
            ),
            (vec![mount("volume", "v1", "/")], "destination can't be '/'"),
            (
                vec![mount("volume", "a/b", "/y")],
                "includes invalid characters",
            ),
            (vec![mount("volume", "/abs", "/y")], "use absolute path"),
            (vec![mount("volume", "x", "/y")], "too short"),
            (
                vec![mount("tmpfs", "x", "/y")],
                "source must not be specified",
            ),
            (
                vec![api::Mount {
                    tmpfs_mode: 0o17777,
                    ..mount("tmpfs", "", "/y")
                }],
                "invalid tmpfs mode 17777",
            ),
            (
                vec![api::Mount {
                    tmpfs_size_bytes: 1,
                    ..mount("volume", "v1", "/y")
                }],
                "tmpfs options are only for mounts of type tmpfs",
            ),
            (
                vec![mount("volume", "v1", "/y"), mount("tmpfs", "", "/y")],
                "duplicate mount point: /y",
            ),
            (vec![mount("bind", "/a\0b", "/y")], "NUL"),
        ] {
            let message = refusal(&mounts);
            assert!(message.contains(needle), "{mounts:?}: {message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }
}
