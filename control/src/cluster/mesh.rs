//! What a node needs to serve published ports (the ingress routing mesh and host mode), sent
//! with every heartbeat answer like the gossip settings. Nodes keep the last copy, so ports
//! keep being served with every manager down and across agent restarts. Which tasks serve a
//! port is not here: that comes from the network DB (ingress) and the node's own tasks (host).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{ClusterState, PortConfig, network::Network};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingMesh {
    /// The `ingress` network, once it exists.
    pub ingress: Option<Network>,
    /// This node's address on it: the source of the connections the mesh forwards.
    pub node_addr: Option<Ipv4Addr>,
    /// Every service that publishes a port, by name order.
    pub services: Vec<PublishedService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedService {
    pub name: String,
    /// Its VIP on `ingress`: ingress-mode ports are balanced over that VIP's backends.
    pub ingress_vip: Option<Ipv4Addr>,
    /// The ports with every published port decided (`Endpoint.Ports`).
    pub ports: Vec<PortConfig>,
}

impl RoutingMesh {
    /// What `node_id` is told.
    pub fn for_node(state: &ClusterState, node_id: &str) -> RoutingMesh {
        let ingress = state.networks.values().find(|n| n.ingress).cloned();
        let mut services: Vec<PublishedService> = state
            .services
            .values()
            .filter(|s| !s.endpoint_ports.is_empty())
            .map(|s| PublishedService {
                name: s.spec.name.clone(),
                ingress_vip: ingress.as_ref().and_then(|ingress| {
                    s.virtual_ips
                        .iter()
                        .find(|v| v.network_id == ingress.id)
                        .map(|v| v.addr.addr())
                }),
                ports: s.endpoint_ports.clone(),
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        RoutingMesh {
            node_addr: state.ingress_addrs.get(node_id).copied(),
            ingress,
            services,
        }
    }
}
