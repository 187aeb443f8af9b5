//! Turning `service create` and `service update` flags into the service spec sent to the API.
//! Pure: what needs the API (the current spec, network IDs) is passed in.

use anyhow::bail;
use shoal_control::api::{
    HealthCheckMsg, KeyValue, NetworkAliases, RestartPolicyMsg, ServiceSpec, UpdateConfigMsg,
};

use crate::cli::service::{
    HealthArgs, RolloutArgs, ServiceCreateArgs, ServiceUpdateArgs, TaskArgs,
};

/// The spec `service create` asks for.
pub(super) fn from_create(args: ServiceCreateArgs) -> anyhow::Result<ServiceSpec> {
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
        mounts: args.mounts,
        secrets: args.secrets,
        configs: args.configs,
        mode: args.mode,
        replicas: args.replicas.unwrap_or(1),
        constraints: args.constraints,
        networks: args.networks.iter().map(|n| n.target.clone()).collect(),
        network_aliases: args
            .networks
            .iter()
            .filter(|n| !n.aliases.is_empty())
            .map(|n| NetworkAliases {
                network: n.target.clone(),
                aliases: n.aliases.clone(),
            })
            .collect(),
        labels: args
            .labels
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        endpoint_mode: args.endpoint_mode,
        ports: args.publish,
        ..Default::default()
    };
    if spec.mode == "global" {
        spec.replicas = 0;
    }
    apply_task(&mut spec, &args.task)?;
    apply_health(&mut spec, &args.health)?;
    apply_rollout(&mut spec, &args.rollout)?;
    Ok(spec)
}

/// Rejects flags that make no sense for the service as it is, before anything else is asked.
pub(super) fn check_update(spec: &ServiceSpec, args: &ServiceUpdateArgs) -> anyhow::Result<()> {
    if args.replicas.is_some() && spec.mode == "global" {
        bail!("replicas can only be used with replicated mode");
    }
    if args.task.replicas_max_per_node.is_some() && spec.mode == "global" {
        bail!("replicas-max-per-node can only be used with replicated mode");
    }
    Ok(())
}

/// Applies `service update`'s flags onto the current `spec`; `removed_networks` are the IDs
/// `--network-rm` named.
pub(super) fn apply_update(
    spec: &mut ServiceSpec,
    args: &ServiceUpdateArgs,
    removed_networks: &[String],
) -> anyhow::Result<()> {
    check_update(spec, args)?;
    if let Some(replicas) = args.replicas {
        spec.replicas = replicas;
    }
    if let Some(new_args) = &args.args {
        // Docker's `--args` replaces what follows the program, or the `Command` an Engine API
        // client gave (`sh -c` stays).
        let kept = spec
            .command_shape
            .as_ref()
            .map_or(1, |shape| (shape.command_len as usize).max(1));
        spec.command.truncate(kept);
        spec.command
            .extend(new_args.split_whitespace().map(str::to_string));
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
    spec.networks.retain(|n| !removed_networks.contains(n));
    spec.network_aliases
        .retain(|a| !removed_networks.contains(&a.network));
    for network in &args.network_add {
        spec.networks.push(network.target.clone());
        if !network.aliases.is_empty() {
            spec.network_aliases.push(NetworkAliases {
                network: network.target.clone(),
                aliases: network.aliases.clone(),
            });
        }
    }
    // As Docker: the same key twice keeps the last value.
    spec.labels.retain(|kv| {
        !args.label_rm.contains(&kv.key) && !args.label_add.iter().any(|(k, _)| *k == kv.key)
    });
    spec.labels
        .extend(args.label_add.iter().map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.clone(),
        }));
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
    // As Docker: `/data` and `/data/` are one target; --mount-add replaces what is there.
    let same_target = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    spec.mounts.retain(|m| {
        !args.mount_rm.iter().any(|t| same_target(t, &m.target))
            && !args
                .mount_add
                .iter()
                .any(|a| same_target(&a.target, &m.target))
    });
    spec.mounts.extend(args.mount_add.iter().cloned());
    // As Docker: removed by name, then added (a target taken twice is the leader's to refuse).
    spec.secrets.retain(|r| !args.secret_rm.contains(&r.name));
    spec.secrets.extend(args.secret_add.iter().cloned());
    spec.configs.retain(|r| !args.config_rm.contains(&r.name));
    spec.configs.extend(args.config_add.iter().cloned());
    apply_task(spec, &args.task)?;
    apply_health(spec, &args.health)?;
    apply_rollout(spec, &args.rollout)?;
    if args.force {
        spec.force_update += 1;
    }
    Ok(())
}

