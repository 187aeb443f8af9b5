//! Overlay networks, as kept in Raft: a subnet, a gateway and a VXLAN network identifier each.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// VNI and subnet of the routing-mesh network that exists from `swarm init` (Swarm's).
pub const INGRESS_NAME: &str = "ingress";
pub const INGRESS_VNI: u32 = 4096;
pub const INGRESS_SUBNET: &str = "10.255.0.0/16";
/// User networks get VNIs from here up.
pub const FIRST_USER_VNI: u32 = 4097;
/// The largest VNI VXLAN can carry (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// Always "overlay" for now.
    pub driver: String,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    /// Standalone tasks may attach (`--attachable`).
    pub attachable: bool,
    /// No egress through the gateway bridge (`--internal`).
    pub internal: bool,
    /// The routing-mesh network.
    pub ingress: bool,
    pub created_at_ms: u64,
    /// `network create --label`. Tasks carry a copy of their networks, so a task spec an older
    /// agent saved has none.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A task's place on one network: a copy of the network as it was when the task was created
/// (so a node can build the sandbox from the task alone, even with every manager down) and the
/// task's address with the subnet's prefix length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: Network,
    pub addr: ipnet::Ipv4Net,
    /// The service's virtual IP on this network (vip mode), copied for the same reason: the
    /// node publishes it with the task's endpoint, and DNS answers the service name with it.
    pub vip: Option<std::net::Ipv4Addr>,
}
