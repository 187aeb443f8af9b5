//! Docker's `ServiceSpec` (the body of `POST /services/create` and `/services/{id}/update`) as
//! the API's [`ServiceSpec`], and a warning for every field asked for that shoal does not do.
//!
//! `ContainerSpec.Image` is the program: tasks run `Command` (Docker's entrypoint override)
//! then `Args` (its cmd); without a `Command` the program is the image itself, so
//! `docker service create /usr/bin/prog arg` runs `prog arg`. Defaults the docker CLI leaves
//! to the daemon are the `shoal` CLI's (restart any after 5 s, updates one at a time,
//! stop-first, pause on failure).

use shoal_control::api::{
    CommandShape, FileReference, HealthCheckMsg, KeyValue, Mount, NetworkAliases, PortConfigMsg,
    ResourcesMsg, RestartPolicyMsg, ServiceSpec, UpdateConfigMsg,
};

use super::json::Reader;
use crate::{commands::stack::convert::NAMESPACE_LABEL, engine::errors::ApiError};

/// A spec read from Docker's JSON, and what of it shoal ignored.
#[derive(Debug)]
pub struct Converted {
    pub spec: ServiceSpec,
    pub warnings: Vec<String>,
}

pub fn service_spec(body: serde_json::Value) -> Result<Converted, ApiError> {
    let mut warnings = Vec::new();
    let mut top = Reader::new("", body)?;
    let mut spec = ServiceSpec {
        name: top.string("Name")?,
        labels: key_values(top.string_map("Labels")?),
        ..Default::default()
    };
    let mut template = top.object("TaskTemplate")?;
    container_spec(&mut spec, template.object("ContainerSpec")?, &mut warnings)?;
    spec.restart = Some(restart_policy(
        template.object("RestartPolicy")?,
        &mut warnings,
    )?);
    let mut placement = template.object("Placement")?;
    spec.constraints = placement.strings("Constraints")?;
    spec.max_replicas_per_node = placement.u64("MaxReplicas")?;
    placement.rest(&mut warnings);
    spec.resources = resources(template.object("Resources")?, &mut warnings)?;
    // `Spec.Networks` is the deprecated place for the same list.
    let mut networks = template.objects("Networks")?;
    networks.extend(top.objects("Networks")?);
    attach_networks(&mut spec, networks, &mut warnings)?;
    spec.force_update = template.u64("ForceUpdate")?;
    template.allow("Runtime", &["", "container"]);
    template.rest(&mut warnings);

    mode(&mut spec, top.object("Mode")?, &mut warnings)?;
    spec.update = Some(
        update_config(top.object("UpdateConfig")?, &mut warnings)?.unwrap_or_else(|| {
            UpdateConfigMsg {
                parallelism: 1,
                failure_action: "pause".into(),
                order: "stop-first".into(),
                ..Default::default()
            }
        }),
    );
    spec.rollback = update_config(top.object("RollbackConfig")?, &mut warnings)?;
    endpoint_spec(&mut spec, top.object("EndpointSpec")?, &mut warnings)?;
    top.rest(&mut warnings);
    Ok(Converted { spec, warnings })
}

fn key_values(pairs: Vec<(String, String)>) -> Vec<KeyValue> {
    pairs
        .into_iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect()
}

fn container_spec(
    spec: &mut ServiceSpec,
    mut c: Reader,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let image = c.string("Image")?;
    if image.is_empty() {
        return Err(ApiError::bad_request(
            "ContainerSpec: image reference must be provided",
        ));
    }
    let command = c.strings("Command")?;
    let args = c.strings("Args")?;
    // A `Command` beside an image reference (what a compose file with `entrypoint` sends)
    // runs without it: said, since the caller may think the image matters.
    if let Some(program) = command.first()
        && *program != image
    {
        warnings.push(format!(
            "{}.Image \"{image}\" was ignored: shoal runs programs, not images (the tasks run \
             Command: {program})",
            c.path()
        ));
    }
    // With a `Command`, the image and the split are kept so the spec reads back as it was
    // sent (`service_out`); without, the argv's first word is the image already.
    spec.command_shape = if command.is_empty() {
        None
    } else {
        Some(CommandShape {
            image: image.clone(),
            command_len: u32::try_from(command.len())
                .map_err(|_| ApiError::bad_request("ContainerSpec.Command is too long"))?,
        })
    };
    spec.command = if command.is_empty() {
        std::iter::once(image).chain(args).collect()
    } else {
        command.into_iter().chain(args).collect()
    };
    spec.env = c
        .strings("Env")?
        .into_iter()
        .map(|e| match e.split_once('=') {
            Some((key, value)) => KeyValue {
                key: key.into(),
                value: value.into(),
            },
            None => KeyValue {
                key: e,
                value: String::new(),
            },
        })
        .collect();
    spec.workdir = c.string("Dir")?;
    spec.user = c.string("User")?;
    spec.hostname = c.string("Hostname")?;
    spec.stop_signal = c.string("StopSignal")?;
    spec.stop_grace_ms = c.duration_ms("StopGracePeriod")?.unwrap_or(0);
    for m in c.objects("Mounts")? {
        spec.mounts.push(mount(m, warnings)?);
    }
    spec.healthcheck = healthcheck(c.object("Healthcheck")?, warnings)?;
    container_labels(spec, c.string_map("Labels")?, c.path(), warnings);
    spec.secrets = file_references(c.objects("Secrets")?, "SecretID", "SecretName", warnings)?;
    spec.configs = file_references(c.objects("Configs")?, "ConfigID", "ConfigName", warnings)?;
    c.allow("Isolation", &["", "default"]);
    c.rest(warnings);
    Ok(())
}