/// Applies the task's process and placement flags that were given onto `spec` (an empty value
/// goes back to the default, as in Docker).
fn apply_task(spec: &mut ServiceSpec, flags: &TaskArgs) -> anyhow::Result<()> {
    if let Some(dir) = &flags.workdir {
        spec.workdir.clone_from(dir);
    }
    if let Some(user) = &flags.user {
        spec.user.clone_from(user);
    }
    if let Some(hostname) = &flags.hostname {
        spec.hostname.clone_from(hostname);
    }
    if let Some(signal) = &flags.stop_signal {
        spec.stop_signal.clone_from(signal);
    }
    if let Some(max) = flags.replicas_max_per_node {
        if spec.mode == "global" && max > 0 {
            bail!("replicas-max-per-node can only be used with replicated mode");
        }
        spec.max_replicas_per_node = max;
    }
    apply_resources(spec, flags);
    Ok(())
}

/// `--limit-*` / `--reserve-*` that were given, onto `spec` (0 removes one, as in Docker).
fn apply_resources(spec: &mut ServiceSpec, flags: &TaskArgs) {
    let given = [
        flags.limit_cpu,
        flags.limit_memory,
        flags.limit_pids,
        flags.reserve_cpu,
        flags.reserve_memory,
    ];
    if given.iter().all(Option::is_none) {
        return;
    }
    let r = spec.resources.get_or_insert_with(Default::default);
    let pairs = [
        (flags.limit_cpu, &mut r.limit_nano_cpus),
        (flags.limit_memory, &mut r.limit_memory_bytes),
        (flags.limit_pids, &mut r.limit_pids),
        (flags.reserve_cpu, &mut r.reserve_nano_cpus),
        (flags.reserve_memory, &mut r.reserve_memory_bytes),
    ];
    for (flag, field) in pairs {
        if let Some(value) = flag {
            *field = value;
        }
    }
}

