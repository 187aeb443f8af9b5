//! Renders a [`Stack`] in the shape `docker stack config` prints: Docker's key names, its
//! string forms (Go durations, byte counts as strings), and its omissions (unset and zero
//! fields left out where Docker's `omitempty` leaves them out). The differential test compares
//! this with Docker's own output; a `shoal stack config` command can print it.

use yaml_serde::{Mapping, Value};

use crate::{
    duration,
    model::{
        Deploy, DeployMode, EndpointMode, FailureAction, FileObject, FileRef, Healthcheck, Mount,
        Network, Port, ResourceSpec, RestartCondition, RestartPolicy, Service, Stack, UpdateConfig,
        UpdateOrder, Volume,
    },
};

/// A mapping that skips what Docker omits.
#[derive(Default)]
struct Map(Mapping);

impl Map {
    fn put(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(Value::from(key), value.into());
        self
    }

    fn opt(&mut self, key: &str, value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(value) = value {
            self.put(key, value);
        }
        self
    }

    /// Only when not empty (a non-empty map or list).
    fn nonempty(&mut self, key: &str, value: Value) -> &mut Self {
        let empty = match &value {
            Value::Mapping(m) => m.is_empty(),
            Value::Sequence(s) => s.is_empty(),
            _ => false,
        };
        if !empty {
            self.put(key, value);
        }
        self
    }

    fn flag(&mut self, key: &str, on: bool) -> &mut Self {
        if on {
            self.put(key, true);
        }
        self
    }

    fn done(&mut self) -> Value {
        Value::Mapping(std::mem::take(&mut self.0))
    }
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Sequence(items.into_iter().map(|s| Value::from(s.as_str())).collect())
}

fn string_map<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    let mut map = Map::default();
    for (key, value) in items {
        map.put(key, value.as_str());
    }
    map.done()
}

fn dur(d: std::time::Duration) -> Value {
    Value::from(duration::format(d))
}

/// A duration Docker stores by value: omitted when zero.
fn dur_nonzero(d: Option<std::time::Duration>) -> Option<Value> {
    d.filter(|d| !d.is_zero()).map(dur)
}

/// The whole stack, as `docker stack config` prints it.
pub fn to_docker_value(stack: &Stack) -> Value {
    let mut root = Map::default();
    root.put("version", stack.version.as_str());
    let mut services = Map::default();
    for (name, service) in &stack.services {
        services.put(name, render_service(service));
    }
    root.put("services", services.done());
    let section = |items: Vec<(&String, Value)>| {
        let mut map = Map::default();
        for (name, value) in items {
            map.put(name, value);
        }
        map.done()
    };
    root.nonempty(
        "networks",
        section(
            stack
                .networks
                .iter()
                .map(|(k, n)| (k, render_network(n)))
                .collect(),
        ),
    );
    root.nonempty(
        "volumes",
        section(
            stack
                .volumes
                .iter()
                .map(|(k, v)| (k, render_volume(v)))
                .collect(),
        ),
    );
    root.nonempty(
        "secrets",
        section(
            stack
                .secrets
                .iter()
                .map(|(k, s)| (k, render_object(s)))
                .collect(),
        ),
    );
    root.nonempty(
        "configs",
        section(
            stack
                .configs
                .iter()
                .map(|(k, c)| (k, render_object(c)))
                .collect(),
        ),
    );
    root.done()
}

fn render_service(service: &Service) -> Value {
    let mut map = Map::default();
    map.opt("command", service.command.as_ref().map(strings));
    map.nonempty(
        "configs",
        Value::Sequence(service.configs.iter().map(render_ref).collect()),
    );
    map.nonempty("deploy", render_deploy(&service.deploy));
    map.opt("entrypoint", service.entrypoint.as_ref().map(strings));
    let mut environment = Map::default();
    for (key, value) in &service.environment {
        map_put_opt(&mut environment, key, value.as_deref());
    }
    map.nonempty("environment", environment.done());
    map.nonempty("env_file", strings(&service.env_file));
    map.opt("hostname", service.hostname.as_deref());
    map.opt(
        "healthcheck",
        service.healthcheck.as_ref().map(render_healthcheck),
    );
    map.opt("image", service.image.as_deref());
    map.nonempty("labels", string_map(&service.labels));
    let mut networks = Map::default();
    for network in &service.networks {
        let value = if network.aliases.is_empty() {
            Value::Null
        } else {
            Map::default()
                .put("aliases", strings(&network.aliases))
                .done()
        };
        networks.put(&network.name, value);
    }
    map.nonempty("networks", networks.done());
    map.nonempty(
        "ports",
        Value::Sequence(service.ports.iter().map(render_port).collect()),
    );
    map.nonempty(
        "secrets",
        Value::Sequence(service.secrets.iter().map(render_ref).collect()),
    );
    map.opt("stop_grace_period", service.stop_grace_period.map(dur));
    map.opt("stop_signal", service.stop_signal.as_deref());
    map.opt("user", service.user.as_deref());
    map.nonempty(
        "volumes",
        Value::Sequence(service.volumes.iter().map(render_mount).collect()),
    );
    map.opt("working_dir", service.working_dir.as_deref());
    map.done()
}

/// `KEY: value` or `KEY: null`.
fn map_put_opt(map: &mut Map, key: &str, value: Option<&str>) {
    map.put(key, value.map_or(Value::Null, Value::from));
}

fn render_port(port: &Port) -> Value {
    Map::default()
        .put("mode", port.mode.as_str())
        .put("target", port.target)
        .opt("published", port.published)
        .put("protocol", port.protocol.as_str())
        .done()
}

