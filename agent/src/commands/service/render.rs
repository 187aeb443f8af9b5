//! What the service commands print, as pure functions of API messages: the `ls` and `ps`
//! tables, `inspect`'s Docker-shaped JSON and its `--pretty` text. Docker-compatible output is
//! a contract, so the tests below freeze it.

use std::fmt::Write as _;

use shoal_control::api::{
    Mount, PortConfigMsg, ResourcesMsg, ServiceInfo, ServiceSpec, TaskInfo, UpdateConfigMsg,
};

use crate::{
    cli::filter::Filters,
    table::{self, capitalize},
    time_format::{ago, rfc3339},
};

/// `service ls`: ID NAME MODE REPLICAS COMMAND PORTS, one row per service, in the given order.
pub(crate) fn ls_table(services: &[ServiceInfo]) -> String {
    let rows: Vec<Vec<String>> = services
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
    table::render(
        &["ID", "NAME", "MODE", "REPLICAS", "COMMAND", "PORTS"],
        &rows,
    )
}

/// `service ps`: one row per task, `tasks` newest first per slot (per node for global
/// services) as the API lists them; a slot's older tasks are ` \_ name.slot` history rows.
/// Ages are as seen at `now_ms`.
pub(crate) fn ps_table(tasks: &[TaskInfo], now_ms: u64) -> String {
    let mut rows = Vec::new();
    let mut previous_group: Option<(String, u64, String)> = None;
    for task in tasks {
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
                "{} {}{}",
                capitalize(&task.state),
                ago(now_ms, task.timestamp_ms),
                health_suffix(&task.health)
            ),
            if task.error.is_empty() {
                String::new()
            } else {
                format!("\"{}\"", task.error)
            },
            String::new(),
        ]);
    }
    table::render(
        &[
            "ID",
            "NAME",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ],
        &rows,
    )
}

/// A running task's health as `docker ps` shows a container's: " (healthy)".
fn health_suffix(health: &str) -> String {
    match health {
        "" => String::new(),
        "starting" => " (health: starting)".into(),
        other => format!(" ({other})"),
    }
}

/// `service inspect`: a JSON array of the services in Docker's shape.
pub(super) fn inspect_json(services: &[ServiceInfo]) -> serde_json::Result<String> {
    let shaped: Vec<serde_json::Value> = services.iter().map(docker_shape).collect();
    serde_json::to_string_pretty(&shaped)
}

/// The fields of `docker service inspect` that shoal has, in Docker's shape.
pub(crate) fn docker_shape(service: &ServiceInfo) -> serde_json::Value {
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
    let mut shaped = serde_json::json!({
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
                    "Mounts": spec.mounts.iter().map(mount_json).collect::<Vec<_>>(),
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
    });
    add_stack_fields(&mut shaped["Spec"], &spec);
    super::files::add_json(&mut shaped["Spec"]["TaskTemplate"]["ContainerSpec"], &spec);
    shaped
}

/// Labels, network aliases, the process settings and the per-node limit in `Spec`, where
/// Docker has them: `Labels` always, the others only when set (Docker's `omitempty`).
fn add_stack_fields(shaped: &mut serde_json::Value, spec: &ServiceSpec) {
    let labels: serde_json::Map<String, serde_json::Value> = spec
        .labels
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().into()))
        .collect();
    shaped["Labels"] = labels.into();
    let template = &mut shaped["TaskTemplate"];
    for (key, value) in [
        ("Dir", &spec.workdir),
        ("User", &spec.user),
        ("Hostname", &spec.hostname),
        ("StopSignal", &spec.stop_signal),
    ] {
        if !value.is_empty() {
            template["ContainerSpec"][key] = value.clone().into();
        }
    }
    if let Some(check) = &spec.healthcheck {
        // Docker's HealthConfig: durations in nanoseconds, zero values omitted.
        let mut health = serde_json::json!({ "Test": check.test });
        for (key, ms) in [
            ("Interval", check.interval_ms),
            ("Timeout", check.timeout_ms),
            ("StartPeriod", check.start_period_ms),
        ] {
            if ms > 0 {
                health[key] = (ms * 1_000_000).into();
            }
        }
        if check.retries > 0 {
            health["Retries"] = check.retries.into();
        }
        template["ContainerSpec"]["Healthcheck"] = health;
    }
    if spec.max_replicas_per_node > 0 {
        template["Placement"]["MaxReplicas"] = spec.max_replicas_per_node.into();
    }
    template["Resources"] = docker_resources(spec.resources.unwrap_or_default());
    if let Some(networks) = template["Networks"].as_array_mut() {
        for network in networks {
            let aliases: Vec<&String> = spec
                .network_aliases
                .iter()
                .filter(|a| network["Target"] == a.network.as_str())
                .flat_map(|a| &a.aliases)
                .collect();
            if !aliases.is_empty() {
                network["Aliases"] = serde_json::json!(aliases);
            }
        }
    }
}

