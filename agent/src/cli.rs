//! The command line. Flag names, defaults and vocabulary follow Docker's swarm CLI.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand, ValueEnum, error::ErrorKind};

/// Where the CLI finds the local agent unless told otherwise.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";
/// The manager API port (Swarm's).
pub const MANAGER_PORT: u16 = 2377;

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "Swarm-mode networking for Linux hosts, in Rust and eBPF",
    propagate_version = true
)]
pub struct Cli {
    /// Agent API to talk to.
    #[arg(short = 'H', long = "host", env = "SHOAL_HOST", default_value = DEFAULT_HOST, global = true)]
    pub host: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node agent (the daemon).
    Agent(Box<AgentArgs>),
    /// Show this node's identity, addresses, swarm state and data path.
    Info(InfoArgs),
    /// Run the built-in demo workload: HTTP on TCP and echo on UDP, answering with its
    /// hostname and addresses.
    Whoami(WhoamiArgs),
    /// Manage the swarm: init, join, join-token, leave.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Manage the swarm's nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(Box<ServiceCommand>),
    /// Run a command inside a task's namespaces, wherever it runs; exits with its code.
    Exec(ExecArgs),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(NetworkCommand),
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a service.
    Create(ServiceCreateArgs),
    /// List services.
    #[command(alias = "list")]
    Ls(FormatArgs),
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
    /// Attach to an overlay network, by name or ID (repeatable: eth0, eth1, ... in order).
    #[arg(long = "network")]
    pub networks: Vec<String>,
    /// vip: the service name resolves to a virtual IP per network; dnsrr: to the task IPs.
    #[arg(long = "endpoint-mode", value_parser = ["vip", "dnsrr"], default_value = "vip")]
    pub endpoint_mode: String,
    /// Publish a port: [PUBLISHED:]TARGET[/udp], or
    /// published=P,target=T,protocol=tcp|udp,mode=ingress|host (repeatable).
    #[arg(short = 'p', long = "publish", value_parser = crate::publish::parse_publish)]
    pub publish: Vec<shoal_control::api::PortConfigMsg>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Bind mount: type=bind,src=/host/path,dst=/task/path[,readonly] (repeatable).
    #[arg(long = "mount", value_parser = parse_mount)]
    pub mounts: Vec<(String, String, bool)>,
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
    /// Attach to another network (repeatable).
    #[arg(long = "network-add")]
    pub network_add: Vec<String>,
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
pub struct ExecArgs {
    /// Task ID, unique ID prefix, or SERVICE.SLOT.
    pub task: String,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create an overlay network.
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(FormatArgs),
    /// Show networks in Docker's JSON shape.
    Inspect(NetworkNamesArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(NetworkNamesArgs),
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    /// Network driver: overlay.
    #[arg(short, long, default_value = "overlay")]
    pub driver: String,
    /// Subnet in CIDR form (default: allocated from the swarm's address pools).
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address (default: the subnet's first host).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Standalone tasks may attach.
    #[arg(long)]
    pub attachable: bool,
    /// No access to the outside world.
    #[arg(long)]
    pub internal: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NetworkNamesArgs {
    /// Network names or IDs.
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServiceRmArgs {
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// `KEY=VALUE`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!(
            "invalid environment variable {s:?}: expected KEY=VALUE"
        )),
    }
}

/// `type=bind,src=/a,dst=/b[,readonly]` (also `source=`, `target=`, `destination=`, `ro`).
fn parse_mount(s: &str) -> Result<(String, String, bool), String> {
    let (mut kind, mut src, mut dst, mut readonly) = (None, None, None, false);
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("src" | "source", v)) => src = Some(v),
            Some(("dst" | "destination" | "target", v)) => dst = Some(v),
            Some(("readonly" | "ro", v)) => readonly = v == "true" || v == "1",
            None if field == "readonly" || field == "ro" => readonly = true,
            _ => return Err(format!("invalid mount {s:?}: unknown field {field:?}")),
        }
    }
    match (kind, src, dst) {
        (Some("bind"), Some(src), Some(dst)) => Ok((src.to_string(), dst.to_string(), readonly)),
        (Some(other), ..) if other != "bind" => Err(format!(
            "invalid mount {s:?}: only type=bind is supported (shoal runs no images)"
        )),
        _ => Err(format!(
            "invalid mount {s:?}: expected type=bind,src=PATH,dst=PATH"
        )),
    }
}