/// Applies the health check flags that were given onto `spec`, as Docker's CLI does: a check
/// is changed field by field, `--health-cmd ""` removes the test, `--no-healthcheck` replaces
/// the whole check by `NONE` and cannot be combined with the others.
fn apply_health(spec: &mut ServiceSpec, flags: &HealthArgs) -> anyhow::Result<()> {
    let any_field = flags.health_cmd.is_some()
        || flags.health_interval.is_some()
        || flags.health_timeout.is_some()
        || flags.health_retries.is_some()
        || flags.health_start_period.is_some();
    if flags.no_healthcheck {
        if any_field {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        spec.healthcheck = Some(HealthCheckMsg {
            test: vec!["NONE".into()],
            ..Default::default()
        });
        return Ok(());
    }
    if !any_field {
        return Ok(());
    }
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let check = spec.healthcheck.get_or_insert_with(Default::default);
    if check.test.first().is_some_and(|t| t == "NONE") {
        check.test.clear();
    }
    if let Some(d) = flags.health_interval {
        check.interval_ms = ms(d);
    }
    if let Some(d) = flags.health_timeout {
        check.timeout_ms = ms(d);
    }
    if let Some(d) = flags.health_start_period {
        check.start_period_ms = ms(d);
    }
    if let Some(n) = flags.health_retries {
        check.retries = n;
    }
    match flags.health_cmd.as_deref() {
        Some("") => check.test.clear(),
        Some(cmd) => check.test = vec!["CMD-SHELL".into(), cmd.into()],
        None => {}
    }
    Ok(())
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

/// Docker names unnamed services adjective_surname; shoal uses a short random suffix.
fn generated_name() -> String {
    let id = shoal_control::identity::NodeId::generate();
    format!("svc-{}", &id.as_str()[..8])
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command, service::ServiceCommand};

    fn update_args(flags: &[&str]) -> ServiceUpdateArgs {
        let argv = ["shoal", "service", "update"]
            .iter()
            .chain(flags)
            .chain(&["web"]);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Service(command) => match *command {
                ServiceCommand::Update(args) => args,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn create_args(flags: &[&str]) -> ServiceCreateArgs {
        let argv = ["shoal", "service", "create"]
            .iter()
            .chain(flags)
            .chain(&["--", "sleep", "1d"]);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Service(command) => match *command {
                ServiceCommand::Create(args) => args,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn create_takes_labels_aliases_and_the_tasks_settings() {
        let spec = from_create(create_args(&[
            "--name",
            "web_api",
            "-l",
            "com.docker.stack.namespace=web",
            "--label",
            "tier",
            "--network",
            "name=web_default,alias=api",
            "--network",
            "web_other",
            "-w",
            "/srv",
            "-u",
            "nobody:nogroup",
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "--stop-signal",
            "SIGUSR1",
            "--replicas-max-per-node",
            "2",
        ]))
        .unwrap();
        assert_eq!(
            spec.labels,
            [kv("com.docker.stack.namespace", "web"), kv("tier", "")]
        );
        assert_eq!(spec.networks, ["web_default", "web_other"]);
        assert_eq!(
            spec.network_aliases,
            [NetworkAliases {
                network: "web_default".into(),
                aliases: vec!["api".into()],
            }]
        );
        assert_eq!(
            (
                spec.workdir.as_str(),
                spec.user.as_str(),
                spec.hostname.as_str(),
                spec.stop_signal.as_str(),
                spec.max_replicas_per_node
            ),
            (
                "/srv",
                "nobody:nogroup",
                "{{.Service.Name}}-{{.Task.Slot}}",
                "SIGUSR1",
                2
            )
        );
        let err = from_create(create_args(&[
            "--mode",
            "global",
            "--replicas-max-per-node",
            "1",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "replicas-max-per-node can only be used with replicated mode"
        );
    }

    #[test]
    fn update_changes_labels_and_aliases_with_their_networks() {
        let mut spec = ServiceSpec {
            networks: vec!["n1id".into(), "n2id".into()],
            network_aliases: vec![NetworkAliases {
                network: "n1id".into(),
                aliases: vec!["old".into()],
            }],
            labels: vec![kv("a", "1"), kv("b", "2")],
            workdir: "/srv".into(),
            ..Default::default()
        };
        let args = update_args(&[
            "--network-rm",
            "front",
            "--network-add",
            "name=front,alias=api",
            "--label-add",
            "a=3",
            "--label-rm",
            "b",
            "--workdir",
            "",
            "--user",
            "1000",
        ]);
        apply_update(&mut spec, &args, &["n1id".into()]).unwrap();
        assert_eq!(spec.networks, ["n2id", "front"]);
        assert_eq!(
            spec.network_aliases,
            [NetworkAliases {
                network: "front".into(),
                aliases: vec!["api".into()],
            }]
        );
        assert_eq!(spec.labels, [kv("a", "3")]);
        assert_eq!((spec.workdir.as_str(), spec.user.as_str()), ("", "1000"));
    }

    #[test]
    fn mount_add_replaces_the_same_target_and_mount_rm_removes_by_target() {
        let mount = |kind: &str, source: &str, target: &str| shoal_control::api::Mount {
            r#type: kind.into(),
            source: source.into(),
            target: target.into(),
            ..Default::default()
        };
        let mut spec = ServiceSpec {
            mounts: vec![
                mount("bind", "/srv", "/data"),
                mount("volume", "logs", "/logs"),
            ],
            ..Default::default()
        };
        let args = update_args(&[
            "--mount-add",
            "src=db,dst=/data/",
            "--mount-add",
            "type=tmpfs,dst=/tmp/x",
            "--mount-rm",
            "/logs/",
        ]);
        apply_update(&mut spec, &args, &[]).unwrap();
        assert_eq!(
            spec.mounts,
            [
                mount("volume", "db", "/data/"),
                mount("tmpfs", "", "/tmp/x")
            ]
        );
    }

    #[test]
    fn health_flags_set_change_and_disable_the_check_as_dockers_cli() {
        let spec = from_create(create_args(&[
            "--health-cmd",
            "test -f /ok",
            "--health-interval",
            "2s",
            "--health-retries",
            "1",
        ]))
        .unwrap();
        let check = spec.healthcheck.clone().unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "test -f /ok"]);
        assert_eq!(
            (check.interval_ms, check.timeout_ms, check.retries),
            (2_000, 0, 1)
        );

        // Changed field by field.
        let mut updated = spec.clone();
        apply_update(
            &mut updated,
            &update_args(&["--health-timeout", "500ms"]),
            &[],
        )
        .unwrap();
        let check = updated.healthcheck.clone().unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "test -f /ok"]);
        assert_eq!((check.interval_ms, check.timeout_ms), (2_000, 500));

        // Disabled as a whole, and not together with a field.
        apply_update(&mut updated, &update_args(&["--no-healthcheck"]), &[]).unwrap();
        assert_eq!(updated.healthcheck.unwrap().test, ["NONE"]);
        let err =
            from_create(create_args(&["--no-healthcheck", "--health-retries", "2"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--no-healthcheck conflicts with --health-* options"
        );
        // No flag: no check.
        assert_eq!(from_create(create_args(&[])).unwrap().healthcheck, None);
    }
}
