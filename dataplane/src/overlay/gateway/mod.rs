//! The per-node gateway bridge, shoal's `docker_gwbridge`: tasks on non-internal overlays get a
//! second interface on it and a default route through it, and the node masquerades their
//! traffic to the outside world.
//!
//! The bridge lives in the node's own netns (the agent's), unlike the per-network `br0`s that
//! live in sandboxes. Links and addresses are programmed over rtnetlink; the masquerade is an
//! nftables table of our own (`table ip shoal_gw`), replaced as a whole in one `nft -f -`
//! transaction so repeated calls converge and nothing else in the node's ruleset is touched.
//!
//! Like Docker's gwbridge (`enable_icc=false`), the bridge carries no task-to-task traffic:
//! every task port is a bridge-isolated port (no L2 path between two tasks) and the forward
//! chain drops anything routed from the bridge back into it. Otherwise two tasks on different,
//! possibly `--internal`, overlays could talk through the gateway bridge.
//!
//! # Layout
//! - this file: [`GatewaySpec`], creating and removing the bridge, and attaching tasks to it.
//! - `masquerade`: the `shoal_gw` nftables table and IPv4 forwarding in the node's netns.
//! - `veth`: the veth pair between the bridge and a task, and the task end's settings.
//! - `links`: which links in a netns are ours to touch.

mod links;
mod masquerade;
mod veth;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressMessage},
        link::{InfoKind, LinkMessage},
    },
};

pub use masquerade::{GATEWAY_NFT_TABLE, enable_ip_forwarding, loose_reverse_path_filter};

use self::{
    links::{is_veth_port_of, not_our_port, owned_link},
    masquerade::{apply_nft, removal_script, ruleset},
    veth::TaskVeth,
};
use super::{
    OverlayError,
    netlink::{delete_link, errno, index_of, link_by_name, nl_err, with_handle},
};

/// Default name of the gateway bridge (Docker's is `docker_gwbridge`).
pub const DEFAULT_GATEWAY_BRIDGE: &str = "shoal_gwbridge";
/// MTU of the bridge and of the task interfaces on it: the traffic leaves through the node's
/// own interfaces unencapsulated, so it gets the full Ethernet MTU, not the overlay's 1450.
pub const GATEWAY_MTU: u32 = 1500;

/// Linux's interface-name limit (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// The gateway bridge of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Bridge name in the node's netns; also the `oifname` the masquerade excludes.
    pub bridge: String,
    /// Addresses handed to tasks' gateway interfaces; masqueraded when they leave the node.
    pub subnet: Ipv4Net,
    /// Address of the bridge, and the default route of every task attached to it.
    pub gateway: Ipv4Addr,
}

impl GatewaySpec {
    /// `shoal_gwbridge` on `subnet`, the bridge on its first address.
    pub fn with_subnet(subnet: Ipv4Net) -> Self {
        let subnet = subnet.trunc();
        Self {
            bridge: DEFAULT_GATEWAY_BRIDGE.to_string(),
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            subnet,
        }
    }
}

impl Default for GatewaySpec {
    /// `shoal_gwbridge`, 172.18.0.0/16 via 172.18.0.1: what Docker's gwbridge usually gets.
    fn default() -> Self {
        let subnet = Ipv4Net::new(Ipv4Addr::new(172, 18, 0, 0), 16).expect("/16 is a valid prefix");
        Self::with_subnet(subnet)
    }
}

impl GatewaySpec {
    fn validate(&self) -> Result<(), OverlayError> {
        check_ifname(&self.bridge)?;
        check_host_address(self.subnet, self.gateway, "gateway")
    }
}

/// Interface names go into nft scripts between double quotes, so on top of the kernel's rules
/// they are limited to characters that need no quoting anywhere.
fn check_ifname(name: &str) -> Result<(), OverlayError> {
    let charset_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || name.len() > MAX_IFNAME || !charset_ok || name == "." || name == ".." {
        return Err(OverlayError::Invalid(format!(
            "interface name {name:?} (1..={MAX_IFNAME} chars of [A-Za-z0-9_.-])"
        )));
    }
    Ok(())
}

/// `addr` must be a usable host address of `subnet` (not its network or broadcast address).
fn check_host_address(subnet: Ipv4Net, addr: Ipv4Addr, what: &str) -> Result<(), OverlayError> {
    let reserved =
        subnet.prefix_len() < 31 && (addr == subnet.network() || addr == subnet.broadcast());
    if !subnet.contains(&addr) || reserved {
        return Err(OverlayError::Invalid(format!(
            "{what} {addr} is not a host address of subnet {subnet}"
        )));
    }
    Ok(())
}