/// `SERVICE=REPLICAS`.
fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, replicas) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid scale {s:?}: expected SERVICE=REPLICAS"))?;
    let replicas = replicas
        .parse()
        .map_err(|_| format!("invalid replicas {replicas:?} for {name}: expected a number >= 0"))?;
    Ok((name.to_string(), replicas))
}

#[derive(Subcommand, Debug)]
pub enum SwarmCommand {
    /// Create a swarm with this node as its first manager.
    Init(SwarmInitArgs),
    /// Join a swarm as a worker or a manager, as the token says.
    Join(SwarmJoinArgs),
    /// Show or rotate a join token.
    JoinToken(JoinTokenArgs),
    /// Leave the swarm.
    Leave(LeaveArgs),
    /// Update the swarm's settings.
    Update(SwarmUpdateArgs),
}

#[derive(Args, Debug)]
pub struct SwarmInitArgs {
    /// Address other nodes reach this one at: IP or IP:PORT (default port 2377).
    #[arg(long, default_value = "")]
    pub advertise_addr: String,
    /// Source address for VXLAN traffic (default: the advertise address).
    #[arg(long, default_value = "")]
    pub data_path_addr: String,
    /// Address pool overlay subnets are allocated from (repeatable; default 10.0.0.0/8).
    #[arg(long = "default-addr-pool")]
    pub default_addr_pools: Vec<String>,
    /// Prefix length of each overlay subnet allocated from the pools.
    #[arg(long, default_value_t = 24)]
    pub default_addr_pool_mask_length: u32,
    /// Heartbeat period; a node silent for 3 periods is Down.
    #[arg(long, default_value = "1s", value_parser = crate::duration::parse_duration)]
    pub dispatcher_heartbeat: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct SwarmJoinArgs {
    /// Join token (from `shoal swarm join-token`).
    #[arg(long)]
    pub token: String,
    /// Address other nodes reach this one at: IP or IP:PORT (default port 2377).
    #[arg(long, default_value = "")]
    pub advertise_addr: String,
    /// Source address for VXLAN traffic (default: the advertise address).
    #[arg(long, default_value = "")]
    pub data_path_addr: String,
    /// A manager of the swarm: HOST:PORT (port 2377 if omitted).
    pub remote_addr: String,
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    /// Only print the token.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the token with a new one; the old one stops working.
    #[arg(long)]
    pub rotate: bool,
    /// Which token.
    #[arg(value_parser = ["worker", "manager"])]
    pub role: String,
}

#[derive(Args, Debug)]
pub struct SwarmUpdateArgs {
    /// Add a new gossip encryption key now (it is used from the next rotation on; the leader
    /// also rotates every 12 hours).
    #[arg(long, required = true)]
    pub rotate_gossip_key: bool,
}

#[derive(Args, Debug)]
pub struct LeaveArgs {
    /// Leave even when this is a manager whose leaving costs the swarm its quorum.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List the swarm's nodes.
    #[command(alias = "list")]
    Ls(FormatArgs),
    /// Show one or more nodes in detail.
    Inspect(NodeInspectArgs),
    /// Change a node's availability or labels.
    Update(NodeUpdateArgs),
    /// Make workers managers.
    Promote(NodesArgs),
    /// Make managers workers.
    Demote(NodesArgs),
    /// Remove nodes from the swarm.
    #[command(alias = "remove")]
    Rm(NodeRmArgs),
}

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct NodeInspectArgs {
    /// Human-readable output instead of JSON.
    #[arg(long)]
    pub pretty: bool,
    /// Node IDs or hostnames (`self` for this node).
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NodeUpdateArgs {
    /// Availability: active, pause or drain.
    #[arg(long, value_parser = ["active", "pause", "drain"])]
    pub availability: Option<String>,
    /// Add or change a label (key=value; repeatable).
    #[arg(long = "label-add", value_parser = parse_label)]
    pub labels_add: Vec<(String, String)>,
    /// Remove a label (repeatable).
    #[arg(long = "label-rm")]
    pub labels_rm: Vec<String>,
    /// Node ID or hostname.
    pub node: String,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    /// Node IDs or hostnames.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NodeRmArgs {
    /// Remove a node that is not down.
    #[arg(short, long)]
    pub force: bool,
    /// Node IDs or hostnames.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// `key=value` (or `key`, with an empty value, as Docker allows).
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("invalid label {s:?}: expected key=value"));
    }
    Ok((key.to_string(), value.to_string()))
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Directory for the node's durable state (identity, Raft log).
    #[arg(long, default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,
    /// Unix socket for the local API (created with mode 0600).
    #[arg(long, default_value = "/run/shoal/shoal.sock")]
    pub socket: PathBuf,
    /// Node hostname (default: the host's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Address the manager API listens on.
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: SocketAddr,
    /// Address other nodes reach this one at, IP or IP:PORT (default port 2377). Default:
    /// the address of the only non-loopback interface, if there is exactly one.
    #[arg(long, value_parser = parse_advertise_addr)]
    pub advertise_addr: Option<SocketAddr>,
    /// Source address for VXLAN traffic (default: the advertise address).
    #[arg(long)]
    pub data_path_addr: Option<IpAddr>,
    /// UDP port for VXLAN traffic.
    #[arg(long, default_value_t = 4789, value_parser = clap::value_parser!(u16).range(1..))]
    pub data_path_port: u16,
    /// UDP and TCP port for the gossip network DB.
    #[arg(long, default_value_t = 7946, value_parser = clap::value_parser!(u16).range(1..))]
    pub gossip_port: u16,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9323")]
    pub metrics_addr: SocketAddr,
    /// How the underlay XDP program runs: `auto` lets the kernel choose (native where the
    /// driver has it), `generic` runs it in the network stack, for drivers whose native XDP
    /// cannot transmit (`XDP_TX`) to their peer, like a veth whose other end runs no XDP.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// DNS server the tasks' embedded DNS forwards other names to, IP or IP:PORT (repeatable;
    /// default: the nameservers of the host's /etc/resolv.conf), as dockerd's --dns.
    #[arg(long = "dns", value_parser = parse_dns_server)]
    pub dns: Vec<SocketAddr>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct WhoamiArgs {
    /// Port for both HTTP (TCP) and echo (UDP).
    #[arg(long, default_value_t = 80)]
    pub port: u16,
}

/// Accepts `IP` or `IP:PORT`, as `docker swarm init --advertise-addr` does.
/// `--dns`: an IP (port 53) or IP:PORT.
fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("invalid DNS server {s:?}: expected IP or IP:PORT"))
}

fn parse_advertise_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, MANAGER_PORT))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// Prints a parse error as one line (help and version as they are) and picks the exit code.
pub fn report_parse_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first} (see 'shoal --help')");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_addr_takes_ip_or_ip_port() {
        assert_eq!(
            parse_advertise_addr("10.1.2.3").unwrap(),
            "10.1.2.3:2377".parse().unwrap()
        );
        assert_eq!(
            parse_advertise_addr("10.1.2.3:4000").unwrap(),
            "10.1.2.3:4000".parse().unwrap()
        );
        assert!(parse_advertise_addr("eth0:x").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
