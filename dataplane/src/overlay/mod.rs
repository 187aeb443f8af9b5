//! Overlay networks on a node: the per-network sandbox (bridge + VXLAN), task attachment and
//! remote endpoints, all programmed over rtnetlink (no `ip`/`bridge` subprocesses).
//!
//! Every function is synchronous: each netlink exchange runs on a fresh thread that has entered
//! the target network namespace and drives a private current-thread tokio runtime (see
//! `netlink`). The agent calls these from a blocking thread; nothing here touches the
//! namespace of a tokio worker.
//!
//! # Layout
//! - [`error`]: [`OverlayError`], what failed, on which link, in which netns.
//! - `netns`: creating and removing bind-mounted netns (sandboxes and tasks).
//! - `netlink`: an rtnetlink connection opened inside a given netns; link lookups, deletion.
//! - `sandbox`: [`ensure_sandbox`] / [`remove_sandbox`] (bridge `br0` + `vxlan0`).
//! - `task`: [`attach_task`] / [`detach_task`] (veth between a task netns and `br0`).
//! - `pair`: a task's veth pair created into its netns, and the task end's settings (shared
//!   by `task` and `gateway::veth`).
//! - `endpoints`: [`add_remote_endpoint`] / [`remove_remote_endpoint`] (static FDB + neighbours).
//! - `gateway`: the node's gateway bridge ([`ensure_gateway_bridge`] / [`remove_gateway_bridge`])
//!   and tasks' egress interfaces on it ([`attach_task_gateway`] / [`detach_task_gateway`]);
//!   within it, `gateway::masquerade` (nftables table `shoal_gw`, IPv4 forwarding),
//!   `gateway::veth` (the bridge-to-task veth pair) and `gateway::links` (which links are ours).
//! - `tests`: a two-node VXLAN topology built from netns and a veth underlay (root only).
//! - `gateway_tests`: a task reaching an "outside" netns through the gateway bridge, masqueraded
//!   (root only).

mod endpoints;
pub mod error;
mod gateway;
#[cfg(test)]
mod gateway_tests;
mod mtu;
mod netlink;
mod netns;
mod pair;
mod sandbox;
mod task;
#[cfg(test)]
mod tests;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

pub use endpoints::{
    RemoteEndpoint, add_remote_endpoint, add_remote_endpoints, remote_endpoint_entries,
    remote_endpoints, remove_remote_endpoint, remove_remote_endpoints,
};
pub use error::OverlayError;
pub use gateway::{
    DEFAULT_GATEWAY_BRIDGE, GATEWAY_MTU, GATEWAY_NFT_TABLE, GatewaySpec, attach_task_gateway,
    detach_task_gateway, enable_ip_forwarding, ensure_gateway_bridge, loose_reverse_path_filter,
    remove_gateway_bridge,
};
pub use mtu::{VXLAN_OVERHEAD, overlay_mtu_for, overlay_mtu_over};
pub use netns::{create_netns, remove_netns};
pub use sandbox::{ensure_sandbox, remove_sandbox};
pub use task::{attach_task, detach_task};

/// Name of the bridge inside every sandbox; tasks' veths and `vxlan0` are its ports.
pub const BRIDGE_NAME: &str = "br0";
/// Name of the VXLAN device inside every sandbox.
pub const VXLAN_NAME: &str = "vxlan0";
/// Overlay MTU over a 1500-byte underlay (50 bytes of outer Ethernet/IP/UDP/VXLAN headers);
/// [`overlay_mtu_over`] gives it for the actual underlay.
pub const DEFAULT_MTU: u32 = 1450;
/// IANA VXLAN port, Docker Swarm's default data-path port.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// Docker's MAC for an overlay IP: `02:42:<a>:<b>:<c>:<d>`.
///
/// Deriving the MAC from the IP means a remote node can program FDB and neighbour entries from
/// the gossiped endpoint table alone (no MAC needs to travel), and it matches what Docker
/// containers see, so tools comparing the two agree. `02` sets the locally-administered bit.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// What an overlay network looks like on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    /// VXLAN network identifier (Docker allocates from 4096 up).
    pub vni: u32,
    /// The network's subnet; the gateway's prefix length comes from it.
    pub subnet: ipnet::Ipv4Net,
    /// Address put on `br0`, and the default route of tasks that ask for one.
    pub gateway: Ipv4Addr,
    /// UDP destination port of the encapsulated traffic.
    pub vxlan_port: u16,
    /// This node's data-path address: the outer source IP of every encapsulated packet.
    pub local_vtep: Ipv4Addr,
    /// MTU of `br0`, `vxlan0` and task interfaces: the network's own (`--opt
    /// com.docker.network.driver.mtu`), else the underlay's minus [`VXLAN_OVERHEAD`].
    pub mtu: u32,
}

/// A network's sandbox netns on this node, as returned by [`ensure_sandbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Path of the netns bind mount, usable with [`crate::netns::run_in`].
    pub path: PathBuf,
    /// The spec the sandbox was ensured with.
    pub spec: OverlaySpec,
}

impl Sandbox {
    /// Path of the sandbox's netns.
    pub fn netns_path(&self) -> &Path {
        &self.path
    }
}