/// `ContainerSpec.Labels`: shoal's tasks are no containers to label. `docker stack deploy`
/// puts the stack's label on the containers as well as on the service; a task is listed with
/// its service's labels (`GET /tasks?filters=label`, as swarmkit's), so that one loses
/// nothing. Any other is named.
fn container_labels(
    spec: &ServiceSpec,
    labels: Vec<(String, String)>,
    path: &str,
    warnings: &mut Vec<String>,
) {
    let the_services = |key: &str, value: &str| {
        key == NAMESPACE_LABEL
            && spec
                .labels
                .iter()
                .any(|kv| kv.key == key && kv.value == value)
    };
    if labels.iter().any(|(k, v)| !the_services(k, v)) {
        warnings.push(format!(
            "{path}.Labels is not supported by shoal and was ignored"
        ));
    }
}

fn mount(mut m: Reader, warnings: &mut Vec<String>) -> Result<Mount, ApiError> {
    let kind = m.string("Type")?;
    if !matches!(kind.as_str(), "bind" | "volume" | "tmpfs") {
        return Err(ApiError::bad_request(format!(
            "invalid mount config for type \"{kind}\": shoal mounts bind, volume and tmpfs"
        )));
    }
    let mut tmpfs = m.object("TmpfsOptions")?;
    let mount = Mount {
        source: m.string("Source")?,
        target: m.string("Target")?,
        readonly: m.bool("ReadOnly")?,
        r#type: kind,
        tmpfs_size_bytes: tmpfs.u64("SizeBytes")?,
        tmpfs_mode: u32::try_from(tmpfs.u64("Mode")?)
            .map_err(|_| ApiError::bad_request("invalid tmpfs mode"))?,
    };
    tmpfs.rest(warnings);
    m.allow("Consistency", &["", "default"]);
    m.rest(warnings);
    Ok(mount)
}

fn healthcheck(
    mut h: Reader,
    warnings: &mut Vec<String>,
) -> Result<Option<HealthCheckMsg>, ApiError> {
    if h.is_empty() {
        return Ok(None);
    }
    let check = HealthCheckMsg {
        test: h.strings("Test")?,
        interval_ms: h.duration_ms("Interval")?.unwrap_or(0),
        timeout_ms: h.duration_ms("Timeout")?.unwrap_or(0),
        start_period_ms: h.duration_ms("StartPeriod")?.unwrap_or(0),
        retries: u32::try_from(h.u64("Retries")?)
            .map_err(|_| ApiError::bad_request("invalid healthcheck retries"))?,
    };
    h.rest(warnings);
    Ok(Some(check))
}

/// Docker's `SecretReference`/`ConfigReference`: `File` (where and how the task sees it) and
/// the object's ID and name.
fn file_references(
    references: Vec<Reader>,
    id_key: &str,
    name_key: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<FileReference>, ApiError> {
    let mut out = Vec::new();
    for mut r in references {
        let mut file = r.object("File")?;
        let id_number = |s: String| -> Result<u32, ApiError> {
            if s.is_empty() {
                Ok(0)
            } else {
                s.parse::<u32>()
                    .map_err(|_| ApiError::bad_request(format!("invalid UID/GID {s:?}")))
            }
        };
        let reference = FileReference {
            name: r.string(name_key)?,
            id: r.string(id_key)?,
            target: file.string("Name")?,
            uid: id_number(file.string("UID")?)?,
            gid: id_number(file.string("GID")?)?,
            mode: file
                .u64_opt("Mode")?
                .map(|m| u32::try_from(m).map_err(|_| ApiError::bad_request("invalid file mode")))
                .transpose()?,
        };
        file.rest(warnings);
        r.rest(warnings);
        out.push(reference);
    }
    Ok(out)
}

/// `TaskTemplate.Resources`: limits (CPU, memory, PIDs) and reservations (CPU, memory); none
/// set is none.
fn resources(mut r: Reader, warnings: &mut Vec<String>) -> Result<Option<ResourcesMsg>, ApiError> {
    let mut limits = r.object("Limits")?;
    let mut reservations = r.object("Reservations")?;
    let msg = ResourcesMsg {
        limit_nano_cpus: limits.u64("NanoCPUs")?,
        limit_memory_bytes: limits.u64("MemoryBytes")?,
        limit_pids: limits.u64("Pids")?,
        reserve_nano_cpus: reservations.u64("NanoCPUs")?,
        reserve_memory_bytes: reservations.u64("MemoryBytes")?,
    };
    limits.rest(warnings);
    reservations.rest(warnings);
    r.rest(warnings);
    Ok((msg != ResourcesMsg::default()).then_some(msg))
}

fn restart_policy(mut r: Reader, warnings: &mut Vec<String>) -> Result<RestartPolicyMsg, ApiError> {
    let condition = match r.string("Condition")?.as_str() {
        "" => "any".to_string(),
        c @ ("none" | "on-failure" | "any") => c.to_string(),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid RestartCondition: \"{other}\""
            )));
        }
    };
    let policy = RestartPolicyMsg {
        condition,
        delay_ms: r.duration_ms("Delay")?.unwrap_or(5_000),
        max_attempts: r.u64("MaxAttempts")?,
        window_ms: r.duration_ms("Window")?.unwrap_or(0),
    };
    r.rest(warnings);
    Ok(policy)
}

