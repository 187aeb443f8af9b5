//! The command line. Flag names, defaults and vocabulary follow Docker's swarm CLI.
//!
//! This file holds the top level, the agent's flags and the smaller command groups;
//! `service` holds `shoal service`'s (the largest group), `stack` `shoal stack`'s, `volume`
//! `shoal volume`'s, `parse`
//! the value parsers, `format` the `--format` flag every listing shares, `filter` the
//! `--filter` flag of listings, `objects` `shoal secret`'s and `shoal config`'s.

pub mod filter;
mod format;
pub mod objects;
mod parse;
pub mod service;
pub mod stack;
pub mod volume;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand, ValueEnum, error::ErrorKind};

pub use self::format::{FormatArgs, OutputFormat};
use self::{
    objects::{ConfigCommand, SecretCommand},
    parse::{parse_advertise_addr, parse_dns_server, parse_label},
    service::ServiceCommand,
    stack::StackCommand,
    volume::VolumeCommand,
};

/// Where the CLI finds the local agent unless told otherwise.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";

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
    /// Manage the swarm: init, join, join-token, leave, update, unlock, unlock-key.
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
    /// Manage this node's volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage swarm secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage swarm configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Deploy and manage stacks of services from compose files.
    #[command(subcommand)]
    Stack(StackCommand),
    /// Show the client's and the agent's version, git commit and API version.
    Version(VersionArgs),
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
    Ls(NetworkLsArgs),
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
    /// The routing-mesh network (ingress-mode published ports); at most one exists.
    #[arg(long)]
    pub ingress: bool,
    /// Network label key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Driver option key=value (repeatable); com.docker.network.driver.mtu=N sets the MTU of
    /// the network's interfaces (default: the underlay's minus 50). Others are kept only.
    #[arg(short = 'o', long = "opt", value_parser = parse_driver_opt)]
    pub options: Vec<(String, String)>,
    pub name: String,
}