/// Creates (or re-adopts) the gateway bridge in `node_netns` with the gateway address, turns on
/// IPv4 forwarding there and installs the masquerade for `spec.subnet`.
///
/// Idempotent and converging: an existing bridge is kept (same ifindex) and re-raised, stray
/// IPv4 addresses on it are removed, and the `shoal_gw` nftables table is deleted and recreated
/// in the same transaction, so a changed subnet or bridge name replaces the old rules.
pub fn ensure_gateway_bridge(node_netns: &Path, spec: &GatewaySpec) -> Result<(), OverlayError> {
    spec.validate()?;
    let bridge = spec.bridge.as_str();
    with_handle(node_netns, |h| async move {
        if owned_link(&h, bridge, InfoKind::Bridge, node_netns)
            .await?
            .is_none()
        {
            h.link()
                .add(LinkBridge::new(bridge).mtu(GATEWAY_MTU).build())
                .execute()
                .await
                .map_err(nl_err("creating bridge", bridge, node_netns))?;
        }
        let index = index_of(&h, bridge, node_netns).await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(GATEWAY_MTU)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl_err("raising bridge", bridge, node_netns))?;
        h.address()
            .add(index, IpAddr::V4(spec.gateway), spec.subnet.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(nl_err("adding gateway address on", bridge, node_netns))?;
        remove_stray_addresses(&h, index, spec, node_netns).await
    })?;
    // Rules before forwarding: nothing may be forwarded un-masqueraded, even for a moment.
    apply_nft(node_netns, &ruleset(spec))?;
    enable_ip_forwarding(node_netns)
}

