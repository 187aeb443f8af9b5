//! `shoal service create | ls | ps | inspect | scale | update | rollback | rm`, printing what
//! Docker prints. Without `-d`, create, scale, update and rollback follow the service until it
//! converges, and exit non-zero, saying why, when it cannot.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::bail;
use shoal_control::api::{
    Empty, KeyValue, ListTasksRequest, Mount, RestartPolicyMsg, ServiceInfo, ServiceRef,
    ServiceSpec, TaskInfo, UpdateConfigMsg, UpdateServiceRequest, cluster_client::ClusterClient,
};
use tonic::transport::Channel;

use crate::{
    cli::{
        OutputFormat, RolloutArgs, ServiceCommand, ServiceCreateArgs, ServiceInspectArgs,
        ServiceUpdateArgs,
    },
    client::{status_error, with_agent},
    table::{self, capitalize},
    time_format::{ago, now_ms, rfc3339},
};

/// How long a task may stay unplaceable before `create` gives up waiting.
const PENDING_PATIENCE: Duration = Duration::from_secs(5);
/// How long to follow a service before giving up waiting.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(300);

pub fn run(host: &str, command: ServiceCommand) -> anyhow::Result<()> {
    with_agent(host, async |channel| match command {
        ServiceCommand::Create(args) => create(channel, args).await,
        ServiceCommand::Ls(args) => ls(channel, args.format).await,
        ServiceCommand::Ps(args) => ps(channel, &args.service, args.format).await,
        ServiceCommand::Inspect(args) => inspect(channel, args).await,
        ServiceCommand::Scale(args) => {
            for (service, replicas) in &args.scales {
                let mut spec = current(channel.clone(), service)
                    .await?
                    .spec
                    .unwrap_or_default();
                if spec.mode == "global" {
                    bail!("scale can only be used with replicated mode ({service} is global)");
                }
                spec.replicas = *replicas;
                let info = update(channel.clone(), service, Some(spec), false).await?;
                println!("{service} scaled to {replicas}");
                if !args.detach {
                    converge(channel.clone(), &info.id, Expect::Forward).await?;
                }
            }
            Ok(())
        }
        ServiceCommand::Update(args) => update_command(channel, args).await,
        ServiceCommand::Rollback(args) => {
            let info = update(channel.clone(), &args.service, None, true).await?;
            println!("{}", args.service);
            if !args.detach {
                converge(channel, &info.id, Expect::Rollback).await?;
            }
            Ok(())
        }
        ServiceCommand::Logs(args) => super::logs::run(channel, &args.service, args.follow).await,
        ServiceCommand::Rm(args) => {
            let mut cluster = ClusterClient::new(channel);
            for service in args.services {
                let request = ServiceRef {
                    service: service.clone(),
                };
                cluster
                    .remove_service(request)
                    .await
                    .map_err(status_error)?;
                println!("{service}");
            }
            Ok(())
        }
    })
}

async fn create(channel: Channel, args: ServiceCreateArgs) -> anyhow::Result<()> {
    if args.mode == "global" && args.replicas.is_some() {
        bail!("replicas can only be used with replicated mode");
    }
    let mut spec = ServiceSpec {
        name: args.name.unwrap_or_else(generated_name),
        command: args.command,
        env: args
            .env
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        mounts: args
            .mounts
            .into_iter()
            .map(|(source, target, readonly)| Mount {
                source,
                target,
                readonly,
            })
            .collect(),
        mode: args.mode,
        replicas: args.replicas.unwrap_or(1),
        constraints: args.constraints,
        networks: args.networks,
        endpoint_mode: args.endpoint_mode,
        ports: args.publish,
        ..Default::default()
    };
    if spec.mode == "global" {
        spec.replicas = 0;
    }
    apply_rollout(&mut spec, &args.rollout)?;
    let info = ClusterClient::new(channel.clone())
        .create_service(spec)
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{}", info.id);
    if !args.detach {
        converge(channel, &info.id, Expect::Forward).await?;
    }
    Ok(())
}