/// `--opt KEY=VALUE` as Docker reads it (`KEY` alone: an empty value).
fn parse_driver_opt(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("invalid option {s:?}: expected key=value"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The range a flow table's `ENTRIES` may take (`--lb-flows`, `--mesh-flows`).
fn flow_table_entries() -> clap::builder::RangedI64ValueParser<u32> {
    use shoal_dataplane::TableSizes;
    clap::value_parser!(u32)
        .range(i64::from(TableSizes::FLOWS_MIN)..=i64::from(TableSizes::FLOWS_MAX))
}

#[derive(Args, Debug)]
pub struct NetworkLsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Only print IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: driver=, id= (prefix), name= (part of it), label=KEY[=VALUE], scope=swarm,
    /// type=custom|builtin (repeatable).
    #[arg(short, long = "filter", value_parser = filter::parse_network_filter)]
    pub filters: Vec<filter::Filter>,
}

#[derive(Args, Debug)]
pub struct NetworkNamesArgs {
    /// Network names or IDs.
    #[arg(required = true)]
    pub networks: Vec<String>,
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
    /// Unlock a manager restarted under autolock (the key is read from stdin).
    Unlock,
    /// Show or rotate the unlock key.
    UnlockKey(UnlockKeyArgs),
    /// Display and rotate the root CA.
    Ca(SwarmCaArgs),
}

#[derive(Args, Debug)]
pub struct SwarmCaArgs {
    /// Only print the root CA certificate.
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate the swarm's root CA: every node moves to a certificate of a new CA, then the
    /// old one and the join tokens (which name it) are replaced.
    #[arg(long)]
    pub rotate: bool,
    /// Exit immediately instead of waiting for the root rotation to converge.
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Args, Debug)]
pub struct UnlockKeyArgs {
    /// Only print the key.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the key with a new one; managers need the new one after their next restart.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Args, Debug)]
pub struct SwarmInitArgs {
    /// Where the cluster API listens: IP or IP:PORT (default: the agent's --listen-addr).
    #[arg(long, default_value = "")]
    pub listen_addr: String,
    /// Address other nodes reach this one at: IP or IP:PORT (default port: the listen
    /// address's).
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
    /// Enable manager autolocking: a restarted manager needs the unlock key.
    #[arg(long)]
    pub autolock: bool,
    /// Validity period for node certificates (at least 30s; below 1h, Docker's minimum, for
    /// tests and demos).
    #[arg(long, default_value = "2160h", value_parser = crate::duration::parse_duration)]
    pub cert_expiry: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct SwarmJoinArgs {
    /// Join token (from `shoal swarm join-token`).
    #[arg(long)]
    pub token: String,
    /// Where the cluster API listens: IP or IP:PORT (default: the agent's --listen-addr).
    #[arg(long, default_value = "")]
    pub listen_addr: String,
    /// Address other nodes reach this one at: IP or IP:PORT (default port: the listen
    /// address's).
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
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["rotate_gossip_key", "autolock", "cert_expiry"])
))]
pub struct SwarmUpdateArgs {
    /// Add a new gossip encryption key now (it is used from the next rotation on; the leader
    /// also rotates every 12 hours).
    #[arg(long)]
    pub rotate_gossip_key: bool,
    /// Change manager autolocking setting (true|false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub autolock: Option<bool>,
    /// Validity period for node certificates issued from now on (each node renews at 50-80 %
    /// of its certificate's lifetime).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub cert_expiry: Option<std::time::Duration>,
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

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Read agent flags from this TOML file: each key is a flag's long name
    /// (`state-dir = "/var/lib/shoal"`, `dns = ["192.0.2.53"]`). The command line wins over
    /// the environment (`SHOAL_STATE_DIR`, ...), which wins over the file, which wins over the
    /// defaults.
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Remove what this node left on the host (its tasks, network namespaces and their
    /// mounts, pinned maps and XDP link, gateway bridge, socket) and exit; keeps the state
    /// dir (identity, swarm membership, volumes). Refused while an agent uses the state dir.
    #[arg(long, conflicts_with = "purge")]
    pub cleanup: bool,
    /// As --cleanup, then remove the state dir too: the node's identity, swarm membership
    /// and volumes are gone.
    #[arg(long)]
    pub purge: bool,
    /// Directory for the node's durable state (identity, Raft log).
    #[arg(long, env = "SHOAL_STATE_DIR", default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,
    /// Unix socket for the local API (created with mode 0600).
    #[arg(long, env = "SHOAL_SOCKET", default_value = "/run/shoal/shoal.sock")]
    pub socket: PathBuf,
    /// Unix socket for the Docker Engine API (the docker CLI, docker-py), created with mode
    /// 0660 and group `docker` when it exists (default: docker.sock beside --socket).
    #[arg(long, env = "SHOAL_ENGINE_SOCKET", value_name = "PATH")]
    pub engine_socket: Option<PathBuf>,
    /// Node hostname (default: the host's).
    #[arg(long, env = "SHOAL_HOSTNAME")]
    pub hostname: Option<String>,
    /// Address the manager API listens on.
    #[arg(long, env = "SHOAL_LISTEN_ADDR", default_value = "0.0.0.0:2377")]
    pub listen_addr: SocketAddr,
    /// Address other nodes reach this one at, IP or IP:PORT (default port 2377). Default:
    /// the address of the only non-loopback interface, if there is exactly one.
    #[arg(long, env = "SHOAL_ADVERTISE_ADDR", value_parser = parse_advertise_addr)]
    pub advertise_addr: Option<SocketAddr>,
    /// Source address for VXLAN traffic (default: the advertise address).
    #[arg(long, env = "SHOAL_DATA_PATH_ADDR")]
    pub data_path_addr: Option<IpAddr>,
    /// UDP port for VXLAN traffic.
    #[arg(long, env = "SHOAL_DATA_PATH_PORT", default_value_t = 4789, value_parser = clap::value_parser!(u16).range(1..))]
    pub data_path_port: u16,
    /// Subnet of the gateway bridge that gives tasks the outside world (default: the first
    /// of 172.18-31.0.0/16, 192.168.0.0/20... free on this host, chosen once and kept).
    #[arg(long, env = "SHOAL_GATEWAY_SUBNET", value_name = "CIDR")]
    pub gateway_subnet: Option<ipnet::Ipv4Net>,
    /// UDP and TCP port for the gossip network DB.
    #[arg(long, env = "SHOAL_GOSSIP_PORT", default_value_t = 7946, value_parser = clap::value_parser!(u16).range(1..))]
    pub gossip_port: u16,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "SHOAL_METRICS_ADDR", default_value = "127.0.0.1:9323")]
    pub metrics_addr: SocketAddr,
    /// How the underlay XDP program runs: `auto` is native XDP, falling back to generic (in
    /// the network stack, with a log line saying why) where native cannot work: a driver
    /// without native XDP, or a veth whose peer runs no XDP program (native `XDP_TX` frames
    /// would vanish there). `native` and `generic` force one.
    #[arg(long, env = "SHOAL_XDP_MODE", value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// Entries of the VIP flow table: two per connection the tc programs balance (a task's
    /// connections balanced at the socket take none). It takes its whole size in kernel memory
    /// (about 110 bytes an entry); when full, the least recently used entries go (counted in
    /// shoal_lb_events_total{event="evicted"}). A new size takes effect when the agent starts:
    /// a new table is made and the last run's entries are carried over into it, so no
    /// connection is reset (a smaller table keeps the most recent). `shoal info` shows the
    /// size, the entries in use and the memory.
    #[arg(long, env = "SHOAL_LB_FLOWS", value_name = "ENTRIES",
        default_value_t = shoal_dataplane::TableSizes::default().lb_flows,
        value_parser = flow_table_entries())]
    pub lb_flows: u32,
    /// Entries of the routing mesh's flow table: two per connection this node receives on a
    /// published port (once its client has answered; a flood of new ones churns a table of its
    /// own). The table of answers this node's tasks send back through the nodes that received
    /// their clients gets half as many. About 110 bytes an entry; when full, the least recently
    /// used entries go (counted in shoal_mesh_events_total{event="evicted"}). A new size takes
    /// effect when the agent starts, as --lb-flows.
    #[arg(long, env = "SHOAL_MESH_FLOWS", value_name = "ENTRIES",
        default_value_t = shoal_dataplane::TableSizes::default().mesh_flows,
        value_parser = flow_table_entries())]
    pub mesh_flows: u32,
    /// DNS server the tasks' embedded DNS forwards other names to, IP or IP:PORT (repeatable;
    /// default: the nameservers of the host's /etc/resolv.conf), as dockerd's --dns.
    #[arg(long = "dns", env = "SHOAL_DNS", value_delimiter = ',', value_parser = parse_dns_server)]
    pub dns: Vec<SocketAddr>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
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

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
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
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