/// Drops IPv4 addresses on the bridge other than the gateway's (left by an older spec).
async fn remove_stray_addresses(
    h: &Handle,
    index: u32,
    spec: &GatewaySpec,
    netns: &Path,
) -> Result<(), OverlayError> {
    let wanted = IpAddr::V4(spec.gateway);
    let stray: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_filter(|msg| {
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let keep = msg.header.family != AddressFamily::Inet
                || (local == Some(wanted) && msg.header.prefix_len == spec.subnet.prefix_len());
            futures::future::ready(!keep)
        })
        .try_collect()
        .await
        .map_err(nl_err("listing addresses of", &spec.bridge, netns))?;
    for msg in stray {
        match h.address().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(nix::errno::Errno::EADDRNOTAVAIL) => {}
            Err(e) => {
                return Err(nl_err("removing stray address from", &spec.bridge, netns)(
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// Deletes the gateway bridge, its task ports (veths, whose task ends go with them) and the
/// `shoal_gw` table from `node_netns`. Missing is success; IPv4 forwarding is left on (other
/// things on the node may rely on it). The links go first: a task must never be left on a
/// bridge whose traffic is no longer masqueraded.
pub fn remove_gateway_bridge(node_netns: &Path, spec: &GatewaySpec) -> Result<(), OverlayError> {
    check_ifname(&spec.bridge)?;
    let bridge = spec.bridge.as_str();
    with_handle(node_netns, |h| async move {
        let Some(link) = owned_link(&h, bridge, InfoKind::Bridge, node_netns).await? else {
            return Ok(());
        };
        let index = link.header.index;
        let ports: Vec<LinkMessage> = h
            .link()
            .get()
            .execute()
            .try_filter(|l| futures::future::ready(is_veth_port_of(l, Some(index))))
            .try_collect()
            .await
            .map_err(nl_err("listing ports of", bridge, node_netns))?;
        for port in ports {
            delete_link(&h, port.header.index, "gateway bridge port", node_netns).await?;
        }
        delete_link(&h, index, bridge, node_netns).await
    })?;
    apply_nft(node_netns, &removal_script())
}

/// Connects `task_netns` to the gateway bridge: veth `host_side_name` (node netns, a port of
/// `spec.bridge`) <-> `ifname` (task netns) carrying `ip` with the subnet's prefix and MAC
/// [`mac_for_ip`](super::mac_for_ip), MTU `mtu` (usually [`GATEWAY_MTU`]), loopback up, and the task's default
/// route via `spec.gateway` (replacing any previous default route: the gateway bridge is how a
/// task on overlays reaches the world, as in Docker).
///
/// Idempotent: a pair whose ends exist, belong together and carry the expected MAC is kept (same
/// ifindexes) and its settings re-applied; anything else is removed and rebuilt.
pub fn attach_task_gateway(
    node_netns: &Path,
    spec: &GatewaySpec,
    task_netns: &Path,
    ifname: &str,
    ip: Ipv4Addr,
    host_side_name: &str,
    mtu: u32,
) -> Result<(), OverlayError> {
    spec.validate()?;
    check_host_address(spec.subnet, ip, "task address")?;
    if ip == spec.gateway {
        return Err(OverlayError::Invalid(format!(
            "task address {ip} is the gateway's own address"
        )));
    }
    let veth = TaskVeth {
        bridge_netns: node_netns,
        bridge: &spec.bridge,
        host_side_name,
        task_netns,
        ifname,
        ip: Ipv4Net::new(ip, spec.subnet.prefix_len())
            .map_err(|e| OverlayError::Invalid(format!("task address {ip}: {e}")))?,
        mtu,
        default_route: Some(spec.gateway),
    };
    veth.ensure()?;
    // Isolated ports forward only to non-isolated ones (the bridge itself, i.e. the gateway),
    // never to each other: no task-to-task path across networks through this bridge.
    // `set_port` sends RTM_NEWLINK; RTM_SETLINK (`set`) silently ignores bridge-port data.
    with_handle(node_netns, |h| async move {
        let index = index_of(&h, host_side_name, node_netns).await?;
        h.link()
            .set_port(LinkBridgePort::new(index).isolated(true).build())
            .execute()
            .await
            .map_err(nl_err("isolating bridge port", host_side_name, node_netns))
    })
}

/// Deletes the task's gateway veth (its task end goes with it). Missing is success; a link of
/// that name that is not a veth port of `spec.bridge` is refused, not deleted.
pub fn detach_task_gateway(
    node_netns: &Path,
    spec: &GatewaySpec,
    host_side_name: &str,
) -> Result<(), OverlayError> {
    check_ifname(&spec.bridge)?;
    check_ifname(host_side_name)?;
    let bridge = spec.bridge.as_str();
    with_handle(node_netns, |h| async move {
        let Some(link) = link_by_name(&h, host_side_name, node_netns).await? else {
            return Ok(());
        };
        let bridge_index = owned_link(&h, bridge, InfoKind::Bridge, node_netns)
            .await?
            .map(|b| b.header.index);
        if !is_veth_port_of(&link, bridge_index) {
            return Err(not_our_port(host_side_name, bridge, node_netns));
        }
        delete_link(&h, link.header.index, host_side_name, node_netns).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_docker_like() {
        let spec = GatewaySpec::default();
        assert_eq!(spec.bridge, "shoal_gwbridge");
        assert_eq!(spec.subnet.to_string(), "172.18.0.0/16");
        assert_eq!(spec.gateway, Ipv4Addr::new(172, 18, 0, 1));
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn ruleset_replaces_only_our_table() {
        let spec = GatewaySpec {
            subnet: "10.9.8.7/24".parse().expect("subnet"),
            gateway: Ipv4Addr::new(10, 9, 8, 1),
            ..GatewaySpec::default()
        };
        let script = ruleset(&spec);
        assert!(
            script.starts_with("table ip shoal_gw {}\ndelete table ip shoal_gw\n"),
            "{script}"
        );
        assert!(
            script.contains("ip saddr 10.9.8.0/24 oifname != \"shoal_gwbridge\" masquerade"),
            "{script}"
        );
        assert!(
            script.contains("iifname \"shoal_gwbridge\" oifname \"shoal_gwbridge\" drop"),
            "{script}"
        );
        assert_eq!(script.matches("table ip").count(), 3, "{script}");
    }

    #[test]
    fn bad_specs_are_rejected() {
        let outside = GatewaySpec {
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            ..GatewaySpec::default()
        };
        let network = GatewaySpec {
            gateway: Ipv4Addr::new(172, 18, 0, 0),
            ..GatewaySpec::default()
        };
        let quote = GatewaySpec {
            bridge: "gw\"; flush".to_string(),
            ..GatewaySpec::default()
        };
        let long = GatewaySpec {
            bridge: "a_very_long_bridge".to_string(),
            ..GatewaySpec::default()
        };
        for spec in [outside, network, quote, long] {
            assert!(
                matches!(spec.validate(), Err(OverlayError::Invalid(_))),
                "{spec:?} accepted"
            );
        }
    }
}