/// Docker's `Resources`: `Limits` and `Reservations` always, their fields when set.
fn docker_resources(r: ResourcesMsg) -> serde_json::Value {
    let set = |fields: &[(&str, u64)]| -> serde_json::Map<String, serde_json::Value> {
        fields
            .iter()
            .filter(|(_, value)| *value > 0)
            .map(|(key, value)| ((*key).to_owned(), (*value).into()))
            .collect()
    };
    let limits = set(&[
        ("NanoCPUs", r.limit_nano_cpus),
        ("MemoryBytes", r.limit_memory_bytes),
        ("Pids", r.limit_pids),
    ]);
    let reservations = set(&[
        ("NanoCPUs", r.reserve_nano_cpus),
        ("MemoryBytes", r.reserve_memory_bytes),
    ]);
    serde_json::json!({ "Limits": limits, "Reservations": reservations })
}

/// Ports in Docker's `PortConfig` shape; an open published port (0) is left out, as Docker
/// does in a spec.
fn docker_ports(ports: &[PortConfigMsg]) -> Vec<serde_json::Value> {
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
            // shoal's own key, only where it differs from the default (client kept).
            if p.source == "snat" {
                port["Source"] = "snat".into();
            }
            port
        })
        .collect()
}

/// `service inspect --pretty`: Docker's human-readable layout, tab-aligned.
pub(super) fn pretty(service: &ServiceInfo) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "\nID:\t\t{}", service.id);
    let _ = writeln!(out, "Name:\t\t{}", spec.name);
    if !spec.labels.is_empty() {
        let _ = writeln!(out, "Labels:");
        let mut labels: Vec<_> = spec.labels.iter().collect();
        labels.sort_by(|a, b| a.key.cmp(&b.key));
        for kv in labels {
            match kv.value.as_str() {
                "" => writeln!(out, " {}", kv.key),
                value => writeln!(out, " {}={value}", kv.key),
            }
            .ok();
        }
    }
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
    if spec.max_replicas_per_node > 0 {
        let _ = writeln!(
            out,
            " Max Replicas Per Node:   {}",
            spec.max_replicas_per_node
        );
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
    if !spec.workdir.is_empty() {
        let _ = writeln!(out, " Dir:\t\t{}", spec.workdir);
    }
    if !spec.user.is_empty() {
        let _ = writeln!(out, " User: {}", spec.user);
    }
    if !spec.mounts.is_empty() {
        let _ = writeln!(out, "Mounts:");
        for m in &spec.mounts {
            let _ = writeln!(
                out,
                " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
                m.target,
                m.source,
                m.readonly,
                mount_type(m)
            );
        }
    }
    super::files::pretty(&mut out, &spec);
    pretty_resources(&mut out, spec.resources.unwrap_or_default());
    let _ = writeln!(out, "Endpoint Mode:\t{}", endpoint_mode(&spec));
    for vip in &service.virtual_ips {
        let _ = writeln!(out, " VirtualIP:\t{} on {}", vip.addr, vip.network_id);
    }
    out
}

