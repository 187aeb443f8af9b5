//! The gateway bridge's subnet. Docker's `docker_gwbridge` usually takes 172.18.0.0/16 and
//! `docker0` 172.17.0.0/16, so a fixed subnet clashes on a host that runs Docker too. The
//! agent's `--gateway-subnet` names one; otherwise the first of Docker's local pools
//! (172.18/16 to 172.31/16, then 192.168.0.0/20 steps) that overlaps no address or route of
//! the node is chosen once and kept in `<state>/gateway-subnet`, so the tasks' leases stay
//! valid across restarts and `--cleanup` knows what it removes.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use ipnet::Ipv4Net;

const FILE: &str = "gateway-subnet";

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The subnet recorded in `state_dir`, if any (what `--cleanup` removes).
pub fn recorded(state_dir: &Path) -> Option<Ipv4Net> {
    std::fs::read_to_string(file(state_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The subnet this node's gateway bridge uses: `flag`, else the recorded one, else a free
/// one chosen now (and recorded).
pub fn resolve(state_dir: &Path, flag: Option<Ipv4Net>) -> anyhow::Result<Ipv4Net> {
    let subnet = match flag.or_else(|| recorded(state_dir)) {
        Some(subnet) => subnet,
        None => choose(&in_use()?).context(
            "no free subnet for the gateway bridge in 172.18-31.0.0/16 or 192.168.0.0/16: \
             give one with --gateway-subnet",
        )?,
    };
    if subnet.prefix_len() > 30 {
        anyhow::bail!("--gateway-subnet {subnet} is too small for a gateway and tasks");
    }
    if recorded(state_dir) != Some(subnet) {
        std::fs::write(file(state_dir), format!("{subnet}\n"))
            .with_context(|| format!("writing {}", file(state_dir).display()))?;
    }
    Ok(subnet)
}

/// Docker's local address pools, in its order (172.17/16 is docker0's, left out).
fn candidates() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (18..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let twenties = (0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    sixteens.chain(twenties).filter_map(Result::ok)
}

/// The first candidate overlapping none of `in_use`.
pub fn choose(in_use: &[Ipv4Net]) -> Option<Ipv4Net> {
    candidates().find(|c| !in_use.iter().any(|u| overlaps(c, u)))
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The node's IPv4 networks: each interface address with its prefix, and each route's
/// destination but the default route (`/proc/net/route` is this process's netns's).
fn in_use() -> anyhow::Result<Vec<Ipv4Net>> {
    let mut nets = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing interface addresses")? {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let prefix = u32::from(mask.ip()).leading_ones() as u8;
        if let Ok(net) = Ipv4Net::new(addr.ip(), prefix) {
            nets.push(net.trunc());
        }
    }
    let routes = std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
    nets.extend(parse_routes(&routes));
    Ok(nets)
}

/// `/proc/net/route`'s destinations, but the default route. The kernel prints each address as
/// the u32 it holds in network byte order, in hex: its native-endian bytes are the address.
fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            let prefix = mask.count_ones() as u8;
            let net = Ipv4Net::new(Ipv4Addr::from(dest.to_ne_bytes()), prefix).ok()?;
            (prefix > 0).then(|| net.trunc())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_free_of_dockers_pools_is_chosen() {
        assert_eq!(choose(&[]), Some(net("172.18.0.0/16")));
        // Docker's own bridges on the same host, and an underlay in 172.16/12's range.
        let docker = [
            net("172.17.0.0/16"),
            net("172.18.0.0/16"),
            net("172.19.5.0/24"),
        ];
        assert_eq!(choose(&docker), Some(net("172.20.0.0/16")));
        // A wide route covers them all: on to 192.168/16's /20s, past a LAN in it.
        let wide = [net("172.16.0.0/12"), net("192.168.1.0/24")];
        assert_eq!(choose(&wide), Some(net("192.168.16.0/20")));
        assert_eq!(choose(&[net("0.0.0.0/1"), net("128.0.0.0/1")]), None);
    }

    #[test]
    fn routes_are_read_from_the_kernels_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     br\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_routes(table),
                [net("192.168.1.0/24"), net("172.18.0.0/16")]
            );
        }
    }
}
