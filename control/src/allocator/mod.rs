//! Address and identifier allocation: the shared error type and the re-exports of what each
//! allocator owns. Pure functions of the cluster state, so every decision is made once (by the
//! leader, or in the replicated apply) and then replicated.
//!
//! # Layout
//! - `subnets`: overlay subnets from the cluster's address pools, gateways, VNIs.
//! - `addresses`: task addresses, service VIPs and the nodes' addresses on `ingress`.
//! - `ports`: published ports, and the networks a service's tasks attach to.

mod addresses;
mod ports;
mod subnets;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use addresses::{address_tasks, assign_ingress_addrs, assign_vips};
pub use ports::{PUBLISHED_PORTS, assign_published_ports, attachment_networks};
pub use subnets::{allocate_subnet, allocate_vni, validate_subnet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("invalid subnet {0:?}: not an IPv4 CIDR")]
    BadSubnet(String),
    #[error("invalid subnet {subnet}: host bits are set (did you mean {network}?)")]
    HostBits { subnet: String, network: Ipv4Net },
    #[error("invalid subnet {0}: it leaves no room for task addresses (at most /29)")]
    TooSmall(Ipv4Net),
    #[error("invalid gateway {0:?}: not an IPv4 address")]
    BadGateway(String),
    #[error("no matching subnet for gateway {gateway}: it is not a host address of {subnet}")]
    GatewayOutside { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error(
        "Pool overlaps with other one on this address space: {subnet} overlaps network {network} ({existing})"
    )]
    Overlap {
        subnet: Ipv4Net,
        network: String,
        existing: Ipv4Net,
    },
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network ({pools} exhausted in /{size} subnets)"
    )]
    PoolsExhausted { pools: String, size: u8 },
    #[error("no VXLAN network identifier left")]
    VnisExhausted,
    #[error("no IP address left on network {network} ({subnet})")]
    AddressesExhausted { network: String, subnet: Ipv4Net },
    #[error("network {0} no longer exists")]
    NetworkGone(String),
    #[error("port '{port}' is already in use by service '{service}' ({id}) as a published port")]
    PortInUse {
        port: u16,
        service: String,
        id: String,
    },
    #[error("port {port}/{protocol} is published twice")]
    PortTwice { port: u16, protocol: &'static str },
    #[error("no free port left to publish in {first}-{last}")]
    PortsExhausted { first: u16, last: u16 },
}

#[cfg(test)]
mod tests {
    //! What the allocators' tests share.
    use super::*;
    use crate::cluster::{ClusterState, network::Network};

    pub(super) fn with_network(state: &mut ClusterState, name: &str, subnet: &str, vni: u32) {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        state.networks.insert(
            name.to_string(),
            Network {
                id: name.to_string(),
                name: name.to_string(),
                driver: "overlay".into(),
                subnet,
                gateway: subnets::first_host(subnet),
                vni,
                attachable: false,
                internal: false,
                ingress: false,
                created_at_ms: 0,
                labels: Default::default(),
                options: Default::default(),
            },
        );
    }
}