async fn update_command(channel: Channel, args: ServiceUpdateArgs) -> anyhow::Result<()> {
    if args.rollback {
        let info = update(channel.clone(), &args.service, None, true).await?;
        println!("{}", args.service);
        if !args.detach {
            converge(channel, &info.id, Expect::Rollback).await?;
        }
        return Ok(());
    }
    let mut spec = current(channel.clone(), &args.service)
        .await?
        .spec
        .unwrap_or_default();
    if let Some(replicas) = args.replicas {
        if spec.mode == "global" {
            bail!("replicas can only be used with replicated mode");
        }
        spec.replicas = replicas;
    }
    if let Some(new_args) = &args.args {
        let program = spec.command.first().cloned().unwrap_or_default();
        spec.command = std::iter::once(program)
            .chain(new_args.split_whitespace().map(str::to_string))
            .collect();
    }
    spec.env.retain(|kv| {
        !args.env_rm.contains(&kv.key) && !args.env_add.iter().any(|(k, _)| *k == kv.key)
    });
    spec.env
        .extend(args.env_add.iter().map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.clone(),
        }));
    spec.constraints.retain(|c| !args.constraint_rm.contains(c));
    spec.constraints.extend(args.constraint_add.iter().cloned());
    if !args.network_rm.is_empty() {
        let ids = network_ids(channel.clone(), &args.network_rm).await?;
        spec.networks.retain(|n| !ids.contains(n));
    }
    spec.networks.extend(args.network_add.iter().cloned());
    if let Some(mode) = &args.endpoint_mode {
        spec.endpoint_mode = mode.clone();
    }
    spec.ports.retain(|p| {
        let removed = args.publish_rm.iter().any(|(target, protocol)| {
            p.target_port == *target && protocol.as_ref().is_none_or(|proto| *proto == p.protocol)
        });
        // --publish-add of a target+protocol already published changes how it is published.
        let replaced = args
            .publish_add
            .iter()
            .any(|a| a.target_port == p.target_port && a.protocol == p.protocol);
        !removed && !replaced
    });
    spec.ports.extend(args.publish_add.iter().cloned());
    apply_rollout(&mut spec, &args.rollout)?;
    if args.force {
        spec.force_update += 1;
    }
    let info = update(channel.clone(), &args.service, Some(spec), false).await?;
    println!("{}", args.service);
    if !args.detach {
        converge(channel, &info.id, Expect::Forward).await?;
    }
    Ok(())
}

/// The IDs of networks given by name, ID or ID prefix (the spec keeps IDs).
async fn network_ids(channel: Channel, references: &[String]) -> anyhow::Result<Vec<String>> {
    let networks = ClusterClient::new(channel)
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    references
        .iter()
        .map(|r| {
            networks
                .iter()
                .find(|n| n.name == *r || n.id == *r)
                .or_else(|| networks.iter().find(|n| n.id.starts_with(r.as_str())))
                .map(|n| n.id.clone())
                .ok_or_else(|| anyhow::anyhow!("network {r} not found"))
        })
        .collect()
}

/// Applies the restart and update flags that were given onto `spec`.
fn apply_rollout(spec: &mut ServiceSpec, flags: &RolloutArgs) -> anyhow::Result<()> {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let restart = spec.restart.get_or_insert_with(|| RestartPolicyMsg {
        condition: "any".into(),
        delay_ms: 5_000,
        ..Default::default()
    });
    if let Some(c) = &flags.restart_condition {
        restart.condition = c.clone();
    }
    if let Some(d) = flags.restart_delay {
        restart.delay_ms = ms(d);
    }
    if let Some(n) = flags.restart_max_attempts {
        restart.max_attempts = n;
    }
    if let Some(d) = flags.restart_window {
        restart.window_ms = ms(d);
    }
    let update = spec.update.get_or_insert_with(|| UpdateConfigMsg {
        parallelism: 1,
        failure_action: "pause".into(),
        order: "stop-first".into(),
        ..Default::default()
    });
    if let Some(n) = flags.update_parallelism {
        update.parallelism = n;
    }
    if let Some(d) = flags.update_delay {
        update.delay_ms = ms(d);
    }
    if let Some(a) = &flags.update_failure_action {
        update.failure_action = a.clone();
    }
    if let Some(o) = &flags.update_order {
        update.order = o.clone();
    }
    if let Some(d) = flags.update_monitor {
        update.monitor_ms = ms(d);
    }
    if let Some(r) = flags.update_max_failure_ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("invalid --update-max-failure-ratio {r}: it must be between 0 and 1");
        }
        update.max_failure_ratio_milli = (r * 1000.0).round() as u64;
    }
    if let Some(d) = flags.stop_grace_period {
        spec.stop_grace_ms = ms(d);
    }
    Ok(())
}