/// Docker's `Resources:` block of `--pretty`: what is set, reservations first.
fn pretty_resources(out: &mut String, r: ResourcesMsg) {
    if r == ResourcesMsg::default() {
        return;
    }
    let _ = writeln!(out, "Resources:");
    for (title, cpus, memory, pids) in [
        (
            "Reservations",
            r.reserve_nano_cpus,
            r.reserve_memory_bytes,
            0,
        ),
        (
            "Limits",
            r.limit_nano_cpus,
            r.limit_memory_bytes,
            r.limit_pids,
        ),
    ] {
        if cpus == 0 && memory == 0 && pids == 0 {
            continue;
        }
        let _ = writeln!(out, " {title}:");
        if cpus > 0 {
            let _ = writeln!(out, "  CPU:\t\t{}", cpus as f64 / 1e9);
        }
        if memory > 0 {
            let _ = writeln!(out, "  Memory:\t{}", binary_size(memory));
        }
        if pids > 0 {
            let _ = writeln!(out, "  PIDs:\t\t{pids}");
        }
    }
}

/// go-units' `BytesSize`: `64MiB`, `1.5GiB` (4 significant digits).
pub(crate) fn binary_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < units.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    let text = format!("{size:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", units[unit])
}

/// A mount's type; empty (an older leader's answer) means a bind.
fn mount_type(m: &Mount) -> &str {
    if m.r#type.is_empty() {
        "bind"
    } else {
        &m.r#type
    }
}

/// Docker's `Mount` in a service's `ContainerSpec`.
fn mount_json(m: &Mount) -> serde_json::Value {
    let mut json = serde_json::json!({
        "Type": mount_type(m), "Source": m.source, "Target": m.target, "ReadOnly": m.readonly,
    });
    if mount_type(m) == "tmpfs" {
        let mut options = serde_json::Map::new();
        if m.tmpfs_size_bytes > 0 {
            options.insert("SizeBytes".into(), m.tmpfs_size_bytes.into());
        }
        if m.tmpfs_mode > 0 {
            options.insert("Mode".into(), m.tmpfs_mode.into());
        }
        json["TmpfsOptions"] = options.into();
    }
    json
}

/// The spec's endpoint mode; empty means Docker's default, `vip`.
fn endpoint_mode(spec: &ServiceSpec) -> &str {
    if spec.endpoint_mode.is_empty() {
        "vip"
    } else {
        &spec.endpoint_mode
    }
}

/// `5s`, or `1500ms` when not whole seconds.
fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A service's name (empty if it came without a spec).
pub(crate) fn name_of(s: &ServiceInfo) -> &str {
    s.spec.as_ref().map_or("", |spec| spec.name.as_str())
}

/// `service ls --filter`: `id` and `name` are prefixes, `mode` replicated or global, `label`
/// a label (and its value), as Docker's.
pub(crate) fn matches(service: &ServiceInfo, filters: &Filters) -> bool {
    let spec = service.spec.clone().unwrap_or_default();
    let mode = if spec.mode == "global" {
        "global"
    } else {
        "replicated"
    };
    filters.allow("id", |v| service.id.starts_with(v))
        && filters.allow("name", |v| spec.name.starts_with(v))
        && filters.allow("mode", |v| v == mode)
        && filters.allow_labels(&spec.labels)
}

