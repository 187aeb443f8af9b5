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
    /// `network create --opt` (Docker's driver options), kept as given: only [`MTU_OPTION`]
    /// has an effect. Tasks carry them with their copy of the network, so a node knows the
    /// MTU from the task alone; a network (or task) an older version stored has none.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// The driver option that sets the MTU of a network's interfaces (bridge, VXLAN and tasks'),
/// Docker's name. Without it a node uses its underlay's MTU minus VXLAN's 50 bytes.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The MTUs [`MTU_OPTION`] may ask for: IPv4's minimum (RFC 791, the kernel's `ETH_MIN_MTU`)
/// to the largest an IPv4 packet can be.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// [`MTU_OPTION`]'s value as an MTU: an integer in [`MTU_RANGE`]; the error says why not, in
/// one line.
pub fn parse_mtu(value: &str) -> Result<u32, String> {
    let mtu: u32 = value.parse().map_err(|_| {
        format!(
            "invalid MTU number {value:?} for {MTU_OPTION}: expected an integer from {} to {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        )
    })?;
    if !MTU_RANGE.contains(&mtu) {
        return Err(format!(
            "invalid MTU number {mtu} for {MTU_OPTION}: the MTU must be from {} to {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        ));
    }
    Ok(mtu)
}

impl Network {
    /// The MTU its [`MTU_OPTION`] asks for; `None` without one (the node's default applies).
    /// The leader validated it when the network was created.
    pub fn mtu_option(&self) -> Option<u32> {
        self.options
            .get(MTU_OPTION)
            .and_then(|value| parse_mtu(value).ok())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_stored_without_options_reads_and_has_no_mtu() {
        let json = r#"{"id":"n","name":"n","driver":"overlay","subnet":"10.0.0.0/24",
            "gateway":"10.0.0.1","vni":4097,"attachable":false,"internal":false,
            "ingress":false,"created_at_ms":0}"#;
        let mut network: Network = serde_json::from_str(json).unwrap();
        assert!(network.options.is_empty());
        assert_eq!(network.mtu_option(), None);
        network.options.insert(MTU_OPTION.into(), "1300".into());
        assert_eq!(network.mtu_option(), Some(1300));
        network.options.insert(MTU_OPTION.into(), "junk".into());
        assert_eq!(network.mtu_option(), None, "an invalid value is no MTU");
    }
}
