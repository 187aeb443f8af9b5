//! The `shoal service` command line: its subcommands and their flags, as Docker's
//! `docker service` spells them.

use clap::{Args, Subcommand};

use super::{
    filter::{Filter, parse_service_filter},
    format::OutputFormat,
    parse::{NetworkArg, parse_env, parse_label, parse_mount, parse_network, parse_scale},
};

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a service.
    Create(ServiceCreateArgs),
    /// List services.
    #[command(alias = "list")]
    Ls(ServiceLsArgs),
    /// List the tasks of a service, with their history.
    Ps(ServicePsArgs),
    /// Show services in detail.
    Inspect(ServiceInspectArgs),
    /// Change the number of replicas: SERVICE=REPLICAS...
    Scale(ServiceScaleArgs),
    /// Change a service; tasks are replaced in a rolling update.
    Update(ServiceUpdateArgs),
    /// Go back to a service's previous spec.
    Rollback(ServiceRollbackArgs),
    /// Show the output of every task of a service, from every node.
    Logs(ServiceLogsArgs),
    /// Remove services.
    #[command(alias = "remove")]
    Rm(ServiceRmArgs),
}

/// Flags shared by `service create` and `service update` for restart and rollout.
#[derive(Args, Debug, Default)]
pub struct RolloutArgs {
    /// Restart when: none, on-failure or any.
    #[arg(long, value_parser = ["none", "on-failure", "any"])]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (e.g. 5s).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub restart_delay: Option<std::time::Duration>,
    /// Maximum restarts before giving up (0: unlimited).
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub restart_window: Option<std::time::Duration>,
    /// Tasks updated at a time (0: all).
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Delay between update batches.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub update_delay: Option<std::time::Duration>,
    /// On update failure: pause, continue or rollback.
    #[arg(long, value_parser = ["pause", "continue", "rollback"])]
    pub update_failure_action: Option<String>,
    /// Update order: stop-first or start-first.
    #[arg(long, value_parser = ["stop-first", "start-first"])]
    pub update_order: Option<String>,
    /// How long a new task must run to count as updated.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub update_monitor: Option<std::time::Duration>,
    /// Failure rate tolerated during an update (0 to 1).
    #[arg(long)]
    pub update_max_failure_ratio: Option<f64>,
    /// Time to wait before force-killing a task.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub stop_grace_period: Option<std::time::Duration>,
}

/// Flags shared by `service create` and `service update` for the task's process and placement.
#[derive(Args, Debug, Default)]
pub struct TaskArgs {
    /// Working directory of the task's process (absolute; it must exist on the node).
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User the task runs as: USER[:GROUP], names or numeric IDs (resolved on the node).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// The task's hostname; placeholders such as {{.Service.Name}}-{{.Task.Slot}} are filled
    /// in on the node.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Signal that stops a task (SIGTERM by default), e.g. SIGUSR1, USR1 or 10.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Maximum number of the service's tasks per node (0: unlimited; replicated mode only).
    #[arg(long)]
    pub replicas_max_per_node: Option<u64>,
    /// CPUs a task may use (e.g. 0.5), enforced in its cgroup (0: no limit).
    #[arg(long, value_parser = super::parse::parse_cpus)]
    pub limit_cpu: Option<u64>,
    /// Memory a task may use (e.g. 64M); beyond it the task is OOM-killed (0: no limit).
    #[arg(long, value_parser = super::parse::parse_memory)]
    pub limit_memory: Option<u64>,
    /// Processes and threads a task may have at once (0: no limit).
    #[arg(long)]
    pub limit_pids: Option<u64>,
    /// CPUs set aside for each task on its node by the scheduler (e.g. 0.25).
    #[arg(long, value_parser = super::parse::parse_cpus)]
    pub reserve_cpu: Option<u64>,
    /// Memory set aside for each task on its node by the scheduler (e.g. 32M).
    #[arg(long, value_parser = super::parse::parse_memory)]
    pub reserve_memory: Option<u64>,
}

/// Docker's health check flags, for `service create` and `service update`.
#[derive(Args, Debug, Default)]
pub struct HealthArgs {
    /// Command the agent runs inside each task to check its health (with /bin/sh -c); exit
    /// 0 is healthy. A task with a check takes traffic only once healthy.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between checks (default 30s).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub health_interval: Option<std::time::Duration>,
    /// Longest a check may run before it counts as failed (default 30s).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub health_timeout: Option<std::time::Duration>,
    /// Consecutive failures that make a task unhealthy (default 3).
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Time after the start during which failed checks do not count.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub health_start_period: Option<std::time::Duration>,
    /// Disable the health check.
    #[arg(long)]
    pub no_healthcheck: bool,
}

#[derive(Args, Debug)]
pub struct ServiceLsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Only print IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: id=, name= (prefixes), label=KEY[=VALUE], mode=replicated|global (repeatable).
    #[arg(short, long = "filter", value_parser = parse_service_filter)]
    pub filters: Vec<Filter>,
}