fn attach_networks(
    spec: &mut ServiceSpec,
    networks: Vec<Reader>,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    for mut n in networks {
        let target = n.string("Target")?;
        if target.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{}.Target: a network ID or name is required",
                n.path()
            )));
        }
        let aliases = n.strings("Aliases")?;
        if !aliases.is_empty() {
            spec.network_aliases.push(NetworkAliases {
                network: target.clone(),
                aliases,
            });
        }
        spec.networks.push(target);
        n.rest(warnings);
    }
    Ok(())
}

fn mode(spec: &mut ServiceSpec, mut m: Reader, warnings: &mut Vec<String>) -> Result<(), ApiError> {
    for job in ["ReplicatedJob", "GlobalJob"] {
        if !m.object(job)?.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Mode.{job}: shoal runs services, not jobs"
            )));
        }
    }
    let global = m.value("Global");
    let mut replicated = m.object("Replicated")?;
    if global.is_object() {
        spec.mode = "global".into();
        spec.replicas = 0;
    } else {
        spec.mode = "replicated".into();
        spec.replicas = replicated.u64_opt("Replicas")?.unwrap_or(1);
    }
    replicated.rest(warnings);
    m.rest(warnings);
    Ok(())
}

/// `UpdateConfig`/`RollbackConfig`; one that asks for nothing is absent.
fn update_config(
    mut u: Reader,
    warnings: &mut Vec<String>,
) -> Result<Option<UpdateConfigMsg>, ApiError> {
    if u.is_empty() {
        return Ok(None);
    }
    let ratio = u.f64("MaxFailureRatio")?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ApiError::bad_request(format!(
            "{}.MaxFailureRatio must be between 0 and 1",
            u.path()
        )));
    }
    let failure_action = match u.string("FailureAction")?.as_str() {
        "" => "pause".to_string(),
        a @ ("pause" | "continue" | "rollback") => a.to_string(),
        other => {
            return Err(ApiError::bad_request(format!(
                "{}.FailureAction: unrecognized failure action {other}",
                u.path()
            )));
        }
    };
    let order = match u.string("Order")?.as_str() {
        "" => "stop-first".to_string(),
        o @ ("stop-first" | "start-first") => o.to_string(),
        other => {
            return Err(ApiError::bad_request(format!(
                "{}.Order: unrecognized update order {other}",
                u.path()
            )));
        }
    };
    let config = UpdateConfigMsg {
        parallelism: u.u64("Parallelism")?,
        delay_ms: u.duration_ms("Delay")?.unwrap_or(0),
        failure_action,
        monitor_ms: u.duration_ms("Monitor")?.unwrap_or(0),
        max_failure_ratio_milli: (ratio * 1000.0).round() as u64,
        order,
    };
    u.rest(warnings);
    Ok(Some(config))
}

fn endpoint_spec(
    spec: &mut ServiceSpec,
    mut e: Reader,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    spec.endpoint_mode = match e.string("Mode")?.as_str() {
        "" | "vip" => String::new(),
        "dnsrr" => "dnsrr".into(),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid endpoint mode \"{other}\""
            )));
        }
    };
    for mut p in e.objects("Ports")? {
        let protocol = match p.string("Protocol")?.as_str() {
            "" | "tcp" => "tcp".to_string(),
            "udp" => "udp".to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{}.Protocol: shoal publishes tcp and udp ports, not {other}",
                    p.path()
                )));
            }
        };
        let publish_mode = match p.string("PublishMode")?.as_str() {
            "" | "ingress" => "ingress".to_string(),
            "host" => "host".to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{}.PublishMode: unknown publish mode {other}",
                    p.path()
                )));
            }
        };
        let port = |v: u64| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v <= 65_535)
                .ok_or_else(|| ApiError::bad_request(format!("invalid port {v}")))
        };
        spec.ports.push(PortConfigMsg {
            protocol,
            target_port: port(p.u64("TargetPort")?)?,
            published_port: port(p.u64("PublishedPort")?)?,
            publish_mode,
            // Docker's PortConfig has no such field: the default, the client's address kept.
            source: String::new(),
        });
        p.rest(warnings);
    }
    e.rest(warnings);
    Ok(())
}