fn render_ref(file_ref: &FileRef) -> Value {
    Map::default()
        .put("source", file_ref.source.as_str())
        .opt("target", file_ref.target.as_deref())
        .opt("uid", file_ref.uid.as_deref())
        .opt("gid", file_ref.gid.as_deref())
        .opt("mode", file_ref.mode)
        .done()
}

fn render_mount(mount: &Mount) -> Value {
    let mut map = Map::default();
    map.put("type", mount.kind.as_str())
        .opt("source", mount.source.as_deref())
        .put("target", mount.target.as_str())
        .flag("read_only", mount.read_only);
    if let Some(propagation) = &mount.propagation {
        map.put(
            "bind",
            Map::default()
                .put("propagation", propagation.as_str())
                .done(),
        );
    }
    if mount.nocopy {
        map.put("volume", Map::default().put("nocopy", true).done());
    }
    if let Some(size) = mount.tmpfs_size.filter(|s| *s > 0) {
        map.put("tmpfs", Map::default().put("size", size).done());
    }
    map.done()
}

fn render_healthcheck(check: &Healthcheck) -> Value {
    Map::default()
        .nonempty("test", strings(&check.test))
        .opt("timeout", check.timeout.map(dur))
        .opt("interval", check.interval.map(dur))
        .opt("retries", check.retries)
        .opt("start_period", check.start_period.map(dur))
        .opt("start_interval", check.start_interval.map(dur))
        .flag("disable", check.disable)
        .done()
}

fn render_deploy(deploy: &Deploy) -> Value {
    let mut map = Map::default();
    map.opt(
        "mode",
        deploy.mode.map(|m| match m {
            DeployMode::Replicated => "replicated",
            DeployMode::Global => "global",
        }),
    );
    map.opt("replicas", deploy.replicas);
    map.nonempty("labels", string_map(&deploy.labels));
    map.opt(
        "update_config",
        deploy.update_config.as_ref().map(render_update),
    );
    map.opt(
        "rollback_config",
        deploy.rollback_config.as_ref().map(render_update),
    );
    let mut resources = Map::default();
    resources.opt(
        "limits",
        deploy.resources.limits.as_ref().map(render_resources),
    );
    resources.opt(
        "reservations",
        deploy.resources.reservations.as_ref().map(render_resources),
    );
    map.nonempty("resources", resources.done());
    map.opt(
        "restart_policy",
        deploy.restart_policy.as_ref().map(render_restart),
    );
    let mut placement = Map::default();
    placement.nonempty("constraints", strings(&deploy.placement.constraints));
    placement.opt(
        "max_replicas_per_node",
        deploy.placement.max_replicas_per_node,
    );
    map.nonempty("placement", placement.done());
    map.opt(
        "endpoint_mode",
        deploy.endpoint_mode.map(|m| match m {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }),
    );
    map.done()
}

fn render_update(config: &UpdateConfig) -> Value {
    Map::default()
        .opt("parallelism", config.parallelism)
        .opt("delay", dur_nonzero(config.delay))
        .opt(
            "failure_action",
            config.failure_action.map(|a| match a {
                FailureAction::Pause => "pause",
                FailureAction::Continue => "continue",
                FailureAction::Rollback => "rollback",
            }),
        )
        .opt("monitor", dur_nonzero(config.monitor))
        .opt(
            "max_failure_ratio",
            config
                .max_failure_ratio
                .filter(|r| *r != 0.0)
                // Docker stores a float32 and prints its shortest form ("0.3", not 0.300000011).
                .map(|r| r.to_string().parse::<f64>().unwrap_or(f64::from(r))),
        )
        .opt(
            "order",
            config.order.map(|o| match o {
                UpdateOrder::StopFirst => "stop-first",
                UpdateOrder::StartFirst => "start-first",
            }),
        )
        .done()
}

fn render_restart(policy: &RestartPolicy) -> Value {
    Map::default()
        .opt(
            "condition",
            policy.condition.map(|c| match c {
                RestartCondition::None => "none",
                RestartCondition::OnFailure => "on-failure",
                RestartCondition::Any => "any",
            }),
        )
        .opt("delay", policy.delay.map(dur))
        .opt("max_attempts", policy.max_attempts)
        .opt("window", policy.window.map(dur))
        .done()
}

fn render_resources(spec: &ResourceSpec) -> Value {
    Map::default()
        .opt("cpus", spec.cpus.as_deref())
        .opt("memory", spec.memory.map(|m| m.to_string()))
        .opt("pids", spec.pids)
        .done()
}

fn render_network(network: &Network) -> Value {
    let mut ipam = Map::default();
    ipam.opt("driver", network.ipam_driver.as_deref());
    let pools: Vec<Value> = network
        .subnets
        .iter()
        .map(|s| Map::default().put("subnet", s.as_str()).done())
        .collect();
    ipam.nonempty("config", Value::Sequence(pools));
    Map::default()
        .opt("name", network.name.as_deref())
        .opt("driver", network.driver.as_deref())
        .nonempty("driver_opts", string_map(&network.driver_opts))
        .nonempty("ipam", ipam.done())
        .flag("external", network.external)
        .flag("internal", network.internal)
        .flag("attachable", network.attachable)
        .nonempty("labels", string_map(&network.labels))
        .done()
}

fn render_volume(volume: &Volume) -> Value {
    Map::default()
        .opt("name", volume.name.as_deref())
        .opt("driver", volume.driver.as_deref())
        .nonempty("driver_opts", string_map(&volume.driver_opts))
        .flag("external", volume.external)
        .nonempty("labels", string_map(&volume.labels))
        .done()
}

fn render_object(object: &FileObject) -> Value {
    Map::default()
        .opt("name", object.name.as_deref())
        .opt(
            "file",
            object.file.as_ref().map(|f| f.display().to_string()),
        )
        .flag("external", object.external)
        .nonempty("labels", string_map(&object.labels))
        .done()
}