#[derive(Args, Debug)]
pub struct ServiceCreateArgs {
    /// Service name (default: generated).
    #[arg(long)]
    pub name: Option<String>,
    /// Number of tasks (replicated mode; default 1).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// replicated or global.
    #[arg(long, value_parser = ["replicated", "global"], default_value = "replicated")]
    pub mode: String,
    /// Placement constraint, e.g. node.role==manager (repeatable).
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Attach to an overlay network: NET (name or ID), or name=NET,alias=A[,alias=B] to give
    /// the service more names on it (repeatable: eth0, eth1, ... in order).
    #[arg(long = "network", value_parser = parse_network)]
    pub networks: Vec<NetworkArg>,
    /// Service label key=value (repeatable).
    #[arg(short = 'l', long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// vip: the service name resolves to a virtual IP per network; dnsrr: to the task IPs.
    #[arg(long = "endpoint-mode", value_parser = ["vip", "dnsrr"], default_value = "vip")]
    pub endpoint_mode: String,
    /// Publish a port: [PUBLISHED:]TARGET[/udp], or
    /// published=P,target=T,protocol=tcp|udp,mode=ingress|host,source=client|snat
    /// (repeatable; source=snat: the task sees the receiving node's address, as in Swarm).
    #[arg(short = 'p', long = "publish", value_parser = crate::publish::parse_publish)]
    pub publish: Vec<shoal_control::api::PortConfigMsg>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Mount: type=volume|bind|tmpfs,src=NAME|/host/path,dst=/task/path,readonly,
    /// tmpfs-size=64m,tmpfs-mode=1777 (repeatable; default type volume; a volume without src
    /// is anonymous, one per task; the target must exist on the node).
    #[arg(long = "mount", value_parser = parse_mount)]
    pub mounts: Vec<shoal_control::api::Mount>,
    /// Give tasks a secret: NAME, or source=NAME,target=T,uid=U,gid=G,mode=0400 (repeatable;
    /// a relative target is under /run/secrets, a tmpfs of the task's own; default mode 0444).
    #[arg(long = "secret", value_parser = super::objects::parse_secret)]
    pub secrets: Vec<shoal_control::api::FileReference>,
    /// Give tasks a config: NAME, or source=NAME,target=/PATH,uid=U,gid=G,mode=0444
    /// (repeatable; read-only at its target, which must be an existing file of the node).
    #[arg(long = "config", value_parser = super::objects::parse_config)]
    pub configs: Vec<shoal_control::api::FileReference>,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Return at once instead of waiting for the service to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// The command tasks run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServicePsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Service name or ID.
    pub service: String,
}

#[derive(Args, Debug)]
pub struct ServiceInspectArgs {
    /// Human-readable output instead of JSON.
    #[arg(long)]
    pub pretty: bool,
    #[arg(required = true)]
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServiceScaleArgs {
    /// Return at once instead of waiting for the services to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// SERVICE=REPLICAS.
    #[arg(required = true, value_parser = parse_scale)]
    pub scales: Vec<(String, u64)>,
}

#[derive(Args, Debug)]
pub struct ServiceUpdateArgs {
    /// Number of tasks.
    #[arg(long)]
    pub replicas: Option<u64>,
    /// New arguments for the command (the command itself stays), space separated.
    #[arg(long)]
    pub args: Option<String>,
    /// Add or change an environment variable (repeatable).
    #[arg(long = "env-add", value_parser = parse_env)]
    pub env_add: Vec<(String, String)>,
    /// Remove an environment variable (repeatable).
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Add a placement constraint (repeatable).
    #[arg(long = "constraint-add")]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint (repeatable).
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Attach to another network: NET, or name=NET,alias=A (repeatable).
    #[arg(long = "network-add", value_parser = parse_network)]
    pub network_add: Vec<NetworkArg>,
    /// Detach from a network, by name or ID (repeatable).
    #[arg(long = "network-rm")]
    pub network_rm: Vec<String>,
    /// vip or dnsrr (replaces every task: the VIPs they carry change).
    #[arg(long = "endpoint-mode", value_parser = ["vip", "dnsrr"])]
    pub endpoint_mode: Option<String>,
    /// Publish a port, or change how one is published (same syntax as create's --publish).
    #[arg(long = "publish-add", value_parser = crate::publish::parse_publish)]
    pub publish_add: Vec<shoal_control::api::PortConfigMsg>,
    /// Stop publishing a port, by its target port: TARGET[/PROTOCOL] (repeatable).
    #[arg(long = "publish-rm", value_parser = crate::publish::parse_publish_rm)]
    pub publish_rm: Vec<(u32, Option<String>)>,
    /// Add a mount, or replace the one on the same target (same syntax as create's --mount).
    #[arg(long = "mount-add", value_parser = parse_mount)]
    pub mount_add: Vec<shoal_control::api::Mount>,
    /// Remove a mount, by its target path (repeatable).
    #[arg(long = "mount-rm")]
    pub mount_rm: Vec<String>,
    /// Add a secret (same syntax as create's --secret).
    #[arg(long = "secret-add", value_parser = super::objects::parse_secret)]
    pub secret_add: Vec<shoal_control::api::FileReference>,
    /// Remove a secret, by its name (repeatable).
    #[arg(long = "secret-rm")]
    pub secret_rm: Vec<String>,
    /// Add a config (same syntax as create's --config).
    #[arg(long = "config-add", value_parser = super::objects::parse_config)]
    pub config_add: Vec<shoal_control::api::FileReference>,
    /// Remove a config, by its name (repeatable).
    #[arg(long = "config-rm")]
    pub config_rm: Vec<String>,
    /// Add or change a service label key=value (repeatable).
    #[arg(long = "label-add", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label, by key (repeatable).
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Replace every task even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Go back to the previous spec.
    #[arg(long)]
    pub rollback: bool,
    /// Return at once instead of waiting for the update.
    #[arg(short, long)]
    pub detach: bool,
    pub service: String,
}

#[derive(Args, Debug)]
pub struct ServiceRollbackArgs {
    /// Return at once instead of waiting for the rollback.
    #[arg(short, long)]
    pub detach: bool,
    pub service: String,
}

#[derive(Args, Debug)]
pub struct ServiceLogsArgs {
    /// Keep following new output.
    #[arg(short, long)]
    pub follow: bool,
    pub service: String,
}

#[derive(Args, Debug)]
pub struct ServiceRmArgs {
    #[arg(required = true)]
    pub services: Vec<String>,
}
