//! The agent's flags, resolved against the host: hostname, addresses and the underlay
//! interface that carries the data-path address.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use nix::ifaddrs::getifaddrs;
use shoal_dns::resolv_conf::ResolvConf;

use shoal_control::error_chain::Chain;

use crate::cli::AgentArgs;

pub struct Config {
    pub hostname: String,
    pub listen_addr: SocketAddr,
    /// Where other nodes reach this one; `None` until one is given or can be guessed.
    pub advertise_addr: Option<SocketAddr>,
    /// VXLAN outer source address; defaults to the advertise address.
    pub data_path_addr: Option<IpAddr>,
    pub data_path_port: u16,
    pub gossip_port: u16,
    /// The interface holding the data-path address: where the underlay XDP program goes.
    pub underlay_interface: Option<String>,
    /// Where the embedded DNS forwards names that are not the cluster's.
    pub dns_upstreams: Vec<SocketAddr>,
    /// Each task's /etc/resolv.conf: the embedded server, with the host's search and options.
    pub task_resolv_conf: String,
}

/// The host's resolver configuration, read once at start as Docker does.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

impl Config {
    pub fn resolve(args: &AgentArgs) -> anyhow::Result<Self> {
        let hostname = match &args.hostname {
            Some(name) if name.is_empty() => bail!("--hostname must not be empty"),
            Some(name) => name.clone(),
            None => nix::unistd::gethostname()
                .context("reading the host name")?
                .to_string_lossy()
                .into_owned(),
        };
        let addresses = interface_addresses()?;
        let advertise_addr = match args.advertise_addr {
            Some(addr) => {
                if !addr.ip().is_unspecified() && !addresses.iter().any(|(_, ip)| *ip == addr.ip())
                {
                    bail!(
                        "--advertise-addr {} is not an address of this host",
                        addr.ip()
                    );
                }
                // No port given: the one the agent listens on, as for a guessed address.
                Some(match addr.port() {
                    0 => SocketAddr::new(addr.ip(), args.listen_addr.port()),
                    _ => addr,
                })
            }
            None => guess_advertise_ip(&addresses)
                .map(|ip| SocketAddr::new(ip, args.listen_addr.port())),
        };
        let data_path_addr = args.data_path_addr.or(advertise_addr.map(|a| a.ip()));
        let underlay_interface = match data_path_addr {
            Some(ip) => Some(
                addresses
                    .iter()
                    .find(|(_, a)| *a == ip)
                    .map(|(name, _)| name.clone())
                    .with_context(|| {
                        format!("--data-path-addr {ip} is not an address of this host")
                    })?,
            ),
            None => None,
        };
        let host_resolv = match std::fs::read_to_string(HOST_RESOLV_CONF) {
            Ok(text) => ResolvConf::parse(&text),
            Err(e) => {
                tracing::warn!(path = HOST_RESOLV_CONF, error = %Chain(&e), "no host resolver configuration");
                ResolvConf::default()
            }
        };
        let dns_upstreams = if args.dns.is_empty() {
            host_resolv.nameservers.clone()
        } else {
            args.dns.clone()
        };
        Ok(Config {
            dns_upstreams,
            task_resolv_conf: host_resolv.for_task(),
            hostname,
            listen_addr: args.listen_addr,
            advertise_addr,
            data_path_addr,
            data_path_port: args.data_path_port,
            gossip_port: args.gossip_port,
            underlay_interface,
        })
    }
}

/// Every (interface, address) pair in this network namespace.
fn interface_addresses() -> anyhow::Result<Vec<(String, IpAddr)>> {
    let addrs = getifaddrs().context("listing interface addresses")?;
    Ok(addrs
        .filter_map(|ifa| {
            let addr = ifa.address?;
            let ip = addr
                .as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))?;
            Some((ifa.interface_name, ip))
        })
        .collect())
}

/// Docker's rule: with exactly one non-loopback IPv4 address, that is the advertise address.
fn guess_advertise_ip(addresses: &[(String, IpAddr)]) -> Option<IpAddr> {
    let mut candidates = addresses
        .iter()
        .filter(|(_, ip)| ip.is_ipv4() && !ip.is_loopback())
        .map(|(_, ip)| *ip);
    let first = candidates.next()?;
    candidates.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_only_a_single_non_loopback_v4() {
        let lo = ("lo".to_string(), "127.0.0.1".parse().unwrap());
        let eth0 = ("eth0".to_string(), "192.168.5.2".parse().unwrap());
        let eth1 = ("eth1".to_string(), "192.168.6.2".parse().unwrap());
        let v6 = ("eth0".to_string(), "fe80::1".parse().unwrap());
        assert_eq!(
            guess_advertise_ip(&[lo.clone(), eth0.clone(), v6]),
            Some(eth0.1)
        );
        assert_eq!(guess_advertise_ip(&[lo.clone(), eth0, eth1]), None);
        assert_eq!(guess_advertise_ip(&[lo]), None);
    }
}