async fn update(
    channel: Channel,
    service: &str,
    spec: Option<ServiceSpec>,
    rollback: bool,
) -> anyhow::Result<ServiceInfo> {
    let request = UpdateServiceRequest {
        service: service.to_string(),
        spec,
        rollback,
    };
    Ok(ClusterClient::new(channel)
        .update_service(request)
        .await
        .map_err(status_error)?
        .into_inner())
}

async fn services(channel: Channel) -> anyhow::Result<Vec<ServiceInfo>> {
    Ok(ClusterClient::new(channel)
        .list_services(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .services)
}

/// A service by ID, name or unique ID prefix.
async fn current(channel: Channel, reference: &str) -> anyhow::Result<ServiceInfo> {
    let all = services(channel).await?;
    let name = |s: &ServiceInfo| s.spec.as_ref().map(|x| x.name.clone()).unwrap_or_default();
    if let Some(s) = all
        .iter()
        .find(|s| s.id == reference || name(s) == reference)
    {
        return Ok(s.clone());
    }
    let matches: Vec<&ServiceInfo> = all.iter().filter(|s| s.id.starts_with(reference)).collect();
    match matches.as_slice() {
        [s] => Ok((*s).clone()),
        [] => bail!("service {reference} not found"),
        _ => bail!("service {reference} is ambiguous"),
    }
}

async fn tasks(channel: Channel, service: &str) -> anyhow::Result<Vec<TaskInfo>> {
    let request = ListTasksRequest {
        service: service.to_string(),
        node: String::new(),
    };
    Ok(ClusterClient::new(channel)
        .list_tasks(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks)
}

/// What `converge` follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A create, scale or update: a rollback means the update failed.
    Forward,
    /// A requested rollback.
    Rollback,
}

/// Follows the service until every task of its current version runs (Docker's progress), or
/// fails saying why it cannot converge.
async fn converge(channel: Channel, id: &str, expect: Expect) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let service = current(channel.clone(), id).await?;
        let name = name_of(&service).to_string();
        match service.update_state.as_str() {
            "paused" | "rollback_paused" => {
                bail!("update of {name} paused: {}", service.update_message)
            }
            "rollback_completed" if expect == Expect::Forward => {
                bail!(
                    "update of {name} failed and was rolled back: {}",
                    service.update_message
                )
            }
            _ => {}
        }
        let tasks = tasks(channel.clone(), id).await?;
        let mut live: Vec<&TaskInfo> = tasks
            .iter()
            .filter(|t| t.desired_state == "running" && t.service_version == service.version)
            .collect();
        let running = live.iter().filter(|t| t.state == "running").count() as u64;
        let updating = matches!(
            service.update_state.as_str(),
            "updating" | "rollback_started"
        );
        let desired = service.desired_tasks;
        if running == desired && live.len() as u64 == desired && !updating {
            println!("overall progress: {running} out of {desired} tasks");
            live.sort_by_key(|t| (t.slot, t.node_hostname.clone()));
            for task in &live {
                let label = if task.slot > 0 {
                    task.slot.to_string()
                } else {
                    task.node_hostname.clone()
                };
                println!("{label}/{desired}: running");
            }
            println!("verify: Service converged");
            return Ok(());
        }
        if started.elapsed() > PENDING_PATIENCE
            && let Some(stuck) = live
                .iter()
                .find(|t| t.state == "pending" && !t.error.is_empty())
        {
            bail!(
                "service {name} cannot converge: task {} is pending: {}",
                stuck.name,
                stuck.error
            );
        }
        if started.elapsed() > CONVERGE_TIMEOUT {
            bail!(
                "service {name} did not converge within {CONVERGE_TIMEOUT:?}: {running} of {desired} tasks running"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn ls(channel: Channel, format: OutputFormat) -> anyhow::Result<()> {
    let mut all = services(channel).await?;
    all.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            vec![
                short(&s.id),
                spec.name.clone(),
                spec.mode.clone(),
                format!("{}/{}", s.running_tasks, s.desired_tasks),
                spec.command.join(" "),
                s.endpoint_ports
                    .iter()
                    .map(|p| format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["ID", "NAME", "MODE", "REPLICAS", "COMMAND", "PORTS"],
            &rows
        )
    );
    Ok(())
}

async fn ps(channel: Channel, service: &str, format: OutputFormat) -> anyhow::Result<()> {
    let tasks = tasks(channel, service).await?;
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    let now_ms = now_ms();
    let mut rows = Vec::new();
    let mut previous_group: Option<(String, u64, String)> = None;
    for task in &tasks {
        // Tasks come newest first per slot (per node for global): older ones are history.
        let group = (
            task.service_name.clone(),
            task.slot,
            if task.slot == 0 {
                task.node_id.clone()
            } else {
                String::new()
            },
        );
        let base = if task.slot > 0 {
            format!("{}.{}", task.service_name, task.slot)
        } else {
            format!("{}.{}", task.service_name, task.node_id)
        };
        let name = if previous_group.as_ref() == Some(&group) {
            format!(" \\_ {base}")
        } else {
            base
        };
        previous_group = Some(group);
        rows.push(vec![
            short(&task.id),
            name,
            task.node_hostname.clone(),
            capitalize(&task.desired_state),
            format!(
                "{} {}",
                capitalize(&task.state),
                ago(now_ms, task.timestamp_ms)
            ),
            if task.error.is_empty() {
                String::new()
            } else {
                format!("\"{}\"", task.error)
            },
            String::new(),
        ]);
    }
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "NAME",
                "NODE",
                "DESIRED STATE",
                "CURRENT STATE",
                "ERROR",
                "PORTS"
            ],
            &rows
        )
    );
    Ok(())
}

