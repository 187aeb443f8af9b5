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

use std::{
    fs::{self, File},
    io::{self, Write},
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
    process::{Command, Stdio},
};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressMessage},
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
    },
};

use super::{
    OverlayError, mac_for_ip,
    netlink::{enslave_and_raise, errno, index_of, link_by_name, nl_err, with_handle},
};

/// Default name of the gateway bridge (Docker's is `docker_gwbridge`).
pub const DEFAULT_GATEWAY_BRIDGE: &str = "shoal_gwbridge";
/// The nftables table (family `ip`) holding the masquerade; owned entirely by shoal.
pub const GATEWAY_NFT_TABLE: &str = "shoal_gw";
/// MTU of the bridge and of the task interfaces on it: the traffic leaves through the node's
/// own interfaces unencapsulated, so it gets the full Ethernet MTU, not the overlay's 1450.
pub const GATEWAY_MTU: u32 = 1500;

/// Linux's interface-name limit (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

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

impl Default for GatewaySpec {
    /// `shoal_gwbridge`, 172.18.0.0/16 via 172.18.0.1: what Docker's gwbridge usually gets.
    fn default() -> Self {
        let subnet = Ipv4Net::new(Ipv4Addr::new(172, 18, 0, 0), 16).expect("/16 is a valid prefix");
        Self {
            bridge: DEFAULT_GATEWAY_BRIDGE.to_string(),
            subnet,
            gateway: Ipv4Addr::new(172, 18, 0, 1),
        }
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

fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

fn mac_of(link: &LinkMessage) -> Option<&[u8]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.as_slice()),
        _ => None,
    })
}

/// For a veth, the ifindex of its peer (in the peer's netns).
fn peer_index_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(index) => Some(*index),
        _ => None,
    })
}

/// The bridge a link is enslaved to, if any.
fn controller_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

/// Whether `link` is a veth port of bridge `bridge`: the only host-side links this module
/// deletes, so a name clash with another tool's veth (or a NIC) never costs that link.
fn is_veth_port_of(link: &LinkMessage, bridge: Option<u32>) -> bool {
    kind_of(link) == Some(&InfoKind::Veth) && bridge.is_some() && controller_of(link) == bridge
}

fn not_our_port(name: &str, bridge: &str, netns: &Path) -> OverlayError {
    OverlayError::Invalid(format!(
        "link {name} in netns {} exists but is not a veth port of {bridge}; refusing to touch it",
        netns.display()
    ))
}

/// The link called `name` in `netns` if it is of `kind`; an error if something else has the
/// name. The node's netns holds the host's real interfaces: a name clash must never make us
/// reconfigure or delete one of them.
async fn owned_link(
    h: &Handle,
    name: &str,
    kind: InfoKind,
    netns: &Path,
) -> Result<Option<LinkMessage>, OverlayError> {
    match link_by_name(h, name, netns).await? {
        Some(link) if kind_of(&link) == Some(&kind) => Ok(Some(link)),
        Some(link) => Err(OverlayError::Invalid(format!(
            "link {name} in netns {} is a {:?}, not a {kind:?}; refusing to touch it",
            netns.display(),
            kind_of(&link)
        ))),
        None => Ok(None),
    }
}

async fn delete_link(h: &Handle, index: u32, name: &str, netns: &Path) -> Result<(), OverlayError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(nix::errno::Errno::ENODEV) => Ok(()),
        Err(e) => Err(nl_err("deleting link", name, netns)(e)),
    }
}

fn enter_err(netns: &Path) -> impl FnOnce(crate::Error) -> OverlayError {
    let path = netns.to_path_buf();
    move |source| OverlayError::EnterNetns {
        path,
        source: Box::new(source),
    }
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

/// The whole `shoal_gw` table, preceded by "create if missing, then delete" so that the script
/// replaces any previous version atomically and works on a fresh node alike.
fn ruleset(spec: &GatewaySpec) -> String {
    let (table, bridge, subnet) = (GATEWAY_NFT_TABLE, &spec.bridge, spec.subnet.trunc());
    format!(
        "table ip {table} {{}}
delete table ip {table}
table ip {table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != \"{bridge}\" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname \"{bridge}\" oifname \"{bridge}\" drop
    }}
}}
"
    )
}

fn removal_script() -> String {
    let table = GATEWAY_NFT_TABLE;
    format!("table ip {table} {{}}\ndelete table ip {table}\n")
}

/// Runs `nft -f -` with `script` from a thread inside `netns`: the child inherits that thread's
/// netns, so the rules land in the node's ruleset whatever netns the agent process is in.
fn apply_nft(netns: &Path, script: &str) -> Result<(), OverlayError> {
    let run = || -> io::Result<()> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning nft: {e}")))?;
        // The script is far below a pipe's capacity and nft reads all of it before writing,
        // so writing everything before reading stderr cannot deadlock.
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(script.as_bytes()),
            None => Err(io::Error::other("nft stdin was not piped")),
        };
        let output = child.wait_with_output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(io::Error::other(format!(
                "nft -f - failed ({}): {}",
                output.status,
                stderr.trim()
            )));
        }
        written
    };
    crate::netns::run_in(netns, run)
        .map_err(enter_err(netns))?
        .map_err(|source| OverlayError::Netns {
            what: "applying the gateway nftables table (nft -f -) in netns",
            path: netns.to_path_buf(),
            source,
        })
}

