//! What a node needs to serve published ports (the ingress routing mesh and host mode) and
//! to keep every service's VIPs, named by its digest in every heartbeat answer and sent when
//! the node's copy differs (`swarm/leader/mesh_cache.rs`). Nodes keep the last copy, so ports
//! keep being served with every manager down and across agent restarts. Which tasks serve a
//! port is not here: that comes from the network DB (ingress) and the node's own tasks (host).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{ClusterState, Command, PortConfig, network::Network};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingMesh {
    /// The `ingress` network, once it exists.
    pub ingress: Option<Network>,
    /// Every service that publishes a port, by name order.
    pub services: Vec<PublishedService>,
    /// Every vip-mode service's VIPs (every network, `ingress` included), by address order:
    /// the load balancer keeps a VIP while its service exists, with no backend at all if
    /// need be, so that connections to a service scaled to 0 (or all of whose tasks are
    /// down) are refused at once instead of going nowhere. Empty in a copy saved before this
    /// field existed; the VIPs then follow the tasks alone.
    #[serde(default)]
    pub vips: Vec<ServiceVip>,
    /// This node's address on `ingress`: the source of the connections the mesh forwards.
    /// Last, and it must stay last: the leader encodes what every node is told alike once and
    /// ends each node's copy with its own address (`swarm/leader/mesh_cache.rs`).
    pub node_addr: Option<Ipv4Addr>,
}

/// A service's VIP on one network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceVip {
    pub network_id: String,
    pub addr: Ipv4Addr,
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
        let mut vips: Vec<ServiceVip> = state
            .services
            .values()
            .flat_map(|s| &s.virtual_ips)
            .map(|v| ServiceVip {
                network_id: v.network_id.clone(),
                addr: v.addr.addr(),
            })
            .collect();
        vips.sort_by_key(|v| v.addr);
        RoutingMesh {
            ingress,
            services,
            vips,
            node_addr: state.ingress_addrs.get(node_id).copied(),
        }
    }

    /// Whether applying `command` may change what [`RoutingMesh::for_node`] builds (the
    /// services' names, published ports and VIPs, the `ingress` network, the nodes' addresses
    /// on it). `false` only for the commands known to touch none of them, above all the task
    /// reports and placements every beat and every orchestrator pass writes: the leader keeps
    /// each node's mesh encoded until a command that may change it applies.
    pub fn may_change_with(command: &Command) -> bool {
        !matches!(
            command,
            Command::ReportTasks { .. }
                | Command::PutTasks(_)
                | Command::RemoveTasks(_)
                | Command::CertIssued { .. }
                | Command::SetNodeKey { .. }
                | Command::RotateGossipKey(_)
                | Command::Objects(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::VirtualIp;

    fn service(id: &str, vips: &[(&str, &str)]) -> crate::cluster::Service {
        let spec = crate::orchestrator::fixture::replicated(id, 0);
        let mut s = crate::orchestrator::fixture::new_service(id, spec, 0);
        s.virtual_ips = vips
            .iter()
            .map(|(network, addr)| VirtualIp {
                network_id: network.to_string(),
                addr: addr.parse().unwrap(),
            })
            .collect();
        s
    }

    #[test]
    fn every_services_vips_are_sent_published_ports_or_not() {
        let mut state = ClusterState::default();
        for s in [
            service("web", &[("net-b", "10.0.1.3/24"), ("net-a", "10.0.0.2/24")]),
            // dnsrr: no VIP.
            service("db", &[]),
        ] {
            state.services.insert(s.id.clone(), s);
        }
        let mesh = RoutingMesh::for_node(&state, "node1");
        assert!(mesh.services.is_empty(), "nothing is published");
        let vip = |network: &str, addr: [u8; 4]| ServiceVip {
            network_id: network.to_string(),
            addr: Ipv4Addr::from(addr),
        };
        assert_eq!(
            mesh.vips,
            vec![vip("net-a", [10, 0, 0, 2]), vip("net-b", [10, 0, 1, 3])],
            "a service with no task keeps its VIPs, by address"
        );
        // A copy saved before `vips` existed still reads.
        let old: RoutingMesh =
            serde_json::from_str(r#"{"ingress":null,"node_addr":null,"services":[]}"#).unwrap();
        assert!(old.vips.is_empty());
    }

    #[test]
    fn placing_and_reporting_tasks_leaves_the_mesh_as_it_was() {
        let mut sim = crate::orchestrator::fixture::Sim::new(3);
        sim.create("web", crate::orchestrator::fixture::replicated("web", 4));
        sim.state.services.update("web", |web| {
            web.virtual_ips = service("web", &[("ingress", "10.255.0.2/16")]).virtual_ips;
            web.endpoint_ports = vec![PortConfig {
                protocol: crate::cluster::PortProtocol::Tcp,
                target: 80,
                published: 30080,
                mode: crate::cluster::PublishMode::Ingress,
                source: Default::default(),
            }];
        });
        let before = RoutingMesh::for_node(&sim.state, "n1");
        assert_eq!(before.services.len(), 1);
        // The orchestrator places the tasks, the nodes run them; one node goes down and its
        // tasks are placed again elsewhere.
        let mut commands = Vec::new();
        for round in 0..6 {
            if round == 3 {
                sim.down.insert("n2".to_string());
            }
            commands.extend(sim.step());
            sim.nodes_act();
        }
        assert!(commands.len() >= 2, "{commands:?}");
        let task = sim.state.tasks.keys().next().unwrap().clone();
        commands.push(Command::RemoveTasks(vec![task]));
        sim.apply(commands.last().unwrap());
        for command in &commands {
            assert!(!RoutingMesh::may_change_with(command), "{command:?}");
        }
        assert_eq!(RoutingMesh::for_node(&sim.state, "n1"), before);
        let service = sim.state.services["web"].clone();
        assert!(RoutingMesh::may_change_with(&Command::UpdateService(
            service
        )));
        assert!(RoutingMesh::may_change_with(&Command::RemoveNode {
            id: "n3".to_string(),
            removed_at: 0,
            revoked_until: 0,
        }));
    }
}
