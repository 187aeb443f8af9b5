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
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, env = "SHOAL_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
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