/// Sets `net.ipv4.ip_forward=1` in `netns`. Files under /proc/sys/net belong to the netns of
/// the thread that opens them, hence the write from inside. Skipped when already on: writing it
/// resets per-interface forwarding settings, which a reconcile loop should not keep doing.
/// (The routing mesh needs it too: `bpf_fib_lookup` answers only where forwarding is on.)
pub fn enable_ip_forwarding(netns: &Path) -> Result<(), OverlayError> {
    let enable = || -> io::Result<()> {
        if fs::read_to_string(IP_FORWARD)?.trim() == "1" {
            return Ok(());
        }
        fs::write(IP_FORWARD, "1")
    };
    crate::netns::run_in(netns, enable)
        .map_err(enter_err(netns))?
        .map_err(|source| OverlayError::Netns {
            what: "enabling net.ipv4.ip_forward in netns",
            path: netns.to_path_buf(),
            source,
        })
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
/// [`mac_for_ip`], MTU [`GATEWAY_MTU`], loopback up, and the task's default route via
/// `spec.gateway` (replacing any previous default route: the gateway bridge is how a task on
/// overlays reaches the world, as in Docker).
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
        mtu: GATEWAY_MTU,
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

/// A veth pair from a bridge (in `bridge_netns`) to a task netns, built the way `task.rs` builds
/// overlay attachments: one request, sent in the bridge's netns, creates the host end as a
/// bridge port and the peer directly inside the task netns (by fd) under its final name, so no
/// temporary name can collide. Written so that `attach_task` can be expressed with it too.
struct TaskVeth<'a> {
    bridge_netns: &'a Path,
    bridge: &'a str,
    host_side_name: &'a str,
    task_netns: &'a Path,
    ifname: &'a str,
    /// Address (and prefix) of the task end; its MAC is [`mac_for_ip`] of the address.
    ip: Ipv4Net,
    mtu: u32,
    /// Gateway of the task's default route, if it gets one through this interface.
    default_route: Option<Ipv4Addr>,
}

impl TaskVeth<'_> {
    fn ensure(&self) -> Result<(), OverlayError> {
        let Self {
            bridge_netns,
            bridge,
            host_side_name,
            task_netns,
            ifname,
            ip,
            mtu,
            default_route,
        } = *self;
        check_ifname(ifname)?;
        check_ifname(host_side_name)?;
        let mac = mac_for_ip(ip.addr());

        let task_end = with_handle(task_netns, |h| async move {
            Ok(link_by_name(&h, ifname, task_netns)
                .await?
                .map(|l| (l.header.index, mac_of(&l) == Some(&mac[..]))))
        })?;
        let host_end = with_handle(bridge_netns, |h| async move {
            let bridge = index_of(&h, bridge, bridge_netns).await?;
            Ok(link_by_name(&h, host_side_name, bridge_netns)
                .await?
                .map(|l| {
                    (
                        l.header.index,
                        peer_index_of(&l),
                        is_veth_port_of(&l, Some(bridge)),
                    )
                }))
        })?;

        // Ours for sure: the peer of the host end is the task end we look for, with our MAC.
        let intact = match (task_end, host_end) {
            (Some((task_index, true)), Some((_, peer, _))) => peer == Some(task_index),
            _ => false,
        };
        if let Some((_, _, false)) = host_end
            && !intact
        {
            return Err(not_our_port(host_side_name, bridge, bridge_netns));
        }
        if intact {
            with_handle(bridge_netns, |h| async move {
                let bridge = index_of(&h, bridge, bridge_netns).await?;
                let index = index_of(&h, host_side_name, bridge_netns).await?;
                enslave_and_raise(&h, index, host_side_name, bridge, mtu, bridge_netns).await
            })?;
        } else {
            // Remove whichever half is left over, then create the pair in one request.
            if let Some((index, _)) = task_end {
                with_handle(task_netns, |h| async move {
                    delete_link(&h, index, ifname, task_netns).await
                })?;
            }
            let task_fd = File::open(task_netns).map_err(|source| OverlayError::Netns {
                what: "opening task netns",
                path: task_netns.to_path_buf(),
                source,
            })?;
            let fd = task_fd.as_raw_fd();
            with_handle(bridge_netns, |h| async move {
                if let Some((index, _, _)) = host_end {
                    delete_link(&h, index, host_side_name, bridge_netns).await?;
                }
                let bridge = index_of(&h, bridge, bridge_netns).await?;
                let peer = LinkUnspec::new_with_name(ifname)
                    .address(mac.to_vec())
                    .mtu(mtu)
                    .setns_by_fd(fd)
                    .build();
                h.link()
                    .add(
                        LinkVeth::new(host_side_name, ifname)
                            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                            .mtu(mtu)
                            .controller(bridge)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl_err("creating veth", host_side_name, bridge_netns))
            })?;
            // Keep the namespace fd open until the kernel has used it.
            drop(task_fd);
        }

        with_handle(task_netns, |h| async move {
            configure_task_end(&h, task_netns, ifname, ip, mtu, default_route).await
        })
    }
}

/// Inside the task netns: loopback up, MTU, address, up, optional default route. Every step
/// uses set/replace semantics so re-running is harmless.
async fn configure_task_end(
    h: &Handle,
    netns: &Path,
    ifname: &str,
    ip: Ipv4Net,
    mtu: u32,
    default_route: Option<Ipv4Addr>,
) -> Result<(), OverlayError> {
    let lo = index_of(h, "lo", netns).await?;
    h.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(nl_err("raising", "lo", netns))?;
    let index = index_of(h, ifname, netns).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(nl_err("raising", ifname, netns))?;
    h.address()
        .add(index, IpAddr::V4(ip.addr()), ip.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(nl_err("adding address on", ifname, netns))?;
    if let Some(gateway) = default_route {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl_err("adding default route via", ifname, netns))?;
    }
    Ok(())
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