async fn inspect(channel: Channel, args: ServiceInspectArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for reference in &args.services {
        found.push(current(channel.clone(), reference).await?);
    }
    if !args.pretty {
        let shaped: Vec<serde_json::Value> = found.iter().map(docker_shape).collect();
        println!("{}", serde_json::to_string_pretty(&shaped)?);
        return Ok(());
    }
    for service in &found {
        print!("{}", pretty(service));
    }
    Ok(())
}

/// The fields of `docker service inspect` that shoal has, in Docker's shape.
fn docker_shape(service: &ServiceInfo) -> serde_json::Value {
    let spec = service.spec.clone().unwrap_or_default();
    let mode = if spec.mode == "global" {
        serde_json::json!({ "Global": {} })
    } else {
        serde_json::json!({ "Replicated": { "Replicas": spec.replicas } })
    };
    let update = |u: &Option<UpdateConfigMsg>| {
        let u = u.clone().unwrap_or_default();
        serde_json::json!({
            "Parallelism": u.parallelism,
            "Delay": u.delay_ms * 1_000_000,
            "FailureAction": u.failure_action,
            "Monitor": u.monitor_ms * 1_000_000,
            "MaxFailureRatio": u.max_failure_ratio_milli as f64 / 1000.0,
            "Order": u.order,
        })
    };
    let restart = spec.restart.clone().unwrap_or_default();
    serde_json::json!({
        "ID": service.id,
        "Version": { "Index": service.version },
        "CreatedAt": rfc3339(service.created_at_ms / 1000),
        "UpdatedAt": rfc3339(service.updated_at_ms / 1000),
        "Spec": {
            "Name": spec.name,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Command": spec.command,
                    "Env": spec.env.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect::<Vec<_>>(),
                    "Mounts": spec.mounts.iter().map(|m| serde_json::json!({
                        "Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.readonly,
                    })).collect::<Vec<_>>(),
                    "StopGracePeriod": spec.stop_grace_ms * 1_000_000,
                },
                "RestartPolicy": {
                    "Condition": restart.condition,
                    "Delay": restart.delay_ms * 1_000_000,
                    "MaxAttempts": restart.max_attempts,
                    "Window": restart.window_ms * 1_000_000,
                },
                "Placement": { "Constraints": spec.constraints },
                "Networks": spec.networks.iter().map(|id| serde_json::json!({ "Target": id })).collect::<Vec<_>>(),
                "ForceUpdate": spec.force_update,
            },
            "Mode": mode,
            "UpdateConfig": update(&spec.update),
            "RollbackConfig": update(&spec.rollback),
            "EndpointSpec": { "Mode": endpoint_mode(&spec), "Ports": docker_ports(&spec.ports) },
        },
        "Endpoint": {
            "Spec": { "Mode": endpoint_mode(&spec), "Ports": docker_ports(&spec.ports) },
            "Ports": docker_ports(&service.endpoint_ports),
            "VirtualIPs": service.virtual_ips.iter().map(|v| serde_json::json!({
                "NetworkID": v.network_id, "Addr": v.addr,
            })).collect::<Vec<_>>(),
        },
        "UpdateStatus": if service.update_state.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({ "State": service.update_state, "Message": service.update_message })
        },
    })
}