/// The 12-character ID prefix Docker's tables show.
pub(crate) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use shoal_control::api::{
        HealthCheckMsg, KeyValue, Mount, NetworkAliases, PortConfigMsg, RestartPolicyMsg,
        ServiceInfo, ServiceSpec, TaskInfo, UpdateConfigMsg, VirtualIp,
    };

    /// 2026-11-23T07:24:41Z.
    const NOW_MS: u64 = 1_795_418_681_000;

    fn port(published: u32, target: u32, protocol: &str) -> PortConfigMsg {
        PortConfigMsg {
            protocol: protocol.into(),
            target_port: target,
            published_port: published,
            publish_mode: "ingress".into(),
            source: String::new(),
        }
    }

    /// A replicated service with every field `inspect` shows set.
    fn web() -> ServiceInfo {
        let update = UpdateConfigMsg {
            parallelism: 2,
            delay_ms: 10_000,
            failure_action: "pause".into(),
            monitor_ms: 5_000,
            max_failure_ratio_milli: 250,
            order: "start-first".into(),
        };
        ServiceInfo {
            id: "x1mvxsw9e2aqk3e4lpt7dj0mc".into(),
            spec: Some(ServiceSpec {
                name: "web".into(),
                command: vec![
                    "shoal".into(),
                    "whoami".into(),
                    "--port".into(),
                    "80".into(),
                ],
                env: vec![KeyValue {
                    key: "GREETING".into(),
                    value: "hello".into(),
                }],
                mounts: vec![Mount {
                    source: "/srv/data".into(),
                    target: "/data".into(),
                    readonly: true,
                    r#type: "bind".into(),
                    ..Default::default()
                }],
                mode: "replicated".into(),
                replicas: 3,
                constraints: vec!["node.role==worker".into(), "node.labels.zone==a".into()],
                restart: Some(RestartPolicyMsg {
                    condition: "on-failure".into(),
                    delay_ms: 5_000,
                    max_attempts: 3,
                    window_ms: 60_000,
                }),
                update: Some(update.clone()),
                rollback: Some(UpdateConfigMsg {
                    parallelism: 1,
                    delay_ms: 1_500,
                    failure_action: "continue".into(),
                    order: "stop-first".into(),
                    ..update
                }),
                stop_grace_ms: 10_000,
                force_update: 1,
                networks: vec!["n8l2c5ufyo0zq3ykj6v1e4w7r".into()],
                endpoint_mode: "vip".into(),
                ports: vec![port(8080, 80, "tcp"), port(0, 53, "udp")],
                labels: vec![KeyValue {
                    key: "com.docker.stack.namespace".into(),
                    value: "web".into(),
                }],
                network_aliases: vec![NetworkAliases {
                    network: "n8l2c5ufyo0zq3ykj6v1e4w7r".into(),
                    aliases: vec!["front".into()],
                }],
                workdir: "/srv".into(),
                user: "nobody".into(),
                hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
                stop_signal: "SIGUSR1".into(),
                max_replicas_per_node: 2,
                secrets: Vec::new(),
                configs: Vec::new(),
                healthcheck: Some(HealthCheckMsg {
                    test: vec!["CMD-SHELL".into(), "test -f /ok".into()],
                    interval_ms: 2_000,
                    retries: 2,
                    ..Default::default()
                }),
                command_shape: None,
                resources: Default::default(),
            }),
            version: 42,
            created_at_ms: 1_795_418_000_000,
            updated_at_ms: 1_795_418_600_500,
            desired_tasks: 3,
            running_tasks: 2,
            update_state: "completed".into(),
            update_message: "update completed".into(),
            previous_spec: None,
            virtual_ips: vec![VirtualIp {
                network_id: "n8l2c5ufyo0zq3ykj6v1e4w7r".into(),
                addr: "10.0.1.2/24".into(),
            }],
            endpoint_ports: vec![port(8080, 80, "tcp"), port(30000, 53, "udp")],
        }
    }

    /// A global service with nothing but a name and a command: the defaults show.
    fn agent() -> ServiceInfo {
        ServiceInfo {
            id: "c0ffee00deadbeef0123456789".into(),
            spec: Some(ServiceSpec {
                name: "node-agent".into(),
                command: vec!["sleep".into(), "infinity".into()],
                mode: "global".into(),
                ..Default::default()
            }),
            version: 7,
            created_at_ms: 1_795_418_000_000,
            updated_at_ms: 1_795_418_000_000,
            desired_tasks: 2,
            running_tasks: 2,
            ..Default::default()
        }
    }

    /// One task: (ID, slot, node, desired state, state, error, age at `NOW_MS`).
    type Row<'a> = (&'a str, u64, Node<'a>, &'a str, &'a str, &'a str, u64);
    /// (node ID, hostname).
    type Node<'a> = (&'a str, &'a str);

    /// The tasks of `service`, in the API's order.
    fn tasks(service: &str, rows: &[Row]) -> Vec<TaskInfo> {
        rows.iter()
            .map(
                |&(id, slot, (node_id, hostname), desired, state, error, age_ms)| TaskInfo {
                    id: id.into(),
                    service_name: service.into(),
                    slot,
                    node_id: node_id.into(),
                    node_hostname: hostname.into(),
                    desired_state: desired.into(),
                    state: state.into(),
                    error: error.into(),
                    timestamp_ms: NOW_MS - age_ms,
                    name: format!("{service}.{slot}.{id}"),
                    ..Default::default()
                },
            )
            .collect()
    }

    const NODE1: Node = ("nd1aaaaaaaaaaaaa", "node1");
    const NODE2: Node = ("nd2bbbbbbbbbbbbb", "node2");

    #[test]
    fn ls_table() {
        let expected = concat!(
            "ID             NAME         MODE         REPLICAS   COMMAND                  PORTS\n",
            "c0ffee00dead   node-agent   global       2/2        sleep infinity\n",
            "x1mvxsw9e2aq   web          replicated   2/3        shoal whoami --port 80   *:8080->80/tcp,*:30000->53/udp\n",
        );
        assert_eq!(super::ls_table(&[agent(), web()]), expected);
    }

    #[test]
    fn ps_table_with_history() {
        // Slot 1 runs after a failed task and an older shut-down one; slot 2 cannot be placed.
        #[rustfmt::skip]
        let tasks = tasks("web", &[
            ("t1newaaaaaaaaaa", 1, NODE1, "running", "running", "", 5_000),
            ("t1oldbbbbbbbbbb", 1, NODE2, "shutdown", "failed", "non-zero exit (1)", 125_000),
            ("t1oldestccccccc", 1, NODE2, "shutdown", "shutdown", "", 3 * 3_600_000),
            ("t2aaaaaaaaaaaaa", 2, NODE2, "running", "pending", "no suitable node", 500),
        ]);
        let expected = concat!(
            "ID             NAME        NODE    DESIRED STATE   CURRENT STATE                    ERROR                 PORTS\n",
            "t1newaaaaaaa   web.1       node1   Running         Running 5 seconds ago\n",
            "t1oldbbbbbbb    \\_ web.1   node2   Shutdown        Failed 2 minutes ago             \"non-zero exit (1)\"\n",
            "t1oldestcccc    \\_ web.1   node2   Shutdown        Shutdown 3 hours ago\n",
            "t2aaaaaaaaaa   web.2       node2   Running         Pending Less than a second ago   \"no suitable node\"\n",
        );
        assert_eq!(super::ps_table(&tasks, NOW_MS), expected);
    }

    #[test]
    fn ps_table_shows_health_as_docker_ps() {
        let mut tasks = tasks(
            "web",
            &[
                ("t1aaaaaaaaaaaaa", 1, NODE1, "running", "running", "", 5_000),
                (
                    "t2aaaaaaaaaaaaa",
                    2,
                    NODE1,
                    "running",
                    "starting",
                    "",
                    1_000,
                ),
                (
                    "t3aaaaaaaaaaaaa",
                    3,
                    NODE1,
                    "shutdown",
                    "running",
                    "",
                    61_000,
                ),
            ],
        );
        for (task, health) in tasks.iter_mut().zip(["healthy", "starting", "unhealthy"]) {
            task.health = health.into();
        }
        let table = super::ps_table(&tasks, NOW_MS);
        let states: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| {
                l.split("   ")
                    .filter(|c| !c.is_empty())
                    .nth(4)
                    .unwrap()
                    .trim()
            })
            .collect();
        assert_eq!(
            states,
            [
                "Running 5 seconds ago (healthy)",
                "Starting 1 second ago (health: starting)",
                "Running About a minute ago (unhealthy)"
            ]
        );
    }

    #[test]
    fn ps_table_global_groups_by_node() {
        // Global tasks have no slot: a node's older tasks are its history.
        #[rustfmt::skip]
        let tasks = tasks("node-agent", &[
            ("g1aaaaaaaaaaaaa", 0, NODE1, "running", "running", "", 61_000),
            ("g1bbbbbbbbbbbbb", 0, NODE1, "shutdown", "complete", "", 4_000_000),
            ("g2aaaaaaaaaaaaa", 0, NODE2, "running", "running", "", 1_000),
        ]);
        let expected = concat!(
            "ID             NAME                              NODE    DESIRED STATE   CURRENT STATE                ERROR   PORTS\n",
            "g1aaaaaaaaaa   node-agent.nd1aaaaaaaaaaaaa       node1   Running         Running About a minute ago\n",
            "g1bbbbbbbbbb    \\_ node-agent.nd1aaaaaaaaaaaaa   node1   Shutdown        Complete About an hour ago\n",
            "g2aaaaaaaaaa   node-agent.nd2bbbbbbbbbbbbb       node2   Running         Running 1 second ago\n",
        );
        assert_eq!(super::ps_table(&tasks, NOW_MS), expected);
    }

    #[test]
    fn inspect_json() {
        let expected = r#"[
  {
    "CreatedAt": "2026-11-23T07:13:20Z",
    "Endpoint": {
      "Ports": [
        {
          "Protocol": "tcp",
          "PublishMode": "ingress",
          "PublishedPort": 8080,
          "TargetPort": 80
        },
        {
          "Protocol": "udp",
          "PublishMode": "ingress",
          "PublishedPort": 30000,
          "TargetPort": 53
        }
      ],
      "Spec": {
        "Mode": "vip",
        "Ports": [
          {
            "Protocol": "tcp",
            "PublishMode": "ingress",
            "PublishedPort": 8080,
            "TargetPort": 80
          },
          {
            "Protocol": "udp",
            "PublishMode": "ingress",
            "TargetPort": 53
          }
        ]
      },
      "VirtualIPs": [
        {
          "Addr": "10.0.1.2/24",
          "NetworkID": "n8l2c5ufyo0zq3ykj6v1e4w7r"
        }
      ]
    },
    "ID": "x1mvxsw9e2aqk3e4lpt7dj0mc",
    "Spec": {
      "EndpointSpec": {
        "Mode": "vip",
        "Ports": [
          {
            "Protocol": "tcp",
            "PublishMode": "ingress",
            "PublishedPort": 8080,
            "TargetPort": 80
          },
          {
            "Protocol": "udp",
            "PublishMode": "ingress",
            "TargetPort": 53
          }
        ]
      },
      "Labels": {
        "com.docker.stack.namespace": "web"
      },
      "Mode": {
        "Replicated": {
          "Replicas": 3
        }
      },
      "Name": "web",
      "RollbackConfig": {
        "Delay": 1500000000,
        "FailureAction": "continue",
        "MaxFailureRatio": 0.25,
        "Monitor": 5000000000,
        "Order": "stop-first",
        "Parallelism": 1
      },
      "TaskTemplate": {
        "ContainerSpec": {
          "Command": [
            "shoal",
            "whoami",
            "--port",
            "80"
          ],
          "Dir": "/srv",
          "Env": [
            "GREETING=hello"
          ],
          "Healthcheck": {
            "Interval": 2000000000,
            "Retries": 2,
            "Test": [
              "CMD-SHELL",
              "test -f /ok"
            ]
          },
          "Hostname": "{{.Service.Name}}-{{.Task.Slot}}",
          "Mounts": [
            {
              "ReadOnly": true,
              "Source": "/srv/data",
              "Target": "/data",
              "Type": "bind"
            }
          ],
          "StopGracePeriod": 10000000000,
          "StopSignal": "SIGUSR1",
          "User": "nobody"
        },
        "ForceUpdate": 1,
        "Networks": [
          {
            "Aliases": [
              "front"
            ],
            "Target": "n8l2c5ufyo0zq3ykj6v1e4w7r"
          }
        ],
        "Placement": {
          "Constraints": [
            "node.role==worker",
            "node.labels.zone==a"
          ],
          "MaxReplicas": 2
        },
        "Resources": {
          "Limits": {},
          "Reservations": {}
        },
        "RestartPolicy": {
          "Condition": "on-failure",
          "Delay": 5000000000,
          "MaxAttempts": 3,
          "Window": 60000000000
        }
      },
      "UpdateConfig": {
        "Delay": 10000000000,
        "FailureAction": "pause",
        "MaxFailureRatio": 0.25,
        "Monitor": 5000000000,
        "Order": "start-first",
        "Parallelism": 2
      }
    },
    "UpdateStatus": {
      "Message": "update completed",
      "State": "completed"
    },
    "UpdatedAt": "2026-11-23T07:23:20Z",
    "Version": {
      "Index": 42
    }
  },
  {
    "CreatedAt": "2026-11-23T07:13:20Z",
    "Endpoint": {
      "Ports": [],
      "Spec": {
        "Mode": "vip",
        "Ports": []
      },
      "VirtualIPs": []
    },
    "ID": "c0ffee00deadbeef0123456789",
    "Spec": {
      "EndpointSpec": {
        "Mode": "vip",
        "Ports": []
      },
      "Labels": {},
      "Mode": {
        "Global": {}
      },
      "Name": "node-agent",
      "RollbackConfig": {
        "Delay": 0,
        "FailureAction": "",
        "MaxFailureRatio": 0.0,
        "Monitor": 0,
        "Order": "",
        "Parallelism": 0
      },
      "TaskTemplate": {
        "ContainerSpec": {
          "Command": [
            "sleep",
            "infinity"
          ],
          "Env": [],
          "Mounts": [],
          "StopGracePeriod": 0
        },
        "ForceUpdate": 0,
        "Networks": [],
        "Placement": {
          "Constraints": []
        },
        "Resources": {
          "Limits": {},
          "Reservations": {}
        },
        "RestartPolicy": {
          "Condition": "",
          "Delay": 0,
          "MaxAttempts": 0,
          "Window": 0
        }
      },
      "UpdateConfig": {
        "Delay": 0,
        "FailureAction": "",
        "MaxFailureRatio": 0.0,
        "Monitor": 0,
        "Order": "",
        "Parallelism": 0
      }
    },
    "UpdateStatus": null,
    "UpdatedAt": "2026-11-23T07:13:20Z",
    "Version": {
      "Index": 7
    }
  }
]"#;
        let shaped = super::inspect_json(&[web(), agent()]).expect("a JSON value serializes");
        assert_eq!(shaped, expected);
    }

    #[test]
    fn pretty() {
        let expected = concat!(
            "\n",
            "ID:\t\tx1mvxsw9e2aqk3e4lpt7dj0mc\n",
            "Name:\t\tweb\n",
            "Labels:\n",
            " com.docker.stack.namespace=web\n",
            "Service Mode:\tReplicated\n",
            " Replicas:\t3\n",
            "UpdateStatus:\n",
            " State:\t\tcompleted\n",
            " Message:\tupdate completed\n",
            "Placement:\n",
            " Constraints:\t[node.role==worker node.labels.zone==a]\n",
            " Max Replicas Per Node:   2\n",
            "UpdateConfig:\n",
            " Parallelism:\t2\n",
            " Delay:\t\t10s\n",
            " On failure:\tpause\n",
            " Monitoring Period: 5s\n",
            " Max failure ratio: 0.25\n",
            " Update order:      start-first\n",
            "RollbackConfig:\n",
            " Parallelism:\t1\n",
            " Delay:\t\t1500ms\n",
            " On failure:\tcontinue\n",
            " Monitoring Period: 5s\n",
            " Max failure ratio: 0.25\n",
            " Update order:      stop-first\n",
            "ContainerSpec:\n",
            " Command:\tshoal whoami --port 80\n",
            " Env:\t\tGREETING=hello\n",
            " Dir:\t\t/srv\n",
            " User: nobody\n",
            "Mounts:\n",
            " Target:\t/data\n",
            "  Source:\t/srv/data\n",
            "  ReadOnly:\ttrue\n",
            "  Type:\t\tbind\n",
            "Endpoint Mode:\tvip\n",
            " VirtualIP:\t10.0.1.2/24 on n8l2c5ufyo0zq3ykj6v1e4w7r\n",
        );
        assert_eq!(super::pretty(&web()), expected);
        let expected = concat!(
            "\n",
            "ID:\t\tc0ffee00deadbeef0123456789\n",
            "Name:\t\tnode-agent\n",
            "Service Mode:\tGlobal\n",
            "Placement:\n",
            "UpdateConfig:\n",
            " Parallelism:\t0\n",
            " On failure:\t\n",
            " Monitoring Period: 0s\n",
            " Max failure ratio: 0\n",
            " Update order:      \n",
            "RollbackConfig:\n",
            " Parallelism:\t0\n",
            " On failure:\t\n",
            " Monitoring Period: 0s\n",
            " Max failure ratio: 0\n",
            " Update order:      \n",
            "ContainerSpec:\n",
            " Command:\tsleep infinity\n",
            "Endpoint Mode:\tvip\n",
        );
        assert_eq!(super::pretty(&agent()), expected);
    }
}