/// Ports in Docker's `PortConfig` shape; an open published port (0) is left out, as Docker
/// does in a spec.
fn docker_ports(ports: &[shoal_control::api::PortConfigMsg]) -> Vec<serde_json::Value> {
    ports
        .iter()
        .map(|p| {
            let mut port = serde_json::json!({
                "Protocol": p.protocol,
                "TargetPort": p.target_port,
                "PublishMode": p.publish_mode,
            });
            if p.published_port != 0 {
                port["PublishedPort"] = p.published_port.into();
            }
            port
        })
        .collect()
}

fn pretty(service: &ServiceInfo) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "\nID:\t\t{}", service.id);
    let _ = writeln!(out, "Name:\t\t{}", spec.name);
    if spec.mode == "global" {
        let _ = writeln!(out, "Service Mode:\tGlobal");
    } else {
        let _ = writeln!(out, "Service Mode:\tReplicated");
        let _ = writeln!(out, " Replicas:\t{}", spec.replicas);
    }
    if !service.update_state.is_empty() {
        let _ = writeln!(out, "UpdateStatus:");
        let _ = writeln!(out, " State:\t\t{}", service.update_state);
        let _ = writeln!(out, " Message:\t{}", service.update_message);
    }
    let _ = writeln!(out, "Placement:");
    if !spec.constraints.is_empty() {
        let _ = writeln!(out, " Constraints:\t[{}]", spec.constraints.join(" "));
    }
    for (title, config) in [
        ("UpdateConfig", &spec.update),
        ("RollbackConfig", &spec.rollback),
    ] {
        let c = config.clone().unwrap_or_default();
        let _ = writeln!(out, "{title}:");
        let _ = writeln!(out, " Parallelism:\t{}", c.parallelism);
        if c.delay_ms > 0 {
            let _ = writeln!(out, " Delay:\t\t{}", human_ms(c.delay_ms));
        }
        let _ = writeln!(out, " On failure:\t{}", c.failure_action);
        let _ = writeln!(out, " Monitoring Period: {}", human_ms(c.monitor_ms));
        let _ = writeln!(
            out,
            " Max failure ratio: {}",
            c.max_failure_ratio_milli as f64 / 1000.0
        );
        let _ = writeln!(out, " Update order:      {}", c.order);
    }
    let _ = writeln!(out, "ContainerSpec:");
    let _ = writeln!(out, " Command:\t{}", spec.command.join(" "));
    if !spec.env.is_empty() {
        let _ = writeln!(
            out,
            " Env:\t\t{}",
            spec.env
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !spec.mounts.is_empty() {
        let _ = writeln!(out, "Mounts:");
        for m in &spec.mounts {
            let _ = writeln!(
                out,
                " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\tbind",
                m.target, m.source, m.readonly
            );
        }
    }
    let _ = writeln!(out, "Endpoint Mode:\t{}", endpoint_mode(&spec));
    for vip in &service.virtual_ips {
        let _ = writeln!(out, " VirtualIP:\t{} on {}", vip.addr, vip.network_id);
    }
    out
}

fn endpoint_mode(spec: &ServiceSpec) -> &str {
    if spec.endpoint_mode.is_empty() {
        "vip"
    } else {
        &spec.endpoint_mode
    }
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn name_of(s: &ServiceInfo) -> &str {
    s.spec.as_ref().map_or("", |spec| spec.name.as_str())
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Docker names unnamed services adjective_surname; shoal uses a short random suffix.
fn generated_name() -> String {
    let id = shoal_control::identity::NodeId::generate();
    format!("svc-{}", &id.as_str()[..8])
}
